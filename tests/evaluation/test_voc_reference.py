"""The vectorised VOC evaluator against a loop-by-loop reference of the canonical algorithm.

``reference_average_precision`` follows py-faster-rcnn's ``voc_eval`` step by step (one detection
at a time, a "matched" flag per object, the 11-point and envelope loops), written from the
algorithm's description. Random cases use a coarse integer grid and few distinct scores, so IoUs
land exactly on 0.5, objects tie for the argmax (duplicated objects, one difficult and one not)
and scores tie, which are the corner cases.
"""

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from detect.evaluation.detections import detections_to_records
from detect.evaluation.voc import evaluate_voc

CLASSES = ["a", "b", "c"]


def iou(box, other):
    """IoU of two x1, y1, x2, y2 continuous-pixel boxes, in plain Python floats."""
    inter_w = max(min(box[2], other[2]) - max(box[0], other[0]), 0.0)
    inter_h = max(min(box[3], other[3]) - max(box[1], other[1]), 0.0)
    inter = inter_w * inter_h
    union = (box[2] - box[0]) * (box[3] - box[1]) + (other[2] - other[0]) * (other[3] - other[1]) - inter
    return inter / union


def eleven_point_ap(recall, precision):
    ap = 0.0
    for t in np.arange(0.0, 1.1, 0.1):
        p = np.max(precision[recall >= t]) if np.sum(recall >= t) > 0 else 0
        ap = ap + p / 11.0
    return ap


def area_ap(recall, precision):
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


def reference_average_precision(ground_truth, records, use_07_metric, iou_threshold=0.5):
    """AP per class; ``records`` are (image_id, label, score, box) in results-file order."""
    aps = {}
    for label, name in enumerate(CLASSES):
        objects, npos = {}, 0
        for image_id, truth in ground_truth.items():
            keep = truth["labels"] == label
            difficult = truth["difficult"][keep]
            objects[image_id] = {"boxes": truth["boxes"][keep].astype(float).tolist(),
                                 "difficult": difficult.tolist(), "matched": [False] * len(difficult)}
            npos += int(np.sum(~difficult))
        mine = [record for record in records if record[1] == label]
        confidence = np.array([record[2] for record in mine], dtype=float)
        order = np.argsort(-confidence)
        tp, fp = np.zeros(len(mine)), np.zeros(len(mine))
        for rank, index in enumerate(order):
            image_id, _, _, box = mine[index]
            image_objects = objects[image_id]
            best_iou, best = -np.inf, -1
            if image_objects["boxes"]:
                overlaps = [iou(box, other) for other in image_objects["boxes"]]
                best = int(np.argmax(overlaps))
                best_iou = overlaps[best]
            if best_iou > iou_threshold:
                if not image_objects["difficult"][best]:
                    if not image_objects["matched"][best]:
                        tp[rank] = 1.0
                        image_objects["matched"][best] = True
                    else:
                        fp[rank] = 1.0
            else:
                fp[rank] = 1.0
        if npos == 0:
            aps[name] = float("nan")
            continue
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        recall = tp / float(npos)
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        aps[name] = eleven_point_ap(recall, precision) if use_07_metric else area_ap(recall, precision)
    return aps


COORD = st.integers(0, 12)


@st.composite
def box_on_grid(draw):
    x1, y1 = draw(COORD), draw(COORD)
    return [float(x1), float(y1), float(x1 + draw(st.integers(1, 8))), float(y1 + draw(st.integers(1, 8)))]


@st.composite
def evaluation_case(draw):
    """Random ground truth, per-image detections (many near ground truth), and a record order."""
    ground_truth, detections = {}, {}
    for image in range(draw(st.integers(1, 4))):
        image_id = f"img{image}"
        num_objects = draw(st.integers(0, 4))
        boxes = []
        for _ in range(num_objects):  # duplicated objects make detections tie for the argmax
            boxes.append(list(draw(st.sampled_from(boxes))) if boxes and not draw(st.integers(0, 2))
                         else draw(box_on_grid()))
        labels = [draw(st.integers(0, len(CLASSES) - 1)) for _ in range(num_objects)]
        ground_truth[image_id] = {"boxes": np.array(boxes, np.float32).reshape(-1, 4),
                                  "labels": np.array(labels, np.int64),
                                  "difficult": np.array([draw(st.integers(0, 2)) == 0
                                                         for _ in range(num_objects)], bool)}
        if draw(st.booleans()):
            continue  # an image without detections
        det_boxes, det_labels = [], []
        for _ in range(draw(st.integers(0, 8))):
            if boxes and draw(st.integers(0, 2)):
                source = draw(st.integers(0, num_objects - 1))
                shift = [draw(st.sampled_from([0.0, 0.0, 0.0, 0.5, -1.0, 1.0, 2.0])) for _ in range(4)]
                box = [v + s for v, s in zip(boxes[source], shift)]
                box[2], box[3] = max(box[2], box[0] + 0.5), max(box[3], box[1] + 0.5)
                det_boxes.append(box)
                det_labels.append(labels[source] if draw(st.integers(0, 4)) else draw(st.integers(0, 2)))
            else:
                det_boxes.append(draw(box_on_grid()))
                det_labels.append(draw(st.integers(0, len(CLASSES) - 1)))
        scores = [draw(st.sampled_from([0.1, 0.5, 0.5, 0.7, 0.9])) for _ in det_boxes]
        detections[image_id] = {"boxes": np.array(det_boxes, np.float64).reshape(-1, 4),
                                "scores": np.array(scores), "labels": np.array(det_labels, np.int64)}
    records = detections_to_records(detections, CLASSES)
    shuffled = draw(st.permutations(records))
    return ground_truth, detections, shuffled


def as_tuples(records):
    return [(r["image_id"], CLASSES.index(r["category"]), r["score"], r["bbox"]) for r in records]


def assert_same_ap(ours, expected):
    for name in CLASSES:
        if math.isnan(expected[name]):
            assert math.isnan(ours.ap[name]), name
        else:
            assert abs(ours.ap[name] - expected[name]) <= 1e-12, (name, ours.ap[name], expected[name])


@settings(max_examples=600, deadline=None)
@given(evaluation_case())
def test_vectorised_matches_loop_reference(case):
    ground_truth, detections, shuffled_records = case
    for metric, use_07_metric in (("voc07", True), ("voc", False)):
        # Per-image dict: the results-file order is image by image, detections in order.
        in_dict_order = as_tuples(detections_to_records(detections, CLASSES))
        expected = reference_average_precision(ground_truth, in_dict_order, use_07_metric)
        assert_same_ap(evaluate_voc(ground_truth, detections, CLASSES, metric=metric), expected)
        # Records in any order: that order is the results-file order.
        expected = reference_average_precision(ground_truth, as_tuples(shuffled_records), use_07_metric)
        assert_same_ap(evaluate_voc(ground_truth, shuffled_records, CLASSES, metric=metric), expected)
