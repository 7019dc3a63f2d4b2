"""Linear-regression reference predictors, batched over prompts (pure torch, float64).

Shapes: x (N, D, d) context inputs, y (N, D) context labels, x_q (N, d) queries.
The predictors return predictions at the queries, shape (N,); chen2024's iterative estimators
(below) return weights or query errors.
"""

from __future__ import annotations

import torch


def ridge_weights(x: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor:
    """argmin ||Xw - y||^2 + lam ||w||^2 per prompt; lam = 0 gives the minimum-norm solution."""
    if lam == 0:
        return (torch.linalg.pinv(x) @ y.unsqueeze(-1)).squeeze(-1)
    gram = x.transpose(-1, -2) @ x + lam * torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
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


# ---------------------------------------------------------------------------
# Iterative estimators of chen2024 (spec §5): GD, preprocess-then-optimize, Lasso.
# Lasso gives weights; GD and PtO give their whole path's query errors, step by step.
# ---------------------------------------------------------------------------

def correlation(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The preprocessing statistic r = X^T y / n (N, d) of PtO (spec §5)."""
    return torch.einsum("nkd,nk->nd", x, y) / x.shape[-2]


def normal_equations(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """G = X^T X / n (N, d, d) and b = X^T y / n (N, d, 1): the loss's gradient is G w - b."""
    return x.transpose(-1, -2) @ x / x.shape[-2], correlation(x, y).unsqueeze(-1)


def gd_query_errors(x: torch.Tensor, y: torch.Tensor, x_q: torch.Tensor, target: torch.Tensor, etas,
                    steps: int) -> torch.Tensor:
    """Mean over prompts of (<w_t, x_q> - target)^2 for GD from 0 on (1/2n)||Xw - y||^2, for every
    step size of `etas` and every step t = 1..steps: (E, steps).

    GD is w_{t+1} = w_t - eta (G w_t - b) with G = X^T X / n, b = X^T y / n. In the eigenbasis
    G = V diag(lam) V^T, <w_t, x_q> = eta sum_{j<t} sum_k c_k (1 - eta lam_k)^j with
    c = (V^T b) * (V^T x_q), so a step costs elementwise products over (E, d, N) instead of one
    batched (d x d) product per prompt (10x faster at N = 2,000, d = 8). No division by lam, so
    the null space of G (n < d) is exact. A diverging step size (|1 - eta lam| > 1) overflows to
    inf or NaN.
    """
    gram, b = normal_equations(x, y)
    lam, basis = torch.linalg.eigh(gram)                                                 # (N, d), (N, d, d)
    # eigenvalue-major (d, N): a sum over d is then a sum of rows, which torch vectorises over
    # N (a sum over a last axis of size d is ~10x slower)
    c = ((basis.transpose(-1, -2) @ b).squeeze(-1) * (x_q.unsqueeze(-2) @ basis).squeeze(-2)).T
    eta = torch.as_tensor(etas, dtype=x.dtype)[:, None]                                 # (E, 1)
    factor = 1 - eta.unsqueeze(-1) * lam.T                                               # (E, d, N)
    term = c.expand_as(factor).contiguous()                                              # c_k (1 - eta lam_k)^j
    prediction = torch.zeros(factor.shape[0], factor.shape[-1], dtype=x.dtype)          # (E, N)
    errors = torch.empty(factor.shape[0], steps, dtype=x.dtype)
    for t in range(steps):
        prediction += eta * term.sum(-2)
        errors[:, t] = ((prediction - target) ** 2).mean(-1)
        term.mul_(factor)
    return errors


def pto_query_errors(x: torch.Tensor, y: torch.Tensor, x_q: torch.Tensor, target: torch.Tensor, etas,
                     steps: int) -> torch.Tensor:
    """`gd_query_errors` of preprocess-then-optimize: GD on x~ = diag(r / max|r|) x, queried at
    x~_q = diag(r / max|r|) x_q, with r = X^T y / n (spec §5).

    Scaling r to max |r_j| = 1 keeps the preprocessing's shape (which coordinates get large
    steps) but bounds the preconditioned curvature by that of X^T X / n: with raw r one
    fixed step diverges on the prompts whose r is large (r ~ w* has unbounded entries).
    """
    r = correlation(x, y)
    r = r / r.abs().amax(-1, keepdim=True).clamp_min(1e-12)
    return gd_query_errors(x * r.unsqueeze(-2), y, x_q * r, target, etas, steps)


def soft_threshold(w: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    return w.sign() * (w.abs() - level).clamp_min(0)


def lasso_weights(x: torch.Tensor, y: torch.Tensor, alphas, steps: int) -> torch.Tensor:
    """ISTA on (1/2n)||Xw - y||^2 + alpha ||w||_1 from 0, step 1/L with L = lambda_max(X^T X / n),
    for every penalty of `alphas` at once: (A, N, d)."""
    gram, target = normal_equations(x, y)
    step = 1 / torch.linalg.eigvalsh(gram)[:, -1:, None].clamp_min(1e-12)               # (N, 1, 1)
    level = step * torch.as_tensor(alphas, dtype=x.dtype)                                # (N, 1, A)
    w = torch.zeros(*target.shape[:-1], level.shape[-1], dtype=x.dtype)                  # (N, d, A)
    for _ in range(steps):
        w = soft_threshold(w - step * (gram @ w - target), level)
    return w.permute(2, 0, 1)
