"""Snakemake script: run one batch of training cells (`snakemake` is injected).

A script rather than a shell command because a batch's member list can exceed the
command line's length limit.
"""

import sys

from iclrepro import batch

try:
    batch.run(snakemake.params.members, snakemake.output[0], snakemake.params.results,  # noqa: F821
              threads=snakemake.threads, log=snakemake.log[0])  # noqa: F821
except batch.BatchError as err:  # each member's traceback is in its own log: the message is all to show
    sys.exit(f"iclrepro: error: {err}")
