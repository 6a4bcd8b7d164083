"""Box geometry: the one home of IoU, NMS, box coding, matching and sampling.

Convention (every function here): a box is a float row ``x1, y1, x2, y2`` in continuous pixel
coordinates with the origin at the image's top-left corner; width = ``x2 - x1`` (no "+1"). This is
torchvision's convention. PASCAL VOC's 1-based inclusive integers are converted at load time
(see :mod:`detect.data.voc`).

Kernels come from :mod:`torchvision.ops` where they exist; what is added here is determinism
(ties broken by index), the sentinels, and the paper formulas in the docstrings.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision import ops

__all__ = [
    "box_area", "box_iou", "elementwise_box_iou", "nms", "batched_nms", "clip_boxes",
    "remove_small_boxes", "box_xyxy_to_cxcywh", "box_cxcywh_to_xyxy", "BoxCoder", "Matcher",
    "BalancedSampler", "sampling_generator",
]


def box_area(boxes: Tensor) -> Tensor:
    """Areas of ``boxes`` (Tensor[N, 4], x1 y1 x2 y2 pixels) → Tensor[N]; inverted boxes count 0."""
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise intersection over union.

    Args:
        boxes1 (Tensor[N, 4]), boxes2 (Tensor[M, 4]): x1, y1, x2, y2 in pixels.

    Returns:
        Tensor[N, M]: ``|a ∩ b| / |a ∪ b|``; 0 where the union is empty.
    """
    if boxes1.numel() == 0 or boxes2.numel() == 0:
        return boxes1.new_zeros((boxes1.shape[0], boxes2.shape[0]))
    return ops.box_iou(boxes1, boxes2).nan_to_num(0.0)


def elementwise_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of corresponding rows: boxes1, boxes2 (Tensor[..., 4], x1 y1 x2 y2) → Tensor[...]."""
    top_left = torch.maximum(boxes1[..., :2], boxes2[..., :2])
    bottom_right = torch.minimum(boxes1[..., 2:], boxes2[..., 2:])
    overlap = (bottom_right - top_left).clamp(min=0).prod(-1)
    area1 = (boxes1[..., 2:] - boxes1[..., :2]).clamp(min=0).prod(-1)
    area2 = (boxes2[..., 2:] - boxes2[..., :2]).clamp(min=0).prod(-1)
    union = area1 + area2 - overlap
    return torch.where(union > 0, overlap / union.clamp(min=torch.finfo(union.dtype).tiny),
                       torch.zeros_like(union))


#: Set by :mod:`detect.export` while tracing a model for ONNX: NMS then runs in float32 on the raw
#: scores (ONNX's NonMaxSuppression has no float64 and ONNX no stable sort), so exact score ties
#: may be visited in another order than in PyTorch.
EXPORTING = False


def _rank_scores(scores: Tensor) -> Tensor:
    """Distinct stand-in scores with the same order as ``scores``, ties broken by lower index first.

    torchvision's NMS sorts with an unstable sort, so equal scores could be visited in any order;
    ranking with a stable sort first makes NMS deterministic.
    """
    if EXPORTING:   # ONNX has no stable sort: the scores themselves (ties in any order)
        return scores.float()
    order = torch.argsort(scores, descending=True, stable=True)
    ranks = torch.empty(scores.shape[0], dtype=torch.float64, device=scores.device)
    ranks[order] = torch.arange(scores.shape[0], 0, -1, dtype=torch.float64, device=scores.device)
    return ranks


def _nms_precision(boxes: Tensor) -> Tensor:
    return boxes.float() if EXPORTING else boxes.double()


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, max_keep: int | None = None) -> Tensor:
    """Greedy non-maximum suppression.

    Visits boxes by decreasing score (equal scores: lower index first) and removes every later box
    whose IoU with a kept box is strictly greater than ``iou_threshold`` (IoU exactly at the
    threshold survives).

    Args:
        boxes (Tensor[N, 4]): x1, y1, x2, y2 in pixels.
        scores (Tensor[N]).
        max_keep: return at most this many (the first ones); see :func:`_greedy`.

    Returns:
        Tensor[K] int64: indices of the kept boxes, by decreasing score.
    """
    return _greedy(boxes, scores, max_keep,
                   lambda chosen, b, s: ops.nms(b, s, float(iou_threshold)))


def batched_nms(boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float,
                max_keep: int | None = None) -> Tensor:
    """Per-class NMS: boxes only suppress boxes of the same label (see :func:`nms`).

    Args:
        boxes (Tensor[N, 4]): x1, y1, x2, y2 in pixels. scores (Tensor[N]). labels (Tensor[N] int).
        max_keep: return at most this many (the first ones).

    Returns:
        Tensor[K] int64: kept indices by decreasing score.
    """
    return _greedy(boxes, scores, max_keep,
                   lambda chosen, b, s: ops.batched_nms(b, s, labels[chosen], float(iou_threshold)))


def _greedy(boxes: Tensor, scores: Tensor, max_keep: int | None, kernel) -> Tensor:
    """Run an NMS ``kernel(chosen, boxes[chosen], ranks[chosen])`` deterministically, stopping early
    when only ``max_keep`` boxes are wanted.

    Whether greedy NMS keeps a box depends only on the boxes scored above it, so the first
    ``max_keep`` boxes kept from the ``m`` best-scored ones are the first ``max_keep`` of the full
    result as soon as at least ``max_keep`` were kept. The kernel's cost grows with (boxes visited) ×
    (boxes kept): on the RPN's 2000 candidates of which 512 are wanted, running it on a prefix of
    twice the wanted count (doubled while too few survive) is several times faster than the full run.
    """
    if boxes.shape[0] == 0 and not EXPORTING:   # traced, this branch would be fixed into the graph
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    ranks = _rank_scores(scores)
    total = boxes.shape[0]
    if max_keep is None or EXPORTING or total <= 2 * max_keep:
        everything = slice(None)
        keep = kernel(everything, _nms_precision(boxes), ranks)
        return keep if max_keep is None else keep[:max_keep]
    order = torch.argsort(ranks, descending=True)   # ranks are distinct: no ties left to break
    count = 2 * max_keep
    while True:
        chosen = order[:count]
        keep = chosen[kernel(chosen, _nms_precision(boxes[chosen]), ranks[chosen])]
        if keep.numel() >= max_keep or count >= total:
            return keep[:max_keep]
        count = min(total, 2 * count)


def topk_count(values: Tensor, k: int) -> int | Tensor:
    """``min(k, len(values))`` for :meth:`Tensor.topk`; while exporting, computed in the graph from
    the traced length, so the exported model adapts to inputs with fewer candidates than ``k``."""
    if not EXPORTING:
        return min(k, values.shape[0])
    length = torch._shape_as_tensor(values)[0]
    return torch.clamp(length, max=k)


def clip_boxes(boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Clip boxes (Tensor[..., 4], pixels) to an image of ``(height, width)``: 0 ≤ x ≤ W, 0 ≤ y ≤ H."""
    height, width = image_size
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """Indices (Tensor[K] int64) of boxes whose width and height are both ≥ ``min_size`` pixels."""
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    return torch.nonzero((widths >= min_size) & (heights >= min_size)).flatten()


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """``x1, y1, x2, y2`` → ``cx, cy, w, h`` (Tensor[..., 4], pixels)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``cx, cy, w, h`` → ``x1, y1, x2, y2`` (Tensor[..., 4], pixels)."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)


#: Default cap on predicted log size ratios: a box may grow at most 1000/16 × per decode step
#: (torchvision and Detectron use the same value), which keeps ``exp`` finite early in training.
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


class BoxCoder:
    """Encode boxes as deltas relative to reference boxes, and decode them back (R-CNN, App. C).

    With reference box ``(px, py, pw, ph)`` (centre, size) and target ``(gx, gy, gw, gh)``::

        tx = wx (gx - px) / pw     ty = wy (gy - py) / ph
        tw = ww log(gw / pw)       th = wh log(gh / ph)

    ``weights = (wx, wy, ww, wh)`` are the inverse of the target standard deviations: Fast R-CNN
    normalises by std (0.1, 0.1, 0.2, 0.2), i.e. weights (10, 10, 5, 5); the RPN uses (1, 1, 1, 1).
    Decoding clamps ``tw, th`` at ``scale_clamp`` so a wild prediction cannot overflow ``exp``.
    """

    def __init__(self, weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
                 scale_clamp: float = DEFAULT_SCALE_CLAMP):
        if len(weights) != 4 or any(w <= 0 for w in weights):
            raise ValueError(f"BoxCoder weights must be 4 positive numbers, got {weights}")
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = scale_clamp

    def encode(self, reference: Tensor, targets: Tensor) -> Tensor:
        """Deltas (Tensor[N, 4]) that move ``reference`` (Tensor[N, 4]) onto ``targets`` (Tensor[N, 4])."""
        wx, wy, ww, wh = self.weights
        ref = box_xyxy_to_cxcywh(reference)
        tgt = box_xyxy_to_cxcywh(targets)
        return torch.stack((
            wx * (tgt[:, 0] - ref[:, 0]) / ref[:, 2],
            wy * (tgt[:, 1] - ref[:, 1]) / ref[:, 3],
            ww * torch.log(tgt[:, 2] / ref[:, 2]),
            wh * torch.log(tgt[:, 3] / ref[:, 3]),
        ), dim=1)

    def decode(self, deltas: Tensor, reference: Tensor) -> Tensor:
        """Apply deltas to reference boxes.

        Args:
            deltas (Tensor[N, 4·K]): K sets of ``(tx, ty, tw, th)`` per box (class-specific when K > 1).
            reference (Tensor[N, 4]): x1, y1, x2, y2 in pixels.

        Returns:
            Tensor[N, 4·K]: decoded x1, y1, x2, y2 in pixels (not clipped).
        """
        wx, wy, ww, wh = self.weights
        ref = box_xyxy_to_cxcywh(reference.to(deltas.dtype))
        count, sets = deltas.shape[0], deltas.shape[1] // 4   # explicit: -1 is ambiguous when there are no boxes
        deltas = deltas.reshape(count, sets, 4)
        cx = deltas[..., 0] / wx * ref[:, None, 2] + ref[:, None, 0]
        cy = deltas[..., 1] / wy * ref[:, None, 3] + ref[:, None, 1]
        w = torch.exp((deltas[..., 2] / ww).clamp(max=self.scale_clamp)) * ref[:, None, 2]
        h = torch.exp((deltas[..., 3] / wh).clamp(max=self.scale_clamp)) * ref[:, None, 3]
        return box_cxcywh_to_xyxy(torch.stack((cx, cy, w, h), dim=-1)).reshape(count, 4 * sets)


class Matcher:
    """Assign each prediction (anchor or proposal) to a ground-truth box, or mark it as background/ignored.

    For a prediction whose best IoU with any ground truth is ``q``:

    * ``q >= high_threshold``                → index of that ground truth (foreground);
    * ``ignore_below <= q < low_threshold``  → :attr:`BACKGROUND`;
    * ``low_threshold <= q < high_threshold`` or ``q < ignore_below`` → :attr:`IGNORE`.

    Faster R-CNN's RPN uses ``high=0.7, low=0.3``; Fast R-CNN uses ``high=low=0.5,
    ignore_below=0.1`` (background IoU in [0.1, 0.5)). With ``allow_low_quality_matches`` every
    ground truth also claims the prediction(s) with its highest IoU (ties included, IoU > 0), so no
    object is left without a positive (Faster R-CNN §3.1.2). An image without ground truth makes
    every prediction background: such images are the negatives.
    """

    BACKGROUND = -1
    IGNORE = -2

    def __init__(self, high_threshold: float, low_threshold: float,
                 allow_low_quality_matches: bool = False, ignore_below: float = 0.0):
        if not 0.0 <= ignore_below <= low_threshold <= high_threshold <= 1.0:
            raise ValueError("Matcher needs 0 <= ignore_below <= low_threshold <= high_threshold <= 1, "
                             f"got {ignore_below}, {low_threshold}, {high_threshold}")
        self.high_threshold = high_threshold
        self.low_threshold = low_threshold
        self.allow_low_quality_matches = allow_low_quality_matches
        self.ignore_below = ignore_below

    def __call__(self, iou: Tensor) -> Tensor:
        """Match.

        Args:
            iou (Tensor[G, N]): IoU between G ground-truth boxes and N predictions.

        Returns:
            Tensor[N] int64: ground-truth index, or :attr:`BACKGROUND` / :attr:`IGNORE`.
        """
        num_predictions = iou.shape[1]
        if iou.shape[0] == 0:
            return torch.full((num_predictions,), self.BACKGROUND, dtype=torch.int64, device=iou.device)
        best_iou, matches = iou.max(dim=0)
        result = matches.clone()
        result[best_iou < self.high_threshold] = self.IGNORE
        result[(best_iou >= self.ignore_below) & (best_iou < self.low_threshold)] = self.BACKGROUND
        if self.allow_low_quality_matches:
            best_per_gt = iou.max(dim=1, keepdim=True).values
            _, prediction_index = torch.nonzero((iou == best_per_gt) & (best_per_gt > 0), as_tuple=True)
            # A prediction that is the best for several ground truths keeps its own argmax.
            result[prediction_index] = matches[prediction_index]
        return result


class BalancedSampler:
    """Sample a fixed-size minibatch with at most a given fraction of positives (Fast R-CNN §2.3).

    Args:
        batch_size_per_image: samples per image (RPN: 256; Fast R-CNN: 64).
        positive_fraction: upper bound on the positive share (RPN: 0.5; Fast R-CNN: 0.25); when
            there are fewer positives the batch is filled with negatives.
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float):
        if batch_size_per_image <= 0 or not 0.0 < positive_fraction <= 1.0:
            raise ValueError("BalancedSampler needs batch_size_per_image > 0 and 0 < positive_fraction <= 1, "
                             f"got {batch_size_per_image}, {positive_fraction}")
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction

    def __call__(self, matches: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Choose positives (``matches >= 0``) and negatives (``matches == Matcher.BACKGROUND``).

        Returns:
            (positive_indices, negative_indices): Tensor[P] and Tensor[Q] int64,
            ``P <= positive_fraction * batch``, ``P + Q <= batch``.
        """
        positive = torch.nonzero(matches >= 0).flatten()
        negative = torch.nonzero(matches == Matcher.BACKGROUND).flatten()
        num_positive = min(positive.numel(), int(self.batch_size_per_image * self.positive_fraction))
        num_negative = min(negative.numel(), self.batch_size_per_image - num_positive)
        device = matches.device
        pick_positive = torch.randperm(positive.numel(), generator=generator, device="cpu")[:num_positive]
        pick_negative = torch.randperm(negative.numel(), generator=generator, device="cpu")[:num_negative]
        return positive[pick_positive.to(device)], negative[pick_negative.to(device)]


def sampling_generator(target: dict, stream: int) -> torch.Generator | None:
    """The random generator for one image's minibatch sampling, or None (the global generator).

    Datasets give every training sample a ``seed`` (its augmentation seed, a function of the
    training seed, the epoch and the sample index). Sampling anchors and regions from a generator
    seeded by it and by ``stream`` (one per sampler: RPN, RoI head, ...) makes the sampled
    minibatch a property of the image rather than of the process that trains on it: a run on two
    processes samples what a one-process run samples, and a resumed run what the uninterrupted
    one did. Targets without a seed (hand-built ones) use the global generator.
    """
    seed = target.get("seed")
    if seed is None:
        return None
    return torch.Generator().manual_seed(int(seed) + (stream << 32))
