"""Writing a soft prefix: Adam steps on the statements' cross-entropy, into the prefix alone."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from analyses.compare.soft_prefix.prepend import SITE, PrefixTokenizer, prefix_hook, prefix_starts
from fmi.core.forward import answer_only
from fmi.core.prompts import encode


@dataclass(frozen=True)
class Fit:
    """One optimisation run: the prefix after each reported step count, the mean training loss
    after ``t`` steps for ``t = 0..max(steps)``, the seconds spent up to each reported count,
    and the site's embedding scale (RMS coordinate) the prefix was drawn and stepped at."""

    snapshots: dict[int, Float[Tensor, "k d"]]
    losses: list[float]
    seconds: dict[int, float]
    scale: float


@torch.inference_mode()
def embedding_stats(
    model, texts: list[str], batch_size: int = 16
) -> tuple[Float[Tensor, " d"], Float[Tensor, " d"], float]:
    """Per-coordinate mean and std of the real (non-special) tokens' activations at
    ``hook_embed`` over ``texts``, and their RMS coordinate ``sqrt(mean |e|^2 / d)``."""
    got = []
    for start in range(0, len(texts), batch_size):
        enc = encode(model.tokenizer, texts[start : start + batch_size])
        _, cache = model.bridge.run_with_cache(
            enc.tokens,
            attention_mask=enc.mask,
            names_filter=lambda n: n == SITE,
            stop_at_layer=1,
        )
        got.append(cache[SITE][enc.content].float())
    acts = torch.cat(got)
    rms = float(acts.pow(2).mean().sqrt())
    return acts.mean(0), acts.std(0, unbiased=False), rms


def init_prefix(
    k: int, mean: Float[Tensor, " d"], std: Float[Tensor, " d"], init: float, seed: int
) -> Float[Tensor, "k d"]:
    """``mean + init * std * z`` with ``z ~ N(0, 1)`` from a generator seeded by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(k, mean.shape[0], generator=g).to(mean.device)
    return mean[None] + init * std[None] * z


def _batches(ptok: PrefixTokenizer, texts: list[str], batch_size: int):
    out = []
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        enc = encode(ptok, chunk)
        out.append((enc, prefix_starts(ptok, chunk, enc), slice(start, start + len(chunk))))
    return out


def _loss(model, batches, prefix: Tensor, targets: Tensor, n: int, grad: bool):
    """The mean cross-entropy over all statements with ``prefix`` prepended, and with ``grad``
    its gradient with respect to ``prefix`` alone (accumulated batch by batch)."""
    total, g = 0.0, torch.zeros_like(prefix)
    for enc, starts, rows in batches:
        with torch.enable_grad() if grad else torch.inference_mode():
            p = prefix.detach().requires_grad_(grad)
            with model.bridge.hooks(fwd_hooks=[(SITE, prefix_hook(p, starts))]):
                logits = model.bridge(
                    enc.tokens, attention_mask=enc.mask, logits_to_keep=answer_only(enc.tokens)
                )
            loss = torch.nn.functional.cross_entropy(
                logits[:, -1].float(), targets[rows].to(logits.device), reduction="sum"
            ) / max(n, 1)
            if grad:
                (part,) = torch.autograd.grad(loss, p)
                g += part
        total += float(loss.detach())
    return total, g


def optimise(
    model,
    texts: list[str],
    targets: Int[Tensor, " n"],
    k: int,
    steps: tuple[int, ...],
    lr: float,
    *,
    init: float = 1.0,
    seed: int = 0,
    batch_size: int = 16,
) -> Fit:
    """A ``k``-token prefix written from all ``texts`` at once: ``max(steps)`` Adam steps
    (learning rate ``lr`` times the embedding scale) on the mean cross-entropy of each text's
    ``targets`` token at its answer position, with the prefix prepended to every text.

    Each step is one forward and one backward pass over every text; the loss after the last
    step costs one more forward (``Fit.losses``). The model's parameters get no gradient.
    """
    if not texts or len(texts) != len(targets):
        raise ValueError(f"{len(texts)} texts and {len(targets)} targets")
    began = time.perf_counter()
    mean, std, scale = embedding_stats(model, texts, batch_size)
    prefix = init_prefix(k, mean, std, init, seed).requires_grad_(True)
    ptok = PrefixTokenizer(model.tokenizer, k)
    batches = _batches(ptok, texts, batch_size)
    opt = torch.optim.Adam([prefix], lr=lr * scale)
    snapshots, seconds, losses = {}, {}, []
    wanted = set(steps)
    for t in range(1, max(steps) + 1):
        loss, grad = _loss(model, batches, prefix, targets, len(texts), grad=True)
        losses.append(loss)  # the loss after t - 1 steps
        prefix.grad = grad
        opt.step()
        if t in wanted:
            snapshots[t] = prefix.detach().clone()
            seconds[t] = time.perf_counter() - began
    losses.append(_loss(model, batches, prefix, targets, len(texts), grad=False)[0])
    return Fit(snapshots, losses, seconds, scale)
