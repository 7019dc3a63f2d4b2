rule data:
    output:
        LAYOUT.data("{id}"),
    params:
        node=payload("data"),
    conda:
        ENV
    log:
        f"{RESULTS}/logs/data/{{id}}.log",
    shell:
        "python -m iclrepro data {params.node:q} {output:q} > {log:q} 2>&1"
