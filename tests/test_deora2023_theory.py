"""deora2023 theory: the hard-margin solver, the closed-form margins and the bound curves."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from iclrepro.evaluation import deora2023 as evaluation
from iclrepro.models import deora2023 as models
from iclrepro.tasks import deora2023 as tasks
from iclrepro.theory import deora2023 as theory

CONSTANTS = {"loss_factor": 2.0, "distance_factor": 1.25, "test_constant": 1.0}


def gram(rows) -> np.ndarray:
    Z = np.asarray(rows, dtype=float)
    return Z @ Z.T


def test_simplex_projection_lands_on_the_simplex_and_keeps_simplex_points():
    rng = np.random.default_rng(0)
    for _ in range(20):
        projected = theory.project_simplex(rng.normal(size=7) * 3)
        assert projected.min() >= 0 and projected.sum() == pytest.approx(1)
    point = np.array([0.2, 0.3, 0.5])
    assert np.allclose(theory.project_simplex(point), point)


def test_margin_of_constructed_separable_data():
    # y_i g_i = (1, +-0.5) and (2, 0): the best unit direction is e_1, with margin 1
    assert theory.hard_margin(gram([[1, 0.5], [1, -0.5], [2, 0]]), 2000) == pytest.approx(1, abs=1e-6)
    # two points at angle 90 degrees: margin = distance of their hull from 0 = 1 / sqrt(2)
    assert theory.hard_margin(gram([[1, 0], [0, 1]]), 2000) == pytest.approx(1 / math.sqrt(2), abs=1e-6)


def test_margin_of_random_separable_data_matches_a_direct_search():
    rng = np.random.default_rng(1)
    direction = np.array([0.6, 0.8])
    Z = rng.normal(size=(30, 2))
    Z = Z[Z @ direction > 0.3]
    angles = np.linspace(0, 2 * np.pi, 200001)
    brute = (Z @ np.stack([np.cos(angles), np.sin(angles)])).min(0).max()
    assert theory.hard_margin(Z @ Z.T, 5000) == pytest.approx(brute, abs=1e-5)


def test_non_separable_data_have_margin_zero():
    assert theory.hard_margin(gram([[1, 0], [-1, 0], [0, 1]]), 500) == 0


def test_value_block_margin_at_uniform_attention_is_the_closed_form():
    mix = tasks.Mixture(T=8, d=10, M=3, zeta=0.3, S=2.0, noise="none")
    data = tasks.sample(mix, 40, 1, 0)["train"]
    torch.manual_seed(0)
    H = 3
    W, V = torch.zeros(H, mix.d, mix.d, dtype=torch.float64), torch.randn(H, mix.d, dtype=torch.float64)
    found = theory.margins(W, V, data["x"], data["y"], models.readout(mix.T, "mean"), H**-0.5, 3000)
    closed = theory.closed_form_margins(mix.to_spec())
    assert found["gamma_V"] == pytest.approx(closed["gamma_value_uniform"], rel=1e-4)
    assert closed["gamma_value_uniform"] == pytest.approx(3 / 8 * 2 / math.sqrt(2))
    assert found["gamma_V"] <= found["gamma_all"]


def test_bounds_fall_with_steps_and_samples_and_grow_as_the_margin_shrinks():
    K = np.array([10, 100, 1000])
    train = theory.training_bound(K, 0.5, 1.0, 1.0, CONSTANTS)
    assert np.all(np.diff(train) < 0)
    assert np.all(theory.training_bound(K, 0.25, 1.0, 1.0, CONSTANTS) > train)
    test = theory.test_bound(np.array([10, 100, 1000]), 1000, 0.5, 1.0, 1.0, CONSTANTS)
    assert np.all(np.diff(test) < 0)
    line = theory.rate_line(K, 0.5, 1.0, theory.fitted_constant(K[-1], 0.01, 0.5, 1.0))
    assert line[-1] == pytest.approx(0.01) and line[0] == pytest.approx(1.0)


def test_bound_lines_read_nan_when_one_seed_margin_is_nan():
    """A seed whose margin failed must not be averaged away from the drawn T3 bound and rate line."""
    steps = np.array([1, 10, 100])
    losses = pd.Series([1.0, 0.5, 0.1], index=steps)
    spec = {"eta": 0.5, "theory": CONSTANTS}
    finite = pd.DataFrame({"gamma_all": [0.5, 0.7], "phi0_max": [1.0, 1.0]})
    failed = finite.assign(gamma_all=[0.5, float("nan")])
    assert np.isfinite(evaluation.bound_rows(2, steps, finite, losses, spec)["value"]).all()
    assert evaluation.bound_rows(2, steps, failed, losses, spec)["value"].isna().all()
