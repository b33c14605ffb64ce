"""Dataset sources: IDX reading (raw and gzip), corrupt files, where Fashion-MNIST is looked for,
and an explicit ``source.root`` (only it is read; relative to the working directory; what was read
is logged and reaches the samples parquet)."""

import copy
import gzip
import hashlib
import json
import logging
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from generated_data import write_cifar10, write_cifar100, write_image_folder, write_lists
from longtail import sources
from longtail.config_check import ConfigError, validate_config
from longtail.curation import CurationConfig, curate
from longtail.io import write_parquet
from longtail.sources import DataError, load_source, read_idx

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"

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
    with pytest.raises(DataError) as exc:
        load_source("fashion_mnist", nowhere)
    msg = str(exc.value)
    for where in (tmp_path / "debian-missing", tmp_path / "tv" / "FashionMNIST" / "raw"):
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


# ------------------------------------------------------------------------------ an explicit root


@pytest.fixture
def debian_copy(tmp_path, monkeypatch):
    """A complete Fashion-MNIST where Debian installs it: a root that is not honoured would read it."""
    debian = tmp_path / "debian"
    tiny_fashion_mnist(debian)
    monkeypatch.setattr(sources, "DEBIAN_FASHION_MNIST", debian)
    return debian


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_empty_root_fails_naming_root_and_the_files_it_lacks(tmp_path, debian_copy):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as exc:
        load_source("fashion_mnist", {"root": str(empty)})
    msg = one_line(exc)
    assert f"source.root {empty} lacks" in msg
    for stem in STEMS:
        assert stem in msg
    assert str(debian_copy) not in msg


def test_missing_root_fails_instead_of_reading_another_copy(tmp_path, debian_copy):
    with pytest.raises(DataError, match=rf"source.root {tmp_path / 'nowhere'} does not exist"):
        load_source("fashion_mnist", {"root": str(tmp_path / "nowhere")})


def test_empty_string_root_is_refused(debian_copy):
    with pytest.raises(DataError, match="source.root is empty"):
        load_source("fashion_mnist", {"root": ""})


def test_root_holding_only_a_truncated_file_names_the_files_it_lacks(tmp_path, debian_copy):
    root = tmp_path / "partial"
    root.mkdir()
    (root / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b")  # a download cut short, the rest absent
    with pytest.raises(DataError) as exc:
        load_source("fashion_mnist", {"root": str(root)})
    msg = one_line(exc)
    assert str(root) in msg and "t10k-labels-idx1-ubyte" in msg and "train-labels-idx1-ubyte" in msg


def test_root_with_a_truncated_file_names_it_and_the_fix(tmp_path, debian_copy):
    root = tmp_path / "fm"
    tiny_fashion_mnist(root, gz=False)
    bad = root / "t10k-images-idx3-ubyte"
    bad.write_bytes(bad.read_bytes()[:-100])
    with pytest.raises(DataError) as exc:
        load_source("fashion_mnist", {"root": str(root)})
    msg = one_line(exc)
    assert str(bad) in msg and "truncated" in msg and "re-download" in msg


def test_relative_root_is_resolved_against_the_working_directory(tmp_path, debian_copy, monkeypatch):
    work = tmp_path / "work"
    tiny_fashion_mnist(work / "data" / "fm")
    monkeypatch.chdir(work)
    src = load_source("fashion_mnist", {"root": "data/fm"})
    assert src.provenance["source_root"] == str(work / "data" / "fm")
    assert all(p.startswith(str(work / "data" / "fm")) for p, _ in json.loads(src.provenance["source_files"]))
    monkeypatch.chdir(tmp_path)  # the same relative root from another folder: absent there
    with pytest.raises(DataError) as exc:
        load_source("fashion_mnist", {"root": "data/fm"})
    msg = one_line(exc)
    assert str(tmp_path / "data" / "fm") in msg and f"working directory {tmp_path}" in msg


def test_files_read_are_logged_and_reach_the_samples_parquet(tmp_path, debian_copy, caplog):
    root = tmp_path / "fm"
    tiny_fashion_mnist(root)
    with caplog.at_level(logging.INFO, logger="longtail.sources"):
        src = load_source("fashion_mnist", {"root": str(root)})
    files = json.loads(src.provenance["source_files"])
    assert sorted(Path(p).name for p, _ in files) == sorted(f"{stem}.gz" for stem in STEMS)
    for path, digest in files:
        assert digest == hashlib.sha256(Path(path).read_bytes()).hexdigest()
        assert f"read {path} (sha256 {digest})" in caplog.text
    samples, _ = curate(src, CurationConfig(n_max=1, imbalance_factor=1, val_per_class=0), seed=0)
    write_parquet(samples, tmp_path / "samples.parquet")
    attrs = pd.read_parquet(tmp_path / "samples.parquet").attrs
    assert json.loads(attrs["source_files"]) == files and attrs["source_root"] == str(root)


def test_without_root_the_copy_read_is_recorded(tmp_path, debian_copy):
    src = load_source("fashion_mnist", {"torchvision_root": str(tmp_path / "tv")})
    assert src.provenance["source_root"] == str(debian_copy)


@pytest.mark.parametrize("name, writer, folder", [("cifar10", write_cifar10, "cifar-10-batches-py"),
                                                  ("cifar100", write_cifar100, "cifar-100-python")])
def test_cifar_root(tmp_path, name, writer, folder, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as exc:
        load_source(name, {"root": str(empty)})
    msg = one_line(exc)
    assert f"source.root {empty} lacks {folder}/" in msg
    with pytest.raises(DataError, match="does not exist"):
        load_source(name, {"root": str(tmp_path / "nowhere")})
    writer(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    src = load_source(name, {"root": "data"})  # relative to the working directory
    files = json.loads(src.provenance["source_files"])
    assert src.provenance["source_root"] == str(tmp_path / "data" / folder) and len(files) >= 3
    bad = Path(files[0][0])  # a training batch cut short
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])
    with pytest.raises(DataError) as exc:
        load_source(name, {"root": "data"})
    msg = one_line(exc)
    assert str(bad) in msg and "truncated" in msg and "re-download" in msg


def test_cifar_batch_with_a_truncated_pixel_array(tmp_path):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    batch = pickle.loads(path.read_bytes(), encoding="bytes")
    batch[b"data"] = batch[b"data"][:, :1000]  # unpickles, but not 3 x 32 x 32 pixels
    path.write_bytes(pickle.dumps(batch))
    with pytest.raises(DataError, match=f"{path} is truncated or corrupt"):
        load_source("cifar10", {"root": str(tmp_path)})


def test_image_folder_root(tmp_path, monkeypatch, caplog):
    write_image_folder(tmp_path / "folder", classes=3, train=4, test=2)
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO, logger="longtail.sources"):
        src = load_source("image_folder", {"root": "folder", "image_size": 16})
    assert src.paths["train"][0].startswith(str(tmp_path / "folder" / "train"))
    digest = src.provenance["source_listing_sha256"]
    assert len(digest) == 64 and digest in caplog.text and str(tmp_path / "folder") in caplog.text
    # the listing's checksum names which image each source index is
    (tmp_path / "folder" / "train" / "class0" / "0.png").rename(tmp_path / "folder" / "train" / "class1" / "9.png")
    assert load_source("image_folder", {"root": "folder"}).provenance["source_listing_sha256"] != digest
    with pytest.raises(DataError) as exc:
        load_source("image_folder", {"root": "elsewhere"})
    assert str(tmp_path / "elsewhere") in one_line(exc) and "working directory" in str(exc.value)


def test_image_folder_without_its_test_folder_fails(tmp_path):
    write_image_folder(tmp_path, classes=2, train=3, test=1)
    with pytest.raises(DataError, match=f"source.root {tmp_path} lacks val/"):
        load_source("image_folder", {"root": str(tmp_path), "test_dir": "val"})
    for f in (tmp_path / "test").rglob("*.png"):
        f.unlink()
    with pytest.raises(DataError, match="holds no images"):
        load_source("image_folder", {"root": str(tmp_path)})


def test_image_list_relative_root_and_list_checksums(tmp_path, monkeypatch):
    lists = write_lists(tmp_path / "lt")
    monkeypatch.chdir(tmp_path)
    src = load_source("image_list", {"root": "lt", "lists": lists})
    files = dict(json.loads(src.provenance["source_files"]))
    assert set(files) == {str(tmp_path / "lt" / f) for f in lists.values()}
    assert src.provenance["train_list_sha256"] == files[str(tmp_path / "lt" / "LT_train.txt")]
    with pytest.raises(DataError) as exc:
        load_source("image_list", {"root": "nowhere", "lists": lists})
    assert str(tmp_path / "nowhere") in one_line(exc)


@pytest.mark.parametrize("source", [{"name": "fashion_mnist"}, {"name": "cifar10"},
                                    {"name": "image_folder", "root": "/data"},
                                    {"name": "image_list", "root": "/data", "lists": {"train": "a", "test": "b"}}])
def test_misspelt_root_key_is_refused_by_the_schema(source):
    cfg = yaml.safe_load(SMOKE.read_text())
    dataset = next(iter(cfg["datasets"]))
    cfg["datasets"][dataset]["source"] = {**copy.deepcopy(source), "roots": "/data"}
    with pytest.raises(ConfigError, match="'roots' was unexpected"):
        validate_config(cfg)
