"""The sweep's cells: the grid, each cell's name and hash, and the function that runs one.

Both executors call :func:`run_cell`; it loads the cell's model through a one-model cache per
process (kept for the next cell of the same model, revision, device and dtype), so a process
that runs cells grouped by model loads each model once.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import sys
import time
from dataclasses import dataclass
from typing import Any

from analyses.sweep.config import SweepConfig
from fmi.errors import ConfigError

# (model, revision, device, dtype) -> the loaded model: one at a time per process
_LOADED: dict[tuple, Any] = {}


@dataclass(frozen=True)
class Cell:
    """One point of the grid: the model to load and the recall configuration to run on it.

    >>> cell = grid(SweepConfig.from_dict({"models": ["tiny-gemma"], "symbol_layers": [1]}))[0]
    >>> cell.name
    'tiny-gemma-sym1-tokauto-injln_final.hook_out-seed0-...'
    >>> cell.recall.symbol_site, len(cell.key)
    ('blocks.1.hook_resid_post', 12)
    """

    model: str
    revision: str | None
    device: str
    dtype: str
    recall: Any  # fmi.experiments.config.RecallConfig

    @property
    def model_key(self) -> tuple[str, str | None, str, str]:
        """What a loaded model is shared by: model, revision, device, dtype."""
        return (self.model, self.revision, self.device, self.dtype)

    def to_dict(self) -> dict[str, Any]:
        """Everything that decides the cell's result (JSON-ready, lists for tuples)."""
        doc = {
            "model": self.model,
            "revision": self.revision,
            "device": self.device,
            "dtype": self.dtype,
            "recall": self.recall.to_dict(),
        }
        return json.loads(json.dumps(doc, default=str))

    @property
    def key(self) -> str:
        """A short hash of :meth:`to_dict`: two cells share it only if they run the same."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def name(self) -> str:
        """Readable and safe as a file name: model, revision, the three sites, seed, key."""
        r = self.recall
        parts = [
            self.model + (f"@{self.revision}" if self.revision else ""),
            f"sym{short_site(r.symbol_site)}",
            f"tok{short_site(r.token_site)}",
            f"inj{short_site(r.inject_site)}",
            f"seed{r.seed}",
            self.key,
        ]
        return re.sub(r"[^A-Za-z0-9._@-]+", "_", "-".join(parts))


def short_site(site: str | None) -> str:
    """``L`` for ``blocks.L.hook_resid_post``, ``auto`` for ``None``, else the hook name.

    >>> short_site("blocks.4.hook_resid_post"), short_site(None), short_site("ln_final.hook_out")
    ('4', 'auto', 'ln_final.hook_out')
    """
    if site is None:
        return "auto"
    m = re.fullmatch(r"blocks\.(\d+)\.hook_resid_post", site)
    return m.group(1) if m else site


def grid(cfg: SweepConfig) -> list[Cell]:
    """Every cell, grouped by model and revision (models x revisions x symbol layers x token
    layers x inject sites x seeds, in the config's order).

    >>> cfg = SweepConfig.from_dict({"models": ["tiny-gemma"], "seeds": [0, 1],
    ...                              "token_layers": [0, 1]})
    >>> [(c.recall.token_site, c.recall.seed) for c in grid(cfg)][:2]
    [('blocks.0.hook_resid_post', 0), ('blocks.0.hook_resid_post', 1)]
    """
    cells = []
    for model, revision in itertools.product(cfg.models, cfg.revisions):
        dims = (cfg.symbol_layers[model], cfg.token_layers[model], cfg.inject_sites[model])
        for sym, tok, inj, seed in itertools.product(*dims, cfg.seeds):
            recall = cfg.recall_config(
                model=model, seed=seed, symbol_site=sym, token_site=tok, inject_site=inj
            )
            cells.append(Cell(model, revision, cfg.device, cfg.dtype, recall))
    return cells


def _announce(message: str) -> None:
    print(message, file=sys.stderr)


def load(model: str, revision: str | None, device: str, dtype: str):
    """:func:`fmi.models.registry.load_model` at ``revision`` on ``device`` in ``dtype`` (weights
    seed 0: only the tiny random models depend on it).

    >>> load("tiny-gemma", None, "auto", "float32").name
    'tiny-gemma'
    """
    from fmi.models.registry import load_model

    return load_model(
        model, seed=0, announce=_announce, revision=revision, device=device, dtype=dtype
    )


def cached_model(key: tuple[str, str | None, str, str]):
    """The model for ``key`` (model, revision, device, dtype), loaded once; loading another
    drops the previous one, so a process holds one model at a time.

    >>> cached_model(("tiny-gemma", None, "auto", "float32")) is cached_model(
    ...     ("tiny-gemma", None, "auto", "float32"))
    True
    """
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = load(*key)
    return _LOADED[key]


def check_sites(model, cell: Cell) -> dict[str, str]:
    """The cell's three sites on ``model`` (depth defaults resolved); ``ConfigError`` naming the
    cell for a site the model lacks (a layer beyond its depth).

    >>> cell = grid(SweepConfig.from_dict({"models": ["tiny-gemma"], "symbol_layers": [9]}))[0]
    >>> check_sites(cached_model(cell.model_key), cell)
    Traceback (most recent call last):
    ...
    fmi.errors.ConfigError: cell tiny-gemma-sym9-...: unknown hook site 'blocks.9.hook_resid_post...
    """
    from fmi.core.sites import check_site

    symbol, token = cell.recall.sites(int(model.bridge.cfg.n_layers))
    sites = {"symbol": symbol, "token": token, "inject": cell.recall.inject_site}
    try:
        for site in sites.values():
            check_site(model.bridge, site)
    except ConfigError as err:
        raise ConfigError(f"cell {cell.name}: {err}") from None
    return sites


def site_layer(site: str, n_layers: int) -> float:
    """Where a site sits in depth, in blocks: ``L`` after block L (``hook_resid_post``),
    ``L - 0.5`` before it (``hook_resid_pre``), ``n_layers - 0.5`` for the final norm's output.

    >>> site_layer("blocks.3.hook_resid_post", 18), site_layer("blocks.0.hook_resid_pre", 18)
    (3.0, -0.5)
    >>> site_layer("ln_final.hook_out", 18)
    17.5
    """
    from fmi.core.sites import layer_of

    layer = layer_of(site)
    if layer is None:
        return n_layers - 0.5
    return float(layer) - (0.5 if site.endswith("hook_resid_pre") else 0.0)


def run_cell(cell: Cell) -> dict[str, Any]:
    """Run one cell: the recall document, with the cell, its sites and their depths.

    >>> cfg = SweepConfig.from_dict({"models": ["tiny-gemma"], "splits": ["same"],
    ...     "modes": ["dual_key"], "recall": {"quick": True, "refine_grid": [1], "end": None,
    ...     "n_train": 8, "n_eval": 4, "n_unrelated": 8}})
    >>> doc = run_cell(grid(cfg)[0])
    >>> sorted(doc["recall"]["results"]), doc["layers"]["symbol"]
    (['dual_key', 'none'], 0.0)
    """
    from fmi.experiments.recall import run_recall, task_for

    started = time.perf_counter()
    model = cached_model(cell.model_key)
    loaded = time.perf_counter()
    sites = check_sites(model, cell)
    n_layers = int(model.bridge.cfg.n_layers)
    doc = run_recall(model, task_for(cell.recall), cell.recall, progress=False)
    return {
        "name": cell.name,
        "key": cell.key,
        "cell": cell.to_dict(),
        "sites": sites,
        "layers": {k: site_layer(s, n_layers) for k, s in sites.items()},
        "n_layers": n_layers,
        "seconds": {
            "load": round(loaded - started, 1),
            "recall": round(time.perf_counter() - loaded, 1),
        },
        "recall": doc,
    }
