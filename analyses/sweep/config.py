"""A sweep's configuration: the grid's dimensions and the recall settings every cell shares.

A config file (JSON, or TOML on Python 3.11+) holds::

    models          model names as fmi.load_model takes them (required, at least one)
    revisions       checkpoint revisions, e.g. "step1000" (default: the model's own weights)
    symbol_layers   layers whose residual keys the projected/raw modes use (default: recall's
    token_layers    depth fractions); dual-key modes' token keys likewise
    inject_sites    where values are added (default ln_final.hook_out)
    seeds           recall seeds (default [0])
    splits, modes   evaluation splits and retrieval modes each cell runs (default: all)
    recall          RecallConfig overrides shared by every cell (n_train, n_eval, ...; "quick":
                    true starts from RecallConfig.quick's sizes)
    device, dtype   passed to the model loader (default "auto", "float32")

A layer is an integer L, meaning the residual stream after block L
(``blocks.{L}.hook_resid_post``, the site recall's depth fractions name), a TransformerLens hook
name taken as it is (``"blocks.0.hook_resid_pre"``, ``"ln_final.hook_out"``), or ``"auto"``
(recall's default). A layer list applies to every model; a mapping from model name to list gives
each model its own (a model it does not name keeps the default). A layer beyond a model's depth
is refused when that model loads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fmi.errors import ConfigError, FmiError

KEYS = (
    "models",
    "revisions",
    "symbol_layers",
    "token_layers",
    "inject_sites",
    "seeds",
    "splits",
    "modes",
    "recall",
    "device",
    "dtype",
)
LAYER_KEYS = ("symbol_layers", "token_layers", "inject_sites")
# RecallConfig fields a cell sets itself, and the top-level keys that set the rest of the grid
CELL_FIELDS = ("model", "seed", "symbol_site", "token_site", "inject_site", "splits", "modes")


def site_of(layer: Any, what: str) -> str | None:
    """A layer as the hook site it names: ``None`` for ``"auto"`` (recall's default).

    >>> site_of(3, "symbol_layers"), site_of("ln_final.hook_out", "x"), site_of("auto", "x")
    ('blocks.3.hook_resid_post', 'ln_final.hook_out', None)
    >>> site_of(-1, "symbol_layers")
    Traceback (most recent call last):
    ...
    fmi.errors.ConfigError: symbol_layers: a layer must be >= 0, got -1
    """
    from fmi.core.sites import resid

    if layer == "auto":
        return None
    if isinstance(layer, bool) or not isinstance(layer, (int, str)) or layer == "":
        raise ConfigError(f"{what}: a layer is an integer, a hook name or 'auto', got {layer!r}")
    if isinstance(layer, int):
        if layer < 0:
            raise ConfigError(f"{what}: a layer must be >= 0, got {layer}")
        return resid(layer, "post")
    return layer


def _strings(value: Any, what: str, *, allow_none: bool = False) -> tuple:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{what} must be a non-empty list, got {value!r}")
    for v in value:
        if not (isinstance(v, str) and v) and not (allow_none and v is None):
            raise ConfigError(f"{what}: every entry must be a non-empty string, got {v!r}")
    if len(set(value)) != len(value):
        raise ConfigError(f"{what} has a duplicate entry: {value}")
    return tuple(value)


def _check_model(name: str) -> None:
    """``ConfigError`` for a model name the loader would refuse (nothing is loaded)."""
    from fmi.models import registry

    if name == "auto":
        return
    resolve = getattr(registry, "resolve_name", None)  # Hub ids and local folders too
    if resolve is None:
        if name not in registry.REGISTRY:
            raise ConfigError(f"unknown model {name!r}; registered: {', '.join(registry.REGISTRY)}")
        return
    try:
        resolve(name)
    except FmiError as err:
        raise ConfigError(str(err)) from None


def _seeds(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"seeds must be a non-empty list of integers, got {value!r}")
    return tuple(value)


def _layers(value: Any, what: str, models: tuple[str, ...], default: tuple) -> dict:
    """Per model: the sites a layer list (or model -> list mapping) names, in order."""
    if isinstance(value, dict):
        extra = sorted(set(value) - set(models))
        if extra:
            raise ConfigError(f"{what} names {extra[0]!r}, which is not in models")
        return {
            m: _layers(value[m], what, (m,), default)[m] if m in value else default for m in models
        }
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{what} must be a non-empty list or a mapping of model to list")
    sites = tuple(site_of(v, what) for v in value)
    if len(set(sites)) != len(sites):
        raise ConfigError(f"{what} names a site twice: {value}")
    return dict.fromkeys(models, sites)


@dataclass(frozen=True)
class SweepConfig:
    """The validated sweep: each layer field maps every model to its sites (``None``: recall's
    default); ``to_dict()`` goes into every merged document.

    >>> cfg = SweepConfig.from_dict({"models": ["tiny-gemma"], "symbol_layers": [0, 1]})
    >>> cfg.symbol_layers["tiny-gemma"], cfg.seeds, cfg.revisions
    (('blocks.0.hook_resid_post', 'blocks.1.hook_resid_post'), (0,), (None,))
    >>> SweepConfig.from_dict({"models": []})
    Traceback (most recent call last):
    ...
    fmi.errors.ConfigError: sweep config: models must be a non-empty list, got []
    """

    models: tuple[str, ...]
    revisions: tuple[str | None, ...] = (None,)
    symbol_layers: dict[str, tuple[str | None, ...]] = field(default_factory=dict)
    token_layers: dict[str, tuple[str | None, ...]] = field(default_factory=dict)
    inject_sites: dict[str, tuple[str | None, ...]] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)
    splits: tuple[str, ...] = ()
    modes: tuple[str, ...] = ()  # () : every mode
    recall: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        _strings(list(self.models), "models")
        for model in self.models:
            _check_model(model)
        _strings(list(self.revisions), "revisions", allow_none=True)
        bad = [s for s in self.seeds if isinstance(s, bool) or not isinstance(s, int)]
        if not self.seeds or bad or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds must be distinct integers, got {list(self.seeds)}")
        for name in LAYER_KEYS:
            if set(getattr(self, name)) != set(self.models):
                raise ConfigError(f"{name} must give every model its sites")
        for name in ("device", "dtype"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be a string, got {getattr(self, name)!r}")
        wrong = sorted(set(self.recall) - recall_keys())
        if wrong:
            where = "top-level keys" if wrong[0] in CELL_FIELDS else "RecallConfig fields"
            raise ConfigError(f"recall: unknown or grid-set key {wrong[0]!r} (see the {where})")
        self.recall_config(model=self.models[0], seed=self.seeds[0])  # bad values fail now

    @classmethod
    def from_dict(cls, doc: Any, source: str = "sweep config") -> SweepConfig:
        """Validate a parsed config file; every error names ``source`` and the key."""
        from fmi.experiments.config import RecallConfig

        if not isinstance(doc, dict):
            raise ConfigError(f"{source}: expected an object of keys, got {type(doc).__name__}")
        extra = [k for k in doc if k not in KEYS]
        if extra:
            raise ConfigError(f"{source}: unknown key {extra[0]!r}; keys are {', '.join(KEYS)}")
        if "models" not in doc:
            raise ConfigError(f"{source}: 'models' is required (a list of registry names)")
        try:
            models = _strings(doc["models"], "models")
            defaults: dict[str, tuple[str | None, ...]] = {
                "symbol_layers": (None,),
                "token_layers": (None,),
                "inject_sites": (RecallConfig.inject_site,),
            }
            layers: dict[str, dict[str, tuple[str | None, ...]]] = {
                k: _layers(doc[k], k, models, defaults[k])
                if k in doc
                else dict.fromkeys(models, defaults[k])
                for k in LAYER_KEYS
            }
            recall = doc.get("recall", {})
            if not isinstance(recall, dict):
                raise ConfigError(f"recall must be an object of RecallConfig fields: {recall!r}")
            return cls(
                models=models,
                revisions=_strings(doc.get("revisions", [None]), "revisions", allow_none=True),
                seeds=_seeds(doc.get("seeds", [0])),
                splits=_strings(doc["splits"], "splits") if "splits" in doc else (),
                modes=_strings(doc["modes"], "modes") if "modes" in doc else (),
                recall=recall,
                device=doc.get("device", "auto"),
                dtype=doc.get("dtype", "float32"),
                **layers,
            )
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None

    def recall_config(self, **cell: Any):
        """The :class:`~fmi.experiments.config.RecallConfig` of one cell (``cell`` sets model,
        seed and sites; ``recall`` the rest).

        >>> cfg = SweepConfig.from_dict({"models": ["tiny-gemma"], "recall": {"n_train": 8}})
        >>> r = cfg.recall_config(model="tiny-gemma", seed=2)
        >>> r.n_train, r.seed, r.n_eval
        (8, 2, 40)
        """
        from fmi.experiments.config import RecallConfig
        from fmi.memory.projectors import ProjectorConfig

        over: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in self.recall.items()
        }
        make = RecallConfig.quick if over.pop("quick", False) else RecallConfig
        try:
            if isinstance(over.get("projector"), dict):
                over["projector"] = ProjectorConfig(**over["projector"])
            grid = {"splits": self.splits, **({"modes": self.modes} if self.modes else {})}
            return make(**{**over, **grid, **cell})
        except TypeError as err:
            raise ConfigError(f"recall: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every field, the layer mappings as written per model."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def recall_keys() -> set[str]:
    """The ``recall`` overrides a config may give: RecallConfig's fields a cell does not set,
    and ``quick``.

    >>> "n_train" in recall_keys(), "seed" in recall_keys(), "quick" in recall_keys()
    (True, False, True)
    """
    from fmi.experiments.config import RecallConfig

    return {f.name for f in fields(RecallConfig) if f.name not in CELL_FIELDS} | {"quick"}


def load_config(path: str | Path) -> SweepConfig:
    """Read and validate a sweep config file (``.toml``: TOML, anything else: JSON).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "sweep.json"
    >>> _ = p.write_text('{"models": ["tiny-gemma"], "seeds": [1, 2]}')
    >>> load_config(p).seeds
    (1, 2)
    >>> load_config(p.with_name("missing.json"))
    Traceback (most recent call last):
    ...
    fmi.errors.ConfigError: sweep config .../missing.json: no such file
    """
    p = Path(path)
    source = f"sweep config {p}"
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{source}: cannot be read ({err})") from None
    if p.suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            raise ConfigError(f"{source}: TOML needs Python 3.11+; use JSON") from None
        try:
            doc: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{source}: not valid TOML ({err})") from None
    else:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(
                f"{source}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})"
            ) from None
    return SweepConfig.from_dict(doc, source)
