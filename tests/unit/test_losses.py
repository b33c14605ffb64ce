"""Core math of the re-weighting / margin losses and the embedding losses, against
hand-computed values; plus the config <-> registry contract and the loss-based methods."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from longtail import losses
from longtail.data import DatasetInfo
from longtail.losses import (
    class_balanced_weights,
    create_loss,
    effective_number,
    inverse_frequency_weights,
    ldam_margins,
    lifted_structure_loss,
    range_loss,
)
from longtail.methods import create_method
from longtail.methods.config import LOSSES, TrainConfig
from longtail.trainer import TrainBatch


def test_config_losses_match_registry():
    assert sorted(LOSSES) == losses.available_losses()


def test_unknown_loss_rejected_by_config_and_registry():
    with pytest.raises(ValueError, match="loss"):
        TrainConfig(loss="bogus")
    with pytest.raises(ValueError, match="unknown loss"):
        create_loss("bogus", [3, 2])
    with pytest.raises(ValueError, match="loss_params"):
        create_loss("focal", [3, 2], gama=2.0)


# --- class weights ---------------------------------------------------------------------------
def test_inverse_frequency_weights_hand_computed():
    # 1/n = [0.01, 0.1, 1], mean 0.37 -> [0.01, 0.1, 1] / 0.37
    np.testing.assert_allclose(inverse_frequency_weights([100, 10, 1]), [0.027027027, 0.27027027, 2.7027027],
                               rtol=1e-6)


def test_effective_number_and_class_balanced_weights():
    # beta = 0.5: E = [1, 1.5, 1.75]; 1/E = [1, 2/3, 4/7] (sum 47/21) -> scaled to sum 3
    np.testing.assert_allclose(effective_number([1, 2, 3], 0.5), [1.0, 1.5, 1.75])
    np.testing.assert_allclose(class_balanced_weights([1, 2, 3], 0.5), [63 / 47, 42 / 47, 36 / 47])
    # beta = 0.9999: E_1 = 1, E_2 = 1 + beta; E_n -> n for n << 1/(1-beta)
    np.testing.assert_allclose(effective_number([1, 2], 0.9999), [1.0, 1.9999], rtol=1e-9)
    w = class_balanced_weights([1000, 10, 1])
    assert w.sum() == pytest.approx(3.0) and w[0] < w[1] < w[2]


def test_ldam_margins_hand_computed():
    # n^-1/4 = [1/2, 1, 1/3] -> scaled so the largest is 0.5
    np.testing.assert_allclose(ldam_margins([16, 1, 81]), [0.25, 0.5, 1 / 6])


# --- losses on logits ------------------------------------------------------------------------
def _batch(seed=0, b=16, c=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, generator=g) * 2, torch.randint(0, c, (b,), generator=g)


def test_ce_and_cost_sensitive_hand_computed():
    logits = torch.zeros(2, 3)  # CE = log 3 for every sample
    target = torch.tensor([0, 2])
    assert create_loss("ce", [100, 10, 1])(logits, target).item() == pytest.approx(math.log(3))
    # equal per-sample losses: the weighted mean over the weights is that loss
    assert create_loss("cost_sensitive", [100, 10, 1])(logits, target).item() == pytest.approx(math.log(3), rel=1e-6)
    loss = create_loss("cost_sensitive", [100, 10, 1], reduction="batch")(logits, target)
    assert loss.item() == pytest.approx((0.027027027 + 2.7027027) / 2 * math.log(3), rel=1e-6)


def test_cost_sensitive_reductions_with_weights_not_summing_to_the_batch_size():
    # counts [100, 10, 1]: w proportional to [0.01, 0.1, 1] (normalised by 0.37 to mean 1).
    # Sample 0: class 0, logits 0 -> l = ln 3; sample 1: class 2, logits (0, 0, ln 2) -> l = ln 2.
    logits, target = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, math.log(2)]]), torch.tensor([0, 2])
    weight_sum = (0.01 * math.log(3) + 1.0 * math.log(2)) / 1.01  # the normalisation cancels
    batch = (0.01 * math.log(3) + 1.0 * math.log(2)) / 0.37 / 2  # w sums to 2.73, not B = 2
    assert create_loss("cost_sensitive", [100, 10, 1])(logits, target).item() == pytest.approx(weight_sum, rel=1e-6)
    assert create_loss("cost_sensitive", [100, 10, 1], reduction="batch")(logits, target).item() == pytest.approx(
        batch, rel=1e-6)


def test_cb_softmax_reductions_by_hand():
    # counts [1, 2], beta 0.5: E = [1, 1.5], 1/E = [1, 2/3] -> weights [1.2, 0.8] (sum C = 2).
    # Batch: (class 0, logits 0) l = ln 2; (class 1, logits (0, ln 3)) l = ln 4/3; (class 1, 0) l = ln 2.
    logits = torch.tensor([[0.0, 0.0], [0.0, math.log(3)], [0.0, 0.0]])
    target = torch.tensor([0, 1, 1])
    total = 1.2 * math.log(2) + 0.8 * math.log(4 / 3) + 0.8 * math.log(2)
    loss = create_loss("cb_softmax", [1, 2], beta=0.5)
    assert loss.reduction == "weight_sum"  # PyTorch's weighted CE, as LDAM-DRW's re-weighting baseline
    assert loss(logits, target).item() == pytest.approx(total / 2.8, rel=1e-6)  # weights sum 2.8, B = 3
    batch = create_loss("cb_softmax", [1, 2], beta=0.5, reduction="batch")(logits, target)
    assert batch.item() == pytest.approx(total / 3, rel=1e-6)  # Cui et al.'s code


def test_bad_reduction_rejected():
    for name in ("cost_sensitive", "cb_softmax", "cb_focal", "ldam"):
        with pytest.raises(ValueError, match="loss_params.reduction must be one of weight_sum, batch"):
            create_loss(name, [3, 2], reduction="mean")


def test_focal_gamma0_is_ce_and_gamma1_hand_computed():
    logits, target = _batch()
    assert create_loss("focal", [5, 5, 5], gamma=0.0)(logits, target).item() == pytest.approx(
        F.cross_entropy(logits, target).item(), rel=1e-6)
    # p_y = 1/4 -> (1 - 1/4) * log 4
    one = create_loss("focal", [5, 5], gamma=1.0)(torch.tensor([[0.0, math.log(3)]]), torch.tensor([0]))
    assert one.item() == pytest.approx(0.75 * math.log(4), rel=1e-6)
    assert create_loss("focal", [5, 5]).gamma == 1.0  # LDAM-DRW's focal baseline


def test_cb_focal_is_weighted_focal():
    logits, target = _batch(1)
    counts = [50, 5, 1]
    w = torch.tensor(class_balanced_weights(counts, 0.9999), dtype=torch.float32)
    p = F.softmax(logits, 1).gather(1, target[:, None]).squeeze(1)
    terms = w[target] * (1 - p) ** 2 * -torch.log(p)
    assert abs(w[target].sum().item() - len(target)) > 1  # the two reductions differ on this batch
    loss = create_loss("cb_focal", counts, gamma=2.0)  # batch: Cui et al.'s sum / number of positives
    assert loss.reduction == "batch"
    assert loss(logits, target).item() == pytest.approx(terms.mean().item(), rel=1e-5)
    ws = create_loss("cb_focal", counts, gamma=2.0, reduction="weight_sum")(logits, target)
    assert ws.item() == pytest.approx((terms.sum() / w[target].sum()).item(), rel=1e-5)


def test_balanced_softmax_is_ce_on_logits_plus_log_prior():
    logits, target = _batch(2)
    counts = np.array([80, 15, 5])
    expected = F.cross_entropy(logits + torch.log(torch.tensor(counts / counts.sum(), dtype=torch.float32)), target)
    assert create_loss("balanced_softmax", counts)(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)


def test_ldam_loss_hand_computed():
    # margins [0.25, 0.5], s = 2: class 0 logit shifted by -0.5 -> log(1 + e^0.5); class 1 by -1
    loss = create_loss("ldam", [16, 1], num_epochs=10, scale=2.0)
    logits = torch.zeros(1, 2)
    assert loss(logits, torch.tensor([0]), 0).item() == pytest.approx(math.log(1 + math.exp(0.5)), rel=1e-6)
    assert loss(logits, torch.tensor([1]), 0).item() == pytest.approx(math.log(1 + math.e), rel=1e-6)


def test_ldam_drw_switches_at_drw_epoch():
    loss = create_loss("ldam", [16, 1], num_epochs=10, scale=2.0, beta=0.5)
    assert loss.drw_epoch == 8  # 80 % of the epochs (160 of 200 in the paper)
    logits, target = torch.zeros(2, 2), torch.tensor([0, 1])
    plain = (math.log(1 + math.exp(0.5)) + math.log(1 + math.e)) / 2
    # beta 0.5: E = [2 (1 - 2^-16), 1] -> weights [0.66667345, 1.33332655]
    weighted = (0.66667345 * math.log(1 + math.exp(0.5)) + 1.33332655 * math.log(1 + math.e)) / 2
    assert loss(logits, target, 7).item() == pytest.approx(plain, rel=1e-6)
    assert loss(logits, target, 8).item() == pytest.approx(weighted, rel=1e-6)
    assert create_loss("ldam", [16, 1], num_epochs=200).drw_epoch == 160
    # weights that do not sum to B: two class-0 samples and one class-1 -> sum 2.66667345, B = 3
    l0, l1 = math.log(1 + math.exp(0.5)), math.log(1 + math.e)
    target3 = torch.tensor([0, 0, 1])
    drw = (2 * 0.66667345 * l0 + 1.33332655 * l1) / 2.66667345  # PyTorch's weighted-CE mean
    assert loss(torch.zeros(3, 2), target3, 8).item() == pytest.approx(drw, rel=1e-6)
    batch = create_loss("ldam", [16, 1], num_epochs=10, scale=2.0, beta=0.5, reduction="batch")
    assert batch(torch.zeros(3, 2), target3, 8).item() == pytest.approx(drw * 2.66667345 / 3, rel=1e-6)
    assert create_loss("ldam", [16, 1], num_epochs=10, drw_epoch=3).drw_epoch == 3


@pytest.mark.parametrize("name", LOSSES)
def test_every_loss_is_finite_and_differentiable(name):
    logits, target = _batch(3, c=4)
    logits.requires_grad_(True)
    loss = create_loss(name, [100, 20, 5, 1], num_epochs=4)(logits, target, 3)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss) and torch.isfinite(logits.grad).all()


# --- embedding losses ------------------------------------------------------------------------
def test_range_loss_hand_computed():
    emb = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0],  # class 0: ranges 9, 16, 25
                        [10.0, 0.0], [12.0, 0.0],  # class 1: one range, 4
                        [0.0, 10.0]])  # class 2: a single sample, no range
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    intra = 2 / (1 / 25 + 1 / 16) + 4.0  # harmonic mean of the 2 largest ranges, per class
    # centres (1, 4/3), (11, 0), (0, 10): smallest squared distance 1 + (26/3)^2 = 685/9
    inter = 100 - 685 / 9
    assert range_loss(emb, y, k=2, margin=100.0).item() == pytest.approx(intra + inter, rel=1e-5)
    assert range_loss(emb, y, k=2, margin=50.0, alpha=2.0).item() == pytest.approx(2 * intra, rel=1e-5)


def test_lifted_loss_hand_computed_and_zero_when_far_apart():
    emb = torch.tensor([[0.0], [1.0], [3.0]])
    y = torch.tensor([0, 0, 1])
    # J_01 = log(e^(1-3) + e^(1-2)) + 1; loss = J^2 / 2
    expected = (math.log(math.exp(-2) + math.exp(-1)) + 1) ** 2 / 2
    assert lifted_structure_loss(emb, y, margin=1.0).item() == pytest.approx(expected, rel=1e-5)
    far = torch.tensor([[0.0, 0.0], [0.1, 0.0], [50.0, 0.0], [50.0, 0.1]])
    assert lifted_structure_loss(far, torch.tensor([0, 0, 1, 1]), margin=1.0).item() == 0.0
    assert lifted_structure_loss(far, torch.tensor([0, 1, 2, 3])).item() == 0.0  # no positive pair


def test_embedding_losses_have_finite_gradients_with_duplicates():
    emb = torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [0.0, 0.0]], requires_grad=True)
    y = torch.tensor([0, 0, 1, 1])
    (range_loss(emb, y) + lifted_structure_loss(emb, y)).backward()
    assert torch.isfinite(emb.grad).all()


# --- methods built on these losses ------------------------------------------------------------
INFO = DatasetInfo(num_classes=3, in_channels=1, class_counts=(40, 8, 2))


def _images(b=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 1, 28, 28, generator=g), torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2, 0, 1, 2])


def test_ldam_method_uses_fixed_scale_cosine_head():
    method = create_method("ldam", {"epochs": 10})
    model = method.build_model(INFO)
    assert not model.head.scale.requires_grad and model.head.scale.item() == 30.0
    loss_fn = method.create_loss(INFO)
    assert loss_fn.scale == 30.0 and loss_fn.drw_epoch == 8
    x, y = _images()
    logits = model(x)
    assert logits.abs().max() <= 30.0 + 1e-4  # s * cos
    with pytest.raises(ValueError, match="head"):
        create_method("ldam", {"head": "linear"})
    with pytest.raises(ValueError, match="cosine_scale"):
        create_method("ldam", {"loss_params": {"scale": 10}})
    with pytest.raises(ValueError, match="grad_clip"):
        create_method("ldam", {"grad_clip": -1.0})
    assert method.cfg.grad_clip == 1.0


@pytest.mark.parametrize("name,weight_key", [("range_loss", "range_weight"), ("lifted_loss", "lifted_weight")])
def test_embedding_methods_add_the_metric_term(name, weight_key):
    x, y = _images()
    torch.manual_seed(0)
    with_metric = create_method(name, {weight_key: 1.0})
    model = with_metric.build_model(INFO)
    loss_fn = with_metric.create_loss(INFO)
    batch = TrainBatch(x, y, np.arange(len(y)), 0, 0, 0.1, loss_fn)
    total, logits = with_metric.training_loss(model, batch)
    ce = F.cross_entropy(logits, y)
    emb = model.features(x)
    metric = (range_loss(emb, y, 2, 10.0) if name == "range_loss" else lifted_structure_loss(emb, y, 1.0))
    assert metric.item() > 0
    assert total.item() == pytest.approx(ce.item() + metric.item(), rel=1e-5)
    zero = create_method(name, {weight_key: 0.0})
    assert zero.training_loss(model, batch)[0].item() == pytest.approx(ce.item(), rel=1e-6)
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
