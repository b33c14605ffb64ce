"""MetaModelNet (Wang, Ramanan & Hebert, "Learning to Model the Tail", NIPS 2017) and its Table 2
ablations (the ``split`` parameter), a classifier stage on the frozen backbone of ``init_from``
(the plain run).

``fit`` works on the parent's cached features only (never on images, never retraining the
backbone); the tensor code is in :mod:`longtail.methods.metamodelnet.metanet`:
1. base learner g(x; theta): per class a one-vs-rest logistic regression over standardised
   features (its k positives against a class-balanced negative pool, both sides weighted 1/2, L2
   ``l2``). theta* (the many-shot target) of every class is this learner on *all* of the class's
   training images, refitted on the features rather than taken from the parent's softmax head, so
   targets and few-shot models live in the same parameter space (the parent's head was trained
   jointly with the backbone under another loss, so its rows differ in scale and bias).
   ``targets: backbone_head`` takes theta* from that head instead (the paper's theta* are the
   base network's many-shot classifier rows); the tail's inputs theta_n stay base-learner fits;
2. the few-shot bank: S random k-subsets per head class and k = 2^i, fitted in one batched solve;
3. the meta-network (residual chain for ``split`` recur / fix, one MLP for ``split: regression``)
   trained back to front (:func:`longtail.methods.metamodelnet.metanet.stage_plan`);
4. the final classifier: classes with n <= tail_threshold get F(theta_n) entering at block
   floor(log2 n); the others keep theta*. Folded into the raw-feature Linear head.
   ``apply_metanet: false`` stops after step 1: theta* for every class (the classifier alone).
History: one row per training stage (epoch = stage); the log also prints the val accuracy of the
parent head, of the refitted base learner alone (no meta-network) and of the final classifier.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import metanet as M
from ...data import DatasetInfo
from ...trainer import HISTORY_COLUMNS, TrainRun, mark_selected
from .. import register_method
from ..frozen import FrozenBackboneMethod, sub_state


class MetaModelNetHead(nn.Linear):
    """The final linear classifier (weight/bias on raw features) plus what made it: the
    standardisation (mean, scale), the targets theta* (C, D+1), the class counts and the trained
    meta-network ``metanet`` (figures re-run it; inference uses only the Linear part)."""

    def __init__(self, dim: int, num_classes: int, metanet: nn.Module) -> None:
        super().__init__(dim, num_classes)
        self.metanet = metanet
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        self.register_buffer("theta_star", torch.zeros(num_classes, dim + 1))
        self.register_buffer("counts", torch.zeros(num_classes, dtype=torch.long))


def build_metanet(cfg, dim: int) -> nn.Module:
    """The chain (recur / fix) or the regressor (regression) over theta in R^(dim+1)."""
    d = dim + 1
    if cfg.split == "regression":
        return M.Regressor(d, cfg.hidden, cfg.regressor_depth, cfg.leaky_slope)
    return M.ResidualChain(d, cfg.num_blocks, cfg.hidden, cfg.block_depth, cfg.leaky_slope)


def thresholds(cfg) -> tuple[int, int]:
    """(head_threshold of fix/regression, tail_threshold): defaults 2^num_blocks = 2^(N+1), the
    head split of the last block, so every variant replaces the same tail classes."""
    head = cfg.head_threshold if cfg.head_threshold is not None else 2 ** cfg.num_blocks
    tail = cfg.tail_threshold if cfg.tail_threshold is not None else (
        2 ** cfg.num_blocks if cfg.split == "recur" else head)
    return head, tail


@register_method("metamodelnet")
class MetaModelNet(FrozenBackboneMethod):
    """MetaModelNet on the parent's frozen backbone; ``split`` selects the full method (recur) or a
    Table 2 ablation (fix, regression)."""

    def build_head(self, dim: int, info: DatasetInfo) -> nn.Module:
        return MetaModelNetHead(dim, info.num_classes, build_metanet(self.cfg, dim))

    def init_head(self, head: nn.Module, parent: Mapping, info: DatasetInfo) -> None:
        # the parent's logits, kept only to log its val accuracy beside ours
        self._parent_head = sub_state(parent["model"], "head.")

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return list(model.head.metanet.parameters())

    def fit(self, model: nn.Module, run: TrainRun) -> pd.DataFrame:
        t0 = time.perf_counter()
        cfg, dev = self.cfg, run.device.device
        x, y = self.features(run, "train")
        y_np = y.cpu().numpy()
        C = run.info.num_classes
        counts = np.bincount(y_np, minlength=C)
        rng = np.random.default_rng(run.seed)
        gen = torch.Generator().manual_seed(run.seed)
        torch.manual_seed(run.seed)
        mean, scale = M.standardiser(x)
        z = M.augment(x, mean, scale)
        pool = M.negative_pool(y_np, cfg.negatives_per_class, rng, cfg.max_negatives)
        head_t, tail_t = thresholds(cfg)
        present = [c for c in range(C) if counts[c] > 0]
        full_spec = M.draw_subsets(y_np, [(c, counts[c], 1) for c in present], rng)
        split = "recur" if cfg.split == "recur" else "fix"
        bank_spec = (M.draw_subsets(y_np, M.bank_requests(counts, cfg.num_blocks, cfg.subsets, split, head_t), rng)
                     if cfg.apply_metanet else M.draw_subsets(y_np, [], rng))
        spec = M.BankSpec.concat([full_spec, bank_spec])
        theta_all, info = M.fit_bank(z, y, pool, spec, cfg.l2, cfg.solver_iters, cfg.solver_tol)
        # theta_n: each class's base learner on all of its n images (the tail's input to F)
        theta_n = torch.zeros(C, z.shape[1], device=dev)
        theta_n[torch.as_tensor(present, device=dev)] = theta_all[:len(full_spec)]
        bank = theta_all[len(full_spec):]
        theta_star = theta_n if cfg.targets == "refit" else self._backbone_targets(mean, scale, dev)
        print(f"bank: {len(bank_spec)} few-shot models + {len(full_spec)} all-data models, {len(pool)} negatives; "
              f"{info.iterations} iterations, {100 * info.converged:.1f} % converged, {info.seconds:.2f} s; "
              f"targets: {cfg.targets}", file=sys.stderr)
        plan = M.stage_plan(cfg.num_blocks, cfg.split, head_t)
        net = model.head.metanet.to(dev)
        tail = torch.as_tensor((counts <= tail_t) & (counts > 0), device=dev)
        theta = theta_star.clone()
        rows: list[dict] = []
        if cfg.apply_metanet:
            # task-loss data: a class-balanced subsample of the training features
            task_idx = np.concatenate([rng.choice(np.flatnonzero(y_np == c), min(cfg.task_per_class, counts[c]),
                                                  replace=False) for c in present])
            data = M.TrainData(bank, torch.as_tensor(bank_spec.model_class, device=dev),
                               torch.as_tensor(bank_spec.model_k, device=dev), theta_star,
                               torch.as_tensor(counts, device=dev), z[torch.as_tensor(task_idx, device=dev)],
                               y[torch.as_tensor(task_idx, device=dev)])
            mcfg = M.MetaTrainConfig(cfg.steps, cfg.batch, cfg.lr, cfg.finetune_lr_scale, cfg.weight_decay,
                                     cfg.task_weight)
            rows = M.train_metanet(net, data, plan, mcfg, gen)
            # final classifier: tail rows F(theta_n) entering at floor(log2 n), head rows theta*
            if bool(tail.any()):
                theta[tail] = M.transform(net, theta_n[tail], torch.as_tensor(counts, device=dev)[tail])
        else:
            plan = plan[:1]  # the classifier alone: one history row, no meta-network stage
            tail = torch.zeros_like(tail)
        w, b = M.fold_standardisation(theta, mean, scale)
        head = model.head
        with torch.no_grad():
            head.weight.copy_(w)
            head.bias.copy_(b)
            head.mean.copy_(mean)
            head.scale.copy_(scale)
            head.theta_star.copy_(theta_star)
            head.counts.copy_(torch.as_tensor(counts))
        accs = self._val_report(run, dev, theta_star, theta, mean, scale, x, y)
        print("val accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in accs.items()) +
              f"; tail classes (n <= {tail_t}): {np.flatnonzero(tail.cpu().numpy()).tolist()}", file=sys.stderr)
        hist = []
        for si in range(len(plan)):
            last = [r for r in rows if r["stage"] == si]
            hist.append({"epoch": si + 1, "loss": last[-1]["loss"] if last else math.nan,
                         "train_acc": math.nan, "val_acc": accs["final"] if si == len(plan) - 1 else math.nan,
                         # a stage without meta-network steps (the classifier alone) trained nothing:
                         # NaN lr, as the training-free methods write, so no NaN loss reads as a divergence
                         "lr": cfg.lr if last else math.nan, "seconds": time.perf_counter() - t0})
        for r in rows:
            print(f"stage {r['stage']} block {r['block']} step {r['step']}: loss {r['loss']:.4f} "
                  f"(regression {r['regression']:.4f}, task {r['task']:.4f}, {r['models']} models)", file=sys.stderr)
        return mark_selected(pd.DataFrame(hist, columns=list(HISTORY_COLUMNS)))

    def _backbone_targets(self, mean: torch.Tensor, scale: torch.Tensor, dev) -> torch.Tensor:
        """theta* = the parent's trained linear head (W, b) on standardised features: W x + b =
        (W * scale) z + (b + W . mean), so theta* = [W * scale, b + W mean] (C, D+1)."""
        ph = getattr(self, "_parent_head", {})
        if set(ph) != {"weight", "bias"}:
            raise ValueError("targets: backbone_head needs a parent with a linear head (weight and bias); "
                             f"the parent's head has {sorted(ph)}")
        w, b = ph["weight"].to(dev).float(), ph["bias"].to(dev).float()
        return torch.cat([w * scale, (b + w @ mean)[:, None]], 1)

    def _val_report(self, run: TrainRun, dev, theta_star, theta, mean, scale, x, y) -> dict[str, float]:
        if "val" not in run.parent_features or len(run.parent_features["val"][1]) == 0:
            return {"final": math.nan}
        xv, yv = self.features(run, "val")
        zv = M.augment(xv, mean, scale)
        out = {}
        ph = getattr(self, "_parent_head", {})
        if "weight" in ph and "bias" in ph:
            out["parent head"] = float(((xv @ ph["weight"].to(dev).T + ph["bias"].to(dev)).argmax(1) == yv)
                                       .float().mean())
        out["base learner (theta*, no meta-net)"] = float(((zv @ theta_star.T).argmax(1) == yv).float().mean())
        out["final"] = float(((zv @ theta.T).argmax(1) == yv).float().mean())
        return out
