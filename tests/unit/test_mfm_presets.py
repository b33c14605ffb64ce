"""The MFM presets' data settings against the papers' formulas (counts derived by hand from
n_i = int(n_max * (1/IF)^(i/(C-1))), LDAM-DRW's get_img_num_per_cls), and the parse-time rules
those settings rely on."""

from pathlib import Path

import numpy as np
import yaml

from longtail.config_check import validate_config
from longtail.curation import CurationConfig, curate
from longtail.sources import SourceData

ROOT = Path(__file__).resolve().parents[2]


def preset(name: str) -> dict:
    return yaml.safe_load((ROOT / "config" / "presets" / f"{name}.yaml").read_text())


def test_development_meta_set_may_exceed_the_smallest_class():
    """MFM appendix C.3: 10 development copies per class, the smallest class lending all it has;
    the parse-time check accepts meta_per_class above the smallest class."""
    cfg = preset("mfm_fmnist")
    cur = cfg["datasets"]["fmnist_lt_if1000"]["curation"]
    assert (cur["meta_mode"], cur["meta_per_class"]) == ("development", 10)
    validate_config(cfg)


def test_development_meta_set_takes_min_k_and_class_size():
    """min(meta_per_class, n_c) copies per class."""

    n_per_class = 60
    labels = np.repeat(np.arange(10), n_per_class)
    images = np.zeros((len(labels), 4, 4), dtype=np.uint8)
    source = SourceData("toy", [f"c{i}" for i in range(10)],
                        {"train": labels, "test": np.repeat(np.arange(10), 2)},
                        images={"train": images, "test": np.zeros((20, 4, 4), dtype=np.uint8)})
    cfg = CurationConfig(profile="exponential", n_max=59, imbalance_factor=10, val_per_class=1,
                         meta_per_class=10, meta_mode="development")
    samples, _ = curate(source, cfg, seed=0)
    meta = samples[samples["split"] == "meta"].groupby("label").size().tolist()
    train = samples[samples["split"] == "train"].groupby("label").size().tolist()
    assert meta == [min(10, n) for n in train]
    # int(59 * 0.1^(i/9)) = 59, 45, 35, 27, 21, 16, 12, 9, 7, 5
    assert train == [59, 45, 35, 27, 21, 16, 12, 9, 7, 5]
    assert meta == [10] * 7 + [9, 7, 5]
