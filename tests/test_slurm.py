"""The SLURM profile against a real single-node SLURM cluster on this machine.

tests/slurm/start_cluster.sh installs Debian's slurm-wlm and munge when missing, writes
a slurm.conf for this host and starts the daemons. The smoke scale of every implemented
paper then runs through `--profile profiles/slurm`; its jobs must be real SLURM jobs, and
every cell's metrics and every claim verdict must equal those of the local run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, SMOKE, as_written_on_another_node, copy_workflow, snakemake
from iclrepro import batch, integrity

pytestmark = pytest.mark.e2e

START = Path(__file__).parent / "slurm" / "start_cluster.sh"
FOREIGN_CONFIG = 4  # start_cluster.sh's exit status when /etc/slurm/slurm.conf is another installation's
PROFILE = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
# On a 2-core test node: look at job states often (the plugin waits 40 s by default),
# and give each cell batch its own SLURM job so that both cores are used (the option
# replaces the profile's group-components, so the profile's other values are passed on).
# The profile's `cores` is passed over the helper's --cores 2: a group job asks SLURM for
# as many cores as its members could use at once, up to --cores, and a two-core group job
# would run its members one at a time on one core while no other job could start beside it.
# successful jobs' logs are kept (the plugin deletes them by default) to check one per job
GROUP_COMPONENTS = {**PROFILE["group-components"], "cells": 1}
TEST_SETTINGS = ("--cores", str(PROFILE["cores"]), "--slurm-no-account",
                 "--slurm-init-seconds-before-status-checks", "2", "--slurm-keep-successful-logs",
                 "--group-components", *(f"{group}={n}" for group, n in GROUP_COMPONENTS.items()))


def why_no_slurm() -> str | None:
    if os.geteuid() != 0:
        return "installing and starting SLURM needs root"
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        return "SLURM is not installed and there is no apt-get to install it"
    return None


# session-scoped like smoke_run, so that it starts (or skips) before the smoke run is made
@pytest.fixture(scope="session")
def slurm_cluster():
    reason = why_no_slurm()
    if reason:
        pytest.skip(reason)
    started = subprocess.run(["bash", str(START)], capture_output=True, text=True, timeout=900)
    if started.returncode == FOREIGN_CONFIG:
        pytest.skip(started.stderr.strip())
    assert started.returncode == 0, f"SLURM did not start:\n{started.stdout}\n{started.stderr}"


def test_smoke_of_every_paper_through_slurm_equals_the_local_run(slurm_cluster, smoke_run, tmp_path):
    workdir = copy_workflow(tmp_path / "slurm")
    run = snakemake(workdir, "--profile", "profiles/slurm", *SMOKE, *TEST_SETTINGS)

    job_ids = re.findall(r"submitted with SLURM jobid (\d+)", run.stdout + run.stderr)
    assert job_ids, "no job was submitted to SLURM"
    for job_id in job_ids:  # each is a job SLURM knows and ran to completion
        state = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
        assert "JobState=COMPLETED" in state, state
    slurm_logs = workdir / ".snakemake" / "slurm_logs"
    assert len(list(slurm_logs.rglob("*.log"))) >= len(job_ids)
    # the figures are drawn in several jobs side by side, not all in one job in turn
    assert len(list(slurm_logs.glob("group_figures*/*.log"))) > 1

    # a cell's log names the SLURM job it ran in, and squeue no longer lists that job as
    # pending or running, as `iclrepro cells` asks it for a log written on another node
    cell_log = next((workdir / "results" / "logs" / "train").glob("*.log")).read_text()
    assert batch.JOB_LINE.match(cell_log).group(3) in job_ids, cell_log.splitlines()[0]
    assert batch.job_gone(as_written_on_another_node(cell_log))

    assert integrity.result_differences(smoke_run / "results", workdir / "results") == []
