# Evaluation of every trained model: natural/adversarial accuracy and attribution attacks. Each
# job reads its settings.json (written by common.smk when the config is read; newer than the
# job's outputs exactly when they were made with other settings).


rule evaluate_accuracy:
    input:
        model=trained_model,
        data=prepared_data,
        settings=settings_file("accuracy"),
    output:
        summary="results/{run}/accuracy/summary.json",
        per_example="results/{run}/accuracy/per_example.csv",
    log:
        "logs/evaluate_accuracy/{run}.log",
    benchmark:
        "results/benchmarks/evaluate_accuracy/{run}.tsv"
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
        dataset=run_param("dataset"),
    shell:
        "attrrob evaluate-accuracy --model {input.model} --data {input.data}"
        " --dataset {params.dataset} --out {params.out} --settings {input.settings}"
        " --device {params.device} --threads {threads} --no-progress"
        " > {log} 2>&1"


rule evaluate_attack:
    input:
        model=trained_model,
        data=prepared_data,
        settings=settings_file("attack"),
    output:
        summary="results/{run}/attack_{attack}/summary.json",
        per_example="results/{run}/attack_{attack}/per_example.csv",
        examples="results/{run}/attack_{attack}/examples.npz",
        trace="results/{run}/attack_{attack}/trace.npz",
    log:
        "logs/evaluate_attack/{run}/{attack}.log",
    benchmark:
        "results/benchmarks/evaluate_attack/{run}/{attack}.tsv"
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
        dataset=run_param("dataset"),
    shell:
        "attrrob evaluate --model {input.model} --data {input.data}"
        " --dataset {params.dataset} --attack {wildcards.attack} --out {params.out}"
        " --settings {input.settings}"
        " --save-examples {params.save_examples} --device {params.device}"
        " --threads {threads} --no-progress"
        " > {log} 2>&1"


# A sweep's evaluations on the validation split (its selection reads these, never test ones):
# the accuracies, and the selection's attack when it chooses by IN or τ.


rule evaluate_validation_accuracy:
    input:
        model=trained_model,
        data=prepared_data,
        settings=settings_file("accuracy", "validation"),
    output:
        summary="results/{run}/validation/accuracy/summary.json",
        per_example="results/{run}/validation/accuracy/per_example.csv",
    log:
        "logs/evaluate_accuracy/validation/{run}.log",
    benchmark:
        "results/benchmarks/evaluate_accuracy/validation/{run}.tsv"
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
        dataset=run_param("dataset"),
    shell:
        "attrrob evaluate-accuracy --split validation --model {input.model} --data {input.data}"
        " --dataset {params.dataset} --out {params.out} --settings {input.settings}"
        " --device {params.device} --threads {threads} --no-progress"
        " > {log} 2>&1"


rule evaluate_validation_attack:
    input:
        model=trained_model,
        data=prepared_data,
        settings=settings_file("attack", "validation"),
    output:
        summary="results/{run}/validation/attack_{attack}/summary.json",
        per_example="results/{run}/validation/attack_{attack}/per_example.csv",
    log:
        "logs/evaluate_attack/validation/{run}/{attack}.log",
    benchmark:
        "results/benchmarks/evaluate_attack/validation/{run}/{attack}.tsv"
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
        dataset=run_param("dataset"),
    shell:
        "attrrob evaluate --split validation --model {input.model} --data {input.data}"
        " --dataset {params.dataset} --attack {wildcards.attack} --out {params.out}"
        " --settings {input.settings} --save-examples 0 --device {params.device}"
        " --threads {threads} --no-progress"
        " > {log} 2>&1"


# The choice of a sweep's value, from the validation results above only. A checkpoint: the main
# runs' settings files are written from its output once it exists (common.smk selected_settings).
checkpoint select:
    input:
        sweep="results/sweeps/{dataset}/{method}/sweep.json",
        validation=validation_results,
    output:
        "results/sweeps/{dataset}/{method}/selection.json",
    log:
        "logs/select/{dataset}/{method}.log",
    conda:
        "../../envs/attrrob.yaml"
    threads: 1
    resources:
        mem_mb=RESOURCES["report"]["mem_mb"],
        runtime=RESOURCES["report"]["runtime"],
        slurm_partition=slurm_partition(0),
    shell:
        "attrrob select --sweep {input.sweep} --out {output} > {log} 2>&1"
