"""Atomic writers: every output is written to a temporary sibling and renamed into place,
so a killed job never leaves a truncated file that Snakemake would take as complete.

Outputs get the mode an ordinary ``open`` would give them (0666 less the umask), so results on a
shared filesystem are as readable as the user's umask allows.

Every parquet table carries, in its schema metadata, a checksum of its row data
(:func:`table_checksum`, key ``CHECKSUM_KEY``) and the checksums of the parquet tables it was
computed from (``INPUTS_KEY``), which the readers in ``contracts`` verify.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

CHECKSUM_KEY = b"longtail:sha256"
INPUTS_KEY = b"longtail:inputs"
_WINDOW = 8192  # rows hashed at a time: bounds the copy of a window spanning two chunks


def current_umask() -> int:
    """The process's umask, without changing it where /proc tells it (os.umask only sets it, and
    setting it to read it races with other threads creating files)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` only on success, with the
    mode of a file created by ``open`` (mkstemp creates it 0600 whatever the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


# ------------------------------------------------------------------------------------ checksums


def _type_tag(t: pa.DataType) -> str:
    """The type as it reads back from parquet, whatever the storage detail: string = large_string,
    dictionaries by their values, list children unnamed (parquet renames ``item`` to ``element``)."""
    if pa.types.is_dictionary(t):
        return _type_tag(t.value_type)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "binary"
    if pa.types.is_fixed_size_list(t):
        return f"list<{_type_tag(t.value_type)}>[{t.list_size}]"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"list<{_type_tag(t.value_type)}>"
    return str(t)


def _hash_array(h: "hashlib._Hash", arr: pa.Array) -> None:
    """Feed the logical values of ``arr`` to ``h``: the validity mask where there are nulls, then
    the values with nulls zeroed (what lies under a null slot is unspecified in Arrow)."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    h.update(np.int64([len(arr), arr.null_count]).tobytes())
    t = arr.type
    if pa.types.is_null(t):
        return
    if arr.null_count:
        h.update(np.packbits(arr.is_valid().to_numpy(zero_copy_only=False)).tobytes())
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        if not pa.types.is_fixed_size_list(t):
            lengths = arr.value_lengths().fill_null(0)
            h.update(lengths.to_numpy(zero_copy_only=False).astype(np.int64).tobytes())
        _hash_array(h, arr.flatten())  # the values of the valid slots only
        return
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) \
            or pa.types.is_large_binary(t):
        arr = arr.cast(pa.large_binary()).fill_null(b"")
        offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset: arr.offset + len(arr) + 1]
        h.update(np.diff(offsets).tobytes())
        h.update(memoryview(arr.buffers()[2])[offsets[0]: offsets[-1]] if len(arr) else b"")
        return
    if pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_floating(t):
        if arr.null_count:
            arr = arr.fill_null(False if pa.types.is_boolean(t) else 0)
        h.update(np.ascontiguousarray(arr.to_numpy(zero_copy_only=False)).tobytes())
        return
    # anything else (dates, decimals, structs): its canonical text, slower but exact
    h.update(json.dumps(arr.to_pylist(), default=str).encode())


def table_checksum(table: pa.Table) -> str:
    """sha256 of a table's column names, types and values: the same for the table that was written
    and the one read back from the file, whatever the chunking, metadata or parquet's renaming."""
    h = hashlib.sha256()
    for field, column in zip(table.schema, table.columns):
        h.update(json.dumps([field.name, _type_tag(field.type), len(column)]).encode())
        # fixed row windows, not the file's chunks: chunking is a storage detail (row groups)
        for start in range(0, len(column), _WINDOW):
            _hash_array(h, column.slice(start, _WINDOW).combine_chunks())
    return h.hexdigest()


def recorded_checksum(path: str | os.PathLike) -> str | None:
    """The checksum a parquet file records (its footer only; None when it records none)."""
    meta = pq.read_schema(path).metadata or {}
    value = meta.get(CHECKSUM_KEY)
    return value.decode() if value is not None else None


def recorded_inputs(path: str | os.PathLike, schema: pa.Schema | None = None) -> dict[str, str]:
    """{input path (relative to the file's folder): its checksum when this file was written}."""
    meta = (schema if schema is not None else pq.read_schema(path)).metadata or {}
    value = meta.get(INPUTS_KEY)
    return json.loads(value) if value is not None else {}


def _lineage(path: Path, inputs: Iterable[str | os.PathLike]) -> dict[str, str]:
    """The recorded checksum of each parquet input, keyed by its path relative to ``path``'s folder
    (so the record still resolves when the results tree is moved or read from another folder)."""
    out = {}
    for inp in inputs:
        if Path(inp).suffix != ".parquet":
            continue  # (models, configs: no checksum of theirs to record)
        checksum = recorded_checksum(inp)
        if checksum is not None:
            out[Path(os.path.relpath(Path(inp).absolute(), path.absolute().parent)).as_posix()] = checksum
    return out


# ------------------------------------------------------------------------------------ writers


def write_table(table: pa.Table, path: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (),
                **kwargs: Any) -> None:
    """Write an Arrow table as parquet with its checksum and those of ``inputs`` (the parquet tables
    it was computed from) in the metadata; ``kwargs`` go to ``pq.write_table``."""
    path = Path(path)
    meta = {**(table.schema.metadata or {}), CHECKSUM_KEY: table_checksum(table).encode()}
    lineage = _lineage(path, inputs)
    if lineage:
        meta[INPUTS_KEY] = json.dumps(lineage, sort_keys=True).encode()
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata(meta), tmp, **kwargs)


def write_parquet(df: pd.DataFrame, path: str | os.PathLike, inputs: Iterable[str | os.PathLike] = ()) -> None:
    """``df.to_parquet(path, index=False)`` (same Arrow table, ``df.attrs`` kept as pandas keeps
    them), atomically, with the checksums of :func:`write_table`."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    if df.attrs:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               b"PANDAS_ATTRS": json.dumps(df.attrs).encode()})
    write_table(table, path, inputs)


def write_text(text: str, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def torch_save(obj: Any, path: str | os.PathLike) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_figure(fig: Any, path: str | os.PathLike, **kwargs: Any) -> None:
    """Save a matplotlib figure atomically (format from the final suffix)."""
    path = Path(path)
    kwargs.setdefault("format", path.suffix.lstrip(".") or "png")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, **kwargs)
