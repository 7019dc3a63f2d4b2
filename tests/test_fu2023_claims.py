"""fu2023 claim checks on hand-made tidy data: each verdict follows the numbers, both ways."""

from __future__ import annotations

import pandas as pd
import pytest

from iclrepro.evaluation import fu2023 as evaluation

CLAIMS = {"rfa_over_rfmlp_max": 0.8, "brfa_over_rfa_max": 0.8, "brfa_targets": ["qk_He_2"],
          "kernel_gap_ratio_max": 0.5, "gram_error_max": 0.05}


def curves(values: dict[tuple[str, str], list[float]], n=(256, 1024)) -> pd.DataFrame:
    """Tidy curves: {(target, model): nmse per n}, two seeds with the same value."""
    rows = [{"target": target, "model": model, "n": size, "seed": seed, "nmse": nmse, "part": "fit"}
            for (target, model), errors in values.items() for size, nmse in zip(n, errors, strict=True)
            for seed in (0, 1)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("rfa,passed", [(0.3, True), (0.9, False)])
def test_rfa_vs_rfmlp_verdict_follows_the_ratio(rfa, passed):
    figs = {"A": curves({("key_poly_3", "RFA"): [0.9, rfa], ("key_poly_3", "RFMLP"): [1.0, 1.0]})}
    [claim] = evaluation.claim_rfa_vs_rfmlp(figs, CLAIMS)
    assert claim.measured == pytest.approx(rfa) and claim.passed is passed


@pytest.mark.parametrize("brfa,passed", [(0.5, True), (0.95, False)])
def test_brfa_vs_rfa_verdict_is_taken_on_the_named_targets(brfa, passed):
    figs = {"B": curves({("qk_He_2", "RFA"): [1.0, 1.0], ("qk_He_2", "BRFA"): [1.0, brfa],
                         ("key_poly_2", "RFA"): [0.1, 0.1], ("key_poly_2", "BRFA"): [0.5, 0.5]})}
    [claim] = evaluation.claim_brfa_vs_rfa(figs, CLAIMS)
    assert claim.measured == pytest.approx(brfa) and claim.passed is passed


def test_complexity_claims_fail_when_a_higher_degree_is_easier():
    ordered = {"C": curves({("key_poly_1", "RFA"): [0.1, 0.01], ("key_poly_2", "RFA"): [0.5, 0.2]})}
    assert [c.passed for c in evaluation.claims_complexity(ordered, CLAIMS)] == [True, True]
    swapped = {"C": curves({("key_poly_1", "RFA"): [0.5, 0.6], ("key_poly_2", "RFA"): [0.1, 0.05]})}
    falls, rises = evaluation.claims_complexity(swapped, CLAIMS)
    assert not falls.passed and falls.measured == pytest.approx(1.2)
    assert not rises.passed and rises.measured == pytest.approx(0.05 / 0.6)


@pytest.mark.parametrize("last,passed", [(0.011, True), (0.5, False)])
def test_kernel_limit_verdicts(last, passed):
    finite = pd.DataFrame({"M": [16, 16, 1024, 1024], "seed": [0, 1, 0, 1], "nmse": [0.5, 0.5, last, last],
                           "gram_error": [0.4, 0.4, last / 5, last / 5], "source": "finite M"})
    limit = pd.DataFrame({"M": [-1, -1], "seed": [0, 1], "nmse": [0.01, 0.01], "source": "kernel limit"})
    gap, gram = evaluation.claims_kernel({"D": pd.concat([finite, limit], ignore_index=True)}, CLAIMS)
    assert gap.measured == pytest.approx((last - 0.01) / 0.49) and gap.passed is passed
    assert gram.passed is passed
