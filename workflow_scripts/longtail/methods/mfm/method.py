"""Meta feature modulator (MFM) and the meta re-weighting baselines on the same bilevel engine.

``mfm`` (``modulator: net``, the modulator network of Eq. 4, or ``modulator: phi``, per-sample
phi_i of Eqs. 2-3), ``mw_net`` (Meta-Weight-Net, Shu et al. 2019) and ``l2rw`` (learning to
re-weight, Ren et al. 2018) differ only in their :class:`~longtail.methods.mfm.bilevel.MetaLearner`.
Their ``training_loss`` hook runs Algorithm 1's virtual and meta steps
(:func:`longtail.methods.mfm.bilevel.bilevel_loss`) and returns the loss of the real step, which
the shared trainer takes.

Choices where the paper is silent (all documented in the configs):
- Which output is modulated: the output of the named module (e.g. ``backbone.fc`` pre-ReLU,
  ``backbone.layer3`` = the last residual stage's output), channel-wise (B, C, H, W) or
  neuron-wise (B, C): out * gamma[:, :, None, None] + beta[:, :, None, None] (Eq. 1).
- The modulator's last linear layer (and the phi table) start at zero, so training starts from
  the identity modulation: C * softmax(0) = 1 and beta = 0.
- The soft label y_hat (Eq. 4) is softmax of the unmodulated network on the same training batch,
  in train mode, detached (Eq. 5 writes it at w^(t)); it is computed once per step and reused by
  the virtual and the real step (w is the same at both).
- Multi-layer modulation: one output vector, halved into gamma-hat and beta-hat, each split
  per layer (Sec. 3.2); C * softmax is applied per layer with that layer's C.
- Meta-parameters are stored as a submodule ``meta_learner`` of the network, so they are saved
  in model.pt (transfer, figures); the network's ``forward`` never calls it, so inference is the
  plain network (no modulation, no re-weighting).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ... import trainer
from ...data import DatasetInfo, SplitData
from ...trainer import TrainBatch, TrainRun
from .. import register_method
from ..base import Method
from .bilevel import (
    MetaBatches,
    MetaLearner,
    Params,
    apply_grads,
    bilevel_loss,
    buffer_copies,
    forward_with,
    make_meta_optimizer,
)

META = "meta_learner"  # submodule name of the meta-parameters inside the classifier


# --- modulation (Eq. 1) --------------------------------------------------------------------------
def output_channels(module: nn.Module) -> int:
    """Channels (conv) or neurons (fc) of a module's output, read from its last layer that
    declares them (a residual block's last BN / projection, a stage's last block, ...)."""
    for m in reversed(list(module.modules())):
        for attr in ("out_channels", "out_features", "num_features"):
            if hasattr(m, attr):
                return int(getattr(m, attr))
    raise ValueError(f"cannot tell the output channels of {type(module).__name__}; modulate a conv, "
                     "linear, norm layer or a block ending in one")


def modulate(out: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Eq. 1: gamma (.) out (+) beta, channel-wise on (B, C, H, W) maps, neuron-wise on (B, C)."""
    shape = (out.shape[0], out.shape[1]) + (1,) * (out.ndim - 2)
    return out * gamma.reshape(shape).to(out.dtype) + beta.reshape(shape).to(out.dtype)


class Modulation:
    """Forward hooks that modulate the outputs of named layers, installed only inside
    :meth:`active` (training forwards); every other forward is the plain network."""

    def __init__(self, model: nn.Module, layers: Sequence[str]) -> None:
        names = dict(model.named_modules())
        missing = [n for n in layers if n not in names]
        if missing:
            conv_fc = [n for n, m in names.items() if isinstance(m, (nn.Conv2d, nn.Linear)) or n.count(".") == 1]
            raise ValueError(f"layers: no module named {missing}; modules include {conv_fc[:30]}")
        self.layers = list(layers)
        self.modules = [names[n] for n in layers]
        self.channels = [output_channels(m) for m in self.modules]

    @contextlib.contextmanager
    def active(self, gammas: Sequence[torch.Tensor], betas: Sequence[torch.Tensor]) -> Iterator[None]:
        """gammas[l], betas[l]: (B, C_l) for layer l."""
        handles = [m.register_forward_hook(_hook(g, b)) for m, g, b in zip(self.modules, gammas, betas)]
        try:
            yield
        finally:
            for h in handles:
                h.remove()


def _hook(gamma: torch.Tensor, beta: torch.Tensor):
    def hook(module: nn.Module, inputs: Any, out: torch.Tensor) -> torch.Tensor:
        if out.shape[1] != gamma.shape[1]:
            raise ValueError(f"modulation has {gamma.shape[1]} channels, {type(module).__name__} outputs {out.shape[1]}")
        return modulate(out, gamma, beta)

    return hook


def split_modulation(g_raw: torch.Tensor, b_raw: torch.Tensor, channels: Sequence[int], activation: str,
                     learn_gamma: bool = True, learn_beta: bool = True) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Raw (B, sum C_l) vectors -> per-layer gamma (C_l * softmax, appendix A.2, or 1 + raw) and
    beta (unconstrained); gamma := 1 / beta := 0 when not learned (ablations)."""
    gammas, betas = [], []
    for g, b, c in zip(g_raw.split(list(channels), 1), b_raw.split(list(channels), 1), channels):
        if not learn_gamma:
            g = torch.ones_like(g)
        elif activation == "softmax":
            g = c * torch.softmax(g, dim=1)  # mean 1 over the layer's C channels
        else:
            g = 1.0 + g
        gammas.append(g)
        betas.append(b if learn_beta else torch.zeros_like(b))
    return gammas, betas


# --- the modulator network (Eq. 4, appendix A) --------------------------------------------------
class WeightHashing(nn.Module):
    """Parameter-free weight-hashing layer (appendix A.1): theta(i) = x(kappa(i)) * zeta(i), i.e.
    theta = W x with W(i, j) = zeta(i) [j = kappa(i)] fixed at construction (buffers, no
    parameters). kappa covers every input coefficient once before drawing the rest at random
    (when d >= m), so no compressed coefficient is wasted; zeta is a random sign."""

    def __init__(self, m: int, d: int, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        base = torch.arange(m) if d >= m else torch.empty(0, dtype=torch.long)
        kappa = torch.cat([base, torch.randint(m, (d - len(base),), generator=g)])
        kappa = kappa[torch.randperm(d, generator=g)]
        zeta = torch.randint(0, 2, (d,), generator=g).float() * 2 - 1
        self.register_buffer("kappa", kappa)
        self.register_buffer("zeta", zeta)
        self.m, self.d = m, d

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, m) -> (B, d)
        return x[:, self.kappa] * self.zeta

    def matrix(self) -> torch.Tensor:
        """The (d, m) hashing matrix W."""
        w = torch.zeros(self.d, self.m)
        w[torch.arange(self.d), self.kappa] = self.zeta
        return w


class ModulatorNet(nn.Module):
    """M(y_hat; phi): MLP num_classes -> hidden -> 2 * out (ReLU), halved into gamma-hat and
    beta-hat, optionally decompressed by two weight-hashing maps (out = hash_dim) to sum C_l each."""

    def __init__(self, num_classes: int, channels: Sequence[int], hidden: int = 100, hash_dim: int = 0,
                 hash_seed: int = 0) -> None:
        super().__init__()
        self.channels = list(channels)
        total = sum(self.channels)
        out = hash_dim if hash_dim else total
        self.mlp = nn.Sequential(nn.Linear(num_classes, hidden), nn.ReLU(), nn.Linear(hidden, 2 * out))
        nn.init.zeros_(self.mlp[2].weight)  # identity modulation at the start (module docstring)
        nn.init.zeros_(self.mlp[2].bias)
        self.hash_gamma = WeightHashing(hash_dim, total, hash_seed) if hash_dim else None
        self.hash_beta = WeightHashing(hash_dim, total, hash_seed + 1) if hash_dim else None

    def forward(self, soft: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Soft labels (B, num_classes) -> raw gamma, beta (B, sum C_l) each."""
        g, b = self.mlp(soft).chunk(2, dim=1)
        if self.hash_gamma is not None:
            g, b = self.hash_gamma(g), self.hash_beta(b)
        return g, b


class PhiTable(nn.Module):
    """Per-sample raw modulation parameters (N_train, 2 * sum C_l), zero = identity (Eqs. 2-3)."""

    def __init__(self, n: int, channels: Sequence[int]) -> None:
        super().__init__()
        self.channels = list(channels)
        self.raw = nn.Parameter(torch.zeros(n, 2 * sum(channels)))

    def rows(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.raw[idx].chunk(2, dim=1)


# --- learners --------------------------------------------------------------------------------
def soft_labels(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """y_hat of the unmodulated network (train mode, BN statistics untouched), detached."""
    with torch.no_grad():
        return torch.softmax(forward_with(model, None, buffer_copies(model), x).float(), dim=1)


class ModulationLearner(MetaLearner):
    """MFM: phi modulates the training forward (Eq. 2); the meta forward is plain (Eq. 3)."""

    def __init__(self, cfg: Any, modulation: Modulation, table: nn.Module, optimizer: torch.optim.Optimizer | None):
        self.cfg, self.modulation, self.table, self.optimizer = cfg, modulation, table, optimizer

    def raw(self, ctx: dict) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def gamma_beta(self, ctx: dict) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        g, b = self.raw(ctx)
        return split_modulation(g, b, self.modulation.channels, self.cfg.gamma_activation,
                                self.cfg.learn_gamma, self.cfg.learn_beta)

    def train_loss(self, model: nn.Module, params: Params | None, buffers: Params | None, x: torch.Tensor,
                   y: torch.Tensor, epoch: int, loss_fn: nn.Module, ctx: dict,
                   meta: bool) -> tuple[torch.Tensor, torch.Tensor]:
        with contextlib.nullcontext() if meta else torch.no_grad():
            gammas, betas = self.gamma_beta(ctx)
        with self.modulation.active(gammas, betas):
            logits = forward_with(model, params, buffers, x)
        return loss_fn(logits, y, epoch), logits


class NetLearner(ModulationLearner):
    """``modulator: net``: phi = parameters of the modulator network, {gamma_i, beta_i} = M(y_hat_i; phi) (Eq. 4)."""

    def prepare(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: dict) -> None:
        ctx["soft"] = soft_labels(model, x)

    def raw(self, ctx: dict) -> tuple[torch.Tensor, torch.Tensor]:
        soft = ctx["soft"]
        return self.table(soft.to(self.table.mlp[0].weight.dtype))  # float32 soft labels under AMP

    def meta_tensors(self) -> list[torch.Tensor]:
        return list(self.table.parameters())

    def meta_update(self, grads: Sequence[torch.Tensor], ctx: dict) -> None:
        apply_grads(self.optimizer, self.meta_tensors(), grads)


class PhiLearner(ModulationLearner):
    """``modulator: phi``: phi_i are rows of a table indexed by training sample (Eqs. 2-3); the rows of
    the batch are a leaf of the virtual step and updated by SGD (Eq. 6)."""

    def prepare(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: dict) -> None:
        idx = torch.as_tensor(ctx["idx"], device=self.table.raw.device, dtype=torch.long)
        ctx["idx_t"] = idx
        ctx["rows"] = self.table.raw.detach()[idx].clone().requires_grad_(True)

    def raw(self, ctx: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return ctx["rows"].chunk(2, dim=1)

    def meta_tensors(self) -> list[torch.Tensor]:
        raise RuntimeError("PhiLearner's meta tensors live in ctx")

    def meta_update(self, grads: Sequence[torch.Tensor], ctx: dict) -> None:
        with torch.no_grad():
            new = ctx["rows"].detach() - self.cfg.meta_lr * grads[0]
            self.table.raw.index_copy_(0, ctx["idx_t"], new)
        ctx["rows"] = new


class FrozenNetLearner(NetLearner):
    """Transfer (Table 3, C -> F): a frozen modulator from another run, no meta-learning."""


class MWNetLearner(MetaLearner):
    """Meta-Weight-Net: loss of sample i weighted by V(l_i; phi) (MLP 1 -> h -> 1, sigmoid);
    V's input is the detached loss value, the training loss is sum_i V_i l_i / n."""

    def __init__(self, vnet: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.vnet, self.optimizer = vnet, optimizer

    def meta_tensors(self) -> list[torch.Tensor]:
        return list(self.vnet.parameters())

    def train_loss(self, model, params, buffers, x, y, epoch, loss_fn, ctx, meta):  # noqa: D102 (see base)
        logits = forward_with(model, params, buffers, x)
        per = F.cross_entropy(logits.float(), y, reduction="none")  # (n,)
        with contextlib.nullcontext() if meta else torch.no_grad():
            v = self.vnet(per.detach()[:, None]).squeeze(1)
        ctx["weights"] = v.detach()
        return (v * per).sum() / len(per), logits

    def meta_update(self, grads: Sequence[torch.Tensor], ctx: dict) -> None:
        apply_grads(self.optimizer, self.meta_tensors(), grads)


class L2RWLearner(MetaLearner):
    """Learning to re-weight: eps = 0 (n,) is the meta-parameter of the virtual step; the real
    step weights are w = max(-grad_eps L_meta, 0) / sum (zeros when the sum is 0)."""

    def prepare(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: dict) -> None:
        ctx["eps"] = torch.zeros(len(y), device=y.device, requires_grad=True)

    def meta_tensors(self) -> list[torch.Tensor]:
        raise RuntimeError("L2RW's eps lives in ctx")

    def train_loss(self, model, params, buffers, x, y, epoch, loss_fn, ctx, meta):  # noqa: D102 (see base)
        logits = forward_with(model, params, buffers, x)
        per = F.cross_entropy(logits.float(), y, reduction="none")
        w = ctx["eps"] if meta else ctx["weights"]
        return (w * per).sum(), logits

    def meta_update(self, grads: Sequence[torch.Tensor], ctx: dict) -> None:
        w = torch.clamp(-grads[0].detach(), min=0.0)
        s = w.sum()
        ctx["weights"] = w / s if float(s) > 0 else w


class _CtxLearner(MetaLearner):
    """Adapter: learners whose meta tensors live in the step's ctx (phi rows, eps)."""

    def __init__(self, inner: MetaLearner, key: str) -> None:
        self.inner, self.key = inner, key
        self.ctx: dict = {}

    def prepare(self, model, x, y, ctx):  # noqa: D102
        self.ctx = ctx
        self.inner.prepare(model, x, y, ctx)

    def meta_tensors(self):  # noqa: D102
        return [self.ctx[self.key]]

    def train_loss(self, *args, **kwargs):  # noqa: D102
        return self.inner.train_loss(*args, **kwargs)

    def meta_update(self, grads, ctx):  # noqa: D102
        self.inner.meta_update(grads, ctx)


# --- methods ---------------------------------------------------------------------------------
class BilevelMethod(Method):
    """A classifier trained by the bilevel engine; meta-parameters in ``model.meta_learner``.
    ``fit`` calls :meth:`setup` (the run's learner and meta batches), then the shared trainer,
    whose ``training_loss`` hook is Algorithm 1 up to the real step."""

    def build_meta(self, model: nn.Module, info: DatasetInfo) -> nn.Module | None:
        return None

    def build_model(self, info: DatasetInfo) -> nn.Module:
        model = super().build_model(info)
        meta = self.build_meta(model, info)
        if meta is not None:
            model.add_module(META, meta)
        return model

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        skip = {id(p) for p in getattr(model, META).parameters()} if hasattr(model, META) else set()
        return [p for p in model.parameters() if p.requires_grad and id(p) not in skip]

    def make_learner(self, model: nn.Module, run: TrainRun) -> MetaLearner:
        raise NotImplementedError

    def setup(self, model: nn.Module, run: TrainRun) -> None:
        """Per training run, before the first step: the learner (it holds phi's optimiser) and the
        balanced meta batches."""
        self.learner = self.make_learner(model, run)
        self.trainable = self.trainable_parameters(model)
        dev = run.device
        augment = run.train.resolve_augment(self.cfg.augment)
        self.metas = MetaBatches(run.meta, run.info, dev.device, self.cfg.meta_batch_size, run.seed,
                                 dev.channels_last, augment)

    def meta_optimizer(self) -> torch.optim.Optimizer | None:
        """The optimiser of phi (None: no persistent meta-parameters, or a stateless update)."""
        learner = getattr(self, "learner", None)
        learner = getattr(learner, "inner", learner)  # _CtxLearner wraps PhiLearner / L2RWLearner
        return getattr(learner, "optimizer", None)

    def training_state(self) -> dict[str, Any]:
        """The meta optimiser's state (Adam's moments of the modulator / weighting net): without
        it a resumed run would restart them and drift from an uninterrupted one."""
        opt = self.meta_optimizer()
        return {} if opt is None else {"meta_optimizer": opt.state_dict()}

    def load_training_state(self, state: Mapping[str, Any]) -> None:
        opt = self.meta_optimizer()
        if opt is not None:
            opt.load_state_dict(state["meta_optimizer"])

    def training_loss(self, model: nn.Module, batch: TrainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Algorithm 1 on a training batch and its meta batch: the virtual and meta steps (lines
        5-6) here, the real step's loss (line 7) returned for the trainer to step."""
        xv, yv = self.metas.get(batch.epoch, batch.index)
        lr = self.cfg.virtual_lr if self.cfg.virtual_lr is not None else batch.lr
        loss, logits, _ = bilevel_loss(model, self.learner, batch.x, batch.y, xv, yv, batch.epoch, batch.loss_fn,
                                       float(lr), float(self.cfg.virtual_weight_decay), self.trainable,
                                       {"idx": batch.idx})
        return loss, logits

    def fit(self, model: nn.Module, run: TrainRun) -> pd.DataFrame:
        self.setup(model, run)
        return trainer.fit(self, model, run)


@register_method("mfm")
class MFM(BilevelMethod):
    """MFM with the modulator network (``modulator: net``, Eq. 4, optional weight hashing, A.1) or
    per-sample phi_i (``modulator: phi``, Eqs. 2-3, rows indexed by training-sample position).
    With ``modulator_from`` it trains with another run's frozen modulator instead (Table 3)."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.requires_parent = cfg.modulator_from is not None  # the source run's model.pt

    def modulation(self, model: nn.Module) -> Modulation:
        return Modulation(model, self.cfg.layers)

    def build_meta(self, model: nn.Module, info: DatasetInfo) -> nn.Module:
        c = self.cfg
        if c.modulator == "phi":
            return PhiTable(int(sum(info.class_counts)), self.modulation(model).channels)
        return ModulatorNet(info.num_classes, self.modulation(model).channels, c.hidden, c.hash_dim, c.hash_seed)

    def init_model(self, model: nn.Module, parent: Mapping | None) -> None:
        """With ``modulator_from``: copy only the source run's modulator (the classifier starts
        fresh); shapes must agree (same classes and modulated channels)."""
        if self.cfg.modulator_from is None or parent is None:
            return super().init_model(model, parent)
        if parent.get("method") != "mfm" or (parent.get("config") or {}).get("modulator", "net") != "net":
            raise ValueError(f"modulator_from: the source run was trained with '{parent.get('method')}', "
                             "not mfm with a modulator network")
        src = {k[len(META) + 1:]: v for k, v in parent["model"].items() if k.startswith(META + ".")}
        mod = getattr(model, META)
        own = mod.state_dict()
        bad = [k for k in own if k not in src or src[k].shape != own[k].shape]
        if bad:
            raise ValueError(f"modulator_from: the source modulator does not fit this network ({bad[:3]}); it "
                             "needs the same number of classes and modulated channels")
        mod.load_state_dict(src)
        for p in mod.parameters():
            p.requires_grad_(False)

    def make_learner(self, model: nn.Module, run: TrainRun) -> MetaLearner:
        mod = getattr(model, META)
        if self.cfg.modulator == "phi":
            if len(run.train) != mod.raw.shape[0]:
                raise ValueError("modulator phi: the phi table has one row per training sample; the train split changed")
            return _CtxLearner(PhiLearner(self.cfg, self.modulation(model), mod, None), "rows")
        if self.cfg.modulator_from is not None:
            return FrozenNetLearner(self.cfg, self.modulation(model), mod, None)
        opt = make_meta_optimizer(self.cfg.meta_optimizer, list(mod.parameters()), self.cfg.meta_lr,
                                  self.cfg.meta_weight_decay)
        return NetLearner(self.cfg, self.modulation(model), mod, opt)

    def setup(self, model: nn.Module, run: TrainRun) -> None:
        if self.cfg.modulator_from is None:
            return super().setup(model, run)
        self.learner = self.make_learner(model, run)  # the frozen modulator needs no meta batches

    def training_loss(self, model: nn.Module, batch: TrainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cfg.modulator_from is None:
            return super().training_loss(model, batch)
        # the frozen modulator: plain training of the modulated network (Eq. 4), no meta step;
        # the soft labels in float32, as in the bilevel step
        ctx: dict = {}
        with torch.autocast(batch.x.device.type, enabled=False):
            self.learner.prepare(model, batch.x, batch.y, ctx)
        return self.learner.train_loss(model, None, None, batch.x, batch.y, batch.epoch, batch.loss_fn, ctx,
                                       meta=False)

    @torch.no_grad()
    def modulation_params(self, model: nn.Module, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-layer (gamma, beta) the modulator gives a batch (for the t-SNE figures)."""
        if self.cfg.modulator != "net":
            raise ValueError("modulation figures need a modulator network (modulator: net)")
        mod = self.modulation(model)
        g, b = getattr(model, META)(torch.softmax(model(x).float(), dim=1))
        return split_modulation(g, b, mod.channels, self.cfg.gamma_activation, self.cfg.learn_gamma,
                                self.cfg.learn_beta)


@register_method("mw_net")
class MWNet(BilevelMethod):
    """Meta-Weight-Net on the shared bilevel engine."""

    def build_meta(self, model: nn.Module, info: DatasetInfo) -> nn.Module:
        h = self.cfg.hidden
        return nn.Sequential(nn.Linear(1, h), nn.ReLU(), nn.Linear(h, 1), nn.Sigmoid())

    def make_learner(self, model: nn.Module, run: TrainRun) -> MetaLearner:
        vnet = getattr(model, META)
        return MWNetLearner(vnet, make_meta_optimizer(self.cfg.meta_optimizer, list(vnet.parameters()),
                                                      self.cfg.meta_lr, self.cfg.meta_weight_decay))


@register_method("l2rw")
class L2RW(BilevelMethod):
    """Learning to re-weight on the shared bilevel engine (no persistent meta-parameters)."""

    def make_learner(self, model: nn.Module, run: TrainRun) -> MetaLearner:
        return _CtxLearner(L2RWLearner(), "eps")


# --- artefacts for the figures ------------------------------------------------------------------
def modulation_table(method: MFM, model: nn.Module, split: SplitData, info: DatasetInfo,
                     device: torch.device, batch_size: int = 512) -> pd.DataFrame:
    """gamma and beta the trained modulator gives each sample of ``split``: columns sample_id,
    label, layer, gamma (list), beta (list), one row per sample and modulated layer."""
    model.to(device).eval()
    rows: list[pd.DataFrame] = []
    for idx, x in split.iterate(batch_size, info, device):
        gammas, betas = method.modulation_params(model, x)
        for layer, g, b in zip(method.cfg.layers, gammas, betas):
            rows.append(pd.DataFrame({
                "sample_id": split.sample_ids[idx].astype(str), "label": split.labels[idx].numpy(),
                "layer": layer, "gamma": list(g.cpu().numpy().astype(np.float32)),
                "beta": list(b.cpu().numpy().astype(np.float32))}))
    return pd.concat(rows, ignore_index=True)
