"""tools/benchmark.py end to end at tiny scale: one trained and one loaded detector in one table."""

import json
import sys
from pathlib import Path

import pytest

from detect.engine.runtime import cpu_has_native_bfloat16

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import benchmark  # noqa: E402


def test_table_with_a_trained_and_a_loaded_detector(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "bench"
    code = benchmark.main([
        "--data", "builtin", "--detectors", "faster_rcnn,yolo", "--checkpoint", f"faster_rcnn={tiny_checkpoint}",
        "--images", "2", "--warmup", "0", "--out", str(out), "--quiet",
        f"data.builtin_root={tiny_checkpoint.parent.parent / 'shapes'}", "data.builtin.image_size=64",
        "data.builtin.num_trainval=4", "data.builtin.num_test=2", "data.num_workers=0",
        "data.augmentation.max_size=64", "model.input_size=64", "train.epochs=1", "train.batch_size=2",
        "model.yolo.hidden_dim=32", "model.yolo.conv_channels=[16]",
        "model.anchors.sizes=[8,16,32]", "model.rpn.min_size=1", "model.roi_head.hidden_dim=32"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    rows = {row["detector"]: row for row in results["rows"]}
    assert set(rows) == {"faster_rcnn", "yolo"}
    assert rows["faster_rcnn"]["train_seconds"] is None and rows["yolo"]["train_seconds"] > 0
    for row in rows.values():
        assert 0.0 <= row["voc07_map"] <= 1.0 and row["timed_images"] == 2 and row["parameters"] > 0
        assert set(row["ap"]) == {"circle", "triangle", "square", "star", "cross", "hexagon", "ring", "heart"}
    assert results["machine"]["torch"] and results["machine"]["git"]
    assert results["machine"]["cpu_bfloat16"] == cpu_has_native_bfloat16()
    table = (out / "results.md").read_text()
    assert ("native bfloat16 (configs with train.cpu_amp" if cpu_has_native_bfloat16()
            else "no native bfloat16 (CPU training in float32)") in table
    assert "| Faster R-CNN |" in table and "| YOLOv1 |" in table and "Per-class AP" in table
    assert (out / "pr_yolo.png").stat().st_size > 0 and (out / "speed_vs_map.png").stat().st_size > 0
    assert "loaded" in capsys.readouterr().out


def test_unknown_detector_is_a_config_error():
    from detect.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown detector"):
        benchmark.main(["--detectors", "ssd"])


def test_variant_prefers_its_config_and_falls_back_per_detector(tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    source = Path(__file__).resolve().parents[2] / "configs"
    for name in ("faster_rcnn_shapes.yaml", "faster_rcnn_shapes_mnv2.yaml", "yolo_shapes.yaml"):
        (configs / name).write_text((source / name).read_text())
    args = benchmark.argparse.Namespace(variant="mnv2", backbone=None, weights=None, quick=False, out=tmp_path / "out",
                                        overrides=[])
    faster, faster_note = benchmark.detector_config("faster_rcnn", "builtin", args, configs)
    yolo, yolo_note = benchmark.detector_config("yolo", "builtin", args, configs)
    assert faster_note == "faster_rcnn_shapes_mnv2.yaml" and faster.model.backbone.name == "mobilenet_v2"
    assert yolo_note == "yolo_shapes.yaml" and yolo.model.backbone.name == "small"


def test_variant_without_any_config_is_a_config_error():
    from detect.errors import ConfigError

    with pytest.raises(ConfigError, match="--variant mvn2"):
        benchmark.main(["--variant", "mvn2", "--detectors", "faster_rcnn,yolo"])
