"""Built-in synthetic shapes dataset: determinism, VOC round trip, annotation rules, idempotence."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from detect.cli import run

from detect.data import shape_drawing
from detect.data.synthetic import (SHAPE_CLASSES, SyntheticConfig, ensure_dataset, generate_dataset,
                                   generate_image, image_rng, is_complete, main)
from detect.data.voc import load_voc
from detect.errors import ConfigError, OutputError

SMALL = SyntheticConfig(image_size=96, num_trainval=12, num_test=6, seed=3)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("shapes") / "shapes", SMALL, progress=False)


@pytest.fixture(scope="module")
def drawn() -> list:
    """240 default-size images drawn in memory: enough objects for statistics (about 1000)."""
    config = SyntheticConfig()
    return [generate_image(image_rng(config, "trainval", i), config) for i in range(240)]


# --- determinism ----------------------------------------------------------------------------

def test_same_seed_gives_identical_files_whatever_the_worker_count(tmp_path, small_dataset):
    # 70 images: above the in-process threshold, so workers=2 really uses a process pool.
    config = SyntheticConfig(image_size=64, num_trainval=40, num_test=30, seed=5)
    one = _files(generate_dataset(tmp_path / "one", config, progress=False, workers=1))
    two = _files(generate_dataset(tmp_path / "two", config, progress=False, workers=2))
    assert one.keys() == two.keys() and len(one) == 2 * 70 + 4   # jpg + xml, 2 splits, SOURCE, json
    assert [k for k in one if one[k] != two[k] and not k.startswith("SOURCE")] == []


def test_image_depends_only_on_seed_split_and_index():
    a = generate_image(image_rng(SMALL, "trainval", 4), SMALL)
    b = generate_image(image_rng(SMALL, "trainval", 4), SMALL)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    for other in (image_rng(SMALL, "test", 4), image_rng(SMALL, "trainval", 5),
                  image_rng(SyntheticConfig(seed=SMALL.seed + 1), "trainval", 4)):
        assert not np.array_equal(generate_image(other, SMALL).image, a.image)


def test_different_seed_gives_different_annotations(tmp_path, small_dataset):
    other = generate_dataset(tmp_path / "other", dataclasses.replace(SMALL, seed=4), progress=False)
    first, second = _files(small_dataset), _files(other)
    differing = [k for k in first if k.startswith("Annotations") and first[k] != second[k]]
    assert len(differing) >= 15   # of 18


# --- the files on disk ----------------------------------------------------------------------

def test_voc_reader_loads_exactly_the_generated_boxes(small_dataset):
    for split, size in (("trainval", 12), ("test", 6)):
        dataset = load_voc(small_dataset, split, list(SHAPE_CLASSES))   # on_invalid="error"
        assert len(dataset) == size
        for index, annotation in enumerate(dataset.annotations):
            assert (annotation.width, annotation.height) == (96, 96)
            truth = generate_image(image_rng(SMALL, split, index), SMALL)
            np.testing.assert_array_equal(annotation.boxes, truth.boxes)   # integer boxes survive VOC's +1
            np.testing.assert_array_equal(annotation.labels, truth.labels)
            np.testing.assert_array_equal(annotation.difficult, truth.difficult)
            if index < 2:   # the JPEG holds the drawn RGB pixels (not BGR), up to compression
                stored = dataset.load(index)["image"].astype(int)
                error, swapped = (np.abs(stored - truth.image).mean(), np.abs(stored[..., ::-1] - truth.image).mean())
                assert error < 10 and error < swapped / 3


def test_every_box_lies_inside_the_image_with_positive_area(drawn):
    boxes = np.concatenate([d.boxes for d in drawn])
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 256).all()
    assert (boxes[:, 2:] > boxes[:, :2]).all()
    assert (boxes == np.round(boxes)).all()


# --- annotation rules -----------------------------------------------------------------------

def test_box_is_the_tight_box_of_the_visible_mask(drawn):
    for sample in drawn[:60]:
        assert not (sample.masks.sum(0) > 1).any()    # a pixel is visible for one object at most
        for box, mask in zip(sample.boxes, sample.masks):
            x1, y1, x2, y2 = box.astype(int)
            inside = mask[y1:y2, x1:x2]
            assert inside.sum() == mask.sum()                          # nothing outside the box
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()


def test_masks_are_exactly_the_painted_pixels(monkeypatch):
    # On a black, noiseless background every non-black pixel must belong to a visible mask and
    # vice versa: the boxes then bound what a detector actually sees.
    monkeypatch.setattr(shape_drawing, "_background",
                        lambda rng, config: np.zeros((config.image_size,) * 2 + (3,), np.float32))
    monkeypatch.setattr(shape_drawing, "_finish", lambda canvas, rng: np.round(canvas).astype(np.uint8))
    config = SyntheticConfig(image_size=128, min_objects=6)
    for index in range(20):
        sample = generate_image(image_rng(config, "trainval", index), config)
        painted = sample.image.any(-1)
        np.testing.assert_array_equal(painted, sample.masks.any(0))


def test_difficult_truncated_and_occluded_objects_occur(drawn):
    difficult = np.concatenate([d.difficult for d in drawn])
    truncated = np.concatenate([d.truncated for d in drawn])
    boxes = np.concatenate([d.boxes for d in drawn])
    short_side = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    assert 0.03 < difficult.mean() < 0.3
    assert 0.1 < truncated.mean() < 0.6
    assert difficult[short_side < 10].all()             # tiny → difficult
    # some difficult objects are large but mostly hidden (occluded or cut by the border)
    assert (difficult & (short_side >= 20)).sum() >= 5
    # sizes span the promised range: from under 10 px to over half the image
    assert short_side.min() < 10 and boxes[:, 2:].max(0).min() > 128 and (boxes[:, 2] - boxes[:, 0]).max() > 128


def test_no_object_is_left_nearly_invisible(drawn):
    config = SyntheticConfig()
    for sample in drawn:
        assert (sample.masks.sum((1, 2)) >= config.drop_min_pixels).all()


def test_negatives(drawn):
    counts = np.array([len(d.labels) for d in drawn])
    assert 1 <= (counts == 0).sum() <= 20               # about 3 % of 240
    assert counts.max() == 8
    always = SyntheticConfig(image_size=64, negative_fraction=1.0)
    assert all(len(generate_image(image_rng(always, "test", i), always).labels) == 0 for i in range(5))
    half = SyntheticConfig(image_size=96, negative_fraction=0.5)
    counts = [len(generate_image(image_rng(half, "test", i), half).labels) for i in range(30)]
    assert 5 <= counts.count(0) <= 25


def test_classes_are_balanced(drawn):
    labels = np.concatenate([d.labels for d in drawn])
    observed = np.bincount(labels, minlength=len(SHAPE_CLASSES))
    expected = len(labels) / len(SHAPE_CLASSES)
    chi_square = ((observed - expected) ** 2 / expected).sum()
    assert chi_square < 24.3, observed                  # 7 degrees of freedom, p = 0.001


def test_colour_does_not_reveal_the_class(drawn):
    # Nearest class-mean colour, fitted on half of the objects, must not beat chance on the other half.
    features, labels = [], []
    for sample in drawn:
        for label, mask in zip(sample.labels, sample.masks):
            features.append(sample.image[mask].mean(0))
            labels.append(label)
    features, labels = np.array(features), np.array(labels)
    fit, held_out = np.arange(len(labels)) % 2 == 0, np.arange(len(labels)) % 2 == 1
    centroids = np.stack([features[fit & (labels == c)].mean(0) for c in range(len(SHAPE_CLASSES))])
    predicted = np.linalg.norm(features[held_out][:, None] - centroids[None], axis=2).argmin(1)
    accuracy = (predicted == labels[held_out]).mean()
    assert accuracy < 0.2, accuracy                     # chance is 1/8
    spread = np.ptp(centroids, axis=0)                  # per-channel spread of class mean colours
    assert (spread < 30).all(), centroids


# --- idempotence and safety -----------------------------------------------------------------

def test_ensure_dataset_skips_equal_config_and_regenerates_otherwise(tmp_path):
    config = SyntheticConfig(image_size=64, num_trainval=5, num_test=3)
    root = ensure_dataset(tmp_path / "shapes", config, progress=False)
    sentinel = root / "JPEGImages" / "sentinel.txt"     # removed whenever the dataset is regenerated

    sentinel.write_text("x")
    ensure_dataset(root, config, progress=False)
    assert sentinel.exists()                            # same config: untouched

    changed = SyntheticConfig(image_size=64, num_trainval=5, num_test=3, seed=1)
    assert not is_complete(root, changed)
    ensure_dataset(root, changed, progress=False)
    assert not sentinel.exists() and is_complete(root, changed) and not is_complete(root, config)

    for damage in (lambda: (root / "dataset.json").unlink(),                 # interrupted run
                   lambda: (root / "JPEGImages" / "test_000002.jpg").unlink()):   # lost file
        sentinel.write_text("x")
        damage()
        assert not is_complete(root, changed)
        ensure_dataset(root, changed, progress=False)
        assert not sentinel.exists() and is_complete(root, changed)


def test_refuses_to_overwrite_a_folder_it_did_not_write(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="not written by detect.data.synthetic") as info:
        generate_dataset(root, SyntheticConfig(image_size=64, num_trainval=1, num_test=1), progress=False)
    assert str(root) in str(info.value)
    assert (root / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("change, message", [
    ({"min_objects": 0}, "min_objects"),
    ({"min_size": 0.7, "max_size": 0.5}, "min_size"),
    ({"image_size": 8}, "image_size"),
])
def test_invalid_config_says_what_is_wrong(change, message):
    with pytest.raises(ConfigError, match=message):
        SyntheticConfig(**change)


def test_command_line_generates_and_prints_statistics(tmp_path, capsys):
    root = tmp_path / "cli"
    assert main(["--root", str(root), "--trainval", "4", "--test", "2", "--image-size", "64", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert '"images": 4' in out and '"images": 2' in out
    assert is_complete(root, SyntheticConfig(image_size=64, num_trainval=4, num_test=2, seed=2))
    (root / "stray.txt").write_text("x")
    (root / "SOURCE.txt").unlink()
    (root / "dataset.json").unlink()
    assert run(main, ["--root", str(root), "--trainval", "4", "--test", "2", "--image-size", "64"]) == 2
    assert "not written by" in capsys.readouterr().err
