"""Timing helpers shared by the benchmark and the benchmark scripts (tests check their bookkeeping, never
their speed: timings are noisy)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Sequence

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


class CallTimer:
    """Time spent in one method of one object during each timed image, e.g. a detector's backbone
    (``CallTimer(backbone, "forward_normalised")``: every detector's image or crops go through it):
    the share of inference time that no change of head or post-processing can remove.

    The method is shadowed on the instance while the timer is attached; :meth:`remove` (or leaving
    the ``with`` block) restores it.
    """

    def __init__(self, owner: object, method: str = "forward", device: torch.device | str | None = None):
        self.per_image_ms: list[float] = []
        self._owner, self._method, self._seconds = owner, method, 0.0
        # On a CUDA device each reading first waits for the work queued on it (kernels run async).
        device = None if device is None else torch.device(device)
        self._cuda = device if device is not None and device.type == "cuda" else None
        original = getattr(owner, method)

        def timed(*args, **kwargs):
            started = self._now()
            try:
                return original(*args, **kwargs)
            finally:
                self._seconds += self._now() - started

        setattr(owner, method, timed)

    def _now(self) -> float:
        if self._cuda is not None:
            torch.cuda.synchronize(self._cuda)
        return time.perf_counter()

    def take(self) -> float:
        """Milliseconds spent in the method since the last call (it may run several times per image)."""
        seconds, self._seconds = self._seconds, 0.0
        return seconds * 1000

    def remove(self) -> None:
        if self._method in vars(self._owner):
            delattr(self._owner, self._method)

    def __enter__(self) -> "CallTimer":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def backbone_timer(model: nn.Module, device: torch.device | str | None = None) -> CallTimer:
    """A :class:`CallTimer` on the shared backbone inside ``model`` (any detector, torchvision's too)."""
    from detect.backbones import backbones_in

    backbones = backbones_in(model)
    if not backbones:
        raise TypeError(f"{type(model).__name__} has no detect.backbones.Backbone to time")
    return CallTimer(backbones[0], "forward_normalised", device)


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
                   device: str | torch.device = "cpu", predict: Callable[[torch.Tensor], object] | None = None,
                   timers: Sequence[CallTimer] = ()) -> Timing:
    """Time ``model.predict`` on single images of ``dataset`` (which yields tensors) after warm-up.

    Detectors that take region proposals get the dataset's cached ones, so the time excludes
    proposal computation (timed by :func:`time_proposals`). ``predict`` (one image → detections)
    replaces the model, e.g. an exported one. Each of ``timers`` gets its method's time per timed
    image appended to its ``per_image_ms``.
    """
    if model is not None:
        model.eval()
    device = torch.device(device)
    cuda = device.type == "cuda"
    count = min(images + warmup, len(dataset))
    if count <= warmup:
        raise ValueError(f"{len(dataset)} images: none left to time after {warmup} warm-up ones")
    samples = [dataset[i] for i in range(count)]
    milliseconds = []
    for index, sample in enumerate(samples):
        image = sample["image"].to(device)
        if cuda:
            torch.cuda.synchronize(device)
        for timer in timers:
            timer.take()
        started = time.perf_counter()
        if predict is not None:
            predict(image)
        elif "proposals" in sample:
            model.predict([image], [sample["proposals"].to(device)])
        else:
            model.predict([image])
        if cuda:
            torch.cuda.synchronize(device)
        if index >= warmup:
            milliseconds.append((time.perf_counter() - started) * 1000)
            for timer in timers:
                timer.per_image_ms.append(timer.take())
    return Timing.of(milliseconds)


def time_proposals(dataset: DetectionDataset, config, images: int = 30, skip: int = 0) -> Timing:
    """Time selective search (``config``: a SelectiveSearchConfig) on single images of ``dataset``:
    ``images`` of them after the first ``skip`` (pass :func:`time_inference`'s warm-up count to
    time the images it timed)."""
    from detect.proposals.selective_search import selective_search
    from detect.data.images import read_image

    milliseconds = []
    for annotation in dataset.annotations[skip:skip + images]:
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
