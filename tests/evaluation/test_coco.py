"""COCO metrics through pycocotools: perfect, empty, difficult-as-crowd, silence."""

import math

import numpy as np
import pytest

from detect.errors import DataError
from detect.evaluation.coco import COCO_METRICS, evaluate_coco

CLASSES = ["cat", "dog"]


def ground_truth():
    # Areas: 100 (small, < 32^2), 40 * 40 = 1600 (medium), 120 * 100 (large).
    return {
        "a": {"boxes": np.array([[0, 0, 10, 10], [20, 20, 60, 60]], np.float32),
              "labels": np.array([0, 1]), "difficult": np.array([False, False])},
        "b": {"boxes": np.array([[5, 5, 125, 105]], np.float32), "labels": np.array([0]),
              "difficult": np.array([False])},
        "c": {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64),
              "difficult": np.zeros(0, bool)},
    }


def perfect(truth):
    return {image_id: {"boxes": g["boxes"], "scores": np.full(len(g["labels"]), 0.9), "labels": g["labels"]}
            for image_id, g in truth.items()}


def test_perfect_detections_score_one(capsys):
    metrics = evaluate_coco(ground_truth(), perfect(ground_truth()), CLASSES,
                            image_sizes={"a": (200, 200), "b": (200, 200), "c": (50, 50)})
    for name in COCO_METRICS + ("AP/cat", "AP/dog"):
        assert metrics[name] == pytest.approx(1.0), name
    assert capsys.readouterr().out == ""  # pycocotools' printing is captured


@pytest.mark.parametrize("empty", [{}, []])
def test_no_detections_score_zero(empty):
    metrics = evaluate_coco(ground_truth(), empty, CLASSES)
    assert all(value == 0.0 for value in metrics.values()), metrics


def test_undefined_metric_is_nan():
    truth = {"a": ground_truth()["a"]}  # no large object
    metrics = evaluate_coco(truth, perfect(truth), CLASSES)
    assert math.isnan(metrics["APl"]) and metrics["AP"] == pytest.approx(1.0)


def test_difficult_objects_are_ignored_like_crowds():
    truth = ground_truth()
    only_b = perfect(truth)
    only_b["a"] = {"boxes": truth["a"]["boxes"][1:], "scores": np.array([0.9]), "labels": np.array([1])}
    # The small cat of "a" is missed: an ordinary object halves recall ...
    assert evaluate_coco(truth, only_b, CLASSES)["AP/cat"] == pytest.approx(0.5, abs=0.01)
    # ... a difficult one does not count,
    truth["a"]["difficult"] = np.array([True, False])
    assert evaluate_coco(truth, only_b, CLASSES)["AP/cat"] == pytest.approx(1.0)
    # and a confident detection on it is not a false positive either.
    found = perfect(truth)
    found["b"]["scores"] = np.array([0.5])
    assert evaluate_coco(truth, found, CLASSES)["AP/cat"] == pytest.approx(1.0)


def test_unknown_image_is_rejected():
    with pytest.raises(DataError, match="'nope'"):
        evaluate_coco(ground_truth(), {"nope": perfect(ground_truth())["a"]}, CLASSES)


def test_given_areas_choose_the_size_ranges():
    """A 40 x 40 box whose object (its segment) covers 500 px is small for COCO, not medium."""
    truth = ground_truth()
    assert evaluate_coco(truth, perfect(truth), CLASSES)["APm"] == pytest.approx(1.0)
    truth["a"]["area"] = np.array([np.nan, 500.0])     # NaN: the box's area (100, small either way)
    metrics = evaluate_coco(truth, perfect(truth), CLASSES)
    assert math.isnan(metrics["APm"]) and metrics["APs"] == pytest.approx(1.0) and metrics["AP"] == pytest.approx(1.0)
