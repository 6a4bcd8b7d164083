"""Config loading: strict keys, types, ranges, overrides, and round trips through checkpoints."""

import pytest

from detect.config import Config, config_from_dict, config_to_dict, dump_config, load_config
from detect.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_are_the_papers_values():
    config = load_config()
    assert config.model.rpn.positive_iou == 0.7 and config.model.rpn.negative_iou == 0.3
    assert config.model.rpn.batch_size_per_image == 256 and config.model.rpn.nms_iou == 0.7
    assert config.model.roi_head.box_weights == (10.0, 10.0, 5.0, 5.0)
    assert config.model.roi_head.positive_fraction == 0.25 and config.model.roi_head.nms_iou == 0.3
    assert len(config.model.anchors.sizes) * len(config.model.anchors.aspect_ratios) == 9


def test_yaml_and_overrides(tmp_path):
    path = write(tmp_path, "train:\n  lr: 0.05\nmodel:\n  anchors:\n    sizes: [8, 16, 32]\n")
    config = load_config(path, ["train.epochs=3", "data.class_names=[a, b]", "model.backbone.weights=null"])
    assert config.train.lr == 0.05 and config.train.epochs == 3
    assert config.model.anchors.sizes == (8.0, 16.0, 32.0)
    assert config.data.class_names == ["a", "b"] and config.model.backbone.weights is None


@pytest.mark.parametrize("text, message", [
    ("train:\n  learning_rate: 0.1\n", "unknown key 'train.learning_rate'"),
    ("train:\n  lr: fast\n", "key 'train.lr' is 'fast'; expected a number"),
    ("train:\n  lr: -0.1\n", "key 'train.lr' is -0.1; it must lie in (0, inf]"),
    ("model:\n  rpn:\n    nms_iou: 1.5\n", "it must lie in [0, 1]"),
    ("data:\n  class_names: []\n", "at least one class"),
    ("train:\n  epochs: 0\n", "key 'train.epochs' is 0"),
    ("model:\n  rpn:\n    negative_iou: 0.8\n", "must not exceed"),
    ("model:\n  rcnn:\n    crop_size: 32\n", "model.rcnn.context_pad (16) leaves no room in a 32-pixel crop"),
    ("train: [1, 2]\n", "expected a mapping"),
    ("train:\n  lr: [0.1\n", "malformed YAML"),
    ("- just a list\n", "must be a mapping"),
    ("data:\n  augmentation:\n    flip: 3\n", "data.augmentation: invalid augmentation setting: flip is a probability"),
    ("data:\n  augmentation:\n    crop_scale: [0.5]\n", "key 'data.augmentation.crop_scale' is [0.5]; expected a list of 2"),
    ("data:\n  augmentation:\n    crop_scale: [0.9, 0.5]\n", "crop_scale needs 0 < low <= high <= 1"),
    ("data:\n  builtin:\n    min_objects: 0\n", "data.builtin: invalid synthetic dataset setting"),
    ("model:\n  proposals:\n    selective_search:\n      max_boxes: 0\n", "max_boxes must be >= 1"),
])
def test_errors_name_the_key_and_file(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_override_errors_say_command_line():
    with pytest.raises(ConfigError, match="command line.*unknown key 'train.lrr' \\(did you mean 'lr'\\?\\)"):
        load_config(None, ["train.lrr=1"])
    with pytest.raises(ConfigError, match="must look like key.sub=value"):
        load_config(None, ["train.lr"])


def test_missing_file():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("nope.yaml")


def test_round_trip_through_dict_and_yaml():
    config = load_config(None, ["model.anchors.sizes=[1, 2]", "train.milestones=[3, 5]"])
    assert config_from_dict(config_to_dict(config)) == config
    assert "milestones:" in dump_config(config)
    assert Config() == load_config()


def test_every_shipped_config_loads():
    from pathlib import Path
    configs = sorted(Path("configs").glob("*.yaml"))
    assert configs
    for path in configs:
        load_config(path)
