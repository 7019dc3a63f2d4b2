"""zhang2026 prompts, test sets and the attention layer: distributions, storage, the fast path."""

from __future__ import annotations

import pyarrow as pa
import pytest
import torch

from iclrepro import store
from iclrepro.models import zhang2026 as models
from iclrepro.tasks import zhang2026 as tasks


def sample(n=200, seed=0, **settings):
    settings = {"d": 4, "N": 9, **settings}
    return tasks.sample(tasks.Distribution(**settings), n, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("x", tasks.FAMILIES)
def test_prompts_are_separable_through_the_origin(x):
    prompts = sample(x=x)
    assert prompts["x"].shape == (200, 10, 4) and prompts["y"].shape == (200, 10)
    assert prompts["x"].dtype == torch.float64
    z, _, _ = tasks.context(prompts)
    assert (torch.einsum("nkd,nd->nk", z, prompts["w_star"]) > 0).all()
    assert torch.allclose(prompts["w_star"].norm(dim=-1), torch.ones(200, dtype=torch.float64))


def test_distribution_settings_shape_the_inputs():
    assert torch.allclose(sample(x="sphere")["x"].norm(dim=-1), torch.full((200, 10), 2.0, dtype=torch.float64))
    assert torch.allclose(sample(scale=3.0, seed=1)["x"] / 3, sample(seed=1)["x"], atol=1e-15)
    variances = sample(n=4000, kappa=100.0)["x"].reshape(-1, 4).var(0)
    assert torch.allclose(variances, torch.tensor([1.0, 100 ** (1 / 3), 100 ** (2 / 3), 100.0],
                                                  dtype=torch.float64), rtol=0.05)
    prompts = sample(margin_gap=0.5)
    assert (torch.einsum("nkd,nd->nk", prompts["x"], prompts["w_star"]).abs() >= 0.5).all()
    assert torch.allclose(sample(w0_norm=10.0)["w0"].norm(dim=-1), torch.full((200,), 10.0, dtype=torch.float64))
    assert (sample()["w0"] == 0).all()
    mixture = sample(x="mixture", mixture_mean=5.0)
    along = torch.einsum("nkd,nd->nk", mixture["x"], mixture["w_star"])
    # two clusters at +/- 5 w* (plain Gaussian inputs give a mean |<x, w*>| of about 0.8)
    assert along.abs().mean().item() == pytest.approx(5.0, abs=0.15)


def test_sampler_is_a_pure_function_of_the_seed():
    first, again, other = sample(seed=4), sample(seed=4), sample(seed=5)
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not torch.equal(first["x"], other["x"])


def test_bad_distribution_is_rejected():
    with pytest.raises(ValueError, match="unknown x distribution 'cauchy'"):
        tasks.Distribution(d=2, N=3, x="cauchy")
    with pytest.raises(ValueError, match="margin_gap=100.0 rejects almost every input"):
        sample(n=2, margin_gap=100.0)


def test_test_set_round_trip_and_checked_reads(tmp_path):
    spec = {"paper": "zhang2026", "distribution": tasks.Distribution(d=3, N=5, w0_norm=1.0).to_spec(),
            "prompts": 7, "seed": 11}
    path = tmp_path / "set.parquet"
    tasks.write_test_set(spec, "abc", path)
    read_spec, prompts = tasks.read_test_set(path, content="abc")
    expected = tasks.sample(tasks.Distribution(**spec["distribution"]), 7, torch.Generator().manual_seed(11))
    assert read_spec == spec and all(torch.equal(prompts[key], expected[key]) for key in expected)
    with pytest.raises(store.StoreError, match="does not match"):
        tasks.read_test_set(path, content="other")
    table = store.read_parquet(path)
    store.write_parquet(table.drop_columns(["w0"]), tmp_path / "no_w0.parquet", spec=spec)
    with pytest.raises(store.StoreError, match=r"no_w0.parquet: column 'w0' missing"):
        tasks.read_test_set(tmp_path / "no_w0.parquet")
    store.write_parquet(pa.table({"x": [1.0]}), tmp_path / "foreign.parquet", spec={"D": 3})
    with pytest.raises(store.StoreError, match="foreign.parquet: not a zhang2026 test set"):
        tasks.read_test_set(tmp_path / "foreign.parquet")


def tokens(S=2, seed=0):
    prompts = sample(n=6, w0_norm=1.0, seed=seed)
    z, x_q, _ = tasks.context(prompts)
    return models.embed(z, x_q, prompts["w0"]).expand(S, -1, -1, -1)


def test_embedding_puts_z_then_w_in_every_token():
    prompts = sample(n=3, w0_norm=2.0)
    z, x_q, _ = tasks.context(prompts)
    H = models.embed(z, x_q, prompts["w0"])
    assert H.shape == (3, 10, 8)
    assert torch.equal(H[:, :-1, :4], z) and torch.equal(H[:, -1, :4], x_q)
    assert torch.equal(models.w_slot(H), prompts["w0"]) and (H[..., 4:] == prompts["w0"].unsqueeze(1)).all()


def test_layer_places_q_and_v_in_the_w_row_z_column_block():
    layer = models.SoftmaxLayer(seeds=2, d=4, init_std=0.1)
    assert layer.kq().shape == (2, 8, 8) and torch.equal(models.relevant_block(layer.kq()), layer.W_KQ)
    assert models.block_structured(layer.kq(), layer.pv())
    full = models.SoftmaxLayer(seeds=2, d=4, init_std=0.1, full_blocks=True)
    assert not models.block_structured(full.kq(), full.pv())


def test_query_output_is_the_query_row_of_the_full_layer():
    H = tokens()
    for layer in (models.SoftmaxLayer(2, 4, 0.3), models.SoftmaxLayer(2, 4, 0.3, full_blocks=True)):
        with torch.no_grad():
            assert torch.allclose(layer.query_output(H), models.w_slot(layer(H)), atol=1e-14)


def test_fast_path_equals_updating_every_token():
    torch.manual_seed(1)
    Q, V = torch.randn(2, 4, 4, dtype=torch.float64), torch.randn(2, 4, 4, dtype=torch.float64)
    W_KQ, W_PV = models.place(0.3 * Q), models.place(0.3 * V)
    slow = fast = tokens()
    for _ in range(5):
        slow, fast = models.layer(slow, W_KQ, W_PV), models.query_layer(fast, W_KQ, W_PV)
    assert torch.allclose(slow, fast, atol=1e-12)
    unrolled = dict(models.unroll(tokens(), W_KQ, W_PV, [0, 5]))
    assert torch.equal(unrolled[0], tokens()) and torch.equal(unrolled[5], fast)


def test_seen_blocks_are_exactly_those_with_a_gradient():
    """The one-step loss on the query's w-slot gives no gradient (rounding aside) to the blocks
    SEEN_BLOCKS omits."""
    layer = models.SoftmaxLayer(1, 4, 0.1, full_blocks=True)
    layer.query_output(tokens(S=1)).square().sum().backward()
    for matrix, W in (("W^KQ", layer.W_KQ), ("W^PV", layer.W_PV)):
        scale = W.grad.abs().max()
        for row in (0, 1):
            for column in (0, 1):
                seen = (row, column) in models.SEEN_BLOCKS[matrix]
                largest = models.block(W.grad, row, column).abs().max()
                assert (largest > 1e-10 * scale) == seen, (matrix, row, column)


def test_load_cell_rejects_weights_of_another_shape(tmp_path):
    spec = {"distribution": {"d": 3}, "seeds": [0], "model": {"init_std": 0.1, "full_blocks": False}}
    store.save_model(models.SoftmaxLayer(1, 4, 0.1).state_dict(), spec, tmp_path / "model.pt")
    with pytest.raises(store.StoreError, match="model.pt: weights do not fit"):
        models.load_cell(tmp_path)
