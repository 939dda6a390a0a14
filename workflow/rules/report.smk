# HTML reports: notebook templates executed with papermill, rendered without code by nbconvert
# through workflow/report/offline.html.j2 (no script from a CDN: the reports read offline).
# papermill writes the executed notebook even when a cell fails, so it writes into the log
# folder (kept on failure, for debugging) and the notebook is copied to reports/ only after
# both steps succeeded; Snakemake deletes the outputs of a failed job, so no complete-looking
# HTML is ever left behind.


rule report_summary:
    input:
        template=REPORTS["summary_notebook"],
        html_template="workflow/report/offline.html.j2",
        results=summary_report_inputs,
    output:
        notebook="reports/summary.ipynb",
        html=report(
            "reports/summary.html",
            caption="../report/summary.rst",
            category="Reports",
            subcategory="Summary",
        ),
    log:
        notebook="logs/report/summary.ipynb",
        stdout="logs/report/summary.log",
    benchmark:
        "results/benchmarks/report/summary.tsv"
    conda:
        "../../envs/attrrob.yaml"
    threads: RESOURCES["report"]["threads"]
    resources:
        mem_mb=RESOURCES["report"]["mem_mb"],
        runtime=RESOURCES["report"]["runtime"],
        slurm_partition=slurm_partition(0),
    params:
        # One seed's results (the first of `seeds:`); results/table.md aggregates over seeds.
        results_dir=seed_dir(SEEDS[0]),
        config_name=CONFIG_NAME,
        seeds=json_list(str(seed) for seed in SEEDS),
        datasets=json_list(DATASETS),
        methods=json_list(METHODS),
        attacks=json_list(ATTACKS),
    shell:
        "(papermill {input.template:q} {log.notebook:q} --kernel python3 --cwd . --no-progress-bar"
        " -p results_dir {params.results_dir} -p datasets {params.datasets:q}"
        " -p methods {params.methods:q} -p attacks {params.attacks:q}"
        " -p config_name {params.config_name:q} -p seeds {params.seeds:q}"
        " && jupyter nbconvert --to html --no-input --template-file {input.html_template:q} {log.notebook:q}"
        " --output-dir reports --output summary"
        " && cp {log.notebook:q} {output.notebook:q}) > {log.stdout:q} 2>&1"


rule report_dataset:
    input:
        template=REPORTS["dataset_notebook"],
        html_template="workflow/report/offline.html.j2",
        results=dataset_report_inputs,
    output:
        notebook="reports/{dataset}.ipynb",
        html=report(
            "reports/{dataset}.html",
            caption="../report/dataset.rst",
            category="Reports",
            subcategory="{dataset}",
        ),
    log:
        notebook="logs/report/{dataset}.ipynb",
        stdout="logs/report/{dataset}.log",
    benchmark:
        "results/benchmarks/report/{dataset}.tsv"
    conda:
        "../../envs/attrrob.yaml"
    threads: RESOURCES["report"]["threads"]
    resources:
        mem_mb=RESOURCES["report"]["mem_mb"],
        runtime=RESOURCES["report"]["runtime"],
        slurm_partition=slurm_partition(0),
    params:
        # One seed's results (the first of `seeds:`); results/table.md aggregates over seeds.
        results_dir=seed_dir(SEEDS[0]),
        config_name=CONFIG_NAME,
        seeds=json_list(str(seed) for seed in SEEDS),
        methods=json_list(METHODS),
        attacks=json_list(ATTACKS),
        # papermill needs a value after the name, and Snakemake's :q renders "" as nothing.
        sweeps=f"-p sweeps_dir {shlex.quote(SWEEPS_DIR)}" if SWEEPS_DIR else "",
    shell:
        "(papermill {input.template:q} {log.notebook:q} --kernel python3 --cwd . --no-progress-bar"
        " -p results_dir {params.results_dir} -p dataset {wildcards.dataset}"
        " -p methods {params.methods:q} -p attacks {params.attacks:q}"
        " -p config_name {params.config_name:q} -p seeds {params.seeds:q}"
        " {params.sweeps}"
        " && jupyter nbconvert --to html --no-input --template-file {input.html_template:q} {log.notebook:q}"
        " --output-dir reports --output {wildcards.dataset}"
        " && cp {log.notebook:q} {output.notebook:q}) > {log.stdout:q} 2>&1"


# The files `dvc metrics show` / `dvc plots show` read, and the README's results table.
rule collect_results:
    input:
        summary_report_inputs,
    output:
        metrics="results/metrics.json",
        table="results/table.md",
        curves=directory("results/plots/train"),
        figures=directory("results/plots/figures"),
    log:
        "logs/report/collect_results.log",
    benchmark:
        "results/benchmarks/report/collect_results.tsv"
    conda:
        "../../envs/attrrob.yaml"
    threads: RESOURCES["report"]["threads"]
    resources:
        mem_mb=RESOURCES["report"]["mem_mb"],
        runtime=RESOURCES["report"]["runtime"],
        slurm_partition=slurm_partition(0),
    params:
        datasets=" ".join(DATASETS),
        methods=" ".join(METHODS),
        attacks=" ".join(ATTACKS),
        seeds=seeds_option(),
        sweeps=f"--sweeps {SWEEPS_DIR}" if SWEEPS_DIR else "",
    shell:
        "attrrob collect-results --results-dir results --seeds {params.seeds} {params.sweeps}"
        " --datasets {params.datasets}"
        " --methods {params.methods} --attacks {params.attacks}"
        " --metrics {output.metrics} --table {output.table} --curves {output.curves}"
        " --figures {output.figures}"
        " > {log} 2>&1"
