"""The shared backbone factory: every detector extracts features through :func:`build_backbone`.

A :class:`Backbone` takes RGB images as float tensors in ``[0, 1]`` (``[B, 3, H, W]``), normalises
them with its own statistics, and returns one feature map ``[B, out_channels, H / stride, W / stride]``.

========================  ======  ===========  ============================================
name                      stride  out_channels  what
========================  ======  ===========  ============================================
``small``                 8 (4)   96 (any)     from scratch, fast enough for 2 CPU cores
``mobilenet_v2``          16 (8)  96           torchvision, ``features[:14]`` (stride 8: dilated)
``resnet18``              16      256          torchvision, conv1 … layer3 (Faster R-CNN "C4")
``resnet50``              16      1024         torchvision, conv1 … layer3
``vgg16``                 16      512          torchvision, conv1_1 … conv5_3 (the papers' net)
========================  ======  ===========  ============================================

Pretrained weights: ``weights`` is None, a local state-dict file in torchvision's format for the
full classification network, or ``"imagenet"`` (torchvision's own download, for users with
internet). Pretrained networks get their BatchNorm replaced by frozen BatchNorm: fine-tuning
with small batches would otherwise destroy the statistics. Each frozen BatchNorm is then folded
into the convolution before it (:mod:`detect.frozen_batchnorm`): the same outputs up to float
rounding and the same weight names, in about half the backbone's training-step time on a CPU.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from detect.errors import CheckpointError, ConfigError
from detect.frozen_batchnorm import freeze_batchnorm

if TYPE_CHECKING:
    from detect.config import BackboneConfig

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Backbone(nn.Module):
    """Normalise, then run ``stages`` in order.

    Attributes:
        out_channels: channels of the output feature map.
        stride: input pixels per output cell.
        cell_origin: where output cell ``(0, 0)`` is centred, in continuous input pixels: cell
            ``i`` sits at ``cell_origin + i · stride`` on each axis. A ``k × k`` stride-2 conv or
            pool with padding ``k // 2`` centres output ``j`` on input pixel ``2j``, so networks
            that downsample only so (the small one, MobileNetV2, ResNet) have their cells centred
            on input pixel ``i · stride``, at ``0.5 + i · stride``; VGG's ``2 × 2`` pools centre
            them between pixels, at ``(i + ½) · stride``. Anchors are placed on these centres
            and RoIAlign samples the map accordingly (``(i + ½) · stride``, RoIAlign's own
            ``aligned=True`` assumption, would read the small backbone's map 3.5 px and
            MobileNetV2's 7.5 px up and to the left of each region).
    """

    #: Whether :func:`build_backbone` runs this kind channels-last when the config does not say.
    prefers_channels_last = True

    def __init__(self, stages: list[nn.Module], out_channels: int, stride: int,
                 mean: tuple[float, float, float] = IMAGENET_MEAN, std: tuple[float, float, float] = IMAGENET_STD,
                 cell_origin: float = 0.5):
        super().__init__()
        self.stages = nn.Sequential(*stages)
        self.out_channels = out_channels
        self.stride = stride
        self.cell_origin = cell_origin
        self.channels_last = False
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        """images (Tensor[B, 3, H, W], RGB in [0, 1]) → features (Tensor[B, C, H/stride, W/stride])."""
        return self.forward_normalised(self.normalise(images))

    def normalise(self, images: Tensor) -> Tensor:
        """RGB in [0, 1] → the statistics the network expects."""
        return (images - self.mean) / self.std

    def forward_normalised(self, normalised: Tensor) -> Tensor:
        """Features of already normalised images (R-CNN's warped crops), in NCHW layout."""
        if not self.channels_last:
            return self.extract(normalised)
        # NHWC inside the backbone only: the heads get the usual contiguous (NCHW) layout back.
        return self.extract(normalised.contiguous(memory_format=torch.channels_last)).contiguous()

    def use_channels_last(self, enabled: bool = True) -> "Backbone":
        """Run the convolutions on channels-last (NHWC) tensors, or back on NCHW ones.

        oneDNN's CPU kernels for depthwise and 1×1 convolutions are much faster in NHWC: measured
        here (2 threads), MobileNetV2 to stride 16 on a 416 px image 56 → 36 ms, a training step
        on two images 319 → 215 ms. The values are the same up to float rounding.
        """
        self.channels_last = enabled
        return self.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)

    def extract(self, images: Tensor) -> Tensor:
        """Features of normalised images: the stages in sequence."""
        return self.stages(images)

    def freeze_batchnorm(self) -> "Backbone":
        """Frozen BatchNorm folded into its convolutions, as every backbone built from pretrained
        weights has it (:func:`detect.frozen_batchnorm.freeze_batchnorm`); the same tensors under
        the same names."""
        return freeze_batchnorm(self)

    def freeze_stages(self, count: int) -> None:
        """Stop training the first ``count`` stages (their weights keep requires_grad=False)."""
        if count > len(self.stages):
            raise ConfigError(f"model.backbone.frozen_stages={count} but this backbone has only "
                              f"{len(self.stages)} stages")
        for stage in list(self.stages)[:count]:
            for parameter in stage.parameters():
                parameter.requires_grad_(False)


class SmallBackbone(Backbone):
    """A small network trained from scratch, with top-down merges down to stride 8 (or 4).

    Four VGG-style stages (``conv3×3 stride 2`` then ``conv3×3``, BatchNorm + ReLU) reach stride
    16, where the receptive field covers the largest objects; their output is upsampled ×2 and
    added to a 1×1 projection of the stride-8 stage (as in FPN), then smoothed by a 3×3 conv.
    The stride-8 output keeps the shape detail of objects only 10–20 px wide. About 0.4 M
    parameters and 0.3 GMAC for a 256 × 256 image.

    With ``out_stride=4`` the merged map is upsampled once more and added to a projection of the
    stride-4 stage before smoothing: anchors every 4 px and RoIs pooled from a 4× finer grid, for
    objects of 10–25 px, at about twice the compute.
    """

    prefers_channels_last = False   # measured: a 320 px image 7.1 → 6.3 ms, training no faster

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128), out_channels: int = 96, out_stride: int = 8):
        if out_stride not in (4, 8):
            raise ConfigError(f"the 'small' backbone has outputs at stride 8 or 4, not {out_stride} "
                              "(model.backbone.stride)")
        stages, in_channels = [], 3
        for index, width in enumerate(widths):
            layers = _conv_bn_relu(in_channels, width, stride=2)
            if index > 0:
                layers += _conv_bn_relu(width, width)
            stages.append(nn.Sequential(*layers))
            in_channels = width
        super().__init__(stages, out_channels=out_channels, stride=out_stride,
                         mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
        self.lateral = nn.Conv2d(widths[-2], out_channels, 1)
        self.top_down = nn.Conv2d(widths[-1], out_channels, 1)
        self.lateral_fine = nn.Conv2d(widths[-3], out_channels, 1) if out_stride == 4 else None
        self.smooth = nn.Sequential(*_conv_bn_relu(out_channels, out_channels))

    def extract(self, images: Tensor) -> Tensor:
        finest = self.stages[:-2](images)                       # stride 4
        fine = self.stages[-2](finest)                          # stride 8
        coarse = self.stages[-1](fine)                          # stride 16
        merged = self.lateral(fine) + F.interpolate(self.top_down(coarse), size=fine.shape[-2:], mode="nearest")
        if self.lateral_fine is not None:
            merged = self.lateral_fine(finest) + F.interpolate(merged, size=finest.shape[-2:], mode="nearest")
        return self.smooth(merged)


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


def _load_state_dict(network: nn.Module, weights: str | None, name: str, torchvision_weights: Callable) -> bool:
    """Load classification weights into a torchvision network; return True if pretrained."""
    if weights is None:
        return False
    if weights == "imagenet":
        state = torchvision_weights().get_state_dict(progress=True)
    else:
        path = Path(weights)
        if not path.is_file():
            raise CheckpointError("backbone weights file not found; pass a state-dict file, "
                                  "'imagenet', or null for random initialisation", path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises many types for a bad file
            raise CheckpointError(f"cannot read backbone weights ({type(error).__name__}); is this a "
                                  "torch state dict?", path) from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[1].strip() if len(str(error).splitlines()) > 1 else str(error)
        raise CheckpointError(f"weights do not fit torchvision's {name} ({first})", weights) from None
    logger.info("loaded %s weights from %s", name, weights)
    return True


def mobilenet_v2_backbone(weights: str | None = None, stride: int | None = None) -> Backbone:
    """MobileNetV2 to stride 16, or with ``stride=8`` the same network dilated (see :func:`_dilate`)."""
    if stride not in (None, 8, 16):
        raise ConfigError(f"the 'mobilenet_v2' backbone has outputs at stride 16 or 8 (dilated), not {stride} "
                          "(model.backbone.stride)")
    network = torchvision.models.mobilenet_v2()
    pretrained = _load_state_dict(network, weights, "mobilenet_v2",
                                  lambda: torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1)
    features = network.features
    # stride 2 (0-1), 4 (2-3), 8 (4-6), 16 (7-13): stop at stride 16 as the papers' C4 features do.
    stages = [features[0:2], features[2:4], features[4:7], features[7:14]]
    if stride == 8:
        _dilate([block.conv[1][0] for block in features[7:14]])
    backbone = Backbone(stages, out_channels=96, stride=stride or 16)
    return backbone.freeze_batchnorm() if pretrained else backbone


def _dilate(depthwise: list[nn.Conv2d]) -> None:
    """Take the stride 2 out of a stage whose 3 × 3 convs are ``depthwise``, keeping its weights' view.

    DeepLab's atrous trick: the first conv stops striding and every later one dilates by 2, so each
    pretrained kernel still spans the same image area, sampled on a grid twice as fine. The output
    has twice the resolution (stride 8 instead of 16) for about four times that stage's compute;
    cells stay centred on input pixels ``i · stride``, as before.
    """
    first, *rest = depthwise
    first.stride = (1, 1)
    for conv in rest:
        conv.dilation, conv.padding = (2, 2), (2, 2)


def resnet_backbone(depth: int, weights: str | None = None) -> Backbone:
    name = f"resnet{depth}"
    network = getattr(torchvision.models, name)()
    enum = {18: torchvision.models.ResNet18_Weights, 50: torchvision.models.ResNet50_Weights}[depth]
    pretrained = _load_state_dict(network, weights, name, lambda: enum.IMAGENET1K_V1)
    stem = nn.Sequential(network.conv1, network.bn1, network.relu, network.maxpool)
    stages = [stem, network.layer1, network.layer2, network.layer3]
    backbone = Backbone(stages, out_channels=256 if depth == 18 else 1024, stride=16)
    return backbone.freeze_batchnorm() if pretrained else backbone


def vgg16_backbone(weights: str | None = None) -> Backbone:
    network = torchvision.models.vgg16()
    _load_state_dict(network, weights, "vgg16", lambda: torchvision.models.VGG16_Weights.IMAGENET1K_V1)
    features = network.features
    # Pools sit at indices 4, 9, 16, 23, 30; the last is dropped (stride 16, conv5_3 output).
    stages = [features[0:5], features[5:10], features[10:17], features[17:24], features[24:30]]
    return Backbone(stages, out_channels=512, stride=16, cell_origin=8.0)   # 2 x 2 pools: between pixels


BACKBONES: dict[str, Callable[..., Backbone]] = {
    "small": lambda weights, stride=None, widths=None: _small_with_weights(weights, stride, widths),
    "mobilenet_v2": lambda weights, stride=None: mobilenet_v2_backbone(weights, stride),
    "resnet18": lambda weights: resnet_backbone(18, weights),
    "resnet50": lambda weights: resnet_backbone(50, weights),
    "vgg16": vgg16_backbone,
}


def _small_with_weights(weights: str | None, stride: int | None, widths: Sequence[int] | None) -> Backbone:
    if weights is not None:
        raise ConfigError("the 'small' backbone has no pretrained weights; set model.backbone.weights "
                          "to null, or use mobilenet_v2 / resnet18 / resnet50 / vgg16")
    options: dict = {} if stride is None else {"out_stride": stride}
    if widths is not None:
        if len(widths) != 5 or min(widths) < 1:
            raise ConfigError(f"model.backbone.widths takes five positive channel counts (four stages, then "
                              f"the output map), e.g. [16, 32, 64, 128, 96]; got {list(widths)}")
        options.update(widths=tuple(widths[:4]), out_channels=widths[4])
    return SmallBackbone(**options)


def backbones_in(model: nn.Module) -> list[Backbone]:
    """The :class:`Backbone` modules inside ``model`` (one in every detector, torchvision's too)."""
    return [module for module in model.modules() if isinstance(module, Backbone)]


def build_backbone(name: str, weights: str | os.PathLike | None = None, frozen_stages: int = 0,
                   stride: int | None = None, channels_last: bool | None = None,
                   widths: Sequence[int] | None = None) -> Backbone:
    """Build a backbone by name (see the module table).

    Args:
        name: ``small``, ``mobilenet_v2``, ``resnet18``, ``resnet50`` or ``vgg16``.
        weights: None, a local state-dict file, or ``"imagenet"``.
        frozen_stages: leading stages excluded from training.
        stride: output stride; None for the backbone's own (``small``: 8 or 4; ``mobilenet_v2``: 16 or 8).
        channels_last: NHWC convolutions (:meth:`Backbone.use_channels_last`); None for the
            backbone's own preference (the torchvision networks yes, ``small`` no).
        widths: ``small`` only: channels of its four stages and of its output (five numbers);
            None for :class:`SmallBackbone`'s defaults.

    Raises:
        ConfigError: unknown name or impossible combination. CheckpointError: unusable weights file.
    """
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)} "
                          "(model.backbone.name)")
    weights = None if weights is None else os.fspath(weights)
    if widths is not None and name != "small":
        raise ConfigError(f"model.backbone.widths applies to the 'small' backbone only; leave it unset (null) "
                          f"for {name!r}")
    if name == "small":
        backbone = BACKBONES[name](weights, stride, widths)
    elif stride is None:
        backbone = BACKBONES[name](weights)
    elif name == "mobilenet_v2":
        backbone = BACKBONES[name](weights, stride)
    else:
        backbone = BACKBONES[name](weights)
        if backbone.stride != stride:
            raise ConfigError(f"the {name!r} backbone's output stride is {backbone.stride}, not {stride}; "
                              "leave model.backbone.stride unset (null)")
    backbone.freeze_stages(frozen_stages)
    if backbone.prefers_channels_last if channels_last is None else channels_last:
        backbone.use_channels_last()
    return backbone


def backbone_from_config(config: BackboneConfig) -> Backbone:
    """The backbone a :class:`detect.config.BackboneConfig` describes (what every detector builds)."""
    return build_backbone(config.name, config.weights, config.frozen_stages, config.stride, config.channels_last,
                          config.widths)
