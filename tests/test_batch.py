"""Batches: cells already done are skipped, a failing cell does not stop the others,
and the data sets the cells need are made on demand."""

from __future__ import annotations

import json

import pytest

from iclrepro import batch, store


def data_payload(node_id: str) -> dict:
    spec = {"paper": "cui2024", "scenario": {"d": 2, "W": 1.0, "sigma2": 0.0}, "D": 3, "prompts": 20, "seed": 1}
    return {"stage": "data", "paper": "cui2024", "name": None, "id": node_id, "spec": spec, "inputs": [],
            "source": "0" * 16, "data": []}


def cell_payload(node_id: str, lr: float) -> dict:
    data = data_payload("d" * 16)
    spec = {"paper": "cui2024", "scenario": data["spec"]["scenario"], "D": 3,
            "model": {"param": "reduced", "H": 1, "init_std": 0.01, "init": "identity", "identity_eps": 0.05},
            "seeds": [0], "test": data["id"], "device": "cpu",
            "training": {"batch": 8, "optimisation": {"steps": 3, "lr": lr, "decay_fraction": 0.0}}}
    return {"stage": "train", "paper": "cui2024", "name": None, "id": node_id, "spec": spec,
            "inputs": [data["id"]], "source": "0" * 16, "data": [data]}


def test_failed_cell_is_named_and_the_rest_is_kept(tmp_path):
    results, marker, log = str(tmp_path / "results"), tmp_path / "marker.json", tmp_path / "batch.log"
    layout = store.Layout(results)
    good, bad = cell_payload("a" * 16, 0.01), cell_payload("b" * 16, -1.0)
    settings = "isotropic d=2 sigma2=0 D=3 reduced H=1 init=identity seeds=1"
    failure = rf"1 of 2 members failed:\n{'b' * 16} \({settings}\), log .*Invalid learning rate"
    with pytest.raises(batch.BatchError, match=failure):
        batch.run([bad, good], str(marker), results, log=str(log))
    started, failed, *_ = log.read_text().splitlines()
    assert started == f"{'b' * 16} ({settings}): started"
    assert failed.startswith(f"{'b' * 16}: FAILED (")
    assert store.read_parquet(layout.data("d" * 16), content="d" * 16).num_rows == 20  # made on demand
    assert (tmp_path / "results" / "cells" / ("a" * 16) / "metrics.parquet").is_file() and not marker.exists()
    assert "Traceback" in open(layout.log("train", "b" * 16)).read()

    batch.run([cell_payload("b" * 16, 0.01), good], str(marker), results, log=str(log))
    assert json.loads(marker.read_text())["members"] == ["b" * 16, "a" * 16]
    assert f"{'a' * 16}: already done" in log.read_text()


def test_the_batch_log_names_a_member_while_it_trains(tmp_path, monkeypatch):
    """A job killed outright leaves a batch log (the one Snakemake names) that says which cell it was on."""
    log, seen = tmp_path / "batch.log", []
    monkeypatch.setattr(batch, "run_member", lambda payload, layout, threads: seen.append(log.read_text()))
    batch.run([cell_payload("a" * 16, 0.01)], str(tmp_path / "marker.json"), str(tmp_path / "results"), log=str(log))
    assert seen == [f"{'a' * 16} (isotropic d=2 sigma2=0 D=3 reduced H=1 init=identity seeds=1): started\n"]


def test_a_damaged_done_cell_is_trained_again_and_a_whole_one_regains_its_record(tmp_path):
    results, marker, log = str(tmp_path / "results"), tmp_path / "marker.json", tmp_path / "batch.log"
    layout = store.Layout(results)
    damaged, whole = cell_payload("a" * 16, 0.01), cell_payload("b" * 16, 0.01)
    batch.run([damaged, whole], str(marker), results, log=str(log))
    trained = open(layout.cell("a" * 16, "model.pt"), "rb").read()
    with open(layout.cell("a" * 16, "model.pt"), "r+b") as handle:
        handle.truncate(100)
    (tmp_path / "results" / "index" / f"{'b' * 16}.json").unlink()
    marker.unlink()   # what verify asks, so that the batch runs again

    batch.run([damaged, whole], str(marker), results, log=str(log))
    lines = log.read_text().splitlines()
    assert lines[0].startswith(f"{'a' * 16}: damaged ({layout.cell('a' * 16, 'model.pt')}: unreadable model file")
    assert lines[-1] == f"{'b' * 16}: already done"
    assert open(layout.cell("a" * 16, "model.pt"), "rb").read() == trained   # trained again, to the same weights
    assert store.read_json(layout.index("b" * 16)) == whole
    store.check_cell(layout.cell_dir("b" * 16), "b" * 16, {**whole["spec"], "seeds": (0,)})   # a tuple, as JSON a list


def test_a_stage_that_meets_a_damaged_file_points_to_verify(tmp_path):
    from iclrepro import plan

    results = tmp_path / "results"
    payload = cell_payload("a" * 16, 0.01)
    (results / "data").mkdir(parents=True)
    (results / "data" / f"{'d' * 16}.parquet").write_bytes(b"not parquet")   # its test set, damaged
    with pytest.raises(store.StoreError, match=r"unreadable Parquet .*`iclrepro verify` names each damaged"):
        plan.run(payload, str(results), **batch.member_arguments(payload, store.Layout(str(results)), 1))
