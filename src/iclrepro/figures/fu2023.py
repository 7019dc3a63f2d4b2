"""fu2023 figures (spec §3 A-C, and D for the kernel limit), drawn from the tidy Parquet only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns

from iclrepro.figures import common
from iclrepro.tasks.fu2023_target import Target


def error_vs_n(ax, fits: pd.DataFrame, hue: str) -> None:
    """nmse (mean over seeds, +/-1 sd bars) against n on log-log axes."""
    common.seed_bars(ax, fits, "n", "nmse", hue)
    common.log_ticks(ax, sorted(fits["n"].unique()))
    ax.set_yscale("log")
    ax.set_xlabel("training samples n")
    ax.set_ylabel("test error (nmse)")


def rate_line(ax, fits: pd.DataFrame, slope: float) -> None:
    """The bound's slope (dashed grey), anchored at the mean error of the smallest n."""
    n = np.array(sorted(fits["n"].unique()), dtype=float)
    start = fits[fits["n"] == n[0]]["nmse"].mean()
    ax.plot(n, start * (n / n[0]) ** slope, "--", color="grey", linewidth=0.8, label=f"slope {slope:g} (bound)")


def sample_lines(ax, references: pd.DataFrame, p: int) -> None:
    """Reference sample sizes dim_{<=p} of degree p (dotted), labelled as heuristics."""
    for index, row in enumerate(references[references["p"] == p].itertuples()):
        if ax.get_xlim()[0] <= row.samples <= ax.get_xlim()[1]:
            ax.axvline(row.samples, linestyle=":", color=f"C{7 + index}", linewidth=0.8,
                       label=f"{row.model}: dim<=p heuristic")


def draw_curves(frame: pd.DataFrame):
    """A and B: one panel per target, one line per model. C: one panel, one line per target."""
    fits, references = frame[frame["part"] == "fit"], frame[frame["part"] == "reference"]
    slope = references["slope"].iloc[0]
    if fits["model"].nunique() == 1:
        fig, axes = common.panels(1, width=5)
        error_vs_n(axes[0, 0], fits, "target")
        rate_line(axes[0, 0], fits, slope)
        axes[0, 0].set_title(f"{fits['model'].iloc[0]}: targets of growing degree", fontsize=8)
        axes[0, 0].legend(fontsize=6)
        return fig
    targets = list(dict.fromkeys(fits["target"]))
    fig, axes = common.panels(len(targets))
    for ax, target in zip(axes[0], targets, strict=True):
        rows = fits[fits["target"] == target]
        error_vs_n(ax, rows, "model")
        rate_line(ax, rows, slope)
        sample_lines(ax, references[references["model"].isin(set(rows["model"]))], Target.parse(target).p)
        ax.set_title(f"target {target}", fontsize=8)
        ax.legend(fontsize=6)
    return fig


def draw_kernel(frame: pd.DataFrame):
    """D: nmse against M with the kernel limit (dashed), and the Gram error against M with M^-1/2."""
    finite, limit = frame[frame["source"] == "finite M"], frame[frame["source"] == "kernel limit"]
    fig, axes = common.panels(2)
    M = np.array(sorted(finite["M"].unique()), dtype=float)
    for ax, column, label in ((axes[0, 0], "nmse", "test error (nmse)"),
                              (axes[0, 1], "gram_error", "||Phi Phi^T - K_RFA||_F / ||K_RFA||_F")):
        sns.lineplot(data=finite, x="M", y=column, marker="o", errorbar="sd", err_style="bars", ax=ax,
                     label="RFA, M heads")
        common.log_ticks(ax, M)
        ax.set_yscale("log")
        ax.set_xlabel("heads M")
        ax.set_ylabel(label)
    kernel_nmse = limit["nmse"].mean()
    axes[0, 0].axhline(kernel_nmse, linestyle="--", color="black", label="kernel limit (M = inf)")
    axes[0, 0].set_ylim(bottom=min(axes[0, 0].get_ylim()[0], kernel_nmse / 2))  # off the axis edge
    start = finite[finite["M"] == M[0]]["gram_error"].mean()
    axes[0, 1].plot(M, start * (M / M[0]) ** -0.5, "--", color="grey", label="M^-1/2")
    axes[0, 0].set_title(f"target {frame['target'].iloc[0]}, n = {int(frame['n'].iloc[0])}", fontsize=8)
    for ax in axes[0]:
        ax.legend(fontsize=6)
    return fig


FIGURES = {"curves": draw_curves, "kernel": draw_kernel}

draw = common.draw_stage(FIGURES, "kind")
