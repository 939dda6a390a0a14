"""The training loop: outputs, bit-identical resume, config guard, NaN guard, schedule, data order."""

import csv
import json

import pytest
import torch

from attrrob import checkpoint, config, objectives, training
from attrrob.errors import AttrrobError, DataError


def settings(method="ig_sum_norm", **extra):
    over = dict(m=4, approx_factor=2, pgd_steps=2, eps=0.1, pgd_step_size=0.05, batch_size=8, steps=6,
                log_every=1, checkpoint_every=2, lr_schedule=[[0, 1e-3], [2, 5e-3]])
    over.update(extra)
    return config.train_settings("digits", method, overrides=over)


def data(n=37):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def read_log(path, drop=("examples_per_s",)):
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    return [{k: v for k, v in row.items() if k not in drop} for row in rows]


def weights(path):
    return torch.load(path, weights_only=True)["model"]


def test_outputs_and_their_schemas(tmp_path):
    x, y = data()
    s = settings("sarkar")
    metrics = training.train(s, x, y, tmp_path / "out", checkpoint_dir=tmp_path / "ck", progress=False)
    out = tmp_path / "out"
    with open(out / "train_log.csv") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert reader.fieldnames == ["step", "lr", "total", "ce", "cacr", "wacr", "weight_decay",
                                 "batch_accuracy", "examples_per_s"]
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [float(r["lr"]) for r in rows] == [1e-3, 1e-3, 1e-3, 5e-3, 5e-3, 5e-3]  # boundary keeps the old value
    assert all(0 <= float(r["batch_accuracy"]) <= 1 and float(r["examples_per_s"]) > 0 for r in rows)
    saved = json.loads((out / "train_metrics.json").read_text())
    assert {"dataset", "method", "steps", "final", "examples_per_s", "wall_time_s", "device", "settings"} <= set(saved)
    assert saved["steps"] == 6 and saved["final"]["total"] == pytest.approx(float(rows[-1]["total"]))
    assert saved == json.loads(json.dumps(metrics))
    model, meta = checkpoint.load_model(out / "model.pt", dataset="digits")
    assert meta["method"] == "sarkar" and meta["step"] == 6 and meta["config"]["lam"] == s["lam"]
    assert training.checkpoint_path(tmp_path / "ck", s).exists()
    assert training.checkpoint_path(tmp_path / "ck", s).parent.name.startswith("settings~")


class Interrupt(Exception):
    pass


def test_interrupted_and_resumed_run_is_bit_identical(tmp_path, monkeypatch):
    x, y = data()
    s = settings()
    training.train(s, x, y, tmp_path / "straight", checkpoint_dir=tmp_path / "ck1", progress=False)

    real = objectives.compute_loss
    calls = {"n": 0}

    def dies_at_fifth_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # after the step-4 checkpoint, mid-way to the next one
            raise Interrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(objectives, "compute_loss", dies_at_fifth_step)
    with pytest.raises(Interrupt):
        training.train(s, x, y, tmp_path / "resumed", checkpoint_dir=tmp_path / "ck2", progress=False)
    assert not (tmp_path / "resumed" / "model.pt").exists()
    assert torch.load(training.checkpoint_path(tmp_path / "ck2", s), weights_only=True)["step"] == 4
    monkeypatch.undo()
    metrics = training.train(s, x, y, tmp_path / "resumed", checkpoint_dir=tmp_path / "ck2", progress=False)
    assert metrics["resumed_from_step"] == 4 and metrics["steps_this_run"] == 2

    a, b = weights(tmp_path / "straight" / "model.pt"), weights(tmp_path / "resumed" / "model.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert read_log(tmp_path / "straight" / "train_log.csv") == read_log(tmp_path / "resumed" / "train_log.csv")
    opt_a = torch.load(training.checkpoint_path(tmp_path / "ck1", s), weights_only=True)["optimizer"]["state"]
    opt_b = torch.load(training.checkpoint_path(tmp_path / "ck2", s), weights_only=True)["optimizer"]["state"]
    assert all(torch.equal(opt_a[i]["exp_avg_sq"], opt_b[i]["exp_avg_sq"]) for i in opt_a)


def test_thread_counts_are_recorded_and_a_change_on_resume_is_warned(tmp_path, caplog):
    """Bit-identity holds per thread count (another count sums in another order): the counts a
    model was made at are in train_metrics.json, and a resume at another count says so."""
    x, y = data()
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        first = training.train(settings("madry", steps=3), x, y, tmp_path / "m", checkpoint_dir=tmp_path / "c",
                               progress=False)
        torch.set_num_threads(2)
        with caplog.at_level("WARNING", logger="attrrob.train"):
            second = training.train(settings("madry", steps=6), x, y, tmp_path / "m", checkpoint_dir=tmp_path / "c",
                                    progress=False)
    finally:
        torch.set_num_threads(before)
    assert first["threads"] == [1] and second["threads"] == [1, 2]
    assert json.loads((tmp_path / "m" / "train_metrics.json").read_text())["threads"] == [1, 2]
    assert "resuming at 2 torch threads a run made at 1" in caplog.text


def test_extending_a_finished_run_equals_a_longer_run(tmp_path):
    x, y = data()
    training.train(settings("madry", steps=6), x, y, tmp_path / "long", checkpoint_dir=tmp_path / "c1", progress=False)
    training.train(settings("madry", steps=3), x, y, tmp_path / "ext", checkpoint_dir=tmp_path / "c2", progress=False)
    training.train(settings("madry", steps=6), x, y, tmp_path / "ext", checkpoint_dir=tmp_path / "c2", progress=False)
    a, b = weights(tmp_path / "long" / "model.pt"), weights(tmp_path / "ext" / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoints_are_keyed_by_settings_other_settings_start_afresh(tmp_path):
    x, y = data()
    training.train(settings(steps=2), x, y, tmp_path / "o", checkpoint_dir=tmp_path / "c", progress=False)
    other = training.train(settings(steps=4, beta=0.5), x, y, tmp_path / "o2", checkpoint_dir=tmp_path / "c",
                           progress=False)
    assert other["resumed_from_step"] is None and other["steps_this_run"] == 4
    assert len(list((tmp_path / "c").glob("settings~*/latest.pt"))) == 2
    # Only bookkeeping differs (steps, log and checkpoint intervals): the same state resumes.
    longer = training.train(settings(steps=4, log_every=2, checkpoint_every=3), x, y, tmp_path / "o",
                            checkpoint_dir=tmp_path / "c", progress=False)
    assert longer["resumed_from_step"] == 2
    with pytest.raises(AttrrobError, match="beyond steps=1"):
        training.train(settings(steps=1), x, y, tmp_path / "o", checkpoint_dir=tmp_path / "c", progress=False)


def test_non_finite_loss_names_step_and_term(tmp_path):
    x, y = data()
    x[5:] = float("nan")  # the first batch may be clean; a later one is not
    with pytest.raises(AttrrobError, match=r"step \d+: loss term 'ce' is nan \(natural\)"):
        training.train(settings("natural", steps=6), x, y, tmp_path / "o", checkpoint_dir=tmp_path / "c",
                       progress=False)
    assert not (tmp_path / "o" / "model.pt").exists()


def test_wrong_image_shape_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="expects \\(1, 8, 8\\)"):
        training.train(settings(), torch.rand(10, 1, 28, 28), torch.zeros(10, dtype=torch.long), tmp_path / "o",
                       progress=False)


def test_learning_rate_schedule_is_tf_piecewise_constant():
    sched = [[0, 1e-3], [500, 1e-2], [60000, 1e-3]]
    assert [training.learning_rate(sched, s) for s in (0, 500, 501, 60000, 60001)] == [1e-3, 1e-3, 1e-2, 1e-2, 1e-3]


def test_batch_order_reshuffles_per_epoch_like_next_batch():
    order = training.BatchOrder(10, torch.Generator().manual_seed(0))
    batches = [order.next(4) for _ in range(5)]  # 20 draws = 2 epochs exactly
    first, second = torch.cat(batches)[:10], torch.cat(batches)[10:]
    assert sorted(first.tolist()) == list(range(10)) == sorted(second.tolist())
    assert not torch.equal(first, second) and order.epoch == 1
    state = order.state_dict()
    again = training.BatchOrder(10, torch.Generator())
    again.load_state_dict(state)
    again.generator.set_state(order.generator.get_state())
    assert torch.equal(again.next(7), order.next(7))


def test_default_checkpoint_dir_is_beside_the_outputs(tmp_path):
    assert training.default_checkpoint_dir(tmp_path / "results" / "sarkar") == \
        (tmp_path / "results" / ".checkpoints-sarkar").resolve()


def test_cli_trains_resumes_and_honours_overrides(tmp_path, digits_npz, capsys):
    from attrrob.cli import train as cli

    out, ck = tmp_path / "results" / "digits" / "sarkar", tmp_path / "checkpoints"
    argv = ["--dataset", "digits", "--method", "sarkar", "--data", str(digits_npz), "--out", str(out),
            "--checkpoint-dir", str(ck), "--device", "cpu", "--steps", "3", "--no-progress",
            "--set", "m=2", "--set", "approx_factor=1", "--set", "pgd_steps=1", "--set", "checkpoint_every=2"]
    metrics = cli.main(argv)
    assert metrics["steps"] == 3 and metrics["settings"]["m"] == 2 and metrics["device"] == "cpu"
    assert (out / "model.pt").exists() and len(list(ck.glob("settings~*/latest.pt"))) == 1
    again = cli.main(argv[:-2] + ["--set", "checkpoint_every=5"])  # done already: nothing to train
    assert again["resumed_from_step"] == 3 and again["steps_this_run"] == 0
    with pytest.raises(SystemExit) as exc:
        cli.main(["m=4" if a == "m=2" else a for a in argv])
    assert exc.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("attrrob: error:")]
    assert len(errors) == 1 and "other settings (m: 2 -> 4)" in errors[0]


def test_python_dash_m_entry_point_and_missing_data(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "attrrob", "train", "--dataset", "digits", "--method", "natural",
                           "--data", str(tmp_path / "absent.npz"), "--out", str(tmp_path / "o"), "--device", "cpu"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "absent.npz does not exist" in proc.stderr and "attrrob prepare" in proc.stderr


def test_a_finished_model_of_other_settings_is_kept_unless_forced(tmp_path):
    x, y = data()
    out = tmp_path / "o"
    training.train(settings("natural", steps=2), x, y, out, checkpoint_dir=tmp_path / "c1", progress=False)
    before = (out / "model.pt").read_bytes()
    with pytest.raises(AttrrobError, match=r"model.pt holds a finished model of other settings \(eps: 0\.1 -> 0\.2\); "
                                           r".*--force"):
        training.train(settings("natural", steps=2, eps=0.2), x, y, out, checkpoint_dir=tmp_path / "c2",
                       progress=False)
    assert (out / "model.pt").read_bytes() == before
    # A longer run of the same settings is an extension, not a conflict.
    training.train(settings("natural", steps=3), x, y, out, checkpoint_dir=tmp_path / "c1", progress=False)
    forced = training.train(settings("natural", steps=2, eps=0.2), x, y, out, checkpoint_dir=tmp_path / "c1",
                            progress=False, force=True)
    assert forced["resumed_from_step"] is None and forced["settings"]["eps"] == 0.2  # afresh, both ignored
    assert checkpoint.load_model(out / "model.pt")[1]["config"]["eps"] == 0.2


def test_the_log_says_what_happened_without_a_terminal(tmp_path, caplog):
    import logging

    x, y = data()
    s = settings("madry", steps=6, checkpoint_every=3)
    with caplog.at_level(logging.INFO, logger="attrrob"):
        training.train(s, x, y, tmp_path / "o", checkpoint_dir=tmp_path / "c", progress=False)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert f"settings {config.settings_digest(s)}, device cpu, threads {torch.get_num_threads()}" in text
    progress = [r.getMessage() for r in caplog.records if " step: " in r.getMessage()]
    assert len(progress) == 6  # each tenth of 6 steps is a step
    assert "digits/madry step: 3/6 steps (50%), ce " in progress[2] and "examples/s" in progress[2] \
        and "ETA" in progress[2]
    assert text.count("checkpoint ") == 2 and "written at step 6" in text
    assert "done digits/madry: step 6, ce " in text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="attrrob"):
        training.train(settings("madry", steps=8, checkpoint_every=3), x, y, tmp_path / "o",
                       checkpoint_dir=tmp_path / "c", progress=False)
    assert "resumed from checkpoint" in caplog.text and "at step 6" in caplog.text


def test_threads_option_sets_torch_threads(tmp_path, digits_npz):
    from attrrob.cli import train as cli

    before = torch.get_num_threads()
    try:
        cli.main(["--dataset", "digits", "--method", "natural", "--data", str(digits_npz), "--out",
                  str(tmp_path / "o"), "--device", "cpu", "--steps", "1", "--threads", "1", "--no-progress"])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
