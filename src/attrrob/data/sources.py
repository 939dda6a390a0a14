"""Where each data set's raw files come from, and the checksums that pin them.

Pins come from the publishers or the maintained loaders: the MNIST, Fashion-MNIST and GTSRB
MD5s are the ones torchvision's loaders check (`torchvision/datasets/mnist.py`, `gtsrb.py`);
the MNIST decompressed-content SHA-256s are those of `../shared/data/mnist/SHA256SUMS` (a copy
recompressed locally is accepted when its content is identical); the Flower-17 MD5 is the one
published by several independent loaders of the VGG archive (e.g. `Flowers17` VisionDataset
ports and dataset registries). digits is generated offline from scikit-learn, pinned by the
SHA-256 of its uint8 images followed by its int64 labels.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import registry


@dataclass(frozen=True)
class RawFile:
    """One raw file: its name in the raw directory, where to fetch it, and what pins its bytes.

    A file verifies when its MD5 equals `md5`, or its SHA-256 equals `sha256`, or (for a gzip
    file) the SHA-256 of its decompressed content equals `content_sha256`.
    """

    name: str
    urls: tuple[str, ...] = ()
    md5: str | None = None
    sha256: str | None = None
    content_sha256: str | None = None

    def __post_init__(self):
        if not (self.md5 or self.sha256 or self.content_sha256):
            raise ValueError(f"raw file {self.name} has no pinned checksum")


def _urls(bases: tuple[str, ...], name: str) -> tuple[str, ...]:
    return tuple(base + name for base in bases)


# torchvision's maintained mirror first, the original site as fallback.
_MNIST_BASES = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_FASHION_BASES = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
_GTSRB_BASES = ("https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/",)
_FLOWER_BASES = ("https://www.robots.ox.ac.uk/~vgg/data/flowers/17/",)

MNIST_FILES = (
    RawFile("train-images-idx3-ubyte.gz", _urls(_MNIST_BASES, "train-images-idx3-ubyte.gz"),
            md5="f68b3c2dcbeaaa9fbdd348bbdeb94873",
            content_sha256="ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    RawFile("train-labels-idx1-ubyte.gz", _urls(_MNIST_BASES, "train-labels-idx1-ubyte.gz"),
            md5="d53e105ee54ea40749a09fcbcd1e9432",
            content_sha256="65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    RawFile("t10k-images-idx3-ubyte.gz", _urls(_MNIST_BASES, "t10k-images-idx3-ubyte.gz"),
            md5="9fb629c4189551a2d022fa330f9573f3",
            content_sha256="0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    RawFile("t10k-labels-idx1-ubyte.gz", _urls(_MNIST_BASES, "t10k-labels-idx1-ubyte.gz"),
            md5="ec29112dd5afa0611ce80d1b7f02629c",
            content_sha256="ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
)

FASHION_MNIST_FILES = (
    RawFile("train-images-idx3-ubyte.gz", _urls(_FASHION_BASES, "train-images-idx3-ubyte.gz"),
            md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
    RawFile("train-labels-idx1-ubyte.gz", _urls(_FASHION_BASES, "train-labels-idx1-ubyte.gz"),
            md5="25c81989df183df01b3e8a0aad5dffbe"),
    RawFile("t10k-images-idx3-ubyte.gz", _urls(_FASHION_BASES, "t10k-images-idx3-ubyte.gz"),
            md5="bef4ecab320f06d8554ea6380940ec79"),
    RawFile("t10k-labels-idx1-ubyte.gz", _urls(_FASHION_BASES, "t10k-labels-idx1-ubyte.gz"),
            md5="bb300cfdad3c16e7a12a480ee83cd310"),
)

GTSRB_TRAIN_ARCHIVE = "GTSRB-Training_fixed.zip"
GTSRB_TEST_ARCHIVE = "GTSRB_Final_Test_Images.zip"
GTSRB_TEST_GT_ARCHIVE = "GTSRB_Final_Test_GT.zip"
GTSRB_FILES = (
    RawFile(GTSRB_TRAIN_ARCHIVE, _urls(_GTSRB_BASES, GTSRB_TRAIN_ARCHIVE), md5="513f3c79a4c5141765e10e952eaa2478"),
    RawFile(GTSRB_TEST_ARCHIVE, _urls(_GTSRB_BASES, GTSRB_TEST_ARCHIVE), md5="c7e4e6327067d32654124b0fe9e82185"),
    RawFile(GTSRB_TEST_GT_ARCHIVE, _urls(_GTSRB_BASES, GTSRB_TEST_GT_ARCHIVE), md5="fe31e9c9270bbcd7b84b7f21a9d9d9e5"),
)

FLOWER_ARCHIVE = "17flowers.tgz"
FLOWER_FILES = (
    RawFile(FLOWER_ARCHIVE, _urls(_FLOWER_BASES, FLOWER_ARCHIVE), md5="b59a65d8d1a99cd66944d474e1289eab"),
)

DIGITS_FILE = "digits.npz"
# SHA-256 of load_digits().images as uint8 bytes followed by .target as int64 bytes (1797 images).
DIGITS_CONTENT_SHA256 = "65e5b4619795efb40c1082f4c350c049e4ad552200d369b6ae99e21eef5e72c5"




def check_dataset(dataset: str) -> None:
    registry.dataset(dataset)  # an unknown name is a ConfigError naming the known ones


def raw_files(dataset: str) -> tuple[RawFile, ...]:
    """The pinned raw files of a downloadable data set (digits has none: it comes from scikit-learn)."""
    check_dataset(dataset)
    return registry.dataset(dataset).pinned_files
