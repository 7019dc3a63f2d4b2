"""zhang2026 evaluation: tidy figure data (spec §4 E1-E7), the claim checks and `predict`.

Every figure compares w-slot outputs against the max-margin direction u_bar of each test
prompt (spec §1.4), averaged over the prompts of a test set. Columns shared by the loop
figures: series, source (constructed | trained | algorithm | reference), seed (-1 where
no trained seed is involved), T (depth or loops), direction_error = 1 - cos(w_T, u_bar),
margin_gap = gamma* - gamma(w_T), accuracy (query), w_norm; the looped trained layer adds
cos_ngd_min / cos_ngd_mean (cosine with explicit NGD on the same prompts, worst and mean
over prompts) and rel_err_ngd = max ||w_loop - w_NGD|| / ||w_NGD||.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from iclrepro import series_names, store
from iclrepro.evaluation import claims as verdicts
from iclrepro.evaluation import stages
from iclrepro.models import zhang2026 as models
from iclrepro.tasks import zhang2026 as tasks
from iclrepro.theory import zhang2026 as theory

PAPER = "zhang2026"
RULE_NAMES = {"ngd": "NGD", "ngd_gradnorm": "NGD (gradient norm)", "gd": "GD"}
LOOPED = series_names.ZHANG2026_LOOPED
PREDICT_LOOPS = (1, 10, 100, 1000)  # loops at which `iclrepro predict` reports the query score


# ---------------------------------------------------------------------------
# Test sets, reference algorithms and metrics
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Reference:
    """A test set with what every metric needs: z (B, N, d), query, w_0 and the max margin."""

    z: torch.Tensor
    x_q: torch.Tensor
    y_q: torch.Tensor
    w0: torch.Tensor
    margin: theory.MaxMargin

    @classmethod
    def of(cls, prompts: dict[str, torch.Tensor]) -> "Reference":
        z, x_q, y_q = tasks.context(prompts)
        return cls(z, x_q, y_q, prompts["w0"], theory.max_margin(z))

    def stable_gd_eta(self) -> torch.Tensor:
        """Plain GD's classical stable step 1 / R^2 per prompt, R = max_i ||z_i|| (B, 1)."""
        return 1 / self.z.norm(dim=-1).amax(-1, keepdim=True) ** 2


def reference(layout: store.Layout, data_id: str) -> Reference:
    return Reference.of(tasks.read_test_set(layout.data(data_id), content=data_id)[1])


def algorithm(ref: Reference, steps: list[int], rule: str, eta: float, gd_eta: float) -> tuple[torch.Tensor, int]:
    """Iterates (K, B, d) of an explicit update rule from the test set's w_0, and the number of
    prompts on which plain GD overflowed at step gd_eta and ran at 1 / R^2 instead (0 for NGD)."""
    if rule != "gd":
        return theory.iterate(ref.z, ref.w0, eta, steps, rule), 0
    w = theory.iterate(ref.z, ref.w0, gd_eta, steps, rule)
    overflowed = ~torch.isfinite(w).all(dim=-1).all(dim=0)                              # (B,)
    if overflowed.any():
        w[:, overflowed] = theory.iterate(ref.z[overflowed], ref.w0[overflowed],
                                          ref.stable_gd_eta()[overflowed], steps, rule)
    return w, int(overflowed.sum())


def looped(W_KQ: torch.Tensor, W_PV: torch.Tensor, ref: Reference, steps: list[int]) -> torch.Tensor:
    """Query w-slots (K, S, B, d) of S layers looped over the test set (spec §2.3)."""
    H = models.embed(ref.z, ref.x_q, ref.w0)
    H = H.expand(W_KQ.shape[0], *H.shape)
    with torch.no_grad():
        return torch.stack([models.w_slot(state) for _, state in models.unroll(H, W_KQ, W_PV, steps)])


def scores(w: torch.Tensor, ref: Reference) -> dict[str, np.ndarray]:
    """Prompt means over the last-but-one axis of w (..., B, d): direction, margin, accuracy, norm."""
    found = {"direction_error": 1 - theory.cosine(w, ref.margin.u_bar),
             "margin_gap": ref.margin.gamma - theory.normalised_margin(w, ref.z),
             "accuracy": theory.query_correct(w, ref.x_q, ref.y_q),
             "w_norm": w.norm(dim=-1)}
    return {name: value.mean(-1).numpy() for name, value in found.items()}


def agreement(w: torch.Tensor, w_ngd: torch.Tensor) -> dict[str, np.ndarray]:
    """Looped w (K, S, B, d) against explicit NGD (K, B, d) on the same prompts."""
    cos = theory.cosine(w, w_ngd.unsqueeze(1))
    relative = (w - w_ngd.unsqueeze(1)).norm(dim=-1) / w_ngd.norm(dim=-1).unsqueeze(1).clamp_min(1e-300)
    return {"cos_ngd_min": cos.amin(-1).numpy(), "cos_ngd_mean": cos.mean(-1).numpy(),
            "rel_err_ngd": relative.amax(-1).numpy()}


def rows(steps: list[int], seeds: list[int] | None, labels: dict, **columns: np.ndarray) -> pd.DataFrame:
    """Long rows from arrays (K,) (no seed axis) or (K, S): one row per step (and seed)."""
    K = len(steps)
    if seeds is None:
        frame = pd.DataFrame({"T": steps, "seed": -1, **{k: np.asarray(v).reshape(K) for k, v in columns.items()}})
    else:
        frame = pd.DataFrame({"T": np.repeat(steps, len(seeds)), "seed": np.tile(seeds, K),
                              **{k: np.asarray(v).reshape(-1) for k, v in columns.items()}})
    return frame.assign(**labels)


def algorithm_rows(ref: Reference, steps: list[int], spec: dict, rules, labels: dict) -> pd.DataFrame:
    """Scores of explicit rules per step; `stable_step_prompts` counts GD's prompts run at 1 / R^2."""
    frames = []
    for rule in rules:
        w, fallbacks = algorithm(ref, steps, rule, spec["eta"], spec["gd_eta"])
        frames.append(rows(steps, None, dict(labels, series=RULE_NAMES[rule], source="algorithm",
                                             stable_step_prompts=fallbacks), **scores(w, ref)))
    return pd.concat(frames, ignore_index=True)


def trained_loop_rows(weights: tuple[torch.Tensor, torch.Tensor], seeds: list[int], ref: Reference,
                      steps: list[int], eta: float, labels: dict) -> pd.DataFrame:
    """The looped layer's scores and its agreement with explicit NGD, per seed and T."""
    w = looped(*weights, ref, steps)
    w_ngd = theory.iterate(ref.z, ref.w0, eta, steps, "ngd")
    return rows(steps, seeds, dict(labels, series=LOOPED, source=series_names.TRAINED),
                **scores(w, ref), **agreement(w, w_ngd))


def layer_weights(model: models.SoftmaxLayer) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return model.kq().detach(), model.pv().detach()


def snapshot_weights(model: models.SoftmaxLayer, state: dict) -> tuple[torch.Tensor, torch.Tensor]:
    model.load_state_dict(state)
    return layer_weights(model)


def kept_states(layout: store.Layout, cell: str, steps: list[int]) -> tuple[dict, models.SoftmaxLayer, dict]:
    """(spec, model, {step: state}) of a cell: its snapshots at `steps` and its final weights
    (a copy: loading a snapshot into `model` overwrites the tensors of its own state dict)."""
    spec, model, snapshots = models.load_cell(layout.cell_dir(cell))
    missing = sorted(set(steps) - set(snapshots))
    if missing:
        raise store.StoreError(f"{layout.cell(cell, 'model.pt')}: no snapshots at steps {missing}")
    states = {step: snapshots[step] for step in steps}
    states[spec["training"]["optimisation"]["steps"]] = {k: v.clone() for k, v in model.state_dict().items()}
    return spec, model, dict(sorted(states.items()))


# ---------------------------------------------------------------------------
# E1: the constructed transformer = NGD, and its convergence to the max margin
# ---------------------------------------------------------------------------

def depth(spec: dict, layout: store.Layout) -> pd.DataFrame:
    """E1: per N and depth L, the constructed transformer (with its largest deviation from
    explicit NGD over the prompts), the explicit rules and the rate reference lines."""
    frames = []
    for entry in spec["sets"]:
        ref = reference(layout, entry["data"])
        labels = {"N": entry["N"]}
        d = ref.z.shape[-1]
        W_KQ, W_PV = (W.unsqueeze(0) for W in models.construction(d, spec["eta"]))
        constructed = looped(W_KQ, W_PV, ref, spec["L"])[:, 0]                           # (K, B, d)
        ngd, _ = algorithm(ref, spec["L"], "ngd", spec["eta"], spec["gd_eta"])
        max_abs = (constructed - ngd).abs().amax(dim=(-1, -2)).numpy()
        frames.append(rows(spec["L"], None, dict(labels, series="constructed transformer", source="constructed"),
                           **scores(constructed, ref), max_abs_diff_ngd=max_abs))
        algorithms = algorithm_rows(ref, spec["L"], spec, spec["rules"], labels)
        frames += [algorithms, reference_rows(algorithms, labels)]
    return pd.concat(frames, ignore_index=True)


def reference_rows(algorithms: pd.DataFrame, labels: dict) -> pd.DataFrame:
    """C/L through NGD's and C/log L through GD's last point (spec §4 E1 reference lines)."""
    frames = []
    for series, rate in ((RULE_NAMES["ngd"], "1/L"), (RULE_NAMES["gd"], "1/log L")):
        curve = algorithms[algorithms["series"] == series].sort_values("T")
        if curve.empty:
            continue
        last = curve.iloc[-1]
        L = curve["T"].to_numpy()
        values = theory.rate_line(L, last["T"], last["direction_error"], rate)
        frames.append(rows(list(L), None, dict(labels, series=f"C {rate}", source="reference"),
                           direction_error=values))
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------------------
# E2, E3: training dynamics and the learned weights
# ---------------------------------------------------------------------------

def training(spec: dict, layout: store.Layout) -> pd.DataFrame:
    """Per step and seed: loss, distances to the construction, diagonal/off-diagonal means
    (column eta: the construction's V = eta I)."""
    cell = spec["cell"]
    steps = store.read_parquet(layout.cell(cell, "train.parquet"), content=cell).to_pandas()
    frame = steps.melt(id_vars=["step", "seed"], var_name="quantity", value_name="value").dropna()
    final = store.read_parquet(layout.cell(cell), content=cell).to_pandas()
    heldout = final[["seed", "heldout_loss"]].rename(columns={"heldout_loss": "value"})
    heldout = heldout.assign(step=int(steps["step"].max()), quantity="heldout_loss")
    return pd.concat([frame, heldout], ignore_index=True).assign(eta=spec["eta"])


def offblock_shares(W: torch.Tensor, seen: tuple) -> dict[str, np.ndarray]:
    """Per seed: the share of squared Frobenius mass of W (S, 2d, 2d) outside the (w, z) block,
    over the whole matrix and over the blocks the one-step loss sees (models.SEEN_BLOCKS)."""
    squared = {(r, c): models.block(W, r, c).norm(dim=(-1, -2)) ** 2 for r in (0, 1) for c in (0, 1)}

    def share(among) -> np.ndarray:
        outside = sum(squared[key] for key in among if key != (1, 0))
        return (outside / sum(squared[key] for key in among)).numpy()

    return {"offblock_fraction": share(list(squared)), "seen_offblock_fraction": share(seen)}


def weights(spec: dict, layout: store.Layout) -> pd.DataFrame:
    """Seed 0's full W^KQ and W^PV at the kept steps and at the end, next to the construction,
    plus per seed and step the share of squared mass outside the (w, z) block."""
    cell_spec, model, states = kept_states(layout, spec["cell"], spec["steps"])
    frames = []
    for step, state in states.items():
        W_KQ, W_PV = snapshot_weights(model, state)
        for matrix, W in (("W^KQ", W_KQ), ("W^PV", W_PV)):
            frames.append(theory.matrix_rows(W[0], part="entry", matrix=matrix, panel=f"step {step}", step=step))
            frames.append(pd.DataFrame({"part": "summary", "matrix": matrix, "step": step, "seed": cell_spec["seeds"],
                                        **offblock_shares(W, models.SEEN_BLOCKS[matrix])}))
    construction = store.read_parquet(layout.theory(PAPER, spec["theory"])).to_pandas()
    frames.append(construction.assign(part="entry", panel="construction", step=-1))
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------------------
# E4-E6: looping the trained layer in and out of distribution, and early checkpoints
# ---------------------------------------------------------------------------

def loop(spec: dict, layout: store.Layout) -> pd.DataFrame:
    """E4: the looped layer against NGD and GD on in-distribution prompts from w_0 = 0."""
    cell_spec, model, _ = models.load_cell(layout.cell_dir(spec["cell"]))
    ref = reference(layout, spec["data"])
    trained = trained_loop_rows(layer_weights(model), cell_spec["seeds"], ref, spec["T"], spec["eta"], {})
    return pd.concat([trained, algorithm_rows(ref, spec["T"], spec, ("ngd", "gd"), {})], ignore_index=True)


def ood(spec: dict, layout: store.Layout) -> pd.DataFrame:
    """E5: the same layer and explicit NGD on every shifted test set."""
    cell_spec, model, _ = models.load_cell(layout.cell_dir(spec["cell"]))
    frames = []
    for entry in spec["sets"]:
        ref = reference(layout, entry["data"])
        labels = {"family": entry["family"], "setting": entry["setting"]}
        frames.append(trained_loop_rows(layer_weights(model), cell_spec["seeds"], ref, spec["T"], spec["eta"], labels))
        frames.append(algorithm_rows(ref, spec["T"], spec, ("ngd",), labels))
    return pd.concat(frames, ignore_index=True)


def diagonal_mean(M: torch.Tensor) -> torch.Tensor:
    return torch.diagonal(M, dim1=-2, dim2=-1).mean(-1)


def identity_cosine(M: torch.Tensor) -> torch.Tensor:
    """cos(M, I) = tr(M) / (sqrt(d) ||M||_F) per seed: 1 exactly when M = c I with c > 0."""
    return torch.diagonal(M, dim1=-2, dim2=-1).sum(-1) / (M.shape[-1] ** 0.5 * M.norm(dim=(-1, -2)))


def early(spec: dict, layout: store.Layout) -> pd.DataFrame:
    """E6: each kept checkpoint looped, with its structure: mean diagonals of Q and V and
    how close they are to the construction's form, cos(Q, -I) and cos(V, I)."""
    cell_spec, model, states = kept_states(layout, spec["cell"], spec["checkpoints"])
    ref = reference(layout, spec["data"])
    frames = []
    for step, state in states.items():
        W_KQ, W_PV = snapshot_weights(model, state)
        Q, V = models.relevant_block(W_KQ), models.relevant_block(W_PV)
        structure = {"Q_diag": diagonal_mean(Q), "V_diag": diagonal_mean(V),
                     "Q_cos": -identity_cosine(Q), "V_cos": identity_cosine(V)}
        labels = {"checkpoint": step}
        frame = trained_loop_rows((W_KQ, W_PV), cell_spec["seeds"], ref, spec["T"], spec["eta"], labels)
        for name, value in structure.items():
            frame[name] = np.tile(value.numpy(), len(spec["T"]))
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------------------
# E7: attention concentrates on the support vectors (d = 2)
# ---------------------------------------------------------------------------

def support(spec: dict, layout: store.Layout) -> pd.DataFrame:
    """Per prompt: the tokens z_i with their SVM dual share alpha_i / sum alpha; per seed and T,
    the looped layer's iterate w_T, its attention p_i(w_T) over the context and the mass on
    the support vectors (alpha_i > 1e-6 max alpha)."""
    cell_spec, model, _ = models.load_cell(layout.cell_dir(spec["cell"]))
    ref = reference(layout, spec["data"])
    W_KQ, W_PV = layer_weights(model)
    alpha = ref.margin.alpha
    share = alpha / alpha.sum(-1, keepdim=True)                                               # (B, N)
    is_support = alpha > theory.SUPPORT_TOLERANCE * alpha.amax(-1, keepdim=True)
    H = models.embed(ref.z, ref.x_q, ref.w0).expand(W_KQ.shape[0], -1, -1, -1)
    frames = [token_rows(ref, share, is_support)]
    for T, state in models.unroll(H, W_KQ, W_PV, spec["T"]):
        p = models.attention(state[..., -1:, :], state[..., :-1, :], W_KQ)[..., 0, :]        # (S, B, N)
        frames.append(iterate_rows(T, cell_spec["seeds"], models.w_slot(state), p, is_support))
    return pd.concat(frames, ignore_index=True)


def token_rows(ref: Reference, share: torch.Tensor, is_support: torch.Tensor) -> pd.DataFrame:
    B, N, d = ref.z.shape
    prompt, token = np.indices((B, N))
    coordinates = {f"z{k + 1}": ref.z[..., k].numpy().reshape(-1) for k in range(d)}
    u_bar = {f"u{k + 1}": np.repeat(ref.margin.u_bar[:, k].numpy(), N) for k in range(d)}
    return pd.DataFrame({"part": "token", "prompt": prompt.reshape(-1), "i": token.reshape(-1), **coordinates,
                         **u_bar, "alpha_share": share.numpy().reshape(-1),
                         "support": is_support.numpy().reshape(-1)})


def iterate_rows(T: int, seeds: list[int], w: torch.Tensor, p: torch.Tensor, is_support) -> pd.DataFrame:
    """w (S, B, d) and attention p (S, B, N) at loop T: attention rows and one summary row per prompt."""
    S, B, N = p.shape
    seed, prompt, token = np.indices((S, B, N))
    attention = pd.DataFrame({"part": "attention", "T": T, "seed": np.asarray(seeds)[seed.reshape(-1)],
                              "prompt": prompt.reshape(-1), "i": token.reshape(-1), "p": p.numpy().reshape(-1)})
    seed, prompt = np.indices((S, B))
    mass = (p * is_support).sum(-1)
    summary = pd.DataFrame({"part": "iterate", "T": T, "seed": np.asarray(seeds)[seed.reshape(-1)],
                            "prompt": prompt.reshape(-1), "support_mass": mass.numpy().reshape(-1),
                            **{f"w{k + 1}": w[..., k].numpy().reshape(-1) for k in range(w.shape[-1])}})
    return pd.concat([attention, summary], ignore_index=True)


# ---------------------------------------------------------------------------
# Claims (spec abstract, §4, §5; issue 6) on the tidy data
# ---------------------------------------------------------------------------

def at_largest_T(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["T"] == frame["T"].max()]


def claim_construction(figs, cfg) -> list[verdicts.Claim]:
    built = figs["E1"][figs["E1"]["source"] == "constructed"]
    worst = float(built["max_abs_diff_ngd"].max(skipna=False))
    bound = cfg["construction_max_abs"]
    return [verdicts.Claim(
        "construction_equals_ngd", "E1", "the constructed L-layer transformer's output equals explicit NGD",
        worst, f"max |w_L - w_L^NGD| over L, prompts and N <= {bound:g}", verdicts.at_most(worst, bound))]


def claims_depth(figs, cfg) -> list[verdicts.Claim]:
    e1 = figs["E1"]
    algorithms = e1[e1["source"] == "algorithm"]
    errors = algorithms.groupby(["N", "T", "series"])["direction_error"].mean(skipna=False).unstack("series")
    ngd, gd = errors[RULE_NAMES["ngd"]], errors[RULE_NAMES["gd"]]
    steps = ngd.groupby(level="N").apply(lambda curve: float((curve.to_numpy()[1:] / curve.to_numpy()[:-1]).max()))
    slowest = float(steps.max(skipna=False))
    last, N = int(e1["T"].max()), cfg["N"]
    ratio = float(gd[(N, last)] / ngd[(N, last)])
    bound = cfg["ngd_over_gd_min"]
    return [
        verdicts.Claim("depth_improves_ngd", "E1", "more layers give a better direction: NGD's 1 - cos(w_L, u_bar) "
                       "falls with every step of the L grid", slowest,
                       "largest ratio of consecutive errors < 1 (every N)", slowest < 1),
        verdicts.Claim("ngd_faster_than_gd", "E1", f"NGD's direction error at L = {last} is far below GD's (N = {N})",
                       ratio, f"GD / NGD >= {bound:g}", ratio >= bound)]


def claims_training(figs, cfg) -> list[verdicts.Claim]:
    e2 = figs["E2"]
    last = e2[(e2["step"] == e2["step"].max())].pivot(index="seed", columns="quantity", values="value")
    loss = float(last["loss"].max(skipna=False))
    distance = float(last[["dist_Q", "dist_V"]].to_numpy().max())  # numpy's max: a NaN is the maximum
    return [
        verdicts.Claim("training_converges", "E2", "the one-step-supervised layer trains to (near) zero loss",
                       loss, f"last-step loss <= {cfg['final_loss_max']:g} (worst seed)",
                       verdicts.at_most(loss, cfg["final_loss_max"])),
        verdicts.Claim("reaches_construction", "E2", "the trained Q, V reach the construction Q* = -I, V* = eta I",
                       distance, f"max(||Q - Q*||_F, ||V - V*||_F) <= {cfg['distance_max']:g} (worst seed)",
                       verdicts.at_most(distance, cfg["distance_max"]))]


def claim_structure(figs, cfg) -> list[verdicts.Claim]:
    summary = figs["E3"][figs["E3"]["part"] == "summary"]
    worst = float(at_largest_T(summary.rename(columns={"step": "T"}))["seen_offblock_fraction"].max(skipna=False))
    bound = cfg["offblock_fraction_max"]
    return [verdicts.Claim(
        "weights_structured", "E3", "trained full W^KQ, W^PV concentrate on the (w-row, z-column) block "
        "(among the blocks the one-step loss sees; the other four get no gradient)",
        worst, f"squared Frobenius share outside it <= {bound:g} (worst seed and matrix)",
        verdicts.at_most(worst, bound))]


def claim_loop(figs, cfg) -> list[verdicts.Claim]:
    looped_rows = figs["E4"][figs["E4"]["series"] == LOOPED]
    worst = float(1 - looped_rows["cos_ngd_min"].min(skipna=False))  # shown as 1 - cos: the cosine prints as 1
    bound = cfg["loop_cosine_min"]
    return [verdicts.Claim(
        "loop_tracks_ngd", "E4", "the layer trained on one step, looped T times, tracks T steps of NGD",
        worst, f"1 - cos(loop_T, NGD_T) <= {1 - bound:g} (cos >= {bound}) for every T, seed and prompt",
        verdicts.at_most(worst, 1 - bound))]


def reductions(frame: pd.DataFrame, by: list[str]) -> pd.Series:
    """Looped direction error at the smallest T over that at the largest, per `by` group."""
    looped_rows = frame[frame["series"] == LOOPED]
    errors = looped_rows.groupby(by + ["T"])["direction_error"].mean(skipna=False).unstack("T")
    return errors[errors.columns.min()] / errors[errors.columns.max()]


def reduction_text(frame: pd.DataFrame, bound: float) -> str:
    return f"error(T={int(frame['T'].min())}) / error(T={int(frame['T'].max())}) >= {bound:g}"


def claim_ood(figs, cfg) -> list[verdicts.Claim]:
    lowest, at = verdicts.worst(reductions(figs["E5"], ["family", "setting", "seed"]), largest=False)
    bound = cfg["ood_reduction_min"]
    return [verdicts.Claim(
        "ood_converges", "E5", "under every shift the looped layer still converges to the max-margin direction",
        lowest, f"{reduction_text(figs['E5'], bound)} for every shift and seed (worst: {at[1]})",
        lowest >= bound)]


def claim_early(figs, cfg) -> list[verdicts.Claim]:
    e6 = figs["E6"]
    cosine = cfg["structure_cosine_min"]
    shaped = e6[np.minimum(e6["Q_cos"], e6["V_cos"]) >= cosine]
    ratio = reductions(shaped, ["checkpoint", "seed"]) if not shaped.empty else pd.Series(dtype=float)
    unmeasured = e6[["Q_cos", "V_cos"]].isna().to_numpy().any()  # a NaN cosine cannot say "shaped or not"
    measured = float("nan") if unmeasured or ratio.empty else float(ratio.min(skipna=False))
    bound = cfg["ood_reduction_min"]
    return [verdicts.Claim(
        "early_checkpoints_converge", "E6", f"checkpoints already shaped like the construction (cos(Q, -I) and "
        f"cos(V, I) >= {cosine}: {len(ratio)} of {e6.groupby(['checkpoint', 'seed']).ngroups} checkpoint-seeds), "
        "looped, converge to u_bar", measured, reduction_text(e6, bound),
        not np.isnan(measured) and measured >= bound)]


def claim_support(figs, cfg) -> list[verdicts.Claim]:
    iterates = figs["E7"][figs["E7"]["part"] == "iterate"]
    last = at_largest_T(iterates)
    # the mean, not the worst prompt: a non-support point's weight decays like exp(-||w_T|| delta)
    # with delta its margin excess, which a random prompt can make arbitrarily small
    mass = float(last["support_mass"].mean(skipna=False))
    bound = cfg["support_mass_min"]
    return [verdicts.Claim(
        "attention_on_support_vectors", "E7", "the looped layer's attention concentrates on the support vectors",
        mass, f"mean attention mass on support vectors at T = {int(last['T'].iloc[0])} >= {bound} "
        f"(over {last.groupby(['prompt', 'seed']).ngroups} prompt-seeds)", mass >= bound)]


CLAIMS = (claim_construction, claims_depth, claims_training, claim_structure, claim_loop, claim_ood,
          claim_early, claim_support)


def claims(spec: dict, node_id: str, results: str, out: str) -> None:
    """Claims stage: check every claim on the tidy figure data."""
    stages.write_claims(PAPER, CLAIMS, spec, node_id, results, out)


KINDS = {"depth": depth, "training": training, "weights": weights, "loop": loop, "ood": ood,
         "early": early, "support": support}


def tidy(spec: dict, node_id: str, results: str, out: str) -> None:
    """Tidy stage: one figure's data as Parquet (what its drawing shows)."""
    stages.write_tidy(KINDS, spec, node_id, results, out)


def predict(cell_dir: str, prompts_path: str, out: str) -> None:
    """Loop a trained cell's layers on a test set of the task's schema: per prompt, seed and
    loop count in PREDICT_LOOPS, the query score <w_T, x_q> and the predicted label."""
    spec, model, _ = models.load_cell(cell_dir)
    prompt_spec, prompts = tasks.read_test_set(prompts_path)
    if prompt_spec["distribution"]["d"] != spec["distribution"]["d"]:
        raise store.StoreError(f"{prompts_path}: prompts have d={prompt_spec['distribution']['d']}, "
                               f"the cell was trained with d={spec['distribution']['d']}")
    z, x_q, y_q = tasks.context(prompts)
    H = models.embed(z, x_q, prompts["w0"])
    W_KQ, W_PV = layer_weights(model)
    frames = []
    for T, state in models.unroll(H.expand(W_KQ.shape[0], *H.shape), W_KQ, W_PV, PREDICT_LOOPS):
        score = (models.w_slot(state) * x_q).sum(-1)                                         # (S, B)
        rows = stages.prediction_rows(score.shape, spec["seeds"], ("prompt",))
        frames.append(pd.DataFrame({**rows, "T": T, "score": score.numpy().reshape(-1),
                                    "y_hat": np.sign(score.numpy()).reshape(-1),
                                    "y_query": y_q.numpy()[rows["prompt"]]}))
    stages.write_predictions(pd.concat(frames, ignore_index=True), out, {"cell": spec, "prompts": prompt_spec})
