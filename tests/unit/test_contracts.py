"""The table contracts: each validator accepts a good table and rejects each kind of bad one with
one line naming the file and the problem; the builders and the stages' own tables validate; the
readers round-trip what the workflow writes; they refuse a truncated file, one whose rows no longer
match its checksum and one computed from an input that has changed since, in one line naming the
file and the command that rebuilds it; the module imports no torch."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from longtail import contracts as C
from longtail.contracts import ContractError
from longtail.curation import CurationConfig, curate
from longtail.data import SplitData
from longtail.io import recorded_inputs as read_inputs
from longtail.io import write_parquet, write_table
from longtail.metrics import evaluate, per_class_accuracy
from longtail.sources import SourceData

ROOT = Path(__file__).resolve().parents[2]


def split_data(split: str, labels: list[int]) -> SplitData:
    y = torch.tensor(labels, dtype=torch.int64)
    return SplitData(None, y, np.array([f"{split}-{i}" for i in range(len(labels))], dtype=object), split)


def source() -> SourceData:
    """5 classes (c3, c4 open), labels only: enough for curation."""
    rng = np.random.default_rng(0)
    train = rng.permutation(np.repeat(np.arange(5), 60))
    test = rng.permutation(np.repeat(np.arange(5), 20))
    images = {"train": np.zeros((len(train), 2, 2), np.uint8), "test": np.zeros((len(test), 2, 2), np.uint8)}
    return SourceData("synthetic", ("c0", "c1", "c2", "c3", "c4"), {"train": train, "test": test}, images=images)


@pytest.fixture(scope="module")
def curated() -> tuple[pd.DataFrame, pd.DataFrame]:
    cfg = CurationConfig.from_dict(dict(profile="exponential", n_max=40, imbalance_factor=4, open_classes=["c4"],
                                        val_per_class=5, meta_per_class=3, test_per_class=12, open_per_class=6,
                                        imbalanced_tests=["reversed", "permuted"],
                                        far_open=[{"source": {"name": "synthetic"}, "n": 4}]))
    return curate(source(), cfg, seed=0, far_sources=[source()])  # every split, open_far included


@pytest.fixture(scope="module")
def predictions(curated) -> pd.DataFrame:
    samples, _ = curated
    parts = []
    for s in C.PREDICTION_SPLITS:
        rows = samples[samples["split"] == s]
        sd = SplitData(None, torch.tensor(rows["label"].to_numpy()), rows["sample_id"].to_numpy(), s)
        parts.append(C.predictions_table(sd, np.random.default_rng(1).normal(size=(len(rows), 4)).astype(np.float32)))
    return pd.concat(parts, ignore_index=True)


def good_tables(curated, predictions) -> dict[str, object]:
    """A valid table of every contract, each from the code that writes it."""
    samples, counts = curated
    metrics = evaluate(predictions, counts, dataset="d", method="plain", seed=0, threshold=0.5)
    per_class = C.per_class_table(per_class_accuracy(predictions[predictions["split"] == "test"], len(counts)),
                                  counts, "plain", 0)
    features = pa.concat_tables([C.features_table(split_data(s, [0, 1, 2]), np.ones((3, 8), np.float32))
                                 for s in C.FEATURE_SPLITS])
    history = pd.DataFrame([{"epoch": 1, "loss": 0.5, "train_acc": 0.6, "val_acc": 0.4, "lr": 0.1, "seconds": 1.0,
                             "selected": True}],
                           columns=list(C.HISTORY_COLUMNS))
    sweep = pd.DataFrame({"tau": [0.0, 0.5], "val_acc": [0.3, 0.4], "selected": [False, True], "seconds": 0.1})
    return {"samples": samples, "class counts": counts, "history": history, "sweep history": sweep,
            "predictions": predictions, "features": features, "metrics": metrics, "per-class metrics": per_class}


def as_frame(table) -> pd.DataFrame:
    return table.to_pandas() if isinstance(table, pa.Table) else table.copy()


def rejected(contract: C.TableContract, table, where: str = "results/x.parquet") -> str:
    with pytest.raises(ContractError) as info:
        contract.validate(table, where)
    msg = str(info.value)
    assert msg.startswith(f"{where}: {contract.name}") and "\n" not in msg, msg
    return msg


# ------------------------------------------------------------------------------ validators


@pytest.mark.parametrize("name", list(C.CONTRACTS))
def test_good_tables_validate(name, curated, predictions):
    table = good_tables(curated, predictions)[name]
    C.CONTRACTS[name].validate(table, "x.parquet")
    C.CONTRACTS[name].validate(as_frame(table))  # the same table read into pandas


@pytest.mark.parametrize("name", list(C.CONTRACTS))
def test_missing_column_is_named(name, curated, predictions):
    contract = C.CONTRACTS[name]
    df = as_frame(good_tables(curated, predictions)[name])
    col = contract.names[-1] if contract.columns[-1].required else contract.names[0]
    msg = rejected(contract, df.drop(columns=[col]))
    assert f"no column '{col}'" in msg


@pytest.mark.parametrize("name", list(C.CONTRACTS))
def test_wrong_dtype_is_named(name, curated, predictions):
    contract = C.CONTRACTS[name]
    df = as_frame(good_tables(curated, predictions)[name])
    col = next(c for c in contract.columns if c.dtype in ("int64", "float64", "number"))
    df[col.name] = "text"
    msg = rejected(contract, df)
    assert f"column '{col.name}' has dtype" in msg and f"expected {col.dtype}" in msg


@pytest.mark.parametrize("name", list(C.CONTRACTS))
def test_unexpected_and_reordered_columns_are_named(name, curated, predictions):
    contract = C.CONTRACTS[name]
    df = as_frame(good_tables(curated, predictions)[name])
    assert "unexpected column 'extra'" in rejected(contract, df.assign(extra=1))
    assert "out of order" in rejected(contract, df[list(reversed(df.columns))])


@pytest.mark.parametrize("name", [n for n, c in C.CONTRACTS.items() if c.splits is not None])
def test_unknown_split_is_named(name, curated, predictions):
    contract = C.CONTRACTS[name]
    table = good_tables(curated, predictions)[name]
    df = as_frame(table)
    df.loc[df.index[0], "split"] = "tset"
    assert "unknown split 'tset'" in rejected(contract, df)
    if isinstance(table, pa.Table):  # checked on the Arrow table too, without pandas
        bad = table.set_column(1, "split", pa.array(["tset"] * table.num_rows))
        assert "unknown split 'tset'" in rejected(contract, bad)


def test_splits_by_table():
    assert C.SAMPLES.splits == C.ALL_SPLITS == (*C.SPLITS, "test_reversed", "test_permuted")
    assert "train" not in C.PREDICTIONS.splits and "test_reversed" in C.PREDICTIONS.splits
    assert set(C.PREDICTION_SPLITS) <= set(C.FEATURE_SPLITS) == set(C.SPLITS)
    assert "test_reversed" not in C.FEATURES.splits  # their features are the test rows'


def test_features_wrong_vector_type_and_mixed_column():
    t = C.features_table(split_data("test", [0, 1]), np.ones((2, 4), np.float32))
    bad = t.set_column(3, "feature", pa.array([[1, 2], [3, 4]], pa.list_(pa.int64())))
    assert "column 'feature' has dtype list<item: int64>" in rejected(C.FEATURES, bad)
    df = t.to_pandas()
    df["sample_id"] = ["a", 3]
    assert "column 'sample_id' holds values of mixed types" in rejected(C.FEATURES, df)


def test_empty_history_of_a_training_free_method_validates(tmp_path):
    path = tmp_path / "history.parquet"
    pd.DataFrame(columns=list(C.HISTORY_COLUMNS)).to_parquet(path, index=False)  # columns come back null
    assert len(C.read_history(path)) == 0


def test_history_is_per_epoch_or_a_sweep(curated, predictions, tmp_path):
    tables = good_tables(curated, predictions)
    for name in ("history", "sweep history"):
        C.validate_history(tables[name])
    with pytest.raises(ContractError, match="^h.parquet: sweep history column 'selected' has dtype"):
        C.validate_history(tables["sweep history"].assign(selected=1.0), "h.parquet")
    with pytest.raises(ContractError, match="^history table has no column 'epoch'"):
        C.validate_history(tables["history"].drop(columns="epoch"))


def test_optional_class_count_columns():
    counts = pd.DataFrame({"label": [0], "class_name": ["a"], "n_train": [3], "n_val": [1], "n_meta": [0],
                           "n_test": [2], "shot_group": ["few"], "convention": ["..."]})
    C.CLASS_COUNTS.validate(counts)
    C.CLASS_COUNTS.validate(counts.assign(n_test_permuted=1)[[*counts.columns[:6], "n_test_permuted",
                                                                *counts.columns[6:]]])


# ------------------------------------------------------------------------------ builders


def test_builders_keep_the_written_layout(curated, predictions):
    samples, counts = curated
    assert list(samples.columns) == list(C.SAMPLE_COLUMNS)
    assert set(samples["split"]) == set(C.ALL_SPLITS)
    assert list(counts.columns) == list(C.CLASS_COUNTS.names)  # both imbalanced splits: every column
    assert list(predictions.columns) == list(C.PREDICTION_COLUMNS)
    assert predictions["topk"].iloc[0].dtype == np.int64 and predictions["topk_prob"].iloc[0].dtype == np.float32
    t16 = C.features_table(split_data("val", [0, 1]), np.ones((2, 3)), dtype="float16")
    assert t16.schema.field("feature").type == pa.list_(pa.float16(), 3)
    C.FEATURES.validate(t16)
    # 65504 is float16's largest value; 70000 would be stored as inf
    C.features_table(split_data("val", [0, 1]), np.full((2, 3), 65504.0), dtype="float16")
    with pytest.raises(ValueError, match=r"split val reach \|x\| = 7e\+04, beyond float16's range.*feature_dtype: float32"):
        C.features_table(split_data("val", [0, 1]), np.full((2, 3), 70000.0), dtype="float16")
    rows = [("train-0", "train", 0, "train", 0, "c0", 5, "few")]
    C.SAMPLES.validate(C.samples_table(rows))


def test_predictions_table_top_k_of_softmax():
    logits = np.array([[0.0, 2.0, 1.0], [3.0, 0.0, 0.0]], np.float32)
    p = C.predictions_table(split_data("test", [1, 2]), logits, k=5)
    assert p["pred"].tolist() == [1, 0] and [t.tolist() for t in p["topk"]] == [[1, 2, 0], [0, 1, 2]]
    e = np.exp(logits[0])
    assert p["confidence"].iloc[0] == pytest.approx(e[1] / e.sum())


# ------------------------------------------------------------------------------ readers


def test_readers_round_trip_and_name_the_file(tmp_path, curated, predictions):
    tables = good_tables(curated, predictions)
    readers = {"samples": C.read_samples, "class counts": C.read_class_counts, "history": C.read_history,
               "sweep history": C.read_history, "predictions": C.read_predictions, "metrics": C.read_metrics,
               "per-class metrics": C.read_per_class}
    for name, read in readers.items():
        path = tmp_path / f"{name}.parquet"
        tables[name].to_parquet(path, index=False)
        pd.testing.assert_frame_equal(read(path), pd.read_parquet(path))
        tables[name].drop(columns=[[c.name for c in C.CONTRACTS[name].columns if c.required][-1]]).to_parquet(path, index=False)
        with pytest.raises(ContractError, match=f"^{path}: {name} table has no column"):
            read(path)


def test_read_features_by_split(tmp_path):
    path = tmp_path / "features.parquet"
    pq.write_table(pa.concat_tables([
        C.features_table(split_data("train", [0, 1, 1]), np.arange(6).reshape(3, 2), dtype="float16"),
        C.features_table(split_data("test", [2]), np.array([[7.0, 8.0]]), dtype="float16"),
    ]), path)
    fs = C.read_features(path)
    assert list(fs) == ["train", "test"]
    x, y, ids = fs["train"]
    assert x.dtype == np.float32 and x.tolist() == [[0, 1], [2, 3], [4, 5]]
    assert y.tolist() == [0, 1, 1] and ids.tolist() == ["train-0", "train-1", "train-2"]
    assert C.feature_matrix(C.read_feature_table(path, filters=[("split", "=", "test")])).tolist() == [[7, 8]]
    assert C.feature_matrix(pd.read_parquet(path)).shape == (4, 2)


def test_trainer_history_columns_follow_the_contract():
    from longtail.trainer import HISTORY_COLUMNS

    assert tuple(HISTORY_COLUMNS) == C.HISTORY_COLUMNS


def test_importing_contracts_loads_no_torch():
    code = "import sys, longtail.contracts; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT / "workflow_scripts")


# ------------------------------------------------------------------------------ integrity


READERS = {"samples": C.read_samples, "class counts": C.read_class_counts, "history": C.read_history,
           "predictions": C.read_predictions, "metrics": C.read_metrics, "per-class metrics": C.read_per_class,
           "features": C.read_feature_table}


def write(table, path: Path, inputs=()) -> Path:
    (write_table if isinstance(table, pa.Table) else write_parquet)(table, path, inputs)
    return path


def refused(read, path: Path, error: type, *words: str) -> str:
    """The reader's one-line message: the file, the problem, the command that rebuilds it."""
    with pytest.raises(error) as info:
        read(path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{path}: "), msg
    assert f"`snakemake --cores all --forcerun {path}`" in msg, msg
    for word in words:
        assert word in msg, msg
    return msg


@pytest.mark.parametrize("name", list(READERS))
def test_truncated_file_is_named_with_its_rebuild_command(name, curated, predictions, tmp_path):
    path = write(good_tables(curated, predictions)[name], tmp_path / "t.parquet")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a copy cut short, a full disk
    refused(READERS[name], path, C.UnreadableFileError, "unreadable")
    path.write_bytes(b"")
    refused(READERS[name], path, C.UnreadableFileError, "unreadable")


@pytest.mark.parametrize("name", list(READERS))
def test_rows_that_do_not_match_the_checksum_are_refused(name, curated, predictions, tmp_path):
    table = good_tables(curated, predictions)[name]
    path = write(table, tmp_path / "t.parquet")
    # the file edited behind the workflow's back: other rows under the recorded metadata
    t = pq.read_table(path)
    edited = t.slice(1) if t.num_rows > 1 else t.slice(0, 0)
    pq.write_table(edited.replace_schema_metadata(t.schema.metadata), path)
    refused(READERS[name], path, C.UnreadableFileError, "do not match the checksum")


def test_stale_input_is_refused_and_a_rewrite_of_the_same_rows_is_not(curated, predictions, tmp_path):
    samples, _ = curated
    samples_path = write(samples, tmp_path / "data" / "samples.parquet")
    preds = write(predictions, tmp_path / "predictions" / "plain" / "seed0.parquet", [samples_path])
    feats = write(good_tables(curated, predictions)["features"], tmp_path / "features.parquet", [samples_path])
    pd.testing.assert_frame_equal(C.read_predictions(preds), predictions)
    # rewritten with the same rows (a rerun of a deterministic job, a copy): still current
    write(pd.read_parquet(samples_path), samples_path)
    C.read_predictions(preds), C.read_feature_table(feats)
    # other rows: what was computed from the old ones is stale
    changed = samples.copy()
    changed.loc[0, "class_name"] = "renamed"
    write(changed, samples_path)
    shown = f"{tmp_path}/data/samples.parquet"
    refused(C.read_predictions, preds, C.StaleInputError, "stale", f"earlier {shown}")
    refused(C.read_feature_table, feats, C.StaleInputError, "stale", f"earlier {shown}")
    # a filtered read still checks where its rows came from
    with pytest.raises(C.StaleInputError):
        C.read_feature_table(feats, filters=[("split", "=", "test")])
    # an input that is gone is Snakemake's to rebuild, not a reason to refuse
    samples_path.unlink()
    C.read_predictions(preds)


def test_metrics_record_the_predictions_and_counts_they_come_from(curated, predictions, tmp_path):
    _, counts = curated
    preds = write(predictions, tmp_path / "predictions.parquet")
    counts_path = write(counts, tmp_path / "class_counts.parquet")
    metrics = evaluate(predictions, counts, dataset="d", method="plain", seed=0, threshold=0.5)
    out = write(metrics, tmp_path / "metrics" / "seed0.parquet", [preds, counts_path])
    assert set(read_inputs(out)) == {"../predictions.parquet", "../class_counts.parquet"}
    C.read_metrics(out)
    write(predictions.assign(pred=0), preds)
    refused(C.read_metrics, out, C.StaleInputError, "predictions.parquet")


def test_files_that_record_no_checksum_are_read_as_they_are(curated, predictions, tmp_path):
    path = tmp_path / "p.parquet"
    predictions.to_parquet(path, index=False)
    pd.testing.assert_frame_equal(C.read_predictions(path), predictions)
