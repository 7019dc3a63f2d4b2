"""Named random streams of a seed (no hidden global RNG).

A stream's seed is a hash of the seed and the stream's purpose (data, init, features,
...), so a new purpose never shifts another stream, and any stage can rebuild a stream:
evaluation redraws fu2023's random features without importing training (which imports
Lightning, seconds per job, and would tie evaluation ids to the training code).
"""

from __future__ import annotations

import hashlib

import torch


def stream_seed(seed: int | str, purpose: str) -> int:
    """Seed of the stream `purpose` of `seed` (a cell seed, or a namespaced one such as 'deora2023/0')."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{purpose}".encode()).digest()[:8], "little") >> 1


def generator(seed: int | str, purpose: str, device="cpu") -> torch.Generator:
    """A generator on the stream `purpose` of `seed`."""
    return torch.Generator(device=device).manual_seed(stream_seed(seed, purpose))


def generators(seeds: list[int], purpose: str, device="cpu") -> list[torch.Generator]:
    """One generator per seed, each on its stream `purpose`."""
    return [generator(seed, purpose, device) for seed in seeds]
