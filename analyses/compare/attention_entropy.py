"""Attention entropy, FlashMem's uncertainty signal: the answer position's attention over a prompt.

FlashMem (Hou, Chen, Wan, Qin, "FlashMem: Distilling Intrinsic Latent Memory via Computation
Reuse", arXiv:2601.05505, 2026) triggers its consolidator with "a parameter-free Cognitive
Monitor [that] leverages attention entropy to adaptively trigger consolidation only when high
epistemic uncertainty is detected" (abstract). Followed here: the signal is the Shannon entropy
of attention weights at the current (last) position, it is parameter-free, and a prompt fires
when it is high. The stored copies of the paper available to us hold its abstract only, not the
monitor's equations, so the rest is our choice, not FlashMem's: entropy in nats of each head's
post-softmax pattern (``blocks.{L}.attn.hook_pattern``) over all key positions, unnormalized
(no division by ``log n_keys``), the mean over heads, then the mean over ``layers`` (default:
every layer), and a threshold that lets ``entropy_keep`` of training prompts fire rather than a
fixed one (:mod:`analyses.compare.entropy_gate`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.utilities import get_act_name

from fmi.core.forward import NO_LOGITS
from fmi.core.prompts import encode
from fmi.errors import ConfigError
from fmi.experiments.config import RecallConfig
from fmi.experiments.evaluate import SplitRun
from fmi.memory.write import write_prompt


def pattern_site(layer: int) -> str:
    """``blocks.{layer}.attn.hook_pattern``: post-softmax weights ``[batch, head, query, key]``.

    >>> pattern_site(3)
    'blocks.3.attn.hook_pattern'
    """
    return get_act_name("pattern", layer)


def pattern_entropy(pattern: Float[Tensor, "... key"]) -> Float[Tensor, "..."]:
    """Shannon entropy (nats) of each attention distribution over the last axis (keys).

    ``0 log 0 = 0``: keys with zero weight (left padding, masked positions) add nothing, so a
    padded row has the entropy of its unpadded row.

    >>> import math
    >>> uniform = torch.full((4,), 0.25, dtype=torch.float64)
    >>> abs(float(pattern_entropy(uniform)) - math.log(4)) < 1e-15
    True
    >>> pattern_entropy(torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.5, 0.5]])).tolist()
    [0.0, 0.6931471824645996]
    """
    return 0.0 - torch.special.xlogy(pattern, pattern).sum(-1)  # 0.0 - 0.0 is +0.0


def last_query_entropy(patterns: Sequence[Float[Tensor, "batch head query key"]]) -> Tensor:
    """Per row: :func:`pattern_entropy` of the last query's attention, mean over heads, then
    over the patterns given (one per layer). ``[batch]``."""
    per_layer = [pattern_entropy(p[:, :, -1, :].float()).mean(-1) for p in patterns]
    return torch.stack(per_layer).mean(0)


def entropy_layers(model, layers: Sequence[int] | None) -> tuple[int, ...]:
    """``layers`` checked against the model (negative counts from the end); ``None``: all."""
    n = model.bridge.cfg.n_layers
    if layers is None:
        return tuple(range(n))
    chosen = tuple(dict.fromkeys(layer % n if -n <= layer < 0 else layer for layer in layers))
    bad = [layer for layer in chosen if not 0 <= layer < n]
    if not chosen or bad:
        raise ConfigError(f"attention-entropy layers must be in 0..{n - 1}, got {list(layers)}")
    return chosen


def _keep_last_query(rows: dict[int, Tensor], layer: int):
    """A ``hook_pattern`` hook that stores the last query's row ``[batch, head, 1, key]``."""

    def hook(pattern: Tensor, hook: object) -> None:
        rows[layer] = pattern[:, :, -1:, :].detach().float().clone()

    return hook


@torch.inference_mode()
def attention_entropy(
    model, texts: list[str], batch_size: int, layers: Sequence[int] | None = None
) -> Float[Tensor, " n"]:
    """Per text: the entropy (nats) of the answer position's attention over the prompt.

    For each text, the last query position's post-softmax attention over key positions
    (``blocks.{L}.attn.hook_pattern``), its :func:`pattern_entropy` per head, the mean over
    heads, then the mean over ``layers`` (default: every layer). Texts run left-padded in
    batches of ``batch_size``, so the answer position is the last column of every row; padding
    keys carry exactly zero weight and add nothing. Only that one query row of each pattern is
    kept, and the forward stops after the deepest layer asked for (or, when that is the last
    block, skips the unembedding).

    The TransformerBridge reimplements attention for the RoPE models fmi loads (Gemma-3,
    SmolLM2/Llama: ``PositionEmbeddingsAttentionBridge``; Pythia/GPT-NeoX:
    ``JointQKVPositionEmbeddingsAttentionBridge``) and fires ``hook_pattern`` on the weights
    it multiplies the values by; fmi also loads every model with ``attn_implementation=
    "eager"``, which the Bridge needs for architectures whose attention it delegates to
    Hugging Face (a fused SDPA/flash kernel returns no weights, so ``hook_pattern`` never
    fires). A layer whose pattern did not fire raises rather than yielding a wrong entropy.
    """
    chosen = entropy_layers(model, layers)
    bridge = model.bridge
    last = max(chosen)
    limit = (
        {"stop_at_layer": last + 1}
        if last + 1 < bridge.cfg.n_layers
        else {"logits_to_keep": NO_LOGITS}
    )
    out = []
    for start in range(0, len(texts), batch_size):
        enc = encode(model.tokenizer, texts[start : start + batch_size])
        rows: dict[int, Tensor] = {}
        hooks = [(pattern_site(layer), _keep_last_query(rows, layer)) for layer in chosen]
        bridge.run_with_hooks(enc.tokens, fwd_hooks=hooks, attention_mask=enc.mask, **limit)
        missing = [layer for layer in chosen if layer not in rows]
        if missing:
            raise ConfigError(
                f"{pattern_site(missing[0])} did not fire: this model's attention runs in a "
                "fused kernel that returns no weights; load it with attn_implementation='eager'"
            )
        out.append(last_query_entropy([rows[layer] for layer in chosen]))
    return torch.cat(out)


@dataclass(frozen=True)
class SplitAttention:
    """A split's attention entropies, from one extra frozen forward over its distinct prompts.

    ``questions[q]`` belongs to ``run.qs.texts[q]``; ``written[i]`` to entry ``i``'s write
    statement (:func:`fmi.memory.write.write_prompt`) at its answer position, the position that
    predicts the label (the statement's last token; under ``cfg.end`` the write forward runs
    on past it, but causal attention at that position sees only the statement). Each distinct
    text runs once (``prompts`` of them): the statements are the split's write questions
    (``build_queries`` words them with the same template), so they add no prompt of their own.
    """

    questions: Float[Tensor, " q"]
    written: Float[Tensor, " n"]
    layers: tuple[int, ...]
    prompts: int
    seconds: float

    @property
    def signal(self) -> str:
        return attention_signal(self.layers)


def attention_signal(layers: Sequence[int]) -> str:
    """How the detail and the report name the signal."""
    return f"attention entropy (mean over heads, layers {', '.join(map(str, layers))})"


def split_attention(
    model, run: SplitRun, cfg: RecallConfig, layers: Sequence[int] | None = None
) -> SplitAttention:
    """:func:`attention_entropy` of ``run``'s questions and written statements (timed)."""
    chosen = entropy_layers(model, layers)
    templates = run.split.templates  # type: ignore[attr-defined]
    statements = [write_prompt(templates, e)[0] for e in run.entries]
    texts = list(dict.fromkeys([*run.qs.texts, *statements]))
    start = time.perf_counter()
    got = attention_entropy(model, texts, cfg.batch_size, chosen)
    seconds = time.perf_counter() - start
    at = {t: i for i, t in enumerate(texts)}
    return SplitAttention(
        questions=got[[at[t] for t in run.qs.texts]],
        written=got[[at[t] for t in statements]],
        layers=chosen,
        prompts=len(texts),
        seconds=seconds,
    )
