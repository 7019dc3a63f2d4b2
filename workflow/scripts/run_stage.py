"""Snakemake script: run one planned node (`snakemake` is injected), its output in the log.

A script rather than a shell command because a node can exceed the command line's
length limit (a figure over thousands of cells lists them all).
"""

import contextlib
import traceback

from iclrepro import plan

with open(snakemake.log[0], "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):  # noqa: F821
    try:
        plan.run(snakemake.params.node, snakemake.params.results, **snakemake.params.arguments)  # noqa: F821
    except BaseException:
        traceback.print_exc()   # into the log, which Snakemake points to; Python's own print comes after the redirect
        raise
