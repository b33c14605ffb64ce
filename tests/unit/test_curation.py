"""Curation: exact class sizes per profile, seeded determinism, disjoint splits, open set, shots.

Most tests curate a small synthetic source built here (labels only matter to curation); one test
curates the real Fashion-MNIST with config/presets/fmnist_lt.yaml, and the real glyphs with the
default config.yaml.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from longtail.contracts import SAMPLE_COLUMNS, SPLITS
from longtail.curation import CurationConfig, ShotConfig, class_sizes, curate
from longtail.sources import FASHION_MNIST_CLASSES, DataError, SourceData, load_source
from longtail.runtime import source_params

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("c0", "c1", "c2", "c3", "c4", "c5", "c6")


def synthetic_source(train_per_class=(300,) * 7, test_per_class=30) -> SourceData:
    """7 classes, ``train_per_class[c]`` train and ``test_per_class`` test images each, labels
    interleaved (as in a real source, a class's images are scattered over the index range)."""
    rng = np.random.default_rng(123)
    train = rng.permutation(np.repeat(np.arange(len(train_per_class)), train_per_class))
    test = rng.permutation(np.repeat(np.arange(len(train_per_class)), test_per_class))
    images = {"train": np.zeros((len(train), 2, 2), np.uint8), "test": np.zeros((len(test), 2, 2), np.uint8)}
    return SourceData("synthetic", NAMES[: len(train_per_class)], {"train": train, "test": test}, images=images)


def small_cfg(**kw) -> CurationConfig:
    base = dict(profile="exponential", n_max=200, imbalance_factor=20, open_classes=("c5", "c6"),
                val_per_class=10, test_per_class=20, open_per_class=15)
    base.update(kw)
    return CurationConfig.from_dict(base)


# ------------------------------------------------------------------------------ class sizes


def test_exponential_sizes_by_hand():
    # n_i = floor(1000 * 200^(-i/7)); 200^(1/7) = 2.13164 ->
    # 1000/2.13164 = 469.1, /2.13164^2 = 220.1, ^3 103.2, ^4 48.4, ^5 22.7, ^6 10.66, ^7 = 1000/200 = 5.
    # (config.yaml's description said "1000 -> 4" before; the formula gives 5.)
    sizes = class_sizes("exponential", 8, 1000, 200)
    assert sizes.tolist() == [1000, 469, 220, 103, 48, 22, 10, 5]


@pytest.mark.parametrize("n_classes, n_max, imbalance, total", [
    (10, 5000, 100, 12406),   # CIFAR-10-LT, LDAM-DRW's imbalance_cifar.py
    (10, 5000, 50, 13996),
    (100, 500, 100, 10847),   # CIFAR-100-LT
    (100, 500, 50, 12608),
])
def test_exponential_matches_ldam_drw_cifar_sizes(n_classes, n_max, imbalance, total):
    sizes = class_sizes("exponential", n_classes, n_max, imbalance)
    assert sizes.sum() == total
    assert sizes[0] == n_max and sizes[-1] == n_max // imbalance
    assert np.all(np.diff(sizes) <= 0)


def test_exponential_single_class():
    assert class_sizes("exponential", 1, 300, 10).tolist() == [300]


def test_step_sizes():
    # first round(C * fraction) classes keep n_max, the rest n_max / IF
    assert class_sizes("step", 8, 1000, 200).tolist() == [1000] * 4 + [5] * 4
    assert class_sizes("step", 5, 1000, 10, step_fraction=0.4).tolist() == [1000, 1000, 100, 100, 100]


def _groups(sizes: np.ndarray) -> tuple[int, int, int, int]:
    """(total, many n > 100, medium, few n < 20): the strict groups of decoupling / BALMS."""
    return int(sizes.sum()), int((sizes > 100).sum()), int(((sizes >= 20) & (sizes <= 100)).sum()), int((sizes < 20).sum())


def test_pareto_reproduces_imagenet_lt_shape():
    # ImageNet-LT (Liu et al. 2019): 1000 classes, 1280 -> 5 images, 115,846 in all, 385 many /
    # 479 medium / 136 few classes; the profile must land within 5 % of each at alpha = 7.75.
    s = class_sizes("pareto", 1000, 1280, n_min=5, pareto_alpha=7.75)
    assert s[0] == 1280 and s[-1] == 5 and np.all(np.diff(s) <= 0)
    for got, published in zip(_groups(s), (115_846, 385, 479, 136)):
        assert abs(got / published - 1) <= 0.05, (got, published)


def test_pareto_reproduces_places_lt_total():
    # Places-LT: 365 classes, 4980 -> 5 images, 62,500 in all (alpha = 1.88)
    s = class_sizes("pareto", 365, 4980, n_min=5, pareto_alpha=1.88)
    assert s[0] == 4980 and s[-1] == 5
    assert abs(s.sum() / 62_500 - 1) <= 0.05


def test_pareto_alpha_shapes_the_tail_and_is_deterministic():
    # a heavier tail (smaller alpha) puts fewer images in the classes between the two ends
    light, heavy = (class_sizes("pareto", 100, 1000, n_min=5, pareto_alpha=a) for a in (8.0, 2.0))
    assert heavy.sum() < light.sum()
    assert class_sizes("pareto", 100, 1000, n_min=5, pareto_alpha=2.0).tolist() == heavy.tolist()
    # two classes: the rank midpoints 1/4 and 3/4 map onto the two ends exactly
    assert class_sizes("pareto", 2, 300, n_min=5, pareto_alpha=3.0).tolist() == [300, 5]
    # three classes, alpha 1: x = (1/6, 1/2, 5/6)^-1 = 6, 2, 1.2 -> t = 1, 0.8/4.8, 0
    assert class_sizes("pareto", 3, 101, n_min=5, pareto_alpha=1.0).tolist() == [101, 5 + 16, 5]


def test_unknown_profile_raises():
    with pytest.raises(ValueError, match="zipf"):
        class_sizes("zipf", 5, 100, 10)


# ------------------------------------------------------------------------------ curate()


def test_curate_columns_and_counts():
    samples, counts = curate(synthetic_source(), small_cfg(), seed=0)
    assert list(samples.columns) == list(SAMPLE_COLUMNS)
    assert set(samples["split"]) == {"train", "val", "test", "open"}
    # 5 known classes: floor(200 * 20^(-i/4)) = 200, 94 (200/2.1147), 44.7, 21.1, 10
    expected = [200, 94, 44, 21, 10]
    assert class_sizes("exponential", 5, 200, 20).tolist() == expected
    train = samples[samples["split"] == "train"]
    assert train.groupby("label").size().tolist() == expected
    assert list(counts.columns) == ["label", "class_name", "n_train", "n_val", "n_meta", "n_test",
                                    "shot_group", "convention"]
    assert counts["label"].tolist() == [0, 1, 2, 3, 4]
    assert counts["class_name"].tolist() == ["c0", "c1", "c2", "c3", "c4"]  # natural order
    assert counts["n_train"].tolist() == expected
    assert counts["n_val"].tolist() == [10] * 5
    assert counts["n_meta"].tolist() == [0] * 5
    assert counts["n_test"].tolist() == [20] * 5
    assert (samples.loc[samples["split"] == "open"].groupby("class_name").size() == 15).all()
    # every row carries its class's training count and group
    known = samples[samples["label"] >= 0]
    assert (known["train_count"].to_numpy() == np.array(expected)[known["label"].to_numpy()]).all()


def test_curate_is_deterministic_under_a_seed_and_differs_across_seeds():
    src = synthetic_source()
    cfg = small_cfg(class_order="permuted", meta_per_class=3)
    a, ca = curate(src, cfg, seed=7)
    b, cb = curate(src, cfg, seed=7)
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(ca, cb)
    c, _ = curate(src, cfg, seed=8)
    train = {s: set(df.loc[df["split"] == "train", "sample_id"]) for s, df in (("a", a), ("c", c))}
    assert train["a"] != train["c"]


def test_permuted_class_order_is_seeded_and_keeps_the_profile():
    src = synthetic_source()
    orders = {s: tuple(curate(src, small_cfg(class_order="permuted"), seed=s)[1]["class_name"]) for s in range(6)}
    assert all(sorted(o) == ["c0", "c1", "c2", "c3", "c4"] for o in orders.values())
    assert len(set(orders.values())) > 1
    for s in range(6):
        assert curate(src, small_cfg(class_order="permuted"), seed=s)[1]["n_train"].tolist() == [200, 94, 44, 21, 10]


@pytest.mark.parametrize("meta_mode", ["disjoint", "development"])
def test_splits_are_disjoint(meta_mode):
    samples, counts = curate(synthetic_source(), small_cfg(meta_per_class=5, meta_mode=meta_mode), seed=1)
    assert samples["sample_id"].is_unique
    by_split = {s: samples[samples["split"] == s] for s in SPLITS}
    ids = {s: set(df["sample_id"]) for s, df in by_split.items()}
    pairs = {s: set(zip(df["source"], df["source_index"])) for s, df in by_split.items()}
    checked = ["train", "val", "test", "open"] + (["meta"] if meta_mode == "disjoint" else [])
    for i, s in enumerate(checked):
        for t in checked[i + 1:]:
            assert not ids[s] & ids[t], (s, t)
            assert not pairs[s] & pairs[t], (s, t)
    assert len(by_split["meta"]) == 5 * 5
    if meta_mode == "development":
        # development meta set = copies of training images (own sample ids, same source images)
        assert pairs["meta"] <= pairs["train"]
        assert not ids["meta"] & ids["train"]
        assert not pairs["meta"] & (pairs["val"] | pairs["test"] | pairs["open"])
        assert counts["n_meta"].tolist() == [5] * 5
    else:
        assert counts["n_meta"].tolist() == [5] * 5


def test_development_meta_is_capped_by_class_size():
    # the tail class has 10 training images, so it can lend at most 10 to the development set
    samples, counts = curate(synthetic_source(), small_cfg(meta_per_class=12, meta_mode="development"), seed=0)
    assert counts["n_meta"].tolist() == [12, 12, 12, 12, 10]


def test_open_classes_absent_from_training_splits():
    samples, _ = curate(synthetic_source(), small_cfg(meta_per_class=2), seed=0)
    closed = samples[samples["split"].isin(["train", "val", "meta", "test"])]
    assert not set(closed["class_name"]) & {"c5", "c6"}
    assert (closed["label"] >= 0).all()
    opened = samples[samples["split"] == "open"]
    assert set(opened["class_name"]) == {"c5", "c6"}
    assert (opened["label"] == -1).all()
    assert (opened["shot_group"] == "open").all() and (opened["train_count"] == 0).all()
    assert (opened["source"] == "test").all()
    # open images are test images of the open classes
    src = synthetic_source()
    assert set(src.labels["test"][opened["source_index"].to_numpy()]) == {5, 6}


def test_labels_follow_source_classes():
    """Every row's pixels belong to the class its label names (relabelling is consistent)."""
    src = synthetic_source()
    samples, _ = curate(src, small_cfg(class_order="permuted"), seed=4)
    for (source, cname), grp in samples.groupby(["source", "class_name"]):
        orig = src.labels[source][grp["source_index"].to_numpy()]
        assert set(orig) == {NAMES.index(cname)}


def test_shot_groups_strict_convention():
    # profile "none" keeps each class's pool minus val: 121-20=101, 120-20=100, 40-20=20, 39-20=19
    src = synthetic_source(train_per_class=(121, 120, 40, 39), test_per_class=5)
    cfg = CurationConfig.from_dict(dict(profile="none", val_per_class=20))
    samples, counts = curate(src, cfg, seed=0)
    assert counts["n_train"].tolist() == [101, 100, 20, 19]
    assert counts["shot_group"].tolist() == ["many", "medium", "medium", "few"]
    assert set(counts["convention"]) == {"strict: many n > 100, medium 20 <= n <= 100, few n < 20"}
    groups = samples.groupby("label")["shot_group"].unique()
    assert [list(g) for g in groups] == [["many"], ["medium"], ["medium"], ["few"]]
    # thresholds come from config
    cfg2 = CurationConfig.from_dict(dict(profile="none", val_per_class=20, shots={"many": 99, "few": 21}))
    assert curate(src, cfg2, seed=0)[1]["shot_group"].tolist() == ["many", "many", "few", "few"]


def test_shot_groups_inclusive_convention_moves_the_boundary_classes():
    # OLTR's / KT's code: many n >= 100, few n <= 20; the classes of exactly 100 and 20 images move
    src = synthetic_source(train_per_class=(121, 120, 40, 39), test_per_class=5)
    cfg = CurationConfig.from_dict(dict(profile="none", val_per_class=20,
                                        shots={"many": 100, "few": 20, "convention": "inclusive"}))
    _, counts = curate(src, cfg, seed=0)
    assert counts["n_train"].tolist() == [101, 100, 20, 19]
    assert counts["shot_group"].tolist() == ["many", "many", "few", "few"]
    assert set(counts["convention"]) == {"inclusive: many n >= 100, medium 20 < n < 100, few n <= 20"}
    with pytest.raises(ValueError, match="shots.convention: 'loose'"):
        ShotConfig(convention="loose")


def test_shot_config_boundaries():
    s = ShotConfig()
    assert [s.group(n) for n in (101, 100, 20, 19)] == ["many", "medium", "medium", "few"]


def test_too_small_class_pool_raises_data_error():
    src = synthetic_source(train_per_class=(300, 300, 300, 300, 300, 50, 50))
    # c0 needs 10 val + 400 train but has 300 images
    with pytest.raises(DataError, match="c0"):
        curate(src, small_cfg(n_max=400, open_classes=()), seed=0)
    # step: c0..c4 get 280 (+20 reserved = 300, fits); c5 with 50 images cannot give
    # 10 val + 10 meta + int(280 / 7.5) = 37 train
    with pytest.raises(DataError, match="c5"):
        curate(src, CurationConfig.from_dict(dict(profile="step", n_max=280, imbalance_factor=7.5,
                                                  step_fraction=0.7, val_per_class=10, meta_per_class=10)))


def test_unknown_open_class_raises_data_error():
    with pytest.raises(DataError, match="nope"):
        curate(synthetic_source(), small_cfg(open_classes=("nope",)), seed=0)


def test_known_classes_subset():
    samples, counts = curate(synthetic_source(), small_cfg(known_classes=("c3", "c1", "c0"), open_classes=("c6",)))
    assert counts["class_name"].tolist() == ["c3", "c1", "c0"]  # natural order = the order listed
    assert set(samples["class_name"]) == {"c0", "c1", "c3", "c6"}  # c2, c4, c5 unused


# ------------------------------------------------------------------------------ real data


def test_default_config_on_real_fashion_mnist():
    """The Fashion-MNIST-LT experiment on the real Fashion-MNIST: exact sizes and shot groups."""
    config = yaml.safe_load((ROOT / "config" / "presets" / "fmnist_lt.yaml").read_text())
    ds = config["datasets"]["fmnist_lt"]
    try:
        source = load_source(ds["source"]["name"], {k: v for k, v in ds["source"].items() if k != "name"})
    except DataError as exc:
        pytest.skip(f"Fashion-MNIST not installed: {exc}")
    cur = dict(ds["curation"])
    seed = cur.pop("seed", 0)
    cur.setdefault("shots", config.get("shots", {}))
    samples, counts = curate(source, CurationConfig.from_dict(cur), seed=seed)
    assert counts["class_name"].tolist() == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                             "Sandal", "Shirt", "Sneaker"]
    assert counts["n_train"].tolist() == [1000, 469, 220, 103, 48, 22, 10, 5]
    assert counts["n_val"].tolist() == [20] * 8
    assert counts["n_test"].tolist() == [500] * 8
    assert counts["shot_group"].tolist() == ["many"] * 4 + ["medium"] * 2 + ["few"] * 2
    opened = samples[samples["split"] == "open"]
    assert len(opened) == 1000 and set(opened["class_name"]) == {"Bag", "Ankle boot"}
    sizes = {"open": 1000, "test": 4000, "train": 1877, "val": 160}
    k = cur.get("meta_per_class", 0)
    if k:  # development copies (capped by class size) or a disjoint set of k per class
        dev = cur.get("meta_mode", "disjoint") == "development"
        sizes["meta"] = sum(min(k, n) for n in counts["n_train"]) if dev else 8 * k
    # MFM appendix C.1 subsets of the 500-per-class test split at test imbalance 10:
    # floor(500 * 10^(-i/7)) = 500, 359, 258, 186, 134, 96, 69, 50 (sum 1652); Test-1 reverses them
    # and flattens the first 8 // 2 = 4 classes to 50: 4 * 50 + 186 + 258 + 359 + 500 = 1503.
    if "reversed" in cur.get("imbalanced_tests", []):
        sizes["test_reversed"] = 1503
        assert counts["n_test_reversed"].tolist() == [50, 50, 50, 50, 186, 258, 359, 500]
    if "permuted" in cur.get("imbalanced_tests", []):
        sizes["test_permuted"] = 1652
    assert samples.groupby("split").size().to_dict() == sizes
    # pixels of the curated rows carry the class the row names
    for source_split, grp in samples.groupby("source"):
        orig = source.labels[source_split][grp["source_index"].to_numpy()]
        assert (np.array(source.class_names)[orig] == grp["class_name"].to_numpy()).all()


def test_default_config_on_real_glyphs():
    """The default experiment (config.yaml) on the real rendered glyphs: LDAM-DRW's exponential
    formula n_i = floor(300 * 22^(-i/43)) over 44 known classes, ImageNet-LT-like group counts."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    (name, ds), = config["datasets"].items()
    try:
        source = load_source(ds["source"]["name"], {**{k: v for k, v in ds["source"].items() if k != "name"},
                                                    "progress": False})
    except DataError as exc:
        pytest.skip(f"glyph fonts not installed: {exc}")
    cur = dict(ds["curation"])
    seed = cur.pop("seed", 0)
    cur.setdefault("shots", config.get("shots", {}))
    cfg = CurationConfig.from_dict(cur)
    far = [load_source(*source_params(entry.source)) for entry in cfg.far_open]
    samples, counts = curate(source, cfg, seed=seed, far_sources=far)
    expected = [int(np.floor(300 * 22 ** (-i / 43) + 1e-9)) for i in range(44)]
    assert counts["n_train"].tolist() == expected and sum(expected) == 4122
    assert expected[0] == 300 and expected[-1] == 13
    groups = counts["shot_group"].value_counts().to_dict()
    assert groups == {"many": 16, "medium": 22, "few": 6}  # ImageNet-LT: 38.5 / 47.9 / 13.6 % of 44 = 17 / 21 / 6
    assert counts["n_val"].tolist() == [20] * 44 and counts["n_test"].tolist() == [100] * 44
    opened = samples[samples["split"] == "open"]
    assert len(opened) == 300 and set(opened["class_name"]) == {"X", "Y", "Z"}
    assert (samples["split"] == "meta").sum() == 440  # 10 development copies per class, all classes >= 13
    far = samples[samples["split"] == "open_far"]  # 30 Fashion-MNIST test images per class
    assert len(far) == 300 and (far["label"] == -1).all()
    assert far["class_name"].value_counts().to_dict() == {f"fashion_mnist:{c}": 30 for c in FASHION_MNIST_CLASSES}


# ------------------------------------------------------------------------------ far open set


def far_source() -> SourceData:
    """3 classes a, b, c; test labels [0, 0, 1, 1, 2, 2]; RGB 2x2 images, pixel (100, 200, 50)."""
    test = np.array([0, 0, 1, 1, 2, 2])
    img = np.tile(np.array([100, 200, 50], np.uint8), (6, 2, 2, 1))
    return SourceData("far", ("a", "b", "c"), {"test": test}, images={"test": img}, provenance={"source_root": "/x"})


def test_far_open_rows_and_metadata():
    from longtail.curation import far_open_entries

    cfg = small_cfg(far_open=[{"source": {"name": "fashion_mnist"}, "classes": ["b"], "per_class": 1},
                              {"source": {"name": "fashion_mnist"}, "n": 3}])
    samples, counts = curate(synthetic_source(), cfg, seed=0, far_sources=[far_source(), far_source()])
    far = samples[samples["split"] == "open_far"]
    # entry 0: one of class b's indices {2, 3}; entry 1: 3 of the 6 indices, sorted
    first, second = far[far["source"] == "far0-test"], far[far["source"] == "far1-test"]
    assert len(first) == 1 and first["source_index"].iloc[0] in (2, 3) and first["class_name"].iloc[0] == "far:b"
    assert len(second) == 3 and second["source_index"].is_monotonic_increasing
    assert (far["label"] == -1).all() and (far["shot_group"] == "open").all() and (far["train_count"] == 0).all()
    assert far["sample_id"].is_unique and not set(far["sample_id"]) & set(samples.loc[samples["split"] != "open_far",
                                                                                       "sample_id"])
    assert len(counts) == 5  # the far set adds no known class
    assert samples.attrs["far0_source_root"] == "/x"
    assert [e.n for e in far_open_entries(samples)] == [None, 3]
    # seeded: the same seed draws the same rows
    again, _ = curate(synthetic_source(), cfg, seed=0, far_sources=[far_source(), far_source()])
    assert again.equals(samples)


def test_far_open_asking_for_too_many_is_an_error():
    cfg = small_cfg(far_open=[{"source": {"name": "x"}, "per_class": 3}])  # 2 test images per class
    with pytest.raises(DataError, match=r"far_open\[0\]\.per_class: class 'a' of far has 2 test images"):
        curate(synthetic_source(), cfg, far_sources=[far_source()])


def test_far_images_take_the_main_sources_shape_and_channels():
    from longtail.sources import convert_images, with_far_sources

    rgb = far_source().images["test"]
    # ITU-R 601 luma: 0.299 * 100 + 0.587 * 200 + 0.114 * 50 = 153
    grey = convert_images(rgb, (4, 4))
    assert grey.shape == (6, 4, 4) and (grey == 153).all()  # constant image: resize keeps the value
    assert (convert_images(grey, (4, 4, 3)) == 153).all() and convert_images(grey, (4, 4, 3)).shape == (6, 4, 4, 3)
    main = SourceData("main", ("m",), {"train": np.zeros(2, np.int64)}, images={"train": np.zeros((2, 4, 4), np.uint8)},
                      provenance={"source_root": "/m"})
    merged = with_far_sources(main, [(0, "test", far_source())])
    assert merged.images["far0-test"].shape == (6, 4, 4) and merged.images["train"].shape == (2, 4, 4)
    assert merged.provenance == {"source_root": "/m", "far0_source_root": "/x"}


def test_streamed_far_sources_add_paths_and_refuse_mixing():
    from longtail.sources import with_far_sources

    files = SourceData("files", ("x",), {"test": np.array([0, 0])}, paths={"test": np.array(["/a.jpg", "/b.jpg"])})
    main = SourceData("main", ("m",), {"train": np.array([0])}, paths={"train": np.array(["/m.jpg"])})
    merged = with_far_sources(main, [(1, "test", files)])
    assert merged.paths["far1-test"].tolist() == ["/a.jpg", "/b.jpg"] and not merged.in_memory
    with pytest.raises(DataError, match=r"far_open\[0\]: source 'far' is in memory but 'main' is streamed"):
        with_far_sources(main, [(0, "test", far_source())])
