"""Raw files → one prepared `.npz` (uint8 NCHW images, int64 labels) + manifest, per data set.

Every data set is read strictly (counts, names, shapes): a raw directory that is not what the
official archive holds raises DataError before anything is written.
"""

from __future__ import annotations

import csv
import io
import re
import tarfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
import numpy as np

from .. import __version__, registry
from ..config import dataset_input, prepare_settings
from ..errors import ConfigError, DataError
from . import sources
from .augment import augment_to_per_class, equalize_hist
from .fetch import digits_content_sha256, file_hashes, verify
from .idx import read_idx
from .store import SPLITS, read_npz_arrays, write_prepared


@dataclass(frozen=True)
class GtsrbLayout:
    classes: int = 43
    train_images: int = 39209
    test_images: int = 12630
    size: int = 32


@dataclass(frozen=True)
class FlowerLayout:
    classes: int = 17
    per_class: int = 80
    test_per_class: int = 8
    size: int = 128


# What the official archives hold; tests substitute smaller layouts for synthetic archives.
GTSRB_LAYOUT = GtsrbLayout()
FLOWER_LAYOUT = FlowerLayout()

_RERUN = "run `attrrob download` again"


def _require(dataset: str, raw_dir: Path, name: str) -> Path:
    path = raw_dir / name
    if not path.is_file():
        raise DataError(f"{path} does not exist; run `attrrob download --dataset {dataset} --out {raw_dir}` first")
    return path


def _source_records(dataset: str, raw_dir: Path, names: list[str], pins: dict[str, sources.RawFile], verify_sources: bool) -> list:
    records = []
    for name in names:
        path = _require(dataset, raw_dir, name)
        spec = pins.get(name)
        if verify_sources and spec is not None:
            hashes = verify(path, spec, shown_name=str(path))
        else:
            hashes = file_hashes(path)
        records.append({"name": name, "sha256": hashes["sha256"], "md5": hashes["md5"], "size": hashes["size"],
                        "verified_against_pin": bool(verify_sources and spec is not None)})
    return records


def _int_setting(settings: dict, dataset: str, key: str, low: int, high: int | None = None) -> int:
    value = settings.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"an integer ≥ {low}" + (f" and ≤ {high}" if high is not None else "")
        raise ConfigError(f"{dataset}.prepare.{key}: expected {bound}, got {value!r}")
    return value


def split_per_class(labels: np.ndarray, test_per_class: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split: shuffle all indices, then the first n_c − test_c of class c go to train.

    Returns (train indices, test indices), each in shuffled order (RAR's Flower procedure).
    """
    order = np.random.default_rng(seed).permutation(len(labels))
    seen = np.zeros(len(test_per_class), dtype=np.int64)
    train_quota = np.bincount(labels, minlength=len(test_per_class)) - test_per_class
    train, test = [], []
    for index in order:
        c = labels[index]
        (train if seen[c] < train_quota[c] else test).append(index)
        seen[c] += 1
    return np.asarray(train, dtype=np.int64), np.asarray(test, dtype=np.int64)


def stratified_test_counts(class_sizes: np.ndarray, fraction: float) -> np.ndarray:
    """Test images per class: ceil(fraction·N) in all (scikit-learn's convention), shared out in
    proportion to class sizes, leftovers to the largest remainders (ties: lower class first)."""
    total = int(np.ceil(fraction * class_sizes.sum()))
    exact = class_sizes * (total / class_sizes.sum())
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:total - counts.sum()]] += 1
    return counts


# ---------------------------------------------------------------- MNIST and Fashion-MNIST

def prepare_idx(dataset: str, raw_dir: Path, settings: dict, verify_sources: bool):
    files = sources.raw_files(dataset)
    names = [spec.name for spec in files]
    records = _source_records(dataset, raw_dir, names, {spec.name: spec for spec in files}, verify_sources)
    x_train = read_idx(raw_dir / "train-images-idx3-ubyte.gz", ndim=3)
    y_train = read_idx(raw_dir / "train-labels-idx1-ubyte.gz", ndim=1)
    x_test = read_idx(raw_dir / "t10k-images-idx3-ubyte.gz", ndim=3)
    y_test = read_idx(raw_dir / "t10k-labels-idx1-ubyte.gz", ndim=1)
    for images, labels, split in ((x_train, y_train, "train"), (x_test, y_test, "t10k")):
        if len(images) != len(labels) or images.shape[1:] != (28, 28):
            raise DataError(f"{raw_dir}: {split} images {images.shape} and labels {labels.shape} do not match "
                            f"(expected [N,28,28] and [N]); {_RERUN}")
        if labels.max(initial=0) > 9:
            raise DataError(f"{raw_dir}: {split} labels exceed 9; {_RERUN}")
    holdout = _int_setting(settings, dataset, "validation_holdout", 0, len(x_train) - 1)
    arrays = {
        "x_train": x_train[holdout:, None], "y_train": y_train[holdout:].astype(np.int64),
        "x_test": x_test[:, None], "y_test": y_test.astype(np.int64),
    }
    if holdout:  # TensorFlow's read_data_sets: the first `holdout` images, in file order (no seed needed)
        arrays.update(x_validation=x_train[:holdout, None], y_validation=y_train[:holdout].astype(np.int64))
    notes = [f"the first {holdout} of the {len(x_train)} training images are the validation split (as TensorFlow's "
             f"read_data_sets, RAR's 55,000/5,000); {len(x_train) - holdout} remain for training"]
    return arrays, records, 1.0 / 255.0, notes, []


# ---------------------------------------------------------------- GTSRB

def _decode(data: bytes, shown: str, size: int, resample) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img = img.convert("RGB").resize((size, size), resample)
            return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{shown}: not a readable image ({exc}); {_RERUN}") from None


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{path}: not a readable zip archive ({exc}); {_RERUN}") from None


def _csv_rows(data: bytes, shown: str, needed: tuple[str, ...]) -> list[dict]:
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig")), delimiter=";", skipinitialspace=True))
    if not rows or any(key not in rows[0] for key in needed):
        raise DataError(f"{shown}: expected a ';'-separated table with columns {', '.join(needed)}; {_RERUN}")
    return rows


def _gtsrb_train(path: Path, layout: GtsrbLayout, resample):
    """Images of the class folders NNNNN/ (sorted file names, as torchvision reads them); where a
    folder holds its GT-NNNNN.csv, its file list and class ids must agree with the folder."""
    folders: dict[str, list[str]] = {}
    with _open_zip(path) as zf:
        names = zf.namelist()
        for name in names:
            match = re.search(r"^(.*?(?:^|/)(\d{5}))/[^/]+\.ppm$", name)
            if match:
                folders.setdefault(match.group(1), []).append(name.rsplit("/", 1)[-1])
        if len(folders) != layout.classes:
            raise DataError(f"{path}: found {len(folders)} class folders NNNNN/ of .ppm images, expected "
                            f"{layout.classes}; {_RERUN}")
        present = set(names)
        images, labels = [], []
        for folder in sorted(folders, key=lambda f: int(f[-5:])):
            label = int(folder[-5:])
            files = sorted(folders[folder])
            table = f"{folder}/GT-{folder[-5:]}.csv"
            if table in present:
                rows = _csv_rows(zf.read(table), f"{path}:{table}", ("Filename", "ClassId"))
                if sorted(r["Filename"] for r in rows) != files or any(int(r["ClassId"]) != label for r in rows):
                    raise DataError(f"{path}: {table} does not list exactly the images of class {label} in "
                                    f"{folder}/; {_RERUN}")
            for name in files:
                member = f"{folder}/{name}"
                images.append(_decode(zf.read(member), f"{path}:{member}", layout.size, resample))
                labels.append(label)
    if len(images) != layout.train_images:
        raise DataError(f"{path}: {len(images)} training images, expected {layout.train_images}; {_RERUN}")
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def _gtsrb_test(images_path: Path, gt_path: Path, layout: GtsrbLayout, resample):
    with _open_zip(gt_path) as zf:
        tables = [n for n in zf.namelist() if n.rsplit("/", 1)[-1] == "GT-final_test.csv"]
        if len(tables) != 1:
            raise DataError(f"{gt_path}: expected one GT-final_test.csv, found {len(tables)}; {_RERUN}")
        rows = _csv_rows(zf.read(tables[0]), f"{gt_path}:{tables[0]}", ("Filename", "ClassId"))
    images, labels = [], []
    with _open_zip(images_path) as zf:
        by_name = {n.rsplit("/", 1)[-1]: n for n in zf.namelist() if n.lower().endswith(".ppm")}
        for row in rows:
            member = by_name.get(row["Filename"])
            if member is None:
                raise DataError(f"{images_path}: lacks test image {row['Filename']} listed in {gt_path}; {_RERUN}")
            images.append(_decode(zf.read(member), f"{images_path}:{member}", layout.size, resample))
            labels.append(int(row["ClassId"]))
    if len(images) != layout.test_images or len(by_name) != len(images):
        raise DataError(f"{images_path}: {len(images)} labelled and {len(by_name)} stored test images, expected "
                        f"{layout.test_images}; {_RERUN}")
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def prepare_gtsrb(dataset: str, raw_dir: Path, settings: dict, verify_sources: bool):
    from PIL import Image

    layout = GTSRB_LAYOUT
    per_class = _int_setting(settings, dataset, "augment_per_class", 0)
    seed = _int_setting(settings, dataset, "seed", 0)
    names = [sources.GTSRB_TRAIN_ARCHIVE, sources.GTSRB_TEST_ARCHIVE, sources.GTSRB_TEST_GT_ARCHIVE]
    records = _source_records(dataset, raw_dir, names, {s.name: s for s in sources.GTSRB_FILES}, verify_sources)
    x_train, y_train = _gtsrb_train(raw_dir / names[0], layout, Image.BILINEAR)
    x_test, y_test = _gtsrb_test(raw_dir / names[1], raw_dir / names[2], layout, Image.BILINEAR)
    if max(y_train.max(), y_test.max()) >= layout.classes:
        raise DataError(f"{raw_dir}: class ids ≥ {layout.classes}; {_RERUN}")
    originals = len(x_train)
    x_train, y_train = augment_to_per_class(x_train, y_train, per_class, seed)
    arrays = {"x_train": equalize_hist(x_train, out=x_train), "y_train": y_train,
              "x_test": equalize_hist(x_test), "y_test": y_test}
    notes = [
        f"whole images (no ROI crop) resized to {layout.size}x{layout.size} with PIL bilinear (antialiased)",
        f"training set: {originals} originals, each class topped up to {per_class} with transformed copies "
        f"(rotation ±15°, translation ±2.5 px, projective warp), seed {seed}; classes stored in label order",
        "per-channel histogram equalisation (cv2.equalizeHist semantics) of train and test, after augmentation",
        "training images read per class folder in file-name order (as torchvision does); test set in "
        "GT-final_test.csv order",
    ]
    differences = [
        f"training images come from the official archive ({originals} images of {layout.classes} classes), "
        "not RAR's Udacity pickle (34,799 training images; its other 4,410 formed an unused validation split)",
        "the Udacity pickles' resizing method is undocumented; here whole images are resized with PIL bilinear",
        "augmentation draws come from numpy's seeded PCG64 generator (RAR's were unseeded np.random); "
        "the transform itself is a numpy port of RAR's skimage/cv2 code",
    ]
    return arrays, records, 1.0, notes, differences


# ---------------------------------------------------------------- Flower-17

def _flower_images(path: Path, layout: FlowerLayout):
    from PIL import Image

    total = layout.classes * layout.per_class
    pattern = re.compile(r"^(?:\./)?jpg/image_(\d{4})\.jpg$")
    found: dict[int, tuple[str, bytes]] = {}
    try:
        # One sequential pass: seeking back in a gzip stream would decompress it again per image.
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                match = pattern.match(member.name)
                if match and member.isfile():
                    found[int(match.group(1))] = (member.name, tar.extractfile(member).read())
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .tgz archive ({exc}); {_RERUN}") from None
    if sorted(found) != list(range(1, total + 1)):
        raise DataError(f"{path}: expected jpg/image_0001.jpg … image_{total:04d}.jpg, found {len(found)} "
                        f"images named otherwise; {_RERUN}")
    images = np.empty((total, 3, layout.size, layout.size), dtype=np.uint8)
    for number in range(1, total + 1):
        name, data = found[number]
        # RAR's loader went through float32 v/255 and back (×255, truncated): exact for every v.
        images[number - 1] = _decode(data, f"{path}:{name}", layout.size, Image.LANCZOS)
    # The VGG archive lists 80 consecutive images per class.
    labels = np.arange(total, dtype=np.int64) // layout.per_class
    return images, labels


def prepare_flower(dataset: str, raw_dir: Path, settings: dict, verify_sources: bool):
    layout = FLOWER_LAYOUT
    per_class = _int_setting(settings, dataset, "augment_per_class", 0)
    seed = _int_setting(settings, dataset, "seed", 0)
    split_seed = _int_setting(settings, dataset, "split_seed", 0)
    records = _source_records(dataset, raw_dir, [sources.FLOWER_ARCHIVE], {s.name: s for s in sources.FLOWER_FILES},
                              verify_sources)
    images, labels = _flower_images(raw_dir / sources.FLOWER_ARCHIVE, layout)
    test_counts = np.full(layout.classes, layout.test_per_class, dtype=np.int64)
    train_idx, test_idx = split_per_class(labels, test_counts, split_seed)
    x_train, y_train = augment_to_per_class(images[train_idx], labels[train_idx], per_class, seed)
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": images[test_idx], "y_test": labels[test_idx]}
    train_per_class = layout.per_class - layout.test_per_class
    notes = [
        f"images resized to {layout.size}x{layout.size} with PIL LANCZOS (aspect not kept); RAR's float32 "
        "v/255·255 round trip back to uint8 is exact, so none is applied",
        f"seeded split {train_per_class}/{layout.test_per_class} per class (split_seed {split_seed}); training set "
        f"topped up to {per_class} per class with transformed copies (seed {seed}); classes stored in label order",
        "label = (image number − 1) // 80, the VGG archive's class order (Daffodil = 0 … Windflower = 16)",
    ]
    differences = [
        "the train/test split is drawn with numpy's PCG64 from split_seed, not RAR's np.random.seed(4557077) "
        "shuffle of its own directory listing: the 136 test images are not the paper's",
        "labels follow the VGG file order; RAR's string-sorted class directories permute label indices "
        "(class names only, accuracy unaffected)",
        "augmentation draws come from numpy's seeded PCG64 generator, not RAR's np.random.seed(12312) stream; "
        "the transform itself is a numpy port of RAR's skimage/cv2 code",
    ]
    return arrays, records, 1.0, notes, differences


# ---------------------------------------------------------------- digits

def prepare_digits(dataset: str, raw_dir: Path, settings: dict, verify_sources: bool):
    path = _require(dataset, raw_dir, sources.DIGITS_FILE)
    images, labels = read_npz_arrays(path, ("images", "labels"), what="raw digits file")
    content = digits_content_sha256(images, labels)
    if verify_sources and content != sources.DIGITS_CONTENT_SHA256:
        raise DataError(f"{path}: content sha256 {content}, expected {sources.DIGITS_CONTENT_SHA256}; "
                        "delete it and run `attrrob download --dataset digits` again")
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (8, 8) or labels.shape != images.shape[:1]:
        raise DataError(f"{path}: expected uint8 images [N,8,8] and labels [N]; run `attrrob download` again")
    fraction = settings.get("test_fraction")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ConfigError(f"digits.prepare.test_fraction: expected a number in (0, 1), got {fraction!r}")
    split_seed = _int_setting(settings, dataset, "split_seed", 0)
    labels = labels.astype(np.int64)
    test_counts = stratified_test_counts(np.bincount(labels), fraction)
    train_idx, test_idx = split_per_class(labels, test_counts, split_seed)
    arrays = {"x_test": images[test_idx, None], "y_test": labels[test_idx]}
    validation = settings.get("validation_fraction", 0.0)
    if isinstance(validation, bool) or not isinstance(validation, (int, float)) or not 0 <= validation < 1:
        raise ConfigError(f"digits.prepare.validation_fraction: expected a number in [0, 1), got {validation!r}")
    if validation:  # carved from the training part, stratified, with the same fixed split_seed
        counts = stratified_test_counts(np.bincount(labels[train_idx]), validation)
        keep, held = split_per_class(labels[train_idx], counts, split_seed)
        train_idx, validation_idx = train_idx[keep], train_idx[held]
        arrays.update(x_validation=images[validation_idx, None], y_validation=labels[validation_idx])
    arrays.update(x_train=images[train_idx, None], y_train=labels[train_idx])
    hashes = file_hashes(path)
    records = [{"name": path.name, "sha256": hashes["sha256"], "md5": hashes["md5"], "size": hashes["size"],
                "content_sha256": content, "verified_against_pin": verify_sources}]
    notes = [f"scikit-learn's 8x8 digits (values 0..16), stratified split with test_fraction {fraction} "
             f"per class (split_seed {split_seed})"]
    if validation:
        notes.append(f"validation split: validation_fraction {validation} of the training part, stratified "
                     f"(split_seed {split_seed})")
    return arrays, records, 1.0 / 16.0, notes, ["not a data set of the paper: the offline quickstart"]



def prepare(dataset: str, raw_dir: str | Path, out_path: str | Path, *, settings: dict | None = None,
            verify_sources: bool = True) -> dict:
    """Read `raw_dir`, write `out_path` (.npz) and its manifest (.json); return the manifest.

    `settings` defaults to `attrrob.config.prepare_settings(dataset)`. `verify_sources` checks the raw
    files against their pinned checksums (turn off only for archives other than the official ones).
    """
    sources.check_dataset(dataset)
    settings = dict(prepare_settings(dataset) if settings is None else settings)
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise DataError(f"raw directory {raw_dir} does not exist; run `attrrob download --dataset {dataset} "
                        f"--out {raw_dir}` first")
    if Path(out_path).suffix != ".npz":
        raise DataError(f"output {out_path}: the prepared file must end in .npz")
    registered = registry.dataset(dataset)
    arrays, records, scale, notes, differences = registered.preparer(dataset, raw_dir, settings, verify_sources)
    info = dataset_input(dataset)
    shape = (info["channels"], info["height"], info["width"])
    splits = [split for split in SPLITS if f"x_{split}" in arrays]
    for split in splits:
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.shape[1:] != shape or y.shape != (len(x),):
            raise DataError(f"{raw_dir}: prepared {split} arrays {x.shape} {x.dtype} do not match {dataset}'s "
                            f"input {shape}; {_RERUN}")
    manifest = {
        "dataset": dataset,
        "attrrob_version": __version__,
        "sources": records,
        "scale": scale,
        "stored_dtype": "uint8",
        "native_range": [0.0, float(info["max_value"])],
        "counts": {split: int(len(arrays[f"y_{split}"])) for split in splits},
        "class_counts": {split: np.bincount(arrays[f"y_{split}"], minlength=info["classes"]).tolist()
                         for split in splits},
        "settings": settings,
        "notes": notes,
        "differences_from_paper": differences,
    }
    if registered.archive_layout is not None:
        manifest["layout"] = asdict(registered.archive_layout)
    return write_prepared(out_path, arrays, manifest)
