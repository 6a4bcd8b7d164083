"""The detector contract every detector's tests check (DESIGN.md, "Detector")."""

from __future__ import annotations

import torch

from detect.models.base import Detections


def assert_valid_detector(model: torch.nn.Module, images: list[torch.Tensor], targets: list[dict],
                          num_classes: int) -> None:
    """Training returns finite named scalar losses with gradients; eval-mode predict returns one
    :class:`Detections` per image inside that image, sorted by score, labels in ``0..C-1``;
    predict refuses to run in training mode."""
    model.train()
    losses = model(images, targets)
    assert isinstance(losses, dict) and losses
    for name, value in losses.items():
        assert value.dim() == 0, f"loss {name} is not a scalar"
        assert torch.isfinite(value), f"loss {name} is {value}"
    assert sum(losses.values()).requires_grad
    try:
        model.predict(images)
    except RuntimeError as error:
        assert "eval()" in str(error)
    else:
        raise AssertionError("predict() ran in training mode")
    model.eval()
    outputs = model.predict(images)
    assert len(outputs) == len(images)
    for image, detections in zip(images, outputs):
        assert isinstance(detections, Detections)
        boxes, scores, labels = detections
        count = boxes.shape[0]
        assert boxes.shape == (count, 4) and scores.shape == (count,) and labels.shape == (count,)
        assert labels.dtype == torch.int64 and boxes.dtype.is_floating_point
        if count:
            height, width = image.shape[-2:]
            assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
            assert (boxes[:, 2] <= width + 1e-3).all() and (boxes[:, 3] <= height + 1e-3).all()
            assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
            assert (scores[:-1] >= scores[1:]).all(), "detections must be sorted by score"
            assert labels.min() >= 0 and labels.max() < num_classes
