"""An exported model against PyTorch on a dataset's images: same detections? how fast?

    python benchmarks/export_speed.py --checkpoint runs/faster_rcnn_shapes/best.pt [--data builtin]
                                      [--split test] [--format onnx] [--images 30] [--threads N]

Exports the checkpoint (tools/export.py's code) into a temporary folder, runs PyTorch's
``predict`` and the exported model (onnxruntime, CPU) on every image of the split and matches
their detections (same count and labels; largest box and score differences), then times both on
single images after warm-up (median, p10, p90; the ratio of the medians).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from tqdm import tqdm

from detect.benchmark.timing import add_timing_arguments, apply_threads, time_inference
from detect.config import DataConfig
from detect.data.build import load_split
from detect.data.transforms import TestTransforms
from detect.engine.checkpoint import checkpoint_config, load_detector
from detect.export import ExportedDetector, compare_with_pytorch, export


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    add_timing_arguments(parser)   # --images are timed; every image of the split is compared
    args = parser.parse_args()
    apply_threads(args)
    model, checkpoint = load_detector(args.checkpoint, "cpu")
    name = checkpoint_config(checkpoint, args.checkpoint).model.name
    dataset = load_split(DataConfig(dataset=args.data), args.split, TestTransforms(), class_names=checkpoint["class_names"])
    with tempfile.TemporaryDirectory() as folder:
        exported = ExportedDetector(export(model, name, checkpoint["class_names"], Path(folder) / f"model.{args.format}",
                                           args.format))
        report = {"same": True, "box": 0.0, "score": 0.0, "detections": 0, "boundary": 0}
        for index in tqdm(range(len(dataset)), desc="compare", unit="img"):
            part = compare_with_pytorch(model, exported, [dataset[index]["image"]])
            report = {"same": report["same"] and part["same"], "box": max(report["box"], part["box"]),
                      "score": max(report["score"], part["score"]), "detections": report["detections"] + part["detections"],
                      "boundary": report["boundary"] + part["boundary"]}
        ours = time_inference(model, dataset, args.images, args.warmup)
        theirs = time_inference(None, dataset, args.images, args.warmup, predict=exported.predict)
    print(f"{args.checkpoint}: {name}, {len(dataset)} {args.split} images of {args.data}, {torch.get_num_threads()} threads")
    print(f"detections: {report['detections']}; all matched with the same label: {report['same']} "
          f"({report['boundary']} found by one side only, scoring within 1e-4 of the threshold); "
          f"max |Δbox| {report['box']:.2e} px, max |Δscore| {report['score']:.2e}")
    print(f"PyTorch predict: median {ours.median:.1f} ms (p10 {ours.p10:.1f}, p90 {ours.p90:.1f})")
    print(f"{args.format} ({'onnxruntime' if args.format == 'onnx' else 'torch.jit'}) with the same pre/post-processing: "
          f"median {theirs.median:.1f} ms (p10 {theirs.p10:.1f}, p90 {theirs.p90:.1f}); "
          f"PyTorch / exported = {ours.median / theirs.median:.2f}×")
    return 0 if report["same"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
