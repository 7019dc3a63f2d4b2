"""Choosing a hyperparameter on held-out prompts, shared by every baseline's grid."""

from __future__ import annotations

import torch

from iclrepro.errors import IclreproError


class TuningError(IclreproError, ValueError):
    """No setting of a hyperparameter grid has a finite risk on the held-out prompts."""


def lowest(risks: torch.Tensor, what: str) -> int:
    """Flat index of the lowest held-out risk. A non-finite risk counts as infinite: a setting
    whose iterates overflow gives NaN (inf - inf), and torch's argmin would pick the NaN."""
    if not torch.isfinite(risks).any():
        raise TuningError(f"{what}: every setting of the grid diverged on the held-out prompts (risk NaN "
                          "or infinite); change the grid in config.yaml, or check the data for NaN")
    return int(torch.nan_to_num(risks, nan=float("inf")).argmin())
