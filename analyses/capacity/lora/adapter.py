"""LoRA adapters on every block's MLP output projection, applied by forward hooks.

How the adapter reaches the model: TransformerBridge wraps the Hugging Face modules *in place*
(``model.hf_model`` is ``bridge.original_model``), replacing each submodule by a bridge component
that keeps the original as ``_original_component``; ``mlp.dense_4h_to_h`` is a ``LinearBridge``
whose ``forward`` calls the wrapped ``torch.nn.Linear``. A plain torch forward hook on that inner
Linear therefore fires on every ``bridge(tokens, attention_mask=...)`` call (once per block) and on
every step of ``bridge.generate`` (prompt and KV-cached steps alike), and its returned output
replaces the Linear's (checked empirically on the tiny GPT-NeoX and Gemma-3 models; see
tests/integration/test_lora.py). ``lora_targets`` unwraps to the inner Linear and names it by its
HF path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from fmi.core.generate import Generated, greedy
from fmi.errors import ConfigError

TARGET_NAMES = ("mlp.dense_4h_to_h", "mlp.down_proj")  # GPT-NeoX; Gemma-3 / Llama-style
WRAPPER = "._original_component"


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
        # drawn on the CPU (the same start on every device), then put where each target is
        a = [
            (torch.randn(t.in_features, rank, generator=gen) / t.in_features**0.5).to(
                t.weight.device
            )
            for _, t in targets
        ]
        b = [torch.zeros(rank, t.out_features, device=t.weight.device) for _, t in targets]
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

    def snapshot(self) -> LoraAdapter:
        """A detached copy of the current ``A`` and ``B`` (training goes on without it)."""
        return LoraAdapter(
            self.names,
            [a.detach().clone() for a in self.A],
            [b.detach().clone() for b in self.B],
            self.rank,
        )


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
