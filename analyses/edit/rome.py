"""ROME (Meng et al. 2022, "Locating and Editing Factual Associations in GPT"): a knowledge-
editing baseline that writes each fact as a rank-one update of one MLP output projection.

For one decoder block's MLP output Linear (Gemma-3 ``mlp.down_proj``, GPT-NeoX
``mlp.dense_4h_to_h``; found by :func:`analyses.capacity.lora.lora_targets`) an edit

1. reads the key ``k``: that Linear's input at the subject's last token of the rewrite prompt
   (:func:`subject_key`);
2. optimises the value ``v*``: the Linear's output there, ``W k + b + delta``, with ``delta``
   trained so that the model then gives ``target_new`` after the rewrite prompt, with a KL term
   that keeps the next-token distribution after ``"{subject} is a"`` (:func:`target_value`);
3. writes ``W' = W + (v* - b - W k) uᵀ / (uᵀ k)``, ``u = C⁻¹ k``, where ``C = E[k kᵀ]`` is the
   keys' uncentred second moment over model-generated neutral text (:func:`key_covariance`,
   :func:`neutral_text`), so that ``W' k = v* - b`` and keys ``C⁻¹``-orthogonal to ``k`` keep
   their outputs (:func:`rank_one_update`).

:class:`Rome` is the :class:`analyses.edit.method.Method`: edits one after another into the weight,
then restores it bit for bit on exit. Written from the paper's equations, not from its code.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from analyses.capacity.lora import _frozen_base, lora_targets
from analyses.edit.cases import EditCase, answer_text
from analyses.edit.method import Cost, Held
from fmi.core.prompts import Encoded, encode, span_tokens
from fmi.errors import ConfigError

STARTS = ("The", "In the", "It is", "One of the", "A new", "When", "There are", "This")
KL_PROMPT = "{} is a"


@dataclass(frozen=True)
class RomeConfig:
    """ROME's hyperparameters.

    ``layer``: the edited block (None: ``n_layers // 3``, an early-middle MLP); ``steps`` Adam
    steps at ``lr`` on ``delta``; ``kl_weight`` x the essence prompt's KL; ``clamp``: the largest
    ``||delta||`` relative to ``||W k + b||``; ``cov_samples`` tokens of neutral text for ``C``,
    regularised as ``C + cov_lambda * mean(diag C) * I``; ``context_prefixes``: how many short
    generated prefixes the key is averaged over and the NLL is taken on (0: the bare prompt).
    """

    layer: int | None = None
    steps: int = 20
    lr: float = 0.5
    kl_weight: float = 0.0625
    clamp: float = 4.0
    cov_samples: int = 2000
    cov_lambda: float = 1e-2
    context_prefixes: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.layer is not None and (isinstance(self.layer, bool) or self.layer < 0):
            raise ConfigError(f"layer must be None or an int >= 0, got {self.layer}")
        for name in ("steps", "cov_samples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("context_prefixes", "seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "clamp", "cov_lambda"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a finite float > 0, got {value}")
        if not (math.isfinite(self.kl_weight) and self.kl_weight >= 0):
            raise ConfigError(f"kl_weight must be a finite float >= 0, got {self.kl_weight}")

    def resolved_layer(self, model) -> int:
        """The edited block of ``model``; ConfigError when outside its blocks."""
        n = int(model.bridge.cfg.n_layers)
        layer = n // 3 if self.layer is None else self.layer
        if not 0 <= layer < n:
            raise ConfigError(f"layer must be in 0..{n - 1} for {model.name}, got {layer}")
        return layer

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _linear(model, layer: int) -> torch.nn.Linear:
    return lora_targets(model.hf_model)[layer][1]


def neutral_text(
    model, n_tokens: int, seed: int = 0, *, new_tokens: int = 64, repeats: int = 4
) -> list[str]:
    """About ``n_tokens`` tokens of text the model writes itself from neutral starts (sampled,
    seeded; the global torch RNG is left as it was): the offline stand-in for ROME's Wikipedia
    sample. Each round samples ``repeats`` continuations of every start of ``STARTS`` in one
    batch, up to ``new_tokens`` tokens each (fewer when fewer are asked for)."""
    starts = [s for s in STARTS for _ in range(repeats)]
    new_tokens = max(1, min(new_tokens, -(-n_tokens // len(starts))))
    texts: list[str] = []
    total = 0
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        while total < n_tokens:
            enc = encode(model.tokenizer, starts)
            out = model.bridge.generate(
                enc.tokens,
                attention_mask=enc.mask,
                max_new_tokens=new_tokens,
                do_sample=True,
                stop_at_eos=False,
                verbose=False,
            )
            width = enc.tokens.shape[1]
            for row, start in enumerate(starts):
                text = start + model.tokenizer.decode(out[row, width:], skip_special_tokens=True)
                texts.append(text)
                total += enc.lengths[row] + new_tokens
    return texts


class _Stop(Exception):
    """Raised by a key hook once it has what it needs: the rest of the forward is skipped."""


def _keys(model, layer: int, enc: Encoded, cost: Cost | None = None) -> Tensor:
    """The edited Linear's input ``[batch, pos, d_in]`` for ``enc`` (the forward stops there)."""
    seen: list[Tensor] = []

    def hook(module: torch.nn.Module, inputs: tuple[Tensor, ...]) -> None:
        seen.append(inputs[0].detach())
        raise _Stop

    handle = _linear(model, layer).register_forward_pre_hook(hook)
    try:
        with torch.no_grad(), contextlib.suppress(_Stop):
            model.bridge(enc.tokens, attention_mask=enc.mask)
    finally:
        handle.remove()
    if cost is not None:
        cost.forward += 1
    return seen[0]


def key_covariance(
    model, layer: int, texts: Sequence[str] | Encoded, batch_size: int = 8
) -> Tensor:
    """``E[k kᵀ]`` ``[d_in, d_in]`` (float64, uncentred) of block ``layer``'s MLP output
    projection input ``k`` over every non-pad token of ``texts`` (or one encoded batch)."""
    batches = (
        [texts]
        if isinstance(texts, Encoded)
        else [
            encode(model.tokenizer, list(texts[i : i + batch_size]))
            for i in range(0, len(texts), batch_size)
        ]
    )
    d_in = _linear(model, layer).in_features
    total = torch.zeros(d_in, d_in, dtype=torch.float64)
    count = 0
    for enc in batches:
        k = _keys(model, layer, enc)[enc.mask.bool().to(enc.tokens.device)].float()
        total += (k.T @ k).double().cpu()
        count += k.shape[0]
    return total / max(count, 1)


@dataclass(frozen=True)
class _Row:
    """One prompt with the subject: its token ids and the subject's last-token index."""

    ids: list[int]
    subject_last: int


def _row(tokenizer, text: str, subject: str, prefix: str = "") -> _Row:
    text = prefix + text
    at = text.find(subject, len(prefix))
    if at < 0:
        raise ValueError(f"subject {subject!r} is not in {text!r}")
    last = span_tokens(tokenizer, text, (at, at + len(subject)))[-1]
    return _Row(list(tokenizer(text)["input_ids"]), last)


def _prefixes(model, cfg: RomeConfig) -> list[str]:
    """``""`` and ``cfg.context_prefixes`` short generated prefixes (ROME's random contexts)."""
    if not cfg.context_prefixes:
        return [""]
    texts = neutral_text(model, 1, cfg.seed + 1, new_tokens=8, repeats=1)
    return [""] + [t.strip() + ". " for t in (texts * cfg.context_prefixes)[: cfg.context_prefixes]]


def subject_key(
    model, layer: int, case: EditCase, prefixes: Sequence[str] = ("",), cost: Cost | None = None
) -> Tensor:
    """The key ``[d_in]``: block ``layer``'s MLP output projection input at the subject's last
    token of ``case.rewrite``, averaged over ``prefix + rewrite`` for each of ``prefixes``."""
    rows = [_row(model.tokenizer, case.rewrite, case.subject, p) for p in prefixes]
    enc = encode(model.tokenizer, [p + case.rewrite for p in prefixes])
    k = _keys(model, layer, enc, cost)
    width = enc.tokens.shape[1]
    picked = [k[i, width - len(r.ids) + r.subject_last] for i, r in enumerate(rows)]
    return torch.stack(picked).float().mean(0)


def _batch(rows: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor, list[int]]:
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(tokens)
    for i, r in enumerate(rows):
        tokens[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    return tokens, mask, [width - len(r) for r in rows]


def target_value(
    model,
    layer: int,
    case: EditCase,
    key: Tensor,
    cfg: RomeConfig,
    cost: Cost | None = None,
    prefixes: Sequence[str] = ("",),
) -> Tensor:
    """``v*`` ``[d_out]``: the output the edited Linear should give for ``key``, ``W k + b +
    delta``. ``delta`` takes ``cfg.steps`` Adam steps (``cfg.lr``) on the mean NLL of every
    token of ``answer_text(case.target_new)`` teacher-forced after each ``prefix + rewrite``,
    plus ``cfg.kl_weight`` x ``KL(p_orig || p_edited)`` of the next token after
    ``"{subject} is a"``; in every row the Linear's output at the subject's last token is
    replaced by ``W k + b + delta``. After each step ``||delta|| <= cfg.clamp * ||W k + b||``."""
    cost = cost if cost is not None else Cost()
    tok = model.tokenizer
    linear = _linear(model, layer)
    answer = list(tok(answer_text(case.target_new), add_special_tokens=False)["input_ids"])
    prompts = [_row(tok, case.rewrite, case.subject, p) for p in prefixes]
    essence = _row(tok, KL_PROMPT.format(case.subject), case.subject)
    rows = [r.ids + answer[:-1] for r in prompts] + [essence.ids]
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    tokens, mask, pads = _batch(rows, pad_id)
    width, n_ans = tokens.shape[1], len(answer)
    where = (
        torch.arange(len(rows)),
        torch.tensor([p + r.subject_last for p, r in zip(pads, [*prompts, essence], strict=True)]),
    )
    keep = torch.arange(width - n_ans, width)  # answer-predicting columns; the last is the KL's
    targets = torch.tensor(answer).expand(len(prompts), n_ans)
    with torch.no_grad():
        base = linear(key.to(linear.weight.dtype)).float()
    delta = torch.zeros_like(base, requires_grad=True)

    def hook(module: torch.nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> Tensor:
        value = (base + delta).to(out.dtype).expand(len(rows), -1)
        return out.index_put(where, value)

    def logits() -> Tensor:
        return model.bridge(tokens, attention_mask=mask, logits_to_keep=keep).float()

    with torch.no_grad():
        kl_base = logits()[-1, -1].log_softmax(-1)
        cost.forward += 1
    opt = torch.optim.Adam([delta], lr=cfg.lr)
    limit = cfg.clamp * float(base.norm())
    handle = linear.register_forward_hook(hook)
    try:
        for _ in range(cfg.steps):
            out = logits()
            logp = out[: len(prompts)].log_softmax(-1)
            nll = -logp.gather(-1, targets.unsqueeze(-1).to(logp.device)).mean()
            kl = torch.nn.functional.kl_div(
                out[-1, -1].log_softmax(-1), kl_base, log_target=True, reduction="sum"
            )
            loss = nll + cfg.kl_weight * kl
            opt.zero_grad()
            loss.backward()
            opt.step()
            cost.forward += 1
            cost.backward += 1
            with torch.no_grad():
                norm = float(delta.norm())
                if norm > limit:
                    delta.mul_(limit / norm)
    finally:
        handle.remove()
    return (base + delta).detach()


def rank_one_update(
    W: Tensor, C: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None
) -> Tensor:
    """The rank-one delta ``(v - b - W k) uᵀ / (uᵀ k)``, ``u = C⁻¹ k`` (a solve, not an
    inverse), to add to ``W`` ``[d_out, d_in]`` (torch's Linear layout: output ``W x + b``).

    After ``W' = W + delta``: ``W' k + b = v`` exactly up to float error, and ``W' x = W x`` for
    every ``x`` with ``xᵀ C⁻¹ k = 0``. Computed in float64, returned in ``W``'s dtype.

    >>> W, C, k, v = torch.zeros(2, 2), torch.eye(2), torch.tensor([1.0, 0.0]), torch.ones(2)
    >>> rank_one_update(W, C, k, v)
    tensor([[1., 0.],
            [1., 0.]])
    """
    W64, k64 = W.detach().double(), k.detach().double().to(W.device)
    target = v.detach().double().to(W.device)
    if bias is not None:
        target = target - bias.detach().double()
    u = torch.linalg.solve(C.double().to(W.device), k64)
    delta = torch.outer(target - W64 @ k64, u) / (u @ k64)
    return delta.to(W.dtype)


def _checksum(t: Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


class Rome:
    """ROME as a :class:`analyses.edit.method.Method`: each case, in order, a rank-one update of
    one block's MLP output projection; the weight is restored bit for bit on exit.

    The covariance is computed once per (model, layer) and cached; its seconds are in
    ``covariance_seconds``, not charged to the edits.

    >>> from fmi.models.registry import load_model
    >>> model = load_model("tiny-gemma", announce=lambda _: None)
    >>> case = EditCase("0", "Paris", "{} is the capital of", "Italy", "France")
    >>> rome, cost = Rome(RomeConfig(steps=3, cov_samples=100)), Cost()
    >>> with rome.edited(model, [case], cost):
    ...     (cost.forward, cost.backward)
    (5, 3)
    """

    name = "rome"

    def __init__(
        self, config: RomeConfig = RomeConfig(), texts: dict[str, list[str]] | None = None
    ) -> None:
        self.config = config
        # model name -> the covariance text; pass one dict to share it between settings
        self._texts: dict[str, list[str]] = {} if texts is None else texts
        self.covariance_seconds = 0.0
        self._cov: dict[tuple[str, int], Tensor] = {}
        self._tokens: dict[tuple[str, int], int] = {}
        self._layer: int | None = None
        self._used: tuple[str, int] | None = None

    def covariance(self, model, layer: int) -> Tensor:
        """The regularised ``C + cov_lambda * mean(diag C) * I`` of (model, layer), cached."""
        key = (model.name, layer)
        if key not in self._cov:
            started = time.perf_counter()
            if model.name not in self._texts:  # one text per model, shared by its layers
                self._texts[model.name] = neutral_text(
                    model, self.config.cov_samples, self.config.seed
                )
            texts = self._texts[model.name]
            C = key_covariance(model, layer, texts)
            C = C + self.config.cov_lambda * C.diagonal().mean() * torch.eye(C.shape[0]).to(C)
            self._cov[key] = C
            self._tokens[key] = sum(len(model.tokenizer(t)["input_ids"]) for t in texts)
            self.covariance_seconds += time.perf_counter() - started
        return self._cov[key]

    @contextlib.contextmanager
    def edited(self, model, cases: Sequence[EditCase], cost: Cost) -> Iterator[Held]:
        """Write ``cases`` one after another (each sees the earlier ones), yield ``Held()``,
        and restore the weight on exit (RuntimeError if its checksum then differs)."""
        cfg = self.config
        layer = cfg.resolved_layer(model)
        self._layer, self._used = layer, (model.name, layer)
        linear = _linear(model, layer)
        C = self.covariance(model, layer)
        prefixes = _prefixes(model, cfg)
        before = linear.weight.detach().clone()
        digest = _checksum(before)
        try:
            with _frozen_base(model):
                for case in cases:
                    started = time.perf_counter()
                    k = subject_key(model, layer, case, prefixes, cost)
                    v = target_value(model, layer, case, k, cfg, cost, prefixes)
                    with torch.no_grad():
                        update = rank_one_update(linear.weight, C, k, v, linear.bias)
                        linear.weight.copy_(linear.weight + update)
                    cost.seconds += time.perf_counter() - started
            yield Held()
        finally:
            with torch.no_grad():
                linear.weight.copy_(before)
            if _checksum(linear.weight) != digest:
                raise RuntimeError(f"rome: layer {layer}'s weight was not restored exactly")

    def settings(self) -> dict[str, Any]:
        out = self.config.to_dict()
        out["resolved_layer"] = self._layer
        out["covariance_tokens"] = self._tokens.get(self._used) if self._used else None
        out["covariance_seconds"] = self.covariance_seconds
        return out
