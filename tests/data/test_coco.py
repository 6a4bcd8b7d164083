"""COCO reader: same samples as VOC, crowd → difficult, validation failures."""

import json

import numpy as np
import pytest

from detect.data.coco import load_coco
from detect.errors import DataError


def test_loads_coco_into_library_convention(tiny_coco):
    dataset = load_coco(tiny_coco)
    assert dataset.class_names == ["circle", "square"]      # by increasing category id (1, 3)
    sample = dataset.load(0)
    assert sample["image_id"] == "7"
    np.testing.assert_allclose(sample["boxes"], [[10, 5, 30, 20], [0, 0, 5.5, 4]])
    assert sample["labels"].tolist() == [1, 0]
    assert sample["difficult"].tolist() == [False, True]      # iscrowd
    assert dataset.load(1)["boxes"].shape == (0, 4)            # negative image kept
    assert set(dataset.ground_truth()) == {"7", "9"}


def test_keeps_each_object_s_own_area_for_coco_evaluation(tiny_coco):
    """COCO's small / medium / large ranges use the annotation's area (its segment's), not the box's."""
    _rewrite(tiny_coco, lambda c: c["annotations"][0].update(area=123.5))
    dataset = load_coco(tiny_coco)
    area = dataset.ground_truth()["7"]["area"]
    assert area[0] == pytest.approx(123.5) and np.isnan(area[1])      # no area given: the box's is used
    assert dataset.annotations[0].without_difficult().areas.tolist() == [123.5]


def _rewrite(path, mutate):
    content = json.loads(path.read_text())
    mutate(content)
    path.write_text(json.dumps(content))


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["annotations"][0].update(bbox=[10, 5, 100, 15]), "annotation id 1 of image id 7 .* outside the 50x40"),
    (lambda c: c["annotations"][0].update(bbox=[10, 5, 0, 15]), "no area"),
    (lambda c: c["annotations"][0].update(bbox=[10, 5, 15]), "must be 4 numbers"),
    (lambda c: c["annotations"][0].update(category_id=42), "unknown category id 42"),
    (lambda c: c["annotations"][0].update(image_id=42), "not in 'images'"),
    (lambda c: c["images"][0].update(width=51), "annotation says the image is 51x40"),
    (lambda c: c["images"][1].update(id=7), "image id 7 appears twice"),
    (lambda c: c.pop("categories"), "'categories' section"),
    (lambda c: c["images"][0].update(file_name="missing.jpg"), "'missing.jpg' not found in .*data.image_root"),
    (lambda c: c["annotations"][0].update(iscrowd="0"), "iscrowd '0' must be 0 or 1"),
    (lambda c: c["categories"].append({"id": 5, "name": "circle"}), "category #2 \\(id 5\\) has the name 'circle'"),
])
def test_invalid_coco_names_file(tiny_coco, mutate, message):
    _rewrite(tiny_coco, mutate)
    with pytest.raises(DataError, match=message) as info:
        load_coco(tiny_coco)
    assert str(tiny_coco.parent) in str(info.value)


def test_malformed_json(tiny_coco):
    tiny_coco.write_text("{not json")
    with pytest.raises(DataError, match="malformed JSON"):
        load_coco(tiny_coco)


def test_unknown_class_against_given_list(tiny_coco):
    with pytest.raises(DataError, match="unknown class"):
        load_coco(tiny_coco, class_names=["square"])
    assert len(load_coco(tiny_coco, class_names=["square"], on_invalid="skip").load(0)["boxes"]) == 1


def test_coco_test_split_must_name_a_file_not_fall_back_to_the_training_file(tiny_coco):
    from detect.config import DataConfig
    from detect.data.build import build_datasets, load_split, load_test_split
    from detect.errors import ConfigError

    config = DataConfig(dataset=str(tiny_coco), num_workers=0)
    assert len(load_split(config, "whatever")) == 2    # a tool's --data x.json: that file
    with pytest.raises(ConfigError) as info:            # an experiment's test split: never the training file
        build_datasets(config)
    assert str(tiny_coco) in str(info.value) and "data.test_split=" in str(info.value)
    held_out = tiny_coco.parent / "held_out.json"
    held_out.write_text(tiny_coco.read_text())
    assert len(load_test_split(DataConfig(dataset=str(tiny_coco), test_split="held_out.json"))) == 2


def test_coco_own_layout_finds_images_beside_annotations(tmp_path):
    """annotations/instances_val2017.json with val2017/ beside it, as COCO ships; or data.image_root."""
    import cv2

    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    cv2.imwrite(str(root / "val2017" / "x.jpg"), np.zeros((40, 50, 3), np.uint8))
    content = {"images": [{"id": 1, "file_name": "x.jpg", "width": 50, "height": 40}],
               "categories": [{"id": 1, "name": "thing"}],
               "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 10], "iscrowd": 0}]}
    path = root / "annotations" / "instances_val2017.json"
    path.write_text(json.dumps(content))
    assert load_coco(path).annotations[0].image_path == root / "val2017" / "x.jpg"
    elsewhere = tmp_path / "pictures"
    (root / "val2017").rename(elsewhere)
    with pytest.raises(DataError, match="data.image_root"):
        load_coco(path)
    assert len(load_coco(path, image_root=elsewhere)) == 1
