"""The zhang2026 prompt distribution as settings (spec §1.1, E5).

Kept free of torch: the planner imports it at every Snakefile parse, and on a cluster
every job parses the Snakefile again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

FAMILIES = ("gaussian", "sphere", "mixture")


@dataclass(frozen=True)
class Distribution:
    d: int
    N: int
    x: str = "gaussian"
    kappa: float = 1.0
    scale: float = 1.0
    margin_gap: float = 0.0
    w0_norm: float = 0.0
    mixture_mean: float = 2.0

    def __post_init__(self):
        if self.x not in FAMILIES:
            raise ValueError(f"unknown x distribution {self.x!r} (one of {', '.join(FAMILIES)})")
        if self.d < 1 or self.N < 1:
            raise ValueError(f"d and N must be positive, got d={self.d}, N={self.N}")

    def variances(self) -> np.ndarray:
        """Diagonal of Sigma: kappa^{(i-1)/(d-1)}, i = 1..d (spec E5 b)."""
        return self.kappa ** (np.arange(self.d, dtype=np.float64) / max(self.d - 1, 1))

    def to_spec(self) -> dict:
        return asdict(self)
