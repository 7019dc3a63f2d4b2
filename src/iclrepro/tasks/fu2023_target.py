"""Target names of fu2023 (spec §1.4), torch-free so that planning can check them."""

from __future__ import annotations

import re
from dataclasses import dataclass

NAME = re.compile(r"^(key_poly|qk_poly|qk_He|sum_poly)_([1-9][0-9]*)$|^(qk_cos)$")


@dataclass(frozen=True)
class Target:
    kind: str
    p: int = 0   # the degree, the target's complexity knob (0 for qk_cos)

    @classmethod
    def parse(cls, name: str) -> "Target":
        """'qk_He_4' -> Target('qk_He', 4); raises ValueError on an unknown name."""
        match = NAME.match(name)
        if not match:
            raise ValueError(f"unknown target {name!r} (key_poly_p, qk_poly_p, qk_He_p, qk_cos, sum_poly_p)")
        return cls(match[3]) if match[3] else cls(match[1], int(match[2]))
