"""deora2023 claim checks on hand-made tidy data: each verdict follows the numbers, both ways."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from iclrepro.evaluation import deora2023 as evaluation

CLAIMS = {"rate_min_H": 16, "rate_slope": [-1.3, -0.7], "test_error_max": 0.05, "generalization_gap_max": 0.2}
STEPS = np.unique(np.geomspace(1, 500, 30).round().astype(int))


def training_curves(exponents: dict[int, float]) -> pd.DataFrame:
    """E1's curve rows: loss = k^exponent per H, two seeds alike."""
    return pd.DataFrame([{"part": "curve", "H": H, "seed": seed, "step": k, "loss": float(k) ** exponent}
                         for H, exponent in exponents.items() for seed in (0, 1) for k in STEPS])


@pytest.mark.parametrize("slow,passed", [(-1.0, True), (-0.5, False)])
def test_rate_verdict_follows_the_slowest_late_slope_from_rate_min_H(slow, passed):
    figs = {"E1": training_curves({4: -0.2, 16: -1.1, 64: slow})}   # H = 4 lies below rate_min_H
    [claim] = evaluation.claim_training_rate(figs, CLAIMS)
    assert claim.measured == pytest.approx(slow if not passed else -1.1, abs=1e-9) and claim.passed is passed


def final_quantities(error: float, test_loss: float) -> pd.DataFrame:
    """E2's rows at two steps for H = 1 and 64; only the last step counts."""
    return pd.DataFrame([{"H": H, "seed": seed, "step": step, "test_error": error if step == 500 else 0.5,
                          "test_loss": test_loss if step == 500 else 1.0, "loss": 0.05 if step == 500 else 1.0}
                         for H in (1, 64) for seed in (0, 1) for step in (1, 500)])


@pytest.mark.parametrize("error,test_loss,verdicts", [(0.0, 0.1, [True, True]), (0.2, 0.1, [False, True]),
                                                      (0.0, 0.4, [True, False])])
def test_largest_H_verdicts_follow_test_error_and_gap(error, test_loss, verdicts):
    claims = evaluation.claim_largest_H_generalizes({"E2": final_quantities(error, test_loss)}, CLAIMS)
    assert [claim.measured for claim in claims] == pytest.approx([error, test_loss - 0.05])
    assert [claim.passed for claim in claims] == verdicts


@pytest.mark.parametrize("t2_slope,passed", [(-0.5, True), (-0.1, False)])
def test_hessian_claims_read_each_probe_slope(t2_slope, passed):
    frame = pd.DataFrame([{"probe": "T1", "slope": -0.45}, {"probe": "T1", "slope": -0.45},
                          {"probe": "T2", "slope": t2_slope}])
    settings = {"hessian_slope": [-0.65, -0.35], "weak_convexity_slope": [-0.65, -0.35]}
    t1, t2 = evaluation.claims_hessian({"hessian": frame}, settings)
    assert (t1.measured, t1.passed) == (-0.45, True)
    assert (t2.measured, t2.passed) == (t2_slope, passed)
