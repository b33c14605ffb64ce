"""Sample grid: which training images are picked per class, and the figure's layout and labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from longtail.plots import pick_samples, sample_grid


def samples_table() -> pd.DataFrame:
    # class 0: 6 train rows, class 1: 2 train rows, class 2 only in test, open rows (label -1)
    rows = [("train", 0, "A")] * 6 + [("train", 1, "B")] * 2 + [("test", 2, "C")] * 3 + [("train", -1, "open")] * 2
    return pd.DataFrame({"split": [r[0] for r in rows], "label": [r[1] for r in rows],
                         "class_name": [r[2] for r in rows], "source": "train",
                         "source_index": np.arange(len(rows))})


def test_pick_samples_takes_up_to_n_training_rows_per_known_class_in_label_order() -> None:
    picked = pick_samples(samples_table(), per_class=4, seed=0)
    assert picked["label"].tolist() == [0, 0, 0, 0, 1, 1]  # class 1 has only 2; class 2 no train rows
    assert set(picked.loc[picked["label"] == 0, "source_index"]) <= set(range(6))
    assert picked["source_index"].is_unique
    assert pick_samples(samples_table(), 4, seed=0).equals(picked)  # seeded: the same rows each time


def test_pick_samples_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="per_class must be >= 1"):
        pick_samples(samples_table(), per_class=0)
    with pytest.raises(ValueError, match="no 'meta' rows"):
        pick_samples(samples_table(), per_class=2, split="meta")


def test_sample_grid_lays_out_blocks_with_class_names() -> None:
    images = [np.full((8, 8), 255, np.uint8)] * 6
    labels = np.array([0, 0, 0, 1, 1, 2])
    fig = sample_grid(images, labels, ["A", "B", "C"], per_class=3, title="toy", columns=2)
    axes = fig.axes
    assert len(axes) == 2 * 2 * 3  # 2 rows of 2 blocks, 3 images a block
    titles = [ax.get_title(loc="left") for ax in axes if ax.get_title(loc="left")]
    assert titles == ["A", "B", "C"]
    assert sum(bool(ax.images) for ax in axes) == 6  # one image per picked sample, no more
    # grayscale is drawn inverted (ink dark on white): a full-ink image shows as 0
    assert axes[0].images[0].get_array().max() == 0
    with pytest.raises(ValueError, match="6 images but 5 labels"):
        sample_grid(images, labels[:5], ["A", "B", "C"], per_class=3)
