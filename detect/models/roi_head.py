"""The region-of-interest head shared by Fast R-CNN and Faster R-CNN (Fast R-CNN §2).

Each region is pooled to a fixed ``P × P`` grid from the shared feature map (RoIAlign or the
original RoIPool), passed through two fully connected layers, and classified over ``C + 1``
classes (index 0 = background, internal to this head) with class-specific box deltas
(``4·C`` outputs, normalised by the std ``(0.1, 0.1, 0.2, 0.2)``, i.e. coder weights
``(10, 10, 5, 5)``).

Training (§2.3): ground-truth boxes are added to the proposals, which are matched with IoU
≥ 0.5 → foreground and ``[background_iou_low, 0.5)`` → background, then sampled with 25 %
foreground. Loss: cross-entropy + smooth-L1 (σ = 1) on the foreground's own class deltas.

Inference: softmax, class-specific decoding, clipping, score threshold, per-class NMS and a cap
on detections per image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align, roi_pool

from detect import boxes as box_ops
from detect.boxes import (BalancedSampler, BoxCoder, Matcher, batched_nms, box_iou, clip_boxes,
                          remove_small_boxes, sampling_generator)
from detect.config import RoIHeadConfig
from detect.models.base import Detections, region_cross_entropy, smooth_l1


#: Stream of this module's minibatch sampling in :func:`detect.boxes.sampling_generator`.
SAMPLING_STREAM = 2


class RoIPooler(nn.Module):
    """Pool regions (list of Tensor[K_i, 4], input pixels) into Tensor[ΣK, C, P, P].

    ``kind="pool"`` is Fast R-CNN's max RoIPool; ``"align"`` is RoIAlign (bilinear, no rounding),
    which is more accurate for small objects on coarse feature maps. On the CPU, RoIAlign runs as
    :func:`separable_roi_align`, which gives the same values as torchvision's kernel: always while
    gradients flow (its backward pass is the fast one), and at inference on maps of at most
    :attr:`SEPARABLE_MAX_CELLS` cells, where its dense products beat the kernel's per-sample loop
    (300 regions on a 20 × 26 map of 96 channels: 6-8 against 11-17 ms; on 50 × 50, 22 against 13).
    Exporting (ONNX) always uses the kernel.

    RoIAlign reads feature cell ``i`` as centred at input coordinate ``origin + i · stride`` (the
    backbone's :attr:`~detect.backbones.Backbone.cell_origin`); torchvision's ``aligned=True``
    assumes ``(i + ½) · stride``, so regions are shifted by the difference before the kernel.
    RoIPool keeps the original's rounding of ``x / stride``.
    """

    SEPARABLE_MAX_CELLS = 32 * 32

    def __init__(self, output_size: int, stride: int, kind: str = "align", sampling_ratio: int = 2,
                 origin: float | None = None):
        super().__init__()
        if kind not in ("align", "pool"):
            raise ValueError(f"RoI pooler kind must be 'align' or 'pool', got {kind!r}")
        self.output_size = output_size
        self.spatial_scale = 1.0 / stride
        self.origin = stride / 2 if origin is None else float(origin)
        self.shift = stride / 2 - self.origin     # added to boxes so that aligned=True reads the right cells
        self.kind = kind
        self.sampling_ratio = sampling_ratio

    def forward(self, features: Tensor, boxes: list[Tensor]) -> Tensor:
        # Box coordinates stay at least float32 under mixed precision: bfloat16 keeps 8 bits, a
        # whole pixel at 128-256 px. The separable form computes its weights from them in float32
        # and multiplies in the features' dtype; torchvision's kernels take one dtype for both.
        exact = torch.promote_types(features.dtype, torch.float32)
        boxes = [b.to(exact) for b in boxes]
        if self.kind == "align" and self.shift:
            boxes = [b + self.shift for b in boxes]
        if self.kind == "align" and self._separable(features):
            return separable_roi_align(features, boxes, self.output_size, self.spatial_scale, self.sampling_ratio)
        if self.kind == "pool":
            pooled = roi_pool(features.to(exact), boxes, self.output_size, self.spatial_scale)
        else:
            pooled = roi_align(features.to(exact), boxes, self.output_size, self.spatial_scale,
                               sampling_ratio=self.sampling_ratio, aligned=True)
        return pooled.to(features.dtype)

    def _separable(self, features: Tensor) -> bool:
        if features.device.type != "cpu" or box_ops.EXPORTING:
            return False
        return features.requires_grad or features.shape[-2] * features.shape[-1] <= self.SEPARABLE_MAX_CELLS


def separable_roi_align(features: Tensor, boxes: list[Tensor], output_size: int, spatial_scale: float,
                        sampling_ratio: int = 2, max_elements: int = 1 << 22) -> Tensor:
    """RoIAlign (``aligned=True``) written as two matrix products per region.

    Bilinear interpolation weights factor into a row weight times a column weight, and so does
    torchvision's rule for samples outside the map (zero when y or x is out of range), so each
    output bin — the mean of ``s × s`` bilinear samples — is ``Σ_y Σ_x Wy[i, y] · F[c, y, x] · Wx[j, x]``
    with ``Wy`` (P × H) and ``Wx`` (P × W) the per-axis sample weights averaged over the bin. That
    is ``Wy · F · Wxᵀ`` for every channel: two GEMMs whose backward pass is again two GEMMs, instead
    of torchvision's CPU backward, which scatters every sample and took a third of a Faster R-CNN
    training step on the small backbone. Same values as :func:`torchvision.ops.roi_align` (to
    float rounding); the weights carry no gradient to the boxes, as there.

    Args:
        features (Tensor[B, C, H, W]); boxes: per image Tensor[K_i, 4] in input pixels;
        output_size: P; spatial_scale: 1 / stride; sampling_ratio: samples per bin side
        (0: ``ceil(region side / P)``, per region); max_elements: regions are processed in chunks
        whose intermediate ``[K·P, L, C]`` product (``L`` the shorter side) stays below this many elements.

    Returns:
        Tensor[ΣK, C, P, P].
    """
    channels, height, width = features.shape[1:]
    # The longer axis is contracted first, by one GEMM over all regions of the image; the
    # shorter one then by a batched product per region and output bin.
    x_first = width >= height
    first_length, second_length = (width, height) if x_first else (height, width)
    pooled = []
    for image_features, image_boxes in zip(features, boxes):
        # [L1, L2·C]: the map as lines along the first axis, so that W1 · lines mixes them for
        # every position of the other axis and every channel at once.
        lines = (image_features.permute(2, 1, 0) if x_first else image_features.permute(1, 2, 0))
        lines = lines.reshape(first_length, second_length * channels)
        chunk = max(1, max_elements // (output_size * second_length * channels))
        for part in image_boxes.split(chunk):
            scaled = part * spatial_scale - 0.5
            weights_y = _axis_weights(scaled[:, 1], scaled[:, 3], height, output_size, sampling_ratio)
            weights_x = _axis_weights(scaled[:, 0], scaled[:, 2], width, output_size, sampling_ratio)
            first, second = (weights_x, weights_y) if x_first else (weights_y, weights_x)
            count = len(part)
            mixed = first.to(lines.dtype).reshape(count * output_size, first_length) @ lines
            mixed = mixed.view(count * output_size, second_length, channels)            # [K·P, L2, C]
            second = second.to(lines.dtype).repeat_interleave(output_size, dim=0)      # [K·P, P, L2]
            bins = torch.bmm(second, mixed).view(count, output_size, output_size, channels)
            # bins[k, first-axis bin, second-axis bin, c] → [K, C, P_y, P_x]
            pooled.append(bins.permute(0, 3, 2, 1) if x_first else bins.permute(0, 3, 1, 2))
    if not pooled:
        return features.new_zeros((0, channels, output_size, output_size))
    return torch.cat(pooled).contiguous()


def _axis_weights(start: Tensor, end: Tensor, length: int, bins: int, sampling_ratio: int) -> Tensor:
    """Per-axis RoIAlign weights Tensor[K, bins, length]: row ``i`` averages the bilinear weights of
    bin ``i``'s samples, with torchvision's border rules (zero beyond one pixel outside, clamped to
    the edge inside that margin)."""
    bin_size = (end - start) / bins                                            # [K]
    if sampling_ratio > 0:
        samples = torch.full_like(bin_size, sampling_ratio)
    else:   # torchvision: ceil(side / bins), zero (an all-zero output) for an empty region
        samples = torch.ceil((end - start) / bins).clamp(min=0)
    most = max(int(samples.max()), 1) if samples.numel() else 1
    step = torch.arange(most, device=start.device, dtype=start.dtype)          # [S]
    bin_index = torch.arange(bins, device=start.device, dtype=start.dtype)     # [P]
    # Sample positions [K, P, S]: bin start + (s + 0.5) · bin / samples; samples past the region's
    # own count (adaptive sampling) get zero weight.
    divisor = samples.clamp(min=1)
    position = (start[:, None, None] + bin_index[None, :, None] * bin_size[:, None, None]
                + (step[None, None, :] + 0.5) * (bin_size / divisor)[:, None, None])
    used = (step[None, None, :] < samples[:, None, None]).to(start.dtype)
    inside = ((position >= -1.0) & (position <= length)).to(start.dtype) * used
    position = position.clamp(min=0)
    low = position.floor().clamp(max=length - 1)
    position = torch.where(low >= length - 1, low, position)
    fraction = position - low
    low = low.long()
    high = (low + 1).clamp(max=length - 1)
    grid = torch.arange(length, device=start.device)
    weights = ((grid == low[..., None]) * (1 - fraction)[..., None]
               + (grid == high[..., None]) * fraction[..., None]) * inside[..., None]   # [K, P, S, L]
    return weights.sum(dim=2) / divisor[:, None, None]


class RoIHead(nn.Module):
    """Pool → two fc layers → (class logits over C+1, class-specific deltas 4·C).

    Args:
        in_channels: backbone channels. stride: backbone stride. cell_origin: the backbone's
        :attr:`~detect.backbones.Backbone.cell_origin` (default ``stride / 2``).
        num_classes: foreground classes. config: :class:`detect.config.RoIHeadConfig`.
    """

    def __init__(self, in_channels: int, stride: int, num_classes: int, config: RoIHeadConfig,
                 cell_origin: float | None = None):
        super().__init__()
        self.num_classes = num_classes
        self.config = config
        self.pooler = RoIPooler(config.pool_size, stride, config.pooler, config.sampling_ratio, cell_origin)
        self.box_head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * config.pool_size ** 2, config.hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(config.hidden_dim, config.hidden_dim), nn.ReLU(inplace=True))
        self.cls_score = nn.Linear(config.hidden_dim, num_classes + 1)
        self.bbox_pred = nn.Linear(config.hidden_dim, num_classes * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)
        self.matcher = Matcher(config.foreground_iou, config.foreground_iou, ignore_below=config.background_iou_low)
        self.sampler = BalancedSampler(config.batch_size_per_image, config.positive_fraction)
        self.coder = BoxCoder(tuple(config.box_weights))

    def forward(self, features: Tensor, proposals: list[Tensor], image_sizes: list[tuple[int, int]],
                targets: list[dict] | None = None) -> tuple[list[Detections] | None, dict[str, Tensor]]:
        """Classify and refine regions.

        Args:
            features (Tensor[B, C, H, W]); proposals: per image Tensor[K_i, 4] (input pixels);
            image_sizes: ``(height, width)`` per image; targets: ground truth (training).

        Returns:
            ``(None, {"roi_cls", "roi_box"})`` with targets, else ``(detections, {})``.
        """
        if targets is not None:
            proposals, labels, regression_targets = self.sample_training_regions(proposals, targets)
        logits, deltas = self.classify(features, proposals)
        if targets is not None:
            return None, self.compute_losses(logits, deltas, labels, regression_targets)
        return self.postprocess(logits, deltas, proposals, image_sizes), {}

    def classify(self, features: Tensor, regions: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Logits (Tensor[ΣK, C+1]) and deltas (Tensor[ΣK, 4C]) for the given regions."""
        hidden = self.box_head(self.pooler(features, regions))
        # float32 for the losses and the box decoding, whatever precision computed them
        return self.cls_score(hidden).float(), self.bbox_pred(hidden).float()

    @torch.no_grad()
    def sample_training_regions(self, proposals: list[Tensor], targets: list[dict]
                                ) -> tuple[list[Tensor], Tensor, Tensor]:
        """Add ground truth to the proposals, match, and sample (25 % foreground by default).

        Returns:
            regions per image, labels (Tensor[ΣK] int64, 0 = background, c + 1 = class c) and
            regression targets (Tensor[ΣK, 4], zeros for background).
        """
        sampled_regions, sampled_labels, sampled_targets = [], [], []
        for regions, target in zip(proposals, targets):
            gt_boxes, gt_labels = target["boxes"], target["labels"]
            regions = torch.cat([regions, gt_boxes.to(regions.dtype)])
            matches = self.matcher(box_iou(gt_boxes, regions))
            positive, negative = self.sampler(matches, sampling_generator(target, SAMPLING_STREAM))
            chosen = torch.cat([positive, negative])
            labels = torch.zeros(chosen.numel(), dtype=torch.int64, device=regions.device)
            labels[: positive.numel()] = gt_labels[matches[positive]] + 1
            deltas = torch.zeros((chosen.numel(), 4), device=regions.device)
            deltas[: positive.numel()] = self.coder.encode(regions[positive], gt_boxes[matches[positive]])
            sampled_regions.append(regions[chosen])
            sampled_labels.append(labels)
            sampled_targets.append(deltas)
        return sampled_regions, torch.cat(sampled_labels), torch.cat(sampled_targets)

    def compute_losses(self, logits: Tensor, deltas: Tensor, labels: Tensor,
                       regression_targets: Tensor) -> dict[str, Tensor]:
        """Cross-entropy over all sampled regions; smooth-L1 on foreground deltas of their class, / #sampled."""
        cls_loss = region_cross_entropy(logits, labels)
        foreground = torch.nonzero(labels > 0).flatten()
        class_deltas = deltas.view(deltas.shape[0], self.num_classes, 4)[foreground, labels[foreground] - 1]
        box_loss = smooth_l1(class_deltas, regression_targets[foreground], self.config.smooth_l1_sigma)
        return {"roi_cls": cls_loss, "roi_box": box_loss / max(labels.numel(), 1)}

    @torch.no_grad()
    def postprocess(self, logits: Tensor, deltas: Tensor, proposals: list[Tensor],
                    image_sizes: list[tuple[int, int]]) -> list[Detections]:
        """Scores and class-specific boxes → threshold → per-class NMS → top detections, per image."""
        config = self.config
        probabilities = F.softmax(logits, dim=-1)[:, 1:]
        counts = [p.shape[0] for p in proposals]
        boxes = self.coder.decode(deltas, torch.cat(proposals)).view(-1, self.num_classes, 4)
        results = []
        for image_scores, image_boxes, size in zip(probabilities.split(counts), boxes.split(counts), image_sizes):
            image_boxes = clip_boxes(image_boxes, size).reshape(-1, 4)
            labels = torch.arange(self.num_classes, device=logits.device).repeat(image_scores.shape[0])
            image_scores = image_scores.reshape(-1)
            keep = torch.nonzero(image_scores > config.score_threshold).flatten()
            keep = keep[remove_small_boxes(image_boxes[keep], 1e-2)]
            image_boxes, image_scores, labels = image_boxes[keep], image_scores[keep], labels[keep]
            keep = batched_nms(image_boxes, image_scores, labels, config.nms_iou, max_keep=config.detections_per_image)
            results.append(Detections(image_boxes[keep], image_scores[keep], labels[keep]))
        return results
