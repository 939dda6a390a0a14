# Run-level handlers: before the first job, the plan's estimated training time (and a refusal
# of more than a day on a CPU nobody asked for); after a failure, each failed job's own last
# log lines on the console, not only in logs/.


def _training_jobs_to_run():
    """(dataset, method) of the training jobs this run will start."""
    jobs = workflow.dag.needrun_jobs()
    runs = [RUNS[job.wildcards["run"]] for job in jobs if job.rule.name == "train"]
    return [(run.dataset, run.method) for run in runs]


def _jobs_run_here():
    """Whether jobs run on this machine: on a cluster (Slurm) this machine's device says nothing
    about the nodes' devices, so no estimate is made there."""
    plugin = workflow.executor_plugin
    return plugin is None or not plugin.common_settings.non_local_exec


onstart:
    if attrrob_config is not None and _jobs_run_here():
        from attrrob import plan_estimate

        try:
            line = plan_estimate.check_plan(
                HYPERPARAMETERS_FILE,
                _training_jobs_to_run(),
                config["train_steps"],
                config["device"],
            )
        except ConfigError as exc:
            sys.exit("attrrob: error: " + " ".join(str(exc).split()))
        if line:
            print("attrrob: " + line, file=sys.stderr)


onerror:
    if attrrob_config is not None:
        from attrrob import job_errors

        text = job_errors.summary(log)
        if text:
            print(text, file=sys.stderr)
