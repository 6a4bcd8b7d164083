"""Detectors and their registry: ``build_detector(config.model, num_classes)``.

A new detector is one module here with a ``build_<name>(model_config, num_classes)`` function,
registered in :data:`DETECTORS`.
"""

from __future__ import annotations

from typing import Callable

from detect.config import ModelConfig
from detect.errors import ConfigError
from detect.models.base import Detections, Detector

__all__ = ["DETECTORS", "Detections", "Detector", "build_detector"]


def _faster_rcnn(config: ModelConfig, num_classes: int) -> Detector:
    from detect.models.faster_rcnn import build_faster_rcnn
    return build_faster_rcnn(config, num_classes)


def _torchvision_faster_rcnn(config: ModelConfig, num_classes: int) -> Detector:
    from detect.models.torchvision_reference import build_torchvision_faster_rcnn
    return build_torchvision_faster_rcnn(config, num_classes)


def _rcnn(config: ModelConfig, num_classes: int) -> Detector:
    from detect.models.rcnn import build_rcnn
    return build_rcnn(config, num_classes)


def _fast_rcnn(config: ModelConfig, num_classes: int) -> Detector:
    from detect.models.fast_rcnn import build_fast_rcnn
    return build_fast_rcnn(config, num_classes)


def _yolo(config: ModelConfig, num_classes: int) -> Detector:
    from detect.models.yolo import build_yolo
    return build_yolo(config, num_classes)


#: Detector name → builder ``(model_config, num_classes) -> Detector``.
DETECTORS: dict[str, Callable[[ModelConfig, int], Detector]] = {
    "rcnn": _rcnn,
    "fast_rcnn": _fast_rcnn,
    "faster_rcnn": _faster_rcnn,
    "yolo": _yolo,
    # torchvision's implementation from the same config: the reference in comparisons.
    "torchvision_faster_rcnn": _torchvision_faster_rcnn,
}


def build_detector(config: ModelConfig, num_classes: int) -> Detector:
    """Build the detector named by ``config.name`` for ``num_classes`` foreground classes."""
    if config.name not in DETECTORS:
        raise ConfigError(f"unknown detector {config.name!r} (model.name); choose one of {', '.join(DETECTORS)}")
    if num_classes < 1:
        raise ConfigError(f"a detector needs at least one foreground class, got {num_classes}")
    return DETECTORS[config.name](config, num_classes)
