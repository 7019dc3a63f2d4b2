"""The cui2024 data-generating process as settings (spec §1, §3.3-§3.5).

Kept free of torch: the planner imports it at every Snakefile parse, and on a cluster
every job parses the Snakefile again.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Scenario:
    d: int
    W: float = 1.0            # E||w||^2 outside the prior scenario
    sigma2: float = 0.0       # label-noise variance
    rho: float | None = None  # equicorrelation of x
    r: float | None = None    # radius of local examples around the query
    tau: float | None = None  # prior spread around w0
    w0_norm: float = 1.0      # ||w0|| in the prior scenario

    def __post_init__(self):
        families = [name for name in ("rho", "r", "tau") if getattr(self, name) is not None]
        if len(families) > 1:
            raise ValueError(f"a scenario sets at most one of rho, r, tau; got {families}")

    @property
    def family(self) -> str:
        for name, family in (("rho", "correlated"), ("r", "local"), ("tau", "prior")):
            if getattr(self, name) is not None:
                return family
        return "isotropic"

    def covariance(self) -> np.ndarray:
        """Covariance of x (of the query, for local examples)."""
        rho = self.rho or 0.0
        return (1 - rho) * np.eye(self.d) + rho * np.ones((self.d, self.d))

    def precision(self) -> np.ndarray:
        """Sigma^{-1}: what a correlated scenario's one-step GD preconditions with."""
        return np.linalg.inv(self.covariance())

    def prior_mean(self) -> np.ndarray:
        return np.full(self.d, self.w0_norm / math.sqrt(self.d))

    @property
    def signal(self) -> float:
        """E||w||^2 under the task prior."""
        return self.w0_norm**2 + self.tau**2 if self.family == "prior" else self.W

    def to_spec(self) -> dict:
        """The values that affect the data (W is unused under a prior, w0_norm without one)."""
        unused = {"W"} if self.family == "prior" else {"w0_norm"}
        return {key: value for key, value in asdict(self).items()
                if value is not None and key not in unused}
