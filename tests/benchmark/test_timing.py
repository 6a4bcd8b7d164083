"""The timing helpers' bookkeeping (never their speed: timings are benchmarks' business)."""

import time

import pytest
import torch

from detect.benchmark.timing import CallTimer, backbone_timer, time_inference
from detect.config import load_config
from detect.models import build_detector
from tests.models.helpers import tiny_batch


class Sleeper:
    def __init__(self):
        self.calls = 0

    def nap(self, seconds: float) -> str:
        self.calls += 1
        time.sleep(seconds)
        return "rested"


def test_call_timer_counts_every_call_since_the_last_take_and_restores_the_method():
    sleeper = Sleeper()
    with CallTimer(sleeper, "nap") as timer:
        assert sleeper.nap(0.01) == "rested"          # the method still returns its value
        sleeper.nap(0.01)
        assert timer.take() >= 20.0                    # both calls, in milliseconds (sleep never returns early)
        assert timer.take() == 0.0                     # taken: starts again from zero
    assert "nap" not in vars(sleeper)                 # the class's method is back
    sleeper.nap(0.0)
    assert timer.take() == 0.0 and sleeper.calls == 3  # calls after removal are not timed


def test_call_timer_keeps_the_time_of_a_call_that_raises():
    class Failing:
        def run(self):
            time.sleep(0.005)
            raise ValueError("boom")

    failing = Failing()
    timer = CallTimer(failing, "run")
    with pytest.raises(ValueError, match="boom"):
        failing.run()
    assert timer.take() >= 5.0
    timer.remove()
    timer.remove()                                     # removing twice is harmless
    assert "run" not in vars(failing)


DETECTORS = {
    "faster_rcnn": ["model.name=faster_rcnn", "model.input_size=128", "model.backbone.name=small",
                    "model.rpn.pre_nms_top_n_test=300", "model.rpn.post_nms_top_n_test=50"],
    "yolo": ["model.name=yolo", "model.input_size=128", "model.backbone.name=small"],
    "rcnn": ["model.name=rcnn", "model.input_size=128", "model.backbone.name=small", "model.rcnn.crop_size=32",
             "model.rcnn.context_pad=4", "model.rcnn.feature_dim=64"],
}


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_backbone_time_is_recorded_per_timed_image_and_never_exceeds_the_whole(name):
    torch.manual_seed(0)
    model = build_detector(load_config(None, DETECTORS[name]).model, num_classes=3)
    images, _ = tiny_batch(5, size=96)
    samples = [{"image": image} for image in images]
    if model.uses_proposals:                           # R-CNN: its crops go through the backbone too
        for sample in samples:
            sample["proposals"] = torch.tensor([[5.0, 5.0, 60.0, 50.0], [20.0, 30.0, 90.0, 90.0]])
    with backbone_timer(model) as backbone, CallTimer(model, "predict") as whole:
        total = time_inference(model, samples, images=3, warmup=2, timers=[backbone, whole])
    assert total.count == 3 and len(backbone.per_image_ms) == len(whole.per_image_ms) == 3  # warm-up not recorded
    # the backbone runs inside predict: on every image its time is positive and at most the whole call's
    assert all(0 < part <= entire for part, entire in zip(backbone.per_image_ms, whole.per_image_ms))
    assert not any("forward_normalised" in vars(module) for module in model.modules())


def test_backbone_timer_names_a_model_without_a_backbone():
    with pytest.raises(TypeError, match="Linear has no detect.backbones.Backbone"):
        backbone_timer(torch.nn.Linear(2, 2))
