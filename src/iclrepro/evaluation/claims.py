"""Claim verdicts: one row per checked claim, and the Markdown table over all papers.

Every paper's claims parquet has the columns of `SCHEMA`. `measured` is a number,
`expected` says in words what it is compared with, and `passed` is the verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from iclrepro import store

SCHEMA = pa.schema([
    ("paper", pa.string()), ("claim_id", pa.string()), ("figure", pa.string()),
    ("statement", pa.string()), ("measured", pa.float64()), ("expected", pa.string()),
    ("passed", pa.bool_()),
])


@dataclass(frozen=True)
class Claim:
    claim_id: str
    figure: str
    statement: str
    measured: float
    expected: str
    passed: bool


def loglog_slope(x, y) -> float:
    """Least-squares slope of log y against log x; NaN with fewer than two x values or a y <= 0."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(np.unique(x)) < 2 or np.any(y <= 0):
        return float("nan")
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def at_most(value: float, bound: float) -> bool:
    return not math.isnan(value) and value <= bound


def within(value: float, low: float, high: float) -> bool:
    return not math.isnan(value) and low <= value <= high


def worst(values: pd.Series, largest: bool = True) -> tuple[float, object]:
    """The worst of a claim's points and its index label ((NaN, None) when there are none).
    A NaN point, such as a diverged baseline, is the worst of all, so that the claim fails
    instead of passing on the remaining points (pandas' max and idxmax skip NaN). Found by
    position: points of several scenarios can share a label (their D)."""
    missing = values.isna()
    if missing.any():
        return float("nan"), values.index[missing][0]
    if values.empty:
        return float("nan"), None
    position = int(values.to_numpy().argmax() if largest else values.to_numpy().argmin())
    return float(values.iloc[position]), values.index[position]


def write(paper: str, claims: list[Claim], spec: dict, content: str, out) -> None:
    frame = pd.DataFrame([{"paper": paper, **vars(claim)} for claim in claims], columns=SCHEMA.names)
    frame["passed"] = frame["passed"].astype(bool)
    table = pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False)
    store.write_parquet(table, out, spec=spec, content=content)


def read(path) -> pd.DataFrame:
    table = store.read_parquet(path)
    store.check_columns(table, SCHEMA, path)
    return table.to_pandas()


def _cell(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value).replace("|", "\\|")


def markdown(frame: pd.DataFrame, scale: str) -> str:
    """The claims table over all papers, with a pass count per paper."""
    lines = [f"# Claim verdicts ({scale} scale)", ""]
    for paper, rows in frame.groupby("paper", sort=True):
        lines += [f"## {paper}: {int(rows['passed'].sum())} of {len(rows)} claims pass", "",
                  "| claim | figure | statement | measured | expected | verdict |",
                  "|---|---|---|---|---|---|"]
        for row in rows.itertuples():
            verdict = "passes" if row.passed else "**fails**"
            cells = [row.claim_id, row.figure, row.statement, row.measured, row.expected, verdict]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)


def html(frame: pd.DataFrame, scale: str) -> str:
    """The same table as a standalone HTML page (shown in the Snakemake report)."""
    shown = frame.assign(verdict=frame["passed"].map({True: "passes", False: "FAILS"})).drop(columns="passed")
    table = shown.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0, classes="claims")
    style = ("table.claims{border-collapse:collapse;font:13px sans-serif}"
             "table.claims td,table.claims th{border:1px solid #ccc;padding:4px 8px;text-align:left}")
    summary = "".join(f"<li>{paper}: {int(rows['passed'].sum())} of {len(rows)} claims pass</li>"
                      for paper, rows in frame.groupby("paper", sort=True))
    title = f"Claim verdicts ({scale} scale)"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
            f"<style>{style}</style></head><body><h1>{title}</h1><ul>{summary}</ul>{table}</body></html>")


def write_table(paths: list[str], scale: str, out_md, out_html) -> None:
    """Claims-table stage: results/claims.md and .html from every paper's claims parquet,
    titled with the scale they were measured at (each scale's run writes the same files)."""
    frame = pd.concat([read(path) for path in paths], ignore_index=True)
    for out, text in ((out_md, markdown(frame, scale)), (out_html, html(frame, scale))):
        with store.atomic_path(out) as tmp:
            tmp.write_text(text)
