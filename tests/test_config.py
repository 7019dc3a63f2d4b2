"""Config validation: every mistake fails at parse time with the key's dotted path."""

from __future__ import annotations

import copy

import pytest
import yaml
from snakemake.cli import parse_config
from snakemake.utils import update_config

from conftest import copy_workflow, snakemake
from iclrepro import config, plan


def check(raw, schema, edit):
    broken = copy.deepcopy(raw)
    edit(broken)
    return lambda: config.check_and_resolve(broken, schema)


@pytest.mark.parametrize("scenario, message", [
    ({"d": 5, "w0_norm": 2.0}, r"scenarios.odd.w0_norm: unused, as it is the prior's mean"),
    ({"d": 5, "tau": 0.3, "W": 2.0}, r"scenarios.odd.W: unused, as a prior scenario's E\|\|w\|\|\^2 is"),
    ({"d": 5, "rho": 0.5, "r": 0.3}, r"scenarios.odd: a scenario sets at most one of rho, r, tau")])
def test_a_cui2024_scenario_setting_its_family_ignores_is_named(raw, schema, scenario, message):
    """Named even when no figure uses the scenario."""
    broken = copy.deepcopy(raw)
    broken["cui2024"]["scenarios"]["odd"] = scenario
    with pytest.raises(plan.PlanError, match=message):
        plan.build(config.check_and_resolve(dict(broken, scale="smoke"), schema))


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(sclae="quick"), r"config \(top level\): Additional properties .*'sclae'"),
    (lambda c: c.update(scale="huge"), r"config scale: 'huge' is not one of"),
    (lambda c: c.update(papers=["nope"]), r"config papers.0: 'nope' is not one of"),
    (lambda c: c.update(threads=0), r"config threads: 0 is less than the minimum"),
    (lambda c: c["cui2024"]["training"].update(lr={"full": "1e-3x", "reduced": 0.01}),
     r"config cui2024.training.lr.full: '1e-3x' is not of type 'number'"),
    (lambda c: c["cui2024"]["scales"]["smoke"]["training"].update(lr="1e-3"),
     r"config cui2024.training.lr \(scale smoke\): '1e-3' is not of type 'object' \(a map of full, reduced\)"),
    (lambda c: c["chen2024"]["model"].update(mlp="ja"), r"config chen2024.model.mlp: 'ja' is not of type 'boolean'"),
    (lambda c: c["cui2024"]["training"].update(stpes=3), r"config cui2024.training: .*'stpes' was unexpected"),
    (lambda c: c["cui2024"]["scenarios"]["base"].update(d=-1), r"config cui2024.scenarios.base.d: -1 is less"),
    (lambda c: c["cui2024"]["figures"]["F1"].update(D=[]), r"config cui2024.figures.F1.D: \[\] should be non-empty"),
    (lambda c: c["cui2024"]["scenarios"].update({"../evil": {"d": 2}}),
     r"config cui2024.scenarios: '../evil' does not match"),
    (lambda c: c["cui2024"]["scales"]["smoke"]["training"].update(seeds=1.5),
     r"config cui2024.training.seeds \(scale smoke\): 1.5 is not of type 'integer'"),
    (lambda c: c["cui2024"]["scales"]["smoke"]["training"].update(seeds="0"),
     r"config cui2024.training.seeds \(scale smoke\): 0 is less than the minimum of 1"),
    (lambda c: c["deora2023"]["claims"].update(hessian_slope=[-0.35, -0.65]),
     r"config deora2023.claims.hessian_slope: \[-0.35, -0.65\] should be \[low, high\]"),
    (lambda c: c.update(results="../outside"), r"config results: '../outside' must be a relative path"),
    (lambda c: c.update(results="./src"), r"config results: './src' would put results among the workflow's"),
    (lambda c: c.update(results="."), r"config results: '.' would put results among the workflow's"),
    (lambda c: c.update(papers=None), r"config papers: None is not of type 'array'"),
    (lambda c: c.update(papers={"chen2024": 1}), r"config papers: \{'chen2024': 1\} is not of type 'array'"),
    (lambda c: c["chen2024"]["scales"]["quick"]["training"].update(lr=float("nan")),
     r"config chen2024.training.lr \(scale quick\): nan is not of type 'number'"),
    (lambda c: c["cui2024"]["training"].update(lr={"full": float("inf"), "reduced": 0.01}),
     r"config cui2024.training.lr.full: inf is not of type 'number'"),
])
def test_mistakes_name_the_key(raw, schema, edit, message):
    with pytest.raises(config.ConfigError, match=message):
        check(raw, schema, edit)()


def test_nested_command_line_values_are_typed(raw, schema):
    """Snakemake's --config reads the values nested in key={...} as text (and PyYAML reads
    1e-3 as text): where the schema wants a number or a boolean, they are read as one."""
    overrides = parse_config(["chen2024={scales: {smoke: {training: {seeds: 3, lr: 2e-3}, model: {mlp: false}}}}"])
    assert overrides["chen2024"]["scales"]["smoke"]["training"] == {"seeds": "3", "lr": "2e-3"}
    resolved = config.check_and_resolve(config.deep_merge(dict(raw, scale="smoke"), overrides), schema)
    training = resolved["chen2024"]["training"]
    assert (training["seeds"], training["lr"], resolved["chen2024"]["model"]["mlp"]) == (3, 0.002, False)
    assert type(training["seeds"]) is int and type(training["lr"]) is float


def test_several_config_files_merge_as_snakemakes_configfile_does(root, raw, tmp_path):
    """`iclrepro cells/gc --configfile A B` must read what `snakemake --configfile A B` runs."""
    more = {"scale": "smoke", "cui2024": {"scales": {"smoke": {"training": {"seeds": 3}}}, "test_seed": 7}}
    (tmp_path / "more.yaml").write_text(yaml.safe_dump(more))
    expected = copy.deepcopy(raw)
    update_config(expected, more)
    assert config.read([root / "config.yaml", tmp_path / "more.yaml"]) == expected
    assert expected["cui2024"]["training"] == raw["cui2024"]["training"]   # merged, not replaced


@pytest.mark.parametrize("text, message", [("- scale: smoke\n", "holds a map of settings, not a list"),
                                           ("scale: [smoke\n", "not valid YAML"),
                                           ("cui2024:\n  d: 3\nthreads: 1\ncui2024:\n  d: 4\n",
                                            r"not valid YAML[\s\S]*found the key 'cui2024' twice")])
def test_a_config_file_that_is_no_map_of_settings_is_named(root, tmp_path, text, message):
    (tmp_path / "more.yaml").write_text(text)
    with pytest.raises(config.ConfigError, match=f"more.yaml: .*{message}"):
        config.read([root / "config.yaml", tmp_path / "more.yaml"])


def test_command_line_settings_read_as_snakemakes_config_reads_them():
    """`iclrepro cells --config ...` must plan the cells that `snakemake --config ...` runs."""
    entries = ["scale=smoke", "papers=cui2024,chen2024", "threads=2", "lr=2e-3", "flag=True", "other=false",
               "empty=", "quoted='a b'", "chen2024={scales: {quick: {training: {seeds: 3, lr: 2e-3}}}}",
               "chen2024={model: {mlp: False}}", "heads=[1, 4]", "broken={a: [", "equals=a=b"]
    assert config.parse_settings(entries) == parse_config(entries)
    with pytest.raises(config.ConfigError, match="--config 'scale': a setting is KEY=VALUE"):
        config.parse_settings(["scale"])


def test_a_setting_the_chosen_scale_overrides_is_named(root, tmp_path):
    """A run's `chen2024.training.seeds: 3` changes nothing at the quick scale, which sets seeds
    itself; config.yaml's own base values, keys the scale leaves alone, and a key whose source
    sets it in the scale's block too (n below) are no such case."""
    overlay = tmp_path / "more.yaml"
    overlay.write_text("chen2024: {training: {seeds: 3, weight_decay: 0.1}}\n")
    settings = {"chen2024": {"s": 2, "n": 20, "scales": {"quick": {"n": 20}}}}
    files = [root / "config.yaml", overlay]
    merged = config.deep_merge(config.read(files), settings)
    assert config.shadowed_settings(files, settings, merged, root) == [
        f"chen2024.training.seeds (from {overlay}) changes nothing at scale quick, whose "
        "chen2024.scales.quick.training.seeds sets it: set that key instead",
        "chen2024.s (from --config) changes nothing at scale quick, whose chen2024.scales.quick.s sets it: "
        "set that key instead"]
    assert config.shadowed_settings(files, settings, dict(merged, scale="paper"), root) == []


def test_snakemake_warns_of_a_setting_the_chosen_scale_overrides(tmp_path):
    dry_run = snakemake(copy_workflow(tmp_path), "-n", "--config", "papers=chen2024", "chen2024={training: {seeds: 3}}")
    assert ("iclrepro: warning: config chen2024.training.seeds (from --config) changes nothing at scale quick"
            in dry_run.stderr)


def test_papers_accepts_a_comma_separated_string(raw, schema):
    resolved = config.check_and_resolve(dict(raw, papers="cui2024"), schema)
    assert resolved["papers"] == ["cui2024"]


def test_scale_overrides_merge_into_the_paper_block(raw, schema):
    smoke = config.check_and_resolve(dict(raw, scale="smoke"), schema)["cui2024"]
    paper = config.check_and_resolve(dict(raw, scale="paper"), schema)["cui2024"]
    assert smoke["training"]["steps"] < paper["training"]["steps"]
    assert smoke["training"]["decay_fraction"] == paper["training"]["decay_fraction"]  # kept from the base


def test_integral_floats_hash_like_ints(raw, schema):
    as_float = copy.deepcopy(raw)
    as_float["cui2024"]["scales"]["smoke"]["figures"]["F1"]["D"] = [8.0, 16.0]
    ids = [set(plan.build(config.check_and_resolve(dict(c, scale="smoke"), schema)).cells)
           for c in (raw, as_float)]
    assert ids[0] == ids[1]


def test_unknown_scenario_in_a_figure_is_named(raw, schema):
    broken = copy.deepcopy(raw)
    broken["cui2024"]["scales"]["smoke"]["figures"]["F3"]["scenarios"] = ["noisy_typo"]
    resolved = config.check_and_resolve(dict(broken, scale="smoke"), schema)
    with pytest.raises(plan.PlanError, match="unknown scenario 'noisy_typo'"):
        plan.build(resolved)


@pytest.mark.parametrize("edit, message", [
    (lambda smoke: smoke["figures"]["F1"]["series"].append({"name": "MH3", "param": "full", "H": 3}),
     r"figures.F1: H=3 of series 'MH3' does not divide p = p_per_d \* d = 20"),
    (lambda smoke: smoke["figures"]["F1"].update(D=[8]), r"figures.F1.D: the slope claims need two D >= "),
    (lambda smoke: smoke["figures"]["F6"].update(D=[32]), r"figures.F6.D: shares no D with F1"),
    (lambda smoke: smoke["figures"]["F3"].update(series=[{"name": "SH", "param": "reduced", "H": h} for h in (1, 2)]),
     r"figures.F3.series: names must be unique"),
    (lambda smoke: smoke.update(claims={"sh_series": "SHH"}), r"claims.sh_series: 'SHH' is not a series of F1"),
])
def test_inconsistent_settings_are_named_at_plan_time(raw, schema, edit, message):
    broken = copy.deepcopy(raw)
    edit(broken["cui2024"]["scales"]["smoke"])
    resolved = config.check_and_resolve(dict(broken, scale="smoke"), schema)
    with pytest.raises(plan.PlanError, match=message):
        plan.build(resolved)
