"""The shared trainer on a tiny in-memory dataset: determinism, kill-and-resume, stale and
corrupt checkpoints, divergence, the learning-rate schedules, param-group lr scales and gradient
clipping (by hand)."""

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from longtail import trainer
from longtail.data import DatasetInfo, SplitData, batches
from longtail.device import select_device
from longtail.methods import create_method, make_config
from longtail.methods.base import Method
from longtail.trainer import HISTORY_COLUMNS, DivergenceError, TrainRun, lr_at
from torch import nn

N_CLASSES = 4
PARAMS = {"backbone": "lenet", "epochs": 3, "batch_size": 16, "lr": 0.05}


def make_split(n_per_class: int, split: str, seed: int) -> SplitData:
    """28x28 grey images whose mean brightness depends on the class, plus noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(N_CLASSES).repeat_interleave(n_per_class)
    base = (40 + 50 * labels).float().view(-1, 1, 1, 1)
    images = (base + 30 * torch.randn(len(labels), 1, 28, 28, generator=g)).clamp(0, 255).to(torch.uint8)
    return SplitData(images, labels, np.array([f"{split}-{i}" for i in range(len(labels))]), split)


TRAIN = make_split(10, "train", 0)   # 40 images: 3 batches of 16 per epoch
VAL = make_split(3, "val", 1)
INFO = DatasetInfo(N_CLASSES, 1, (10,) * N_CLASSES, mean=float(TRAIN.images.float().mean() / 255),
                   std=float(TRAIN.images.float().std() / 255))


class Killed(RuntimeError):
    """Stands in for the job being killed."""


def train(ckpt: Path, *, seed: int = 0, fp: str = "fp", params: dict | None = None, kill_epoch: int | None = None):
    """Build the model as pipeline.train does and fit it; return (model, history). With
    ``kill_epoch``, the job dies at the first step of that (0-based) epoch."""
    method = create_method("plain", {**PARAMS, **(params or {})})
    if kill_epoch is not None:
        method.training_loss = killed_in_epoch(method.training_loss, kill_epoch)
    torch.manual_seed(seed)
    model = method.build_model(INFO)
    run = TrainRun(TRAIN, VAL, INFO, select_device("cpu", 1), seed, ckpt, fp, progress=False)
    history = trainer.fit(method, model, run)
    return model, history


def killed_in_epoch(training_loss, kill_epoch: int):
    """``training_loss`` raising ``Killed`` at the start of ``kill_epoch``."""
    def hook(model, batch):
        if batch.epoch == kill_epoch:
            raise Killed(f"killed in epoch {batch.epoch}")
        return training_loss(model, batch)
    return hook


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def assert_different_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert any(not torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 3-epoch run (seed 0)."""
    return train(tmp_path_factory.mktemp("ref") / "checkpoint.pt")


# ------------------------------------------------------------------------------ determinism


def test_history_schema_and_learning(reference):
    model, history = reference
    assert list(history.columns) == list(HISTORY_COLUMNS)
    assert history["epoch"].tolist() == [1, 2, 3]
    assert (history["seconds"] > 0).all()
    assert history[["train_acc", "val_acc"]].stack().between(0, 1).all()
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]  # it learns the class means
    # lr logged = the cosine value at the last batch (2/3) of each epoch, lr 0.05 over 3 epochs
    expected = [0.5 * 0.05 * (1 + math.cos(math.pi * (e + 2 / 3) / 3)) for e in range(3)]
    assert history["lr"].tolist() == pytest.approx(expected)


def test_same_seed_same_weights(reference, tmp_path):
    model, history = train(tmp_path / "checkpoint.pt")
    assert_same_weights(model, reference[0])
    assert history["loss"].tolist() == reference[1]["loss"].tolist()


def test_other_seed_other_weights(reference, tmp_path):
    model, _ = train(tmp_path / "checkpoint.pt", seed=1)
    assert_different_weights(model, reference[0])


# ------------------------------------------------------------------------------ checkpoints


def test_kill_and_resume_gives_identical_weights(reference, tmp_path):
    ckpt = tmp_path / "checkpoint.pt"
    with pytest.raises(Killed):
        train(ckpt, kill_epoch=1)  # epoch 1 (0-based) dies: epoch 0 is checkpointed
    saved = torch.load(ckpt, weights_only=False)
    assert saved["epoch"] == 0 and len(saved["history"]) == 1 and saved["fingerprint"] == "fp"
    assert {"model", "optimizer", "scaler", "rng"} <= saved.keys()
    model, history = train(ckpt)  # the restarted job
    assert_same_weights(model, reference[0])
    assert history["epoch"].tolist() == [1, 2, 3]
    # epoch 1 was not redone: its row (timing included) comes from the checkpoint
    assert history.drop(columns="selected").iloc[0].to_dict() == saved["history"][0]
    ref = reference[1]
    assert history["loss"].tolist() == pytest.approx(ref["loss"].tolist(), rel=0, abs=0)
    assert history["val_acc"].tolist() == ref["val_acc"].tolist()


def test_stale_checkpoint_of_another_config_is_ignored(reference, tmp_path):
    ckpt = tmp_path / "checkpoint.pt"
    with pytest.raises(Killed):  # another config (lr 0.3) leaves a checkpoint behind
        train(ckpt, fp="fp-other-config", params={"lr": 0.3}, kill_epoch=2)
    assert torch.load(ckpt, weights_only=False)["epoch"] == 1
    model, history = train(ckpt)  # fingerprint "fp" != "fp-other-config": starts from scratch
    assert_same_weights(model, reference[0])
    assert history["epoch"].tolist() == [1, 2, 3]


def test_checkpoint_of_same_fingerprint_is_used(reference, tmp_path):
    """Control for the test above: with the same fingerprint the lr-0.3 checkpoint IS resumed,
    so the weights differ from the reference (the fingerprint is what protects a run)."""
    ckpt = tmp_path / "checkpoint.pt"
    with pytest.raises(Killed):
        train(ckpt, params={"lr": 0.3}, kill_epoch=2)
    model, history = train(ckpt)
    assert_different_weights(model, reference[0])
    assert len(history) == 3


def test_nan_loss_raises_divergence_and_removes_checkpoint(tmp_path):
    ckpt = tmp_path / "checkpoint.pt"
    # lr 0.05 in epoch 1, then x1e12 from epoch 2 on (step schedule): the loss overflows in epoch 2,
    # after epoch 1's checkpoint was written
    params = {"schedule": "step", "milestones": [1], "gamma": 1e12}
    with pytest.raises(DivergenceError, match=r"epoch 2.*lr \(now 5e\+10\)"):
        train(ckpt, params=params)
    assert not ckpt.exists()


def real_checkpoint(tmp_path: Path) -> bytes:
    """The bytes of a checkpoint.pt written after epoch 1 of this run (fingerprint "fp")."""
    ckpt = tmp_path / "real" / "checkpoint.pt"
    ckpt.parent.mkdir()
    with pytest.raises(Killed):
        train(ckpt, kill_epoch=1)
    return ckpt.read_bytes()


def corrupt_checkpoint(kind: str, tmp_path: Path) -> bytes:
    if kind == "truncated":  # a job killed while writing it without the atomic rename, or a full disk
        data = real_checkpoint(tmp_path)
        return data[: len(data) // 2]
    if kind == "garbage":
        return b"\x00\xffnot a checkpoint" * 100
    if kind == "empty":
        return b""
    saved = torch.load(io.BytesIO(real_checkpoint(tmp_path)), weights_only=False)
    if kind == "not_a_dict":
        obj = [saved]
    elif kind == "missing_keys":  # right fingerprint, no optimizer state
        obj = {k: v for k, v in saved.items() if k != "optimizer"}
    else:  # "wrong_shapes": right fingerprint, weights of another network (loads part of them)
        obj = {**saved, "model": {k: v[..., :1] if v.ndim > 1 else v * 2 for k, v in saved["model"].items()}}
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty", "not_a_dict", "missing_keys", "wrong_shapes"])
def test_corrupt_checkpoint_is_set_aside_and_training_starts_fresh(reference, tmp_path, capsys, kind):
    ckpt = tmp_path / "run" / "checkpoint.pt"
    ckpt.parent.mkdir()
    data = corrupt_checkpoint(kind, tmp_path)
    ckpt.write_bytes(data)
    capsys.readouterr()
    model, history = train(ckpt)
    err = capsys.readouterr().err
    aside = list(ckpt.parent.glob("checkpoint.pt.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == data  # kept for inspection, untouched
    assert f"WARNING: checkpoint {ckpt} is unreadable" in err and str(aside[0]) in err
    assert "resuming" not in err
    assert history["epoch"].tolist() == [1, 2, 3]  # every epoch trained in this job
    assert_same_weights(model, reference[0])  # exactly an uninterrupted run
    assert torch.load(ckpt, weights_only=False)["epoch"] == 2  # a fresh checkpoint took its place


def test_second_corrupt_checkpoint_gets_its_own_name(tmp_path):
    ckpt = tmp_path / "checkpoint.pt"
    for _ in range(2):
        ckpt.write_bytes(b"garbage")
        assert trainer.load_checkpoint(ckpt) is None
    assert len(list(tmp_path.glob("checkpoint.pt.corrupt-*"))) == 2 and not ckpt.exists()


# ------------------------------------------------------------------------------ lr schedules


def test_cosine_schedule_by_hand():
    cfg = make_config("plain", {"lr": 0.1, "epochs": 10, "schedule": "cosine"})
    assert lr_at(cfg, 0) == pytest.approx(0.1)
    assert lr_at(cfg, 5) == pytest.approx(0.05)                   # cos(pi/2) = 0
    assert lr_at(cfg, 2, 0.5) == pytest.approx(0.05 * (1 + math.sqrt(0.5)))  # t = 2.5: cos(pi/4)
    assert lr_at(cfg, 9, 0.999) == pytest.approx(0.0, abs=1e-5)   # -> 0 at the end


def test_step_schedule_by_hand():
    cfg = make_config("plain", {"lr": 0.1, "epochs": 10, "schedule": "step", "milestones": [3, 6], "gamma": 0.1})
    got = [lr_at(cfg, e, 0.5) for e in range(8)]
    assert got == pytest.approx([0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001])


def test_constant_schedule():
    cfg = make_config("plain", {"lr": 0.02, "schedule": "constant"})
    assert {lr_at(cfg, e, s) for e in range(5) for s in (0.0, 0.7)} == {0.02}


def test_warmup_by_hand():
    # LDAM-DRW: lr * e / 5 in (1-based) epochs 1..5, then the schedule (step at 160 and 180)
    cfg = make_config("plain", {"lr": 0.1, "epochs": 200, "schedule": "step", "milestones": [160, 180],
                                "gamma": 0.01, "warmup_epochs": 5})
    assert [lr_at(cfg, e, 0.0) for e in range(6)] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1, 0.1])
    assert lr_at(cfg, 4, 0.99) == pytest.approx(0.1)  # never above lr during warm-up
    assert max(lr_at(cfg, e, s / 10) for e in range(5) for s in range(10)) <= 0.1 + 1e-12
    assert lr_at(cfg, 160) == pytest.approx(0.001) and lr_at(cfg, 185) == pytest.approx(1e-5)
    # warm-up then cosine: the cosine part starts from t = warm-up end
    cos = make_config("plain", {"lr": 0.1, "epochs": 10, "warmup_epochs": 2})
    assert lr_at(cos, 0) == pytest.approx(0.05) and lr_at(cos, 1, 0.5) == pytest.approx(0.1)
    assert lr_at(cos, 5) == pytest.approx(0.05)


def test_unknown_schedule_rejected_by_config():
    with pytest.raises(ValueError, match="schedule"):
        make_config("plain", {"schedule": "exponential"})


# ------------------------------------------------------------------------------ the step (by hand)


class Rows:
    """A training split of feature rows (the interface the trainer iterates)."""

    def __init__(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        self.x, self.labels = x, labels

    def __len__(self) -> int:
        return len(self.labels)

    def resolve_augment(self, augment):
        return "none"

    def iterate(self, batch_size, info, device, *, order=None, train=False, channels_last=False, augment=None):
        for idx in batches(len(self), batch_size, order):
            yield idx, self.x[torch.as_tensor(idx)]


class LinearNet(nn.Module):
    def __init__(self, d: int, c: int) -> None:
        super().__init__()
        self.head = nn.Linear(d, c)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


class TwoGroups(Method):
    """Weights at the scheduled lr, bias at ``bias_scale`` times it."""

    bias_scale = 0.1

    def trainable_parameters(self, model):
        return [{"params": [model.head.weight]}, {"params": [model.head.bias], "lr_scale": self.bias_scale}]


def one_step(method: Method, tmp_path: Path, n: int = 12, d: int = 5):
    """One full-batch SGD step (constant lr 0.5, no momentum, no weight decay) through
    ``trainer.fit``; returns (model before, model after, gradient of the batch loss at the start)."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, d, generator=g) * 3, torch.arange(n) % N_CLASSES
    torch.manual_seed(0)
    model = LinearNet(d, N_CLASSES)
    before = LinearNet(d, N_CLASSES)
    before.load_state_dict(model.state_dict())
    loss = method.create_loss(INFO)(before(x), y, 0)  # mean CE over the (only) batch
    grads = dict(zip(("weight", "bias"), torch.autograd.grad(loss, [before.head.weight, before.head.bias])))
    run = TrainRun(Rows(x, y), Rows(x[:0], y[:0]), INFO, select_device("cpu", 1), 0, tmp_path / "ckpt.pt", "fp",
                   progress=False)
    trainer.fit(method, model, run)
    return before, model, grads


STEP = {"epochs": 1, "batch_size": 64, "lr": 0.5, "schedule": "constant", "momentum": 0.0, "weight_decay": 0.0}


def test_param_group_lr_scale_is_applied(tmp_path):
    before, after, grads = one_step(TwoGroups(make_config("plain", STEP)), tmp_path)
    w_expected = before.head.weight - 0.5 * grads["weight"]
    b_expected = before.head.bias - 0.5 * 0.1 * grads["bias"]
    assert grads["bias"].abs().max() > 1e-3  # the bias does move: the scale is visible
    assert torch.allclose(after.head.weight, w_expected, rtol=1e-5, atol=1e-7)
    assert torch.allclose(after.head.bias, b_expected, rtol=1e-5, atol=1e-7)


def test_grad_clip_scales_the_gradient_to_the_max_norm(tmp_path):
    clip = 0.01
    before, after, grads = one_step(Method(make_config("plain", {**STEP, "grad_clip": clip})), tmp_path)
    norm = torch.sqrt(sum(g.pow(2).sum() for g in grads.values()))
    assert norm > 10 * clip  # the clip is active
    scale = clip / (norm + 1e-6)  # torch's clip_grad_norm_
    for name, g in grads.items():
        expected = getattr(before.head, name) - 0.5 * scale * g
        assert torch.allclose(getattr(after.head, name), expected, rtol=1e-5, atol=1e-7), name
    # and without the clip the full gradient step
    before, after, grads = one_step(Method(make_config("plain", STEP)), tmp_path / "off")
    assert torch.allclose(after.head.weight, before.head.weight - 0.5 * grads["weight"], rtol=1e-5, atol=1e-7)


def test_after_step_sees_the_stepped_weights(tmp_path):
    seen = []

    class Watcher(Method):
        def training_loss(self, model, batch):
            batch.saved["w"] = model.head.weight.detach().clone()
            return super().training_loss(model, batch)

        def after_step(self, model, batch):
            assert not torch.is_grad_enabled()
            seen.append(bool((model.head.weight != batch.saved["w"]).any()))

    one_step(Watcher(make_config("plain", STEP)), tmp_path)
    assert seen == [True]


# ------------------------------------------------------------------------------ model selection


class Scripted(Method):
    """Sets the head, after every step of epoch e, to ``HEADS[e]``: val accuracy by construction
    (one-hot features of class y; a head eye(C) rolled by k predicts y - k)."""

    def after_step(self, model, batch):
        model.head.weight.copy_(SCRIPT[batch.epoch])
        model.head.bias.zero_()


EYE = torch.eye(N_CLASSES)
HALF = EYE[[0, 1, 3, 2]]  # classes 2 and 3 swapped: val accuracy 1/2
# val accuracy per epoch (1-based): 0, 1, 1/2, 1 (a tie with epoch 2, other weights), 1/2
SCRIPT = [EYE.roll(1, 0), EYE, HALF, 2 * EYE, HALF]
VAL_ACC = [0.0, 1.0, 0.5, 1.0, 0.5]


def scripted_fit(ckpt: Path, select: str, kill_epoch: int | None = None):
    method = Scripted(make_config("plain", {**STEP, "epochs": len(SCRIPT), "select": select}))
    if kill_epoch is not None:
        method.training_loss = killed_in_epoch(method.training_loss, kill_epoch)
    x, y = EYE, torch.arange(N_CLASSES)
    torch.manual_seed(0)
    model = LinearNet(N_CLASSES, N_CLASSES)
    run = TrainRun(Rows(x, y), Rows(x, y), INFO, select_device("cpu", 1), 0, ckpt, "fp", progress=False)
    return model, trainer.fit(method, model, run)


def test_best_val_keeps_the_earliest_best_epoch(tmp_path):
    model, history = scripted_fit(tmp_path / "ck.pt", "best_val")
    assert history["val_acc"].tolist() == VAL_ACC
    assert history["selected"].tolist() == [False, True, False, False, False]  # epoch 2, not its tie 4
    assert torch.equal(model.head.weight, EYE)
    # the checkpoint holds the best epoch's weights beside the last ones
    saved = torch.load(tmp_path / "ck.pt", weights_only=False)
    assert saved["best"]["epoch"] == 2 and torch.equal(saved["best"]["model"]["head.weight"], EYE)
    assert torch.equal(saved["model"]["head.weight"], HALF)


def test_last_keeps_the_last_epoch(tmp_path):
    model, history = scripted_fit(tmp_path / "ck.pt", "last")
    assert history["selected"].tolist() == [False, False, False, False, True]
    assert torch.equal(model.head.weight, HALF)


def test_resume_keeps_the_best_so_far(tmp_path):
    ckpt = tmp_path / "ck.pt"
    with pytest.raises(Killed):
        scripted_fit(ckpt, "best_val", kill_epoch=3)  # epochs 1-3 done, best so far epoch 2
    assert torch.load(ckpt, weights_only=False)["best"]["epoch"] == 2
    # the resumed job runs epochs 4 (val 1, a tie) and 5 only: a best forgotten on resume would be epoch 4
    model, history = scripted_fit(ckpt, "best_val")
    assert history["selected"].tolist() == [False, True, False, False, False]
    assert torch.equal(model.head.weight, EYE)


def test_best_val_needs_a_val_split(tmp_path):
    method = Method(make_config("plain", {**STEP, "select": "best_val"}))
    run = TrainRun(Rows(EYE, torch.arange(4)), Rows(EYE[:0], torch.arange(0)), INFO, select_device("cpu", 1), 0,
                   tmp_path / "ck.pt", "fp", progress=False)
    with pytest.raises(ValueError, match="select best_val needs a val split"):
        trainer.fit(method, LinearNet(4, 4), run)
