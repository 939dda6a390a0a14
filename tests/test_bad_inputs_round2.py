"""Bad inputs, round two: hostile or unlucky files, full and read-only disks, two writers, hostile YAML.

As in test_bad_inputs.py, every case must end in a non-zero exit with exactly one error line that
names the file or key at fault, no traceback, and every earlier result keeping its bytes. The
fuzz cases (random and truncated model files) call the loader directly, so a few hundred files
take about a second.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from attrrob import checkpoint, models
from attrrob.errors import AttrrobError

from test_bad_inputs import MODULES, base_argv, snapshot


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Earlier results: digits data, a 2-step natural model (outputs + checkpoint), an attack, an accuracy."""
    from test_bad_inputs import ws as first_round

    return first_round.__wrapped__(tmp_path_factory)


def run_cli(verb: str, argv: list[str], capsys) -> tuple[int, str]:
    """(exit code, the one error line) of an in-process CLI call that must fail cleanly."""
    with pytest.raises(SystemExit) as exit_info:
        MODULES[verb].main(argv)
    out = capsys.readouterr()
    text = out.out + out.err
    assert exit_info.value.code not in (0, None), text
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines() if "error:" in line]
    assert len(errors) == 1, text
    return exit_info.value.code, errors[0]


def assert_one_clear_line(ws: Path, capsys, verb: str, argv: list[str], *fragments: str) -> str:
    before = snapshot(ws)
    _, line = run_cli(verb, argv, capsys)
    for fragment in fragments:
        assert fragment in line, line
    after = snapshot(ws)
    assert {name: after.get(name) for name in before} == before  # earlier files keep their bytes
    assert all(name.startswith(("new/", "hostile/", "collect/")) for name in set(after) - set(before))
    return line


# ------------------------------------------------------------------ 1. model and checkpoint files


def _loads_or_refuses(path: Path) -> str:
    """'ok' or 'refused'; any other exception fails the test (it would be a traceback)."""
    try:
        checkpoint.load_model(path)
    except AttrrobError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return "refused"
    return "ok"


def test_random_bytes_as_a_model_file_are_refused(tmp_path):
    rng = np.random.default_rng(20)
    outcomes = []
    for i in range(256):
        path = tmp_path / f"random_{i}.pt"
        size = int(rng.integers(0, 4096))
        head = b"PK\x03\x04" if i % 4 == 0 else (b"\x80\x02" if i % 4 == 1 else b"")  # zip / pickle-looking starts
        path.write_bytes(head + rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        outcomes.append(_loads_or_refuses(path))
    assert outcomes == ["refused"] * 256


@pytest.mark.parametrize("kind", ["model", "checkpoint"])
def test_truncated_and_bit_flipped_model_files_never_escape(tmp_path, kind):
    torch.manual_seed(0)
    model = models.build("digits")
    good = tmp_path / "good.pt"
    settings = {"dataset": "digits", "method": "natural"}
    if kind == "model":
        checkpoint.save_model(good, model=model, config=settings, step=3)
    else:
        checkpoint.save_checkpoint(good, model=model, optimizer=torch.optim.Adam(model.parameters()), step=3,
                                   rng={}, config=settings)
    data = good.read_bytes()
    rng = np.random.default_rng(len(data))
    cuts = sorted(set(rng.integers(0, len(data), 120).tolist()) | {0, 1, len(data) - 1})
    for cut in cuts:
        path = tmp_path / f"cut_{cut}.pt"
        path.write_bytes(data[:cut])
        assert _loads_or_refuses(path) == "refused", cut
    flipped = 0
    for i in range(120):  # a damaged byte may leave the file loadable (tensor data has no checksum)
        buf = bytearray(data)
        buf[int(rng.integers(0, len(buf)))] ^= int(rng.integers(1, 256))
        path = tmp_path / f"flip_{i}.pt"
        path.write_bytes(bytes(buf))
        flipped += _loads_or_refuses(path) == "refused"
    assert flipped > 0


def _saved(path: Path, obj) -> str:
    torch.save(obj, path)
    return str(path)


def test_safe_loadable_files_of_the_wrong_structure(tmp_path):
    weights = models.build("digits").state_dict()
    mnist = models.build("mnist").state_dict()
    config = {"dataset": "digits", "method": "natural"}
    base = {"config": config, "dataset": "digits", "method": "natural", "step": 1, "format": 1}
    cases = {
        "a list": ([1, 2, 3], "missing 'model'/'config'"),
        "weights a number": ({**base, "model": 3}, "entry 'model' is not a mapping of parameter names to tensors"),
        "weights a list": ({**base, "model": [torch.zeros(2)]}, "entry 'model' is not a mapping"),
        "weights of strings": ({**base, "model": {"fc1.weight": "x"}}, "entry 'model' is not a mapping"),
        "config a string": ({**base, "model": weights, "config": "digits"}, "entry 'config' is not a mapping"),
        "format 2": ({**base, "model": weights, "format": 2}, "unsupported file format 2"),
        "step text": ({**base, "model": weights, "step": "7"}, "entry 'step' is not an integer"),
        "dataset a number": ({**base, "model": weights, "dataset": 5}, "entry 'dataset' is not a name"),
        "unknown data set": ({**base, "model": weights, "dataset": "cifar" * 40}, "records the unknown data set"),
        "another architecture": ({**base, "model": mnist}, "weights do not fit the digits model (conv1.weight has shape"),
        "a missing layer": ({**base, "model": {k: v for k, v in weights.items() if k != "fc2.bias"}},
                            "weights do not fit the digits model (missing 'fc2.bias'"),
        "an extra layer": ({**base, "model": {**weights, "fc3.weight": torch.zeros(1)}},
                           "weights do not fit the digits model (unexpected 'fc3.weight'"),
        "checkpoint without rng": ({**base, "model": weights, "kind": "checkpoint", "optimizer": {}, "extra": {}},
                                   "entry 'rng' is missing or not a dict"),
    }
    for name, (obj, fragment) in cases.items():
        path = _saved(tmp_path / f"{name}.pt", obj)
        with pytest.raises(AttrrobError) as info:
            checkpoint.load_model(path)
        assert path in str(info.value) and fragment in str(info.value), (name, str(info.value))


def test_hostile_model_and_checkpoint_files_through_the_commands(ws, capsys):
    rng = np.random.default_rng(7)
    hostile = ws / "hostile"
    hostile.mkdir(exist_ok=True)
    (hostile / "random.pt").write_bytes(rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
    good = (ws / "results/natural/model.pt").read_bytes()
    (hostile / "truncated.pt").write_bytes(good[: len(good) // 2])
    torch.save({"model": [1], "config": {}, "format": 1}, hostile / "not_dict.pt")
    for verb in ("evaluate", "evaluate-accuracy"):
        for name, fragment in (("random.pt", "not a readable attrrob model"), ("truncated.pt", "not a readable"),
                               ("not_dict.pt", "entry 'model' is not a mapping")):
            path = str(hostile / name)
            assert_one_clear_line(ws, capsys, verb, base_argv(verb, ws) + ["--model", path], path, fragment)
    # A checkpoint found in --checkpoint-dir that lacks an entry the resume needs.
    saved = next((ws / "checkpoints/natural").glob("settings~*/latest.pt"))  # one folder per settings
    state = torch.load(saved, weights_only=True)
    del state["rng"]["numpy"]
    hostile_ck = hostile / "ck" / saved.parent.name / "latest.pt"
    hostile_ck.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, hostile_ck)
    assert_one_clear_line(ws, capsys, "train", base_argv("train", ws) + ["--checkpoint-dir", str(hostile / "ck")],
                          str(hostile_ck), "entry 'rng' lacks numpy")


# ------------------------------------------------------------------ 2. full and read-only disks

QUICK = {  # each command's fastest complete run, so that it reaches its writes
    "train": ["--steps", "1"],
    "evaluate": ["--num-examples", "2", "--set", "iterations=1", "--set", "ig_steps=2", "--save-examples", "1"],
    "evaluate-accuracy": ["--num-examples", "4", "--set", "steps=1", "--no-autoattack"],
}


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    point = tmp_path / "disk"
    point.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(point)):
        pytest.skip("cannot mount a tmpfs here")
    yield point
    subprocess.run(["umount", "-l", str(point)], check=True)  # -l: never leave a mount behind


def _fill(disk: Path) -> None:
    with open(disk / "filler", "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 512)
        except OSError:
            pass


def _earlier_results(folder: Path, names=("summary.json", "per_example.csv", "train_log.csv")) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(f"earlier {name}\n".encode())


@pytest.mark.parametrize("verb", ["train", "evaluate", "evaluate-accuracy", "checkpoints", "collect-results"])
def test_a_full_disk_is_one_line_and_keeps_earlier_results(ws, capsys, small_disk, verb):
    out = small_disk / "out"
    _earlier_results(out)
    _fill(small_disk)
    before = snapshot(small_disk)
    if verb == "collect-results":
        results = ws / "collect" / "digits"
        results.mkdir(parents=True, exist_ok=True)
        if not (results / "natural").exists():
            (results / "natural").symlink_to(ws / "results/natural")
        argv = ["--results-dir", str(ws / "collect"), "--datasets", "digits", "--methods", "natural",
                "--metrics", str(out / "summary.json")]
        target = out / "summary.json"
    elif verb == "checkpoints":  # the results folder has room; the checkpoint folder has none
        argv = base_argv("train", ws, out=str(ws / "new/ck_full_out")) + QUICK["train"] + [
            "--checkpoint-dir", str(out)]
        target = out / "settings~"  # <out>/settings~<digest>/latest.pt
        verb = "train"
    else:
        argv = base_argv(verb, ws, out=str(out)) + QUICK[verb]
        target = out
    line = assert_one_clear_line(ws, capsys, verb, argv, f"cannot write {target}", "No space left on device (ENOSPC)")
    assert "earlier files there are unchanged" in line
    assert snapshot(small_disk) == before  # earlier files intact, no temporary file left


@pytest.fixture
def read_only_results(tmp_path):
    """A folder of earlier results, seen through a read-only bind mount (root only)."""
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    source, point = tmp_path / "source", tmp_path / "ro"
    _earlier_results(source / "out")
    point.mkdir()
    if not _mount("--bind", str(source), str(point)):
        pytest.skip("cannot bind-mount here")
    try:
        if not _mount("-o", "remount,ro,bind", str(point)):
            pytest.skip("cannot remount read-only here")
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=True)  # -l: never leave a mount behind


@pytest.mark.parametrize("verb", ["train", "evaluate", "evaluate-accuracy", "checkpoints", "collect-results"])
def test_a_read_only_disk_is_one_line_and_keeps_earlier_results(ws, capsys, read_only_results, verb):
    out = read_only_results / "out"
    before = snapshot(read_only_results)
    if verb == "collect-results":
        argv = ["--results-dir", str(ws / "results"), "--datasets", "digits", "--methods", "natural",
                "--metrics", str(out / "summary.json")]
    elif verb == "checkpoints":
        argv = base_argv("train", ws, out=str(ws / "new/ck_ro_out")) + QUICK["train"] + ["--checkpoint-dir", str(out)]
        verb = "train"
    else:
        argv = base_argv(verb, ws, out=str(out)) + QUICK[verb]
    assert_one_clear_line(ws, capsys, verb, argv, f"cannot write {out}", "Read-only file system (EROFS)")
    assert snapshot(read_only_results) == before


# ------------------------------------------------------------------ 3. prepared data, bad content, good hash


def _with(arrays: dict, key: str, change) -> dict:
    out = {k: v.copy() for k, v in arrays.items()}
    out[key] = change(out[key])
    return out


def _set(index, value):
    def change(array):
        array[index] = value
        return array
    return change


BAD_CONTENT = {  # name: (split, key, change, fragment of the error)
    "label 12": ("train", "y_train", _set(5, 12), "y_train[5] = 12 is not a class of digits (0..9)"),
    "label -1": ("test", "y_test", _set(3, -1), "y_test[3] = -1 is not a class of digits"),
    "labels as floats": ("train", "y_train", lambda y: y.astype(np.float32), "y_train has dtype float32"),
    "pixels as text": ("test", "x_test", lambda x: x.astype("U2"), "x_test has dtype <U2, not a number type"),
    "pixel above range": ("train", "x_train", _set((7, 0, 2, 3), 200), "x_train[7] has pixel values outside"),
    "NaN pixel": ("test", "x_test", lambda x: _set((4, 0, 1, 1), np.nan)(x.astype(np.float32)),
                  "x_test[4] holds NaN or infinite pixels"),
    "Inf pixel": ("train", "x_train", lambda x: _set((9, 0, 0, 0), np.inf)(x.astype(np.float32)),
                  "x_train[9] holds NaN or infinite pixels"),
    "negative pixel": ("test", "x_test", lambda x: _set((2, 0, 5, 5), -1.0)(x.astype(np.float64)),
                       "x_test[2] has pixel values outside the digits range"),
    "wrong image size": ("train", "x_train", lambda x: np.zeros((len(x), 1, 8, 9), np.uint8),
                         "x_train images are [1, 8, 9], digits images are [1, 8, 8]"),
}


@pytest.mark.parametrize("case", BAD_CONTENT, ids=list(BAD_CONTENT))
def test_prepared_data_with_bad_content_but_a_matching_hash(ws, capsys, tmp_path, case):
    from attrrob.data import store

    split, key, change, fragment = BAD_CONTENT[case]
    source = ws / "data/digits.npz"
    arrays = dict(zip(("x_train", "y_train", "x_test", "y_test"),
                      store.read_npz_arrays(source, ("x_train", "y_train", "x_test", "y_test"), what="test")))
    manifest = {k: v for k, v in store.load_manifest(source).items()
                if k not in ("arrays", "npz_sha256", "file", "format")}
    bad = tmp_path / "prepared" / "digits.npz"
    store.write_prepared(bad, _with(arrays, key, change), manifest)  # a manifest whose hash matches
    verb = "train" if split == "train" else "evaluate"
    assert_one_clear_line(ws, capsys, verb, base_argv(verb, ws) + ["--data", str(bad)], str(bad), fragment)


# ------------------------------------------------------------------ 4. numbers too large or of the wrong sign

BOUNDS = [
    ("train", ["--set", "seed=1000000000000000000000000000000"], "--set seed: must be ≤ 4294967295, got 1000"),
    ("train", ["--set", "seed=10**30"], "--set seed: expected an integer, got '10**30'"),
    ("train", ["--set", "seed=4294967296"], "--set seed: must be ≤ 4294967295"),
    ("train", ["--set", "batch_size=100000000000000000000"], "--set batch_size: must be ≤ 10000000"),
    ("train", ["--set", "batch_size=5000"], "batch_size=5000 exceeds the 1437 training images"),
    ("train", ["--steps", "100000000000"], "--set steps: must be ≤ 10000000"),
    ("train", ["--set", "pgd_steps=1000000"], "--set pgd_steps: must be ≤ 100000"),
    ("train", ["--set", "eps=1e400"], "--set eps: must be finite"),
    ("train", ["--threads", "100000"], "--threads: must be ≤ 4096"),
    ("evaluate", ["--seed", "-1"], "--seed: must be ≥ 0, got -1"),
    ("evaluate", ["--seed", "4294967296"], "--seed: must be ≤ 4294967295"),
    ("evaluate", ["--save-examples", "1000000"], "--save-examples: must be ≤ 10000"),
    ("evaluate", ["--batch-images", "100000000000"], "--batch-images: must be ≤ 10000000"),
    ("evaluate", ["--memory-budget-gb", "inf"], "--memory-budget-gb: must be finite"),
    ("evaluate", ["--set", "iterations=10000000000"], "--set iterations: must be ≤ 100000"),
    ("evaluate", ["--num-examples", "100000000000"], "--set num_examples: must be ≤ 10000000"),
    ("evaluate-accuracy", ["--seed", "-1"], "--seed: must be ≥ 0, got -1"),
    ("evaluate-accuracy", ["--seed", "99999999999999999999"], "--seed: must be ≤ 4294967295"),
    ("evaluate-accuracy", ["--set", "batch_size=100000000000000000000"], "--set batch_size: must be ≤ 10000000"),
    ("evaluate-accuracy", ["--set", "steps=1000000000"], "--set steps: must be ≤ 100000"),
]


@pytest.mark.parametrize("verb, extra, fragment", BOUNDS, ids=[f"{v}:{' '.join(e)}"[:60] for v, e, _ in BOUNDS])
def test_numbers_too_large_or_negative(ws, capsys, verb, extra, fragment):
    assert_one_clear_line(ws, capsys, verb, base_argv(verb, ws) + extra, fragment)


def test_config_file_seed_out_of_range(ws, capsys, tmp_path):
    path = tmp_path / "seed.yaml"
    path.write_text("hyperparameters:\n  digits: {train: {common: {seed: 18446744073709551616}}}\n")
    assert_one_clear_line(ws, capsys, "train", base_argv("train", ws) + ["--config", str(path)],
                          str(path), "hyperparameters.digits.train.common.seed: must be ≤ 4294967295")


# ------------------------------------------------------------------ 5. hostile YAML

LAUGHS = ("hyperparameters:\n  digits:\n    train:\n      common:\n"
          "        a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
          + "".join(f"        {c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")))
HOSTILE_YAML = {  # name: (verb, file text, fragments of the one error line)
    "billion laughs": ("train", LAUGHS, ["line 6: the alias *a is not accepted"]),
    "merge key": ("train", "base: &base {steps: 3}\nhyperparameters:\n  digits: {train: {common: {<<: *base}}}\n",
                  ["line 3: the alias *base is not accepted"]),
    "a repeated setting": ("train", "hyperparameters:\n  digits:\n    train:\n      common:\n        steps: 7\n"
                           "        steps: 3\n", ["line 6: key 'steps' appears twice (lines 5 and 6)"]),
    "a repeated top-level key": ("evaluate", "datasets: [digits]\nmethods: [natural]\nmethods: [madry]\n",
                                 ["key 'methods' appears twice (lines 2 and 3)"]),
    "a repeated data set": ("evaluate-accuracy", "hyperparameters:\n  digits: {}\n  digits: {accuracy: {steps: 2}}\n",
                            ["key 'digits' appears twice (lines 2 and 3)"]),
    "a repeated flow key": ("train", "hyperparameters: {digits: {train: {common: {lam: 1, lam: 2}}}}\n",
                            ["key 'lam' appears twice (lines 1 and 1)"]),
    "a huge number": ("train", "hyperparameters:\n  digits: {train: {common: {steps: " + "9" * 5000 + "}}}\n",
                      ["line 2: the number '9999", "is too long"]),
    "a huge value in an error": ("train", "hyperparameters:\n  digits: {train: {common: {steps: " + "9" * 500 + "}}}\n",
                                 ["hyperparameters.digits.train.common.steps: must be ≤ 10000000, got 9999"]),
    "a huge text in an error": ("train", "hyperparameters:\n  digits: {train: {common: {steps: " + "x" * 5000 + "}}}\n",
                                ["steps: expected an integer, got 'xxxx"]),
    "an empty file": ("train", "", ["is empty"]),
    "only a comment": ("evaluate", "# nothing here\n", ["is empty"]),
}


@pytest.mark.parametrize("case", HOSTILE_YAML, ids=list(HOSTILE_YAML))
def test_hostile_yaml_config_files(ws, capsys, tmp_path, case):
    verb, text, fragments = HOSTILE_YAML[case]
    path = tmp_path / "config.yaml"
    path.write_text(text)
    line = assert_one_clear_line(ws, capsys, verb, base_argv(verb, ws) + ["--config", str(path)], str(path), *fragments)
    assert len(line) < 400  # no value printed in full


def test_an_alias_in_a_set_value(ws, capsys):
    assert_one_clear_line(ws, capsys, "train", base_argv("train", ws) + ["--set", "lr_schedule=[&a [0, 1], *a]"],
                          "--set 'lr_schedule=[&a [0, 1], *a]': the alias *a is not accepted")


WORKFLOW_YAML = {
    "billion laughs": ("datasets: [digits]\n" + LAUGHS, "the alias *a is not accepted"),
    "a repeated key": ("datasets: [digits]\nmethods: [natural]\nmethods: [madry]\n",
                       "key 'methods' appears twice (lines 2 and 3)"),
    "a repeated setting": ("datasets: [digits]\nhyperparameters:\n  digits:\n    attack: {iterations: 3}\n"
                           "    attack: {iterations: 4}\n", "key 'attack' appears twice (lines 4 and 5)"),
}


@pytest.mark.parametrize("case", WORKFLOW_YAML, ids=list(WORKFLOW_YAML))
def test_hostile_yaml_in_a_workflow_config_file(workflow_copy, tmp_path, case):
    from test_workflow import snakemake

    body, fragment = WORKFLOW_YAML[case]
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    result = snakemake(workflow_copy, "-n", "--configfile", str(path))
    text = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in text
    errors = [line for line in text.splitlines() if line.startswith("attrrob: error:")]
    assert len(errors) == 1 and str(path) in errors[0] and fragment in errors[0], text


# ------------------------------------------------------------------ 6. two writers on one folder

HOLD = ("import sys; from pathlib import Path; from attrrob.locks import lock_directory; "
        "lock = lock_directory(Path(sys.argv[1]), '--out'); print('held', flush=True); sys.stdin.read()")


@pytest.fixture
def held_by_another_process():
    """hold(folder) -> the PID of a separate process that holds the folder's lock until the test ends."""
    holders = []

    def hold(folder: Path) -> int:
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "held"
        holders.append(proc)
        return proc.pid

    yield hold
    for proc in holders:
        proc.communicate("", timeout=30)


@pytest.mark.parametrize("verb, option", [("train", "--out"), ("train", "--checkpoint-dir"), ("evaluate", "--out"),
                                          ("evaluate-accuracy", "--out")])
def test_a_second_writer_fails_at_once_naming_the_holder(ws, capsys, held_by_another_process, verb, option):
    folder = ws / "new" / f"busy_{verb}_{option.strip('-')}"
    held = folder
    if option == "--checkpoint-dir":  # the lock is on the folder of the run's settings (other settings train beside)
        from attrrob import config
        from attrrob.training import checkpoint_path

        held = checkpoint_path(folder, config.train_settings("digits", "natural", None, {"steps": 1})).parent
    pid = held_by_another_process(held)
    argv = base_argv(verb, ws) + QUICK[verb] + [option, str(folder)]
    assert_one_clear_line(ws, capsys, verb, argv, f"{option} {held} is in use by another attrrob run (PID {pid})")
    assert [p.name for p in held.iterdir()] == [".attrrob.lock"]  # nothing of the second run written


def test_two_trainings_on_one_folder_cannot_interleave(ws, capsys, tmp_path):
    out, ck = tmp_path / "out", tmp_path / "ck"
    first = subprocess.Popen([sys.executable, "-m", "attrrob", "train", *base_argv("train", ws, out=str(out)),
                              "--checkpoint-dir", str(ck), "--steps", "100000"],
                             stderr=subprocess.PIPE, text=True)
    try:
        for line in first.stderr:  # the first run holds both folders once it logs its settings
            if "train digits/natural" in line:
                break
        assert_one_clear_line(ws, capsys, "train", base_argv("train", ws, out=str(out)) + [
            "--checkpoint-dir", str(tmp_path / "other_ck"), "--set", "lam=0.5", "--steps", "1"],
            f"--out {out} is in use by another attrrob run (PID {first.pid})")
    finally:
        first.kill()
        first.wait()
    assert not (out / "model.pt").exists()  # the second run wrote nothing; the first was stopped
    # A killed holder leaves its lock file, but no lock: the next run proceeds.
    assert (out / ".attrrob.lock").exists()
    from attrrob.locks import lock_directory

    with lock_directory(out, "--out"):
        pass
    assert not (out / ".attrrob.lock").exists()


# ------------------------------------------------------------------ 7. damaged result files


@pytest.fixture(scope="module")
def results_tree(ws, tmp_path_factory):
    """<results>/digits/natural: a 2-step model's training files and a small topk attack."""
    import shutil

    root = tmp_path_factory.mktemp("results_tree")
    run = root / "digits" / "natural"
    shutil.copytree(ws / "results/natural", run)
    MODULES["evaluate"].main(base_argv("evaluate", ws, out=str(run / "attack_topk"))
                             + ["--num-examples", "6", "--set", "iterations=2", "--set", "ig_steps=4"])
    return root


def _cut_mid_row(data: bytes) -> bytes:
    return data[: data.rindex(b"\n", 0, len(data) - 1) + 12]


DAMAGE = {  # name: (file, change of its bytes, fragment of the error)
    "csv cut mid-row": ("attack_topk/per_example.csv", _cut_mid_row, "its SHA-256 differs"),
    "csv row dropped": ("attack_topk/per_example.csv", lambda d: d[: d.rindex(b"\n", 0, len(d) - 1) + 1],
                        "5 rows, "),
    "csv value changed": ("attack_topk/per_example.csv", lambda d: d.replace(b"\n0,", b"\n0,1", 1),  # a label
                          "its SHA-256 differs"),
    "csv column added": ("attack_topk/per_example.csv",
                         lambda d: b"\n".join(line + b",x" for line in d.split(b"\n")[:-1]) + b"\n",
                         "columns differ"),
    "trace changed": ("attack_topk/trace.npz", lambda d: d[:100] + bytes([d[100] ^ 1]) + d[101:],
                      "its SHA-256 differs"),
    "examples truncated": ("attack_topk/examples.npz", lambda d: d[: len(d) // 2], "its SHA-256 differs"),
    "train log cut": ("train_log.csv", lambda d: d[:-3], "its SHA-256 differs"),
}
LOADERS = {"per_example.csv": "load_per_example", "trace.npz": "load_trace", "examples.npz": "load_examples",
           "train_log.csv": "load_train_log"}


@pytest.mark.parametrize("case", DAMAGE, ids=list(DAMAGE))
def test_a_damaged_result_file_is_refused_naming_it(results_tree, case):
    from attrrob import report
    from attrrob.errors import DataError

    name, change, fragment = DAMAGE[case]
    path = results_tree / "digits/natural" / name
    original = path.read_bytes()
    path.write_bytes(change(original))
    try:
        loader = getattr(report, LOADERS[path.name])
        args = (results_tree, "digits", "natural") + (() if path.name == "train_log.csv" else ("topk",))
        with pytest.raises(DataError) as info:
            loader(*args)
        assert str(path) in str(info.value) and fragment in str(info.value), str(info.value)
    finally:
        path.write_bytes(original)
    assert getattr(report, LOADERS[path.name])(*args) is not None  # restored: read again


def test_collect_results_refuses_a_cut_training_log(results_tree, capsys, tmp_path):
    path = results_tree / "digits/natural/train_log.csv"
    original = path.read_bytes()
    path.write_bytes(_cut_mid_row(original))
    try:
        _, line = run_cli("collect-results", ["--results-dir", str(results_tree), "--datasets", "digits",
                                              "--methods", "natural", "--curves", str(tmp_path / "curves")], capsys)
    finally:
        path.write_bytes(original)
    assert str(path) in line and "its SHA-256 differs from the one" in line and "train_metrics.json" in line


def test_each_result_file_has_the_layout_of_result_files_and_reads_back(results_tree):
    """Writers and readers share attrrob.result_files: what training and evaluation wrote carries
    exactly its columns and arrays, and the report's readers take it."""
    import csv

    import numpy as np

    from attrrob import report, result_files

    run = results_tree / "digits/natural"
    with open(run / "attack_topk" / result_files.PER_EXAMPLE, newline="") as handle:
        assert tuple(next(csv.reader(handle))) == result_files.ATTACK_COLUMNS
    with open(run / result_files.TRAIN_LOG, newline="") as handle:
        assert next(csv.reader(handle)) == result_files.train_log_columns(("ce", "weight_decay"))
    for name, arrays in ((result_files.TRACE, result_files.TRACE_ARRAYS),
                         (result_files.EXAMPLES, result_files.EXAMPLE_ARRAYS)):
        with np.load(run / "attack_topk" / name) as stored:
            assert tuple(stored.files) == arrays, name
    frame = report.load_per_example(results_tree, "digits", "natural")
    assert set(result_files.PER_EXAMPLE_COLUMNS) <= set(frame.columns)
    assert set(report.load_trace(results_tree, "digits", "natural")) >= set(result_files.TRACE_ARRAYS)
    assert set(report.load_examples(results_tree, "digits", "natural")) == set(result_files.EXAMPLE_ARRAYS)
    assert list(report.load_train_log(results_tree, "digits", "natural").columns)[:3] == ["step", "lr", "total"]


def test_results_without_records_are_still_read(results_tree):
    """Results written before the records existed: nothing to check against, read as before."""
    import json

    from attrrob import report

    summary = results_tree / "digits/natural/attack_topk/summary.json"
    original = summary.read_text()
    doc = json.loads(original)
    assert set(doc["files"]) == {"per_example.csv", "trace.npz", "examples.npz"}
    del doc["files"]
    summary.write_text(json.dumps(doc))
    try:
        assert len(report.load_per_example(results_tree, "digits", "natural")) == 6
    finally:
        summary.write_text(original)


# ------------------------------------------------------------------ 9. interrupted training


def test_sigterm_to_a_training_process_writes_a_checkpoint_and_says_so(ws, tmp_path):
    import signal
    import time

    out, ck = tmp_path / "out", tmp_path / "ck"
    argv = [sys.executable, "-m", "attrrob", "train", *base_argv("train", ws, out=str(out)),
            "--checkpoint-dir", str(ck), "--set", "checkpoint_every=100000"]
    proc = subprocess.Popen([*argv, "--steps", "100000"], stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # the settings line comes just before the loop
        if "train digits/natural" in line:
            break
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert "Traceback" not in rest
    final = [line for line in rest.splitlines() if line.startswith("attrrob: ")]
    assert len(final) == 1 and "interrupted by SIGTERM after step" in final[0], rest
    saved = next(ck.glob("settings~*/latest.pt"))  # one folder per settings
    assert f"checkpoint {saved} written; rerun the same command to resume" in final[0]
    step = int(final[0].split("after step ")[1].split(":")[0])
    assert checkpoint.load_checkpoint(saved)["step"] == step >= 1 and not (out / "model.pt").exists()
    done = subprocess.run([*argv, "--steps", str(step + 1)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and f"resumed from checkpoint {saved} at step {step}" in done.stderr
    assert torch.load(out / "model.pt", weights_only=True)["step"] == step + 1
    from attrrob import training

    # The resumed call's log (which a workflow deletes before each call) opens with the earlier call's
    # lines, kept beside the checkpoint, and the kept file holds both calls in order.
    kept = saved.parent / training.CALL_LOG
    earlier, _, this_call = done.stderr.partition("--- this call ---")
    assert f"--- earlier calls of this run (kept in {kept}) ---" in earlier
    assert "train digits/natural" in earlier and f"call ended: interrupted by SIGTERM after step {step}" in earlier
    assert "resumed from checkpoint" not in earlier and f"resumed from checkpoint {saved}" in this_call
    lines = kept.read_text().splitlines()
    order = [i for i, line in enumerate(lines) if "train digits/natural:" in line or "call ended:" in line
             or "resumed from checkpoint" in line]
    assert [lines[i].split(": ", 1)[1][:12] for i in order] == ["train digits", "call ended: ", "train digits",
                                                                "resumed from"]
    # A start afresh (the checkpoint deleted) begins a new kept log.
    saved.unlink()
    again = subprocess.run([*argv, "--steps", "1"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "earlier calls" not in again.stderr, again.stderr
    assert "call ended" not in kept.read_text() and "resumed from" not in kept.read_text()
    assert kept.read_text().count("train digits/natural:") == 1


def test_ctrl_c_during_training_finishes_the_step_and_writes_a_checkpoint(ws, tmp_path, capsys, monkeypatch):
    import signal

    from attrrob import training

    real_step = training.train_step

    def step_then_ctrl_c_at_3(state, *args, **kwargs):
        result = real_step(state, *args, **kwargs)
        if state.step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # delivered to the handler before the next line runs
        return result

    monkeypatch.setattr(training, "train_step", step_then_ctrl_c_at_3)
    before = signal.getsignal(signal.SIGINT)  # default_int_handler; SIG_IGN where pytest runs in the background
    ck = tmp_path / "ck"
    argv = base_argv("train", ws, out=str(tmp_path / "out")) + ["--checkpoint-dir", str(ck), "--steps", "50"]
    with pytest.raises(SystemExit) as info:
        MODULES["train"].main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 130 and "Traceback" not in err
    final = [line for line in err.splitlines() if line.startswith("attrrob: ")]
    saved = next(ck.glob("settings~*/latest.pt"))  # one folder per settings
    assert final == [f"attrrob: interrupted by SIGINT after step 3: checkpoint {saved} written; "
                     "rerun the same command to resume"]
    assert checkpoint.load_checkpoint(saved)["step"] == 3
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back
