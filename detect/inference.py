"""Run a trained detector on image files: what ``tools/infer.py`` does, callable from Python."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np
import torch

from detect.data.images import IMAGE_EXTENSIONS, read_image
from detect.data.transforms import image_to_tensor
from detect.engine.checkpoint import load_detector
from detect.engine.runtime import select_device
from detect.errors import DataError, DetectError
from detect.evaluation.detections import write_detections
from detect.io import atomic_write_bytes
from detect.models.base import Detections
from detect.visualize import draw_detections

logger = logging.getLogger(__name__)


def collect_images(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand files and folders (non-recursive, image extensions only) into a sorted list of paths.

    Files given explicitly are kept whatever their extension, so a bad one is reported, not skipped.
    """
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths += sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        else:
            paths.append(path)
    return paths


class Predictor:
    """A checkpoint loaded for inference.

    Args:
        checkpoint: a file written by the training engine.
        device: ``auto``, ``cpu``, ``cuda``…
    """

    def __init__(self, checkpoint: str | os.PathLike, device: str = "auto"):
        self.device = select_device(device)
        self.model, stored = load_detector(checkpoint, self.device)
        self.class_names: list[str] = stored["class_names"]
        self.checkpoint = Path(checkpoint)

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> Detections:
        """Detections for one RGB uint8 image ``[H, W, 3]``; boxes in its pixels, on the CPU."""
        return self.model.predict([image_to_tensor(image).to(self.device)])[0].to("cpu")


@dataclass
class InferenceSummary:
    processed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    detections_path: Path | None = None
    milliseconds: list[float] = field(default_factory=list)


def check_outputs(images: list[Path], out_dir: Path) -> None:
    """Refuse, before any work, inputs whose outputs would collide or replace an input.

    Each image is written as ``out_dir/<stem>.jpg`` and keyed by its stem in detections.json, so
    two inputs with one stem (``a/x.jpg``, ``b/x.png``) would overwrite each other, and
    ``--out`` set to the images' own folder would overwrite the originals.
    """
    by_stem: dict[str, Path] = {}
    inputs = {path.resolve() for path in images}
    for path in images:
        if path.stem in by_stem and by_stem[path.stem].resolve() != path.resolve():
            raise DetectError(f"has the same name stem as {by_stem[path.stem]}: both would be written as "
                              f"{path.stem}.jpg and share one image id; infer them in separate runs (--out)", path)
        by_stem[path.stem] = path
        if (out_dir / f"{path.stem}.jpg").resolve() in inputs:
            raise DetectError(f"would be overwritten by its annotated copy in {out_dir}; choose another --out",
                              out_dir / f"{path.stem}.jpg")


def run_inference(predictor: Predictor, images: Iterable[Path], out_dir: str | os.PathLike,
                  score_threshold: float = 0.5, report: Callable[[str], None] = logger.info) -> InferenceSummary:
    """Detect objects in every image; draw the confident ones; write all detections to JSON.

    For each good image, ``out_dir/<stem>.jpg`` shows the detections scoring at least
    ``score_threshold`` and one summary line is reported. ``out_dir/detections.json`` holds *all*
    detections (the model's own low threshold), as evaluation needs them; image ids are the file
    stems. A bad file is reported on one line and skipped. ``report`` receives the lines
    (``tools/infer.py`` prints them).
    """
    out_dir = Path(out_dir)
    images = list(images)
    check_outputs(images, out_dir)
    summary = InferenceSummary()
    found: dict[str, dict[str, np.ndarray]] = {}
    for path in images:
        try:
            image = read_image(path)
        except DataError as error:
            summary.failed.append((str(path), error.reason))
            report(f"{path}: skipped — {error.reason}")
            continue
        started = time.perf_counter()
        detections = predictor(image)
        summary.milliseconds.append((time.perf_counter() - started) * 1000)
        boxes, scores, labels = (t.numpy() for t in detections)
        found[path.stem] = {"boxes": boxes, "scores": scores, "labels": labels}
        confident = scores >= score_threshold
        drawn = draw_detections(image, boxes[confident], labels[confident], scores[confident], predictor.class_names)
        ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        if not ok:
            raise DetectError("could not encode the annotated image", path)
        atomic_write_bytes(out_dir / f"{path.stem}.jpg", encoded.tobytes())
        counts = np.bincount(labels[confident], minlength=len(predictor.class_names))
        names = ", ".join(f"{n} {predictor.class_names[i]}" for i, n in enumerate(counts) if n)
        best = f", best {scores[confident].max():.2f}" if confident.any() else ""
        report(f"{path}: {int(confident.sum())} detection(s) ≥ {score_threshold:g}"
               f"{' (' + names + best + ')' if names else ''} in {summary.milliseconds[-1]:.0f} ms"
               f" → {out_dir / (path.stem + '.jpg')}")
        summary.processed.append(str(path))
    summary.detections_path = out_dir / "detections.json"
    write_detections(summary.detections_path, found, predictor.class_names)
    return summary
