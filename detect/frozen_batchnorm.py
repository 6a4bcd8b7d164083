"""Frozen BatchNorm for pretrained backbones, folded into the convolution that feeds it.

Fine-tuning with a few images per batch would destroy a pretrained network's BatchNorm statistics,
so they are frozen (:func:`freeze_batchnorm`). A frozen BatchNorm right after a convolution is then
an affine map per channel, ``s · x + t``, which the convolution applies to its small weight tensor
instead of to the large output (:class:`FrozenBNConv2d`): the same outputs up to float rounding
and the same weight names, in about half the backbone's training-step time on a CPU.
"""

from __future__ import annotations

import torchvision
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d


class FoldedFrozenBatchNorm2d(FrozenBatchNorm2d):
    """Frozen BatchNorm that the convolution feeding it applies (:class:`FrozenBNConv2d`).

    It keeps the statistics and affine terms under the usual names, so weight files, state dicts
    and checkpoints are the same as with a plain ``FrozenBatchNorm2d``, and passes its input
    through unchanged.
    """

    def scale_and_shift(self) -> tuple[Tensor, Tensor]:
        """``(s, t)`` with ``BN(x) = s · x + t`` per channel."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: Tensor) -> Tensor:
        return x


class FrozenBNConv2d(nn.Conv2d):
    """A convolution followed by frozen BatchNorm, computed as one convolution.

    ``s · conv(x, W) + t = conv(x, s · W) + t``: scaling the small weight tensor at every call
    instead of the large output saves two passes over each activation map — MobileNetV2's forward
    and backward on 4 images of 384 px take half the time on 2 CPU threads
    (``benchmarks/batchnorm_fold.py``, docs/benchmarks.md). ``W`` stays the
    parameter, so gradients and fine-tuning are those of the unfolded pair. The BatchNorm itself
    stays in its place in the network as a :class:`FoldedFrozenBatchNorm2d`, holding its tensors.
    """

    def __init__(self, conv: nn.Conv2d, norm: FoldedFrozenBatchNorm2d):
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                         conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
                         device=conv.weight.device, dtype=conv.weight.dtype)
        self.weight, self.bias = conv.weight, conv.bias
        self.__dict__["norm"] = norm   # not a submodule: the network registers it where it was

    def forward(self, x: Tensor) -> Tensor:
        scale, shift = self.norm.scale_and_shift()
        bias = shift if self.bias is None else self.bias * scale + shift
        return self._conv_forward(x, self.weight * scale.view(-1, 1, 1, 1), bias)


def _conv_feeding(module: nn.Module, names: list[str], index: int) -> str | None:
    """Name of the sibling convolution whose output goes straight into child ``names[index]``
    (a BatchNorm): the previous layer of a Sequential, or a torchvision ResNet block's ``convK``
    for ``bnK``."""
    if isinstance(module, nn.Sequential):
        candidate = names[index - 1] if index > 0 else None
    elif isinstance(module, (torchvision.models.resnet.BasicBlock, torchvision.models.resnet.Bottleneck)):
        candidate = "conv" + names[index][2:] if names[index].startswith("bn") else None
    else:
        candidate = None
    conv = getattr(module, candidate, None) if candidate else None
    if type(conv) is nn.Conv2d and conv.out_channels == getattr(module, names[index]).num_features:
        return candidate
    return None


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d by frozen BatchNorm with the same statistics and affine terms,
    folded into the convolution that feeds it where there is one (:class:`FrozenBNConv2d`)."""
    names = [name for name, _ in module.named_children()]
    for index, name in enumerate(names):
        child = getattr(module, name)
        if not isinstance(child, nn.BatchNorm2d):
            freeze_batchnorm(child)
            continue
        conv_name = _conv_feeding(module, names, index)
        frozen = (FrozenBatchNorm2d if conv_name is None else FoldedFrozenBatchNorm2d)(child.num_features, eps=child.eps)
        frozen.weight.copy_(child.weight.detach())
        frozen.bias.copy_(child.bias.detach())
        frozen.running_mean.copy_(child.running_mean)
        frozen.running_var.copy_(child.running_var)
        setattr(module, name, frozen)
        if conv_name is not None:
            setattr(module, conv_name, FrozenBNConv2d(getattr(module, conv_name), frozen))
    return module
