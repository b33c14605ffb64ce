"""Hand-computed checks of longtail.metrics (every expected number is derived in a comment)."""

import math

import numpy as np
import pandas as pd
import pytest

from longtail import metrics as M
from longtail.contracts import METRICS_COLUMNS

# Four known classes: 0 and 1 are "many", 2 "medium", 3 "few".
CLASS_COUNTS = pd.DataFrame({
    "label": np.array([0, 1, 2, 3], dtype=np.int64),
    "class_name": ["a", "b", "c", "d"],
    "n_train": np.array([200, 150, 50, 5], dtype=np.int64),
    "shot_group": ["many", "many", "medium", "few"],
})

# Test split, 9 samples:                              closed      open @ t=0.5
#   class 0: preds 0,0,0,0  conf .9 .8 .5 .3     ->   4/4 = 1    .3 rejected (.5 == t kept) -> 3/4
#   class 1: pred  0        conf .6              ->   0/1 = 0    0
#   class 2: preds 2,1      conf .7 .2           ->   1/2        .2 rejected (was wrong)    -> 1/2
#   class 3: preds 3,3      conf .4 .95          ->   2/2 = 1    .4 rejected                -> 1/2
# Open split, 4 samples: preds 0,1,2,3 conf .1 .45 .55 .65 -> at t=0.5 two rejected, two accepted.
TEST = dict(label=[0, 0, 0, 0, 1, 2, 2, 3, 3], pred=[0, 0, 0, 0, 0, 2, 1, 3, 3],
            confidence=[0.9, 0.8, 0.5, 0.3, 0.6, 0.7, 0.2, 0.4, 0.95])
OPEN = dict(label=[-1] * 4, pred=[0, 1, 2, 3], confidence=[0.1, 0.45, 0.55, 0.65])
# Val split, one per class: preds 0,1,1,3 -> top1 3/4, many (1+1)/2 = 1, medium 0, few 1.
VAL = dict(label=[0, 1, 2, 3], pred=[0, 1, 1, 3], confidence=[0.9] * 4)


def frame(split, label, pred, confidence):
    n = len(label)
    return pd.DataFrame({
        "sample_id": [f"{split}{i}" for i in range(n)],
        "split": [split] * n,
        "label": np.asarray(label, dtype=np.int64),
        "pred": np.asarray(pred, dtype=np.int64),
        "confidence": np.asarray(confidence, dtype=float),
    })


@pytest.fixture
def test_df():
    return frame("test", **TEST)


@pytest.fixture
def open_df():
    return frame("open", **OPEN)


@pytest.fixture
def predictions(test_df, open_df):
    return pd.concat([frame("val", **VAL), test_df, open_df], ignore_index=True)


# ---------------------------------------------------------------- closed set

def test_per_class_accuracy_counts_and_ignores_open_rows(test_df, open_df):
    # An extra (5th) class with no samples gets n = 0 and accuracy NaN; label -1 rows are ignored.
    pc = M.per_class_accuracy(pd.concat([test_df, open_df]), num_classes=5)
    assert list(pc.columns) == ["label", "n", "correct", "accuracy"]
    assert pc["label"].tolist() == [0, 1, 2, 3, 4]
    assert pc["n"].tolist() == [4, 1, 2, 2, 0]
    assert pc["correct"].tolist() == [4, 0, 1, 2, 0]
    assert pc["accuracy"].iloc[:4].tolist() == [1.0, 0.0, 0.5, 1.0]
    assert math.isnan(pc["accuracy"].iloc[4])


def test_per_class_accuracy_rejects_out_of_range_label(test_df):
    with pytest.raises(ValueError):
        M.per_class_accuracy(test_df, num_classes=3)


def test_closed_set_metrics(test_df):
    m = M.closed_set_metrics(test_df, CLASS_COUNTS)
    assert m["top1"] == pytest.approx(7 / 9)            # 4 + 0 + 1 + 2 correct of 9
    assert m["error"] == pytest.approx(2 / 9)
    assert m["mean_class_acc"] == pytest.approx(0.625)  # (1 + 0 + .5 + 1) / 4
    # Group accuracy is the mean of per-class accuracies: many = (1 + 0) / 2 = 0.5,
    # whereas the sample accuracy of the many group would be 4/5 = 0.8.
    assert m["many"] == pytest.approx(0.5)
    assert m["medium"] == pytest.approx(0.5)
    assert m["few"] == pytest.approx(1.0)
    # Per-class F1: c0 P=4/5 R=1 -> 8/9; c1 0; c2 P=1 R=1/2 -> 2/3; c3 1.
    # Macro = (8/9 + 0 + 6/9 + 9/9) / 4 = 23/36.
    assert m["macro_f1"] == pytest.approx(23 / 36)
    assert "top5" not in m  # no topk column


def test_empty_group_is_nan(test_df):
    # No "few" classes at all -> NaN; class 3 relabelled "medium": medium = (0.5 + 1) / 2 = 0.75.
    counts = CLASS_COUNTS.assign(shot_group=["many", "many", "medium", "medium"])
    m = M.closed_set_metrics(test_df, counts)
    assert math.isnan(m["few"])
    assert m["medium"] == pytest.approx(0.75)
    # A group whose classes have no samples in the split is NaN too (class 3 rows dropped).
    m = M.closed_set_metrics(test_df[test_df["label"] != 3], CLASS_COUNTS)
    assert math.isnan(m["few"])


def test_top5_uses_first_five_entries():
    # 6 classes; label 0 sits 6th in its list (miss), label 1 1st (hit), label 2 5th (hit) -> 2/3.
    df = frame("test", label=[0, 1, 2], pred=[1, 1, 0], confidence=[0.5] * 3)
    df["topk"] = [np.array([1, 2, 3, 4, 5, 0]), np.array([1, 0, 2, 3, 4, 5]),
                  np.array([0, 1, 3, 4, 2, 5])]
    counts = pd.DataFrame({"label": np.arange(6), "class_name": list("abcdef"),
                           "n_train": [500] * 6, "shot_group": ["many"] * 6})
    assert M.closed_set_metrics(df, counts)["top5"] == pytest.approx(2 / 3)


# ---------------------------------------------------------------- open set

def test_open_set_predictions_threshold_boundary():
    df = frame("x", label=[0, 0, 0, 0], pred=[3, 4, 5, 6], confidence=[0.49, 0.5, 0.51, 0.0])
    # < 0.5 rejects, == 0.5 keeps.
    assert M.open_set_predictions(df, 0.5).tolist() == [-1, 4, 5, -1]
    # Also at the default 0.1, with the float literal 0.1 on both sides.
    df = frame("x", label=[0, 0], pred=[1, 2], confidence=[0.1, 0.0999])
    assert M.open_set_predictions(df, 0.1).tolist() == [1, -1]


def test_f_measure_rejection_is_false_positive():
    # Known [0, 0] predicted [0, -1]; open predicted -1: TP=1 FP=1 FN=0 -> P=1/2 R=1 -> F=2/3.
    # (If the rejection were not counted as FP, F would be 1.)
    assert M.f_measure([0, 0, -1], [0, -1, -1]) == pytest.approx(2 / 3)


def test_f_measure_accepted_open_is_false_negative():
    # Open sample predicted as known class 1 (or 0): TP=1 FP=0 FN=1 -> P=1 R=1/2 -> F=2/3.
    assert M.f_measure([0, -1], [0, 1]) == pytest.approx(2 / 3)
    assert M.f_measure([0, -1], [0, 0]) == pytest.approx(2 / 3)
    # Open sample rejected: no FN -> F=1.
    assert M.f_measure([0, -1], [0, -1]) == pytest.approx(1.0)


def test_f_measure_undefined_is_zero():
    assert M.f_measure([0, 1], [-1, -1]) == 0.0   # TP=0: P=0, R=0/0
    assert M.f_measure([-1, -1], [-1, -1]) == 0.0  # no known samples


def test_open_set_metrics(test_df, open_df):
    m = M.open_set_metrics(test_df, open_df, CLASS_COUNTS, threshold=0.5)
    # Known after rejection: correct 3 + 0 + 1 + 1 = 5 of 9.
    assert m["top1"] == pytest.approx(5 / 9)
    assert m["many"] == pytest.approx(0.375)            # (3/4 + 0) / 2
    assert m["medium"] == pytest.approx(0.5)
    assert m["few"] == pytest.approx(0.5)
    assert m["mean_class_acc"] == pytest.approx(0.4375)  # (.75 + 0 + .5 + .5) / 4
    # TP=5, FP=4 (incl. 3 rejections), FN=2 (open .55 and .65 accepted):
    # P=5/9, R=5/7, F = 2PR/(P+R) = (50/63) / (80/63) = 0.625.
    assert m["f_measure"] == pytest.approx(0.625)
    assert m["open_reject_rate"] == pytest.approx(0.5)   # .1 and .45 rejected of 4
    # AUROC = share of (known, open) pairs with known conf > open conf:
    # open .1 beaten by 9, .45 by 6, .55 by 5, .65 by 4 -> 24 / 36.
    assert m["auroc"] == pytest.approx(2 / 3)
    # Macro-F1 over {-1, 0, 1, 2, 3}:
    #   -1: TP=2 FP=3 FN=2 -> P=2/5 R=1/2 -> 4/9;  0: TP=3 FP=1 FN=1 -> 3/4;  1: 0;
    #    2: TP=1 FP=1 FN=1 -> 1/2;  3: TP=1 FP=1 FN=1 -> 1/2.   (4/9 + 7/4) / 5 = 79/180.
    assert m["macro_f1"] == pytest.approx(79 / 180)


def test_a_methods_own_rejection_survives_the_threshold_rule():
    # OpenMax-style rows: pred -1 where the unknown class won, confidence = 1 - P(unknown).
    known = frame("test", label=[0, 1, 2], pred=[0, -1, 2], confidence=[0.95, 0.6, 0.6])
    opened = frame("open", label=[-1, -1], pred=[-1, 3], confidence=[0.3, 0.7])
    # confidence 0.6 >= t = 0.5 does not re-accept the rejected class-1 sample
    assert M.open_set_predictions(known, 0.5).tolist() == [0, -1, 2]
    m = M.open_set_metrics(known, opened, CLASS_COUNTS, threshold=0.5)
    assert m["top1"] == pytest.approx(2 / 3)
    assert m["open_reject_rate"] == pytest.approx(0.5)
    # TP 2, FP 1 (the rejection), FN 1 (open predicted 3): P = R = 2/3 -> F = 2/3
    assert m["f_measure"] == pytest.approx(2 / 3)
    # known .95 beats .3 and .7, each .6 beats .3: 4 of 6 pairs
    assert m["auroc"] == pytest.approx(2 / 3)


def test_open_set_metrics_auroc_nan_without_open(test_df, open_df):
    m = M.open_set_metrics(test_df, open_df.iloc[:0], CLASS_COUNTS, threshold=0.5)
    assert math.isnan(m["auroc"])
    assert math.isnan(m["open_reject_rate"])


# ---------------------------------------------------------------- long form

def lookup(table, split, setting, group, metric):
    hit = table[(table["split"] == split) & (table["setting"] == setting)
                & (table["group"] == group) & (table["metric"] == metric)]
    assert len(hit) == 1, (split, setting, group, metric)
    return hit["value"].iloc[0]


def test_evaluate_schema_and_values(predictions):
    t = M.evaluate(predictions, CLASS_COUNTS, dataset="toy", method="ce", seed=3, threshold=0.5)
    assert list(t.columns) == ["dataset", "method", "seed", "split", "setting", "group", "metric",
                               "value"]
    assert list(t.columns) == list(METRICS_COLUMNS)
    assert t["seed"].dtype == np.int64
    assert t["value"].dtype == np.float64
    for col in ["dataset", "method", "split", "setting", "group", "metric"]:
        assert pd.api.types.is_string_dtype(t[col]), col
    assert set(t["dataset"]) == {"toy"} and set(t["method"]) == {"ce"} and set(t["seed"]) == {3}
    assert not t.duplicated(["split", "setting", "group", "metric"]).any()
    # Exactly these rows (no topk column -> no top5).
    closed = {("overall", m) for m in ["top1", "error", "mean_class_acc", "macro_f1"]} | {
        (g, "top1") for g in ["many", "medium", "few"]}
    opened = {("overall", m) for m in ["top1", "mean_class_acc", "f_measure", "f_measure_oltr2019", "auroc",
                                       "aupr_in", "aupr_out", "fpr_at_95_tpr", "macro_f1", "threshold"]}
    opened |= {(g, "top1") for g in ["many", "medium", "few"]} | {("open", "open_reject_rate")}
    got = {(r.split, r.setting, r.group, r.metric) for r in t.itertuples()}
    test_only = {("overall", "collapsed")} | {(g, "ece") for g in ["overall", "many", "medium", "few"]}
    assert got == ({("test", "closed", *k) for k in closed | test_only}
                   | {("val", "closed", *k) for k in closed}
                   | {("test", "open", *k) for k in opened})
    # Values are the ones computed by hand above.
    assert lookup(t, "test", "closed", "many", "top1") == pytest.approx(0.5)
    assert lookup(t, "test", "closed", "overall", "top1") == pytest.approx(7 / 9)
    assert lookup(t, "test", "open", "many", "top1") == pytest.approx(0.375)
    assert lookup(t, "test", "open", "overall", "f_measure") == pytest.approx(0.625)
    assert lookup(t, "test", "open", "open", "open_reject_rate") == pytest.approx(0.5)
    assert lookup(t, "val", "closed", "overall", "top1") == pytest.approx(0.75)
    assert lookup(t, "val", "closed", "many", "top1") == pytest.approx(1.0)
    assert lookup(t, "val", "closed", "medium", "top1") == pytest.approx(0.0)


def test_evaluate_default_threshold_is_0_1(predictions):
    # At t=0.1: the lowest known conf is .2 (nothing rejected -> top1 stays 7/9) and the lowest
    # open conf is .1 == t (kept) -> reject rate 0.
    t = M.evaluate(predictions, CLASS_COUNTS, dataset="toy", method="ce", seed=0)
    assert lookup(t, "test", "open", "open", "open_reject_rate") == 0.0
    assert lookup(t, "test", "open", "overall", "top1") == pytest.approx(7 / 9)


def test_evaluate_without_open_or_val(test_df):
    t = M.evaluate(test_df, CLASS_COUNTS, dataset="toy", method="ce", seed=0)
    assert set(t["setting"]) == {"closed"}
    assert set(t["split"]) == {"test"}
    with pytest.raises(ValueError):
        M.evaluate(test_df, CLASS_COUNTS, dataset="toy", method="ce", seed=0, eval_split="val")


def test_evaluate_top5_row(test_df):
    df = test_df.assign(topk=[np.array([y, 9, 9, 9, 9]) for y in test_df["label"]])
    t = M.evaluate(df, CLASS_COUNTS, dataset="toy", method="ce", seed=0)
    assert lookup(t, "test", "closed", "overall", "top5") == 1.0


# ---------------------------------------------------------------- sweep

def test_threshold_sweep(predictions, test_df, open_df):
    thresholds = [0.0, 0.1, 0.3, 0.5, 0.7, 1.0]
    s = M.threshold_sweep(predictions, CLASS_COUNTS, thresholds)
    assert list(s.columns) == ["threshold", "f_measure", "open_reject_rate", "top1", "many",
                               "medium", "few"]
    assert s["threshold"].tolist() == thresholds
    # Open conf .1 .45 .55 .65: rejected 0, 0 (.1 == t kept), 1, 2, 4, 4 of 4.
    assert s["open_reject_rate"].tolist() == [0.0, 0.0, 0.25, 0.5, 1.0, 1.0]
    assert s["open_reject_rate"].is_monotonic_increasing
    # t=0: nothing rejected -> closed-set accuracy 7/9; t=1 > every conf: all rejected -> 0, F=0.
    assert s["top1"].iloc[0] == pytest.approx(7 / 9)
    assert s["top1"].iloc[-1] == 0.0 and s["f_measure"].iloc[-1] == 0.0
    # The t=0.5 row equals open_set_metrics at 0.5.
    row = s[s["threshold"] == 0.5].iloc[0]
    ref = M.open_set_metrics(test_df, open_df, CLASS_COUNTS, 0.5)
    for k in ["f_measure", "open_reject_rate", "top1", "many", "medium", "few"]:
        assert row[k] == pytest.approx(ref[k])


def test_threshold_sweep_needs_open(test_df):
    with pytest.raises(ValueError):
        M.threshold_sweep(test_df, CLASS_COUNTS, [0.1])


# ---------------------------------------------------------------- OLTR F-measure, before the 2020 fix

def test_f_measure_oltr2019_rejection_is_not_false_positive(test_df, open_df):
    # At t=0.5 (see TEST): TP 5; known wrong: one wrong known class (class 1 -> 0) and 3 rejections.
    # Current code: FP 4 -> F = 0.625 (test_open_set_metrics). Before 29 Jan 2020: FP 1 (rejections
    # not counted), FN 2 -> P = 5/6, R = 5/7, F = 2 (25/42) / (65/42) = 10/13.
    m = M.open_set_metrics(test_df, open_df, CLASS_COUNTS, threshold=0.5)
    assert m["f_measure_oltr2019"] == pytest.approx(10 / 13)
    assert m["f_measure"] == pytest.approx(0.625)
    assert M.f_measure_oltr2019([0, 1, -1], [-1, -1, -1]) == 0.0  # TP 0


# ---------------------------------------------------------------- detection (known = positive)

def test_detection_metrics_by_hand(test_df, open_df):
    # Scores descending, K = known, O = open:
    # .95K .9K .8K .7K .65O .6K .55O .5K .45O .4K .3K .2K .1O
    # AUPR-in (known positive): precision at each known: 1,1,1,1,5/6,6/8,7/10,8/11,9/12, mean over 9.
    # AUPR-out (open positive, by -conf; ascending): .1O .2K .3K .4K .45O .5K .55O .6K .65O:
    # precision at each open 1, 2/5, 3/7, 4/9, mean over 4 = 179/315.
    # FPR@95: k = ceil(.95 * 9) = 9 -> t = .2 (the 9th largest known); open >= .2: 3 of 4.
    m = M.open_set_metrics(test_df, open_df, CLASS_COUNTS, threshold=0.5)
    assert m["aupr_in"] == pytest.approx((4 + 5 / 6 + 6 / 8 + 7 / 10 + 8 / 11 + 9 / 12) / 9)
    assert m["aupr_out"] == pytest.approx(179 / 315)
    assert m["fpr_at_95_tpr"] == pytest.approx(0.75)
    assert m["threshold"] == 0.5


def test_tpr_threshold_keeps_the_share_of_known():
    conf = np.arange(1, 21) / 100  # .01 .. .20
    # k = ceil(.95 * 20) = 19 (not 20: 0.95 * 20 is 19.000000000000004 in floats) -> 19th largest = .02
    assert M.tpr_threshold(conf, 0.95) == pytest.approx(0.02)
    assert M.tpr_threshold(conf, 1.0) == pytest.approx(0.01)
    # open .015 .02 .5: kept at t = .02 are .02 and .5 -> 2/3
    assert M.fpr_at_tpr(conf, [0.015, 0.02, 0.5]) == pytest.approx(2 / 3)
    assert math.isnan(M.fpr_at_tpr(conf, []))


def test_evaluate_val_tpr_rule(test_df, open_df):
    # val conf .9 .8 .6 .3, tpr .75 -> k = 3 -> t = .6. Open conf .1 .45 .55 .65: 3 of 4 rejected.
    val = frame("val", label=[0, 1, 2, 3], pred=[0, 1, 2, 3], confidence=[0.9, 0.8, 0.6, 0.3])
    preds = pd.concat([val, test_df, open_df], ignore_index=True)
    t = M.evaluate(preds, CLASS_COUNTS, dataset="toy", method="ce", seed=0,
                   threshold={"rule": "val_tpr", "tpr": 0.75})
    assert lookup(t, "test", "open", "overall", "threshold") == pytest.approx(0.6)
    assert lookup(t, "test", "open", "open", "open_reject_rate") == pytest.approx(0.75)
    with pytest.raises(ValueError, match="val_tpr rule needs val predictions"):
        M.evaluate(pd.concat([test_df, open_df]), CLASS_COUNTS, dataset="toy", method="ce", seed=0,
                   threshold={"rule": "val_tpr", "tpr": 0.95})


def test_evaluate_far_open_is_its_own_setting(test_df, open_df):
    # The far split holds one open sample of conf .99: accepted at t=.5 -> reject rate 0, and it
    # outranks every known sample -> AUROC 0 (known positive), FPR@95 = 1.
    far = frame("open_far", label=[-1], pred=[2], confidence=[0.99])
    preds = pd.concat([test_df, open_df, far], ignore_index=True)
    t = M.evaluate(preds, CLASS_COUNTS, dataset="toy", method="ce", seed=0, threshold=0.5)
    assert lookup(t, "test", "open_far", "open", "open_reject_rate") == 0.0
    assert lookup(t, "test", "open_far", "overall", "auroc") == 0.0
    assert lookup(t, "test", "open_far", "overall", "fpr_at_95_tpr") == 1.0
    assert lookup(t, "test", "open", "overall", "auroc") == pytest.approx(2 / 3)  # near unchanged


# ---------------------------------------------------------------- calibration

def test_ece_fifteen_equal_width_bins():
    # .62 and .68 fall in bins (9/15, 10/15] and (10/15, 11/15]: ECE = (|1-.62| + |0-.68|) / 2 = .53
    # (10 bins would pool them: |.5 - .65| = .15).
    assert M.expected_calibration_error([0.62, 0.68], [True, False]) == pytest.approx(0.53)
    assert M.expected_calibration_error([0.62, 0.68], [True, False], bins=10) == pytest.approx(0.15)
    # .95 .95 in one bin: |.5 - .95| * 2/4; .55: |1 - .55| / 4; .35: |0 - .35| / 4 -> .425
    assert M.expected_calibration_error([0.95, 0.95, 0.55, 0.35], [1, 0, 1, 0]) == pytest.approx(0.425)
    assert math.isnan(M.expected_calibration_error([], []))


def test_calibration_metrics_per_group(test_df):
    # Every test confidence sits in its own bin (.8 = 12/15 is a right edge: bin (11/15, 12/15]),
    # so ECE = mean |correct - conf|. many (classes 0, 1): (.1 + .2 + .5 + .7 + .6) / 5 = .42;
    # medium: (.3 + .2) / 2 = .25; few: (.6 + .05) / 2 = .325; overall (2.1 + .5 + .65) / 9.
    m = M.calibration_metrics(test_df, CLASS_COUNTS)
    assert m[("many", "ece")] == pytest.approx(0.42)
    assert m[("medium", "ece")] == pytest.approx(0.25)
    assert m[("few", "ece")] == pytest.approx(0.325)
    assert m[("overall", "ece")] == pytest.approx(3.25 / 9)


# ---------------------------------------------------------------- collapse

def test_collapse_reason_healthy_run(predictions):
    assert M.collapse_reason(predictions, 4) is None  # val acc 3/4, several classes predicted


def test_collapse_reason_val_at_chance(predictions):
    val = frame("val", label=[0, 1, 2, 3], pred=[0, 2, 3, 1], confidence=[0.9] * 4)  # acc 1/4 = chance
    reason = M.collapse_reason(pd.concat([val, predictions[predictions["split"] != "val"]]), 4)
    assert reason is not None and "chance" in reason and "0.2500" in reason


def test_collapse_reason_single_predicted_class(predictions):
    test = predictions[predictions["split"] == "test"].assign(pred=2)
    rest = predictions[predictions["split"] != "test"]
    assert M.collapse_reason(pd.concat([rest, test]), 4) == "every test sample is predicted as class 2"


def test_collapse_reason_non_finite_loss(predictions):
    hist = pd.DataFrame({"epoch": [1, 2], "loss": [1.2, float("nan")], "train_acc": [0.5, 0.5],
                         "val_acc": [0.5, 0.5], "lr": [0.1, 0.1], "seconds": [1.0, 1.0]})
    assert M.collapse_reason(predictions, 4, hist) == "training loss is nan at epoch 2"
    # a training-free method's one row (NaN loss and lr) is no collapse
    free = hist.iloc[:1].assign(loss=float("nan"), lr=float("nan"))
    assert M.collapse_reason(predictions, 4, free) is None


def test_evaluate_collapsed_row(predictions):
    ok = M.evaluate(predictions, CLASS_COUNTS, dataset="toy", method="ce", seed=0)
    bad = M.evaluate(predictions, CLASS_COUNTS, dataset="toy", method="ce", seed=0, collapsed="reason")
    assert lookup(ok, "test", "closed", "overall", "collapsed") == 0.0
    assert lookup(bad, "test", "closed", "overall", "collapsed") == 1.0
