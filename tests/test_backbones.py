"""Backbones: output strides and channels, the stride-4 variant, freezing, and the errors users see."""

import pytest
import torch

from detect.backbones import backbone_from_config, build_backbone
from detect.config import BackboneConfig, load_config
from detect.errors import CheckpointError, ConfigError
from tests.models.helpers import save_weights_with_live_batchnorm


@pytest.mark.parametrize("stride", [None, 8, 4])
def test_small_backbone_output_stride_and_channels(stride):
    backbone = build_backbone("small", stride=stride)
    expected = stride or 8
    assert backbone.stride == expected and backbone.out_channels == 96
    for height, width in ((64, 96), (72, 56)):
        features = backbone(torch.rand(2, 3, height, width))
        assert features.shape == (2, 96, height // expected, width // expected)


def test_stride_4_adds_only_the_fine_lateral_and_keeps_stride_8_weights_loadable():
    coarse, fine = build_backbone("small"), build_backbone("small", stride=4)
    extra = set(fine.state_dict()) - set(coarse.state_dict())
    assert extra == {"lateral_fine.weight", "lateral_fine.bias"}
    assert set(coarse.state_dict()) < set(fine.state_dict())


def test_backbone_from_config_and_freezing():
    backbone = backbone_from_config(BackboneConfig(name="small", frozen_stages=2, stride=4))
    assert backbone.stride == 4
    frozen = [all(not p.requires_grad for p in stage.parameters()) for stage in backbone.stages]
    assert frozen == [True, True, False, False]


def test_small_backbone_widths_set_every_stage_and_the_output():
    config = load_config(overrides=["model.backbone.widths=[8,16,24,32,40]", "model.backbone.stride=4"])
    backbone = backbone_from_config(config.model.backbone)
    assert backbone.out_channels == 40 and backbone.stride == 4
    assert [stage[-3].out_channels for stage in backbone.stages] == [8, 16, 24, 32]
    assert backbone(torch.rand(1, 3, 64, 48)).shape == (1, 40, 16, 12)
    with pytest.raises(ConfigError, match="five positive channel counts"):
        build_backbone("small", widths=(16, 32, 64, 128))
    with pytest.raises(ConfigError, match="'model.backbone.widths' .* must lie in \\[1, inf\\]"):
        load_config(overrides=["model.backbone.widths=[16,0,64,128,96]"])
    with pytest.raises(ConfigError, match="'small' backbone only"):
        build_backbone("resnet18", widths=(16, 32, 64, 128, 96))


def test_backbone_errors_name_the_setting(tmp_path):
    with pytest.raises(ConfigError, match="unknown backbone 'tiny'"):
        build_backbone("tiny")
    with pytest.raises(ConfigError, match="stride 8 or 4, not 2"):
        build_backbone("small", stride=2)
    with pytest.raises(ConfigError, match="no pretrained weights"):
        build_backbone("small", weights=tmp_path / "w.pth")
    with pytest.raises(ConfigError, match="stride 16 or 8 \\(dilated\\), not 4"):
        build_backbone("mobilenet_v2", stride=4)
    with pytest.raises(ConfigError, match="output stride is 16, not 8"):
        build_backbone("resnet18", stride=8)
    with pytest.raises(CheckpointError, match="weights file not found"):
        build_backbone("resnet18", weights=tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a state dict")
    with pytest.raises(CheckpointError, match="cannot read backbone weights"):
        build_backbone("resnet18", weights=tmp_path / "junk.pth")


def test_channels_last_is_the_torchvision_networks_default_and_changes_only_the_layout():
    assert not build_backbone("small").channels_last
    assert build_backbone("small", channels_last=True).channels_last
    nhwc = build_backbone("mobilenet_v2")
    assert nhwc.channels_last
    assert nhwc.stages[1][0].conv[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    nchw = build_backbone("mobilenet_v2", channels_last=False)
    assert not nchw.channels_last
    nchw.load_state_dict(nhwc.state_dict())
    images = torch.rand(2, 3, 64, 80)
    with torch.no_grad():
        expected, features = nchw.eval()(images), nhwc.eval()(images)
    # The heads get the usual NCHW layout (views and flattening rely on it), with the same values.
    assert features.is_contiguous() and features.shape == (2, 96, 4, 5)
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-5)
    normalised = nhwc.normalise(images)
    assert torch.equal(nhwc.forward_normalised(normalised), features)
    assert not backbone_from_config(BackboneConfig(name="mobilenet_v2", channels_last=False)).channels_last


@pytest.mark.parametrize("name, stride", [("small", None), ("mobilenet_v2", None), ("mobilenet_v2", 8),
                                          ("resnet18", None), ("vgg16", None)])
def test_cell_origin_is_where_each_cells_receptive_field_is_centred(name, stride):
    # With every weight positive and equal per layer, BatchNorm as identity and max pools made
    # averages, an output cell's gradient over the input is symmetric about the centre of its
    # receptive field: its centroid (in continuous pixels, +0.5 per index) is cell_origin + i·stride.
    backbone = build_backbone(name, stride=stride).eval()
    for module in backbone.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.constant_(module.weight, 1e-2 / (module.weight[0].numel()))
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, torch.nn.MaxPool2d):
            module.forward = lambda x, m=module: torch.nn.functional.avg_pool2d(
                x, m.kernel_size, m.stride, m.padding, count_include_pad=False)
    images = torch.ones(1, 3, 320, 320, requires_grad=True)   # positive after normalising
    features = backbone(images)
    cell = 10                                   # far enough from the borders for VGG16
    features[0, :, cell, cell].sum().backward()
    weights = images.grad[0].abs().sum(0)                                   # [H, W]
    positions = torch.arange(320, dtype=torch.float64) + 0.5
    centre_x = (weights.sum(0).double() * positions).sum() / weights.sum()
    centre_y = (weights.sum(1).double() * positions).sum() / weights.sum()
    expected = backbone.cell_origin + cell * backbone.stride
    assert abs(centre_x - expected) < 0.05 and abs(centre_y - expected) < 0.05


def test_dilated_mobilenet_v2_doubles_the_resolution_with_the_same_weights():
    coarse, fine = build_backbone("mobilenet_v2").eval(), build_backbone("mobilenet_v2", stride=8).eval()
    fine.load_state_dict(coarse.state_dict())          # same parameters: stride-16 weights load as they are
    assert fine.stride == 8 and fine.out_channels == 96
    images = torch.rand(1, 3, 64, 80)
    with torch.no_grad():
        assert fine(images).shape == (1, 96, 8, 10) and coarse(images).shape == (1, 96, 4, 5)
        # Before the dilated stage both compute the same stride-8 map.
        torch.testing.assert_close(fine.stages[:3](fine.normalise(images)),
                                   coarse.stages[:3](coarse.normalise(images)))


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18"])
def test_frozen_batchnorm_is_folded_into_its_convolution_with_the_same_outputs_gradients_and_keys(name, tmp_path):
    import torchvision
    from torchvision.ops.misc import FrozenBatchNorm2d

    from detect.frozen_batchnorm import FoldedFrozenBatchNorm2d, FrozenBNConv2d

    torch.manual_seed(0)
    network = save_weights_with_live_batchnorm(getattr(torchvision.models, name)(), tmp_path / "w.pth")
    if name == "mobilenet_v2":
        reference = network.features[:14]
    else:
        reference = torch.nn.Sequential(network.conv1, network.bn1, network.relu, network.maxpool,
                                        network.layer1, network.layer2, network.layer3)
    backbone = build_backbone(name, weights=tmp_path / "w.pth", frozen_stages=3, channels_last=False)
    norms = [m for m in backbone.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert norms and all(isinstance(m, FoldedFrozenBatchNorm2d) for m in norms)    # every one has its conv
    assert sum(isinstance(m, FrozenBNConv2d) for m in backbone.modules()) == len(norms)
    # The same tensors under the same names as unfolded frozen BatchNorm: files and checkpoints load.
    expected_keys = {k for k in reference.state_dict() if not k.endswith("num_batches_tracked")}
    assert len(backbone.state_dict()) == len(expected_keys)

    images = torch.rand(2, 3, 64, 64)
    features = backbone(images)
    expected = reference(backbone.normalise(images))
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-4)
    features.square().sum().backward()
    expected.square().sum().backward()
    trained = [p for p in backbone.parameters() if p.requires_grad]
    assert trained and all(p.grad is not None for p in trained)
    # Gradients reach the conv weights through the fold as through the pair (float32 sums of
    # ~10^5 terms: compared relative to the gradient's scale).
    last_conv = [m for m in backbone.stages[3].modules() if isinstance(m, torch.nn.Conv2d)][-1]
    reference_conv = [m for m in reference.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    scale = reference_conv.weight.grad.abs().max().item()
    torch.testing.assert_close(last_conv.weight.grad, reference_conv.weight.grad, rtol=1e-3, atol=1e-3 * scale)
