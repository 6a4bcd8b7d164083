"""Augmentation keeps boxes valid, drops objects cropped away, and replays exactly from a seed."""

import numpy as np
import torch

from detect.data.transforms import AugmentationConfig, TestTransforms, TrainTransforms, collate


def sample(height=120, width=160):
    rng = np.random.default_rng(0)
    return {"image": rng.integers(0, 255, (height, width, 3), dtype=np.uint8),
            "boxes": np.array([[0, 0, 40, 30], [100, 60, 160, 120], [70, 40, 90, 55]], np.float32),
            "labels": np.array([0, 1, 2]), "difficult": np.array([False, True, False]), "image_id": "x"}


def test_boxes_stay_valid_and_inside_under_heavy_augmentation():
    transforms = TrainTransforms(AugmentationConfig(max_size=128, flip=0.5, crop=1.0, translate=1.0, color=1.0))
    dropped = 0
    for seed in range(60):
        out = transforms(sample(), seed=seed)
        height, width = out["image"].shape[-2:]
        boxes = out["boxes"]
        assert out["image"].dtype == torch.float32 and 0.0 <= out["image"].min() and out["image"].max() <= 1.0
        assert boxes.shape[1] == 4 and len(boxes) == len(out["labels"]) == len(out["difficult"])
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
        assert ((boxes[:, 2] - boxes[:, 0]) >= 2).all() and ((boxes[:, 3] - boxes[:, 1]) >= 2).all()
        # labels and difficult flags travel with their boxes
        assert all((label == 1) == bool(flag) for label, flag in zip(out["labels"].tolist(), out["difficult"].tolist()))
        dropped += 3 - len(boxes)
    assert dropped > 0, "crops never removed an object: the drop rule is not exercised"


def test_resize_to_max_size_scales_boxes():
    transforms = TrainTransforms(AugmentationConfig(max_size=80, flip=0.0, crop=0.0, translate=0.0, color=0.0))
    out = transforms(sample(), seed=0)
    assert tuple(out["image"].shape) == (3, 60, 80)
    torch.testing.assert_close(out["boxes"][0], torch.tensor([0.0, 0.0, 20.0, 15.0]))


def test_same_seed_same_augmentation():
    transforms = TrainTransforms()
    first, second, other = transforms(sample(), seed=7), transforms(sample(), seed=7), transforms(sample(), seed=8)
    assert torch.equal(first["image"], second["image"]) and torch.equal(first["boxes"], second["boxes"])
    assert not torch.equal(first["image"], other["image"])


def test_test_transform_and_collate():
    out = TestTransforms()(sample())
    assert tuple(out["image"].shape) == (3, 120, 160) and out["boxes"].dtype == torch.float32
    images, targets = collate([out, TestTransforms()(sample(50, 60))])
    assert [tuple(i.shape) for i in images] == [(3, 120, 160), (3, 50, 60)]
    assert targets[0]["image_id"] == "x" and "image" not in targets[0]
