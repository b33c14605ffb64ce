"""The glyphs source: deterministic renders, class-map filter, dedup, the exclusion rule, typeface
splits, the cache, and curation drawing val / meta from the source's own pools.

Runs on real fonts of three small pinned packages (57 faces) plus a few named fonts-aenigma
faces, so each render takes about a second; skipped where the packages are not installed
(`make data` installs them)."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from longtail import glyphs
from longtail.curation import CurationConfig, curate
from longtail.glyphs import (EMNIST_BALANCED, GlyphSettings, Typeface, array_checksum, assign_splits,
                             build_glyphs, case_similarity, character_structure, duplicates, font_info,
                             render_typeface)
from longtail.sources import DataError, SourceData, load_source

SMALL = ("fonts-dejavu-core", "fonts-liberation", "fonts-urw-base35")
AENIGMA = Path("/usr/share/fonts/truetype/aenigma")
needs_small = pytest.mark.skipif(bool(glyphs.missing_packages(SMALL)), reason=f"needs {SMALL} (make data)")
needs_aenigma = pytest.mark.skipif(bool(glyphs.missing_packages(["fonts-aenigma"])),
                                   reason="needs fonts-aenigma (make data)")


def face(package: str, name: str) -> Typeface:
    """A typeface of an installed package by file name."""
    path = next(p for p in glyphs.package_font_files(package) if p.name == name)
    return Typeface(package, str(path))


def settings(tmp: Path, **kw) -> GlyphSettings:
    return GlyphSettings(**{"packages": SMALL, "cache_dir": str(tmp), "workers": 1, "progress": False, **kw})


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[glyphs.GlyphSet, GlyphSettings]:
    s = settings(tmp_path_factory.mktemp("glyph_cache"))
    return build_glyphs(s), s


# ---------------------------------------------------------------------------------- rendering


@needs_small
def test_render_is_deterministic_centred_and_size_normalised() -> None:
    tf = face("fonts-dejavu-core", "DejaVuSans.ttf")
    a = render_typeface(tf, EMNIST_BALANCED)
    b = render_typeface(tf, EMNIST_BALANCED)  # a fresh FreeType face
    assert a.shape == (47, 28, 28) and a.dtype == np.uint8
    assert array_checksum(a) == array_checksum(b)
    for img in a:
        rows, cols = np.nonzero(img > 0)
        h, w = np.ptp(rows) + 1, np.ptp(cols) + 1
        assert 23 <= max(h, w) <= 25  # the longer side spans 28 - 2 * margin (+- a pixel of antialiasing)
        assert abs((rows.min() + rows.max()) / 2 - 13.5) <= 1 and abs((cols.min() + cols.max()) / 2 - 13.5) <= 1
    # aspect kept: "I" is tall and narrow, "W" wide
    i, w = a[EMNIST_BALANCED.index("I")], a[EMNIST_BALANCED.index("W")]
    assert np.count_nonzero(i.any(axis=0)) < 10 and np.count_nonzero(w.any(axis=0)) >= 23
    assert render_typeface(tf, "A8", image_size=32).shape == (2, 32, 32)


@needs_small
def test_parallel_render_and_rebuild_give_the_same_checksum(tmp_path: Path, small_set) -> None:
    gs, _ = small_set
    again = build_glyphs(settings(tmp_path / "fresh", workers=2))  # no cache, two processes
    assert again.provenance["glyphs_sha256"] == gs.provenance["glyphs_sha256"] == array_checksum(gs.images)
    assert np.array_equal(again.splits, gs.splits)


# ---------------------------------------------------------------------------------- filters


@needs_aenigma
def test_cmap_filter() -> None:
    tetri = font_info(Typeface("fonts-aenigma", str(AENIGMA / "tetri.ttf")), EMNIST_BALANCED)
    assert tetri.missing == tuple("abdefghnqrt")  # capitals only in its character map
    unrespon = font_info(Typeface("fonts-aenigma", str(AENIGMA / "unrespon.ttf")), EMNIST_BALANCED)
    assert unrespon.missing == EMNIST_BALANCED
    assert font_info(Typeface("fonts-aenigma", str(AENIGMA / "tetri.ttf")), "AZ09").missing == ()


@needs_small
def test_cmap_counts_and_package_files_only(small_set) -> None:
    gs, _ = small_set
    c = gs.counts
    assert c["typefaces"] == 57  # 35 + 6 + 16 .otf/.ttf faces: the Type 1 copies are not read
    assert c["cover_classes"] == c["rendered"] == 57
    assert all(i.typeface.package in SMALL for i in gs.infos)


def test_duplicates_keeps_the_first() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 256, (2, 3, 8, 8), dtype=np.uint8)
    c = a.copy()
    c[1, 2, 3] ^= 1  # one pixel apart: distinct
    assert duplicates(np.stack([a, b, a.copy(), c, b])).tolist() == [0, 1, 0, 3, 1]


@needs_small
def test_dedup_drops_identical_typefaces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = glyphs.discover_typefaces
    monkeypatch.setattr(glyphs, "discover_typefaces", lambda pk: real(pk) + real(["fonts-dejavu-core"]))
    gs = build_glyphs(settings(tmp_path, packages=SMALL, min_structure=None, max_case_similarity=None,
                               exclude_symbol_fonts=False))
    assert gs.counts["rendered"] == 63 and gs.counts["distinct"] == 57 == gs.counts["kept"]


# ---------------------------------------------------------------------------------- exclusion rule


@needs_small
@needs_aenigma
def test_exclusion_rule_on_real_fonts() -> None:
    text = [Typeface(p, str(f)) for p in ("fonts-dejavu-core", "fonts-liberation")
            for f in glyphs.package_font_files(p)]
    dingbats = face("fonts-urw-base35", "D050000L.otf")
    symbol = face("fonts-urw-base35", "StandardSymbolsPS.otf")
    pattern = [Typeface("fonts-aenigma", str(AENIGMA / n)) for n in ("90stars.ttf", "symmetry.ttf")]
    one_case = Typeface("fonts-aenigma", str(AENIGMA / "upraise.ttf"))
    decorated = Typeface("fonts-aenigma", str(AENIGMA / "outersid.ttf"))  # thin, odd, but letters
    skulls = Typeface("fonts-aenigma", str(AENIGMA / "skullcap.ttf"))  # a skull for every lowercase letter
    rough = Typeface("fonts-aenigma", str(AENIGMA / "turmoil.ttf"))  # rough, but its lowercase are letters
    faces = [*text, dingbats, symbol, *pattern, one_case, decorated, skulls, rough]
    images = np.stack([render_typeface(tf, EMNIST_BALANCED) for tf in faces])
    infos = [font_info(tf, EMNIST_BALANCED) for tf in faces]
    reasons, scores = glyphs.exclusions(images, infos, GlyphSettings())
    why = dict(zip([tf.id for tf in faces], reasons))
    assert why[dingbats.id] == "not_characters"
    assert all(why[p.id] == "not_characters" for p in pattern)
    assert why[symbol.id] == "symbol" and infos[len(text) + 1].symbol
    assert why[one_case.id] == "one_case"
    assert why[skulls.id] == "pictures"
    assert why[decorated.id] == why[rough.id] == "" and all(why[t.id] == "" for t in text)
    s = dict(zip(why, scores["structure"]))
    assert max(s[dingbats.id], *(s[p.id] for p in pattern)) < 0.15 and min(s[t.id] for t in text) > 0.3


def test_character_structure_separates_structure_from_noise() -> None:
    rng = np.random.default_rng(0)
    base = rng.random((12, 16, 16)) > 0.6  # 12 "classes" with a shared similarity structure
    fonts = np.stack([np.roll(base, k, axis=2) for k in range(5)]).astype(np.uint8) * 255
    tiles = np.repeat(rng.integers(0, 256, (1, 1, 16, 16)), 12, axis=1) + rng.integers(0, 3, (1, 12, 16, 16))
    scores = character_structure(np.concatenate([fonts, tiles.astype(np.uint8)]))
    assert scores[:5].min() > 0.8 and abs(scores[5]) < 0.5


def test_case_similarity() -> None:
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (2, 4, 8, 8), dtype=np.uint8)
    classes = ("A", "B", "a", "b")
    imgs[1, 2:] = imgs[1, :2]  # face 1 draws its lowercase as its capitals
    sim = case_similarity(imgs, classes)
    assert sim[1] == pytest.approx(1.0) and sim[0] < 0.5
    assert case_similarity(imgs, ("A", "B", "C", "D")).tolist() == [0, 0]


def test_case_variety() -> None:
    rng = np.random.default_rng(2)
    classes = ("A", "B", "C", "a", "b", "c")
    imgs = rng.integers(0, 256, (2, 6, 8, 8), dtype=np.uint8)
    imgs[1, 4:] = imgs[1, 3]  # face 1 draws one picture in every lowercase slot
    v = glyphs.case_variety(imgs, classes)
    # face 1: lowercase pairwise similarity 1 -> numerator 0; face 0: independent noise on both
    # sides, so the two medians are alike and the ratio is near 1
    assert v[1] == pytest.approx(0.0, abs=1e-6) and 0.7 < v[0] < 1.4
    assert glyphs.case_variety(imgs, ("A", "B", "C", "D", "a", "E")).tolist() == [1, 1]  # one pair only


# ---------------------------------------------------------------------------------- splits


def test_assign_splits_keeps_groups_together_and_is_seeded() -> None:
    groups = [f"fam{i // 3}" for i in range(90)] + [f"solo{i}" for i in range(30)]
    fr = (("train", 0.6), ("val", 0.1), ("meta", 0.1), ("test", 0.2))
    s = assign_splits(groups, fr, seed=0)
    assert np.array_equal(s, assign_splits(groups, fr, seed=0))
    assert not np.array_equal(s, assign_splits(groups, fr, seed=1))
    for g in set(groups):
        assert len({x for x, gg in zip(s, groups) if gg == g}) == 1
    n = {k: int((s == k).sum()) for k, _ in fr}
    assert all(abs(n[k] - f * 120) <= 6 for k, f in fr), n
    with pytest.raises(glyphs.GlyphError, match="no typeface"):
        assign_splits(["a", "a", "b"], fr, seed=0)


@needs_small
def test_split_typefaces_and_families_are_disjoint(small_set) -> None:
    gs, s = small_set
    ids = {k: {gs.infos[i].typeface.id for i in gs.split_indices(k)} for k in ("train", "val", "meta", "test")}
    fams = {k: {gs.infos[i].family for i in gs.split_indices(k)} for k in ids}
    for a, b in itertools.combinations(ids, 2):
        assert not ids[a] & ids[b] and not fams[a] & fams[b], (a, b)
    assert sum(len(v) for v in ids.values()) == gs.counts["kept"] == len(gs.images)
    assert {k: len(v) for k, v in ids.items()} == {k: c["typefaces"] for k, c in gs.counts["splits"].items()}
    # by typeface instead: still disjoint faces, usually more even counts
    by_face = build_glyphs(replace(s, split_by="typeface"))
    assert sum(c["typefaces"] for c in by_face.counts["splits"].values()) == gs.counts["kept"]


@needs_small
def test_exclusions_on_small_packages(small_set) -> None:
    gs, _ = small_set
    excluded = {e["typeface"]: e["reason"] for e in json.loads(gs.provenance["glyphs_excluded"])}
    assert excluded == {"fonts-urw-base35:D050000L.otf#0": "not_characters",
                        "fonts-urw-base35:StandardSymbolsPS.otf#0": "symbol"}


# ---------------------------------------------------------------------------------- cache, source


@needs_small
def test_cache_is_reused_and_keyed_by_settings(small_set, monkeypatch: pytest.MonkeyPatch) -> None:
    gs, s = small_set

    def no_render(*_a, **_k):
        raise AssertionError("rendered again instead of reading the cache")

    monkeypatch.setattr(glyphs, "inspect_all", no_render)
    again = build_glyphs(s)  # same settings: read from the cache
    assert again.provenance == gs.provenance
    # split settings are not part of the key: a new seed reads the same renders
    build_glyphs(replace(s, split_seed=3))
    assert len(list(Path(s.cache_dir).glob("glyphs-*.npz"))) == 1
    with pytest.raises(AssertionError, match="rendered again"):  # a render setting is
        build_glyphs(replace(s, image_size=32))
    k = glyphs.cache_key(s, {"fonts-dejavu-core": "1"})
    assert k != glyphs.cache_key(s, {"fonts-dejavu-core": "2"})  # package versions are in the key


@needs_small
def test_source_splits_labels_and_provenance(small_set) -> None:
    gs, s = small_set
    src = load_source("glyphs", {"packages": list(SMALL), "cache_dir": s.cache_dir, "progress": False})
    assert set(src.images) == {"train", "val", "meta", "test"}
    for split, imgs in src.images.items():
        n = gs.counts["splits"][split]["typefaces"]
        assert imgs.shape == (n * 47, 28, 28)
        assert src.labels[split].tolist() == list(range(47)) * n
    assert src.class_names == EMNIST_BALANCED
    fonts = json.loads(src.provenance["glyphs_fonts"])
    packages = json.loads(src.provenance["glyphs_packages"])
    assert set(packages) == set(SMALL) and len(fonts) == gs.counts["kept"]
    with pytest.raises(DataError, match="unknown option"):
        load_source("glyphs", {"colour": "red"})


@needs_small
def test_missing_package_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="apt-get install fonts-no-such-package"):
        build_glyphs(settings(tmp_path, packages=("fonts-no-such-package",)))


# ---------------------------------------------------------------------------------- curation


def _pooled_source() -> SourceData:
    """3 classes; own val / meta pools as a glyph source has (images are row numbers)."""
    def pool(n_fonts: int) -> np.ndarray:
        return np.tile(np.arange(3), n_fonts)

    labels = {"train": pool(40), "val": pool(6), "meta": pool(5), "test": pool(8)}
    images = {k: np.zeros((len(v), 4, 4), np.uint8) for k, v in labels.items()}
    return SourceData("pooled", ("x", "y", "z"), labels, images=images, provenance={"k": "v"})


def test_curation_draws_val_and_meta_from_the_sources_own_pools() -> None:
    cfg = CurationConfig(profile="exponential", n_max=40, imbalance_factor=10, val_per_class=4, meta_per_class=3)
    samples, counts = curate(_pooled_source(), cfg, seed=0)
    by = samples.groupby("split")["source"].agg(set).to_dict()
    assert by == {"train": {"train"}, "val": {"val"}, "meta": {"meta"}, "test": {"test"}}
    # the whole train pool is left for training: class 0 gets all 40 of its images
    assert counts["n_train"].tolist() == [40, 12, 4] and counts["n_val"].tolist() == [4, 4, 4]
    assert samples.attrs == {"k": "v"}
    # and without own pools, val / meta are still carved out of train
    src = _pooled_source()
    plain = SourceData("plain", src.class_names, {k: src.labels[k] for k in ("train", "test")},
                       images={k: src.images[k] for k in ("train", "test")})
    samples2, _ = curate(plain, CurationConfig(profile="exponential", n_max=30, imbalance_factor=10,
                                               val_per_class=4, meta_per_class=3), seed=0)
    assert set(samples2["source"]) == {"train", "test"}
    with pytest.raises(DataError, match="val pool"):
        curate(_pooled_source(), CurationConfig(n_max=10, val_per_class=7), seed=0)


@needs_small
def test_curated_glyphs_keep_typefaces_apart_and_write_provenance(small_set, tmp_path: Path) -> None:
    gs, s = small_set
    src = load_source("glyphs", {"packages": list(SMALL), "cache_dir": s.cache_dir, "progress": False})
    cfg = CurationConfig(profile="pareto", n_max=20, n_min=2, val_per_class=3, meta_per_class=2,
                         open_classes=("Z",))
    samples, _ = curate(src, cfg, seed=0)

    def faces(split: str) -> set[str]:
        rows = samples[samples["split"] == split]
        return {gs.infos[gs.split_indices(r.source)[r.source_index // 47]].typeface.id for r in rows.itertuples()}

    seen = faces("train") | faces("val") | faces("meta")
    assert faces("test") and faces("open") and not (faces("test") | faces("open")) & seen
    assert not faces("train") & (faces("val") | faces("meta"))
    path = tmp_path / "samples.parquet"
    samples.to_parquet(path, index=False)
    assert pd.read_parquet(path).attrs["glyphs_sha256"] == gs.provenance["glyphs_sha256"]
