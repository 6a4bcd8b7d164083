"""Box geometry: hand-computed IoU, NMS edge cases, coder round trips, matcher and sampler invariants."""

import math

import pytest
import torch

from detect.boxes import (BalancedSampler, BoxCoder, Matcher, batched_nms, box_area,
                          box_cxcywh_to_xyxy, box_iou, box_xyxy_to_cxcywh, clip_boxes,
                          elementwise_box_iou, nms, remove_small_boxes)


def test_iou_hand_computed():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 5.0, 15.0, 15.0],    # overlap 25, union 175
                      [10.0, 0.0, 20.0, 10.0],   # touching edge: 0
                      [0.0, 0.0, 10.0, 10.0],    # identical: 1
                      [2.0, 2.0, 4.0, 4.0]])     # inside: 4 / 100
    expected = torch.tensor([[25 / 175, 0.0, 1.0, 0.04]])
    torch.testing.assert_close(box_iou(a, b), expected)
    torch.testing.assert_close(elementwise_box_iou(a.expand(4, 4), b), expected[0])


def test_iou_empty_and_degenerate():
    assert box_iou(torch.zeros(0, 4), torch.ones(3, 4)).shape == (0, 3)
    degenerate = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    assert box_iou(degenerate, degenerate).item() == 0.0
    assert elementwise_box_iou(degenerate, degenerate).item() == 0.0
    assert box_area(torch.tensor([[3.0, 3.0, 1.0, 5.0]])).item() == 0.0


def test_nms_keeps_iou_exactly_at_threshold():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0]])  # IoU = 50/150 = 1/3
    scores = torch.tensor([0.9, 0.8])
    iou = box_iou(boxes[:1], boxes[1:]).item()
    assert nms(boxes, scores, iou).tolist() == [0, 1]          # equal to threshold: kept
    assert nms(boxes, scores, iou - 1e-6).tolist() == [0]      # just above threshold: suppressed


def test_nms_ties_break_by_lower_index():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 4 + [[50.0, 50.0, 60.0, 60.0]])
    scores = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.5])
    assert nms(boxes, scores, 0.5).tolist() == [0, 4]
    scores = torch.tensor([0.5, 0.7, 0.7, 0.1, 0.9])
    assert nms(boxes, scores, 0.5).tolist() == [4, 1]


def test_batched_nms_only_suppresses_within_class():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 10.0, 10.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    labels = torch.tensor([0, 1, 0])
    assert batched_nms(boxes, scores, labels, 0.5).tolist() == [0, 1]
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0


def test_clip_and_remove_small():
    boxes = torch.tensor([[-5.0, -1.0, 30.0, 12.0], [3.0, 4.0, 5.0, 20.0]])
    torch.testing.assert_close(clip_boxes(boxes, (10, 20)), torch.tensor([[0.0, 0.0, 20.0, 10.0], [3.0, 4.0, 5.0, 10.0]]))
    assert remove_small_boxes(boxes, 2.0).tolist() == [0, 1]
    assert remove_small_boxes(boxes, 2.5).tolist() == [0]


def test_cxcywh_round_trip():
    boxes = torch.tensor([[1.0, 2.0, 5.0, 10.0]])
    torch.testing.assert_close(box_xyxy_to_cxcywh(boxes), torch.tensor([[3.0, 6.0, 4.0, 8.0]]))
    torch.testing.assert_close(box_cxcywh_to_xyxy(box_xyxy_to_cxcywh(boxes)), boxes)


def test_box_coder_hand_computed_and_round_trip():
    coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    reference = torch.tensor([[0.0, 0.0, 10.0, 20.0]])       # centre (5, 10), size 10 x 20
    target = torch.tensor([[2.0, 4.0, 22.0, 24.0]])          # centre (12, 14), size 20 x 20
    expected = torch.tensor([[10 * 7 / 10, 10 * 4 / 20, 5 * math.log(2.0), 5 * math.log(1.0)]])
    torch.testing.assert_close(coder.encode(reference, target), expected)
    generator = torch.Generator().manual_seed(0)
    ref = torch.rand(100, 2, generator=generator) * 100
    ref = torch.cat([ref, ref + 1 + torch.rand(100, 2, generator=generator) * 50], dim=1)
    tgt = torch.rand(100, 2, generator=generator) * 100
    tgt = torch.cat([tgt, tgt + 1 + torch.rand(100, 2, generator=generator) * 50], dim=1)
    torch.testing.assert_close(coder.decode(coder.encode(ref, tgt), ref), tgt, rtol=1e-4, atol=1e-3)


def test_box_coder_class_specific_and_clamped():
    coder = BoxCoder()
    reference = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    deltas = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 100.0, 100.0]])
    decoded = coder.decode(deltas, reference)
    assert decoded.shape == (1, 12)
    torch.testing.assert_close(decoded[0, :4], reference[0])
    torch.testing.assert_close(decoded[0, 4:8], torch.tensor([10.0, 0.0, 20.0, 10.0]))
    assert torch.isfinite(decoded).all()   # exp(100) would overflow float32 without the clamp
    assert decoded[0, 10] - decoded[0, 8] == pytest.approx(10 * 1000 / 16, rel=1e-4)


def test_matcher_thresholds_and_low_quality():
    iou = torch.tensor([[0.80, 0.50, 0.20, 0.05, 0.00],
                        [0.10, 0.60, 0.65, 0.00, 0.00]])
    rpn = Matcher(0.7, 0.3)(iou)
    assert rpn.tolist() == [0, Matcher.IGNORE, Matcher.IGNORE, Matcher.BACKGROUND, Matcher.BACKGROUND]
    rpn_low = Matcher(0.7, 0.3, allow_low_quality_matches=True)(iou)
    assert rpn_low.tolist() == [0, Matcher.IGNORE, 1, Matcher.BACKGROUND, Matcher.BACKGROUND]
    fast = Matcher(0.5, 0.5, ignore_below=0.1)(iou)
    assert fast.tolist() == [0, 1, 1, Matcher.IGNORE, Matcher.IGNORE]
    assert Matcher(0.5, 0.5)(torch.zeros(0, 3)).tolist() == [Matcher.BACKGROUND] * 3
    with pytest.raises(ValueError, match="low_threshold <= high_threshold"):
        Matcher(0.3, 0.7)


def test_sampler_respects_fraction_and_batch():
    matches = torch.tensor([0] * 100 + [Matcher.BACKGROUND] * 1000 + [Matcher.IGNORE] * 50)
    positive, negative = BalancedSampler(256, 0.5)(matches, torch.Generator().manual_seed(0))
    assert positive.numel() == 100 and negative.numel() == 156          # few positives: fill with negatives
    assert (matches[positive] >= 0).all() and (matches[negative] == Matcher.BACKGROUND).all()
    assert len(set(positive.tolist()) | set(negative.tolist())) == 256  # no duplicates
    positive, negative = BalancedSampler(64, 0.25)(torch.tensor([0] * 500 + [-1] * 500))
    assert positive.numel() == 16 and negative.numel() == 48
    positive, negative = BalancedSampler(64, 0.25)(torch.tensor([Matcher.IGNORE] * 10))
    assert positive.numel() == 0 and negative.numel() == 0


@pytest.mark.parametrize("seed", range(4))
def test_nms_with_max_keep_equals_the_truncated_full_result(seed):
    generator = torch.Generator().manual_seed(seed)
    corners = torch.rand(600, 2, generator=generator) * 200
    boxes = torch.cat([corners, corners + 5 + torch.rand(600, 2, generator=generator) * 80], dim=1)
    scores = (torch.rand(600, generator=generator) * 20).round() / 20      # many exact ties
    labels = torch.randint(0, 3, (600,), generator=generator)
    for threshold in (0.3, 0.7):
        full = nms(boxes, scores, threshold)
        full_batched = batched_nms(boxes, scores, labels, threshold)
        for max_keep in (1, 7, 50, 200, 599, 1000):
            assert torch.equal(nms(boxes, scores, threshold, max_keep=max_keep), full[:max_keep])
            assert torch.equal(batched_nms(boxes, scores, labels, threshold, max_keep=max_keep),
                               full_batched[:max_keep])
    # Heavy suppression: the prefix has to grow several times before enough boxes survive.
    stacked = torch.tensor([[0.0, 0.0, 10.0, 10.0]]).repeat(300, 1)
    stacked[-3:] += torch.tensor([[100.0, 0.0, 100.0, 0.0]])
    assert nms(stacked, torch.linspace(1, 0, 300), 0.5, max_keep=2).tolist() == [0, 297]
