"""YOLOv1 (Redmon et al., 2016): detection as one regression from the image to an S × S grid.

The image is stretched to a square ``input_size`` and divided into ``S × S`` cells. Each cell
predicts ``B`` boxes — ``(x, y, √w, √h, confidence)`` — and one set of ``C`` class
probabilities, so the network's output is ``S × S × (5B + C)``:

* ``x, y``: the box centre as an offset inside its cell, in ``[0, 1]``;
* ``√w, √h``: square roots of the box size as a fraction of the image (the square root makes a
  given error cost more on a small box than on a large one, §2.2);
* ``confidence``: trained towards the IoU between the box and the object it is responsible for,
  and towards 0 where there is no object;
* ``P(class | object)``: one distribution per cell, whatever its ``B`` boxes say.

Network (§2.1): the shared backbone, extra 3 × 3 conv layers (the first with stride 2, like the
paper's ``3×3×1024-s-2``), average pooling to ``S × S``, a fully connected layer with dropout 0.5,
and a linear fully connected layer producing the grid. Leaky ReLU (slope 0.1) follows every layer
but the last. Departures from the paper, both for from-scratch training in a CPU-sized schedule:

* the extra conv layers have BatchNorm (as in YOLOv2);
* optionally (``yolo.first_conv_stride: 1``) the first extra conv keeps the backbone's
  resolution instead of halving it, so the cell head below sees more than one position per cell;
* optionally (``yolo.noobj_ignore_iou`` below 1), YOLOv2's rule in the no-object term: a
  predictor whose box already overlaps an object with IoU above it is not pushed towards 0.
  With the paper's loss the ``B`` predictors of an object's cell take turns being responsible
  early in training, so each one's confidence is trained towards the IoU on some steps and
  towards 0 on others, and the neighbouring cells' boxes on the same object are pushed to 0 too;
* optionally (``yolo.local_head``, off by default), a *cell head* added to the fully connected
  output, cell by cell: each cell's own ``k × k`` patch of the last conv map (``k`` = map side /
  S, 2 for the built-in config) goes through a ``k × k``-stride-``k`` conv to ``local_hidden``
  channels, Leaky ReLU and a linear 1 × 1 conv (``local_hidden: 0``: a linear 1 × 1 conv on the
  S × S average-pooled map). The fully connected path's output is then scaled by a learnable
  scalar that starts at 0 (as in ReZero, Bachlechner et al., 2020), so the cell head learns
  first and the fc path, which still sees the whole image as in the paper, adds what it can.
  Why, measured on the built-in data with a backbone trained from scratch (3-epoch runs,
  docs/benchmarks.md): the paper's fc-only head had learnt nothing (mAP 0.000), a linear 1 × 1
  shortcut beside an ungated fc path 0.000, the cell head beside an ungated fc path 0.011, and
  with the gate 0.078. After the full 18 epochs the gate is only 0.0026 and the fc path makes
  ~4 % of the output (rms 0.012 against 0.28 on test images): trained from scratch on this
  data, the detector is in effect the per-cell head — the fully convolutional form YOLOv2 moved
  to.

Loss (§2.2, eq. 3), summed over the batch and divided by the number of images, returned as its
four named parts:

* ``coord`` = λcoord Σ_responsible [(x − x̂)² + (y − ŷ)² + (√w − √ŵ)² + (√h − √ĥ)²], λcoord = 5;
* ``obj`` = Σ_responsible (C − IoU)², the IoU of the predicted box with its object (a constant);
* ``noobj`` = λnoobj Σ_other predictors C², λnoobj = 0.5 — every predictor that is not
  responsible for an object, including the other ``B − 1`` of a cell that holds one (less those
  that ``noobj_ignore_iou`` leaves out, when set);
* ``cls`` = Σ_cells with an object Σ_c (p(c) − p̂(c))² (or, with ``yolo.class_loss: softmax``,
  not in the paper, the cross-entropy −log softmax(p)[c*] of the object's class, YOLOv2's choice).

An object belongs to the cell holding its centre; its *responsible* predictor is the one of the
cell's ``B`` whose current box has the highest IoU with it (the first on ties). A cell holds at
most one object (YOLOv1's known limit): when several centres fall into one cell, the largest
object is trained and the others are ignored.

Decoding (§2.4): class-specific confidence ``P(class | object) × confidence`` for every box and
class (both clamped to ``[0, 1]``: the outputs are linear; the class outputs go through a softmax
instead when they were trained with it), score threshold, per-class NMS, and a
cap on detections per image. Boxes are in input-image pixels, ``x1, y1, x2, y2``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detect import boxes as box_ops
from detect.backbones import Backbone, backbone_from_config
from detect.boxes import batched_nms, box_cxcywh_to_xyxy, clip_boxes, elementwise_box_iou
from detect.config import ModelConfig, YOLOConfig
from detect.models.base import Detections, Detector, ImageBatch, ImageTransform

#: Per-box fields of the output, in order.
BOX_FIELDS = ("x", "y", "sqrt_w", "sqrt_h", "confidence")


def _window_matrix(size: int, cells: int) -> Tensor:
    """[cells, size]: row i averages adaptive pooling's window i of a length-``size`` axis."""
    matrix = torch.zeros(cells, size)
    for i in range(cells):
        start, end = (i * size) // cells, -(-((i + 1) * size) // cells)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


class GridPool(nn.Module):
    """Average-pool features to the S × S grid (adaptive pooling; a fixed-window average pool,
    the same numbers, when the feature map divides evenly, which ONNX export needs)."""

    def __init__(self, grid_size: int):
        super().__init__()
        self.grid_size = grid_size

    def forward(self, features: Tensor) -> Tensor:
        height, width = int(features.shape[-2]), int(features.shape[-1])   # constants when traced
        if height % self.grid_size == 0 and width % self.grid_size == 0:
            return F.avg_pool2d(features, (height // self.grid_size, width // self.grid_size))
        if not box_ops.EXPORTING:
            return F.adaptive_avg_pool2d(features, self.grid_size)
        # ONNX has no adaptive pooling to a size that does not divide the input: the same windows
        # (rows floor(i·H/S) … ceil((i+1)·H/S)) as averaging matrices, P_h · X · P_wᵀ.
        rows = _window_matrix(height, self.grid_size).to(features)
        columns = _window_matrix(width, self.grid_size).to(features)
        return torch.einsum("ih,nchw,jw->ncij", rows, features, columns)


def _conv_output_side(side: int, stride: int) -> int:
    """Side of a 3 × 3, padding-1 conv's output with this stride."""
    return (side - 1) // stride + 1


class YOLOHead(nn.Module):
    """Backbone features [N, C_in, h, w] → raw predictions [N, S, S, 5B + C].

    Args:
        in_channels: backbone channels. num_classes: C. config: :class:`detect.config.YOLOConfig`.
        feature_side: side of the (square) backbone map, which sets the cell head's patch size.
    """

    def __init__(self, in_channels: int, num_classes: int, config: YOLOConfig, feature_side: int):
        super().__init__()
        self.grid_size = config.grid_size
        self.boxes_per_cell = config.boxes_per_cell
        self.num_classes = num_classes
        layers: list[nn.Module] = []
        channels, side = in_channels, feature_side
        for index, width in enumerate(config.conv_channels):
            stride = config.first_conv_stride if index == 0 else 1
            layers += [nn.Conv2d(channels, width, 3, stride=stride, padding=1, bias=False),
                       nn.BatchNorm2d(width), nn.LeakyReLU(config.leaky_slope, inplace=True)]
            channels, side = width, _conv_output_side(side, stride)
        self.convs = nn.Sequential(*layers)
        self.pool = GridPool(config.grid_size)
        outputs = config.grid_size ** 2 * (5 * config.boxes_per_cell + num_classes)
        self.fc = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * config.grid_size ** 2, config.hidden_dim),
            nn.LeakyReLU(config.leaky_slope, inplace=True),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden_dim, outputs),  # linear: no activation on the last layer
        )
        # A quiet start: near-zero predictions give small, balanced losses in the first iterations.
        nn.init.normal_(self.fc[-1].weight, std=0.01)
        nn.init.zeros_(self.fc[-1].bias)
        self.local: nn.Module | None = None
        self.fc_gate: nn.Parameter | None = None
        if config.local_head:
            outputs_per_cell = 5 * config.boxes_per_cell + num_classes
            patch = max(1, round(side / config.grid_size)) if config.local_hidden else 1
            self.local_pool = GridPool(config.grid_size * patch)   # the map itself when it divides
            if config.local_hidden:
                last = nn.Conv2d(config.local_hidden, outputs_per_cell, 1)
                self.local = nn.Sequential(nn.Conv2d(channels, config.local_hidden, patch, stride=patch),
                                           nn.LeakyReLU(config.leaky_slope, inplace=True), last)
            else:
                last = self.local = nn.Conv2d(channels, outputs_per_cell, 1)
            nn.init.normal_(last.weight, std=0.01)
            nn.init.zeros_(last.bias)
            self.fc_gate = nn.Parameter(torch.zeros(()))

    def forward(self, features: Tensor) -> Tensor:
        size = self.grid_size
        mapped = self.convs(features)
        out = self.fc(self.pool(mapped)).view(features.shape[0], size, size, 5 * self.boxes_per_cell + self.num_classes)
        if self.local is not None:
            out = out * self.fc_gate + self.local(self.local_pool(mapped)).permute(0, 2, 3, 1)
        return out.float()   # float32 for the loss and the decoding under mixed precision


def split_predictions(predictions: Tensor, boxes_per_cell: int) -> tuple[Tensor, Tensor]:
    """[..., S, S, 5B + C] → (boxes [..., S, S, B, 5] with :data:`BOX_FIELDS`, class scores [..., S, S, C])."""
    box_part = predictions[..., : 5 * boxes_per_cell]
    return box_part.reshape(*box_part.shape[:-1], boxes_per_cell, 5), predictions[..., 5 * boxes_per_cell:]


def cell_boxes(boxes: Tensor, rows: Tensor, columns: Tensor, grid_size: int) -> Tensor:
    """Predicted ``(x, y, √w, √h)`` [..., 4] of cells ``(rows, columns)`` (broadcast against [...]) → ``x1 y1 x2 y2`` as
    fractions of the image.

    Negative ``√w, √h`` (the outputs are linear) count as zero size, so the square can never
    turn a wrong-signed prediction into a plausible box.
    """
    cx = (columns.to(boxes.dtype) + boxes[..., 0]) / grid_size
    cy = (rows.to(boxes.dtype) + boxes[..., 1]) / grid_size
    w, h = boxes[..., 2].clamp(min=0) ** 2, boxes[..., 3].clamp(min=0) ** 2
    return box_cxcywh_to_xyxy(torch.stack([cx, cy, w, h], dim=-1))


def grid_boxes(box_preds: Tensor) -> Tensor:
    """Every predictor's box: ``box_preds`` [S, S, B, ≥4] → ``x1 y1 x2 y2`` [S, S, B, 4], fractions of the image."""
    grid_size, boxes_per_cell = box_preds.shape[0], box_preds.shape[2]
    cells = torch.arange(grid_size, device=box_preds.device)
    rows = cells.view(-1, 1, 1).expand(grid_size, grid_size, boxes_per_cell)
    columns = cells.view(1, -1, 1).expand(grid_size, grid_size, boxes_per_cell)
    return cell_boxes(box_preds[..., :4], rows, columns, grid_size)


def assign_objects(boxes: Tensor, image_size: tuple[int, int], grid_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Which cell holds each object, and which object each occupied cell trains on.

    Args:
        boxes: ground truth (Tensor[N, 4], x1 y1 x2 y2 pixels). image_size: ``(height, width)``.

    Returns:
        ``(objects, rows, columns)``: indices into ``boxes`` of the objects kept — the largest
        object of each cell holding several centres — and their cells.
    """
    height, width = image_size
    centre_x = (boxes[:, 0] + boxes[:, 2]) / 2 / width
    centre_y = (boxes[:, 1] + boxes[:, 3]) / 2 / height
    columns = (centre_x * grid_size).floor().long().clamp(0, grid_size - 1)
    rows = (centre_y * grid_size).floor().long().clamp(0, grid_size - 1)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    kept: dict[int, int] = {}
    for index in torch.argsort(area, descending=True, stable=True).tolist():
        kept.setdefault(int(rows[index]) * grid_size + int(columns[index]), index)
    objects = torch.tensor(sorted(kept.values()), dtype=torch.long, device=boxes.device)
    return objects, rows[objects], columns[objects]


def yolo_loss(predictions: Tensor, targets: list[dict], image_sizes: list[tuple[int, int]],
              boxes_per_cell: int, lambda_coord: float = 5.0, lambda_noobj: float = 0.5,
              noobj_ignore_iou: float = 1.0, class_loss: str = "sse") -> dict[str, Tensor]:
    """The YOLOv1 sum-squared loss (module docstring), in its four named parts.

    Args:
        predictions: raw network output (Tensor[N, S, S, 5B + C]).
        targets: one dict per image with ``boxes`` (Tensor[K, 4], x1 y1 x2 y2 pixels of the
            network input) and ``labels`` (Tensor[K], 0..C-1); K may be 0.
        image_sizes: ``(height, width)`` of each network input image.
        boxes_per_cell: B.
        noobj_ignore_iou: predictors whose box overlaps some object of the image with IoU above
            this are left out of the no-object term (YOLOv2's rule); 1.0, the default, leaves
            nobody out, as the paper.
        class_loss: ``"sse"`` (the paper) or ``"softmax"`` (cross-entropy; see the module docstring).
    """
    num_images, grid_size = predictions.shape[0], predictions.shape[1]
    box_preds, class_preds = split_predictions(predictions, boxes_per_cell)
    num_classes = class_preds.shape[-1]
    responsible = torch.zeros(box_preds.shape[:-1], dtype=torch.bool, device=predictions.device)
    ignored = torch.zeros_like(responsible)
    coord = predictions.new_zeros(())
    obj = predictions.new_zeros(())
    cls = predictions.new_zeros(())
    for image, (target, size) in enumerate(zip(targets, image_sizes)):
        if target["boxes"].numel() == 0:
            continue
        objects, rows, columns = assign_objects(target["boxes"], size, grid_size)
        height, width = size
        scale = target["boxes"].new_tensor([width, height, width, height])
        if noobj_ignore_iou < 1.0:
            with torch.no_grad():
                overlaps = box_ops.box_iou(grid_boxes(box_preds[image]).reshape(-1, 4), target["boxes"] / scale)
                ignored[image] = (overlaps.amax(dim=1) > noobj_ignore_iou).view(ignored.shape[1:])
        truth = target["boxes"][objects] / scale                      # [K, 4], fractions of the image
        predicted = box_preds[image, rows, columns]                   # [K, B, 5]
        with torch.no_grad():
            iou = elementwise_box_iou(cell_boxes(predicted[..., :4], rows[:, None], columns[:, None], grid_size),
                                      truth[:, None, :].expand(-1, boxes_per_cell, -1))   # [K, B]
        best = iou.argmax(dim=1)                                      # first of the B on ties
        responsible[image, rows, columns, best] = True
        chosen = predicted[torch.arange(len(objects)), best]          # [K, 5]
        centre_x = (truth[:, 0] + truth[:, 2]) / 2 * grid_size - columns
        centre_y = (truth[:, 1] + truth[:, 3]) / 2 * grid_size - rows
        size_target = (truth[:, 2:] - truth[:, :2]).clamp(min=0).sqrt()
        coord = coord + ((chosen[:, 0] - centre_x) ** 2 + (chosen[:, 1] - centre_y) ** 2).sum() \
            + ((chosen[:, 2:4] - size_target) ** 2).sum()
        obj = obj + ((chosen[:, 4] - iou[torch.arange(len(objects)), best]) ** 2).sum()
        labels, outputs = target["labels"][objects], class_preds[image, rows, columns]
        if class_loss == "softmax":
            cls = cls + F.cross_entropy(outputs, labels, reduction="sum")
        else:
            cls = cls + ((outputs - F.one_hot(labels, num_classes).to(outputs.dtype)) ** 2).sum()
    noobj = (box_preds[..., 4][~(responsible | ignored)] ** 2).sum()
    return {"coord": lambda_coord * coord / num_images, "obj": obj / num_images,
            "noobj": lambda_noobj * noobj / num_images, "cls": cls / num_images}


def decode_predictions(predictions: Tensor, image_size: tuple[int, int], boxes_per_cell: int,
                       score_threshold: float, nms_iou: float, max_detections: int,
                       class_loss: str = "sse") -> Detections:
    """One image's raw output [S, S, 5B + C] → :class:`Detections` in input-image pixels.

    Every (box, class) pair scores ``P(class | object) × confidence``; pairs below
    ``score_threshold`` are dropped, then per-class NMS at ``nms_iou`` keeps at most
    ``max_detections`` boxes, by descending score. ``class_loss`` says how the class outputs
    were trained: ``"sse"`` reads them as probabilities (clamped), ``"softmax"`` as logits.
    """
    height, width = image_size
    box_preds, class_preds = split_predictions(predictions, boxes_per_cell)
    boxes = grid_boxes(box_preds) * predictions.new_tensor([width, height] * 2)
    confidence = box_preds[..., 4].clamp(0, 1)                                  # [S, S, B]
    class_probs = class_preds.softmax(dim=-1) if class_loss == "softmax" else class_preds.clamp(0, 1)
    scores = confidence[..., None] * class_probs[:, :, None, :]                # [S, S, B, C]
    num_classes = class_preds.shape[-1]
    boxes = clip_boxes(boxes.reshape(-1, 4), image_size)
    scores = scores.reshape(-1, num_classes)
    box_index, labels = torch.nonzero(scores > score_threshold, as_tuple=True)
    boxes, scores = boxes[box_index], scores[box_index, labels]
    keep = batched_nms(boxes, scores, labels, nms_iou, max_keep=max_detections)
    return Detections(boxes[keep], scores[keep], labels[keep])


class YOLOv1(Detector):
    """Backbone → :class:`YOLOHead` → grid; trained with :func:`yolo_loss`, decoded with
    :func:`decode_predictions`.

    Args:
        backbone: shared feature extractor. num_classes: C. config: :class:`detect.config.YOLOConfig`.
        input_size: side of the square network input; images are stretched to it.
    """

    def __init__(self, backbone: Backbone, num_classes: int, config: YOLOConfig, input_size: int):
        super().__init__()
        self.backbone = backbone
        feature_side = -(-input_size // backbone.stride)
        self.head = YOLOHead(backbone.out_channels, num_classes, config, feature_side)
        self.config = config
        self.num_classes = num_classes
        # Every image becomes input_size × input_size, so the batch needs no padding.
        self.transform = ImageTransform(input_size, size_divisible=1, keep_aspect=False)

    def losses(self, batch: ImageBatch, targets: list[dict]) -> dict[str, Tensor]:
        predictions = self.head(self.backbone(batch.tensors))
        return yolo_loss(predictions, targets, batch.image_sizes, self.config.boxes_per_cell,
                         self.config.lambda_coord, self.config.lambda_noobj, self.config.noobj_ignore_iou,
                         self.config.class_loss)

    def detect(self, batch: ImageBatch) -> list[Detections]:
        predictions = self.head(self.backbone(batch.tensors))
        return [decode_predictions(p, size, self.config.boxes_per_cell, self.config.score_threshold,
                                   self.config.nms_iou, self.config.detections_per_image, self.config.class_loss)
                for p, size in zip(predictions, batch.image_sizes)]


def build_yolo(config: ModelConfig, num_classes: int) -> YOLOv1:
    backbone = backbone_from_config(config.backbone)
    return YOLOv1(backbone, num_classes, config.yolo, config.input_size)
