"""A hand-rolled LoRA capacity probe: the parametric-memory baseline on a frozen model.

Each adapter adds ``(x @ A) @ B`` to the output of every decoder block's MLP output projection
(GPT-NeoX ``mlp.dense_4h_to_h``, Gemma-3 / Llama ``mlp.down_proj``). Only ``A`` and ``B`` train;
the base model's parameters never receive a gradient and stay bit-identical.

How the adapter reaches the model: TransformerBridge wraps the Hugging Face modules *in place*
(``model.hf_model`` is ``bridge.original_model``), replacing each submodule by a bridge component
that keeps the original as ``_original_component``; ``mlp.dense_4h_to_h`` is a ``LinearBridge``
whose ``forward`` calls the wrapped ``torch.nn.Linear``. A plain torch forward hook on that inner
Linear therefore fires on every ``bridge(tokens, attention_mask=...)`` call (once per block) and on
every step of ``bridge.generate`` (prompt and KV-cached steps alike), and its returned output
replaces the Linear's (checked empirically on the tiny GPT-NeoX and Gemma-3 models; see
tests/test_lora.py). ``lora_targets`` unwraps to the inner Linear and names it by its HF path.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from fmi.errors import ConfigError, require_at_least
from fmi.forward import answer_only
from fmi.generate import Generated, greedy
from fmi.prompts import encode

TARGET_NAMES = ("mlp.dense_4h_to_h", "mlp.down_proj")  # GPT-NeoX; Gemma-3 / Llama-style
WRAPPER = "._original_component"


@dataclass(frozen=True)
class LoraConfig:
    """Ranks to probe and the optimiser's settings (one adapter per rank).

    The step budget is fixed whatever the number of bindings: 50 steps of 32 prompts take about
    2.6 minutes per adapter on Gemma-3-270M on 2 CPU cores (3.1 s a step), so the probe's nine
    adapters fit in a run; 10 bindings get 50 passes over the data, 1,000 get 1.6.
    """

    ranks: tuple[int, ...] = (1, 4, 16)
    steps: int = 50
    lr: float = 5e-3
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.ranks or min(self.ranks) < 1:
            raise ConfigError(f"ranks must be a non-empty tuple of ints >= 1, got {self.ranks}")
        require_at_least(self, ("steps", "batch_size"))
        require_at_least(self, ("seed",), 0)
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be > 0, got {self.lr}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lora_targets(hf_model: torch.nn.Module) -> list[tuple[str, torch.nn.Linear]]:
    """The MLP output projection Linear of every decoder block, in block order, by HF path."""
    found: dict[int, tuple[str, torch.nn.Linear]] = {}
    for name, module in hf_model.named_modules(remove_duplicate=False):
        path = name.replace(WRAPPER, "")
        if isinstance(module, torch.nn.Linear) and path.endswith(TARGET_NAMES):
            found.setdefault(id(module), (path, module))
    if not found:
        raise ConfigError(
            f"no LoRA target in {type(hf_model).__name__}: looked for torch.nn.Linear modules "
            f"named {' or '.join(TARGET_NAMES)} (GPT-NeoX, Gemma-3 / Llama-style)"
        )
    return list(found.values())


@dataclass
class LoraAdapter:
    """Per target ``A [in, r]`` (seeded normal, std ``1/sqrt(in)``) and ``B [r, out]`` (zeros)."""

    names: tuple[str, ...]
    A: list[Float[Tensor, "d_in r"]]
    B: list[Float[Tensor, "r d_out"]]
    rank: int

    @classmethod
    def init(cls, hf_model: torch.nn.Module, rank: int, seed: int = 0) -> LoraAdapter:
        """A fresh adapter for ``hf_model``'s targets: ``B = 0``, so it changes nothing yet."""
        if rank < 1:
            raise ConfigError(f"rank must be >= 1, got {rank}")
        gen = torch.Generator().manual_seed(seed)
        targets = lora_targets(hf_model)
        a = [
            torch.randn(t.in_features, rank, generator=gen) / t.in_features**0.5 for _, t in targets
        ]
        b = [torch.zeros(rank, t.out_features) for _, t in targets]
        return cls(
            tuple(n for n, _ in targets),
            [x.requires_grad_(True) for x in a],
            [x.requires_grad_(True) for x in b],
            rank,
        )

    def parameters(self) -> list[Tensor]:
        return [*self.A, *self.B]

    @property
    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _hook(a: Tensor, b: Tensor):
    def hook(module: torch.nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> Tensor:
        x = inputs[0]
        delta = (x.to(a.dtype) @ a.to(x.device)) @ b.to(x.device)
        return out + delta.to(dtype=out.dtype, device=out.device)

    return hook


@contextlib.contextmanager
def applied(hf_model: torch.nn.Module, adapter: LoraAdapter) -> Iterator[None]:
    """Within the block, every target Linear outputs ``out + (x @ A) @ B``; hooks never leak."""
    targets = lora_targets(hf_model)
    names = tuple(n for n, _ in targets)
    if names != adapter.names:
        raise ConfigError(f"adapter targets {adapter.names} do not match the model's {names}")
    handles = []
    try:
        for (_, linear), a, b in zip(targets, adapter.A, adapter.B, strict=True):
            handles.append(linear.register_forward_hook(_hook(a, b)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _last_logits(model, texts: list[str]) -> Float[Tensor, "batch vocab"]:
    """The answer position's logits (the last column of a left-padded batch), in float32."""
    enc = encode(model.tokenizer, texts)
    logits = model.bridge(
        enc.tokens, attention_mask=enc.mask, logits_to_keep=answer_only(enc.tokens)
    )
    return logits[:, -1].float()


@torch.inference_mode()
def answer_loss(
    model, texts: list[str], targets: Int[Tensor, " n"], adapter: LoraAdapter, batch_size: int
) -> float:
    """Mean cross-entropy of ``targets`` at each prompt's last position, with ``adapter``."""
    total = 0.0
    with applied(model.hf_model, adapter):
        for start in range(0, len(texts), batch_size):
            logits = _last_logits(model, texts[start : start + batch_size])
            y = targets[start : start + batch_size].to(logits.device)
            total += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
    return total / len(texts)


@contextlib.contextmanager
def _frozen_base(model) -> Iterator[None]:
    """Every base parameter (bridge and HF) at ``requires_grad=False``; flags restored after."""
    params = {id(p): p for m in (model.bridge, model.hf_model) for p in m.parameters()}
    flags = {k: p.requires_grad for k, p in params.items()}
    try:
        for p in params.values():
            p.requires_grad_(False)
        yield
    finally:
        for k, p in params.items():
            p.requires_grad_(flags[k])


def train_lora(
    model, texts: list[str], targets: Int[Tensor, " n"], rank: int, cfg: LoraConfig
) -> tuple[LoraAdapter, list[float]]:
    """Adam on a rank-``rank`` adapter only: ``cfg.steps`` seeded minibatches of prompts, loss the
    cross-entropy of ``targets`` at the last prompt position. Returns it and per-step losses."""
    if len(texts) != len(targets):
        raise ValueError(f"{len(texts)} texts but {len(targets)} targets")
    adapter = LoraAdapter.init(model.hf_model, rank, cfg.seed)
    opt = torch.optim.Adam(adapter.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    n = len(texts)
    losses: list[float] = []
    with _frozen_base(model), applied(model.hf_model, adapter), torch.enable_grad():
        for _ in range(cfg.steps):
            rows = torch.randperm(n, generator=gen)[: cfg.batch_size].tolist()
            logits = _last_logits(model, [texts[i] for i in rows])
            y = targets[rows].to(logits.device)
            loss = torch.nn.functional.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    for p in adapter.parameters():
        p.grad = None
    return adapter, losses


def lora_outputs(
    model,
    adapter: LoraAdapter,
    texts: list[str],
    *,
    max_new_tokens: int = 3,
    batch_size: int = 16,
    label_ids: Int[Tensor, " k"] | None = None,
) -> Generated:
    """Greedy continuations of ``texts`` with ``adapter`` applied (no residual injection)."""
    with applied(model.hf_model, adapter):
        return greedy(
            model,
            texts,
            site="",
            label_ids=label_ids,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
        )
