"""Faster R-CNN: contract, negatives, overfitting two images, anchors and RPN labelling."""

import pytest
import torch

from detect.anchors import AnchorGenerator
from detect.config import load_config
from detect.models import build_detector

from tests.models.contract import assert_valid_detector
from tests.models.helpers import found_every_object, negative_target, overfit, tiny_batch

NUM_CLASSES = 8


TINY = ["model.input_size=128", "model.backbone.name=small", "model.anchors.sizes=[16,40,96]",
        "model.rpn.min_size=2", "model.rpn.pre_nms_top_n_train=600", "model.rpn.post_nms_top_n_train=200",
        "model.rpn.pre_nms_top_n_test=600", "model.rpn.post_nms_top_n_test=100",
        "model.roi_head.hidden_dim=128", "model.roi_head.batch_size_per_image=64"]


def tiny_config():
    return load_config(None, TINY)


def test_contract_and_negatives():
    torch.manual_seed(0)
    model = build_detector(tiny_config().model, NUM_CLASSES)
    images, targets = tiny_batch(2)
    images.append(torch.rand(3, 96, 120))          # a negative of another size
    targets.append(negative_target())
    assert_valid_detector(model, images, targets, NUM_CLASSES)


def test_all_negative_batch_has_finite_losses_and_zero_box_loss():
    torch.manual_seed(0)
    model = build_detector(tiny_config().model, NUM_CLASSES).train()
    losses = model([torch.rand(3, 128, 128), torch.rand(3, 64, 100)], [negative_target(), negative_target()])
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["rpn_box"].item() == 0.0 and losses["roi_box"].item() == 0.0
    assert losses["rpn_cls"].item() > 0 and losses["roi_cls"].item() > 0
    sum(losses.values()).backward()


@pytest.fixture(scope="module")
def overfitted():
    torch.manual_seed(0)
    model = build_detector(tiny_config().model, NUM_CLASSES)
    images, targets = tiny_batch(2, seed=3)
    history = overfit(model, images, targets, iterations=120, lr=0.02)
    return model, images, targets, history


def test_overfits_two_images_and_finds_every_object(overfitted):
    model, images, targets, history = overfitted
    assert history[-1] < 0.25 * history[0]
    assert found_every_object(model, images, targets, iou_threshold=0.7)


def test_nine_anchors_per_location_centred_on_cells():
    generator = AnchorGenerator((32, 64, 128), (0.5, 1.0, 2.0), stride=16)
    anchors = generator(2, 3)
    assert generator.num_anchors_per_location == 9 and anchors.shape == (2 * 3 * 9, 4)
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    assert torch.allclose(centres[:9], torch.tensor([8.0, 8.0]).expand(9, 2))
    assert torch.allclose(centres[9], torch.tensor([24.0, 8.0]))            # next column
    areas = (anchors[:9, 2] - anchors[:9, 0]) * (anchors[:9, 3] - anchors[:9, 1])
    assert torch.allclose(areas, torch.tensor([32.0 ** 2] * 3 + [64.0 ** 2] * 3 + [128.0 ** 2] * 3))
    ratios = (anchors[:3, 3] - anchors[:3, 1]) / (anchors[:3, 2] - anchors[:3, 0])
    assert torch.allclose(ratios, torch.tensor([0.5, 1.0, 2.0]))
    # Centred where the backbone's cells are (its cell_origin), when told.
    shifted = AnchorGenerator((32,), (1.0,), stride=16, origin=0.5)(2, 3)
    assert torch.allclose((shifted[:, :2] + shifted[:, 2:])[[0, 1, 3]] / 2,
                          torch.tensor([[0.5, 0.5], [16.5, 0.5], [0.5, 16.5]]))


def test_predict_maps_boxes_back_to_original_size(overfitted):
    model, images, targets, _ = overfitted
    big = [torch.nn.functional.interpolate(image[None], scale_factor=2.0, mode="bilinear")[0] for image in images]
    doubled = [{"boxes": t["boxes"] * 2, "labels": t["labels"]} for t in targets]
    assert found_every_object(model, big, doubled, iou_threshold=0.6)
