"""The OLTR and KT presets against the authors' OLTR configs (config/ImageNet_LT, config/Places_LT:
the learning rate of each optimiser, frozen weights, fc_add) and the KT paper (appendix A, Tables
2 and 6): the effective per-group learning rates are derived here from the preset's parameters."""

from pathlib import Path

import pytest
import torch
import yaml

from longtail.config_check import validate_config
from longtail.data import DatasetInfo
from longtail.methods import create_method

ROOT = Path(__file__).resolve().parents[2]


def preset(name: str) -> dict:
    return yaml.safe_load((ROOT / "config" / "presets" / f"{name}.yaml").read_text())


def group_lrs(run: dict, num_classes: int = 5) -> dict[str, float]:
    """Effective lr of each named part of the run's model: lr * its param group's lr_scale."""
    method = create_method(run["method"], run["params"])
    info = DatasetInfo(num_classes, 3, (10,) * num_classes, image_size=64)
    cfg = method.cfg
    if run["method"] == "oltr":  # small stand-ins for the real backbones: same groups
        method.cfg = type(cfg)(**{**cfg.to_dict(), "backbone": "resnet10"})
    model = method.build_model(info)
    groups = method.trainable_parameters(model)
    if not isinstance(groups[0], dict):
        groups = [{"params": groups, "lr_scale": 1.0}]
    lr_of = {id(p): cfg.lr * g["lr_scale"] for g in groups for p in g["params"]}
    parts = {"backbone": model.backbone.net.conv1.weight}
    if "fc_add" in model.backbone._modules:
        parts["fc_add"] = model.backbone.fc_add.weight
    if run["method"] == "oltr":
        parts.update(attention=model.attention.ma.fc.weight, classifier=model.classifier.weight,
                     centroids=model.meta.centroids)
    else:
        parts["classifier"] = model.head.weight
    return {k: lr_of.get(id(p), 0.0) for k, p in parts.items()}


@pytest.mark.parametrize("name", ["oltr_imagenet_lt", "oltr_places_lt", "kt_imagenet_lt", "kt_places_lt",
                                  "kt_analysis", "oltr_sweeps"])
def test_presets_validate_with_the_inclusive_shot_convention(name):
    cfg = preset(name)
    validate_config(cfg)
    conventions = [(ds.get("shots") or {}).get("convention") or cfg["shots"].get("convention")
                   for ds in cfg["datasets"].values()]
    assert set(conventions) == {"inclusive"}  # OLTR's / KT's code and paper: many >= 100, few <= 20


def test_oltr_imagenet_lt_learning_rates_follow_the_authors_config():
    runs = preset("oltr_imagenet_lt")["runs"]
    # stage_1.py: feature model 0.1, classifier 0.1
    assert group_lrs(runs["plain"]) == {"backbone": 0.1, "classifier": 0.1}
    # stage_2_meta_embedding.py: feat_model (ResNet-10, fc_add, modulatedatt) 0.01, classifier 0.1,
    # FeatureLoss (centroids) 0.01
    assert group_lrs(runs["oltr"]) == pytest.approx(
        {"backbone": 0.01, "fc_add": 0.01, "attention": 0.01, "classifier": 0.1, "centroids": 0.01})
    p = runs["oltr"]["params"]
    assert (p["fc_add_dim"], p["squash_power"], p["spatial_attention"]) == (512, 1, "positional")
    assert p["centroid_weight"] == 0.01
    assert (p["epochs"], p["milestones"], runs["plain"]["params"]["milestones"]) == (60, [20, 40], [10, 20])


def test_oltr_places_lt_learning_rates_follow_the_authors_config():
    runs = preset("oltr_places_lt")["runs"]
    stage1 = runs["plain"]["params"]
    assert stage1["backbone"] == "resnet152" and stage1["fc_add_dim"] == 512
    # stage_1.py: feature model (ResNet-152 + fc_add) 0.001, classifier 0.1
    assert group_lrs({**runs["plain"], "params": {**stage1, "backbone": "resnet10", "weights": None}}) == \
        pytest.approx({"backbone": 0.001, "fc_add": 0.001, "classifier": 0.1})
    # stage_2_meta_embedding.py: fix=True (only modulatedatt and fc_add train) at 0.0001,
    # classifier 0.01, centroids 0.01
    assert group_lrs(runs["oltr"]) == pytest.approx(
        {"backbone": 0.0, "fc_add": 0.0001, "attention": 0.0001, "classifier": 0.01, "centroids": 0.01})


def test_oltr_fig5_runs_include_the_self_attention_map_only():
    runs = preset("oltr_imagenet_lt")["runs"]
    assert runs["oltr_self_att"]["params"]["attention"] == "self"
    assert runs["oltr_spatial_fmap"]["params"]["attention"] == "spatial_fmap"
    for name in ("oltr_memory", "oltr_selector", "oltr_reach", "oltr_spatial_fmap", "oltr_self_att"):
        same = {k: v for k, v in runs[name]["params"].items()
                if k not in ("attention", "selector", "reachability")}
        assert same == {k: v for k, v in runs["oltr"]["params"].items() if k != "attention"}, name


def test_oltr_fig8a_sweep_freezes_the_backbone():
    cfg = preset("oltr_sweeps")
    longtail_runs = cfg["oltr_figures"]["longtail_runs"]
    stage2 = [r for r in longtail_runs if cfg["runs"][r]["method"] == "oltr"]
    assert stage2 and all(cfg["runs"][r]["params"]["freeze_backbone"] for r in stage2)
    for d in cfg["oltr_figures"]["longtail_datasets"]:
        assert set(stage2) <= set(cfg["datasets"][d]["runs"])


@pytest.mark.parametrize("name", ["kt_imagenet_lt", "kt_analysis"])
def test_kt_table6_ablation_is_on_the_ensemble(name):
    """Table 6's p->w row (63.2 / 52.1 / 36.9 / 54.2) is Table 1's ensemble row: the directions
    are ablated on ensemble(w_h(0), w_h(20), w_h(100))."""
    runs = preset(name)["runs"]
    directions = {r["params"].get("attention", "p->w"): r for r in runs.values() if r["method"] == "kt"
                  and r["params"]["classifier"] == "ensemble" and r["init_from"] == "kt_backbone"}
    assert set(directions) == {"p->w", "w->p", "w->w", "p->p"}
    assert all(r["params"]["ks"] == [0, 20, 100] for r in directions.values())
    assert not any(r["params"].get("attention") for r in runs.values()
                   if r["method"] == "kt" and r["params"]["classifier"] == "wh")


def test_kt_few_shot_excluded_backbone_drops_n_at_most_20():
    for name in ("kt_imagenet_lt", "kt_analysis"):
        nofew = preset(name)["runs"]["kt_backbone_nofew"]
        assert nofew["method"] == "plain_masked" and nofew["params"]["exclude_at_most"] == 20
        assert "exclude_fewer_than" not in nofew["params"]


def test_kt_backbones_follow_appendix_a():
    imagenet = preset("kt_imagenet_lt")["runs"]["kt_backbone"]["params"]
    assert (imagenet["batch_size"], imagenet["lr"]) == (512, 0.2)
    assert (imagenet["epochs"], imagenet["schedule"]) == (90, "cosine")
    places = preset("kt_places_lt")["runs"]
    for run, epochs in (("kt_backbone_r152", 10), ("kt_backbone", 15), ("kt_backbone_uniform", 15)):
        p = places[run]["params"]
        assert p["epochs"] == epochs and p["batch_size"] == 128 and p["head"] == "cosine"
        # encoder 0.001, cosine classifier 0.1
        lrs = group_lrs({**places[run], "params": {**p, "backbone": "resnet10", "weights": None}})
        assert lrs == pytest.approx({"backbone": 0.001, "classifier": 0.1})
    assert places["kt_backbone_uniform"]["params"]["sampler"] == "instance"
    assert places["kt_backbone"]["params"]["sampler"] == "sqrt"


def test_positional_attention_fc_matches_the_authors_7x7_map():
    """At a 224 crop ResNet-10's last map is 7x7: fc_spatial is Linear(512 * 49 -> 49)."""
    run = preset("oltr_imagenet_lt")["runs"]["oltr"]
    method = create_method("oltr", run["params"])
    model = method.build_model(DatasetInfo(5, 3, (10,) * 5, image_size=224))
    assert model.attention.ma.map_size == (7, 7)
    assert tuple(model.attention.ma.fc.weight.shape) == (49, 512 * 49)
    assert isinstance(model.backbone.fc_add, torch.nn.Linear) and model.backbone.fc_add.in_features == 512
