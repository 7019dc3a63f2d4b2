"""Layers with a leading seed axis S: one module holds S independent copies.

Training a cell's seeds as one ensemble (training/core.py) needs every parameter to carry
the seed axis. These layers keep it: inputs are (S, ..., in), weights (S, in, out), and
seed s's slice computes exactly what a single nn.Linear / nn.LayerNorm would.
"""

from __future__ import annotations

import torch
from torch import nn


class Linear(nn.Module):
    """x (S, ..., n_in) -> (S, ..., n_out), weights N(0, init_std^2), zero bias (GPT-2's init)."""

    def __init__(self, seeds: int, n_in: int, n_out: int, init_std: float = 0.02, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(init_std * torch.randn(seeds, n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(seeds, 1, n_out)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1, x.shape[-1])                          # (S, M, n_in)
        out = torch.bmm(flat, self.weight) if self.bias is None else torch.baddbmm(self.bias, flat, self.weight)
        return out.reshape(*x.shape[:-1], out.shape[-1])


class LayerNorm(nn.Module):
    """LayerNorm over the last axis with a per-seed gain and bias: (S, ..., D)."""

    def __init__(self, seeds: int, width: int):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(seeds, width))
        self.bias = nn.Parameter(torch.zeros(seeds, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
        normed = nn.functional.layer_norm(x, x.shape[-1:])
        return normed * self.gain.reshape(shape) + self.bias.reshape(shape)
