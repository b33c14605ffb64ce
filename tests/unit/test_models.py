"""Backbones: the embedded default LeNet-5's layer shapes and the map/embedding contract."""

import pytest
import torch

from longtail.models import LeNet5, LeNet5GAP, create_backbone


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


def test_lenet5_gap_is_mfm_modified_lenet():
    """MFM appendix C.3: LeNet-5 whose last conv is 3x3 followed by global average pooling."""
    net = create_backbone("lenet5_gap", in_channels=1)
    assert isinstance(net, LeNet5GAP)
    assert (net.conv1.out_channels, net.conv1.kernel_size, net.conv1.padding) == (6, (5, 5), (2, 2))
    assert (net.conv2.in_channels, net.conv2.out_channels, net.conv2.kernel_size) == (6, 16, (5, 5))
    assert (net.conv3.in_channels, net.conv3.out_channels, net.conv3.kernel_size) == (16, 120, (3, 3))
    assert (net.fc1.in_features, net.fc1.out_features) == (120, 84)
    assert net.dim == 84
    # conv1 1*6*25+6 = 156, conv2 6*16*25+16 = 2,416, conv3 16*120*9+120 = 17,400,
    # fc1 120*84+84 = 10,164: 30,136 before the classifier (FC2, the head)
    assert sum(p.numel() for p in net.parameters()) == 30136


@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_lenet5_gap_map_and_embedding_shapes(channels, size):
    net = create_backbone("lenet5_gap", in_channels=channels).eval()
    x = torch.randn(4, channels, size, size)
    fmap = net.forward_map(x)
    # 28 -> conv1 28 -> pool 14 -> conv2 10 -> pool 5 -> conv3 3; 32 -> 32 -> 16 -> 12 -> 6 -> 4
    side = (size // 2 - 4) // 2 - 2
    assert fmap.shape == (4, 120, side, side)
    emb = net.embed(fmap)
    assert emb.shape == (4, 84)  # global average pooling makes fc1 independent of the input size
    assert (emb >= 0).all()
    assert torch.equal(net(x), emb)


def test_lenet5_gap_layers_are_modulatable_by_name():
    """Table 6's rows name Conv1 / Conv2 / Conv3 / FC1: each is a module MFM can hook."""
    from longtail.methods.mfm.method import Modulation
    from longtail.models import LongTailNet, create_head

    model = LongTailNet(create_backbone("lenet5_gap"), create_head("linear", 84, 10))
    layers = ["backbone.conv1", "backbone.conv2", "backbone.conv3", "backbone.fc1"]
    assert Modulation(model, layers).channels == [6, 16, 120, 84]


def test_lenet5_gap_has_no_pretrained_weights():
    with pytest.raises(ValueError, match="lenet5_gap has no pretrained weights"):
        create_backbone("lenet5_gap", weights="IMAGENET1K_V1")


def test_vgg11_gap_is_mfm_mit67_basemodel():
    """MFM sec. 4.4: VGG-11's convolutions, an average pooling, then only the classifier FC."""
    net = create_backbone("vgg11_gap", in_channels=3).eval()
    convs = [m for m in net.features if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 8 and net.features[18] is convs[-1]  # the last conv layer MFM modulates
    assert net.dim == 512
    # VGG-11 conv parameters: sum over (cin, cout) of 9 cin cout + cout for the 8 convolutions
    pairs = [(3, 64), (64, 128), (128, 256), (256, 256), (256, 512), (512, 512), (512, 512), (512, 512)]
    assert sum(p.numel() for p in net.parameters()) == sum(9 * a * b + b for a, b in pairs)  # 9,220,480
    x = torch.randn(2, 3, 64, 64)
    assert net.forward_map(x).shape == (2, 512, 2, 2)
    assert net(x).shape == (2, 512)


@pytest.mark.parametrize("arch", ["vgg11", "vgg11_gap"])
def test_vgg_takes_grayscale_by_its_first_conv(arch):
    """One input channel: the first conv has 1 x 64 x 9 weights, the rest of VGG-11 is unchanged."""
    net = create_backbone(arch, in_channels=1).eval()
    assert net.features[0].weight.shape == (64, 1, 3, 3)
    assert net.forward_map(torch.randn(2, 1, 32, 32)).shape == (2, 512, 1, 1)


def test_lenet5_bn_is_lenet5_with_batchnorm_and_its_layer_names():
    net = create_backbone("lenet5_bn", in_channels=1)
    # LeNet-5: conv1 1*6*25+6 = 156, conv2 6*16*25+16 = 2,416, fc1 400*120+120 = 48,120,
    # fc2 120*84+84 = 10,164 (60,856); BatchNorm weight + bias: 2*(6 + 16 + 120) = 284
    assert sum(p.numel() for p in net.parameters()) == 60_856 + 284
    assert sum(p.numel() for p in create_backbone("lenet5", in_channels=1).parameters()) == 60_856
    norms = [m for m in net.modules() if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))]
    assert [m.num_features for m in norms] == [6, 16, 120]
    names = dict(net.named_modules())
    assert {"conv1", "conv2", "fc1", "fc2"} <= set(names)  # MFM's `layers: [backbone.fc2]` resolves
    net.train()
    emb = net.embed(net.forward_map(torch.randn(4, 1, 28, 28)))
    assert emb.shape == (4, 84) and net.dim == 84
