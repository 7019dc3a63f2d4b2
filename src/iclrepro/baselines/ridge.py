"""Ridge regression on a fixed feature map, over a grid of penalties (pure torch, float64).

    w(lam) = argmin_w (1/n) ||Phi w - y||^2 + lam ||w||^2
           = (Phi^T Phi + n lam I)^{-1} Phi^T y      (primal, D x D, when n >= D)
           = Phi^T (Phi Phi^T + n lam I)^{-1} y      (dual, n x n, when n < D)

`dual_path` and `kernel_select` do the same with a kernel matrix in place of Phi Phi^T.

Each penalty of the grid is solved by its own Cholesky factorization of the smaller Gram
matrix: at the paper's n = 8192 (6,554 rows fitted) the seven penalties took 16 s that way
and 60 s by the one eigendecomposition that served them all before. The features may be
float32 (half the memory of the largest array); the Gram matrix is accumulated in float64
over row blocks, so no float64 copy of the whole of Phi is ever held. `select` picks the
penalty on a held-out split and refits on all rows (spec §4) with that one penalty; in the
dual form the fitted rows' Gram matrix is a block of all rows' (one Gram product, not two).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from iclrepro.baselines.tuning import lowest

BLOCK_ROWS = 4096  # rows of Phi converted to float64 at a time


def _blocks(Phi: torch.Tensor):
    for start in range(0, len(Phi), BLOCK_ROWS):
        yield start, Phi[start:start + BLOCK_ROWS].double()


def primal_gram(Phi: torch.Tensor) -> torch.Tensor:
    """Phi^T Phi (D, D) in float64."""
    G = torch.zeros(Phi.shape[1], Phi.shape[1], dtype=torch.float64)
    for _, block in _blocks(Phi):
        G += block.T @ block
    return G


def dual_gram(Phi: torch.Tensor) -> torch.Tensor:
    """Phi Phi^T (n, n) in float64. A diagonal block is its block times its own transpose and
    each block above the diagonal is mirrored below it, so one float64 block of Phi is held
    when n <= BLOCK_ROWS (a paper-scale fu2023 fit: 0.56 GB less than a second copy) and two
    otherwise, and the products below the diagonal are not computed."""
    K = torch.empty(len(Phi), len(Phi), dtype=torch.float64)
    for start, block in _blocks(Phi):
        end = start + len(block)
        K[start:end, start:end] = block @ block.T
        for offset, columns in _blocks(Phi[end:]):
            cross = block @ columns.T
            K[start:end, end + offset:end + offset + len(columns)] = cross
            K[end + offset:end + offset + len(columns), start:end] = cross.T
    return K


def transpose_times(Phi: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Phi^T a for a (n, L): (D, L) in float64."""
    out = torch.zeros(Phi.shape[1], a.shape[1], dtype=torch.float64)
    for start, block in _blocks(Phi):
        out += block.T @ a[start:start + len(block)]
    return out


def shifted_solve(G: torch.Tensor, b: torch.Tensor, shift: float) -> torch.Tensor:
    """(G + shift I)^{-1} b (n,) for one shift of a symmetric positive semi-definite G, by a
    Cholesky factorization (a fifteenth of an eigendecomposition's time at n = 4096), or by
    the eigendecomposition where rounding leaves G + shift I without one."""
    shifted = G.clone()
    shifted.diagonal().add_(shift)
    factor, info = torch.linalg.cholesky_ex(shifted)
    if info.item() == 0:
        return torch.cholesky_solve(b.unsqueeze(1), factor)[:, 0]
    eigenvalues, U = torch.linalg.eigh(G)
    return U @ ((U.T @ b) / (eigenvalues + shift))


def penalty_path(G: torch.Tensor, b: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """(G + shift I)^{-1} b (n, L) for every shift (L,), a Cholesky factorization each."""
    return torch.stack([shifted_solve(G, b, float(shift)) for shift in shifts], 1)


def dual_path(K: torch.Tensor, y: torch.Tensor, lambdas: list[float]) -> torch.Tensor:
    """Dual coefficients alpha (n, L) = (K + n lam I)^{-1} y of a Gram or kernel matrix K (n, n)."""
    return penalty_path(K, y, len(K) * torch.tensor(lambdas, dtype=torch.float64))


def _in_the_smaller_form(Phi: torch.Tensor, y: torch.Tensor, solve) -> torch.Tensor:
    """Weights (D, L) from solve(G, b) -> (G + n lam I)^{-1} b (rows of G, L), applied in the
    dual form (G = Phi Phi^T, b = y) when n < D and in the primal one (G = Phi^T Phi, b = Phi^T y)
    otherwise."""
    n, D = Phi.shape
    if n < D:
        return transpose_times(Phi, solve(dual_gram(Phi), y))
    return solve(primal_gram(Phi), transpose_times(Phi, y.unsqueeze(1))[:, 0])


def ridge_path(Phi: torch.Tensor, y: torch.Tensor, lambdas: list[float]) -> torch.Tensor:
    """Weights (L, D) for every penalty, by the primal or the dual form, whichever is smaller."""
    shifts = len(Phi) * torch.tensor(lambdas, dtype=torch.float64)          # (L,)
    return _in_the_smaller_form(Phi, y, lambda G, b: penalty_path(G, b, shifts)).T


def ridge_weights(Phi: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor:
    """Weights (D,) for one penalty: `ridge_path` of a one-penalty grid."""
    return ridge_path(Phi, y, [lam])[0]


def predict(Phi: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Phi w for weights (L, D): (L, n)."""
    return torch.cat([block @ weights.T for _, block in _blocks(Phi)]).T


def split(rows: int, validation_fraction: float) -> tuple[slice, slice]:
    """(fit, held out): the last `validation_fraction` of the rows are held out (at least one)."""
    held_out = max(1, int(round(validation_fraction * rows)))
    return slice(0, rows - held_out), slice(rows - held_out, None)


@dataclass(frozen=True)
class Selection:
    weights: torch.Tensor           # (D,) refitted on every row with the chosen penalty
    lam: float
    validation_mse: list[float]     # per penalty of the grid


def select(Phi: torch.Tensor, y: torch.Tensor, lambdas: list[float], validation_fraction: float) -> Selection:
    """Choose the penalty on the held-out rows (spec §4), then refit on all rows."""
    what = f"ridge penalty (grid {lambdas})"
    if len(Phi) < Phi.shape[1]:   # dual form: both fits from all rows' Gram matrix
        alpha, best, errors = _select_dual(dual_gram(Phi), y, lambdas, validation_fraction, what)
        return Selection(transpose_times(Phi, alpha.unsqueeze(1))[:, 0], lambdas[best], errors)
    fit, check = split(len(Phi), validation_fraction)
    errors = ((predict(Phi[check], ridge_path(Phi[fit], y[fit], lambdas)) - y[check]) ** 2).mean(-1)
    best = lowest(errors, what)
    return Selection(ridge_weights(Phi, y, lambdas[best]), lambdas[best], errors.tolist())


def _select_dual(K: torch.Tensor, y: torch.Tensor, lambdas: list[float], validation_fraction: float,
                 what: str) -> tuple[torch.Tensor, int, list[float]]:
    """Dual coefficients (n,) refitted on all rows of K (n, n), the index of the penalty chosen
    on the held-out rows and the held-out MSE of each penalty."""
    fit, check = split(len(K), validation_fraction)
    errors = ((K[check, fit] @ dual_path(K[fit, fit], y[fit], lambdas) - y[check].unsqueeze(1)) ** 2).mean(0)
    best = lowest(errors, what)
    return shifted_solve(K, y, len(K) * lambdas[best]), best, errors.tolist()


def kernel_select(K: torch.Tensor, y: torch.Tensor, lambdas: list[float], validation_fraction: float) -> torch.Tensor:
    """Kernel ridge with a kernel matrix K (n, n): the penalty chosen as in `select`; alpha (n,)."""
    return _select_dual(K, y, lambdas, validation_fraction, f"kernel ridge penalty (grid {lambdas})")[0]
