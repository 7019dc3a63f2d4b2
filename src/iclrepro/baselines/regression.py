"""Linear-regression reference predictors, batched over prompts (pure torch, float64).

Shapes: x (N, D, d) context inputs, y (N, D) context labels, x_q (N, d) queries.
Every function returns predictions at the queries, shape (N,).
"""

from __future__ import annotations

import torch


def ridge_weights(x: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor:
    """argmin ||Xw - y||^2 + lam ||w||^2 per prompt; lam = 0 gives the minimum-norm solution."""
    if lam == 0:
        return (torch.linalg.pinv(x) @ y.unsqueeze(-1)).squeeze(-1)
    gram = x.transpose(-1, -2) @ x + lam * torch.eye(x.shape[-1], dtype=x.dtype)
    return torch.linalg.solve(gram, (x.transpose(-1, -2) @ y.unsqueeze(-1))).squeeze(-1)


def ols(x, y, x_q) -> torch.Tensor:
    """Minimum-norm least squares."""
    return (ridge_weights(x, y, 0.0) * x_q).sum(-1)


def one_step_gd(x, y, x_q, precondition: torch.Tensor | None = None) -> torch.Tensor:
    """One GD step from w = 0 with unit step: (1/D) sum_i y_i x_i^T P x_q (P = I by default).

    This is linear attention, the small-c limit of the +/- head pair (cui2024 spec §3.2).
    """
    if precondition is not None:
        x_q = x_q @ precondition.T
    return torch.einsum("nd,nk,nkd->n", x_q, y, x) / x.shape[1]


def posterior_mean(x, y, x_q, prior_mean: torch.Tensor, prior_var: float, noise_var: float):
    """Bayes posterior-mean predictor for w ~ N(m, prior_var I), Gaussian noise noise_var."""
    residual = y - x @ prior_mean
    w = prior_mean + ridge_weights(x, residual, noise_var / prior_var)
    return (w * x_q).sum(-1)


def fitted_scale(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """Least-squares step size eta minimising E(eta * prediction - target)^2."""
    return float((prediction * target).sum() / (prediction * prediction).sum())
