"""deora2023 data and model: the mixture generator, the layer's forward and gradient, the one step."""

from __future__ import annotations

import math

import pytest
import torch

from iclrepro.models import deora2023 as models
from iclrepro.tasks import deora2023 as tasks
from iclrepro.theory import deora2023 as theory

MIX = tasks.Mixture(T=6, d=8, M=3, zeta=0.34, S=1.5, sigma=0.1)


def layer(H: int, seeds: int = 2, **kwargs) -> models.MultiHeadAttention:
    torch.manual_seed(0)
    return models.MultiHeadAttention(seeds, H, MIX.d, MIX.T, sigma_v=1.0, **kwargs)


def test_means_are_orthogonal_with_norm_S_and_each_sequence_has_ceil_zeta_T_relevant_tokens():
    centres = tasks.means(MIX, tasks.stream(0, "means"))
    assert torch.allclose(centres @ centres.T, MIX.S**2 * torch.eye(2 + MIX.M, dtype=torch.float64), atol=1e-12)
    data = tasks.sample(tasks.Mixture(**{**MIX.to_spec(), "noise": "none"}), 50, 10, 0)["train"]
    assert MIX.relevant == 3 and (data["relevant"].sum(-1) == 3).all()
    label_mean = torch.where(data["y"] > 0, 0, 1)
    relevant_tokens = data["x"][data["relevant"].bool()]
    assert torch.allclose(relevant_tokens, centres[label_mean.repeat_interleave(3)])


def test_data_sets_of_one_seed_share_means_and_test_set():
    small, large = tasks.sample(MIX, 10, 20, 3), tasks.sample(MIX, 30, 20, 3)
    assert torch.equal(small["test"]["x"], large["test"]["x"])
    assert not torch.equal(tasks.sample(MIX, 10, 20, 4)["test"]["x"], small["test"]["x"])


def test_gauss_orth_noise_is_orthogonal_to_the_means():
    mix = tasks.Mixture(**{**MIX.to_spec(), "noise": "gauss_orth", "sigma": 1.0})
    centres = tasks.means(mix, tasks.stream(1, "means"))
    clean = tasks.sample(tasks.Mixture(**{**mix.to_spec(), "noise": "none"}), 20, 1, 1)["train"]["x"]
    noisy = tasks.sample(mix, 20, 1, 1)["train"]["x"]
    assert torch.allclose((noisy - clean) @ centres.T, torch.zeros(20, MIX.T, 2 + MIX.M, dtype=torch.float64),
                          atol=1e-12)


def test_data_set_round_trips_through_parquet(tmp_path):
    spec = {"paper": "deora2023", "mixture": MIX.to_spec(), "n_train": 7, "n_test": 5, "seed": 2}
    tasks.write_data_set(spec, "abc", tmp_path / "set.parquet")
    read_spec, sets = tasks.read_data_set(tmp_path / "set.parquet", content="abc")
    expected = tasks.sample(MIX, 7, 5, 2)
    assert read_spec == spec
    for split in tasks.SPLITS:
        for name in ("x", "y", "relevant"):
            assert torch.equal(sets[split][name], expected[split][name])


@pytest.mark.parametrize("bad, key", [({"M": 7}, r"2 \+ M"), ({"zeta": 0.0}, "zeta"), ({"noise": "laplace"}, "noise")])
def test_mixture_rejects_bad_settings(bad, key):
    with pytest.raises(ValueError, match=key):
        tasks.Mixture(**{**MIX.to_spec(), **bad})


def test_uniform_attention_output_is_the_pooled_linear_model():
    model = layer(H=4)
    X = tasks.sample(MIX, 9, 1, 0)["train"]["x"].expand(2, -1, -1, -1)
    expected = torch.einsum("snd,shd->sn", X.mean(-2), model.V) / math.sqrt(4)
    assert torch.allclose(model(X), expected, atol=1e-12)


@pytest.mark.parametrize("readout, scale", [("mean", "1/sqrt(H)"), ("first", "1/H")])
def test_layer_gradient_matches_finite_differences(readout, scale):
    H = 3
    torch.manual_seed(1)
    W = 0.3 * torch.randn(1, H, MIX.d, MIX.d, dtype=torch.float64, requires_grad=True)
    V = torch.randn(1, H, MIX.d, dtype=torch.float64, requires_grad=True)
    X = tasks.sample(MIX, 4, 1, 0)["train"]["x"][None]
    u = models.readout(MIX.T, readout)
    assert torch.autograd.gradcheck(lambda W, V: models.output(W, V, X, u, models.head_scale(H, scale)), (W, V))


def test_one_step_moves_only_W_by_eta0_sqrt_H_times_the_gradient():
    model = layer(H=4)
    data = tasks.sample(MIX, 12, 1, 0)["train"]
    X, y = data["x"].expand(2, -1, -1, -1), data["y"].expand(2, -1)
    V0 = model.V.detach().clone()
    grad_W = torch.autograd.grad(model.risk(X, y).sum(), model.W)[0]
    models.one_step(model, X, y, eta0=0.5, params="W")
    assert torch.equal(model.V, V0)
    assert torch.allclose(model.W, -0.5 * 2 * grad_W)


def test_hessian_probe_matches_the_full_hessian():
    H = 2
    torch.manual_seed(2)
    W, V = 0.2 * torch.randn(H, MIX.d, MIX.d, dtype=torch.float64), torch.randn(H, MIX.d, dtype=torch.float64)
    x, u = tasks.sample(MIX, 1, 1, 0)["train"]["x"][0], models.readout(MIX.T, "mean")
    sizes = (W.numel(), V.numel())
    full = torch.autograd.functional.hessian(
        lambda theta: theory.single(theta[: sizes[0]].view_as(W), theta[sizes[0]:].view_as(V), x, u, H**-0.5),
        torch.cat([W.flatten(), V.flatten()]))
    exact = float(torch.linalg.eigvalsh(full).abs().max())
    probe = theory.hessian_norm(W, V, x, u, H**-0.5, 200, torch.Generator().manual_seed(0))
    assert probe == pytest.approx(exact, rel=1e-3)  # power iteration approaches it from below


def test_weak_convexity_probe_matches_the_full_hessian_of_the_loss():
    H = 2
    torch.manual_seed(3)
    W, V = 0.2 * torch.randn(H, MIX.d, MIX.d, dtype=torch.float64), torch.randn(H, MIX.d, dtype=torch.float64)
    data, u = tasks.sample(MIX, 6, 1, 0)["train"], models.readout(MIX.T, "mean")
    sizes = (W.numel(), V.numel())

    def loss(theta):
        phi = models.output(theta[: sizes[0]].view_as(W)[None], theta[sizes[0]:].view_as(V)[None],
                            data["x"][None], u, H**-0.5)[0]
        return models.logistic(data["y"] * phi).mean()

    theta = torch.cat([W.flatten(), V.flatten()])
    lowest = float(torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss, theta))[0])
    probe = theory.weak_convexity(W, V, data["x"], data["y"], u, H**-0.5)
    assert probe["lambda_min"] == pytest.approx(lowest, rel=1e-5) and lowest < 0
    assert probe["weak_convexity"] == pytest.approx(lowest / float(loss(theta)), rel=1e-5)


def test_hessian_probes_at_init_shrink_like_inverse_sqrt_H_on_a_toy_size():
    """T1's Hessian norm of Phi and T2's -lambda_min / L of the training loss."""
    mix = tasks.Mixture(T=4, d=6, M=2, zeta=0.5)
    spec = {"mixture": mix.to_spec(), "model": {"sigma_v": 1.0, "scale": "1/sqrt(H)", "readout": "mean"},
            "data_seed": 0, "H": [1, 4, 16, 64], "sequences": 2, "loss_sequences": 16, "seeds": 3,
            "power_iterations": 30}
    rows = theory.hessian_rows(spec)
    for probe, size in (("T1", rows["hessian_norm"]), ("T2", -rows["weak_convexity"])):
        means = size[rows["probe"] == probe].groupby(rows["H"]).mean()
        fitted = float(torch.tensor(means.to_numpy()).log().diff().sum() / math.log(64))
        assert -0.65 <= fitted <= -0.35, (probe, means)
