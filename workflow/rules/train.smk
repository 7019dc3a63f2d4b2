# Cells are trained in batches: one process trains every cell of a batch that is not
# done yet (Lightning and torch are imported once), making any test or training set it
# needs that does not exist yet, and writing each cell to results/cells/<id>/; the batch
# marker is the job's only output. See src/iclrepro/batch.py.


rule train:
    output:
        LAYOUT.batch("train", "{paper}", "{batch}"),
    params:
        members=batch_members,
        results=results_root(levels=4),
    threads: CONFIG["threads"]
    resources:
        mem_mb=batch_resources("mem_mb", max),
        runtime=batch_resources("runtime", sum),
        gpu=batch_gpus,  # SLURM: --gpus=1 for CUDA training
    conda:
        ENV
    benchmark:
        f"{RESULTS}/benchmarks/train/{{paper}}/{{batch}}.tsv"
    log:
        f"{RESULTS}/logs/batches/train/{{paper}}/{{batch}}.log",
    script:
        "../scripts/run_batch.py"
