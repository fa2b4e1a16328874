"""GRACE (Hartvigsen et al., NeurIPS 2023, "Aging with GRACE"): a discrete codebook at one layer.

The codebook lives at one residual site (``blocks.{L}.hook_resid_post``, last token). Each code
holds a key (the site's state on an edit's input), a per-code deferral radius and the label it
serves. Edits are added in turn with the published rules, using Euclidean distance ``d`` to the
nearest key ``j`` (radius ``eps_j``) and the initial radius ``eps_init``:

- ``d > eps_j + eps_init``: a new code (key, ``eps_init``);
- otherwise, the same label: *expand*, so that ``eps_j = max(eps_j, d)`` and the edit shares
  code ``j``;
- otherwise, a conflicting label: *split*, so that code ``j`` and a new code for the edit both
  get radius ``d / 2``.

At inference the nearest code fires when the query's state is within its radius. Then the
layer's output at the last position is replaced by the code's value, or the model runs
untouched. Two kinds of value, two rows:

- ``trained``: GRACE's own. The value starts at the edit's state and takes ``steps`` Adam steps
  (learning rate ``lr``) on the edit's cross-entropy with the value in place, backpropagated
  through the blocks above the site (the weights are frozen and get no gradient);
- ``correction``: the fast memory's value ``alpha v`` of the code's entry, added at the memory's
  injection site when the code fires (GRACE's retrieval, the memory's value).

``eps_init`` is tuned on training data (see :func:`tune_eps`), within the budget the row
records.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from analyses.compare.rows import Cost, Row, inject, mix, on_active, score
from fmi.core.forward import answer_only, collect
from fmi.core.generate import Generated, decode
from fmi.core.prompts import Encoded, encode
from fmi.core.sites import resid
from fmi.experiments.config import RecallConfig
from fmi.experiments.evaluate import Outputs, SplitRun
from fmi.experiments.metrics import rate
from fmi.memory.write import label_token, write_prompt


@dataclass
class Codebook:
    """Keys, radii and labels of the codes, and the code each edit maps to."""

    keys: Float[Tensor, "c d"]
    radii: Float[Tensor, " c"]
    labels: list[int]
    owner: list[int]  # per code: the edit that created it
    code_of: list[int]  # per edit: the code that serves it

    def lookup(self, states: Float[Tensor, "q d"]) -> tuple[Int[Tensor, " q"], Tensor]:
        """Per query, the nearest code and whether it fires (distance within its radius)."""
        dist = torch.cdist(states.float(), self.keys.float())
        best, idx = dist.min(dim=1)
        return idx, best <= self.radii[idx]


def build(keys: Float[Tensor, "n d"], labels: list[int], eps_init: float) -> Codebook:
    """Add the edits ``keys`` (labels ``labels``) in order with GRACE's add / expand / split
    rules (see the module)."""
    dev = keys.device
    book = Codebook(
        torch.zeros(0, keys.shape[1], device=dev), torch.zeros(0, device=dev), [], [], []
    )
    for e, (key, label) in enumerate(zip(keys.float(), labels, strict=True)):
        if len(book.labels):
            d = torch.linalg.vector_norm(book.keys - key, dim=1)
            j = int(d.argmin())
            dj = float(d[j])
            if dj <= float(book.radii[j]) + eps_init:
                if book.labels[j] == label:  # expand
                    book.radii[j] = max(float(book.radii[j]), dj)
                    book.code_of.append(j)
                    continue
                book.radii[j] = dj / 2  # split: both codes get half the distance
                _add(book, key, dj / 2, label, e)
                continue
        _add(book, key, eps_init, label, e)
    return book


def _add(book: Codebook, key: Tensor, radius: float, label: int, edit: int) -> None:
    book.keys = torch.cat([book.keys, key[None]])
    book.radii = torch.cat([book.radii, torch.tensor([radius], device=book.radii.device)])
    book.labels.append(label)
    book.owner.append(edit)
    book.code_of.append(len(book.labels) - 1)


def last_states(model, texts: list[str], site: str, batch_size: int) -> Float[Tensor, "n d"]:
    """Each text's state at ``site``, last token (one frozen forward)."""
    got = collect(model.bridge, model.tokenizer, texts, [site], batch_size=batch_size)
    return got.stack_last(site)


def replace_last(values: Float[Tensor, "b d"], active: Tensor):
    """A hook that replaces the last prompt position's activation by ``values[b]`` where
    ``active[b]``, on the prompt pass only (later KV-cached steps are left alone)."""
    state = {"calls": 0}

    def hook(act: Tensor, hook: object) -> Tensor:
        state["calls"] += 1
        if state["calls"] > 1 or not bool(active.any()):
            return act
        out = act.clone()
        rows = active.nonzero().squeeze(-1)
        out[rows, -1] = values[rows].to(act.dtype)
        return out

    return hook


def train_values(
    model,
    texts: list[str],
    targets: Int[Tensor, " n"],
    site: str,
    steps: int,
    lr: float,
    batch_size: int,
) -> Float[Tensor, "n d"]:
    """GRACE's values: each starts at its edit's state and takes ``steps`` Adam steps on the
    edit's cross-entropy with the value in place of the site's last-position output."""
    bridge = model.bridge
    out = []
    for start in range(0, len(texts), batch_size):
        enc = encode(model.tokenizer, texts[start : start + batch_size])
        y = targets[start : start + enc.tokens.shape[0]]
        init = last_states(model, texts[start : start + batch_size], site, batch_size)
        value = init.clone().requires_grad_(True)
        opt = torch.optim.Adam([value], lr=lr)
        on = torch.ones(len(y), dtype=torch.bool)
        for _ in range(steps):
            opt.zero_grad()
            with torch.enable_grad(), bridge.hooks(fwd_hooks=[(site, replace_last(value, on))]):
                logits = bridge(
                    enc.tokens, attention_mask=enc.mask, logits_to_keep=answer_only(enc.tokens)
                )
                loss = torch.nn.functional.cross_entropy(logits[:, -1].float(), y.to(logits.device))
            loss.backward()
            opt.step()
        out.append(value.detach())
    return torch.cat(out)


def replaced_outputs(
    model, run: SplitRun, cfg: RecallConfig, site: str, values: Tensor, active: Tensor
) -> Outputs:
    """Greedy outputs with the site's last position replaced by ``values[q]`` where
    ``active``; the other queries keep their memory-free output."""

    def generate(rows: list[int]) -> Generated:
        def hooks_for(enc: Encoded, start: int):
            chunk = values[rows][start : start + enc.tokens.shape[0]]
            return [(site, replace_last(chunk, torch.ones(chunk.shape[0], dtype=torch.bool)))]

        return decode(
            model,
            [run.qs.texts[q] for q in rows],
            hooks_for,
            label_ids=run.label_ids,
            max_new_tokens=run.max_new_tokens,
            batch_size=cfg.batch_size,
        )

    return on_active(run, active, generate)


def edit_keys(model, split, site: str, batch_size: int):
    """The edits of a split (its unique bindings, in write order): their write prompts, their
    keys at ``site`` and their labels' first token ids."""
    from fmi.experiments.queries import unique_bindings

    entries = unique_bindings(split.bindings)
    texts = [write_prompt(split.templates, b)[0] for b in entries]
    targets = [label_token(model.tokenizer, split.templates, b.label) for b in entries]
    return texts, last_states(model, texts, site, batch_size), targets


def tune_eps(
    model,
    train_split,
    fitted,
    cfg: RecallConfig,
    site: str,
    grid: tuple[float, ...],
    n_symbols: int,
) -> tuple[float, list[dict]]:
    """``eps_init`` chosen on the training split (its first ``n_symbols`` symbols and twice as
    many unrelated prompts): the codebook of those edits, read with the memory's correction
    values, at each radius ``grid[k] * median key distance``; the radius with the best
    ``read - plain - unrelated_changed`` wins (ties: the smallest)."""
    from dataclasses import replace

    from fmi.experiments.evaluate import prepare_split

    symbols = list(dict.fromkeys(b.symbol for b in train_split.bindings))[:n_symbols]
    small = replace(
        train_split,
        bindings=tuple(b for b in train_split.bindings if b.symbol in symbols),
        unrelated=train_split.unrelated[: 2 * n_symbols],
    )
    run = prepare_split(model, small, fitted, cfg)
    _, keys, targets = edit_keys(model, small, site, cfg.batch_size)
    states = last_states(model, run.qs.texts, site, cfg.batch_size)
    scale = float(torch.pdist(keys.float()).median())
    curve, best = [], (float("-inf"), 0.0)
    for g in grid:
        book = build(keys, targets, g * scale)
        code, on = book.lookup(states)
        entry = torch.tensor([book.owner[int(c)] for c in code])
        deltas = run.memory.alpha * run.memory.values[entry]
        out = inject(model, run, cfg, run.memory.inject_site, deltas, on)
        h = run.hits(model, out)
        point = {
            "eps_init": g * scale,
            "scale": g,
            **{m: rate(h[m]) for m in ("read", "plain", "unrelated_changed")},
        }
        curve.append(point)
        objective = point["read"] - point["plain"] - point["unrelated_changed"]
        if objective > best[0]:
            best = (objective, g * scale)
    return best[1], curve


def grace_rows(
    model, train_split, run: SplitRun, fitted, cfg: RecallConfig, ccfg
) -> tuple[list[Row], dict]:
    """GRACE's two rows on a prepared split (trained values; the memory's correction values),
    with ``eps_init`` and the layer from the training split."""
    site = resid(round(ccfg.grace_depth * (int(model.bridge.cfg.n_layers) - 1)), "post")
    began = time.perf_counter()
    eps, curve = tune_eps(
        model, train_split, fitted, cfg, site, ccfg.grace_eps_grid, ccfg.grace_tune_symbols
    )
    tune_s = time.perf_counter() - began
    start = time.perf_counter()
    book, n_edits, values = trained_codebook(model, run.split, site, eps, cfg, ccfg)
    write_s = time.perf_counter() - start
    states = last_states(model, run.qs.texts, site, cfg.batch_size)
    code, on = book.lookup(states)
    budget = (
        f"{len(ccfg.grace_eps_grid)} configurations (eps_init) tried on {ccfg.grace_tune_symbols}"
        f" training symbols; layer (depth {ccfg.grace_depth}), {ccfg.grace_steps} steps and lr "
        f"{ccfg.grace_lr} fixed"
    )
    detail = {
        "site": site,
        "eps_init": eps,
        "codes": len(book.labels),
        "edits": n_edits,
        "steps": ccfg.grace_steps,
        "lr": ccfg.grace_lr,
        "tuning_budget": budget,
        "tuning_seconds": tune_s,
    }
    rows = [
        trained_row(model, run, cfg, ccfg, site, values[code], on, write_s, detail),
        correction_row(
            model, run, cfg, torch.tensor(book.owner, device=code.device)[code], on, detail
        ),
    ]
    return rows, {"chosen": eps, "curve": [dict(p, epsilon=p["eps_init"]) for p in curve]}


def trained_codebook(
    model, split, site: str, eps: float, cfg: RecallConfig, ccfg
) -> tuple[Codebook, int, Float[Tensor, "c d"]]:
    """The codebook of ``split``'s edits at radius ``eps``, how many edits it holds, and each
    code's value trained on its owner edit (:func:`train_values`)."""
    texts, keys, targets = edit_keys(model, split, site, cfg.batch_size)
    book = build(keys, targets, eps)
    values = train_values(
        model,
        [texts[o] for o in book.owner],
        torch.tensor([targets[o] for o in book.owner]),
        site,
        ccfg.grace_steps,
        ccfg.grace_lr,
        cfg.batch_size,
    )
    return book, len(texts), values


def trained_row(
    model,
    run: SplitRun,
    cfg: RecallConfig,
    ccfg,
    site: str,
    values: Float[Tensor, "q d"],
    on: Tensor,
    write_s: float,
    detail: dict,
) -> Row:
    """GRACE's own row: the firing code's trained value replaces the site's last position."""
    trained = replaced_outputs(model, run, cfg, site, values, on)
    return score(
        model,
        run,
        cfg,
        "GRACE (trained values)",
        "codebook",
        mix(on, trained, run.base_outputs),
        Cost(
            1 + ccfg.grace_steps,
            ccfg.grace_steps,
            run.write_seconds + write_s,
            f"{detail['codes']} codes; {ccfg.grace_steps} Adam steps per code through the blocks "
            f"above {site}",
        ),
        active=on,
        detail=detail,
    )


def correction_row(
    model, run: SplitRun, cfg: RecallConfig, entry: Tensor, on: Tensor, detail: dict
) -> Row:
    """GRACE's retrieval with the memory's values: the firing code's owner entry's correction
    ``alpha v``, added at the memory's injection site."""
    deltas = run.memory.alpha * run.memory.values[entry]
    corrected = inject(model, run, cfg, run.memory.inject_site, deltas, on)
    return score(
        model,
        run,
        cfg,
        "GRACE (correction values)",
        "codebook",
        corrected,
        Cost(1, 0, run.write_seconds, "the memory's write; GRACE's codebook picks the entry"),
        active=on,
        detail=detail,
    )
