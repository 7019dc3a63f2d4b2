"""Store integrity: verify every stored entry against its identity record; collect garbage.

Content-addressed entries are test/training sets (results/data/<id>.parquet) and cells
(results/cells/<id>/). The job that makes one first writes its identity record
(results/index/<id>.json: spec, input ids, source fingerprint), so its id can be
recomputed here and compared with where it is stored and with what its files say.
The files with readable names (theory tables, each figure's tidy data, PNG, PDF and
provenance record, claim verdicts) have no identity record; Snakemake remakes them when
they are missing, so they are checked for being complete and readable, tables for being the
pipeline's and of their own figure or paper, and a figure whose files are there only in part
is named as incomplete.
"""

from __future__ import annotations

import glob
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from iclrepro import batch, config, plan, store

SCALES = config.SCALES
ACCELERATORS = ("cpu", "cuda")


@dataclass
class Report:
    checked: int = 0
    incomplete: list[str] = field(default_factory=list)  # started, never finished: rerun, not corrupt
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        summary = (f"{self.checked} entries checked: {len(self.problems)} problems, "
                   f"{len(self.incomplete)} incomplete")
        return [f"problem: {p}" for p in self.problems] + [f"incomplete: {p}" for p in self.incomplete] + [summary]


def _entries(layout: store.Layout) -> dict[str, Path]:
    """Every stored data set and cell, by id."""
    root = Path(layout.root)
    found = {path.stem: path for path in (root / "data").glob("*.parquet")}
    found.update({path.name: path for path in (root / "cells").glob("*") if path.is_dir()})
    return found


def _check_data(record: dict, path: Path) -> None:
    table = store.read_parquet(path, content=record["id"])
    if store.parquet_spec(table, path) != record["spec"]:
        raise store.StoreError(f"{path}: the spec in its metadata differs from its identity record")


def _check_table(path: Path) -> pa.Table:
    """A theory table, tidy table or claims file as the pipeline writes it: readable Parquet that
    carries its node's id (a file put in its place, say predictions, carries none)."""
    table = store.read_parquet(path)
    if not store.parquet_id(table):
        raise store.StoreError(f"{path}: no node id in its metadata, so not a table the pipeline wrote")
    return table


def _check_tidy(path: Path) -> None:
    """A figure's tidy table names its figure in its spec: another figure's table copied into its
    place carries an id too, but names the other figure."""
    figure = store.parquet_spec(_check_table(path), path).get("figure")
    if figure != path.stem:
        raise store.StoreError(f"{path}: the tidy data of figure {figure}, not of {path.stem}")


def _check_claims(path: Path) -> None:
    """A paper's claims file holds that paper's verdicts (its rows name the paper)."""
    table = _check_table(path)
    papers = sorted(set(table.column("paper").to_pylist())) if "paper" in table.column_names else []
    if papers != [path.stem]:
        raise store.StoreError(f"{path}: verdicts of {', '.join(map(str, papers)) or 'no paper'}, not of {path.stem}")


# How a complete file of each figure format begins and ends; a truncated one ends otherwise.
FIGURE_BOUNDS = {"png": (b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"), "pdf": (b"%PDF-", b"%%EOF")}


def _check_figure(path: Path) -> None:
    """A drawn figure is a complete PNG or PDF."""
    ext = path.suffix[1:]
    head, tail = FIGURE_BOUNDS[ext]
    data = path.read_bytes()
    if not (data.startswith(head) and data[-16:].rstrip().endswith(tail)):
        raise store.StoreError(f"{path}: not a complete {ext.upper()} file")


# The files of one figure, with the function that checks each: its tidy data (rule tidy;
# the layout puts it beside the drawing, as <name>.parquet), then what rule draw writes.
FIGURE_FILES = {"parquet": _check_tidy, "png": _check_figure, "pdf": _check_figure, "json": store.read_json}


def _figure_files(results: str) -> list[Path]:
    """Every file of every figure, where the layout puts them."""
    patterns = store.Layout(glob.escape(results))   # its paths, with wildcards for the names
    return [Path(path) for ext in FIGURE_FILES for path in glob.glob(patterns.figure("*", "*", ext))]


def _named_files(results: str, figure_files: list[Path]) -> list[tuple[Path, Callable[[Path], object]]]:
    """Every theory table, figure file and claims file, with the function that checks it."""
    patterns = store.Layout(glob.escape(results))
    checks = [(Path(path), _check_table) for path in glob.glob(patterns.theory("*", "*"))]
    checks += [(Path(path), _check_claims) for path in glob.glob(patterns.claims("*"))]
    checks += [(path, FIGURE_FILES[path.suffix[1:]]) for path in figure_files]
    return sorted(checks, key=lambda pair: pair[0])


def _partial_figures(figure_files: list[Path]) -> list[str]:
    """Figures of which some files are there and others not (a run stopped between the
    tidy and the draw job, or a file deleted since): Snakemake makes the missing ones."""
    found = set(map(str, figure_files))
    names = {str(path.with_suffix("")) for path in figure_files}   # cuts the last suffix only
    partial = []
    for name in sorted(names):
        missing = [ext for ext in FIGURE_FILES if f"{name}.{ext}" not in found]
        if missing:
            partial.append(f"{name}: no {' or '.join(missing)} file (run snakemake to make it)")
    return partial


def _check_named_files(results: str, report: Report) -> None:
    figure_files = _figure_files(results)
    for path, check in _named_files(results, figure_files):
        report.checked += 1
        try:
            check(path)
        except store.StoreError as err:
            report.problems.append(f"{err}; delete it and run snakemake again to remake it")
    report.incomplete += _partial_figures(figure_files)


RECORD_KEYS = ("id", "stage", "spec", "inputs", "name", "source")   # what store writes and verify reads
REDO_RECORD = "delete it; verify then says how a rerun writes it again"


def _missing_record(path: Path, marker: Path | None) -> str:
    """How a rerun writes an entry's lost identity record again, without redoing a trained cell."""
    if not path.is_dir():
        return "delete the data set and rerun: the next job that reads it makes it again, with its record"
    if marker is None:
        return "rerun: its batch, not yet marked done, writes the record"
    return f"delete its batch marker {marker} and rerun: the batch finds the cell whole and writes its record"


def _identity_records(results: str, report: Report) -> dict[str, dict]:
    """The readable identity records, by id; each one that is not, or hashes to another id, is a problem."""
    records = {}
    for path in sorted(Path(results, "index").glob("*.json")):
        try:
            record = store.read_json(path)
            missing = [key for key in RECORD_KEYS if key not in record]
            if missing:
                report.problems.append(f"{path}: unreadable identity record (without {', '.join(missing)}); "
                                       f"{REDO_RECORD}")
                continue
            if store.identity_id(record) != path.stem or record["id"] != path.stem:
                report.problems.append(f"{path}: its spec hashes to {store.identity_id(record)}, not {path.stem}")
            records[path.stem] = record
        except (store.StoreError, TypeError, ValueError) as err:   # ValueError: a NaN the hash refuses
            report.problems.append(f"{path}: unreadable identity record ({err}); {REDO_RECORD}")
    return records


def _check_batch_markers(results: str, entries: dict[str, Path], report: Report) -> dict[str, Path]:
    """A batch marker tells snakemake its cells are trained: each must name stored cells.
    Returns the marker of each cell a marker names."""
    marker_of = {}
    for path in sorted(Path(results, "batches").glob("train/*/*.json")):
        try:
            members = store.read_json(path).get("members")
        except store.StoreError as err:
            report.problems.append(f"{err}; delete the marker and rerun")
            continue
        if not isinstance(members, list) or not all(isinstance(member, str) for member in members):
            report.problems.append(f"{path}: no list of member cell ids; delete the marker and rerun")
            continue
        for member in members:
            marker_of[member] = path
            if member not in entries:
                report.problems.append(f"{path}: member {member} is missing; delete the marker and rerun")
    return marker_of


def _check_cell_entry(record: dict, path: Path, marker: Path | None, report: Report) -> None:
    """A damaged cell is trained again only with its batch, which its marker says is done."""
    redo = f"delete {path} and its batch marker {marker}, then rerun" if marker else "delete it and rerun"
    if not (path / "metrics.parquet").is_file():
        if marker is None:
            report.incomplete.append(f"{path}: no metrics.parquet (a killed or failed job; rerun)")
        else:
            report.problems.append(f"{path}: no metrics.parquet, though its batch is marked done; {redo}")
        return
    try:
        store.check_cell(path, record["id"], record["spec"])
    except store.StoreError as err:
        report.problems.append(f"{err}; {redo}")


def verify(results: str) -> Report:
    """Recompute every recorded id and check each entry's files are readable and consistent."""
    layout, report = store.Layout(results), Report()
    entries = _entries(layout)
    records = _identity_records(results, report)
    marker_of = _check_batch_markers(results, entries, report)
    for node_id, path in sorted(entries.items()):
        report.checked += 1
        record = records.get(node_id)
        if record is None:
            report.problems.append(f"{path}: no identity record in {layout.index(node_id)}; "
                                   f"{_missing_record(path, marker_of.get(node_id))}")
        elif record["stage"] == "train":
            _check_cell_entry(record, path, marker_of.get(node_id), report)
        else:
            try:
                _check_data(record, path)
            except store.StoreError as err:
                report.problems.append(str(err))
    _check_named_files(results, report)
    return report


# A running cell's log gets a progress line per chunk of training steps (at most every 30 s),
# or per seed of a closed-form fu2023 fit, and each takes seconds to minutes, so a log
# untouched this long belongs to a job that ended.
STALE_SECONDS = 600


def cell_status(layout: store.Layout, node_id: str, log: Path) -> str:
    """done, failed (the job's log holds the traceback batch.run_member writes for an error),
    running, interrupted (its job ended: on this machine, or a SLURM job that squeue no longer
    lists as pending or running; or its log is stale) or pending.
    A warning that mentions an error (a library's deprecation notice) is no failure."""
    if Path(layout.cell(node_id)).is_file():
        return "done"
    if not log.is_file():
        return "pending"
    text = log.read_text(errors="replace")
    if "Traceback (most recent call last)" in text:
        return "failed"
    stale = time.time() - log.stat().st_mtime >= STALE_SECONDS
    return "interrupted" if stale or batch.job_gone(text) else "running"


def referenced_ids(raw: dict, workdir: str | Path) -> set[str]:
    """Ids of every data set, cell and batch a raw config (as `config.read` gives it) plans,
    at any scale or accelerator.

    Every paper block in the config counts, selected or not, so a smaller run never
    makes a larger one's results look unused.
    """
    schema = config.load_schema(workdir)
    papers = [paper for paper in schema["$defs"]["papers"] if paper in raw]
    ids = set()
    for scale in SCALES:
        for accelerator in ACCELERATORS:
            resolved = config.check_and_resolve(dict(raw, scale=scale, papers=papers, accelerator=accelerator), schema)
            built = plan.build(resolved)
            ids |= set(built.nodes["data"]) | set(built.nodes["train"])
            ids |= set(built.batches)
    return ids


# A write through store.atomic_path takes seconds, so a temporary file of one untouched for
# an hour was left by a job killed mid-write (SIGKILL, or SIGTERM, which skips `finally`).
ABANDONED_WRITE_SECONDS = 3600


def _abandoned_writes(results: str) -> list[Path]:
    """Temporary files of store.atomic_path (`.<name>.tmp-<pid>-<hex>`) that killed writes left."""
    cutoff = time.time() - ABANDONED_WRITE_SECONDS
    return [path for path in Path(results).rglob(".*.tmp-*") if _modified_before(path, cutoff)]


def _modified_before(path: Path, cutoff: float) -> bool:
    try:
        return path.stat().st_mtime < cutoff
    except FileNotFoundError:  # its write finished (renamed it) while we looked
        return False


def garbage(results: str, referenced: set[str]) -> list[Path]:
    """Stored entries, identity records and batch markers no plan of the config refers to,
    and temporary files that killed writes left outside those entries (deleting an unused
    cell deletes the temporary files in it)."""
    unused = [path for node_id, path in _entries(store.Layout(results)).items() if node_id not in referenced]
    unused_cells = {path for path in unused if path.is_dir()}
    unused += [path for path in Path(results, "index").glob("*.json") if path.stem not in referenced]
    unused += [path for path in Path(results, "batches").glob("train/*/*.json") if path.stem not in referenced]
    unused += [path for path in _abandoned_writes(results) if path.parent not in unused_cells]
    return sorted(unused)


def remove(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def result_differences(expected: Path, found: Path) -> list[str]:
    """Where the cells' metrics and the claim verdicts under `found` differ from `expected`'s.

    Both are results directories of runs of the same config; equal means bitwise equal.
    """
    import pandas as pd  # here, not at the top: `iclrepro cells` imports this module and stays light

    compared = [Path("cells", cell.name, "metrics.parquet") for cell in sorted((expected / "cells").iterdir())]
    compared += sorted(path.relative_to(expected) for path in (expected / "claims").glob("*.parquet"))
    differences = []
    for path in compared:
        if not (found / path).is_file():
            differences.append(f"{found / path}: missing")
        elif not pd.read_parquet(found / path).equals(pd.read_parquet(expected / path)):
            differences.append(f"{found / path}: differs from {expected / path}")
    return differences
