"""Augmentation pipelines (albumentations) and batch collation.

Pipelines take and return the sample dict of :mod:`detect.data.dataset`; boxes stay in
continuous pixels ``x1, y1, x2, y2`` (albumentations' ``pascal_voc`` format is the same
convention). The output image is a float tensor ``[3, H, W]`` in ``[0, 1]``, RGB; normalisation
to the backbone's statistics happens inside the model, so inference on raw images needs no
pipeline knowledge.

Randomness: :class:`TrainTransforms` accepts a per-sample ``seed`` (the dataset derives it from
its seed, the epoch and the index), so augmentation is identical whatever the number of
loader workers, and an interrupted training resumes with exactly the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np
import torch

from detect.errors import ConfigError

#: Objects with less than this fraction of their area left after cropping are dropped.
MIN_VISIBILITY = 0.3
#: Objects smaller than this (pixels, after augmentation) are dropped.
MIN_BOX_SIDE = 2.0


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """RGB uint8 ``[H, W, 3]`` → float32 tensor ``[3, H, W]`` in ``[0, 1]``."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)


def _targets_to_tensors(sample: dict) -> dict:
    sample["boxes"] = torch.as_tensor(np.asarray(sample["boxes"], np.float32).reshape(-1, 4))
    if "proposals" in sample:
        sample["proposals"] = torch.as_tensor(np.asarray(sample["proposals"], np.float32).reshape(-1, 4))
    sample["labels"] = torch.as_tensor(np.asarray(sample["labels"], np.int64).reshape(-1))
    sample["difficult"] = torch.as_tensor(np.asarray(sample["difficult"], bool).reshape(-1))
    return sample


@dataclass
class AugmentationConfig:
    """Training augmentation settings (probabilities and ranges).

    Attributes:
        max_size: longest image side after resizing (the detector's input size); the resize runs
            first so the augmentations work on small images.
        flip: probability of a horizontal flip.
        crop: probability of a random scale-and-crop (area fraction ``crop_scale``).
        crop_scale: range of the kept area fraction for the random crop.
        translate: probability of a random scale ``scale`` and shift up to ``shift`` of the size.
        scale, shift: affine ranges.
        color: probability of colour jitter (brightness, contrast, saturation ±``jitter``, hue ±0.05).
        jitter: colour jitter strength.
    """

    max_size: int = 256
    flip: float = 0.5
    crop: float = 0.3
    crop_scale: tuple[float, float] = (0.5, 1.0)
    translate: float = 0.3
    scale: tuple[float, float] = (0.75, 1.25)
    shift: float = 0.1
    color: float = 0.5
    jitter: float = 0.3

    def __post_init__(self):
        probabilities = {name: getattr(self, name) for name in ("flip", "crop", "translate", "color")}
        checks = [(self.max_size >= 16, f"max_size must be at least 16, got {self.max_size}")]
        checks += [(0.0 <= value <= 1.0, f"{name} is a probability, in [0, 1]; got {value}")
                   for name, value in probabilities.items()]
        checks += [
            (len(self.crop_scale) == 2 and 0.0 < self.crop_scale[0] <= self.crop_scale[1] <= 1.0,
             f"crop_scale needs 0 < low <= high <= 1, got {list(self.crop_scale)}"),
            (len(self.scale) == 2 and 0.0 < self.scale[0] <= self.scale[1],
             f"scale needs 0 < low <= high, got {list(self.scale)}"),
            (0.0 <= self.shift < 1.0, f"shift must be in [0, 1), got {self.shift}"),
            (0.0 <= self.jitter <= 1.0, f"jitter must be in [0, 1], got {self.jitter}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"invalid augmentation setting: {message}")


class TrainTransforms:
    """Training pipeline: resize → flip → scale/crop → translate → colour jitter → tensor.

    Boxes are kept valid (clipped to the image); objects left with less than
    :data:`MIN_VISIBILITY` of their area or a side below :data:`MIN_BOX_SIDE` pixels are dropped.
    """

    def __init__(self, config: AugmentationConfig | None = None):
        self.config = config = config or AugmentationConfig()
        self.pipeline = A.Compose(
            [
                A.LongestMaxSize(max_size=config.max_size, interpolation=cv2.INTER_AREA),
                A.HorizontalFlip(p=config.flip),
                A.OneOf([A.RandomResizedCrop(size=(config.max_size, config.max_size),
                                             scale=config.crop_scale, ratio=(0.75, 1.333))], p=config.crop),
                A.Affine(scale=config.scale, translate_percent=(-config.shift, config.shift),
                         border_mode=cv2.BORDER_CONSTANT, fill=114, p=config.translate),
                A.ColorJitter(brightness=config.jitter, contrast=config.jitter, saturation=config.jitter,
                              hue=0.05, p=config.color),
            ],
            bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels", "difficult", "is_proposal"],
                                     min_visibility=MIN_VISIBILITY, min_width=MIN_BOX_SIDE,
                                     min_height=MIN_BOX_SIDE, clip=True),
            seed=0,
        )

    def __call__(self, sample: dict, seed: int | None = None) -> dict:
        """Augment one sample; region proposals, if the sample has them, move with the boxes."""
        if seed is not None:
            self.pipeline.set_random_seed(seed)
        boxes = np.asarray(sample["boxes"], np.float32).reshape(-1, 4)
        labels, difficult = np.asarray(sample["labels"]), np.asarray(sample["difficult"])
        proposals = np.asarray(sample.get("proposals", np.zeros((0, 4))), np.float32).reshape(-1, 4)
        out = self.pipeline(image=sample["image"], bboxes=np.concatenate([boxes, proposals]),
                            labels=np.concatenate([labels, np.zeros(len(proposals), labels.dtype)]),
                            difficult=np.concatenate([difficult, np.zeros(len(proposals), bool)]),
                            is_proposal=np.arange(len(boxes) + len(proposals)) >= len(boxes))
        is_proposal = np.asarray(out["is_proposal"], bool)
        kept = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
        result = {"image": image_to_tensor(out["image"]), "boxes": kept[~is_proposal],
                  "labels": np.asarray(out["labels"])[~is_proposal],
                  "difficult": np.asarray(out["difficult"], bool)[~is_proposal], "image_id": sample["image_id"]}
        if "proposals" in sample:
            result["proposals"] = kept[is_proposal]
        return _targets_to_tensors(result)


class TestTransforms:
    """Evaluation pipeline: convert to a tensor only; the model resizes and maps boxes back."""

    def __call__(self, sample: dict, seed: int | None = None) -> dict:
        result = dict(sample, image=image_to_tensor(sample["image"]))
        return _targets_to_tensors(result)


def collate(samples: list[dict]) -> tuple[list[torch.Tensor], list[dict]]:
    """Batch samples with different sizes and box counts.

    Returns:
        images: list of float tensors ``[3, H_i, W_i]``;
        targets: list of dicts with ``boxes`` (float32[N_i, 4], x1 y1 x2 y2 pixels),
        ``labels`` (int64[N_i]), ``difficult`` (bool[N_i]), ``image_id`` (str) and, from a dataset,
        ``seed`` (int, see :meth:`detect.data.dataset.DetectionDataset.__getitem__`).
    """
    images = [sample["image"] for sample in samples]
    targets = [{key: value for key, value in sample.items() if key != "image"} for sample in samples]
    return images, targets
