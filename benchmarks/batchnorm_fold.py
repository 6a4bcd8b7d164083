"""What folding frozen BatchNorm into the convolutions saves: a config's detector, folded and not.

    python benchmarks/batchnorm_fold.py --config configs/faster_rcnn_shapes_mnv2.yaml [--repeats 15]
                                        [--warmup 3] [--threads N]

Pretrained backbones fold each frozen BatchNorm into the convolution feeding it
(:class:`detect.frozen_batchnorm.FrozenBNConv2d`). This builds the config's detector (with its backbone
weights) and an unfolded copy — the same modules turned back into a plain ``Conv2d`` followed by
``FrozenBatchNorm2d`` — checks that both compute the same features, then times, alternating the
two so that the machine's drift hits both alike:

* the backbone's forward and backward on a training batch (``train.batch_size`` images at the
  input size),
* a whole training step (losses, backward) on that many synthetic built-in images,
* inference on one such image (``model.predict``, batch 1).

Prints the median milliseconds of each and the ratio folded / unfolded.
"""

from __future__ import annotations

import argparse
import copy
import time
from typing import Sequence

import numpy as np
import torch
from torchvision.ops.misc import FrozenBatchNorm2d

from detect.frozen_batchnorm import FoldedFrozenBatchNorm2d, FrozenBNConv2d
from detect.benchmark.timing import Timing, apply_threads
from detect.cli import run
from detect.config import load_config
from detect.errors import ConfigError
from detect.data.shape_drawing import generate_image
from detect.data.synthetic import SyntheticConfig
from detect.data.transforms import image_to_tensor
from detect.models import build_detector


def unfolded(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` whose folded pairs are a plain convolution and frozen BatchNorm again."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, FrozenBNConv2d):
            del module.__dict__["norm"]
            module.__class__ = torch.nn.Conv2d
        elif isinstance(module, FoldedFrozenBatchNorm2d):
            module.__class__ = FrozenBatchNorm2d
    return model


def synthetic_batch(count: int, size: int = 256) -> tuple[list[torch.Tensor], list[dict]]:
    """``count`` built-in-style images (the configs' 256 px) and their targets."""
    config = SyntheticConfig(image_size=size)
    images, targets = [], []
    for index in range(count):
        sample = generate_image(np.random.default_rng([7, index]), config)
        images.append(image_to_tensor(sample.image))
        targets.append({"boxes": torch.as_tensor(sample.boxes), "labels": torch.as_tensor(sample.labels)})
    return images, targets


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per variant")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args(argv)
    apply_threads(args)
    config = load_config(args.config)
    torch.manual_seed(0)
    folded = build_detector(config.model, 8)
    if not any(isinstance(m, FrozenBNConv2d) for m in folded.modules()):
        raise ConfigError(f"{args.config}: this backbone has no folded BatchNorm (only pretrained ones do); "
                          "pick a config with model.backbone.weights set")
    variants = {"folded": folded, "unfolded": unfolded(folded)}
    images, targets = synthetic_batch(config.train.batch_size)
    side = config.model.input_size
    tensors = torch.rand(config.train.batch_size, 3, side, side, generator=torch.Generator().manual_seed(0))

    with torch.no_grad():
        features = [model.eval().backbone(tensors[:1]) for model in variants.values()]
    print(f"{args.config}: backbone {config.model.backbone.name}, input {side} px, batch {config.train.batch_size}, "
          f"{torch.get_num_threads()} threads; largest feature difference folded/unfolded "
          f"{(features[0] - features[1]).abs().max().item():.2e} (features up to {features[1].abs().max().item():.1f})")

    def backbone_step(model):
        model.train()
        model.backbone(tensors).square().mean().backward()

    def training_step(model):
        model.train()
        sum(model(images, targets).values()).backward()

    def inference(model):
        model.eval()
        with torch.no_grad():
            model.predict(images[:1])

    for label, step in (("backbone forward + backward", backbone_step), ("training step", training_step),
                        ("inference, 1 image", inference)):
        times: dict[str, list[float]] = {name: [] for name in variants}
        for repeat in range(args.warmup + args.repeats):
            for name, model in variants.items():
                model.zero_grad(set_to_none=True)
                start = time.perf_counter()
                step(model)
                if repeat >= args.warmup:
                    times[name].append((time.perf_counter() - start) * 1000)
        medians = {name: Timing.of(values).median for name, values in times.items()}
        print(f"{label:28s} folded {medians['folded']:7.1f} ms   unfolded {medians['unfolded']:7.1f} ms   "
              f"ratio {medians['folded'] / medians['unfolded']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
