"""Evaluate detections (or a checkpoint) against a dataset split.

    python tools/eval.py --data ../shared/data/raccoon --split test --detections dets.json
    python tools/eval.py --data builtin --checkpoint runs/faster_rcnn_shapes/best.pt --metric voc
    python tools/eval.py --data instances_val.json --detections dets.json --metric coco --json out.json

Prints a per-class AP table and the mean. ``--json`` writes
``{"metric": ..., "map": ..., "ap": {class: AP}}``; ``--plots DIR`` draws the PR curves.
The detections format is described in README.md ("Detections file").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from detect.cli import add_common_arguments, run, setup_logging


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="PASCAL VOC folder, COCO JSON file, or 'builtin'")
    parser.add_argument("--split", default="test", help="VOC split (ImageSets/Main/<split>.txt); default: test")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--detections", type=Path, help="detections JSON written by tools/infer.py")
    source.add_argument("--checkpoint", type=Path, help="run this checkpoint's detector on the split first")
    parser.add_argument("--metric", choices=("voc07", "voc", "coco"), default="voc07",
                        help="voc07: 11-point AP; voc: area AP; coco: pycocotools AP@[.5:.95] (default: voc07)")
    parser.add_argument("--iou", type=float, default=0.5, help="VOC match threshold (IoU > this); default 0.5")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--plots", type=Path, help="write precision/recall curves (PNG) into this folder")
    parser.add_argument("--on-invalid", choices=("error", "skip"), default="error",
                        help="bad annotations/images: stop with an error, or skip them and report a count")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(args.debug, args.quiet)

    from detect.evaluation.report import evaluate_split

    report = evaluate_split(args.data, args.split, detections=args.detections, checkpoint=args.checkpoint,
                            metric=args.metric, iou_threshold=args.iou, on_invalid=args.on_invalid,
                            json_path=args.json, plots_dir=args.plots, progress=not args.quiet)
    print(report.text)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
