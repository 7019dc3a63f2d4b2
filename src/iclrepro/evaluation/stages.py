"""The tidy and claims stages, as every paper runs them.

A paper's evaluation module names what differs: its figure kinds (tidy-table builders)
and its claim checks; these functions do the reading, dispatching and writing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from iclrepro import store
from iclrepro.evaluation import claims as verdicts

TidyBuilder = Callable[[dict, store.Layout], pd.DataFrame]
ClaimCheck = Callable[[dict[str, pd.DataFrame], dict], list[verdicts.Claim]]


def write_tidy(kinds: dict[str, TidyBuilder], spec: dict, node_id: str, results: str, out: str) -> None:
    """One figure's tidy data as Parquet (what its drawing shows), built by its kind's function."""
    frame = kinds[spec["kind"]](spec, store.Layout(results))
    store.write_parquet(pa.Table.from_pandas(frame, preserve_index=False), out, spec=spec, content=node_id)


def prediction_rows(shape: tuple[int, ...], seeds: Sequence[int], axes: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Row labels of a prediction array with a leading seed axis, flattened in C order: the
    position along the first item axis, the seed, then the position along each later axis,
    each under its name in `axes` (the `predict` command's long format)."""
    seed, first, *rest = (index.reshape(-1) for index in np.indices(shape))
    return {axes[0]: first, "seed": np.asarray(seeds)[seed], **dict(zip(axes[1:], rest, strict=True))}


def write_predictions(frame: pd.DataFrame, out: str, spec: dict) -> None:
    store.write_parquet(pa.Table.from_pandas(frame, preserve_index=False), out, spec=spec)


def write_claims(paper: str, checks: Sequence[ClaimCheck], spec: dict, node_id: str, results: str, out: str) -> None:
    """Every claim check of a paper, run on its tidy tables with the settings in spec["claims"]."""
    layout = store.Layout(results)
    figs = {name: store.read_parquet(layout.tidy(paper, name)).to_pandas() for name in spec["figures"]}
    found = [claim for check in checks for claim in check(figs, spec["claims"])]
    verdicts.write(paper, found, spec, node_id, out)
