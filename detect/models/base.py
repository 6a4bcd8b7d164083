"""What every detector shares: the output type, the image batching transform and the API.

Detector API (see DESIGN.md):

* training: ``losses = model(images, targets)`` → dict of named scalar losses;
* inference: ``model.predict(images)`` → one :class:`Detections` per image, in that image's
  pixel coordinates, after per-class NMS. Call ``model.eval()`` first: ``predict`` never changes
  the module's mode behind the caller's back.

``images`` is a list of float tensors ``[3, H_i, W_i]`` (RGB in ``[0, 1]``, any sizes) or a
batched tensor ``[B, 3, H, W]``; ``targets`` is one dict per image with ``boxes`` (float[N, 4],
x1 y1 x2 y2 pixels), ``labels`` (int64[N], foreground 0..C-1) and optionally ``difficult``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detect.proposals.selective_search import SelectiveSearchConfig, compute_proposals


class Detections(NamedTuple):
    """Detections of one image.

    Attributes:
        boxes (Tensor[N, 4]): x1, y1, x2, y2 in the image's pixels.
        scores (Tensor[N]): confidence, descending.
        labels (Tensor[N] int64): foreground class indices 0..C-1.
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor

    def to(self, device: torch.device | str) -> "Detections":
        return Detections(self.boxes.to(device), self.scores.to(device), self.labels.to(device))


@dataclass
class ImageBatch:
    """Images resized for the network and padded into one tensor.

    Attributes:
        tensors (Tensor[B, 3, H, W]): the padded batch.
        image_sizes: ``(height, width)`` of each resized image inside the padding.
        original_sizes: ``(height, width)`` of each input image.
    """

    tensors: Tensor
    image_sizes: list[tuple[int, int]]
    original_sizes: list[tuple[int, int]]


class ImageTransform(nn.Module):
    """Resize images to the network's input size and pad them into a batch; map boxes both ways.

    Args:
        input_size: target length of the longest side (``keep_aspect``), or of both sides.
        size_divisible: the padded batch's height and width are multiples of this.
        keep_aspect: keep the aspect ratio (R-CNN family) or stretch to a square (YOLO).
    """

    def __init__(self, input_size: int, size_divisible: int = 32, keep_aspect: bool = True):
        super().__init__()
        self.input_size = input_size
        self.size_divisible = size_divisible
        self.keep_aspect = keep_aspect

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        if not self.keep_aspect:
            return self.input_size, self.input_size
        scale = self.input_size / max(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))

    def forward(self, images: Sequence[Tensor] | Tensor,
                targets: Sequence[dict] | None = None) -> tuple[ImageBatch, list[dict] | None]:
        """Resize and pad; scale target boxes to the resized images."""
        resized, sizes, originals, new_targets = [], [], [], None if targets is None else []
        for index, image in enumerate(images):
            if image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(f"image {index} has shape {tuple(image.shape)}; expected [3, H, W] RGB")
            height, width = int(image.shape[-2]), int(image.shape[-1])   # constants when traced for export
            new_height, new_width = self.target_size(height, width)
            if (new_height, new_width) != (height, width):
                image = F.interpolate(image[None], size=(new_height, new_width), mode="bilinear",
                                      align_corners=False)[0]
            resized.append(image)
            sizes.append((new_height, new_width))
            originals.append((int(height), int(width)))
            if targets is not None:
                scale = torch.tensor([new_width / width, new_height / height] * 2, device=image.device)
                target = dict(targets[index])
                target["boxes"] = target["boxes"].to(image.device, torch.float32) * scale
                target["labels"] = target["labels"].to(image.device)
                if "proposals" in target:
                    target["proposals"] = target["proposals"].to(image.device, torch.float32) * scale
                new_targets.append(target)
        max_height = -(-max(h for h, _ in sizes) // self.size_divisible) * self.size_divisible
        max_width = -(-max(w for _, w in sizes) // self.size_divisible) * self.size_divisible
        batch = torch.stack([F.pad(image, (0, max_width - width, 0, max_height - height))
                             for image, (height, width) in zip(resized, sizes)])
        return ImageBatch(batch, sizes, originals), new_targets

    @staticmethod
    def resize_boxes(boxes: Sequence[Tensor], batch: ImageBatch) -> list[Tensor]:
        """Map boxes (one Tensor[K_i, 4] per image) from the original images' pixels to the network's."""
        mapped = []
        for image_boxes, (height, width), (orig_height, orig_width) in zip(boxes, batch.image_sizes, batch.original_sizes):
            scale = torch.tensor([width / orig_width, height / orig_height] * 2, device=batch.tensors.device)
            mapped.append(image_boxes.to(batch.tensors.device, torch.float32) * scale)
        return mapped

    @staticmethod
    def postprocess(detections: list[Detections], batch: ImageBatch) -> list[Detections]:
        """Map boxes from the resized images back to the original images' pixels."""
        mapped = []
        for det, (height, width), (orig_height, orig_width) in zip(detections, batch.image_sizes, batch.original_sizes):
            scale = det.boxes.new_tensor([orig_width / width, orig_height / height] * 2)
            mapped.append(Detections(det.boxes * scale, det.scores, det.labels))
        return mapped


class Detector(nn.Module):
    """Base class: subclasses implement :meth:`losses` and :meth:`detect` on an :class:`ImageBatch`.

    Attributes:
        num_classes: number of foreground classes (background is internal to the detector).
        transform: the :class:`ImageTransform` turning user images into network batches.
    """

    num_classes: int
    transform: ImageTransform
    #: True for detectors that classify external region proposals (R-CNN, Fast R-CNN): their
    #: ``detect(batch, proposals)`` takes them, ``predict(images, proposals)`` accepts cached ones
    #: (else runs selective search with ``proposal_config``), and the engine gives datasets their
    #: cached proposals.
    uses_proposals: bool = False
    proposal_config: SelectiveSearchConfig | None = None

    def forward(self, images: Sequence[Tensor] | Tensor, targets: Sequence[dict]) -> dict[str, Tensor]:
        """Training step: named scalar losses for ``images`` and their ``targets``."""
        if targets is None or len(targets) != len(images):
            raise ValueError("training needs one target dict per image; use predict() for inference")
        batch, targets = self.transform(images, targets)
        return self.losses(batch, targets)

    @torch.no_grad()
    def predict(self, images: Sequence[Tensor] | Tensor,
                proposals: Sequence[Tensor] | None = None) -> list[Detections]:
        """Detect objects; boxes are in each input image's pixel coordinates.

        ``proposals`` (one Tensor[K_i, 4] per image, original pixels) are for detectors that
        use them (:attr:`uses_proposals`); without them such detectors run selective search now.
        """
        if self.training:
            raise RuntimeError("call model.eval() before predict(): training mode would update "
                               "BatchNorm statistics and use training-time proposal settings")
        if proposals is not None and not self.uses_proposals:
            raise ValueError(f"{type(self).__name__} makes its own proposals; call predict(images)")
        if len(images) == 0:
            return []
        batch, _ = self.transform(images)
        if not self.uses_proposals:
            return self.transform.postprocess(self.detect(batch), batch)
        if proposals is None:
            proposals = compute_proposals(images, self.proposal_config)
        if len(proposals) != len(images):
            raise ValueError(f"got {len(proposals)} proposal sets for {len(images)} images")
        return self.transform.postprocess(self.detect(batch, self.transform.resize_boxes(proposals, batch)), batch)

    def losses(self, batch: ImageBatch, targets: list[dict]) -> dict[str, Tensor]:
        raise NotImplementedError

    def detect(self, batch: ImageBatch, *proposals: list[Tensor]) -> list[Detections]:
        raise NotImplementedError


def smooth_l1(input: Tensor, target: Tensor, sigma: float) -> Tensor:
    """Sum of the smooth-L1 loss with the papers' σ parametrisation (Fast R-CNN eq. 3).

    ``0.5 (σ x)²`` if ``|x| < 1/σ²`` else ``|x| − 0.5/σ²``: σ = 1 for the RoI head, σ = 3 for the RPN.
    """
    return F.smooth_l1_loss(input, target, beta=1.0 / sigma ** 2, reduction="sum")


def region_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean softmax loss over sampled regions; zero (still part of the graph) when a batch sampled
    none, where the mean of nothing would be NaN and stop the training run."""
    if labels.numel() == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels)
