"""Anchor boxes: ``len(sizes) × len(aspect_ratios)`` reference boxes at every feature-map cell.

Faster R-CNN §3.1.1: 3 scales × 3 aspect ratios = 9 anchors per location. An anchor of size
``s`` and aspect ratio ``r = h / w`` has area ``s²``: ``w = s / √r``, ``h = s · √r``. Anchors are
centred where the backbone's cells are, ``(origin + x·stride, origin + y·stride)`` (see
:attr:`detect.backbones.Backbone.cell_origin`; ``origin = stride / 2``, the centre of each
``stride × stride`` block, unless given). Boxes are ``x1, y1, x2, y2`` in input pixels.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn


class AnchorGenerator(nn.Module):
    """Generate anchors for a feature map.

    Args:
        sizes: anchor side lengths in input pixels (√area).
        aspect_ratios: height / width ratios.
        stride: input pixels per feature cell.
        origin: input coordinate of cell 0's centre (default ``stride / 2``).
    """

    def __init__(self, sizes: Sequence[float], aspect_ratios: Sequence[float], stride: int,
                 origin: float | None = None):
        super().__init__()
        if not sizes or not aspect_ratios or min(sizes) <= 0 or min(aspect_ratios) <= 0:
            raise ValueError(f"anchor sizes and aspect ratios must be non-empty and positive, got {sizes}, {aspect_ratios}")
        self.sizes = tuple(float(s) for s in sizes)
        self.aspect_ratios = tuple(float(r) for r in aspect_ratios)
        self.stride = stride
        self.origin = stride / 2 if origin is None else float(origin)
        self.register_buffer("cell_anchors", self._cell_anchors(), persistent=False)

    @property
    def num_anchors_per_location(self) -> int:
        return len(self.sizes) * len(self.aspect_ratios)

    def _cell_anchors(self) -> Tensor:
        """Tensor[A, 4]: anchors centred at the origin, ordered size-major (sizes × ratios)."""
        rows = []
        for size in self.sizes:
            for ratio in self.aspect_ratios:
                width, height = size / math.sqrt(ratio), size * math.sqrt(ratio)
                rows.append([-width / 2, -height / 2, width / 2, height / 2])
        return torch.tensor(rows, dtype=torch.float32)

    def forward(self, feature_height: int, feature_width: int) -> Tensor:
        """Anchors for a ``feature_height × feature_width`` map.

        Returns:
            Tensor[H·W·A, 4]: ordered by row, then column, then anchor — the order in which the
            RPN head's ``[B, A, H, W]`` outputs are flattened after a permute to ``[B, H, W, A]``.
        """
        device = self.cell_anchors.device
        ys = torch.arange(feature_height, device=device, dtype=torch.float32) * self.stride + self.origin
        xs = torch.arange(feature_width, device=device, dtype=torch.float32) * self.stride + self.origin
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        centres = torch.stack((cx, cy, cx, cy), dim=-1).reshape(-1, 1, 4)
        return (centres + self.cell_anchors.view(1, -1, 4)).reshape(-1, 4)
