"""How fast the built-in dataset loads with training augmentation (issue target: ≥ 150 images/s, 2 workers).

    python benchmarks/data_speed.py [--workers 2] [--batch-size 8] [--images 1000] [--repeats 3]

Generates the built-in dataset if absent, then times full passes of a DataLoader over the
trainval split (decode + albumentations + tensor conversion + collate) and prints the median.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.data import DataLoader, Subset

from detect.config import DataConfig
from detect.data.build import build_datasets
from detect.data.transforms import collate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    train, _ = build_datasets(DataConfig())
    subset = Subset(train, range(min(args.images, len(train))))
    rates = []
    for repeat in range(args.repeats):
        train.set_epoch(repeat)
        loader = DataLoader(subset, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                            collate_fn=collate, generator=torch.Generator().manual_seed(repeat))
        started = time.perf_counter()
        count = sum(len(images) for images, _ in loader)
        rates.append(count / (time.perf_counter() - started))
        print(f"pass {repeat + 1}: {rates[-1]:.0f} images/s")
    print(f"median: {statistics.median(rates):.0f} images/s ({len(subset)} images, {args.workers} workers, "
          f"batch {args.batch_size}, training augmentation)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
