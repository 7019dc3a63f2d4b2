# Validation, planning and input functions shared by every rule.
#
# Jobs import the package from ROOT/src (the shell prefix puts it first on PYTHONPATH),
# so the code that runs is the code whose source was fingerprinted into the ids.

import shlex
import sys

from snakemake.exceptions import WorkflowError

SRC = ROOT / "src"
sys.path.insert(0, str(SRC))
# (doubled braces: Snakemake formats the prefix like a shell command)
shell.prefix("export PYTHONPATH=" + shlex.quote(str(SRC)) + "${{PYTHONPATH:+:$PYTHONPATH}}; ")

from iclrepro import config as configuration, plan as planning, store, workspace  # noqa: E402
from iclrepro.papers import REGISTRY  # noqa: E402

try:
    # read here for its checks only (a key given twice): Snakemake's reading keeps the last
    configuration.read([ROOT / "config.yaml", *workflow.config_settings.configfiles])
    CONFIG = configuration.check_and_resolve(config, configuration.load_schema(ROOT))
    PLAN = planning.build(CONFIG)
except (configuration.ConfigError, planning.PlanError) as err:
    raise WorkflowError(str(err)) from None

configuration.warn_of_shadowed_settings(workflow.config_settings.configfiles, workflow.config_settings.config,
                                        config, ROOT)

LAYOUT = PLAN.layout
RESULTS = CONFIG["results"]


wildcard_constraints:
    batch="[0-9a-f]{16}",
    paper="|".join(REGISTRY),
    name="[A-Za-z0-9][A-Za-z0-9_.+-]*",


def node(stage, wildcards):
    """The planned node a job's wildcards name (claims are named after their paper)."""
    name = wildcards.name if "name" in wildcards.keys() else wildcards.paper
    return PLAN.get(stage, f"{wildcards.paper}/{name}")


def batch_members(wildcards):
    """Params function: the payloads of a batch's cells."""
    return PLAN.batches[wildcards.batch].payloads()


def gpus(specs):
    """1 if any of the nodes runs on a GPU (its spec's device), else 0: SLURM's --gpus."""
    return int(any(spec.get("device") == "cuda" for spec in specs))


def batch_gpus(wildcards):
    """Resources function: a training job asks for a GPU if its cells train on one (fu2023's
    closed-form fits name no device: they run on the CPU)."""
    return gpus(member.spec for member in PLAN.batches[wildcards.batch].members)


def evaluation_gpus(wildcards):
    """Resources function: a tidy job asks for a GPU if it runs trained models on one."""
    return gpus([node("tidy", wildcards).spec])


def batch_resources(key, combine):
    """Resources function: the cells' estimates (from their paper), combined."""

    def of(wildcards):
        members = PLAN.batches[wildcards.batch].members
        planner = planning.planner(members[0].paper)
        return combine(planner.resources(member)[key] for member in members)

    return of


def table_resource(stage, key):
    """Resources function: a theory or tidy job's memory or runtime (`key`): plan.table_resources,
    its paper's estimate where its planner makes a larger one than the profile's default."""
    return lambda wildcards: planning.table_resources(node(stage, wildcards))[key]


def payload(stage):
    """Params function: the node's payload (what its job needs to run it)."""
    return lambda wildcards: node(stage, wildcards).payload()


def figure_caption(wildcards):
    """Params function: the figure's caption text (workflow/report/<paper>/<name>.rst)."""
    path = ROOT / "workflow" / "report" / wildcards.paper / f"{wildcards.name}.rst"
    return path.read_text() if path.is_file() else ""


def results_root(levels):
    """Params function: the results directory, `levels` directories above the output."""
    return lambda wildcards, output: str(Path(output[0]).parents[levels - 1])


def upstream(stage):
    """Input function: what the node's inputs produce (batch markers for data and cells)."""
    return lambda wildcards: PLAN.input_paths(node(stage, wildcards).inputs)


ENV = str(ROOT / "envs" / "iclrepro.yaml")  # used with --sdm conda
