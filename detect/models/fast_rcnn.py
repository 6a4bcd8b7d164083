"""Fast R-CNN (Girshick, 2015): one backbone pass per image, RoI pooling over external proposals.

Proposals come from selective search, computed once per image and cached on disk
(:mod:`detect.proposals`); the dataset adds them to every sample as ``target["proposals"]``
(original image pixels) and the training augmentation moves them with the image. The RoI head is
the one Faster R-CNN uses (:class:`detect.models.roi_head.RoIHead`); Faster R-CNN differs only in
where the proposals come from.

The paper's settings (§2.3, §3): mini-batches of 2 images × 64 RoIs, 25 % foreground (IoU ≥ 0.5
with a ground-truth box, which is also added to the proposals), background IoU in [0.1, 0.5),
smooth-L1 with σ = 1 on normalised targets, per-class NMS 0.3 at test time.

``predict(images, proposals)`` takes the proposals of each image; without them it runs selective
search on the images first (what ``tools/infer.py`` does on new images), which dominates the
time per image.
"""

from __future__ import annotations

from torch import Tensor

from detect.backbones import Backbone, backbone_from_config
from detect.config import ModelConfig
from detect.models.base import Detections, Detector, ImageBatch, ImageTransform
from detect.models.roi_head import RoIHead
from detect.proposals.selective_search import SelectiveSearchConfig


class FastRCNN(Detector):
    """Backbone → RoI pooling over given proposals → the shared RoI head.

    Args:
        backbone: shared feature extractor. roi_head: classification and box refinement.
        transform: resizing/batching. proposal_config: selective search for images given without proposals.
    """

    uses_proposals = True  # predict() takes cached proposals or runs selective search (Detector)

    def __init__(self, backbone: Backbone, roi_head: RoIHead, transform: ImageTransform,
                 proposal_config: SelectiveSearchConfig):
        super().__init__()
        self.backbone = backbone
        self.roi_head = roi_head
        self.transform = transform
        self.proposal_config = proposal_config
        self.num_classes = roi_head.num_classes

    def losses(self, batch: ImageBatch, targets: list[dict]) -> dict[str, Tensor]:
        if any("proposals" not in target for target in targets):
            raise ValueError("Fast R-CNN trains on region proposals: every target needs 'proposals' "
                             "(the engine adds them from the proposal cache)")
        features = self.backbone(batch.tensors)
        _, losses = self.roi_head(features, [t["proposals"] for t in targets], batch.image_sizes, targets)
        return losses

    def detect(self, batch: ImageBatch, proposals: list[Tensor]) -> list[Detections]:
        features = self.backbone(batch.tensors)
        detections, _ = self.roi_head(features, proposals, batch.image_sizes)
        return detections


def build_fast_rcnn(config: ModelConfig, num_classes: int) -> FastRCNN:
    backbone = backbone_from_config(config.backbone)
    roi_head = RoIHead(backbone.out_channels, backbone.stride, num_classes, config.roi_head, backbone.cell_origin)
    return FastRCNN(backbone, roi_head, ImageTransform(config.input_size, size_divisible=backbone.stride),
                    config.proposals.selective_search)
