rule theory:
    output:
        LAYOUT.theory("{paper}", "{name}"),
    params:
        node=payload("theory"),
    conda:
        ENV
    log:
        f"{RESULTS}/logs/theory/{{paper}}/{{name}}.log",
    shell:
        "python -m iclrepro theory {params.node:q} {output:q} > {log:q} 2>&1"
