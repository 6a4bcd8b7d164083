"""R-CNN (Girshick et al., 2014): classify every warped proposal on its own.

For each selective-search proposal, the image region — enlarged so that the warped crop keeps
``context_pad`` pixels of context on each side (§2.1, appendix A) — is warped to a square
``crop_size`` crop and run through the backbone; the pooled backbone output goes through one
fully connected layer, whose ReLU output is the region's feature ("fc7").

R-CNN is trained in stages (:mod:`detect.engine.rcnn` runs them):

1. **fine-tuning** (§2.3): the backbone and the feature layer learn a (C+1)-way softmax
   classifier over warped proposals — this module's ``forward`` returns that loss, so the
   shared training engine runs this stage; regions with IoU ≥ 0.5 with a ground-truth box are
   foreground, the rest background, 25 % foreground per batch;
2. **features** of every training proposal, cached on disk;
3. **per-class linear SVMs** with hard-negative mining (:mod:`detect.models.rcnn_svm`);
4. **class-specific ridge box regression** on the features (appendix C).

Stages 3 and 4 store their weights in this module's buffers, so the whole detector is one
state dict: one checkpoint file, loaded like every other detector.

``predict``: proposals → features → SVM scores → box regression of every box above the score
threshold → per-class NMS 0.3 (the order of R-CNN's test code, ``rcnn_test_bbox_regressor``,
whose regressed boxes go to the evaluation's NMS). Scores are ``σ(SVM score)``: monotone in the
SVM's output (the ranking, and so the AP, is the SVM's) and 0.5 at its decision boundary. Before stage 3 has run, the fine-tuned
softmax classifier scores the regions instead (the paper's "fine-tuned softmax" variant).
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

from detect import distributed
from detect.backbones import Backbone, backbone_from_config
from detect.boxes import (BalancedSampler, BoxCoder, Matcher, batched_nms, box_iou, clip_boxes, remove_small_boxes,
                          sampling_generator)
from detect.config import ModelConfig, RCNNConfig
from detect.models.base import Detections, Detector, ImageBatch, ImageTransform, region_cross_entropy
from detect.proposals.selective_search import SelectiveSearchConfig


def context_boxes(boxes: Tensor, crop_size: int, context_pad: int) -> Tensor:
    """Enlarge boxes (Tensor[K, 4], pixels) so that, warped to ``crop_size``, the original box
    fills the centre ``crop_size − 2 · context_pad`` pixels (R-CNN's context padding)."""
    inner = crop_size - 2 * context_pad
    if inner <= 0:
        raise ValueError(f"context_pad {context_pad} leaves no room in a {crop_size}-pixel crop")
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) / 2 * (crop_size / inner)
    return torch.cat([centre - half, centre + half], dim=1)


#: Stream of this module's minibatch sampling in :func:`detect.boxes.sampling_generator`.
SAMPLING_STREAM = 3


class RCNN(Detector):
    """Warped crops → backbone → pooled → fc ("fc7" features) → softmax (fine-tuning) or SVMs.

    Args:
        backbone: shared feature extractor. num_classes: C. config: :class:`detect.config.RCNNConfig`.
        transform: resizing of input images. proposal_config: selective search for images given
            without proposals.
    """

    uses_proposals = True  # predict() takes cached proposals or runs selective search (Detector)

    def __init__(self, backbone: Backbone, num_classes: int, config: RCNNConfig, transform: ImageTransform,
                 proposal_config: SelectiveSearchConfig):
        super().__init__()
        self.backbone = backbone
        self.config = config
        self.num_classes = num_classes
        self.transform = transform
        self.proposal_config = proposal_config
        pooled = backbone.out_channels * config.pool_size ** 2      # the paper: pool5, 6 × 6 × 256
        self.feature = nn.Sequential(nn.AdaptiveAvgPool2d(config.pool_size), nn.Flatten(),
                                     nn.Linear(pooled, config.feature_dim), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(config.feature_dim, num_classes + 1)   # fine-tuning only
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)
        dim = config.feature_dim
        # Stage 3 and 4 results (buffers: saved with the model, not trained by SGD).
        self.register_buffer("feature_scale", torch.ones(()))
        self.register_buffer("svm_weight", torch.zeros(num_classes, dim))
        self.register_buffer("svm_bias", torch.zeros(num_classes))
        self.register_buffer("svm_trained", torch.zeros((), dtype=torch.bool))
        self.register_buffer("regressor_weight", torch.zeros(num_classes, dim + 1, 4))
        self.register_buffer("target_mean", torch.zeros(num_classes, 4))
        self.register_buffer("target_std", torch.ones(num_classes, 4))
        self.register_buffer("regressor_trained", torch.zeros((), dtype=torch.bool))
        self.matcher = Matcher(config.foreground_iou, config.foreground_iou)
        self.sampler = BalancedSampler(config.batch_size_per_image, config.positive_fraction)
        self.coder = BoxCoder((1.0, 1.0, 1.0, 1.0))

    # ------------------------------------------------------------------ features

    def warp(self, images: Tensor, regions: list[Tensor]) -> Tensor:
        """Warped crops [ΣK, 3, S, S] of the normalised images, with context; outside the image
        is the mean colour (zero after normalisation), as in the paper."""
        normalised = self.backbone.normalise(images)
        size = self.config.crop_size
        enlarged = [context_boxes(r.to(images.dtype), size, self.config.context_pad) for r in regions]
        return roi_align(normalised, enlarged, size, spatial_scale=1.0, sampling_ratio=2, aligned=True)

    def region_features(self, images: Tensor, regions: list[Tensor]) -> Tensor:
        """The feature layer's output [ΣK, D] for regions (one Tensor[K_i, 4] per image, input pixels),
        computed ``crops_per_batch`` crops at a time."""
        chunk = self.config.crops_per_batch
        flat = torch.cat([torch.full((len(r),), i, device=images.device) for i, r in enumerate(regions)])
        boxes = torch.cat(regions) if regions else images.new_zeros((0, 4))
        chunks = -(-len(boxes) // chunk)
        if self.training:   # synchronised BatchNorm: every process must run the backbone equally often
            chunks = distributed.max_over_ranks(chunks, images.device)
        outputs = []
        for start in range(0, chunks * chunk, chunk):
            index, part = flat[start:start + chunk], boxes[start:start + chunk]
            per_image = [part[index == i] for i in range(len(regions))]
            outputs.append(self.feature(self.backbone.forward_normalised(self.warp(images, per_image))))
        if not outputs:
            return images.new_zeros((0, self.config.feature_dim))
        return torch.cat(outputs)

    # ------------------------------------------------------------------ stage 1: fine-tuning

    def losses(self, batch: ImageBatch, targets: list[dict]) -> dict[str, Tensor]:
        """Softmax loss of sampled warped proposals (fine-tuning, stage 1)."""
        regions, labels = [], []
        for target in targets:
            if "proposals" not in target:
                raise ValueError("R-CNN trains on region proposals: every target needs 'proposals'")
            gt_boxes = target["boxes"]
            candidates = torch.cat([target["proposals"][: self.config.max_proposals], gt_boxes])
            matches = self.matcher(box_iou(gt_boxes, candidates))
            positive, negative = self.sampler(matches, sampling_generator(target, SAMPLING_STREAM))
            regions.append(candidates[torch.cat([positive, negative])])
            image_labels = torch.zeros(len(positive) + len(negative), dtype=torch.int64, device=gt_boxes.device)
            image_labels[: len(positive)] = target["labels"][matches[positive]] + 1
            labels.append(image_labels)
        logits = self.classifier(self.region_features(batch.tensors, regions))
        return {"cls": region_cross_entropy(logits, torch.cat(labels))}

    # ------------------------------------------------------------------ inference

    def svm_scores(self, features: Tensor) -> Tensor:
        """Raw SVM outputs [K, C] of features [K, D] (scaled like the training features)."""
        return (features * self.feature_scale) @ self.svm_weight.T + self.svm_bias

    def regress(self, features: Tensor, boxes: Tensor, labels: Tensor) -> Tensor:
        """Refined boxes [K, 4] for boxes [K, 4] of classes ``labels`` (stage 4's ridge regressors),
        one matrix product per class present."""
        inputs = torch.cat([features * self.feature_scale, features.new_ones((len(features), 1))], dim=1)
        deltas = inputs.new_zeros((len(inputs), 4))
        for label in labels.unique().tolist():
            rows = labels == label
            whitened = inputs[rows] @ self.regressor_weight[label]
            deltas[rows] = whitened * self.target_std[label] + self.target_mean[label]
        return self.coder.decode(deltas, boxes)

    def detect(self, batch: ImageBatch, proposals: list[Tensor]) -> list[Detections]:
        config = self.config
        proposals = [p[: config.max_proposals] for p in proposals]
        features = self.region_features(batch.tensors, proposals)
        if bool(self.svm_trained):
            scores = torch.sigmoid(self.svm_scores(features))
        else:
            scores = F.softmax(self.classifier(features), dim=1)[:, 1:]
        results = []
        for image_boxes, image_scores, image_features, size in zip(
                proposals, scores.split([len(p) for p in proposals]),
                features.split([len(p) for p in proposals]), batch.image_sizes):
            region, label = torch.nonzero(image_scores > config.score_threshold, as_tuple=True)
            boxes, kept_scores = image_boxes[region], image_scores[region, label]
            # Regress every scored box, then suppress (R-CNN's rcnn_test_bbox_regressor, as Fast R-CNN):
            # two proposals that regress onto one object are then one detection, not a false positive.
            if bool(self.regressor_trained) and len(region):
                boxes = self.regress(image_features[region], boxes, label)
            boxes = clip_boxes(boxes, size)
            valid = remove_small_boxes(boxes, 1e-2)
            boxes, kept_scores, label = boxes[valid], kept_scores[valid], label[valid]
            keep = batched_nms(boxes, kept_scores, label, config.nms_iou, max_keep=config.detections_per_image)
            results.append(Detections(boxes[keep], kept_scores[keep], label[keep]))
        return results


def build_rcnn(config: ModelConfig, num_classes: int) -> RCNN:
    backbone = backbone_from_config(config.backbone)
    return RCNN(backbone, num_classes, config.rcnn, ImageTransform(config.input_size, size_divisible=backbone.stride),
                config.proposals.selective_search)
