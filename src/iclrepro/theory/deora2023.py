"""Theory quantities of deora2023 (spec §3) that the pipeline can compute.

* `gradient_features`: g_i = grad_theta Phi(theta; X_i) of one layer, split into its W and V blocks.
* `hard_margin`: the NTK margin gamma = max_{||w|| = 1} min_i y_i <g_i, w> of features given by
  their Gram matrix, through the dual min_{alpha in simplex} ||sum_i alpha_i y_i g_i|| (T5),
  solved by accelerated projected gradient; it returns the primal margin of the dual's
  direction, a feasible (certified) value that equals gamma at the optimum.
* `closed_form_margins`: zeta S / sqrt(2) (value block at uniform attention, noise-free) and the
  oracle S / sqrt(2) of attention fully on the relevant tokens (T6).
* `training_bound`, `test_bound`, `rate_line`: the T3 / T4b bound curves with their constants
  as config values, and the c / (eta gamma^2 k) shape line of T5.
* `hessian_norm`: ||grad^2_theta Phi(theta_0; X)||_op by power iteration on Hessian-vector
  products (T1).
* `weak_convexity`: lambda_min(grad^2 L(theta_0)) / L(theta_0) of the training loss, by Lanczos
  on Hessian-vector products (T2: its negative part shrinks like H^(-1/2)).
`write` is the theory stage: both probes at initialisation across H.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from scipy.sparse.linalg import LinearOperator, eigsh
from torch.func import grad, jvp, vmap

from iclrepro import store
from iclrepro.models import deora2023 as models
from iclrepro.tasks import deora2023 as tasks

BLOCKS = ("all", "W", "V")


def single(W: torch.Tensor, V: torch.Tensor, x: torch.Tensor, u: torch.Tensor, scale: float) -> torch.Tensor:
    """Phi of one layer W (H, d, d), V (H, d) on one sequence x (T, d): a scalar."""
    return models.output(W[None], V[None], x[None, None], u, scale)[0, 0]


def gradient_features(W, V, X, u, scale) -> dict[str, torch.Tensor]:
    """Per sequence of X (n, T, d): the W block (n, H d^2) and the V block (n, H d) of grad Phi."""
    g_W, g_V = vmap(grad(single, argnums=(0, 1)), in_dims=(None, None, 0, None, None))(W, V, X, u, scale)
    return {"W": g_W.flatten(1), "V": g_V.flatten(1)}


def grams(features: dict[str, torch.Tensor], y: torch.Tensor) -> dict[str, np.ndarray]:
    """Gram matrices of y_i g_i per block and of the whole gradient ("all")."""
    found = {block: ((y[:, None] * g) @ (y[:, None] * g).T).numpy() for block, g in features.items()}
    found["all"] = found["W"] + found["V"]
    return found


def project_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection onto {alpha >= 0, sum alpha = 1} (sort-based)."""
    u = np.sort(v)[::-1]
    cumulative = np.cumsum(u) - 1
    rho = np.nonzero(u - cumulative / np.arange(1, len(v) + 1) > 0)[0][-1]
    return np.maximum(v - cumulative[rho] / (rho + 1), 0)


def hard_margin(G: np.ndarray, iterations: int) -> float:
    """Primal margin min_i (G alpha)_i / sqrt(alpha^T G alpha) at the dual minimiser alpha of
    alpha^T G alpha over the simplex (FISTA); 0 when the features are not separable."""
    n = len(G)
    step = 1 / (2 * max(np.linalg.eigvalsh(G)[-1], 1e-300))
    alpha = previous = np.full(n, 1 / n)
    for k in range(1, iterations + 1):
        lookahead = alpha + (k - 1) / (k + 2) * (alpha - previous)
        previous, alpha = alpha, project_simplex(lookahead - step * 2 * G @ lookahead)
    norm2 = float(alpha @ G @ alpha)
    if norm2 <= 0:
        return 0.0
    return max(0.0, float((G @ alpha).min()) / math.sqrt(norm2))


def margins(W, V, X, y, u, scale, iterations: int) -> dict[str, float]:
    """gamma of the whole gradient and of its W and V blocks at one layer's theta (T5)."""
    G = grams(gradient_features(W, V, X, u, scale), y)
    return {f"gamma_{block}": hard_margin(G[block], iterations) for block in BLOCKS}


def closed_form_margins(mixture: dict) -> dict[str, float]:
    """T6, noise-free with mean read-out: the value-block margin at W = 0 uses the relevant
    fraction ceil(zeta T) / T actually drawn; the oracle margin is a factor T / ceil(zeta T) larger."""
    mix = tasks.Mixture(**mixture)
    return {"gamma_value_uniform": mix.relevant / mix.T * mix.S / math.sqrt(2), "gamma_oracle": mix.S / math.sqrt(2)}


def radius(gamma: float, K, phi0_max: float) -> np.ndarray:
    """||theta* - theta_0|| = (2 log(1/eps) + max_i |Phi_i(theta_0)|) / gamma with eps = 1/K (T5)."""
    return (2 * np.log(np.asarray(K, dtype=float)) + phi0_max) / gamma


def training_bound(K, gamma: float, phi0_max: float, eta: float, constants: dict) -> np.ndarray:
    """T3 with theta = theta*: loss_factor eps + distance_factor ||theta* - theta_0||^2 / (eta K)."""
    K = np.asarray(K, dtype=float)
    return constants["loss_factor"] / K + constants["distance_factor"] * radius(gamma, K, phi0_max) ** 2 / (eta * K)


def test_bound(n, K, gamma: float, phi0_max: float, eta: float, constants: dict) -> np.ndarray:
    """T4b: C (eps + ||theta* - theta_0||^2 / (eta K) + ||theta* - theta_0||^2 / n)."""
    n, K = np.asarray(n, dtype=float), np.asarray(K, dtype=float)
    r2 = radius(gamma, K, phi0_max) ** 2
    return constants["test_constant"] * (1 / K + r2 / (eta * K) + r2 / n)


def rate_line(x, gamma: float, scale: float, c: float) -> np.ndarray:
    """c / (scale gamma^2 x): train loss with scale = eta and x = k, test loss with scale = 1 and x = n."""
    return c / (scale * gamma**2 * np.asarray(x, dtype=float))


def fitted_constant(x, values, gamma: float, scale: float) -> float:
    """c of `rate_line` through the median of values * scale gamma^2 x (the figures show the shape)."""
    return float(np.median(np.asarray(values) * scale * gamma**2 * np.asarray(x, dtype=float)))


def flattened(W, V):
    """theta = [vec W; vec V], the one vector Hessian-vector products act on, and the map
    from such a vector back to (W, V)."""
    sizes = (W.numel(), V.numel())

    def unflatten(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w, v = theta.split(sizes)
        return w.view_as(W), v.view_as(V)

    return torch.cat([W.flatten(), V.flatten()]), unflatten


def hessian_norm(W, V, x, u, scale, iterations: int, generator: torch.Generator) -> float:
    """Largest |eigenvalue| of grad^2 Phi(theta; x) over theta = (W, V), by power iteration on
    Hessian-vector products (forward over reverse mode)."""
    theta, unflatten = flattened(W, V)

    def phi(theta: torch.Tensor) -> torch.Tensor:
        return single(*unflatten(theta), x, u, scale)

    direction = torch.randn(theta.shape, generator=generator, dtype=theta.dtype)
    value = 0.0
    for _ in range(iterations):
        product = jvp(grad(phi), (theta,), (direction / direction.norm(),))[1]
        value, direction = float(product.norm()), product
    return value


def weak_convexity(W, V, X, y, u, scale) -> dict[str, float]:
    """lambda_min of the Hessian of the logistic training loss L on (X, y) over theta = (W, V),
    L itself, and their ratio (T2), by Lanczos (scipy's eigsh, from a fixed start vector)."""
    theta, unflatten = flattened(W, V)

    def loss(theta: torch.Tensor) -> torch.Tensor:
        w, v = unflatten(theta)
        return models.logistic(y * models.output(w[None], v[None], X[None], u, scale)[0]).mean()

    def hessian_times(vector: np.ndarray) -> np.ndarray:
        return jvp(grad(loss), (theta,), (torch.from_numpy(vector).reshape(theta.shape),))[1].numpy()

    operator = LinearOperator((theta.numel(), theta.numel()), matvec=hessian_times, dtype=np.float64)
    lowest = float(eigsh(operator, k=1, which="SA", tol=1e-6, v0=np.ones(theta.numel()))[0][0])
    value = float(loss(theta))
    return {"lambda_min": lowest, "loss": value, "weak_convexity": lowest / value}


def hessian_rows(spec: dict) -> pd.DataFrame:
    """Per H and initialisation seed: ||grad^2 Phi(theta_0; X)||_op per probe sequence (probe
    T1) and the training loss's lambda_min / L on loss_sequences labelled ones (probe T2)."""
    mix = tasks.Mixture(**spec["mixture"])
    model = spec["model"]
    X = tasks.sample(mix, spec["sequences"], 0, spec["data_seed"])["train"]["x"]
    labelled = tasks.sample(mix, spec["loss_sequences"], 0, spec["data_seed"])["train"]
    rows = []
    for H in spec["H"]:
        for seed in range(spec["seeds"]):
            generator = torch.Generator().manual_seed(seed)
            V = model["sigma_v"] * torch.randn(H, mix.d, generator=generator, dtype=torch.float64)
            W = torch.zeros(H, mix.d, mix.d, dtype=torch.float64)
            u, scale = models.readout(mix.T, model["readout"]), models.head_scale(H, model["scale"])
            for index, x in enumerate(X):
                rows.append({"probe": "T1", "H": H, "seed": seed, "sequence": index,
                             "hessian_norm": hessian_norm(W, V, x, u, scale, spec["power_iterations"],
                                                          generator)})
            rows.append({"probe": "T2", "H": H, "seed": seed,
                         **weak_convexity(W, V, labelled["x"], labelled["y"], u, scale)})
    return pd.DataFrame(rows)


def write(spec: dict, content: str, out) -> None:
    """Theory stage: the Hessian probes at initialisation (T1, T2)."""
    store.write_parquet(pa.Table.from_pandas(hessian_rows(spec), preserve_index=False), out, spec=spec,
                        content=content)
