# Training. Resumable state lives in checkpoints/{dataset}/{method}/, deliberately not a declared
# output: Snakemake deletes the outputs of a failed or interrupted job, and the checkpoints must
# survive so that `snakemake --rerun-incomplete` resumes the run instead of restarting it.


rule train:
    input:
        prepared_data,
    output:
        model="results/{dataset}/{method}/model.pt",
        log_csv="results/{dataset}/{method}/train_log.csv",
        metrics="results/{dataset}/{method}/train_metrics.json",
    log:
        "logs/train/{dataset}/{method}.log",
    benchmark:
        "results/benchmarks/train/{dataset}/{method}.tsv"
    conda:
        "../../envs/attrrob.yaml"
    threads: RESOURCES["train"]["threads"]
    resources:
        gpu=GPU_PER_JOB,
        mem_mb=RESOURCES["train"]["mem_mb"],
        runtime=RESOURCES["train"]["runtime"],
        slurm_partition=slurm_partition(GPU_PER_JOB),
    params:
        config=HYPERPARAMETERS_FILE,
        device=config["device"],
        out="results/{dataset}/{method}",
        checkpoints="checkpoints/{dataset}/{method}",
        steps=steps_option,
        settings=train_settings,
    shell:
        "attrrob train --config {params.config} --dataset {wildcards.dataset}"
        " --method {wildcards.method} --data {input} --out {params.out}"
        " --checkpoint-dir {params.checkpoints} --device {params.device} --threads {threads}"
        " {params.steps} --no-progress"
        " > {log} 2>&1"
