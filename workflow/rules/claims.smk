# Verdicts only read the tidy tables (a few seconds each): on a cluster they run on the
# submitting host, where a SLURM job each would wait longer in the queue than it runs.
localrules:
    claims,
    claims_table,


rule claims:
    input:
        upstream("claims"),
    output:
        LAYOUT.claims("{paper}"),
    params:
        node=payload("claims"),
        results=results_root(levels=2),
        arguments=lambda wildcards, output: {"out": output[0]},
    conda:
        ENV
    benchmark:
        f"{RESULTS}/benchmarks/claims/{{paper}}.tsv"
    log:
        f"{RESULTS}/logs/claims/{{paper}}.log",
    script:
        "../scripts/run_stage.py"


rule claims_table:
    input:
        [LAYOUT.claims(paper) for paper in CONFIG["papers"]],
    output:
        md=LAYOUT.claims_table("md"),
        html=report(LAYOUT.claims_table("html"), caption="../report/claims.rst", category="Claims"),
    params:
        source=store.fingerprint("iclrepro.evaluation.claims"),
        scale=CONFIG["scale"],
    conda:
        ENV
    benchmark:
        f"{RESULTS}/benchmarks/claims_table.tsv"
    log:
        f"{RESULTS}/logs/claims/table.log",
    shell:
        "python -m iclrepro claims-table --scale {params.scale:q} {output.md:q} {output.html:q} {input:q} > {log:q} 2>&1"
