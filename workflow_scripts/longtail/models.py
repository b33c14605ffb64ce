"""Backbones and classifier heads.

Every backbone maps images (B, C, H, W) to a feature map (``forward_map``) and the map to an
embedding (B, D) (``embed``); methods that work on maps (OLTR's modulated attention) or on named
intermediate layers (MFM) hook in between. ``LongTailNet`` = backbone + head.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .registry import Registry

BackboneFn = Callable[..., "Backbone"]
BACKBONES: Registry[BackboneFn] = Registry("backbone")
register_backbone = BACKBONES.register


def available_backbones() -> list[str]:
    return BACKBONES.names()


def create_backbone(name: str, in_channels: int = 1, weights: str | None = None, fc_add_dim: int = 0) -> "Backbone":
    """The registered backbone ``name``; ``fc_add_dim`` > 0 adds an fc + ReLU to that many dims."""
    backbone = BACKBONES.get(name)(in_channels=in_channels, weights=weights)
    return add_embedding_fc(backbone, fc_add_dim) if fc_add_dim > 0 else backbone


class Backbone(nn.Module):
    """Base class: ``forward(x) = project(embed(forward_map(x)))``; ``dim`` is the embedding size.

    ``project`` is the identity unless :func:`add_embedding_fc` gave the backbone an extra
    ``fc_add`` layer (fc + ReLU after pooling, OLTR's ``use_fc``)."""

    dim: int

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:  # (B, C', H', W')
        raise NotImplementedError

    def embed(self, fmap: torch.Tensor) -> torch.Tensor:  # (B, D)
        return torch.flatten(F.adaptive_avg_pool2d(fmap, 1), 1)

    def project(self, v: torch.Tensor) -> torch.Tensor:  # (B, D0) -> (B, D)
        fc = self._modules.get("fc_add")
        return v if fc is None else F.relu(fc(v))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.embed(self.forward_map(x)))


def add_embedding_fc(backbone: Backbone, dim: int) -> Backbone:
    """Give ``backbone`` an extra fc layer D0 -> ``dim`` + ReLU after its embedding (in place):
    the authors' OLTR ``fc_add`` (``use_fc``: 2048 -> 512 for ResNet-152 on Places-LT, 512 -> 512
    in ResNet-10's stage 2). Its weights are ``backbone.fc_add.*``, so a checkpoint records it."""
    if "fc_add" in backbone._modules:
        raise ValueError("the backbone already has an fc_add layer")
    backbone.fc_add = nn.Linear(backbone.dim, dim)
    backbone.dim = dim
    return backbone


class LeNet(Backbone):
    """Small CNN for 28x28 input (the CPU default): two 5x5 conv blocks, then an fc layer
    (a LeNet-5 with wider layers, like MFM's "modified LeNet" for Fashion-MNIST)."""

    def __init__(self, in_channels: int = 1, width: int = 32, dim: int = 128) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 5, padding=2)
        self.conv2 = nn.Conv2d(width, 2 * width, 5)
        self.fc = nn.Linear(2 * width * 5 * 5, dim)
        self.dim = dim

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (B, w, 14, 14) for 28x28
        return F.max_pool2d(F.relu(self.conv2(x)), 2)  # (B, 2w, 5, 5)

    def embed(self, fmap: torch.Tensor) -> torch.Tensor:
        fmap = F.adaptive_avg_pool2d(fmap, 5) if fmap.shape[-1] != 5 else fmap
        return F.relu(self.fc(torch.flatten(fmap, 1)))


def _no_weights(name: str, weights: str | None) -> None:
    if weights:
        raise ValueError(f"{name} has no pretrained weights; set weights: null")


@register_backbone("lenet")
def lenet(in_channels: int = 1, weights: str | None = None) -> Backbone:
    _no_weights("lenet", weights)
    return LeNet(in_channels)


class LeNet5(Backbone):
    """LeNet-5 (LeCun et al. 1998) with ReLU and max-pooling: 6 and 16 5x5 filters, fc 120 -> 84.

    On one CPU thread it trains ~3x and infers ~8x faster than ``lenet``
    (benchmarks/trainer_throughput.py), which keeps the whole default run within minutes. The
    embedding is fc2's 84 ReLU units; MFM modulates it as ``backbone.fc2`` (its last hidden layer)."""

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.dim = 84

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (B, 6, 14, 14) for 28x28
        return F.max_pool2d(F.relu(self.conv2(x)), 2)  # (B, 16, 5, 5)

    def embed(self, fmap: torch.Tensor) -> torch.Tensor:
        fmap = F.adaptive_avg_pool2d(fmap, 5) if fmap.shape[-1] != 5 else fmap
        return F.relu(self.fc2(F.relu(self.fc1(torch.flatten(fmap, 1)))))


@register_backbone("lenet5")
def lenet5(in_channels: int = 1, weights: str | None = None) -> Backbone:
    _no_weights("lenet5", weights)
    return LeNet5(in_channels)


class LeNet5BN(LeNet5):
    """LeNet-5 with BatchNorm after conv1, conv2 and fc1: the embedded default's backbone. Without
    normalisation, lr 0.1 on a long-tailed curation can diverge or end as a constant predictor
    (balanced softmax, MFM: benchmarks/stability.py); the layer names are LeNet-5's, so MFM still
    modulates ``backbone.fc2``. Paper presets that name LeNet-5 keep ``lenet5``."""

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__(in_channels)
        self.bn1, self.bn2, self.bn_fc1 = nn.BatchNorm2d(6), nn.BatchNorm2d(16), nn.BatchNorm1d(120)

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        return F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)

    def embed(self, fmap: torch.Tensor) -> torch.Tensor:
        fmap = F.adaptive_avg_pool2d(fmap, 5) if fmap.shape[-1] != 5 else fmap
        return F.relu(self.fc2(F.relu(self.bn_fc1(self.fc1(torch.flatten(fmap, 1))))))


@register_backbone("lenet5_bn")
def lenet5_bn(in_channels: int = 1, weights: str | None = None) -> Backbone:
    _no_weights("lenet5_bn", weights)
    return LeNet5BN(in_channels)


class LeNet5GAP(Backbone):
    """MFM's "modified LeNet" (appendix C.3, Table 6): LeNet-5 whose last convolution has a 3x3
    kernel and is followed by global average pooling. Widths are LeNet-5's (the paper gives none):
    conv1 6@5x5 (padding 2 for 28x28 input), max-pool, conv2 16@5x5, max-pool, conv3 120@3x3,
    global average pooling, fc1 120 -> 84 (ReLU); the classifier head (84 -> classes) is FC2.
    Table 6's modulated layers are ``backbone.conv1`` / ``conv2`` / ``conv3`` / ``fc1`` (each
    module's pre-ReLU output)."""

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.conv3 = nn.Conv2d(16, 120, 3)
        self.fc1 = nn.Linear(120, 84)
        self.dim = 84

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (B, 6, 14, 14) for 28x28
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (B, 16, 5, 5)
        return F.relu(self.conv3(x))  # (B, 120, 3, 3)

    def embed(self, fmap: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc1(torch.flatten(F.adaptive_avg_pool2d(fmap, 1), 1)))


@register_backbone("lenet5_gap")
def lenet5_gap(in_channels: int = 1, weights: str | None = None) -> Backbone:
    _no_weights("lenet5_gap", weights)
    return LeNet5GAP(in_channels)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            # projection shortcut (option B of He et al.); LDAM-DRW's option A pads with zeros
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(Backbone):
    """The CIFAR ResNet family (6n+2 layers: 3 stages of n blocks, 16/32/64 channels)."""

    def __init__(self, depth: int, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError("CIFAR ResNet depth must be 6n+2")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        layers, cin = [], 16
        for i, cout in enumerate((16, 32, 64)):
            for j in range(n):
                layers.append(_BasicBlock(cin, cout, 2 if (j == 0 and i > 0) else 1))
                cin = cout
        self.layer1 = nn.Sequential(*layers[:n])
        self.layer2 = nn.Sequential(*layers[n: 2 * n])
        self.layer3 = nn.Sequential(*layers[2 * n:])
        self.dim = 64

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer3(self.layer2(self.layer1(self.stem(x))))


def _cifar(depth: int) -> BackboneFn:
    def make(in_channels: int = 3, weights: str | None = None) -> Backbone:
        if weights:
            raise ValueError(f"resnet{depth} (CIFAR) has no pretrained weights; set weights: null")
        return CifarResNet(depth, in_channels)

    return make


for _d in (20, 32, 44, 56, 110):
    register_backbone(f"resnet{_d}")(_cifar(_d))


class TorchvisionBackbone(Backbone):
    """A torchvision classification network without its final classifier."""

    def __init__(self, net: nn.Module, dim: int, in_channels: int) -> None:
        super().__init__()
        self.net = net
        self.dim = dim
        if in_channels != 3:
            conv1 = net.conv1
            net.conv1 = nn.Conv2d(in_channels, conv1.out_channels, conv1.kernel_size, conv1.stride,
                                  conv1.padding, bias=False)

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        return n.layer4(n.layer3(n.layer2(n.layer1(x))))


def _torchvision(arch: str) -> BackboneFn:
    def make(in_channels: int = 3, weights: str | None = None) -> Backbone:
        import torchvision.models as tvm
        from torchvision.models.resnet import BasicBlock, ResNet

        if arch == "resnet10":  # OLTR's ImageNet-LT backbone; torchvision has no preset for it
            if weights:
                raise ValueError("resnet10 has no torchvision weights; set weights: null")
            net = ResNet(BasicBlock, [1, 1, 1, 1])
        else:
            net = tvm.get_model(arch, weights=weights)
        dim = net.fc.in_features
        net.fc = nn.Identity()
        return TorchvisionBackbone(net, dim, in_channels)

    return make


for _a in ("resnet10", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d"):
    register_backbone(_a)(_torchvision(_a))


def _vgg_in_channels(net: nn.Module, in_channels: int) -> None:
    """A VGG's first conv for ``in_channels`` inputs (grayscale data), freshly initialised."""
    if in_channels != 3:
        first = net.features[0]
        net.features[0] = nn.Conv2d(in_channels, first.out_channels, first.kernel_size, first.stride, first.padding)


class VGGBackbone(Backbone):
    """torchvision VGG (MFM's MIT-67 backbone): conv ``features`` give the map; the embedding is
    the 4096-d output of the classifier's second fc block (the layer before the logits)."""

    def __init__(self, net: nn.Module, in_channels: int) -> None:
        super().__init__()
        _vgg_in_channels(net, in_channels)
        self.features, self.avgpool = net.features, net.avgpool
        self.fc = net.classifier[:-1]  # drop the 1000-way layer
        self.dim = net.classifier[-1].in_features

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def embed(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(fmap), 1))


@register_backbone("vgg11")
def vgg11(in_channels: int = 3, weights: str | None = None) -> Backbone:
    import torchvision.models as tvm

    return VGGBackbone(tvm.get_model("vgg11", weights=weights), in_channels)


class VGGGAPBackbone(Backbone):
    """MFM's MIT-67 BaseModel (sec. 4.4): torchvision VGG's conv ``features`` with a global average
    pooling, no fc blocks ("only reserving the last FC layer and adding an average-pooling before
    it": that FC is the classifier head). The last conv layer is ``backbone.features.<i>`` (VGG-11:
    ``features.18``, 512 channels)."""

    def __init__(self, net: nn.Module, in_channels: int) -> None:
        super().__init__()
        _vgg_in_channels(net, in_channels)
        self.features = net.features
        self.dim = [m for m in net.features if isinstance(m, nn.Conv2d)][-1].out_channels

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


@register_backbone("vgg11_gap")
def vgg11_gap(in_channels: int = 3, weights: str | None = None) -> Backbone:
    import torchvision.models as tvm

    return VGGGAPBackbone(tvm.get_model("vgg11", weights=weights), in_channels)


class CosineClassifier(nn.Module):
    """logits = s * cos(x, w_j) with a learnable scale s (initialised at 16, as in KT / OLTR)."""

    def __init__(self, dim: int, num_classes: int, scale: float = 16.0, learn_scale: bool = True) -> None:
        super().__init__()
        # unit-norm rows: the angular step of a cosine head scales as lr * s / |w|^2, so the usual
        # 0.01 * randn init (|w| ~ 0.1 in 128-D) turns every SGD step into a jump of ~1 rad and
        # training collapses (LeNet embeddings die); unit rows keep it stable
        self.weight = nn.Parameter(F.normalize(torch.randn(num_classes, dim), dim=1))
        self.scale = nn.Parameter(torch.tensor(float(scale)), requires_grad=learn_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))


def create_head(kind: str, dim: int, num_classes: int, scale: float = 16.0) -> nn.Module:
    if kind == "linear":
        return nn.Linear(dim, num_classes)
    if kind == "cosine":
        return CosineClassifier(dim, num_classes, scale)
    raise ValueError(f"unknown classifier head '{kind}'; choose linear or cosine")


class LongTailNet(nn.Module):
    """Backbone + classifier head; ``forward`` returns logits, ``features`` the embedding."""

    def __init__(self, backbone: Backbone, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))
