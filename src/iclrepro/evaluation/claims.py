"""Claim verdicts: one row per checked claim, and the Markdown table over all papers.

Every paper's claims parquet has the columns of `SCHEMA`. `measured` is a number,
`expected` says in words what it is compared with, and `passed` is the verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


def at_most(value: float, bound: float) -> bool:
    return not math.isnan(value) and value <= bound


def within(value: float, low: float, high: float) -> bool:
    return not math.isnan(value) and low <= value <= high


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


def markdown(frame: pd.DataFrame) -> str:
    """The claims table over all papers, with a pass count per paper."""
    lines = ["# Claim verdicts", ""]
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


def write_table(paths: list[str], out) -> None:
    """Claims-table stage: results/claims.md from every paper's claims parquet."""
    frame = pd.concat([read(path) for path in paths], ignore_index=True)
    with store.atomic_path(out) as tmp:
        tmp.write_text(markdown(frame))
