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


def test_mixed_precision_dtype_per_device(monkeypatch):
    from detect.engine import runtime

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert runtime.autocast_dtype(cuda) == torch.float16
    assert runtime.autocast_dtype(cuda, cuda=False, cpu=True) is None
    assert runtime.autocast_dtype(cpu) is None                       # CPU: off unless asked for
    monkeypatch.setattr(runtime, "cpu_has_native_bfloat16", lambda: True)
    assert runtime.autocast_dtype(cpu, cpu=True) == torch.bfloat16
    monkeypatch.setattr(runtime, "cpu_has_native_bfloat16", lambda: False)   # emulated: slower, so off
    assert runtime.autocast_dtype(cpu, cpu=True) is None


def test_bfloat16_training_keeps_float32_weights_losses_and_boxes(tmp_path, monkeypatch):
    from detect.engine import runtime

    monkeypatch.setattr(runtime, "cpu_has_native_bfloat16", lambda: True)   # bfloat16 runs anywhere, slowly
    trainer = Trainer(tiny_config(tmp_path, "train.epochs=1", "train.cpu_amp=true"), progress=False,
                      tensorboard=False)
    assert trainer.amp_dtype == torch.bfloat16 and not trainer.scaler.is_enabled()
    images, targets = next(iter(trainer._loader(0, 0)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = trainer.model.backbone(torch.stack(images))
        proposals, losses = trainer.model.rpn(features, [tuple(i.shape[-2:]) for i in images], targets)
    assert features.dtype == torch.bfloat16                       # the convolutions ran in bfloat16
    assert all(p.dtype == torch.float32 for p in proposals)       # boxes decoded in float32
    assert all(v.dtype == torch.float32 and math.isfinite(float(v)) for v in losses.values())
    before = weights(trainer.model)
    trainer.fit()
    after = trainer.model.state_dict()
    assert all(after[k].dtype == before[k].dtype for k in before)
    assert any(not torch.equal(after[k], before[k]) for k in before if before[k].is_floating_point())
