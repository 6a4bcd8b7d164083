"""Shared fixtures: tiny datasets written on the fly (never real data in fast tests)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from detect.data.voc import write_split, write_voc_xml

TINY_CLASSES = ["circle", "square"]


def write_tiny_voc(root: Path, size: tuple[int, int] = (64, 48)) -> Path:
    """Three images (W x H = size): two objects, one object + difficult, and a negative."""
    width, height = size
    layout = {
        "a": [("circle", [4, 4, 20, 20], False), ("square", [30, 10, 60, 40], False)],
        "b": [("square", [0, 0, 64, 48], False), ("circle", [10, 10, 14, 14], True)],
        "c": [],
    }
    rng = np.random.default_rng(0)
    for image_id, objects in layout.items():
        image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "JPEGImages" / f"{image_id}.jpg"), image)
        write_voc_xml(root / "Annotations" / f"{image_id}.xml", f"{image_id}.jpg", width, height,
                      [o[0] for o in objects], np.array([o[1] for o in objects], float).reshape(-1, 4),
                      [o[2] for o in objects])
    write_split(root, "trainval", ["a", "b", "c"])
    write_split(root, "test", ["a"])
    return root


@pytest.fixture
def tiny_voc(tmp_path: Path) -> Path:
    return write_tiny_voc(tmp_path / "voc")


@pytest.fixture
def tiny_coco(tmp_path: Path) -> Path:
    """COCO JSON with two images, one of them a negative, in ``images/``."""
    root = tmp_path / "coco"
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in ("x.jpg", "y.png"):
        cv2.imwrite(str(root / "images" / name), rng.integers(0, 255, (40, 50, 3), dtype=np.uint8))
    content = {
        "images": [{"id": 7, "file_name": "x.jpg", "width": 50, "height": 40},
                   {"id": 9, "file_name": "y.png", "width": 50, "height": 40}],
        "categories": [{"id": 3, "name": "square"}, {"id": 1, "name": "circle"}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 5, 20, 15], "iscrowd": 0},
                        {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 5.5, 4], "iscrowd": 1}],
    }
    (root / "instances.json").write_text(json.dumps(content))
    return root / "instances.json"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A Faster R-CNN checkpoint for the 8 shape classes after one iteration at 64 px (fast, not accurate)."""
    from detect.config import load_config
    from detect.engine.trainer import Trainer

    root = tmp_path_factory.mktemp("checkpoint")
    config = load_config(None, [
        f"data.builtin_root={root / 'shapes'}", "data.builtin.image_size=64", "data.builtin.num_trainval=4",
        "data.builtin.num_test=2", "data.num_workers=0", "data.augmentation.max_size=64", "model.input_size=64",
        "model.anchors.sizes=[8,16,32]", "model.rpn.min_size=1", "model.roi_head.hidden_dim=32",
        "model.roi_head.batch_size_per_image=16", "train.epochs=1", "train.batch_size=2",
        f"train.output_dir={root / 'run'}"])
    Trainer(config, progress=False, tensorboard=False).fit(max_iterations=1)
    return root / "run" / "last.pt"
