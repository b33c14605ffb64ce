"""MFM, MW-Net and L2RW on the one-loop bilevel engine: modulation, hashing, meta-gradient,
inference without the modulator, the learners' updates, configs and transfer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from longtail import trainer
from longtail.data import DatasetInfo, SplitData
from longtail.device import select_device
from longtail.methods import create_method, make_config
from longtail.methods.mfm import bilevel
from longtail.methods.mfm.method import (
    META,
    Modulation,
    ModulatorNet,
    NetLearner,
    WeightHashing,
    modulate,
    output_channels,
    split_modulation,
)
from longtail.models import LongTailNet
from longtail.trainer import TrainBatch, TrainRun
from torch import nn

INFO = DatasetInfo(4, 1, (24, 12, 6, 6))
PHI = {"modulator": "phi", "meta_optimizer": "sgd"}  # config.yaml's mfm_phi run, less its schedule


def _data(n: int = 48, seed: int = 0) -> tuple[SplitData, SplitData]:
    g = torch.Generator().manual_seed(seed)
    imgs = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g)
    labels = torch.tensor(sum([[c] * k for c, k in enumerate(INFO.class_counts)], []))[:n]
    train = SplitData(imgs, labels, np.arange(n).astype(str), "train")
    meta_idx = torch.tensor([0, 1, 24, 25, 36, 37, 42, 43])
    meta = SplitData(imgs[meta_idx], labels[meta_idx], np.arange(8).astype(str), "meta")
    return train, meta


def _run(train: SplitData, meta: SplitData, tmp: Path) -> TrainRun:
    return TrainRun(train, train, INFO, select_device("cpu", 1), 0, tmp / "ck.pt", "fp", meta, False)


# --- modulation (Eq. 1) --------------------------------------------------------------------------
def test_modulate_is_channelwise_on_maps_and_neuronwise_on_vectors():
    fmap = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    gamma = torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, -1.0]])
    beta = torch.tensor([[0.0, 10.0, 0.0], [1.0, 0.0, 0.0]])
    out = modulate(fmap, gamma, beta)
    assert out.shape == fmap.shape
    # hand-computed: sample 0 channel 1 = 2 * (4..7) + 10; sample 1 channel 0 = 0 * x + 1
    assert out[0, 1].flatten().tolist() == [18.0, 20.0, 22.0, 24.0]
    assert out[1, 0].flatten().tolist() == [1.0, 1.0, 1.0, 1.0]
    assert out[1, 2].flatten().tolist() == (-fmap[1, 2]).flatten().tolist()
    vec = torch.tensor([[1.0, 2.0, 3.0]])
    assert modulate(vec, gamma[:1], beta[:1]).tolist() == [[1.0, 14.0, 9.0]]
    ones, zeros = torch.ones(2, 3), torch.zeros(2, 3)
    assert torch.equal(modulate(fmap, ones, zeros), fmap)  # identity at gamma = 1, beta = 0


def test_split_modulation_constraints_and_ablations():
    g_raw = torch.randn(5, 7)
    b_raw = torch.randn(5, 7)
    gammas, betas = split_modulation(g_raw, b_raw, [3, 4], "softmax")
    assert [g.shape for g in gammas] == [(5, 3), (5, 4)]
    # C * softmax per layer: positive, sums to that layer's C (mean 1) -- appendix A.2
    assert torch.allclose(gammas[0].sum(1), torch.full((5,), 3.0)) and torch.allclose(gammas[1].sum(1), torch.full((5,), 4.0))
    assert (gammas[0] > 0).all()
    assert torch.equal(betas[1], b_raw[:, 3:])  # beta unconstrained
    g1, b1 = split_modulation(g_raw, b_raw, [3, 4], "softmax", learn_gamma=False)
    assert all(torch.equal(g, torch.ones_like(g)) for g in g1) and torch.equal(b1[0], b_raw[:, :3])
    g2, b2 = split_modulation(g_raw, b_raw, [3, 4], "film", learn_beta=False)
    assert torch.allclose(g2[0], 1 + g_raw[:, :3]) and all(not b.any() for b in b2)
    g0, _ = split_modulation(torch.zeros(2, 7), b_raw[:2], [3, 4], "softmax")
    assert all(torch.allclose(g, torch.ones_like(g)) for g in g0)  # raw 0 -> gamma 1


@pytest.mark.parametrize("layer, channels", [("backbone.conv1", 32), ("backbone.conv2", 64), ("backbone.fc", 128)])
def test_modulation_hooks_shapes_identity_and_removal(layer, channels):
    torch.manual_seed(0)
    model = create_method("plain", {}).build_model(INFO).eval()
    mod = Modulation(model, [layer])
    assert mod.channels == [channels]
    x = torch.randn(3, 1, 28, 28)
    ref = model(x)
    with mod.active([torch.ones(3, channels)], [torch.zeros(3, channels)]):
        assert torch.allclose(model(x), ref, atol=1e-6)
    with mod.active([torch.ones(3, channels)], [torch.full((3, channels), 0.5)]):
        changed = model(x)
    assert not torch.allclose(changed, ref)
    assert torch.equal(model(x), ref)  # hooks removed on exit
    assert not mod.modules[0]._forward_hooks


def test_output_channels_of_blocks_and_bad_layer_name():
    model = create_method("plain", {"backbone": "resnet20"}).build_model(DatasetInfo(4, 3, (4, 3, 2, 1)))
    assert output_channels(model.backbone.layer1) == 16 and output_channels(model.backbone.layer3) == 64
    with pytest.raises(ValueError, match="no module named"):
        Modulation(model, ["backbone.layer9"])


# --- weight hashing (appendix A.1) ----------------------------------------------------------------
def test_weight_hashing_is_fixed_parameter_free_signed_copies():
    h = WeightHashing(4, 11, seed=3)
    assert list(h.parameters()) == []  # parameter-free
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    out = h(x)
    assert out.shape == (1, 11)
    # every output is a sign-flipped copy of one input coefficient: |theta_i| in {1, 2, 3, 4}
    assert set(out.abs().flatten().tolist()) == {1.0, 2.0, 3.0, 4.0}  # every coefficient used (d >= m)
    assert set(h.zeta.tolist()) <= {-1.0, 1.0}
    assert torch.equal(out[0], x[0, h.kappa] * h.zeta)
    w = h.matrix()  # theta = W x with one +-1 per row
    assert torch.equal((w != 0).sum(1), torch.ones(11, dtype=torch.long)) and torch.allclose(w @ x[0], out[0])
    assert torch.equal(WeightHashing(4, 11, seed=3).kappa, h.kappa)  # fixed by the seed
    assert not torch.equal(WeightHashing(4, 11, seed=4).kappa * WeightHashing(4, 11, seed=4).zeta, h.kappa * h.zeta)
    # the modulator with hashing: gradients reach the MLP, never the hashing maps
    net = ModulatorNet(4, [6, 5], hidden=8, hash_dim=3)
    nn.init.normal_(net.mlp[2].weight)
    g, b = net(torch.softmax(torch.randn(2, 4), 1))
    assert g.shape == (2, 11) and b.shape == (2, 11)
    (g.sum() + b.sum()).backward()
    assert net.mlp[0].weight.grad is not None and not any(True for _ in net.hash_gamma.parameters())


# --- the meta-gradient (Eqs. 5-6) against finite differences --------------------------------------
def test_meta_gradient_matches_finite_difference():
    torch.manual_seed(0)
    dt = torch.float64
    net = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).to(dt).train()
    cfg = make_config("mfm", {"layers": ["0"]})
    mod = Modulation(net, ["0"])
    modulator = ModulatorNet(3, mod.channels, hidden=4).to(dt)
    nn.init.normal_(modulator.mlp[2].weight, std=0.5)
    learner = NetLearner(cfg, mod, modulator, None)
    x, y = torch.randn(7, 5, dtype=dt), torch.randint(0, 3, (7,))
    xv, yv = torch.randn(6, 5, dtype=dt), torch.randint(0, 3, (6,))
    lr, wd = 0.3, 1e-2
    loss_fn = lambda logits, t, epoch: F.cross_entropy(logits, t)  # noqa: E731
    params = dict(net.named_parameters())
    ctx: dict = {}
    learner.prepare(net, x, y, ctx)
    grads, _ = bilevel.meta_gradient(net, learner, params, x, y, xv, yv, 0, loss_fn, lr, wd, ctx)

    def meta_loss_at() -> float:  # L_meta(w - lr (grad L_train + wd w)), written out by hand
        gammas, betas = learner.gamma_beta(ctx)
        with mod.active(gammas, betas):
            lt = F.cross_entropy(net(x), y)
        gw = torch.autograd.grad(lt, list(params.values()))
        new = {n: p - lr * (g + wd * p) for (n, p), g in zip(params.items(), gw)}
        return float(F.cross_entropy(torch.func.functional_call(net, new, (xv,)), yv).detach())

    target = modulator.mlp[2].weight  # (2 * 6, 4)
    h = 1e-6
    for i, j in [(0, 0), (3, 2), (7, 1), (11, 3)]:
        with torch.no_grad():
            target[i, j] += h
        up = meta_loss_at()
        with torch.no_grad():
            target[i, j] -= 2 * h
        down = meta_loss_at()
        with torch.no_grad():
            target[i, j] += h
        fd = (up - down) / (2 * h)
        analytic = float(grads[2][i, j])  # meta_tensors order: mlp.0.weight, mlp.0.bias, mlp.2.weight, ...
        assert abs(fd - analytic) < 1e-7 + 1e-5 * abs(fd), (i, j, fd, analytic)
    assert grads[2].abs().max() > 1e-4  # the check is not vacuous


# --- methods ----------------------------------------------------------------------------------------
def test_inference_is_the_plain_network():
    torch.manual_seed(0)
    method = create_method("mfm", {"layers": ["backbone.conv2", "backbone.fc"]})
    model = method.build_model(INFO).eval()
    nn.init.normal_(getattr(model, META).mlp[2].weight)  # a modulator far from identity
    plain = LongTailNet(model.backbone, model.head).eval()
    x = torch.randn(4, 1, 28, 28)
    logits, emb = method.infer(model, x)
    assert torch.equal(logits, plain(x)) and torch.equal(emb, plain.features(x))
    with torch.no_grad():
        for p in getattr(model, META).parameters():
            p.add_(1.0)
    assert torch.equal(method.infer(model, x)[0], logits)  # the modulator is never consulted
    names = {n for n, _ in model.named_parameters()}
    trainable = {id(p) for p in method.trainable_parameters(model)}
    assert any(n.startswith(META) for n in names)
    assert not any(id(p) in trainable for p in getattr(model, META).parameters())


BILEVEL = [("mfm", {"meta_lr": 1e-2}), ("mfm_phi", {**PHI, "meta_lr": 1e3}), ("mw_net", {"meta_lr": 1e-2}),
           ("l2rw", {})]


@pytest.mark.parametrize("run_name, params", BILEVEL, ids=[r for r, _ in BILEVEL])
def test_bilevel_loss_updates_meta_parameters_then_the_trainer_steps(run_name, params, tmp_path):
    torch.manual_seed(0)
    train, meta = _data()
    name = "mfm" if run_name.startswith("mfm") else run_name
    method = create_method(name, {"batch_size": 16, "meta_batch_size": 8, **params})
    model = method.build_model(INFO).train()
    run = _run(train, meta, tmp_path)
    idx = np.arange(20, 36)  # 16 samples of three classes
    x = train.images[idx].float() / 255
    y = train.labels[idx]
    loss_fn = method.create_loss(INFO)
    # Algorithm 1, lines 5-6 and the real step's loss (the engine alone)
    learner = method.make_learner(model, run)
    meta_before = {k: v.clone() for k, v in getattr(model, META).state_dict().items()} if hasattr(model, META) else {}
    loss, logits, ctx = bilevel.bilevel_loss(model, learner, x, y, meta.images.float() / 255, meta.labels, 0,
                                             loss_fn, 0.1, 0.0, method.trainable_parameters(model), {"idx": idx})
    assert logits.shape == (16, 4) and torch.isfinite(loss) and loss.requires_grad
    assert np.isfinite(ctx["meta_loss"])
    if run_name == "mfm_phi":
        raw = getattr(model, META).raw
        assert raw[idx].abs().sum() > 0 and not raw[:20].any() and not raw[36:].any()  # only batch rows move
    elif name in ("mfm", "mw_net"):
        after = getattr(model, META).state_dict()
        assert any(not torch.equal(after[k], meta_before[k]) for k in meta_before)
    if name == "l2rw":
        w = ctx["weights"]
        assert (w >= 0).all() and (w.sum() == 0 or torch.isclose(w.sum(), torch.tensor(1.0)))
    if name == "mw_net":
        assert ((ctx["weights"] > 0) & (ctx["weights"] < 1)).all()
    # line 7: the trainer's step on the loss the method's hook returns
    method.setup(model, run)
    opt = trainer.make_optimizer(method, model)
    trainer.set_lr(opt, 0.1)
    head_before = model.head.weight.detach().clone()
    trainer.train_step(method, model, TrainBatch(x, y, idx, 0, 0, 0.1, loss_fn), opt,
                       torch.amp.GradScaler("cpu", enabled=False), run.device)
    assert not torch.equal(model.head.weight, head_before)


def test_bn_running_stats_updated_by_the_real_step_only(tmp_path):
    torch.manual_seed(0)
    info = DatasetInfo(4, 1, INFO.class_counts)
    train, meta = _data()
    method = create_method("mfm", {"backbone": "resnet20", "layers": ["backbone.layer3"], "meta_batch_size": 8})
    model = method.build_model(info).train()
    twin = create_method("plain", {"backbone": "resnet20"}).build_model(info).train()
    twin.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith(META)})
    learner = method.make_learner(model, _run(train, meta, tmp_path))
    x, y = train.images[:8].float() / 255, train.labels[:8]
    # virtual step at lr 0: the weights stay, only the real step's forward may move the statistics
    bilevel.bilevel_loss(model, learner, x, y, meta.images.float() / 255, meta.labels, 0, method.create_loss(info),
                         0.0, 0.0, method.trainable_parameters(model))
    twin(x)  # one plain train-mode forward (the modulator starts at identity)
    bn, bn_twin = model.backbone.stem[1], twin.backbone.stem[1]
    assert torch.allclose(bn.running_mean, bn_twin.running_mean) and int(bn.num_batches_tracked) == 1


def test_fit_runs_through_the_shared_trainer(tmp_path):
    torch.manual_seed(0)
    train, meta = _data()
    method = create_method("mfm", {**PHI, "meta_lr": 100.0, "epochs": 1, "batch_size": 16, "meta_batch_size": 8})
    model = method.build_model(INFO)
    history = method.fit(model, _run(train, meta, tmp_path))  # phi rows need the batch's sample positions
    assert len(history) == 1 and np.isfinite(history["loss"]).all()
    assert getattr(model, META).raw.abs().sum() > 0
    no_meta = _run(train, None, tmp_path)
    with pytest.raises(ValueError, match="meta_per_class"):
        create_method("l2rw", {}).fit(create_method("l2rw", {}).build_model(INFO), no_meta)


def test_transfer_copies_and_freezes_the_source_modulator():
    torch.manual_seed(0)
    src_method = create_method("mfm", {})
    src = src_method.build_model(INFO)
    nn.init.normal_(getattr(src, META).mlp[2].weight)
    parent = {"method": "mfm", "model": src.state_dict()}
    method = create_method("mfm", {"modulator_from": {"dataset": "other", "run": "mfm"}})
    assert method.requires_parent
    model = method.build_model(INFO)
    head = model.head.weight.detach().clone()
    method.init_model(model, parent)
    assert torch.equal(getattr(model, META).mlp[2].weight, getattr(src, META).mlp[2].weight)
    assert torch.equal(model.head.weight, head)  # the classifier starts fresh
    assert not any(p.requires_grad for p in getattr(model, META).parameters())
    with pytest.raises(ValueError, match="does not fit"):
        create_method("mfm", {"modulator_from": {"dataset": "o", "run": "r"}, "hidden": 7}).init_model(
            create_method("mfm", {"hidden": 7}).build_model(INFO), parent)
    with pytest.raises(ValueError, match="not mfm"):
        method.init_model(method.build_model(INFO), {"method": "plain", "model": {}})
    with pytest.raises(ValueError, match="modulator network"):  # per-sample phi has no network to transfer
        method.init_model(method.build_model(INFO), {"method": "mfm", "config": {"modulator": "phi"}, "model": {}})


@pytest.mark.parametrize("method, params, match", [
    ("mfm", {"layers": []}, "layers"),
    ("mfm", {"layers": ["backbone.fc", "backbone.fc"]}, "twice"),
    ("mfm", {"learn_gamma": False, "learn_beta": False}, "nothing is modulated"),
    ("mfm", {"gamma_activation": "tanh"}, "gamma_activation"),
    ("mfm", {"modulator_from": {"dataset": "x"}}, "modulator_from"),
    ("mfm", {"hash_dim": -1}, "hash_dim"),
    ("mfm", {"modulator": "phi"}, "meta_optimizer"),  # phi rows need plain SGD, the default is adam
    ("mfm", {**PHI, "hash_dim": 8}, "modulator: net"),
    ("mfm", {**PHI, "modulator_from": {"dataset": "d", "run": "r"}}, "modulator: net"),
    ("mfm", {"modulator": "table"}, "modulator"),
    ("mw_net", {"meta_batch_size": 0}, "meta_batch_size"),
    ("l2rw", {"virtual_lr": -1.0}, "virtual_lr"),
])
def test_configs_reject_bad_values(method, params, match):
    with pytest.raises(ValueError, match=match):
        make_config(method, params)


# ------------------------------------------------------------------------------ MW-Net details, resume


def test_mw_net_weighting_net_optimiser_is_the_reference_one(tmp_path):
    """MW-Net's code: Adam(vnet, lr 1e-3, weight_decay 1e-4) for the weighting net."""
    train, meta = _data()
    method = create_method("mw_net", {})
    opt = method.make_learner(method.build_model(INFO), _run(train, meta, tmp_path)).optimizer
    assert isinstance(opt, torch.optim.Adam)
    assert opt.param_groups[0]["lr"] == 1e-3 and opt.param_groups[0]["weight_decay"] == 1e-4


@pytest.mark.parametrize("virtual_wd", [0.0, 0.5])
def test_virtual_step_takes_virtual_weight_decay_not_the_classifier_one(virtual_wd, tmp_path):
    """The method's hook moves phi exactly as the engine does with ``virtual_weight_decay`` in
    Eq. 5's step (0 by default, as MW-Net's look-ahead w - alpha grad), whatever the classifier's
    ``weight_decay`` (0.5 here, so that a decay in the look-ahead would show)."""
    train, meta = _data()
    params = {"batch_size": 16, "meta_batch_size": 8, "meta_lr": 1e-2, "weight_decay": 0.5, "augment": "none"}
    if virtual_wd:
        params["virtual_weight_decay"] = virtual_wd
    run = _run(train, meta, tmp_path)
    idx = np.arange(20, 36)
    x, y = train.images[idx].float() / 255, train.labels[idx]
    after = {}
    for wd in (virtual_wd, 0.5 - virtual_wd):  # the engine at the expected decay, then at the other one
        torch.manual_seed(0)
        method = create_method("mw_net", params)
        model = method.build_model(INFO).train()
        method.setup(model, run)
        xv, yv = method.metas.get(0, 0)
        bilevel.bilevel_loss(model, method.learner, x, y, xv, yv, 0, method.create_loss(INFO), 0.1, wd,
                             method.trainable, {"idx": idx})
        after[wd] = getattr(model, META).state_dict()
    torch.manual_seed(0)
    method = create_method("mw_net", params)
    model = method.build_model(INFO).train()
    method.setup(model, run)
    method.training_loss(model, TrainBatch(x, y, idx, 0, 0, 0.1, method.create_loss(INFO)))
    hook = getattr(model, META).state_dict()
    assert all(torch.equal(hook[k], after[virtual_wd][k]) for k in hook)
    assert any(not torch.equal(hook[k], after[0.5 - virtual_wd][k]) for k in hook)


class Killed(RuntimeError):
    """Stands in for the job being killed."""


def _fit_bilevel(name: str, params: dict, ckpt: Path, kill_epoch: int | None = None):
    """Build and fit as pipeline.train does; with ``kill_epoch`` the job dies at that (0-based)
    epoch's first step."""
    train, meta = _data()
    method = create_method(name, {"epochs": 3, "batch_size": 16, "meta_batch_size": 8, **params})
    if kill_epoch is not None:
        inner = method.training_loss

        def hook(model, batch):
            if batch.epoch == kill_epoch:
                raise Killed(f"killed in epoch {batch.epoch}")
            return inner(model, batch)

        method.training_loss = hook
    torch.manual_seed(0)
    model = method.build_model(INFO)
    history = method.fit(model, TrainRun(train, train, INFO, select_device("cpu", 1), 0, ckpt, "fp", meta, False))
    return model, history


@pytest.mark.parametrize("name, params", [("mfm", {"meta_lr": 1e-2}), ("mw_net", {"meta_lr": 1e-2})],
                         ids=["mfm", "mw_net"])
def test_bilevel_kill_and_resume_gives_identical_weights(name, params, tmp_path):
    """The meta optimiser's (Adam's) state rides in the checkpoint: a run killed after epoch 1 and
    resumed ends with the weights, modulator / weighting net included, of an uninterrupted run."""
    ref_model, ref_history = _fit_bilevel(name, params, tmp_path / "ref.pt")
    ckpt = tmp_path / "ck.pt"
    with pytest.raises(Killed):
        _fit_bilevel(name, params, ckpt, kill_epoch=1)
    saved = torch.load(ckpt, weights_only=False)
    assert saved["epoch"] == 0 and saved["method_state"]["meta_optimizer"]["state"]  # Adam's moments
    model, history = _fit_bilevel(name, params, ckpt)
    ref, got = ref_model.state_dict(), model.state_dict()
    assert ref.keys() == got.keys() and any(k.startswith(META) for k in got)
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    assert history["loss"].tolist() == ref_history["loss"].tolist()


def test_confusion_matrix_keeps_a_rejected_sample_out_of_every_cell():
    import pandas as pd

    from longtail.methods.mfm.figures import confusion_matrix

    df = pd.DataFrame({"split": ["test"] * 4, "label": [0, 0, 1, 1], "pred": [0, -1, 1, 0]})
    # class 0: one correct, one rejected (OpenMax) -> (1/2, 0); class 1: (1/2, 1/2)
    np.testing.assert_allclose(confusion_matrix(df, 2), [[0.5, 0.0], [0.5, 0.5]])
