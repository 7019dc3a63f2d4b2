"""Command line tools for users of the pipeline.

`iclrepro cells` lists planned cells and their state, `verify` and `gc` look after the
store, `predict` runs a trained cell on a prompt set, `claims-table` rebuilds the claim
tables, `bench` measures performance. The workflow's jobs run planned nodes through
workflow/scripts/ (run_stage.py, run_batch.py), not through this command line.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
from pathlib import Path

from iclrepro.errors import IclreproError
from iclrepro.papers import REGISTRY, stage_function

# What a results directory holds once a run has stored anything (store.Layout): a directory
# with other things and none of these is a mistyped --results (results/cells, say)
RESULTS_FOLDERS = ("index", "data", "cells", "theory", "figures", "claims", "logs")


def _claims_table(args) -> None:
    from iclrepro.evaluation import claims

    # the outputs come first: a forgotten one would make a claims file the next output
    if Path(args.out_md).suffix != ".md" or Path(args.out_html).suffix != ".html":
        raise IclreproError(f"claims-table OUT.md OUT.html CLAIMS.parquet...: got {args.out_md} and "
                            f"{args.out_html} to write; name the two tables first")
    claims.write_table(args.inputs, args.scale, args.out_md, args.out_html)


def _cells(args) -> None:
    from collections import Counter

    from iclrepro import config, integrity, plan, store

    shorthands = {key: value for key, value in (("scale", args.scale), ("papers", args.papers)) if value}
    overrides = config.deep_merge(config.parse_settings(args.config), shorthands)
    files = _as_snakemake_reads(args.configfile)
    workdir = _workdir(files)
    raw = config.deep_merge(config.read(files), overrides)
    resolved = config.check_and_resolve(raw, config.load_schema(workdir))
    config.warn_of_shadowed_settings(files, overrides, raw, workdir)
    if args.paper and args.paper not in resolved["papers"]:
        raise IclreproError(f"--paper {args.paper}: not among the config's papers ({', '.join(resolved['papers'])}), "
                            f"so none of its cells is planned; add --papers {args.paper}")
    layout = store.Layout(_results_dir(args, files) if args.results else resolved["results"])
    rows = []
    for node in plan.build(resolved).cells.values():
        if args.paper and node.paper != args.paper:
            continue
        log = Path(layout.log("train", node.id))
        rows.append((node.id, node.paper, plan.describe(node.paper, node.spec),
                     integrity.cell_status(layout, node.id, log)))
    for row in sorted(rows, key=lambda r: (r[1], r[2])):
        print("\t".join(row))
    for paper in sorted({row[1] for row in rows}):
        counts = Counter(row[3] for row in rows if row[1] == paper)
        summary = ", ".join(f"{counts[s]} {s}" for s in ("done", "running", "failed", "interrupted", "pending"))
        print(f"{paper}: {sum(counts.values())} cells: {summary}", file=sys.stderr)


def _as_snakemake_reads(config_files: list[str]) -> list[str]:
    """The config files snakemake reads given `--configfile FILE...`: the Snakefile's own
    config.yaml (in the current directory) first, unless the first FILE is a config.yaml."""
    return config_files if Path(config_files[0]).name == "config.yaml" else ["config.yaml", *config_files]


def _package_code(package: Path) -> dict[str, str]:
    from iclrepro import store

    return {str(path.relative_to(package)): store.code_text(path.read_text()) for path in sorted(package.rglob("*.py"))}


def _workdir(config_files: list[str]) -> Path:
    """The workflow directory, whose schema the config is checked against: the first config
    file's (config.yaml lies in it).

    Ids hash the package code, and the workflow's jobs import the package from the
    directory's src/: planned here from other source (a second checkout, a non-installed
    copy edited since), every stored cell would look unused, and `gc --yes` would delete it.
    """
    from iclrepro import store

    workdir = Path(config_files[0]).resolve().parent
    jobs_package = workdir / "src" / "iclrepro"
    if (jobs_package.is_dir() and jobs_package.resolve() != store.PACKAGE_ROOT
            and _package_code(jobs_package) != _package_code(store.PACKAGE_ROOT)):
        raise IclreproError(f"this iclrepro runs the package in {store.PACKAGE_ROOT}, but the workflow's jobs "
                            f"run the one in {jobs_package}, whose code differs, so the ids planned here would not be "
                            f"the workflow's; run `PYTHONPATH={jobs_package.parent} python -m iclrepro ...` instead")
    return workdir


def _raw_config(config_files: list[str], settings: list[str]) -> dict:
    """The config as Snakemake reads it from `--configfile FILE... --config KEY=VALUE...`."""
    from iclrepro import config

    return config.deep_merge(config.read(config_files), config.parse_settings(settings))


def _results_dir(args, config_files: list[str]) -> str:
    """The results directory to look after (--results, else the config's): a mistyped one
    fails here, rather than passing as a store with nothing in it."""
    from iclrepro import config

    results = args.results or config.check_results_dir(_raw_config(config_files, args.config).get("results", "results"))
    if not Path(results).is_dir():
        raise IclreproError(f"{results}: no results directory here (run snakemake first, or name it with --results)")
    shown = [path for path in Path(results).iterdir() if not path.name.startswith(".")]
    if shown and not any(Path(results, name).is_dir() for name in RESULTS_FOLDERS):
        folders = ", ".join(name + "/" for name in RESULTS_FOLDERS)
        raise IclreproError(f"{results}: not a results directory, as it holds none of {folders} "
                            "(name the directory snakemake writes)")
    return results


def _verify(args) -> int:
    from iclrepro import integrity

    report = integrity.verify(_results_dir(args, _as_snakemake_reads(args.configfile)))
    print("\n".join(report.lines()))
    return 1 if report.problems else 0


def _gc(args) -> None:
    from iclrepro import config, integrity

    configurations = [_as_snakemake_reads(files) for files in args.configfile or [["config.yaml"]]]
    narrowing = sorted(set(config.parse_settings(args.config)) & {"scale", "papers", "accelerator"})
    if narrowing:
        print(f"iclrepro: gc keeps what every scale, paper block and accelerator plans; --config "
              f"{', '.join(narrowing)} does not narrow it", file=sys.stderr)
    referenced = set().union(*(integrity.referenced_ids(_raw_config(files, args.config), _workdir(files))
                               for files in configurations))
    unused = integrity.garbage(_results_dir(args, configurations[0]), referenced)
    for path in unused:
        print(path)
    named = " or ".join(" + ".join(files) for files in configurations)
    named += f" with --config {' '.join(args.config)}" if args.config else ""
    unused_entries = f"{len(unused)} entries no plan of {named} refers to, or left by writes a kill cut short"
    if args.yes:
        integrity.remove(unused)
        print(f"deleted {unused_entries}", file=sys.stderr)
    else:
        print(f"{unused_entries}; delete them with --yes", file=sys.stderr)


def _bench(args) -> None:
    from iclrepro import bench, store

    if not Path(args.results, "benchmarks").is_dir():
        print(f"iclrepro: note: {args.results} holds no job records (benchmarks/) of a run, so peak_rss_mb "
              "stays empty; give --results of a run's results directory", file=sys.stderr)
    figures = bench.run(Path(args.workdir), Path(args.results), args.pipeline, args.kills, args.accelerator)
    print(bench.table(figures))
    store.write_json(figures, args.out)


def _store_folder_holding(path: Path) -> Path | None:
    """The folder of a results directory's entries (results/figures, ...) that `path` lies in,
    of any results directory: one that holds cells/ or index/ beside it."""
    for folder in path.resolve().parents:
        if folder.name in (*RESULTS_FOLDERS, "batches") and any(
                (folder.parent / name).is_dir() for name in ("cells", "index")):
            return folder
    return None


def _check_predictions_path(out: Path, prompts: Path) -> None:
    """OUT is a new Parquet file outside the store's entries, which it would overwrite."""
    inside = _store_folder_holding(out)
    if out.suffix != ".parquet" or out.is_dir():
        raise IclreproError(f"predict: {out} is not a .parquet file to write the predictions to")
    if out.resolve() == prompts.resolve():
        raise IclreproError(f"predict: OUT {out} is the prompt set itself; write the predictions elsewhere")
    if inside:
        raise IclreproError(f"predict: {out} lies in the store's {inside}, among entries it would overwrite; "
                            "write the predictions elsewhere")


def _predict(args) -> None:
    from iclrepro import store

    cell_dir = Path(args.cell_dir)
    if not cell_dir.is_dir():
        raise IclreproError(f"predict CELL_DIR PROMPTS OUT: {cell_dir} is not a cell directory "
                            "(results/cells/<id>)")
    _check_predictions_path(Path(args.out), Path(args.prompts))
    paper = store.read_json(cell_dir / "spec.json").get("spec", {}).get("paper")
    if paper not in REGISTRY:
        raise IclreproError(f"{cell_dir / 'spec.json'}: names no known paper ({paper!r}); is {cell_dir} a cell?")
    stage_function(REGISTRY[paper].predict)(args.cell_dir, args.prompts, args.out)


def _count(text: str) -> int:
    """An argparse type: a whole number >= 0."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return int(text)


class _PrintVersion(argparse.Action):
    """`iclrepro --version`: what a bug report needs. Computed only when asked, since it runs git."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, help="print the versions of iclrepro, its checkout "
                                                             "and its stack, and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        from iclrepro import provenance

        git = provenance.git_state(Path(__file__).parent)
        checkout = {True: f"commit {git['commit']}, with local changes", False: f"commit {git['commit']}",
                    None: "not a git checkout"}[git["dirty"]]
        stack = ", ".join(f"{name} {version}" for name, version in provenance.versions().items())
        print(f"iclrepro {importlib.metadata.version('iclrepro')} ({checkout})\n{stack}")
        parser.exit()


def _add_store_commands(sub) -> None:
    """cells, verify and gc: they read the config as snakemake does, so that the words of a
    run (--configfile, --config) name the same cells here."""
    cells = sub.add_parser("cells", help="list planned cells: id, paper, settings, and done, running, failed, "
                                         "interrupted or pending")
    cells.add_argument("--paper", choices=sorted(REGISTRY))
    cells.add_argument("--scale", choices=("smoke", "quick", "paper"))
    cells.add_argument("--papers", help="comma-separated papers (default: the config's)")

    verify = sub.add_parser("verify", help="recompute every stored id and check the stored files")
    gc = sub.add_parser("gc", help="list (with --yes: delete) stored entries no plan of the config refers to, "
                                   "and temporary files that killed writes left")
    gc.add_argument("--yes", action="store_true", help="delete them")
    config_files = "config files, a later one overriding an earlier one, as with snakemake --configfile"
    for cmd in (cells, verify):
        cmd.add_argument("--configfile", nargs="+", default=["config.yaml"], metavar="FILE",
                         help=f"{config_files} (default: config.yaml)")
    gc.add_argument("--configfile", nargs="+", action="append", metavar="FILE",
                    help=f"{config_files}; repeat --configfile to keep what each of several configurations "
                         "plans (default: config.yaml)")
    for cmd, func in ((cells, _cells), (verify, _verify), (gc, _gc)):
        cmd.add_argument("--config", nargs="+", default=[], metavar="KEY=VALUE",
                         help="settings over the config files, as with snakemake --config")
        cmd.add_argument("--results", help="results directory (default: the config's)")
        cmd.set_defaults(func=func)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="iclrepro", description=__doc__.splitlines()[0])
    top.add_argument("--version", action=_PrintVersion)
    sub = top.add_subparsers(dest="command", required=True)

    table = sub.add_parser("claims-table", help="write the Markdown and HTML tables of all claim verdicts")
    table.add_argument("--scale", required=True, help="the scale the claims were measured at (the title says it)")
    table.add_argument("out_md")
    table.add_argument("out_html")
    table.add_argument("inputs", nargs="+")
    table.set_defaults(func=_claims_table)

    _add_store_commands(sub)

    bench = sub.add_parser("bench", help="measure the performance figures (see benchmarks.md)")
    bench.add_argument("--out", default="benchmarks.json", help="write the figures here as JSON")
    bench.add_argument("--workdir", default=".", help="the workflow directory")
    bench.add_argument("--results", default="results", help="results of the last run (for peak RSS per rule)")
    bench.add_argument("--pipeline", action="store_true",
                       help="also time the quick pipeline from scratch with 2 cores and with 1 core (slow)")
    bench.add_argument("--kills", type=_count, default=0, metavar="N",
                       help="also kill the smoke pipeline N times at random moments and check each resumed "
                            "run against a whole one (slow: about a smoke run each)")
    bench.add_argument("--accelerator", choices=["cpu", "cuda"], default="cpu",
                       help="where the training figures are measured (cuda: on the GPU)")
    bench.set_defaults(func=_bench)

    predict = sub.add_parser("predict", help="run a trained cell on prompts: a prediction per prompt and seed")
    predict.add_argument("cell_dir")
    predict.add_argument("prompts")
    predict.add_argument("out")
    predict.set_defaults(func=_predict)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        status = args.func(args) or 0
        sys.stdout.flush()   # here, so that a closed pipe is caught below rather than at exit
        return status
    except IclreproError as err:
        print(f"iclrepro: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader stopped early (`iclrepro cells | head`): no traceback. Python's recipe:
        # point stdout at /dev/null so that the flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
