"""chen2024 analysis and claims on hand-made data: importance shares, pruning masks, and
verdicts that fail when the data say so."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from iclrepro import store
from iclrepro.evaluation import chen2024 as evaluation

CFG = {"head_share_min": 0.2, "top_share_min": 0.6, "pruned_margin": 0.2, "single_over_pruned_min": 1.5, "d": 4}


def test_shares_clip_and_normalise_within_layers():
    full = torch.tensor([1.0])
    masked = torch.tensor([[[2.0, 1.5, 0.5], [1.0, 1.0, 1.0]]])      # layer 2: no head matters
    share = evaluation.shares(full, masked)
    assert torch.allclose(share[0, 0], torch.tensor([2 / 3, 1 / 3, 0.0]))
    assert torch.allclose(share[0, 1], torch.full((3,), 1 / 3))


def test_pruning_keeps_layer_one_and_each_later_top_head():
    share = torch.tensor([[[0.5, 0.5], [0.1, 0.9], [0.7, 0.3]]])
    assert evaluation.pruning_mask(share).tolist() == [[[1, 1], [0, 1], [1, 0]]]


def importance_frame(layer1, later):
    rows = []
    for layer, shares in ((1, layer1), (2, later)):
        order = np.argsort(-np.asarray(shares))
        for rank, head in enumerate(order):
            rows.append({"seed": 0, "layer": layer, "head": head + 1, "share": shares[head], "rank": rank})
    return pd.DataFrame(rows)


def test_head_claims_pass_and_fail_with_the_data():
    good = evaluation.claims_head_importance({"importance": importance_frame([0.5, 0.4, 0.1], [0.9, 0.05, 0.05])}, CFG)
    bad = evaluation.claims_head_importance({"importance": importance_frame([0.9, 0.05, 0.05], [0.4, 0.3, 0.3])}, CFG)
    assert [c.passed for c in good] == [True, True] and [c.passed for c in bad] == [False, False]


def probe_frame(full, pruned, single):
    return pd.DataFrame([{"L": 2, "sigma": 0.1, "layer": 2, "model": model, "seed": 0, "output_risk": risk}
                         for model, risk in (("full", full), ("pruned", pruned), ("single-head", single))])


def test_pruning_claims_pass_and_fail_with_the_data():
    good = probe_frame(0.1, 0.11, 0.3)
    assert all(c.passed for c in evaluation.claims_pruning({"prune_probe": good, "depth_noise": good}, CFG))
    bad = probe_frame(0.1, 0.2, 0.25)
    assert not any(c.passed for c in evaluation.claims_pruning({"prune_probe": bad, "depth_noise": bad}, CFG))


def algorithm_frame(pto):
    rows = [{"sigma": 0.1, "n": 2, "method": method, "source": "baseline", "excess_risk": risk}
            for method, risk in (("PtO (tuned T)", pto), ("GD (tuned T)", 1.0), ("ridge", 0.8))]
    return pd.DataFrame(rows)


def test_pto_claims_compare_with_each_rival():
    assert [c.passed for c in evaluation.claims_pto({"algorithms": algorithm_frame(0.5)}, CFG)] == [True, True]
    assert [c.passed for c in evaluation.claims_pto({"algorithms": algorithm_frame(0.9)}, CFG)] == [True, False]


def test_a_diverged_point_fails_the_pto_claims():
    """pandas' max skips NaN: a diverged PtO risk must fail the claims, not drop out of them."""
    frame = pd.concat([algorithm_frame(0.5), algorithm_frame(float("nan")).assign(n=3)])
    claims = evaluation.claims_pto({"algorithms": frame}, CFG)
    assert not any(c.passed for c in claims)
    assert all(np.isnan(c.measured) and "n = 3" in c.expected for c in claims)


def test_head_count_claim_uses_n_at_least_d():
    frame = pd.DataFrame({"H": [1, 1, 4, 4], "n": [2, 4, 2, 4], "seed": 0, "excess_risk": [1.0, 0.5, 2.0, 0.4]})
    assert evaluation.claim_more_heads_lower_risk({"risk_vs_n": frame}, CFG)[0].passed
    frame.loc[3, "excess_risk"] = 0.6
    assert not evaluation.claim_more_heads_lower_risk({"risk_vs_n": frame}, CFG)[0].passed


def dimension_frame(pto_at_largest_d):
    risks = {"PtO (tuned T)": (0.1, pto_at_largest_d), "GD (tuned T)": (0.1, 0.5), "ridge": (0.05, 0.9)}
    return pd.DataFrame([{"d": d, "method": method, "excess_risk": risk[index]}
                         for method, risk in risks.items() for index, d in enumerate((8, 32))])


def test_dimension_claim_compares_growth_with_the_slower_rival():
    # GD grows 5x and ridge 18x: PtO passes below 5x growth and fails above it
    assert evaluation.claim_dimension({"dimension": dimension_frame(0.3)}, CFG)[0].passed
    assert not evaluation.claim_dimension({"dimension": dimension_frame(0.6)}, CFG)[0].passed


def test_main_variant_selects_its_rows_and_names_a_table_without_them(tmp_path):
    layout = store.Layout(str(tmp_path))
    table = pd.DataFrame({"L": [3, 3, 4], "sigma": [0.1, 0.5, 0.1], "seed": pd.array([0, None, 1], "Int64"),
                          "probe_risk": [1.0, 2.0, 3.0]})
    store.write_parquet(pa.Table.from_pandas(table, preserve_index=False), layout.tidy("chen2024", "depth_noise"))
    rows = evaluation.main_variant({"table": "depth_noise", "L": 3, "sigma": 0.5}, layout)
    assert rows["probe_risk"].tolist() == [2.0] and str(rows["seed"].dtype) == "Int64"
    with pytest.raises(store.StoreError, match="depth_noise.parquet has no rows at L = 6, sigma = 0.1"):
        evaluation.main_variant({"table": "depth_noise", "L": 6, "sigma": 0.1}, layout)
