"""Cell status as `iclrepro cells` reports it; comparing two runs' results; a mistyped results
directory; `iclrepro --version`."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from conftest import as_written_on_another_node
from iclrepro import batch, cli, config, integrity, plan, provenance, store, workspace


def test_cell_status_from_files_and_log(tmp_path):
    layout = store.Layout(str(tmp_path))
    log = tmp_path / "cell.log"
    assert integrity.cell_status(layout, "a" * 16, log) == "pending"
    log.write_text("cell a: step 100/1000\n")
    assert integrity.cell_status(layout, "a" * 16, log) == "running"
    log.write_text("UserWarning: this will raise a ValueError in a future release\ncell a: step 200/1000\n")
    assert integrity.cell_status(layout, "a" * 16, log) == "running"
    os.utime(log, (0, 0))
    assert integrity.cell_status(layout, "a" * 16, log) == "interrupted"
    log.write_text("Traceback (most recent call last):\nDivergenceError: cell a: training loss is nan\n")
    assert integrity.cell_status(layout, "a" * 16, log) == "failed"
    os.makedirs(layout.cell_dir("a" * 16))
    open(layout.cell("a" * 16), "w").close()
    assert integrity.cell_status(layout, "a" * 16, log) == "done"


def test_a_fresh_log_whose_job_ended_on_this_machine_is_interrupted(tmp_path, monkeypatch):
    """A job killed outright writes no error; its log, still fresh, names a process that is gone."""
    layout, cell = store.Layout(str(tmp_path)), "a" * 16
    log, seen = Path(layout.log("train", cell)), []
    monkeypatch.setattr(plan, "run", lambda *args, **kwargs: seen.append(integrity.cell_status(layout, cell, log)))
    batch.run_member({"stage": "train", "id": cell, "data": []}, layout, threads=1)
    assert seen == ["running"]
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    log.write_text(log.read_text().replace(f"job {os.getpid()} ", f"job {ended.stdout.strip()} "))
    assert integrity.cell_status(layout, cell, log) == "interrupted"
    log.write_text(as_written_on_another_node(log.read_text()))
    assert integrity.cell_status(layout, cell, log) == "running"  # another machine's job cannot be told


@pytest.mark.parametrize("squeue, status", [
    ("echo CANCELLED", "interrupted"),
    ("echo TIMEOUT", "interrupted"),
    ("echo RUNNING", "running"),
    ("echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1", "interrupted"),   # forgotten
    ("echo 'slurm_load_jobs error: Unable to contact slurm controller' >&2; exit 1", "running"),
    (None, "running")])   # no squeue on this machine
def test_a_fresh_log_of_a_slurm_job_on_a_cluster_node_asks_squeue(tmp_path, monkeypatch, squeue, status):
    """A cell's log names its SLURM job; a job cancelled or timed out on a node is interrupted at once."""
    layout, cell = store.Layout(str(tmp_path)), "a" * 16
    monkeypatch.setattr(plan, "run", lambda *args, **kwargs: None)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    batch.run_member({"stage": "train", "id": cell, "data": []}, layout, threads=1)
    log = Path(layout.log("train", cell))
    assert log.read_text().startswith(f"iclrepro: job {os.getpid()} on {socket.gethostname()} in SLURM job 4242\n")
    log.write_text(as_written_on_another_node(log.read_text()))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if squeue is not None:
        (bin_dir / "squeue").write_text(f"#!/bin/sh\n{squeue}\n")
        (bin_dir / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    batch._slurm_job_ended.cache_clear()   # an answer is kept per job id for one `iclrepro cells`
    assert integrity.cell_status(layout, cell, log) == status


@pytest.mark.parametrize("name,text,complaint", [
    ("index/aaaaaaaaaaaaaaaa.json", '{"id": "aaaaaaaaaaaaaaaa", "spec": {}}',
     "unreadable identity record (without stage, inputs, name, source)"),
    ("index/bbbbbbbbbbbbbbbb.json", '{"id": "b", "stage": "data", "spec": {"x": NaN}, "inputs": [], "name": "n", '
                                    '"source": "s"}', "unreadable identity record"),
    ("batches/train/x/1.json", '{"members": 5}', "no list of member cell ids"),
    ("batches/train/x/2.json", '{"members": [{}]}', "no list of member cell ids"),
])
def test_verify_names_damaged_records_and_markers(tmp_path, name, text, complaint):
    path = tmp_path / name
    path.parent.mkdir(parents=True)
    path.write_text(text)
    report = integrity.verify(str(tmp_path))
    assert [problem for problem in report.problems if str(path) in problem and complaint in problem], report.problems


def test_verify_names_a_table_the_pipeline_did_not_write(tmp_path):
    """Predictions written over a figure's tidy table read as Parquet, but carry no node id."""
    tidy = tmp_path / "figures" / "cui2024" / "F4.parquet"
    tidy.parent.mkdir(parents=True)
    frame = pa.table({"prediction": [0.5]})
    store.write_parquet(frame, tidy, spec={"cell": {}})
    store.write_parquet(frame, tidy.with_name("F3.parquet"), spec={"figure": "F3"}, content="a" * 16)
    problems = integrity.verify(str(tmp_path)).problems
    assert [p for p in problems if "F4.parquet: no node id in its metadata" in p] and not [
        p for p in problems if "F3.parquet" in p]


def test_verify_names_another_figures_or_papers_table_in_a_tables_place(tmp_path):
    """Copied over another file, a figure's tidy table or a paper's claims file still carries an
    id; its spec names its own figure, and its rows their own paper."""
    layout = store.Layout(str(tmp_path))
    for name in ("F3", "F4"):
        Path(layout.tidy("cui2024", name)).parent.mkdir(parents=True, exist_ok=True)
        store.write_parquet(pa.table({"D": [1]}), layout.tidy("cui2024", name), spec={"figure": "F3"}, content="a" * 16)
    for paper in ("cui2024", "zhang2026"):
        Path(layout.claims(paper)).parent.mkdir(parents=True, exist_ok=True)
        store.write_parquet(pa.table({"paper": ["cui2024"]}), layout.claims(paper), spec={}, content="b" * 16)
    problems = integrity.verify(str(tmp_path)).problems
    assert len(problems) == 2, problems
    assert "zhang2026.parquet: verdicts of cui2024, not of zhang2026" in problems[0]   # named in path order
    assert "F4.parquet: the tidy data of figure F3, not of F4" in problems[1]


def test_verify_says_how_a_rerun_writes_a_lost_identity_record_again(tmp_path):
    """Without rewriting the entry: a batch finds its whole cells and writes their records
    (test_batch), a data set is made again by the next job that reads it."""
    for cell in ("done", "unfinished"):
        (tmp_path / "cells" / cell).mkdir(parents=True)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "set.parquet").write_bytes(b"")
    marker = tmp_path / "batches" / "train" / "p" / "b.json"
    marker.parent.mkdir(parents=True)
    marker.write_text('{"members": ["done"]}')
    problems = integrity.verify(str(tmp_path)).problems
    missing = {name: f"{tmp_path / folder / name}: no identity record in {tmp_path}/index/{name.split('.')[0]}.json; "
               for folder, name in (("cells", "done"), ("cells", "unfinished"), ("data", "set.parquet"))}
    assert missing["done"] + f"delete its batch marker {marker} and rerun: the batch finds the cell whole and " \
        "writes its record" in problems
    assert missing["unfinished"] + "rerun: its batch, not yet marked done, writes the record" in problems
    assert missing["set.parquet"] + "delete the data set and rerun: the next job that reads it makes it again, " \
        "with its record" in problems


def test_result_differences_names_changed_and_missing_results(tmp_path):
    expected, found = tmp_path / "expected", tmp_path / "found"
    for name, frame in (("cells/a/metrics.parquet", pd.DataFrame({"mse": [0.5, 0.25]})),
                        ("claims/p.parquet", pd.DataFrame({"claim_id": ["c"], "verdict": ["passes"]}))):
        (expected / name).parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(expected / name)
    shutil.copytree(expected, found)
    assert integrity.result_differences(expected, found) == []
    pd.DataFrame({"mse": [0.5, 0.25 + 1e-12]}).to_parquet(found / "cells/a/metrics.parquet")
    (found / "claims/p.parquet").unlink()
    assert integrity.result_differences(expected, found) == [
        f"{found}/cells/a/metrics.parquet: differs from {expected}/cells/a/metrics.parquet",
        f"{found}/claims/p.parquet: missing"]


@pytest.mark.parametrize("command", ["cells", "verify", "gc"])
def test_a_mistyped_results_directory_is_an_error_not_an_empty_store(command, tmp_path, capsys):
    assert cli.main([command, "--results", str(tmp_path / "reslts")]) == 2
    assert "reslts: no results directory here" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["cells", "verify", "gc"])
def test_a_directory_that_holds_no_store_is_no_results_directory(command, tmp_path, capsys):
    cell = tmp_path / "results" / "cells" / ("a" * 16)
    cell.mkdir(parents=True)
    assert cli.main([command, "--results", str(cell.parent)]) == 2
    assert f"{cell.parent}: not a results directory, as it holds none of index/, " in capsys.readouterr().err


MORE_SEEDS = "cui2024={scales: {smoke: {training: {seeds: 3}}}}"


def test_cells_and_gc_name_the_config_as_snakemake_does(root, tmp_path, capsys, monkeypatch):
    """`iclrepro cells` given a run's `--configfile config.yaml more.yaml`, `--configfile more.yaml`
    (snakemake reads the workflow's config.yaml first) or `--config KEY=VALUE` lists that run's
    cells; `gc` keeps what each configuration it is given plans."""
    monkeypatch.chdir(root)
    (tmp_path / "more.yaml").write_text(MORE_SEEDS.replace("=", ": ", 1) + "\n")
    default, more = [str(root / "config.yaml")], [str(root / "config.yaml"), str(tmp_path / "more.yaml")]
    smoke_cui2024 = {"scale": "smoke", "papers": "cui2024"}
    planned = [set(plan.build(config.load(files, smoke_cui2024, root)).cells) for files in (default, more)]
    assert planned[0] and planned[1] and not planned[0] & planned[1]

    def listed(command, *options):
        assert cli.main([command, *options, "--results", str(tmp_path / "results")]) == 0
        return {Path(line.split("\t")[0]).name for line in capsys.readouterr().out.splitlines()}

    (tmp_path / "results").mkdir()
    cells_of = ("--scale", "smoke", "--papers", "cui2024")
    assert listed("cells", "--configfile", *more, *cells_of) == planned[1]
    assert listed("cells", "--configfile", *default, "--config", MORE_SEEDS, *cells_of) == planned[1]
    assert listed("cells", "--configfile", more[1], *cells_of) == planned[1]

    stale = "f" * 16
    for cell in planned[0] | planned[1] | {stale}:
        (tmp_path / "results" / "cells" / cell).mkdir(parents=True)
    assert listed("gc") == planned[1] | {stale}
    assert listed("gc", "--configfile", *more) == planned[0] | {stale}
    assert listed("gc", "--configfile", more[1]) == planned[0] | {stale}
    assert listed("gc", "--config", MORE_SEEDS) == planned[0] | {stale}
    assert listed("gc", "--configfile", *default, "--configfile", *more) == {stale}
    assert cli.main(["gc", "--config", "papers=cui2024", "--results", str(tmp_path / "results")]) == 0
    assert "--config papers does not narrow it" in capsys.readouterr().err


def test_cells_warns_of_a_setting_the_chosen_scale_overrides(root, tmp_path, capsys, monkeypatch):
    """As snakemake does: listed under the setting, the cells would not be the ones it meant."""
    monkeypatch.chdir(root)
    (tmp_path / "results").mkdir()
    options = ["--scale", "smoke", "--papers", "cui2024", "--results", str(tmp_path / "results")]
    assert cli.main(["cells", *options, "--config", "cui2024={training: {seeds: 3}}"]) == 0
    assert ("iclrepro: warning: config cui2024.training.seeds (from --config) changes nothing at scale smoke"
            in capsys.readouterr().err)
    assert cli.main(["cells", *options, "--config", MORE_SEEDS]) == 0
    assert "warning" not in capsys.readouterr().err


def test_cells_of_a_paper_the_config_leaves_out_is_an_error(root, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(root)
    (tmp_path / "results").mkdir()
    options = ["--scale", "smoke", "--papers", "cui2024", "--results", str(tmp_path / "results")]
    assert cli.main(["cells", *options, "--paper", "fu2023"]) == 2
    assert "--paper fu2023: not among the config's papers (cui2024)" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["cells", "gc"])
def test_a_config_yaml_outside_a_workflow_directory_is_named(command, tmp_path, capsys):
    (tmp_path / "config.yaml").write_text("scale: smoke\n")
    results = tmp_path / "results"
    results.mkdir()
    assert cli.main([command, "--configfile", str(tmp_path / "config.yaml"), "--results", str(results)]) == 2
    assert f"{tmp_path} is not a workflow directory" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["cells", "gc"])
def test_planning_from_other_package_code_than_the_workflows_is_refused(command, root, tmp_path, capsys):
    """Ids hash the code: from an edited copy of it, gc would take every stored cell as unused
    (a comment changes no id, so it is no reason to refuse)."""
    workflow = workspace.copy_workflow(root, tmp_path / "workflow")
    (tmp_path / "results").mkdir()
    options = ["--configfile", str(workflow / "config.yaml"), "--results", str(tmp_path / "results")]
    with open(workflow / "src" / "iclrepro" / "training" / "core.py", "a") as source:
        source.write("# a local experiment\n")
    assert cli.main([command, *options]) == 0
    capsys.readouterr()
    with open(workflow / "src" / "iclrepro" / "training" / "core.py", "a") as source:
        source.write("LOCAL_EXPERIMENT = True\n")
    assert cli.main([command, *options]) == 2
    jobs_package = workflow / "src" / "iclrepro"
    assert f"the workflow's jobs run the one in {jobs_package}, whose code differs" in capsys.readouterr().err


@pytest.mark.parametrize("dirty, checkout", [(False, "commit 3a69bbb"), (True, "commit 3a69bbb, with local changes"),
                                             (None, "not a git checkout")])
def test_version_names_the_package_its_checkout_and_the_stack(dirty, checkout, capsys, monkeypatch):
    asked = []
    monkeypatch.setattr(provenance, "git_state",
                        lambda directory: asked.append(directory) or {"commit": "3a69bbb", "dirty": dirty})
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    first, stack = capsys.readouterr().out.splitlines()
    assert first == f"iclrepro {importlib.metadata.version('iclrepro')} ({checkout})"
    assert f"torch {importlib.metadata.version('torch')}" in stack
    assert asked == [Path(cli.__file__).parent]   # the package's checkout, wherever the command runs


def test_claims_table_without_its_outputs_leaves_the_claims_alone(tmp_path, capsys):
    claims = [tmp_path / f"{paper}.parquet" for paper in ("a", "b", "c")]
    for path in claims:
        pd.DataFrame({"claim_id": ["x"]}).to_parquet(path)
    before = [path.read_bytes() for path in claims]
    assert cli.main(["claims-table", "--scale", "quick", *map(str, claims)]) == 2
    assert "name the two tables first" in capsys.readouterr().err
    assert [path.read_bytes() for path in claims] == before


@pytest.mark.parametrize("cell,out,complaint", [
    ("cells/c", "data/p.parquet", "is the prompt set itself"),
    ("cells/c", "cells/c/metrics.parquet", "among entries it would overwrite"),
    ("../copied_cell", "figures/F4.parquet", "among entries it would overwrite"),   # a cell outside the store
    ("cells/c", "cells", "is not a .parquet file"),
    ("cells/none", "predictions.parquet", "is not a cell directory"),
    ("data", "predictions.parquet", "names no known paper"),
])
def test_predict_refuses_to_write_over_the_store(tmp_path, capsys, cell, out, complaint):
    results = tmp_path / "results"
    (results / "cells" / "c").mkdir(parents=True)
    (results / "cells" / "c" / "spec.json").write_text('{"spec": {"paper": "fu2023"}}')
    (results / "data").mkdir()
    (results / "data" / "spec.json").write_text('{"not": "a cell"}')
    (tmp_path / "copied_cell").mkdir()
    (tmp_path / "copied_cell" / "spec.json").write_text('{"spec": {"paper": "fu2023"}}')
    assert cli.main(["predict", str(results / cell), str(results / "data" / "p.parquet"), str(results / out)]) == 2
    assert complaint in capsys.readouterr().err


def test_bench_kills_is_a_count(capsys):
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["bench", "--kills", "-3"])
    assert "'-3' is not a whole number >= 0" in capsys.readouterr().err


def test_bench_says_when_results_hold_no_job_records(tmp_path, capsys, monkeypatch):
    from iclrepro import bench

    monkeypatch.setattr(bench, "run", lambda *args: {})
    assert cli.main(["bench", "--results", str(tmp_path / "nowhere"), "--out", str(tmp_path / "b.json")]) == 0
    assert "holds no job records" in capsys.readouterr().err
