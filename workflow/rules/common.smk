# Validation, planning and input functions shared by every rule.
#
# Jobs import the package from ROOT/src (the shell prefix puts it first on PYTHONPATH),
# so the code that runs is the code whose source was fingerprinted into the ids.

import importlib
import json
import shlex
import sys

from snakemake.exceptions import WorkflowError

SRC = ROOT / "src"
sys.path.insert(0, str(SRC))
# (doubled braces: Snakemake formats the prefix like a shell command)
shell.prefix("export PYTHONPATH=" + shlex.quote(str(SRC)) + "${{PYTHONPATH:+:$PYTHONPATH}}; ")

from iclrepro import config as configuration, plan as planning, store  # noqa: E402
from iclrepro.papers import REGISTRY  # noqa: E402

try:
    CONFIG = configuration.check_and_resolve(config, configuration.load_schema(ROOT))
    PLAN = planning.build(CONFIG)
except (configuration.ConfigError, planning.PlanError) as err:
    raise WorkflowError(str(err)) from None

LAYOUT = PLAN.layout
RESULTS = CONFIG["results"]


wildcard_constraints:
    id="[0-9a-f]{16}",
    paper="|".join(REGISTRY),
    name="[A-Za-z0-9][A-Za-z0-9_.+-]*",


def node(stage, wildcards):
    """The planned node a job's wildcards name (claims are named after their paper)."""
    if "id" in wildcards.keys():
        return PLAN.get(stage, wildcards.id)
    name = wildcards.name if "name" in wildcards.keys() else wildcards.paper
    return PLAN.get(stage, f"{wildcards.paper}/{name}")


def payload(stage):
    """Params function: the node as JSON for the rule's command line."""
    return lambda wildcards: json.dumps(node(stage, wildcards).payload(), sort_keys=True)


def cell_resources(key):
    """Resources function: what the cell's paper estimates from the cell's size."""

    def of(wildcards):
        cell = node("train", wildcards)
        planner = importlib.import_module(REGISTRY[cell.paper].planner)
        return planner.resources(cell.spec)[key]

    return of


def figure_caption(wildcards):
    """Params function: the figure's caption text (workflow/report/<paper>/<name>.rst)."""
    path = ROOT / "workflow" / "report" / wildcards.paper / f"{wildcards.name}.rst"
    return path.read_text() if path.is_file() else ""


def results_root(levels):
    """Params function: the results directory, `levels` directories above the output."""
    return lambda wildcards, output: str(Path(output[0]).parents[levels - 1])


def upstream(stage):
    """Input function: the done-markers of the node's inputs."""
    return lambda wildcards: LAYOUT.input_paths(node(stage, wildcards))


ENV = str(ROOT / "envs" / "iclrepro.yaml")  # used with --sdm conda
