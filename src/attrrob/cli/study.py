"""`attrrob study run|report|status`: a resumable study committed run by run, its tables, README
section, budgets page and HTML reports rebuilt from the committed folder alone, and where it stands.

  attrrob study run --config config/mnist_cpu.yaml --study studies/mnist_cpu --jobs 2 \\
      --order natural madry ig_sum_norm ig_norm sarkar --readme README.md --budgets docs/budgets.md \\
      --budget-sources studies/mnist_cpu/budget studies/digits_quickstart/budget --html
  attrrob study report --study studies/mnist_cpu --readme README.md --budgets docs/budgets.md \\
      --budget-sources studies/mnist_cpu/budget studies/digits_quickstart/budget --html
  (the same with --check instead of --html: CI's comparison, writes nothing)
  attrrob study status --study studies/mnist_cpu --jobs 1 --threads-per-run 2
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from attrrob.errors import AttrrobError, one_line_errors
from attrrob.study import regenerate


def _run(args: argparse.Namespace) -> None:
    from attrrob.study.runner import Options, Runner

    if args.jobs < 1:
        raise AttrrobError(f"--jobs {args.jobs}: at least 1")
    if args.threads_per_run < 1:
        raise AttrrobError(f"--threads-per-run {args.threads_per_run}: at least 1")
    for flag, value in (("--start-within", args.start_within), ("--finish-within", args.finish_within)):
        if value is not None and not value >= 0:
            raise AttrrobError(f"{flag} {value}: minutes, at least 0")
    if not Path(args.config).is_file():
        raise AttrrobError(f"--config {args.config}: no such file")
    if not (Path.cwd() / "Snakefile").is_file():
        raise AttrrobError(f"{Path.cwd()} has no Snakefile: run `attrrob study run` in the workflow's folder")
    options = Options(root=Path.cwd(), config=args.config, study=args.study, jobs=args.jobs, order=args.order,
                      redo=args.redo, snakemake_args=args.snakemake_args, target=args.target,
                      readme=args.readme, budgets=args.budgets, budget_sources=args.budget_sources, html=args.html,
                      start_within_s=None if args.start_within is None else 60 * args.start_within,
                      finish_within_s=None if args.finish_within is None else 60 * args.finish_within,
                      threads_per_run=args.threads_per_run)
    runner = Runner(options, log=lambda line: print(line, flush=True))

    def stop(signum, _frame):
        print(f"attrrob study: signal {signum}: stopping the runs in progress (committed runs stay)",
              file=sys.stderr, flush=True)
        runner.stop()
        raise SystemExit(128 + signum)

    def drain(signum, _frame):
        print(f"attrrob study: signal {signum}: starting no further run; those in progress finish and are "
              "committed", file=sys.stderr, flush=True)
        runner.drain()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop)
    signal.signal(signal.SIGUSR1, drain)
    if args.dry_run:
        plan, todo = runner.prepare()
        print(f"{len(plan.runs) - len(todo)} of {len(plan.runs)} runs committed; to run, in order:")
        for run in todo:
            print(f"  {run.name}")
        return
    code = runner.run()
    print(f"study folder: {regenerate.size_mb(args.study):.1f} MB (limit {regenerate.SIZE_LIMIT_MB} MB)")
    if code:
        raise AttrrobError(f"run(s) failed: {', '.join(runner.failed)}; rerun the same command to retry them")


def _report(args: argparse.Namespace) -> None:
    texts = regenerate.regenerated(args.study, args.readme, args.budgets, args.budget_sources)
    if args.check:
        stale = regenerate.differences(texts)
        if stale:
            raise AttrrobError(f"{', '.join(map(str, stale))} differ(s) from what the committed files of "
                               f"{args.study} give; run the same command without --check and commit the result")
        print(f"{len(texts)} file(s) match what {args.study} gives")
        return
    for path in regenerate.write_changed(texts):
        print(f"wrote {path}")
    if args.html:
        for page in regenerate.html_reports(args.study):
            print(f"wrote {page}")
    size = regenerate.size_mb(args.study)
    print(f"study folder: {size:.1f} MB (limit {regenerate.SIZE_LIMIT_MB} MB)")
    if size > regenerate.SIZE_LIMIT_MB:
        raise AttrrobError(f"{args.study} holds {size:.1f} MB, more than the {regenerate.SIZE_LIMIT_MB} MB "
                           "a clone should carry")


def _status(args: argparse.Namespace) -> None:
    from attrrob.study import status

    for flag, value in (("--jobs", args.jobs), ("--threads-per-run", args.threads_per_run)):
        if value < 1:
            raise AttrrobError(f"{flag} {value}: at least 1")
    for line in status.report(Path.cwd(), args.study, args.threads_per_run, args.jobs):
        print(line)


def _report_arguments(parser: argparse.ArgumentParser, when: str) -> None:
    parser.add_argument("--readme", type=Path, help=f"{when}fill this README's results section")
    parser.add_argument("--budgets", type=Path, help=f"{when}write the budgets page (docs/budgets.md) here")
    parser.add_argument("--budget-sources", type=Path, nargs="+",
                        help="budget-search result folders to render (default: <study>/budget)")
    parser.add_argument("--html", action="store_true", help=f"{when}render the HTML reports into <study>/reports/")


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="attrrob study", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the study's remaining runs, committing each as it finishes")
    run.add_argument("--config", required=True, help="the workflow config file (--configfile)")
    run.add_argument("--study", type=Path, required=True, help="the committed study folder")
    run.add_argument("--jobs", type=int, default=2, help="runs at a time (each one thread, niced)")
    run.add_argument("--threads-per-run", type=int, default=1, metavar="N",
                     help="threads of each run's training and evaluation jobs (default 1: --jobs runs side by "
                          "side, one thread each); e.g. --jobs 1 --threads-per-run 2 to finish one long run sooner")
    run.add_argument("--order", nargs="+", default=[], metavar="NAME",
                     help="run first the runs whose folder names these (e.g. methods, cheap ones first)")
    run.add_argument("--redo", nargs="+", default=[], metavar="RUN",
                     help="run these committed runs again (e.g. seed~0/mnist/sarkar), replacing their files")
    run.add_argument("--dry-run", action="store_true",
                     help="write and commit plan.json, list the runs to do in order, run nothing")
    run.add_argument("--target", default="all", help="the Snakemake target whose runs make the study")
    run.add_argument("--start-within", type=float, default=None, metavar="MINUTES",
                     help="start no run later than this after the start; those in progress finish and are "
                          "committed (a session or allocation of limited length). SIGUSR1 does the same now")
    run.add_argument("--finish-within", type=float, default=None, metavar="MINUTES",
                     help="start a run only if it is expected to end within this after the start (expected: "
                          "the longest committed run of its data set and method at the same --threads-per-run, or "
                          "without one, the run of the method nearest in per-step cost with its training scaled "
                          "by the cost ratio; a run with neither is not held back); a run that does not fit is passed over for "
                          "a later one that does")
    _report_arguments(run, "after each committed run, ")
    run.add_argument("--snakemake-args", nargs=argparse.REMAINDER, default=[],
                     help="more Snakemake options for every call (last)")
    report = sub.add_parser("report", help="rebuild tables, README section, budgets page, HTML from the study")
    report.add_argument("--study", type=Path, required=True)
    _report_arguments(report, "")
    report.add_argument("--check", action="store_true",
                        help="write nothing; fail when a text file differs from what the study gives (CI)")
    status = sub.add_parser("status", help="each planned run committed, in progress or to run, and the "
                                          "expected wall time left (reads files, runs nothing)")
    status.add_argument("--study", type=Path, required=True)
    status.add_argument("--jobs", type=int, default=1, help="runs at a time, for the time left (default 1)")
    status.add_argument("--threads-per-run", type=int, default=1, metavar="N",
                        help="threads per run the runs left will have, for their estimates (default 1)")
    args = parser.parse_args(argv)
    {"run": _run, "report": _report, "status": _status}[args.command](args)


if __name__ == "__main__":
    main()
