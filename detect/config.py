"""Typed experiment configuration loaded from YAML.

A config is a tree of dataclasses (:class:`Config` at the root). YAML files in ``configs/`` set
any subset of the fields; everything else keeps the defaults written here, which are the papers'
values unless a comment says why not. Loading is strict:

* an unknown key is an error naming the key and the file (a typo never silently does nothing);
* a value of the wrong type is an error naming the key, the expected type and the file;
* numeric fields declare their valid range, checked at load (the machinery: :mod:`detect.typed_yaml`).

Command-line overrides use dotted keys with YAML values: ``train.lr=0.01``,
``model.anchors.sizes=[16,32,64]``, ``data.class_names=null``.
Model code never imports a global config: builders receive the sub-config they need.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml

from detect.data.synthetic import SyntheticConfig
from detect.data.transforms import AugmentationConfig
from detect.proposals.selective_search import SelectiveSearchConfig
from detect.errors import ConfigError
from detect.typed_yaml import build, parse_overrides, ranged, ranged_tuple, set_dotted

BUILTIN_DATASET = "builtin"

#: What ``python tools/train.py`` trains without arguments (relative to the project root).
DEFAULT_CONFIG_PATH = Path("configs/faster_rcnn_shapes_mnv2.yaml")


@dataclass
class BackboneConfig:
    """Feature extractor shared by every detector (see :mod:`detect.backbones`).

    Attributes:
        name: ``small`` (from scratch, CPU-friendly), ``mobilenet_v2``, ``resnet18``, ``resnet50``, ``vgg16``.
        weights: None (random init), a local state-dict file, or ``imagenet`` (torchvision's download).
        frozen_stages: number of leading stages whose weights are not trained.
        stride: output stride; null for the backbone's own. ``small`` offers 8 (default) or 4
            (finer anchors and RoI pooling for tiny objects, ~2× the compute); ``mobilenet_v2``
            16 (default) or 8 (its last stage dilated instead of strided, same weights).
        channels_last: run the backbone's convolutions on channels-last (NHWC) tensors; null for
            the backbone's own choice: on for the torchvision networks (MobileNetV2 ~1.5× faster
            on a CPU), off for ``small`` (no measurable gain).
        widths: ``small`` only: channels of its four stages and of the merged output map, five
            numbers; null for ``[16, 32, 64, 128, 96]``.
    """

    name: str = "small"
    weights: str | None = None
    frozen_stages: int = ranged(0, 0, 5)
    stride: int | None = None
    channels_last: bool | None = None
    widths: tuple[int, ...] | None = ranged(None, 1)


@dataclass
class AnchorConfig:
    """Anchors at every feature-map location: ``len(sizes) × len(aspect_ratios)`` of them.

    Faster R-CNN uses sizes (128, 256, 512) for ~600 px images; scale them with the input size.
    Aspect ratio is height / width.
    """

    sizes: tuple[float, ...] = ranged_tuple(128.0, 256.0, 512.0, low=0, low_open=True)
    aspect_ratios: tuple[float, ...] = ranged_tuple(0.5, 1.0, 2.0, low=0, low_open=True)


@dataclass
class RPNConfig:
    """Region Proposal Network (Faster R-CNN §3.1); defaults are the paper's."""

    positive_iou: float = ranged(0.7, 0, 1)
    negative_iou: float = ranged(0.3, 0, 1)
    batch_size_per_image: int = ranged(256, 1)
    positive_fraction: float = ranged(0.5, 0, 1, low_open=True)
    smooth_l1_sigma: float = ranged(3.0, 0, low_open=True)
    nms_iou: float = ranged(0.7, 0, 1)
    pre_nms_top_n_train: int = ranged(12000, 1)
    post_nms_top_n_train: int = ranged(2000, 1)
    pre_nms_top_n_test: int = ranged(6000, 1)
    post_nms_top_n_test: int = ranged(300, 1)
    min_size: float = ranged(16.0, 0)


@dataclass
class RoIHeadConfig:
    """Region-of-interest head shared by Fast and Faster R-CNN (Fast R-CNN §2)."""

    pooler: Literal["align", "pool"] = "align"
    pool_size: int = ranged(7, 1)
    sampling_ratio: int = ranged(2, 0)
    hidden_dim: int = ranged(1024, 1)
    foreground_iou: float = ranged(0.5, 0, 1)
    background_iou_low: float = ranged(0.0, 0, 1)
    batch_size_per_image: int = ranged(128, 1)
    positive_fraction: float = ranged(0.25, 0, 1, low_open=True)
    box_weights: tuple[float, ...] = ranged_tuple(10.0, 10.0, 5.0, 5.0, low=0, low_open=True)
    smooth_l1_sigma: float = ranged(1.0, 0, low_open=True)
    score_threshold: float = ranged(0.05, 0, 1)
    nms_iou: float = ranged(0.3, 0, 1)
    detections_per_image: int = ranged(100, 1)


@dataclass
class YOLOConfig:
    """YOLOv1's head, loss and decoding (Redmon et al., 2016, §2); defaults are the paper's.

    Attributes:
        grid_size: S, the S × S grid of cells (7 at 448 px in the paper).
        boxes_per_cell: B, box predictors per cell.
        conv_channels: channels of the extra 3 × 3 conv layers on the backbone (one entry per layer).
        first_conv_stride: stride of the first of them (2, the paper's ``3×3×1024-s-2``; 1 keeps
            the backbone's resolution, which the cell head's ``k × k`` patches need).
        hidden_dim: width of the first fully connected layer (4096 in the paper).
        dropout: dropout after the first fully connected layer.
        leaky_slope: negative slope of the Leaky ReLU used everywhere but the last layer.
        local_head: add a per-cell head to the fully connected output, whose output starts gated
            at 0 (not in the paper; see :mod:`detect.models.yolo`).
        local_hidden: hidden channels of that cell head, which sees each cell's own patch of the
            conv map; 0 makes it a linear 1 × 1 conv on the ``S × S`` average-pooled map.
        lambda_coord, lambda_noobj: the loss weights of the coordinate and no-object terms.
        noobj_ignore_iou: predictors whose box already overlaps an object with IoU above this
            are left out of the no-object term (YOLOv2's rule, not in YOLOv1); 1.0 leaves nobody
            out, as the paper.
        class_loss: ``sse``, the paper's sum-squared error on the raw class outputs, or
            ``softmax``, cross-entropy on their softmax (YOLOv2's choice, not in YOLOv1); the
            decoding reads ``P(class | object)`` from the outputs the same way the loss trained them.
        score_threshold: minimum class-specific confidence kept at test time.
        nms_iou: per-class NMS threshold at test time.
        detections_per_image: cap on the detections kept per image.
    """

    grid_size: int = ranged(7, 1)
    boxes_per_cell: int = ranged(2, 1)
    conv_channels: tuple[int, ...] = ranged_tuple(1024, 1024, low=1)
    first_conv_stride: int = ranged(2, 1)
    hidden_dim: int = ranged(4096, 1)
    dropout: float = ranged(0.5, 0, 1, high_open=True)
    leaky_slope: float = ranged(0.1, 0, 1)
    local_head: bool = False
    local_hidden: int = ranged(0, 0)
    lambda_coord: float = ranged(5.0, 0)
    lambda_noobj: float = ranged(0.5, 0)
    noobj_ignore_iou: float = ranged(1.0, 0, 1)
    class_loss: Literal["sse", "softmax"] = "sse"
    score_threshold: float = ranged(0.05, 0, 1)
    nms_iou: float = ranged(0.5, 0, 1)
    detections_per_image: int = ranged(100, 1)


@dataclass
class RCNNConfig:
    """R-CNN (Girshick et al., 2014): warped proposals, fine-tuning, SVMs and box regression.

    Defaults are the paper's (``crop_size`` 227 and 4096-d fc7 features of AlexNet/VGG16).

    Attributes:
        crop_size: side of the square each proposal is warped to.
        context_pad: pixels of image context around the proposal in the warped crop.
        feature_dim: width of the fc layer on the pooled backbone features (the "fc7" features).
        pool_size: the backbone output is average-pooled to ``pool_size × pool_size`` and flattened
            into that fc layer. The paper flattens AlexNet's 6 × 6 pool5 map, whose layout tells a
            crop centred on an object from a shifted one; 1 is global average pooling.
        batch_size_per_image: warped regions per image in a fine-tuning batch (128 per 2 images).
        positive_fraction: foreground share of those (32 of 128).
        foreground_iou: fine-tuning foreground threshold (IoU ≥ 0.5; below is background).
        svm_c, svm_positive_weight, svm_bias: liblinear's C, the positive class weight, the bias term.
        svm_negative_iou: SVM negatives are proposals with IoU below this with every box of the class.
        hard_threshold, evict_threshold: a negative is hard when its score is above
            ``hard_threshold``; after retraining, cached negatives scoring below ``evict_threshold`` leave.
        retrain_every: retrain a class's SVM after this many new hard negatives.
        feature_norm: features are scaled so that their mean L2 norm is this.
        regression_iou, regression_lambda: box regression trains on proposals with IoU above this;
            ridge regularisation λ.
        score_threshold: minimum σ(SVM score) kept at test time (0.5 is the SVM's decision boundary).
        nms_iou: per-class NMS threshold at test time.
        detections_per_image: cap on the detections kept per image.
        max_proposals: use at most this many proposals per image, in selective search's ranking
            order (every warped crop is a backbone pass: the cost of R-CNN grows with this).
        crops_per_batch: warped crops per backbone call when extracting features (memory bound).
        feature_cache_dir: where stage 2 stores the features of every training proposal.
    """

    crop_size: int = ranged(227, 8)
    context_pad: int = ranged(16, 0)
    feature_dim: int = ranged(4096, 1)
    pool_size: int = ranged(1, 1)
    batch_size_per_image: int = ranged(64, 1)
    positive_fraction: float = ranged(0.25, 0, 1, low_open=True)
    foreground_iou: float = ranged(0.5, 0, 1)
    svm_c: float = ranged(1e-3, 0, low_open=True)
    svm_positive_weight: float = ranged(2.0, 0, low_open=True)
    svm_bias: float = ranged(10.0, 0, low_open=True)
    svm_negative_iou: float = ranged(0.3, 0, 1)
    hard_threshold: float = -1.0001
    evict_threshold: float = -1.2
    retrain_every: int = ranged(2000, 1)
    feature_norm: float = ranged(20.0, 0, low_open=True)
    regression_iou: float = ranged(0.6, 0, 1)
    regression_lambda: float = ranged(1000.0, 0)
    score_threshold: float = ranged(0.05, 0, 1)
    nms_iou: float = ranged(0.3, 0, 1)
    detections_per_image: int = ranged(100, 1)
    max_proposals: int = ranged(2000, 1)
    crops_per_batch: int = ranged(256, 1)
    feature_cache_dir: str = "cache/features"


@dataclass
class ProposalConfig:
    """Precomputed region proposals for R-CNN and Fast R-CNN (see :mod:`detect.proposals`).

    Attributes:
        selective_search: the algorithm's parameters (mode, box cap, minimum size, scale).
        cache_dir: where proposals are kept, one folder per dataset and parameter set.
        workers: processes computing selective search.
    """

    selective_search: SelectiveSearchConfig = field(default_factory=SelectiveSearchConfig)
    cache_dir: str = "cache/proposals"
    workers: int = ranged(2, 1)


@dataclass
class ModelConfig:
    """Which detector, on which backbone, at which input size.

    Each detector reads the sub-configs it needs: ``rpn`` (Faster R-CNN), ``roi_head`` (Fast and
    Faster R-CNN), ``proposals`` (R-CNN and Fast R-CNN), ``rcnn`` (R-CNN), ``yolo`` (YOLOv1).

    Attributes:
        name: a registered detector (``rcnn``, ``fast_rcnn``, ``faster_rcnn``, ``yolo``, ...; see
            :mod:`detect.models`).
        input_size: the longest image side fed to the network; images are resized to it and
            detections are mapped back to the original pixels.
    """

    name: str = "faster_rcnn"
    input_size: int = ranged(600, 32)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    rpn: RPNConfig = field(default_factory=RPNConfig)
    roi_head: RoIHeadConfig = field(default_factory=RoIHeadConfig)
    yolo: YOLOConfig = field(default_factory=YOLOConfig)
    proposals: ProposalConfig = field(default_factory=ProposalConfig)
    rcnn: RCNNConfig = field(default_factory=RCNNConfig)


@dataclass
class DataConfig:
    """Where the data is and how it is read.

    Attributes:
        dataset: ``builtin`` (the synthetic shapes, generated into ``builtin_root`` if absent), a
            PASCAL VOC folder, or a COCO JSON file (then ``train_split``/``test_split`` name JSON files).
        class_names: label order; None to discover them from the annotations.
        image_root: COCO only: the folder the images' ``file_name`` is relative to; None looks
            beside the JSON, in its ``images/`` sub-folder, or (COCO's layout) in ``../val2017/``
            for ``annotations/instances_val2017.json``.
        train_difficult: train on objects marked difficult (VOC) or crowd (COCO ``iscrowd``) like
            on any other (detectron2's choice for VOC); false leaves them out of the training
            split, so that they are background there (py-faster-rcnn's VOC default; torchvision's
            and detectron2's treatment of COCO crowd regions). Evaluation ignores them either way.
        on_invalid: ``error`` stops at the first bad annotation/image; ``skip`` drops and counts them.
        num_workers: data-loader worker processes.
    """

    dataset: str = BUILTIN_DATASET
    builtin_root: str = "data/shapes"
    builtin: SyntheticConfig = field(default_factory=SyntheticConfig)
    train_split: str = "trainval"
    test_split: str = "test"
    class_names: list[str] | None = None
    image_root: str | None = None
    train_difficult: bool = True
    on_invalid: Literal["error", "skip"] = "error"
    num_workers: int = ranged(2, 0)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)


@dataclass
class TrainConfig:
    """Optimisation schedule and bookkeeping.

    Attributes:
        epochs: passes over the training split.
        batch_size: images per iteration: the global batch, shared out between the processes
            when distributed.
        optimizer: ``sgd`` (with momentum, the papers' choice) or ``adamw`` (faster to leave the
            initial plateau when training a backbone from scratch).
        lr, momentum, weight_decay: optimizer settings (momentum is SGD's only).
        warmup_iters, warmup_factor: linear warm-up from ``lr * warmup_factor``.
        schedule: ``cosine`` (to zero at the end) or ``step`` (× ``gamma`` at each of ``milestones`` epochs).
        clip_grad_norm: gradient-norm clip; 0 disables it.
        eval_every: evaluate on the test split every this many epochs (0: only at the end).
        seed: seeds Python, NumPy, torch and the augmentation stream.
        output_dir: checkpoints, logs and plots go here.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:1``...
        amp: float16 mixed precision when training on CUDA.
        cpu_amp: bfloat16 mixed precision when training on a CPU that computes it natively
            (AVX512-BF16, AMX; elsewhere training stays float32). Off by default: each config
            turns it on once its results were measured with it. Evaluation and inference always
            run in float32 (:func:`detect.engine.runtime.autocast_dtype`).
        log_every: iterations between log lines and CSV rows.
        checkpoint_every: iterations between mid-epoch ``last`` checkpoints (0: only at epoch ends).
    """

    epochs: int = ranged(12, 1)
    batch_size: int = ranged(2, 1)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = ranged(0.01, 0, low_open=True)
    momentum: float = ranged(0.9, 0, 1)
    weight_decay: float = ranged(1e-4, 0)
    warmup_iters: int = ranged(100, 0)
    warmup_factor: float = ranged(0.001, 0, 1, low_open=True)
    schedule: Literal["cosine", "step"] = "cosine"
    milestones: tuple[int, ...] = ranged_tuple(low=1)
    gamma: float = ranged(0.1, 0, 1, low_open=True)
    clip_grad_norm: float = ranged(10.0, 0)
    eval_every: int = ranged(1, 0)
    seed: int = ranged(0, 0)
    output_dir: str = "runs/default"
    device: str = "auto"
    amp: bool = True
    cpu_amp: bool = False
    log_every: int = ranged(20, 1)
    checkpoint_every: int = ranged(0, 0)


@dataclass
class Config:
    """The root of an experiment's configuration."""

    name: str = "default"
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None) and apply overrides.

    Raises:
        ConfigError: missing/malformed file, unknown key, wrong type or out-of-range value; the
            message names the key and the file (or "command line" for overrides).
    """
    tree: dict = {}
    source = "defaults"
    if path is not None:
        source = os.fspath(path)
        if not Path(path).is_file():
            available = sorted(p.name for p in Path("configs").glob("*.yaml")) if Path("configs").is_dir() else []
            hint = f"; available: {', '.join(available)}" if available else ""
            raise ConfigError(f"config file not found{hint}", path)
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise ConfigError(f"malformed YAML ({' '.join(str(error).split())})", path) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError("a config file must be a mapping of sections (data, model, train)", path)
        tree = loaded or {}
    config = build(Config, tree, source)
    if overrides:
        for key, value in parse_overrides(overrides):
            set_dotted(tree, key, value, "command line")
        config = build(Config, tree, f"{source} + command line overrides")
    _check_consistency(config, source)
    return config


def _check_consistency(config: Config, source: str) -> None:
    """Cross-field rules that no single field's range expresses."""
    rpn = config.model.rpn
    if rpn.negative_iou > rpn.positive_iou:
        raise ConfigError(f"model.rpn.negative_iou ({rpn.negative_iou}) must not exceed "
                          f"model.rpn.positive_iou ({rpn.positive_iou})", source)
    roi = config.model.roi_head
    if roi.background_iou_low > roi.foreground_iou:
        raise ConfigError("model.roi_head.background_iou_low must not exceed foreground_iou", source)
    if len(roi.box_weights) != 4:
        raise ConfigError("model.roi_head.box_weights needs exactly 4 numbers", source)
    if not config.model.anchors.sizes or not config.model.anchors.aspect_ratios:
        raise ConfigError("model.anchors.sizes and aspect_ratios must not be empty", source)
    if config.data.class_names is not None and len(config.data.class_names) == 0:
        raise ConfigError("data.class_names must list at least one class (or be null to discover them)", source)
    rcnn = config.model.rcnn
    if 2 * rcnn.context_pad >= rcnn.crop_size:
        raise ConfigError(f"model.rcnn.context_pad ({rcnn.context_pad}) leaves no room in a {rcnn.crop_size}-pixel "
                          "crop; it must be less than half of model.rcnn.crop_size (the paper: 16 of 227)", source)
    if config.train.schedule == "step" and not config.train.milestones:
        raise ConfigError("train.schedule is 'step' but train.milestones is empty", source)


def config_to_dict(config: Any) -> dict:
    """Plain-Python view (tuples as lists) for YAML/JSON output and checkpoints."""
    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value
    return plain(dataclasses.asdict(config))


def config_from_dict(data: dict, source: str = "checkpoint") -> Config:
    """Rebuild a :class:`Config` saved with :func:`config_to_dict`."""
    return build(Config, data, source)


def dump_config(config: Config) -> str:
    """The effective configuration as YAML text."""
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)
