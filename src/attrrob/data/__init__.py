"""Data: fetch raw files (verified), prepare them into one array file + manifest, load them back.

Ground floor: imports nothing of the package but `errors`, `io` and `config`.
"""

from .augment import augment_to_per_class, equalize_hist, transform_images
from .fetch import download
from .idx import read_idx
from .prepare import prepare, split_per_class
from ..registry import DATASETS
from .sources import RawFile, raw_files
from .store import load_manifest, load_prepared, manifest_path

__all__ = [
    "DATASETS", "RawFile", "augment_to_per_class", "download", "equalize_hist", "load_manifest",
    "load_prepared", "manifest_path", "prepare", "raw_files", "read_idx", "split_per_class", "transform_images",
]
