"""A NaN measurement (a diverged seed, a failed fit) that reaches a claim makes it fail.

pandas' reductions (mean, max, idxmax, pivot_table, dropna) skip NaN, so a NaN point
would silently drop out of a seed mean or a worst case, and a claim could pass on the
points that remain. Checked on the smoke run's tidy tables: NaN goes into one measured
cell at a time, and every claim whose result changes must then read NaN and fail.
"""

from __future__ import annotations

import importlib
import math

import numpy as np
import pandas as pd
import pytest

from conftest import smoke_plan

# The columns of each paper's tidy tables that hold measurements (the others are keys).
MEASURED = {
    "chen2024": {"excess_risk", "probe_risk", "output_risk", "risk", "risk_full", "importance", "share"},
    "cui2024": {"mse", "excess", "d_excess", "value"},
    "deora2023": {"loss", "value", "distance", "min_margin", "relative_distance", "test_error", "test_loss",
                  "train_error", "train_loss", "gamma_all", "gamma_W", "gamma_V", "hessian_norm"},
    "fu2023": {"loss", "test_mse", "nmse", "validation_mse", "gram_error"},
    "zhang2026": {"direction_error", "margin_gap", "max_abs_diff_ngd", "value", "offblock_fraction",
                  "seen_offblock_fraction", "cos_ngd_min", "rel_err_ngd", "Q_cos", "V_cos", "support_mass"},
}
ROWS_PER_COLUMN = 6  # first, last and evenly between: the extremes are where claims look (largest n, last step)


def outcomes(checks, figs: dict[str, pd.DataFrame], settings: dict) -> dict[str, tuple]:
    """claim_id -> (measured, expected, passed), or the exception a check raised."""
    found = {}
    for check in checks:
        try:
            found.update({c.claim_id: (c.measured, c.expected, bool(c.passed)) for c in check(figs, settings)})
        except Exception as error:  # noqa: BLE001 - reported as a failure of the test below
            found[check.__name__] = (float("nan"), f"raised {type(error).__name__}: {error}", True)
    return found


def same(a: tuple, b: tuple) -> bool:
    return bool(np.isclose(a[0], b[0], rtol=1e-12, atol=0, equal_nan=True)) and a[1:] == b[1:]


def read_tidy(path) -> pd.DataFrame:
    """A tidy table with float32 columns as float64: pandas' group mean of a float32 column comes
    back in float32 once a NaN is in it and in float64 otherwise, and the claims' ratios would
    differ in the 7th digit for that reason alone."""
    frame = pd.read_parquet(path)
    return frame.astype({column: "float64" for column in frame.columns if frame[column].dtype == "float32"})


def nan_cases(figs: dict[str, pd.DataFrame], measured: set[str]):
    """(table, column, row label) of the measured cells that get a NaN, a few per column."""
    for name, frame in figs.items():
        for column in sorted(measured & set(frame.columns)):
            present = frame.index[frame[column].notna()]
            picks = np.unique(np.linspace(0, len(present) - 1, min(len(present), ROWS_PER_COLUMN)).astype(int))
            yield from ((name, column, present[i]) for i in picks)


def absorbed_nans(run, paper: str) -> list[str]:
    """Every (NaN cell, claim) where the claim's result changed but it does not read NaN and fail."""
    checks = importlib.import_module(f"iclrepro.evaluation.{paper}").CLAIMS
    node = next(iter(smoke_plan(run, paper).nodes["claims"].values()))
    folder = run / "results" / "figures" / paper
    figs = {name: read_tidy(folder / f"{name}.parquet") for name in node.spec["figures"]}
    before = outcomes(checks, figs, node.spec["claims"])
    problems = []
    for name, column, row in nan_cases(figs, MEASURED[paper]):
        changed = figs[name].copy()
        changed.loc[row, column] = np.nan
        after = outcomes(checks, {**figs, name: changed}, node.spec["claims"])
        problems += [f"NaN in {name}.{column} row {row}: {claim_id} reads {result[0]!r} and "
                     f"{'passes' if result[2] else 'fails'} ({result[1]})"
                     for claim_id, result in after.items()
                     if not same(result, before[claim_id]) and not (math.isnan(result[0]) and not result[2])]
    return problems


@pytest.mark.e2e
@pytest.mark.parametrize("paper", sorted(MEASURED))
def test_a_nan_measurement_fails_every_claim_it_reaches(smoke_run, paper):
    problems = absorbed_nans(smoke_run, paper)
    assert not problems, "\n".join(problems[:20])
