"""The failed jobs' own error lines, for the console: Snakemake names a failed job's log file in
its run log ("Error in rule ...: ... log: FILE (check log file(s) for error details)"), and the
useful line (e.g. "pass --mirror DIR ... or set data.mirror") is at the end of that file."""

from __future__ import annotations

import re
from pathlib import Path

_ERROR = re.compile(r"^Error in rule (\S+):$")
_LOG = re.compile(r"^\s+log: (.+?)(?: \(check log file\(s\) for error details\))?$")


def failed_job_logs(run_log: str) -> list[tuple[str, list[str]]]:
    """(rule, log files) of every failed job named in a Snakemake run log's text, in order."""
    failed: list[tuple[str, list[str]]] = []
    rule = None
    for line in run_log.splitlines():
        error = _ERROR.match(line.strip())
        if error:
            rule = error.group(1)
            continue
        log = _LOG.match(line) if rule else None
        if log:
            failed.append((rule, [part.strip() for part in log.group(1).split(",") if part.strip()]))
            rule = None
        elif rule and not line.startswith((" ", "\t")) and line.strip():
            rule = None  # the job's block ended without a log file
    return failed


def tail(path: str | Path, lines: int = 5) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return [f"(cannot read {path}: {exc.strerror})"]
    return [line for line in text.splitlines() if line.strip()][-lines:]


def summary(run_logs, lines: int = 5) -> str:
    """The last `lines` lines of every failed job's own log, each block headed by rule and file.
    `run_logs`: Snakemake's run log file(s) (its onerror handler gets a list)."""
    if run_logs is None:
        return ""
    if isinstance(run_logs, (str, Path)):
        run_logs = [run_logs]
    seen, blocks = set(), []
    for run_log in run_logs:
        if not Path(run_log).is_file():
            continue
        for rule, logs in failed_job_logs(Path(run_log).read_text(encoding="utf-8", errors="replace")):
            for log in logs:
                if log in seen:
                    continue
                seen.add(log)
                body = "\n".join("    " + line for line in tail(log, lines))
                blocks.append(f"attrrob: rule {rule} failed; the end of {log}:\n{body}")
    return "\n".join(blocks)
