"""Evaluation driver and CLIs on the offline digits data set: outputs, schemas, per-image mode, errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attrrob import models
from attrrob.checkpoint import save_model
from attrrob.cli import evaluate as evaluate_cli
from attrrob.cli import evaluate_accuracy as accuracy_cli
from attrrob.ig import CPU_INPUT_ELEMENTS_PER_CALL
from attrrob.evaluation import plan_batches
from attrrob.result_files import ATTACK_COLUMNS

ATTACK_SETTINGS = ["--set", "iterations=3", "--set", "ig_steps=8", "--num-examples", "24", "--device", "cpu",
                   "--no-progress"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Prepared digits data and a briefly trained digits model file."""
    from attrrob.data import download, load_prepared, prepare

    root = tmp_path_factory.mktemp("eval")
    download("digits", root / "raw")
    prepare("digits", root / "raw", root / "digits.npz")
    x, y = load_prepared(root / "digits.npz", "train")
    torch.manual_seed(0)
    model = models.build("digits")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model trains ~10x faster on one thread when the cores are shared
    try:
        for _ in range(150):
            idx = torch.randint(0, len(x), (64,), generator=gen)
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    save_model(root / "model.pt", model=model, config={"dataset": "digits", "method": "natural"}, step=150)
    save_model(root / "mnist_model.pt", model=models.build("mnist"),
               config={"dataset": "mnist", "method": "natural"}, step=0)
    return root


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_evaluate_writes_schema(workspace, tmp_path):
    out = tmp_path / "attack_topk"
    evaluate_cli.main(["--model", str(workspace / "model.pt"), "--data", str(workspace / "digits.npz"),
                       "--dataset", "digits", "--attack", "topk", "--out", str(out), "--save-examples", "3",
                       *ATTACK_SETTINGS])
    rows = _rows(out / "per_example.csv")
    assert list(rows[0]) == list(ATTACK_COLUMNS) and len(rows) == 24
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "digits" and summary["method"] == "natural" and summary["attack"] == "topk"
    counts = summary["counts"]
    attacked = [r for r in rows if r["status"] == "attacked"]
    skipped = [r for r in rows if r["status"] == "skipped_misclassified"]
    assert counts == {"n_total": 24, "n_attacked": len(attacked), "n_skipped": len(skipped),
                      "n_zero_direction": sum(int(r["zero_direction"]) for r in attacked)}
    assert len(attacked) >= 16
    assert all(r["label"] != r["prediction"] and r["kendall_tau"] == "" for r in skipped)
    assert all(r["label"] == r["prediction"] for r in attacked)
    mean_in = np.mean([float(r["topk_intersection"]) for r in attacked])
    assert summary["metrics"]["topk_intersection"]["mean"] == pytest.approx(mean_in)
    assert summary["metrics"]["topk_intersection"]["n"] == len(attacked)
    for stats in summary["metrics"].values():
        assert stats["ci_low"] <= stats["mean"] <= stats["ci_high"]
    assert summary["settings"]["iterations"] == 3 and summary["zero_direction"] == "random_sign"
    assert summary["settings"]["runs"] == 3  # the protocol's best of 3, recorded
    assert summary["wall_time_s"] > 0 and summary["images_per_s"] > 0 and summary["device"].startswith("cpu")
    assert all(int(r["topk_tied_slots"]) >= 0 for r in attacked)
    n_tied = sum(int(r["topk_tied_slots"]) > 0 for r in attacked)
    ties = dict(summary["ties"])
    by_index = ties.pop("topk_intersection_index")
    assert ties == {"mode": "expected", "n_with_ties": n_tied, "share_with_ties": n_tied / len(attacked)}
    assert by_index["n"] == len(attacked) and 0 <= by_index["mean"] <= 1
    trace = np.load(out / "trace.npz")
    assert sorted(trace.files) == ["indices", "iterations", "kendall_tau", "topk_intersection"]
    assert trace["indices"].dtype == np.int64 and trace["iterations"].dtype == np.int64
    assert trace["kendall_tau"].dtype == trace["topk_intersection"].dtype == np.float32
    assert trace["indices"].tolist() == [int(r["index"]) for r in attacked]
    assert trace["iterations"].tolist() == [0, 1, 2, 3]
    assert trace["kendall_tau"].shape == trace["topk_intersection"].shape == (len(attacked), 4)
    assert (trace["kendall_tau"][:, 0] == 1).all() and (trace["topk_intersection"][:, 0] == 1).all()
    assert (np.diff(trace["kendall_tau"], axis=1) <= 0).all()
    for name in ("kendall_tau", "topk_intersection"):  # after the last iteration: the per-example result
        np.testing.assert_allclose(trace[name][:, -1], [float(r[name]) for r in attacked], rtol=0, atol=1e-6)
    examples = np.load(out / "examples.npz")
    assert examples["original"].shape == examples["attacked"].shape == (3, 1, 8, 8)
    assert examples["saliency_original"].shape == examples["saliency_attacked"].shape == (3, 64)
    assert examples["indices"].tolist() == [int(r["index"]) for r in attacked[:3]]
    assert np.abs(examples["attacked"] - examples["original"]).max() <= 0.1 + 1e-6


def test_per_image_mode_gives_the_same_rows(workspace, tmp_path):
    outs = {}
    for batch in ("1", "64"):
        outs[batch] = tmp_path / f"b{batch}"
        evaluate_cli.main(["--model", str(workspace / "model.pt"), "--data", str(workspace / "digits.npz"),
                           "--dataset", "digits", "--attack", "random", "--out", str(outs[batch]),
                           "--batch-images", batch, "--seed", "4", "--save-examples", "0", *ATTACK_SETTINGS,
                           "--num-examples", "12"])
    single, batched = _rows(outs["1"] / "per_example.csv"), _rows(outs["64"] / "per_example.csv")
    traces = [np.load(outs[b] / "trace.npz") for b in ("1", "64")]
    assert traces[0]["indices"].tolist() == traces[1]["indices"].tolist()
    for name in ("kendall_tau", "topk_intersection"):
        np.testing.assert_allclose(traces[0][name], traces[1][name], rtol=0, atol=1e-6)
    assert json.loads((outs["1"] / "summary.json").read_text())["settings"]["batch_images_used"] == 1
    for a, b in zip(single, batched, strict=True):
        for column in ATTACK_COLUMNS:
            if a[column] and column in ("topk_intersection", "kendall_tau", "spearman_rho", "mass_center_shift",
                                        "linf"):
                assert float(a[column]) == pytest.approx(float(b[column]), abs=1e-6), column
            else:
                assert a[column] == b[column], column


def test_targeted_attack_with_a_target_file_raises_the_mass_there(workspace, tmp_path):
    target = np.zeros((8, 8))
    target[:3, :3] = 1
    np.save(tmp_path / "target.npy", target)
    out = tmp_path / "targeted"
    evaluate_cli.main(["--model", str(workspace / "model.pt"), "--data", str(workspace / "digits.npz"),
                       "--dataset", "digits", "--attack", "targeted", "--target", str(tmp_path / "target.npy"),
                       "--out", str(out), "--save-examples", "24", *ATTACK_SETTINGS])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["target"] == "given mask" and summary["counts"]["n_attacked"] > 0
    # The attack pushes saliency into the given square (measured here: mean mass 4.6 → 5.1, up on
    # 85% of the images); a wrong sign or an ignored target file would not.
    examples = np.load(out / "examples.npz")
    inside = target.reshape(-1).astype(bool)
    before = examples["saliency_original"][:, inside].sum(1)
    after = examples["saliency_attacked"][:, inside].sum(1)
    assert after.mean() > before.mean() and (after > before).mean() > 0.6


def test_ties_modes_change_only_the_intersection_of_tied_images(workspace, tmp_path):
    """k_metric = 40 exceeds every digits map's support: the top-k sets hold tied zeros."""
    rows = {}
    for mode in ("expected", "index"):
        out = tmp_path / mode
        evaluate_cli.main(["--model", str(workspace / "model.pt"), "--data", str(workspace / "digits.npz"),
                           "--dataset", "digits", "--attack", "topk", "--out", str(out), "--save-examples", "0",
                           *ATTACK_SETTINGS, "--num-examples", "10", "--set", "k_metric=40", "--set", f"ties={mode}"])
        rows[mode] = [r for r in _rows(out / "per_example.csv") if r["status"] == "attacked"]
        summary = json.loads((out / "summary.json").read_text())
        assert summary["ties"]["mode"] == mode and summary["ties"]["share_with_ties"] == 1.0
        assert summary["ties"]["topk_intersection_index"]["n"] == summary["metrics"]["topk_intersection"]["n"]
    moved = 0
    for e, i in zip(rows["expected"], rows["index"], strict=True):
        assert int(e["topk_tied_slots"]) > 0 and e["topk_tied_slots"] == i["topk_tied_slots"]
        assert e["kendall_tau"] == i["kendall_tau"] and e["step"] == i["step"]  # the walk does not depend on it
        # each run also records IN under the index tie-break, whatever its own mode
        assert e["topk_intersection_index"] == i["topk_intersection_index"] == i["topk_intersection"]
        moved += e["topk_intersection"] != i["topk_intersection"]
        assert 0 <= float(e["topk_intersection"]) <= 1
    assert moved > 0


def test_evaluate_accuracy_writes_schema(workspace, tmp_path):
    out = tmp_path / "accuracy"
    accuracy_cli.main(["--model", str(workspace / "model.pt"), "--data", str(workspace / "digits.npz"),
                       "--dataset", "digits", "--out", str(out), "--num-examples", "100", "--device", "cpu",
                       "--no-progress", "--no-autoattack"])  # AutoAttack has its own tests (test_autoattack.py)
    summary = json.loads((out / "summary.json").read_text())
    rows = _rows(out / "per_example.csv")
    assert list(rows[0]) == ["index", "label", "natural_prediction", "adversarial_prediction",
                             "autoattack_prediction"] and len(rows) == 100
    assert summary["autoattack_accuracy"] is None and all(r["autoattack_prediction"] == "" for r in rows)
    natural = np.mean([r["label"] == r["natural_prediction"] for r in rows])
    adversarial = np.mean([r["label"] == r["adversarial_prediction"] for r in rows])
    assert summary["natural_accuracy"]["mean"] == pytest.approx(natural)
    assert summary["adversarial_accuracy"]["mean"] == pytest.approx(adversarial)
    assert summary["natural_accuracy"]["n"] == 100 and natural > 0.7
    assert adversarial < natural  # PGD at eps 0.1 on an undefended model
    assert summary["method"] == "natural" and summary["dataset"] == "digits"
    assert summary["settings"]["steps"] == 10 and summary["wall_time_s"] > 0
    assert summary["pgd_protocol"] == "PGD-10 on CE" and summary["settings"]["pgd_loss"] == "ce"


def test_accuracy_pgd_loss_of_the_authors_flower_evaluation_matches_a_loop_transcription():
    """pgd_loss ce_ig_approx: CE(z) + w‖IG_approx(x → z)‖₁, IG of the clipped CE at the points a, 2a, …, m
    (the Sarkar authors' adv_ar_approx), against a per-point loop; its gradient too."""
    from attrrob.evaluation import accuracy_pgd_loss

    torch.manual_seed(0)
    model = models.build("digits").double()
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([1, 4, 7])
    z = (x + 0.05 * torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))).requires_grad_(True)
    settings = {"pgd_loss": "ce_ig_approx", "pgd_ig_weight": 0.3, "pgd_ig_m": 6, "pgd_ig_approx_factor": 2}

    def clipped_ce(v):
        return -torch.log(F.softmax(model(v), 1).gather(1, y[:, None]).clamp(1e-10, 1)).squeeze(1)

    def reference(v):
        total = 0
        for k in (2, 4, 6):  # a = 2, m = 6
            point = x + k / 6 * (v - x)
            total = total + torch.autograd.grad(clipped_ce(point).sum(), point, create_graph=True)[0]
        attribution = (v - x) * total / 3
        return F.cross_entropy(model(v), y, reduction="sum") + 0.3 * attribution.abs().sum()

    value, expected = accuracy_pgd_loss(model, x, y, settings)(z), reference(z)
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=0)
    (grad,), (grad_ref,) = torch.autograd.grad(value, z), torch.autograd.grad(expected, z)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-9, atol=1e-12)
    ce_only = accuracy_pgd_loss(model, x, y, {**settings, "pgd_loss": "ce"})(z)
    torch.testing.assert_close(ce_only, F.cross_entropy(model(z), y, reduction="sum"))
    assert value > ce_only  # the IG term is exercised


def test_evaluate_accuracy_pgd_loss_option_reaches_the_summary(workspace, tmp_path):
    out = tmp_path / "accuracy"
    summary = accuracy_cli.main(["--model", str(workspace / "model.pt"), "--data", str(workspace / "digits.npz"),
                                 "--dataset", "digits", "--out", str(out), "--num-examples", "40", "--device",
                                 "cpu", "--no-progress", "--no-autoattack", "--pgd-loss", "ce_ig_approx"])
    written = json.loads((out / "summary.json").read_text())
    assert written["settings"]["pgd_loss"] == "ce_ig_approx" == summary["settings"]["pgd_loss"]
    assert written["pgd_protocol"] == "PGD-10 on CE + 0.1·‖IG_approx‖₁ (2 of 10 points)"
    assert written["adversarial_accuracy"]["mean"] < written["natural_accuracy"]["mean"]


@pytest.mark.parametrize("problem", ["missing", "corrupt", "other_dataset"])
@pytest.mark.parametrize("cli", [evaluate_cli, accuracy_cli])
def test_bad_model_files_are_one_line_errors(workspace, tmp_path, capsys, problem, cli):
    model = {"missing": tmp_path / "nothing.pt", "other_dataset": workspace / "mnist_model.pt",
             "corrupt": tmp_path / "corrupt.pt"}[problem]
    if problem == "corrupt":
        model.write_bytes(b"not a torch file at all")
    argv = ["--model", str(model), "--data", str(workspace / "digits.npz"), "--dataset", "digits",
            "--out", str(tmp_path / "out"), "--device", "cpu", "--no-progress"]
    if cli is evaluate_cli:
        argv += ["--attack", "topk"]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("attrrob: error:") and "\n" not in err and str(model) in err
    assert not (tmp_path / "out").exists()


def test_missing_data_and_bad_target_are_one_line_errors(workspace, tmp_path, capsys):
    base = ["--model", str(workspace / "model.pt"), "--dataset", "digits", "--out", str(tmp_path / "o"),
            "--device", "cpu", "--no-progress", "--attack", "targeted"]
    with pytest.raises(SystemExit):
        evaluate_cli.main([*base, "--data", str(tmp_path / "absent.npz")])
    assert "absent.npz" in capsys.readouterr().err
    np.save(tmp_path / "bad.npy", np.ones((3, 3)))
    with pytest.raises(SystemExit):
        evaluate_cli.main([*base, "--data", str(workspace / "digits.npz"), "--target", str(tmp_path / "bad.npy")])
    assert "bad.npy" in capsys.readouterr().err


def test_plan_fits_the_memory_budget():
    model = models.build("mnist").eval()
    sample = torch.rand(1, 1, 28, 28)

    def plan(**kw):
        return plan_batches(model, sample, **{"ig_steps": 100, "batch_images": 64, "ig_max_batch": 0,
                                              "budget_bytes": 64 << 30, "rows_cap": 0, **kw})

    roomy = plan()
    assert roomy.batch_images == 64
    tight = plan(budget_bytes=200 * roomy.row_bytes)
    assert tight.batch_images == 2 and tight.max_rows == 200
    tiny = plan(budget_bytes=30 * roomy.row_bytes)
    assert tiny.batch_images == 1 and tiny.max_rows == 30  # one image, IG in chunks
    assert plan(ig_max_batch=300).batch_images == 3
    # On a CPU the default caps the images per pass (cache-sized passes are faster per row).
    cpu_rows = CPU_INPUT_ELEMENTS_PER_CALL // 784
    assert plan(rows_cap=None).batch_images == cpu_rows // 100
    assert plan(rows_cap=None, ig_steps=10).batch_images == min(64, cpu_rows // 10)


def test_no_saved_examples_still_writes_every_output(workspace, tmp_path):
    """examples.npz is a rule output: with --save-examples 0 it holds length-0 arrays."""
    out = tmp_path / "attack_topk"
    evaluate_cli.main(["--model", str(workspace / "model.pt"), "--data", str(workspace / "digits.npz"),
                       "--dataset", "digits", "--attack", "topk", "--out", str(out), "--save-examples", "0",
                       *ATTACK_SETTINGS])
    with np.load(out / "examples.npz") as saved:
        assert saved["indices"].shape == (0,) and saved["original"].shape == (0, 1, 8, 8)
        assert saved["saliency_attacked"].shape == (0, 64) and int(saved["height"]) == 8
    assert (out / "trace.npz").exists() and (out / "summary.json").exists()


def test_attack_variant_runs_its_base_attack_at_its_settings(workspace, tmp_path):
    """A config's attack variant equals its base attack with the same settings given by --set."""
    cfg = tmp_path / "variants.yaml"
    cfg.write_text("hyperparameters:\n  digits:\n    attack_variants:\n"
                   "      topk_k4: {attack: topk, k_attack: 4, k_metric: 4}\n")
    common = ["--model", str(workspace / "model.pt"), "--data", str(workspace / "digits.npz"), "--dataset", "digits",
              "--save-examples", "0", *ATTACK_SETTINGS, "--num-examples", "6"]
    evaluate_cli.main([*common, "--attack", "topk_k4", "--config", str(cfg), "--out", str(tmp_path / "variant")])
    evaluate_cli.main([*common, "--attack", "topk", "--set", "k_attack=4", "--set", "k_metric=4",
                       "--out", str(tmp_path / "plain")])
    variant = json.loads((tmp_path / "variant" / "summary.json").read_text())
    plain = json.loads((tmp_path / "plain" / "summary.json").read_text())
    assert (variant["attack"], variant["attack_name"], plain["attack_name"]) == ("topk", "topk_k4", "topk")
    assert variant["settings"]["k_attack"] == variant["settings"]["k_metric"] == 4
    assert _rows(tmp_path / "variant" / "per_example.csv") == _rows(tmp_path / "plain" / "per_example.csv")


def test_lens_columns_match_the_saved_maps(workspace, tmp_path):
    """LENS columns of per_example.csv equal the metrics on the saved original/attacked maps."""
    from attrrob import metrics

    out = tmp_path / "attack_topk"
    evaluate_cli.main(["--model", str(workspace / "model.pt"), "--data", str(workspace / "digits.npz"),
                       "--dataset", "digits", "--attack", "topk", "--out", str(out), "--save-examples", "6",
                       "--set", "window=5", *ATTACK_SETTINGS])
    rows = {int(r["index"]): r for r in _rows(out / "per_example.csv")}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["lens"]["window"] == 5 and summary["lens"]["k"] == 8 and summary["lens"]["topk_div_max_k"] == 3
    ex = np.load(out / "examples.npz")
    o = torch.tensor(ex["saliency_original"]).view(-1, 8, 8)
    a = torch.tensor(ex["saliency_attacked"]).view(-1, 8, 8)
    want = {"lens_recall": metrics.lens_recall(o, a, 8, 5), "lens_precision": metrics.lens_precision(o, a, 8, 5),
            "topk_div_intersection": metrics.topk_div_intersection(o, a, 8, 5),
            "lens_recall_div": metrics.lens_recall(o, a, 8, 5, div=True)}
    for row, index in enumerate(ex["indices"].tolist()):
        if float(rows[index]["kendall_tau"]) < 1:  # a kept iterate (else the columns read 1)
            for name, values in want.items():
                assert float(rows[index][name]) == pytest.approx(float(values[row]), abs=1e-6), name
            # k = 8 > ⌈64 / 25⌉ = 3: a greedy set at w = 5 may be short (at most 9 picks fit 8×8).
            short = sum(int(metrics.topk_div_ranked(m[row:row + 1], 5)[1]) < 8 for m in (o, a))
            assert int(rows[index]["topk_div_completed"]) == short
    attacked = [r for r in rows.values() if r["status"] == "attacked"]
    assert summary["lens"]["n_topk_div_completed"] == sum(int(r["topk_div_completed"]) > 0 for r in attacked)
    assert summary["metrics"]["lens_recall"]["n"] == len(attacked)
    with pytest.raises(SystemExit):
        evaluate_cli.main(["--model", str(workspace / "model.pt"), "--data", str(workspace / "digits.npz"),
                           "--dataset", "digits", "--attack", "topk", "--out", str(tmp_path / "bad"),
                           "--set", "window=4", *ATTACK_SETTINGS])


def test_noise_control_is_one_projected_sign_step(workspace, tmp_path):
    """`--attack noise`: x̃ = clip(x ± ε) from the image's own generator, no search, label kept or counted."""
    from attrrob.attacks.saliency import image_generator, real_saliency
    from attrrob.checkpoint import load_model
    from attrrob.data import load_prepared
    from attrrob import metrics

    out = tmp_path / "attack_noise"
    evaluate_cli.main(["--model", str(workspace / "model.pt"), "--data", str(workspace / "digits.npz"),
                       "--dataset", "digits", "--attack", "noise", "--out", str(out), "--save-examples", "24",
                       "--set", "eps=0.3", "--seed", "5", *ATTACK_SETTINGS])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["attack"] == "noise" and summary["settings"]["iterations"] == 1
    assert summary["settings"]["step_size"] == 0.3
    rows = [r for r in _rows(out / "per_example.csv") if r["status"] == "attacked"]
    model, _ = load_model(workspace / "model.pt", dataset="digits", device=torch.device("cpu"))
    x, y = load_prepared(workspace / "digits.npz", "test")
    changed = 0
    for r in rows:
        i = int(r["index"])
        signs = torch.randint(0, 2, (1, 8, 8), generator=image_generator(5, i, 0)) * 2 - 1
        x_noise = (x[i] + 0.3 * signs).clamp(0, 1)[None]
        with torch.no_grad():
            kept = int(model(x_noise).argmax(1)) == int(y[i])
        changed += not kept
        if not kept:  # the walk's rule: an iterate with another label is not kept, metrics read unchanged
            assert (r["step"], float(r["linf"]), float(r["kendall_tau"]), float(r["lens_recall"])) == ("0", 0.0, 1.0, 1.0)
            continue
        assert r["step"] == "1" and float(r["linf"]) == pytest.approx(float((x_noise - x[i]).abs().max()))
        m0 = real_saliency(model, x[i:i + 1], y[i:i + 1], 8)
        m1 = real_saliency(model, x_noise, y[i:i + 1], 8)
        assert float(r["kendall_tau"]) == pytest.approx(float(metrics.kendall_tau_b(m0, m1)), abs=1e-9)
        assert float(r["lens_recall"]) == pytest.approx(
            float(metrics.lens_recall(m0.view(1, 8, 8), m1.view(1, 8, 8), 8)), abs=1e-9)
    assert summary["noise"]["n_label_changed"] == changed and changed > 0
    trace = np.load(out / "trace.npz")
    assert trace["iterations"].tolist() == [0, 1]


def test_evaluate_accuracy_on_the_validation_split_and_from_a_settings_file(workspace, tmp_path, capsys):
    """Budgets are chosen on validation images (`--split validation`); a settings file written for
    one model is refused with another (its `model_settings` digest names the model)."""
    from attrrob import config, run_settings
    from attrrob.checkpoint import load_checkpoint
    from attrrob.data import prepare

    settings = {"test_fraction": 0.2, "split_seed": 4557077, "validation_fraction": 0.1}
    prepare("digits", workspace / "raw", tmp_path / "v.npz", settings=settings)
    out = tmp_path / "validation"
    accuracy_cli.main(["--model", str(workspace / "model.pt"), "--data", str(tmp_path / "v.npz"), "--dataset",
                       "digits", "--out", str(out), "--num-examples", "all", "--split", "validation",
                       "--device", "cpu", "--no-progress", "--no-autoattack"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["split"] == "validation" and summary["natural_accuracy"]["n"] == 144

    model_config = load_checkpoint(workspace / "model.pt")["config"]
    evaluation = run_settings.accuracy("digits", {"digits": {"accuracy": {"num_examples": 20, "autoattack": False}}})
    path = tmp_path / "settings.json"
    run_settings.sync(path, {**evaluation, run_settings.MODEL: "0" * 12}, [], None)
    argv = ["--model", str(workspace / "model.pt"), "--data", str(workspace / "digits.npz"), "--dataset", "digits",
            "--out", str(tmp_path / "bound"), "--settings", str(path), "--device", "cpu", "--no-progress"]
    with pytest.raises(SystemExit):
        accuracy_cli.main(argv)
    assert "is for the model of settings 000000000000" in capsys.readouterr().err
    run_settings.sync(path, {**evaluation, run_settings.MODEL: config.settings_digest(model_config)}, [], None)
    bound = accuracy_cli.main(argv)
    assert bound["natural_accuracy"]["n"] == 20
    assert bound["settings"][run_settings.MODEL] == config.settings_digest(model_config)
