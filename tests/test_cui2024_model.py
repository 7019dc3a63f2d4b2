"""cui2024 data and models: shapes, the full model reproducing the reduced one, init structure."""

from __future__ import annotations

import math

import pytest
import torch

from iclrepro.models import cui2024 as models
from iclrepro.tasks import cui2024 as tasks


@pytest.mark.parametrize("scenario", [
    tasks.Scenario(d=3), tasks.Scenario(d=3, sigma2=0.5), tasks.Scenario(d=3, rho=0.5),
    tasks.Scenario(d=3, r=0.3), tasks.Scenario(d=3, tau=0.3)])
def test_sample_shapes_and_labels(scenario):
    prompts = tasks.sample(scenario, D=7, n=5, generator=torch.Generator().manual_seed(0))
    assert prompts["x"].shape == (5, 8, 3) and prompts["y"].shape == (5, 8) and prompts["w"].shape == (5, 3)
    clean = torch.einsum("nkd,nd->nk", prompts["x"], prompts["w"])
    residual = prompts["y"] - clean
    assert (residual.abs().max() < 1e-6) == (scenario.sigma2 == 0)


@pytest.mark.parametrize("scenario, D, n", [(tasks.Scenario(d=3, sigma2=0.5, rho=0.5), 7, 5),
                                             (tasks.Scenario(d=3, r=0.3), 7, 5), (tasks.Scenario(d=3, tau=0.3), 7, 5),
                                             (tasks.Scenario(d=5), 80, 128)])  # the quick cells' batch
def test_ensemble_sample_gives_each_seed_its_own_stream(scenario, D, n):
    """Seed s's slice of a training batch is bit for bit what seed s alone would draw (at the
    quick cells' size, labels computed for all seeds in one product once differed in the last bit)."""
    ensemble = tasks.sample_ensemble(scenario, D, n, [torch.Generator().manual_seed(s) for s in (4, 9)])
    for index, seed in enumerate((4, 9)):
        alone = tasks.sample(scenario, D, n, torch.Generator().manual_seed(seed))
        assert all(torch.equal(ensemble[key][index], alone[key]) for key in ("x", "y", "w"))
    assert not torch.equal(ensemble["x"][0], ensemble["x"][1])


def test_sampler_moments_match_the_scenario():
    g = torch.Generator().manual_seed(1)
    corr = tasks.sample(tasks.Scenario(d=4, rho=0.5), D=50, n=2000, generator=g)
    x = corr["x"].reshape(-1, 4).double()
    assert torch.allclose(x.T @ x / x.shape[0], torch.as_tensor(tasks.Scenario(d=4, rho=0.5).covariance()), atol=0.03)
    local = tasks.sample(tasks.Scenario(d=4, r=0.3), D=50, n=500, generator=g)
    spread = (local["x"][:, :-1] - local["x"][:, -1:]).std()
    assert abs(float(spread) - 0.3) < 0.01
    prior = tasks.sample(tasks.Scenario(d=4, tau=0.1), D=2, n=4000, generator=g)
    assert torch.allclose(prior["w"].mean(0), torch.full((4,), 0.5), atol=0.01)


def test_models_output_one_prediction_per_seed_and_prompt():
    x, y = torch.randn(3, 11, 9, 4), torch.randn(3, 11, 9)
    assert models.FullAttention(3, d=4, H=2, p=8, init_std=0.1)(x, y).shape == (3, 11)
    assert models.ReducedAttention(3, d=4, H=2, init_std=0.1)(x, y).shape == (3, 11)


def test_heads_must_divide_p():
    with pytest.raises(ValueError, match="H=4 must divide the embedding dimension p=6"):
        models.FullAttention(1, d=2, H=4, p=6, init_std=0.1)


def test_full_model_with_matching_weights_equals_reduced():
    torch.manual_seed(0)
    S, d, H = 2, 3, 2
    reduced = models.ReducedAttention(S, d, H, init_std=0.5)
    full = models.FullAttention(S, d, H, p=H * (d + 1), init_std=0.5)
    with torch.no_grad():
        # W^K = I and W^Q = [[A, 0], [0, 0]] give W^KQ = W^K^T W^Q = the reduced x-block
        full.W_K.copy_(torch.eye(d + 1).expand(S, H, d + 1, d + 1))
        full.W_Q.copy_(torch.nn.functional.pad(reduced.A, (0, 1, 0, 1)))
        # W^V = I and the label row of W^O = (u, v) give the value row (u, v)
        full.W_V.copy_(torch.eye(d + 1).expand(S, H, d + 1, d + 1))
        full.W_O.copy_(torch.cat([reduced.u, reduced.v.unsqueeze(-1)], dim=-1))
    x, y = torch.randn(S, 16, 10, d), torch.randn(S, 16, 10)
    assert torch.allclose(full(x, y), reduced(x, y), atol=1e-5)


def test_reduced_theory_form_is_a_kernel_average():
    """With A = cI and u = 0 one head predicts v * sum_i y_i exp(c x_i.x_q) / sum_j exp(c x_j.x_q)."""
    d, c, v = 3, 0.4, 1.7
    model = models.ReducedAttention(1, d, 1, init_std=0.0)
    with torch.no_grad():
        model.A.copy_(c * torch.eye(d))
        model.v.fill_(v)
    x, y = torch.randn(1, 1, 6, d), torch.randn(1, 1, 6)
    with torch.no_grad():
        predicted = float(model(x, y))
    weights = torch.exp(c * x[0, 0, :-1] @ x[0, 0, -1])
    expected = v * (weights * y[0, 0, :-1]).sum() / weights.sum()
    assert math.isclose(predicted, float(expected), rel_tol=1e-5)


def test_attend_and_its_gradients_follow_the_per_head_sum_over_context_tokens():
    """yhat = sum_h sum_i softmax_i(z_i^T W^KQ_h z_q) (r_h^T z_i), written token by token."""
    torch.manual_seed(1)
    S, B, D, d, H = 2, 3, 5, 3, 2
    x, y = torch.randn(S, B, D + 1, d, dtype=torch.float64), torch.randn(S, B, D + 1, dtype=torch.float64)
    kq = torch.randn(S, H, d + 1, d + 1, dtype=torch.float64, requires_grad=True)
    value = torch.randn(S, H, d + 1, dtype=torch.float64, requires_grad=True)
    z = torch.cat([x, y.unsqueeze(-1)], -1)
    z_q = torch.cat([x[:, :, -1], torch.zeros(S, B, 1, dtype=torch.float64)], -1)
    expected = torch.zeros(S, B, dtype=torch.float64)
    for h in range(H):
        scores = torch.stack([(z[:, :, i] * (kq[:, h, None] @ z_q.unsqueeze(-1)).squeeze(-1)).sum(-1)
                              for i in range(D)], -1)                                  # (S, B, D)
        values = torch.stack([(z[:, :, i] * value[:, h, None]).sum(-1) for i in range(D)], -1)
        expected = expected + (torch.softmax(scores, -1) * values).sum(-1)
    found = models.attend(x, y, kq, value)
    assert torch.allclose(found, expected, rtol=1e-12, atol=1e-12)
    weights = torch.randn(S, B, dtype=torch.float64)
    for got, want in zip(torch.autograd.grad((found * weights).sum(), (kq, value)),
                         torch.autograd.grad((expected * weights).sum(), (kq, value)), strict=True):
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("param", ["full", "reduced"])
def test_identity_init_pairs_heads_with_opposite_signs(param):
    spec = {"param": param, "H": 2, "p": 10, "init_std": 1e-4, "init": "identity", "identity_eps": 0.05}
    kq = models.build(spec, d=4, seeds=1).kq()[0, :, :4, :4]
    assert torch.allclose(kq[0], 0.05 * torch.eye(4), atol=1e-3)
    assert torch.allclose(kq[1], -0.05 * torch.eye(4), atol=1e-3)


def test_test_set_round_trip_and_errors(tmp_path):
    spec = {"paper": "cui2024", "scenario": {"d": 2, "W": 1.0, "sigma2": 0.0}, "D": 4, "prompts": 6, "seed": 3}
    path = tmp_path / "set.parquet"
    tasks.write_test_set(spec, "abcd", path)
    read_spec, prompts = tasks.read_test_set(path, content="abcd")
    expected = tasks.sample(tasks.Scenario(d=2), 4, 6, torch.Generator().manual_seed(3))
    assert read_spec == spec
    assert all(torch.equal(prompts[k], expected[k]) for k in ("x", "y", "w"))
    from iclrepro import store

    with pytest.raises(store.StoreError, match="does not match"):
        tasks.read_test_set(path, content="other")


def test_identity_init_signs_for_odd_head_counts():
    assert models.head_signs(1).tolist() == [1.0]
    assert models.head_signs(3).tolist() == [1.0, -1.0, 1.0]
    assert models.head_signs(4).tolist() == [1.0, 1.0, -1.0, -1.0]
