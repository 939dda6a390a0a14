# Training, one model per run (attrrob.experiments): per seed of `seeds:` (results/seed~<s>/...)
# and per sweep point (results/seed~<s>/<dataset>/<method>/sweep/<point>/). Resumable state lives in
# checkpoints/{dataset}/{method}/settings~<digest>/ (the digest holds the training seed), deliberately
# not a declared output: Snakemake deletes the outputs of a failed or interrupted job, and the
# checkpoints must survive so that `snakemake --rerun-incomplete` resumes the run instead of
# restarting it. The run's settings.json (written by common.smk when the config is read) is newer
# than the model exactly when the model was trained with other settings: then it retrains.


rule train:
    input:
        data=prepared_data,
        settings=settings_file(),
    output:
        model="results/{run}/model.pt",
        log_csv="results/{run}/train_log.csv",
        metrics="results/{run}/train_metrics.json",
    log:
        "logs/train/{run}.log",
    benchmark:
        "results/benchmarks/train/{run}.tsv"
    conda:
        "../../envs/attrrob.yaml"
    threads: RESOURCES["train"]["threads"]
    resources:
        gpu=GPU_PER_JOB,
        mem_mb=RESOURCES["train"]["mem_mb"],
        runtime=RESOURCES["train"]["runtime"],
        slurm_partition=slurm_partition(GPU_PER_JOB),
    params:
        device=config["device"],
        out=folder_of("model"),
        checkpoints=checkpoint_dir,
        dataset=run_param("dataset"),
        method=run_param("method"),
    shell:
        "attrrob train --settings {input.settings} --dataset {params.dataset}"
        " --method {params.method} --data {input.data} --out {params.out}"
        " --checkpoint-dir {params.checkpoints} --device {params.device} --threads {threads}"
        " --no-progress"
        " > {log} 2>&1"
