"""Region Proposal Network (Faster R-CNN §3.1).

A 3×3 conv slides over the shared features; two sibling 1×1 convs predict, for each of the A
anchors at each location, an objectness logit and four box deltas. Training labels anchors with
the shared :class:`~detect.boxes.Matcher` (positive IoU ≥ 0.7 or the best anchor of a ground
truth, negative < 0.3), samples 256 per image with up to 50 % positives, and applies binary
cross-entropy plus smooth-L1 (σ = 3). Proposals are the decoded top-scoring anchors, clipped,
small ones removed, after NMS 0.7. Objectness is one sigmoid logit per anchor — equivalent to the
paper's two-way softmax with half the outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detect.anchors import AnchorGenerator
from detect.boxes import (BalancedSampler, BoxCoder, Matcher, box_iou, clip_boxes, nms, remove_small_boxes,
                          sampling_generator, topk_count)
from detect.config import RPNConfig
from detect.models.base import smooth_l1


#: Stream of this module's minibatch sampling in :func:`detect.boxes.sampling_generator`.
SAMPLING_STREAM = 1


class RPNHead(nn.Module):
    """conv3×3 + ReLU → (objectness [B, A, H, W], deltas [B, 4A, H, W])."""

    def __init__(self, in_channels: int, num_anchors: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.objectness = nn.Conv2d(in_channels, num_anchors, 1)
        self.deltas = nn.Conv2d(in_channels, num_anchors * 4, 1)
        for layer in (self.conv, self.objectness, self.deltas):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        hidden = F.relu(self.conv(features))
        return self.objectness(hidden), self.deltas(hidden)


class RegionProposalNetwork(nn.Module):
    """Anchors → objectness and deltas → proposals (and, in training, the RPN losses).

    Args:
        in_channels: backbone channels.
        anchor_generator: anchors per feature cell.
        config: thresholds, sampling and top-k settings (:class:`detect.config.RPNConfig`).
    """

    def __init__(self, in_channels: int, anchor_generator: AnchorGenerator, config: RPNConfig):
        super().__init__()
        self.anchor_generator = anchor_generator
        self.head = RPNHead(in_channels, anchor_generator.num_anchors_per_location)
        self.config = config
        self.matcher = Matcher(config.positive_iou, config.negative_iou, allow_low_quality_matches=True)
        self.sampler = BalancedSampler(config.batch_size_per_image, config.positive_fraction)
        self.coder = BoxCoder((1.0, 1.0, 1.0, 1.0))

    def forward(self, features: Tensor, image_sizes: list[tuple[int, int]],
                targets: list[dict] | None = None) -> tuple[list[Tensor], dict[str, Tensor]]:
        """Propose regions.

        Args:
            features (Tensor[B, C, H, W]): backbone output.
            image_sizes: ``(height, width)`` of each image inside the padded batch.
            targets: ground truth per image (training only).

        Returns:
            proposals: per image Tensor[K_i, 4], x1 y1 x2 y2 input pixels, by decreasing objectness;
            losses: ``rpn_cls`` and ``rpn_box`` when ``targets`` is given, else empty.
        """
        objectness, deltas = (output.float() for output in self.head(features))   # float32 boxes under autocast
        batch_size, _, height, width = objectness.shape
        anchors = self.anchor_generator(height, width)
        objectness = objectness.permute(0, 2, 3, 1).reshape(batch_size, -1)
        deltas = deltas.view(batch_size, -1, 4, height, width).permute(0, 3, 4, 1, 2).reshape(batch_size, -1, 4)
        proposals = self.select_proposals(objectness.detach(), deltas.detach(), anchors, image_sizes)
        losses = {} if targets is None else self.compute_losses(objectness, deltas, anchors, targets)
        return proposals, losses

    @torch.no_grad()
    def select_proposals(self, objectness: Tensor, deltas: Tensor, anchors: Tensor,
                         image_sizes: list[tuple[int, int]]) -> list[Tensor]:
        """Top-k by objectness → decode → clip → drop small → NMS → top-k (per image)."""
        config = self.config
        pre_nms = config.pre_nms_top_n_train if self.training else config.pre_nms_top_n_test
        post_nms = config.post_nms_top_n_train if self.training else config.post_nms_top_n_test
        proposals = []
        for scores, image_deltas, size in zip(objectness, deltas, image_sizes):
            top = scores.topk(topk_count(scores, pre_nms)).indices
            boxes = clip_boxes(self.coder.decode(image_deltas[top], anchors[top]), size)
            scores = scores[top]
            keep = remove_small_boxes(boxes, config.min_size)
            boxes, scores = boxes[keep], scores[keep]
            keep = nms(boxes, scores, config.nms_iou, max_keep=post_nms)
            proposals.append(boxes[keep])
        return proposals

    def compute_losses(self, objectness: Tensor, deltas: Tensor, anchors: Tensor,
                       targets: list[dict]) -> dict[str, Tensor]:
        """Binary cross-entropy over sampled anchors; smooth-L1 (σ) over positives, both / #sampled."""
        sampled_logits, sampled_labels, positive_deltas, regression_targets = [], [], [], []
        for image_objectness, image_deltas, target in zip(objectness, deltas, targets):
            gt_boxes = target["boxes"]
            matches = self.matcher(box_iou(gt_boxes, anchors))
            positive, negative = self.sampler(matches, sampling_generator(target, SAMPLING_STREAM))
            sampled_logits.append(torch.cat([image_objectness[positive], image_objectness[negative]]))
            sampled_labels.append(torch.cat([torch.ones_like(positive), torch.zeros_like(negative)]).float())
            positive_deltas.append(image_deltas[positive])
            regression_targets.append(self.coder.encode(anchors[positive], gt_boxes[matches[positive]]))
        logits = torch.cat(sampled_logits)
        num_sampled = max(logits.numel(), 1)
        cls_loss = F.binary_cross_entropy_with_logits(logits, torch.cat(sampled_labels), reduction="sum") / num_sampled
        box_loss = smooth_l1(torch.cat(positive_deltas), torch.cat(regression_targets),
                             self.config.smooth_l1_sigma) / num_sampled
        return {"rpn_cls": cls_loss, "rpn_box": box_loss}
