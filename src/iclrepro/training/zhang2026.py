"""Train one softmax attention layer supervised by one NGD step (zhang2026 spec §3).

Each step draws, per seed and on the device, a fresh batch of prompts and random
starting points w_0 ~ N(0, sigma_w^2 I) placed in every token's w-slot (spec §3: with
w_0 = 0 every logit is 0 and Q gets no gradient). The target is one step of the update
rule from w_0 (NGD by default, plain GD behind the `target` flag), the loss
1/2 ||w-slot of the query after the layer - target||^2, in float64 throughout.

Per step the cell records the distance to the Theorem-1 construction (Q* = -I, V* = eta I)
and the mean diagonal and mean |off-diagonal| entries of Q and V (spec E2), plus the
Frobenius norm outside the (w-row, z-column) blocks when the full matrices are trained
(spec E3). Snapshots of the weights are kept at the steps E3 and E6 need. The cell is
scored on held-out prompts of its training distribution (`spec["heldout"]`), whose
starting points have the typical norm sigma_w sqrt(d) of the training ones.
"""

from __future__ import annotations

import pyarrow as pa
import torch

from iclrepro import streams
from iclrepro.models import zhang2026 as models
from iclrepro.tasks import zhang2026 as tasks
from iclrepro.theory import zhang2026 as theory
from iclrepro.training import core


class OneStepSupervision(core.Objective):
    precision = "64-true"

    def __init__(self, spec: dict, device):
        self.dist = tasks.Distribution(**spec["distribution"])
        self.batch, self.sigma_w = spec["training"]["batch"], spec["training"]["sigma_w"]
        self.eta, self.rule = spec["eta"], spec["model"]["target"]
        self.device = device
        self.generators = streams.generators(spec["seeds"], "data", device)
        self.model = core.init_ensemble(
            lambda seeds: models.build(spec["model"], self.dist.d, seeds), spec["seeds"]).to(device)
        self.Q_star, self.V_star = (block.to(device) for block in construction_blocks(self.dist.d, self.eta))

    def draw(self):
        """Tokens (S, B, N+1, 2d) and one-step targets (S, B, d) for every seed."""
        tokens, targets = [], []
        for generator in self.generators:
            z, x_q, _ = tasks.context(tasks.sample(self.dist, self.batch, generator, self.device))
            w0 = self.sigma_w * torch.randn(self.batch, self.dist.d, generator=generator,
                                            dtype=torch.float64, device=self.device)
            tokens.append(models.embed(z, x_q, w0))
            targets.append(theory.update(w0, z, self.eta, self.rule))
        return torch.stack(tokens), torch.stack(targets)

    def loss(self, batch) -> torch.Tensor:
        H, target = batch
        return 0.5 * ((self.model.query_output(H) - target) ** 2).sum(-1).mean(-1)  # (S,)

    @torch.no_grad()
    def trace(self, step: int) -> dict[str, torch.Tensor]:
        return structure(self.model, self.Q_star, self.V_star)


def construction_blocks(d: int, eta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Q* = -I and V* = eta I, the (w, z) blocks of the Theorem-1 weights (spec §2.1)."""
    W_KQ, W_PV = models.construction(d, eta)
    return models.relevant_block(W_KQ), models.relevant_block(W_PV)


def structure(model: models.SoftmaxLayer, Q_star: torch.Tensor, V_star: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per seed (S,): distances to the construction, diagonal/off-diagonal means, off-block norm."""
    found = {}
    d = Q_star.shape[-1]
    off_diagonal = ~torch.eye(d, dtype=torch.bool, device=Q_star.device)
    for name, W, star in (("Q", model.kq(), Q_star), ("V", model.pv(), V_star)):
        block = models.relevant_block(W)                                      # (S, d, d)
        found[f"dist_{name}"] = (block - star).norm(dim=(-1, -2))
        found[f"{name}_diag"] = torch.diagonal(block, dim1=-2, dim2=-1).mean(-1)
        found[f"{name}_offdiag"] = block[:, off_diagonal].abs().mean(-1)
        if model.full_blocks:
            found[f"{name}_offblock"] = (W.norm(dim=(-1, -2)) ** 2 - block.norm(dim=(-1, -2)) ** 2).clamp_min(0).sqrt()
    return found


def one_step_error(model: models.SoftmaxLayer, prompts: dict[str, torch.Tensor], eta: float, rule: str):
    """Per seed (S,): mean 1/2 ||layer output - one-step target||^2 on fixed prompts and their w_0."""
    z, x_q, _ = tasks.context(prompts)
    H = models.embed(z, x_q, prompts["w0"])
    target = theory.update(prompts["w0"], z, eta, rule)
    with torch.no_grad():
        return 0.5 * ((model.query_output(H.expand(len(model.W_KQ), *H.shape)) - target) ** 2).sum(-1).mean(-1)


def metrics(spec: dict, model: models.SoftmaxLayer, losses, heldout: dict[str, torch.Tensor]) -> pa.Table:
    """metrics.parquet: per seed, the last training loss, the held-out one-step error and the
    final structure summaries."""
    with torch.no_grad():
        found = structure(model, *construction_blocks(spec["distribution"]["d"], spec["eta"]))
    columns = {"seed": spec["seeds"], "loss": losses[-1],
               "heldout_loss": one_step_error(model, heldout, spec["eta"], spec["model"]["target"]).numpy()}
    columns.update({name: value.numpy() for name, value in found.items()})
    return pa.table(columns)


def train_cell(spec: dict, cell_id: str, data: list[str], out_dir: str, threads: int = 1) -> None:
    """Train stage: fit all seeds as one ensemble (resuming a checkpoint), write the cell with its snapshots."""
    _, heldout = tasks.read_test_set(data[0], content=spec["heldout"])
    core.train_cell(spec, cell_id, out_dir, threads, OneStepSupervision,
                    lambda objective, fitted: metrics(spec, objective.model.cpu(), fitted.losses, heldout))
