rule theory:
    output:
        LAYOUT.theory("{paper}", "{name}"),
    params:
        node=payload("theory"),
        results=results_root(levels=3),
    conda:
        ENV
    benchmark:
        f"{RESULTS}/benchmarks/theory/{{paper}}/{{name}}.tsv"
    log:
        f"{RESULTS}/logs/theory/{{paper}}/{{name}}.log",
    shell:
        "python -m iclrepro theory {params.node:q} {output:q} --results {params.results:q} > {log:q} 2>&1"
