"""Content addressing, atomic writes and checked readers of the store."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
import torch

from iclrepro import store
from iclrepro.tasks import columns


def test_content_id_is_stable_across_key_order_and_processes():
    spec = {"b": [1, 2.5], "a": {"y": "text", "x": 3}}
    reordered = {"a": {"x": 3, "y": "text"}, "b": [1, 2.5]}
    assert store.content_id(spec, "f" * 16) == store.content_id(reordered, "f" * 16)
    # the canonical text is pinned: changing it would silently orphan every stored result
    text = '{"source":"ffffffffffffffff","spec":{"a":{"x":3,"y":"text"},"b":[1,2.5]}}'
    assert store.content_id(spec, "f" * 16) == hashlib.sha256(text.encode()).hexdigest()[:16]


@pytest.mark.parametrize("change", [
    lambda s: s.update(lr=0.0011), lambda s: s.update(seeds=[0, 1, 2]), lambda s: s["model"].update(H=4)])
def test_content_id_changes_with_any_value(change):
    spec = {"lr": 0.001, "seeds": [0, 1], "model": {"H": 2}}
    before = store.content_id(spec, "0" * 16)
    change(spec)
    assert store.content_id(spec, "0" * 16) != before


def test_content_id_depends_on_source_fingerprint():
    assert store.content_id({"a": 1}, "0" * 16) != store.content_id({"a": 1}, "1" * 16)


def test_training_closure_covers_its_imports_and_not_figures():
    files = {p.relative_to(store.PACKAGE_ROOT).as_posix() for p in store.source_closure("iclrepro.training.cui2024")}
    assert {"training/core.py", "models/cui2024.py", "tasks/cui2024.py", "store.py"} <= files
    assert not any(name.startswith(("figures/", "evaluation/")) for name in files)


def test_figure_closure_excludes_training():
    files = {p.relative_to(store.PACKAGE_ROOT).as_posix() for p in store.source_closure("iclrepro.figures.cui2024")}
    assert "figures/common.py" in files and not any(name.startswith("training/") for name in files)


CODE = '''"""Module doc."""
import os


def f(x):
    """Doc."""
    y = """a__
  b"""
    return ("#" + y)  # why
'''.replace("_", " ")  # the string's first row ends in two spaces


@pytest.mark.parametrize("edit", [
    lambda s: s.replace("# why", "# why not"), lambda s: s.replace("Doc.", "Doc,\n    longer."),
    lambda s: s.replace("import os\n", "import os\n# about f\n\n"), lambda s: s.replace("(x):", "(x):   "),
    lambda s: s.replace('"""Module doc."""\n', "")])
def test_comments_docstrings_and_blank_rows_are_not_code(edit):
    assert store.code_text(edit(CODE)) == store.code_text(CODE)


@pytest.mark.parametrize("edit", [
    lambda s: s.replace("import os", "import sys"), lambda s: s.replace('"#"', '"# "'),
    lambda s: s.replace("a  \n", "a  \n\n"), lambda s: s.replace("a  \n", "a\n"),
    lambda s: s.replace("    return", "    if x:\n        return"), lambda s: s.replace("# why", "; 0")])
def test_every_change_to_code_and_string_data_counts(edit):
    assert store.code_text(edit(CODE)) != store.code_text(CODE)


def forget_fingerprints():
    for cache in (store.source_closure, store.fingerprint):
        cache.cache_clear()


@pytest.fixture
def package_copy(tmp_path, monkeypatch):
    """A copy of the package that fingerprints read instead of the real one."""
    forget_fingerprints()
    monkeypatch.setattr(store, "PACKAGE_ROOT", Path(shutil.copytree(store.PACKAGE_ROOT, tmp_path / "iclrepro")))
    yield store.PACKAGE_ROOT
    forget_fingerprints()


def test_a_comment_in_every_stages_code_retrains_nothing(package_copy):
    before = store.fingerprint("iclrepro.training.cui2024")
    path = package_copy / "store.py"
    path.write_text(path.read_text().replace("\nCELL_FILES =", "\n# why these four\nCELL_FILES ="))
    forget_fingerprints()
    assert store.fingerprint("iclrepro.training.cui2024") == before
    path.write_text(path.read_text().replace('CELL_FILES = ("spec.json",', 'CELL_FILES = ("more", "spec.json",'))
    forget_fingerprints()
    assert store.fingerprint("iclrepro.training.cui2024") != before


def test_atomic_path_leaves_nothing_when_the_write_fails(tmp_path):
    target = tmp_path / "out.txt"
    written = []
    with pytest.raises(RuntimeError, match="killed"):
        with store.atomic_path(target) as tmp:
            tmp.write_text("half")
            written.append(tmp.exists())
            raise RuntimeError("killed")
    assert written == [True] and not target.exists() and not list(tmp_path.iterdir())


def test_parquet_round_trip_keeps_spec_and_id(tmp_path):
    path = tmp_path / "t.parquet"
    store.write_parquet(pa.table({"a": [1.0, 2.0]}), path, spec={"k": 1}, content="abc")
    table = store.read_parquet(path, content="abc")
    assert table.column("a").to_pylist() == [1.0, 2.0]
    assert store.parquet_spec(table, path) == {"k": 1}


def test_a_large_table_is_stored_and_read_in_row_groups_and_its_prompts_come_back_whole(tmp_path, monkeypatch):
    """Read as one row group, a paper-scale test set (278 MB as a table) took 1.28 GB; stored in
    groups of ROW_GROUP_ROWS and read group by group, its rows come back in order, and its
    prompts fill their tensors chunk by chunk, exactly, whatever the chunks' offsets."""
    import pyarrow.parquet as pq

    from iclrepro.tasks import cui2024

    monkeypatch.setattr(store, "ROW_GROUP_ROWS", 4)
    prompts = cui2024.sample(cui2024.Scenario(d=3), 5, 10, torch.Generator().manual_seed(0))
    path = tmp_path / "prompts.parquet"
    store.write_parquet(cui2024.to_table(prompts), path, spec={"k": 1}, content="abc")
    assert pq.ParquetFile(path).metadata.num_row_groups == 3
    table = store.read_parquet(path, content="abc")
    assert table.column("x").num_chunks == 3 and store.parquet_spec(table, path) == {"k": 1}
    sliced = pa.Table.from_batches([batch.slice(1) for batch in table.to_batches()])   # chunks with offsets
    for found, rows in ((table, slice(None)), (sliced, [1, 2, 3, 5, 6, 7, 9])):
        read = columns.tensors(found, {"x": (6, 3), "y": (6,), "w": (3,)})
        assert all(torch.equal(read[key], prompts[key][rows]) for key in ("x", "y", "w"))


def test_parquet_errors_name_the_file(tmp_path):
    path = tmp_path / "t.parquet"
    store.write_parquet(pa.table({"a": [1.0]}), path, spec={}, content="abc")
    with pytest.raises(store.StoreError, match="does not match"):
        store.read_parquet(path, content="other")
    with pytest.raises(store.StoreError, match="column 'b' missing"):
        store.check_columns(store.read_parquet(path), pa.schema([("b", pa.float64())]), path)
    with pytest.raises(store.StoreError, match="has type double, expected float"):
        store.check_columns(store.read_parquet(path), pa.schema([("a", pa.float32())]), path)
    os.truncate(path, path.stat().st_size // 2)
    with pytest.raises(store.StoreError, match=f"{path}: unreadable Parquet"):
        store.read_parquet(path)
    with pytest.raises(store.StoreError, match="missing"):
        store.read_parquet(tmp_path / "absent.parquet")


def test_model_file_round_trip_and_truncation(tmp_path):
    path = tmp_path / "model.pt"
    store.save_model({"w": torch.arange(3.0)}, {"paper": "x"}, path)
    state, spec = store.load_model(path)
    assert torch.equal(state["w"], torch.arange(3.0)) and spec == {"paper": "x"}
    os.truncate(path, 100)
    with pytest.raises(store.StoreError, match="unreadable model file"):
        store.load_model(path)


def test_model_file_refuses_pickled_objects(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"spec": "{}", "state": {"w": torch.zeros(1)}, "evil": object()}, path)
    with pytest.raises(store.StoreError, match="unreadable model file"):
        store.load_model(path)


def test_a_test_set_with_fewer_rows_than_its_spec_is_refused(tmp_path):
    """Every paper's stored prompt sets count their rows against the spec (chen2024's did not)."""
    from iclrepro.tasks import chen2024

    spec = {"task": {"d": 3, "s": 1, "sigma": 0.1, "n": 4}, "prompts": 5, "seed": 0}
    path = tmp_path / "test.parquet"
    chen2024.write_test_set(spec, "a" * 16, path)
    assert chen2024.read_test_set(path)[1]["x"].shape[0] == 5
    store.write_parquet(store.read_parquet(path).slice(0, 4), path, spec=spec, content="a" * 16)
    with pytest.raises(store.StoreError, match="4 rows, the spec says 5"):
        chen2024.read_test_set(path)
