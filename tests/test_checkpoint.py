"""Model files and checkpoints: round trip, and one-line errors for bad files."""

import collections

import pytest
import torch

from attrrob import checkpoint, models
from attrrob.errors import AttrrobError

SETTINGS = {"dataset": "digits", "method": "natural", "lr_schedule": [[0, 1e-3]], "lam": 0.1}


def saved_model(tmp_path):
    torch.manual_seed(0)
    model = models.build("digits")
    path = tmp_path / "model.pt"
    checkpoint.save_model(path, model=model, config=SETTINGS, step=17)
    return model, path


def test_model_file_round_trip(tmp_path):
    model, path = saved_model(tmp_path)
    loaded, meta = checkpoint.load_model(path, dataset="digits")
    assert meta == {"dataset": "digits", "method": "natural", "step": 17, "config": SETTINGS}
    assert not loaded.training
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(loaded(x), model(x))
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"model", "config", "step", "dataset", "method", "format"} and raw["format"] == 1


def test_training_checkpoint_round_trip_and_load_model(tmp_path):
    torch.manual_seed(0)
    model = models.build("digits")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.rand(2, 1, 8, 8)).sum().backward()
    opt.step()
    rng = {"gen": torch.Generator().manual_seed(3).get_state(), "python": [3, [1, 2], None]}
    path = tmp_path / "ckpt" / "latest.pt"
    checkpoint.save_checkpoint(path, model=model, optimizer=opt, step=5, rng=rng, config=SETTINGS,
                               extra={"rows": [{"step": 1, "total": 0.5}]})
    state = checkpoint.load_checkpoint(path)
    assert state["step"] == 5 and state["extra"]["rows"] == [{"step": 1, "total": 0.5}]
    assert torch.equal(state["rng"]["gen"], rng["gen"])
    opt2 = torch.optim.SGD(models.build("digits").parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(state["optimizer"])
    momentum = [o.state_dict()["state"][0]["momentum_buffer"] for o in (opt, opt2)]
    assert torch.equal(*momentum)
    loaded, meta = checkpoint.load_model(path)
    assert meta["step"] == 5 and all(torch.equal(a, b) for a, b in zip(loaded.parameters(), model.parameters()))


def test_dataset_mismatch_is_a_one_line_error(tmp_path):
    _, path = saved_model(tmp_path)
    with pytest.raises(AttrrobError, match="trained on 'digits', not 'mnist'"):
        checkpoint.load_model(path, dataset="mnist")


def test_missing_truncated_and_foreign_files(tmp_path):
    with pytest.raises(AttrrobError, match="no such model"):
        checkpoint.load_model(tmp_path / "absent.pt")
    _, path = saved_model(tmp_path)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:300])
    with pytest.raises(AttrrobError, match="corrupt, truncated"):
        checkpoint.load_model(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": 1}, foreign)
    with pytest.raises(AttrrobError, match="not an attrrob model"):
        checkpoint.load_model(foreign)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"model": {}, "config": collections.Counter(a=1), "format": 1}, unsafe)
    with pytest.raises(AttrrobError, match="unsafe"):
        checkpoint.load_model(unsafe)


def test_weights_of_another_architecture_are_rejected(tmp_path):
    path = tmp_path / "model.pt"
    checkpoint.save_model(path, model=models.build("mnist"), config={**SETTINGS, "dataset": "digits"}, step=1)
    with pytest.raises(AttrrobError, match="do not fit the digits model"):
        checkpoint.load_model(path)
