"""fu2023 models and kernels: convergence to the kernel as M grows, key permutation
invariance, BRFA at zero bias is RFA, targets, the ridge solves against direct ones, and the
memory of the kernels, features, Gram products and fits."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from iclrepro.baselines import ridge, tuning
from iclrepro.models import fu2023 as models
from iclrepro.papers import fu2023 as planner
from iclrepro.tasks import fu2023 as tasks
from iclrepro.theory import fu2023 as theory

d, N = 4, 5


def sequences(rows: int, seed: int = 1) -> torch.Tensor:
    return tasks.sample(d, N, rows, torch.Generator().manual_seed(seed))


def attention(M: int, bias_scale: float = 0.0, seed: int = 3) -> models.RandomFeatureAttention:
    return models.RandomFeatureAttention(d, M, 0.5, bias_scale, [torch.Generator().manual_seed(seed)])


def gram(model: models.RandomFeatures, x: torch.Tensor) -> torch.Tensor:
    Phi = model.features(x, 0).double()
    return Phi @ Phi.T


def relative(A: torch.Tensor, B: torch.Tensor) -> float:
    return float((A - B).norm() / B.norm())


def test_rfa_gram_converges_to_the_kernel_as_M_grows():
    x = sequences(40)
    exact = theory.rfa_kernel(x, x, 0.5)
    errors = [relative(gram(attention(M), x), exact) for M in (64, 1024, 16384)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.02, errors
    # the O(M^-1/2) rate: 16x the heads cuts the error about 4x
    assert 2.0 < errors[1] / errors[2] < 8.0, errors


@pytest.mark.parametrize("make,exact", [
    (lambda: attention(8192, bias_scale=1.5), lambda x: theory.brfa_kernel(x, x, 0.5, 1.5)),
    (lambda: models.RandomFeatureMLP(d, N, 32768, [torch.Generator().manual_seed(4)]),
     lambda x: theory.mlp_kernel(x, x)),
])
def test_brfa_and_rfmlp_grams_match_their_kernels(make, exact):
    x = sequences(30)
    assert relative(gram(make(), x), exact(x)) < 0.03


def test_brfa_at_zero_bias_is_rfa():
    x = sequences(20)
    assert torch.equal(attention(16, bias_scale=0.0).features(x, 0), attention(16).features(x, 0))
    assert not torch.equal(attention(16, bias_scale=1.0).features(x, 0), attention(16).features(x, 0))
    assert torch.allclose(theory.brfa_kernel(x, x, 0.5, 0.0), theory.rfa_kernel(x, x, 0.5), atol=3e-3)


def test_rfa_features_kernel_and_targets_are_invariant_to_permuting_keys():
    x = sequences(12)
    permuted = torch.cat([x[:, :1], x[:, 1:][:, torch.randperm(N, generator=torch.Generator().manual_seed(0))]], 1)
    model = attention(32)
    assert torch.allclose(model.features(permuted, 0), model.features(x, 0), atol=1e-6)
    assert torch.allclose(theory.rfa_kernel(permuted, x, 0.5), theory.rfa_kernel(x, x, 0.5))
    for name in ("key_poly_3", "qk_poly_2", "qk_He_4", "qk_cos", "sum_poly_2"):
        target = tasks.Target.parse(name)
        assert torch.allclose(tasks.target_values(target, permuted), tasks.target_values(target, x)), name
    mlp = models.RandomFeatureMLP(d, N, 64, [torch.Generator().manual_seed(4)])
    assert not torch.allclose(mlp.features(permuted, 0), mlp.features(x, 0), atol=1e-3)
    assert not torch.allclose(theory.mlp_kernel(permuted, x), theory.mlp_kernel(x, x), atol=1e-3)


def test_sum_poly_matrix_is_drawn_apart_from_the_test_sets(root):
    """S seeded with the test sets' seed would be the first rows of every test set."""
    test_seed = yaml.safe_load((root / "config.yaml").read_text())["fu2023"]["test_seed"]
    first_rows = tasks.sample(d, N, 1, torch.Generator().manual_seed(test_seed))[0, :d]
    S = tasks.sum_poly_matrix(d)
    assert S.shape == (d, d) and torch.equal(S, tasks.sum_poly_matrix(d))
    cosines = torch.nn.functional.cosine_similarity(S, first_rows, dim=-1)
    assert cosines.abs().max() < 0.99


def test_hermite_targets_and_unknown_names():
    t = torch.linspace(-2, 2, 9, dtype=torch.float64)
    assert torch.allclose(tasks.hermite(t, 4), t**4 - 6 * t**2 + 3)
    assert tasks.Target.parse("qk_cos") == tasks.Target("qk_cos", 0)
    with pytest.raises(ValueError, match="unknown target 'qk_poly'"):
        tasks.Target.parse("qk_poly")


def test_harmonics_dimensions():
    assert [theory.harmonics_dim(3, p) for p in range(4)] == [1, 4, 9, 16]   # (p+1)^2 on S^2
    assert theory.harmonics_dim(8, 2) == 1 + 8 + 35


def normal_equations(P: torch.Tensor, targets: torch.Tensor, lam: float) -> torch.Tensor:
    """Ridge weights (P^T P + n lam I)^{-1} P^T y solved directly, in float64."""
    return torch.linalg.solve(P.T @ P + len(P) * lam * torch.eye(P.shape[1], dtype=torch.float64), P.T @ targets)


@pytest.mark.parametrize("n,D", [(50, 12), (12, 50)])   # primal and dual forms
def test_ridge_path_matches_a_direct_solve(n, D):
    generator = torch.Generator().manual_seed(n)
    Phi = torch.randn(n, D, generator=generator)
    y = torch.randn(n, generator=generator, dtype=torch.float64)
    lambdas = [1e-4, 1e-1]
    path = ridge.ridge_path(Phi, y, lambdas)
    P = Phi.double()
    for weights, lam in zip(path, lambdas, strict=True):
        direct = normal_equations(P, y, lam)
        assert torch.allclose(weights, direct, atol=1e-8)
        assert torch.allclose(ridge.ridge_weights(Phi, y, lam), direct, atol=1e-8)   # select's refit


@pytest.mark.parametrize("n,D", [(50, 12), (40, 60), (20, 18)])   # primal; dual; dual fit, primal refit
def test_select_chooses_and_refits_as_direct_solves_do(n, D):
    """The penalty chosen on the last quarter of the rows, each fitted on the rest, then the
    refit on all rows, against normal equations solved directly: also in the dual form, where
    `select` takes the fitted rows' Gram matrix as a block of all rows'."""
    generator = torch.Generator().manual_seed(D)
    Phi = torch.randn(n, D, generator=generator)
    y = torch.randn(n, generator=generator, dtype=torch.float64)
    lambdas = [1e-3, 1e-1, 10.0]
    P, (fit, check) = Phi.double(), ridge.split(n, 0.25)
    errors = [float(((P[check] @ normal_equations(P[fit], y[fit], lam) - y[check]) ** 2).mean()) for lam in lambdas]
    chosen = ridge.select(Phi, y, lambdas, 0.25)
    assert chosen.validation_mse == pytest.approx(errors, rel=1e-8)
    assert chosen.lam == lambdas[errors.index(min(errors))]
    assert torch.allclose(chosen.weights, normal_equations(P, y, chosen.lam), atol=1e-8)


def test_a_shift_that_leaves_no_cholesky_factor_is_solved_by_the_eigendecomposition():
    """diag(1, -1) + 0.5 I is not positive definite (as rounding can leave a Gram matrix with
    a penalty far below its error): the solve still answers (G + shift I)^{-1} b."""
    G, b = torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64)), torch.tensor([3.0, 1.0], dtype=torch.float64)
    assert torch.allclose(ridge.shifted_solve(G, b, 0.5), torch.tensor([2.0, -2.0], dtype=torch.float64))


def test_dual_gram_over_uneven_blocks_equals_the_whole_product(monkeypatch):
    """Blocks of 4 rows over 11 (4, 4, 3): the diagonal blocks, the products above the diagonal
    and their mirrors below it tile Phi Phi^T exactly."""
    monkeypatch.setattr(ridge, "BLOCK_ROWS", 4)
    Phi = torch.randn(11, 7, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(ridge.dual_gram(Phi), Phi.double() @ Phi.double().T, atol=1e-12)


def test_kernel_ridge_with_the_feature_gram_equals_feature_ridge():
    generator = torch.Generator().manual_seed(0)
    Phi = torch.randn(40, 60, generator=generator)
    y = torch.randn(40, generator=generator, dtype=torch.float64)
    chosen = ridge.select(Phi, y, [1e-3, 1e-1, 10.0], 0.25)
    alpha = ridge.kernel_select(Phi.double() @ Phi.double().T, y, [1e-3, 1e-1, 10.0], 0.25)
    assert torch.allclose(Phi.double().T @ alpha, chosen.weights, atol=1e-8)
    assert chosen.validation_mse.index(min(chosen.validation_mse)) == [1e-3, 1e-1, 10.0].index(chosen.lam)


def test_a_penalty_grid_without_a_finite_held_out_risk_is_an_error_not_a_choice():
    """torch's argmin picks a NaN: a NaN label used to give NaN weights without a word."""
    Phi = torch.randn(40, 10, generator=torch.Generator().manual_seed(0))
    y = torch.ones(40, dtype=torch.float64)
    y[3] = float("nan")
    with pytest.raises(tuning.TuningError, match=r"ridge penalty \(grid \[0.001, 0.1\]\): every setting"):
        ridge.select(Phi, y, [1e-3, 1e-1], 0.25)
    with pytest.raises(tuning.TuningError, match="kernel ridge penalty"):
        ridge.kernel_select(Phi.double() @ Phi.double().T, y, [1e-3, 1e-1], 0.25)


def test_ridge_recovers_a_model_in_the_feature_span():
    """A target that is a random-feature model is fitted with small test error (tests can fail)."""
    x, x_test = sequences(600, seed=2), sequences(200, seed=5)
    teacher = attention(16, seed=9)
    teacher.v.data.normal_(generator=torch.Generator().manual_seed(1))
    student = attention(16, seed=9)
    chosen = ridge.select(student.features(x, 0), teacher(x)[0].detach(), [1e-8, 1e-4, 1e-1], 0.2)
    student.v.data[0] = chosen.weights
    with torch.no_grad():
        assert relative(student(x_test)[0], teacher(x_test)[0]) < 1e-3


def test_targets_match_their_formulas_on_a_hand_built_sequence():
    """d = 4 (sqrt(d) = 2), query e_2, keys (0.6, 0.8, 0, 0) and e_3: <x_0, x_i> = 0.8, 0 and
    <e_1, x_i> = 0.6, 0, so every target is an average of two hand-computed terms."""
    x = torch.tensor([[[0.0, 1.0, 0.0, 0.0], [0.6, 0.8, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]], dtype=torch.float64)
    expected = {"key_poly_2": (1.2**2 + 0) / 2, "qk_poly_1": (1.6 + 0) / 2, "qk_poly_2": (1.6**2 + 0) / 2,
                "qk_He_2": ((1.6**2 - 1) + (0 - 1)) / 2, "qk_He_3": ((1.6**3 - 3 * 1.6) + 0) / 2,
                "qk_cos": (math.cos(1.6) + 1) / 2}
    for name, value in expected.items():
        assert tasks.target_values(tasks.Target.parse(name), x).item() == pytest.approx(value, abs=1e-12), name


# Memory: each step runs in a fresh interpreter, where its own high-water mark of resident
# memory (VmHWM; ru_maxrss would start at the size of the forking pytest process) grows by
# what the step held at its height, freed or not.
PEAK_GROWTH = """
import torch
from iclrepro.baselines import ridge
from iclrepro.models import fu2023 as models
from iclrepro.tasks import fu2023 as tasks
from iclrepro.theory import fu2023 as theory
from iclrepro.training import fu2023 as training
def peak():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
torch.set_num_threads(1)
torch.set_grad_enabled(False)   # as evaluation predicts
{setup}
before = peak()
{step}
print(peak() - before)
"""

MB = 1024**2


def peak_growth(setup: str, step: str) -> int:
    """Bytes by which `step` grows the peak memory of a fresh interpreter that ran `setup`."""
    if not Path("/proc/self/status").is_file():
        pytest.skip("needs Linux's /proc/self/status")
    script = PEAK_GROWTH.format(setup=setup, step=step)
    return int(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout)


def test_kernel_memory_is_bounded_by_its_chunks_not_by_their_number():
    """K_RFA of 1,024 paper-sized sequences (d = N = 16: 128 chunks) grows the peak memory by
    its own 8 MB and one chunk's temporaries (a few of CHUNK_ENTRIES float64 each), not by a
    chunk's worth per chunk (2.2 GB when chunk results were concatenated at the end)."""
    grown = peak_growth("x = tasks.sample(16, 16, 1024, torch.Generator().manual_seed(0))",
                        "theory.rfa_kernel(x, x, 0.5)")
    assert grown < 8 * MB + 20 * 8 * theory.CHUNK_ENTRIES


def test_dual_gram_of_one_block_holds_one_float64_copy_of_it():
    """Phi of 2,048 x 8,192 (one block): its float64 copy (128 MB), K and the product written
    into it (32 MB each), not a second float64 copy as the partner of the first (+128 MB)."""
    grown = peak_growth("Phi = torch.randn(2048, 8192)", "ridge.dual_gram(Phi)")
    block, gram = 2048 * 8192 * 8, 2048 * 2048 * 8
    assert grown < block + 2 * gram + 48 * MB      # measured 201 MB; with a second copy 329 MB


@pytest.mark.parametrize("step,output", [("model(x)", 0), ("model.features(x, 0)", 4096 * 1024 * 17 * 4)])
def test_features_and_predictions_hold_their_output_and_one_chunk_not_every_chunk(step, output):
    """RFA with M = 1,024 heads on 4,096 paper-sized sequences (147 chunks of 28 rows): its
    predictions and its features (272 MB) grow the peak memory by their output and one chunk's
    temporaries (measured 19-30 MB). Chunk results kept for a concatenation at the end held the
    heap at 150-570 MB (predictions) and 2.3x the features."""
    grown = peak_growth("x = tasks.sample(16, 16, 4096, torch.Generator().manual_seed(0))\n"
                        "model = models.RandomFeatureAttention(16, 1024, 0.5, 0.0, [torch.Generator().manual_seed(1)])",
                        step)
    assert grown < output + 64 * MB


def test_the_planned_peak_of_a_fit_bounds_its_measured_peak():
    """One seed of RFA with M = 512 heads (8,704 features) fitted on 2,560 paper-sized
    sequences (the dual form): the planner's peak_bytes (477 MB), which sizes the fits' SLURM
    asks and memory_budget_mb, covers what the fit holds at its height (measured 392-396 MB;
    622-696 MB while features were concatenated from kept chunks and the Gram product held
    two float64 copies of them, over this estimate though within the one before it)."""
    spec = {"d": 16, "N": 16, "n": 2560, "target": "key_poly_2", "seeds": [0],
            "model": {"kind": "rfa", "M": 512, "weight_std": 0.5, "bias_scale": 0.0},
            "fitting": {"lambdas": [1e-6, 1e-3], "validation_fraction": 0.2}}
    grown = peak_growth(f"fit = training.RidgeFit({spec!r}, 'cpu')", "fit.solve(fit.draw())")
    assert grown < planner.peak_bytes(2560, 512 * 17)
