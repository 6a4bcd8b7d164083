"""Selective search (OpenCV contrib) and the on-disk proposal cache."""

import dataclasses
import logging
import os

import cv2
import numpy as np
import pytest
import torch

from detect.boxes import box_iou
from detect.config import ProposalConfig
from detect.data.shape_drawing import generate_image
from detect.data.synthetic import SyntheticConfig
from detect.data.voc import load_voc
from detect.errors import ConfigError, DataError
from detect.proposals.cache import ProposalCache, attach_proposals
from detect.proposals.selective_search import SelectiveSearchConfig, selective_search


def test_opencv_contrib_is_installed():
    """The fresh install must give the contrib build, not the headless one albumentations pulls in."""
    assert hasattr(cv2, "ximgproc"), "cv2.ximgproc missing: reinstall opencv-contrib-python-headless last"


def test_finds_clear_shapes_with_valid_unique_boxes():
    config = SyntheticConfig(image_size=128, min_objects=2, max_objects=3, negative_fraction=0.0, min_size=0.2,
                             max_size=0.4, truncation_margin=0.0, max_distractors=0)
    sample = generate_image(np.random.default_rng(5), config)
    boxes = selective_search(sample.image, SelectiveSearchConfig(max_boxes=500, min_size=4))
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and 0 < len(boxes) <= 500
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 128).all() and (boxes[:, 3] <= 128).all()
    assert (np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= 4).all()
    assert len(np.unique(boxes, axis=0)) == len(boxes)
    best = box_iou(torch.as_tensor(sample.boxes), torch.as_tensor(boxes)).max(dim=1).values
    assert (best > 0.7).all(), best


def test_box_cap_keeps_the_first_boxes():
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    every = selective_search(image, SelectiveSearchConfig(max_boxes=2000, min_size=0))
    capped = selective_search(image, SelectiveSearchConfig(max_boxes=10, min_size=0))
    assert np.array_equal(capped, every[:10])


def test_explicit_set_up_reproduces_opencv_fast_mode():
    """The set-up used when texture or segmentations are changed is OpenCV's own for the defaults."""
    image = generate_image(np.random.default_rng(3), SyntheticConfig(image_size=96)).image
    opencv = selective_search(image, SelectiveSearchConfig(min_size=0))
    explicit = selective_search(image, SelectiveSearchConfig(min_size=0, segmentations=3))
    assert len(opencv) > 10 and np.array_equal(opencv, explicit)


def test_lighter_diversification_still_finds_flat_shapes():
    config = SyntheticConfig(image_size=128, min_objects=2, max_objects=3, negative_fraction=0.0, min_size=0.2,
                             max_size=0.4, truncation_margin=0.0, max_distractors=0)
    sample = generate_image(np.random.default_rng(5), config)
    full = selective_search(sample.image, SelectiveSearchConfig())
    light = selective_search(sample.image, SelectiveSearchConfig(texture=False, segmentations=2))
    assert not np.array_equal(full, light)
    assert box_iou(torch.as_tensor(sample.boxes), torch.as_tensor(light)).max(dim=1).values.min() > 0.7


def test_new_knobs_keep_old_cache_keys_at_their_defaults():
    assert "texture" not in SelectiveSearchConfig().cache_params()
    assert SelectiveSearchConfig(texture=False).cache_params()["texture"] is False
    assert SelectiveSearchConfig(segmentations=2).cache_params()["segmentations"] == 2


def test_invalid_parameters_are_config_errors():
    with pytest.raises(ConfigError, match="mode"):
        SelectiveSearchConfig(mode="slow")
    with pytest.raises(ConfigError, match="max_boxes"):
        SelectiveSearchConfig(max_boxes=0)
    with pytest.raises(ConfigError, match="segmentations"):
        SelectiveSearchConfig(segmentations=-1)
    with pytest.raises(ConfigError, match="fast mode"):
        SelectiveSearchConfig(mode="quality", texture=False)


def test_cache_recomputes_only_missing_and_damaged_files(tiny_voc, tmp_path, caplog):
    dataset = load_voc(tiny_voc, "trainval", ["circle", "square"])
    cache = ProposalCache(tmp_path / "cache", "tiny", tiny_voc, SelectiveSearchConfig(max_boxes=50, min_size=2))
    first = cache.ensure(dataset.annotations, workers=1, progress=False)
    assert set(first) == {"a", "b", "c"}
    path = {a.image_id: cache.path(a) for a in dataset.annotations}
    # Each image's file mirrors the image's path under the folder the cache was given.
    assert path["a"] == cache.directory / "JPEGImages" / "a.jpg.npz"
    mtimes = {i: path[i].stat().st_mtime_ns for i in first}
    path["a"].unlink()                                       # deleted
    path["b"].write_bytes(path["b"].read_bytes()[:40])       # truncated
    with caplog.at_level(logging.INFO):
        second = cache.ensure(dataset.annotations, workers=1, progress=False)
    assert "damaged proposal file" in caplog.text and "b.jpg.npz" in caplog.text
    assert "a.jpg.npz: proposal file missing" in caplog.text
    assert "on 2 of 3 images" in caplog.text
    assert path["c"].stat().st_mtime_ns == mtimes["c"]       # untouched
    for image_id in first:
        assert np.array_equal(first[image_id], second[image_id])


def test_cache_files_follow_image_files_not_ids(tiny_voc, tmp_path):
    """Two datasets (say two COCO files numbering their images from 1) that give one id to different
    pictures of one folder: each picture keeps its own boxes, and a picture shared under two ids
    is computed once."""
    dataset = load_voc(tiny_voc, "trainval", ["circle", "square"])
    a, b, c = sorted(dataset.annotations, key=lambda annotation: annotation.image_id)
    cache = ProposalCache(tmp_path / "cache", "tiny", tiny_voc / "JPEGImages",
                          SelectiveSearchConfig(max_boxes=50, min_size=2))
    first = cache.ensure([dataclasses.replace(a, image_id="1"), dataclasses.replace(b, image_id="2")],
                         workers=1, progress=False)
    second = cache.ensure([dataclasses.replace(c, image_id="1"), dataclasses.replace(a, image_id="7")],
                          workers=1, progress=False)
    alone = ProposalCache(tmp_path / "alone", "tiny", tiny_voc / "JPEGImages",
                          SelectiveSearchConfig(max_boxes=50, min_size=2)).ensure([c], workers=1, progress=False)
    assert np.array_equal(second["1"], alone["c"]) and not np.array_equal(second["1"], first["1"])
    assert np.array_equal(second["7"], first["1"])
    assert sorted(p.name for p in cache.directory.glob("*.npz")) == ["a.jpg.npz", "b.jpg.npz", "c.jpg.npz"]


def test_cache_of_a_vanished_image_is_a_data_error(tiny_voc, tmp_path):
    dataset = load_voc(tiny_voc, "trainval", ["circle", "square"])
    cache = ProposalCache(tmp_path / "cache", "tiny", tiny_voc, SelectiveSearchConfig(max_boxes=50, min_size=2))
    cache.ensure(dataset.annotations, workers=1, progress=False)
    (tiny_voc / "JPEGImages" / "b.jpg").unlink()
    with pytest.raises(DataError, match=r"b\.jpg: cannot read the image"):
        cache.ensure(dataset.annotations, workers=1, progress=False)


def test_changed_image_is_recomputed(tiny_voc, tmp_path, caplog):
    dataset = load_voc(tiny_voc, "trainval", ["circle", "square"])
    cache = ProposalCache(tmp_path / "cache", "tiny", tiny_voc, SelectiveSearchConfig(max_boxes=50, min_size=2))
    cache.ensure(dataset.annotations, workers=1, progress=False)
    image = tiny_voc / "JPEGImages" / "c.jpg"
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10 ** 9))
    with caplog.at_level(logging.INFO):
        cache.ensure(dataset.annotations, workers=1, progress=False)
    assert "image changed" in caplog.text and "on 1 of 3 images" in caplog.text


def test_parameters_select_separate_folders(tiny_voc, tmp_path):
    fast = ProposalCache(tmp_path, "tiny", tiny_voc, SelectiveSearchConfig(mode="fast"))
    quality = ProposalCache(tmp_path, "tiny", tiny_voc, SelectiveSearchConfig(mode="quality"))
    assert fast.directory != quality.directory


def test_attach_adds_proposals_to_samples_in_two_workers(tiny_voc, tmp_path):
    dataset = load_voc(tiny_voc, "trainval", ["circle", "square"])
    config = ProposalConfig(selective_search=SelectiveSearchConfig(max_boxes=30, min_size=2),
                            cache_dir=str(tmp_path / "cache"), workers=2)
    attach_proposals(dataset, config, progress=False)
    sample = dataset[0]
    assert sample["proposals"].shape[1] == 4 and 0 < len(sample["proposals"]) <= 30
