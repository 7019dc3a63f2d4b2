"""Reference algorithms of zhang2026 (spec §1.2-§1.5): NGD, GD, the max-margin direction.

Everything works on z_i = y_i x_i, the only thing linear classification through the
origin sees. Shapes: z (B, N, d) per prompt, w (B, d); all float64 where the caller
gives float64. The exponential loss is L(w) = (1/N) sum_i exp(-<w, z_i>) (spec §1.2).

* `update`: loss-normalised NGD, w + eta * sum_i softmax_i(-<w, z_i>) z_i (spec §1.3),
  the gradient-norm variant w - eta grad / ||grad|| and plain GD w - eta grad.
* `iterate`: run one of them from w_0 and keep the iterates at a grid of steps.
* `max_margin`: the hard-margin SVM without intercept through its dual (spec §1.4),
  solved per prompt with scipy's L-BFGS-B, with the KKT residual of the solution.
* metrics: direction error 1 - cos(w, u_bar), normalised margin, query accuracy.
* `rate_line`: the reference curves C/L (NGD) and C/log L (GD) of spec §1.5/§4 E1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from scipy.optimize import minimize

from iclrepro import store
from iclrepro.models.zhang2026 import construction

RULES = ("ngd", "ngd_gradnorm", "gd")
SUPPORT_TOLERANCE = 1e-6  # alpha_i above this fraction of max alpha marks a support vector
KKT_TARGET = 1e-10       # the dual solve stops restarting below this KKT residual
DUAL_RESTARTS = 5


def attention_weights(w: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """p_i(w) = softmax_i(-<w, z_i>): (B, N). The NGD direction's weights (spec §1.3)."""
    return torch.softmax(-torch.einsum("bd,bnd->bn", w, z), dim=-1)


def update(w: torch.Tensor, z: torch.Tensor, eta: float | torch.Tensor, rule: str = "ngd") -> torch.Tensor:
    """One step of `rule` from w (B, d) on prompts z (B, N, d); eta is a number or (B, 1).

    ngd:          w + eta sum_i p_i(w) z_i          = w - eta grad L / L   (spec §1.3)
    ngd_gradnorm: w - eta grad L / ||grad L||       (same direction, unit length step)
    gd:           w + (eta / N) sum_i exp(-<w, z_i>) z_i = w - eta grad L
    """
    if rule == "gd":
        weights = torch.exp(-torch.einsum("bd,bnd->bn", w, z)) / z.shape[1]  # (B, N)
        return w + eta * torch.einsum("bn,bnd->bd", weights, z)
    direction = torch.einsum("bn,bnd->bd", attention_weights(w, z), z)       # (B, d)
    if rule == "ngd_gradnorm":
        direction = direction / direction.norm(dim=-1, keepdim=True)
    elif rule != "ngd":
        raise ValueError(f"unknown update rule {rule!r} (one of {', '.join(RULES)})")
    return w + eta * direction


def iterate(z: torch.Tensor, w0: torch.Tensor, eta: float | torch.Tensor, steps: list[int],
            rule: str = "ngd") -> torch.Tensor:
    """Iterates w_t of `rule` at every t in `steps` (t = 0 allowed): (len(steps), B, d)."""
    kept, w = {}, w0
    for t in range(max(steps) + 1):
        if t > 0:
            w = update(w, z, eta, rule)
        if t in steps:
            kept[t] = w
    return torch.stack([kept[t] for t in steps])


# ---------------------------------------------------------------------------
# The max-margin direction (spec §1.4)
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class MaxMargin:
    """Per prompt: unit direction u_bar (B, d), margin gamma* (B,), dual alpha (B, N), KKT residual (B,)."""

    u_bar: torch.Tensor
    gamma: torch.Tensor
    alpha: torch.Tensor
    kkt: torch.Tensor


def _dual(z: np.ndarray) -> tuple[np.ndarray, float]:
    """min_{alpha >= 0} 1/2 ||sum_i alpha_i z_i||^2 - sum_i alpha_i for one prompt z (N, d).

    L-BFGS-B (bounds alpha >= 0) finds the support; an active-set step then solves the
    equality system G_SS alpha_S = 1 on that support, which is the exact optimum when it is
    feasible. L-BFGS-B alone stops near a KKT residual of 1e-8, and on some degenerate
    prompts far earlier: it is restarted from where it stopped until the residual is small.
    """
    gram = z @ z.T

    def objective(alpha):
        g = gram @ alpha
        return 0.5 * alpha @ g - alpha.sum(), g - 1.0

    alpha = np.full(len(z), 1.0 / max(np.abs(gram).max(), 1e-12))
    best = (math.inf, alpha)
    for _ in range(DUAL_RESTARTS):
        alpha = minimize(objective, alpha, jac=True, method="L-BFGS-B", bounds=[(0, None)] * len(z),
                         options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 20000, "maxcor": 30}).x
        best = min(best, (kkt_residual(alpha, gram @ alpha), alpha), _active_set_step(gram, alpha),
                   key=lambda pair: pair[0])
        if best[0] < KKT_TARGET:
            break
    return best[1], best[0]


def _active_set_step(gram: np.ndarray, alpha: np.ndarray) -> tuple[float, np.ndarray]:
    """(KKT residual, alpha) of the exact solve on alpha's support; infinite if infeasible."""
    support = alpha > SUPPORT_TOLERANCE * alpha.max()
    polished = np.zeros_like(alpha)
    polished[support] = np.linalg.lstsq(gram[np.ix_(support, support)], np.ones(support.sum()), rcond=None)[0]
    if polished.min() < 0:
        return math.inf, polished
    return kkt_residual(polished, gram @ polished), polished


def kkt_residual(alpha: np.ndarray, margins: np.ndarray) -> float:
    """Largest KKT violation of the dual solution: margins_i = <w_hat, z_i> must be >= 1
    (primal feasibility), with alpha_i (margins_i - 1) = 0 (complementary slackness);
    alpha >= 0 holds by the bounds. Scaled by max alpha so that it is relative."""
    feasibility = np.maximum(0.0, 1.0 - margins).max()
    slackness = np.abs(alpha * (margins - 1.0)).max() / max(alpha.max(), 1e-300)
    return float(max(feasibility, slackness))


def max_margin(z: torch.Tensor) -> MaxMargin:
    """Hard-margin SVM without intercept of every prompt (B, N, d) via its dual (spec §1.4).

    w_hat = sum_i alpha_i z_i, u_bar = w_hat / ||w_hat||, gamma* = 1 / ||w_hat||: u_bar is the
    direction of the minimum-norm point of conv{z_i} and gamma* its norm.
    """
    array = z.detach().cpu().double().numpy()
    alphas, residuals = zip(*(_dual(prompt) for prompt in array), strict=True)
    alpha = torch.from_numpy(np.stack(alphas))
    w_hat = torch.einsum("bn,bnd->bd", alpha, torch.from_numpy(array))
    norm = w_hat.norm(dim=-1)
    return MaxMargin(w_hat / norm.unsqueeze(-1), 1.0 / norm, alpha, torch.tensor(residuals))


# ---------------------------------------------------------------------------
# Metrics (spec §1.4, §1.6)
# ---------------------------------------------------------------------------

def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """cos(a, b) over the last axis; 0 where either vector is 0 (w_0 = 0 has no direction)."""
    norms = a.norm(dim=-1) * b.norm(dim=-1)
    return torch.where(norms > 0, (a * b).sum(-1) / norms.clamp_min(1e-300), torch.zeros_like(norms))


def normalised_margin(w: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """gamma(w) = min_i <w, z_i> / ||w|| for w (..., B, d), z (B, N, d): (..., B)."""
    return torch.einsum("...bd,bnd->...bn", w, z).min(dim=-1).values / w.norm(dim=-1).clamp_min(1e-300)


def query_correct(w: torch.Tensor, x_q: torch.Tensor, y_q: torch.Tensor) -> torch.Tensor:
    """1[sign(<w, x_q>) = y_q] for w (..., B, d): (..., B) as float (spec §1.6)."""
    return (torch.sign((w * x_q).sum(-1)) == y_q).double()


def rate_line(L: np.ndarray, anchor_L: float, anchor_value: float, kind: str) -> np.ndarray:
    """Reference curve through (anchor_L, anchor_value): C/L for NGD, C/log L for GD (spec §1.5).

    NGD's loss-normalised steps give 1 - cos = O(log N / (eta gamma*^2 L)); constant-step
    GD only O(log N / log L). The constants are unverified, so the curves show shapes.
    """
    L = np.asarray(L, dtype=float)
    if kind == "1/L":
        return anchor_value * anchor_L / L
    if kind == "1/log L":  # undefined at L = 1
        with np.errstate(divide="ignore"):
            return np.where(L > 1, anchor_value * math.log(anchor_L) / np.log(L), np.nan)
    raise ValueError(f"unknown rate {kind!r}")


# ---------------------------------------------------------------------------
# Theory stage: the Theorem-1 construction (spec §2.1)
# ---------------------------------------------------------------------------

def matrix_rows(W: torch.Tensor, **labels) -> pd.DataFrame:
    """A matrix as long rows i, j, value (heatmap data), with constant label columns."""
    i, j = np.indices(W.shape)
    return pd.DataFrame({**labels, "i": i.reshape(-1), "j": j.reshape(-1), "value": W.numpy().reshape(-1)})


def write(spec: dict, content: str, out) -> None:
    """Theory stage: W^KQ and W^PV of the construction for (d, eta), as rows matrix, i, j, value."""
    frames = [matrix_rows(W, matrix=matrix)
              for matrix, W in zip(("W^KQ", "W^PV"), construction(spec["d"], spec["eta"]), strict=True)]
    store.write_parquet(pa.Table.from_pandas(pd.concat(frames, ignore_index=True), preserve_index=False),
                        out, spec=spec, content=content)
