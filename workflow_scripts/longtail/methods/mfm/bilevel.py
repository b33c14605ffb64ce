"""The online one-loop bilevel step shared by MFM, MW-Net and L2RW (MFM Algorithm 1, Eqs. 5-7).

At every training step t, with classifier weights w and meta-parameters phi:

1. virtual step (Eq. 5): w_hat(phi) = w - alpha * (grad_w L_train(w, phi) + wd * w) with
   wd = ``virtual_weight_decay`` (0: Eq. 5 and MW-Net's code), kept as a differentiable function of phi (``create_graph=True``) and evaluated with
   ``torch.func.functional_call`` on the real module (no hand-copied model);
2. meta step (Eq. 6): phi <- phi - eta * grad_phi L_meta(w_hat(phi)) on a balanced meta batch
   (the meta forward is the plain, unmodulated / unweighted network);
3. real step (Eq. 7): w <- SGD step of L_train(w, phi_new), phi_new held fixed.

A method supplies a :class:`MetaLearner` that says how the training loss depends on phi and how
phi is updated; this module owns steps 1-2 and the loss of step 3 (:func:`bilevel_loss`), and the
shared trainer takes the real step on that loss (its optimiser, AMP and clipping). Batch-norm
running statistics are updated by the real step only: the virtual and meta forwards run on
copies of the buffers.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ...data import Augment, DatasetInfo, SplitData

Params = dict[str, torch.Tensor]


class MetaLearner:
    """What differs between bilevel methods.

    ``train_loss(model, params, buffers, x, y, epoch, loss_fn, ctx)`` -> (loss, logits): the
    training loss as a function of the classifier weights ``params`` (None: the module's own
    weights, for the real step) and of the meta-parameters (differentiable w.r.t.
    ``meta_tensors()``). ``ctx`` is a dict the learner may fill in ``prepare`` and reuse in both
    calls of a step (e.g. MFM's soft labels). ``meta_update(grads)`` applies Eq. 6.
    """

    def prepare(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: dict) -> None:
        """Per-step work shared by the virtual and the real step (default: none)."""

    def meta_tensors(self) -> Sequence[torch.Tensor]:
        raise NotImplementedError

    def train_loss(self, model: nn.Module, params: Params | None, buffers: Params | None, x: torch.Tensor,
                   y: torch.Tensor, epoch: int, loss_fn: nn.Module, ctx: dict,
                   meta: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``meta=True``: the virtual step (keep phi in the graph); False: the real step (phi fixed)."""
        raise NotImplementedError

    def meta_update(self, grads: Sequence[torch.Tensor], ctx: dict) -> None:
        raise NotImplementedError


def classifier_params(model: nn.Module, trainable: Sequence[nn.Parameter]) -> Params:
    """Named classifier weights (those the classifier optimiser steps), by module path."""
    ids = {id(p) for p in trainable}
    return {n: p for n, p in model.named_parameters() if id(p) in ids}


def buffer_copies(model: nn.Module) -> Params:
    """Copies of the module's buffers (BN running stats), so forwards through them leave the
    module's own statistics untouched."""
    return {n: b.detach().clone() for n, b in model.named_buffers()}


def forward_with(model: nn.Module, params: Params | None, buffers: Params | None, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` with weights/buffers substituted (``functional_call``); plain call when both None."""
    if params is None and buffers is None:
        return model(x)
    return functional_call(model, {**(buffers or {}), **(params or {})}, (x,), strict=False)


def virtual_step(params: Params, loss: torch.Tensor, lr: float, weight_decay: float = 0.0) -> Params:
    """Eq. 5: one SGD step of ``params`` on ``loss`` that stays differentiable w.r.t. whatever
    ``loss`` depends on besides the params (phi); optional weight decay (L2 added to the
    gradient, as torch's SGD does), no momentum."""
    names = list(params)
    grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=True, allow_unused=True)
    out = {}
    for n, g in zip(names, grads):
        p = params[n]
        g = torch.zeros_like(p) if g is None else g
        out[n] = p - lr * (g + weight_decay * p)
    return out


def meta_loss(model: nn.Module, params: Params, buffers: Params, xv: torch.Tensor, yv: torch.Tensor) -> torch.Tensor:
    """Eq. 3 / 6: mean cross-entropy of the virtually updated, plain network on a meta batch."""
    return F.cross_entropy(forward_with(model, params, buffers, xv).float(), yv)


def meta_gradient(model: nn.Module, learner: MetaLearner, params: Params, x: torch.Tensor, y: torch.Tensor,
                  xv: torch.Tensor, yv: torch.Tensor, epoch: int, loss_fn: nn.Module, lr: float,
                  weight_decay: float, ctx: dict) -> tuple[list[torch.Tensor], torch.Tensor]:
    """grad_phi L_meta(w_hat(phi)) (Eqs. 5-6) and the meta loss; nothing is updated."""
    loss, _ = learner.train_loss(model, params, buffer_copies(model), x, y, epoch, loss_fn, ctx, meta=True)
    updated = virtual_step(params, loss, lr, weight_decay)
    lm = meta_loss(model, updated, buffer_copies(model), xv, yv)
    tensors = list(learner.meta_tensors())
    grads = torch.autograd.grad(lm, tensors, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads)], lm.detach()


def meta_step(model: nn.Module, learner: MetaLearner, x: torch.Tensor, y: torch.Tensor, xv: torch.Tensor,
              yv: torch.Tensor, epoch: int, loss_fn: nn.Module, lr: float, weight_decay: float,
              trainable: Sequence[nn.Parameter], ctx: dict) -> dict:
    """Algorithm 1, lines 5-6: the learner's per-step preparation, the virtual step at step size
    ``lr`` and the update of phi; returns ``ctx`` (with ``meta_loss``). Runs in float32 whatever
    the caller's autocast: the second-order meta-gradient underflows under fp16."""
    params = classifier_params(model, trainable)
    with torch.autocast(x.device.type, enabled=False):
        learner.prepare(model, x, y, ctx)
        grads, lm = meta_gradient(model, learner, params, x, y, xv, yv, epoch, loss_fn, lr, weight_decay, ctx)
        learner.meta_update(grads, ctx)
    ctx["meta_loss"] = float(lm)
    return ctx


def bilevel_loss(model: nn.Module, learner: MetaLearner, x: torch.Tensor, y: torch.Tensor, xv: torch.Tensor,
                 yv: torch.Tensor, epoch: int, loss_fn: nn.Module, lr: float, weight_decay: float,
                 trainable: Sequence[nn.Parameter], ctx: dict | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Algorithm 1 up to the real step: :func:`meta_step`, then (loss, logits) of the training
    batch at the new phi (Eq. 7), for the caller's SGD step on ``trainable``; also returns ctx."""
    ctx = meta_step(model, learner, x, y, xv, yv, epoch, loss_fn, lr, weight_decay, trainable,
                    {} if ctx is None else ctx)
    loss, logits = learner.train_loss(model, None, None, x, y, epoch, loss_fn, ctx, meta=False)
    return loss, logits, ctx


class MetaBatches:
    """Balanced meta batches drawn from the meta split, reproducibly per (seed, epoch, batch):
    a resumed run sees the same meta batches as an uninterrupted one."""

    def __init__(self, meta: SplitData, info: DatasetInfo, device: torch.device, batch_size: int, seed: int,
                 channels_last: bool = False, augment: str = "none") -> None:
        if meta is None or len(meta) == 0:
            raise ValueError("this method needs a balanced meta set: set curation.meta_per_class > 0 "
                             "(meta_mode disjoint or development) for the dataset")
        self.meta, self.info, self.device = meta, info, device
        self.batch_size, self.seed, self.channels_last = min(batch_size, len(meta)), seed, channels_last
        # the training augmentation, as MW-Net's code gives its meta loader the train transform
        self.augment = augment

    def get(self, epoch: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        key = (self.seed, epoch, batch, 7)
        order = np.random.default_rng(list(key)).choice(len(self.meta), self.batch_size, replace=False)
        idx, xv = next(iter(self.meta.iterate(self.batch_size, self.info, self.device, order=order, train=True,
                                              channels_last=self.channels_last, augment=Augment(self.augment, key))))
        return xv, self.meta.labels[idx].to(self.device)


def make_meta_optimizer(kind: str, params: Sequence[torch.Tensor], lr: float,
                        weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Optimiser of the meta-parameters (Eq. 6 is SGD; Adam is MW-Net's practical choice)."""
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown meta_optimizer '{kind}'; choose adam or sgd")


def apply_grads(optimizer: torch.optim.Optimizer, tensors: Sequence[torch.Tensor],
                grads: Sequence[torch.Tensor]) -> None:
    """Set ``.grad`` of the meta-parameters and step their optimiser."""
    optimizer.zero_grad(set_to_none=True)
    for t, g in zip(tensors, grads):
        t.grad = g.detach()
    optimizer.step()
