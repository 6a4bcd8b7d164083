"""Tiny data for detector tests: synthetic images drawn in memory."""

from __future__ import annotations

import numpy as np
import torch

from detect.data.shape_drawing import generate_image
from detect.data.synthetic import SyntheticConfig
from detect.data.transforms import image_to_tensor


def tiny_batch(count: int = 2, size: int = 128, seed: int = 0, max_objects: int = 3) -> tuple[list[torch.Tensor], list[dict]]:
    """``count`` images with 1..max_objects clearly visible shapes of 15–45 % of the side."""
    config = SyntheticConfig(image_size=size, min_objects=1, max_objects=max_objects, negative_fraction=0.0,
                             min_size=0.15, max_size=0.45, truncation_margin=0.0, max_distractors=2)
    images, targets = [], []
    for index in range(count):
        sample = generate_image(np.random.default_rng([seed, index]), config)
        images.append(image_to_tensor(sample.image))
        targets.append({"boxes": torch.as_tensor(sample.boxes), "labels": torch.as_tensor(sample.labels),
                        "difficult": torch.as_tensor(sample.difficult)})
    return images, targets


def negative_target() -> dict:
    return {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64),
            "difficult": torch.zeros((0,), dtype=torch.bool)}


def overfit(model: torch.nn.Module, images: list[torch.Tensor], targets: list[dict], iterations: int,
            lr: float) -> list[float]:
    """Plain SGD on one batch; returns the total loss per iteration."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9)
    model.train()
    history = []
    for _ in range(iterations):
        losses = model(images, targets)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        history.append(float(total.detach()))
    return history


def found_every_object(model: torch.nn.Module, images: list[torch.Tensor], targets: list[dict],
                       iou_threshold: float = 0.7, score_threshold: float = 0.3) -> bool:
    """True if every ground-truth box has a detection of its class with IoU > threshold."""
    from detect.boxes import box_iou

    model.eval()
    for detections, target in zip(model.predict(images), targets):
        keep = detections.scores >= score_threshold
        boxes, labels = detections.boxes[keep], detections.labels[keep]
        iou = box_iou(target["boxes"], boxes)
        same_class = target["labels"][:, None] == labels[None, :]
        if not ((iou > iou_threshold) & same_class).any(dim=1).all():
            return False
    return True


def save_weights_with_live_batchnorm(network: torch.nn.Module, path, seed: int = 0) -> torch.nn.Module:
    """Save ``network``'s state dict with random BatchNorm statistics and affine terms (the shared
    MobileNetV2 file has them folded to 1 and 0, which would hide a wrong BatchNorm fold); return
    ``network`` holding them, in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    state = network.state_dict()
    for key, value in state.items():
        if key.endswith(("running_mean", "bias")) and value.dim() == 1:
            state[key] = torch.randn(value.shape, generator=generator) * 0.1
        elif key.endswith(("running_var", "weight")) and value.dim() == 1:
            state[key] = 0.5 + torch.rand(value.shape, generator=generator)
    torch.save(state, path)
    network.load_state_dict(state)
    return network.eval()   # eval-mode BatchNorm: the same affine map as frozen BatchNorm
