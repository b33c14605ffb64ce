"""Backbones: the embedded default LeNet-5's layer shapes and the map/embedding contract."""

import pytest
import torch

from longtail.models import LeNet5, create_backbone


def test_lenet5_is_the_classic_layout():
    net = create_backbone("lenet5", in_channels=1)
    assert isinstance(net, LeNet5)
    # LeNet-5 (LeCun et al. 1998): 6 and 16 5x5 filters, fc 400 -> 120 -> 84
    assert (net.conv1.out_channels, net.conv1.kernel_size) == (6, (5, 5))
    assert (net.conv2.in_channels, net.conv2.out_channels, net.conv2.kernel_size) == (6, 16, (5, 5))
    assert (net.fc1.in_features, net.fc1.out_features) == (400, 120)
    assert (net.fc2.in_features, net.fc2.out_features) == (120, 84)
    assert net.dim == 84
    # 61,706 parameters for 10 classes in the original; ours stops before the classifier:
    # 156 + 2,416 + 48,120 + 10,164 = 60,856
    assert sum(p.numel() for p in net.parameters()) == 60856


@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_lenet5_map_and_embedding_shapes(channels, size):
    net = create_backbone("lenet5", in_channels=channels).eval()
    x = torch.randn(4, channels, size, size)
    fmap = net.forward_map(x)
    # 28x28 -> 14x14 -> 10x10 -> 5x5; 32x32 -> 16 -> 12 -> 6, pooled back to 5x5 in embed
    assert fmap.shape == (4, 16, (size // 2 - 4) // 2, (size // 2 - 4) // 2)
    emb = net.embed(fmap)
    assert emb.shape == (4, 84)
    assert (emb >= 0).all()  # ReLU'd fc2 output (MFM modulates it as backbone.fc2)
    assert torch.equal(net(x), emb)


def test_lenet5_has_no_pretrained_weights():
    with pytest.raises(ValueError, match="lenet5 has no pretrained weights"):
        create_backbone("lenet5", weights="IMAGENET1K_V1")
