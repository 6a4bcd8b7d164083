"""Training engine at tiny scale: exact resume, NaN stop, fine-tuning across class counts, outputs."""

from __future__ import annotations

import math

import pytest
import torch

from detect.config import load_config
from detect.engine.checkpoint import load_checkpoint, load_detector
from detect.engine.trainer import Trainer, TrainingDiverged
from detect.errors import CheckpointError


def tiny_config(tmp_path, *extra):
    return load_config(None, [
        f"data.builtin_root={tmp_path / 'shapes'}", "data.builtin.image_size=64", "data.builtin.num_trainval=8",
        "data.builtin.num_test=4", "data.num_workers=0", "data.augmentation.max_size=64",
        "model.input_size=64", "model.anchors.sizes=[8,16,32]", "model.rpn.min_size=1",
        "model.rpn.pre_nms_top_n_train=300", "model.rpn.post_nms_top_n_train=100",
        "model.rpn.pre_nms_top_n_test=300", "model.rpn.post_nms_top_n_test=50",
        "model.roi_head.hidden_dim=32", "model.roi_head.batch_size_per_image=16",
        "train.epochs=2", "train.batch_size=2", "train.warmup_iters=2", "train.eval_every=1",
        f"train.output_dir={tmp_path / 'run'}", "train.log_every=1", *extra])


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_mid_epoch_gives_identical_weights(tmp_path):
    straight = Trainer(tiny_config(tmp_path / "a"), progress=False, tensorboard=False)
    summary = straight.fit()
    assert summary["iterations"] == 8 and 0.0 <= summary["map"] <= 1.0

    first = Trainer(tiny_config(tmp_path / "b"), progress=False, tensorboard=False)
    first.fit(max_iterations=3)                         # stop inside epoch 1 (4 batches per epoch)
    assert load_checkpoint(tmp_path / "b" / "run" / "last.pt")["batch"] == 3
    resumed = Trainer(tiny_config(tmp_path / "b"), progress=False, tensorboard=False)
    resumed.fit(resume=tmp_path / "b" / "run" / "last.pt")
    assert resumed.iteration == 8
    expected, actual = weights(straight.model), weights(resumed.model)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), f"{name} differs after resume"


def test_outputs_of_a_run(tmp_path):
    trainer = Trainer(tiny_config(tmp_path), progress=False, tensorboard=True)
    trainer.fit()
    run = tmp_path / "run"
    for name in ("last.pt", "best.pt", "config.yaml", "log.csv", "metrics.csv", "loss_curve.png", "summary.json"):
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").iterdir())
    model, checkpoint = load_detector(run / "best.pt")
    assert checkpoint["class_names"][0] == "circle" and not model.training
    rows = (run / "log.csv").read_text().splitlines()
    assert rows[0].startswith("iteration,epoch,lr,rpn_cls,rpn_box,roi_cls,roi_box,total") and len(rows) == 9


def test_nan_loss_stops_with_message_and_keeps_checkpoint(tmp_path, monkeypatch):
    trainer = Trainer(tiny_config(tmp_path, "train.checkpoint_every=1"), progress=False, tensorboard=False)
    trainer.fit(max_iterations=2)
    last = tmp_path / "run" / "last.pt"
    before = last.read_bytes()
    original = type(trainer.model).losses

    def poisoned(self, batch, targets):
        losses = original(self, batch, targets)
        losses["roi_box"] = losses["roi_box"] * math.nan
        return losses

    monkeypatch.setattr(type(trainer.model), "losses", poisoned)
    with pytest.raises(TrainingDiverged, match=r"loss roi_box is nan at iteration 3 \(epoch 1\)"):
        trainer.fit()
    assert last.read_bytes() == before


def test_fine_tune_with_other_classes_skips_class_layers(tmp_path, caplog):
    source = Trainer(tiny_config(tmp_path / "src"), progress=False, tensorboard=False)
    source.fit(max_iterations=1)
    target = Trainer(tiny_config(tmp_path / "dst", "data.class_names=[circle, square]", "data.on_invalid=skip"),
                     progress=False, tensorboard=False)
    with caplog.at_level("INFO"):
        target.load_weights(tmp_path / "src" / "run" / "last.pt")
    assert "roi_head.cls_score.weight (shape (9, 32) != (3, 32))" in caplog.text
    assert torch.equal(target.model.backbone.stages[0][0].weight, source.model.backbone.stages[0][0].weight)
    with pytest.raises(CheckpointError, match="checkpoint classes differ"):
        target.resume(tmp_path / "src" / "run" / "last.pt")


def test_optimizer_choice():
    from torch import nn

    from detect.config import TrainConfig
    from detect.engine.trainer import build_optimizer

    parameters = list(nn.Linear(2, 2).parameters())
    sgd = build_optimizer(parameters, TrainConfig(lr=0.1, momentum=0.8, weight_decay=0.01))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.8
    adamw = build_optimizer(parameters, TrainConfig(optimizer="adamw", lr=0.001, weight_decay=0.05))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["weight_decay"] == 0.05
