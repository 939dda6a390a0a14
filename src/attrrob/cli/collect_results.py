"""`attrrob collect-results`: gather per-run result files into the files DVC and the README read.

Reads only what `attrrob.report` reads (nothing is recomputed) and writes, atomically:
  <results>/metrics.json        {dataset: {method: {NA, AA, [AA_autoattack,] <attack>: {IN, CO, rho,
                                lens_recall, lens_precision, topk_div_intersection}}}}
                                (`dvc metrics show`)
  <results>/table.md            the results table(s), Markdown, published numbers beside them, and
                                the paired comparison (sarkar − ig_sum_norm, ig_sum_norm − natural)
                                and, with the `noise` control among the attacks, each attack's IN, τ
                                and LENS metrics beside the control's, with the paired difference
  <curves>/<dataset>_<method>.csv   step, total, batch_accuracy
  <figures>/<dataset>/<quantity>.png  the reports' figures as image files (`dvc plots show`, which
                                shows images offline), each titled with its data set, quantity
                                and methods
With --sweeps (the workflow's results/sweeps), each sweep's points with their test numbers beside
the main runs, the chosen point marked (attrrob.report.sweeps): under <dataset>.<method>.sweep in
metrics.json, a "Sweeps" section in table.md, and <figures>/<dataset>/sweep_<method>_<key>.png.
and, with --readme, fills the README's results section between its markers.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

from attrrob import config as attrrob_config
from attrrob import outputs, registry, report
from attrrob.errors import AttrrobError, one_line_errors

README_START = "<!-- results-table:start -->"
README_END = "<!-- results-table:end -->"
ACCURACY_METRICS = ("NA", "AA")
ATTACK_METRICS = ("IN", "CO", "rho")


def _value(number: float) -> float | None:
    return None if math.isnan(number) else float(number)


def _seeds_and_root(results_dir, seeds):
    """(seeds, root whose seed~<s>/ folders hold them); no seeds: results_dir is one run's tree."""
    if seeds:
        return list(seeds), Path(results_dir)
    return [None], None


def _tree(results_dir, seed):
    return results_dir if seed is None else report.seeds.seed_dir(results_dir, seed)


def metrics(results_dir, datasets, methods, attacks, seeds=None) -> dict:
    """Means (over seeds, with several) per data set × method; with several seeds, `across_seeds`
    holds each metric's t interval over seeds and each seed's mean with its image interval."""
    out: dict = {}
    seeds, root = _seeds_and_root(results_dir, seeds)
    for attack in attacks:
        if root is None:
            table, per_seed = report.collect_table(results_dir, datasets, methods, attack), None
        else:
            table, per_seed = report.seeds.table(root, seeds, datasets, methods, attack)
        for index, row in enumerate(table.to_dict("records")):
            entry = out.setdefault(row["dataset"], {}).setdefault(row["method"], {})
            for key in ACCURACY_METRICS:
                entry[key] = _value(row[f"{key}_mean"])
            if not math.isnan(row["AA_auto_mean"]):  # only where AutoAttack was run
                entry["AA_autoattack"] = float(row["AA_auto_mean"])
            entry[attack] = {key: _value(row[f"{key}_mean"]) for key in ATTACK_METRICS}
            # LENS metrics: the mean over seeds of each seed's means.
            lens = [report.lens.attack_means(report.load_attack(_tree(results_dir, seed), row["dataset"],
                                                                row["method"], attack)) for seed in seeds]
            entry[attack].update({key: _mean_or_none([one.get(key) for one in lens]) for key in lens[0]})
            if per_seed is not None and len(seeds) > 1:
                across = entry.setdefault("across_seeds", {"seeds": seeds})
                across.update(report.seeds.metrics_entry(per_seed, index, ACCURACY_METRICS))
                across[attack] = report.seeds.metrics_entry(per_seed, index, ATTACK_METRICS)
    return out



def _mean_or_none(values) -> float | None:
    numbers = [v for v in values if v is not None and not math.isnan(v)]
    return float(sum(numbers) / len(numbers)) if len(numbers) == len(values) and numbers else None


# The paper's claim (sarkar over the previous best) and the baseline's own gain, on the same images.
PAIRED = (("sarkar", "ig_sum_norm"), ("ig_sum_norm", "natural"))


def tables(results_dir, datasets, methods, attacks, seeds=None) -> str:
    """Per attack: the per-method table, then the paired comparison of PAIRED (where both ran);
    with `seeds`, over those seeds' trees (attrrob.report.seeds), stating how many."""
    parts = []
    pairs = [(a, b) for a, b in PAIRED if a in methods and b in methods]
    seeds, root = _seeds_and_root(results_dir, seeds)
    for attack in attacks:
        if root is None:
            table, per_seed = report.collect_table(results_dir, datasets, methods, attack), {None: None}
        else:
            table, per_seed = report.seeds.table(root, seeds, datasets, methods, attack)
        described = report.attack_description(table.iloc[0]) if len(table) else ""
        heading = f"Attack: `{attack}`{described}\n\n" if len(attacks) > 1 else ""
        text = heading + report.markdown_table(table)
        if root is not None:
            text += f"\n{report.seeds.note(seeds)}\n"
            listed = report.seeds.per_seed_markdown(table, per_seed, attack)
            text += f"\n{listed}" if listed else ""
        if pairs:
            if root is None:
                paired = report.paired_comparison(results_dir, datasets, pairs, attack)
            else:
                paired = report.seeds.paired(root, seeds, datasets, pairs, attack)
            text += "\nPaired comparison on the same attacked images:\n\n" + report.paired_markdown(paired)
            listed = report.seeds.paired_per_seed_markdown(paired)
            text += f"\n{listed}" if listed else ""
        if report.CONTROL in attacks and attack != report.CONTROL:
            if root is None:
                noise = report.lens_comparison(results_dir, datasets, methods, attack, report.CONTROL)
            else:
                noise = report.seeds.lens(root, seeds, datasets, methods, attack, report.CONTROL)
            text += (f"\nWhat the `{attack}` attack adds over the `{report.CONTROL}` control (LENS metrics beside IN "
                     f"and τ):\n\n" + report.lens_markdown(noise))
            listed = report.seeds.lens_per_seed_markdown(noise)
            text += f"\n{listed}" if listed else ""
        parts.append(text)
    return "\n".join(parts)


def write_training_curves(results_dir, datasets, methods, out_dir: Path) -> None:
    for dataset in datasets:
        for method in methods:
            log = report.load_train_log(results_dir, dataset, method)
            if log is not None:
                curve = log[["step", "total", "batch_accuracy"]]
                outputs.write_text(out_dir / f"{dataset}_{method}.csv", curve.to_csv(index=False))


def _save_figure(figure, title: str, path: Path) -> None:
    import io
    import textwrap

    # Wrapped to the figure's width (about 11 characters per inch at this size): never clipped.
    width = max(30, int(figure.get_figwidth() * 11))
    figure.suptitle("\n".join(textwrap.wrap(title, width)), fontsize="medium", fontweight="bold")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=report.figures.DPI)
    outputs.write_bytes(path, buffer.getvalue())


def write_figures(results_dir, datasets, methods, attacks, out_dir: Path, seeds=None) -> list[Path]:
    """Per data set: training curves, and per attack the forest plot and the per-image τ and IN
    violins, as PNG files titled "<data set>: <quantity> (<methods>)". Figures are of one seed's
    tree (`results_dir`), except the forest plot with several `seeds` (sibling seed~<s> trees)."""
    written = []
    for dataset in datasets:
        name = report.dataset_name(dataset)
        logs = {m: report.load_train_log(results_dir, dataset, m) for m in methods}
        settings = {m: (report.load_train_metrics(results_dir, dataset, m) or {}).get("settings") for m in methods}
        trained = [report.method_name(m) for m in methods if logs[m] is not None]
        figures = [("training_curves", "training loss terms and batch accuracy per step", trained,
                    report.plot_training_curves(logs, name, settings))]
        for attack in attacks:
            table = report.collect_table(results_dir, [dataset], methods, attack)
            per_example = report.collect_per_example(results_dir, [dataset], methods, attack)
            shown = [report.method_name(m) for m in dict.fromkeys(per_example["method"])] if len(per_example) else []
            forest, label = report.plot_forest(table), f"NA, AA, IN, CO with 95% CIs, {attack} attack"
            if seeds and len(seeds) > 1:  # the mean over seeds with its t interval, each seed a dot
                over, per_seed = report.seeds.table(Path(results_dir).parent, seeds, [dataset], methods, attack)
                forest = report.plot_forest(over, per_seed=per_seed)
                label = (f"NA, AA, IN, CO: mean over {len(seeds)} seeds with 95% t intervals over seeds, each "
                         f"seed's value a hollow dot; {attack} attack")
            figures += [
                (f"forest_{attack}", label, [report.method_name(m) for m in methods], forest),
                (f"kendall_tau_{attack}", f"per-image Kendall τ, {attack} attack", shown,
                 report.plot_metric_distribution(per_example, "kendall_tau")),
                (f"in_{attack}", f"per-image IN (%), {attack} attack", shown,
                 report.plot_metric_distribution(per_example, "topk_intersection"))]
        for quantity, label, names, figure in figures:
            if figure is None:
                continue
            path = out_dir / dataset / f"{quantity}.png"
            _save_figure(figure, f"{name}: {label}; methods: {', '.join(names)}", path)
            written.append(path)
    return written


def sweep_summaries(sweeps_root, datasets, methods, attack, base=".") -> list[dict]:
    """Each sweep's points and main runs with their test numbers (attrrob.report.sweeps)."""
    return [report.sweeps.summarise(spec, attack) for spec in report.sweeps.load(sweeps_root, datasets, methods, base)]


def with_sweeps(metrics_found: dict, summaries: list[dict]) -> dict:
    """metrics.json's entries with each sweep under <dataset>.<method>.sweep."""
    for summary in summaries:
        entry = metrics_found.setdefault(summary["dataset"], {}).setdefault(summary["method"], {})
        entry["sweep"] = outputs.json_safe(summary)
    return metrics_found


def sweeps_markdown(summaries: list[dict]) -> str:
    """The sweeps' section of table.md ("" without sweeps)."""
    extra = "".join("\n" + report.sweeps.markdown(summary) for summary in summaries)
    return "\n## Sweeps\n" + extra if extra else ""


def fill_readme(readme: Path, table: str) -> None:
    text = readme.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(README_START) + ".*?" + re.escape(README_END), re.DOTALL)
    if not pattern.search(text):
        raise AttrrobError(f"{readme}: no '{README_START}' ... '{README_END}' section to fill")
    filled = pattern.sub(lambda _: f"{README_START}\n{table}{README_END}", text)
    outputs.write_text(readme, filled)


def _attack_name(text: str) -> str:
    if text in registry.attack_names() or attrrob_config.VARIANT_NAME.fullmatch(text):
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is neither an attack ({', '.join(registry.attack_names())}) nor a "
                                     "variant name (lower-case letters, digits and _)")


def _seed(text: str) -> int:
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer seed") from None
    if not 0 <= seed < 2**32:
        raise argparse.ArgumentTypeError(f"{text!r}: a seed is in [0, 2^32)")
    return seed


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="attrrob collect-results", description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    parser.add_argument("--datasets", nargs="+", required=True, choices=attrrob_config.datasets())
    parser.add_argument("--methods", nargs="+", default=list(registry.METHODS),
                        choices=registry.method_names())
    parser.add_argument("--attacks", nargs="+", default=["topk"], type=_attack_name, metavar="ATTACK",
                        help="attacks or attack variants whose results (attack_<name>/) to collect")
    parser.add_argument("--metrics", type=Path, help="write the metrics JSON here")
    parser.add_argument("--table", type=Path, help="write the Markdown table(s) here")
    parser.add_argument("--curves", type=Path, help="write training-curve CSVs into this folder")
    parser.add_argument("--figures", type=Path, help="write the reports' figures as PNG files into this folder")
    parser.add_argument("--readme", type=Path, help="README whose results section to fill")
    parser.add_argument("--seeds", nargs="+", type=_seed, metavar="SEED",
                        help="training seeds to aggregate over, each in <results-dir>/seed~<SEED>/ (the "
                             "workflow's layout); without it, <results-dir> is one run's tree")
    parser.add_argument("--sweeps", type=Path, default=None, metavar="DIR",
                        help="sweeps to report: DIR/<dataset>/<method>/sweep.json (and selection.json), "
                             "whose run folders are relative to the working directory")
    args = parser.parse_args(argv)
    if not any((args.metrics, args.table, args.curves, args.figures, args.readme)):
        parser.error("nothing to write: give --metrics, --table, --curves, --figures and/or --readme")
    if not args.results_dir.is_dir():
        raise AttrrobError(f"results directory {args.results_dir} does not exist; run the workflow first "
                           "or pass --results-dir")
    if args.seeds and len(set(args.seeds)) != len(args.seeds):
        raise AttrrobError(f"--seeds: each seed once, got {' '.join(map(str, args.seeds))}")
    for seed in args.seeds or []:
        if not report.seeds.seed_dir(args.results_dir, seed).is_dir():
            raise AttrrobError(f"--seeds: {report.seeds.seed_dir(args.results_dir, seed)} does not exist; "
                               "run the workflow with that seed first")
    where = (args.results_dir, args.datasets, args.methods, args.attacks)
    sweeps = ([] if args.sweeps is None
              else sweep_summaries(args.sweeps, args.datasets, args.methods, args.attacks[0]))
    if args.metrics:
        outputs.write_json(args.metrics, with_sweeps(metrics(*where, seeds=args.seeds), sweeps))
    table = tables(*where, seeds=args.seeds) if args.table or args.readme else None
    if args.table:
        outputs.write_text(args.table, table + sweeps_markdown(sweeps))
    # Training curves and figures are per run: the first seed's (the reports' too).
    one = report.seeds.seed_dir(args.results_dir, args.seeds[0]) if args.seeds else args.results_dir
    if args.curves:
        args.curves.mkdir(parents=True, exist_ok=True)
        write_training_curves(one, args.datasets, args.methods, args.curves)
    if args.figures:
        args.figures.mkdir(parents=True, exist_ok=True)
        write_figures(one, args.datasets, args.methods, args.attacks, args.figures, seeds=args.seeds)
        for summary in sweeps:
            for index, (_, key, _) in enumerate(summary["swept"]):
                path = args.figures / summary["dataset"] / f"sweep_{summary['method']}_{key}.png"
                _save_figure(report.sweeps.plot_sensitivity(summary, index),
                             report.sweeps.figure_title(summary, index), path)
    if args.readme:
        fill_readme(args.readme, table)


if __name__ == "__main__":
    main()
