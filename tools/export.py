"""Export a trained Faster R-CNN or YOLO for deployment, and check the export against PyTorch.

    python tools/export.py --checkpoint runs/faster_rcnn_shapes/best.pt               # → <run>/model.onnx
    python tools/export.py --checkpoint runs/yolo_raccoon/best.pt --format torchscript --out yolo.ts

Writes the model and a ``.json`` sidecar (input size, class names, resize rule), then runs both
PyTorch and the exported model (onnxruntime for ONNX) on ``--check-images`` generated images and
reports the largest box and score differences. The graph's input/output contract and the
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

    import torch

    from detect.engine.checkpoint import checkpoint_config, load_detector
    from detect.export import ExportedDetector, compare_with_pytorch, export

    model, checkpoint = load_detector(args.checkpoint, device="cpu")
    config = checkpoint_config(checkpoint, args.checkpoint)
    out = args.out or args.checkpoint.parent / ("model.onnx" if args.format == "onnx" else "model.ts")
    if args.format == "onnx":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise DetectError("ONNX export needs onnx, onnxscript and onnxruntime: pip install -e '.[export]'") from None
    path = export(model, config.model.name, checkpoint["class_names"], out, args.format)
    print(f"exported {config.model.name} to {path} (contract: {path.with_suffix('.json')})")
    if args.check_images:
        generator = torch.Generator().manual_seed(0)
        images = [torch.rand(3, 200 + 37 * i, 260 - 21 * i, generator=generator) for i in range(args.check_images)]
        report = compare_with_pytorch(model, ExportedDetector(path), images)
        print(f"check on {len(images)} images: {report['detections']} detections, same count and labels: "
              f"{report['same']}, max |Δbox| {report['box']:.2e} px, max |Δscore| {report['score']:.2e}")
        return 0 if report["same"] else 1
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
