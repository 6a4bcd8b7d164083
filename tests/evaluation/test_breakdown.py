"""AP by object size and the error categories of confident detections, on hand-built cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detect.evaluation.breakdown import error_breakdown, size_band_ap
from detect.evaluation.voc import evaluate_voc

CLASSES = ["circle", "square"]


def gt(boxes, labels, difficult=None):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return {"boxes": boxes, "labels": np.asarray(labels, np.int64),
            "difficult": np.zeros(len(boxes), bool) if difficult is None else np.asarray(difficult, bool)}


def dets(boxes, scores, labels):
    return {"boxes": np.asarray(boxes, np.float32).reshape(-1, 4), "scores": np.asarray(scores, np.float32),
            "labels": np.asarray(labels, np.int64)}


def test_each_category_once():
    ground_truth = {
        "a": gt([[0, 0, 20, 20], [50, 50, 80, 80], [100, 0, 130, 30]], [0, 1, 0], difficult=[False, False, True]),
        "b": gt([[10, 10, 40, 40]], [1]),
    }
    detections = {
        "a": dets([[0, 0, 20, 20],        # circle on the circle: correct
                   [1, 1, 20, 20],        # again: duplicate
                   [100, 0, 130, 30],     # on the difficult circle
                   [50, 50, 80, 80],      # circle on the square: wrong class
                   [0, 0, 20, 8],         # circle, IoU 0.4 with the circle: localisation
                   [200, 200, 220, 220],  # nothing there: background
                   [50, 50, 80, 80]],     # square on the square, but scored below the threshold
                  [0.9, 0.8, 0.7, 0.95, 0.6, 0.55, 0.3], [0, 0, 0, 0, 0, 0, 1]),
        "b": dets([[10, 10, 40, 40]], [0.99], [1]),   # correct
    }
    result = error_breakdown(ground_truth, detections, CLASSES, score_threshold=0.5)
    assert result.counts == {"correct": 2, "duplicate": 1, "difficult": 1, "wrong class": 1,
                             "localisation": 1, "background": 1}
    assert result.objects == 3 and result.missed == 1            # the square in "a" (its detection scored 0.3)
    assert result.confusions == {("square", "circle"): 1}
    text = result.table()
    assert "wrong class" in text and "square -> circle 1" in text
    # Lowering the threshold takes the square too.
    assert error_breakdown(ground_truth, detections, CLASSES, score_threshold=0.2).missed == 0


def test_correct_equals_voc_true_positives_above_threshold():
    rng = np.random.default_rng(0)
    ground_truth, detections = {}, {}
    for index in range(30):
        count = int(rng.integers(0, 5))
        corners = rng.uniform(0, 80, (count, 2))
        boxes = np.hstack([corners, corners + rng.uniform(8, 40, (count, 2))])
        labels = rng.integers(0, 2, count)
        ground_truth[str(index)] = gt(boxes, labels, rng.random(count) < 0.15)
        jittered = np.repeat(boxes, 2, axis=0) + rng.normal(0, 4, (2 * count, 4))
        jittered[:, 2:] = np.maximum(jittered[:, 2:], jittered[:, :2] + 1)
        found = np.vstack([jittered, rng.uniform(0, 100, (3, 4)).cumsum(axis=1)])
        detections[str(index)] = dets(found, rng.random(len(found)),
                                      np.concatenate([np.repeat(labels, 2), rng.integers(0, 2, 3)]))
    threshold = 0.4
    result = error_breakdown(ground_truth, detections, CLASSES, score_threshold=threshold)
    voc = evaluate_voc(ground_truth, detections, CLASSES)
    true_positives = 0
    for label, name in enumerate(CLASSES):
        scores = np.sort(np.concatenate([d["scores"][d["labels"] == label] for d in detections.values()]))[::-1]
        kept = int(np.count_nonzero(scores >= threshold))
        if kept:
            true_positives += round(voc.recall[name][kept - 1] * voc.num_gt[name])
    assert result.counts["correct"] == true_positives
    assert result.objects - result.missed == true_positives
    assert sum(result.counts.values()) == sum(int((d["scores"] >= threshold).sum()) for d in detections.values())


def test_size_bands_split_objects_and_ignore_other_sizes():
    ground_truth = {"a": gt([[0, 0, 10, 10], [20, 20, 60, 60], [100, 100, 200, 150]], [0, 1, 0])}
    # The small circle is found, the 40 px square is labelled circle, the large circle is missed.
    detections = {"a": dets([[0, 0, 10, 10], [20, 20, 60, 60]], [0.9, 0.8], [0, 0])}
    bands = size_band_ap(ground_truth, detections, CLASSES, edges=(16, 32, 48))
    assert [(b.low, b.high, b.objects) for b in bands] == [(0, 16, 1), (32, 48, 1), (48, math.inf, 1)]
    small, middle, large = bands
    assert small.map == pytest.approx(1.0) and small.agnostic_ap == pytest.approx(1.0)
    # In 32-48 px the only object is the square: its class has AP 0, the circle class has no
    # ground truth there (NaN, left out); class-agnostic it is found.
    assert middle.map == pytest.approx(0.0) and middle.agnostic_ap == pytest.approx(1.0)
    # The large band counts the 40 px detection (>= 48 / 1.5) but it is not on the large circle.
    assert large.map == pytest.approx(0.0) and large.agnostic_ap == pytest.approx(0.0)
    assert large.label == ">= 48 px" and small.label == "0-16 px"


def test_size_band_slack_keeps_detections_near_the_band():
    ground_truth = {"a": gt([[0, 0, 30, 30]], [0])}
    # A 34 px detection of a 30 px object: inside 16-32 px with slack, not without.
    detections = {"a": dets([[0, 0, 34, 34]], [0.9], [0])}
    (strict,) = size_band_ap(ground_truth, detections, CLASSES, edges=(16, 32), slack=1.0)
    (loose,) = size_band_ap(ground_truth, detections, CLASSES, edges=(16, 32), slack=1.5)
    assert (strict.low, strict.high) == (16, 32)
    assert strict.map == pytest.approx(0.0) and loose.map == pytest.approx(1.0)


@pytest.mark.parametrize("edges, slack", [((32, 16), 1.5), ((0, 16), 1.5), ((16,), 0.5)])
def test_size_band_arguments_checked(edges, slack):
    with pytest.raises(ValueError):
        size_band_ap({"a": gt([[0, 0, 4, 4]], [0])}, {}, CLASSES, edges=edges, slack=slack)
