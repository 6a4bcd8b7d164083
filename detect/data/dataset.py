"""The sample structure shared by every dataset reader, and the dataset that serves it.

A reader (PASCAL VOC, COCO) turns its files into a list of :class:`Annotation` records;
:class:`DetectionDataset` validates them under one policy and serves samples::

    {"image": uint8 [H, W, 3] RGB,      # or a float tensor [3, H, W] after the transforms
     "boxes": float32 [N, 4],           # x1, y1, x2, y2 in continuous pixels (origin top-left)
     "labels": int64 [N],               # foreground class indices 0..C-1
     "difficult": bool [N],
     "image_id": str}

Images without objects are kept: they are the negatives detectors learn background from.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from detect.data.images import read_image, read_image_size
from detect.errors import DataError

logger = logging.getLogger(__name__)

#: ``on_invalid`` policies: fail on the first problem, or drop the bad object/image and log a count.
INVALID_POLICIES = ("error", "skip")


@dataclass
class RawObject:
    """One annotated object as read from the file, before validation.

    ``box`` is x1, y1, x2, y2 in continuous pixels (already converted from the file's convention).
    ``ref`` names the object in error messages where "object <n>" would not find it (a COCO
    annotation's id and image id). ``area`` is a COCO annotation's own area (its segment's), NaN
    when the file gives none.
    """

    name: str
    box: tuple[float, float, float, float]
    difficult: bool = False
    ref: str = ""
    area: float = math.nan


@dataclass
class Annotation:
    """One image's annotation, validated.

    Attributes:
        image_id: identifier used by evaluation and detection files.
        image_path: where the pixels are.
        width, height: image size in pixels.
        boxes (float32[N, 4]): x1, y1, x2, y2 in continuous pixels.
        labels (int64[N]): foreground class indices.
        difficult (bool[N]): objects ignored by VOC evaluation.
        areas (float32[N]): the file's own object areas (COCO's segment areas, which choose COCO's
            small / medium / large ranges), NaN where it gives none and for VOC.
        source: the annotation file, for error messages.
    """

    image_id: str
    image_path: Path
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    difficult: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))
    areas: np.ndarray | None = None
    source: Path | None = None

    def __post_init__(self):
        if self.areas is None:
            self.areas = np.full(len(self.boxes), np.nan, np.float32)

    def without_difficult(self) -> Annotation:
        """The same image with its difficult (or COCO crowd) objects left out."""
        keep = ~self.difficult
        return dataclasses.replace(self, boxes=self.boxes[keep], labels=self.labels[keep],
                                   difficult=self.difficult[keep], areas=self.areas[keep])


def box_problem(box: Sequence[float], width: int, height: int) -> str | None:
    """Say what is wrong with a continuous-pixel box inside a ``width × height`` image, or None."""
    x1, y1, x2, y2 = box
    if not all(math.isfinite(v) for v in box):
        return "has a non-finite coordinate"
    if x2 <= x1 or y2 <= y1:
        return "has no area (x2 <= x1 or y2 <= y1)"
    if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
        return f"lies outside the {width}x{height} image"
    return None


def build_annotation(image_id: str, image_path: Path, width: int, height: int,
                     objects: Sequence[RawObject], class_to_index: dict[str, int],
                     source: Path, on_invalid: str) -> tuple[Annotation, int]:
    """Validate raw objects into an :class:`Annotation`; return it and the number of dropped objects.

    Raises:
        DataError: (policy ``"error"``) an object has an unknown class or an invalid box.
    """
    boxes, labels, difficult, areas = [], [], [], []
    dropped = 0
    for index, obj in enumerate(objects):
        where = f"{obj.ref or f'object {index}'} ({obj.name!r})"
        if obj.name not in class_to_index:
            problem = (f"{where} has unknown class; known classes: "
                       f"{', '.join(class_to_index)} — fix the name or pass the class list")
        else:
            reason = box_problem(obj.box, width, height)
            problem = None if reason is None else (
                f"{where} box {[round(v, 2) for v in obj.box]} {reason}; fix the annotation "
                "or use --on-invalid skip")
        if problem is not None:
            if on_invalid == "error":
                raise DataError(problem, source)
            logger.debug("%s: skipped %s", source, problem)
            dropped += 1
            continue
        boxes.append(obj.box)
        labels.append(class_to_index[obj.name])
        difficult.append(bool(obj.difficult))
        areas.append(obj.area)
    annotation = Annotation(
        image_id=image_id, image_path=image_path, width=width, height=height,
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4), labels=np.asarray(labels, np.int64),
        difficult=np.asarray(difficult, bool), areas=np.asarray(areas, np.float32), source=source)
    return annotation, dropped


class DetectionDataset:
    """A list of validated annotations served as samples (see module docstring).

    Args:
        annotations: the validated records.
        class_names: foreground class names; ``labels`` index into this list.
        transforms: callable ``(sample, seed) -> sample`` (e.g. :mod:`detect.data.transforms`),
            or None. ``seed`` is derived from :attr:`seed`, :attr:`epoch` and the index, so random
            augmentation does not depend on loader workers and replays exactly on resume.
        name: shown in logs and messages.
    """

    def __init__(self, annotations: list[Annotation], class_names: Sequence[str],
                 transforms: Callable[..., dict] | None = None, name: str = "dataset"):
        self.annotations = annotations
        self.class_names = list(class_names)
        self.transforms = transforms
        self.name = name
        self.seed = 0
        self.epoch = 0
        #: ``{image_id: float32[K, 4]}`` region proposals added to each sample as ``"proposals"``
        #: (R-CNN and Fast R-CNN; see :func:`detect.proposals.attach_proposals`), or None.
        self.proposals: dict[str, np.ndarray] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draw for ``epoch`` (call before each epoch)."""
        self.epoch = epoch

    def sample_seed(self, index: int) -> int:
        """The augmentation seed of sample ``index`` in the current epoch."""
        return int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0])

    def __len__(self) -> int:
        return len(self.annotations)

    @property
    def num_classes(self) -> int:
        """Number of foreground classes (background is never counted)."""
        return len(self.class_names)

    def load(self, index: int) -> dict:
        """Return sample ``index`` without transforms (image as RGB uint8 ``[H, W, 3]``)."""
        annotation = self.annotations[index]
        image = read_image(annotation.image_path)
        if image.shape[:2] != (annotation.height, annotation.width):
            raise DataError(
                f"image is {image.shape[1]}x{image.shape[0]} but its annotation says "
                f"{annotation.width}x{annotation.height}; fix the annotation's size",
                annotation.source or annotation.image_path)
        sample = {"image": image, "boxes": annotation.boxes.copy(), "labels": annotation.labels.copy(),
                  "difficult": annotation.difficult.copy(), "image_id": annotation.image_id}
        if self.proposals is not None:
            sample["proposals"] = self.proposals[annotation.image_id].copy()
        return sample

    def __getitem__(self, index: int) -> dict:
        """Sample ``index`` after the transforms, with its ``seed`` (see :meth:`sample_seed`): the
        augmentation's, and the one the detectors' minibatch samplers derive theirs from."""
        seed = self.sample_seed(index)
        sample = self.load(index)
        if self.transforms is not None:
            sample = self.transforms(sample, seed=seed)
        sample["seed"] = seed
        return sample

    def ground_truth(self) -> dict[str, dict[str, np.ndarray]]:
        """Ground truth for evaluation: ``{image_id: {"boxes", "labels", "difficult", "area"}}`` (no
        pixels read; ``area`` NaN where the file gives none)."""
        return {a.image_id: {"boxes": a.boxes, "labels": a.labels, "difficult": a.difficult, "area": a.areas}
                for a in self.annotations}

    def statistics(self) -> dict:
        """Counts a user wants to see when loading a dataset."""
        labels = np.concatenate([a.labels for a in self.annotations]) if self.annotations else np.zeros(0, int)
        difficult = np.concatenate([a.difficult for a in self.annotations]) if self.annotations else np.zeros(0, bool)
        per_class = np.bincount(labels, minlength=self.num_classes)
        return {
            "images": len(self.annotations),
            "objects": int(labels.size),
            "difficult": int(difficult.sum()),
            "negatives": sum(1 for a in self.annotations if a.labels.size == 0),
            "per_class": {name: int(n) for name, n in zip(self.class_names, per_class)},
        }


def check_policy(on_invalid: str) -> str:
    if on_invalid not in INVALID_POLICIES:
        raise ValueError(f"on_invalid must be one of {INVALID_POLICIES}, got {on_invalid!r}")
    return on_invalid


def check_image(image_path: Path, declared: tuple[int, int] | None, source: Path) -> tuple[int, int]:
    """Read the image header and compare it with the size the annotation declares.

    Returns ``(width, height)``. Raises DataError if the image is missing/unreadable or the sizes differ.
    """
    width, height = read_image_size(image_path)
    if declared is not None and tuple(declared) != (width, height):
        raise DataError(f"annotation says the image is {declared[0]}x{declared[1]} but "
                        f"{image_path.name} is {width}x{height}; fix the size in the annotation",
                        source)
    return width, height


def log_skipped(name: str, skipped_images: int, skipped_objects: int) -> None:
    if skipped_images or skipped_objects:
        logger.warning("%s: skipped %d invalid image(s) and %d invalid object(s) (on_invalid=skip)",
                       name, skipped_images, skipped_objects)
