"""torchvision's ``FasterRCNN``, built from the same config, as the reference in comparisons.

The backbone, anchors (sizes × ratios), RoIAlign 7×7, two-fc head, sampling, thresholds and
input size all come from the same :class:`~detect.config.ModelConfig` as
:mod:`detect.models.faster_rcnn`; only torchvision's own implementation choices differ:

* anchor centres at ``(x·stride, y·stride)``, and RoIAlign with ``aligned=False`` (cell ``i`` read
  at ``i·stride``, regions at least one cell wide); ours place both at the backbone's cell centres
  ``cell_origin + i·stride`` (0.5 px further for MobileNetV2) with ``aligned=True`` sampling;
* RPN proposals below 1e-3 px are removed (``model.rpn.min_size`` is not used);
* the RoI box loss uses smooth-L1 with β = 1/9 (σ = 3) where Fast R-CNN uses σ = 1;
* the box predictor regresses 4·(C+1) deltas (including background), and its two last layers
  keep ``nn.Linear``'s default initialisation (ours: normal, std 0.01 and 0.001, as the paper's code).

Images are not normalised by torchvision's transform (mean 0, std 1): the shared backbone
normalises them itself, exactly as in our detectors.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from torchvision.models.detection import FasterRCNN as TorchvisionFasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator as TorchvisionAnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign

from detect.backbones import backbone_from_config
from detect.config import ModelConfig
from detect.models.base import Detections, Detector

#: torchvision's loss names → ours.
LOSS_NAMES = {"loss_objectness": "rpn_cls", "loss_rpn_box_reg": "rpn_box",
              "loss_classifier": "roi_cls", "loss_box_reg": "roi_box"}


class TorchvisionReference(Detector):
    """Adapts torchvision's detector to the detect API (labels 0..C-1, named losses, ``predict``)."""

    def __init__(self, model: TorchvisionFasterRCNN, num_classes: int):
        super().__init__()
        self.model = model
        self.num_classes = num_classes

    def forward(self, images: Sequence[Tensor] | Tensor, targets: Sequence[dict]) -> dict[str, Tensor]:
        shifted = [{"boxes": t["boxes"].float(), "labels": t["labels"] + 1} for t in targets]
        losses = self.model(list(images), shifted)
        return {LOSS_NAMES[name]: value for name, value in losses.items()}

    @torch.no_grad()
    def predict(self, images: Sequence[Tensor] | Tensor) -> list[Detections]:
        if self.training:
            raise RuntimeError("call model.eval() before predict()")
        if len(images) == 0:
            return []
        return [Detections(out["boxes"], out["scores"], out["labels"] - 1) for out in self.model(list(images))]


def build_torchvision_faster_rcnn(config: ModelConfig, num_classes: int) -> TorchvisionReference:
    backbone = backbone_from_config(config.backbone)
    rpn, roi = config.rpn, config.roi_head
    model = TorchvisionFasterRCNN(
        backbone, num_classes=None,
        min_size=config.input_size, max_size=config.input_size, image_mean=[0.0, 0.0, 0.0], image_std=[1.0, 1.0, 1.0],
        size_divisible=backbone.stride,
        rpn_anchor_generator=TorchvisionAnchorGenerator((tuple(config.anchors.sizes),), (tuple(config.anchors.aspect_ratios),)),
        rpn_pre_nms_top_n_train=rpn.pre_nms_top_n_train, rpn_pre_nms_top_n_test=rpn.pre_nms_top_n_test,
        rpn_post_nms_top_n_train=rpn.post_nms_top_n_train, rpn_post_nms_top_n_test=rpn.post_nms_top_n_test,
        rpn_nms_thresh=rpn.nms_iou, rpn_fg_iou_thresh=rpn.positive_iou, rpn_bg_iou_thresh=rpn.negative_iou,
        rpn_batch_size_per_image=rpn.batch_size_per_image, rpn_positive_fraction=rpn.positive_fraction,
        box_roi_pool=MultiScaleRoIAlign(["0"], output_size=roi.pool_size, sampling_ratio=roi.sampling_ratio),
        box_head=TwoMLPHead(backbone.out_channels * roi.pool_size ** 2, roi.hidden_dim),
        box_predictor=FastRCNNPredictor(roi.hidden_dim, num_classes + 1),
        box_score_thresh=roi.score_threshold, box_nms_thresh=roi.nms_iou, box_detections_per_img=roi.detections_per_image,
        box_fg_iou_thresh=roi.foreground_iou, box_bg_iou_thresh=roi.foreground_iou,
        box_batch_size_per_image=roi.batch_size_per_image, box_positive_fraction=roi.positive_fraction,
        bbox_reg_weights=tuple(roi.box_weights))
    return TorchvisionReference(model, num_classes)
