"""Power laws ``y = c · x1^b1 · x2^b2 ...`` fitted by least squares in log space."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PowerLaw:
    """``y = coef · prod_k x_k ^ exponents[k]``; ``r2`` is the fit's R² in log space."""

    coef: float
    exponents: dict[str, float]
    r2: float
    n_points: int

    def predict(self, **xs: float | np.ndarray) -> float | np.ndarray:
        """The law at ``xs`` (one value per exponent, scalars or broadcastable arrays)."""
        missing = sorted(set(self.exponents) - set(xs))
        extra = sorted(set(xs) - set(self.exponents))
        if missing or extra:
            raise ValueError(f"predict needs exactly {sorted(self.exponents)}, got {sorted(xs)}")
        out: float | np.ndarray = self.coef
        for name, b in self.exponents.items():
            out = out * np.asarray(xs[name], dtype=float) ** b
        return float(out) if np.ndim(out) == 0 else np.asarray(out)

    def formula(self, y: str = "L") -> str:
        """E.g. ``L = 2.31 · N^-0.42 · r^-0.10``."""
        terms = [f"{self.coef:.2f}", *(f"{k}^{b:.2f}" for k, b in self.exponents.items())]
        return f"{y} = " + " · ".join(terms)


def fit_power_law(y: np.ndarray, **xs: np.ndarray) -> PowerLaw:
    """Least squares of ``log y = log c + sum_k b_k log x_k``.

    Points where ``y`` or any ``x`` is not a finite positive number are dropped. Raises
    ``ValueError`` when fewer than (parameters + 1) points remain or the ``x`` do not vary.
    """
    if not xs:
        raise ValueError("fit_power_law needs at least one variable x")
    yv = np.asarray(y, dtype=float).ravel()
    cols = {k: np.asarray(v, dtype=float).ravel() for k, v in xs.items()}
    for k, v in cols.items():
        if v.shape != yv.shape:
            raise ValueError(f"{k} has {v.size} values but y has {yv.size}")
    keep = np.isfinite(yv) & (yv > 0)
    for v in cols.values():
        keep &= np.isfinite(v) & (v > 0)
    n_params = 1 + len(cols)
    n = int(keep.sum())
    if n < n_params + 1:
        raise ValueError(
            f"not enough data for a power law: {n} usable point(s) (y > 0, x > 0), "
            f"need at least {n_params + 1} for {n_params} parameters"
        )
    design = np.column_stack([np.ones(n), *(np.log(v[keep]) for v in cols.values())])
    target = np.log(yv[keep])
    beta, _, rank, _ = np.linalg.lstsq(design, target, rcond=None)
    if rank < n_params:
        raise ValueError(f"cannot fit a power law: {', '.join(cols)} do not vary independently")
    resid = target - design @ beta
    ss_tot = float(((target - target.mean()) ** 2).sum())
    ss_res = float((resid**2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float(ss_res < 1e-12)
    exps = {k: float(b) for k, b in zip(cols, beta[1:], strict=True)}
    return PowerLaw(float(np.exp(beta[0])), exps, r2, n)
