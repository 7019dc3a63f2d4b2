"""The deora2023 tokenized-mixture model as settings (spec §2).

Kept free of torch: the planner imports it at every Snakefile parse.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

NOISES = ("gauss", "gauss_orth", "none")


@dataclass(frozen=True)
class Mixture:
    """T tokens of dimension d; a fraction zeta carries mu_y, the rest one of M label-free nu_j.

    Every mean has norm S; noise is N(0, sigma^2 I_d), optionally projected off the means.
    """

    T: int
    d: int
    M: int
    zeta: float
    S: float = 1.0
    sigma: float = 0.1
    noise: str = "gauss"

    def __post_init__(self):
        if self.noise not in NOISES:
            raise ValueError(f"unknown noise {self.noise!r} (one of {', '.join(NOISES)})")
        if min(self.T, self.d, self.M) < 1:
            raise ValueError(f"T, d and M must be positive, got T={self.T}, d={self.d}, M={self.M}")
        if self.M + 2 > self.d:
            raise ValueError(f"the 2 + M = {self.M + 2} orthogonal means do not fit in d = {self.d}")
        if not 0 < self.zeta <= 1:
            raise ValueError(f"zeta = {self.zeta} must lie in (0, 1]")

    @property
    def relevant(self) -> int:
        """Number of label-carrying tokens per sequence, ceil(zeta T)."""
        return math.ceil(round(self.zeta * self.T, 9))  # round: 0.1 * 30 is 3.0000000000000004

    def to_spec(self) -> dict:
        return asdict(self)
