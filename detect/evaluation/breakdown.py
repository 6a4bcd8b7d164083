"""Where the mAP is lost: AP by object size, and what the confident detections are.

Two views that the per-class table hides, in the spirit of Hoiem et al., "Diagnosing Error in
Object Detectors" (ECCV 2012):

* :func:`size_band_ap` — VOC AP per band of the ground truth's *shorter side* in pixels, class
  by class (mAP) and class-agnostic (every label pooled into one class, so it scores finding
  the objects whatever their class). Inside a band, ground truth outside it is ignored like a
  ``difficult`` object, and detections whose shorter side lies more than ``slack`` times outside
  the band are dropped, so a band is not charged for the other bands' detections.
* :func:`error_breakdown` — every detection scored at least ``score_threshold``, put in exactly
  one category by the VOC matching rule (per image and class, in descending score; a detection
  takes the object of its class with the largest IoU):

  ``correct``       IoU > t with an object of its class not yet taken (a VOC true positive);
  ``duplicate``     that object was already taken by a higher-scored detection;
  ``difficult``     that object is ``difficult`` (ignored by VOC, neither TP nor FP);
  ``wrong class``   no such match, but IoU > t with an object of another class;
  ``localisation``  IoU in [0.1, t] with an object of its class;
  ``background``    anything else (IoU < 0.1 with its class's objects, not on another object).

  ``missed`` counts the non-difficult objects no confident detection took. The ``correct``
  count equals the VOC true positives among detections at or above the threshold.

``python tools/eval.py … --breakdown`` prints both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from detect.evaluation.inputs import flatten_detections, flatten_ground_truth
from detect.evaluation.voc import _iou_with_padded, evaluate_voc

#: Default band edges (pixels, shorter side of the ground-truth box): 0-16, 16-32, ... , >= 256.
DEFAULT_SIZE_EDGES = (16.0, 32.0, 64.0, 128.0, 256.0)

#: Categories of :func:`error_breakdown`, in the order they are printed.
ERROR_CATEGORIES = ("correct", "duplicate", "difficult", "wrong class", "localisation", "background")

GroundTruth = Mapping[str, Mapping[str, np.ndarray]]
Detections = Mapping[str, Mapping[str, np.ndarray]]


def _shorter_side(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])


@dataclass
class SizeBand:
    """AP of one size band. ``low``/``high``: shorter-side pixels, ``[low, high)``."""

    low: float
    high: float
    objects: int
    map: float
    agnostic_ap: float

    @property
    def label(self) -> str:
        if math.isinf(self.high):
            return f">= {self.low:g} px"
        return f"{self.low:g}-{self.high:g} px"


def size_band_ap(ground_truth: GroundTruth, detections: Detections, class_names: Sequence[str],
                 edges: Sequence[float] = DEFAULT_SIZE_EDGES, metric: str = "voc07", iou_threshold: float = 0.5,
                 slack: float = 1.5) -> list[SizeBand]:
    """VOC mAP and class-agnostic AP per band of the ground truth's shorter side (module docstring).

    Args:
        ground_truth, detections, class_names, metric, iou_threshold: as for
            :func:`detect.evaluation.voc.evaluate_voc` (per-image dicts).
        edges: increasing band edges in pixels; the bands are ``[0, e0), [e0, e1), …, [e_last, ∞)``.
        slack: detections whose shorter side is below ``low / slack`` or at least ``high · slack``
            are left out of the band.

    Returns:
        one :class:`SizeBand` per band that holds non-difficult ground truth, smallest first.
    """
    edges = [float(e) for e in edges]
    if any(b <= a for a, b in zip(edges, edges[1:])) or any(e <= 0 for e in edges):
        raise ValueError(f"size band edges must be positive and increasing, got {edges}")
    if slack < 1:
        raise ValueError(f"slack must be >= 1, got {slack}")
    bounds = list(zip([0.0] + edges, edges + [math.inf]))
    gt_sides = {image_id: _shorter_side(gt["boxes"]) for image_id, gt in ground_truth.items()}
    det_sides = {image_id: _shorter_side(det["boxes"]) for image_id, det in detections.items()}
    bands = []
    for low, high in bounds:
        gt_band, det_band, gt_agnostic, det_agnostic, objects = {}, {}, {}, {}, 0
        for image_id, gt in ground_truth.items():
            side = gt_sides[image_id]
            outside = (side < low) | (side >= high)
            difficult = np.asarray(gt["difficult"], bool) | outside
            objects += int(np.count_nonzero(~difficult))
            gt_band[image_id] = {"boxes": gt["boxes"], "labels": gt["labels"], "difficult": difficult}
            gt_agnostic[image_id] = {**gt_band[image_id], "labels": np.zeros(len(side), np.int64)}
        for image_id, det in detections.items():
            side = det_sides[image_id]
            keep = (side >= low / slack) & (side < high * slack)
            det_band[image_id] = {key: np.asarray(det[key])[keep] for key in ("boxes", "scores", "labels")}
            det_agnostic[image_id] = {**det_band[image_id], "labels": np.zeros(int(keep.sum()), np.int64)}
        if objects == 0:
            continue
        per_class = evaluate_voc(gt_band, det_band, class_names, metric, iou_threshold)
        agnostic = evaluate_voc(gt_agnostic, det_agnostic, ["object"], metric, iou_threshold)
        bands.append(SizeBand(low, high, objects, per_class.map, agnostic.map))
    return bands


@dataclass
class ErrorBreakdown:
    """Counts of :func:`error_breakdown`: ``counts`` per category (:data:`ERROR_CATEGORIES`),
    ``missed`` non-difficult objects, ``objects`` non-difficult objects in all, and the
    ``confusions`` behind ``wrong class``, as ``{(true class, detected class): count}``."""

    score_threshold: float
    counts: dict[str, int]
    missed: int
    objects: int
    confusions: dict[tuple[str, str], int]

    def table(self, top: int = 5) -> str:
        total = sum(self.counts.values())
        lines = [f"detections with score >= {self.score_threshold:g}: {total}"]
        for name in ERROR_CATEGORIES:
            share = self.counts[name] / total if total else 0.0
            lines.append(f"  {name:<13} {self.counts[name]:>7}  {share:6.1%}")
        lines.append(f"objects missed (no detection >= {self.score_threshold:g}): {self.missed} of {self.objects}")
        if self.confusions:
            common = sorted(self.confusions.items(), key=lambda item: (-item[1], item[0]))[:top]
            lines.append("most confused (true -> detected): "
                         + ", ".join(f"{true} -> {found} {count}" for (true, found), count in common))
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"score_threshold": self.score_threshold, "counts": dict(self.counts), "missed": self.missed,
                "objects": self.objects,
                "confusions": [{"true": t, "detected": d, "count": c} for (t, d), c in sorted(self.confusions.items())]}


def error_breakdown(ground_truth: GroundTruth, detections: Detections, class_names: Sequence[str],
                    score_threshold: float = 0.5, iou_threshold: float = 0.5) -> ErrorBreakdown:
    """Categorise the detections scored at least ``score_threshold`` (module docstring)."""
    class_names = list(class_names)
    gt_all = flatten_ground_truth(ground_truth, len(class_names))     # validates labels and shapes
    flatten_detections(detections, gt_all.image_ids, class_names)     # validates the detections
    counts = dict.fromkeys(ERROR_CATEGORIES, 0)
    confusions: dict[tuple[str, str], int] = {}
    missed = objects = 0
    for image_id, gt in ground_truth.items():
        gt_boxes = np.asarray(gt["boxes"], np.float64).reshape(-1, 4)
        gt_labels = np.asarray(gt["labels"], np.int64).reshape(-1)
        gt_difficult = np.asarray(gt["difficult"], bool).reshape(-1)
        taken = np.zeros(len(gt_labels), bool)
        det = detections.get(image_id)
        if det is not None and len(det["scores"]):
            scores = np.asarray(det["scores"], np.float64).reshape(-1)
            confident = np.flatnonzero(scores >= score_threshold)
            confident = confident[np.argsort(-scores[confident], kind="stable")]
            boxes = np.asarray(det["boxes"], np.float64).reshape(-1, 4)[confident]
            labels = np.asarray(det["labels"], np.int64).reshape(-1)[confident]
            # The evaluator's own IoU arithmetic, so "correct" makes exactly its true positives.
            ious = _iou_with_padded(boxes, np.broadcast_to(gt_boxes, (len(boxes), *gt_boxes.shape)))
            for row, label in enumerate(labels):
                same = gt_labels == label
                category, best = "background", -1
                if same.any():
                    same_iou = np.where(same, ious[row], -1.0)
                    best = int(np.argmax(same_iou))
                    if same_iou[best] > iou_threshold:
                        category = "difficult" if gt_difficult[best] else "duplicate" if taken[best] else "correct"
                        taken[best] |= category == "correct"
                if category == "background":
                    other = np.where(same, -1.0, ious[row])
                    if other.size and other.max() > iou_threshold:
                        category = "wrong class"
                        key = (class_names[int(gt_labels[int(np.argmax(other))])], class_names[int(label)])
                        confusions[key] = confusions.get(key, 0) + 1
                    elif best >= 0 and ious[row, best] >= 0.1:
                        category = "localisation"
                counts[category] += 1
        objects += int(np.count_nonzero(~gt_difficult))
        missed += int(np.count_nonzero(~gt_difficult & ~taken))
    return ErrorBreakdown(score_threshold, counts, missed, objects, confusions)


def breakdown_text(bands: list[SizeBand], errors: ErrorBreakdown) -> str:
    """Both views as printable text."""
    width = max([len("size (shorter side)")] + [len(band.label) for band in bands])
    lines = [f"{'size (shorter side)':<{width}}  {'objects':>7}  {'mAP':>6}  {'agnostic AP':>11}"]
    for band in bands:
        lines.append(f"{band.label:<{width}}  {band.objects:>7}  {_number(band.map):>6}  {_number(band.agnostic_ap):>11}")
    return "\n".join(lines) + "\n" + errors.table()


def _number(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"
