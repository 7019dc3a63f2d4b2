"""zhang2026 closed forms (spec §1.3-§1.5, §5): the softmax identity, NGD, GD and the max margin."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from iclrepro.evaluation import zhang2026 as evaluation
from iclrepro.models import zhang2026 as models
from iclrepro.tasks import zhang2026 as tasks
from iclrepro.theory import zhang2026 as theory


def prompts(d=5, N=20, n=8, seed=0, **settings):
    return tasks.sample(tasks.Distribution(d=d, N=N, **settings), n, torch.Generator().manual_seed(seed))


def constructed_iterates(z, x_q, w0, eta, steps):
    W_KQ, W_PV = (W.unsqueeze(0) for W in models.construction(z.shape[-1], eta))
    H = models.embed(z, x_q, w0).unsqueeze(0)
    return torch.stack([models.w_slot(state)[0] for _, state in models.unroll(H, W_KQ, W_PV, steps)])


def test_one_constructed_layer_is_one_update_on_every_token():
    z, x_q, _ = tasks.context(prompts())
    w = torch.randn(8, 5, dtype=torch.float64)
    W_KQ, W_PV = (W.unsqueeze(0) for W in models.construction(5, 0.7))
    H = models.layer(models.embed(z, x_q, w).unsqueeze(0), W_KQ, W_PV)[0]      # the general path, all tokens
    expected = theory.update(w, z, 0.7)
    assert torch.allclose(H[..., 5:], expected.unsqueeze(1).expand_as(H[..., 5:]), atol=1e-12, rtol=0)
    assert torch.equal(H[..., :-1, :5], z) and torch.equal(H[..., -1, :5], x_q)


def test_fifty_constructed_layers_equal_fifty_updates():
    z, x_q, _ = tasks.context(prompts())
    w0 = torch.zeros(8, 5, dtype=torch.float64)
    steps = [1, 10, 50]
    difference = constructed_iterates(z, x_q, w0, 0.2, steps) - theory.iterate(z, w0, 0.2, steps)
    assert difference.abs().max() < 1e-10


def test_first_step_from_zero_is_eta_times_the_mean_of_yx():
    prompt = prompts()
    z, _, _ = tasks.context(prompt)
    mean_yx = (prompt["y"][:, :-1, None] * prompt["x"][:, :-1]).mean(1)
    zero = torch.zeros(8, 5, dtype=torch.float64)
    for rule in ("ngd", "gd"):
        assert torch.allclose(theory.update(zero, z, 0.3, rule), 0.3 * mean_yx, atol=1e-14)


def test_gradient_norm_variant_takes_unit_steps_along_ngd():
    z, _, _ = tasks.context(prompts())
    w = torch.randn(8, 5, dtype=torch.float64)
    step = theory.update(w, z, 0.5, "ngd_gradnorm") - w
    assert torch.allclose(step.norm(dim=-1), torch.full((8,), 0.5, dtype=torch.float64))
    assert torch.allclose(theory.cosine(step, theory.update(w, z, 1.0) - w), torch.ones(8, dtype=torch.float64))


def test_unknown_rule_is_rejected():
    with pytest.raises(ValueError, match="unknown update rule 'adam'"):
        theory.update(torch.zeros(1, 2), torch.ones(1, 3, 2), 1.0, "adam")


def test_max_margin_of_a_known_prompt():
    """z = (1, 1), (1, -1), (3, 0): the min-norm point of the hull is (1, 0), so gamma* = 1."""
    z = torch.tensor([[[1.0, 1.0], [1.0, -1.0], [3.0, 0.0]]], dtype=torch.float64)
    found = theory.max_margin(z)
    assert torch.allclose(found.u_bar, torch.tensor([[1.0, 0.0]], dtype=torch.float64), atol=1e-9)
    assert found.gamma.item() == pytest.approx(1.0, abs=1e-9)
    assert found.alpha[0, 2].item() == pytest.approx(0.0, abs=1e-9)  # not a support vector


def test_max_margin_satisfies_kkt_and_matches_the_primal():
    z, _, _ = tasks.context(prompts(d=6, N=30, n=6, seed=3))
    found = theory.max_margin(z)
    margins = torch.einsum("bd,bnd->bn", found.u_bar, z)
    assert torch.allclose(margins.min(-1).values, found.gamma, atol=1e-9)
    assert (found.kkt < 1e-8).all() and (found.alpha >= 0).all()
    for prompt, u_bar, gamma in zip(z.numpy(), found.u_bar, found.gamma, strict=True):
        primal = minimize(lambda w: (0.5 * w @ w, w), np.zeros(6), jac=True, method="SLSQP",
                          constraints=[{"type": "ineq", "fun": lambda w, p=prompt: p @ w - 1,
                                        "jac": lambda w, p=prompt: p}], options={"ftol": 1e-14, "maxiter": 500})
        assert 1 / np.linalg.norm(primal.x) == pytest.approx(gamma.item(), rel=1e-5)
        assert np.allclose(primal.x / np.linalg.norm(primal.x), u_bar.numpy(), atol=1e-5)


def test_kkt_residual_flags_an_infeasible_dual():
    alpha = np.array([1.0, 0.0])
    assert theory.kkt_residual(alpha, margins=np.array([1.0, 0.5])) == pytest.approx(0.5)
    assert theory.kkt_residual(alpha, margins=np.array([1.0, 1.5])) == 0.0


def test_ngd_smoothed_margin_grows_and_the_norm_grows_linearly():
    """For eta <= 1/max||z||^2, psi(w) = -log sum exp(-<w, z_i>) never decreases (spec §1.5),
    and eta gamma* t <= ||w_t|| <= eta R t exactly."""
    z, _, _ = tasks.context(prompts(n=6, seed=5))
    R = z.norm(dim=-1).amax(-1)
    eta = float(1 / R.max() ** 2)
    steps = list(range(201))
    w = theory.iterate(z, torch.zeros(6, 5, dtype=torch.float64), eta, steps)
    psi = -torch.logsumexp(-torch.einsum("tbd,bnd->tbn", w, z), dim=-1)
    assert (psi[1:] - psi[:-1] >= -1e-12).all()
    t = torch.tensor(steps, dtype=torch.float64).unsqueeze(-1)
    gamma = theory.max_margin(z).gamma
    assert (w.norm(dim=-1) >= eta * gamma * t - 1e-9).all() and (w.norm(dim=-1) <= eta * R * t + 1e-9).all()


def test_ngd_reaches_the_max_margin_direction_far_faster_than_gd():
    """Spec §5 test 5 at our step eta = 0.2 (d = 10, N = 40): NGD is within 1e-3 of u_bar by
    L = 3000 and at least ten times closer than GD at the spec's step 1."""
    z, _, _ = tasks.context(prompts(d=10, N=40, n=20, seed=7))
    u_bar = theory.max_margin(z).u_bar
    w0 = torch.zeros(20, 10, dtype=torch.float64)
    ngd = 1 - theory.cosine(theory.iterate(z, w0, 0.2, [3000]), u_bar).mean()
    gd = 1 - theory.cosine(theory.iterate(z, w0, 1.0, [3000], "gd"), u_bar).mean()
    assert ngd < 1e-3 and gd / ngd > 10


def test_gd_runs_at_the_stable_step_only_on_prompts_where_its_own_step_overflows():
    ref = evaluation.Reference.of(prompts(n=40, scale=3.0))     # R^2 ~ 200: eta = 1 overflows on some
    steps = [1, 100]
    plain = theory.iterate(ref.z, ref.w0, 1.0, steps, "gd")
    overflowed = ~torch.isfinite(plain).all(dim=-1).all(dim=0)
    w, fallbacks = evaluation.algorithm(ref, steps, "gd", 0.2, 1.0)
    assert 0 < fallbacks == int(overflowed.sum()) < 40 and torch.isfinite(w).all()
    assert torch.equal(w[:, ~overflowed], plain[:, ~overflowed])
    stable = theory.iterate(ref.z, ref.w0, ref.stable_gd_eta(), steps, "gd")
    assert torch.allclose(w[:, overflowed], stable[:, overflowed])


def test_rate_lines_pass_through_the_anchor():
    L = np.array([1.0, 10.0, 100.0])
    assert np.allclose(theory.rate_line(L, 100, 0.01, "1/L"), [1.0, 0.1, 0.01])
    log_line = theory.rate_line(L, 100, 0.01, "1/log L")
    assert np.isnan(log_line[0]) and log_line[2] == pytest.approx(0.01) and log_line[1] == pytest.approx(0.02)
    assert math.isclose(float(theory.cosine(torch.zeros(1, 2), torch.ones(1, 2))), 0.0)
