# Evaluation of every trained model: natural/adversarial accuracy and attribution attacks. Each
# job reads its settings.json (written by common.smk when the config is read; newer than the
# job's outputs exactly when they were made with other settings).


rule evaluate_accuracy:
    input:
        model=trained_model,
        data=prepared_data,
        settings="results/seed~{seed}/{dataset}/{method}/accuracy/settings.json",
    output:
        summary="results/seed~{seed}/{dataset}/{method}/accuracy/summary.json",
        per_example="results/seed~{seed}/{dataset}/{method}/accuracy/per_example.csv",
    log:
        "logs/evaluate_accuracy/seed~{seed}/{dataset}/{method}.log",
    benchmark:
        "results/benchmarks/evaluate_accuracy/seed~{seed}/{dataset}/{method}.tsv"
    conda:
        "../../envs/attrrob.yaml"
    threads: RESOURCES["evaluate"]["threads"]
    resources:
        gpu=GPU_PER_JOB,
        mem_mb=RESOURCES["evaluate"]["mem_mb"],
        runtime=RESOURCES["evaluate"]["runtime"],
        slurm_partition=slurm_partition(GPU_PER_JOB),
    params:
        device=config["device"],
        out=folder_of("summary"),
    shell:
        "attrrob evaluate-accuracy --model {input.model} --data {input.data}"
        " --dataset {wildcards.dataset} --out {params.out} --settings {input.settings}"
        " --device {params.device} --threads {threads} --no-progress"
        " > {log} 2>&1"


rule evaluate_attack:
    input:
        model=trained_model,
        data=prepared_data,
        settings="results/seed~{seed}/{dataset}/{method}/attack_{attack}/settings.json",
    output:
        summary="results/seed~{seed}/{dataset}/{method}/attack_{attack}/summary.json",
        per_example="results/seed~{seed}/{dataset}/{method}/attack_{attack}/per_example.csv",
        examples="results/seed~{seed}/{dataset}/{method}/attack_{attack}/examples.npz",
        trace="results/seed~{seed}/{dataset}/{method}/attack_{attack}/trace.npz",
    log:
        "logs/evaluate_attack/seed~{seed}/{dataset}/{method}/{attack}.log",
    benchmark:
        "results/benchmarks/evaluate_attack/seed~{seed}/{dataset}/{method}/{attack}.tsv"
    conda:
        "../../envs/attrrob.yaml"
    threads: RESOURCES["evaluate"]["threads"]
    resources:
        gpu=GPU_PER_JOB,
        mem_mb=RESOURCES["evaluate"]["mem_mb"],
        runtime=RESOURCES["evaluate"]["runtime"],
        slurm_partition=slurm_partition(GPU_PER_JOB),
    params:
        device=config["device"],
        out=folder_of("summary"),
        save_examples=config["evaluation"]["save_examples"],
    shell:
        "attrrob evaluate --model {input.model} --data {input.data}"
        " --dataset {wildcards.dataset} --attack {wildcards.attack} --out {params.out}"
        " --settings {input.settings}"
        " --save-examples {params.save_examples} --device {params.device}"
        " --threads {threads} --no-progress"
        " > {log} 2>&1"
