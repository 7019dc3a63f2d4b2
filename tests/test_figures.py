"""Figures tell their series apart: colours per head count, per method and per reference curve."""

from __future__ import annotations

import matplotlib.colors
import numpy as np
import pandas as pd

from iclrepro import series_names
from iclrepro.figures import chen2024, common, cui2024, deora2023


def line_colours(ax) -> dict[str, tuple]:
    return {line.get_label(): matplotlib.colors.to_rgb(line.get_color()) for line in ax.get_lines()
            if not line.get_label().startswith("_")}


def test_deora2023_heads_one_and_four_get_distinct_colours():
    curves = pd.DataFrame([{"H": H, "step": step, "seed": 0, "loss": 1 / (step + H)}
                           for H in (1, 4, 16, 64) for step in (1, 10, 100)])
    fig, axes = common.panels(1)
    deora2023.per_head(axes[0, 0], curves, "loss")
    colours = {text.get_text(): handle.get_color() for text, handle in
               zip(axes[0, 0].get_legend().get_texts(), axes[0, 0].get_legend().legend_handles, strict=True)}
    distance = np.abs(np.subtract(matplotlib.colors.to_rgb(colours["1"]), matplotlib.colors.to_rgb(colours["4"])))
    assert distance.sum() > 0.3


def test_deora2023_theory_lines_for_some_heads_take_those_heads_colours():
    H_values = (1, 4, 16, 64)
    curves = [{"part": "curve", "H": H, "step": step, "seed": 0, "loss": 1 / (step + H)}
              for H in H_values for step in (1, 10)]
    theory = [{"part": "theory", "series": series, "H": H, "step": step, "value": 1 / step}
              for series in ("c / (eta gamma^2 k)", "T3 bound") for H in (4, 16) for step in (1, 10)]
    ax = deora2023.draw_training(pd.DataFrame(curves + theory)).axes[0]
    solid = {text.get_text(): matplotlib.colors.to_rgb(handle.get_color()) for text, handle in
             zip(ax.get_legend().get_texts(), ax.get_legend().legend_handles, strict=True)}
    dashed = {matplotlib.colors.to_rgb(line.get_color()) for line in ax.get_lines() if line.get_linestyle() == "--"}
    assert dashed == {solid["4"], solid["16"]}


def test_chen2024_panels_list_their_own_methods_in_shared_colours():
    methods = ["PtO", "GD", "transformer"]
    rows = pd.DataFrame([{"method": method, "n": n, "excess_risk": 1 / n} for method in methods for n in (4, 8)])
    fig, axes = common.panels(2)
    chen2024.method_lines(axes[0, 0], rows, "n", methods)
    chen2024.method_lines(axes[0, 1], rows[rows["method"] != "GD"], "n", methods)
    legends = [[text.get_text() for text in ax.get_legend().get_texts()] for ax in axes[0]]
    assert legends == [methods, ["PtO", "transformer"]]
    first, second = (line_colours(ax) for ax in axes[0])
    assert first["transformer"] == second["transformer"] != first["GD"]


def test_cui2024_theory_and_baseline_curves_never_share_a_colour():
    rows = pd.DataFrame([{"series": series, "source": source, "D": D, "seed": -1, "excess": 1 / D}
                         for series, source in (("SH", series_names.TRAINED), ("SH theory", series_names.THEORY),
                                                ("MH theory", series_names.THEORY), ("GD-1", series_names.BASELINE),
                                                ("OLS", series_names.BASELINE))
                         for D in (20, 80)])
    fig, axes = common.panels(1)
    cui2024.loss_panel(axes[0, 0], rows, "excess")
    colours = line_colours(axes[0, 0])
    references = [colours[name] for name in ("SH theory", "MH theory", "GD-1", "OLS")]
    assert len(set(references)) == 4 and colours["SH"] not in references


def test_chen2024_ols_interpolation_peak_leaves_the_other_methods_room():
    rows = pd.DataFrame([{"method": method, "n": n, "excess_risk": risk}
                         for method, peak in (("PtO", 1.0), ("OLS (min-norm)", 1e3))
                         for n, risk in ((4, 0.5), (8, peak), (12, 0.01))])
    fig, axes = common.panels(1)
    chen2024.method_lines(axes[0, 0], rows, "n", ["PtO", "OLS (min-norm)"])
    chen2024.clip_ols_peak(axes[0, 0], rows)
    assert axes[0, 0].get_ylim()[1] == 10


def test_deora2023_closed_form_margins_only_beside_the_value_block():
    margins = [{"part": "margin", "H": H, "seed": 0, "init": init, "gamma_all": 0.3, "gamma_W": 0.2, "gamma_V": 0.1}
               for H in (1, 4) for init in ("random", "one_step")]
    closed = [{"part": "closed_form", "series": series, "value": value}
              for series, value in (("gamma_value_uniform", 0.18), ("gamma_oracle", 0.7))]
    training = [{"part": "training", "step": step, "loss": 1 / step, "init": "random"} for step in (1, 10)]
    whole, value_block, _ = deora2023.draw_initialization(pd.DataFrame(margins + closed + training)).axes
    def dotted(ax):
        return sorted(line.get_ydata()[0] for line in ax.get_lines() if line.get_linestyle() == ":")
    assert dotted(whole) == [] and dotted(value_block) == [0.18, 0.7]
