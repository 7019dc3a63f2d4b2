"""chen2024 figures (spec §6), one function per figure, drawn from the tidy Parquet only."""

from __future__ import annotations

import numpy as np
import seaborn as sns

from iclrepro import series_names
from iclrepro.figures import common

MODEL_ORDER = list(series_names.CHEN2024_MODELS)


def draw_risk_vs_n(frame):
    """Fig. 1(b): excess risk against n, one line per head count (band: +/-1 sd over seeds)."""
    fig, axes = common.panels(1, width=5)
    ax = axes[0, 0]
    frame = frame.assign(heads=frame["H"].map(lambda H: f"H = {H}"))
    sns.lineplot(data=frame, x="n", y="excess_risk", hue="heads", errorbar="sd", marker="o", ax=ax)
    ax.set_yscale("log")
    ax.set_xlabel("in-context examples n")
    ax.set_ylabel("excess risk")
    return fig


def draw_importance(frame):
    """Fig. 1(c): layer x head heatmap of the normalised importance (seed 0), and the seed-mean
    share of the r-th most important head per layer."""
    fig, axes = common.panels(2, width=4.2)
    seed = frame["seed"].min()
    grid = frame[frame["seed"] == seed].pivot(index="layer", columns="head", values="share")
    sns.heatmap(grid, ax=axes[0, 0], cmap="viridis", vmin=0, vmax=1, annot=True, fmt=".2f",
                cbar_kws={"label": "normalised importance"})
    axes[0, 0].set_title(f"seed {seed}, n = {int(frame['n'].iloc[0])}", fontsize=8)
    ranked = frame.groupby(["layer", "rank"])["share"].mean().unstack("rank")
    sns.heatmap(ranked, ax=axes[0, 1], cmap="viridis", vmin=0, vmax=1, annot=True, fmt=".2f", cbar=False)
    axes[0, 1].set_xlabel("head rank within layer (0 = most important)")
    axes[0, 1].set_title("seed mean, heads sorted", fontsize=8)
    return fig


def draw_probes(frame):
    """Fig. 1(d) and the depth/noise variant: probe risk against layer for the full, pruned
    and single-head models, one panel per (L, sigma); the models' own output risks as stars;
    dashed: GD after l steps and PtO after l - 1 (the theory's algorithm at layer l)."""
    variants = list(frame.groupby(["L", "sigma"]).groups)
    fig, axes = common.panels(len(variants), width=3.6)
    for ax, (L, sigma) in zip(axes[0], variants, strict=True):
        rows = frame[(frame["L"] == L) & (frame["sigma"] == sigma)]
        trained = rows["model"].isin(MODEL_ORDER)
        sns.lineplot(data=rows[trained], x="layer", y="probe_risk", hue="model", hue_order=MODEL_ORDER,
                     style="model", markers=True, dashes=False, errorbar="sd", ax=ax)
        common.reference_lines(ax, rows[~trained], "layer", "probe_risk", "model", "--")
        outputs = rows.groupby("model")["output_risk"].mean()
        for index, model in enumerate(MODEL_ORDER):
            if model in outputs:
                ax.plot(L + 0.15 * (index - 1), outputs[model], "*", color=f"C{index}", markersize=9)
        ax.set_yscale("log")
        ax.set_xticks(np.arange(L + 1))
        ax.set_xlabel("layer (0 = embedding); star: model output")
        ax.set_ylabel("probe excess risk")
        ax.set_title(f"L = {L}, sigma = {sigma:g}, n = {int(rows['n'].iloc[0])}", fontsize=8)
        ax.legend(fontsize=6)
    return fig


MARKERS = ("o", "X", "s", "P", "D", "^", "v", "<", ">", "p")


def method_lines(ax, rows, x: str, methods: list[str]) -> None:
    """Excess risk (log) against `x`, one marked line per method of `rows`: each method keeps
    the colour and marker of its place in `methods` in every panel, and a legend lists only
    the methods the panel draws."""
    shown = [method for method in methods if method in set(rows["method"])]
    sns.lineplot(data=rows, x=x, y="excess_risk", hue="method", hue_order=shown, style="method", style_order=shown,
                 palette={method: f"C{index}" for index, method in enumerate(methods)},
                 markers={method: MARKERS[index % len(MARKERS)] for index, method in enumerate(methods)},
                 dashes=False, ax=ax)
    ax.set_yscale("log")
    ax.set_ylabel("excess risk")


def clip_ols_peak(ax, rows) -> None:
    """Cut the y axis at 10x the other methods' worst risk where min-norm OLS's interpolation
    peak (n = d) rises above it, which would squeeze every other line into a few decades."""
    is_ols = rows["method"].str.startswith("OLS")
    ceiling = 10 * rows.loc[~is_ols, "excess_risk"].max()
    peak = rows.loc[is_ols, "excess_risk"].max()
    if peak > ceiling:
        ax.set_ylim(top=ceiling)
        ax.annotate(f"OLS peak {peak:.2g} off-scale", (0.02, 0.98), xycoords="axes fraction",
                    va="top", fontsize=6)


def draw_algorithms(frame):
    """p.8 figure: excess risk against n per method, one panel per sigma; OLS theory dashed."""
    sigmas = sorted(frame["sigma"].unique())
    fig, axes = common.panels(len(sigmas), width=4.2)
    methods = list(dict.fromkeys(frame.loc[frame["source"] != series_names.THEORY, "method"]))
    for ax, sigma in zip(axes[0], sigmas, strict=True):
        rows = frame[(frame["sigma"] == sigma) & (frame["excess_risk"] > 0)]
        method_lines(ax, rows[rows["source"] != series_names.THEORY], "n", methods)
        common.reference_lines(ax, rows[rows["source"] == series_names.THEORY], "n", "excess_risk", "method", "--")
        clip_ols_peak(ax, rows)
        ax.set_xlabel("in-context examples n")
        ax.set_title(f"sigma = {sigma:g}", fontsize=8)
        ax.legend(fontsize=6)
    return fig


def draw_dimension(frame):
    """Appendix pp.32-33: excess risk against d (log-log) per method at fixed s, n and sigma."""
    fig, axes = common.panels(1, width=4.6)
    ax = axes[0, 0]
    method_lines(ax, frame[frame["excess_risk"] > 0], "d", list(dict.fromkeys(frame["method"])))
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(frame["d"].unique()), labels=[str(d) for d in sorted(frame["d"].unique())])
    ax.set_xlabel("dimension d")
    first = frame.iloc[0]
    ax.set_title(f"s = {first['s']}, n = {first['n']}, sigma = {first['sigma']:g}", fontsize=8)
    ax.legend(fontsize=6)
    return fig


FIGURES = {"risk_vs_n": draw_risk_vs_n, "importance": draw_importance, "probing": draw_probes,
           "main_variant": draw_probes, "algorithms": draw_algorithms, "dimension": draw_dimension}

draw = common.draw_stage(FIGURES, "kind")
