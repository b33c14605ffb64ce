"""The MFM presets' data settings against the papers' formulas (counts derived by hand from
n_i = int(n_max * (1/IF)^(i/(C-1))), LDAM-DRW's get_img_num_per_cls), and the parse-time rules
those settings rely on."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from longtail.config_check import validate_config
from longtail.curation import CurationConfig, class_sizes, curate
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


def ldam_counts(n_max: int, n_classes: int, imbalance: float) -> list[int]:
    """LDAM-DRW's get_img_num_per_cls: int(img_max * (1/IF)^(i/(C-1)))."""
    return [int(n_max * (1.0 / imbalance) ** (i / (n_classes - 1))) for i in range(n_classes)]


# published totals (LDAM-DRW / CB for n_max 5000 / 500; MW-Net's n_max = (50000 - 10 C) / C)
CIFAR_TOTALS = {
    "cifar10_lt_if100_dev": 12406, "cifar10_lt_if50_dev": 13996, "cifar100_lt_if100_dev": 10847,
    "cifar100_lt_if50_dev": 12608,
}


@pytest.mark.parametrize("name", sorted(preset("mfm_cifar_lt")["datasets"]))
def test_cifar_preset_class_sizes_follow_the_papers(name):
    ds = preset("mfm_cifar_lt")["datasets"][name]
    cur, n_classes = ds["curation"], 10 if ds["source"]["name"] == "cifar10" else 100
    carve = cur["meta_mode"] == "disjoint"
    # MW-Net takes 10 per class out first: (50000 - 10 C) / C; LDAM-DRW keeps 50000 / C
    assert cur["n_max"] == ((50000 - 10 * n_classes) // n_classes if carve else 50000 // n_classes)
    assert cur["val_per_class"] == 0  # every image of the largest class trains
    expected = ldam_counts(cur["n_max"], n_classes, cur["imbalance_factor"])
    assert class_sizes("exponential", n_classes, cur["n_max"], cur["imbalance_factor"]).tolist() == expected
    if name in CIFAR_TOTALS:
        assert sum(expected) == CIFAR_TOTALS[name]


def test_cifar_mw_net_split_totals():
    # int(4990 * 0.01^(i/9)), 0.01^(1/9) = 0.59948: 4990, 2991, 1793, 1075, 644, 386, 231, 138, 83, 49
    assert ldam_counts(4990, 10, 100) == [4990, 2991, 1793, 1075, 644, 386, 231, 138, 83, 49]
    assert sum(ldam_counts(4990, 10, 100)) == 12380


def test_fmnist_table6_sizes_are_the_papers():
    """Appendix C.3: IF 1000 from 6000 images, the smallest class 6, 10 meta copies (6 there)."""
    cur = preset("mfm_fmnist")["datasets"]["fmnist_lt_if1000"]["curation"]
    sizes = class_sizes("exponential", 10, cur["n_max"], cur["imbalance_factor"]).tolist()
    # int(6000 * 1000^(-i/9))
    assert sizes == [6000, 2784, 1292, 600, 278, 129, 60, 27, 12, 6]
    assert [min(cur["meta_per_class"], n) for n in sizes] == [10] * 9 + [6]


def test_zero_validation_images_validate():
    """val_per_class 0 is accepted (the paper class sizes need every training image)."""
    validate_config(preset("mfm_cifar_lt"))
    validate_config(preset("mfm_mit67"))


@pytest.mark.parametrize("name", ["mfm_fmnist", "mfm_cifar_lt", "mfm_mit67"])
def test_mfm_runs_name_layers_of_their_backbone(name):
    """Every mfm run modulates modules that exist in its backbone (the default backbone.fc does not
    exist in ResNet-32 or VGG-11)."""
    from longtail.methods.mfm.method import Modulation
    from longtail.models import LongTailNet, create_backbone, create_head

    for run in preset(name)["runs"].values():
        if run["method"] != "mfm":
            continue
        p = run["params"]
        bb = create_backbone(p["backbone"], 1 if p["backbone"].startswith("lenet") else 3)
        Modulation(LongTailNet(bb, create_head("linear", bb.dim, 10)), p["layers"])
