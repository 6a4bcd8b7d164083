"""Faster R-CNN (Ren et al., 2015): backbone → Region Proposal Network → RoI head.

Trained end to end with the "approximate joint training" of §3.2: the four losses are summed
and proposals are treated as constants (no gradient through their coordinates).
"""

from __future__ import annotations

from torch import Tensor

from detect.anchors import AnchorGenerator
from detect.backbones import Backbone, backbone_from_config
from detect.config import ModelConfig
from detect.models.base import Detections, Detector, ImageBatch, ImageTransform
from detect.models.roi_head import RoIHead
from detect.models.rpn import RegionProposalNetwork


class FasterRCNN(Detector):
    """The meta-architecture: it only orchestrates its three named parts.

    Args:
        backbone: shared feature extractor. rpn: proposal stage. roi_head: classification stage.
        transform: resizing/batching of input images.
    """

    def __init__(self, backbone: Backbone, rpn: RegionProposalNetwork, roi_head: RoIHead,
                 transform: ImageTransform):
        super().__init__()
        self.backbone = backbone
        self.rpn = rpn
        self.roi_head = roi_head
        self.transform = transform
        self.num_classes = roi_head.num_classes

    def losses(self, batch: ImageBatch, targets: list[dict]) -> dict[str, Tensor]:
        features = self.backbone(batch.tensors)
        proposals, rpn_losses = self.rpn(features, batch.image_sizes, targets)
        _, roi_losses = self.roi_head(features, proposals, batch.image_sizes, targets)
        return {**rpn_losses, **roi_losses}

    def detect(self, batch: ImageBatch) -> list[Detections]:
        features = self.backbone(batch.tensors)
        proposals, _ = self.rpn(features, batch.image_sizes)
        detections, _ = self.roi_head(features, proposals, batch.image_sizes)
        return detections


def build_faster_rcnn(config: ModelConfig, num_classes: int) -> FasterRCNN:
    backbone = backbone_from_config(config.backbone)
    anchors = AnchorGenerator(config.anchors.sizes, config.anchors.aspect_ratios, backbone.stride,
                              backbone.cell_origin)
    rpn = RegionProposalNetwork(backbone.out_channels, anchors, config.rpn)
    roi_head = RoIHead(backbone.out_channels, backbone.stride, num_classes, config.roi_head, backbone.cell_origin)
    return FasterRCNN(backbone, rpn, roi_head, ImageTransform(config.input_size, size_divisible=backbone.stride))
