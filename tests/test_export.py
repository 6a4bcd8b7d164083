"""ONNX / TorchScript export (issue 8): the exported model gives PyTorch's detections.

Tolerances (after matching each detection to the same-label one with the nearest box): counts
and labels equal, boxes within 1e-3 px, scores within 1e-4. The models are untrained (seeded)
with a zero score threshold, so every image yields many detections of all classes to compare.
Faster R-CNN's ``pre_nms_top_n_test`` lies between the anchor counts of the square and of the
elongated test image, so both sides of ``min(k, anchors)`` run in the exported graph; and a
model traced on an image where it detects nothing must still detect on the others.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from detect.config import load_config
from detect.errors import ConfigError, DetectError
from detect.export import ExportedDetector, compare_with_pytorch, export, sidecar_path
from detect.models import build_detector
from tests.models import test_faster_rcnn, test_yolo
from tests.models.helpers import tiny_batch

pytest.importorskip("onnxruntime")

NUM_CLASSES = 8
MODELS = {
    "faster_rcnn": lambda: load_config(None, test_faster_rcnn.TINY + ["model.rpn.pre_nms_top_n_test=1000"]).model,
    "yolo": lambda: load_config(None, ["model.name=yolo", "model.input_size=128", "model.backbone.name=small",
                                       "model.yolo.grid_size=4", "model.yolo.conv_channels=[32]",
                                       "model.yolo.hidden_dim=64", "model.yolo.score_threshold=0.0",
                                       "model.yolo.local_head=true", "model.yolo.local_hidden=16"]).model,
}


def untrained(name):
    torch.manual_seed(0)
    config = MODELS[name]()
    if name == "faster_rcnn":
        config.roi_head.score_threshold = 0.0
    model = build_detector(config, NUM_CLASSES).eval()
    if name == "yolo":
        with torch.no_grad():
            model.head.fc_gate.fill_(1.0)            # both paths count, as after training
    else:
        spread_scores(model)
    return model


@torch.no_grad()
def spread_scores(model):
    """Spread an untrained Faster R-CNN's scores and boxes as training would. From the near-zero
    initial layers, hundreds of regions tie to the 7th digit, and which of two tied neighbours
    survives NMS or the per-image cap is then decided by float rounding, not by the export."""
    torch.nn.init.normal_(model.roi_head.cls_score.weight, std=0.3)
    torch.nn.init.normal_(model.roi_head.bbox_pred.weight, std=0.05)


def images():
    squares, _ = tiny_batch(3, size=128, seed=5)
    generator = torch.Generator().manual_seed(1)
    # 128² → 16 × 16 × 9 = 2304 anchors; 200 × 30 → 128 × 19, padded 128 × 32 → 576 anchors
    return squares + [torch.rand(3, 96, 150, generator=generator), torch.rand(3, 200, 30, generator=generator)]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_exported_model_gives_pytorch_detections(tmp_path, name, fmt):
    model = untrained(name)
    path = export(model, name, [f"c{i}" for i in range(NUM_CLASSES)], tmp_path / f"model.{fmt}", fmt)
    sidecar = json.loads(sidecar_path(path).read_text())
    assert sidecar["class_names"][3] == "c3" and sidecar["keep_aspect"] == (name == "faster_rcnn")
    exported = ExportedDetector(path)
    report = compare_with_pytorch(model, exported, images(), score_tolerance=0.0)
    assert report["detections"] > 50
    assert report["same"] and report["box"] < 1e-3 and report["score"] < 1e-4, report
    detections = exported.predict(images()[3])          # a non-square image: boxes in its own pixels
    assert (detections.boxes[:, 2] <= 150 + 1e-3).all() and (detections.boxes[:, 3] <= 96 + 1e-3).all()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_traced_on_an_image_without_detections(tmp_path, name):
    model = untrained(name)
    with torch.no_grad():   # untrained scores hardly depend on the image: spread them out
        last = model.roi_head.cls_score if name == "faster_rcnn" else model.head.fc[-1]
        last.weight.mul_(50)
    candidates = [torch.zeros(3, 128, 128), *images()]
    top = [float(model.predict([image])[0].scores.max()) for image in candidates]
    order = sorted(range(len(top)), key=top.__getitem__)
    traced, others = candidates[order[0]], [candidates[i] for i in order[1:]]
    assert top[order[1]] > top[order[0]] + 2e-5
    threshold = (top[order[0]] + top[order[1]]) / 2   # nothing on the traced image, something on the others
    head = "config" if name == "yolo" else "roi_head"
    holder = model if name == "yolo" else model.roi_head
    holder.config = dataclasses.replace(holder.config, score_threshold=threshold)
    assert len(model.predict([traced])[0].scores) == 0, head
    path = export(model, name, [f"c{i}" for i in range(NUM_CLASSES)], tmp_path / "model.onnx", example=traced)
    report = compare_with_pytorch(model, ExportedDetector(path), others, score_tolerance=0.0)
    assert report["detections"] > 0 and report["same"] and report["box"] < 1e-3, report


def test_export_refuses_proposal_detectors_and_unknown_formats(tmp_path):
    model = untrained("yolo")
    with pytest.raises(ConfigError, match="selective search"):
        export(model, "fast_rcnn", ["a"], tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match="unknown export format"):
        export(model, "yolo", ["a"], tmp_path / "m.x", "tflite")


def test_missing_export_is_one_line(tmp_path):
    with pytest.raises(DetectError, match="run tools/export.py first"):
        ExportedDetector(tmp_path / "absent.onnx")


@pytest.mark.parametrize("cell_head", [False, True])
def test_yolo_grid_that_does_not_divide_the_feature_map(tmp_path, cell_head):
    # 128 px → stride-8 features 16², one stride-2 conv → 8², pooled to a 3 × 3 grid (8 = 3 + 3 + 2);
    # the cell head pools the 8² map to 9² (3 × 3 patches of 3 × 3)
    torch.manual_seed(0)
    config = load_config(None, ["model.name=yolo", "model.input_size=128", "model.backbone.name=small",
                                "model.yolo.grid_size=3", "model.yolo.conv_channels=[32]",
                                "model.yolo.hidden_dim=64", "model.yolo.score_threshold=0.0",
                                f"model.yolo.local_head={str(cell_head).lower()}", "model.yolo.local_hidden=16"]).model
    model = build_detector(config, NUM_CLASSES).eval()
    if cell_head:
        assert model.head.local[0].kernel_size == (3, 3) and model.head.local_pool.grid_size == 9
        with torch.no_grad():
            model.head.fc_gate.fill_(1.0)
    path = export(model, "yolo", [f"c{i}" for i in range(NUM_CLASSES)], tmp_path / "model.onnx")
    report = compare_with_pytorch(model, ExportedDetector(path), images(), score_tolerance=0.0)
    assert report["detections"] > 20 and report["same"] and report["box"] < 1e-3 and report["score"] < 1e-4, report


def test_channels_last_backbone_exports_the_same_detections(tmp_path):
    # The torchvision backbones run channels-last by default; the exported graph must not depend on it.
    torch.manual_seed(0)
    config = load_config(None, test_faster_rcnn.TINY + ["model.backbone.channels_last=true"]).model
    config.roi_head.score_threshold = 0.0
    model = build_detector(config, NUM_CLASSES).eval()
    spread_scores(model)
    assert model.backbone.channels_last
    path = export(model, "faster_rcnn", [f"c{i}" for i in range(NUM_CLASSES)], tmp_path / "model.onnx")
    report = compare_with_pytorch(model, ExportedDetector(path), images(), score_tolerance=0.0)
    assert report["detections"] > 50 and report["same"] and report["box"] < 1e-3 and report["score"] < 1e-4, report


def test_pretrained_backbone_with_folded_batchnorm_exports_the_same_detections(tmp_path):
    # Pretrained backbones fold their frozen BatchNorm into the convolutions (detect.frozen_batchnorm.FrozenBNConv2d):
    # the traced graph must carry the fold, with BatchNorm terms that are not the identity.
    import torchvision

    from detect.frozen_batchnorm import FrozenBNConv2d
    from tests.models.helpers import save_weights_with_live_batchnorm

    save_weights_with_live_batchnorm(torchvision.models.mobilenet_v2(), tmp_path / "w.pth")
    torch.manual_seed(0)
    config = load_config(None, ["model.name=yolo", "model.input_size=128", "model.backbone.name=mobilenet_v2",
                                f"model.backbone.weights={tmp_path / 'w.pth'}", "model.yolo.grid_size=4",
                                "model.yolo.conv_channels=[32]", "model.yolo.hidden_dim=64",
                                "model.yolo.score_threshold=0.0", "model.yolo.local_head=true",
                                "model.yolo.local_hidden=16"]).model
    model = build_detector(config, NUM_CLASSES).eval()
    assert any(isinstance(m, FrozenBNConv2d) for m in model.backbone.modules())
    with torch.no_grad():
        model.head.fc_gate.fill_(1.0)
    path = export(model, "yolo", [f"c{i}" for i in range(NUM_CLASSES)], tmp_path / "model.onnx")
    report = compare_with_pytorch(model, ExportedDetector(path), images(), score_tolerance=0.0)
    assert report["detections"] > 20 and report["same"] and report["box"] < 1e-3 and report["score"] < 1e-4, report
