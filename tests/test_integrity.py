"""Cell status as `iclrepro cells` reports it."""

from __future__ import annotations

import os

from iclrepro import integrity, store


def test_cell_status_from_files_and_log(tmp_path):
    layout = store.Layout(str(tmp_path))
    log = tmp_path / "cell.log"
    assert integrity.cell_status(layout, "a" * 16, log) == "pending"
    log.write_text("cell a: step 100/1000\n")
    assert integrity.cell_status(layout, "a" * 16, log) == "running"
    os.utime(log, (0, 0))
    assert integrity.cell_status(layout, "a" * 16, log) == "interrupted"
    log.write_text("Traceback (most recent call last):\nDivergenceError: cell a: training loss is nan\n")
    assert integrity.cell_status(layout, "a" * 16, log) == "failed"
    os.makedirs(layout.cell_dir("a" * 16))
    open(layout.cell("a" * 16), "w").close()
    assert integrity.cell_status(layout, "a" * 16, log) == "done"
