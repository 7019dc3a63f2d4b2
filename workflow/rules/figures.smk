# A figure is two jobs: its tidy data (evaluation against theory and baselines) and its
# drawing, so a change in plotting code only redraws.


rule tidy:
    input:
        upstream("tidy"),
    output:
        LAYOUT.tidy("{paper}", "{name}"),
    params:
        node=payload("tidy"),
        results=results_root(levels=3),
        arguments=lambda wildcards, output: {"out": output[0]},
    resources:
        gpu=evaluation_gpus,  # SLURM: --gpus=1 where trained models are evaluated on a GPU
        mem_mb=table_resource("tidy", "mem_mb"),
        runtime=table_resource("tidy", "runtime"),
    conda:
        ENV
    benchmark:
        f"{RESULTS}/benchmarks/tidy/{{paper}}/{{name}}.tsv"
    log:
        f"{RESULTS}/logs/tidy/{{paper}}/{{name}}.log",
    script:
        "../scripts/run_stage.py"


rule draw:
    input:
        LAYOUT.tidy("{paper}", "{name}"),
    output:
        png=report(
            LAYOUT.figure("{paper}", "{name}", "png"),
            caption="../report/figure.rst",
            category="{paper}",
            subcategory="{name}",
            labels={"figure": "{name}", "file": "figure"},
        ),
        pdf=LAYOUT.figure("{paper}", "{name}", "pdf"),
        provenance=report(
            LAYOUT.figure("{paper}", "{name}", "json"),
            caption="../report/provenance.rst",
            category="{paper}",
            subcategory="{name}",
            labels={"figure": "{name}", "file": "provenance"},
        ),
    params:
        node=payload("draw"),
        caption=figure_caption,
        results=results_root(levels=3),
        arguments=lambda wildcards, input, output: {"tidy": input[0], "out_png": output.png, "out_pdf": output.pdf},
    resources:
        runtime=planning.DRAW_RUNTIME,
    conda:
        ENV
    benchmark:
        f"{RESULTS}/benchmarks/draw/{{paper}}/{{name}}.tsv"
    log:
        f"{RESULTS}/logs/draw/{{paper}}/{{name}}.log",
    script:
        "../scripts/run_stage.py"
