"""Images without objects, for all four detectors in one place (issue 7): an all-negative batch
trains with finite losses and finite gradients, and inference on it returns valid, possibly
empty, detections."""

import pytest
import torch

from detect.models import build_detector
from detect.proposals.selective_search import compute_proposals

from tests.models import test_fast_rcnn, test_faster_rcnn, test_rcnn, test_yolo
from tests.models.helpers import negative_target

NUM_CLASSES = 8
CONFIGS = {"faster_rcnn": test_faster_rcnn.tiny_config, "fast_rcnn": test_fast_rcnn.tiny_config,
           "rcnn": test_rcnn.tiny_config, "yolo": test_yolo.tiny_config}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_all_negative_batch_trains_and_predicts(name):
    torch.manual_seed(0)
    model = build_detector(CONFIGS[name]().model, NUM_CLASSES)
    images = [torch.rand(3, 128, 128), torch.zeros(3, 72, 100)]       # noise and a blank image
    targets = [negative_target(), negative_target()]
    if model.uses_proposals:
        targets = [dict(t, proposals=p) for t, p in zip(targets, compute_proposals(images, model.proposal_config))]
    model.train()
    losses = model(images, targets)
    assert losses and all(torch.isfinite(value) for value in losses.values()), losses
    sum(losses.values()).backward()
    gradients = [p.grad for p in model.parameters() if p.grad is not None]
    assert gradients and all(torch.isfinite(g).all() for g in gradients)
    model.eval()
    with torch.no_grad():
        outputs = model.predict(images, [t["proposals"] for t in targets]) if model.uses_proposals \
            else model.predict(images)
    assert len(outputs) == 2
    for image, (boxes, scores, labels) in zip(images, outputs):
        assert boxes.shape[0] == scores.shape[0] == labels.shape[0]
        assert torch.isfinite(boxes).all() and torch.isfinite(scores).all()
        assert (boxes[:, 2] <= image.shape[-1] + 1e-3).all() and (boxes[:, 3] <= image.shape[-2] + 1e-3).all()


@pytest.mark.parametrize("name", ["fast_rcnn", "rcnn"])
def test_negative_images_without_any_proposal(name):
    """Nothing to sample (no objects, no proposals, e.g. all cropped away by augmentation): a zero
    loss, not NaN; and inference on no proposals returns no detections instead of raising."""
    torch.manual_seed(0)
    model = build_detector(CONFIGS[name]().model, NUM_CLASSES)
    images = [torch.rand(3, 64, 64), torch.rand(3, 48, 80)]
    no_proposals = [torch.zeros((0, 4)), torch.zeros((0, 4))]
    model.train()
    losses = model(images, [dict(negative_target(), proposals=p) for p in no_proposals])
    assert losses and all(float(value.detach()) == 0.0 for value in losses.values()), losses
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        outputs = model.predict(images, no_proposals)
    assert [len(o.boxes) for o in outputs] == [0, 0]


def test_box_decoding_of_no_boxes():
    from detect.boxes import BoxCoder

    decoded = BoxCoder((10.0, 10.0, 5.0, 5.0)).decode(torch.zeros((0, 4 * NUM_CLASSES)), torch.zeros((0, 4)))
    assert decoded.shape == (0, 4 * NUM_CLASSES)
