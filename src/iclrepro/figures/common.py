"""Shared drawing setup: a fixed non-interactive backend, one theme, atomic deterministic saves."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # never open a window; identical output on every machine

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter  # noqa: E402

from iclrepro import store  # noqa: E402


def read_tidy(path) -> pd.DataFrame:
    return store.read_parquet(path).to_pandas()


def panels(ncols: int, nrows: int = 1, width: float = 4.0, height: float = 3.2):
    sns.set_theme(context="paper", style="whitegrid")
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    return fig, axes


def save(fig, out_png, out_pdf) -> None:
    """Write PNG and PDF atomically; the PDF carries no creation date so reruns are identical."""
    fig.tight_layout()
    with store.atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=150)
    with store.atomic_path(out_pdf) as tmp:
        fig.savefig(tmp, format="pdf", metadata={"CreationDate": None})
    plt.close(fig)


def draw_stage(drawings: dict, key: str):
    """A paper's draw stage: render one figure from its tidy Parquet with the drawing function
    `drawings[spec[key]]` (keyed by tidy kind, or by figure name where figures share a kind)."""

    def draw(spec: dict, node_id: str, tidy: str, out_png: str, out_pdf: str) -> None:
        save(drawings[spec[key]](read_tidy(tidy)), out_png, out_pdf)

    return draw


def seed_bars(ax, rows: pd.DataFrame, x: str, y: str, hue: str, **kwargs) -> None:
    """Trained models: mean over seeds with +/-1 sd error bars, one marker line per hue."""
    sns.lineplot(data=rows, x=x, y=y, hue=hue, style=hue, markers=True, dashes=False,
                 errorbar="sd", err_style="bars", ax=ax, **kwargs)


# Colours of curves drawn beside trained series (which take seaborn's C0, C1, ... in order):
# theory in black and greys, baselines in the palette's last colours, so no two share one
THEORY_COLOURS = ("black", "dimgrey", "darkgrey")
BASELINE_COLOURS = ("C8", "C9", "C5")


def reference_lines(ax, rows: pd.DataFrame, x: str, y: str, label: str, linestyle: str,
                    colours: tuple[str, ...] = THEORY_COLOURS) -> None:
    """Theory (dashed) or baseline (dotted) curves, one per series."""
    for index, (series, group) in enumerate(rows.groupby(label, sort=True)):
        group = group.sort_values(x)
        ax.plot(group[x], group[y], linestyle=linestyle, color=colours[index % len(colours)], label=series)


def log_ticks(ax, values) -> None:
    """Log x-axis labelled with the grid's own values (e.g. the D grid), not powers of ten."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(values))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_locator(NullLocator())
