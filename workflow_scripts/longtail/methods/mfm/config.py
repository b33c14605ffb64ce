"""Configs of the meta-learning methods on the one-loop bilevel engine: MFM (both
parameterisations of phi, a parameter of one method), MW-Net and L2RW. Torch-free (validated at
Snakemake parse time)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .. import register_config
from ..config import ParamError, TrainConfig, check_choice, check_positive

META_OPTIMIZERS = ("adam", "sgd")
GAMMA_ACTIVATIONS = ("softmax", "film")
MODULATORS = ("net", "phi")


@dataclass(frozen=True)
class BilevelConfig(TrainConfig):
    """Hyper-parameters of the one-loop bilevel step (MFM Algorithm 1 / Eqs. 5-7).

    meta_batch_size: meta images per step (m), drawn from the balanced meta split (the whole meta
    set when it is smaller). meta_lr / meta_optimizer / meta_weight_decay: the optimiser of the
    meta-parameters (eta of Eq. 6). virtual_lr: step size alpha of the virtual step (Eq. 5);
    null = the classifier's current learning rate (MW-Net's code: its scheduled lr).
    virtual_weight_decay: weight decay inside the virtual step, w - alpha (grad + wd w); 0 as in
    Eq. 5 and in MW-Net's code, whose look-ahead is w - alpha grad of the weighted loss alone
    (the real step's SGD optimiser applies ``weight_decay``). The virtual step has no momentum
    (Eq. 5); the real step (Eq. 7) uses the classifier's SGD optimiser.
    """

    meta_batch_size: int = 100
    meta_lr: float = 1e-3
    meta_optimizer: str = "adam"  # adam | sgd
    meta_weight_decay: float = 0.0
    virtual_lr: float | None = None
    virtual_weight_decay: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("virtual_weight_decay", self.virtual_weight_decay, strict=False)
        check_positive("meta_batch_size", self.meta_batch_size)
        check_positive("meta_lr", self.meta_lr)
        check_choice("meta_optimizer", self.meta_optimizer, META_OPTIMIZERS)
        check_positive("meta_weight_decay", self.meta_weight_decay, strict=False)
        if self.virtual_lr is not None:
            check_positive("virtual_lr", self.virtual_lr)


def _check_layers(layers: Any) -> None:
    if not isinstance(layers, tuple) or not layers or not all(isinstance(s, str) and s for s in layers):
        raise ParamError("layers",
                         f"layers must be a non-empty list of module names (e.g. [backbone.fc]), got {layers!r}")
    if len(set(layers)) != len(layers):
        raise ParamError("layers", f"layers: a module is listed twice in {list(layers)}")


@dataclass(frozen=True)
class _ModulationConfig(BilevelConfig):
    """What is modulated and how (Eq. 1, appendix A.2).

    layers: module names of the classifier whose outputs are scaled and shifted, channel-wise for
    conv maps (B, C, H, W) and neuron-wise for fc outputs (B, C) (e.g. backbone.fc, backbone.conv2,
    backbone.layer3). gamma_activation: softmax = C * softmax (A.2, the paper's choice; mean 1),
    film = 1 + raw (unconstrained FiLM). learn_gamma=False fixes gamma := 1, learn_beta=False
    fixes beta := 0 (the ablations of Tables 2 and 6).
    """

    layers: tuple[str, ...] = ("backbone.fc",)
    gamma_activation: str = "softmax"
    learn_gamma: bool = True
    learn_beta: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_layers(self.layers)
        check_choice("gamma_activation", self.gamma_activation, GAMMA_ACTIVATIONS)
        if not (self.learn_gamma or self.learn_beta):
            raise ValueError("learn_gamma and learn_beta are both false: nothing is modulated; use plain")


@register_config("mfm")
@dataclass(frozen=True)
class MFMConfig(_ModulationConfig):
    """MFM. ``modulator`` says what phi is:

    - ``net``: the modulator network of Eq. 4, an MLP with one hidden layer (``hidden`` units, 100
      in appendix B) on the soft label of the unmodulated network, optionally followed by the
      weight-hashing layer (appendix A.1) when ``hash_dim`` > 0 (compressed size of gamma-hat and
      of beta-hat each; 256 in appendix B for MIT-67). ``hash_seed`` fixes the hashing functions.
    - ``phi``: learnable per-sample modulation parameters phi_i = {gamma_i, beta_i} (Eqs. 2-3), one
      row per training sample, updated only when their sample is in the batch, by plain SGD
      (Eq. 6): ``meta_optimizer: sgd`` (a stateful optimiser would keep moving absent rows) with a
      large ``meta_lr`` (config.yaml's mfm_phi run: 100), as a row sees one gradient per epoch.

    ``modulator_from: {dataset: X, run: Y}`` (``net`` only) trains with the frozen modulator
    network of run Y on dataset X (same seed), without meta-learning (the transfer of Table 3,
    e.g. C -> F).
    """

    modulator: str = "net"
    hidden: int = 100
    hash_dim: int = 0
    hash_seed: int = 0
    modulator_from: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("modulator", self.modulator, MODULATORS)
        check_positive("hidden", self.hidden)
        check_positive("hash_dim", self.hash_dim, strict=False)
        if self.modulator == "phi":
            if self.meta_optimizer != "sgd":
                raise ParamError("meta_optimizer",
                                 "meta_optimizer: modulator phi updates per-sample rows by plain SGD; set sgd")
            if self.hash_dim or self.modulator_from is not None:
                raise ValueError("hash_dim / modulator_from belong to the modulator network: set modulator: net")
        if self.modulator_from is not None:
            m = self.modulator_from
            if not isinstance(m, Mapping) or set(m) != {"dataset", "run"} or not all(
                    isinstance(v, str) and v for v in m.values()):
                raise ParamError("modulator_from",
                                 f"modulator_from must be {{dataset: <name>, run: <name>}}, got {m!r}")


@register_config("mw_net")
@dataclass(frozen=True)
class MWNetConfig(BilevelConfig):
    """Meta-Weight-Net (Shu et al., NeurIPS 2019): per-sample loss weight v_i = V(l_i) from an MLP
    1 -> ``hidden`` -> 1 with ReLU and a sigmoid output, learned on the meta set. The weighting
    net's optimiser is MW-Net's code's: Adam, lr 1e-3, weight decay 1e-4."""

    hidden: int = 100
    meta_weight_decay: float = 1e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("hidden", self.hidden)


@register_config("l2rw")
@dataclass(frozen=True)
class L2RWConfig(BilevelConfig):
    """Learning to re-weight (Ren et al., ICML 2018): per-sample weights of each batch from the
    negative meta-gradient at eps = 0, clipped at 0 and normalised to sum 1. No meta-parameters
    persist, so the meta optimiser fields are unused."""
