"""Raw files: IDX reading, checksum verification, mirror copies, downloads (network replaced), CLI errors."""

import gzip
import hashlib
import io
import struct
import urllib.error

import numpy as np
import pytest

from attrrob.cli import download as download_cli
from attrrob.data import RawFile, download, fetch, read_idx
from attrrob.errors import DataError


def _idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _final_names(directory):
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# ------------------------------------------------------------------ IDX

def test_read_idx_round_trip_plain_and_gzip(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    (tmp_path / "a-idx3-ubyte").write_bytes(_idx_bytes(array))
    (tmp_path / "a-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(array)))
    np.testing.assert_array_equal(read_idx(tmp_path / "a-idx3-ubyte"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "a-idx3-ubyte.gz", ndim=3), array)


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b"\x01" + b[1:], "bad magic"),
    (lambda b: b[:2] + b"\x0d" + b[3:], "not unsigned byte"),
    (lambda b: b[:-1], "truncated or padded"),
    (lambda b: b + b"\x00", "truncated or padded"),
    (lambda b: b[:6], "truncated IDX header"),
])
def test_read_idx_rejects_malformed(tmp_path, mutate, message):
    good = _idx_bytes(np.zeros((2, 3, 3), dtype=np.uint8))
    path = tmp_path / "bad-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(mutate(good)))
    with pytest.raises(DataError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_read_idx_checks_rank_and_broken_gzip(tmp_path):
    path = tmp_path / "l-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(_idx_bytes(np.zeros(4, dtype=np.uint8))))
    with pytest.raises(DataError, match="1 dimensions, expected 3"):
        read_idx(path, ndim=3)
    path.write_bytes(gzip.compress(_idx_bytes(np.zeros(4, dtype=np.uint8)))[:-9])
    with pytest.raises(DataError, match="cannot be read"):
        read_idx(path)


# ------------------------------------------------------------------ mirror copies and verification

@pytest.fixture
def mirror(tmp_path):
    folder = tmp_path / "mirror"
    folder.mkdir()
    payloads = {"a.bin": b"alpha" * 1000, "b.bin": b"beta" * 777}
    for name, data in payloads.items():
        (folder / name).write_bytes(data)
    specs = [RawFile(name, (f"https://example.invalid/{name}",), md5=_md5(data)) for name, data in payloads.items()]
    return folder, specs, payloads


def test_download_from_mirror_verifies_and_copies(tmp_path, mirror):
    folder, specs, payloads = mirror
    raw = tmp_path / "raw"
    hashes = download("mnist", raw, mirror=folder, files=specs)
    assert _final_names(raw) == ["a.bin", "b.bin"]
    for name, data in payloads.items():
        assert (raw / name).read_bytes() == data
        assert hashes[name]["sha256"] == hashlib.sha256(data).hexdigest()


def test_corrupted_mirror_file_fails_and_writes_nothing(tmp_path, mirror):
    folder, specs, _ = mirror
    data = bytearray((folder / "b.bin").read_bytes())
    data[100] ^= 0xFF
    (folder / "b.bin").write_bytes(bytes(data))
    raw = tmp_path / "raw"
    with pytest.raises(DataError, match=r"b.bin: checksum mismatch \(expected md5") as info:
        download("mnist", raw, mirror=folder, files=specs)
    assert "\n" not in str(info.value) and "download" in str(info.value)
    assert _final_names(raw) == ["a.bin"]  # the good file only; no temp file either


def test_missing_mirror_file_and_directory(tmp_path, mirror):
    folder, specs, _ = mirror
    (folder / "a.bin").unlink()
    with pytest.raises(DataError, match="has no file a.bin"):
        download("mnist", tmp_path / "raw", mirror=folder, files=specs)
    with pytest.raises(DataError, match="is not a directory"):
        download("mnist", tmp_path / "raw", mirror=tmp_path / "nope", files=specs)


def test_recompressed_gzip_accepted_by_content_hash(tmp_path):
    content = b"some idx content" * 100
    upstream = gzip.compress(content, mtime=0)
    recompressed = gzip.compress(content, compresslevel=1, mtime=123)
    assert upstream != recompressed
    spec = RawFile("x.gz", md5=_md5(upstream), content_sha256=hashlib.sha256(content).hexdigest())
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "x.gz").write_bytes(recompressed)
    hashes = download("mnist", tmp_path / "raw", mirror=tmp_path / "m", files=[spec])
    assert hashes["x.gz"]["content_sha256"] == spec.content_sha256
    (tmp_path / "m" / "x.gz").write_bytes(gzip.compress(content + b"!"))
    (tmp_path / "raw" / "x.gz").unlink()
    with pytest.raises(DataError, match="decompressed sha256"):
        download("mnist", tmp_path / "raw", mirror=tmp_path / "m", files=[spec])
    assert _final_names(tmp_path / "raw") == []


def test_existing_verified_file_is_kept_without_network(tmp_path, monkeypatch):
    data = b"kept" * 10
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "k.bin").write_bytes(data)

    def no_network(*args, **kwargs):
        raise AssertionError("network used")

    monkeypatch.setattr(fetch, "_open_url", no_network)
    download("mnist", raw, files=[RawFile("k.bin", ("https://example.invalid/k.bin",), md5=_md5(data))])


# ------------------------------------------------------------------ network (replaced)

class _Response(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_no_network_no_mirror_gives_the_mirror_hint(tmp_path, monkeypatch):
    calls = []

    def offline(url, timeout):
        calls.append((url, timeout))
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(fetch, "_open_url", offline)
    monkeypatch.setattr(fetch, "BACKOFF_S", 0.0)
    raw = tmp_path / "raw"
    with pytest.raises(DataError, match=r"could not download train-images-idx3-ubyte.gz .*--mirror DIR") as info:
        download("mnist", raw)
    assert "data.mirror" in str(info.value) and "\n" not in str(info.value)
    # every official URL tried ATTEMPTS_PER_URL times with a timeout; nothing left behind
    assert len(calls) == 2 * fetch.ATTEMPTS_PER_URL and all(t == fetch.TIMEOUT_S for _, t in calls)
    assert _final_names(raw) == []


def test_network_download_retries_then_verifies(tmp_path, monkeypatch):
    data = b"payload" * 5000
    spec = RawFile("p.bin", ("https://one.invalid/p.bin", "https://two.invalid/p.bin"), md5=_md5(data))
    attempts = []

    def flaky(url, timeout):
        attempts.append(url)
        if len(attempts) < 2:
            raise TimeoutError("timed out")
        return _Response(data)

    sleeps = []
    monkeypatch.setattr(fetch, "_open_url", flaky)
    monkeypatch.setattr(fetch.time, "sleep", sleeps.append)
    download("mnist", tmp_path / "raw", files=[spec])
    assert (tmp_path / "raw" / "p.bin").read_bytes() == data
    assert attempts == ["https://one.invalid/p.bin"] * 2 and sleeps == [fetch.BACKOFF_S]


def test_network_download_with_wrong_bytes_fails_cleanly(tmp_path, monkeypatch):
    spec = RawFile("p.bin", ("https://one.invalid/p.bin",), md5=_md5(b"right"))
    monkeypatch.setattr(fetch, "_open_url", lambda url, timeout: _Response(b"wrong"))
    with pytest.raises(DataError, match="p.bin .from https://one.invalid/p.bin.: checksum mismatch"):
        download("mnist", tmp_path / "raw", files=[spec])
    assert _final_names(tmp_path / "raw") == []


def test_pins_exist_for_every_official_file():
    from attrrob.data import raw_files

    for dataset in ("mnist", "fashion_mnist", "gtsrb", "flower"):
        files = raw_files(dataset)
        assert files and all(spec.urls and (spec.md5 or spec.sha256) for spec in files)
    assert raw_files("digits") == ()


# ------------------------------------------------------------------ CLI

def test_download_cli_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        download_cli.main(["--dataset", "mnist", "--out", str(tmp_path / "raw"), "--mirror", str(tmp_path / "none")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("attrrob: error: mirror") and "not a directory" in err
