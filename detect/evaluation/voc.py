"""PASCAL VOC average precision, vectorised, agreeing with the canonical Python evaluator.

The reference is ``voc_eval`` of py-faster-rcnn (``lib/datasets/voc_eval.py``), the code behind
the published VOC numbers of the R-CNN family. This module reproduces it to floating-point
round-off (checked by ``benchmarks/check_voc_canonical.py``) without a Python loop over
detections. The conventions, each restated where it is applied:

* **Boxes** are ``x1, y1, x2, y2`` in continuous pixels. The canonical code works on VOC's
  1-based inclusive integer pixels with ``+1`` in every width; ground truth loaded as
  ``(xmin - 1, ymin - 1, xmax, ymax)`` and detections written as ``(x1 + 1, y1 + 1, x2, y2)``
  make the continuous IoU equal the devkit's IoU.
* **Matching** (per class): detections are visited in descending score; each is compared with
  every ground-truth object of its class in its image and takes the one of largest IoU (the
  first on ties). It is a true positive if that IoU is **strictly greater** than the threshold
  (0.5) and the object is neither difficult nor already matched; if the object is difficult the
  detection is ignored (neither TP nor FP, but it keeps its place in the ranking); otherwise it
  is a false positive. A detection in an image without objects of its class is a false positive.
* **Recall** is ``cumsum(tp) / npos``, ``npos`` = non-difficult objects of the class over all
  evaluated images; **precision** is ``cumsum(tp) / max(cumsum(tp) + cumsum(fp), eps)``.
* **AP**: ``"voc07"`` is the 11-point metric of VOC2007; ``"voc"`` the area under the monotone
  precision envelope (VOC2010 onwards). See :func:`average_precision`.
* **Undefined classes**: a class without non-difficult ground truth has AP = NaN and is left
  out of the mean (the canonical code would divide by zero). A class with ground truth but no
  detections has AP = 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from detect.evaluation.inputs import DetectionsInput, flatten_detections, flatten_ground_truth

#: ``metric`` choices: the VOC2007 11-point AP, and the area AP of VOC2010 onwards.
VOC_METRICS = ("voc07", "voc")

#: Recall thresholds of the 11-point metric. Built exactly as the canonical code does, with
#: ``np.arange``: 0.3, 0.6 and 0.7 come out a hair above their nominal values, which matters for
#: recalls that land exactly on them.
ELEVEN_POINT_RECALLS = np.arange(0.0, 1.1, 0.1)

#: Upper bound on detections x objects-per-image held at once while computing IoUs.
_IOU_CHUNK_ELEMENTS = 1 << 21


@dataclass
class VOCResult:
    """Per-class VOC average precision and the curves behind it.

    Attributes:
        class_names: foreground classes, in label order.
        ap: AP per class; NaN for a class without non-difficult ground truth.
        map: mean of the defined (non-NaN) APs; NaN if none is defined.
        precision, recall: per class, float64[K] over the class's K detections in descending
            score order (empty when the class has no detections or its AP is NaN).
        num_gt: non-difficult ground-truth objects per class (the recall denominator).
        num_detections: detections per class.
        metric: ``"voc07"`` or ``"voc"``.
        iou_threshold: a detection matches when IoU is strictly greater than this.
    """

    class_names: list[str]
    ap: dict[str, float]
    map: float
    precision: dict[str, np.ndarray] = field(repr=False)
    recall: dict[str, np.ndarray] = field(repr=False)
    num_gt: dict[str, int]
    num_detections: dict[str, int]
    metric: str
    iou_threshold: float

    def table(self) -> str:
        """A printable per-class table: class, ground-truth count, detection count, AP, then mAP."""
        width = max([len("class"), len("mAP")] + [len(name) for name in self.class_names])
        lines = [f"{'class':<{width}}  {'gt':>6}  {'dets':>8}  {'AP':>6}"]
        for name in self.class_names:
            ap = "n/a" if np.isnan(self.ap[name]) else f"{self.ap[name]:.4f}"
            lines.append(f"{name:<{width}}  {self.num_gt[name]:>6}  {self.num_detections[name]:>8}  {ap:>6}")
        mean = "n/a" if np.isnan(self.map) else f"{self.map:.4f}"
        lines.append(f"{'mAP':<{width}}  {'':>6}  {'':>8}  {mean:>6}   "
                     f"({self.metric}, IoU > {self.iou_threshold:g})")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        """JSON-ready summary (undefined APs become None)."""
        def number(value: float) -> float | None:
            return None if np.isnan(value) else float(value)
        return {"metric": self.metric, "iou_threshold": self.iou_threshold, "map": number(self.map),
                "ap": {name: number(value) for name, value in self.ap.items()},
                "num_gt": dict(self.num_gt), "num_detections": dict(self.num_detections)}


def average_precision(recall: np.ndarray, precision: np.ndarray, metric: str = "voc07") -> float:
    """AP from a precision/recall curve, exactly as the canonical ``voc_ap``.

    Args:
        recall (float64[K]): non-decreasing recall after each detection (descending score).
        precision (float64[K]): precision after each detection.
        metric: ``"voc07"``: ``sum_t p(t) / 11`` over ``t in np.arange(0., 1.1, 0.1)`` where
            ``p(t)`` is the largest precision at recall >= t (0 if recall never reaches t);
            ``"voc"``: the area under the monotone envelope of precision, with sentinels
            ``recall = [0, rec, 1]`` and ``precision = [0, prec, 0]``, summed where recall changes.
    """
    if metric == "voc07":
        if recall.size == 0:
            return 0.0
        # Recall is non-decreasing, so "recall >= t" is a suffix; its max precision is a suffix max.
        suffix_max = np.maximum.accumulate(precision[::-1])[::-1]
        first = np.searchsorted(recall, ELEVEN_POINT_RECALLS, side="left")
        reached = first < recall.size
        points = np.where(reached, suffix_max[np.minimum(first, recall.size - 1)], 0.0)
        return float(sum((points / 11.0).tolist()))  # left-to-right, as the canonical loop adds
    if metric == "voc":
        padded_recall = np.concatenate(([0.0], recall, [1.0]))
        envelope = np.maximum.accumulate(np.concatenate(([0.0], precision, [0.0]))[::-1])[::-1]
        steps = np.flatnonzero(padded_recall[1:] != padded_recall[:-1])
        return float(np.sum((padded_recall[steps + 1] - padded_recall[steps]) * envelope[steps + 1]))
    raise ValueError(f"metric must be one of {VOC_METRICS}, got {metric!r}")


def _iou_with_padded(det_boxes: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """IoU of each detection with each of its image's (padded) objects.

    Args:
        det_boxes (float64[D, 4]): x1, y1, x2, y2 continuous pixels.
        gt_boxes (float64[D, M, 4]): the objects of each detection's image, padded to M.

    Returns:
        float64[D, M]: ``inter / (area_det + area_gt - inter)`` with widths ``x2 - x1`` — the
        devkit's ``+1`` IoU under the coordinate mapping of the module docstring. Padding
        entries are meaningless (the caller masks them). Kept here in NumPy float64 rather than in
        :mod:`detect.boxes` (torch) so the arithmetic matches the canonical evaluator's.
    """
    det = det_boxes[:, None, :]
    low = np.maximum(det[..., :2], gt_boxes[..., :2])
    high = np.minimum(det[..., 2:], gt_boxes[..., 2:])
    inter_wh = np.maximum(high - low, 0.0)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    union = ((det[..., 2] - det[..., 0]) * (det[..., 3] - det[..., 1])
             + (gt_boxes[..., 2] - gt_boxes[..., 0]) * (gt_boxes[..., 3] - gt_boxes[..., 1]) - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / union


def _pad_objects(gt_image: np.ndarray, gt_boxes: np.ndarray, gt_difficult: np.ndarray,
                 num_images: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pad each image's objects to a common length M, over the images that have objects.

    Args:
        gt_image (int64[G], non-decreasing), gt_boxes (float64[G, 4]), gt_difficult (bool[G]).

    Returns:
        ``compact`` (int64[num_images]): row of each image in the padded arrays, -1 if it has no
        objects; ``boxes`` (float64[I, M, 4]); ``valid`` (bool[I, M]); ``difficult`` (bool[I, M]).
        Objects keep their order within an image, so argmax ties resolve as in the canonical code.
    """
    counts = np.bincount(gt_image, minlength=num_images)
    images_with_gt = np.flatnonzero(counts)
    compact = np.full(num_images, -1, np.int64)
    compact[images_with_gt] = np.arange(images_with_gt.size)
    max_gt = int(counts.max()) if gt_image.size else 0
    row = compact[gt_image]
    slot = np.arange(gt_image.size) - (np.cumsum(counts) - counts)[gt_image]
    boxes = np.zeros((images_with_gt.size, max_gt, 4))
    boxes[row, slot] = gt_boxes
    valid = np.zeros((images_with_gt.size, max_gt), bool)
    valid[row, slot] = True
    difficult = np.zeros((images_with_gt.size, max_gt), bool)
    difficult[row, slot] = gt_difficult
    return compact, boxes, valid, difficult


def _match_class(det_image: np.ndarray, det_boxes: np.ndarray, det_scores: np.ndarray,
                 gt_image: np.ndarray, gt_boxes: np.ndarray, gt_difficult: np.ndarray,
                 num_images: int, iou_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """True/false positives of one class's detections, in descending score order.

    Args:
        det_image (int64[D]), det_boxes (float64[D, 4]), det_scores (float64[D]): the class's
            detections in their given order; boxes x1, y1, x2, y2 continuous pixels.
        gt_image (int64[G], non-decreasing), gt_boxes (float64[G, 4]), gt_difficult (bool[G]):
            the class's ground truth, image by image in the objects' given order.
        num_images: number of evaluated images.

    Returns:
        ``(tp, fp)``, float64[D] each, 0/1, in the order ``np.argsort(-det_scores)`` — the
        canonical code's order, so score ties break identically. A detection ignored because it
        hit a difficult object has tp = fp = 0.

    The canonical greedy loop reduces to: a detection's target is the argmax-IoU object of its
    image (first on ties); it qualifies if that IoU > ``iou_threshold``; among qualifying
    detections aimed at the same non-difficult object, the first in score order is the TP and
    the others are FPs (re-aiming at the second-best object never happens).
    """
    order = np.argsort(-det_scores)
    det_image, det_boxes = det_image[order], det_boxes[order]
    num_dets = det_image.size

    compact, padded_boxes, padded_valid, padded_difficult = _pad_objects(gt_image, gt_boxes, gt_difficult,
                                                                          num_images)
    max_gt = padded_valid.shape[1]

    # Best object of each detection; detections in images without objects of the class keep -inf.
    best_iou = np.full(num_dets, -np.inf)
    best_slot = np.zeros(num_dets, np.int64)
    det_compact = compact[det_image]
    with_gt = np.flatnonzero(det_compact >= 0)
    chunk = max(1, _IOU_CHUNK_ELEMENTS // max(max_gt, 1))
    for start in range(0, with_gt.size, chunk):
        index = with_gt[start:start + chunk]
        image = det_compact[index]
        iou = np.where(padded_valid[image], _iou_with_padded(det_boxes[index], padded_boxes[image]), -np.inf)
        best_slot[index] = np.argmax(iou, axis=1)
        best_iou[index] = iou[np.arange(index.size), best_slot[index]]

    qualifies = best_iou > iou_threshold                     # strict, as the canonical code
    hits_difficult = np.zeros(num_dets, bool)
    hits_difficult[qualifies] = padded_difficult[det_compact[qualifies], best_slot[qualifies]]
    candidates = np.flatnonzero(qualifies & ~hits_difficult)
    target = det_compact[candidates] * max_gt + best_slot[candidates]
    _, first = np.unique(target, return_index=True)          # first occurrence = highest score
    tp = np.zeros(num_dets)
    tp[candidates[first]] = 1.0
    fp = (~hits_difficult).astype(np.float64) - tp
    return tp, fp


def evaluate_voc(ground_truth: Mapping[str, Mapping[str, np.ndarray]], detections: DetectionsInput,
                 class_names: Sequence[str], metric: str = "voc07",
                 iou_threshold: float = 0.5) -> VOCResult:
    """PASCAL VOC AP per class and its mean, identical to the canonical ``voc_eval`` (module docstring).

    Args:
        ground_truth: ``{image_id: {"boxes": float[N, 4], "labels": int[N], "difficult": bool[N]}}``
            — the evaluated set (every image counts, with or without detections). Boxes are
            x1, y1, x2, y2 continuous pixels (VOC XML loaded as ``(xmin - 1, ymin - 1, xmax, ymax)``).
        detections: ``{image_id: {"boxes": float[K, 4], "scores": float[K], "labels": int[K]}}`` or
            the records of a detections file (:mod:`detect.evaluation.detections`); boxes in the
            same continuous pixels. The order of detections decides how equal scores are ranked:
            a class's detections are taken image by image in the given order (or record by
            record) and sorted with ``np.argsort(-scores)``, as the canonical code sorts the lines
            of its per-class results file.
        class_names: foreground classes; labels index into it.
        metric: ``"voc07"`` (11-point) or ``"voc"`` (area); see :func:`average_precision`.
        iou_threshold: a detection matches an object when IoU is strictly greater than this.

    Returns:
        :class:`VOCResult`. Classes without non-difficult ground truth get AP = NaN and are left
        out of ``map`` (a NaN-aware mean); classes with ground truth but no detections get 0.

    Raises:
        DataError: detections for an image that is not in ``ground_truth`` (they would otherwise
            count silently), malformed arrays, labels outside ``0..C-1``, non-finite detections.
        ValueError: unknown ``metric``.
    """
    if metric not in VOC_METRICS:
        raise ValueError(f"metric must be one of {VOC_METRICS}, got {metric!r}")
    class_names = list(class_names)
    gt = flatten_ground_truth(ground_truth, len(class_names))
    dets = flatten_detections(detections, gt.image_ids, class_names)
    ap, precision, recall, num_gt, num_detections = {}, {}, {}, {}, {}
    for label, name in enumerate(class_names):
        in_class = gt.labels == label
        npos = int(np.count_nonzero(~gt.difficult[in_class]))
        det_in_class = dets.labels == label
        num_gt[name], num_detections[name] = npos, int(np.count_nonzero(det_in_class))
        if npos == 0:  # recall undefined: AP is NaN, excluded from the mean
            ap[name], precision[name], recall[name] = float("nan"), np.zeros(0), np.zeros(0)
            continue
        tp, fp = _match_class(dets.image_index[det_in_class], dets.boxes[det_in_class],
                              dets.scores[det_in_class], gt.image_index[in_class],
                              gt.boxes[in_class], gt.difficult[in_class], len(gt.image_ids),
                              iou_threshold)
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        recall[name] = tp / float(npos)
        precision[name] = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        ap[name] = average_precision(recall[name], precision[name], metric)
    defined = [value for value in ap.values() if not np.isnan(value)]
    mean_ap = float(np.mean(defined)) if defined else float("nan")
    return VOCResult(class_names=class_names, ap=ap, map=mean_ap, precision=precision, recall=recall,
                     num_gt=num_gt, num_detections=num_detections, metric=metric,
                     iou_threshold=iou_threshold)
