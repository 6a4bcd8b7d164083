"""R-CNN: warping with context, hard-negative mining, ridge box regression, the fine-tuning loss."""

import numpy as np
import pytest
import torch

from detect.boxes import BoxCoder
from detect.config import load_config
from detect.models import build_detector
from detect.models.rcnn import context_boxes
from detect.models.rcnn_svm import fit_ridge, mine_hard_negatives

from tests.models.contract import assert_valid_detector
from tests.models.helpers import negative_target, tiny_batch

NUM_CLASSES = 8


def tiny_config(*overrides):
    return load_config(None, [*overrides,
        "model.name=rcnn", "model.input_size=128", "model.backbone.name=small", "model.rcnn.crop_size=32",
        "model.rcnn.context_pad=4", "model.rcnn.feature_dim=64", "model.rcnn.batch_size_per_image=32",
        "model.proposals.selective_search.max_boxes=200", "model.proposals.selective_search.min_size=2"])


def test_context_padding_puts_the_box_in_the_crop_centre():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    enlarged = context_boxes(boxes, crop_size=227, context_pad=16)
    # the box must fill 227 - 32 = 195 of 227 warped pixels: each side grows by size * 16 / 195
    expected = torch.tensor([[10 - 20 * 16 / 195, 20 - 40 * 16 / 195, 30 + 20 * 16 / 195, 60 + 40 * 16 / 195]])
    assert torch.allclose(enlarged, expected)
    with pytest.raises(ValueError, match="no room"):
        context_boxes(boxes, crop_size=32, context_pad=16)


def points(*xy):
    return np.array(xy, dtype=np.float64).reshape(-1, 2)


def test_hard_negative_mining_caches_evicts_and_retrains_as_specified():
    positives = points((3, 0), (3, 0.5), (3, -0.5))
    images = [points((-1, 0), (-1, 0.5), (-6, 0), (-6, 0.5)),   # all hard for the zero model
              points((-5, 0), (1, 0))]                           # (-5, 0) easy for the retrained model
    result = mine_hard_negatives(positives, images, c=10.0, positive_weight=2.0, bias_term=10.0,
                                 hard_threshold=-1.0001, evict_threshold=-1.2, retrain_every=4, tol=1e-8)
    # image 0: 4 mined -> retrain -> the two at x = -6 score below -1.2 and are evicted;
    # image 1: only (1, 0) lies inside the margin -> mined; final retrain on it evicts the x = -1 pair.
    assert result.mined == 5
    assert result.history == [(1, 2), (2, 1)]
    assert result.retrains == 2 and result.cache_size == 1
    score = lambda p: points(p) @ result.weight + result.bias
    assert score((3, 0))[0] > 0.9 and score((1, 0))[0] < -0.9
    assert score((-5, 0))[0] < -1.2


def test_first_image_is_all_hard_and_no_negatives_still_trains():
    positives = points((1, 1), (2, 2))
    result = mine_hard_negatives(positives, [points((-1, -1), (-2, -2), (-3, -1))], c=1.0, retrain_every=100)
    assert result.mined == 3 and result.retrains == 1
    with pytest.raises(ValueError, match="no positive"):
        mine_hard_negatives(np.zeros((0, 2)), [points((0, 0))])


def test_ridge_recovers_a_linear_map_and_whitens_targets():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(500, 6))
    true = rng.normal(size=(6, 4))
    targets = features @ true + np.array([0.1, -0.2, 0.3, 0.05])
    weight, mean, std = fit_ridge(features, targets, lam=1e-6)
    predicted = np.concatenate([features, np.ones((500, 1))], axis=1) @ weight * std + mean
    assert np.allclose(predicted, targets, atol=1e-5)
    assert np.allclose(mean, targets.mean(0)) and np.allclose(std, targets.std(0))
    strong, _, _ = fit_ridge(features, targets, lam=1e6)          # λ shrinks the weights towards 0
    assert np.abs(strong).max() < 0.01 * np.abs(weight).max()


def test_regression_targets_round_trip_through_the_model():
    model = build_detector(tiny_config().model, NUM_CLASSES)
    proposals = torch.tensor([[10.0, 10.0, 50.0, 40.0], [0.0, 5.0, 20.0, 30.0]])
    truth = torch.tensor([[12.0, 8.0, 55.0, 44.0], [2.0, 4.0, 18.0, 33.0]])
    deltas = BoxCoder((1.0, 1.0, 1.0, 1.0)).encode(proposals, truth)
    labels = torch.tensor([2, 5])
    # A regressor that outputs the bias row only: whitened output 1, so deltas = std + mean.
    with torch.no_grad():
        model.regressor_weight.zero_()
        model.regressor_weight[:, -1, :] = 1.0
        model.target_std[labels] = deltas / 2
        model.target_mean[labels] = deltas / 2
    refined = model.regress(torch.zeros(2, 64), proposals, labels)
    assert torch.allclose(refined, truth, atol=1e-4)


def test_contract_fine_tuning_loss_and_negatives():
    torch.manual_seed(0)
    model = build_detector(tiny_config().model, NUM_CLASSES)
    images, targets = tiny_batch(2)
    images.append(torch.rand(3, 96, 120))
    targets.append(negative_target())
    from detect.proposals.selective_search import compute_proposals
    proposals = compute_proposals(images, model.proposal_config)
    targets = [dict(t, proposals=p) for t, p in zip(targets, proposals)]
    assert_valid_detector(model, images, targets, NUM_CLASSES)
    model.train()
    losses = model(images, targets)
    assert set(losses) == {"cls"} and torch.isfinite(losses["cls"])


@pytest.mark.parametrize("pool_size", [1, 2])
def test_feature_layer_sees_the_pooled_layout_when_pool_size_is_above_one(pool_size):
    """pool_size 1 averages the crop's map away (a pattern and its mirror image give the same
    feature); pool_size > 1 flattens a pool_size × pool_size map into the fc layer, as the paper's
    fc6 flattens pool5, so the layout of the crop reaches the features."""
    model = build_detector(tiny_config(f"model.rcnn.pool_size={pool_size}").model, NUM_CLASSES).eval()
    channels = model.backbone.out_channels
    assert model.feature[2].in_features == channels * pool_size ** 2
    left = torch.zeros(1, channels, 4, 4)
    left[..., :2] = 1.0
    right = left.flip(-1)
    with torch.no_grad():
        same = torch.allclose(model.feature(left), model.feature(right))
    assert same == (pool_size == 1)


def test_boxes_are_regressed_before_suppression():
    """The left and right halves of an object (IoU 0) both regress onto the whole object: one
    detection, as in R-CNN's test code (regression, then NMS), not two overlapping ones."""
    model = build_detector(tiny_config().model, NUM_CLASSES).eval()
    whole = torch.tensor([[20.0, 20.0, 100.0, 80.0]])
    halves = torch.tensor([[20.0, 20.0, 60.0, 80.0], [60.0, 20.0, 100.0, 80.0]])
    with torch.no_grad():
        model.svm_bias.fill_(-20.0)
        model.svm_bias[3] = 20.0                   # every region: class 3, σ(20) ≈ 1
        model.svm_trained.fill_(True)
        model.regressor_trained.fill_(True)
    model.regress = lambda features, boxes, labels: whole.expand(len(boxes), 4)
    with torch.no_grad():
        (detections,) = model.predict([torch.rand(3, 96, 128)], [halves])   # at the input size: no rescaling
    assert detections.labels.tolist() == [3]
    assert torch.allclose(detections.boxes, whole)
