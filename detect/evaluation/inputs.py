"""The evaluators' inputs, checked and flattened into arrays.

Both evaluators (:mod:`detect.evaluation.voc`, :mod:`detect.evaluation.coco`) take

* ground truth ``{image_id: {"boxes": float[N, 4], "labels": int[N], "difficult": bool[N]}}``
  (what :meth:`detect.data.dataset.DetectionDataset.ground_truth` returns; ``difficult`` may be
  omitted, and an optional ``"area": float[N]``, NaN where not given, is COCO's object area), and
* detections, either per image ``{image_id: {"boxes": float[K, 4], "scores": float[K],
  "labels": int[K]}}`` or the flat list of records of the detections file
  (:mod:`detect.evaluation.detections`).

Boxes are ``x1, y1, x2, y2`` in continuous pixels (origin at the image's top-left corner,
width = x2 - x1); labels are foreground class indices ``0..C-1`` into ``class_names``.

Flattening keeps the *given order*: ground truth image by image in the dict's order, and
detections image by image in the dict's order (or record by record for a list). The VOC
evaluator relies on it to break score ties exactly as the canonical code does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence, Union

import numpy as np

from detect.errors import DataError
from detect.evaluation.detections import records_to_arrays

#: Per-image detections ``{image_id: {"boxes", "scores", "labels"}}`` or detections-file records.
DetectionsInput = Union[Mapping[str, Mapping[str, np.ndarray]], Sequence[Mapping]]


@dataclass
class FlatGroundTruth:
    """Ground truth of a whole evaluated set, image by image.

    Attributes:
        image_ids: the evaluated images, in the ground truth's order.
        image_index (int64[G]): position in ``image_ids`` of each object (non-decreasing).
        boxes (float64[G, 4]): x1, y1, x2, y2 in continuous pixels.
        labels (int64[G]): foreground class indices.
        difficult (bool[G]): objects VOC evaluation ignores.
        area (float64[G]): the dataset's own object areas (COCO's segment areas), NaN where not given.
    """

    image_ids: list[str]
    image_index: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    area: np.ndarray


@dataclass
class FlatDetections:
    """Detections in their given order (see module docstring).

    Attributes:
        image_index (int64[K]): position of each detection's image in the ground truth's ``image_ids``.
        boxes (float64[K, 4]): x1, y1, x2, y2 in continuous pixels.
        scores (float64[K]): confidence, higher is more confident.
        labels (int64[K]): foreground class indices.
    """

    image_index: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


def _per_image_arrays(image_id: str, entry: Mapping, keys: Sequence[str], what: str) -> list[np.ndarray]:
    missing = [key for key in keys if key not in entry]
    if missing:
        raise DataError(f"{what} of image {image_id!r} lack {', '.join(missing)}; "
                        f"each image needs {', '.join(keys)}")
    boxes = np.asarray(entry["boxes"], dtype=np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DataError(f"{what} boxes of image {image_id!r} have shape {boxes.shape}; "
                        "expected [N, 4] as x1, y1, x2, y2")
    arrays = [boxes] + [np.asarray(entry[key]).reshape(-1) for key in keys[1:]]
    if any(array.shape[0] != boxes.shape[0] for array in arrays[1:]):
        lengths = ", ".join(f"{key} {array.shape[0]}" for key, array in zip(keys, arrays))
        raise DataError(f"{what} of image {image_id!r} have inconsistent lengths ({lengths}); "
                        "give one entry per box")
    return arrays


def _check_labels(labels: np.ndarray, image_ids: np.ndarray | Sequence[str], image_index: np.ndarray,
                  num_classes: int, what: str) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        first = bad[0]
        raise DataError(f"{what} of image {image_ids[image_index[first]]!r} has label {labels[first]} "
                        f"outside 0..{num_classes - 1}; labels index the {num_classes} class names")


def flatten_ground_truth(ground_truth: Mapping[str, Mapping[str, np.ndarray]],
                         num_classes: int) -> FlatGroundTruth:
    """Concatenate per-image ground truth (see module docstring) into :class:`FlatGroundTruth`.

    Raises:
        DataError: an image's arrays are malformed or a label is outside ``0..num_classes-1``.
    """
    image_ids = list(ground_truth)
    boxes, labels, difficult, area, counts = [], [], [], [], []
    for image_id, entry in ground_truth.items():
        count = len(entry.get("labels", ()))
        entry = {"difficult": np.zeros(count, bool), "area": np.full(count, np.nan), **entry}
        image_boxes, image_labels, image_difficult, image_area = _per_image_arrays(
            image_id, entry, ("boxes", "labels", "difficult", "area"), "ground truth")
        boxes.append(image_boxes)
        labels.append(image_labels.astype(np.int64))
        difficult.append(image_difficult.astype(bool))
        area.append(image_area.astype(np.float64))
        counts.append(image_boxes.shape[0])
    flat = FlatGroundTruth(
        image_ids=image_ids,
        image_index=np.repeat(np.arange(len(image_ids), dtype=np.int64), counts),
        boxes=np.concatenate(boxes) if boxes else np.zeros((0, 4)),
        labels=np.concatenate(labels) if labels else np.zeros(0, np.int64),
        difficult=np.concatenate(difficult) if difficult else np.zeros(0, bool),
        area=np.concatenate(area) if area else np.zeros(0))
    _check_labels(flat.labels, image_ids, flat.image_index, num_classes, "ground truth")
    return flat


def _image_positions(ids: Sequence[str], position: Mapping[str, int]) -> np.ndarray:
    try:
        return np.fromiter((position[image_id] for image_id in ids), np.int64, len(ids))
    except KeyError as error:
        raise DataError(f"there are detections for image {error.args[0]!r}, which is not in the "
                        "ground truth; evaluate on the split the detections were made for "
                        "(detections of unknown images would otherwise count silently)") from None


def flatten_detections(detections: DetectionsInput, image_ids: Sequence[str],
                       class_names: Sequence[str]) -> FlatDetections:
    """Check detections (per-image dict or records) and flatten them in their given order.

    Args:
        detections: see module docstring; boxes in continuous pixels.
        image_ids: the ground truth's images; every detection must belong to one of them.
        class_names: foreground classes; labels (or record categories) index into it.

    Raises:
        DataError: a detection belongs to an image not in ``image_ids``; arrays are malformed;
            a label is out of range; a box or score is not finite.
    """
    position = {image_id: index for index, image_id in enumerate(image_ids)}
    if isinstance(detections, Mapping):
        per_image = [_per_image_arrays(image_id, entry, ("boxes", "scores", "labels"), "detections")
                     for image_id, entry in detections.items()]
        counts = [arrays[0].shape[0] for arrays in per_image]
        image_index = np.repeat(_image_positions(list(detections), position), counts)
        boxes, scores, labels = ((np.concatenate([arrays[k] for arrays in per_image]) if per_image
                                  else np.zeros((0, 4) if k == 0 else 0)) for k in range(3))
        flat = FlatDetections(image_index, boxes.astype(np.float64), scores.astype(np.float64),
                              labels.astype(np.int64))
    else:
        record_ids, boxes, scores, labels = records_to_arrays(detections, class_names)
        flat = FlatDetections(_image_positions(record_ids, position), boxes, scores, labels)
    _check_labels(flat.labels, image_ids, flat.image_index, len(class_names), "a detection")
    finite = np.isfinite(flat.boxes).all(axis=1) & np.isfinite(flat.scores)
    if not finite.all():
        first = np.flatnonzero(~finite)[0]
        raise DataError(f"a detection of image {image_ids[flat.image_index[first]]!r} has a "
                        "non-finite box or score; drop it or fix the detector's output")
    return flat
