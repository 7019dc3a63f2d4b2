"""zhang2026 figures (spec §4 E1-E7), one function per figure, drawn from the tidy Parquet only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns

from iclrepro import series_names
from iclrepro.figures import common

LOOPED = series_names.ZHANG2026_LOOPED
METRIC_LABELS = {"direction_error": "1 - cos(w, u_bar)", "margin_gap": "gamma* - gamma(w)",
                 "accuracy": "query accuracy", "w_norm": "||w||"}


def curves(ax, frame: pd.DataFrame, y: str, hue: str, log_y: bool = True, **kwargs) -> None:
    """Mean over prompts (already) and seeds (band: +/-1 sd) of `y` against T on log-x."""
    frame = frame.dropna(subset=[y])
    if log_y:
        frame = frame[frame[y] > 0]
    sns.lineplot(data=frame, x="T", y=y, hue=hue, errorbar="sd", ax=ax, **kwargs)
    common.log_ticks(ax, sorted(frame["T"].unique()))
    if log_y:
        ax.set_yscale("log")
    ax.set_ylabel(METRIC_LABELS.get(y, y))


def draw_depth(frame):
    """E1: the constructed transformer (markers) on explicit NGD, GD and the rate lines, per N."""
    sizes = sorted(frame["N"].unique())
    fig, axes = common.panels(3, len(sizes))
    for row, N in enumerate(sizes):
        rows = frame[frame["N"] == N]
        for col, metric in enumerate(("direction_error", "margin_gap", "accuracy")):
            ax = axes[row, col]
            lines = rows[rows["source"] == "algorithm"]
            curves(ax, lines, metric, "series", log_y=metric != "accuracy")
            built = rows[rows["source"] == "constructed"]
            ax.plot(built["T"], built[metric], "o", mfc="none", color="black", label="constructed transformer")
            if metric == "direction_error":
                common.reference_lines(ax, rows[rows["source"] == "reference"].dropna(subset=[metric]),
                                       "T", metric, "series", "--")
            ax.set_xlabel("depth L")
            ax.set_title(f"N = {N}", fontsize=8)
            ax.legend(fontsize=6)
    return fig


def draw_training(frame):
    """E2: loss, distance to the construction, and the diagonal / off-diagonal means per step."""
    fig, axes = common.panels(3)
    groups = ({"loss": "training loss"},
              {"dist_Q": "||Q - Q*||_F", "dist_V": "||V - V*||_F"},
              {"Q_diag": "mean diag Q", "V_diag": "mean diag V", "Q_offdiag": "mean |offdiag Q|",
               "V_offdiag": "mean |offdiag V|"})
    for ax, names in zip(axes[0], groups, strict=True):
        rows = frame[frame["quantity"].isin(names)]
        rows = rows.assign(label=rows["quantity"].map(names))
        sns.lineplot(data=rows, x="step", y="value", hue="label", errorbar="sd", ax=ax)
        ax.set_xlabel("training step")
        ax.legend(fontsize=7)
    heldout = frame[frame["quantity"] == "heldout_loss"]
    axes[0, 0].plot(heldout["step"], heldout["value"], "k*", label="held out")
    axes[0, 0].legend(fontsize=7)
    for ax in axes[0, :2]:
        ax.set_yscale("log")
    for target in (-1.0, frame["eta"].iloc[0]):  # the construction's Q* = -I and V* = eta I
        axes[0, 2].axhline(target, color="grey", linestyle="--", linewidth=0.8)
    return fig


def draw_weights(frame):
    """E3: heatmaps of the full W^KQ and W^PV of seed 0 over training, and the construction."""
    entries = frame[frame["part"] == "entry"]
    panels = list(dict.fromkeys(entries.sort_values("step")["panel"]))
    panels = [p for p in panels if p != "construction"] + ["construction"]
    matrices = sorted(entries["matrix"].unique())
    fig, axes = common.panels(len(panels), len(matrices), width=2.6, height=2.4)
    for row, matrix in enumerate(matrices):
        rows = entries[entries["matrix"] == matrix]
        limit = rows["value"].abs().max()
        for col, panel in enumerate(panels):
            grid = rows[rows["panel"] == panel].astype({"i": int, "j": int})
            grid = grid.pivot(index="i", columns="j", values="value")
            sns.heatmap(grid, ax=axes[row, col], cmap="RdBu_r", vmin=-limit, vmax=limit, square=True,
                        cbar=col == len(panels) - 1, xticklabels=False, yticklabels=False)
            axes[row, col].set_title(f"{matrix}, {panel}", fontsize=7)
            axes[row, col].set_xlabel("key [z; w]" if row == len(matrices) - 1 else "")
            axes[row, col].set_ylabel("token [z; w]" if col == 0 else "")
    return fig


def draw_loop(frame):
    """E4: looped layer vs NGD (agreement), direction error, accuracy and ||w_T|| (log-log: slope 1
    is linear growth) against T."""
    fig, axes = common.panels(4)
    looped = frame[frame["series"] == LOOPED]
    agreement = pd.concat([looped.assign(value=1 - looped["cos_ngd_min"], label="1 - cos(loop, NGD), worst prompt"),
                           looped.assign(value=looped["rel_err_ngd"], label="||loop - NGD|| / ||NGD||, worst")])
    curves(axes[0, 0], agreement, "value", "label")
    axes[0, 0].set_ylabel("disagreement with NGD")
    order = [name for name in frame["series"].unique() if name != LOOPED] + [LOOPED]  # drawn on top of NGD
    for ax, metric in zip(axes[0, 1:], ("direction_error", "accuracy", "w_norm"), strict=True):
        curves(ax, frame, metric, "series", log_y=metric != "accuracy", hue_order=order, style="series",
               style_order=order, markers=True, dashes=False)
    for ax in axes[0]:
        ax.set_xlabel("loops T")
        ax.legend(fontsize=6)
    return fig


def draw_ood(frame):
    """E5: direction error and accuracy vs T per shift family; loop solid, NGD dashed."""
    families = list(dict.fromkeys(frame["family"]))
    fig, axes = common.panels(len(families), 2)
    for col, family in enumerate(families):
        rows = frame[frame["family"] == family]
        for row, metric in enumerate(("direction_error", "accuracy")):
            ax = axes[row, col]
            curves(ax, rows, metric, "setting", log_y=metric == "direction_error", style="series")
            ax.set_title(f"shift: {family}", fontsize=8)
            ax.set_xlabel("loops T")
            ax.legend(fontsize=6)
    return fig


def draw_early(frame):
    """E6: direction error of each checkpoint looped; the legend gives its mean diag Q and V
    and their cosines with -I and I (seed means)."""
    fig, axes = common.panels(2, width=5)
    structure = frame.groupby("checkpoint")[["Q_diag", "V_diag", "Q_cos", "V_cos"]].mean()
    labels = {step: f"step {step}: diag Q {row.Q_diag:.2f}, V {row.V_diag:.2f}; cos {row.Q_cos:.3f}, {row.V_cos:.3f}"
              for step, row in structure.iterrows()}
    frame = frame.assign(checkpoint_label=frame["checkpoint"].map(labels))
    curves(axes[0, 0], frame, "direction_error", "checkpoint_label")
    curves(axes[0, 1], frame, "accuracy", "checkpoint_label", log_y=False)
    for ax in axes[0]:
        ax.set_xlabel("loops T")
        ax.legend(fontsize=6)
    return fig


def draw_support(frame):
    """E7: one 2-D prompt's tokens, the max-margin boundary and the loop's iterate directions;
    the attention of every token against T (support vectors in colour, their dual share dotted)."""
    tokens = frame[(frame["part"] == "token") & (frame["prompt"] == 0)].astype({"i": int})
    seed = frame[frame["part"] == "iterate"]["seed"].min()
    iterates = frame[(frame["part"] == "iterate") & (frame["prompt"] == 0) & (frame["seed"] == seed)]
    attention = frame[(frame["part"] == "attention") & (frame["prompt"] == 0) & (frame["seed"] == seed)]
    fig, axes = common.panels(2, width=4.6, height=4.0)
    plane(axes[0, 0], tokens, iterates)
    ax = axes[0, 1]
    shares = tokens.set_index("i")["alpha_share"][tokens.set_index("i")["support"]]
    for token, rows in attention.astype({"i": int}).groupby("i"):
        if token in shares.index:
            line, = ax.plot(rows["T"], rows["p"], linewidth=1.5, label=f"support vector z_{token}")
            ax.axhline(shares[token], color=line.get_color(), linestyle=":", linewidth=0.8)
        else:
            ax.plot(rows["T"], rows["p"], color="lightgrey", linewidth=0.8)
    common.log_ticks(ax, sorted(attention["T"].unique()))
    ax.set_xlabel("loops T")
    ax.set_ylabel("attention p_i(w_T); dotted: alpha_i / sum alpha")
    ax.legend(fontsize=6)
    return fig


def plane(ax, tokens: pd.DataFrame, iterates: pd.DataFrame) -> None:
    """Scatter of z_i (support vectors large), the max-margin boundary, u_bar (arrow) and the
    iterates' unit directions w_T / ||w_T|| coloured by T."""
    support = tokens["support"].to_numpy(bool)
    ax.scatter(tokens["z1"][~support], tokens["z2"][~support], s=15, color="C0", label="z_i")
    ax.scatter(tokens["z1"][support], tokens["z2"][support], s=60, color="C3", label="support vectors")
    u = tokens[["u1", "u2"]].iloc[0].to_numpy()
    reach = float(np.abs(tokens[["z1", "z2"]].to_numpy()).max())
    ax.plot([-reach * u[1], reach * u[1]], [reach * u[0], -reach * u[0]], "k--", linewidth=0.8,
            label="max-margin boundary")
    ax.annotate("", u, (0, 0), arrowprops={"arrowstyle": "->", "color": "black"})
    directions = iterates[["w1", "w2"]].to_numpy()
    directions = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    points = ax.scatter(directions[:, 0], directions[:, 1], c=np.log10(iterates["T"]), cmap="viridis",
                        marker="D", s=25, label="w_T / ||w_T||")
    ax.figure.colorbar(points, ax=ax, label="log10 T", shrink=0.7)
    ax.set_aspect("equal")
    ax.set_xlabel("z_1")
    ax.set_ylabel("z_2")
    ax.legend(fontsize=6)


FIGURES = {"depth": draw_depth, "training": draw_training, "weights": draw_weights, "loop": draw_loop,
           "ood": draw_ood, "early": draw_early, "support": draw_support}

draw = common.draw_stage(FIGURES, "kind")
