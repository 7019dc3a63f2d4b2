"""chen2024 evaluation: tidy figure data (spec §4, §6), the claim checks and `predict`.

Excess risk is always measured against the noiseless target <w*, x_q> at the query of a
prefix with n examples, averaged over the prompts of a test set (the transformer predicts
every prefix at once, spec §3). The trained models run on the config's accelerator (the
tidy spec's `device`): at the paper scale the masking and probing passes are far too many for
a CPU. Figures:

* risk_vs_n:   trained models' excess risk per n, one line per head count H (Fig. 1b)
* importance:  head masking (spec §4.1): I_{l,h} = R_{l,h} - R_full, clipped at 0 and
               normalised within each layer (Fig. 1c)
* depth_noise: pruning (every head of layer 1, the top head of each later layer) and
               per-layer linear probes of the query's residual stream (spec §4.2-4.3), with
               GD after l steps and PtO after l - 1 at layer l (spec §6 overlay), for each
               (L, sigma) of the appendix grid and the main one
* prune_probe: the main (L, sigma)'s rows of depth_noise (Fig. 1d), computed once, there
* algorithms:  PtO vs GD vs ridge vs Lasso vs OLS across n and sigma, hyperparameters tuned on
               a held-out set and recorded per row (spec §5, the p.8 figure)
* dimension:   the same algorithms against d at fixed s, n and sigma (appendix pp.32-33)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from iclrepro import series_names, store
from iclrepro.accelerator import device_of
from iclrepro.baselines import regression
from iclrepro.baselines.tuning import lowest
from iclrepro.evaluation import claims as verdicts
from iclrepro.evaluation import stages
from iclrepro.models import chen2024 as models
from iclrepro.series_names import BASELINE, THEORY, TRAINED
from iclrepro.tasks import chen2024 as tasks

PAPER = "chen2024"
FULL, PRUNED, SINGLE = series_names.CHEN2024_MODELS
GD_STEPS, PTO_STEPS = "GD, l steps", "PtO, l - 1 steps"   # the probe figures' algorithm rows
PTO_TUNED, GD_TUNED, RIDGE = "PtO (tuned T)", "GD (tuned T)", "ridge"   # methods the claims compare


def prompts_of(layout: store.Layout, data_id: str) -> dict[str, torch.Tensor]:
    return tasks.read_test_set(layout.data(data_id), content=data_id)[1]


def load_model(layout: store.Layout, cell_id: str, device: torch.device) -> tuple[dict, models.Transformer]:
    spec, model = models.load_cell(layout.cell_dir(cell_id))
    return spec, model.to(device)


def query_risk(predictions: torch.Tensor, prompts: dict[str, torch.Tensor], n: int) -> torch.Tensor:
    """Mean excess risk of predictions (..., B) at the query after n examples -> (...)."""
    return ((predictions - tasks.clean(prompts)[:, n]) ** 2).mean(-1)


def predictions(model: models.Transformer, prompts: dict[str, torch.Tensor], mask: torch.Tensor | None = None):
    """(S, B, K) with the head mask `mask` (S, L, H) (all heads when None)."""
    model.head_mask.fill_(1.0) if mask is None else model.head_mask.copy_(mask)
    return models.predict(model, prompts["x"], prompts["y"])


# ---------------------------------------------------------------------------
# Fig. 1(b): risk vs n per head count (read from the cells' held-out scores)
# ---------------------------------------------------------------------------

def risk_vs_n(spec: dict, layout: store.Layout) -> pd.DataFrame:
    frames = [store.read_parquet(layout.cell(entry["cell"]), content=entry["cell"]).to_pandas().assign(H=entry["H"])
              for entry in spec["cells"]]
    return pd.concat(frames, ignore_index=True)[["H", "seed", "n", "excess_risk"]]


# ---------------------------------------------------------------------------
# Fig. 1(c): head importance by masking
# ---------------------------------------------------------------------------

def blocks_from(model: models.Transformer, h: torch.Tensor, first: int, n: int) -> torch.Tensor:
    """Predictions (S, b) at the query after n examples of the blocks from `first` on under the
    model's head mask, given the residual stream h (S, b, T, D) entering that block. The last
    block runs at that query's token alone, 0.4 of its time at every query token (which agrees
    to float32 rounding, ~3e-7)."""
    *middle, last = range(first, len(model.blocks))
    for layer in middle:
        h = model.blocks[layer](h, model.head_mask[:, layer])
    query = slice(2 * n, 2 * n + 1)                                        # models.QUERY_TOKENS' n-th
    return model.readout(model.blocks[last](h, model.head_mask[:, last], query))[..., 0]


def masked_predictions(model: models.Transformer, prompts, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions at the query after n examples with all heads (S, B) and with each head masked
    alone (L, H, S, B), those of a pass per mask (to float32 rounding: blocks_from).

    Masking a head changes nothing before its layer, so in each evaluation pass the blocks
    before a layer run once, unmasked, for all of its heads: L + H L (L + 1) / 2 blocks where a
    pass per mask runs L (1 + L H), 0.59 of them at L = 6, H = 8. The read-in and the blocks
    are called here, not from a method of the model: models/chen2024.py is in every chen2024
    cell's id, so a change there would retrain them all."""
    S, L, H = model.head_mask.shape
    model.head_mask.fill_(1.0)
    x, y, full, masked = prompts["x"], prompts["y"], [], []
    with torch.no_grad():
        for rows in models.passes(model, x):
            z = models.tokens(x[rows], y[rows])
            h = model.read_in(z.expand(S, *z.shape)) + model.positions[:, :, :z.shape[-2]]   # entering layer 1
            masked.append(torch.empty(L, H, S, len(z), device=x.device))
            for layer in range(L):
                for head in range(H):
                    model.head_mask[:, layer, head] = 0.0
                    masked[-1][layer, head] = blocks_from(model, h, layer, n)
                    model.head_mask[:, layer, head] = 1.0
                if layer < L - 1:
                    h = model.blocks[layer](h, model.head_mask[:, layer])                 # unmasked, into the next
            full.append(blocks_from(model, h, L - 1, n))
    return torch.cat(full, -1), torch.cat(masked, -1)


def masked_risks(model: models.Transformer, prompts, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Risk with all heads (S,) and with head (l, h) masked (S, L, H), on the CPU."""
    full, masked = masked_predictions(model, prompts, n)
    return query_risk(full, prompts, n).cpu(), query_risk(masked, prompts, n).permute(2, 0, 1).contiguous().cpu()


def shares(full: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Importance normalised within each layer (S, L, H). A head whose removal lowers the risk
    counts as 0 (clipped), so shares stay in [0, 1]; a layer where no head matters is uniform."""
    importance = (masked - full[:, None, None]).clamp_min(0)
    total = importance.sum(-1, keepdim=True)
    uniform = torch.full_like(importance, 1 / importance.shape[-1])
    return torch.where(total > 0, importance / total.clamp_min(1e-30), uniform)


def importance(spec: dict, layout: store.Layout) -> pd.DataFrame:
    """Per seed, layer and head: masked risk, importance, share and rank within the layer (0 = top)."""
    device = device_of(spec["device"])
    cell_spec, model = load_model(layout, spec["cell"], device)
    full, masked = masked_risks(model, models.moved(prompts_of(layout, spec["data"]), device), spec["n"])
    share = shares(full, masked)
    rank = share.argsort(-1, descending=True).argsort(-1)
    S, L, H = masked.shape
    seed, layer, head = np.indices((S, L, H))
    return pd.DataFrame({"seed": np.asarray(cell_spec["seeds"])[seed.reshape(-1)], "layer": layer.reshape(-1) + 1,
                         "head": head.reshape(-1) + 1, "risk": masked.numpy().reshape(-1),
                         "risk_full": full.numpy()[seed.reshape(-1)],
                         "importance": (masked - full[:, None, None]).numpy().reshape(-1),
                         "share": share.numpy().reshape(-1), "rank": rank.numpy().reshape(-1), "n": spec["n"]})


# ---------------------------------------------------------------------------
# Fig. 1(d) and the depth/noise variant: pruning and per-layer probing
# ---------------------------------------------------------------------------

def pruning_mask(share: torch.Tensor) -> torch.Tensor:
    """Keep every head of layer 1 and the top head of each later layer: (S, L, H) of 0/1."""
    mask = torch.nn.functional.one_hot(share.argmax(-1), share.shape[-1]).float()
    mask[:, 0] = 1.0
    return mask


def query_features(model: models.Transformer, prompts, n: int, mask=None):
    """Per evaluation pass, its prompt range and the probes' features: the residual stream at the
    query after n examples and an intercept column, per layer 0..L: (L+1, S, b, D+1) in float64."""
    model.head_mask.fill_(1.0) if mask is None else model.head_mask.copy_(mask)
    x, y = prompts["x"], prompts["y"]
    for rows in models.passes(model, x):
        with torch.no_grad():
            states = torch.stack([h[..., n, :] for h in model.hidden(models.tokens(x[rows], y[rows]))]).double()
        yield rows, torch.cat([states, torch.ones_like(states[..., :1])], -1)


def probe_risks(model, train, test, n: int, ridge: float, mask=None) -> np.ndarray:
    """Excess risk (S, L+1) of a ridge probe per layer: fitted from the query's state to y_q on
    `train`, scored against <w*, x_q> on `test` (spec §4.3); an intercept column is included.
    The normal equations and the squared errors are summed pass by pass: held at once, every
    layer's states of a paper-scale probe set (50,000 prompts) took 3.5-4.6 GB."""
    y, gram, moment = train["y"][:, n].double(), 0, 0
    for rows, features in query_features(model, train, n, mask):
        gram = gram + features.mT @ features                                            # (L+1, S, D+1, D+1)
        moment = moment + features.mT @ y[rows, None]                                   # (L+1, S, D+1, 1)
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    w = torch.linalg.solve(gram + ridge * len(y) * eye, moment)
    target, squared = tasks.clean(test)[:, n].double(), 0
    for rows, features in query_features(model, test, n, mask):
        squared = squared + (((features @ w).squeeze(-1) - target[rows]) ** 2).sum(-1)  # (L+1, S)
    return (squared / len(target)).T.cpu().numpy()


def probe_rows(label: str, seeds, model, prompts: tuple, n: int, ridge: float, mask=None) -> pd.DataFrame:
    """Long rows (seed, layer 0..L) of one model's probe risks and its own output risk."""
    train, test = prompts
    probe = probe_risks(model, train, test, n, ridge, mask)                             # (S, L+1)
    output = query_risk(predictions(model, test, mask)[..., n], test, n).cpu().numpy()  # (S,)
    S, layers = probe.shape
    seed, layer = np.indices((S, layers))
    return pd.DataFrame({"model": label, "seed": np.asarray(seeds)[seed.reshape(-1)], "layer": layer.reshape(-1),
                         "probe_risk": probe.reshape(-1), "output_risk": output[seed.reshape(-1)]})


def step_rows(sets: tuple, n: int, etas, layers: int) -> pd.DataFrame:
    """The algorithms a layer would run by the theory (spec §6, the p.8 overlay): at layer l,
    GD after l steps and PtO after l - 1 (layer 1 preprocesses, each later layer is one step).
    The step size is tuned per step count on the first set (the probe-training set) and the
    risk scored on the second (the test set), like the probes."""
    rows = []
    for label, method, preprocessing_layers in ((GD_STEPS, regression.gd_query_errors, 0),
                                                 (PTO_STEPS, regression.pto_query_errors, 1)):
        tuned, scored = (path_risks(method, prompts, n, etas, layers) for prompts in sets)   # (E, T) each
        for layer in range(preprocessing_layers + 1, layers + 1):
            step = layer - preprocessing_layers - 1
            best = lowest(tuned[:, step], f"{label} at layer {layer}, n = {n}")
            rows.append({"model": label, "layer": layer, "probe_risk": float(scored[best, step]), "eta": etas[best]})
    return pd.DataFrame(rows)


def variant_rows(entry: dict, spec: dict, layout: store.Layout) -> pd.DataFrame:
    """Full, pruned (chosen by importance on the probe-training set) and single-head models,
    and the GD / PtO steps their layers are compared with (those on the CPU)."""
    device = device_of(spec["device"])
    sets = (prompts_of(layout, entry["probe"]), prompts_of(layout, entry["data"]))
    on_device = tuple(models.moved(prompts, device) for prompts in sets)
    n, ridge = spec["n"], spec["ridge"]
    full_spec, full = load_model(layout, entry["full"], device)
    mask = pruning_mask(shares(*masked_risks(full, on_device[0], n)))
    single_spec, single = load_model(layout, entry["single"], device)
    frames = [probe_rows(FULL, full_spec["seeds"], full, on_device, n, ridge),
              probe_rows(PRUNED, full_spec["seeds"], full, on_device, n, ridge, mask),
              probe_rows(SINGLE, single_spec["seeds"], single, on_device, n, ridge),
              step_rows(sets, n, spec["eta"], entry["L"])]
    return pd.concat(frames, ignore_index=True).assign(L=entry["L"], sigma=entry["sigma"], n=n)


def probing(spec: dict, layout: store.Layout) -> pd.DataFrame:
    frame = pd.concat([variant_rows(entry, spec, layout) for entry in spec["variants"]], ignore_index=True)
    return frame.astype({"seed": "Int64"})   # the algorithm rows have no seed


def main_variant(spec: dict, layout: store.Layout) -> pd.DataFrame:
    """The rows of one (L, sigma) of a pruning-and-probing table (the main models' of depth_noise)."""
    path = layout.tidy(PAPER, spec["table"])
    frame = store.read_parquet(path).to_pandas()
    rows = frame[(frame["L"] == spec["L"]) & (frame["sigma"] == spec["sigma"])]
    if rows.empty:
        raise store.StoreError(f"{path} has no rows at L = {spec['L']}, sigma = {spec['sigma']}")
    return rows.reset_index(drop=True)


# ---------------------------------------------------------------------------
# The algorithms figure: PtO vs GD vs ridge vs Lasso vs OLS, tuned on a held-out set
# ---------------------------------------------------------------------------

def context(prompts: dict[str, torch.Tensor], n: int):
    """(x (B, n, d), y (B, n), x_q (B, d), w*) in float64."""
    x, y = prompts["x"].double(), prompts["y"].double()
    return x[:, :n], y[:, :n], x[:, n], prompts["w_star"].double()


def weight_risk(w: torch.Tensor, x_q: torch.Tensor, w_star: torch.Tensor) -> torch.Tensor:
    """Mean (<w - w*, x_q>)^2 over prompts, for weights (..., B, d)."""
    return (((w - w_star) * x_q).sum(-1) ** 2).mean(-1)


def path_risks(method, prompts, n: int, etas, steps: int) -> torch.Tensor:
    """Risk of GD or PtO (`method` = regression.gd_query_errors / pto_query_errors) per step size
    and step: (E, T)."""
    x, y, x_q, w_star = context(prompts, n)
    return method(x, y, x_q, (w_star * x_q).sum(-1), etas, steps)


def penalised_risks(prompts, n: int, kind: str, values, lasso_steps: int) -> torch.Tensor:
    x, y, x_q, w_star = context(prompts, n)
    if kind == "ridge":
        fits = torch.stack([regression.ridge_weights(x, y, n * lam) for lam in values])
    else:
        fits = regression.lasso_weights(x, y, values, lasso_steps)
    return weight_risk(fits, x_q, w_star)                                                # (values,)


def tuned_iterative(name: str, method, sets, n: int, grids: dict, fixed_T: int | None) -> dict:
    """Pick (eta, T) on the tuning set (T fixed when `fixed_T`), report the test risk."""
    tune, test = sets
    steps = fixed_T or grids["steps"]
    chosen = path_risks(method, tune, n, grids["eta"], steps)
    if fixed_T:
        chosen = chosen[:, -1:]
    e, t = divmod(lowest(chosen, f"{name} at n = {n}"), chosen.shape[1])
    T = fixed_T or t + 1
    risk = path_risks(method, test, n, [grids["eta"][e]], T)[0, -1]
    return {"method": name, "excess_risk": float(risk), "eta": grids["eta"][e], "T": T}


def tuned_penalised(name: str, kind: str, sets, n: int, values, lasso_steps: int, column: str) -> dict:
    tune, test = sets
    best = values[lowest(penalised_risks(tune, n, kind, values, lasso_steps), f"{name} at n = {n}")]
    return {"method": name, "excess_risk": float(penalised_risks(test, n, kind, [best], lasso_steps)[0]),
            column: best}


def baseline_rows(sets, n: int, spec: dict) -> list[dict]:
    grids, L = spec["grids"], spec["T_layers"]
    x, y, x_q, w_star = context(sets[1], n)
    ols = float(weight_risk(regression.ridge_weights(x, y, 0.0), x_q, w_star))
    return [
        tuned_iterative(PTO_TUNED, regression.pto_query_errors, sets, n, grids, None),
        tuned_iterative(f"PtO (T = {L})", regression.pto_query_errors, sets, n, grids, L),
        tuned_iterative(GD_TUNED, regression.gd_query_errors, sets, n, grids, None),
        tuned_iterative(f"GD (T = {L})", regression.gd_query_errors, sets, n, grids, L),
        tuned_penalised(RIDGE, "ridge", sets, n, grids["ridge_lambda"], 0, "lam"),
        tuned_penalised("Lasso", "lasso", sets, n, grids["lasso_alpha"], grids["lasso_steps"], "alpha"),
        {"method": "OLS (min-norm)", "excess_risk": ols},
    ]


def transformer_rows(entry: dict, layout: store.Layout, grid) -> pd.DataFrame:
    risk = risk_vs_n({"cells": [{"cell": entry["cell"], "H": 0}]}, layout)
    risk = risk[risk["n"].isin(grid)].groupby("n", as_index=False)["excess_risk"].mean(skipna=False)
    return risk.assign(method=f"transformer (H = {entry['H']})", source=TRAINED, sigma=entry["sigma"])


def algorithms(spec: dict, layout: store.Layout) -> pd.DataFrame:
    """Per sigma and n: every baseline (source 'baseline', chosen hyperparameters in eta, T, lam,
    alpha), the trained transformer at its own sigma, and the OLS closed form (source 'theory')."""
    frames = []
    for entry in spec["sets"]:
        sets = (prompts_of(layout, entry["tune"]), prompts_of(layout, entry["test"]))
        rows = [dict(row, n=n) for n in spec["n"] for row in baseline_rows(sets, n, spec)]
        frames.append(pd.DataFrame(rows).assign(sigma=entry["sigma"], source=BASELINE))
    frames += [transformer_rows(entry, layout, spec["n"]) for entry in spec["transformers"]]
    theory = store.read_parquet(layout.theory(PAPER, spec["theory"])).to_pandas().dropna()
    frames.append(theory[theory["n"].isin(spec["n"])].assign(method="OLS theory", source=THEORY))
    frame = pd.concat(frames, ignore_index=True)
    return frame.reindex(columns=["sigma", "n", "method", "source", "excess_risk", "eta", "T", "lam", "alpha"])


def dimension(spec: dict, layout: store.Layout) -> pd.DataFrame:
    """Per d: every baseline at the prompts' n, tuned on that d's own held-out set."""
    frames = []
    for entry in spec["sets"]:
        sets = (prompts_of(layout, entry["tune"]), prompts_of(layout, entry["test"]))
        frames.append(pd.DataFrame(baseline_rows(sets, spec["n"], spec)).assign(d=entry["d"]))
    frame = pd.concat(frames, ignore_index=True).assign(n=spec["n"], s=spec["s"], sigma=spec["sigma"])
    return frame.reindex(columns=["d", "s", "n", "sigma", "method", "excess_risk", "eta", "T", "lam", "alpha"])


# ---------------------------------------------------------------------------
# Claims (spec §4, §6; issue 3) on the tidy data
# ---------------------------------------------------------------------------

def sorted_shares(frame: pd.DataFrame) -> pd.DataFrame:
    """Seed-mean share of the r-th most important head of each layer (heads are unordered,
    so seeds are compared rank by rank): index layer, columns rank 0 (top), 1, ..."""
    return frame.groupby(["layer", "rank"])["share"].mean(skipna=False).unstack("rank")


def claims_head_importance(figs, cfg) -> list[verdicts.Claim]:
    ranked = sorted_shares(figs["importance"])
    first = ranked.loc[1]
    spread = float("nan") if first.isna().any() else float((first >= cfg["head_share_min"]).sum())
    dominance, _ = verdicts.worst(ranked.loc[ranked.index > 1, 0], largest=False)
    return [
        verdicts.Claim("layer1_spreads", "importance", "layer 1 spreads its importance over several heads",
                       spread, f">= 2 heads with a normalised share >= {cfg['head_share_min']:g} "
                       "(seed mean, rank by rank)", spread >= 2),
        verdicts.Claim("later_layers_one_head", "importance", "every later layer is dominated by one head",
                       dominance, f"top-head share >= {cfg['top_share_min']:g} in every layer >= 2 (seed mean)",
                       verdicts.within(dominance, cfg["top_share_min"], 1.0))]


def output_risks(frame: pd.DataFrame) -> pd.DataFrame:
    """Seed-mean output risk per (L, sigma) and model: columns full, pruned, single-head."""
    frame = frame[frame["model"].isin([FULL, PRUNED, SINGLE])]
    last = frame[frame["layer"] == frame.groupby(["L", "sigma"])["layer"].transform("max")]
    return last.groupby(["L", "sigma", "model"])["output_risk"].mean(skipna=False).unstack("model")


def claims_pruning(figs, cfg) -> list[verdicts.Claim]:
    main = output_risks(figs["prune_probe"]).iloc[0]
    gap = float(main[PRUNED] / main[FULL] - 1)
    advantage = float(main[SINGLE] / main[PRUNED])
    every = output_risks(figs["depth_noise"])
    worst, _ = verdicts.worst(every[PRUNED] / every[FULL] - 1)
    margin = cfg["pruned_margin"]
    return [
        verdicts.Claim("pruned_matches_full", "prune_probe", "the pruned model (all heads of layer 1, the top head "
                       "of each later layer) keeps the full model's risk", gap,
                       f"risk(pruned) / risk(full) - 1 <= {margin:g}", verdicts.at_most(gap, margin)),
        verdicts.Claim("pruned_beats_single", "prune_probe", "the pruned model is clearly better than a "
                       "single-head model of the same depth", advantage,
                       f"risk(single-head) / risk(pruned) >= {cfg['single_over_pruned_min']:g}",
                       advantage >= cfg["single_over_pruned_min"]),
        verdicts.Claim("pruned_matches_full_every_variant", "depth_noise", "pruning keeps the risk at every depth "
                       "and noise level", worst, f"worst risk(pruned) / risk(full) - 1 <= {margin:g}",
                       verdicts.at_most(worst, margin))]


def claims_pto(figs, cfg) -> list[verdicts.Claim]:
    """PtO against GD and against ridge (each tuned on the held-out set) where n < d or sigma > 0."""
    frame = figs["algorithms"]
    risk = frame[frame["source"] == BASELINE].pivot(index=["sigma", "n"], columns="method", values="excess_risk")
    d = cfg["d"]
    where = risk[(risk.index.get_level_values("n") < d) | (risk.index.get_level_values("sigma") > 0)]
    found = []
    for rival in (GD_TUNED, RIDGE):
        ratio = where[PTO_TUNED] / where[rival]
        worst, at = verdicts.worst(ratio)
        at = (float("nan"), float("nan")) if at is None else at
        found.append(verdicts.Claim(
            f"pto_beats_{rival.split()[0].lower()}", "algorithms", f"PtO beats {rival} where n < d or sigma > 0 "
            f"(d = {d}; {len(ratio)} (sigma, n) points, hyperparameters tuned on a held-out set)", worst,
            f"worst PtO / {rival} < 1 (worst at sigma = {at[0]:g}, n = {at[1]:g})", worst < 1))
    return found


def claim_dimension(figs, cfg) -> list[verdicts.Claim]:
    """PtO's risk grows with d more slowly than tuned GD's and ridge's (spec §6-7: like log d vs d)."""
    risk = figs["dimension"].pivot(index="d", columns="method", values="excess_risk")
    growth = risk.iloc[-1] / risk.iloc[0]
    rivals = growth[[GD_TUNED, RIDGE]]
    measured = float(growth[PTO_TUNED] / rivals.min(skipna=False))
    d_min, d_max = risk.index.min(), risk.index.max()
    return [verdicts.Claim(
        "pto_grows_slowest_with_d", "dimension", f"PtO's risk grows with d more slowly than GD's and ridge's "
        f"(d = {d_min} to {d_max}; risk growth: PtO {growth['PtO (tuned T)']:.3g}, GD {rivals.iloc[0]:.3g}, "
        f"ridge {rivals.iloc[1]:.3g})", measured,
        "risk(d max) / risk(d min) of PtO over the smaller of GD's and ridge's < 1", measured < 1)]


def claim_more_heads_lower_risk(figs, cfg) -> list[verdicts.Claim]:
    risk = figs["risk_vs_n"].groupby(["H", "n"])["excess_risk"].mean(skipna=False).unstack("H")
    most, fewest = risk.columns.max(), risk.columns.min()
    at_large_n = risk[risk.index >= cfg["d"]]
    worst, _ = verdicts.worst(at_large_n[most] / at_large_n[fewest])
    return [verdicts.Claim(
        "more_heads_lower_risk", "risk_vs_n", f"more heads lower the risk once n >= d (H = {most} vs H = {fewest})",
        worst, f"worst risk(H = {most}) / risk(H = {fewest}) over n >= {cfg['d']} < 1", worst < 1)]


CLAIMS = (claims_head_importance, claims_pruning, claims_pto, claim_dimension, claim_more_heads_lower_risk)


def claims(spec: dict, node_id: str, results: str, out: str) -> None:
    """Claims stage: check every claim on the tidy figure data."""
    stages.write_claims(PAPER, CLAIMS, spec, node_id, results, out)


KINDS = {"risk_vs_n": risk_vs_n, "importance": importance, "probing": probing, "main_variant": main_variant,
         "algorithms": algorithms, "dimension": dimension}


def tidy(spec: dict, node_id: str, results: str, out: str) -> None:
    """Tidy stage: one figure's data as Parquet (what its drawing shows)."""
    stages.write_tidy(KINDS, spec, node_id, results, out)


def predict(cell_dir: str, prompts_path: str, out: str) -> None:
    """Run a trained cell on a test set: per prompt, seed and n, the prediction and the noiseless target."""
    spec, model = models.load_cell(cell_dir)
    prompt_spec, prompts = tasks.read_test_set(prompts_path)
    if (prompt_spec["task"]["d"], prompt_spec["task"]["n"]) != (spec["task"]["d"], spec["task"]["n"]):
        raise store.StoreError(f"{prompts_path}: prompts have d, n = {prompt_spec['task']['d']}, "
                               f"{prompt_spec['task']['n']}; the cell was trained with {spec['task']['d']}, "
                               f"{spec['task']['n']}")
    guess = predictions(model, prompts).numpy()                                         # (S, B, K)
    rows = stages.prediction_rows(guess.shape, spec["seeds"], ("prompt", "n"))
    frame = pd.DataFrame({**rows, "prediction": guess.reshape(-1),
                          "target": tasks.clean(prompts).numpy()[rows["prompt"], rows["n"]]})
    stages.write_predictions(frame, out, {"cell": spec, "prompts": prompt_spec})
