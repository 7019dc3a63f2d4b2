"""Closed-form asymptotics of cui2024 (spec §3): L(D) = sigma^2 + C / D + o(1/D).

The constants were derived in the spec by the delta method for the reduced
parameterisation and checked there by Monte Carlo (tests/test_cui2024_theory.py checks
them again); they are not copied from the paper.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar

from iclrepro import store
from iclrepro.tasks.cui2024_scenario import Scenario


def g(t: float, d: int, signal: float, sigma2: float) -> float:
    """g_d(t) of spec §3.1 (t = c^2): D times the single-head excess loss at scale c."""
    return (1 - 2 * t) ** (-d / 2) * (signal / (1 - 2 * t) + (signal + sigma2) / t)


def single_head_optimum(d: int, signal: float, sigma2: float) -> tuple[float, float]:
    """(C_SH, t*) = min over 0 < t < 1/2 of g_d(t) (spec §3.1; no closed form for t*)."""
    res = minimize_scalar(g, bounds=(1e-9, 0.5 - 1e-9), method="bounded",
                          args=(d, signal, sigma2), options={"xatol": 1e-12})
    return float(res.fun), float(res.x)


def multi_head_constant(d: int, signal: float, sigma2: float) -> float:
    """C_MH = (d+1) W + d sigma^2: the +/- head pair in the small-c limit (spec §3.2)."""
    return (d + 1) * signal + d * sigma2


def effective_signal(scenario: Scenario) -> float:
    """W of the formulas: E[w^T Sigma w] for correlated x (§3.3), E||w||^2 otherwise (§3.5)."""
    if scenario.family == "correlated":
        return scenario.signal * float(np.trace(scenario.covariance())) / scenario.d
    return scenario.signal


def local_constants(scenario: Scenario) -> tuple[float, float]:
    """(C_SH, C_MH) for local examples (spec §3.4, the spec's own modelling choice).

    SH: uniform averaging, r^2 W + sigma^2. MH: the best mix of averaging and the
    +/- pair scaled by 1/r^2, whose errors are uncorrelated: V1 V2 / (V1 + V2).
    """
    r2, W, s2, d = scenario.r**2, scenario.signal, scenario.sigma2, scenario.d
    v_average = r2 * W + s2
    v_pair = (d + 1) * W + d * s2 / r2
    return v_average, v_average * v_pair / (v_average + v_pair)


def constants(scenario: Scenario) -> dict:
    """Theory constants of one scenario: C_SH, t*, c*, C_MH and the floor sigma^2."""
    signal = effective_signal(scenario)
    c_sh, t_star = single_head_optimum(scenario.d, signal, scenario.sigma2)
    c_mh = multi_head_constant(scenario.d, signal, scenario.sigma2)
    if scenario.family == "local":
        c_sh, c_mh = local_constants(scenario)
    return {"family": scenario.family, "d": scenario.d, "sigma2": scenario.sigma2,
            "signal": signal, "C_SH": c_sh, "t_star": t_star, "c_star": float(np.sqrt(t_star)),
            "C_MH": c_mh, "ratio": c_sh / c_mh}


def write(spec: dict, content: str, out) -> None:
    """Theory stage: the constants of one scenario as a one-row Parquet table."""
    row = constants(Scenario(**spec["scenario"]))
    store.write_parquet(_table(pd.DataFrame([row])), out, spec=spec, content=content)


def _table(frame: pd.DataFrame):
    import pyarrow as pa

    return pa.Table.from_pandas(frame, preserve_index=False)
