"""The glyphs source's exclusion scores are cached beside the renders: a second load of the same
renders reads them instead of recomputing them, gives the same typefaces, and a cache computed
from other renders is not trusted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from longtail import glyphs
from longtail.glyphs import GlyphSettings, build_glyphs, case_similarity, character_structure, exclusion_scores

SMALL = ("fonts-dejavu-core", "fonts-liberation", "fonts-urw-base35")
pytestmark = pytest.mark.skipif(bool(glyphs.missing_packages(SMALL)), reason=f"needs {SMALL} (make data)")


def refuse(*_args, **_kw):
    raise AssertionError("the exclusion scores were recomputed")


def test_second_load_reads_the_scores_and_keeps_the_same_typefaces(tmp_path: Path, monkeypatch) -> None:
    s = GlyphSettings(packages=SMALL, cache_dir=str(tmp_path), workers=1, progress=False)
    first = build_glyphs(s)
    assert len(list(tmp_path.glob("scores-glyphs-*.npz"))) == 1
    monkeypatch.setattr(glyphs, "character_structure", refuse)
    monkeypatch.setattr(glyphs, "case_similarity", refuse)
    again = build_glyphs(s)
    assert again.provenance == first.provenance  # same kept faces, splits, excluded list and scores
    assert np.array_equal(again.images, first.images)


def test_scores_of_other_renders_are_recomputed(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (5, 4, 12, 12), dtype=np.uint8)
    b = a.copy()
    b[0, 0, 0, 0] ^= 1
    cache = tmp_path / "scores.npz"
    sa = exclusion_scores(a, "ABab", cache)
    sb = exclusion_scores(b, "ABab", cache)  # same file, other renders: not taken from the cache
    np.testing.assert_allclose(sb["structure"], character_structure(b))
    np.testing.assert_allclose(sb["case_similarity"], case_similarity(b, "ABab"))
    assert not np.allclose(sa["structure"], sb["structure"])
    cache.write_bytes(b"truncated")  # unreadable: recomputed, not an error
    np.testing.assert_allclose(exclusion_scores(b, "ABab", cache)["structure"], character_structure(b))
