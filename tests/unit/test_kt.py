"""Knowledge transfer (KT, CVPR 2022): Eqs. 3-9 on hand-made vectors, the training-free methods on a
hand-made parent, the few-shot-excluded backbone, and the smoke workflow end to end."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from longtail.methods.kt import transfer as K
from longtail.methods import make_config
from longtail.data import DatasetInfo, SplitData
from longtail.methods import create_method
from longtail.methods.frozen import parent_backbone
from longtail.methods.kt.config import excluded_classes
from longtail.models import CosineClassifier, LeNet, LongTailNet
from longtail.trainer import TrainRun

R2 = 1 / math.sqrt(2)


# --- Eq. 3: prototypes --------------------------------------------------------------------------
def test_prototypes_are_means_of_normalised_features():
    # class 0: (3, 4) -> (.6, .8) and (0, 2) -> (0, 1): mean (.3, .9); class 1: (5, 0) -> (1, 0)
    x = torch.tensor([[3.0, 4.0], [0.0, 2.0], [5.0, 0.0]])
    p = K.prototypes(x, torch.tensor([0, 0, 1]), 3)
    assert torch.allclose(p, torch.tensor([[0.3, 0.9], [1.0, 0.0], [0.0, 0.0]]))  # class 2: no samples


# --- Eqs. 4-6: attention restricted to classes with n > k ----------------------------------------
P = torch.tensor([[1.0, 0.0], [0.0, 1.0], [R2, R2]])
W = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])  # norms 2, 3, 1
COUNTS = [100, 30, 5]


def test_attention_masks_classes_with_at_most_k_images_and_rows_sum_to_one():
    alpha = K.attention(P, W, K.source_mask(COUNTS, 30), tau=10.0)
    # only class 0 has n > 30: every row puts all its weight on it
    assert torch.allclose(alpha, torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [1.0, 0, 0]]))
    alpha = K.attention(P, W, K.source_mask(COUNTS, 5), tau=10.0)  # classes 0, 1 (n > 5)
    assert torch.all(alpha[:, 2] == 0)
    assert torch.allclose(alpha.sum(1), torch.ones(3))
    # row 0: cos(p0, w0) = 1, cos(p0, w1) = 0 -> softmax(10, 0)
    e = math.exp(10)
    assert alpha[0, 0].item() == pytest.approx(e / (e + 1))
    # row 2: cos = 1/sqrt2 with both -> uniform over {0, 1}
    assert alpha[2, :2].tolist() == pytest.approx([0.5, 0.5])
    with pytest.raises(ValueError, match="lower k"):
        K.attention(P, W, K.source_mask(COUNTS, 100))


def test_transfer_and_wh_composition():
    alpha = torch.tensor([[0.0, 0, 0], [0.0, 0, 0], [0.5, 0.5, 0.0]])
    w_kt = K.transfer(alpha, W)  # Eq. 4 on normalised w: row 2 = .5 (1, 0) + .5 (0, 1)
    assert torch.allclose(w_kt[2], torch.tensor([0.5, 0.5]))
    wh = K.compose(w_kt, P, W)  # Eq. 7, class 2: (R2, R2) + (R2, R2) + (-1, 0)
    assert torch.allclose(wh[2], torch.tensor([2 * R2 - 1, 2 * R2]))
    whc = K.compose(w_kt, P)  # Eq. 9 drops w_i/|w_i|: (R2, R2) + (R2, R2)
    assert torch.allclose(whc[2], torch.tensor([2 * R2, 2 * R2]))


def test_kt_classifier_end_to_end_on_hand_vectors():
    # k = 5, tau large: p0 -> w0, p1 -> w1, p2 splits evenly between w0 and w1
    wh, alpha = K.kt_classifier(P, W, COUNTS, k=5, tau=50.0)
    assert torch.allclose(wh[2], torch.tensor([2 * R2 - 1, 2 * R2]), atol=1e-6)
    assert torch.allclose(wh[0], torch.tensor([3.0, 0.0]), atol=1e-6)  # (1,0) thrice
    whc, _ = K.kt_classifier(P, W, COUNTS, k=5, tau=50.0, continual=True)
    assert torch.allclose(whc[2], torch.tensor([2 * R2, 2 * R2]), atol=1e-6)
    assert torch.allclose(whc[0], torch.tensor([2.0, 0.0]), atol=1e-6)  # no own w_0
    tail, _ = K.kt_classifier(P, W, COUNTS, k=5, tau=50.0, apply_to="tail")
    assert torch.allclose(tail[:2], torch.tensor([[1.0, 0.0], [0.0, 1.0]]))  # n > k keep w/|w|
    assert torch.allclose(tail[2], wh[2])


def test_attention_directions_swap_queries_and_values():
    # w->p: queries w_i, values p_j. Row 2: w2 = (-1, 0); keys p0 (cos -1), p1 (cos 0) -> mostly p1
    wh, alpha = K.kt_classifier(P, W, COUNTS, k=5, tau=50.0, direction="w->p")
    assert alpha[2, 1].item() > 0.99
    assert torch.allclose(wh[2], torch.tensor([R2, 1 + R2]) + torch.tensor([-1.0, 0.0]), atol=1e-5)
    _, a_pp = K.kt_classifier(P, W, COUNTS, k=5, tau=10.0, direction="p->p")
    assert torch.allclose(a_pp, K.attention(P, P, K.source_mask(COUNTS, 5), 10.0))
    with pytest.raises(ValueError, match="attention direction"):
        K.kt_classifier(P, W, COUNTS, k=5, direction="x->y")


# --- Eq. 8: the ensemble --------------------------------------------------------------------------
def test_log_mean_softmax_is_the_mean_of_member_softmaxes():
    logits = torch.tensor([[[2.0, 0.0, -1.0]], [[0.0, 3.0, 0.0]]])  # (K=2, B=1, C=3)
    mean = (torch.softmax(logits[0], 1) + torch.softmax(logits[1], 1)) / 2
    assert torch.allclose(torch.softmax(K.log_mean_softmax(logits), 1), mean, atol=1e-6)
    assert torch.allclose(K.log_mean_softmax(logits).exp(), mean, atol=1e-6)


# --- the methods: training-free, on a hand-made parent -------------------------------------------
def _parent(num_classes: int = 3) -> tuple[dict, DatasetInfo]:
    torch.manual_seed(0)
    net = LongTailNet(LeNet(1), CosineClassifier(128, num_classes, 16.0))
    with torch.no_grad():
        net.head.scale.fill_(12.5)
    info = DatasetInfo(num_classes, 1, (40, 10, 3))
    cfg = make_config("plain", {"head": "cosine", "sampler": "sqrt"}).to_dict()
    return {"model": net.state_dict(), "config": cfg, "info": info.to_dict(), "method": "plain"}, info


def _run(info: DatasetInfo, feats: np.ndarray, labels: np.ndarray) -> TrainRun:
    empty = SplitData(torch.zeros(0, 1, 28, 28, dtype=torch.uint8), torch.zeros(0, dtype=torch.long),
                      np.array([]), "train")
    return TrainRun(empty, empty, info, None, 0, Path("/nonexistent"), "fp",
                    parent_features={"train": (feats, labels, np.arange(len(labels)).astype(str))})


@pytest.mark.parametrize("params,members", [
    ({"classifier": "prototypes"}, 1), ({"classifier": "proto_classifier"}, 1), ({"classifier": "wh", "k": 5}, 1),
    ({"classifier": "ensemble", "ks": [0, 5, 20]}, 3), ({"classifier": "continual", "ks": [5, 20]}, 3),
])
def test_kt_classifiers_are_training_free_and_build_the_head(params, members):
    parent, info = _parent()
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [40, 10, 3])
    feats = rng.random((len(labels), 128)).astype(np.float32)
    method = create_method("kt", params)
    model = method.build_model(info)
    method.init_model(model, parent)
    history = method.fit(model, _run(info, feats, labels))
    assert len(history) == 0  # no epochs
    state = model.state_dict()
    for key, v in parent["model"].items():
        if key.startswith("backbone."):
            assert torch.equal(state[key], v), key  # backbone untouched
    assert not any(p.requires_grad for p in model.parameters())  # nothing to optimise
    assert method.cfg.backbone == "lenet"  # resolved from the parent
    head = model.head
    assert head.weight.shape == (members, 3, 128)
    assert head.scale.item() == pytest.approx(12.5)  # the parent's learned scale
    p = K.prototypes(torch.from_numpy(feats), torch.from_numpy(labels), 3)
    assert torch.allclose(head.prototypes, p)
    w = parent["model"]["head.weight"]
    name = params["classifier"]
    if name == "prototypes":
        assert torch.allclose(head.weight[0], p)
    if name == "proto_classifier":  # Eq. 7 without the transfer term
        assert torch.allclose(head.weight[0], F.normalize(p, dim=1) + F.normalize(w, dim=1))
    if name == "wh":
        expect, _ = K.kt_classifier(p, w, [40, 10, 3], 5, 10.0)
        assert torch.allclose(head.weight[0], expect, atol=1e-6)
        assert head.ks.tolist() == [5]
    if name == "ensemble":  # members w_h(0), w_h(5), w_h(20)
        expect, _ = K.kt_classifier(p, w, [40, 10, 3], 5, 10.0)
        assert torch.allclose(head.weight[1], expect, atol=1e-6)
        assert head.ks.tolist() == [0, 5, 20]
    if name == "continual":  # members: prototypes, w_hc(5), w_hc(20)
        expect, _ = K.kt_classifier(p, w, [40, 10, 3], 20, 10.0, continual=True)
        assert torch.allclose(head.weight[2], expect, atol=1e-6)
        assert head.ks.tolist() == [-1, 5, 20]
    # the saved dict rebuilds the same network (what the infer rule does)
    again = create_method("kt", method.cfg.to_dict()).build_model(info)
    again.load_state_dict(model.state_dict())
    x = torch.randn(4, 1, 28, 28)
    assert torch.allclose(again(x), model(x))
    if members > 1:  # ensemble forward = log of the mean of member softmaxes (Eq. 8)
        f = model.features(x)
        probs = torch.stack([torch.softmax(K.cosine_logits(f, head.weight[m], head.scale), 1)
                             for m in range(members)]).mean(0)
        assert torch.allclose(torch.softmax(model(x), 1), probs, atol=1e-5)


def test_kt_on_masked_parent_takes_no_knowledge_from_unseen_classes():
    parent, info = _parent()
    parent["config"] = make_config("plain_masked", {"head": "cosine", "exclude_fewer_than": 20}).to_dict()
    labels = np.repeat([0, 1, 2], [40, 10, 3])
    feats = np.random.default_rng(1).random((len(labels), 128)).astype(np.float32)
    method = create_method("kt", {"classifier": "ensemble", "ks": [0]})
    model = method.build_model(info)
    method.init_model(model, parent)
    method.fit(model, _run(info, feats, labels))
    assert model.head.counts.tolist() == [40, 0, 0]
    assert torch.all(model.head.attention[0][:, 1:] == 0)  # k = 0 yet classes 1, 2 give nothing


def test_plain_masked_sampler_and_logits_skip_excluded_classes():
    method = create_method("plain_masked", {"exclude_fewer_than": 20, "head": "cosine"})
    info = DatasetInfo(3, 1, (40, 10, 3))
    model = method.build_model(info)
    labels = np.repeat([0, 1, 2], [40, 10, 3])
    idx = method.create_sampler(labels).indices(0, np.random.default_rng(0))
    assert set(labels[idx]) == {0}
    logits, _ = method.infer(model, torch.randn(2, 1, 28, 28))
    assert torch.all(logits.argmax(1) == 0)
    assert torch.all(torch.softmax(logits, 1)[:, 1:] == 0)


def test_exclude_at_most_is_inclusive_as_the_paper():
    """KT Table 2 removes the few-shot classes, n <= 20: a class with exactly 20 images goes with
    ``exclude_at_most: 20`` but stays with the strict ``exclude_fewer_than: 20``."""
    counts = (100, 21, 20, 19, 5)
    assert excluded_classes(make_config("plain_masked", {"exclude_at_most": 20}).to_dict(), counts) == [2, 3, 4]
    assert excluded_classes(make_config("plain_masked", {"exclude_fewer_than": 20}).to_dict(), counts) == [3, 4]
    assert excluded_classes(make_config("plain").to_dict(), counts) == []
    with pytest.raises(ValueError, match="exclude_at_most"):
        make_config("plain_masked", {"exclude_at_most": -1})


def test_frozen_methods_refuse_a_parent_with_fc_add():
    """A plain parent with an fc_add layer (OLTR's use_fc): a frozen-backbone method's model.pt is
    rebuilt from its own config, which has no fc_add, so training it is refused up front."""
    plain = create_method("plain", {"backbone": "lenet", "head": "cosine", "fc_add_dim": 8})
    info = DatasetInfo(3, 1, (40, 10, 3))
    net = plain.build_model(info)
    assert net.backbone.dim == 8 and net.features(torch.randn(2, 1, 28, 28)).shape == (2, 8)
    parent = {"model": net.state_dict(), "config": plain.cfg.to_dict(), "info": info.to_dict()}
    with pytest.raises(ValueError, match="fc_add"):
        parent_backbone(parent, "lenet")


def test_configs_validate():
    with pytest.raises(ValueError, match="attention"):
        make_config("kt", {"classifier": "wh", "attention": "q->w"})
    with pytest.raises(ValueError, match="tau"):
        make_config("kt", {"classifier": "ensemble", "tau": 0})
    with pytest.raises(ValueError, match="ks"):
        make_config("kt", {"classifier": "continual", "ks": []})
    with pytest.raises(ValueError, match="classifier 'sideways' is unknown"):
        make_config("kt", {"classifier": "sideways"})
    assert make_config("kt", {"classifier": "continual", "ks": [20, 100]}).members == 3
    assert make_config("kt", {"classifier": "continual", "ks": [20], "include_prototypes": False}).members == 1


def test_each_classifier_takes_its_defaults_and_refuses_parameters_it_does_not_read():
    wh = make_config("kt", {"classifier": "wh"})
    assert (wh.k, wh.ks, wh.tau, wh.attention, wh.apply_to) == (20, None, 10.0, "p->w", "all")
    assert make_config("kt").classifier == "ensemble" and make_config("kt").ks == (0, 20, 100)
    cont = make_config("kt", {"classifier": "continual"})
    assert (cont.ks, cont.include_prototypes, cont.members) == ((20, 100), True, 3)
    proto = make_config("kt", {"classifier": "prototypes"})
    assert (proto.tau, proto.k, proto.ks, proto.members) == (None, None, None, 1)
    misplaced = (("prototypes", "tau", 5.0), ("wh", "ks", [0]), ("ensemble", "k", 5),
                 ("ensemble", "include_prototypes", False), ("proto_classifier", "attention", "w->p"))
    for classifier, key, value in misplaced:
        with pytest.raises(ValueError, match=f"{key}: classifier '{classifier}' does not read it"):
            make_config("kt", {"classifier": classifier, key: value})
    # the resolved config (what model.pt records) builds the same config again
    assert make_config("kt", wh.to_dict()) == wh
