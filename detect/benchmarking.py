"""Timing helpers shared by the benchmark scripts (never used by tests: timings are noisy)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from detect.data.dataset import DetectionDataset


@dataclass
class Timing:
    """Milliseconds per call: median, 10th and 90th percentile, number of timed calls."""

    median: float
    p10: float
    p90: float
    count: int

    @classmethod
    def of(cls, milliseconds: list[float]) -> "Timing":
        values = np.asarray(milliseconds)
        return cls(float(statistics.median(milliseconds)), float(np.percentile(values, 10)),
                   float(np.percentile(values, 90)), len(milliseconds))


def add_timing_arguments(parser, images: int = 30) -> None:
    """The options every per-image timing script shares: split, image counts and threads."""
    parser.add_argument("--data", default="builtin")
    parser.add_argument("--split", default="test")
    parser.add_argument("--images", type=int, default=images, help="images timed")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")


def apply_threads(args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)


@torch.no_grad()
def time_inference(model: nn.Module | None, dataset: DetectionDataset, images: int = 30, warmup: int = 5,
                   device: str | torch.device = "cpu", predict: Callable[[torch.Tensor], object] | None = None
                   ) -> Timing:
    """Time ``model.predict`` on single images of ``dataset`` (which yields tensors) after warm-up.

    Detectors that take region proposals get the dataset's cached ones, so the time excludes
    proposal computation (timed by :func:`time_proposals`). ``predict`` (one image → detections)
    replaces the model, e.g. an exported one.
    """
    if model is not None:
        model.eval()
    count = min(images + warmup, len(dataset))
    samples = [dataset[i] for i in range(count)]
    milliseconds = []
    for index, sample in enumerate(samples):
        image = sample["image"].to(device)
        if device != "cpu" and torch.cuda.is_available():
            torch.cuda.synchronize()
        started = time.perf_counter()
        if predict is not None:
            predict(image)
        elif "proposals" in sample:
            model.predict([image], [sample["proposals"].to(device)])
        else:
            model.predict([image])
        if device != "cpu" and torch.cuda.is_available():
            torch.cuda.synchronize()
        if index >= warmup:
            milliseconds.append((time.perf_counter() - started) * 1000)
    return Timing.of(milliseconds)


def time_proposals(dataset: DetectionDataset, config, images: int = 30) -> Timing:
    """Time selective search (``config``: a SelectiveSearchConfig) on single images of ``dataset``."""
    from detect.proposals.selective_search import selective_search
    from detect.data.images import read_image

    milliseconds = []
    for annotation in dataset.annotations[:images]:
        image = read_image(annotation.image_path)
        started = time.perf_counter()
        selective_search(image, config)
        milliseconds.append((time.perf_counter() - started) * 1000)
    return Timing.of(milliseconds)


def time_training_steps(model: nn.Module, batches: list[tuple[list[torch.Tensor], list[dict]]], lr: float = 0.001,
                        warmup: int = 3) -> Timing:
    """Time full SGD steps (forward, backward, update) of ``model`` on the given batches."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9)
    model.train()
    milliseconds = []
    for index, (images, targets) in enumerate(batches):
        started = time.perf_counter()
        losses = model(images, targets)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        if index >= warmup:
            milliseconds.append((time.perf_counter() - started) * 1000)
    return Timing.of(milliseconds)
