"""Every snakemake command the project shows puts its target before --resources/--configfile.

Snakemake's --resources and --configfile take every following word, so
`snakemake --cores 8 --resources gpu=2 all` is a traceback and `--configfile FILE all` reads `all`
as a second config file (issue 21). This greps the repository's docs, configs, profiles, workflow
and tests for a target word inside the values of those two options.
"""

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_TEXT = re.compile(r"(\.md|\.yaml|\.yml|\.smk|\.py|\.rst|\.txt|\.toml|\.sh|Snakefile|run)$")
_STOP = {"#", "|", "||", "&&", ";", ">", "2>&1", "\\"}


def _targets() -> set[str]:
    rules = set()
    for path in [REPO / "Snakefile", *sorted((REPO / "workflow/rules").glob("*.smk"))]:
        rules.update(re.findall(r"^rule (\w+):", path.read_text(), flags=re.M))
    return rules


def _is_target(word: str, rules: set[str]) -> bool:
    return word in rules or word.startswith(("reports/", "results/", "data/"))


def misplaced_targets(line: str, rules: set[str]) -> list[str]:
    """Words of `line` that a snakemake command would read as values of --resources/--configfile
    although they are targets (a rule name or an output path)."""
    if "snakemake" not in line:
        return []
    words = re.sub(r"[\"'`,\[\]()]", " ", line).split()
    found, option = [], None
    for word in words:
        if word in _STOP or word.endswith("snakemake"):  # a new command starts
            option = None
        elif word.startswith("-"):
            option = word if word in ("--resources", "--configfile", "--configfiles") else None
        elif option and _is_target(word, rules):
            found.append(word)
    return found


def test_the_checker_finds_a_target_after_the_options():
    rules = {"all", "train"}
    assert misplaced_targets("snakemake --cores 8 --resources gpu=2 all", rules) == ["all"]
    assert misplaced_targets("snakemake --configfile config/q.yaml all  # x", rules) == ["all"]
    assert misplaced_targets('snakemake(w, "-n", "--configfile", "c.yaml", "reports/d.html")', rules) \
        == ["reports/d.html"]
    assert misplaced_targets("snakemake all --cores 8 --resources gpu=2", rules) == []
    assert misplaced_targets("snakemake --configfile c.yaml --rerun-incomplete all", rules) == []
    assert misplaced_targets("snakemake all --resources gpu=2  (or: snakemake all --profile p)", rules) == []


def test_no_command_in_the_repository_puts_a_target_after_resources_or_configfile():
    rules = _targets()
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    problems = []
    for name in files:
        if not _TEXT.search(name) or name == "tests/test_command_order.py":
            continue
        path = REPO / name
        if not path.is_file():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            words = misplaced_targets(line, rules)
            if words:
                problems.append(f"{name}:{number}: {words} in {line.strip()}")
    assert not problems, "put the target first (snakemake all --cores ...):\n" + "\n".join(problems)
