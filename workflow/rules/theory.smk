rule theory:
    output:
        LAYOUT.theory("{paper}", "{name}"),
    params:
        node=payload("theory"),
        results=results_root(levels=3),
        arguments=lambda wildcards, output: {"out": output[0]},
    resources:
        mem_mb=table_resource("theory", "mem_mb"),
        runtime=table_resource("theory", "runtime"),
    conda:
        ENV
    benchmark:
        f"{RESULTS}/benchmarks/theory/{{paper}}/{{name}}.tsv"
    log:
        f"{RESULTS}/logs/theory/{{paper}}/{{name}}.log",
    script:
        "../scripts/run_stage.py"
