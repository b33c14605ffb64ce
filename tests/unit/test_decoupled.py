"""Classifier-stage methods on a frozen backbone (cRT, LWS, tau-norm, NCM) and OpenMax as a method:
the core math on hand-made tensors, the frozen-backbone contract, and cRT/LWS through the shared
trainer on cached features (the same head as a hand-written loop; resume after a kill)."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from longtail.methods.decoupled import openmax as om
from longtail.data import DatasetInfo, SplitData
from longtail.device import select_device
from longtail.methods import create_method
from longtail.methods.decoupled.method import (NCMHead, ScaledHead, mean_class_accuracy, select_tau,
                                               tau_normalize)
from longtail.methods.frozen import class_means
from longtail.samplers import create_sampler
from longtail.trainer import TrainRun

ROOT = Path(__file__).resolve().parents[2]
STAGE_METHODS = ("crt", "lws", "tau_norm", "ncm", "openmax")
INFO = DatasetInfo(num_classes=3, in_channels=1, class_counts=(30, 12, 4))
D = 128  # lenet embedding size


def make_parent(head: str = "linear", seed: int = 0) -> tuple[dict, torch.nn.Module]:
    """A plain lenet run's model.pt dict (random weights) and its network."""
    torch.manual_seed(seed)
    method = create_method("plain", {"backbone": "lenet", "head": head})
    model = method.build_model(INFO).eval()
    return {"model": model.state_dict(), "method": "plain", "config": method.cfg.to_dict(),
            "info": INFO.to_dict(), "fingerprint": "parent"}, model


def make_features(seed: int = 0, n_per_class=(30, 12, 4), n_val: int = 5) -> dict:
    """Cached features {split: (X, y, ids)}: separable class clusters in the first 3 dims."""
    rng = np.random.default_rng(seed)

    def split(counts):
        y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)]).astype(np.int64)
        x = np.abs(rng.normal(0, 0.3, (len(y), D))).astype(np.float32)
        x[np.arange(len(y)), y] += 3.0
        return x, y, np.array([f"s{i}" for i in range(len(y))])

    return {"train": split(n_per_class), "val": split((n_val,) * 3), "test": split((n_val,) * 3)}


def make_run(features: dict, checkpoint: Path, seed: int = 0) -> TrainRun:
    """A run without images: the trainer reads the parent's cached features only."""
    empty = SplitData(torch.zeros(0, 1, 28, 28, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64),
                      np.array([]), "train")
    return TrainRun(empty, empty, INFO, select_device("cpu"), seed, checkpoint, "fp", progress=False,
                    parent_features=features)


@pytest.fixture
def train_stage(tmp_path):
    """What pipeline.train does for a classifier-stage run, without image I/O; each call gets its
    own checkpoint."""
    calls = iter(range(1000))

    def run(name: str, params: dict | None = None, parent: dict | None = None, features: dict | None = None):
        parent = parent or make_parent()[0]
        method = create_method(name, {"epochs": 2} if name in ("crt", "lws") and params is None else params)
        model = method.build_model(INFO)
        method.init_model(model, parent)
        history = method.fit(model, make_run(features or make_features(), tmp_path / f"ckpt{next(calls)}.pt"))
        return method, model.eval(), history

    return run


# --- frozen backbone, architecture from the parent, model.pt round trip ---------------------------
@pytest.mark.parametrize("name", STAGE_METHODS)
def test_backbone_is_the_parents_exactly_and_the_model_reloads(name, train_stage):
    parent, _ = make_parent()
    method, model, _ = train_stage(name, parent=parent)
    assert method.cfg.backbone == "lenet" and method.cfg.head == "linear"  # resolved from the parent
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, parent["model"][f"backbone.{k}"]), k
    assert not any(p.requires_grad for p in model.backbone.parameters())
    # infer rebuilds the model from the saved (resolved) config alone
    again = create_method(name, method.cfg.to_dict())
    rebuilt = again.build_model(INFO)
    rebuilt.load_state_dict(model.state_dict())
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(rebuilt.eval()(x), model(x))


def test_architecture_mismatches_are_refused(train_stage):
    parent, _ = make_parent()
    with pytest.raises(ValueError, match="differs from the parent's"):
        train_stage("ncm", {"backbone": "resnet20"}, parent=parent)
    with pytest.raises(ValueError, match="linear head"):
        train_stage("tau_norm", {}, parent=make_parent("cosine")[0])


# --- cRT ---------------------------------------------------------------------------------------
def test_crt_reinitialises_and_trains_only_the_head(train_stage):
    parent, parent_model = make_parent()
    method, model, history = train_stage("crt", {"epochs": 3, "lr": 0.1}, parent=parent)
    assert not torch.equal(model.head.weight, parent_model.head.weight)
    assert list(history["epoch"]) == [1, 2, 3]
    assert history["val_acc"].iloc[-1] == 1.0  # separable clusters
    assert method.trainable_parameters(model) == [model.head.weight, model.head.bias]


def test_crt_uses_class_balanced_sampling_with_four_per_class():
    method = create_method("crt", {})
    sampler = method.create_sampler(np.repeat([0, 1, 2], [30, 12, 4]))
    idx = sampler.indices(0, np.random.default_rng(0))
    labels = np.repeat([0, 1, 2], [30, 12, 4])[idx]
    assert len(idx) == 46  # N draws an epoch: decoupling's loop stops after int(N / batch) steps
    assert (labels[:44].reshape(-1, 4) == labels[:44].reshape(-1, 4)[:, :1]).all()  # chunks of 4 of one class
    assert method.cfg.epochs == 10


CRT_PARAMS = {"epochs": 3, "batch_size": 8, "lr": 0.1}  # an epoch of N draws, the last batch partial


def fresh_crt(parent: dict, init_seed: int = 0):
    torch.manual_seed(init_seed)  # the fresh head's initial weights
    method = create_method("crt", CRT_PARAMS)
    model = method.build_model(INFO)
    method.init_model(model, parent)
    return method, model


def test_crt_through_the_trainer_equals_a_hand_written_loop(tmp_path):
    """The shared trainer on cached features applies cRT's class-balanced sampler, CE, SGD with
    momentum and weight decay and the per-batch cosine lr exactly as this loop does."""
    parent, _ = make_parent()
    feats = make_features()
    method, model = fresh_crt(parent)
    head = torch.nn.Linear(D, 3)
    head.load_state_dict(model.head.state_dict())  # the same fresh head
    method.fit(model, make_run(feats, tmp_path / "ckpt.pt"))

    cfg = method.cfg
    x, y = torch.from_numpy(feats["train"][0]), torch.from_numpy(feats["train"][1])
    sampler = create_sampler("class_balanced", y.numpy(), cfg.epochs, per_class=4)
    opt = torch.optim.SGD(head.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=5e-4)
    for epoch in range(cfg.epochs):
        order = sampler.indices(epoch, np.random.default_rng([0, epoch]))
        n_batches = -(-len(order) // cfg.batch_size)
        for b in range(n_batches):
            idx = torch.as_tensor(order[b * cfg.batch_size:(b + 1) * cfg.batch_size])
            for g in opt.param_groups:  # cosine schedule at fractional epoch t = epoch + b / n_batches
                g["lr"] = 0.5 * cfg.lr * (1 + math.cos(math.pi * (epoch + b / n_batches) / cfg.epochs))
            loss = torch.nn.functional.cross_entropy(head(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    torch.testing.assert_close(model.head.weight, head.weight, rtol=0, atol=0)
    torch.testing.assert_close(model.head.bias, head.bias, rtol=0, atol=0)


class Killed(Exception):
    pass


def test_crt_resumes_after_a_kill_and_ends_where_an_uninterrupted_run_ends(tmp_path, monkeypatch):
    parent, _ = make_parent()
    feats = make_features()
    method, whole = fresh_crt(parent)
    full_history = method.fit(whole, make_run(feats, tmp_path / "whole.pt"))

    ckpt = tmp_path / "killed.pt"
    method, model = fresh_crt(parent)
    make = method.create_sampler

    def dies_in_epoch_2(labels):
        sampler = make(labels)
        draw = sampler.indices
        sampler.indices = lambda epoch, rng: (_ for _ in ()).throw(Killed()) if epoch == 1 else draw(epoch, rng)
        return sampler

    monkeypatch.setattr(method, "create_sampler", dies_in_epoch_2)
    with pytest.raises(Killed):
        method.fit(model, make_run(feats, ckpt))
    assert ckpt.exists()  # epoch 1 was checkpointed

    # the rerun starts from another fresh head: only the checkpoint can make it end equal
    method, model = fresh_crt(parent, init_seed=1)
    epochs_drawn = []
    make = method.create_sampler

    def recording(labels):
        sampler = make(labels)
        draw = sampler.indices
        sampler.indices = lambda epoch, rng: epochs_drawn.append(epoch) or draw(epoch, rng)
        return sampler

    monkeypatch.setattr(method, "create_sampler", recording)
    history = method.fit(model, make_run(feats, ckpt))
    assert epochs_drawn == [1, 2]
    assert list(history["epoch"]) == [1, 2, 3]
    assert history["loss"].tolist() == full_history["loss"].tolist()
    for key, value in whole.head.state_dict().items():
        assert torch.equal(model.head.state_dict()[key], value), key


# --- LWS ---------------------------------------------------------------------------------------
def test_lws_with_unit_scales_reproduces_the_parent_logits_bias_included():
    parent, parent_model = make_parent()
    method = create_method("lws", {})
    model = method.build_model(INFO)
    method.init_model(model, parent)
    x = torch.rand(5, D)
    torch.testing.assert_close(model.head(x), parent_model.head(x))
    with torch.no_grad():
        model.head.scales.copy_(torch.tensor([2.0, 1.0, 0.5]))
    w, b = parent_model.head.weight, parent_model.head.bias
    torch.testing.assert_close(model.head(x), x @ (w * torch.tensor([[2.0], [1.0], [0.5]])).T
                               + b * torch.tensor([2.0, 1.0, 0.5]))  # w_i <- f_i w_i, b_i <- f_i b_i


def test_lws_learns_only_the_scales(train_stage):
    parent, parent_model = make_parent()
    _, model, _ = train_stage("lws", {"epochs": 2, "lr": 0.1}, parent=parent)
    torch.testing.assert_close(model.head.base.weight, parent_model.head.weight, rtol=0, atol=0)
    torch.testing.assert_close(model.head.base.bias, parent_model.head.bias, rtol=0, atol=0)
    assert not torch.equal(model.head.scales, torch.ones(3))


def test_scaled_head_on_a_cosine_base_scales_the_logit():
    base = torch.nn.Linear(2, 2, bias=False)
    head = ScaledHead(base, 2)
    with torch.no_grad():
        head.scales.copy_(torch.tensor([3.0, 0.5]))
    x = torch.tensor([[1.0, 2.0]])
    torch.testing.assert_close(head(x), base(x) * torch.tensor([3.0, 0.5]))


# --- tau-norm ----------------------------------------------------------------------------------
def test_tau_zero_is_the_original_classifier_without_bias(train_stage):
    parent, parent_model = make_parent()
    _, model, _ = train_stage("tau_norm", {"tau": 0.0}, parent=parent)
    x = torch.rand(5, D)
    assert float(model.head.tau) == 0.0
    torch.testing.assert_close(model.head(x), x @ parent_model.head.weight.T)  # bias dropped


def test_tau_one_gives_unit_norm_rows():
    w = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    torch.testing.assert_close(tau_normalize(w, 1.0), torch.tensor([[0.6, 0.8], [0.0, 1.0]]))
    torch.testing.assert_close(tau_normalize(w, 2.0), torch.tensor([[3 / 25, 4 / 25], [0.0, 0.5]]))


# w0 = (2, 0) (norm 2), w1 = (0, 1) (norm 1). Val: x = (1, 1.5) of class 1 and x = (1, 0.4) of class 0.
# tau = 0: logits (2, 1.5) -> 0, wrong; (2, 0.4) -> 0, right: mean class acc 0.5.
# tau = 0.5: w0 -> (1.414, 0): (1.414, 1.5) -> 1 right; (1.414, 0.4) -> 0 right: 1.0 (first best).
W_HAND = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
XV_HAND, YV_HAND = torch.tensor([[1.0, 1.5], [1.0, 0.4]]), torch.tensor([1, 0])


def test_select_tau_by_hand():
    tau, accs = select_tau(W_HAND, XV_HAND, YV_HAND, np.array([0.0, 0.5, 1.0, 1.5, 2.0]))
    assert tau == 0.5
    assert accs == [0.5, 1.0, 1.0, 1.0, 1.0]


def _hand_parent() -> dict:
    """A parent whose classifier rows are W_HAND (in the first two of D dims, a third zero class)."""
    parent, _ = make_parent()
    state = dict(parent["model"])
    w = torch.zeros(3, D)
    w[:2, :2] = W_HAND
    w[2, 2] = 0.1
    state["head.weight"], state["head.bias"] = w, torch.tensor([5.0, -5.0, 0.0])  # a bias tau-norm drops
    return {**parent, "model": state}


def _pad(x: torch.Tensor, y: torch.Tensor) -> tuple:
    xx = np.zeros((len(x), D), np.float32)
    xx[:, :2] = x.numpy()
    return xx, y.numpy(), np.array([f"v{i}" for i in range(len(y))])


def test_tau_is_chosen_on_val_never_on_test(train_stage):
    feats = make_features()
    feats["val"] = _pad(XV_HAND, YV_HAND)
    grid = {"tau_step": 0.5, "tau_max": 2.0}
    # test features for which tau = 0 would be best (class 0 at (1, 1.5)); the choice must ignore them
    feats["test"] = _pad(torch.tensor([[1.0, 1.5], [1.0, 1.2]]), torch.tensor([0, 0]))
    _, model, history = train_stage("tau_norm", grid, parent=_hand_parent(), features=feats)
    feats["test"] = _pad(torch.tensor([[0.0, 1.0]]), torch.tensor([1]))
    _, model2, _ = train_stage("tau_norm", grid, parent=_hand_parent(), features=feats)
    assert float(model.head.tau) == float(model2.head.tau) == 0.5
    assert history["tau"].tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert history.loc[history["selected"], "tau"].tolist() == [0.5]
    # ...while changing val changes it: a class-0 val sample at (1, 1.5) makes tau = 0 best
    feats["val"] = _pad(torch.tensor([[1.0, 1.5], [1.0, 0.4]]), torch.tensor([0, 0]))
    _, model3, _ = train_stage("tau_norm", grid, parent=_hand_parent(), features=feats)
    assert float(model3.head.tau) == 0.0


# --- NCM ---------------------------------------------------------------------------------------
def test_class_means_raw_and_normalised():
    x, y = torch.tensor([[9.0, 0.0], [0.0, 1.0], [0.0, 2.0]]), torch.tensor([0, 0, 1])
    torch.testing.assert_close(class_means(x, y, 2), torch.tensor([[4.5, 0.5], [0.0, 2.0]]))
    torch.testing.assert_close(class_means(x, y, 2, normalize_first=True), torch.tensor([[0.5, 0.5], [0.0, 1.0]]))


def test_ncm_cl2n_logits_by_hand():
    # train features: class 0 (12, 11), (12, 9); class 1 (8, 11), (8, 9); mean (10, 10). Centred
    # and L2-normalised: (+-2, +-1) / sqrt 5 -> centroids c_0 = (2/sqrt5, 0), c_1 = (-2/sqrt5, 0).
    x = torch.tensor([[12.0, 11.0], [12.0, 9.0], [8.0, 11.0], [8.0, 9.0]])
    head = NCMHead(2, 2, scale=2.0)
    head.fit(x, torch.tensor([0, 0, 1, 1]))
    torch.testing.assert_close(head.feat_mean, torch.tensor([10.0, 10.0]))
    r5 = math.sqrt(5)
    torch.testing.assert_close(head.centroids, torch.tensor([[2 / r5, 0.0], [-2 / r5, 0.0]]))
    # query (11, 10.5): centred (1, 0.5) -> z = (2, 1)/sqrt5; d0^2 = 1/5, d1^2 = 16/5 + 1/5 = 17/5
    torch.testing.assert_close(head(torch.tensor([[11.0, 10.5]])), torch.tensor([[-2 * 0.2, -2 * 3.4]]))


def test_ncm_cl2n_and_cosine_disagree_where_the_offset_dominates():
    # raw means (10, 0) and (1, 1): q = (5, 0.5) is cosine-nearer to (10, 0) (0.995 vs 0.774). cl2n
    # centres on the training mean (5.5, 0.5): centroids ~(0.993, -0.116) and ~(-0.977, 0.061), and
    # the centred q = (-0.5, 0) -> z = (-1, 0): d0^2 ~ 3.985, d1^2 ~ 0.004, so class 1
    x = torch.tensor([[9.0, 0.0], [11.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    y = torch.tensor([0, 0, 1, 1])
    q = torch.tensor([[5.0, 0.5]])
    cos = NCMHead(2, 2, scale=16.0, distance="cosine")
    cos.fit(x, y)
    torch.testing.assert_close(cos.centroids, torch.tensor([[10.0, 0.0], [1.0, 1.0]]))
    cos0, cos1 = 5 / math.hypot(5, 0.5), 5.5 / (math.hypot(5, 0.5) * math.sqrt(2))
    torch.testing.assert_close(cos(q), torch.tensor([[16 * cos0, 16 * cos1]]))
    cl2n = NCMHead(2, 2)
    cl2n.fit(x, y)
    # centred train: (3.5, -0.5), (5.5, -0.5), (-5.5, 1.5), (-3.5, -0.5)
    z = torch.nn.functional.normalize(x - torch.tensor([5.5, 0.5]), dim=1)
    c = torch.stack([z[:2].mean(0), z[2:].mean(0)])
    expected = -((torch.tensor([[-1.0, 0.0]]) - c) ** 2).sum(1)
    torch.testing.assert_close(cl2n(q), expected[None])
    assert cl2n(q)[0].tolist() == pytest.approx([-3.985, -0.0042], abs=2e-3)
    assert int(cl2n(q).argmax()) == 1 and int(cos(q).argmax()) == 0


def test_ncm_defaults_follow_the_reference():
    cfg = create_method("ncm", {}).cfg
    assert (cfg.distance, cfg.scale) == ("euclidean", 1.0)
    with pytest.raises(ValueError, match="distance"):
        create_method("ncm", {"distance": "manhattan"})


def test_ncm_method_uses_train_split_means(train_stage):
    feats = make_features()
    _, model, history = train_stage("ncm", {"scale": 10.0}, features=feats)
    x, y, _ = feats["train"]
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    torch.testing.assert_close(model.head.feat_mean, x.mean(0))
    torch.testing.assert_close(model.head.centroids, class_means(torch.nn.functional.normalize(x - x.mean(0), dim=1), y, 3))
    assert history["val_acc"].iloc[0] == 1.0


# --- OpenMax as a method -----------------------------------------------------------------------
def test_openmax_method_fits_on_train_logits_and_recalibrates(train_stage):
    parent, parent_model = make_parent()
    feats = make_features()
    _, model, _ = train_stage("openmax", {"tail_size": 5, "alpha": 2, "distance": "euclidean"},
                              parent=parent, features=feats)
    x, y, _ = feats["train"]
    av = parent_model.head(torch.from_numpy(x)).detach()
    means, weibull = om.fit_openmax(av, torch.from_numpy(y), 3, 5, "euclidean")
    torch.testing.assert_close(model.head.means, means)
    torch.testing.assert_close(model.head.weibull, weibull)
    q = torch.from_numpy(feats["test"][0])
    expected = om.openmax_probs(parent_model.head(q), means, weibull, 2, "euclidean")  # (N, C + 1)
    torch.testing.assert_close(torch.softmax(model.head(q), 1), expected)


def test_openmax_defaults_follow_the_authors_release():
    cfg = create_method("openmax", {}).cfg
    assert (cfg.alpha, cfg.tail_size, cfg.distance) == (10, 20, "eucos")  # ALPHA_RANK, WEIBULL_TAIL_SIZE


def test_openmax_predictions_reject_when_the_unknown_class_wins():
    method = create_method("openmax", {})
    split = SplitData(torch.zeros(3, 1, 28, 28, dtype=torch.uint8), torch.tensor([0, 1, 2]),
                      np.array(["a", "b", "c"]), "test")
    # OpenMax probabilities over 3 known classes + unknown (last), given as the head's log-probs
    probs = np.array([[0.6, 0.2, 0.15, 0.05],   # class 0 wins, P_0 = 0.05
                      [0.1, 0.3, 0.2, 0.4],     # unknown wins -> rejected although P_1 = 0.3
                      [0.05, 0.1, 0.45, 0.4]])  # class 2 wins by a little, P_0 = 0.4
    df = method.predictions(split, np.log(probs).astype(np.float32))
    assert df["pred"].tolist() == [0, -1, 2]
    np.testing.assert_allclose(df["confidence"], [0.95, 0.6, 0.6], rtol=1e-6)  # 1 - P(unknown)
    assert [list(t) for t in df["topk"]] == [[0, 1, 2, -1], [-1, 1, 2, 0], [2, -1, 1, 0]]
    np.testing.assert_allclose(df["topk_prob"].iloc[1], [0.4, 0.3, 0.2, 0.1], rtol=1e-6)


def test_mean_class_accuracy_weights_classes_equally():
    logits = torch.tensor([[1.0, 0.0]] * 3 + [[0.0, 1.0]])
    assert mean_class_accuracy(logits, torch.tensor([0, 0, 0, 0])) == 0.75
    assert mean_class_accuracy(logits, torch.tensor([0, 0, 1, 1])) == pytest.approx(0.75)  # (1 + 0.5) / 2
