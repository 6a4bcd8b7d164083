"""Inference time per image of a trained detector (median and spread after warm-up).

    python benchmarks/inference_speed.py --checkpoint runs/faster_rcnn_shapes/best.pt [--data builtin]
                                         [--split test] [--images 30] [--warmup 5] [--threads N]

Times ``model.predict`` on one image at a time (batch 1, what a user of tools/infer.py sees),
images taken from the dataset's split at their original size; the model resizes them to its
input size. Prints the median, the 10th/90th percentiles and the input size, and the time spent
in the shared backbone: the part no head can save. A detector that runs the backbone once on the
same input takes at least that long, so this detector's median over it bounds how much faster
such a detector could be (YOLOv1 against Faster R-CNN, issue #5). For R-CNN and
Fast R-CNN, the detector gets each image's cached proposals and selective search is timed
separately.
"""

from __future__ import annotations

import argparse
from typing import Sequence

import torch

from detect.benchmark.timing import (Timing, add_timing_arguments, apply_threads, backbone_timer, time_inference,
                                 time_proposals)
from detect.cli import run
from detect.config import DataConfig
from detect.data.build import load_split
from detect.data.transforms import TestTransforms
from detect.engine.checkpoint import checkpoint_config, load_detector
from detect.proposals.cache import attach_proposals


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    add_timing_arguments(parser)
    args = parser.parse_args(argv)
    apply_threads(args)
    model, checkpoint = load_detector(args.checkpoint, "cpu")
    dataset = load_split(DataConfig(dataset=args.data), args.split, TestTransforms(), class_names=checkpoint["class_names"])
    proposal_timing = None
    if model.uses_proposals:
        config = checkpoint_config(checkpoint, args.checkpoint).model.proposals
        attach_proposals(dataset, config)
        proposal_timing = time_proposals(dataset, config.selective_search, args.images, args.warmup)
    with backbone_timer(model) as backbone:
        timing = time_inference(model, dataset, args.images, args.warmup, timers=[backbone])
    backbone_timing = Timing.of(backbone.per_image_ms)
    print(f"{args.checkpoint}: {checkpoint['config']['model']['name']} / {checkpoint['config']['model']['backbone']['name']}, "
          f"input {checkpoint['config']['model']['input_size']} px, {torch.get_num_threads()} threads")
    excluded = ", proposals excluded" if proposal_timing else ""
    print(f"inference per image{excluded}: median {timing.median:.1f} ms (p10 {timing.p10:.1f}, "
          f"p90 {timing.p90:.1f}) over {timing.count} images")
    print(f"of which the backbone: median {backbone_timing.median:.1f} ms (p10 {backbone_timing.p10:.1f}, "
          f"p90 {backbone_timing.p90:.1f}), {backbone_timing.median / timing.median:.0%} of the median; the rest "
          f"(resizing, heads, decoding, NMS): {timing.median - backbone_timing.median:.1f} ms")
    if proposal_timing:
        print(f"selective search per image: median {proposal_timing.median:.1f} ms (p10 {proposal_timing.p10:.1f}, "
              f"p90 {proposal_timing.p90:.1f}) over {proposal_timing.count} images")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
