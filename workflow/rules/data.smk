# Raw files (downloaded, or copied from a local mirror) and prepared arrays.


rule download:
    output:
        directory("data/raw/{dataset}"),
    log:
        "logs/download/{dataset}.log",
    benchmark:
        "results/benchmarks/download/{dataset}.tsv"
    conda:
        "../../envs/attrrob.yaml"
    threads: RESOURCES["data"]["threads"]
    resources:
        mem_mb=RESOURCES["data"]["mem_mb"],
        runtime=RESOURCES["data"]["runtime"],
        slurm_partition=slurm_partition(0),
    params:
        mirror=mirror_option,
    shell:
        "attrrob download --dataset {wildcards.dataset} --out {output} {params.mirror}"
        " > {log} 2>&1"


rule prepare:
    input:
        raw_data,
    output:
        npz="data/prepared/{dataset}.npz",
        manifest="data/prepared/{dataset}.json",
    log:
        "logs/prepare/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare/{dataset}.tsv"
    conda:
        "../../envs/attrrob.yaml"
    threads: RESOURCES["data"]["threads"]
    resources:
        mem_mb=RESOURCES["data"]["mem_mb"],
        runtime=RESOURCES["data"]["runtime"],
        slurm_partition=slurm_partition(0),
    params:
        config=HYPERPARAMETERS_FILE,
        settings=prepare_settings,
    shell:
        "attrrob prepare --dataset {wildcards.dataset} --raw {input}"
        " --out {output.npz} --config {params.config} > {log} 2>&1"
