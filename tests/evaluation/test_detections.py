"""The detections file: exact round trip, order kept, every malformed file a DataError naming it."""

import json

import numpy as np
import pytest

from detect.errors import DataError
from detect.evaluation.detections import (detections_to_records, read_detections,
                                          records_to_detections, write_detections)

CLASSES = ["cat", "dog"]


def example_detections():
    return {
        "img1": {"boxes": np.array([[0.5, 1.25, 10.0, 20.0], [3.0, 4.0, 5.0, 6.0]]),
                 "scores": np.array([0.9, 1 / 3]), "labels": np.array([1, 0])},
        "img0": {"boxes": np.array([[1 / 7, 2.0, 3.0, 4.5]], np.float32),
                 "scores": np.array([0.123456789], np.float32), "labels": np.array([0])},
        "empty": {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, int)},
    }


def test_round_trip_is_exact_and_keeps_order(tmp_path):
    path = tmp_path / "out" / "detections.json"
    original = example_detections()
    write_detections(path, original, CLASSES)
    loaded = read_detections(path, CLASSES)
    assert list(loaded) == ["img1", "img0"]  # an image without detections has no record
    for image_id, entry in loaded.items():
        np.testing.assert_array_equal(entry["boxes"], original[image_id]["boxes"].astype(np.float64))
        np.testing.assert_array_equal(entry["scores"], original[image_id]["scores"].astype(np.float64))
        np.testing.assert_array_equal(entry["labels"], original[image_id]["labels"])
        assert entry["boxes"].dtype == np.float64 and entry["labels"].dtype == np.int64
    assert [p.name for p in path.parent.iterdir()] == ["detections.json"]  # no temporary left


def test_records_are_the_documented_format():
    records = detections_to_records(example_detections(), CLASSES)
    assert records[0] == {"image_id": "img1", "category": "dog", "score": 0.9,
                          "bbox": [0.5, 1.25, 10.0, 20.0]}
    assert [r["image_id"] for r in records] == ["img1", "img1", "img0"]


def test_interleaved_records_are_grouped_by_first_appearance():
    records = [{"image_id": image_id, "category": "cat", "score": score, "bbox": [0, 0, 1, 1]}
               for image_id, score in (("b", 0.1), ("a", 0.2), ("b", 0.3))]
    grouped = records_to_detections(records, CLASSES)
    assert list(grouped) == ["b", "a"]
    np.testing.assert_array_equal(grouped["b"]["scores"], [0.1, 0.3])


def test_empty_file_round_trip(tmp_path):
    path = tmp_path / "none.json"
    write_detections(path, {}, CLASSES)
    assert json.loads(path.read_text()) == []
    assert read_detections(path, CLASSES) == {}


GOOD = {"image_id": "a", "category": "cat", "score": 0.5, "bbox": [1, 2, 3, 4]}


@pytest.mark.parametrize("content, message", [
    ('[{"image_id": "a",', "not valid JSON"),
    ('{"image_id": "a"}', "not a list"),
    (json.dumps([GOOD, 7]), "entry 1 is not an object \\(got int\\)"),
    (json.dumps([GOOD, {k: v for k, v in GOOD.items() if k != "score"}]), "entry 1 lacks score"),
    (json.dumps([{**GOOD, "category": "horse"}]), "entry 0 has unknown category 'horse'"),
    (json.dumps([{**GOOD, "image_id": 12}]), "entry 0 has image_id 12"),
    ('[{"image_id": "a", "category": "cat", "score": NaN, "bbox": [1, 2, 3, 4]}]', "entry 0 has score nan"),
    ('[{"image_id": "a", "category": "cat", "score": 1, "bbox": [1, 2, Infinity, 4]}]',
     "entry 0 has bbox .* non-finite"),
    (json.dumps([{**GOOD, "score": "high"}]), "entry 0 has score 'high'"),
    (json.dumps([{**GOOD, "score": True}]), "entry 0 has score True"),
    (json.dumps([{**GOOD, "bbox": [1, 2, 3]}]), r"entry 0 has bbox \[1, 2, 3\]; a bbox is 4 numbers"),
    (json.dumps([{**GOOD, "bbox": [1, 2, "3", 4]}]), "a bbox is 4 numbers"),
    (json.dumps([{**GOOD, "bbox": [10, 2, 3, 4]}]), "x2 < x1"),
])
def test_malformed_file_raises_data_error_naming_file_and_entry(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as error:
        read_detections(path, CLASSES)
    assert str(error.value).startswith(str(path))
    assert "\n" not in str(error.value)


def test_missing_file_says_how_to_make_one(tmp_path):
    with pytest.raises(DataError, match="not found; run tools/infer.py") as error:
        read_detections(tmp_path / "nope.json", CLASSES)
    assert str(tmp_path / "nope.json") in str(error.value)


def test_non_finite_detections_are_not_written(tmp_path):
    detections = {"a": {"boxes": np.array([[0, 0, np.inf, 1]]), "scores": np.array([0.5]),
                        "labels": np.array([0])}}
    with pytest.raises(DataError, match="'a'.*non-finite"):
        write_detections(tmp_path / "x.json", detections, CLASSES)
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("label", [-1, 2])
def test_labels_that_name_no_class_are_not_written(tmp_path, label):
    """-1 would otherwise be written as the last class, silently."""
    detections = {"a": {"boxes": np.array([[0.0, 0.0, 2.0, 1.0]]), "scores": np.array([0.5]),
                        "labels": np.array([label])}}
    with pytest.raises(ValueError, match=r"'a'.*labels outside 0\.\.1"):
        write_detections(tmp_path / "x.json", detections, CLASSES)
    assert not (tmp_path / "x.json").exists()
