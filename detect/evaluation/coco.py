"""COCO detection metrics computed by pycocotools itself, on detect's evaluation inputs.

The ground truth and detections (see :mod:`detect.evaluation.inputs`; boxes x1, y1, x2, y2 in
continuous pixels) are turned into in-memory COCO objects:

* images get ids ``1..N`` in the ground truth's order, categories ids ``1..C`` (label + 1);
* boxes become COCO ``[x, y, w, h] = [x1, y1, x2 - x1, y2 - y1]`` (continuous pixels, no "+1");
  a ground-truth object's ``area``, which decides the small / medium / large ranges, is the
  dataset's own (a COCO file's segment area) where it has one, else ``w * h``, as for detections;
* **difficult objects become ``iscrowd = 1``**. COCO has no "ignored but ordinary" object: its
  only way to ignore a ground-truth box is the crowd flag, so detections matched to a difficult
  object are neither true nor false positives, as in VOC. Crowd matching differs from VOC in three
  details: the overlap with a crowd box is intersection over the *detection's* area; several
  detections may match the same crowd box; and a detection is matched to an ordinary object if it
  overlaps one enough, even when it overlaps a difficult one more (VOC takes the largest overlap,
  and a detection whose largest is with a difficult object is ignored).

Metrics are the twelve of ``COCOeval.summarize`` (AP averaged over IoU 0.50:0.95, AP50, AP75, AP
for small / medium / large objects, AR for 1 / 10 / 100 detections per image and for small /
medium / large objects) plus AP per class. pycocotools reports -1 where a metric is undefined (no
ground truth in that area range, say); it is returned as NaN. pycocotools' printing is captured
and discarded (``sys.stdout`` is redirected during the call).
"""

from __future__ import annotations

import contextlib
import io
from typing import Mapping, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detect.evaluation.inputs import (DetectionsInput, FlatDetections, FlatGroundTruth,
                                      flatten_detections, flatten_ground_truth)

#: Names of ``COCOeval.stats``, in order.
COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl",
                "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _xywh(boxes: np.ndarray) -> np.ndarray:
    """x1, y1, x2, y2 (float[N, 4], continuous pixels) -> COCO x, y, w, h."""
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def _coco_object(images: list[dict], categories: list[dict], annotations: list[dict]) -> COCO:
    coco = COCO()
    coco.dataset = {"images": images, "categories": categories, "annotations": annotations}
    coco.createIndex()
    return coco


def _annotations(image_index: np.ndarray, boxes: np.ndarray, labels: np.ndarray, iscrowd: np.ndarray,
                 scores: np.ndarray | None = None, area: np.ndarray | None = None) -> list[dict]:
    xywh = _xywh(boxes)
    box_area = xywh[:, 2] * xywh[:, 3]
    area = box_area if area is None else np.where(np.isfinite(area), area, box_area)
    rows = zip(image_index.tolist(), labels.tolist(), xywh.tolist(), iscrowd.tolist(), area.tolist())
    annotations = [{"id": k + 1, "image_id": image + 1, "category_id": label + 1,
                    "bbox": box, "area": size, "iscrowd": int(crowd)}
                   for k, (image, label, box, crowd, size) in enumerate(rows)]
    if scores is not None:
        for annotation, score in zip(annotations, scores.tolist()):
            annotation["score"] = score
    return annotations


def evaluate_coco(ground_truth: Mapping[str, Mapping[str, np.ndarray]], detections: DetectionsInput,
                  class_names: Sequence[str],
                  image_sizes: Mapping[str, tuple[int, int]] | None = None) -> dict[str, float]:
    """COCO box metrics by pycocotools (conventions in the module docstring).

    Args:
        ground_truth: ``{image_id: {"boxes": float[N, 4], "labels": int[N], "difficult": bool[N]}}``,
            boxes x1, y1, x2, y2 in continuous pixels; difficult objects are evaluated as crowds.
            An optional ``"area": float[N]`` (NaN: not given) sets the objects' COCO areas.
        detections: per-image ``{"boxes", "scores", "labels"}`` or detections-file records, boxes
            in the same pixels. pycocotools keeps the 100 highest-scoring per image and class.
        class_names: foreground classes; labels index into it.
        image_sizes: optional ``{image_id: (width, height)}`` recorded in the COCO images (the
            metrics do not depend on it).

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"}``
        and ``"AP/<class name>"`` (AP over IoU 0.50:0.95 for one class), floats in [0, 1], NaN
        where undefined. No detections at all gives 0 for every defined metric.

    Raises:
        DataError: see :func:`detect.evaluation.inputs.flatten_detections`.
    """
    class_names = list(class_names)
    gt: FlatGroundTruth = flatten_ground_truth(ground_truth, len(class_names))
    dets: FlatDetections = flatten_detections(detections, gt.image_ids, class_names)
    images = [{"id": index + 1, "file_name": image_id} for index, image_id in enumerate(gt.image_ids)]
    if image_sizes is not None:
        for image in images:
            image["width"], image["height"] = image_sizes[image["file_name"]]
    categories = [{"id": label + 1, "name": name} for label, name in enumerate(class_names)]
    with contextlib.redirect_stdout(io.StringIO()):
        gt_annotations = _annotations(gt.image_index, gt.boxes, gt.labels, gt.difficult, area=gt.area)
        dt_annotations = _annotations(dets.image_index, dets.boxes, dets.labels,
                                      np.zeros(dets.labels.size, bool), dets.scores)
        coco_gt = _coco_object(images, categories, gt_annotations)
        coco_dt = _coco_object(images, categories, dt_annotations)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    metrics = {name: float(value) for name, value in zip(COCO_METRICS, evaluator.stats)}
    # precision[T, R, K, A, M]: IoU thresholds, recall points, classes, area "all", maxDets 100.
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    for label, name in enumerate(class_names):
        values = precision[:, :, label]
        metrics[f"AP/{name}"] = float(values[values > -1].mean()) if (values > -1).any() else -1.0
    return {name: float("nan") if value == -1 else value for name, value in metrics.items()}
