"""cui2024 evaluation: its baselines and the claims on learned structure."""

from __future__ import annotations

import torch

from iclrepro.evaluation import cui2024 as evaluation
from iclrepro.tasks import cui2024 as tasks


def test_gd_baseline_is_not_fitted_on_the_test_sets_labels():
    """GD-1's step size comes from the tuning draw: the test set's query labels, which it is
    scored on, cannot move its predictions."""
    scenario = tasks.Scenario(d=3, sigma2=0.5)
    prompts, tune = (tasks.sample(scenario, 20, 300, torch.Generator().manual_seed(seed)) for seed in (0, 1))
    relabelled = dict(prompts, y=prompts["y"].clone())
    relabelled["y"][:, -1] = -relabelled["y"][:, -1]
    name = "GD-1 (linear attention)"
    predictions = [evaluation.baseline_predictions(scenario, test, tune)[name] for test in (prompts, relabelled)]
    assert torch.equal(*predictions)
    step = evaluation.baseline_predictions(scenario, prompts, tune)[name] / evaluation.one_step_gd(scenario, prompts)
    assert 0.3 < float(step.mean()) < 1  # shrunk below 1 at D = 20, as least squares on the tuning draw gives
