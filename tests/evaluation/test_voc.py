"""VOC AP: hand-computed cases, the canonical conventions one by one, input checks."""

import math

import numpy as np
import pytest

from detect.errors import DataError
from detect.evaluation.detections import detections_to_records
from detect.evaluation.voc import VOC_METRICS, average_precision, evaluate_voc

CLASSES = ["cat", "dog"]


def gt(boxes, labels, difficult=None):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    difficult = np.zeros(len(boxes), bool) if difficult is None else np.asarray(difficult, bool)
    return {"boxes": boxes, "labels": np.asarray(labels, np.int64), "difficult": difficult}


def dets(boxes, scores, labels):
    return {"boxes": np.asarray(boxes, np.float64).reshape(-1, 4),
            "scores": np.asarray(scores, np.float64), "labels": np.asarray(labels, np.int64)}


A = [0.0, 0.0, 10.0, 10.0]
B = [20.0, 20.0, 30.0, 30.0]
C = [40.0, 40.0, 60.0, 50.0]


def ap_of(ground_truth, detections, metric, name="cat"):
    return evaluate_voc(ground_truth, detections, CLASSES, metric=metric).ap[name]


@pytest.mark.parametrize("metric", VOC_METRICS)
def test_perfect_detections_give_one(metric):
    truth = {"a": gt([A, B], [0, 1]), "b": gt([C], [0])}
    found = {"a": dets([A, B], [0.9, 0.8], [0, 1]), "b": dets([C], [0.7], [0])}
    result = evaluate_voc(truth, found, CLASSES, metric=metric)
    # Eleven additions of 1/11 give 1.0000000000000002, as in the canonical loop.
    assert result.ap == pytest.approx({"cat": 1.0, "dog": 1.0}, abs=1e-15)
    assert result.map == pytest.approx(1.0, abs=1e-15)


def test_half_recall_full_precision():
    # Recall 0.5 at precision 1: the 11-point metric counts t = 0, 0.1, ..., 0.5 -> 6/11.
    truth = {"a": gt([A, B], [0, 0])}
    found = {"a": dets([A], [0.9], [0])}
    assert ap_of(truth, found, "voc07") == pytest.approx(6 / 11, abs=1e-15)
    assert ap_of(truth, found, "voc") == pytest.approx(0.5, abs=1e-15)


def test_eleven_point_thresholds_come_from_arange():
    # Recall exactly 0.3 does not reach np.arange(0, 1.1, 0.1)[3] == 0.30000000000000004:
    # only t = 0, 0.1, 0.2 count, 3/11 rather than 4/11 (the canonical code's quirk, kept).
    boxes = [[10.0 * i, 0.0, 10.0 * i + 5, 5.0] for i in range(10)]
    truth = {"a": gt(boxes, [0] * 10)}
    found = {"a": dets(boxes[:3], [0.9, 0.8, 0.7], [0, 0, 0])}
    assert ap_of(truth, found, "voc07") == pytest.approx(3 / 11, abs=1e-15)
    assert ap_of(truth, found, "voc") == pytest.approx(0.3, abs=1e-15)


def test_detection_on_difficult_object_is_ignored():
    # The top detection hits a difficult object: neither TP nor FP. Recall counts the one
    # non-difficult object only, so the second detection brings recall to 1 at precision 1.
    truth = {"a": gt([A, B], [0, 0], difficult=[True, False])}
    found = {"a": dets([A, B], [0.9, 0.8], [0, 0])}
    result = evaluate_voc(truth, found, CLASSES, metric="voc07")
    assert result.num_gt["cat"] == 1
    np.testing.assert_array_equal(result.recall["cat"], [0.0, 1.0])
    np.testing.assert_array_equal(result.precision["cat"], [0.0, 1.0])  # 0 / max(0, eps) = 0
    assert result.ap["cat"] == pytest.approx(1.0, abs=1e-15)
    assert ap_of(truth, found, "voc") == pytest.approx(1.0, abs=1e-15)


def test_duplicate_detection_is_false_positive():
    # A (0.9) TP, A again (0.8) FP, B (0.7) TP: recall [.5, .5, 1], precision [1, .5, 2/3].
    truth = {"a": gt([A, B], [0, 0])}
    found = {"a": dets([A, A, B], [0.9, 0.8, 0.7], [0, 0, 0])}
    result = evaluate_voc(truth, found, CLASSES, metric="voc07")
    np.testing.assert_allclose(result.precision["cat"], [1.0, 0.5, 2 / 3], rtol=0, atol=1e-15)
    np.testing.assert_allclose(result.recall["cat"], [0.5, 0.5, 1.0], rtol=0, atol=1e-15)
    assert result.ap["cat"] == pytest.approx((6 * 1.0 + 5 * 2 / 3) / 11, abs=1e-15)
    # Area: recall 0 -> .5 at envelope 1, then .5 -> 1 at envelope 2/3.
    assert ap_of(truth, found, "voc") == pytest.approx(0.5 + 0.5 * 2 / 3, abs=1e-15)


def test_detection_in_image_without_objects_of_its_class_is_false_positive():
    truth = {"a": gt([A], [0]), "b": gt([B], [1])}
    found = {"a": dets([A], [0.5], [0]), "b": dets([B], [0.9], [0])}  # "cat" where only a dog is
    assert ap_of(truth, found, "voc") == pytest.approx(0.5, abs=1e-15)


@pytest.mark.parametrize("metric", VOC_METRICS)
def test_no_detections_give_zero(metric):
    result = evaluate_voc({"a": gt([A], [0])}, {}, CLASSES, metric=metric)
    assert result.ap["cat"] == 0.0
    assert result.precision["cat"].size == 0


@pytest.mark.parametrize("metric", VOC_METRICS)
def test_class_without_ground_truth_is_nan_and_excluded_from_mean(metric):
    truth = {"a": gt([A, B], [0, 0])}
    found = {"a": dets([A, C], [0.9, 0.8], [0, 1])}  # the dog detection has nothing to match
    result = evaluate_voc(truth, found, CLASSES, metric=metric)
    assert math.isnan(result.ap["dog"])
    assert result.map == result.ap["cat"] > 0
    assert "n/a" in result.table().splitlines()[2]
    assert result.as_dict()["ap"]["dog"] is None


def test_class_with_only_difficult_objects_is_nan():
    result = evaluate_voc({"a": gt([A, B], [0, 1], difficult=[False, True])},
                          {"a": dets([B], [0.9], [1])}, CLASSES)
    assert math.isnan(result.ap["dog"]) and result.num_gt["dog"] == 0


def test_iou_exactly_at_threshold_does_not_match():
    truth = {"a": gt([A], [0])}
    half = [0.0, 0.0, 5.0, 10.0]        # IoU 50 / 100 = 0.5 exactly: not > 0.5
    above = [0.0, 0.0, 5.5, 10.0]       # IoU 0.55
    assert ap_of(truth, {"a": dets([half], [0.9], [0])}, "voc") == 0.0
    assert ap_of(truth, {"a": dets([above], [0.9], [0])}, "voc") == 1.0
    # The threshold is a parameter; the comparison stays strict.
    strict = evaluate_voc(truth, {"a": dets([above], [0.9], [0])}, CLASSES, metric="voc", iou_threshold=0.55)
    assert strict.ap["cat"] == 0.0


def test_detection_takes_argmax_object_even_if_already_matched():
    # The second detection overlaps A most (IoU 0.8) and B enough (0.6); A is taken, so it is
    # an FP; the canonical code never falls back to the second-best object.
    truth = {"a": gt([[0, 0, 10, 10], [2, 0, 12, 10]], [0, 0])}
    found = {"a": dets([[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.8], [0, 0])}
    result = evaluate_voc(truth, found, CLASSES, metric="voc")
    np.testing.assert_array_equal(result.recall["cat"], [0.5, 0.5])


def test_equal_scores_rank_as_np_argsort_of_given_order():
    # One TP and one FP with the same score: which counts first decides AP (1.0 or 0.5). The
    # rank is np.argsort(-scores) over the detections in their given order, as in the canonical code.
    truth = {"a": gt([A], [0])}
    scores = np.array([0.5, 0.5])
    for boxes in ([A, C], [C, A]):
        tp_index = boxes.index(A)
        expected = 1.0 if np.argsort(-scores)[0] == tp_index else 0.5
        assert ap_of(truth, {"a": dets(boxes, scores, [0, 0])}, "voc") == expected


def test_records_input_gives_same_result_as_per_image_dict():
    truth = {"a": gt([A, B], [0, 1]), "b": gt([C], [0])}
    found = {"b": dets([C, A], [0.3, 0.6], [0, 1]), "a": dets([A, B, C], [0.9, 0.6, 0.6], [0, 1, 0])}
    for metric in VOC_METRICS:
        from_dict = evaluate_voc(truth, found, CLASSES, metric=metric)
        from_records = evaluate_voc(truth, detections_to_records(found, CLASSES), CLASSES, metric=metric)
        assert from_dict.ap == from_records.ap


def test_detections_for_unknown_image_are_rejected():
    with pytest.raises(DataError, match="'zzz'.*not in the ground truth"):
        evaluate_voc({"a": gt([A], [0])}, {"zzz": dets([A], [0.9], [0])}, CLASSES)


def test_bad_inputs_are_rejected_with_the_image_named():
    truth = {"a": gt([A], [0])}
    with pytest.raises(DataError, match="'a'.*label 7"):
        evaluate_voc(truth, {"a": dets([A], [0.9], [7])}, CLASSES)
    with pytest.raises(DataError, match="'a'.*non-finite"):
        evaluate_voc(truth, {"a": dets([A], [float("nan")], [0])}, CLASSES)
    with pytest.raises(DataError, match="'a'.*inconsistent lengths"):
        evaluate_voc(truth, {"a": dets([A], [0.9, 0.8], [0])}, CLASSES)
    with pytest.raises(ValueError, match="metric"):
        evaluate_voc(truth, {}, CLASSES, metric="coco")


def test_table_lists_every_class_and_the_mean():
    result = evaluate_voc({"a": gt([A, B], [0, 1])}, {"a": dets([A], [0.9], [0])}, CLASSES, metric="voc")
    lines = result.table().splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["cat", "dog", "mAP"]
    assert lines[1].split()[1:] == ["1", "1", "1.0000"]
    assert lines[3].split()[1] == "0.5000"


def test_average_precision_on_explicit_curve():
    recall = np.array([0.2, 0.4, 0.4, 0.8])
    precision = np.array([1.0, 1.0, 2 / 3, 0.75])
    # 11-point: t <= 0.4 -> 1 (5 points), 0.5..0.8 -> 0.75 (4 points), 0.9, 1.0 -> 0.
    assert average_precision(recall, precision, "voc07") == pytest.approx((5 + 4 * 0.75) / 11, abs=1e-15)
    # Area: 0.4 at 1, then 0.4 at 0.75.
    assert average_precision(recall, precision, "voc") == pytest.approx(0.4 + 0.4 * 0.75, abs=1e-15)


def test_argmax_ties_go_to_the_first_object():
    # Two identical objects, the first difficult: the detection's argmax is the first, so it is
    # ignored (np.argmax returns the first maximum), and the second object is never found.
    truth = {"a": gt([A, A], [0, 0], difficult=[True, False])}
    result = evaluate_voc(truth, {"a": dets([A], [0.9], [0])}, CLASSES, metric="voc")
    np.testing.assert_array_equal(result.recall["cat"], [0.0])
    assert result.ap["cat"] == 0.0
