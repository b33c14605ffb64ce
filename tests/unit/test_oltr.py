"""OLTR: meta-embedding math on hand-made tensors, module shapes, the centroid loss,
stage-2 initialisation from stage 1, a short real training, the figure helpers, and the smoke
workflow end to end (tests/configs/smoke_oltr.yaml)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from longtail.data import DatasetInfo, SplitData
from longtail.device import select_device
from longtail.methods import create_method, make_config
from longtail.methods.frozen import class_means
from longtail.methods.oltr.figures import head_tail_classes, open_class_names, open_classes_sweep
from longtail.methods.oltr.modules import (
    ConditionalSpatialAttention,
    MetaEmbedding,
    ModulatedAttention,
    OLTRNet,
    PositionalSpatialAttention,
    attract_loss,
    centroid_loss,
    reachability,
    repel_loss,
    squash,
)
from longtail.trainer import TrainRun

ROOT = Path(__file__).resolve().parents[2]
INFO = DatasetInfo(4, 1, (40, 20, 8, 4), image_size=28)


# --- dynamic meta-embedding math --------------------------------------------------------------
def test_reachability_is_min_distance_to_centroids():
    v = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    c = torch.tensor([[0.0, 1.0], [3.0, 0.0]])
    # v0: distances 1 and 3; v1: sqrt(18) = 4.24 and 4
    assert torch.allclose(reachability(v, c), torch.tensor([1.0, 4.0]))


def test_squash_matches_eq6_by_hand():
    v = torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.003, 0.004]])
    p2, p1 = squash(v, 2), squash(v, 1)
    assert torch.allclose(p2[0], torch.tensor([0.6, 0.8]) * 25 / 26)
    assert torch.allclose(p1[0], torch.tensor([0.6, 0.8]) * 5 / 6)
    assert torch.equal(p2[1], torch.zeros(2))  # no NaN at the origin
    assert p2[2].norm() < 1e-4 and p1[2].norm() < 0.006  # small vectors shrink to ~0
    assert (squash(torch.randn(50, 8) * 100, 2).norm(dim=1) < 1).all()  # big ones stay just below 1


def _hand_meta(**switches) -> MetaEmbedding:
    """D = K = 2; o = (1/2, 1/2) (zero hallucinator), centroids (2,0), (0,2) -> v_memory = (1, 1);
    e = tanh(atanh(0.5)) = 0.5 everywhere (zero selector weight, constant bias)."""
    m = MetaEmbedding(2, 2, reachability_scale=10.0, **switches)
    with torch.no_grad():
        m.centroids.copy_(torch.tensor([[2.0, 0.0], [0.0, 2.0]]))
        m.hallucinator.weight.zero_()
        m.hallucinator.bias.zero_()
        m.selector.weight.zero_()
        m.selector.bias.fill_(math.atanh(0.5))
    return m


@pytest.mark.parametrize("switches, expected", [
    ({}, [25.0, 15.0]),  # (10 / gamma) (v + e * v_memory), gamma = ||(2,1) - (2,0)|| = 1
    ({"selector": False}, [30.0, 20.0]),  # e = 1
    ({"reachability": False}, [2.5, 1.5]),  # scale 1
    ({"memory": False, "selector": False}, [20.0, 10.0]),  # only the calibrated direct feature
])
def test_meta_embedding_eq2_by_hand(switches, expected):
    out = _hand_meta(**switches)(torch.tensor([[2.0, 1.0]]))
    assert torch.allclose(out["meta"], torch.tensor([expected]))
    assert torch.allclose(out["gamma"], torch.tensor([1.0]))
    if switches.get("memory", True):
        assert torch.allclose(out["memory"], torch.tensor([[1.0, 1.0]]))


def test_open_like_samples_get_smaller_meta_norm():
    # reachability: far from every centroid -> small v_meta norm -> squashed towards 0
    m = _hand_meta()
    near, far = m(torch.tensor([[2.0, 0.1]]))["meta"], m(torch.tensor([[9.0, 9.0]]))["meta"]
    assert squash(far).norm() < squash(near).norm()


def test_memory_and_hallucinator_shapes():
    net = OLTRNet(create_method("oltr").build_model(INFO).backbone, 4)
    with torch.no_grad():
        out = net.forward_all(torch.randn(3, 1, 28, 28))
    d = net.backbone.dim
    assert out["coefficients"].shape == (3, 4)
    assert torch.allclose(out["coefficients"].sum(1), torch.ones(3))  # softmax over the K centroids
    assert out["memory"].shape == out["selector"].shape == out["meta"].shape == out["direct"].shape == (3, d)
    assert out["logits"].shape == (3, 4) and net.meta.centroids.shape == (4, d)
    assert (out["selector"].abs() <= 1).all()


@pytest.mark.parametrize("mode", ["modulated", "spatial_fmap", "self"])
@pytest.mark.parametrize("shape", [(2, 8, 5, 5), (3, 16, 7, 3)])
def test_attention_preserves_feature_map_shape(mode, shape):
    att = ModulatedAttention(shape[1], mode)
    f = torch.randn(*shape)
    assert att(f).shape == f.shape
    if mode != "self":
        ma = att.ma(f)
        assert ma.shape == (shape[0], 1, *shape[2:])
        assert torch.allclose(ma.sum(dim=(2, 3)), torch.ones(shape[0], 1))


def test_modulated_attention_starts_as_identity_and_uses_self_attention():
    att = ModulatedAttention(8, "modulated")
    f = torch.randn(2, 8, 5, 5)
    assert torch.equal(att(f), f)  # SA's output conv is zero at init: stage 2 starts at stage 1
    with torch.no_grad():
        att.sa.out.weight.normal_()
    expected = f + att.ma(f) * att.sa(f)  # Eq. 5
    assert torch.allclose(att(f), expected)
    assert not torch.allclose(att(f), f)


# --- the large-margin centroid loss ----------------------------------------------------------
def test_attract_loss_by_hand_and_decreases_towards_own_centroid():
    c = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    y = torch.tensor([0])
    losses = [float(attract_loss(torch.tensor([[x, 0.0]]), y, c)) for x in (4.0, 2.0, 1.0, 0.0)]
    assert losses == [8.0, 2.0, 0.5, 0.0]  # ||f - c||^2 / 2 / B
    # the whole L_LM too: moving a feature onto its own centroid lowers it
    total = [float(centroid_loss(torch.tensor([[x, 0.0]]), y, c, margin=10.0)) for x in (4.0, 2.0, 0.0)]
    assert total[0] > total[1] > total[2]


def test_repel_loss_respects_margin():
    c = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    y = torch.tensor([0])
    # squared distance to the other centroid 9, averaged over B*K = 2 pairs -> 4.5
    assert float(repel_loss(torch.tensor([[0.0, 0.0]]), y, c, margin=10.0)) == pytest.approx(5.5)
    assert float(repel_loss(torch.tensor([[0.0, 0.0]]), y, c, margin=4.5)) == 0.0  # margin reached
    assert float(repel_loss(torch.tensor([[0.0, 0.0]]), y, c, margin=4.0)) == 0.0
    # pushing away from the other centroid lowers it while inside the margin
    assert float(repel_loss(torch.tensor([[-1.0, 0.0]]), y, c, margin=10.0)) < 5.5


def test_centroid_gradient_is_class_averaged_center_loss_update():
    feats = torch.tensor([[2.0, 0.0], [4.0, 0.0], [1.0, 1.0]], requires_grad=True)
    c = torch.zeros(2, 2, requires_grad=True)
    y = torch.tensor([0, 0, 1])
    attract_loss(feats, y, c).backward()
    # dc_j = sum_{n: y_n = j} (c_j - f_n) / (1 + n_j) / B
    assert torch.allclose(c.grad, torch.tensor([[-6.0 / 3 / 3, 0.0], [-1.0 / 2 / 3, -1.0 / 2 / 3]]))
    assert torch.allclose(feats.grad, torch.tensor([[2.0, 0.0], [4.0, 0.0], [1.0, 1.0]]) / 3)


def test_class_means():
    x = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0]])
    m = class_means(x, torch.tensor([0, 0, 2]), 3)
    assert torch.allclose(m, torch.tensor([[2.0, 1.0], [0.0, 0.0], [5.0, 5.0]]))


# --- stage 2 from stage 1 --------------------------------------------------------------------
def _parent() -> dict:
    torch.manual_seed(1)
    plain = create_method("plain", {"backbone": "lenet"})
    model = plain.build_model(INFO)
    return {"model": model.state_dict(), "config": plain.cfg.to_dict(), "method": "plain", "net": model}


def test_stage2_loads_the_stage1_weights_it_was_pointed_at():
    parent = _parent()
    method = create_method("oltr")
    torch.manual_seed(2)
    model = method.build_model(INFO)
    method.init_model(model, parent)
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, parent["model"][f"backbone.{k}"]), k
    assert torch.equal(model.meta.hallucinator.weight, parent["model"]["head.weight"])  # authors' T_hal init
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():  # attention starts as identity: v_direct = the parent's embedding
        assert torch.allclose(model.direct(x), parent["net"].features(x), atol=1e-6)


def test_stage2_refuses_another_backbone():
    parent = _parent()
    method = create_method("oltr", {"backbone": "resnet20"})
    with pytest.raises(ValueError, match="backbone"):
        method.init_model(method.build_model(INFO), parent)


def test_centroids_start_as_class_means_of_parent_train_features():
    method = create_method("oltr")
    model = method.build_model(INFO)
    d = model.backbone.dim
    x = np.arange(8 * d, dtype=np.float32).reshape(8, d)
    y = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    run = SimpleNamespace(parent_features={"train": (x, y, np.arange(8).astype(str))})
    method.init_centroids(model, run)
    assert torch.allclose(model.meta.centroids, torch.from_numpy(x.reshape(4, 2, d).mean(1)))


def _tiny_run(tmp_path: Path, n: int = 48) -> TrainRun:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 4
    imgs = (torch.rand(n, 1, 28, 28, generator=g) * 80 + labels.view(-1, 1, 1, 1) * 40).to(torch.uint8)
    split = SplitData(imgs, labels, np.arange(n).astype(str), "train")
    val = SplitData(imgs[:8], labels[:8], np.arange(8).astype(str), "val")
    return TrainRun(split, val, INFO, select_device("cpu", 1), 0, tmp_path / "ckpt.pt", "fp", progress=False)


@pytest.mark.parametrize("update", ["loss", "fixed"])
def test_short_stage2_training_updates_centroids_as_configured(tmp_path, update):
    parent = _parent()
    method = create_method("oltr", {"epochs": 1, "batch_size": 16, "centroid_update": update})
    model = method.build_model(INFO)
    method.init_model(model, parent)
    run = _tiny_run(tmp_path)
    method.init_centroids(model, run)  # no parent features: the model's own v_direct (= parent's)
    start = model.meta.centroids.detach().clone()
    history = method.fit(model, run)
    assert len(history) == 1 and np.isfinite(history["loss"]).all()
    moved = float((model.meta.centroids.detach() - start).abs().max())
    assert (moved > 0) if update == "loss" else (moved == 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_stage2_trains_single_process_on_gpu(tmp_path):
    """Stage 2 on one GPU with AMP and channels_last: centroids, memory and model on the device."""
    parent = _parent()
    method = create_method("oltr", {"epochs": 1, "batch_size": 16})
    model = method.build_model(INFO)
    method.init_model(model, parent)
    run = dataclasses.replace(_tiny_run(tmp_path), device=select_device("cuda", 1))
    method.init_centroids(model, run)
    history = method.fit(model, run)
    assert np.isfinite(history["loss"]).all()
    assert model.meta.centroids.device.type == "cuda"


def test_param_groups_scale_backbone_and_centroid_lr():
    method = create_method("oltr", {"backbone_lr_scale": 0.1, "centroid_lr_scale": 0.5})
    model = method.build_model(INFO)
    groups = method.trainable_parameters(model)
    assert [g["lr_scale"] for g in groups] == [1.0, 0.1, 0.5]
    assert groups[2]["params"] == [model.meta.centroids]
    n_all = sum(1 for p in model.parameters() if p.requires_grad)
    assert sum(len(g["params"]) for g in groups) == n_all
    # the attention is part of the authors' feature model (feat_model optimiser, lr 0.01 vs 0.1)
    att = {id(p) for p in model.attention.parameters()}
    assert att <= {id(p) for p in groups[1]["params"]}
    assert not att & {id(p) for p in groups[0]["params"]}


def test_frozen_backbone_still_trains_attention_and_fc_add():
    """The authors' ``fix`` freezes the feature model except 'modulatedatt' and 'fc' weights
    (Places-LT stage 2): attention and fc_add stay in the feature-model group."""
    frozen = create_method("oltr", {"freeze_backbone": True, "fc_add_dim": 16, "backbone_lr_scale": 0.01,
                                    "centroid_lr_scale": 1.0})
    model = frozen.build_model(INFO)
    groups = frozen.trainable_parameters(model)
    assert [g["lr_scale"] for g in groups] == [1.0, 0.01, 1.0]
    expected = {id(p) for p in model.attention.parameters()} | {id(p) for p in model.backbone.fc_add.parameters()}
    assert {id(p) for p in groups[1]["params"]} == expected
    assert not any(p.requires_grad for n, p in model.backbone.named_parameters() if not n.startswith("fc_add."))


def test_squash_power_follows_the_authors_code_by_default():
    # CosNorm_Classifier: ||v|| / (1 + ||v||) * v / ||v||; |(3, 4)| = 5 -> length 5/6
    assert make_config("oltr").squash_power == 1
    assert torch.allclose(squash(torch.tensor([[3.0, 4.0]])), torch.tensor([[0.5, 2 / 3]]))
    net = create_method("oltr").build_model(INFO)
    assert net.classifier.power == 1


def test_positional_spatial_attention_by_hand():
    """MA(f) = softmax(fc(flatten(f))) over H*W positions (the authors' fc_spatial)."""
    att = PositionalSpatialAttention(2, (2, 2))
    assert att.fc.in_features == 2 * 2 * 2 and att.fc.out_features == 4
    with torch.no_grad():
        att.fc.weight.zero_()
        att.fc.weight[3, 0] = 1.0  # position 3's score reads the first input value
        att.fc.bias.copy_(torch.log(torch.tensor([1.0, 2.0, 3.0, 4.0])))
    f = torch.zeros(1, 2, 2, 2)
    assert torch.allclose(att(f), torch.tensor([[[[0.1, 0.2], [0.3, 0.4]]]]))
    f[0, 0, 0, 0] = math.log(2.0)  # position 3's weight doubles: 1, 2, 3, 8 over 14
    assert torch.allclose(att(f).flatten(), torch.tensor([1.0, 2.0, 3.0, 8.0]) / 14)
    with pytest.raises(ValueError, match="input_size"):
        att(torch.zeros(1, 2, 3, 3))


def test_positional_attention_is_sized_from_the_input():
    """LeNet on 28x28: conv 5 pad 2, pool, conv 5, pool -> 64 x 5 x 5; on 32x32 -> 6 x 6."""
    model = create_method("oltr").build_model(INFO)
    assert model.attention.ma.map_size == (5, 5) and model.attention.ma.fc.in_features == 64 * 25
    model = create_method("oltr", {"input_size": 32}).build_model(INFO)
    assert model.attention.ma.map_size == (6, 6)
    content = create_method("oltr", {"spatial_attention": "content"}).build_model(INFO)
    assert isinstance(content.attention.ma, ConditionalSpatialAttention)
    with pytest.raises(ValueError, match="input_size"):
        create_method("oltr").build_model(dataclasses.replace(INFO, image_size=0))


def test_fc_add_is_fresh_on_a_parent_without_it_and_loaded_from_one_with_it(tmp_path):
    parent = _parent()  # plain LeNet, no fc_add
    method = create_method("oltr", {"fc_add_dim": 16})
    model = method.build_model(INFO)
    method.init_model(model, parent)
    assert model.backbone.dim == 16 and model.meta.centroids.shape == (4, 16)
    for k, v in model.backbone.state_dict().items():
        if not k.startswith("fc_add."):
            assert torch.equal(v, parent["model"][f"backbone.{k}"]), k
    # the parent's 128-d features are not v_direct: centroids come from the model itself
    d = parent["net"].backbone.dim
    run = dataclasses.replace(_tiny_run(tmp_path), parent_features={
        "train": (np.zeros((4, d), np.float32), np.arange(4), np.arange(4).astype(str))})
    method.init_centroids(model, run)
    x = _tiny_run(tmp_path).train.images.float()
    with torch.no_grad():
        v = model.direct((x / 255 - INFO.mean) / INFO.std)
    assert torch.allclose(model.meta.centroids, class_means(v, torch.arange(48) % 4, 4), atol=1e-4)

    torch.manual_seed(1)  # a stage 1 with fc_add (Places-LT): stage 2 loads it
    plain = create_method("plain", {"backbone": "lenet", "fc_add_dim": 16})
    pnet = plain.build_model(INFO)
    assert pnet.head.weight.shape == (4, 16)
    parent2 = {"model": pnet.state_dict(), "config": plain.cfg.to_dict()}
    model2 = method.build_model(INFO)
    method.init_model(model2, parent2)
    assert torch.equal(model2.backbone.fc_add.weight, pnet.backbone.fc_add.weight)
    assert torch.equal(model2.meta.hallucinator.weight, pnet.head.weight)
    with pytest.raises(ValueError, match="fc_add_dim"):
        other = create_method("oltr")
        other.init_model(other.build_model(INFO), parent2)


def test_plain_backbone_lr_scale_makes_two_groups():
    """OLTR's Places-LT stage 1: feature model at 0.001, classifier at 0.1 -> scale 0.01."""
    method = create_method("plain", {"backbone": "lenet", "lr": 0.1, "backbone_lr_scale": 0.01, "fc_add_dim": 8})
    model = method.build_model(INFO)
    groups = method.trainable_parameters(model)
    assert [g["lr_scale"] for g in groups] == [1.0, 0.01]
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in model.head.parameters()}
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.backbone.parameters()}
    assert any(p is model.backbone.fc_add.weight for p in groups[1]["params"])
    default = create_method("plain")
    assert all(isinstance(p, torch.nn.Parameter) for p in default.trainable_parameters(default.build_model(INFO)))


class Killed(RuntimeError):
    """Stands in for the job being killed."""


def _stage2(tmp_path: Path, update: str, kill_epoch: int | None = None):
    """A 3-epoch stage 2 on the tiny run (checkpoint in ``tmp_path``); dies at the first step of
    ``kill_epoch`` (0-based) when given."""
    parent = _parent()
    method = create_method("oltr", {"epochs": 3, "batch_size": 16, "centroid_update": update})
    if kill_epoch is not None:
        hook = method.training_loss

        def dying(model, batch):
            if batch.epoch == kill_epoch:
                raise Killed
            return hook(model, batch)

        method.training_loss = dying
    torch.manual_seed(3)
    model = method.build_model(INFO)
    method.init_model(model, parent)
    history = method.fit(model, _tiny_run(tmp_path))
    return model, history


@pytest.mark.parametrize("update", ["loss", "ema"])
def test_stage2_killed_after_an_epoch_resumes_to_identical_weights(tmp_path, update):
    """Centroids (their own lr scale, or the EMA after the step) and every weight of a run killed
    in epoch 2 and restarted equal those of an uninterrupted run."""
    ref_model, ref_history = _stage2(tmp_path / "ref", update)
    with pytest.raises(Killed):
        _stage2(tmp_path / "resumed", update, kill_epoch=1)
    saved = torch.load(tmp_path / "resumed" / "ckpt.pt", weights_only=False)
    assert saved["epoch"] == 0
    model, history = _stage2(tmp_path / "resumed", update)
    assert history.drop(columns="selected").iloc[0].to_dict() == saved["history"][0]  # resumed, not redone
    ref, got = ref_model.state_dict(), model.state_dict()
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    assert history["loss"].tolist() == ref_history["loss"].tolist()
    assert history["epoch"].tolist() == [1, 2, 3]


# --- Fig. 5 ablations: parameter sets of config.yaml ---------------------------------------------
FIG5 = [  # run, memory, selector, reachability, attention
    ("oltr_memory", True, False, False, "none"),
    ("oltr_selector", True, True, False, "none"),
    ("oltr_reach", True, True, True, "none"),
    ("oltr", True, True, True, "modulated"),
    ("oltr_spatial_fmap", True, True, True, "spatial_fmap"),
]


@pytest.mark.parametrize("run, memory, selector, reach, attention", FIG5, ids=[r[0] for r in FIG5])
def test_fig5_ablation_runs_of_the_default_config(run, memory, selector, reach, attention):
    spec = yaml.safe_load((ROOT / "config.yaml").read_text())["runs"][run]
    assert spec["method"] == "oltr" and spec["init_from"] == "plain"
    method = create_method(spec["method"], spec.get("params"))
    cfg = method.cfg
    assert (cfg.memory, cfg.selector, cfg.reachability, cfg.attention) == (memory, selector, reach, attention)
    assert method.requires_parent and cfg.sampler == "class_balanced" and dict(cfg.sampler_params) == {"per_class": 4}
    model = method.build_model(INFO)
    assert (model.attention is None) == (attention == "none")


@pytest.mark.parametrize("params, key", [
    ({"head": "linear"}, "head"), ({"attention": "bogus"}, "attention"), ({"squash_power": 3}, "squash_power"),
    ({"memory": False}, "selector"), ({"margin": -1.0}, "margin"), ({"centroid_update": "x"}, "centroid_update"),
])
def test_config_errors_name_the_key(params, key):
    with pytest.raises(ValueError, match=key):
        make_config("oltr", params)


# --- figure helpers --------------------------------------------------------------------------
def test_open_classes_sweep_by_hand():
    # 2 known test samples (one right, one wrong), 3 open samples: Bag (rejected), Bag (accepted), Boot (accepted)
    pred = pd.DataFrame({
        "sample_id": ["t0", "t1", "o0", "o1", "o2"], "split": ["test", "test", "open", "open", "open"],
        "label": [0, 1, -1, -1, -1], "pred": [0, 0, 1, 0, 1], "confidence": [0.9, 0.9, 0.2, 0.9, 0.9]})
    samples = pd.DataFrame({"sample_id": ["t0", "t1", "o0", "o1", "o2"],
                            "split": ["test", "test", "open", "open", "open"],
                            "class_name": ["A", "B", "Bag", "Bag", "Boot"]})
    assert open_class_names(samples) == ["Bag", "Boot"]
    t = open_classes_sweep(pred, samples, ["Bag", "Boot"], threshold=0.5)
    # TP = 1, FP = 1 always; FN = 0, 1, 2 -> F = 2PR/(P+R) with P = 1/2, R = 1, 1/2, 1/3
    f = [2 * 0.5 * r / (0.5 + r) for r in (1.0, 0.5, 1 / 3)]
    assert np.allclose(t["f_measure"], f)
    assert np.isnan(t["open_reject_rate"][0]) and np.allclose(t["open_reject_rate"][1:], [0.5, 1 / 3])


def test_head_tail_classes_default_to_most_and_fewest():
    counts = pd.DataFrame({"label": [0, 1, 2], "n_train": [5, 100, 20], "class_name": list("abc")})
    assert head_tail_classes(counts) == (1, 0)
    assert head_tail_classes(counts, head=2) == (2, 0)
    with pytest.raises(ValueError, match="head_class"):
        head_tail_classes(counts, head=7)
