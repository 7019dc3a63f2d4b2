"""fu2023 evaluation: tidy figure data (spec §3 A-C and the kernel limit D), claims, `predict`.

Curves (A, B, C): one row per (target, model, n, seed) with the test MSE against the
noiseless target, nmse = MSE / Var_test(f*) and the chosen ridge penalty; reference rows
(part = reference) carry the heuristic sample sizes and the bound's slope of the theory
table. Kernel limit (D): per M and seed, the RFA cell's nmse and the relative Frobenius
error of its feature Gram matrix against K_RFA on the first test samples; per seed, the
nmse of kernel ridge regression with K_RFA itself (M = infinity) on the same training set,
its penalty chosen the same way (baselines/ridge.py).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from iclrepro import store
from iclrepro.baselines import ridge
from iclrepro.evaluation import claims as verdicts
from iclrepro.evaluation import stages
from iclrepro.models import fu2023 as models
from iclrepro.tasks import fu2023 as tasks
from iclrepro.theory import fu2023 as theory

PAPER = "fu2023"
NAMES = {"rfa": "RFA", "brfa": "BRFA", "rfmlp": "RFMLP"}


def cell_metrics(layout: store.Layout, cell: str) -> pd.DataFrame:
    return store.read_parquet(layout.cell(cell), content=cell).to_pandas()


def curves(spec: dict, layout: store.Layout) -> pd.DataFrame:
    frames = [cell_metrics(layout, entry["cell"]).assign(target=entry["target"], model=NAMES[entry["model"]],
                                                          n=entry["n"], part="fit")
              for entry in spec["cells"]]
    references = store.read_parquet(layout.theory(PAPER, spec["theory"])).to_pandas()
    return pd.concat(frames + [references.assign(part="reference")], ignore_index=True)


def gram_error(cell_dir: str, x: torch.Tensor, exact: torch.Tensor) -> np.ndarray:
    """Per seed (S,): ||Phi Phi^T - K_RFA||_F / ||K_RFA||_F on the samples x."""
    _, model = models.load_cell(cell_dir)
    errors = []
    for s in range(len(model.v)):
        Phi = model.features(x, s).double()
        errors.append(float((Phi @ Phi.T - exact).norm() / exact.norm()))
    return np.array(errors)


def kernel_ridge_nmse(spec: dict, train: dict[str, torch.Tensor], test: dict[str, torch.Tensor]) -> float:
    """nmse of kernel ridge regression with K_RFA, the penalty chosen on the validation split."""
    fitting = spec["fitting"]
    K = theory.rfa_kernel(train["x"], train["x"], spec["weight_std"])
    alpha = ridge.kernel_select(K, train["y"], fitting["lambdas"], fitting["validation_fraction"])
    prediction = theory.rfa_kernel(test["x"], train["x"], spec["weight_std"]) @ alpha
    return float(((prediction - test["f"]) ** 2).mean() / test["f"].var())


def kernel(spec: dict, layout: store.Layout) -> pd.DataFrame:
    _, test = tasks.read_set(layout.data(spec["test"]), content=spec["test"])
    probe = test["x"][:spec["gram_samples"]]
    exact = theory.rfa_kernel(probe, probe, spec["weight_std"])
    frames = []
    for entry in spec["cells"]:
        found = cell_metrics(layout, entry["cell"])
        found["gram_error"] = gram_error(layout.cell_dir(entry["cell"]), probe, exact)
        frames.append(found.assign(M=entry["M"], source="finite M"))
    limit = [{"seed": seed, "nmse": kernel_ridge_nmse(spec, tasks.read_set(layout.data(data_id), content=data_id)[1],
                                                        test)}
             for seed, data_id in enumerate(spec["train"])]
    frames.append(pd.DataFrame(limit).assign(M=-1, source="kernel limit"))
    return pd.concat(frames, ignore_index=True).assign(target=spec["target"], n=spec["n"])


# ---------------------------------------------------------------------------
# Claims: on the seed means of the tidy data
# ---------------------------------------------------------------------------

def mean_nmse(frame: pd.DataFrame, by: list[str]) -> pd.Series:
    return frame[frame["part"] == "fit"].groupby(by)["nmse"].mean(skipna=False)


def at_largest_n(frame: pd.DataFrame) -> pd.DataFrame:
    fits = frame[frame["part"] == "fit"]
    return fits[fits["n"] == fits["n"].max()]


def model_ratio(frame: pd.DataFrame, better: str, worse: str, targets) -> pd.Series:
    """nmse(better) / nmse(worse) per target at the largest n."""
    means = mean_nmse(at_largest_n(frame), ["target", "model"]).unstack("model")
    return (means[better] / means[worse]).loc[list(targets)]


def ratio_claim(claim_id: str, figure: str, statement: str, ratio: pd.Series, bound: float) -> verdicts.Claim:
    worst, at = verdicts.worst(ratio)
    return verdicts.Claim(claim_id, figure, statement, worst,
                          f"<= {bound} on every target at the largest n (worst: {at})", verdicts.at_most(worst, bound))


def claim_rfa_vs_rfmlp(figs, cfg) -> list[verdicts.Claim]:
    targets = sorted(figs["A"]["target"].dropna().unique())
    return [ratio_claim("rfa_beats_rfmlp", "A", "RFA's test error is below RFMLP's at the largest n on "
                        "permutation-invariant targets (nmse ratio RFA / RFMLP)",
                        model_ratio(figs["A"], "RFA", "RFMLP", targets), cfg["rfa_over_rfmlp_max"])]


def claim_brfa_vs_rfa(figs, cfg) -> list[verdicts.Claim]:
    return [ratio_claim("brfa_beats_rfa", "B", "BRFA (non-zero-mean W) has lower test error than RFA on "
                        f"the inner-product targets {', '.join(cfg['brfa_targets'])} (nmse ratio BRFA / RFA)",
                        model_ratio(figs["B"], "BRFA", "RFA", cfg["brfa_targets"]), cfg["brfa_over_rfa_max"])]


def claims_complexity(figs, cfg) -> list[verdicts.Claim]:
    """C: error falls with n for every target; at every n it rises with the target's degree."""
    C = figs["C"]
    means = mean_nmse(C, ["target", "n"]).unstack("n")
    falls, slowest = verdicts.worst(means[means.columns.max()] / means[means.columns.min()])
    order = sorted(means.index, key=lambda name: tasks.Target.parse(name).p)
    steps = means.loc[order].to_numpy()
    rises = (steps[1:] / steps[:-1]).min() if len(order) > 1 else float("nan")
    return [
        verdicts.Claim("error_falls_with_n", "C", "RFA's test error falls as n grows, for every target degree",
                       falls, f"nmse(largest n) / nmse(smallest n) < 1 for every target (worst: {slowest})",
                       falls < 1),
        verdicts.Claim("complex_targets_need_more_samples", "C", "at every n the error is larger for a target "
                       f"of higher degree ({' < '.join(order)}), so more complex targets need more samples",
                       float(rises), "min over n and consecutive degrees of nmse(p+1) / nmse(p) > 1",
                       bool(rises > 1)),
    ]


def claims_kernel(figs, cfg) -> list[verdicts.Claim]:
    """D: the finite-M error approaches the kernel limit, and the Gram matrix converges."""
    D = figs["D"]
    limit = D[D["source"] == "kernel limit"]["nmse"].mean(skipna=False)
    finite = D[D["source"] == "finite M"].groupby("M")[["nmse", "gram_error"]].mean(skipna=False)
    gaps = (finite["nmse"] - limit).abs()
    ratio = float(gaps.iloc[-1] / gaps.iloc[0]) if gaps.iloc[0] > 0 else float("nan")
    gram = float(finite["gram_error"].iloc[-1])
    M_small, M_large = finite.index.min(), finite.index.max()
    return [
        verdicts.Claim("rfa_approaches_kernel_limit", "D", "finite-M RFA approaches its infinite-head kernel "
                       f"ridge limit as M grows (|nmse_M - nmse_kernel| at M = {M_large} over that at "
                       f"M = {M_small})", ratio, f"<= {cfg['kernel_gap_ratio_max']}",
                       verdicts.at_most(ratio, cfg["kernel_gap_ratio_max"])),
        verdicts.Claim("gram_converges_to_kernel", "D", f"the RFA feature Gram matrix at M = {M_large} matches "
                       "the closed-form K_RFA (relative Frobenius error)", gram, f"<= {cfg['gram_error_max']}",
                       verdicts.at_most(gram, cfg["gram_error_max"])),
    ]


CLAIMS = (claim_rfa_vs_rfmlp, claim_brfa_vs_rfa, claims_complexity, claims_kernel)


def claims(spec: dict, node_id: str, results: str, out: str) -> None:
    """Claims stage: check every claim on the tidy figure data."""
    stages.write_claims(PAPER, CLAIMS, spec, node_id, results, out)


KINDS = {"curves": curves, "kernel": kernel}


def tidy(spec: dict, node_id: str, results: str, out: str) -> None:
    """Tidy stage: one figure's data as Parquet (what its drawing shows)."""
    stages.write_tidy(KINDS, spec, node_id, results, out)


def predict(cell_dir: str, prompts_path: str, out: str) -> None:
    """Run a fitted cell on a data set of the task's schema: per sample and seed, the prediction
    and the noiseless target."""
    spec, model = models.load_cell(cell_dir)
    data_spec, data = tasks.read_set(prompts_path)
    if (data_spec["d"], data_spec["N"]) != (spec["d"], spec["N"]):
        raise store.StoreError(f"{prompts_path}: samples have d={data_spec['d']}, N={data_spec['N']}; the cell "
                               f"was fitted with d={spec['d']}, N={spec['N']}")
    with torch.no_grad():
        prediction = model(data["x"])                                             # (S, n)
    rows = stages.prediction_rows(prediction.shape, spec["seeds"], ("sample",))
    frame = pd.DataFrame({**rows, "prediction": prediction.numpy().reshape(-1),
                          "target": data["f"].numpy()[rows["sample"]]})
    stages.write_predictions(frame, out, {"cell": spec, "data": data_spec})
