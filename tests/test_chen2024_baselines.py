"""chen2024 baselines and theory: closed forms, an independent reference (scipy), PtO = GD on
rescaled features, Lasso optimality, the sparse task's prior, the GD / PtO steps drawn
beside the probes, and PtO's advantage in the quick scale's regime."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from iclrepro.baselines import regression, tuning
from iclrepro.evaluation import chen2024 as evaluation
from iclrepro.tasks import chen2024 as tasks
from iclrepro.theory import chen2024 as theory


def problem(n=12, d=6, prompts=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(prompts, n, d, generator=g, dtype=torch.float64)
    y = torch.randn(prompts, n, generator=g, dtype=torch.float64)
    return x, y


def tune_and_test(task: tasks.Task, prompts: int) -> tuple[dict, dict]:
    """A tuning set and a test set of `task`, drawn with seeds 1 and 2."""
    return tuple(tasks.sample(task, prompts, torch.Generator().manual_seed(seed)) for seed in (1, 2))


def gd_path(x, y, eta, T):
    """(T, N, d): GD's iterates from 0, straight from the update rule."""
    w, iterates = torch.zeros(x.shape[0], x.shape[-1], dtype=x.dtype), []
    for _ in range(T):
        w = w - eta * (x.transpose(-1, -2) @ (x @ w.unsqueeze(-1) - y.unsqueeze(-1))).squeeze(-1) / x.shape[-2]
        iterates.append(w)
    return torch.stack(iterates)


def pto_scale(x, y):
    """(N, d): PtO's preprocessing r / max|r| with r = X^T y / n, written out again."""
    r = (x.transpose(-1, -2) @ y.unsqueeze(-1)).squeeze(-1) / x.shape[-2]
    return r / r.abs().amax(-1, keepdim=True)


def query_errors(iterates, x_q, target):
    """(T,): mean over prompts of (<w_t, x_q> - target)^2."""
    return (((iterates * x_q).sum(-1) - target) ** 2).mean(-1)


def test_ridge_and_ols_match_scipy():
    x, y = problem()
    lam = 0.3
    for b in range(x.shape[0]):
        X, Y = x[b].numpy(), y[b].numpy()
        augmented = np.vstack([X, np.sqrt(lam) * np.eye(X.shape[1])])
        ridge = scipy.linalg.lstsq(augmented, np.concatenate([Y, np.zeros(X.shape[1])]))[0]
        assert np.allclose(regression.ridge_weights(x, y, lam)[b].numpy(), ridge, atol=1e-10)
        assert np.allclose(regression.ridge_weights(x, y, 0.0)[b].numpy(), scipy.linalg.lstsq(X, Y)[0], atol=1e-10)


def test_min_norm_ols_when_n_below_d():
    x, y = problem(n=3, d=6)
    w = regression.ridge_weights(x, y, 0.0)
    assert torch.allclose((x @ w.unsqueeze(-1)).squeeze(-1), y, atol=1e-10)
    assert np.allclose(w[0].numpy(), scipy.linalg.lstsq(x[0].numpy(), y[0].numpy())[0], atol=1e-10)


@pytest.mark.parametrize("n, d", [(12, 6), (3, 6)])   # n < d: G = X^T X / n has a null space
def test_gd_errors_match_the_closed_form_for_every_step_size_at_once(n, d):
    x, y = problem(n=n, d=d)
    x_q, target = torch.randn(x.shape[0], d, dtype=x.dtype), torch.randn(x.shape[0], dtype=x.dtype)
    etas, T = [0.3, 0.05, 0.8], 6
    errors = regression.gd_query_errors(x, y, x_q, target, etas, T)                    # (E, T)
    sigma_hat = x.transpose(-1, -2) @ x / n
    b = (x.transpose(-1, -2) @ y.unsqueeze(-1)) / n
    for index, eta in enumerate(etas):
        step = torch.eye(d, dtype=x.dtype) - eta * sigma_hat
        closed = torch.stack([sum(eta * torch.linalg.matrix_power(step, k) @ b for k in range(t)).squeeze(-1)
                              for t in range(1, T + 1)])
        assert torch.allclose(errors[index], query_errors(closed, x_q, target), rtol=1e-12, atol=0)
        assert torch.allclose(closed[0], eta * b.squeeze(-1), atol=1e-12)   # one step = one linear-attention layer
        assert torch.allclose(errors[index], query_errors(gd_path(x, y, eta, T), x_q, target), rtol=1e-12, atol=0)


def test_gd_converges_to_ols():
    x, y = problem(n=40, d=4)
    x_q = torch.randn(x.shape[0], 4, dtype=x.dtype)
    ols = (regression.ridge_weights(x, y, 0.0) * x_q).sum(-1)
    assert regression.gd_query_errors(x, y, x_q, ols, [0.5], 300)[0, -1] < 1e-20


def test_a_diverging_step_size_overflows_instead_of_looking_good():
    x, y = problem(n=4, d=6)   # lambda_max(X^T X / n) > 2, so eta = 1 diverges
    errors = regression.gd_query_errors(x, y, torch.ones(x.shape[0], 6, dtype=x.dtype),
                                        torch.zeros(x.shape[0], dtype=x.dtype), [1.0], 2000)
    assert not torch.isfinite(errors[0, -1])


def test_pto_is_gd_on_the_rescaled_features():
    x, y = problem()
    x_q, target = torch.randn(x.shape[0], x.shape[-1], dtype=x.dtype), torch.randn(x.shape[0], dtype=x.dtype)
    etas, T = [0.2, 0.7], 5
    scale = pto_scale(x, y)
    for index, eta in enumerate(etas):   # GD on x~ = diag(r / max|r|) x, queried at x~_q
        expected = query_errors(gd_path(x * scale.unsqueeze(-2), y, eta, T), x_q * scale, target)
        assert torch.allclose(regression.pto_query_errors(x, y, x_q, target, etas, T)[index], expected,
                              rtol=1e-12, atol=0)


def test_lasso_satisfies_its_optimality_conditions_for_every_penalty_at_once():
    x, y = problem(n=30, d=6)
    alphas = [0.02, 0.1]
    for alpha, w in zip(alphas, regression.lasso_weights(x, y, alphas, 3000), strict=True):
        gradient = (x.transpose(-1, -2) @ ((x @ w.unsqueeze(-1)).squeeze(-1) - y).unsqueeze(-1)).squeeze(-1) / 30
        active = w.abs() > 1e-8
        assert torch.allclose(gradient[active], -alpha * w.sign()[active], atol=1e-6)
        assert (gradient[~active].abs() <= alpha + 1e-6).all()
        assert active.any()
    assert (~active).any()   # the last, larger penalty zeroes some coordinates


def test_ols_risk_matches_the_inverse_wishart_mean():
    task = tasks.Task(d=4, s=2, sigma=0.5, n=14)
    data = tasks.sample(task, 20000, torch.Generator().manual_seed(1))
    x, y = data["x"][:, :14].double(), data["y"][:, :14].double()
    risk = ((regression.ridge_weights(x, y, 0.0) - data["w_star"].double()) ** 2).sum(-1).mean()
    assert float(risk) == pytest.approx(float(theory.ols_excess_risk(4, 14, 0.5)), rel=0.05)
    assert np.isnan(theory.ols_excess_risk(4, 5, 0.5))


def test_the_correlation_statistic_has_the_stated_moments():
    task = tasks.Task(d=3, s=3, sigma=0.5, n=10)
    g = torch.Generator().manual_seed(2)
    data = tasks.sample(task, 1, g)
    w_star = data["w_star"][0].double()
    x = torch.randn(40000, 10, 3, generator=g, dtype=torch.float64)
    y = x @ w_star + 0.5 * torch.randn(40000, 10, generator=g, dtype=torch.float64)
    r = regression.correlation(x, y)
    mean, variance = theory.correlation_moments(w_star.numpy(), 0.5, 10)
    assert np.allclose(r.mean(0).numpy(), mean, atol=0.02)
    assert np.allclose(r.var(0).numpy(), variance, rtol=0.05)


def test_task_vectors_are_s_sparse():
    data = tasks.sample(tasks.Task(d=8, s=3, sigma=0.0, n=4), 500, torch.Generator().manual_seed(3))
    assert ((data["w_star"] != 0).sum(-1) == 3).all()
    assert torch.allclose(data["y"], tasks.clean(data))
    assert float((data["w_star"] ** 2).sum(-1).mean()) == pytest.approx(3, rel=0.15)


def test_the_sign_prior_keeps_the_gaussian_supports_and_signs_at_magnitude_one():
    task = tasks.Task(d=8, s=3, sigma=0.1, n=4)
    gaussian = tasks.sample(task, 500, torch.Generator().manual_seed(3))
    sign = tasks.sample(tasks.Task(d=8, s=3, sigma=0.1, n=4, prior="sign"), 500, torch.Generator().manual_seed(3))
    assert torch.equal(sign["w_star"], gaussian["w_star"].sign())
    assert torch.equal(sign["x"], gaussian["x"])
    assert torch.allclose(sign["y"] - tasks.clean(sign), gaussian["y"] - tasks.clean(gaussian), atol=1e-5)
    with pytest.raises(ValueError, match="prior 'laplace'"):
        tasks.Task(d=8, s=3, sigma=0.1, n=4, prior="laplace")


def test_probe_overlay_runs_a_step_per_layer_tuned_on_the_first_set():
    """At layer l: GD after l steps, PtO after l - 1 (layer 1 preprocesses); each step size is
    the best of the grid on the first (probe-training) set, the risk is that of the second."""
    n, etas = 10, [0.05, 0.2, 1.0]
    task = tasks.Task(d=6, s=2, n=n, sigma=0.1)
    tune, test = tune_and_test(task, 300)

    def risk(prompts, preprocess, eta, steps):
        x, y, x_q = prompts["x"][:, :n].double(), prompts["y"][:, :n].double(), prompts["x"][:, n].double()
        scale = pto_scale(x, y) if preprocess else torch.ones_like(x_q)
        target = (prompts["w_star"].double() * x_q).sum(-1)
        return float(query_errors(gd_path(x * scale.unsqueeze(-2), y, eta, steps), x_q * scale, target)[-1])

    rows = evaluation.step_rows((tune, test), n, etas, layers=3)
    methods = {evaluation.GD_STEPS: (False, 0), evaluation.PTO_STEPS: (True, 1)}
    assert [list(rows.loc[rows["model"] == label, "layer"]) for label in methods] == [[1, 2, 3], [2, 3]]
    for row in rows.itertuples():
        preprocess, preprocessing_layers = methods[row.model]
        steps = row.layer - preprocessing_layers
        assert row.eta == etas[int(np.argmin([risk(tune, preprocess, eta, steps) for eta in etas]))]
        assert row.probe_risk == pytest.approx(risk(test, preprocess, row.eta, steps), rel=1e-9)


def test_pto_beats_tuned_gd_and_ridge_with_one_nonzero_coordinate():
    """The quick scale's regime (d = 8, s = 1, sigma = 0.1): r = X^T y / n stands out on the one
    support coordinate, so PtO's preconditioner diag(r^2) steps along it and hardly elsewhere,
    and tuned PtO has a fraction of tuned GD's and ridge's risk (0.26-0.36 over five pairs of
    sets). Without the preprocessing the ratio would be about 1."""
    n = 12
    task = tasks.Task(d=8, s=1, n=n, sigma=0.1)
    sets = tune_and_test(task, 500)
    grids = {"eta": [0.1, 0.5, 1.0], "steps": 300, "ridge_lambda": [1e-3, 1e-2, 1e-1, 1.0],
             "lasso_alpha": [0.01], "lasso_steps": 20}
    risk = {row["method"]: row["excess_risk"]
            for row in evaluation.baseline_rows(sets, n, {"grids": grids, "T_layers": 2})}
    assert risk["PtO (tuned T)"] < 0.6 * min(risk["GD (tuned T)"], risk["ridge"])


def stretched_prompts(seed: int, scale: float = 30.0) -> dict[str, torch.Tensor]:
    """Prompts with x and y multiplied by `scale`: same w*, Hessian scale^2 times larger, so a
    unit step size overflows within a few hundred steps."""
    prompts = tasks.sample(tasks.Task(d=6, s=2, n=10, sigma=0.1), 200, torch.Generator().manual_seed(seed))
    return dict(prompts, x=prompts["x"] * scale, y=prompts["y"] * scale)


def test_a_diverged_step_size_is_never_chosen():
    """Overflowed iterates give a NaN tuning risk (inf - inf), which torch's argmin would pick."""
    tune, test = stretched_prompts(1), stretched_prompts(2)
    grids = {"eta": [1e-4, 1.0], "steps": 300}
    assert torch.isnan(evaluation.path_risks(regression.gd_query_errors, tune, 10, grids["eta"], 300)[1]).any()
    row = evaluation.tuned_iterative("GD (tuned T)", regression.gd_query_errors, (tune, test), 10, grids, None)
    assert row["eta"] == 1e-4
    assert np.isfinite(row["excess_risk"])


def test_a_grid_that_diverges_everywhere_is_named():
    with pytest.raises(tuning.TuningError, match="GD at n = 4: every setting of the grid diverged"):
        tuning.lowest(torch.tensor([[float("nan"), float("inf")]]), "GD at n = 4")
