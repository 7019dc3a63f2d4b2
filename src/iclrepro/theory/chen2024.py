"""Closed forms of chen2024 (spec §7) for Gaussian x ~ N(0, I_d).

* OLS with n > d + 1 examples: excess risk E||w_OLS - w*||^2 = sigma^2 d / (n - d - 1)
  (the mean of an inverse Wishart), drawn under the baselines of the algorithms figure.
* The preprocessing statistic r = X^T y / n has E[r_j] = w*_j and
  Var(r_j) = (||w*||^2 + sigma^2 + w*_j^2) / n, which is why PtO separates the support.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from iclrepro import store


def ols_excess_risk(d: int, n, sigma: float) -> np.ndarray:
    """sigma^2 d / (n - d - 1) where n > d + 1, NaN elsewhere (the mean is infinite)."""
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > d + 1, sigma**2 * d / (n - d - 1), np.nan)


def correlation_moments(w_star: np.ndarray, sigma: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of r_j = (1/n) sum_i y_i x_ij per coordinate (spec §7)."""
    return w_star, (w_star @ w_star + sigma**2 + w_star**2) / n


def write(spec: dict, content: str, out) -> None:
    """Theory stage: the OLS excess risk per (sigma, n) of the spec's grid."""
    frame = pd.DataFrame([{"sigma": sigma, "n": n, "excess_risk": float(ols_excess_risk(spec["d"], n, sigma))}
                          for sigma in spec["sigmas"] for n in spec["n"]])
    store.write_parquet(pa.Table.from_pandas(frame, preserve_index=False), out, spec=spec, content=content)
