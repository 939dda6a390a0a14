"""A failed job's own error lines reach the console (the workflow's onerror handler, issue 21)."""

from __future__ import annotations

import shutil

import pytest
import yaml

from attrrob import job_errors

RUN_LOG = """\
[Fri Dec  4 03:00:00 2026]
localrule download:
    output: data/raw/mnist
    log: logs/download/mnist.log
    jobid: 2
Error in rule download:
    message: None
    jobid: 2
    output: data/raw/mnist
    log: logs/download/mnist.log, logs/download/extra.log (check log file(s) for error details)
    shell:
        attrrob download --dataset mnist --out data/raw/mnist  > logs/download/mnist.log 2>&1
        (command exited with non-zero exit code)
Error in rule prepare:
    jobid: 3
    output: data/prepared/x.npz
Removing output files of failed job download since they might be corrupted:
"""


def test_failed_job_logs_are_read_from_snakemakes_run_log():
    assert job_errors.failed_job_logs(RUN_LOG) == [
        ("download", ["logs/download/mnist.log", "logs/download/extra.log"])]


def test_summary_holds_the_last_lines_of_each_failed_jobs_log(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "logs/download").mkdir(parents=True)
    lines = [f"line {i}" for i in range(20)] + ["attrrob: error: pass --mirror DIR"]
    (tmp_path / "logs/download/mnist.log").write_text("\n".join(lines) + "\n\n")
    (tmp_path / "run.log").write_text(RUN_LOG)
    text = job_errors.summary(tmp_path / "run.log", lines=3)
    assert text.splitlines() == [
        "attrrob: rule download failed; the end of logs/download/mnist.log:",
        "    line 18", "    line 19", "    attrrob: error: pass --mirror DIR",
        "attrrob: rule download failed; the end of logs/download/extra.log:",
        "    (cannot read logs/download/extra.log: No such file or directory)"]
    assert job_errors.summary([tmp_path / "missing.log", str(tmp_path / "run.log")], lines=3) == text
    assert job_errors.summary(tmp_path / "missing.log") == "" and job_errors.summary(None) == ""


@pytest.mark.skipif(shutil.which("snakemake") is None, reason="snakemake is not installed")
@pytest.mark.parametrize("profile", [[], ["--profile", "workflow/profiles/default"]], ids=["plain", "profile"])
def test_a_failed_download_says_on_the_console_how_to_set_the_mirror(tmp_path, profile):
    from test_workflow import copy_workflow, run, tool

    workdir = copy_workflow(tmp_path / "w")

    dead_proxy = "http://127.0.0.1:9"  # no network: a proxy that refuses connections
    config = tmp_path / "no_mirror.yaml"
    config.write_text(yaml.safe_dump({"datasets": ["mnist"], "data": {"mirror": None}}))
    result = run([tool("snakemake"), "data/raw/mnist", "--cores", "1", *profile, "--configfile", str(config)],
                 workdir, env={"http_proxy": dead_proxy, "https_proxy": dead_proxy, "no_proxy": ""},
                 timeout=180)
    text = result.stdout + result.stderr
    assert result.returncode != 0
    assert "attrrob: rule download failed; the end of logs/download/mnist.log:" in text, text[-3000:]
    assert "set data.mirror in the workflow config" in text
