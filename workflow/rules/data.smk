rule data:
    output:
        LAYOUT.data("{id}"),
    params:
        node=payload("data"),
        results=results_root(levels=2),
    conda:
        ENV
    benchmark:
        f"{RESULTS}/benchmarks/data/{{id}}.tsv"
    log:
        f"{RESULTS}/logs/data/{{id}}.log",
    shell:
        "python -m iclrepro data {params.node:q} {output:q} --results {params.results:q} > {log:q} 2>&1"
