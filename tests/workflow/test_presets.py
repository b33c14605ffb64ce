"""The paper presets (config/presets/*.yaml): each is a complete config that Snakemake accepts and
plans, and each MFM, OLTR and KT preset trains end to end at toy size (a test-only overlay shrinks
sizes and epochs; data: Debian's Fashion-MNIST, generated CIFAR pickles, image folders and
ImageNet-LT-style split lists)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from generated_data import write_cifar10, write_image_folder, write_lists
from smk_runs import ROOT, smoke_workflow

PRESETS = sorted((ROOT / "config" / "presets").glob("*.yaml"))


def test_there_are_presets():
    assert len(PRESETS) >= 9, PRESETS


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_preset_plans(preset: Path, tmp_path: Path):
    """A dry run validates the preset against the schema and the method configs and builds the DAG."""
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path),
                           "--configfile", str(preset), "-n", "--cores", "2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "total" in proc.stdout  # the job stats table: the DAG has jobs


# ------------------------------------------------------------------------------ MFM presets at toy size
# A test-only overlay (tests/configs/preset_overlays/<preset>.yaml) is merged over the preset exactly
# as Snakemake merges several config files (snakemake.utils.update_config): it may only select runs,
# shrink sizes and epochs, point a source at generated data and drop pretrained weights (offline).
# Everything else -- backbone, modulated layers, meta set, recipe, transfer edges -- is the preset's,
# so a preset that would crash on real data crashes here.
OVERLAYS = ROOT / "tests" / "configs" / "preset_overlays"
OVERLAY_KEYS = {
    "datasets": {"runs", "source.root", "source.download", "source.image_size", "curation.n_max",
                 "curation.test_per_class"},
    "runs": {"params.epochs", "params.milestones", "params.weights", "params.steps", "params.subsets"},
}
# Top-level keys an overlay may set, and the one value each may take: without pretrained weights a
# ResNet-152's features overflow float16's range, so the toy caches them as float32.
OVERLAY_SCALARS = {"feature_dtype": "float32"}


def _leaves(node: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in node.items():
        key = f"{prefix}{k}"
        out += _leaves(v, key + ".") if isinstance(v, dict) else [key]
    return out


def preset_at_toy_size(name: str) -> dict:
    from snakemake.utils import update_config

    cfg = yaml.safe_load((ROOT / "config" / "presets" / f"{name}.yaml").read_text())
    update_config(cfg, yaml.safe_load((OVERLAYS / f"{name}.yaml").read_text()))
    return cfg


TOY_PRESETS = ["mfm_fmnist", "mfm_cifar_lt", "mfm_mit67", "oltr_imagenet_lt", "oltr_places_lt", "oltr_sweeps",
               "kt_imagenet_lt", "kt_places_lt", "kt_analysis", "mmn_sun397"]


def test_every_paper_preset_has_a_toy_overlay():
    assert sorted(p.stem for p in OVERLAYS.glob("*.yaml")) == sorted(TOY_PRESETS)
    assert {p.stem for p in PRESETS} - set(TOY_PRESETS) == {"fmnist_lt"}  # no paper: its runs are the tests' own


@pytest.mark.parametrize("name", TOY_PRESETS)
def test_toy_overlays_only_shrink(name: str):
    overlay = yaml.safe_load((OVERLAYS / f"{name}.yaml").read_text())
    assert set(overlay) <= set(OVERLAY_KEYS) | set(OVERLAY_SCALARS), overlay.keys()
    for key, value in OVERLAY_SCALARS.items():
        assert overlay.pop(key, value) == value, key
    for section, entries in overlay.items():
        for entry in entries.values():
            assert set(_leaves(entry)) <= OVERLAY_KEYS[section], (section, _leaves(entry))


def _run_toy(name: str, tmp_path: Path, targets: list[str]) -> Path:
    work = tmp_path / "work"
    cfg_path = tmp_path / f"{name}.yaml"
    cfg_path.write_text(yaml.safe_dump(preset_at_toy_size(name), sort_keys=False))
    return smoke_workflow(work, cfg_path, targets=targets)


@pytest.mark.slow
def test_mfm_fmnist_preset_trains_at_toy_size(tmp_path: Path):
    """Table 6 (modified LeNet, BaseModel and MFM on FC1) on Debian's Fashion-MNIST, and the C->F
    transfer: a frozen modulator learned on (generated) CIFAR-10-LT trains Fashion-MNIST-LT."""
    write_cifar10(tmp_path / "work" / "data" / "cifar", per_class_train=200, per_class_test=4)
    work = _run_toy("mfm_fmnist", tmp_path, ["results/tables/fmnist_lt_if1000.csv", "results/tables/fmnist_lt_if200.csv"])
    t1000 = pd.read_csv(work / "results" / "tables" / "fmnist_lt_if1000.csv")
    assert len(t1000) == 2
    assert "77.68" in (work / "results" / "tables" / "fmnist_lt_if1000.md").read_text()  # Table 6, FC1
    samples = pd.read_parquet(work / "results" / "data" / "fmnist_lt_if1000" / "samples.parquet")
    # int(1000 * 1000^(-i/9)) = 1000, 464, 215, 100, 46, 21, 10, 4, 2, 1; meta min(10, n_c)
    meta = samples[samples["split"] == "meta"].groupby("label").size().tolist()
    assert meta == [10] * 7 + [4, 2, 1]
    assert (samples["split"] == "val").sum() == 0
    assert (work / "results" / "train" / "fmnist_lt_if200" / "mfm_transfer" / "seed0" / "model.pt").is_file()
    assert (work / "results" / "train" / "cifar10_lt_if200" / "mfm_r32" / "seed0" / "model.pt").is_file()


@pytest.mark.slow
def test_mfm_cifar_lt_preset_trains_at_toy_size(tmp_path: Path):
    """MFM on layer3 of ResNet-32, CIFAR-10-LT IF 100 with the MW-Net carve-out and Test-1 / Test-2,
    from torchvision's cifar-10-batches-py pickles."""
    write_cifar10(tmp_path / "work" / "data" / "cifar", per_class_train=110, per_class_test=20)
    work = _run_toy("mfm_cifar_lt", tmp_path, ["results/tables/cifar10_lt_if100.csv"])
    table = pd.read_csv(work / "results" / "tables" / "cifar10_lt_if100.csv")
    assert len(table) == 1 and any("Test-1" in c for c in table.columns), table.columns
    assert "80.17" in (work / "results" / "tables" / "cifar10_lt_if100.md").read_text()


@pytest.mark.slow
def test_mfm_mit67_preset_trains_at_toy_size(tmp_path: Path):
    """MFM with the weight-hashing layer on VGG-11's last conv layer, from an ImageFolder tree."""
    write_image_folder(tmp_path / "work" / "data" / "mit67", classes=4, train=24, test=3)
    work = _run_toy("mfm_mit67", tmp_path, ["results/tables/mit67.csv"])
    assert len(pd.read_csv(work / "results" / "tables" / "mit67.csv")) == 1
    assert "75.8" in (work / "results" / "tables" / "mit67.md").read_text()  # Table 4, with WH-layer


@pytest.mark.slow
def test_mmn_sun397_preset_trains_at_toy_size(tmp_path: Path):
    """Frozen ResNet-152 features, cRT-style baselines on them, MetaModelNet's three variants (7
    blocks, a tenth of the paper's bank) and its classifier alone, from an ImageFolder tree with a
    natural long tail (profile none)."""
    write_image_folder(tmp_path / "work" / "data" / "sun397", classes=5, train=[300, 150, 60, 20, 8], test=4)
    work = _run_toy("mmn_sun397", tmp_path, ["results/tables/sun_lt.csv"])
    table = pd.read_csv(work / "results" / "tables" / "sun_lt.csv")
    assert len(table) == 8
    assert "57.34" in (work / "results" / "tables" / "sun_lt.md").read_text()  # Table 2, MetaModelNet
    counts = pd.read_parquet(work / "results" / "data" / "sun_lt" / "class_counts.parquet")
    # profile none: every training image but the 5 validation ones of each class
    assert counts["n_train"].tolist() == [295, 145, 55, 15, 3]


# ------------------------------------------------------------------------------ OLTR and KT presets
# Split lists in the published format under the preset's own file names. Train counts 101 / 21 / 3
# put one class in each of KT's (inclusive) groups: many n >= 100, medium 20 < n < 100, few n <= 20,
# so every transfer threshold k in {0, 20, 100} has source classes, as on the real data.
TOY_COUNTS = (101, 21, 3)


def _lists(root: Path, preset: str, dataset: str) -> None:
    source = yaml.safe_load((ROOT / "config" / "presets" / f"{preset}.yaml").read_text())["datasets"][dataset]["source"]
    write_lists(root, counts=TOY_COUNTS, per_class_eval=3, open_images=4, names=dict(source["lists"]))


def _predictions(work: Path, dataset: str, run: str) -> pd.DataFrame:
    return pd.read_parquet(work / "results" / "predictions" / dataset / run / "seed0.parquet")


def _table(work: Path, dataset: str) -> tuple[pd.DataFrame, str]:
    return (pd.read_csv(work / "results" / "tables" / f"{dataset}.csv"),
            (work / "results" / "tables" / f"{dataset}.md").read_text())


@pytest.mark.slow
def test_oltr_imagenet_lt_preset_trains_at_toy_size(tmp_path: Path):
    """Stage 1 ResNet-10, stage 2 with fc_add and positional modulated attention, and the five
    Fig. 5 ablations (self-attention map only included), from ImageNet-LT-style lists."""
    _lists(tmp_path / "work" / "data" / "imagenet", "oltr_imagenet_lt", "imagenet_lt")
    work = _run_toy("oltr_imagenet_lt", tmp_path, ["results/tables/imagenet_lt.csv"])
    table, md = _table(work, "imagenet_lt")
    assert len(table) == 7
    assert "47.4" in md and "inclusive" in md  # Table 3(a) F-measure; the shot convention in the note
    ckpt = torch.load(work / "results" / "train" / "imagenet_lt" / "oltr" / "seed0" / "model.pt", weights_only=False)
    assert ckpt["model"]["backbone.fc_add.weight"].shape == (512, 512)
    assert ckpt["model"]["attention.ma.fc.weight"].shape == (4, 512 * 2 * 2)  # 64 px -> 2x2 map
    att = torch.load(work / "results" / "train" / "imagenet_lt" / "oltr_self_att" / "seed0" / "model.pt",
                     weights_only=False)["model"]
    assert not any(k.startswith("attention.ma.") for k in att) and "attention.sa.out.weight" in att
    assert (_predictions(work, "imagenet_lt", "oltr")["label"] == -1).sum() == 4  # the open list


@pytest.mark.slow
def test_oltr_places_lt_preset_trains_at_toy_size(tmp_path: Path):
    """ResNet-152 + fc_add 2048 -> 512 in stage 1; stage 2 loads it with the backbone frozen."""
    _lists(tmp_path / "work" / "data" / "places365", "oltr_places_lt", "places_lt")
    work = _run_toy("oltr_places_lt", tmp_path, ["results/tables/places_lt.csv"])
    table, md = _table(work, "places_lt")
    assert len(table) == 2 and "46.4" in md
    train = work / "results" / "train" / "places_lt"
    stage1 = torch.load(train / "plain" / "seed0" / "model.pt", weights_only=False)["model"]
    stage2 = torch.load(train / "oltr" / "seed0" / "model.pt", weights_only=False)["model"]
    assert stage1["backbone.fc_add.weight"].shape == (512, 2048)
    # frozen: the backbone's own weights are stage 1's; fc_add trained on
    key = "backbone.net.layer4.2.conv3.weight"
    assert torch.equal(stage1[key], stage2[key])
    assert not torch.equal(stage1["backbone.fc_add.weight"], stage2["backbone.fc_add.weight"])


@pytest.mark.slow
def test_oltr_sweeps_preset_trains_at_toy_size(tmp_path: Path):
    """Fig. 8a (frozen backbone, four imbalance factors), Fig. 8c and Fig. 3 / 8b on Debian's
    Fashion-MNIST."""
    targets = ["results/figures/oltr/longtailness.png", "results/figures/oltr/open_classes.png",
               "results/tables/fmnist_lt.csv", "results/tables/fmnist_lt_open4.csv"]
    work = _run_toy("oltr_sweeps", tmp_path, targets)
    for t in targets:
        assert (work / t).is_file(), t
    plain = torch.load(work / "results" / "train" / "fmnist_lt" / "plain" / "seed0" / "model.pt", weights_only=False)
    frozen = torch.load(work / "results" / "train" / "fmnist_lt" / "oltr_frozen" / "seed0" / "model.pt",
                        weights_only=False)
    assert torch.equal(plain["model"]["backbone.conv1.weight"], frozen["model"]["backbone.conv1.weight"])


@pytest.mark.slow
def test_kt_imagenet_lt_preset_trains_at_toy_size(tmp_path: Path):
    """ResNeXt-50 cosine backbone, Table 1 / 2 / 6 classifiers and the few-shot-excluded backbone
    (n <= 20 out: the 3-image class) from ImageNet-LT-style lists."""
    _lists(tmp_path / "work" / "data" / "imagenet", "kt_imagenet_lt", "imagenet_lt")
    work = _run_toy("kt_imagenet_lt", tmp_path, ["results/tables/imagenet_lt.csv"])
    table, md = _table(work, "imagenet_lt")
    assert len(table) == 17
    assert "52.9" in md and "54.2" in md  # Table 6's w->p row and Table 1's ensemble
    assert not (_predictions(work, "imagenet_lt", "kt_backbone_nofew")["pred"] == 2).any()


@pytest.mark.slow
def test_kt_places_lt_preset_trains_at_toy_size(tmp_path: Path):
    """Table 3 (ResNet-152) and Table 9 (ResNet-101, sqrt and uniform) from Places-LT-style lists."""
    _lists(tmp_path / "work" / "data" / "places365", "kt_places_lt", "places_lt")
    work = _run_toy("kt_places_lt", tmp_path, ["results/tables/places_lt.csv"])
    table, md = _table(work, "places_lt")
    assert len(table) == 16 and "39.2" in md and "40.6" in md


@pytest.mark.slow
def test_kt_analysis_preset_trains_at_toy_size(tmp_path: Path):
    """Table 4 backbones, Table 6 on the ensemble and Table 2 on Debian's Fashion-MNIST."""
    work = _run_toy("kt_analysis", tmp_path, ["results/tables/fmnist_lt.csv"])
    table, _ = _table(work, "fmnist_lt")
    assert len(table) == 21
