"""Selective search (Uijlings et al., 2013), the proposal method of R-CNN and Fast R-CNN.

The algorithm: over-segment the image with the graph-based method of Felzenszwalb and
Huttenlocher, then greedily merge the two most similar neighbouring regions (similarity = a sum
of colour-histogram, texture-histogram, size and fill terms) until one region is left; every
region ever formed gives a box. Diversification runs this over several colour spaces and
segmentation scales (the threshold k of the graph segmentation). The "fast" mode (R-CNN's choice)
runs 2 colour spaces (HSV, Lab) × 3 values of k × 2 similarity combinations; "quality" 5 colour
spaces × 5 values of k × 4 combinations. OpenCV's ``cv2.ximgproc.segmentation`` is the C++
implementation used here.

Two knobs trade the fast mode's diversification for time. ``texture: false`` leaves the texture similarity
(histograms of Gaussian derivatives in 8 directions, the costliest term) out of every combination,
and ``segmentations`` sets how many values of k are used. On the built-in shapes, which are flat
colour, both together run 2.5x faster for recall 0.973 against 0.977 (docs/benchmarks.md).

Boxes come out ordered by the hierarchy (OpenCV ranks them with the paper's randomised
"hierarchy level × random" score), so keeping the first ``max_boxes`` keeps the most promising.
This module returns boxes in the library convention: float ``x1, y1, x2, y2`` in continuous
pixels of the original image.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from dataclasses import asdict, dataclass, fields
from typing import Literal, Sequence

import cv2
import numpy as np
import torch

from detect.errors import ConfigError


#: Parameters added after proposal caches were first written: left out of cache keys at their defaults.
_LATER_KNOBS = ("texture", "segmentations")


@dataclass(frozen=True)
class SelectiveSearchConfig:
    """Selective-search parameters; they are part of the cache key of stored proposals.

    Attributes:
        mode: ``fast`` (R-CNN's setting) or ``quality`` (more strategies, slower, higher recall).
        max_boxes: keep at most this many boxes per image (R-CNN: about 2000).
        min_size: drop boxes with a side shorter than this many pixels (of the original image).
        scale: run on the image resized by this factor (> 1 helps small objects in small images);
            boxes are mapped back to the original pixels.
        base_k, sigma: the graph-based segmentation's scale and smoothing (OpenCV's defaults);
            the segmentations use k = base_k, 2·base_k, 3·base_k, ...
        texture: use the texture similarity (the paper's setting); False drops it, which is
            much faster. Fast mode only.
        segmentations: how many values of k; 0 means the mode's (fast 3, quality 5). Changed in
            the fast mode only.
    """

    mode: Literal["fast", "quality"] = "fast"
    max_boxes: int = 2000
    min_size: float = 4.0
    scale: float = 1.0
    base_k: int = 150
    sigma: float = 0.8
    texture: bool = True
    segmentations: int = 0

    def __post_init__(self):
        checks = [
            (self.mode in ("fast", "quality"), f"mode must be 'fast' or 'quality', got {self.mode!r}"),
            (self.max_boxes >= 1, f"max_boxes must be >= 1, got {self.max_boxes}"),
            (self.min_size >= 0, f"min_size must be >= 0, got {self.min_size}"),
            (self.scale > 0, f"scale must be > 0, got {self.scale}"),
            (self.base_k >= 1, f"base_k must be >= 1, got {self.base_k}"),
            (self.sigma >= 0, f"sigma must be >= 0, got {self.sigma}"),
            (self.segmentations >= 0, f"segmentations must be >= 0 (0: the mode's), got {self.segmentations}"),
            (self.mode == "fast" or (self.texture and self.segmentations == 0),
             "texture and segmentations can only be changed in the fast mode"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"selective search: {message}")

    def describe(self) -> str:
        """A short description for logs: ``fast mode`` or e.g. ``fast mode, no texture, 2 segmentations``."""
        parts = [f"{self.mode} mode"]
        if not self.texture:
            parts.append("no texture")
        if self.segmentations:
            parts.append(f"{self.segmentations} segmentations")
        return ", ".join(parts)

    def cache_params(self) -> dict:
        """The parameters as stored with cached proposals (and in cache keys). The knobs added
        after the first caches were written appear only when set, so those caches stay valid."""
        params = asdict(self)
        for knob in fields(self):
            if knob.name in _LATER_KNOBS and params[knob.name] == knob.default:
                del params[knob.name]
        return params


@functools.cache
def _c_library() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c") or ctypes.util.find_library("msvcrt")
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def _seed_c_random(seed: int) -> None:
    """Seed the C library's ``rand()``, which OpenCV's ranking of the boxes draws from.

    Without it the same image gives the same set of boxes in a different order from run to run,
    and a box cap would keep different boxes. (``cv2.setRNGSeed`` seeds OpenCV's own generator,
    which this code does not use.)
    """
    library = _c_library()
    if library is not None:
        library.srand(ctypes.c_uint(seed))


def selective_search(image: np.ndarray, config: SelectiveSearchConfig = SelectiveSearchConfig()) -> np.ndarray:
    """Proposals for one RGB uint8 image [H, W, 3] → float32[K, 4], ``x1, y1, x2, y2`` pixels.

    Tiny boxes (a side under ``config.min_size``) and exact duplicates are removed, and at most
    ``config.max_boxes`` are kept, in the algorithm's ranking order.
    """
    height, width = image.shape[:2]
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if config.scale != 1.0:
        bgr = cv2.resize(bgr, (max(1, round(width * config.scale)), max(1, round(height * config.scale))),
                         interpolation=cv2.INTER_LINEAR)
    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(bgr)
    if config.texture and config.segmentations == 0:     # OpenCV's own set-up of the two modes
        if config.mode == "fast":
            search.switchToSelectiveSearchFast(config.base_k, config.base_k, config.sigma)
        else:
            search.switchToSelectiveSearchQuality(config.base_k, config.base_k, config.sigma)
    else:
        _diversify(search, bgr, config)
    _seed_c_random(0)
    rects = np.asarray(search.process(), dtype=np.float32).reshape(-1, 4)    # x, y, w, h
    boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1) / config.scale
    boxes = np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)
    sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    boxes = boxes[sides >= max(config.min_size, 1e-3)]
    _, first = np.unique(boxes, axis=0, return_index=True)
    return boxes[np.sort(first)][: config.max_boxes]


def _diversify(search, bgr: np.ndarray, config: SelectiveSearchConfig) -> None:
    """The fast mode's set-up, as OpenCV's ``switchToSelectiveSearchFast`` makes it (HSV and Lab;
    k = base_k, 2·base_k, ...; colour + fill + texture + size, and fill + texture + size), with
    ``config.segmentations`` values of k and without the texture term if ``config.texture`` is off."""
    segmentation = cv2.ximgproc.segmentation
    make = {"colour": segmentation.createSelectiveSearchSegmentationStrategyColor,
            "fill": segmentation.createSelectiveSearchSegmentationStrategyFill,
            "texture": segmentation.createSelectiveSearchSegmentationStrategyTexture,
            "size": segmentation.createSelectiveSearchSegmentationStrategySize}

    def combination(*names: str):     # fresh strategy objects for each combination, as in OpenCV
        terms = [make[name]() for name in names if config.texture or name != "texture"]
        return segmentation.createSelectiveSearchSegmentationStrategyMultiple(*terms)

    search.clearImages()
    search.clearGraphSegmentations()
    search.clearStrategies()
    search.addImage(cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV))
    search.addImage(cv2.cvtColor(bgr, cv2.COLOR_BGR2Lab))
    for level in range(config.segmentations or 3):
        search.addGraphSegmentation(segmentation.createGraphSegmentation(config.sigma, float(config.base_k * (level + 1))))
    search.addStrategy(combination("colour", "fill", "texture", "size"))
    search.addStrategy(combination("fill", "texture", "size"))


def image_tensor_to_uint8(image: torch.Tensor) -> np.ndarray:
    """A float RGB tensor [3, H, W] in [0, 1] → uint8 RGB array [H, W, 3] (for selective search)."""
    return (image.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


def compute_proposals(images: Sequence[torch.Tensor], config: SelectiveSearchConfig) -> list[torch.Tensor]:
    """Selective-search boxes (Tensor[K_i, 4], each image's pixels) for images given as float
    RGB tensors [3, H, W] in [0, 1]."""
    return [torch.from_numpy(selective_search(image_tensor_to_uint8(image), config)).to(image.device)
            for image in images]
