rule train:
    input:
        upstream("train"),
    output:
        [LAYOUT.cell("{id}", name) for name in store.CELL_FILES],
    params:
        node=payload("train"),
        results=results_root(levels=3),
        out_dir=LAYOUT.cell_dir("{id}"),
    threads: CONFIG["threads"]
    resources:
        mem_mb=cell_resources("mem_mb"),
        runtime=cell_resources("runtime"),
    conda:
        ENV
    benchmark:
        f"{RESULTS}/benchmarks/train/{{id}}.tsv"
    log:
        f"{RESULTS}/logs/train/{{id}}.log",
    shell:
        "python -m iclrepro train {params.node:q} {params.out_dir:q} --results {params.results:q} --data {input:q}"
        " --threads {threads} > {log:q} 2>&1"
