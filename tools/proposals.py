"""Compute (and cache) selective-search proposals for a dataset split; report their recall.

    python tools/proposals.py                                  # built-in test split, fast mode
    python tools/proposals.py --data ../shared/data/raccoon --split test --mode quality
    python tools/proposals.py --config configs/fast_rcnn_shapes.yaml --split trainval

Recall is the fraction of non-difficult ground-truth boxes that some proposal covers with IoU
≥ 0.5 (and ≥ 0.7), keeping the first N proposals of each image, for several N: the curve of the
selective-search paper. Also reports proposals per image and the run's wall-clock and images per
second, cached images included (they are read, not recomputed: time selective search on an empty
``model.proposals.cache_dir``).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from detect.boxes import box_iou
from detect.cli import add_common_arguments, run, setup_logging
from detect.config import DataConfig, ProposalConfig, load_config
from detect.data.build import load_split
from detect.errors import DataError
from detect.io import atomic_write_json
from detect.proposals.cache import attach_proposals

logger = logging.getLogger("proposals")

BUDGETS = (10, 50, 100, 200, 500, 1000, 2000)


def recall_table(dataset, budgets: Sequence[int] = BUDGETS, thresholds: Sequence[float] = (0.5, 0.7)) -> dict:
    """``{budget: {threshold: recall}}`` over the non-difficult ground truth of ``dataset``."""
    best = {budget: [] for budget in budgets}
    for annotation in dataset.annotations:
        truth = torch.from_numpy(annotation.boxes[~annotation.difficult])
        if len(truth) == 0:
            continue
        proposals = torch.from_numpy(dataset.proposals[annotation.image_id])
        iou = box_iou(truth, proposals) if len(proposals) else torch.zeros((len(truth), 0))
        for budget in budgets:
            part = iou[:, :budget]
            best[budget].append(part.max(dim=1).values if part.shape[1] else torch.zeros(len(truth)))
    table = {}
    for budget, values in best.items():
        values = torch.cat(values) if values else torch.zeros(0)
        table[budget] = {t: float((values >= t).float().mean()) if len(values) else float("nan") for t in thresholds}
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="take the data and proposal settings from this config")
    parser.add_argument("--data", help="'builtin', a VOC folder or a COCO JSON (default: the config's, else builtin)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--mode", choices=("fast", "quality"), help="selective search mode (default: the config's)")
    parser.add_argument("--max-boxes", type=int, help="cap on proposals per image (default: the config's)")
    parser.add_argument("--workers", type=int, help="processes, 1 or more (default: the config's)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(args.debug, args.quiet)
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be 1 or more, got {args.workers}")

    if args.config is not None:
        config = load_config(args.config)
        data, proposals = config.data, config.model.proposals
    else:
        data, proposals = DataConfig(), ProposalConfig()
    if args.data is not None:
        data = dataclasses.replace(data, dataset=args.data)
    search = proposals.selective_search
    if args.mode is not None:
        search = dataclasses.replace(search, mode=args.mode)
    if args.max_boxes is not None:
        search = dataclasses.replace(search, max_boxes=args.max_boxes)
    proposals = dataclasses.replace(proposals, selective_search=search,
                                    workers=proposals.workers if args.workers is None else args.workers)
    dataset = load_split(data, args.split)
    if not len(dataset):
        raise DataError(f"split '{args.split}' has no images; choose a split that has some (--split)", data.dataset)
    started = time.perf_counter()
    attach_proposals(dataset, proposals, progress=not args.quiet)
    elapsed = time.perf_counter() - started
    counts = np.array([len(b) for b in dataset.proposals.values()])
    table = recall_table(dataset)
    print(f"{dataset.name}: {len(dataset)} images, selective search {search.describe()}, "
          f"at most {search.max_boxes} boxes, min side {search.min_size} px")
    print(f"proposals per image: median {np.median(counts):.0f}, mean {counts.mean():.0f}, max {counts.max()}")
    print(f"wall-clock {elapsed:.1f} s for this run ({len(dataset) / max(elapsed, 1e-9):.1f} images/s "
          f"with {proposals.workers} workers, cached images included)")
    print("  top-N   recall@0.5  recall@0.7")
    for budget, recalls in table.items():
        print(f"  {budget:>5}   {recalls[0.5]:10.4f}  {recalls[0.7]:10.4f}")
    if args.json is not None:
        atomic_write_json(args.json, {"dataset": dataset.name, "split": args.split, "mode": search.mode,
                                      "selective_search": search.cache_params(),
                                      "max_boxes": search.max_boxes, "proposals_median": float(np.median(counts)),
                                      "seconds": elapsed, "recall": {str(k): v for k, v in table.items()}})
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
