"""OLTR's modules (Liu et al., CVPR 2019): modulated attention (Eq. 5), dynamic meta-embedding
(Eqs. 1-4), the squashing cosine classifier (Eq. 6) and the large-margin centroid loss (Eq. 7).

Written from the paper; where it is vague the authors' public code
(zhmiao/OpenLongTailRecognition-OLTR) was read for facts, and each such choice is named where it
is made. Shapes: B batch, C channels, H x W map, D embedding size, K = number of known classes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...models import Backbone
from ..frozen import class_means
from .config import SPATIAL_ATTENTIONS

EPS = 1e-12


# --- modulated attention (Sec. 3.2, Eq. 5) ---------------------------------------------------
class SelfAttention(nn.Module):
    """SA(f): the embedded-Gaussian non-local block (Wang et al. 2018) without its residual.

    theta, phi, g are 1x1 convs C -> C/r; the (HW x HW) affinity softmax(theta^T phi) mixes g, and
    a zero-initialised 1x1 conv maps back to C channels, so SA(f) = 0 at initialisation and stage 2
    starts exactly from the stage-1 features (the authors zero ``conv_mask`` the same way).
    """

    def __init__(self, channels: int, reduction: int = 2) -> None:
        super().__init__()
        inter = max(1, channels // reduction)
        self.theta = nn.Conv2d(channels, inter, 1)
        self.phi = nn.Conv2d(channels, inter, 1)
        self.g = nn.Conv2d(channels, inter, 1)
        self.out = nn.Conv2d(inter, channels, 1, bias=False)
        for m in (self.theta, self.phi, self.g):
            nn.init.kaiming_normal_(m.weight)
            nn.init.zeros_(m.bias)
        nn.init.zeros_(self.out.weight)

    def forward(self, f: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H, W)
        b, _, h, w = f.shape
        theta = self.theta(f).flatten(2).transpose(1, 2)  # (B, HW, C')
        phi = self.phi(f).flatten(2)  # (B, C', HW)
        g = self.g(f).flatten(2).transpose(1, 2)  # (B, HW, C')
        affinity = torch.softmax(theta @ phi, dim=-1)  # (B, HW, HW), rows sum to 1
        y = (affinity @ g).transpose(1, 2).reshape(b, -1, h, w)  # (B, C', H, W)
        return self.out(y)


class ConditionalSpatialAttention(nn.Module):
    """MA(f), ``spatial_attention: content``: one softmax weight per position from its content.

    The paper calls MA "a conditional attention function [Vaswani et al.] with a softmax"; this
    reading lets a query from the globally pooled map attend over the positions' keys (scaled dot
    product), so it works for any map size. Output (B, 1, H, W), summing to 1 over H x W.
    """

    def __init__(self, channels: int, reduction: int = 2) -> None:
        super().__init__()
        self.dim = max(1, channels // reduction)
        self.query = nn.Linear(channels, self.dim)
        self.key = nn.Conv2d(channels, self.dim, 1)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        b, _, h, w = f.shape
        q = self.query(f.mean(dim=(2, 3)))  # (B, d)
        k = self.key(f).flatten(2)  # (B, d, HW)
        scores = torch.einsum("bd,bdn->bn", q, k) / math.sqrt(self.dim)
        return torch.softmax(scores, dim=1).view(b, 1, h, w)


class PositionalSpatialAttention(nn.Module):
    """MA(f), ``spatial_attention: positional`` (the authors' ``fc_spatial``): one fc layer from
    the whole flattened map (C*H*W) to H*W scores, softmax over positions. Each output position
    has its own weights, so the map size is fixed at construction (7x7 for a 224 crop of a
    ResNet). Output (B, 1, H, W), summing to 1 over H x W."""

    def __init__(self, channels: int, map_size: tuple[int, int]) -> None:
        super().__init__()
        self.map_size = (int(map_size[0]), int(map_size[1]))
        h, w = self.map_size
        self.fc = nn.Linear(channels * h * w, h * w)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        b, _, h, w = f.shape
        if (h, w) != self.map_size:
            raise ValueError(f"positional spatial attention was built for a {self.map_size[0]}x{self.map_size[1]} "
                             f"feature map, got {h}x{w}: set input_size to the training crop size")
        return torch.softmax(self.fc(f.flatten(1)), dim=1).view(b, 1, h, w)


class ModulatedAttention(nn.Module):
    """Attention on the last feature map; ``mode``:

    - ``modulated`` (Eq. 5): f_att = f + MA(f) * SA(f), spatial attention on the self-attention map;
    - ``spatial_fmap`` (Fig. 5c baseline): f_att = f + MA(f) * f, spatial attention on the map itself;
    - ``self`` (Fig. 5c "self attention map only"): f_att = f + SA(f).
    MA is ``positional`` (needs ``map_size``) or ``content`` (any size). The output has the
    input's shape.
    """

    MODES = ("modulated", "spatial_fmap", "self")

    def __init__(self, channels: int, mode: str = "modulated", reduction: int = 2, *,
                 spatial: str = "content", map_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"attention mode '{mode}' is unknown; choose one of {list(self.MODES)}")
        if spatial not in SPATIAL_ATTENTIONS:
            raise ValueError(f"spatial attention '{spatial}' is unknown; choose one of {list(SPATIAL_ATTENTIONS)}")
        self.mode = mode
        self.sa = SelfAttention(channels, reduction) if mode in ("modulated", "self") else None
        self.ma = None
        if mode != "self":
            if spatial == "positional":
                if map_size is None:
                    raise ValueError("positional spatial attention needs the feature map size")
                self.ma = PositionalSpatialAttention(channels, map_size)
            else:
                self.ma = ConditionalSpatialAttention(channels, reduction)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if self.mode == "self":
            return f + self.sa(f)
        ma = self.ma(f)  # (B, 1, H, W), broadcast over channels
        return f + ma * (self.sa(f) if self.mode == "modulated" else f)


# --- dynamic meta-embedding (Sec. 3.1, Eqs. 1-4) ---------------------------------------------
def reachability(v: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """gamma = min_i ||v - c_i||_2 (Eq. 3): (B, D), (K, D) -> (B,)."""
    return torch.cdist(v.float(), centroids.float()).min(dim=1).values


def squash(v: torch.Tensor, power: int = 1) -> torch.Tensor:
    """Eq. 6: ||v||^p / (1 + ||v||^p) * v / ||v|| (p = 2 as printed, p = 1 in the authors' code).

    Small vectors shrink towards 0, large ones get a length just below 1."""
    n = v.norm(dim=1, keepdim=True)
    return (n.pow(power) / (1 + n.pow(power))) * v / n.clamp_min(EPS)


class MetaEmbedding(nn.Module):
    """v_meta = (s / gamma) * (v_direct + e * v_memory) (Eq. 2) with

    - memory M: K centroids (K, D) (a Parameter; the forward pass sees it detached, as the
      authors pass ``centroids.data``; only the centroid loss moves it);
    - hallucinator o = softmax(T_hal(v_direct)) (B, K) and v_memory = o^T M (Eq. 1);
    - concept selector e = tanh(T_sel(v_direct)) (B, D) (Eq. 4);
    - reachability gamma = min_i ||v_direct - c_i|| (Eq. 3), with the authors' scale s = 10
      (``confidence = 10 / min distance``); the paper writes 1 / gamma.
    Each component can be switched off for the Fig. 5 ablations (selector off: e = 1;
    reachability off: scale 1; memory off: v_memory = 0).
    """

    def __init__(self, dim: int, num_classes: int, *, memory: bool = True, selector: bool = True,
                 reachability: bool = True, reachability_scale: float = 10.0) -> None:
        super().__init__()
        self.use_memory, self.use_selector, self.use_reachability = memory, selector, reachability
        self.reachability_scale = reachability_scale
        self.centroids = nn.Parameter(torch.zeros(num_classes, dim))
        self.hallucinator = nn.Linear(dim, num_classes)  # T_hal
        self.selector = nn.Linear(dim, dim)  # T_sel

    def forward(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, D) direct features -> dict with meta (B, D), memory (B, D), selector (B, D),
        coefficients o (B, K) and gamma (B,)."""
        m = self.centroids.detach()
        o = torch.softmax(self.hallucinator(v), dim=1)  # (B, K)
        v_memory = o @ m.to(o.dtype) if self.use_memory else torch.zeros_like(v)  # (B, D)
        e = torch.tanh(self.selector(v)) if self.use_selector else torch.ones_like(v)
        gamma = reachability(v, m)
        meta = v + e * v_memory
        if self.use_reachability:
            meta = (self.reachability_scale / gamma.clamp_min(EPS)).unsqueeze(1).to(meta.dtype) * meta
        return {"meta": meta, "memory": v_memory, "selector": e, "coefficients": o, "gamma": gamma}


class SquashCosineClassifier(nn.Module):
    """logits = scale * <squash(v), w_k / ||w_k||> (Eq. 6, no bias), fixed scale 16 as in the
    authors' CosNorm_Classifier; weights uniform(+-1/sqrt(D)) like theirs."""

    def __init__(self, dim: int, num_classes: int, scale: float = 16.0, power: int = 1) -> None:
        super().__init__()
        self.scale, self.power = scale, power
        bound = 1.0 / math.sqrt(dim)
        self.weight = nn.Parameter(torch.empty(num_classes, dim).uniform_(-bound, bound))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.scale * squash(v, self.power) @ F.normalize(self.weight, dim=1).t().to(v.dtype)


class OLTRNet(nn.Module):
    """Stage-2 network: backbone.forward_map -> attention -> backbone.embed (+ its fc_add, if
    any) = v_direct -> meta-embedding -> squashing cosine classifier. ``forward`` returns logits.
    ``spatial_attention: positional`` needs ``map_size`` (the last feature map's H, W)."""

    def __init__(self, backbone: Backbone, num_classes: int, *, attention: str = "modulated",
                 attention_reduction: int = 2, memory: bool = True, selector: bool = True,
                 reachability: bool = True, reachability_scale: float = 10.0, cosine_scale: float = 16.0,
                 squash_power: int = 1, map_channels: int | None = None, spatial_attention: str = "content",
                 map_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.attention = None
        if attention != "none":
            channels = map_channels or feature_map_channels(backbone)
            self.attention = ModulatedAttention(channels, attention, attention_reduction,
                                                spatial=spatial_attention, map_size=map_size)
        self.meta = MetaEmbedding(backbone.dim, num_classes, memory=memory, selector=selector,
                                  reachability=reachability, reachability_scale=reachability_scale)
        self.classifier = SquashCosineClassifier(backbone.dim, num_classes, cosine_scale, squash_power)

    def direct(self, x: torch.Tensor) -> torch.Tensor:
        """v_direct (B, D): the backbone embedding of the (attended) last feature map."""
        fmap = self.backbone.forward_map(x)
        if self.attention is not None:
            fmap = self.attention(fmap)
        return self.backbone.project(self.backbone.embed(fmap))

    def forward_all(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Everything a training step needs: direct, meta, logits (+ the meta-embedding parts)."""
        v = self.direct(x)
        out = self.meta(v)
        out["direct"] = v
        out["logits"] = self.classifier(out["meta"])
        return out

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.direct(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_all(x)["logits"]


@torch.no_grad()
def feature_map_size(backbone: Backbone, in_channels: int, input_size: int) -> tuple[int, int]:
    """(H, W) of ``backbone.forward_map`` for a square input of side ``input_size`` (one dummy
    forward in eval mode, so no BatchNorm statistics move)."""
    was_training = backbone.training
    backbone.eval()
    try:
        fmap = backbone.forward_map(torch.zeros(1, in_channels, input_size, input_size))
    finally:
        backbone.train(was_training)
    return int(fmap.shape[2]), int(fmap.shape[3])


def feature_map_channels(backbone: Backbone) -> int:
    """Channels of ``backbone.forward_map``'s output, found from the last conv layer's width."""
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("backbone has no conv layer; pass map_channels")
    return convs[-1].out_channels


# --- centroids and the large-margin loss (Sec. 3.1 "Learning visual memory", Eq. 7) -----------
class _AttractLoss(torch.autograd.Function):
    """sum_n ||f_n - c_{y_n}||^2 / (2B) with the center-loss update for the centroids.

    Gradient w.r.t. f_n: (f_n - c_{y_n}) / B. Gradient w.r.t. c_j: the class-averaged
    sum_{n: y_n = j} (c_j - f_n) / (1 + n_j) / B (Wen et al. 2016's centre update, which the
    authors' DiscCentroidsLoss uses), so a rare class's centroid moves as fast as a frequent one's.
    """

    @staticmethod
    def forward(ctx, feats: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(feats, labels, centroids)
        return (feats - centroids[labels]).pow(2).sum() / (2.0 * feats.shape[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        feats, labels, centroids = ctx.saved_tensors
        b = feats.shape[0]
        diff = centroids[labels] - feats  # (B, D)
        grad_f = -grad * diff / b if ctx.needs_input_grad[0] else None
        grad_c = None
        if ctx.needs_input_grad[2]:
            counts = 1.0 + torch.bincount(labels, minlength=centroids.shape[0]).to(feats.dtype)
            grad_c = torch.zeros_like(centroids).index_add_(0, labels, diff) / counts.unsqueeze(1)
            grad_c = grad * grad_c / b
        return grad_f, None, grad_c


def attract_loss(feats: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ||f_n - c_{y_n}||^2 / 2 (centroids get the center-loss gradient)."""
    return _AttractLoss.apply(feats, labels, centroids)


def repel_loss(feats: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor, margin: float) -> torch.Tensor:
    """max(0, margin - sum_{n, k != y_n} ||f_n - c_k||^2 / (B K)).

    As in the authors' DiscCentroidsLoss: squared distances to the other classes' centroids are
    averaged over all B x K pairs (own-class pairs count as 0), and a hinge at ``margin`` keeps
    pushing only while that average is below it."""
    b, k = feats.shape[0], centroids.shape[0]
    d2 = (feats.unsqueeze(1) - centroids.unsqueeze(0)).pow(2).sum(-1)  # (B, K)
    own = F.one_hot(labels, k).bool()
    d2 = d2.masked_fill(own, 0.0)
    return torch.clamp(margin - d2.sum() / (b * k), min=0.0)


def centroid_loss(feats: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor, *, margin: float = 10.0,
                  repel_weight: float = 0.01) -> torch.Tensor:
    """L_LM of Eq. 7 as the authors implement it: attract + repel_weight * repel (fp32)."""
    feats, centroids = feats.float(), centroids.float()  # a no-op (same Parameter) when already fp32
    return attract_loss(feats, labels, centroids) + repel_weight * repel_loss(feats, labels, centroids, margin)


@torch.no_grad()
def ema_update(centroids: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor, momentum: float) -> None:
    """c_j <- m c_j + (1 - m) mean_{n: y_n = j} f_n for the classes present in the batch (in place)."""
    present = torch.bincount(labels, minlength=centroids.shape[0]) > 0
    means = class_means(feats, labels, centroids.shape[0]).to(centroids.dtype)
    centroids[present] = momentum * centroids[present] + (1 - momentum) * means[present]
