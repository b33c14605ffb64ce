"""Imbalanced test splits (MFM appendix C.1): Test-1 ``test_reversed`` / Test-2 ``test_permuted``.

Class counts by hand, subsets of the balanced test split, seeded determinism, the copies'
predictions, hand-checkable metrics on a tiny predictions table, the table columns, config checks,
and one end-to-end run of tests/configs/smoke_imbalanced.yaml.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from snakemake.utils import validate

from longtail.config_check import ConfigError, check_config
from longtail.contracts import IMBALANCED_TEST_SPLITS
from longtail.curation import CurationConfig, curate, imbalanced_test_predictions, imbalanced_test_sizes
from longtail.metrics import evaluate
from longtail.sources import DataError, SourceData
from longtail.tables import build_table, display_table, summarise, table_notes

ROOT = Path(__file__).resolve().parents[2]
SMOKE_IMB = ROOT / "tests" / "configs" / "smoke_imbalanced.yaml"
SCHEMA = str(ROOT / "rules" / "schemas" / "config.schema.yaml")
NAMES = ("c0", "c1", "c2", "c3", "c4", "c5")


def source(test_per_class: int = 30, fixed: bool = False, train_counts=(300,) * 6) -> SourceData:
    """6 classes, labels interleaved; ``fixed``: a published-lists source (labels as they are)."""
    rng = np.random.default_rng(7)
    train = rng.permutation(np.repeat(np.arange(6), train_counts))
    test = rng.permutation(np.repeat(np.arange(6), test_per_class))
    images = {"train": np.zeros((len(train), 2, 2), np.uint8), "test": np.zeros((len(test), 2, 2), np.uint8)}
    return SourceData("synthetic", NAMES, {"train": train, "test": test}, images=images, fixed_splits=fixed)


def cfg(**kw) -> CurationConfig:
    # 5 known classes (c5 open), train n_i = floor(200 * 20^(-i/4)) = 200, 94, 44, 21, 10; 20 test each
    base = dict(profile="exponential", n_max=200, imbalance_factor=20, open_classes=("c5",),
                val_per_class=10, test_per_class=20, open_per_class=15, imbalanced_tests=("reversed", "permuted"))
    base.update(kw)
    return CurationConfig.from_dict(base)


def counts_of(samples: pd.DataFrame, split: str) -> list[int]:
    return samples[samples["split"] == split].groupby("label").size().reindex(range(5), fill_value=0).tolist()


# ------------------------------------------------------------------------------ class counts


def test_reversed_sizes_by_hand_cifar10_as_in_the_paper():
    # CIFAR-10 test (1000 / class) at imbalance 10: n'_i = floor(1000 * 10^(-i/9)), 10^(1/9) = 1.29155:
    # 1000, 774.3, 599.5, 464.2, 359.4, 278.3, 215.4, 166.8, 129.2, 100. Test-1 reverses them and
    # truncates the first five classes to the same (smallest) count, as appendix C.1 / Fig. 8b.
    sizes = imbalanced_test_sizes("reversed", 10, 1000, 10)
    assert sizes.tolist() == [100] * 5 + [359, 464, 599, 774, 1000]
    # 8 classes, 40 per class (the smoke config): floor(40 * 10^(-i/7)) = 40, 28, 20, 14, 10, 7, 5, 4
    assert imbalanced_test_sizes("reversed", 8, 40, 10).tolist() == [4, 4, 4, 4, 14, 20, 28, 40]
    assert imbalanced_test_sizes("reversed", 8, 40, 10, flat_classes=0).tolist() == [4, 5, 7, 10, 14, 20, 28, 40]


def test_permuted_sizes_are_a_seeded_permutation_of_the_profile():
    base = [40, 28, 20, 14, 10, 7, 5, 4]
    draws = [imbalanced_test_sizes("permuted", 8, 40, 10, rng=np.random.default_rng(s)).tolist() for s in (0, 0, 1)]
    assert sorted(draws[0], reverse=True) == base and sorted(draws[2], reverse=True) == base
    assert draws[0] == draws[1]  # same seed, same permutation
    assert draws[0] != base and draws[0] != draws[2]
    with pytest.raises(ValueError, match="sideways"):
        imbalanced_test_sizes("sideways", 8, 40, 10)


def test_curated_splits_have_the_profile_counts_and_are_test_subsets():
    samples, counts = curate(source(), cfg(), seed=3)
    # test profile (imbalance 10 by default): floor(20 * 10^(-i/4)) = 20, 11, 6, 3, 2
    assert counts_of(samples, "test_reversed") == [2, 2, 6, 11, 20]  # reversed, first 5 // 2 = 2 flattened
    perm = counts_of(samples, "test_permuted")
    assert sorted(perm, reverse=True) == [20, 11, 6, 3, 2] and perm != [20, 11, 6, 3, 2]
    assert counts["n_test_reversed"].tolist() == [2, 2, 6, 11, 20] and counts["n_test_permuted"].tolist() == perm
    test = samples[samples["split"] == "test"].set_index(["source", "source_index"])
    for split, prefix in zip(IMBALANCED_TEST_SPLITS, ("rev-", "perm-")):
        rows = samples[samples["split"] == split]
        assert rows["sample_id"].str.startswith(prefix).all()
        assert rows["sample_id"].is_unique
        orig = test.loc[list(zip(rows["source"], rows["source_index"]))]  # KeyError if not a test image
        assert (orig["label"].to_numpy() == rows["label"].to_numpy()).all()
        assert (orig["shot_group"].to_numpy() == rows["shot_group"].to_numpy()).all()
        assert (prefix + orig["sample_id"].to_numpy() == rows["sample_id"].to_numpy()).all()
    assert samples["sample_id"].is_unique


def test_test_imbalance_defaults_to_training_one_when_null():
    samples, _ = curate(source(), cfg(test_imbalance_factor=None, imbalanced_tests=("reversed",)), seed=3)
    # training imbalance 20: floor(20 * 20^(-i/4)) = 20, 9, 4, 2, 1 -> reversed 1, 2, 4, 9, 20, flattened 1, 1, ...
    assert counts_of(samples, "test_reversed") == [1, 1, 4, 9, 20]
    assert "test_permuted" not in set(samples["split"])


def test_seeded_deterministic_and_other_splits_untouched():
    a, _ = curate(source(), cfg(), seed=3)
    b, _ = curate(source(), cfg(), seed=3)
    pd.testing.assert_frame_equal(a, b)
    plain, plain_counts = curate(source(), cfg(imbalanced_tests=()), seed=3)
    base = a[~a["split"].isin(IMBALANCED_TEST_SPLITS)].reset_index(drop=True)
    pd.testing.assert_frame_equal(base, plain)
    assert list(plain_counts.columns) == ["label", "class_name", "n_train", "n_val", "n_meta", "n_test",
                                          "shot_group", "convention"]
    # Test-2 draws from its own generator: the same with or without Test-1
    only_perm, _ = curate(source(), cfg(imbalanced_tests=("permuted",)), seed=3)
    pd.testing.assert_frame_equal(only_perm[only_perm["split"] == "test_permuted"].reset_index(drop=True),
                                  a[a["split"] == "test_permuted"].reset_index(drop=True))
    other, _ = curate(source(), cfg(imbalanced_test_seed=11), seed=3)
    assert set(other.loc[other["split"] == "test_permuted", "sample_id"]) != \
        set(a.loc[a["split"] == "test_permuted", "sample_id"])


def test_lists_source_reverses_training_frequency_not_label_order():
    # published lists keep their labels: here class 2 has the most training images, class 0 the fewest
    src = source(test_per_class=20, fixed=True, train_counts=(5, 40, 90, 30, 60, 10))
    samples, _ = curate(src, CurationConfig(profile="lists", imbalanced_tests=("reversed",), reversed_flat_classes=0))
    got = samples[samples["split"] == "test_reversed"].groupby("label").size().to_dict()
    # ranks by training count: 2, 4, 1, 3, 5, 0; profile floor(20 * 10^(-r/5)) = 20, 12, 7, 5, 3, 2 reversed
    assert got == {2: 2, 4: 3, 1: 5, 3: 7, 5: 12, 0: 20}


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="imbalanced_tests"):
        cfg(imbalanced_tests=("reversed", "upside_down"))
    with pytest.raises(ValueError, match="test_imbalance_factor"):
        cfg(test_imbalance_factor=0.5)
    with pytest.raises(DataError, match="test_imbalance_factor"):  # 20 per class at imbalance 40: class of 0
        curate(source(), cfg(test_imbalance_factor=40), seed=0)


# ------------------------------------------------------------------------------ predictions and metrics


def tiny_samples() -> pd.DataFrame:
    """2 known classes (0 many-shot, 1 few-shot), 4 test images each, copies as curation makes them."""
    test = pd.DataFrame({"sample_id": [f"test-{i}" for i in range(8)], "source": "test", "source_index": range(8),
                         "split": "test", "label": [0] * 4 + [1] * 4, "class_name": ["a"] * 4 + ["b"] * 4,
                         "train_count": [200] * 4 + [5] * 4, "shot_group": ["many"] * 4 + ["few"] * 4})
    rev = test.iloc[[0, 4, 5, 6]].assign(split="test_reversed", sample_id=lambda d: "rev-" + d["sample_id"])
    perm = test.iloc[[1, 2, 7]].assign(split="test_permuted", sample_id=lambda d: "perm-" + d["sample_id"])
    return pd.concat([test, rev, perm], ignore_index=True)


def tiny_counts() -> pd.DataFrame:
    return pd.DataFrame({"label": [0, 1], "n_train": [200, 5], "shot_group": ["many", "few"]})


def tiny_predictions() -> pd.DataFrame:
    # test predictions: class 0 all right; class 1: test-4 and test-7 right, test-5 / test-6 wrong
    pred = [0, 0, 0, 0, 1, 0, 0, 1]
    return pd.DataFrame({"sample_id": [f"test-{i}" for i in range(8)], "split": "test", "label": [0] * 4 + [1] * 4,
                         "pred": pred, "confidence": np.linspace(0.5, 0.9, 8),
                         "topk": [np.array([p, 1 - p]) for p in pred], "topk_prob": [np.array([0.7, 0.3])] * 8})


def test_copies_get_the_test_predictions_of_their_images():
    preds = imbalanced_test_predictions(tiny_predictions(), tiny_samples())
    assert preds.groupby("split").size().to_dict() == {"test": 8, "test_reversed": 4, "test_permuted": 3}
    rev = preds[preds["split"] == "test_reversed"]
    assert rev["sample_id"].tolist() == ["rev-test-0", "rev-test-4", "rev-test-5", "rev-test-6"]
    assert rev["pred"].tolist() == [0, 1, 0, 0] and rev["label"].tolist() == [0, 1, 1, 1]
    np.testing.assert_allclose(rev["confidence"], np.linspace(0.5, 0.9, 8)[[0, 4, 5, 6]])
    assert list(preds.columns) == list(tiny_predictions().columns)
    # nothing to add: unchanged; a copy whose test prediction is missing: an error naming it
    plain = tiny_samples()[lambda d: d["split"] == "test"]
    pd.testing.assert_frame_equal(imbalanced_test_predictions(tiny_predictions(), plain), tiny_predictions())
    with pytest.raises(ValueError, match="rev-test-0"):
        imbalanced_test_predictions(tiny_predictions().iloc[1:], tiny_samples())


def test_evaluate_reports_each_imbalanced_split_by_hand():
    samples = tiny_samples()
    counts = tiny_counts()
    preds = imbalanced_test_predictions(tiny_predictions(), samples)
    m = evaluate(preds, counts, dataset="d", method="r", seed=0).set_index(["split", "setting", "group", "metric"])
    v = m["value"]
    # Test-1 rows: class 0 1/1 right, class 1 1/3 right -> top1 2/4 (sample-weighted), mean class acc 2/3
    assert v["test_reversed", "closed", "overall", "top1"] == pytest.approx(0.5)
    assert v["test_reversed", "closed", "overall", "error"] == pytest.approx(0.5)
    assert v["test_reversed", "closed", "overall", "mean_class_acc"] == pytest.approx(2 / 3)
    assert v["test_reversed", "closed", "many", "top1"] == pytest.approx(1.0)
    assert v["test_reversed", "closed", "few", "top1"] == pytest.approx(1 / 3)
    assert np.isnan(v["test_reversed", "closed", "medium", "top1"])
    # Test-2 rows: test-1, test-2 (class 0, right), test-7 (class 1, right) -> top1 1
    assert v["test_permuted", "closed", "overall", "error"] == pytest.approx(0.0)
    # the balanced test split is unchanged: 6/8
    assert v["test", "closed", "overall", "top1"] == pytest.approx(0.75)
    assert set(m.reset_index()["split"]) == {"test", "test_reversed", "test_permuted"}


def test_table_gets_test1_test2_error_columns_with_paper_beside():
    samples = tiny_samples()
    counts = tiny_counts()
    preds = imbalanced_test_predictions(tiny_predictions(), samples)
    metrics = pd.concat([evaluate(preds, counts, dataset="d", method="r", seed=s) for s in (0, 1)])
    paper = {"r": {"test_reversed/closed/overall/error": 42.13}}
    wide = build_table(summarise(metrics), {"r": {}}, paper)
    assert wide["Test-1 error"].tolist() == [pytest.approx(50.0)] and wide["Test-2 error"].tolist() == [0.0]
    assert wide["Test-1 error (paper)"].tolist() == [42.13] and "Test-2 error (paper)" not in wide
    shown = display_table(wide)
    assert list(shown.columns)[-3:] == ["Test-1 error", "Test-1 error (paper)", "Test-2 error"]
    assert shown["Test-1 error"].tolist() == ["50.00 ± 0.00"]
    assert table_notes(wide) and "Test-1" in table_notes(wide)[0]
    # a dataset without the splits: no such columns, no note
    plain = build_table(summarise(metrics[metrics["split"] == "test"]), {"r": {}}, paper)
    assert not any(c.startswith("Test-") for c in plain.columns) and table_notes(plain) == []


# ------------------------------------------------------------------------------ config


def _checked(config: dict) -> dict:
    validate(config, schema=SCHEMA)
    check_config(config)
    return config


def test_config_schema_and_checks():
    base = yaml.safe_load(SMOKE_IMB.read_text())
    cur = _checked(copy.deepcopy(base))["datasets"]["fmnist_smoke"]["curation"]
    assert cur["test_imbalance_factor"] == 10 and cur["reversed_flat_classes"] is None  # schema defaults
    bad = copy.deepcopy(base)
    bad["datasets"]["fmnist_smoke"]["curation"]["imbalanced_tests"] = ["reversed", "sideways"]
    with pytest.raises(Exception, match="sideways"):
        _checked(bad)
    small = copy.deepcopy(base)
    small["datasets"]["fmnist_smoke"]["curation"]["test_imbalance_factor"] = 50  # 40 per class / 50 < 1
    with pytest.raises(ConfigError, match="datasets.fmnist_smoke.curation.test_imbalance_factor"):
        _checked(small)
