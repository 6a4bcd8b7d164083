"""Fast R-CNN: contract, proposals given or computed, the RoI sampler's fractions, overfitting."""

import torch

from detect.boxes import box_iou
from detect.config import RoIHeadConfig, load_config
from detect.models import build_detector
from detect.models.roi_head import RoIHead
from detect.proposals.selective_search import SelectiveSearchConfig, compute_proposals

from tests.models.contract import assert_valid_detector
from tests.models.helpers import negative_target, overfit, tiny_batch

NUM_CLASSES = 8


def tiny_config():
    return load_config(None, [
        "model.name=fast_rcnn", "model.input_size=128", "model.backbone.name=small",
        "model.roi_head.hidden_dim=128", "model.roi_head.batch_size_per_image=64",
        "model.roi_head.background_iou_low=0.1", "model.proposals.selective_search.max_boxes=300",
        "model.proposals.selective_search.min_size=2"])


def with_proposals(images, targets):
    proposals = compute_proposals(images, SelectiveSearchConfig(max_boxes=300, min_size=2))
    return [dict(t, proposals=p) for t, p in zip(targets, proposals)]


def test_contract_with_selective_search_run_at_predict_time():
    torch.manual_seed(0)
    model = build_detector(tiny_config().model, NUM_CLASSES)
    assert model.uses_proposals
    images, targets = tiny_batch(2)
    images.append(torch.rand(3, 96, 120))
    targets.append(negative_target())
    assert_valid_detector(model, images, with_proposals(images, targets), NUM_CLASSES)


def test_proposals_given_in_original_pixels_are_resized_with_the_image():
    torch.manual_seed(0)
    model = build_detector(tiny_config().model, NUM_CLASSES).eval()
    image = torch.rand(3, 64, 64)                                   # upscaled ×2 to 128 inside
    seen = []
    model.roi_head.register_forward_hook(lambda module, args, output: seen.append(args[1][0].clone()))
    model.predict([image], [torch.tensor([[8.0, 8.0, 24.0, 40.0]])])
    assert torch.allclose(seen[0], torch.tensor([[16.0, 16.0, 48.0, 80.0]]))


def test_roi_sampler_fractions_and_background_range():
    config = RoIHeadConfig(batch_size_per_image=64, positive_fraction=0.25, background_iou_low=0.1)
    head = RoIHead(16, 8, NUM_CLASSES, config)
    gt = torch.tensor([[20.0, 20.0, 60.0, 60.0]])
    generator = torch.Generator().manual_seed(0)
    shifts = torch.rand(2000, 2, generator=generator) * 60 - 30
    sizes = torch.rand(2000, 2, generator=generator) * 40 + 20
    proposals = torch.cat([20 + shifts, 20 + shifts + sizes], dim=1).clamp(0, 128)
    torch.manual_seed(0)
    regions, labels, deltas = head.sample_training_regions([proposals], [{"boxes": gt, "labels": torch.tensor([3])}])
    iou = box_iou(regions[0], gt)[:, 0]
    foreground = labels > 0
    assert len(labels) == 64 and int(foreground.sum()) == 16                  # 25 % of 64
    assert (labels[foreground] == 4).all() and (iou[foreground] >= 0.5).all()
    assert (iou[~foreground] < 0.5).all() and (iou[~foreground] >= 0.1).all()  # background in [0.1, 0.5)
    assert (deltas[~foreground] == 0).all()


def test_overfits_two_images_and_finds_every_object():
    torch.manual_seed(0)
    model = build_detector(tiny_config().model, NUM_CLASSES)
    images, targets = tiny_batch(2, seed=3)
    targets = with_proposals(images, targets)
    history = overfit(model, images, targets, iterations=100, lr=0.02)
    assert history[-1] < 0.25 * history[0]
    model.eval()
    proposals = [t["proposals"] for t in targets]
    for detections, target in zip(model.predict(images, proposals), targets):
        keep = detections.scores >= 0.3
        iou = box_iou(target["boxes"], detections.boxes[keep])
        same = target["labels"][:, None] == detections.labels[keep][None, :]
        assert ((iou > 0.7) & same).any(dim=1).all()
