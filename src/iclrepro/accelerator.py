"""Where a job computes: the torch device of the config's `accelerator` (cpu or cuda).

Kept apart from the training code so that evaluation jobs can use it without importing
Lightning.
"""

from __future__ import annotations

import torch

from iclrepro.errors import IclreproError


class AcceleratorError(IclreproError, RuntimeError):
    """The configured accelerator cannot run on the machine of the job."""


def device_of(accelerator: str) -> torch.device:
    """The torch device of an accelerator. Checked in the job, not when planning: on a
    cluster the plan is made on a login node without a GPU."""
    if accelerator == "cpu":  # the config schema allows cpu and cuda
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise AcceleratorError(
            f"accelerator {accelerator!r} (the config's, or iclrepro bench --accelerator), but torch "
            f"{torch.__version__} finds no CUDA device here: run on a GPU machine with a CUDA build of torch, "
            "or choose accelerator cpu")
    return torch.device("cuda")
