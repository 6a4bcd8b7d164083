"""R-CNN's staged training at tiny scale: outputs, skipping finished stages, resuming extraction."""

import logging

import pytest
import torch

from detect.config import load_config
from detect.engine import rcnn as rcnn_engine
from detect.engine.checkpoint import load_detector


def tiny_rcnn_config(root, run_dir, feature_dir):
    return load_config(None, [
        "model.name=rcnn", f"data.builtin_root={root / 'shapes'}", "data.builtin.image_size=96",
        "data.builtin.num_trainval=6", "data.builtin.num_test=2", "data.builtin.min_size=0.15",
        "data.num_workers=0", "data.augmentation.max_size=96", "model.input_size=96",
        "model.rcnn.crop_size=24", "model.rcnn.context_pad=4", "model.rcnn.feature_dim=32",
        "model.rcnn.batch_size_per_image=16", "model.rcnn.retrain_every=50",
        "model.proposals.selective_search.max_boxes=60", "model.proposals.selective_search.min_size=3",
        f"model.proposals.cache_dir={root / 'proposals'}", "model.proposals.workers=1",
        f"model.rcnn.feature_cache_dir={feature_dir}", "train.epochs=1", "train.batch_size=2",
        "train.eval_every=0", f"train.output_dir={run_dir}"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("rcnn")
    config = tiny_rcnn_config(root, root / "run", root / "features")
    torch.manual_seed(0)
    summary = rcnn_engine.train_rcnn(config, progress=False)
    return root, config, summary


def test_all_stages_produce_one_loadable_detector(trained):
    root, _, summary = trained
    assert (root / "run" / "finetuned.pt").exists() and summary["map"] is not None
    model, checkpoint = load_detector(summary["best"])
    assert bool(model.svm_trained) and bool(model.regressor_trained)
    assert model.svm_weight.abs().sum() > 0 and float(model.feature_scale) > 0
    assert set(checkpoint["svm"]) <= set(checkpoint["class_names"])
    images = [torch.rand(3, 96, 96)]
    detections = model.predict(images)                         # selective search run at predict time
    assert len(detections) == 1


def test_rerun_skips_finished_stages(trained, caplog):
    root, config, summary = trained
    with caplog.at_level(logging.INFO):
        again = rcnn_engine.train_rcnn(config, progress=False)
    assert "stage 1: fine-tuned weights found" in caplog.text
    assert "stage 2: features of all" in caplog.text
    assert again["map"] == pytest.approx(summary["map"])


def test_interrupted_feature_extraction_resumes_to_the_same_svms(trained, monkeypatch, caplog):
    root, config, summary = trained
    first, _ = load_detector(summary["best"])                     # before the reruns overwrite best.pt
    feature_dir = root / "features_interrupted"
    config = tiny_rcnn_config(root, root / "run", feature_dir)   # same fine-tuned weights, fresh cache
    writes = {"count": 0}
    real_write = rcnn_engine.atomic_write_bytes

    def killed_after_three(path, data):
        if writes["count"] == 3:
            raise KeyboardInterrupt
        writes["count"] += 1
        real_write(path, data)

    monkeypatch.setattr(rcnn_engine, "atomic_write_bytes", killed_after_three)
    with pytest.raises(KeyboardInterrupt):
        rcnn_engine.train_rcnn(config, progress=False)
    assert len(list(feature_dir.glob("*/*.npz"))) == 3
    monkeypatch.setattr(rcnn_engine, "atomic_write_bytes", real_write)
    with caplog.at_level(logging.INFO):
        resumed = rcnn_engine.train_rcnn(config, progress=False)
    assert "extracting features of 3 images (3 already done)" in caplog.text
    second, _ = load_detector(resumed["best"])
    assert (feature_dir / "").exists() and summary["best"] == resumed["best"]
    assert torch.equal(first.svm_weight, second.svm_weight) and torch.equal(first.svm_bias, second.svm_bias)
    assert torch.equal(first.regressor_weight, second.regressor_weight)


def test_finetuned_weights_from_other_settings_are_refused_and_kept(trained):
    root, config, _ = trained
    finetuned = root / "run" / "finetuned.pt"
    before = finetuned.read_bytes()
    changed = tiny_rcnn_config(root, root / "run", root / "features")
    changed.train.lr = config.train.lr * 2
    with pytest.raises(rcnn_engine.DetectError, match=r"finetuned\.pt: fine-tuned with other settings \(train\.lr"):
        rcnn_engine.train_rcnn(changed, progress=False)
    assert finetuned.read_bytes() == before


def test_settings_that_do_not_change_finetuning_are_ignored(trained):
    _, config, _ = trained
    saved = rcnn_engine.finetuning_settings(rcnn_engine.config_to_dict(config))
    config_dict = rcnn_engine.config_to_dict(config)
    config_dict["data"]["num_workers"] = 3
    config_dict["model"]["rcnn"]["svm_c"] = 1.0
    config_dict["train"]["output_dir"] = "elsewhere"
    assert rcnn_engine.finetuning_settings(config_dict) == saved
    config_dict["train"]["cpu_amp"] = not config.train.cpu_amp
    assert rcnn_engine.finetuning_settings(config_dict) != saved


def test_without_final_evaluation_the_same_detector_is_saved_unscored(trained, caplog):
    root, config, summary = trained
    first, _ = load_detector(summary["best"])
    with caplog.at_level(logging.INFO):
        again = rcnn_engine.train_rcnn(config, progress=False, final_evaluation=False)
    assert again["map"] is None and "R-CNN test mAP" not in caplog.text
    second, checkpoint = load_detector(again["best"])
    assert checkpoint["metrics"]["map"] is None
    assert torch.equal(first.svm_weight, second.svm_weight) and torch.equal(first.regressor_weight,
                                                                             second.regressor_weight)
