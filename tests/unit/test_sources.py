"""Dataset sources: IDX reading (raw and gzip), corrupt files, and where Fashion-MNIST is looked for."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from longtail import sources
from longtail.sources import DataError, load_source, read_idx

STEMS = {
    "train-images-idx3-ubyte": "train_x", "train-labels-idx1-ubyte": "train_y",
    "t10k-images-idx3-ubyte": "test_x", "t10k-labels-idx1-ubyte": "test_y",
}


def idx_bytes(arr: np.ndarray) -> bytes:
    """IDX encoding: two zero bytes, dtype code 0x08 (uint8), ndim, big-endian int32 dims, data."""
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()


def write_idx(path: Path, arr: np.ndarray) -> Path:
    data = idx_bytes(arr)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)
    return path


def tiny_fashion_mnist(folder: Path, gz: bool = True) -> dict[str, np.ndarray]:
    """Write a 12-train / 5-test Fashion-MNIST lookalike (28x28, labels 0..9) into ``folder``."""
    rng = np.random.default_rng(0)
    arrays = {
        "train_x": rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
        "train_y": (np.arange(12) % 10).astype(np.uint8),
        "test_x": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        "test_y": np.array([9, 8, 7, 6, 5], dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for stem, key in STEMS.items():
        write_idx(folder / (stem + (".gz" if gz else "")), arrays[key])
    return arrays


@pytest.fixture
def nowhere(tmp_path, monkeypatch):
    """No Fashion-MNIST anywhere: Debian's path and torchvision's cache point into tmp_path."""
    monkeypatch.setattr(sources, "DEBIAN_FASHION_MNIST", tmp_path / "debian-missing")
    return {"torchvision_root": str(tmp_path / "tv")}


# ------------------------------------------------------------------------------ read_idx


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_round_trip(tmp_path, suffix):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    got = read_idx(write_idx(tmp_path / f"x-idx3-ubyte{suffix}", arr))
    assert got.dtype == np.uint8 and got.shape == (2, 3, 4)
    np.testing.assert_array_equal(got, arr)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / f"y-idx1-ubyte{suffix}", labels)), labels)


def test_read_idx_on_real_fashion_mnist():
    root = sources.DEBIAN_FASHION_MNIST
    if not (root / "t10k-labels-idx1-ubyte.gz").is_file():
        pytest.skip(f"Debian's dataset-fashion-mnist is not installed at {root}")
    images = read_idx(root / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(root / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,)
    assert np.bincount(labels).tolist() == [1000] * 10  # the official test split is balanced


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_truncated_body_names_the_file(tmp_path, suffix):
    path = tmp_path / f"cut-idx3-ubyte{suffix}"
    data = idx_bytes(np.zeros((4, 5, 5), np.uint8))[:-7]  # 7 pixels short
    if suffix:
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)
    with pytest.raises(DataError, match=str(path)):
        read_idx(path)


def test_truncated_header_names_the_file(tmp_path):
    path = tmp_path / "hdr-idx3-ubyte"
    path.write_bytes(idx_bytes(np.zeros((4, 5, 5), np.uint8))[:9])  # magic + 1.25 dims
    with pytest.raises(DataError, match="hdr-idx3-ubyte"):
        read_idx(path)


def test_truncated_gzip_stream_names_the_file(tmp_path):
    path = write_idx(tmp_path / "stream-idx3-ubyte.gz", np.arange(3000, dtype=np.uint8).reshape(3, 1000) * 7)
    path.write_bytes(path.read_bytes()[:-20])  # cut the compressed stream itself
    with pytest.raises(DataError, match="stream-idx3-ubyte.gz"):
        read_idx(path)


def test_bad_magic(tmp_path):
    path = tmp_path / "png-idx3-ubyte"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(DataError, match="bad magic"):
        read_idx(path)
    path.write_bytes(bytes([0, 0, 0x0D, 1]) + (4).to_bytes(4, "big") + bytes(16))  # float32 code: unsupported
    with pytest.raises(DataError, match="png-idx3-ubyte"):
        read_idx(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="absent-idx1-ubyte"):
        read_idx(tmp_path / "absent-idx1-ubyte")


# ------------------------------------------------------------------------------ fashion_mnist source


def test_fashion_mnist_not_found_lists_where_it_looked(tmp_path, nowhere):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as exc:
        load_source("fashion_mnist", {"root": str(empty), **nowhere})
    msg = str(exc.value)
    for where in (empty, empty / "FashionMNIST" / "raw", tmp_path / "debian-missing",
                  tmp_path / "tv" / "FashionMNIST" / "raw"):
        assert str(where) in msg
    assert "apt-get install dataset-fashion-mnist" in msg  # and says how to fix it


@pytest.mark.parametrize("layout, gz", [("flat", True), ("flat", False), ("torchvision", False)])
def test_fashion_mnist_from_config_root(tmp_path, nowhere, layout, gz):
    root = tmp_path / "fm"
    folder = root if layout == "flat" else root / "FashionMNIST" / "raw"
    arrays = tiny_fashion_mnist(folder, gz=gz)
    src = load_source("fashion_mnist", {"root": str(root), **nowhere})
    assert src.class_names[0] == "T-shirt/top" and src.class_names[9] == "Ankle boot"
    np.testing.assert_array_equal(src.images["train"], arrays["train_x"])
    np.testing.assert_array_equal(src.images["test"], arrays["test_x"])
    assert src.labels["train"].dtype == np.int64
    np.testing.assert_array_equal(src.labels["test"], [9, 8, 7, 6, 5])


def test_fashion_mnist_from_torchvision_cache(tmp_path, nowhere):
    arrays = tiny_fashion_mnist(Path(nowhere["torchvision_root"]) / "FashionMNIST" / "raw", gz=False)
    src = load_source("fashion_mnist", nowhere)  # no root in config: falls through to the cache
    np.testing.assert_array_equal(src.images["train"], arrays["train_x"])


def test_fashion_mnist_images_and_labels_disagree(tmp_path, nowhere):
    root = tmp_path / "fm"
    tiny_fashion_mnist(root)
    write_idx(root / "t10k-labels-idx1-ubyte.gz", np.zeros(4, np.uint8))  # 5 images, 4 labels
    with pytest.raises(DataError, match="disagree"):
        load_source("fashion_mnist", {"root": str(root), **nowhere})


def test_unknown_source():
    with pytest.raises(DataError, match="no_such_source"):
        load_source("no_such_source")
