"""The atomic writers: files get the mode the umask allows (0644 under 022, 0600 under 077), not
mkstemp's 0600; parquet files record a checksum of their rows that survives the round trip through
the file (chunking, parquet's type renaming, nulls) and changes with any value; write_parquet reads
back exactly as DataFrame.to_parquet; the inputs a table was computed from are recorded by checksum."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from longtail import io as lio


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    """Set the process umask for the test; the old one is restored after it."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def frame() -> pd.DataFrame:
    return pd.DataFrame({"sample_id": ["a", "b", None], "split": "test", "label": np.array([1, 2, 3]),
                         "confidence": [0.1, np.nan, 0.3], "topk": [np.array([1, 2]), None, np.array([5, 6])],
                         "topk_prob": [np.array([0.5, 0.25], dtype=np.float32)] * 3, "ok": [True, False, None]})


def figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [0, 1])
    return fig


def write_each(folder: Path) -> dict[str, Path]:
    """One file from each writer in io.py."""
    import torch

    out = {name: folder / name for name in ("t.parquet", "a.parquet", "t.txt", "model.pt", "f.png", "raw.bin")}
    lio.write_parquet(frame(), out["t.parquet"])
    lio.write_table(pa.table({"x": [1, 2]}), out["a.parquet"])
    lio.write_text("hello\n", out["t.txt"])
    lio.torch_save({"w": torch.zeros(2)}, out["model.pt"])
    lio.save_figure(figure(), out["f.png"], dpi=20)
    with lio.atomic_path(out["raw.bin"]) as tmp, open(tmp, "wb") as fh:
        fh.write(b"\0")
    return out


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_every_writer_gives_the_mode_the_umask_allows(tmp_path, umask, mask, mode):
    umask(mask)
    for name, path in write_each(tmp_path).items():
        assert stat.S_IMODE(path.stat().st_mode) == mode, f"{name}: {oct(stat.S_IMODE(path.stat().st_mode))}"
    assert list(tmp_path.glob("*.tmp")) == []


def test_current_umask_reads_without_changing_it(umask):
    umask(0o027)
    assert lio.current_umask() == 0o027
    assert lio.current_umask() == 0o027


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "t.txt"
    lio.write_text("old", path)
    with pytest.raises(RuntimeError), lio.atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert path.read_text() == "old" and list(tmp_path.iterdir()) == [path]


# ------------------------------------------------------------------------------ checksums


def test_write_parquet_reads_back_as_to_parquet(tmp_path):
    df = frame()
    df.attrs = {"split_lists": {"train": "abc"}}
    lio.write_parquet(df, tmp_path / "ours.parquet")
    df.to_parquet(tmp_path / "pandas.parquet", index=False)
    ours, theirs = pd.read_parquet(tmp_path / "ours.parquet"), pd.read_parquet(tmp_path / "pandas.parquet")
    pd.testing.assert_frame_equal(ours, theirs)
    assert ours.attrs == theirs.attrs == df.attrs


def features(rows: int, dim: int, dtype: str = "float16") -> pa.Table:
    flat = pa.array(np.random.default_rng(0).normal(size=rows * dim).astype(dtype))
    return pa.table({"sample_id": pa.array([f"s{i}" for i in range(rows)]),
                     "feature": pa.FixedSizeListArray.from_arrays(flat, dim)})


@pytest.mark.parametrize("kind", ["frame", "features", "empty"])
def test_checksum_survives_the_file(tmp_path, kind):
    path = tmp_path / "t.parquet"
    if kind == "frame":
        lio.write_parquet(frame(), path)
    elif kind == "empty":
        lio.write_parquet(pd.DataFrame({"a": pd.Series([], dtype=object), "b": pd.Series([], dtype="int64")}), path)
    else:  # chunks of one size in memory, row groups of another in the file: windows of neither
        t = features(20000, 3)
        lio.write_table(pa.concat_tables([t.slice(0, 1234), t.slice(1234)]), path, row_group_size=5000)
        assert pq.read_table(path).column("feature").num_chunks > 1
    recorded = lio.recorded_checksum(path)
    assert recorded is not None and len(recorded) == 64
    assert lio.table_checksum(pq.read_table(path)) == recorded
    # the same rows written again (from what was read): the same checksum
    if kind == "features":
        lio.write_table(pq.read_table(path), tmp_path / "again.parquet")
    else:
        lio.write_parquet(pd.read_parquet(path), tmp_path / "again.parquet")
    assert lio.recorded_checksum(tmp_path / "again.parquet") == recorded


@pytest.mark.parametrize("change", ["value", "null", "list", "string", "name", "row order"])
def test_checksum_changes_with_any_value(change):
    df = frame()
    other = df.copy()
    if change == "value":
        other.loc[0, "label"] = 9
    elif change == "null":
        other.loc[0, "confidence"] = np.nan
    elif change == "list":
        other.at[2, "topk"] = np.array([6, 5])
    elif change == "string":
        other.loc[1, "sample_id"] = "c"
    elif change == "name":
        other = other.rename(columns={"ok": "okay"})
    else:
        other = other.iloc[[1, 0, 2]]
    cs = [lio.table_checksum(pa.Table.from_pandas(d, preserve_index=False)) for d in (df, other)]
    assert cs[0] != cs[1]


def test_inputs_recorded_by_checksum_relative_to_the_file(tmp_path):
    lio.write_parquet(frame(), tmp_path / "data" / "samples.parquet")
    lio.write_text("not parquet", tmp_path / "model.txt")
    out = tmp_path / "predictions" / "run" / "seed0.parquet"
    lio.write_parquet(frame(), out, [tmp_path / "data" / "samples.parquet", tmp_path / "model.txt"])
    assert lio.recorded_inputs(out) == {"../../data/samples.parquet":
                                        lio.recorded_checksum(tmp_path / "data" / "samples.parquet")}
    assert lio.recorded_inputs(tmp_path / "data" / "samples.parquet") == {}
