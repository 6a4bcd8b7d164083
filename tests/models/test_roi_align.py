"""The separable RoIAlign used on the CPU equals torchvision's kernel, values and gradients."""

import pytest
import torch
from torchvision.ops import roi_align

from detect.models.roi_head import RoIPooler, separable_roi_align


def _regions(generator, counts, extent):
    boxes = []
    for count in counts:
        corner = torch.rand(count, 2, generator=generator, dtype=torch.float64) * (extent + 40) - 20
        size = torch.rand(count, 2, generator=generator, dtype=torch.float64) * extent * 0.8
        if count:
            size[0] = 0.0                       # an empty region
            corner[-1] = torch.tensor([-30.0, extent - 5.0], dtype=torch.float64)  # mostly outside
        boxes.append(torch.cat([corner, corner + size], dim=1))
    return boxes


@pytest.mark.parametrize("sampling_ratio", [0, 1, 2, 3])
@pytest.mark.parametrize("height, width", [(11, 15), (15, 11)])   # either axis contracted first
def test_separable_roi_align_matches_torchvision(sampling_ratio, height, width):
    generator = torch.Generator().manual_seed(sampling_ratio)
    features = torch.randn(3, 4, height, width, generator=generator, dtype=torch.float64, requires_grad=True)
    boxes = _regions(generator, (6, 0, 9), extent=110)
    expected = roi_align(features, boxes, 5, 1 / 8, sampling_ratio=sampling_ratio, aligned=True)
    # A small chunk size exercises the chunked path too.
    actual = separable_roi_align(features, boxes, 5, 1 / 8, sampling_ratio, max_elements=200)
    assert actual.shape == expected.shape == (15, 4, 5, 5)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-12)
    upstream = torch.randn(expected.shape, generator=generator, dtype=torch.float64)
    grad_expected, = torch.autograd.grad((expected * upstream).sum(), features)
    grad_actual, = torch.autograd.grad((actual * upstream).sum(), features)
    torch.testing.assert_close(grad_actual, grad_expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("side", [16, 40])   # separable at inference up to 32 × 32 cells, the kernel above
def test_pooler_uses_the_same_values_with_and_without_gradients(side):
    generator = torch.Generator().manual_seed(0)
    pooler = RoIPooler(7, 8)
    features = torch.randn(2, 8, side, side, generator=generator)
    boxes = [b.float() for b in _regions(generator, (5, 3), extent=side * 8)]
    inference = pooler(features, boxes)
    training = pooler(features.clone().requires_grad_(), boxes)
    assert training.requires_grad
    kernel = roi_align(features, boxes, 7, 1 / 8, sampling_ratio=2, aligned=True)
    torch.testing.assert_close(training.detach(), inference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(inference, kernel, rtol=1e-5, atol=1e-5)
    empty = pooler(features.clone().requires_grad_(), [torch.zeros(0, 4), torch.zeros(0, 4)])
    assert empty.shape == (0, 8, 7, 7)
    assert pooler(features, [torch.zeros(0, 4), torch.zeros(0, 4)]).shape == (0, 8, 7, 7)


@pytest.mark.parametrize("requires_grad", [False, True])
def test_pooler_keeps_subpixel_box_positions_for_bfloat16_features(requires_grad):
    # value = x - 215 at stride 1: a pooled value moves one unit per pixel the box moves. bfloat16
    # keeps 8 bits (steps of 1 px at 128-256 px): cast to it, the box below would move 0.3 px.
    ramp = (torch.arange(256, dtype=torch.float32) - 215).repeat(1, 1, 8, 1)   # [1, 1, 8, 256]
    boxes = [torch.tensor([[201.3, 1.0, 229.7, 6.0]])]
    pooler = RoIPooler(4, 1)
    exact = pooler(ramp, boxes)
    pooled = pooler(ramp.to(torch.bfloat16).requires_grad_(requires_grad), boxes)
    assert pooled.dtype == torch.bfloat16
    # within bfloat16's rounding of values up to ~14 (< 0.1), not the 0.3 of a moved box
    torch.testing.assert_close(pooled.float(), exact, rtol=0, atol=0.1)


@pytest.mark.parametrize("side", [16, 40])   # the separable form and the kernel
def test_pooler_reads_cell_i_at_the_backbones_cell_centre(side):
    # A map whose value is the cell's own column index: with cells centred at origin + i·stride,
    # a region centred on input x must pool the value (x - origin) / stride at its middle bin.
    stride, origin = 8, 0.5
    columns = torch.arange(side, dtype=torch.float32).repeat(1, 1, side, 1)        # [1, 1, side, side]
    pooler = RoIPooler(5, stride, origin=origin)
    centres = torch.tensor([20.5, 44.5, 61.0])
    boxes = torch.stack([centres - 6, torch.full_like(centres, 40.0), centres + 6, torch.full_like(centres, 60.0)], 1)
    for features in (columns, columns.clone().requires_grad_()):
        pooled = pooler(features, [boxes])
        torch.testing.assert_close(pooled[:, 0, 2, 2].detach(), (centres - origin) / stride)
    # The default origin is RoIAlign's own aligned=True convention: cells at (i + ½)·stride.
    pooled = RoIPooler(5, stride)(columns, [boxes])
    torch.testing.assert_close(pooled[:, 0, 2, 2], centres / stride - 0.5)
