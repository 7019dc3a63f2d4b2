"""deora2023 evaluation: tidy figure data (spec §4 E1-E5, T1), the claim checks and `predict`.

Training curves come from the cells' train.parquet (loss every step; test loss and error,
training error, distance from initialisation on a log grid). Margins (spec T5) are computed
here from each cell's stored initialisation (its step-0 snapshot) and its seeds' training
sets; the one-step initialisation of E4 (a) is applied to the random one with the
configured step, exactly as training applies it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from iclrepro import store
from iclrepro.evaluation import claims as verdicts
from iclrepro.evaluation import stages
from iclrepro.models import deora2023 as models
from iclrepro.tasks import deora2023 as tasks
from iclrepro.theory import deora2023 as theory

PAPER = "deora2023"


# ---------------------------------------------------------------------------
# Cells, their data and their margins at initialisation
# ---------------------------------------------------------------------------

def curves(layout: store.Layout, cell: str, labels: dict) -> pd.DataFrame:
    """Per step and seed: training loss (before the step) and the traced quantities (NaN off the grid)."""
    frame = store.read_parquet(layout.cell(cell, "train.parquet"), content=cell).to_pandas()
    return frame.assign(**labels)


def final(layout: store.Layout, cell: str, labels: dict) -> pd.DataFrame:
    return store.read_parquet(layout.cell(cell), content=cell).to_pandas().assign(**labels)


def training_sets(layout: store.Layout, spec: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """X (S, n, T, d), y (S, n): the training sets of a cell's seeds."""
    sets = [tasks.read_data_set(layout.data(data_id), content=data_id)[1] for data_id in spec["data"]]
    return tasks.stacked(sets, "train")


def initial_model(layout: store.Layout, cell: str) -> tuple[dict, models.MultiHeadAttention]:
    """(spec, layer at the start of training): the cell's step-0 snapshot."""
    spec, model, snapshots = models.load_cell(layout.cell_dir(cell))
    model.load_state_dict(snapshots[0])
    return spec, model


def margin_rows(model: models.MultiHeadAttention, X, y, seeds: list[int], iterations: int) -> pd.DataFrame:
    """Per seed: gamma, gamma_W, gamma_V at the model's theta, and max_i |Phi_i(theta)|."""
    rows = []
    with torch.no_grad():
        phi = model(X).abs().amax(-1)                                                  # (S,)
    for index, seed in enumerate(seeds):
        found = theory.margins(model.W[index].detach(), model.V[index].detach(), X[index], y[index], model.u,
                               model.scale, iterations)
        rows.append({"seed": seed, **found, "phi0_max": float(phi[index])})
    return pd.DataFrame(rows)


def init_margins(layout: store.Layout, cell: str, iterations: int) -> pd.DataFrame:
    spec, model = initial_model(layout, cell)
    return margin_rows(model, *training_sets(layout, spec), spec["seeds"], iterations)


# ---------------------------------------------------------------------------
# Tidy tables
# ---------------------------------------------------------------------------

def dynamics(spec: dict, layout: store.Layout) -> pd.DataFrame:
    """E2, E3: per H, step and seed, the training loss and every traced quantity."""
    return pd.concat([curves(layout, entry["cell"], {"H": entry["H"]}) for entry in spec["cells"]],
                     ignore_index=True)


def seed_mean(margins: pd.DataFrame, column: str) -> float:
    """A margin averaged over seeds; NaN if any seed's is (a drawn line must not hide a failed seed)."""
    return float(margins[column].mean(skipna=False))


def bound_rows(H: int, steps: np.ndarray, margins: pd.DataFrame, losses: pd.Series, spec: dict) -> pd.DataFrame:
    """T3's bound and the c / (eta gamma^2 k) line of one H, at the seed-mean gamma (c: through the
    first seed's losses over the last decade of steps)."""
    gamma, phi0 = seed_mean(margins, "gamma_all"), seed_mean(margins, "phi0_max")
    last = steps[steps >= steps.max() / 10]
    c = theory.fitted_constant(last, losses.loc[last].to_numpy(), gamma, spec["eta"])
    return pd.concat([
        pd.DataFrame({"step": steps, "H": H, "series": "T3 bound", "value": theory.training_bound(
            steps, gamma, phi0, spec["eta"], spec["theory"]), "gamma": gamma}),
        pd.DataFrame({"step": steps, "H": H, "series": "c / (eta gamma^2 k)",
                      "value": theory.rate_line(steps, gamma, spec["eta"], c), "gamma": gamma})])


def training(spec: dict, layout: store.Layout) -> pd.DataFrame:
    """E1: training loss per H, step and seed (part "curve"), and per H the T3 bound and the
    fitted rate line (part "theory")."""
    frames = []
    for entry in spec["cells"]:
        curve = curves(layout, entry["cell"], {"H": entry["H"]})[["step", "seed", "loss", "H"]]
        margins = init_margins(layout, entry["cell"], spec["margin_iterations"])
        first = curve[curve["seed"] == curve["seed"].min()].set_index("step")["loss"]
        frames += [curve.assign(part="curve"),
                   bound_rows(entry["H"], first.index.to_numpy(), margins, first, spec).assign(part="theory")]
    return pd.concat(frames, ignore_index=True)


def initialization(spec: dict, layout: store.Layout) -> pd.DataFrame:
    """E4: (a) gamma (all, W and V blocks) at the random init and after the one step, per H
    and seed, with the closed-form margins of T6; (b) training loss from each init at one H."""
    frames = []
    for entry in spec["cells"]:
        cell_spec, model = initial_model(layout, entry["cell"])
        X, y = training_sets(layout, cell_spec)
        frames.append(margin_rows(model, X, y, cell_spec["seeds"], spec["margin_iterations"])
                      .assign(H=entry["H"], init="random"))
        models.one_step(model, X, y, spec["one_step"]["eta0"], spec["one_step"]["params"])
        frames.append(margin_rows(model, X, y, cell_spec["seeds"], spec["margin_iterations"])
                      .assign(H=entry["H"], init="one_step"))
    margin = pd.concat(frames, ignore_index=True).assign(part="margin")
    closed = pd.DataFrame([{"part": "closed_form", "series": name, "value": value}
                           for name, value in theory.closed_form_margins(spec["mixture"]).items()])
    runs = [curves(layout, cell, {"init": kind, "part": "training"})[["step", "seed", "loss", "init", "part"]]
            for kind, cell in spec["pair"].items()]
    return pd.concat([margin, closed, *runs], ignore_index=True)


def samples(spec: dict, layout: store.Layout) -> pd.DataFrame:
    """E5: final train and test loss and error per n, H and seed, with the seed-mean gamma at
    initialisation, T4b's bound and the c / (gamma^2 n) line (c through the first n's mean)."""
    frames = []
    for entry in spec["cells"]:
        margins = init_margins(layout, entry["cell"], spec["margin_iterations"])
        steps = float(store.read_json(layout.cell(entry["cell"], "spec.json"))["spec"]["training"]
                      ["optimisation"]["steps"])
        frame = final(layout, entry["cell"], {"n": entry["n"], "H": entry["H"], "part": "final"})
        gamma, phi0 = seed_mean(margins, "gamma_all"), seed_mean(margins, "phi0_max")
        bound = float(theory.test_bound(entry["n"], steps, gamma, phi0, spec["eta"], spec["theory"]))
        frames.append(frame.assign(gamma=gamma, T4_bound=bound))
    frame = pd.concat(frames, ignore_index=True)
    lines = []
    for H, rows in frame.groupby("H"):
        means = rows.groupby("n")[["test_loss", "gamma"]].mean(skipna=False)
        first = means.iloc[0]
        c = theory.fitted_constant(means.index[0], first["test_loss"], first["gamma"], 1.0)
        lines.append(pd.DataFrame({"n": means.index, "H": H, "part": "theory", "series": "c / (gamma^2 n)",
                                   "test_loss": theory.rate_line(means.index, means["gamma"].to_numpy(), 1.0, c)}))
    return pd.concat([frame, *lines], ignore_index=True)


# what each Hessian probe's slope against H is fitted to: T2's lambda_min is negative
PROBE_SIZE = {"T1": lambda rows: rows["hessian_norm"], "T2": lambda rows: -rows["weak_convexity"]}


def hessian(spec: dict, layout: store.Layout) -> pd.DataFrame:
    """T1: ||grad^2 Phi(theta_0; X)||_op per H, seed and sequence; T2: lambda_min / L of the
    training loss per H and seed; each probe's rows with its fitted log-log slope against H."""
    frame = store.read_parquet(layout.theory(PAPER, spec["theory"])).to_pandas()
    return pd.concat([rows.assign(slope=verdicts.loglog_slope(rows["H"], PROBE_SIZE[probe](rows)))
                      for probe, rows in frame.groupby("probe", sort=True)], ignore_index=True)


KINDS = {"training": training, "dynamics": dynamics, "initialization": initialization, "samples": samples,
         "hessian": hessian}


def tidy(spec: dict, node_id: str, results: str, out: str) -> None:
    """Tidy stage: one figure's data as Parquet (what its drawing shows)."""
    stages.write_tidy(KINDS, spec, node_id, results, out)


# ---------------------------------------------------------------------------
# Claims (issue 5, spec §4 expected outcomes) on the tidy data
# ---------------------------------------------------------------------------

def last_step(frame: pd.DataFrame, column: str) -> pd.Series:
    """Seed mean of `column` at each H's last step on its trace grid (the steps where some seed
    has a value: off the grid it is NaN). A NaN on the grid, a diverged seed, makes the mean NaN."""
    rows = frame[frame.groupby(["H", "step"])[column].transform("count") > 0]
    rows = rows[rows["step"] == rows.groupby("H")["step"].transform("max")]
    return rows.groupby("H")[column].mean(skipna=False).sort_index()


def claim_heads_train_loss(figs, cfg) -> list[verdicts.Claim]:
    curve = figs["E1"][figs["E1"]["part"] == "curve"]
    loss = last_step(curve, "loss")
    ratio = float((loss.to_numpy()[1:] / loss.to_numpy()[:-1]).max())
    bound = 1 + cfg["train_loss_tolerance"]
    return [verdicts.Claim(
        "more_heads_lower_train_loss", "E1", "more heads reach a lower training loss within the same number of "
        f"GD steps (H = {', '.join(str(h) for h in loss.index)})", ratio,
        f"largest ratio of final training losses, next H over previous H <= {bound:g} (seed means)",
        verdicts.at_most(ratio, bound))]


def claim_training_rate(figs, cfg) -> list[verdicts.Claim]:
    """Spec outcome 2: from rate_min_H on, the seed-mean training loss falls like 1/k over the
    last decade of steps; measured: the slope farthest from -1."""
    curve = figs["E1"][(figs["E1"]["part"] == "curve") & (figs["E1"]["H"] >= cfg["rate_min_H"])]
    late = curve[curve["step"] >= curve["step"].max() / 10]
    means = late.groupby(["H", "step"])["loss"].mean(skipna=False)
    slopes = means.groupby("H").apply(lambda loss: verdicts.loglog_slope(loss.index.get_level_values("step"), loss))
    _, H = verdicts.worst((slopes + 1).abs())
    slope = float(slopes[H]) if H is not None else float("nan")
    low, high = cfg["rate_slope"]
    return [verdicts.Claim(
        "training_loss_rate_one_over_k", "E1", f"the training loss falls like 1/k late in training "
        f"(H >= {cfg['rate_min_H']})", slope,
        f"log-log slope over the last decade of k in [{low:g}, {high:g}] for every H (worst: H = {H})",
        verdicts.within(slope, low, high) and bool(slopes.between(low, high).all()))]


def claim_largest_H_generalizes(figs, cfg) -> list[verdicts.Claim]:
    """Spec outcome 3 at the largest H: a small test error and a small gap between test and
    training loss at the last step (the training loss there is L(theta_{K-1}), one step early)."""
    error, test, train = (last_step(figs["E2"], column) for column in ("test_error", "test_loss", "loss"))
    H = error.index[-1]
    gap = float(test[H] - train[H])
    return [
        verdicts.Claim("largest_H_low_test_error", "E2", f"the model with the most heads (H = {H}) classifies "
                       "unseen sequences well", float(error[H]), f"test error <= {cfg['test_error_max']:g} "
                       "(seed mean)", verdicts.at_most(float(error[H]), cfg["test_error_max"])),
        verdicts.Claim("largest_H_small_generalization_gap", "E2", f"test loss stays close to the training loss "
                       f"(H = {H})", gap, f"test loss - training loss at K <= {cfg['generalization_gap_max']:g} "
                       "(seed means)", verdicts.at_most(gap, cfg["generalization_gap_max"]))]


def claim_test_error(figs, cfg) -> list[verdicts.Claim]:
    error = last_step(figs["E2"], "test_error")
    gap = float(error.iloc[-1] - error.iloc[0])
    return [verdicts.Claim(
        "test_error_not_worse", "E2", f"test error is not worse with more heads (H = {error.index[-1]} vs "
        f"H = {error.index[0]})", gap, f"test error difference <= {cfg['test_error_tolerance']:g} (seed means)",
        verdicts.at_most(gap, cfg["test_error_tolerance"]))]


def claim_distance(figs, cfg) -> list[verdicts.Claim]:
    distance = last_step(figs["E3"], "relative_distance")
    measured = verdicts.loglog_slope(distance.index, distance.to_numpy())
    low, high = cfg["distance_slope"]
    return [verdicts.Claim(
        "relative_movement_shrinks", "E3", "relative parameter movement ||theta_K - theta_0|| / ||theta_0|| "
        "shrinks as H grows, like H^(-1/2)", measured, f"log-log slope against H in [{low:g}, {high:g}]",
        verdicts.within(measured, low, high))]


def claims_initialization(figs, cfg) -> list[verdicts.Claim]:
    margin = figs["E4"][figs["E4"]["part"] == "margin"]
    gamma = margin.pivot(index=["H", "seed"], columns="init", values="gamma_all")
    ratio, _ = verdicts.worst(gamma["one_step"] / gamma["random"], largest=False)
    runs = figs["E4"][figs["E4"]["part"] == "training"]
    runs = runs.groupby("init")["loss"].mean(skipna=False)  # (1/K) sum_k L(theta_k), the quantity T3 bounds
    speed = float(runs["one_step"] / runs["random"])
    return [
        verdicts.Claim("one_step_larger_margin", "E4", "one GD step from the random initialisation gives a larger "
                       "NTK margin gamma", ratio, "gamma(theta_1) / gamma(theta_0) > 1 for every H and seed",
                       ratio > 1),
        verdicts.Claim("one_step_trains_faster", "E4", f"training from the one-step initialisation is faster "
                       f"(H = {cfg['E4_H']})", speed,
                       "training loss averaged over the K steps (T3's quantity), one-step over random init, < 1 "
                       "(seed means)", speed < 1)]


def claim_samples(figs, cfg) -> list[verdicts.Claim]:
    frame = figs["E5"][figs["E5"]["part"] == "final"]
    means = frame.groupby(["H", "n"])["test_loss"].mean(skipna=False)
    slopes = means.groupby("H").apply(lambda loss: verdicts.loglog_slope(loss.index.get_level_values("n"), loss))
    slope, worst = verdicts.worst(slopes)
    return [verdicts.Claim(
        "test_loss_falls_with_n", "E5", "the test loss falls with the number of training samples n",
        slope, f"log-log slope of final test loss against n <= {cfg['sample_slope_max']:g} for every H "
        f"(worst: H = {worst})", verdicts.at_most(slope, cfg["sample_slope_max"]))]


def claims_hessian(figs, cfg) -> list[verdicts.Claim]:
    slopes = figs["hessian"].groupby("probe")["slope"].first()
    (low, high), (low2, high2) = cfg["hessian_slope"], cfg["weak_convexity_slope"]
    return [
        verdicts.Claim("hessian_scales_inverse_sqrt_H", "hessian", "the Hessian norm of the model output at "
                       "initialisation scales like H^(-1/2)", float(slopes["T1"]),
                       f"log-log slope against H in [{low:g}, {high:g}]", verdicts.within(slopes["T1"], low, high)),
        verdicts.Claim("weak_convexity_scales_inverse_sqrt_H", "hessian", "the training loss's negative curvature "
                       "relative to the loss, -lambda_min / L at initialisation, shrinks like H^(-1/2)",
                       float(slopes["T2"]), f"log-log slope against H in [{low2:g}, {high2:g}]",
                       verdicts.within(slopes["T2"], low2, high2))]


CLAIMS = (claim_heads_train_loss, claim_training_rate, claim_largest_H_generalizes, claim_test_error,
          claim_distance, claims_initialization, claim_samples, claims_hessian)


def claims(spec: dict, node_id: str, results: str, out: str) -> None:
    """Claims stage: check every claim on the tidy figure data."""
    stages.write_claims(PAPER, CLAIMS, spec, node_id, results, out)


def predict(cell_dir: str, sequences_path: str, out: str) -> None:
    """Score a trained cell's layers on a data set's test split: per sequence and seed, Phi,
    the predicted label sign(Phi) and the true label."""
    spec, model, _ = models.load_cell(cell_dir)
    data_spec, sets = tasks.read_data_set(sequences_path)
    if (data_spec["mixture"]["T"], data_spec["mixture"]["d"]) != (spec["mixture"]["T"], spec["mixture"]["d"]):
        raise store.StoreError(f"{sequences_path}: sequences have (T, d) = ({data_spec['mixture']['T']}, "
                               f"{data_spec['mixture']['d']}), the cell was trained on ({spec['mixture']['T']}, "
                               f"{spec['mixture']['d']})")
    X, y = sets["test"]["x"], sets["test"]["y"]
    with torch.no_grad():
        phi = model(X.expand(len(spec["seeds"]), *X.shape)).numpy()                    # (S, n)
    rows = stages.prediction_rows(phi.shape, spec["seeds"], ("sequence",))
    frame = pd.DataFrame({**rows, "phi": phi.reshape(-1), "y_hat": np.sign(phi).reshape(-1),
                          "y": y.numpy()[rows["sequence"]]})
    stages.write_predictions(frame, out, {"cell": spec, "sequences": data_spec})
