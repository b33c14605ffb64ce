"""End to end through the real workflow (Snakemake) on the rendered-font source: a tiny glyph
curation (tests/configs/smoke_glyphs.yaml) reaches the table, with typefaces kept apart by split
and the renders' provenance in the samples table's parquet metadata; the sample grid figure shows
the curated classes' training images."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from smk_runs import smoke_workflow

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SMOKE_GLYPHS = ROOT / "tests" / "configs" / "smoke_glyphs.yaml"
DS = "glyphs_smoke"


@pytest.fixture(scope="module")
def glyph_smoke(tmp_path_factory) -> Path:
    return smoke_workflow(tmp_path_factory.mktemp("glyph_smoke"), SMOKE_GLYPHS, [f"results/tables/{DS}.csv",
                                                                                f"results/figures/{DS}/sample_grid.png"])


def typeface_of(samples: pd.DataFrame, fonts: list[list[str]], n_classes: int) -> pd.Series:
    """The typeface id of each curated row: source split ``s`` holds its typefaces in the order of
    the provenance list, ``n_classes`` rows (one per character) each."""
    by_split: dict[str, list[str]] = {}
    for font_id, _family, _style, split in fonts:
        by_split.setdefault(split, []).append(font_id)
    return pd.Series([by_split[s][i // n_classes] for s, i in zip(samples["source"], samples["source_index"])],
                     index=samples.index)


def test_glyph_curation_keeps_typefaces_apart_and_reaches_the_table(glyph_smoke):
    samples = pd.read_parquet(glyph_smoke / f"results/data/{DS}/samples.parquet")
    fonts = json.loads(samples.attrs["glyphs_fonts"])
    assert len(samples.attrs["glyphs_sha256"]) == 64
    assert json.loads(samples.attrs["glyphs_packages"]).keys() == {"fonts-aenigma"}
    # val and test rows come from the source's own typeface pools, never from training typefaces
    assert set(samples.loc[samples["split"] == "val", "source"]) == {"val"}
    assert set(samples.loc[samples["split"].isin(["test", "open"]), "source"]) == {"test"}
    faces = typeface_of(samples, fonts, n_classes=8)
    seen = {split: set(faces[samples["split"] == split]) for split in ("train", "val", "test", "open")}
    assert seen["train"] and seen["val"] and seen["test"]
    assert not seen["train"] & (seen["val"] | seen["test"] | seen["open"])
    assert not seen["val"] & (seen["test"] | seen["open"])
    # the curated profile: exponential IF 10 from 60 over the 6 known characters, G and H open
    train = samples[samples["split"] == "train"].groupby("class_name").size()
    assert train.to_dict() == {"A": 60, "B": 37, "C": 23, "D": 15, "E": 9, "F": 6}
    assert set(samples.loc[samples["split"] == "open", "class_name"]) == {"G", "H"}
    table = pd.read_csv(glyph_smoke / f"results/tables/{DS}.csv")
    assert table["Run"].tolist() == ["plain"]


def test_sample_grid_is_drawn_from_the_curated_training_images(glyph_smoke):
    from matplotlib.image import imread

    path = glyph_smoke / f"results/figures/{DS}/sample_grid.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = imread(path)
    # 6 known classes x 4 images, 8 blocks a row: one row of glyph tiles on a white page
    assert img.shape[1] > img.shape[0] > 50
    assert (img[..., :3] < 0.5).mean() > 0.01  # dark ink drawn, not an empty canvas
    log = (glyph_smoke / f"results/logs/sample_grid/{DS}.log").read_text()
    assert "Traceback" not in log
