"""Export a trained Faster R-CNN or YOLO for deployment, and check the export against PyTorch.

    python tools/export.py --checkpoint runs/faster_rcnn_shapes_mnv2/best.pt          # → <run>/model.onnx
    python tools/export.py --checkpoint runs/yolo_raccoon/best.pt --format torchscript --out yolo.ts

Writes the model and a ``<file>.json`` sidecar (input size, class names, resize rule), then runs
PyTorch and the exported model (onnxruntime for ONNX) on the first ``--check-images`` test images
of the checkpoint's dataset and reports the largest box and score differences. The graph's input/output contract and the
pre/post-processing a deployment must do are in detect/export.py and the README ("Export").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from detect.cli import add_common_arguments, run, setup_logging
from detect.errors import DetectError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="a Faster R-CNN or YOLO checkpoint")
    parser.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    parser.add_argument("--out", type=Path, help="output file (default: next to the checkpoint, model.onnx / model.ts)")
    parser.add_argument("--check-images", type=int, default=5, help="images compared with PyTorch (0: skip)")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(args.debug, args.quiet)
    if args.check_images < 0:
        parser.error(f"--check-images must be 0 (skip the check) or more, got {args.check_images}")

    import torch

    from detect.engine.checkpoint import checkpoint_config, load_detector
    from detect.export import ExportedDetector, compare_with_pytorch, export, sidecar_path

    model, checkpoint = load_detector(args.checkpoint, device="cpu")
    config = checkpoint_config(checkpoint, args.checkpoint)
    out = args.out or args.checkpoint.parent / ("model.onnx" if args.format == "onnx" else "model.ts")
    if args.format == "onnx":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise DetectError("ONNX export needs onnx, onnxscript and onnxruntime: pip install -e '.[export]'") from None
    images = _check_images(config, checkpoint["class_names"], max(args.check_images, 1))
    path = export(model, config.model.name, checkpoint["class_names"], out, args.format, example=images[0])
    print(f"exported {config.model.name} to {path} (contract: {sidecar_path(path)})")
    if args.check_images:
        report = compare_with_pytorch(model, ExportedDetector(path), images[: args.check_images])
        print(f"check on {args.check_images} test images: PyTorch {report['detections']} detections; exported: all "
              f"matched with the same label {report['same']} ({report['boundary']} at the score threshold), "
              f"max |Δbox| {report['box']:.2e} px, max |Δscore| {report['score']:.2e}")
        if report["detections"] == 0:
            print("warning: PyTorch detected nothing on these images, so the check shows little", file=sys.stderr)
        return 0 if report["same"] else 1
    return 0


def _check_images(config, class_names, count):
    """The first test images of the checkpoint's dataset, or seeded noise when it is not here."""
    import torch

    from detect.data.build import load_test_split
    from detect.data.transforms import TestTransforms

    try:
        dataset = load_test_split(config.data, TestTransforms(), class_names=class_names)
        images = [dataset[i]["image"] for i in range(min(count, len(dataset)))]
        if images:
            return images
    except DetectError as error:
        print(f"note: test images unavailable ({error}); checking on noise", file=sys.stderr)
    generator = torch.Generator().manual_seed(0)
    return [torch.rand(3, 200 + 37 * i, 260 - 21 * i, generator=generator) for i in range(count)]

if __name__ == "__main__":
    sys.exit(run(main))
