"""The split names and the parquet tables passed between the workflow's stages, in one place.

Each table has a :class:`TableContract`: its columns in file order with their Arrow types, the
split names it may hold, a validator that raises :class:`ContractError` with one line naming the
problem (missing or unexpected column, wrong dtype, unknown split), and a reader that validates.
Builders of the tables whose layout is pure formatting live here too (:func:`samples_table`,
:func:`predictions_table`, :func:`features_table`, :func:`per_class_table`); the tables computed
elsewhere (class counts in ``curation``, metrics in ``metrics``, history in ``trainer``) follow
the contracts below.

Torch-free at import time: Snakemake's parse step and the figure rules import this module.

Files (under results/): samples and class counts ``data/{dataset}/`` (rule curate); history
``train/{dataset}/{run}/seed{seed}/`` (train); predictions and features
``predictions|features/{dataset}/{run}/seed{seed}.parquet`` (infer); metrics and per-class metrics
``metrics/{dataset}/{run}/seed{seed}[.per_class].parquet`` (evaluate).

Integrity: ``io.write_parquet`` / ``io.write_table`` record in each file a checksum of its rows and
the checksums of the tables it was computed from. The readers here refuse, in one line naming the
file and the Snakemake command that rebuilds it, a file that cannot be read (truncated, not
parquet), one whose rows no longer match its checksum, and a stale one: a file computed from an
input whose content has changed since (Snakemake reruns a job when an input is newer than its
outputs, so this catches what its timestamps miss: an input copied in with its old mtime, outputs
touched or copied from another run). Files that record no checksum are read as they are.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .io import CHECKSUM_KEY, recorded_checksum, recorded_inputs, table_checksum

if TYPE_CHECKING:  # data.py imports torch
    from .data import SplitData

# ------------------------------------------------------------------------------------ splits

# open: held-out classes of the dataset's own source (near open set); open_far: samples of other
# sources (far open set, curation ``far_open``), evaluated apart.
SPLITS = ("train", "val", "meta", "test", "open", "open_far")
# MFM appendix C.1 imbalanced test sets: config name -> split name, and the sample_id prefix of
# their rows (copies of test rows). Test-1 = reversed, Test-2 = permuted.
IMBALANCED_TESTS = {"reversed": "test_reversed", "permuted": "test_permuted"}
IMBALANCED_TEST_SPLITS = tuple(IMBALANCED_TESTS.values())
IMBALANCED_TEST_PREFIX = {"reversed": "rev-", "permuted": "perm-"}
ALL_SPLITS = SPLITS + IMBALANCED_TEST_SPLITS
# The rows a run learns from or selects on (test and open rows never reach training).
TRAINING_SPLITS = ("train", "val", "meta")
PREDICTION_SPLITS = ("val", "test", "open", "open_far")
# Embeddings of every split, so classifier-stage methods (NCM, cRT, KT, MetaModelNet, OLTR's
# centroids) start from cached features of their parent run instead of touching images again.
FEATURE_SPLITS = SPLITS

# Cached embeddings by split: {split: (X (N, D) float32, labels (N,), sample_ids (N,))}
FeatureSet = dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]


class ContractError(ValueError):
    """A table does not follow its contract; the message names the file and the problem."""


class UnreadableFileError(ContractError):
    """A file cannot be read as parquet or its rows do not match its checksum."""


class StaleInputError(ContractError):
    """A file was computed from an input whose content has changed since."""


def rebuild_command(path: str | os.PathLike) -> str:
    """The command that rebuilds ``path`` and everything computed from it. Deleting the file is not
    enough: Snakemake does not rebuild a missing intermediate file whose downstream tables exist."""
    return f"snakemake --cores all --forcerun {path}"


def _fix(path: str | os.PathLike) -> str:
    return f"rebuild it and what was computed from it with `{rebuild_command(path)}` " \
           "(plus the --configfile/--directory options of your run)"


def _reason(exc: BaseException) -> str:
    lines = str(exc).replace(" '<Buffer>'", "").strip().splitlines()  # (read from memory: no name)
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _read_arrow(source: Any, path: str | os.PathLike, **kwargs: Any) -> pa.Table:
    """``pq.read_table(source)``, any failure but a missing file raised as one line naming ``path``."""
    try:
        return pq.read_table(source, **kwargs)
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise UnreadableFileError(f"{path}: unreadable, truncated or not parquet ({_reason(exc)}); "
                                  f"{_fix(path)}") from None


def verify_checksum(table: pa.Table, path: str | os.PathLike) -> None:
    """Raise :class:`UnreadableFileError` unless the rows of ``table`` (all of the file at ``path``)
    match the checksum the file records (none recorded: nothing to check)."""
    recorded = (table.schema.metadata or {}).get(CHECKSUM_KEY)
    if recorded is not None and table_checksum(table) != recorded.decode():
        raise UnreadableFileError(f"{path}: its rows do not match the checksum recorded when it was written "
                                  f"(corrupted or edited since); {_fix(path)}")


def verify_inputs(path: str | os.PathLike, schema: pa.Schema | None = None) -> None:
    """Raise :class:`StaleInputError` when an input that ``path`` records has changed content since
    ``path`` was computed from it. Inputs that are gone or record no checksum are left to Snakemake
    and to their own readers."""
    for rel, then in recorded_inputs(path, schema).items():
        inp = Path(path).parent / rel
        try:
            now = recorded_checksum(inp)
        except (pa.ArrowException, OSError, ValueError):
            continue  # missing or unreadable: its own reader names it
        if now is not None and now != then:
            shown = os.path.normpath(inp)
            raise StaleInputError(f"{path}: stale, computed from an earlier {shown} (checksum {then[:12]} then, "
                                  f"{now[:12]} now, changed without a newer timestamp); {_fix(path)}")


def read_verified(path: str | os.PathLike) -> tuple[pd.DataFrame, pa.Schema]:
    """The parquet file at ``path`` as ``pd.read_parquet`` gives it, and its schema, once it has
    been read whole, checked against its checksum and its inputs' (read once from disk)."""
    data = Path(path).read_bytes()
    table = _read_arrow(pa.BufferReader(data), path)
    verify_checksum(table, path)
    verify_inputs(path, table.schema)
    return pd.read_parquet(io.BytesIO(data)), table.schema


# ------------------------------------------------------------------------------------ dtypes


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _list_of(*values: pa.DataType) -> Callable[[pa.DataType], bool]:
    def check(t: pa.DataType) -> bool:
        return (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)) \
            and t.value_type in values
    return check


# dtype name -> test of an Arrow type. "number": history values that a config may give as an
# integer (e.g. a constant lr of 1).
DTYPES: dict[str, Callable[[pa.DataType], bool]] = {
    "string": _is_string,
    "int64": lambda t: t == pa.int64(),
    "float64": lambda t: t == pa.float64(),
    "number": lambda t: pa.types.is_integer(t) or pa.types.is_floating(t),
    "bool": pa.types.is_boolean,
    "list<int64>": _list_of(pa.int64()),
    "list<float32>": _list_of(pa.float32()),
    # the features table stores a fixed-size list; read into pandas it becomes a plain list
    "vector<float32|float16>": _list_of(pa.float32(), pa.float16()),
}


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  # a key of DTYPES
    required: bool = True

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"column '{self.name}': unknown dtype '{self.dtype}'")


def _arrow_types(table: pd.DataFrame | pa.Table) -> dict[str, pa.DataType] | str:
    """Column name -> Arrow type (as the table would be written), or the problem converting it."""
    if isinstance(table, pa.Table):
        return {f.name: f.type for f in table.schema}
    try:
        return {f.name: f.type for f in pa.Schema.from_pandas(table, preserve_index=False)}
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed values in an object column: find which
        for name in table.columns:
            try:
                pa.Schema.from_pandas(table[[name]], preserve_index=False)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                return f"column {name!r} holds values of mixed types ({str(exc).splitlines()[0]})"
        raise


def _split_values(table: pd.DataFrame | pa.Table) -> list[str]:
    if isinstance(table, pa.Table):
        import pyarrow.compute as pc

        return [s for s in pc.unique(table.column("split")).to_pylist()]
    return list(pd.unique(table["split"]))


@dataclass(frozen=True)
class TableContract:
    """Columns (in file order) of one table, the splits it may hold (None: no ``split`` column)."""

    name: str
    columns: tuple[Column, ...]
    splits: tuple[str, ...] | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """Every column name, optional ones included, in file order."""
        return tuple(c.name for c in self.columns)

    def problem(self, table: pd.DataFrame | pa.Table, schema: pa.Schema | None = None) -> str | None:
        """What is wrong with ``table`` (one line), or None when it follows the contract. Dtypes are
        those of ``schema`` when given (a file's, as written), else of the table as it would be written."""
        types = {f.name: f.type for f in schema} if schema is not None else _arrow_types(table)
        if isinstance(types, str):
            return f"{self.name} {types}"
        present = list(types)
        known = set(self.names)
        missing = [c.name for c in self.columns if c.required and c.name not in types]
        if missing:
            return f"{self.name} table has no column {missing[0]!r} (columns: {', '.join(present)})"
        unexpected = [n for n in present if n not in known]
        if unexpected:
            return f"{self.name} table has an unexpected column {unexpected[0]!r} (expected: {', '.join(self.names)})"
        order = [n for n in self.names if n in types]
        if present != order:
            return f"{self.name} table's columns are out of order: {', '.join(present)} (expected: {', '.join(order)})"
        empty = table.num_rows == 0 if isinstance(table, pa.Table) else len(table) == 0
        for col in self.columns:
            t = types.get(col.name)
            if t is None or DTYPES[col.dtype](t) or (empty and pa.types.is_null(t)):
                continue  # (pandas writes the columns of an empty frame as null)
            return f"{self.name} column {col.name!r} has dtype {t}, expected {col.dtype}"
        if self.splits is not None:
            unknown = [s for s in _split_values(table) if s not in self.splits]
            if unknown:
                return f"{self.name} table has unknown split {unknown[0]!r} (known: {', '.join(self.splits)})"
        return None

    def validate(self, table: pd.DataFrame | pa.Table, where: str | os.PathLike | None = None,
                 schema: pa.Schema | None = None) -> None:
        """Raise :class:`ContractError` "<where>: <problem>" unless ``table`` follows the contract."""
        problem = self.problem(table, schema)
        if problem is not None:
            raise ContractError(f"{where}: {problem}" if where is not None else problem)

    def read(self, path: str | os.PathLike) -> pd.DataFrame:
        """The table at ``path`` as a DataFrame, verified (:func:`read_verified`) and validated
        against the file's own schema."""
        df, schema = read_verified(path)
        self.validate(df, path, schema)
        return df


def _cols(spec: Iterable[tuple[str, str]], optional: Sequence[str] = ()) -> tuple[Column, ...]:
    return tuple(Column(n, d, n not in optional) for n, d in spec)


# ------------------------------------------------------------------------------------ tables

# One row per used sample. label -1 = open set; rows of the imbalanced test splits are copies of
# test rows with prefixed sample ids (IMBALANCED_TEST_PREFIX). Split-list checksums (image_list
# sources) ride in the parquet metadata (DataFrame.attrs).
SAMPLES = TableContract("samples", _cols([
    ("sample_id", "string"), ("source", "string"), ("source_index", "int64"), ("split", "string"),
    ("label", "int64"), ("class_name", "string"), ("train_count", "int64"), ("shot_group", "string"),
]), ALL_SPLITS)

# One row per known class; the n_test_* columns exist when those splits do.
CLASS_COUNTS = TableContract("class counts", _cols([
    ("label", "int64"), ("class_name", "string"), ("n_train", "int64"), ("n_val", "int64"),
    ("n_meta", "int64"), ("n_test", "int64"),
    *((f"n_{s}", "int64") for s in IMBALANCED_TEST_SPLITS),
    ("shot_group", "string"), ("convention", "string"),
], optional=[f"n_{s}" for s in IMBALANCED_TEST_SPLITS]))

# Per epoch of training; training-free methods write no row or one row with NaN loss/lr.
# ``selected``: the epoch whose weights the run kept (``select``: the last, or the best on val);
# optional, so histories written before it existed still read.
HISTORY = TableContract("history", _cols([
    ("epoch", "number"), ("loss", "number"), ("train_acc", "number"), ("val_acc", "number"),
    ("lr", "number"), ("seconds", "number"), ("selected", "bool"),
], optional=["selected"]))
# The history of a method that tunes one value on val instead of training (tau-normalisation):
# one row per value tried, the chosen one selected.
SWEEP_HISTORY = TableContract("sweep history", _cols([
    ("tau", "number"), ("val_acc", "number"), ("selected", "bool"), ("seconds", "number"),
]))

# One row per evaluated sample: the top-1 class, its softmax probability, and the top-k. A method
# with an unknown class of its own (OpenMax) writes pred -1 where it rejects, confidence
# 1 - P(unknown), and ranks the unknown as -1 in topk.
PREDICTIONS = TableContract("predictions", _cols([
    ("sample_id", "string"), ("split", "string"), ("label", "int64"), ("pred", "int64"),
    ("confidence", "float64"), ("topk", "list<int64>"), ("topk_prob", "list<float32>"),
]), PREDICTION_SPLITS + IMBALANCED_TEST_SPLITS)

# Embeddings of every sample, one fixed-size list per row (float16 with feature_dtype: float16).
FEATURES = TableContract("features", _cols([
    ("sample_id", "string"), ("split", "string"), ("label", "int64"), ("feature", "vector<float32|float16>"),
]), FEATURE_SPLITS)

# Long form: one row per (split, setting, group, metric); values are fractions in [0, 1].
METRICS = TableContract("metrics", _cols([
    ("dataset", "string"), ("method", "string"), ("seed", "int64"), ("split", "string"),
    ("setting", "string"), ("group", "string"), ("metric", "string"), ("value", "float64"),
]), ALL_SPLITS)

# Closed-set test accuracy per known class.
PER_CLASS = TableContract("per-class metrics", _cols([
    ("run", "string"), ("seed", "int64"), ("label", "int64"), ("n", "int64"), ("correct", "int64"),
    ("accuracy", "float64"), ("class_name", "string"), ("n_train", "int64"), ("shot_group", "string"),
]))

CONTRACTS = {c.name: c for c in (SAMPLES, CLASS_COUNTS, HISTORY, SWEEP_HISTORY, PREDICTIONS, FEATURES, METRICS,
                                  PER_CLASS)}

SAMPLE_COLUMNS = SAMPLES.names
HISTORY_COLUMNS = HISTORY.names
PREDICTION_COLUMNS = PREDICTIONS.names
FEATURE_COLUMNS = FEATURES.names
METRICS_COLUMNS = METRICS.names
PER_CLASS_COLUMNS = PER_CLASS.names

# ------------------------------------------------------------------------------------ builders


def samples_table(rows: Sequence[tuple]) -> pd.DataFrame:
    """The samples table from rows of SAMPLE_COLUMNS values."""
    samples = pd.DataFrame(rows, columns=list(SAMPLE_COLUMNS))
    return samples.astype({"source_index": "int64", "label": "int64", "train_count": "int64"})


def predictions_table(split: "SplitData", logits: np.ndarray, k: int = 5) -> pd.DataFrame:
    """Predictions of one split from its logits (N, C): softmax top-1 and top-``k``."""
    import torch  # softmax/topk as torch computes them: the tables stay bit-identical

    probs = torch.softmax(torch.from_numpy(logits).float(), dim=1)
    top_p, top_i = probs.topk(min(k, probs.shape[1]), dim=1)
    return predictions_frame(split, top_i[:, 0].numpy(), top_p[:, 0].numpy(), top_i.numpy(), top_p.numpy())


def predictions_frame(split: "SplitData", pred: np.ndarray, confidence: np.ndarray, topk: np.ndarray,
                      topk_prob: np.ndarray) -> pd.DataFrame:
    """The predictions table of one split from its columns: pred (N,) (-1 = rejected by the method
    itself, e.g. OpenMax), confidence (N,) (high = known; the open-set threshold and AUROC read
    it), topk / topk_prob (N, k)."""
    return pd.DataFrame({
        "sample_id": split.sample_ids.astype(str),
        "split": split.split,
        "label": split.labels.numpy().astype(np.int64),
        "pred": np.asarray(pred).astype(np.int64),
        "confidence": np.asarray(confidence).astype(np.float64),
        "topk": list(np.asarray(topk).astype(np.int64)),
        "topk_prob": list(np.asarray(topk_prob).astype(np.float32)),
    })


def features_table(split: "SplitData", feats: np.ndarray, dtype: str = "float32") -> pa.Table:
    """Features of one split from its embeddings (N, D), stored as ``dtype``.

    float16 halves the cache of large datasets (ImageNet-LT: 186k x 2048); readers upcast. A value
    beyond float16's range (an untrained or exploding backbone) is an error, not a silent inf."""
    if np.dtype(dtype) == np.float16 and feats.size:
        peak = float(np.nanmax(np.abs(feats)))
        if peak > float(np.finfo(np.float16).max):
            raise ValueError(f"features of split {split.split} reach |x| = {peak:.3g}, beyond float16's range "
                             f"({float(np.finfo(np.float16).max):.0f}); set feature_dtype: float32")
    flat = pa.array(np.ascontiguousarray(feats, dtype=np.dtype(dtype)).ravel())
    return pa.table({
        "sample_id": pa.array(split.sample_ids.astype(str)),
        "split": pa.array([split.split] * len(split)),
        "label": pa.array(split.labels.numpy().astype(np.int64)),
        "feature": pa.FixedSizeListArray.from_arrays(flat, feats.shape[1] if feats.ndim == 2 else 0),
    })


def per_class_table(per_class: pd.DataFrame, class_counts: pd.DataFrame, run: str, seed: int) -> pd.DataFrame:
    """Per-class metrics: ``metrics.per_class_accuracy`` joined with the class table, run and seed first."""
    out = per_class.merge(class_counts[["label", "class_name", "n_train", "shot_group"]], on="label")
    out.insert(0, "run", run)
    out.insert(1, "seed", int(seed))
    return out

# ------------------------------------------------------------------------------------ readers


def read_samples(path: str | os.PathLike) -> pd.DataFrame:
    return SAMPLES.read(path)


def read_class_counts(path: str | os.PathLike) -> pd.DataFrame:
    return CLASS_COUNTS.read(path)


def validate_history(table: pd.DataFrame | pa.Table, where: str | os.PathLike | None = None,
                     schema: pa.Schema | None = None) -> None:
    """A history follows HISTORY or, where its first column is ``tau``, SWEEP_HISTORY."""
    names = table.column_names if isinstance(table, pa.Table) else list(table.columns)
    (SWEEP_HISTORY if names[:1] == ["tau"] else HISTORY).validate(table, where, schema)


def read_history(path: str | os.PathLike) -> pd.DataFrame:
    df, schema = read_verified(path)
    validate_history(df, path, schema)
    return df


def read_predictions(path: str | os.PathLike) -> pd.DataFrame:
    return PREDICTIONS.read(path)


def read_metrics(path: str | os.PathLike) -> pd.DataFrame:
    return METRICS.read(path)


def read_per_class(path: str | os.PathLike) -> pd.DataFrame:
    return PER_CLASS.read(path)


def read_feature_table(path: str | os.PathLike, **kwargs: Any) -> pa.Table:
    """The features table at ``path`` as a pyarrow Table (``kwargs`` go to ``pq.read_table``,
    e.g. ``filters``), validated; checked against its checksum when read whole."""
    table = _read_arrow(path, path, **kwargs)
    if not kwargs:
        verify_checksum(table, path)
    verify_inputs(path, table.schema)
    FEATURES.validate(table, path)
    return table


def feature_matrix(table: pd.DataFrame | pa.Table) -> np.ndarray:
    """(N, D) float32 array from a features table's ``feature`` column (pyarrow Table or DataFrame)."""
    if isinstance(table, pd.DataFrame):
        return np.stack(table["feature"].to_numpy()).astype(np.float32)
    col = table.column("feature").combine_chunks()
    return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), -1).astype(np.float32)


def read_features(path: str | os.PathLike) -> FeatureSet:
    """Cached embeddings by split: {split: (X (N, D) float32, labels (N,), sample_ids (N,))}."""
    table = read_feature_table(path)
    split = np.asarray(table.column("split").to_pylist())
    x = feature_matrix(table)
    y = table.column("label").to_numpy()
    ids = np.asarray(table.column("sample_id").to_pylist())
    return {s: (x[split == s], y[split == s], ids[split == s]) for s in dict.fromkeys(split)}
