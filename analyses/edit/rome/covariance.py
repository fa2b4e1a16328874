"""The keys' second moment ``C = E[k kᵀ]`` of an MLP output projection, from text the model
writes itself, computed once and cached on disk.

ROME and MEMIT take ``C`` over Wikipedia; no Wikipedia (nor another public-domain corpus) ships
offline here, so the text is the model's own: ``rows`` samples at temperature 1 from the
neutral starts of :data:`STARTS`, ``new_tokens`` tokens each with the KV cache on, seeded, until
``tokens`` content tokens are in (special tokens, padding and whatever follows an end-of-text
are left out). The sampled token ids are cached too, so that a new layer costs one stopped
forward per batch, not a new sample.

Files live under ``<fmi cache>/rome-cov/`` (:func:`fmi.models.assets.cache_dir`: ``$FMI_CACHE``,
else ``$XDG_CACHE_HOME/fmi``, else ``~/.cache/fmi``), named by a hash of the model's fingerprint
(architecture and weights checksums), the layer, the source, the token count and the seed;
each is written atomically (safetensors, float32 as ROME's ``mom2_dtype``), with its token count
and the seconds it took in the file's metadata.

>>> from fmi.models.registry import load_model
>>> model = load_model("tiny-gemma", announce=lambda _: None)
>>> spec = CovSpec(tokens=64)
>>> C, info = covariances(model, [1], spec, root=__import__("tempfile").mkdtemp())[1]
>>> C.shape, info["source"], info["tokens"] >= 64, info["from"]
(torch.Size([128, 128]), 'model-text', True, 'built')
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from analyses.edit.rome.keys import linear_inputs
from fmi.core.prompts import encode
from fmi.errors import ConfigError
from fmi.models.assets import cache_dir
from fmi.models.fingerprint import model_fingerprint
from fmi.reporting.atomic import write_atomically

STARTS = ("The", "In the", "It is", "One of the", "A new", "When", "There are", "This")
SOURCE = "model-text"
FORMAT = 1  # bump when the sampling or the statistic changes: old files are then not used

# path -> (C, info): one copy per process, shared by every method and setting
_MEMO: dict[str, tuple[Tensor, dict[str, Any]]] = {}


@dataclass(frozen=True)
class CovSpec:
    """Which covariance: ``tokens`` content tokens of model-written text, sampled with ``seed``
    in batches of ``rows`` rows of up to ``new_tokens`` new tokens (fewer when fewer tokens are
    asked for: ``ceil(tokens / rows)``, at least 8)."""

    tokens: int = 100_000
    seed: int = 0
    rows: int = 64
    new_tokens: int = 128
    source: str = SOURCE

    def __post_init__(self) -> None:
        for name in ("tokens", "rows", "new_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.source != SOURCE:
            raise ConfigError(f"source must be {SOURCE!r}, got {self.source!r}")

    @property
    def step_tokens(self) -> int:
        """New tokens per row in each sampling batch."""
        return max(8, min(self.new_tokens, math.ceil(self.tokens / self.rows)))


def default_root() -> Path:
    return cache_dir() / "rome-cov"


def _stem(model, spec: CovSpec) -> tuple[str, str]:
    """(folder name, hash) of ``model`` and ``spec``: every file of theirs shares the hash."""
    fp = model_fingerprint(model)
    facts = {"format": FORMAT, "model": fp, "spec": asdict(spec), "step": spec.step_tokens}
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(model.name))
    return name, digest[:20]


def cache_path(model, layer: int, spec: CovSpec, root: str | Path | None = None) -> Path:
    """Where (model, layer, spec)'s covariance is cached; a changed model or spec, another
    path."""
    name, digest = _stem(model, spec)
    folder = Path(root) if root is not None else default_root()
    return folder / name / f"C-L{layer}-{spec.source}-{spec.tokens}-s{spec.seed}-{digest}.st"


def _sample(model, tokens: Tensor, mask: Tensor, steps: int, gen: torch.Generator) -> Tensor:
    """``steps`` new tokens per row, sampled at temperature 1 with the KV cache (the Hugging
    Face forward, positions from the left-padded mask; an inverse-CDF draw, which on a CPU is
    ~10x faster than ``torch.multinomial`` over a 50k-262k vocabulary)."""
    hf = model.hf_model
    device = next(hf.parameters()).device
    ids, mask = tokens.to(device), mask.to(device)
    pos = (mask.cumsum(1) - 1).clamp_min(0)
    out = hf(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
    new = []
    for step in range(steps):
        cdf = out.logits[:, -1].float().softmax(-1).cumsum(-1)
        u = torch.rand(cdf.shape[0], 1, generator=gen).to(device) * cdf[:, -1:]
        nxt = torch.searchsorted(cdf, u).clamp_max(cdf.shape[1] - 1)
        new.append(nxt.cpu())
        if step == steps - 1:
            break
        mask = torch.cat([mask, torch.ones_like(nxt)], 1)
        pos = pos[:, -1:] + 1
        out = hf(
            input_ids=nxt,
            attention_mask=mask,
            position_ids=pos,
            past_key_values=out.past_key_values,
            use_cache=True,
        )
    return torch.cat([tokens, *new], 1)


def sample_tokens(model, spec: CovSpec) -> tuple[Tensor, Tensor, Tensor]:
    """``(tokens, mask, content)`` ``[rows * batches, width]``: the sampled rows (left-padded
    starts, then the new tokens), their attention mask, and which of their tokens count
    (non-special, before any end of text), at least ``spec.tokens`` of them. Seeded (its own
    generator: the global torch RNG is not touched)."""
    tok = model.tokenizer
    starts = [STARTS[i % len(STARTS)] for i in range(spec.rows)]
    enc = encode(tok, starts)
    special = torch.tensor(sorted(set(tok.all_special_ids)), dtype=torch.long)
    eos = tok.eos_token_id
    width = enc.tokens.shape[1]
    mask = torch.cat([enc.mask, torch.ones(spec.rows, spec.step_tokens, dtype=torch.long)], 1)
    gen = torch.Generator().manual_seed(spec.seed)
    rows, keep, total = [], [], 0
    with torch.no_grad():
        while total < spec.tokens:
            out = _sample(model, enc.tokens, enc.mask, spec.step_tokens, gen)
            content = ~torch.isin(out, special)
            if eos is not None:  # nothing after a row's first end of text
                ended = (out[:, width:] == eos).long().cumsum(1) > 0
                content[:, width:] &= ~ended
            content &= mask.bool()
            rows.append(out)
            keep.append(content)
            total += int(content.sum())
    return torch.cat(rows), mask.repeat(len(rows), 1), torch.cat(keep)


def key_moments(
    model,
    layers: Sequence[int],
    tokens: Tensor,
    mask: Tensor,
    content: Tensor,
    batch_rows: int = 64,
) -> tuple[dict[int, Tensor], int]:
    """Per layer, ``E[k kᵀ]`` (float64) over the ``content`` tokens of ``tokens`` (attention
    ``mask``), from one stopped forward per ``batch_rows`` rows; and the token count."""
    sums: dict[int, Tensor] = {}
    count = 0
    for start in range(0, tokens.shape[0], batch_rows):
        rows = slice(start, start + batch_rows)
        ks = linear_inputs(model, layers, tokens[rows], mask[rows])
        picked = content[rows].to(next(iter(ks.values())).device)
        for layer, k in ks.items():
            flat = k[picked].float()
            part = (flat.T @ flat).double().cpu()
            sums[layer] = sums[layer] + part if layer in sums else part
        count += int(picked.sum())
    return {layer: s / max(count, 1) for layer, s in sums.items()}, count


def _load(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """A cached file's tensors and its ``info`` metadata."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
    return load_file(str(path)), json.loads(meta["info"])


def _save(path: Path, tensors: dict[str, Tensor], info: dict[str, Any]) -> None:
    """Write ``tensors`` with ``info`` as metadata to ``path`` atomically."""
    write_atomically(
        path,
        lambda tmp: save_file(
            {k: v.contiguous() for k, v in tensors.items()}, str(tmp), {"info": json.dumps(info)}
        ),
    )


def _text(model, spec: CovSpec, root: str | Path | None) -> tuple[Tensor, Tensor, Tensor, float]:
    """The sampled rows of (model, spec) and the seconds sampling took, from the cache or
    sampled now (and cached)."""
    name, digest = _stem(model, spec)
    folder = Path(root) if root is not None else default_root()
    path = folder / name / f"text-{spec.source}-{spec.tokens}-s{spec.seed}-{digest}.st"
    if path.is_file():
        got, info = _load(path)
        return got["tokens"].long(), got["mask"].long(), got["content"].bool(), info["seconds"]
    started = time.perf_counter()
    tokens, mask, content = sample_tokens(model, spec)
    seconds = time.perf_counter() - started
    small = {
        "tokens": tokens.int(),
        "mask": mask.to(torch.uint8),
        "content": content.to(torch.uint8),
    }
    _save(path, small, {"seconds": seconds})
    return tokens, mask, content, seconds


def covariances(
    model, layers: Sequence[int], spec: CovSpec, root: str | Path | None = None
) -> dict[int, tuple[Tensor, dict[str, Any]]]:
    """Per layer of ``layers``: ``C`` ``[d_in, d_in]`` (float32) of its MLP output projection's
    input, and ``info``: ``source``, ``tokens`` (the exact count), ``seed``, ``build_seconds``
    (sampling the text plus this layer's keys, when it was made: ``sample_seconds`` +
    ``keys_seconds``), ``seconds`` (this call's share) and ``from``
    (``memory``, ``disk`` or ``built``). Missing layers are built together, from one sample."""
    out: dict[int, tuple[Tensor, dict[str, Any]]] = {}
    missing: list[int] = []
    for layer in dict.fromkeys(layers):
        started = time.perf_counter()
        path = cache_path(model, layer, spec, root)
        key = str(path)
        if key in _MEMO:
            C, info = _MEMO[key]
            out[layer] = (C, {**info, "from": "memory", "seconds": 0.0})
        elif path.is_file():
            got, info = _load(path)
            C = got["C"]
            _MEMO[key] = (C, info)
            out[layer] = (C, {**info, "from": "disk", "seconds": time.perf_counter() - started})
        else:
            missing.append(layer)
    if missing:
        started = time.perf_counter()
        tokens, mask, content, sampled = _text(model, spec, root)
        keys_started = time.perf_counter()
        moments, count = key_moments(model, missing, tokens, mask, content)
        keys_seconds = time.perf_counter() - keys_started
        for layer in missing:
            C = moments[layer].float()
            info = {
                "source": spec.source,
                "tokens": count,
                "seed": spec.seed,
                "sample_seconds": sampled,
                "keys_seconds": keys_seconds / len(missing),
                "build_seconds": sampled + keys_seconds / len(missing),
            }
            _save(cache_path(model, layer, spec, root), {"C": C}, info)
            _MEMO[str(cache_path(model, layer, spec, root))] = (C, info)
            share = (time.perf_counter() - started) / len(missing)
            out[layer] = (C, {**info, "from": "built", "seconds": share})
    return {layer: out[layer] for layer in dict.fromkeys(layers)}


def warm_up(model, layers: Sequence[int], tokens: int, seed: int = 0) -> dict[str, Any]:
    """Build (or load) every covariance of ``layers`` at once, one pass for all of them (a
    tuning grid's settings then find them cached), and say what they are, JSON-ready."""
    got = covariances(model, sorted(set(layers)), CovSpec(tokens=tokens, seed=seed))
    info = next(iter(got.values()))[1]
    return {
        "source": info["source"],
        "tokens": info["tokens"],
        "seed": seed,
        "layers": sorted(got),
        "build_seconds": {str(k): round(v[1]["build_seconds"], 2) for k, v in got.items()},
        "seconds_here": round(sum(v[1]["seconds"] for v in got.values()), 2),
    }


def regularised(C: Tensor, cov_lambda: float) -> Tensor:
    """``C + cov_lambda * mean(diag C) * I`` in float64."""
    C = C.double()
    return C + cov_lambda * C.diagonal().mean() * torch.eye(C.shape[0], dtype=C.dtype)
