"""deora2023 figures (spec §4 E1-E5 and the T1 check), one function per figure, drawn from the tidy Parquet only."""

from __future__ import annotations

import seaborn as sns
from matplotlib.colors import LogNorm

from iclrepro.figures import common

# the training loss of step k is the one its update descends, L(theta_{k-1}); the rest are after it
LABELS = {"loss": "training loss L(theta_{k-1})", "test_loss": "test loss", "test_error": "test error",
          "relative_distance": "||theta_k - theta_0|| / ||theta_0||", "distance": "||theta_k - theta_0||"}


def by_heads(frame) -> dict:
    """Colour by H on a log scale: H runs 1, 4, 16, 64, and on a linear scale 1 and 4 look alike.

    The scale spans `frame`'s H, so that lines drawn from a part of it (theory lines for some H)
    take the colours of the same H in the whole.
    """
    return {"hue": "H", "palette": "viridis", "hue_norm": LogNorm(frame["H"].min(), frame["H"].max())}


def per_head(ax, frame, y: str, log_y: bool = True) -> None:
    """Seed mean (band: +/-1 sd) of `y` against the GD step, one curve per H, log-x."""
    rows = frame.dropna(subset=[y])
    if log_y:
        rows = rows[rows[y] > 0]
        ax.set_yscale("log")
    sns.lineplot(data=rows, x="step", y=y, **by_heads(frame), errorbar="sd", ax=ax)
    ax.set_xscale("log")
    ax.set_xlabel("GD step k")
    ax.set_ylabel(LABELS[y])
    ax.legend(title="H", fontsize=7)


def draw_training(frame):
    """E1: training loss per H (seed bands); dashed, per H: the T3 bound and the c / (eta gamma^2 k) line."""
    fig, axes = common.panels(2)
    curve, lines = frame[frame["part"] == "curve"], frame[frame["part"] == "theory"]
    for ax, series in zip(axes[0], ("c / (eta gamma^2 k)", "T3 bound"), strict=True):
        per_head(ax, curve, "loss")
        shown = lines[lines["series"] == series]
        sns.lineplot(data=shown, x="step", y="value", **by_heads(curve), linestyle="--", legend=False,
                     ax=ax)
        ax.set_title(f"dashed: {series}", fontsize=8)
    return fig


def draw_dynamics_generalization(frame):
    """E2: test loss and test error against the GD step, and their final values against H."""
    fig, axes = common.panels(3)
    per_head(axes[0, 0], frame, "test_loss")
    per_head(axes[0, 1], frame, "test_error", log_y=False)
    rows = frame.dropna(subset=["test_loss"])
    last = rows[rows["step"] == rows["step"].max()].melt(id_vars=["H", "seed"], value_vars=["test_loss", "test_error"],
                                                         var_name="quantity")
    common.seed_bars(axes[0, 2], last.assign(quantity=last["quantity"].map(LABELS)), "H", "value", "quantity")
    axes[0, 2].set_xscale("log", base=2)
    axes[0, 2].set_ylabel("at the last step")
    return fig


def draw_dynamics_distance(frame):
    """E3: distance from initialisation against the step; final relative distance against H with a
    reference slope -1/2 through the smallest H."""
    fig, axes = common.panels(3)
    per_head(axes[0, 0], frame, "distance")
    per_head(axes[0, 1], frame, "relative_distance")
    rows = frame.dropna(subset=["relative_distance"])
    last = rows[rows["step"] == rows["step"].max()]
    common.seed_bars(axes[0, 2], last.assign(series="measured"), "H", "relative_distance", "series")
    means = last.groupby("H")["relative_distance"].mean()
    H = means.index.to_numpy(dtype=float)
    axes[0, 2].plot(H, means.iloc[0] * (H / H[0]) ** -0.5, "k--", label="slope -1/2")
    axes[0, 2].set_xscale("log", base=2)
    axes[0, 2].set_yscale("log")
    axes[0, 2].legend(fontsize=7)
    return fig


def draw_initialization(frame):
    """E4: (a) NTK margin gamma of the whole gradient and of the value block at the random and
    one-step initialisations against H, the value block with its closed forms zeta S / sqrt(2)
    and oracle S / sqrt(2) (T6 derives both for the value block only); (b) training loss from
    each at one H."""
    fig, axes = common.panels(3)
    margin = frame[frame["part"] == "margin"]
    long = margin.melt(id_vars=["H", "seed", "init"], value_vars=["gamma_all", "gamma_W", "gamma_V"],
                       var_name="block", value_name="gamma")
    for ax, block in zip(axes[0, :2], ("gamma_all", "gamma_V"), strict=True):
        common.seed_bars(ax, long[long["block"] == block], "H", "gamma", "init")
        ax.set_xscale("log", base=2)
        ax.set_title(block, fontsize=8)
    value_block = axes[0, 1]
    for row in frame[frame["part"] == "closed_form"].itertuples():
        value_block.axhline(row.value, color="grey", linestyle=":", linewidth=0.8)
        value_block.annotate(row.series, (margin["H"].min(), row.value), fontsize=6, va="bottom")
    value_block.set_yscale("log")  # the oracle line sits ~5x above the measured margins
    value_block.set_title("gamma_V (dotted: T6 closed forms)", fontsize=8)
    runs = frame[frame["part"] == "training"]
    sns.lineplot(data=runs, x="step", y="loss", hue="init", errorbar="sd", ax=axes[0, 2])
    axes[0, 2].set(xscale="log", yscale="log", xlabel="GD step k", ylabel="training loss")
    return fig


def draw_samples(frame):
    """E5: final test loss against n per H (seed bars), the c / (gamma^2 n) lines (dashed) and T4b's bound (dotted)."""
    fig, axes = common.panels(2)
    final = frame[frame["part"] == "final"]
    colours = by_heads(final)
    for ax, y in zip(axes[0], ("test_loss", "test_error"), strict=True):
        common.seed_bars(ax, final, "n", y, **colours)
        ax.set_xscale("log", base=2)
        ax.set_ylabel(LABELS[y])
    lines = frame[frame["part"] == "theory"]
    sns.lineplot(data=lines, x="n", y="test_loss", **colours, linestyle="--", legend=False,
                 ax=axes[0, 0])
    bounds = final.groupby(["H", "n"])["T4_bound"].mean().reset_index()
    sns.lineplot(data=bounds, x="n", y="T4_bound", **colours, linestyle=":", legend=False,
                 ax=axes[0, 0])
    axes[0, 0].set_yscale("log")
    return fig


def draw_hessian(frame):
    """T1: ||grad^2 Phi(theta_0; X)||_op against H (seed and sequence bars); T2: the training
    loss's -lambda_min / L at theta_0 against H (seed bars); each with a reference slope -1/2."""
    fig, axes = common.panels(2, width=4.5)
    probes = (("T1", "hessian_norm", "||Hessian of Phi||_op at init"),
              ("T2", "negative_curvature", "-lambda_min(Hessian of L) / L at init"))
    shown = frame.assign(negative_curvature=-frame["weak_convexity"], series="measured")
    for ax, (probe, y, label) in zip(axes[0], probes, strict=True):
        rows = shown[shown["probe"] == probe]
        common.seed_bars(ax, rows, "H", y, "series")
        means = rows.groupby("H")[y].mean()
        H = means.index.to_numpy(dtype=float)
        ax.plot(H, means.iloc[0] * (H / H[0]) ** -0.5, "k--", label="slope -1/2")
        ax.set(xscale="log", yscale="log", xlabel="heads H", ylabel=label)
        ax.set_title(f"{probe}: fitted slope {rows['slope'].iloc[0]:.3f}", fontsize=8)
        ax.legend(fontsize=7)
    return fig


FIGURES = {"E1": draw_training, "E2": draw_dynamics_generalization, "E3": draw_dynamics_distance,
           "E4": draw_initialization, "E5": draw_samples, "hessian": draw_hessian}

# E2 and E3 share a tidy kind, so by figure name
draw = common.draw_stage(FIGURES, "figure")
