"""cui2024 figures (spec §4), one function per figure, drawn from the tidy Parquet only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns

from iclrepro import series_names
from iclrepro.figures import common

Y_LABELS = {"excess": "test excess MSE", "d_excess": "D x excess MSE"}


def loss_panel(ax, rows: pd.DataFrame, y: str, log_y: bool = True) -> None:
    """One scenario: trained series with seed error bars, theory dashed, baselines dotted."""
    common.seed_bars(ax, rows[rows["source"] == series_names.TRAINED], "D", y, "series")
    common.reference_lines(ax, rows[rows["source"] == series_names.THEORY], "D", y, "series", "--")
    common.reference_lines(ax, rows[rows["source"] == series_names.BASELINE], "D", y, "series", ":",
                           common.BASELINE_COLOURS)
    common.log_ticks(ax, sorted(rows["D"].dropna().unique()))
    if log_y:
        ax.set_yscale("log")
    ax.set_ylabel(Y_LABELS[y])
    ax.legend(fontsize=7)


def title(rows: pd.DataFrame, scenario: str) -> str:
    row = rows.iloc[0]
    return f"{scenario} ({row['family']}, d={row['d']}, sigma^2={row['sigma2']:g})"


def loss_vs_D(frame: pd.DataFrame, y: str = "excess", log_y: bool = True):
    frame = frame[frame["part"] == "loss"]
    scenarios = sorted(frame["scenario"].unique())
    fig, axes = common.panels(len(scenarios))
    for ax, scenario in zip(axes[0], scenarios, strict=True):
        rows = frame[frame["scenario"] == scenario]
        loss_panel(ax, rows, y, log_y)
        ax.set_title(title(rows, scenario), fontsize=8)
    return fig


def draw_loss(frame):
    return loss_vs_D(frame)


def draw_d_excess(frame):
    """F1b: D x excess flattens at the constants C_SH and C_MH (dashed)."""
    frame = frame[frame["source"] != series_names.BASELINE]
    fig = loss_vs_D(frame, "d_excess", log_y=False)
    for ax in fig.axes:  # the legend in two columns above the flat SH line, which it otherwise covers
        ax.set_ylim(0, 1.5 * ax.get_ylim()[1])
        ax.legend(fontsize=7, ncol=2, loc="upper center")
    return fig


def draw_embedding(frame):
    """F2: test MSE vs embedding dimension p, one line per head count; MH needs p >= 2d."""
    fig, axes = common.panels(1, width=5)
    ax = axes[0, 0]
    trained = frame[frame["source"] == series_names.TRAINED]
    common.seed_bars(ax, trained, "p", "mse", "series")
    for _, row in frame[frame["source"] == series_names.THEORY].iterrows():
        ax.axhline(row["mse"], linestyle="--", color="grey", linewidth=0.8)
        ax.annotate(row["series"], (trained["p"].min(), row["mse"]), fontsize=7)
    ax.axvline(frame["two_d"].iloc[0], color="black", linewidth=0.8, linestyle=":")
    common.log_ticks(ax, sorted(trained["p"].unique()))
    ax.set_yscale("log")
    ax.set_title(f"D={int(trained['D'].iloc[0])}; dotted line: p = 2d", fontsize=8)
    ax.set_ylabel("test MSE")
    return fig


def draw_correlated(frame):
    """F4: loss vs D per correlation, and the learned W^KQ x-block next to Sigma^{-1}."""
    kq = frame[frame["part"] == "kq"]
    scenarios = sorted(kq["scenario"].unique())
    fig, axes = common.panels(3, len(scenarios))
    for row, scenario in enumerate(scenarios):
        rows = frame[(frame["scenario"] == scenario) & (frame["part"] == "loss")]
        loss_panel(axes[row, 0], rows, "excess")
        axes[row, 0].set_title(title(rows, scenario), fontsize=8)
        matrices = kq[kq["scenario"] == scenario].astype({"i": int, "j": int})
        limit = matrices["value"].abs().max()
        for col, (label, matrix) in enumerate(matrices.groupby("matrix", sort=False), 1):
            grid = matrix.pivot(index="i", columns="j", values="value")
            sns.heatmap(grid, ax=axes[row, col], cmap="RdBu_r", vmin=-limit, vmax=limit,
                        square=True, cbar=col == 2)
            axes[row, col].set_title(label + " (unit norm)", fontsize=8)
    return fig


def draw_table(frame):
    """T1 rendered as a table: slopes, fitted and theory constants per scenario and series."""
    shown = frame[["scenario", "series", "slope", "C_fit", "C_theory", "C_ratio", "theory_SH_over_MH"]]
    fig, axes = common.panels(1, width=9, height=0.4 + 0.3 * len(shown))
    ax = axes[0, 0]
    ax.axis("off")
    text = [[f"{v:.3g}" if isinstance(v, (float, np.floating)) else str(v) for v in row] for row in shown.to_numpy()]
    ax.table(cellText=text, colLabels=list(shown.columns), loc="center").auto_set_font_size(True)
    return fig


FIGURES = {"F1": draw_loss, "F1b": draw_d_excess, "F2": draw_embedding, "F3": draw_loss,
           "F4": draw_correlated, "F5": draw_loss, "F6": draw_loss, "T1": draw_table}

draw = common.draw_stage(FIGURES, "figure")
