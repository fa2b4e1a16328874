"""One memory entry (its id, statement, answer tokens and key spans), the key roles, and the key
encoder that turns residual states into keys (two sites, standardizers, projector)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from jaxtyping import Float
from torch import Tensor

from fmi.memory.keys import Standardizer

SYMBOL_ROLE, CONTEXT_ROLE = 0, 1  # which part of a statement a token key comes from


@dataclass(frozen=True)
class Entry:
    """One binding as stored: in ``context``, ``symbol`` means ``label`` (first token ``target``).

    ``tokens`` is the whole stored answer when it has more than the first token: ``target``,
    the answer's later tokens, then the end token when ``ends``, one value each
    (``FastMemory.sequence``). Empty for a one-token entry without an end value.

    >>> import fmi
    >>> model = fmi.load_model("tiny-gemma", announce=lambda _: None)
    >>> memory = fmi.FastMemory.fit(model, fmi.RecallConfig.quick())
    >>> entry = memory.write("Alice's favourite drink is", " green tea").entry
    >>> entry.id, entry.label, entry.statement
    (0, ' green tea', "Alice's favourite drink is")
    """

    context: str
    symbol: str
    label: str
    target: int
    tokens: tuple[int, ...] = ()
    ends: bool = False  # the last of ``tokens`` is the end token, not part of the answer
    statement: str = ""  # a free-form fact's statement (FastMemory.write); "" for a binding
    id: int = -1  # stable id given by FastMemory.write (-1: a recall binding, no id)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tokens", tuple(int(t) for t in self.tokens))
        if self.tokens and self.tokens[0] != self.target:
            raise ValueError(f"entry {self.symbol!r}: tokens must start with target {self.target}")
        if self.ends and len(self.tokens) < 2:
            raise ValueError(f"entry {self.symbol!r}: an end token needs an answer token before it")

    @property
    def answer(self) -> tuple[int, ...]:
        """Every stored token id, the first included (the end token too)."""
        return self.tokens or (self.target,)

    @property
    def answer_tokens(self) -> tuple[int, ...]:
        """The answer's own token ids, without the end token."""
        return self.answer[:-1] if self.ends else self.answer


@dataclass
class KeyEncoder:
    """How raw residual states become keys: two sites, their standardizers, the projector, and
    the standardizer of the relation key (the state at the injection site, answer position)."""

    symbol_site: str
    token_site: str
    symbol_std: Standardizer
    token_std: Standardizer
    projector: Float[Tensor, "d r"] | None = None
    answer_std: Standardizer | None = None

    def to(self, device: torch.device) -> KeyEncoder:
        """This encoder with its standardizers and projector on ``device``, in float32 (itself
        when they are so already)."""
        stds = [s for s in (self.symbol_std, self.token_std, self.answer_std) if s is not None]
        parts = (*(s.mean for s in stds), *(s.std for s in stds), self.projector)
        if all(t is None or (t.device == device and t.dtype == torch.float32) for t in parts):
            return self
        return replace(
            self,
            symbol_std=self.symbol_std.to(device),
            token_std=self.token_std.to(device),
            projector=None if self.projector is None else self.projector.to(device).float(),
            answer_std=None if self.answer_std is None else self.answer_std.to(device),
        )

    def raw(self, acts: Tensor) -> Tensor:
        """Standardized single-vector keys at ``symbol_site`` (the ``raw_*`` modes)."""
        return self.symbol_std(acts)

    def projected(self, acts: Tensor) -> Tensor:
        """Keys through the learned projector (``both_top1``, ``context_gate``, ``average``)."""
        if self.projector is None:
            raise ValueError("this key encoder has no trained projector")
        return self.symbol_std(acts) @ self.projector

    def tokens(self, acts: Tensor) -> Tensor:
        """Standardized token keys at ``token_site`` (the ``dual_key`` modes)."""
        return self.token_std(acts)

    def answers(self, acts: Tensor | None) -> Tensor:
        """Standardized relation keys: states at the injection site, answer position."""
        if self.answer_std is None or acts is None:
            raise ValueError("this memory has no relation keys or no relation-key standardizer")
        return self.answer_std(acts)
