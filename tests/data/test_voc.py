"""PASCAL VOC reader: box convention, class handling, negatives and every validation failure."""

from pathlib import Path

import numpy as np
import pytest

from detect.data.voc import load_voc, parse_voc_xml, voc_xml_text
from detect.errors import DataError

from tests.conftest import TINY_CLASSES


def test_loads_with_voc_to_continuous_conversion(tiny_voc):
    dataset = load_voc(tiny_voc, "trainval")
    assert dataset.class_names == TINY_CLASSES          # discovered and sorted
    sample = dataset.load(0)
    assert sample["image"].shape == (48, 64, 3) and sample["image"].dtype == np.uint8
    # written as continuous [4, 4, 20, 20] → XML (5, 5, 20, 20) → read back as continuous
    np.testing.assert_array_equal(sample["boxes"], [[4, 4, 20, 20], [30, 10, 60, 40]])
    assert sample["labels"].tolist() == [0, 1]
    assert dataset.load(1)["difficult"].tolist() == [False, True]
    negative = dataset.load(2)
    assert negative["boxes"].shape == (0, 4) and negative["labels"].shape == (0,)
    stats = dataset.statistics()
    assert stats == {"images": 3, "objects": 4, "difficult": 1, "negatives": 1,
                     "per_class": {"circle": 2, "square": 2}}


def test_xml_round_trip_uses_one_based_inclusive_pixels():
    text = voc_xml_text("x.jpg", 10, 10, ["a"], np.array([[0.0, 1.0, 10.0, 9.0]]), [False])
    assert "<xmin>1</xmin>" in text and "<ymin>2</ymin>" in text and "<xmax>10</xmax>" in text


def test_given_class_list_sets_label_order(tiny_voc):
    dataset = load_voc(tiny_voc, "test", class_names=["square", "circle", "triangle"])
    assert dataset.load(0)["labels"].tolist() == [1, 0]
    assert dataset.num_classes == 3


def _edit(root: Path, image_id: str, old: str, new: str) -> Path:
    path = root / "Annotations" / f"{image_id}.xml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 2 if old == "bndbox>" else 1))
    return path


@pytest.mark.parametrize("old, new, message", [
    ("<xmax>20</xmax>", "<xmax>200</xmax>", "outside the 64x48 image"),
    ("<xmax>20</xmax>", "<xmax>4</xmax>", "no area"),
    ("<xmax>20</xmax>", "<xmax>abc</xmax>", "not a number"),
    ("<name>circle</name>", "<name>hexagon</name>", "unknown class"),
    ("<width>64</width>", "<width>65</width>", "annotation says the image is 65x48"),
    ("</annotation>", "</annotatio>", "malformed XML"),
    ("bndbox>", "bbox>", "no <bndbox>"),
])
def test_invalid_annotation_names_file_and_object(tiny_voc, old, new, message):
    path = _edit(tiny_voc, "a", old, new)
    with pytest.raises(DataError, match=message) as info:
        load_voc(tiny_voc, "trainval", class_names=TINY_CLASSES)
    text = str(info.value)
    assert str(path) in text and "\n" not in text


def test_image_problems(tiny_voc):
    (tiny_voc / "JPEGImages" / "b.jpg").unlink()
    with pytest.raises(DataError, match="image file not found") as info:
        load_voc(tiny_voc, "trainval")
    assert "b.jpg" in str(info.value)
    (tiny_voc / "JPEGImages" / "b.jpg").write_text("this is not an image")
    with pytest.raises(DataError, match="not a readable image"):
        load_voc(tiny_voc, "trainval")


def test_truncated_image_fails_on_load(tiny_voc):
    path = tiny_voc / "JPEGImages" / "a.jpg"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    dataset = load_voc(tiny_voc, "test")    # the header is intact
    with pytest.raises(DataError, match="corrupt or truncated") as info:
        dataset.load(0)
    assert str(path) in str(info.value)


def test_missing_split_lists_available(tiny_voc):
    with pytest.raises(DataError, match="available splits: test, trainval"):
        load_voc(tiny_voc, "val")
    with pytest.raises(DataError, match="dataset folder not found"):
        load_voc(tiny_voc / "nope", "val")


def test_skip_policy_drops_and_counts(tiny_voc, caplog):
    _edit(tiny_voc, "a", "<xmax>20</xmax>", "<xmax>200</xmax>")      # one bad object
    (tiny_voc / "JPEGImages" / "c.jpg").write_text("garbage")         # one bad image
    dataset = load_voc(tiny_voc, "trainval", class_names=TINY_CLASSES, on_invalid="skip")
    assert len(dataset) == 2
    assert dataset.load(0)["labels"].tolist() == [1]
    assert "skipped 1 invalid image(s) and 1 invalid object(s)" in caplog.text


def test_parse_reports_missing_tags(tmp_path):
    path = tmp_path / "x.xml"
    path.write_text("<annotation><object><bndbox><xmin>1</xmin></bndbox></object></annotation>")
    with pytest.raises(DataError, match="object 0 has no <name>"):
        parse_voc_xml(path)
    path.write_text("<notvoc/>")
    with pytest.raises(DataError, match="expected <annotation>"):
        parse_voc_xml(path)


def test_skip_policy_applies_to_class_discovery(tiny_voc):
    (tiny_voc / "Annotations" / "c.xml").write_text("<annotation><object>")   # malformed: not even XML
    with pytest.raises(DataError, match="c.xml"):
        load_voc(tiny_voc, "trainval")
    dataset = load_voc(tiny_voc, "trainval", on_invalid="skip")
    assert dataset.class_names == TINY_CLASSES and len(dataset) == 2


def test_difficult_objects_are_trained_on_unless_configured_not_to_and_always_kept_for_evaluation(tiny_voc):
    from detect.config import DataConfig
    from detect.data.build import build_datasets

    def image_b(**options):   # b: a square and a difficult circle
        train, test = build_datasets(DataConfig(dataset=str(tiny_voc), test_split="trainval", num_workers=0, **options))
        trained, scored = ({a.image_id: a for a in split.annotations}["b"] for split in (train, test))
        assert scored.difficult.tolist() == [False, True]          # evaluation ignores it, either way
        return trained.difficult.tolist()

    assert image_b() == [False, True]
    assert image_b(train_difficult=False) == [False]
