"""Evaluate detections (or a checkpoint) against a dataset split.

    python tools/eval.py --data ../shared/data/raccoon --split test --detections dets.json
    python tools/eval.py --data builtin --checkpoint runs/faster_rcnn_shapes_mnv2/best.pt --metric voc
    python tools/eval.py --data instances_val.json --detections dets.json --metric coco --json out.json

Prints a per-class AP table and the mean. ``--json`` writes
``{"metric": ..., "map": ..., "ap": {class: AP}}``; ``--plots DIR`` draws the PR curves.
``--breakdown`` adds where the mAP is lost: AP by object size (class-aware and class-agnostic)
and what the detections scored at least ``--breakdown-score`` are (correct, duplicate, on a
difficult object, wrong class, poorly localised, background), with the classes most confused.
The detections format is described in README.md ("Detections file").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from detect.cli import add_common_arguments, run, setup_logging


def _edges(text: str) -> tuple[float, ...]:
    try:
        edges = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated pixel sizes like 16,32,64, got {text!r}") from None
    if any(e <= 0 for e in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
        raise argparse.ArgumentTypeError(f"size edges must be positive and increasing, got {text!r}")
    return edges


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="PASCAL VOC folder, COCO JSON file, or 'builtin'")
    parser.add_argument("--split", default="test", help="VOC split (ImageSets/Main/<split>.txt); default: test")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--detections", type=Path, help="detections JSON written by tools/infer.py")
    source.add_argument("--checkpoint", type=Path, help="run this checkpoint's detector on the split first")
    parser.add_argument("--metric", choices=("voc07", "voc", "coco"), default="voc07",
                        help="voc07: 11-point AP; voc: area AP; coco: pycocotools AP@[.5:.95] (default: voc07)")
    parser.add_argument("--iou", type=float, default=None,
                        help="VOC match threshold (IoU > this), also --breakdown's; default 0.5")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--plots", type=Path, help="write precision/recall curves (PNG) into this folder")
    parser.add_argument("--breakdown", action="store_true",
                        help="also print where the mAP is lost: AP by object size (class-aware and class-agnostic) "
                             "and what the confident detections are (correct, duplicate, wrong class, ...)")
    parser.add_argument("--breakdown-score", type=float, default=0.5, metavar="S",
                        help="--breakdown categorises the detections scored at least S (default 0.5)")
    parser.add_argument("--size-edges", type=_edges, default=None, metavar="E1,E2,...",
                        help="--breakdown's size bands: edges in pixels of the boxes' shorter side "
                             "(default 16,32,64,128,256)")
    parser.add_argument("--device", default="auto", help="with --checkpoint: auto, cpu, cuda, cuda:N")
    parser.add_argument("--image-root", help="COCO: the folder holding the images (default: beside the JSON, its "
                        "images/ sub-folder, or COCO's own ../<split>/ beside annotations/)")
    parser.add_argument("--on-invalid", choices=("error", "skip"), default="error",
                        help="bad annotations/images: stop with an error, or skip them and report a count")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(args.debug, args.quiet)
    if args.iou is not None and not 0.0 <= args.iou < 1.0:
        parser.error(f"--iou must be in [0, 1), got {args.iou}")
    if args.metric == "coco" and args.plots is not None:
        parser.error("--plots draws VOC precision/recall curves; use it with --metric voc07 or voc")
    if args.metric == "coco" and args.iou is not None and not args.breakdown:
        parser.error("--iou is the VOC match threshold (COCO AP averages IoU 0.50:0.95 itself); with --metric coco "
                     "it applies only to --breakdown")

    from detect.evaluation.report import evaluate_split

    report = evaluate_split(args.data, args.split, detections=args.detections, checkpoint=args.checkpoint,
                            metric=args.metric, iou_threshold=0.5 if args.iou is None else args.iou, on_invalid=args.on_invalid,
                            image_root=args.image_root, device=args.device,
                            json_path=args.json, plots_dir=args.plots, progress=not args.quiet,
                            breakdown=args.breakdown, breakdown_score=args.breakdown_score,
                            **({} if args.size_edges is None else {"size_edges": args.size_edges}))
    print(report.text)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
