"""Surviving kills, concurrent invocations and damaged files; the store stays verifiable.

The kill test starts the workflow, SIGKILLs its whole process group while a training
job runs, unlocks, reruns, and compares every metric and claim with an uninterrupted
run. A third invocation started while another runs must be refused by the lock.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import SMOKE, cli, cli_command, copy_run, copy_workflow, snakemake
from iclrepro import batch, config, integrity, plan

pytestmark = pytest.mark.e2e


def start(workdir: Path) -> subprocess.Popen:
    """Snakemake in the background, its log in a file (a pipe nobody reads would fill and stall it)."""
    command = [sys.executable, "-m", "snakemake", "--cores", "2", *SMOKE]
    with (workdir / "snakemake.log").open("a") as log:
        return subprocess.Popen(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def training_in_progress(workdir: Path) -> bool:
    """A train job has started (its log exists) and its cell is not finished."""
    for log in (workdir / "results" / "logs" / "train").glob("*.log"):
        if not (workdir / "results" / "cells" / log.stem / "metrics.parquet").exists():
            return True
    return False


def wait_for(condition, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_killed_run_resumes_to_identical_results_and_a_concurrent_run_is_refused(smoke_run, tmp_path):
    workdir = copy_workflow(tmp_path / "killed")
    first = start(workdir)
    wait_for(lambda: training_in_progress(workdir))
    os.killpg(first.pid, signal.SIGKILL)  # the node dies: snakemake and every job with it
    first.wait()

    snakemake(workdir, "--unlock", *SMOKE)
    second = start(workdir)
    wait_for(lambda: any((workdir / ".snakemake" / "locks").glob("*")))
    refused = snakemake(workdir, *SMOKE, check=False)
    assert refused.returncode != 0 and "cannot be locked" in refused.stdout + refused.stderr
    assert second.wait() == 0, (workdir / "snakemake.log").read_text()[-4000:]

    assert integrity.result_differences(smoke_run / "results", workdir / "results") == []
    assert {cell.name for cell in (workdir / "results" / "cells").iterdir()} == \
        {cell.name for cell in (smoke_run / "results" / "cells").iterdir()}
    assert integrity.verify(str(workdir / "results")).problems == []


def test_the_same_spec_twice_gives_bitwise_identical_metrics(smoke_run, tmp_path):
    """One cell of every paper, trained again in a fresh store with the run's thread count."""
    resolved = config.load(smoke_run / "config.yaml", {"scale": "smoke"}, smoke_run)
    first_cells = {}
    for node in plan.build(resolved).cells.values():
        first_cells.setdefault(node.paper, node)
    assert first_cells.keys() == set(resolved["papers"])
    fresh = tmp_path / "results"
    batch.run([node.payload() for node in first_cells.values()], str(fresh / "marker.json"), str(fresh),
              threads=resolved["threads"])
    for node in first_cells.values():
        metrics = Path("cells", node.id, "metrics.parquet")
        assert pd.read_parquet(fresh / metrics).equals(pd.read_parquet(smoke_run / "results" / metrics)), node.paper


@pytest.fixture
def run_copy(smoke_run, tmp_path) -> Path:
    return copy_run(smoke_run, tmp_path / "run")


def test_verify_passes_on_a_clean_store_and_names_damage(run_copy):
    results = run_copy / "results"
    report = integrity.verify(str(results))
    assert report.problems == [] and report.incomplete == [] and report.checked > 20
    cell = next((results / "cells").iterdir())
    marker = next(p for p in (results / "batches").glob("train/*/*.json") if cell.name in p.read_text())
    metrics = cell / "metrics.parquet"
    os.truncate(metrics, metrics.stat().st_size // 2)
    record = next(p for p in (results / "index").glob("*.json") if p.stem != cell.name)
    tampered = json.loads(record.read_text())
    tampered["spec"]["tampered"] = True
    record.write_text(json.dumps(tampered))
    tidy, claims = results / "figures" / "cui2024" / "F1.parquet", results / "claims" / "fu2023.parquet"
    os.truncate(tidy, tidy.stat().st_size // 2)
    claims.write_bytes(b"not parquet")
    png, pdf, provenance = (results / "figures" / "chen2024" / f"risk_vs_n.{ext}" for ext in ("png", "pdf", "json"))
    os.truncate(png, png.stat().st_size - 1)
    os.truncate(pdf, pdf.stat().st_size // 2)
    provenance.write_text("{")
    cells = sorted(path for path in (results / "cells").iterdir() if path != cell)
    (cells[0] / "spec.json").write_text("[1, 2]")
    data_records = (p for p in (results / "index").glob("*.json") if not (results / "cells" / p.stem).exists())
    emptied = next(p for p in data_records if p != record)
    emptied.write_text("{}")
    markers = sorted(p for p in (results / "batches").glob("train/*/*.json") if p != marker)
    unfinished = next(c for c in cells[1:] if any(c.name in m.read_text() for m in markers[2:]))
    (unfinished / "metrics.parquet").unlink()  # its batch marked done: snakemake would not redo it
    markers[0].write_text("[]")
    markers[1].write_text('{"members": [')
    undrawn = results / "figures" / "cui2024" / "F2"
    for ext in ("png", "json"):
        (undrawn.parent / f"F2.{ext}").unlink()
    report = integrity.verify(str(results))
    assert f"{undrawn}: no png or json file (run snakemake to make it)" in report.incomplete
    problems = report.problems
    assert any(f"{metrics}: unreadable Parquet" in p and p.endswith(f"; delete {cell} and its batch marker {marker}, "
                                                                  "then rerun") for p in problems)
    assert any(p.startswith(f"{unfinished}: no metrics.parquet, though its batch is marked done; delete {unfinished} "
                            "and its batch marker ") for p in problems)
    assert any(f"{record}: its spec hashes to" in p for p in problems)
    assert any(f"{emptied}: unreadable identity record" in p for p in problems)
    assert any(f"{cells[0] / 'spec.json'}: not a JSON object" in p for p in problems)
    assert f"{markers[0]}: not a JSON object; delete the marker and rerun" in problems
    assert any(f"{markers[1]}: not valid JSON" in p for p in problems)
    damaged = {tidy: "unreadable Parquet", claims: "unreadable Parquet", png: "not a complete PNG file",
               pdf: "not a complete PDF file", provenance: "not valid JSON"}
    for path, problem in damaged.items():
        assert any(f"{path}: {problem}" in p and p.endswith("run snakemake again to remake it") for p in problems)
    assert subprocess.run(**cli_command(run_copy, "verify", "--results", str(results)),
                          capture_output=True).returncode == 1


def test_a_deleted_cell_and_theory_table_are_made_again(smoke_run, run_copy):
    """A damaged cell is deleted with its batch marker (verify names the marker), a theory
    table on its own; a plain rerun makes both again, the cell bit for bit as before."""
    results = run_copy / "results"
    cell = next((results / "cells").iterdir())
    shutil.rmtree(cell)
    marker = next(p for p in (results / "batches").glob("train/*/*.json") if cell.name in p.read_text())
    assert any(f"{marker}: member {cell.name} is missing; delete the marker" in p
               for p in integrity.verify(str(results)).problems)
    marker.unlink()
    theory = next((results / "theory").glob("*/*.parquet"))
    theory.unlink()
    snakemake(run_copy, *SMOKE)
    metrics = Path("cells", cell.name, "metrics.parquet")
    assert pd.read_parquet(results / metrics).equals(pd.read_parquet(smoke_run / "results" / metrics))
    assert theory.is_file() and integrity.verify(str(results)).problems == []


def test_gc_deletes_only_what_no_plan_refers_to(run_copy):
    results = run_copy / "results"
    referenced = integrity.referenced_ids(config.read(run_copy / "config.yaml"), run_copy)
    assert integrity.garbage(str(results), referenced) == []
    stale = results / "cells" / ("f" * 16)
    shutil.copytree(next((results / "cells").iterdir()), stale)
    kept = next(path for path in (results / "cells").iterdir() if path != stale)
    abandoned, writing = kept / ".model.pt.tmp-123-0a0b0c0d", kept / ".model.pt.tmp-456-0e0f1011"
    abandoned_in_stale = stale / ".model.pt.tmp-789-12131415"  # goes with its cell, not listed apart
    for path in (abandoned, abandoned_in_stale):
        path.write_bytes(b"half a checkpoint")
    writing.write_bytes(b"a write in progress")
    an_hour_ago = time.time() - integrity.ABANDONED_WRITE_SECONDS - 1
    for path in (abandoned, abandoned_in_stale):
        os.utime(path, (an_hour_ago, an_hour_ago))
    listed = cli(run_copy, "gc")
    assert sorted(listed.stdout.split()) == sorted(str(path.relative_to(run_copy)) for path in (abandoned, stale))
    assert stale.exists() and abandoned.exists()
    cli(run_copy, "gc", "--yes")
    assert not stale.exists() and not abandoned.exists() and writing.exists()
    planned = plan.build(config.load(run_copy / "config.yaml", {"scale": "smoke", "papers": "cui2024"}, run_copy))
    assert all((results / "cells" / cell).is_dir() for cell in planned.cells)
    assert integrity.verify(str(results)).problems == []


def test_a_failing_job_writes_its_error_to_the_log_snakemake_names(run_copy):
    (run_copy / "results" / "figures" / "cui2024" / "F1.parquet").write_bytes(b"not Parquet")
    failed = snakemake(run_copy, *SMOKE, check=False)
    log = run_copy / "results" / "logs" / "draw" / "cui2024" / "F1.log"
    assert failed.returncode != 0 and f"log: {log.relative_to(run_copy)} (check log file" in failed.stderr
    assert "StoreError" in log.read_text() and "F1.parquet" in log.read_text()


def test_a_diverging_batch_names_its_cells_and_learning_rate_without_a_traceback(run_copy):
    diverging = "cui2024={scales: {smoke: {training: {lr: {full: 1e30, reduced: 1e30}}}}}"
    failed = snakemake(run_copy, "--config", "scale=smoke", "papers=cui2024", diverging, check=False)
    assert failed.returncode != 0 and "Traceback" not in failed.stderr
    assert re.search(r"iclrepro: error: \d+ of \d+ members failed:\n[0-9a-f]{16} \(isotropic d=5 .*\), log .*: "
                     r"DivergenceError: .* at learning rate 1e\+30; lower it", failed.stderr)
