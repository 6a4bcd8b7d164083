"""YOLOv1: the paper's loss by hand, the responsible predictor, decoding, overfitting, negatives."""

import math

import pytest
import torch

from detect.config import load_config
from detect.models import build_detector
from detect.models.yolo import assign_objects, decode_predictions, yolo_loss

from tests.models.contract import assert_valid_detector
from tests.models.helpers import found_every_object, negative_target, overfit, tiny_batch

NUM_CLASSES = 8


def tiny_config(*extra):
    return load_config(None, [
        "model.name=yolo", "model.input_size=128", "model.backbone.name=small", "model.yolo.grid_size=4",
        "model.yolo.conv_channels=[64]", "model.yolo.hidden_dim=256", *extra])


def hand_case():
    """S = 2, B = 2, C = 2 on a 100 × 100 image; one object of class 1 at x 10..40, y 20..60.

    Its centre (25, 40) lies in cell row 0, column 0 at offsets x = 0.5, y = 0.8; its size is
    w = 0.3, h = 0.4 of the image.
    """
    predictions = torch.zeros(1, 2, 2, 2 * 5 + 2)
    # cell (0, 0), box 0: centre on the object, √w = √h = 0.5 → w = h = 0.25 → x 0.125..0.375,
    # y 0.275..0.525, entirely inside the object: IoU = 0.0625 / 0.12 = 0.5208333.
    predictions[0, 0, 0, 0:5] = torch.tensor([0.5, 0.8, 0.5, 0.5, 0.6])
    # cell (0, 0), box 1: a 0.04-wide box at the cell's corner: IoU 0.
    predictions[0, 0, 0, 5:10] = torch.tensor([0.0, 0.0, 0.2, 0.2, 0.3])
    predictions[0, 0, 0, 10:12] = torch.tensor([0.2, 0.7])
    # cell (1, 1): no object, two confidences that the no-object term must push to 0.
    predictions[0, 1, 1, 4] = 0.4
    predictions[0, 1, 1, 9] = -0.2
    target = {"boxes": torch.tensor([[10.0, 20.0, 40.0, 60.0]]), "labels": torch.tensor([1])}
    return predictions, target


def test_loss_equals_the_hand_computed_value_term_by_term():
    predictions, target = hand_case()
    losses = yolo_loss(predictions, [target], [(100, 100)], boxes_per_cell=2)
    assert set(losses) == {"coord", "obj", "noobj", "cls"}
    # coord: 5 × [(0.5 − 0.5)² + (0.8 − 0.8)² + (0.5 − √0.3)² + (0.5 − √0.4)²]
    coord = 5 * ((0.5 - math.sqrt(0.3)) ** 2 + (0.5 - math.sqrt(0.4)) ** 2)
    assert losses["coord"].item() == pytest.approx(coord, rel=1e-5)
    assert losses["coord"].item() == pytest.approx(0.0991095, abs=1e-6)
    # obj: the responsible box's confidence against its IoU 0.0625 / 0.12
    assert losses["obj"].item() == pytest.approx((0.6 - 0.0625 / 0.12) ** 2, rel=1e-5)
    # noobj: 0.5 × (0.3² of the other predictor of the object's cell + 0.4² + 0.2²)
    assert losses["noobj"].item() == pytest.approx(0.5 * (0.09 + 0.16 + 0.04), rel=1e-5)
    # cls: (0.2 − 0)² + (0.7 − 1)²
    assert losses["cls"].item() == pytest.approx(0.04 + 0.09, rel=1e-5)


def test_softmax_class_loss_is_the_cross_entropy_and_leaves_the_other_terms_alone():
    predictions, target = hand_case()
    paper = yolo_loss(predictions, [target], [(100, 100)], boxes_per_cell=2)
    losses = yolo_loss(predictions, [target], [(100, 100)], boxes_per_cell=2, class_loss="softmax")
    # logits (0.2, 0.7), class 1: −log(e^0.7 / (e^0.2 + e^0.7)) = log(1 + e^−0.5)
    assert losses["cls"].item() == pytest.approx(math.log(1 + math.exp(-0.5)), rel=1e-6)
    assert losses["cls"].item() == pytest.approx(0.474077, abs=1e-6)
    for term in ("coord", "obj", "noobj"):
        assert losses[term].item() == paper[term].item()


def test_responsible_predictor_is_the_one_with_the_highest_iou():
    predictions, target = hand_case()
    # Swap the two predictors: box 1 now holds the good box, so box 0 (conf 0.3) is "no object".
    predictions[0, 0, 0, 0:10] = torch.cat([predictions[0, 0, 0, 5:10], predictions[0, 0, 0, 0:5]])
    losses = yolo_loss(predictions, [target], [(100, 100)], boxes_per_cell=2)
    assert losses["obj"].item() == pytest.approx((0.6 - 0.0625 / 0.12) ** 2, rel=1e-5)
    assert losses["noobj"].item() == pytest.approx(0.5 * (0.09 + 0.16 + 0.04), rel=1e-5)
    # Only the responsible predictor's coordinates are trained: moving the other changes nothing.
    before = losses["coord"].item()
    predictions[0, 0, 0, 0:4] += 0.3
    assert yolo_loss(predictions, [target], [(100, 100)], boxes_per_cell=2)["coord"].item() == pytest.approx(before)


@pytest.mark.parametrize("threshold, noobj", [(1.0, 0.5 * (0.09 + 0.16 + 0.04)),   # the paper: every other predictor
                                               (0.5, 0.5 * (0.09 + 0.16 + 0.04)),   # IoU 0.45 is not above 0.5
                                               (0.4, 0.5 * (0.16 + 0.04))])         # ...but above 0.4: left out
def test_noobj_ignore_iou_leaves_out_predictors_already_on_an_object(threshold, noobj):
    predictions, target = hand_case()
    # Box 1 of the object's cell: same centre, w 0.3, h 0.18, inside the object: IoU 0.054 / 0.12
    # = 0.45, below box 0's 0.52, so box 0 stays responsible and box 1 is "no object".
    predictions[0, 0, 0, 5:10] = torch.tensor([0.5, 0.8, math.sqrt(0.3), math.sqrt(0.18), 0.3])
    losses = yolo_loss(predictions, [target], [(100, 100)], boxes_per_cell=2, noobj_ignore_iou=threshold)
    assert losses["noobj"].item() == pytest.approx(noobj, rel=1e-5)
    assert losses["obj"].item() == pytest.approx((0.6 - 0.0625 / 0.12) ** 2, rel=1e-5)


def test_negative_square_root_predictions_give_finite_loss_and_gradients():
    predictions, target = hand_case()
    predictions[0, 0, 0, 2:4] = -0.7                       # negative √w, √h
    predictions.requires_grad_(True)
    losses = yolo_loss(predictions, [target], [(100, 100)], boxes_per_cell=2)
    total = sum(losses.values())
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(predictions.grad).all()


def test_one_object_per_cell_keeps_the_largest():
    boxes = torch.tensor([[0.0, 0.0, 20.0, 20.0],        # centre (10, 10): cell (0, 0)
                          [2.0, 2.0, 18.0, 22.0],        # centre (10, 12): cell (0, 0), smaller
                          [60.0, 10.0, 90.0, 30.0]])     # centre (75, 20): cell (0, 1)
    objects, rows, columns = assign_objects(boxes, (100, 100), grid_size=2)
    assert objects.tolist() == [0, 2]
    assert rows.tolist() == [0, 0] and columns.tolist() == [0, 1]


def test_decode_hand_built_output():
    predictions = torch.zeros(2, 2, 5 + 2)                 # S = 2, B = 1, C = 2
    predictions[1, 0] = torch.tensor([0.5, 0.5, math.sqrt(0.2), math.sqrt(0.4), 0.9, 0.1, 0.8])
    predictions[0, 1] = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.05, 0.0, 1.0])  # 0.05 × 1.0: below threshold
    detections = decode_predictions(predictions, (100, 200), boxes_per_cell=1, score_threshold=0.1,
                                    nms_iou=0.5, max_detections=10)
    # cell row 1, column 0 of a 100 × 200 (h × w) image: centre (0.25 × 200, 0.75 × 100) = (50, 75),
    # size (0.2 × 200, 0.4 × 100) = (40, 40).
    assert torch.allclose(detections.boxes, torch.tensor([[30.0, 55.0, 70.0, 95.0]]), atol=1e-4)
    assert detections.labels.tolist() == [1]
    assert detections.scores.tolist() == pytest.approx([0.72])


def test_decode_reads_softmax_trained_class_outputs_as_logits():
    predictions = torch.zeros(2, 2, 5 + 2)                 # S = 2, B = 1, C = 2
    predictions[1, 0] = torch.tensor([0.5, 0.5, math.sqrt(0.2), math.sqrt(0.4), 0.9, 0.0, math.log(3.0)])
    detections = decode_predictions(predictions, (100, 200), boxes_per_cell=1, score_threshold=0.3,
                                    nms_iou=0.5, max_detections=10, class_loss="softmax")
    # P(class) = softmax(0, log 3) = (0.25, 0.75): 0.9 × 0.75 for class 1; 0.9 × 0.25 and the
    # other cells (conf 0) fall below the threshold. The paper's reading would clamp log 3 to 1.
    assert detections.labels.tolist() == [1]
    assert detections.scores.tolist() == pytest.approx([0.675])
    assert torch.allclose(detections.boxes, torch.tensor([[30.0, 55.0, 70.0, 95.0]]), atol=1e-4)


def test_decode_applies_nms_per_class_and_the_cap():
    predictions = torch.zeros(2, 2, 2 * 5 + 1)             # S = 2, B = 2, C = 1: same box twice
    predictions[0, 0, 0:10] = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.9] * 2)
    predictions[0, 0, 9] = 0.8
    predictions[1, 1, 0:5] = torch.tensor([0.5, 0.5, 0.3, 0.3, 0.7])
    predictions[..., 10] = 1.0
    detections = decode_predictions(predictions, (64, 64), boxes_per_cell=2, score_threshold=0.1,
                                    nms_iou=0.5, max_detections=10)
    assert detections.scores.tolist() == pytest.approx([0.9, 0.7])
    capped = decode_predictions(predictions, (64, 64), boxes_per_cell=2, score_threshold=0.1,
                                nms_iou=0.5, max_detections=1)
    assert capped.scores.tolist() == pytest.approx([0.9])


def cell_head_model():
    """128 px, small backbone → 16 × 16 features → one stride-2 conv → 8 × 8 map → 4 × 4 grid: 2 × 2 patches."""
    torch.manual_seed(0)
    config = tiny_config("model.yolo.conv_channels=[32]", "model.yolo.local_head=true", "model.yolo.local_hidden=16")
    return build_detector(config.model, NUM_CLASSES).eval()


def test_cell_head_sees_only_its_own_patch():
    head = cell_head_model().head
    assert head.local[0].kernel_size == (2, 2) and head.local[0].stride == (2, 2)
    features = torch.rand(1, 96, 16, 16)
    changed = features.clone()
    # Feature (5, 5) reaches conv outputs 2 and 3 (3 × 3 kernel, stride 2): patch 1 of each axis.
    changed[0, :, 5, 5] += 3.0
    with torch.no_grad():
        difference = (head(changed) - head(features)).abs().amax(dim=-1)[0]      # [S, S]
    assert difference[1, 1] > 1e-4
    difference[1, 1] = 0
    assert difference.max() == 0          # the gate is 0: the fc path, which sees everything, is off


def test_first_conv_stride_one_keeps_the_backbone_map_for_the_cell_head():
    torch.manual_seed(0)
    config = tiny_config("model.yolo.conv_channels=[32]", "model.yolo.local_head=true", "model.yolo.local_hidden=16",
                         "model.yolo.first_conv_stride=1")
    head = build_detector(config.model, NUM_CLASSES).eval().head
    # 16 × 16 features stay 16 × 16 → a 4 × 4 grid of 4 × 4 patches (2 × 2 with the default stride 2).
    assert head.convs[0].stride == (1, 1)
    assert head.local[0].kernel_size == (4, 4) and head.local[0].stride == (4, 4)
    with torch.no_grad():
        assert head(torch.rand(2, 96, 16, 16)).shape == (2, 4, 4, 5 * 2 + NUM_CLASSES)


def test_fc_path_starts_gated_off_and_the_gate_learns():
    model = cell_head_model().train()
    head = model.head
    assert head.fc_gate.item() == 0.0
    features = torch.rand(2, 96, 16, 16)
    head.eval()
    before = head(features)
    with torch.no_grad():
        head.fc[-1].bias.fill_(5.0)                      # a very different fc path
    assert torch.equal(head(features), before)
    model.train()
    images, targets = tiny_batch(2)
    sum(model(images, targets).values()).backward()
    assert head.fc_gate.grad is not None and head.fc_gate.grad.abs() > 0


def test_contract_and_negatives():
    torch.manual_seed(0)
    model = build_detector(tiny_config().model, NUM_CLASSES)
    images, targets = tiny_batch(2)
    images.append(torch.rand(3, 96, 120))
    targets.append(negative_target())
    assert_valid_detector(model, images, targets, NUM_CLASSES)


def test_all_negative_batch_has_finite_losses_and_only_noobj():
    torch.manual_seed(0)
    model = build_detector(tiny_config().model, NUM_CLASSES).train()
    losses = model([torch.rand(3, 128, 128), torch.rand(3, 64, 100)], [negative_target(), negative_target()])
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["coord"].item() == losses["obj"].item() == losses["cls"].item() == 0.0
    assert losses["noobj"].item() > 0
    sum(losses.values()).backward()


@pytest.mark.parametrize("head", [[], ["model.yolo.local_head=true", "model.yolo.local_hidden=32"]],
                         ids=["paper", "cell-head"])
def test_overfits_two_images_and_finds_every_object(head):
    torch.manual_seed(0)
    model = build_detector(tiny_config("model.yolo.dropout=0.0", *head).model, NUM_CLASSES)
    images, targets = tiny_batch(2, seed=3)
    history = overfit(model, images, targets, iterations=150, lr=0.01)
    assert history[-1] < 0.1 * history[0]
    assert found_every_object(model, images, targets, iou_threshold=0.5)
