"""The fast memory: entries with keys and values, the sites they were taken at.

A memory is data, not weights: :meth:`FastMemory.save` writes one safetensors file
(:mod:`fmi.memory.file_format`) and :meth:`FastMemory.load` refuses a model it was not written
with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from fmi.errors import EntryNotFoundError
from fmi.memory.codes import Channel
from fmi.memory.device import TENSOR_FIELDS, memory_device, placed
from fmi.memory.entry import CONTEXT_ROLE, SYMBOL_ROLE, Entry, KeyEncoder
from fmi.memory.file_format import (
    check_model,
    file_encoder,
    memory_tensors,
    read_memory_file,
    save_memory_file,
)
from fmi.memory.plan import ReadPlan

if TYPE_CHECKING:
    from fmi.memory.ask import Answer


@dataclass
class FastMemory:
    """Entries, their values and keys, and everything needed to read them back.

    Fit one on a model's built-in training task (:meth:`fit`), then :meth:`write` facts,
    :meth:`generate` with them, :meth:`save` and :meth:`load`:

    >>> import fmi
    >>> model = fmi.load_model("tiny-gemma", announce=lambda _: None)
    >>> memory = fmi.FastMemory.fit(model, fmi.RecallConfig.quick())
    >>> _ = memory.write("Alice's favourite drink is", " green tea", spans={"symbol": "Alice"})
    >>> len(memory), memory.inject_site
    (1, 'ln_final.hook_out')
    """

    model_name: str
    d_model: int
    inject_site: str
    alpha: float
    encoder: KeyEncoder
    entries: list[Entry]
    values: Float[Tensor, "n d"]
    symbol_keys: Float[Tensor, "n d"]
    token_keys: Float[Tensor, "m d"]
    token_owner: Int[Tensor, " m"]
    token_role: Int[Tensor, " m"]
    thresholds: dict[str, float] = field(default_factory=dict)
    dual_weights: Float[Tensor, " 4"] | None = None
    # Values of answer steps after the first (later answer tokens, then the end token), in
    # entry order and step order; tail_owner[i] is the entry row i belongs to.
    tail_values: Float[Tensor, "m d"] | None = None
    tail_owner: Int[Tensor, " m"] | None = None
    # Relation keys (state at the unembedding input, answer position; fmi.memory.relation)
    answer_keys: Float[Tensor, "n d"] | None = None
    relation_weights: Float[Tensor, " k"] | None = None
    # How free-form writing and reading work (FastMemory.fit / write / generate): the text that
    # ends an answer, the refinement steps of each value, the retrieval mode, the next free id,
    # and what the fit measured on its training split.
    end: str | None = None
    refine_steps: int = 1
    mode: str = "dual_key"
    next_id: int = 0
    fit_info: dict = field(default_factory=dict)
    _model: object = field(default=None, repr=False, compare=False)  # bound by fit / load
    _index: dict[str, tuple[Tensor, Tensor]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _search: dict[str, Channel] = field(default_factory=dict, init=False, repr=False, compare=False)
    _plan: ReadPlan = field(default_factory=ReadPlan, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Every tensor on one device, the bound model's (else the values'), and keys and values
        in float32 whatever the model's dtype: a memory loaded from a file onto a GPU model
        moves there, and reading never mixes devices."""
        device = memory_device(self._model, self.values)
        for name in TENSOR_FIELDS:
            setattr(self, name, placed(getattr(self, name), device))
        self.encoder = self.encoder.to(device)

    def key_index(self, channel: str) -> tuple[Float[Tensor, "m k"], Int[Tensor, " m"]]:
        """Unit-norm keys of one retrieval channel and the entry owning each row, computed once
        per memory (``replace``/``head`` give a new memory, with its own index). Channels:
        ``raw``, ``projected`` and ``relation`` (one key per entry), ``symbol`` and ``context``
        (token keys)."""
        if channel not in self._index:
            enc = self.encoder
            if channel in ("raw", "projected"):
                keys = (
                    enc.raw(self.symbol_keys)
                    if channel == "raw"
                    else enc.projected(self.symbol_keys)
                )
                owner = torch.arange(len(self), device=keys.device)
            elif channel == "relation":  # the encoder refuses a memory without its statistics
                keys = enc.answers(self.answer_keys)
                owner = torch.arange(len(self), device=keys.device)
            elif channel in ("symbol", "context"):
                sel = self.token_role == (SYMBOL_ROLE if channel == "symbol" else CONTEXT_ROLE)
                keys, owner = enc.tokens(self.token_keys[sel]), self.token_owner[sel]
            else:
                raise ValueError(f"unknown key channel {channel!r}")
            self._index[channel] = (torch.nn.functional.normalize(keys, dim=-1), owner)
        return self._index[channel]

    def search_channel(self, channel: str) -> Channel:
        """The channel's unit keys with their int8 codes for :func:`fmi.memory.search.search_top1`,
        built once per memory like :meth:`key_index`."""
        if channel not in self._search:
            keys, owner = self.key_index(channel)
            self._search[channel] = Channel.of(keys, owner, len(self))
        return self._search[channel]

    @property
    def read_plan(self) -> ReadPlan:
        """What reading this memory measured of the search and the score matrix, and the rule
        that chooses between them (:mod:`fmi.memory.plan`); a new memory starts afresh."""
        return self._plan

    def __len__(self) -> int:
        return len(self.entries)

    def sequence(self, entry: int) -> Float[Tensor, "t d"]:
        """Entry ``entry``'s values, one per stored token (``entries[entry].answer``), unscaled."""
        first = self.values[entry : entry + 1]
        if self.tail_values is None or self.tail_owner is None:
            return first
        return torch.cat([first, self.tail_values[self.tail_owner == entry]])

    def metadata(self) -> dict:
        return {
            "model_name": self.model_name,
            "d_model": self.d_model,
            "inject_site": self.inject_site,
            "alpha": self.alpha,
            "symbol_site": self.encoder.symbol_site,
            "token_site": self.encoder.token_site,
            "thresholds": self.thresholds,
            "entries": [asdict(e) for e in self.entries],
            "end": self.end,
            "refine_steps": self.refine_steps,
            "mode": self.mode,
            "next_id": self.next_id,
            "fit_info": self.fit_info,
        }

    def save(self, path: str | Path) -> None:
        """Write the memory to one safetensors file, atomically (temp file, then rename): a
        killed save leaves the old file as it was. The file records the format version, the
        bound model's fingerprint (name, config hash, weights sha256) and checksums.

        >>> import tempfile, fmi
        >>> model = fmi.load_model("tiny-gemma", announce=lambda _: None)
        >>> memory = fmi.FastMemory.fit(model, fmi.RecallConfig.quick())
        >>> memory.save(tempfile.mkdtemp() + "/empty.fmi.safetensors")
        """
        save_memory_file(path, memory_tensors(self), self.metadata(), model=self._model)

    @classmethod
    def load(cls, path: str | Path, model) -> FastMemory:
        """Load a memory for ``model`` (a ``LoadedModel``); refuse one written with another
        (name, config hash or weights) and a damaged, foreign or too new file, in one line.

        >>> import tempfile, fmi
        >>> model = fmi.load_model("tiny-gemma", announce=lambda _: None)
        >>> memory = fmi.FastMemory.fit(model, fmi.RecallConfig.quick())
        >>> path = tempfile.mkdtemp() + "/m.fmi.safetensors"
        >>> memory.save(path)
        >>> len(fmi.FastMemory.load(path, model))
        0
        """
        meta, t = read_memory_file(path)
        check_model(path, meta, model)
        encoder = file_encoder(meta, t)
        return cls(
            model_name=meta["model_name"],
            d_model=meta["d_model"],
            inject_site=meta["inject_site"],
            alpha=float(meta["alpha"]),
            encoder=encoder,
            entries=[Entry(**e) for e in meta["entries"]],
            values=t["values"],
            symbol_keys=t["symbol_keys"],
            token_keys=t["token_keys"],
            token_owner=t["token_owner"],
            token_role=t["token_role"],
            thresholds={k: float(v) for k, v in meta["thresholds"].items()},
            dual_weights=t.get("dual_weights"),
            tail_values=t.get("tail_values"),
            tail_owner=t.get("tail_owner"),
            answer_keys=t.get("answer_keys"),
            relation_weights=t.get("relation_weights"),
            end=meta.get("end"),
            refine_steps=int(meta.get("refine_steps", 1)),
            mode=meta.get("mode", "dual_key"),
            next_id=int(meta.get("next_id", 0)),
            fit_info=meta.get("fit_info", {}),
            _model=model,
        )

    def head(self, n: int) -> FastMemory:
        """The memory of the first ``n`` entries alone: exactly what writing only them would give,
        since an entry's keys and value come from its own statement."""
        if not 0 < n <= len(self):
            raise ValueError(f"head needs 0 < n <= {len(self)} entries, got {n}")
        return self.select(list(range(n)))

    def select(self, rows: list[int]) -> FastMemory:
        """The memory of entries ``rows`` alone, in that order (duplicates refused): what writing
        only them would give. ``select`` without an entry is how an entry is deleted.
        """
        if len(set(rows)) != len(rows) or any(not 0 <= r < len(self) for r in rows):
            raise ValueError(f"select needs distinct entries in 0..{len(self) - 1}, got {rows}")
        dev = self.values.device
        index = torch.tensor(rows, dtype=torch.long, device=dev)
        new_of = torch.full((len(self),), -1, dtype=torch.long, device=dev)
        new_of[index] = torch.arange(len(rows), device=dev)

        def regroup(owner: Tensor) -> Tensor:
            """Indices of the rows owned by kept entries, grouped in the new entry order."""
            mapped = new_of[owner]
            kept = (mapped >= 0).nonzero().squeeze(-1)
            return kept[torch.argsort(mapped[kept], stable=True)]

        tok = regroup(self.token_owner)
        tail_values, tail_owner = self.tail_values, self.tail_owner
        if tail_values is not None and tail_owner is not None:
            tail = regroup(tail_owner)
            tail_values, tail_owner = tail_values[tail], new_of[tail_owner[tail]]
        return replace(
            self,
            entries=[self.entries[r] for r in rows],
            values=self.values[index],
            symbol_keys=self.symbol_keys[index],
            token_keys=self.token_keys[tok],
            token_owner=new_of[self.token_owner[tok]],
            token_role=self.token_role[tok],
            tail_values=tail_values,
            tail_owner=tail_owner,
            answer_keys=None if self.answer_keys is None else self.answer_keys[index],
        )

    def symbols(self) -> list[str]:
        return [e.symbol for e in self.entries]

    # ------------------------------------------------------------------ free-form facts

    @classmethod
    def fit(cls, model, config=None) -> FastMemory:
        """An empty memory for ``model``, fitted on the built-in training split only: the key
        standardizers, projector, dual-key weights, thresholds, alpha and refinement steps
        (:func:`fmi.memory.fit.fit`). ``config`` is a :class:`fmi.RecallConfig` (default: the
        recall defaults, answers ending in a newline).

        >>> import fmi
        >>> model = fmi.load_model("tiny-gemma", announce=lambda _: None)
        >>> memory = fmi.FastMemory.fit(model, fmi.RecallConfig.quick())
        >>> len(memory), memory.mode, memory.end
        (0, 'dual_key', '\\n')
        """
        from fmi.memory.statements import fit_empty

        return fit_empty(model, config)

    def _require_model(self, model):
        model = model if model is not None else self._model
        if model is None:
            raise ValueError("this memory has no model bound; pass model=")
        return model

    def write(self, statement: str, answer: str, *, spans: dict | None = None, model=None):
        """Store the fact ``statement + answer`` from one frozen forward pass; a stored fact with
        the same key spans (symbol and context text) is replaced: latest wins.

        ``spans`` names the key: ``{"symbol": "Alice"}`` (what the fact is about), optionally
        ``"context"`` (its frame, e.g. ``"game A"``); a missing channel is the rest of the
        statement, and no spans at all make the whole statement both. Returns a
        :class:`fmi.memory.statements.Stored` with the new entry (its ``id``) and the one it
        replaced.

        >>> import fmi
        >>> model = fmi.load_model("tiny-gemma", announce=lambda _: None)
        >>> memory = fmi.FastMemory.fit(model, fmi.RecallConfig.quick())
        >>> alice = {"symbol": "Alice"}
        >>> first = memory.write("Alice's favourite drink is", " green tea", spans=alice)
        >>> again = memory.write("Alice's favourite drink is", " coffee", spans=alice)
        >>> first.entry.id, again.entry.id, again.replaced.id, len(memory)
        (0, 1, 0, 1)
        """
        from fmi.memory.statements import write_fact

        return write_fact(self, self._require_model(model), statement, answer, spans)

    def write_many(
        self,
        statements: list[str],
        answers: list[str],
        *,
        spans: list[dict | None] | None = None,
        model=None,
        batch_size: int = 16,
    ):
        """Store many facts from batched frozen forward passes (``batch_size`` facts a pass,
        no backward pass): what :meth:`write` of each in turn stores, latest wins. Returns one
        :class:`fmi.memory.statements.Stored` per fact.

        >>> import fmi
        >>> model = fmi.load_model("tiny-gemma", announce=lambda _: None)
        >>> memory = fmi.FastMemory.fit(model, fmi.RecallConfig.quick())
        >>> got = memory.write_many(
        ...     ["Ann lives in", "Bob lives in"], [" Rome", " Oslo"],
        ...     spans=[{"symbol": "Ann"}, {"symbol": "Bob"}])
        >>> [s.entry.id for s in got], len(memory)
        ([0, 1], 2)
        """
        from fmi.memory.statements import write_facts

        return write_facts(
            self, self._require_model(model), statements, answers, spans, batch_size=batch_size
        )

    def delete(self, entry_id: int) -> Entry:
        """Remove the entry with id ``entry_id`` and return it; reading is then exactly as if it
        had never been written.

        >>> import fmi
        >>> model = fmi.load_model("tiny-gemma", announce=lambda _: None)
        >>> memory = fmi.FastMemory.fit(model, fmi.RecallConfig.quick())
        >>> stored = memory.write("Bob lives in", " Paris", spans={"symbol": "Bob"})
        >>> memory.delete(stored.entry.id).answer == stored.entry.answer, len(memory)
        (True, 0)
        """
        ids = [e.id for e in self.entries]
        if entry_id not in ids:
            raise EntryNotFoundError(
                f"no entry with id {entry_id} in this memory (ids: {ids or 'none'})"
            )
        row = ids.index(entry_id)
        removed = self.entries[row]
        self._become(self.select([r for r in range(len(self)) if r != row]))
        return removed

    def _become(self, other: FastMemory) -> None:
        """Take ``other``'s entries, keys and values in place (caches cleared)."""
        for name in ("entries", "next_id", *TENSOR_FIELDS):
            setattr(self, name, getattr(other, name))
        self._index.clear()
        self._search.clear()

    def generate(
        self, model, prompts: list[str], *, max_new_tokens: int = 16, until: str | None = "end"
    ) -> list[str]:
        """Greedy continuations of ``prompts`` reading this memory (one pass, KV cache), each cut
        at the first ``until`` (``"end"``, the default: the memory's end text; ``None``: not cut).

        >>> import fmi
        >>> model = fmi.load_model("tiny-gemma", announce=lambda _: None)
        >>> memory = fmi.FastMemory.fit(model, fmi.RecallConfig.quick())
        >>> out = memory.generate(model, ["Question: where does Bob live? Answer:"])
        >>> len(out), type(out[0])
        (1, <class 'str'>)
        """
        return [
            a.text for a in self.ask(model, prompts, max_new_tokens=max_new_tokens, until=until)
        ]

    def ask(
        self, model, prompts: list[str], *, max_new_tokens: int = 16, until: str | None = "end"
    ) -> list[Answer]:
        """What :meth:`generate` returns, with what the memory decided for each prompt: an
        :class:`fmi.Answer` holding the text, the entry that fired (or None), its score and the
        threshold.

        >>> import fmi
        >>> model = fmi.load_model("tiny-gemma", announce=lambda _: None)
        >>> memory = fmi.FastMemory.fit(model, fmi.RecallConfig.quick())
        >>> answer = memory.ask(model, ["Question: where does Bob live? Answer:"])[0]
        >>> answer.entry is None, answer.threshold == memory.threshold   # an empty memory
        (True, True)
        """
        from fmi.memory.ask import ask

        cut = self.end if until == "end" else until
        return ask(self, model, prompts, max_new_tokens=max_new_tokens, until=cut)

    @property
    def threshold(self) -> float:
        """The calibrated score threshold of the memory's own retrieval mode (:attr:`mode`)."""
        return float(self.thresholds[self.mode])

    def apply(self, model):
        """A context manager with the memory's read hooks on ``model`` for any TransformerLens
        call inside it, removed on exit (also after an exception).

        >>> import fmi
        >>> model = fmi.load_model("tiny-gemma", announce=lambda _: None)
        >>> memory = fmi.FastMemory.fit(model, fmi.RecallConfig.quick())
        >>> tokens = model.tokenizer("Where does Bob live?", return_tensors="pt")["input_ids"]
        >>> with memory.apply(model) as log:
        ...     logits = model.bridge(tokens)
        >>> logits.shape[0]
        1
        """
        from fmi.memory.ask import applied

        return applied(self, model)
