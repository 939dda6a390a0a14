"""prepare / load_prepared end to end: real MNIST (shared mirror), digits, synthetic GTSRB and Flower archives."""

import gzip
import hashlib
import importlib
import io
import json
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attrrob.cli import prepare as prepare_cli
from attrrob.data import RawFile, download, equalize_hist, load_manifest, load_prepared, prepare
from attrrob.data.prepare import FlowerLayout, GtsrbLayout
from attrrob.errors import ConfigError, DataError

# the package exports the function `prepare`, which shadows its module of the same name
prepare_module = importlib.import_module("attrrob.data.prepare")

SHARED = Path(os.environ.get("ATTRROB_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
MNIST_MIRROR = SHARED / "data" / "mnist"
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]

needs_mnist = pytest.mark.skipif(not MNIST_MIRROR.is_dir(),
                                 reason=f"real MNIST mirror {MNIST_MIRROR} is absent (set ATTRROB_SHARED)")


def _names(directory: Path):
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# ------------------------------------------------------------------ MNIST (real data)

@pytest.fixture(scope="module")
def mnist_prepared(tmp_path_factory):
    if not MNIST_MIRROR.is_dir():
        pytest.skip(f"real MNIST mirror {MNIST_MIRROR} is absent (set ATTRROB_SHARED)")
    root = tmp_path_factory.mktemp("mnist")
    download("mnist", root / "raw", mirror=MNIST_MIRROR)
    manifest = prepare("mnist", root / "raw", root / "prepared" / "mnist.npz")
    return root, manifest


@needs_mnist
def test_mnist_prepare_counts_and_manifest(mnist_prepared):
    root, manifest = mnist_prepared
    assert manifest["counts"] == {"train": 55000, "validation": 5000, "test": 10000}  # RAR's split
    assert manifest["class_counts"]["test"] == MNIST_TEST_COUNTS
    assert sum(manifest["class_counts"]["train"]) == 55000
    assert np.add(manifest["class_counts"]["train"], manifest["class_counts"]["validation"]).tolist() == \
        MNIST_TRAIN_COUNTS
    assert manifest["npz_sha256"] == hashlib.sha256((root / "prepared" / "mnist.npz").read_bytes()).hexdigest()
    assert all(record["verified_against_pin"] for record in manifest["sources"])
    assert load_manifest(root / "prepared" / "mnist.json") == manifest
    assert manifest["settings"] == {"validation_holdout": 5000}


@needs_mnist
def test_mnist_load_prepared_native_range(mnist_prepared):
    root, _ = mnist_prepared
    x, y = load_prepared(root / "prepared" / "mnist.npz", "test")
    assert x.dtype == torch.float32 and x.shape == (10000, 1, 28, 28) and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert torch.bincount(y).tolist() == MNIST_TEST_COUNTS
    # TensorFlow's reader: float32(uint8) × float32(1/255); the first held-in image is training image 5000.
    with gzip.open(MNIST_MIRROR / "train-images-idx3-ubyte.gz") as fh:
        raw = np.frombuffer(fh.read(), np.uint8, offset=16).reshape(60000, 28, 28)
    xt, _ = load_prepared(root / "prepared" / "mnist.npz", "train")
    expected = raw[5000].astype(np.float32) * np.float32(1.0 / 255.0)
    np.testing.assert_array_equal(xt[0, 0].numpy(), expected)


@needs_mnist
def test_mnist_prepare_is_byte_reproducible(mnist_prepared, tmp_path):
    root, manifest = mnist_prepared
    again = prepare("mnist", root / "raw", tmp_path / "again.npz")
    assert (tmp_path / "again.npz").read_bytes() == (root / "prepared" / "mnist.npz").read_bytes()
    assert again["npz_sha256"] == manifest["npz_sha256"]


@needs_mnist
def test_mnist_corrupt_mirror_copy_rejected(tmp_path):
    mirror = tmp_path / "mirror"
    shutil.copytree(MNIST_MIRROR, mirror)
    data = bytearray((mirror / "t10k-labels-idx1-ubyte.gz").read_bytes())
    data[len(data) // 2] ^= 0x01
    (mirror / "t10k-labels-idx1-ubyte.gz").write_bytes(bytes(data))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz"):
        download("mnist", tmp_path / "raw", mirror=mirror)
    assert "t10k-labels-idx1-ubyte.gz" not in _names(tmp_path / "raw")
    assert not any(name.startswith(".") for name in _names(tmp_path / "raw"))


@needs_mnist
def test_mnist_truncated_idx_rejected_nothing_written(mnist_prepared, tmp_path):
    root, _ = mnist_prepared
    raw = tmp_path / "raw"
    shutil.copytree(root / "raw", raw)
    with gzip.open(raw / "t10k-images-idx3-ubyte.gz") as fh:
        content = fh.read()
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(content[:-784]))
    out = tmp_path / "out" / "mnist.npz"
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: checksum mismatch"):
        prepare("mnist", raw, out)
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz: IDX length .*truncated"):
        prepare("mnist", raw, out, verify_sources=False)
    assert _names(out.parent) == []


@needs_mnist
def test_mnist_holdout_setting(mnist_prepared, tmp_path):
    root, _ = mnist_prepared
    manifest = prepare("mnist", root / "raw", tmp_path / "m.npz", settings={"validation_holdout": 0})
    assert manifest["class_counts"]["train"] == MNIST_TRAIN_COUNTS
    with pytest.raises(DataError, match="keeps no validation split"):
        load_prepared(tmp_path / "m.npz", "validation")
    with pytest.raises(ConfigError, match="mnist.prepare.validation_holdout"):
        prepare("mnist", root / "raw", tmp_path / "m.npz", settings={"validation_holdout": 60000})


# ------------------------------------------------------------------ digits (offline)

def test_digits_end_to_end(tmp_path):
    first = download("digits", tmp_path / "raw")
    assert download("digits", tmp_path / "raw") == first  # kept: it verifies
    download("digits", tmp_path / "raw2")
    assert (tmp_path / "raw2" / "digits.npz").read_bytes() == (tmp_path / "raw" / "digits.npz").read_bytes()
    out = tmp_path / "prepared" / "digits.npz"
    manifest = prepare("digits", tmp_path / "raw", out)
    assert manifest["counts"] == {"train": 1437, "test": 360} and manifest["scale"] == 1 / 16
    assert manifest["class_counts"]["test"] == [36, 37, 35, 37, 36, 36, 36, 36, 35, 36]
    x, y = load_prepared(out, "train")
    assert x.shape == (1437, 1, 8, 8) and x.dtype == torch.float32
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    from sklearn.datasets import load_digits

    reference = load_digits()
    xt, yt = load_prepared(out, "test")
    # every test image is one of scikit-learn's, scaled by 1/16, with its label
    flat = {(tuple(img.ravel()), int(t)) for img, t in zip(reference.images / 16.0, reference.target)}
    assert all((tuple(img.ravel().double().tolist()), int(t)) in flat for img, t in zip(xt[:20], yt[:20]))
    prepare("digits", tmp_path / "raw", tmp_path / "again.npz")
    assert (tmp_path / "again.npz").read_bytes() == out.read_bytes()
    with pytest.raises(DataError, match="keeps no validation split"):  # the quickstart's default
        load_prepared(out, "validation")


def test_digits_validation_split_is_carved_from_training_data(tmp_path):
    download("digits", tmp_path / "raw")
    plain = prepare("digits", tmp_path / "raw", tmp_path / "plain.npz")
    settings = {"test_fraction": 0.2, "split_seed": 4557077, "validation_fraction": 0.1}
    manifest = prepare("digits", tmp_path / "raw", tmp_path / "v.npz", settings=settings)
    assert manifest["counts"] == {"train": 1293, "validation": 144, "test": 360}  # ceil(0.1 · 1437) = 144
    assert manifest["class_counts"]["test"] == plain["class_counts"]["test"]  # the test split is untouched
    assert np.add(manifest["class_counts"]["train"], manifest["class_counts"]["validation"]).tolist() == \
        plain["class_counts"]["train"]
    assert min(manifest["class_counts"]["validation"]) >= 14  # stratified: every class is there
    rows = {}
    for split in ("train", "validation", "test"):
        x, _ = load_prepared(tmp_path / "v.npz", split, as_stored=True)
        rows[split] = {bytes(image.numpy().tobytes()) for image in x}
    x_plain, _ = load_prepared(tmp_path / "plain.npz", "train", as_stored=True)
    assert rows["train"] | rows["validation"] == {bytes(image.numpy().tobytes()) for image in x_plain}
    prepare("digits", tmp_path / "raw", tmp_path / "v2.npz", settings=settings)  # a fixed seed: same bytes
    assert (tmp_path / "v2.npz").read_bytes() == (tmp_path / "v.npz").read_bytes()


def test_load_prepared_errors(tmp_path):
    download("digits", tmp_path / "raw")
    out = tmp_path / "digits.npz"
    prepare("digits", tmp_path / "raw", out)
    with pytest.raises(DataError, match="unknown split 'valid'"):
        load_prepared(out, "valid")
    with pytest.raises(DataError, match=r"prepared file .*missing.npz does not exist; run `attrrob prepare"):
        load_prepared(tmp_path / "missing.npz", "train")
    lone = tmp_path / "lone.npz"
    lone.write_bytes(out.read_bytes())
    with pytest.raises(DataError, match=r"manifest .*lone.json does not exist; run `attrrob prepare"):
        load_prepared(lone, "train")
    data = bytearray(out.read_bytes())
    data[len(data) // 2] ^= 0xFF
    out.write_bytes(bytes(data))
    with pytest.raises(DataError, match="corrupt or stale; run `attrrob prepare --dataset digits"):
        load_prepared(out, "train")
    out.with_suffix(".json").write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match="unreadable"):
        load_prepared(out, "train")


def test_prepare_cli_one_line_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        prepare_cli.main(["--dataset", "digits", "--raw", str(tmp_path / "none"), "--out", str(tmp_path / "d.npz")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist; run `attrrob download" in err
    download("digits", tmp_path / "raw")
    with pytest.raises(SystemExit):
        prepare_cli.main(["--dataset", "digits", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "d.npz"),
                          "--set", "test_fraction=1.5"])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "test_fraction" in err and "1.5" in err
    prepare_cli.main(["--dataset", "digits", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "d.npz"),
                      "--set", "test_fraction=0.5"])
    assert json.loads((tmp_path / "d.json").read_text())["counts"]["test"] == 899


# ------------------------------------------------------------------ GTSRB (synthetic archive, official layout)

def _image_bytes(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def _gtsrb_archives(folder: Path, per_class: int, test_labels: list[int], rng):
    folder.mkdir(parents=True)
    originals = {}
    with zipfile.ZipFile(folder / "GTSRB-Training_fixed.zip", "w") as zf:
        for c in range(43):
            rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
            for i in range(per_class):
                img = rng.integers(0, 256, (int(rng.integers(29, 50)), int(rng.integers(29, 50)), 3), dtype=np.uint8)
                name = f"00000_{i:05d}.ppm"
                zf.writestr(f"GTSRB/Training/{c:05d}/{name}", _image_bytes(img, "PPM"))
                rows.append(f"{name};{img.shape[1]};{img.shape[0]};5;5;{img.shape[1] - 5};{img.shape[0] - 5};{c}")
                originals[(c, i)] = img
            zf.writestr(f"GTSRB/Training/{c:05d}/GT-{c:05d}.csv", "\n".join(rows) + "\n")
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    tests = []
    with zipfile.ZipFile(folder / "GTSRB_Final_Test_Images.zip", "w") as zf:
        for i, c in enumerate(test_labels):
            img = rng.integers(0, 256, (40, 35, 3), dtype=np.uint8)
            zf.writestr(f"GTSRB/Final_Test/Images/{i:05d}.ppm", _image_bytes(img, "PPM"))
            rows.append(f"{i:05d}.ppm;35;40;5;5;30;35;{c}")
            tests.append(img)
    with zipfile.ZipFile(folder / "GTSRB_Final_Test_GT.zip", "w") as zf:
        zf.writestr("GT-final_test.csv", "\n".join(rows) + "\n")
    return originals, tests


def _pins(folder: Path, names):
    return [RawFile(n, md5=hashlib.md5((folder / n).read_bytes()).hexdigest()) for n in names]


def _resized(img: np.ndarray, size: int, resample) -> np.ndarray:
    return np.asarray(Image.fromarray(img).resize((size, size), resample)).transpose(2, 0, 1)


def test_gtsrb_synthetic_archive(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    test_labels = [5, 0, 42, 5, 17]
    originals, tests = _gtsrb_archives(tmp_path / "mirror", 2, test_labels, rng)
    monkeypatch.setattr(prepare_module, "GTSRB_LAYOUT", GtsrbLayout(train_images=86, test_images=5))
    names = ["GTSRB-Training_fixed.zip", "GTSRB_Final_Test_Images.zip", "GTSRB_Final_Test_GT.zip"]
    download("gtsrb", tmp_path / "raw", mirror=tmp_path / "mirror", files=_pins(tmp_path / "mirror", names))
    settings = {"augment_per_class": 3, "seed": 12312}
    out = tmp_path / "gtsrb.npz"
    manifest = prepare("gtsrb", tmp_path / "raw", out, settings=settings, verify_sources=False)
    assert manifest["counts"] == {"train": 129, "test": 5}
    assert manifest["class_counts"]["train"] == [3] * 43 and manifest["scale"] == 1.0
    assert any("34,799" in d for d in manifest["differences_from_paper"])
    x, y = load_prepared(out, "train", as_stored=True)
    assert x.dtype == torch.uint8 and x.shape == (129, 3, 32, 32)
    assert y.tolist() == [c for c in range(43) for _ in range(3)]
    # stored originals = equalised whole-image bilinear resizes, in CSV order, before the copies
    for c in (0, 21, 42):
        for i in range(2):
            expected = equalize_hist(_resized(originals[(c, i)], 32, Image.BILINEAR))
            np.testing.assert_array_equal(x[3 * c + i].numpy(), expected)
    xt, yt = load_prepared(out, "test")
    assert yt.tolist() == test_labels and float(xt.max()) == 255.0
    np.testing.assert_array_equal(xt[2].numpy(), equalize_hist(_resized(tests[2], 32, Image.BILINEAR)))
    prepare("gtsrb", tmp_path / "raw", tmp_path / "again.npz", settings=settings, verify_sources=False)
    assert (tmp_path / "again.npz").read_bytes() == out.read_bytes()
    # strict structure: a smaller archive than the layout expects is refused, nothing written
    monkeypatch.setattr(prepare_module, "GTSRB_LAYOUT", GtsrbLayout(train_images=87, test_images=5))
    with pytest.raises(DataError, match="GTSRB-Training_fixed.zip: 86 training images, expected 87"):
        prepare("gtsrb", tmp_path / "raw", tmp_path / "bad" / "g.npz", settings=settings, verify_sources=False)
    assert _names(tmp_path / "bad") == []
    # a class table that disagrees with its folder is refused
    monkeypatch.setattr(prepare_module, "GTSRB_LAYOUT", GtsrbLayout(train_images=86, test_images=5))
    train_zip = tmp_path / "raw" / "GTSRB-Training_fixed.zip"
    with zipfile.ZipFile(train_zip) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    table = "GTSRB/Training/00007/GT-00007.csv"
    members[table] = members[table].replace(b"00000_00001.ppm", b"00000_00009.ppm")
    with zipfile.ZipFile(train_zip, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with pytest.raises(DataError, match="GT-00007.csv does not list exactly the images of class 7"):
        prepare("gtsrb", tmp_path / "raw", tmp_path / "bad" / "g.npz", settings=settings, verify_sources=False)
    assert _names(tmp_path / "bad") == []
    # and the official pins reject these archives
    with pytest.raises(DataError, match="checksum mismatch"):
        prepare("gtsrb", tmp_path / "raw", tmp_path / "bad" / "g.npz", settings=settings)


# ------------------------------------------------------------------ Flower-17 (synthetic archive)

def test_flower_synthetic_archive(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    per_class, total = 3, 51
    images = [rng.integers(0, 256, (int(rng.integers(60, 90)), int(rng.integers(60, 90)), 3), dtype=np.uint8)
              for _ in range(total)]
    (tmp_path / "mirror").mkdir()
    with tarfile.open(tmp_path / "mirror" / "17flowers.tgz", "w:gz") as tar:
        for number, img in enumerate(images, start=1):
            data = _image_bytes(img, "JPEG")
            info = tarfile.TarInfo(f"jpg/image_{number:04d}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    monkeypatch.setattr(prepare_module, "FLOWER_LAYOUT", FlowerLayout(per_class=per_class, test_per_class=1))
    download("flower", tmp_path / "raw", mirror=tmp_path / "mirror", files=_pins(tmp_path / "mirror", ["17flowers.tgz"]))
    settings = {"augment_per_class": 4, "seed": 12312, "split_seed": 4557077}
    out = tmp_path / "flower.npz"
    manifest = prepare("flower", tmp_path / "raw", out, settings=settings, verify_sources=False)
    assert manifest["counts"] == {"train": 68, "test": 17}
    assert manifest["class_counts"]["test"] == [1] * 17
    xt, yt = load_prepared(out, "test", as_stored=True)
    assert xt.shape == (17, 3, 128, 128) and xt.dtype == torch.uint8
    # each test image is the LANCZOS resize of exactly one archive image, of its class
    decoded = [np.asarray(Image.open(io.BytesIO(_image_bytes(img, "JPEG"))).convert("RGB")) for img in images]
    candidates = [_resized(img, 128, Image.LANCZOS) for img in decoded]
    for img, label in zip(xt.numpy(), yt.tolist()):
        matches = [i for i, cand in enumerate(candidates) if np.array_equal(cand, img)]
        assert len(matches) == 1 and matches[0] // per_class == label
    x, y = load_prepared(out, "train")
    assert y.tolist() == [c for c in range(17) for _ in range(4)] and float(x.max()) <= 255.0
    other = prepare("flower", tmp_path / "raw", tmp_path / "other.npz",
                    settings={**settings, "split_seed": 1}, verify_sources=False)
    assert other["npz_sha256"] != manifest["npz_sha256"]
    prepare("flower", tmp_path / "raw", tmp_path / "again.npz", settings=settings, verify_sources=False)
    assert (tmp_path / "again.npz").read_bytes() == out.read_bytes()
    monkeypatch.setattr(prepare_module, "FLOWER_LAYOUT", FlowerLayout(per_class=4, test_per_class=1))
    with pytest.raises(DataError, match=r"17flowers.tgz: expected jpg/image_0001.jpg … image_0068.jpg"):
        prepare("flower", tmp_path / "raw", tmp_path / "bad" / "f.npz", settings=settings, verify_sources=False)
    assert _names(tmp_path / "bad") == []


# ------------------------------------------------------------------ Fashion-MNIST (synthetic IDX files)

def test_fashion_mnist_synthetic_idx(tmp_path):
    import struct

    def idx(array):
        header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
        return gzip.compress(header + array.tobytes())

    rng = np.random.default_rng(2)
    arrays = {"train-images-idx3-ubyte.gz": rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte.gz": rng.integers(0, 10, 30, dtype=np.uint8),
              "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (7, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, 7, dtype=np.uint8)}
    raw = tmp_path / "raw"
    raw.mkdir()
    for name, array in arrays.items():
        (raw / name).write_bytes(idx(array))
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: checksum mismatch"):
        prepare("fashion_mnist", raw, tmp_path / "f.npz")  # not the official files
    manifest = prepare("fashion_mnist", raw, tmp_path / "f.npz", settings={"validation_holdout": 4},
                       verify_sources=False)
    assert manifest["counts"] == {"train": 26, "validation": 4, "test": 7} and manifest["scale"] == 1 / 255
    xv, yv = load_prepared(tmp_path / "f.npz", "validation", as_stored=True)  # the first 4, in file order
    np.testing.assert_array_equal(xv[:, 0].numpy(), arrays["train-images-idx3-ubyte.gz"][:4])
    np.testing.assert_array_equal(yv.numpy(), arrays["train-labels-idx1-ubyte.gz"][:4])
    x, y = load_prepared(tmp_path / "f.npz", "train", as_stored=True)
    np.testing.assert_array_equal(x[:, 0].numpy(), arrays["train-images-idx3-ubyte.gz"][4:])
    np.testing.assert_array_equal(y.numpy(), arrays["train-labels-idx1-ubyte.gz"][4:])
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(idx(arrays["t10k-labels-idx1-ubyte.gz"][:6]))
    with pytest.raises(DataError, match=r"t10k images \(7, 28, 28\) and labels \(6,\) do not match"):
        prepare("fashion_mnist", raw, tmp_path / "g.npz", settings={"validation_holdout": 4}, verify_sources=False)
    assert not (tmp_path / "g.npz").exists()


def test_prepare_setting_errors(tmp_path):
    with pytest.raises(ConfigError, match="gtsrb.prepare.augment_per_class"):
        prepare("gtsrb", tmp_path, tmp_path / "g.npz", settings={"augment_per_class": -1, "seed": 1},
                verify_sources=False)
    with pytest.raises(ConfigError, match="unknown dataset 'cifar'"):
        prepare("cifar", tmp_path, tmp_path / "c.npz")
    with pytest.raises(DataError, match="must end in .npz"):
        prepare("digits", tmp_path, tmp_path / "d.npy")
