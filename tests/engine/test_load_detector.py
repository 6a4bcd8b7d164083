"""A detector loaded from its checkpoint is the detector that was trained: same structure, same outputs."""

import pytest
import torch
import torchvision
from torchvision.ops.misc import FrozenBatchNorm2d

from detect.frozen_batchnorm import FrozenBNConv2d
from detect.config import load_config
from detect.engine.checkpoint import load_detector, save_checkpoint
from detect.models import build_detector
from tests.models.helpers import save_weights_with_live_batchnorm, tiny_batch

CLASSES = ["circle", "square"]


def structure(model: torch.nn.Module) -> list[str]:
    return [type(module).__name__ for module in model.modules()]


@pytest.mark.parametrize("name", ["faster_rcnn", "yolo"])
def test_a_fine_tuned_detector_loads_with_its_batchnorm_frozen_and_folded(name, tmp_path):
    """Trained from pretrained weights, the backbone's BatchNorm is frozen and folded into its
    convolutions. The checkpoint must rebuild that, not plain BatchNorm: the outputs agree either way
    (eval-mode BatchNorm is the same affine map), but unfolded inference is slower (docs/benchmarks.md)."""
    torch.manual_seed(0)
    save_weights_with_live_batchnorm(torchvision.models.mobilenet_v2(), tmp_path / "mnv2.pth")
    config = load_config(None, [f"model.name={name}", "model.backbone.name=mobilenet_v2", "model.input_size=96",
                                f"model.backbone.weights={tmp_path / 'mnv2.pth'}", "model.yolo.hidden_dim=32",
                                "model.yolo.conv_channels=[16]", "model.rpn.post_nms_top_n_test=50"])
    trained = build_detector(config.model, len(CLASSES)).eval()
    folded = sum(isinstance(module, FrozenBNConv2d) for module in trained.modules())
    assert folded > 0
    save_checkpoint(tmp_path / "model.pt", model=trained, config=config, class_names=CLASSES)

    loaded, checkpoint = load_detector(tmp_path / "model.pt")
    assert structure(loaded) == structure(trained)
    # no plain BatchNorm left in the backbone (YOLOv1's head trains its own)
    assert not any(type(module) is torch.nn.BatchNorm2d for module in loaded.backbone.modules())
    assert checkpoint["config"]["model"]["backbone"]["weights"] == str(tmp_path / "mnv2.pth")  # stored as given
    images, _ = tiny_batch(2, size=96)
    with torch.no_grad():
        for ours, theirs in zip(trained.predict(images), loaded.predict(images)):
            torch.testing.assert_close(ours.boxes, theirs.boxes)
            torch.testing.assert_close(ours.scores, theirs.scores)
            assert torch.equal(ours.labels, theirs.labels)


def test_a_detector_trained_from_scratch_keeps_plain_batchnorm(tmp_path):
    config = load_config(None, ["model.name=yolo", "model.backbone.name=mobilenet_v2", "model.input_size=96",
                                "model.yolo.hidden_dim=32", "model.yolo.conv_channels=[16]"])
    trained = build_detector(config.model, len(CLASSES))
    save_checkpoint(tmp_path / "model.pt", model=trained, config=config, class_names=CLASSES)
    loaded, _ = load_detector(tmp_path / "model.pt")
    assert structure(loaded) == structure(trained)
    assert not any(isinstance(module, (FrozenBatchNorm2d, FrozenBNConv2d)) for module in loaded.modules())
