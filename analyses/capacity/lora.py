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
tests/integration/test_lora.py). ``lora_targets`` unwraps to the inner Linear and names it by its
HF path.

Training (:func:`train_lora`) may add a retention term, ``retention_weight`` x
``KL(p_base || p_adapted)`` on unrelated prompts (:func:`retention_kl`, after ROME/MEMIT's KL
term), and copy the adapter at chosen step counts, so that one run per learning rate gives a
whole learning rate x steps grid (:func:`tune_lora`); :func:`choose` picks the point to use.
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

from fmi.core.forward import answer_only
from fmi.core.generate import Generated, greedy
from fmi.core.prompts import encode
from fmi.errors import ConfigError, require_at_least

TARGET_NAMES = ("mlp.dense_4h_to_h", "mlp.down_proj")  # GPT-NeoX; Gemma-3 / Llama-style
WRAPPER = "._original_component"


@dataclass(frozen=True)
class LoraConfig:
    """Ranks to probe, the optimiser's grid, the retention term and the tuning rule.

    - ``lrs`` x ``step_grid``: the learning rates and step counts tried. One training run per
      learning rate, read at each step count of the grid (snapshots of that run, not retrained);
      the pair chosen on training bindings (:func:`choose`) trains every size's adapter. A grid
      of one learning rate and one step count is not tuned: that pair is used as it is.
    - ``retention_weight`` (0 disables) x ``KL(p_base || p_adapted)`` at the last position of
      ``retention_prompts`` unrelated training prompts (the training question split) is added to
      every step's loss (:func:`retention_kl`).
    - ``tune_size``: how many training bindings the tuning adapters learn;
      ``max_unrelated_changed``: the bound of :func:`choose` on the fraction of held-out training
      unrelated prompts whose greedy output changes.

    Cost on Gemma-3-270M, 2 CPU cores: a step of 32 prompts takes about 3.1 s, so 50 steps take
    2.6 minutes per adapter; retention adds one forward and backward of ``retention_prompts``
    short prompts per step (about half a step at 16), and tuning adds ``len(lrs)`` runs of
    ``max(step_grid)`` steps on ``tune_size`` prompts per rank.
    """

    ranks: tuple[int, ...] = (1, 4, 16)
    lrs: tuple[float, ...] = (1e-3, 5e-3, 2e-2)
    step_grid: tuple[int, ...] = (10, 25, 50)
    batch_size: int = 32
    seed: int = 0
    retention_weight: float = 1.0
    retention_prompts: int = 16
    tune_size: int = 10
    max_unrelated_changed: float = 0.05

    def __post_init__(self) -> None:
        if not self.ranks or min(self.ranks) < 1:
            raise ConfigError(f"ranks must be a non-empty tuple of ints >= 1, got {self.ranks}")
        require_at_least(self, ("batch_size", "retention_prompts"))
        require_at_least(self, ("seed",), 0)
        bad = [x for x in self.lrs if not (math.isfinite(x) and x > 0)]
        if not self.lrs or bad or len(set(self.lrs)) != len(self.lrs):
            raise ConfigError(f"lrs must be distinct learning rates > 0, got {self.lrs}")
        grid = list(self.step_grid)
        if not grid or min(grid) < 1 or grid != sorted(set(grid)):
            raise ConfigError(
                f"step_grid must be increasing, distinct step counts >= 1, got {self.step_grid}"
            )
        if not (math.isfinite(self.retention_weight) and self.retention_weight >= 0):
            raise ConfigError(f"retention_weight must be >= 0, got {self.retention_weight}")
        if self.tune_size < 2 or self.tune_size % 2:
            raise ConfigError(
                f"tune_size must be an even number >= 2 (each word is bound in two contexts), "
                f"got {self.tune_size}"
            )
        if not 0 <= self.max_unrelated_changed <= 1:
            raise ConfigError(
                f"max_unrelated_changed must be in [0, 1], got {self.max_unrelated_changed}"
            )

    @property
    def steps(self) -> int:
        """The longest run of the grid."""
        return self.step_grid[-1]

    @property
    def tuned(self) -> bool:
        """Whether there is anything to choose: more than one (lr, steps) pair."""
        return len(self.lrs) * len(self.step_grid) > 1

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


@dataclass(frozen=True)
class Retention:
    """Retention prompts in fixed batches, with the frozen model's next-token log-probabilities
    at each one's last position (computed once, without any adapter, no gradient)."""

    batches: tuple[tuple[str, ...], ...]
    base: tuple[Float[Tensor, "batch vocab"], ...]

    @classmethod
    def build(cls, model, texts: list[str], batch_size: int) -> Retention:
        """Chunk ``texts`` into batches of ``batch_size`` and record ``log p_base`` for each;
        call it with no adapter applied. Each training step reads one batch, in turn, encoded
        exactly as here, so an adapter with ``B = 0`` scores a KL of exactly 0."""
        if not texts:
            raise ConfigError("retention needs at least one prompt")
        batches = tuple(tuple(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size))
        with torch.no_grad():  # not inference_mode: the targets are saved for backward
            base = tuple(_last_logits(model, list(b)).log_softmax(-1) for b in batches)
        return cls(batches, base)

    @property
    def n_prompts(self) -> int:
        return sum(len(b) for b in self.batches)


def retention_kl(
    model, texts: list[str] | tuple[str, ...], base: Float[Tensor, "batch vocab"]
) -> Tensor:
    """``KL(p_base || p)`` of the next token at the last position, summed over the vocabulary
    and averaged over ``texts`` (``p``: the model as it runs now, adapter hooks included).

    Followed: ROME (kmeng01/rome ``rome/compute_v.py``) and MEMIT (kmeng01/memit
    ``memit/compute_z.py``) add ``kl_factor * F.kl_div(kl_distr_init, kl_log_probs,
    log_target=True, reduction="batchmean")`` to the edit's NLL, where ``kl_distr_init`` are the
    unedited model's log-probabilities at the last token of KL prompts, recorded once and
    detached (``kl_factor`` 0.0625 in MEMIT's GPT-J hparams). Same reduction (``batchmean``:
    summed over the vocabulary, averaged over prompts), same once-recorded, detached base. Two
    differences: the prompts are unrelated training questions (retention of unrelated
    behaviour, not ROME's subject "essence" prompts ``"{} is a"``), and the arguments are
    swapped to give ``KL(p_base || p_adapted)`` as specified here; ROME/MEMIT's call computes
    ``KL(p_edited || p_base)``. The two agree to second order near ``p = p_base``. EasyEdit's
    fine-tuning baseline (zjunlp/EasyEdit ``easyeditor/models/ft/ft_main.py``, FT-L / FT-M) has no
    KL term (only an optional weight-norm clamp), so there was nothing to follow there.
    """
    logp = _last_logits(model, list(texts)).log_softmax(-1)
    return torch.nn.functional.kl_div(
        logp, base.to(logp.device), log_target=True, reduction="batchmean"
    )


@dataclass
class Trained:
    """A trained adapter, the per-step answer cross-entropy (before each update), the per-step
    retention KL (empty when retention is off) and the snapshots asked for (steps -> adapter)."""

    adapter: LoraAdapter
    losses: list[float]
    retention: list[float]
    snapshots: dict[int, LoraAdapter]


def train_lora(
    model,
    texts: list[str],
    targets: Int[Tensor, " n"],
    rank: int,
    cfg: LoraConfig,
    *,
    lr: float,
    steps: int,
    retention: Retention | None = None,
    snapshots: tuple[int, ...] = (),
) -> Trained:
    """Adam (``lr``) on a rank-``rank`` adapter only: ``steps`` seeded minibatches of prompts,
    loss the cross-entropy of ``targets`` at the last prompt position, plus
    ``cfg.retention_weight`` x :func:`retention_kl` on one batch of ``retention`` per step (in
    turn). With no retention or a weight of 0 the retention path never runs: the loop is the
    plain cross-entropy one, bit for bit. ``snapshots``: step counts at which to copy the adapter
    (after that many updates); the run is the same as without them."""
    if len(texts) != len(targets):
        raise ValueError(f"{len(texts)} texts but {len(targets)} targets")
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    if not (math.isfinite(lr) and lr > 0):
        raise ConfigError(f"lr must be > 0, got {lr}")
    outside = [k for k in snapshots if not 1 <= k <= steps]
    if outside:
        raise ConfigError(f"snapshots {outside} are outside 1..{steps} steps")
    keep = retention is not None and cfg.retention_weight > 0
    adapter = LoraAdapter.init(model.hf_model, rank, cfg.seed)
    opt = torch.optim.Adam(adapter.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    n = len(texts)
    losses: list[float] = []
    kls: list[float] = []
    snaps: dict[int, LoraAdapter] = {}
    with _frozen_base(model), applied(model.hf_model, adapter), torch.enable_grad():
        for step in range(steps):
            rows = torch.randperm(n, generator=gen)[: cfg.batch_size].tolist()
            logits = _last_logits(model, [texts[i] for i in rows])
            y = targets[rows].to(logits.device)
            loss = torch.nn.functional.cross_entropy(logits, y)
            total = loss
            if keep:
                assert retention is not None
                i = step % len(retention.batches)
                kl = retention_kl(model, retention.batches[i], retention.base[i])
                total = loss + cfg.retention_weight * kl
                kls.append(float(kl.detach()))
            opt.zero_grad()
            total.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if step + 1 in snapshots:
                snaps[step + 1] = adapter.snapshot()
    for p in adapter.parameters():
        p.grad = None
    return Trained(adapter, losses, kls, snaps)


def choose(curve: list[dict[str, Any]], bound: float) -> dict[str, Any]:
    """The (lr, steps) point of a tuning ``curve`` to use: the best ``read`` among the points
    whose ``unrelated_changed`` is at most ``bound``; ties go to fewer steps, then the smaller
    learning rate. If no point is within the bound, the least ``unrelated_changed`` wins (ties:
    better read, fewer steps, smaller lr). Returns a copy with ``within_bound`` added.

    >>> curve = [
    ...     {"lr": 0.001, "steps": 10, "read": 0.5, "unrelated_changed": 0.0},
    ...     {"lr": 0.001, "steps": 20, "read": 0.9, "unrelated_changed": 0.0},
    ...     {"lr": 0.01, "steps": 10, "read": 0.9, "unrelated_changed": 0.05},
    ...     {"lr": 0.01, "steps": 20, "read": 1.0, "unrelated_changed": 0.2},
    ... ]
    >>> choose(curve, 0.05)  # 1.0 breaks the bound; 0.9 twice: fewer steps wins
    {'lr': 0.01, 'steps': 10, 'read': 0.9, 'unrelated_changed': 0.05, 'within_bound': True}
    >>> choose(curve, 0.0)["lr"], choose(curve, 0.0)["steps"]
    (0.001, 20)
    """
    if not curve:
        raise ValueError("choose needs at least one tuning point")
    inside = [p for p in curve if p["unrelated_changed"] <= bound]
    if inside:
        best = min(inside, key=lambda p: (-p["read"], p["steps"], p["lr"]))
    else:
        best = min(curve, key=lambda p: (p["unrelated_changed"], -p["read"], p["steps"], p["lr"]))
    return {**best, "within_bound": bool(inside)}


@dataclass(frozen=True)
class TuneSet:
    """Training data to choose (lr, steps) on: statements to train on with their answer tokens,
    the read questions of the same bindings, and unrelated prompts (none a retention prompt)
    with their adapter-free greedy outputs."""

    texts: list[str]
    targets: Int[Tensor, " n"]
    reads: list[str]
    unrelated: list[str]
    base_unrelated: list[tuple[int, ...]]


def tune_lora(
    model,
    data: TuneSet,
    rank: int,
    cfg: LoraConfig,
    retention: Retention | None,
    *,
    max_new_tokens: int = 3,
    batch_size: int = 16,
) -> list[dict[str, Any]]:
    """The tuning curve of one rank: one run of ``cfg.steps`` steps per learning rate, read at
    every step count of ``cfg.step_grid`` (snapshots). ``read``: the first greedy token of each
    read question is its binding's answer token; ``unrelated_changed``: the greedy output
    (``max_new_tokens``) of an unrelated prompt differs from the adapter-free one;
    ``train_loss``: the minibatch cross-entropy at that step, before its update."""
    curve = []
    for lr in cfg.lrs:
        run = train_lora(
            model,
            data.texts,
            data.targets,
            rank,
            cfg,
            lr=lr,
            steps=cfg.steps,
            retention=retention,
            snapshots=cfg.step_grid,
        )
        for k in cfg.step_grid:
            adapter = run.snapshots[k]
            reads = lora_outputs(
                model, adapter, data.reads, max_new_tokens=1, batch_size=batch_size
            )
            got = [t[:1] == (y,) for t, y in zip(reads.tokens, data.targets.tolist(), strict=True)]
            out = lora_outputs(
                model, adapter, data.unrelated, max_new_tokens=max_new_tokens, batch_size=batch_size
            )
            changed = [a != b for a, b in zip(out.tokens, data.base_unrelated, strict=True)]
            curve.append(
                {
                    "lr": lr,
                    "steps": k,
                    "read": sum(got) / len(got),
                    "unrelated_changed": sum(changed) / len(changed),
                    "train_loss": round(run.losses[k - 1], 4),
                }
            )
    return curve


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
