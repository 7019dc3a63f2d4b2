"""chen2024 decoder: head masking, causal prompts without label leaks, seed ensembles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iclrepro import accelerator, store
from iclrepro.baselines import regression
from iclrepro.evaluation import chen2024 as evaluation
from iclrepro.models import chen2024 as models
from iclrepro.tasks import chen2024 as tasks
from iclrepro.training import chen2024 as training
from iclrepro.training import core

SETTINGS = {"width": 16, "layers": 2, "heads": 4}


def prompts(n=5, d=4, batch=8):
    return tasks.sample(tasks.Task(d=d, s=2, sigma=0.1, n=n), batch, torch.Generator().manual_seed(0))


def model(attention="softmax", seeds=2, **changes):
    torch.manual_seed(0)
    return models.build({**SETTINGS, "attention": attention, **changes}, 4, 6, seeds)


def head_value_columns(block: models.Block, head: int) -> slice:
    """Columns of the qkv weight that make head `head`'s values."""
    width, size = block.s.width, block.s.width // block.s.heads
    return slice(2 * width + head * size, 2 * width + (head + 1) * size)


@pytest.mark.parametrize("attention", models.ATTENTIONS)
def test_a_masked_head_contributes_nothing(attention):
    net, data = model(attention), prompts()
    z = models.tokens(data["x"], data["y"])
    block = net.blocks[1]
    net.head_mask[:, 1, 2] = 0.0
    with torch.no_grad():
        before = net(z)
        block.qkv.weight[:, :, head_value_columns(block, 2)] += 5.0   # only the masked head's values change
        assert torch.equal(net(z), before)  # exactly: the head's output is multiplied by 0
        net.head_mask.fill_(1.0)
        assert (net(z) - before).abs().max() > 1e-5  # unmasked, the change shows


def test_masks_are_per_seed():
    net, data = model(), prompts()
    z = models.tokens(data["x"], data["y"])
    with torch.no_grad():
        full = net(z)
        net.head_mask[1, 0] = 0.0
        masked = net(z)
    assert torch.equal(masked[0], full[0]) and not torch.allclose(masked[1], full[1])


@pytest.mark.parametrize("attention", models.ATTENTIONS)
def test_prediction_k_sees_only_the_examples_before_it(attention):
    net, data = model(attention), prompts()
    k = 3
    changed = {key: value.clone() for key, value in data.items()}
    changed["y"][:, k:] += 10.0          # the label of point k and everything after it
    changed["x"][:, k + 1:] += 10.0      # later inputs
    with torch.no_grad():
        a = net(models.tokens(data["x"], data["y"]))
        b = net(models.tokens(changed["x"], changed["y"]))
    assert torch.allclose(a[..., :k + 1], b[..., :k + 1], atol=1e-5)
    assert not torch.allclose(a[..., k + 1:], b[..., k + 1:], atol=1e-3)


@pytest.mark.parametrize("attention", models.ATTENTIONS)
def test_a_block_run_at_the_query_tokens_equals_its_full_output_there(attention):
    block, h = model(attention).blocks[1], torch.randn(2, 3, 11, 16)   # the last block runs this way
    mask = torch.tensor([[1.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0]])
    with torch.no_grad():
        full, at_queries = block(h, mask), block(h, mask, models.QUERY_TOKENS)
    assert at_queries.shape == (2, 3, 6, 16)
    assert torch.allclose(at_queries, full[..., ::2, :], atol=1e-6)


def test_tokens_interleave_queries_and_examples():
    x, y = torch.arange(6.0).reshape(1, 3, 2), torch.tensor([[7.0, 8.0, 9.0]])
    z = models.tokens(x, y)[0]
    assert z.shape == (5, 4)
    assert z[0].tolist() == [0, 1, 0, 0] and z[1].tolist() == [0, 1, 7, 1] and z[4].tolist() == [4, 5, 0, 0]


def test_linear_attention_is_the_mean_of_score_weighted_values():
    net = model("linear", seeds=1, heads=1, mlp=False, layernorm=False)
    block, h = net.blocks[0], torch.randn(1, 2, 5, 16)
    q, k, v = block.qkv(h).split(16, dim=-1)
    expected = torch.stack([(q[..., t:t + 1, :] @ k[..., :t + 1, :].transpose(-1, -2) @ v[..., :t + 1, :])[..., 0, :]
                            / (t + 1) for t in range(5)], dim=-2)
    got = block.heads(h)[:, :, 0]
    assert torch.allclose(got, expected, atol=1e-5)


def test_ensemble_slice_equals_the_single_model():
    factory = lambda seeds: models.build(SETTINGS, 4, 6, seeds)  # noqa: E731
    ensemble = core.init_ensemble(factory, [0, 7])
    single = core.init_ensemble(factory, [7])
    z = models.tokens(*(prompts()[key] for key in ("x", "y")))
    with torch.no_grad():
        assert torch.allclose(ensemble(z)[1], single(z)[0], atol=1e-6)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="multiple of heads"):
        models.Settings(d=4, points=5, width=10, layers=2, heads=4)
    with pytest.raises(ValueError, match="unknown attention"):
        models.Settings(d=4, points=5, width=8, layers=2, heads=4, attention="cosine")


def test_evaluation_passes_hold_as_many_rows_whatever_the_seeds():
    x = prompts(batch=600)["x"]
    assert models.passes(model(seeds=1), x) == [slice(0, 512), slice(512, 1024)]   # 512 rows on a CPU
    assert models.passes(model(seeds=16), x)[:2] == [slice(0, 32), slice(32, 64)]


def test_a_cell_is_scored_on_its_test_set_in_passes(monkeypatch):
    """One pass over a paper-scale test set (10,000 prompts, 3 seeds, D = 256) held more than
    24 GB and was killed; the score in passes is the one-pass score."""
    trained, data = model("linear"), prompts(batch=11)
    with torch.no_grad():
        one_pass = ((trained(models.tokens(data["x"], data["y"])) - tasks.clean(data)) ** 2).mean(1)
    monkeypatch.setitem(models.EVAL_ROWS, "cpu", 8)          # 4 prompts of 2 seeds a pass
    prompts_seen = []
    trained.register_forward_pre_hook(lambda module, args: prompts_seen.append(len(args[0])))
    assert torch.allclose(training.excess_risk(trained, data), one_pass, atol=1e-6)
    assert prompts_seen == [4, 4, 3]


def test_probes_fitted_pass_by_pass_are_the_ridge_fit_on_every_state_at_once(monkeypatch):
    """Probe risks summed over passes equal a ridge fit (regression.ridge_weights) on the whole
    sets' states, per layer and seed, with the intercept column and the lambda of one prompt."""
    net, train, test, n, ridge = model("softmax"), prompts(batch=13), prompts(batch=9), 3, 1e-3
    monkeypatch.setitem(models.EVAL_ROWS, "cpu", 8)          # passes of 4 prompts of 2 seeds
    with torch.no_grad():
        fit_on, score_on = ([torch.cat([h[..., n, :].double(), torch.ones(*h.shape[:2], 1, dtype=torch.double)], -1)
                             for h in net.hidden(models.tokens(data["x"], data["y"]))] for data in (train, test))
    expected = []
    for features, scored in zip(fit_on, score_on, strict=True):
        w = regression.ridge_weights(features, train["y"][:, n].double().expand(2, -1), ridge * 13)
        expected.append((((scored * w[:, None]).sum(-1) - tasks.clean(test)[:, n]) ** 2).mean(-1))
    risks = evaluation.probe_risks(net, train, test, n, ridge)
    assert risks.shape == (2, 3) and torch.allclose(torch.from_numpy(risks), torch.stack(expected, -1), rtol=1e-9)


@pytest.mark.parametrize(("attention", "layers"), [("softmax", 3), ("linear", 2), ("softmax", 1)])
def test_masked_risks_are_those_of_a_full_pass_per_masked_head(attention, layers, monkeypatch):
    """masked_risks runs the blocks before a masked head's layer once for all its heads, over
    several passes, and the last block at the analysed query alone: the risks are those of the
    whole model run once per mask, to float32 rounding (bit for bit at this size on one CPU)."""
    net, data, n = model(attention, seeds=3, layers=layers), prompts(batch=11), 4
    monkeypatch.setitem(models.EVAL_ROWS, "cpu", 12)         # passes of 4 prompts of 3 seeds
    full, masked = evaluation.masked_risks(net, data, n)
    expected = torch.empty(3, layers, SETTINGS["heads"])
    for layer, head in np.ndindex(layers, SETTINGS["heads"]):
        mask = torch.ones_like(net.head_mask)
        mask[:, layer, head] = 0.0
        expected[:, layer, head] = evaluation.query_risk(evaluation.predictions(net, data, mask)[..., n], data, n)
    unmasked = evaluation.query_risk(evaluation.predictions(net, data)[..., n], data, n)
    to_float32_rounding = {"rtol": 1e-5, "atol": 0.0}
    torch.testing.assert_close(full, unmasked, **to_float32_rounding)
    torch.testing.assert_close(masked, expected, **to_float32_rounding)
    assert masked.std() > 0


@pytest.mark.parametrize("table", [evaluation.importance, evaluation.probing])
def test_evaluating_on_a_missing_gpu_is_a_clear_error(table, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    spec = {"cell": "0" * 16, "data": "0" * 16, "n": 4, "ridge": 1e-6, "eta": [0.1], "device": "cuda",
            "variants": [{"L": 2, "sigma": 0.1, "full": "0" * 16, "single": "0" * 16, "data": "0" * 16,
                          "probe": "0" * 16}]}
    with pytest.raises(accelerator.AcceleratorError, match=r"accelerator 'cuda' \(the config's.*no CUDA device"):
        table(spec, store.Layout(str(tmp_path)))
