"""Train a batch of cells in one process (torch and Lightning are imported once).

Cells already done (their files whole) are skipped, so a rerun after a kill or a failure
finishes only what is missing, and a new member in a bucket costs only its own work. Each member
writes its own log (results/logs/<stage>/<id>.log); the batch's log gains a line as each
member starts and ends, so the log Snakemake names says which cell a killed job was on. A
member that fails does not stop the others; the batch fails at the end, naming every
failed member, its settings and its error, and its marker (the Snakemake output) is
written only when every member is done.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import socket
import subprocess
import time
import traceback
from pathlib import Path
from typing import Callable

from iclrepro import plan, store
from iclrepro.errors import IclreproError


class BatchError(IclreproError):
    """Some members of a batch failed; the message names them and their logs."""


def member_arguments(payload: dict, layout: store.Layout, threads: int) -> dict:
    """Keyword arguments of the cell's train function (see iclrepro.papers.PaperStages)."""
    return {"data": [layout.data(data["id"]) for data in payload["data"]],
            "out_dir": layout.cell_dir(payload["id"]), "threads": threads}


# A member log's first line: the process, its machine and, under SLURM, the SLURM job
JOB_LINE = re.compile(r"iclrepro: job (\d+) on (\S+)(?: in SLURM job (\d+))?\n")

# The states of a job that still holds, or waits for, its allocation. An ended job
# (COMPLETED, CANCELLED, TIMEOUT, ...) squeue leaves out by default, and once MinJobAge has
# passed it no longer knows its id at all.
SLURM_ACTIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "RESIZING",
                       "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SIGNALING", "STAGE_OUT"}


def job_line() -> str:
    slurm_job = os.environ.get("SLURM_JOB_ID")
    in_slurm = f" in SLURM job {slurm_job}" if slurm_job else ""
    return f"iclrepro: job {os.getpid()} on {socket.gethostname()}{in_slurm}"


def job_gone(log_text: str) -> bool:
    """Whether the job a member's log names has ended (killed, as it wrote no error): a
    process on this machine, or a SLURM job on a cluster node that squeue no longer lists as
    pending or running. A job on another machine outside SLURM, or where squeue does not
    answer, cannot be told."""
    job = JOB_LINE.match(log_text)
    if job is None:
        return False
    if job.group(2) == socket.gethostname():
        return _process_gone(int(job.group(1)))
    return job.group(3) is not None and _slurm_job_ended(job.group(3))


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, under another user
        return False
    return False


@functools.cache  # the members of a batch share its job: one squeue each
def _slurm_job_ended(job_id: str) -> bool:
    try:
        found = subprocess.run(["squeue", "--noheader", "--jobs", job_id, "--format", "%T"],
                               capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):   # no squeue here, or a controller that does not answer
        return False
    if found.returncode != 0:   # a forgotten job's id is invalid to it; any other error tells nothing
        return "Invalid job id" in found.stderr
    states = set(found.stdout.split())
    return not states & SLURM_ACTIVE_STATES


def run_member(payload: dict, layout: store.Layout, threads: int) -> str | None:
    """Run one member with its output captured in its log; return its error or None."""
    log = Path(layout.log(payload["stage"], payload["id"]))
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as handle, contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
        print(job_line(), flush=True)  # read by job_gone
        try:
            plan.run(payload, layout.root, **member_arguments(payload, layout, threads))
        except Exception as err:  # noqa: BLE001 - reported with its traceback, the batch goes on
            traceback.print_exc(file=handle)
            return f"{type(err).__name__}: {err}"
    return None


def _line_writer(log: str | None) -> Callable[[str], None]:
    """Append a line to the batch log at once (nothing to write without one)."""
    if log is None:
        return lambda line: None
    path = Path(log)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")

    def write(line: str) -> None:
        with path.open("a") as handle:
            handle.write(line + "\n")
    return write


def is_done(payload: dict, layout: store.Layout, write: Callable[[str], None]) -> bool:
    """A member whose stored cell is whole is done, and gets its identity record again (in
    case it was lost). A damaged one loses its done marker, to be trained again."""
    done_marker = Path(layout.cell(payload["id"]))
    if not done_marker.is_file():
        return False
    try:
        store.check_cell(done_marker.parent, payload["id"], payload["spec"])
    except store.StoreError as err:
        write(f"{payload['id']}: damaged ({err}); training it again")
        done_marker.unlink()
        return False
    store.write_json(payload, layout.index(payload["id"]))
    return True


def run(members: list[dict], marker: str, results: str, threads: int = 1, log: str | None = None) -> None:
    """Run every member that is not done, then write the batch marker."""
    layout, write = store.Layout(results), _line_writer(log)
    summary, failed = [], []
    for payload in members:
        if is_done(payload, layout, write):
            summary.append(f"{payload['id']}: already done")
            write(summary[-1])
            continue
        named = f"{payload['id']} ({plan.describe(payload['paper'], payload['spec'])})"  # as `iclrepro cells` shows it
        write(f"{named}: started")
        started = time.monotonic()
        error = run_member(payload, layout, threads)
        status = f"FAILED ({error})" if error else f"done in {time.monotonic() - started:.1f} s"
        summary.append(f"{payload['id']}: {status}")
        write(summary[-1])
        if error:
            failed.append(f"{named}, log {layout.log(payload['stage'], payload['id'])}: {error}")
    if failed:
        raise BatchError(f"{len(failed)} of {len(members)} members failed:\n" + "\n".join(failed))
    store.write_json({"members": [payload["id"] for payload in members], "log": summary}, marker)
