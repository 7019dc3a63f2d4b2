"""The results directory keeps itself out of git, wherever `results=` puts it."""

from __future__ import annotations

import subprocess

from iclrepro import store, workspace


def test_a_results_directory_anywhere_is_ignored_by_git(tmp_path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    workspace.ignore_in_git(tmp_path / "runs" / "first")
    store.write_json({"a": 1}, tmp_path / "runs" / "first" / "index" / "x.json")
    (tmp_path / "notes.md").write_text("tracked")
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=tmp_path,
                            capture_output=True, text=True, check=True).stdout
    assert status.splitlines() == ["?? notes.md"]


def test_an_existing_ignore_file_is_left_as_it_is(tmp_path):
    (tmp_path / ".gitignore").write_text("*.pt\n")
    workspace.ignore_in_git(tmp_path)
    assert (tmp_path / ".gitignore").read_text() == "*.pt\n"
