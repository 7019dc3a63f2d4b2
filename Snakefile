"""Regenerate every figure and claim verdict of the selected papers.

    snakemake --cores 2                               # quick scale, config.yaml's papers
    snakemake --cores 2 --config scale=smoke papers=cui2024

The config is validated and planned at parse time (workflow/rules/common.smk); every
rule is a thin call into the `iclrepro` package next to this file.
"""

from pathlib import Path

ROOT = Path(workflow.basedir)


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/theory.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/claims.smk"


onstart:
    workspace.ignore_in_git(RESULTS)


rule all:
    default_target: True
    input:
        PLAN.targets(),
