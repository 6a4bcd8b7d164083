"""Export a trained Faster R-CNN or YOLO to ONNX or TorchScript, and run the exported model.

The exported graph is :meth:`Detector.detect` for one image — backbone, heads, box decoding, score
threshold, per-class NMS and the detection cap:

=====================  ==================================================================
input ``image``        float32 ``[1, 3, H, W]``: the RGB image in ``[0, 1]`` resized and padded
                       as below. Faster R-CNN: any ``H``, ``W`` (dynamic axes); YOLO: exactly
                       ``input_size × input_size`` (its fully connected head fixes the grid).
input ``image_size``   int64 ``[2]``: height and width of the resized image inside the padding
                       (boxes are clipped to it). YOLO's graph has no such input.
output ``boxes``       float32 ``[N, 4]``, ``x1 y1 x2 y2`` in the pixels of ``image``
output ``scores``      float32 ``[N]``, descending
output ``labels``      int64 ``[N]``, ``0 … C-1``; class names are in the ``.json`` sidecar
=====================  ==================================================================

``N`` is dynamic. The sidecar ``<file>.json`` holds the class names and the values below.
Pre-processing (:class:`detect.models.base.ImageTransform`, which
:class:`ExportedDetector` reuses): Faster R-CNN resizes the image bilinearly so its longer side
is ``input_size`` keeping the aspect ratio and pads it with zeros at the bottom and right to
multiples of ``size_divisible``; YOLO stretches it to the square. Post-processing: divide the
boxes by the resize factors (``x`` by ``new_w / w``, ``y`` by ``new_h / h``). The sidecar holds
``input_size``, ``size_divisible`` and ``keep_aspect`` for other languages.

NMS in an exported graph (ONNX or TorchScript) runs in float32 on the raw scores; PyTorch breaks
exact score ties by index in float64, so the two can differ in such rare ties.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detect.errors import ConfigError, DetectError
from detect.io import atomic_write_json, make_output_dir
from detect.models.base import Detections, ImageBatch, ImageTransform

logger = logging.getLogger(__name__)

EXPORTABLE = ("faster_rcnn", "yolo")
FORMATS = ("onnx", "torchscript")
OPSET = 17


class _DetectOneImage(nn.Module):
    """``detect`` of one network-sized image as ``forward(image, image_size) -> (boxes, scores, labels)``.

    ``image_size`` (int64 ``[2]``: height, width of the image inside the zero padding) is a graph
    input so that boxes are clipped to the real image, as in PyTorch, whatever its aspect ratio.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: Tensor, image_size: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        size = (image_size[0], image_size[1])
        detections = self.model.detect(ImageBatch(image, [size], [size]))[0]
        return detections.boxes.float(), detections.scores.float(), detections.labels


def export(model: nn.Module, model_name: str, class_names: Sequence[str], path: str | os.PathLike,
           fmt: str = "onnx", example: Tensor | None = None) -> Path:
    """Write ``model`` (eval mode, CPU) to ``path`` and the sidecar ``<path>.json`` describing its contract.

    ``example`` (an RGB image ``[3, h, w]`` in [0, 1]) is the image traced; a real one is best, but
    nothing depends on it: every data-dependent step is in the graph.
    """
    if model_name not in EXPORTABLE:
        raise ConfigError(f"export supports {', '.join(EXPORTABLE)}, not {model_name!r} "
                          "(R-CNN and Fast R-CNN need selective search, which has no ONNX form)")
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    path = Path(path)
    make_output_dir(path.parent)
    model = model.eval().cpu()
    if example is None:
        side = model.transform.input_size
        example = torch.rand(3, side, side, generator=torch.Generator().manual_seed(0))
    batch = model.transform([example.float()])[0]
    height, width = batch.tensors.shape[-2:]
    wrapper = _DetectOneImage(model).eval()
    example = (batch.tensors, torch.tensor(batch.image_sizes[0]))
    dynamic_axes = {"boxes": {0: "detections"}, "scores": {0: "detections"}, "labels": {0: "detections"}}
    if model.transform.keep_aspect:   # fully convolutional up to RoI pooling: any padded image size
        dynamic_axes["image"] = {2: "height", 3: "width"}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")   # per process: two exports to one path don't collide
    try:
        with torch.no_grad(), _export_mode(), warnings.catch_warnings():
            # The tracer warns about every Python int taken from a shape; those are the fixed
            # sizes by design (data-dependent steps are in the graph, see boxes.EXPORTING).
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            if fmt == "onnx":
                torch.onnx.export(wrapper, example, str(tmp), dynamo=False, opset_version=OPSET,
                                  input_names=["image", "image_size"], output_names=["boxes", "scores", "labels"],
                                  dynamic_axes=dynamic_axes)
            else:
                torch.jit.trace(wrapper, example, check_trace=False).save(str(tmp))
        os.replace(tmp, path)
    except OSError as error:
        raise DetectError(f"cannot write the exported model ({error.strerror})", path) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    atomic_write_json(sidecar_path(path), {
        "format": fmt, "model": model_name, "class_names": list(class_names), "input": [1, 3, height, width],
        "keep_aspect": model.transform.keep_aspect, "input_size": model.transform.input_size,
        "size_divisible": model.transform.size_divisible, "dynamic_size": model.transform.keep_aspect, "outputs": ["boxes", "scores", "labels"],
        "opset": OPSET if fmt == "onnx" else None})
    return path


def sidecar_path(path: str | os.PathLike) -> Path:
    """``model.onnx`` → ``model.onnx.json`` (so an ONNX and a TorchScript export can share a folder)."""
    path = Path(path)
    return path.with_name(path.name + ".json")


class _export_mode:
    """While exporting, :mod:`detect.boxes` runs NMS in float32 (ONNX's NonMaxSuppression has no float64)."""

    def __enter__(self):
        from detect import boxes
        self._previous, boxes.EXPORTING = boxes.EXPORTING, True

    def __exit__(self, *exc):
        from detect import boxes
        boxes.EXPORTING = self._previous


class ExportedDetector:
    """Run an exported model on images of any size, with the documented pre- and post-processing.

    Args:
        path: the ``.onnx`` (run with onnxruntime, CPU) or TorchScript ``.pt`` file; its ``.json``
            sidecar gives the input size and class names.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        sidecar = sidecar_path(self.path)
        if not self.path.is_file() or not sidecar.is_file():
            raise DetectError("exported model or its .json sidecar not found; run tools/export.py first", self.path)
        self.meta = json.loads(sidecar.read_text())
        self.class_names = self.meta["class_names"]
        _, _, self.height, self.width = self.meta["input"]
        self.transform = ImageTransform(self.meta["input_size"], self.meta["size_divisible"], self.meta["keep_aspect"])
        if self.meta["format"] == "onnx":
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.log_severity_level = 3
            self.session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
            self.inputs = {item.name for item in self.session.get_inputs()}   # YOLO's graph ignores image_size
            self.module = None
        else:
            self.session = None
            self.module = torch.jit.load(str(self.path)).eval()

    def preprocess(self, image: Tensor) -> ImageBatch:
        """An RGB float image ``[3, h, w]`` in [0, 1] → the padded network input, as in PyTorch."""
        return self.transform([image.float()])[0]

    def run(self, image: np.ndarray, image_size: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The raw graph: ``image [1, 3, H, W]``, ``image_size [2]`` → boxes, scores, labels in input pixels."""
        if self.session is not None:
            feeds = {"image": image, "image_size": image_size}
            boxes, scores, labels = self.session.run(None, {k: v for k, v in feeds.items() if k in self.inputs})
            return boxes, scores, labels
        with torch.no_grad():
            boxes, scores, labels = self.module(torch.from_numpy(image), torch.from_numpy(image_size))
        return boxes.numpy(), scores.numpy(), labels.numpy()

    def predict(self, image: Tensor) -> Detections:
        """Detections in the original image's pixels."""
        batch = self.preprocess(image)
        if not self.meta["dynamic_size"] and tuple(batch.tensors.shape[-2:]) != (self.height, self.width):
            raise DetectError(f"this export takes {self.height}×{self.width} inputs only", self.path)
        boxes, scores, labels = self.run(batch.tensors.numpy(), np.array(batch.image_sizes[0], np.int64))
        detections = Detections(torch.from_numpy(np.asarray(boxes, np.float32)).reshape(-1, 4),
                                torch.from_numpy(np.asarray(scores, np.float32)),
                                torch.from_numpy(np.asarray(labels, np.int64)))
        return self.transform.postprocess([detections], batch)[0]


def score_threshold_of(model: nn.Module) -> float:
    """The test-time score threshold an exported model applies."""
    config = model.roi_head.config if hasattr(model, "roi_head") else model.config
    return float(config.score_threshold)


def compare_with_pytorch(model: nn.Module, exported: ExportedDetector, images: Sequence[Tensor],
                         score_tolerance: float = 1e-4) -> dict:
    """Run both on ``images``; match each PyTorch detection to the exported one of the same label
    with the nearest box, and report the largest differences.

    A detection found by only one side whose score is within ``score_tolerance`` of the score
    threshold is a *boundary* case (the two computations round differently in the 7th digit, so
    one keeps a 0.05000004 the other drops as 0.04999998); it is counted, not a mismatch.

    Returns:
        ``{"same": every other detection matched, "box": max |Δ| px, "score": max |Δ|,
        "detections": PyTorch's total, "boundary": boundary cases}``.
    """
    threshold = score_threshold_of(model) + score_tolerance
    same, worst_box, worst_score, total, boundary = True, 0.0, 0.0, 0, 0
    model = model.eval()
    for image in images:
        with torch.no_grad():
            reference = model.predict([image])[0]
        candidate = exported.predict(image)
        total += reference.boxes.shape[0]
        used = torch.zeros(candidate.boxes.shape[0], dtype=torch.bool)
        for box, score, label in zip(reference.boxes.float(), reference.scores.float(), reference.labels):
            distance = (candidate.boxes - box).abs().amax(dim=1)
            distance[(candidate.labels != label) | used] = float("inf")
            index = int(distance.argmin()) if len(distance) else -1
            if index < 0 or not torch.isfinite(distance[index]) or distance[index] > 1.0:
                boundary += int(score < threshold)
                same = same and bool(score < threshold)
                continue
            used[index] = True
            worst_box = max(worst_box, float(distance[index]))
            worst_score = max(worst_score, abs(float(candidate.scores[index]) - float(score)))
        extra = candidate.scores[~used]
        boundary += int((extra < threshold).sum())
        same = same and bool((extra < threshold).all())
    return {"same": same, "box": worst_box, "score": worst_score, "detections": total, "boundary": boundary}
