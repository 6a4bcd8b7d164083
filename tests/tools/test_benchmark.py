"""tools/benchmark.py end to end at tiny scale: one trained and one loaded detector in one table."""

import json
import sys
from pathlib import Path

import pytest

from detect.benchmark import BenchmarkOptions, runner
from detect.benchmark.runner import detector_config, earlier_benchmark, remove_earlier_benchmark
from detect.engine.runtime import cpu_has_native_bfloat16

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import benchmark  # noqa: E402


def test_table_with_a_trained_and_a_loaded_detector(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "bench"
    # An earlier run to check reproduction against: Faster R-CNN only, with a mAP no tiny model reaches.
    reference = tmp_path / "earlier.json"
    reference.write_text(json.dumps({"rows": [{"detector": "faster_rcnn", "title": "Faster R-CNN", "voc07_map": 1.5}],
                                     "machine": {"git": "0123abc", "cpu": "Earlier CPU", "cpu_bfloat16": False},
                                     "date": "2026-12-01 10:00 UTC"}))
    code = benchmark.main([
        "--data", "builtin", "--detectors", "faster_rcnn,yolo", "--checkpoint", f"faster_rcnn={tiny_checkpoint}",
        "--reference", str(reference),
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
        assert 0.0 < row["backbone_ms"]    # part of each image's time (the invariant: tests/benchmark/test_timing.py)
        assert set(row["ap"]) == {"circle", "triangle", "square", "star", "cross", "hexagon", "ring", "heart"}
    assert results["machine"]["torch"] and results["machine"]["git"]
    assert rows["faster_rcnn"]["peak_gpu_memory_mb"] is None and rows["faster_rcnn"]["peak_memory_mb"] > 0
    # A loaded detector's row shows what was trained: the checkpoint's model settings, not the YAML's.
    import torch
    assert rows["faster_rcnn"]["config"]["model"] == torch.load(tiny_checkpoint, weights_only=False)["config"]["model"]
    assert rows["faster_rcnn"]["config_note"] == f"{tiny_checkpoint} (loaded)"
    assert results["test_images"] == 2 and results["failed"] == []
    assert results["machine"]["cpu_bfloat16"] == cpu_has_native_bfloat16()
    table = (out / "results.md").read_text()
    assert ("native bfloat16 (configs with train.cpu_amp" if cpu_has_native_bfloat16()
            else "no native bfloat16 (CPU training in float32)") in table
    assert "| Faster R-CNN |" in table and "| YOLOv1 |" in table and "Per-class AP" in table
    assert "Inference: batch 1, 2 test images timed after 0 warm-up ones" in table
    assert (out / "pr_yolo.png").stat().st_size > 0 and (out / "speed_vs_map.png").stat().st_size > 0
    assert results["date"].endswith("UTC")
    (check,) = results["reproduction"]
    assert check["detector"] == "faster_rcnn" and check["reference_map"] == 1.5 and not check["within"]
    assert check["config_changes"] is None and "not recorded in the reference" in (out / "results.md").read_text()
    assert "Against the reference run" in table and "(git 0123abc, 2026-12-01 10:00 UTC, Earlier CPU" in table
    printed = capsys.readouterr().out
    assert "loaded" in printed and "0 of 1 detectors within ±0.02; not: Faster R-CNN" in printed


def test_unknown_detector_is_a_config_error():
    from detect.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown detector"):
        benchmark.main(["--detectors", "ssd"])
    with pytest.raises(ConfigError, match="--detectors is empty; choose from rcnn, fast_rcnn"):
        benchmark.main(["--detectors", " , "])


def test_checkpoint_options_are_refused_before_any_checkpoint_is_read(tmp_path):
    from detect.errors import ConfigError

    assert benchmark.parse_checkpoints(["yolo=a.pt", "faster_rcnn=b=c.pt"]) == {"yolo": "a.pt", "faster_rcnn": "b=c.pt"}
    for malformed in ("yolo", "yolo=", "=a.pt"):
        with pytest.raises(ConfigError, match="expected NAME=PATH"):
            benchmark.parse_checkpoints([malformed])
    # An unknown name is refused before the known detector's checkpoint (here not even a file) is loaded.
    options = BenchmarkOptions(detectors=("yolo",), checkpoints={"yolo": str(tmp_path / "none.pt"), "ssd": "x.pt"})
    with pytest.raises(ConfigError, match="--checkpoint ssd=x.pt: ssd is not one of rcnn"):
        options.check()


def test_variant_prefers_its_config_and_falls_back_per_detector(tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    source = Path(__file__).resolve().parents[2] / "configs"
    for name in ("faster_rcnn_shapes.yaml", "faster_rcnn_shapes_mnv2.yaml", "yolo_shapes.yaml"):
        (configs / name).write_text((source / name).read_text())
    options = BenchmarkOptions(variant="mnv2", configs=configs, out=tmp_path / "out")
    faster, faster_note = detector_config("faster_rcnn", options)
    yolo, yolo_note = detector_config("yolo", options)
    assert faster_note == "faster_rcnn_shapes_mnv2.yaml" and faster.model.backbone.name == "mobilenet_v2"
    assert yolo_note == "yolo_shapes.yaml" and yolo.model.backbone.name == "small"


def test_variant_without_any_config_is_a_config_error():
    from detect.errors import ConfigError

    with pytest.raises(ConfigError, match="--variant mvn2"):
        benchmark.main(["--variant", "mvn2", "--detectors", "faster_rcnn,yolo"])


TINY = ["data.builtin.image_size=64", "data.builtin.num_trainval=4", "data.builtin.num_test=2", "data.num_workers=0",
        "data.augmentation.max_size=64", "model.input_size=64", "model.anchors.sizes=[8,16,32]", "model.rpn.min_size=1",
        "model.roi_head.hidden_dim=32"]


def _loaded_faster_rcnn(tiny_checkpoint, out, warmup=0):
    return ["--data", "builtin", "--detectors", "faster_rcnn", "--checkpoint", f"faster_rcnn={tiny_checkpoint}",
            "--images", "1", "--warmup", str(warmup), "--out", str(out), "--quiet",
            f"data.builtin_root={tiny_checkpoint.parent.parent / 'shapes'}", *TINY]


def test_an_earlier_benchmark_is_refused_unless_overwritten(tiny_checkpoint, tmp_path):
    from detect.errors import OutputError

    out = tmp_path / "bench"
    (out / "yolo").mkdir(parents=True)
    (out / "results.json").write_text('{"rows": []}')
    (out / "yolo" / "last.pt").write_bytes(b"an earlier run's")
    (out / "cache").mkdir()
    (out / "cache" / "kept.npz").write_bytes(b"cache")
    args = ["--data", "builtin", "--detectors", "faster_rcnn,yolo", "--checkpoint", f"faster_rcnn={tiny_checkpoint}",
            "--out", str(out)]
    with pytest.raises(OutputError, match=r"holds an earlier benchmark \(results.json, yolo/last.pt\); start afresh "
                                          r"with --overwrite"):
        benchmark.main(args)
    assert (out / "results.json").read_text() == '{"rows": []}'   # nothing touched
    earlier = earlier_benchmark(out, ["yolo"], overwrite=True)
    remove_earlier_benchmark(out, earlier)
    assert not (out / "results.json").exists() and not (out / "yolo" / "last.pt").exists()
    assert (out / "cache" / "kept.npz").exists()
    # A loaded detector's folder is not this run's to judge: only results files count for it.
    assert earlier_benchmark(out, [], overwrite=False) == {}


def test_checkpoint_of_another_detector_and_too_small_test_split_are_refused_before_training(tiny_checkpoint,
                                                                                             tmp_path):
    from detect.errors import ConfigError

    with pytest.raises(ConfigError, match="the checkpoint holds a faster_rcnn detector, not yolo"):
        benchmark.main(["--detectors", "yolo", "--checkpoint", f"yolo={tiny_checkpoint}", "--out", str(tmp_path)])
    with pytest.raises(ConfigError, match=r"the test split has 2 image\(s\), none left to time after --warmup 2"):
        benchmark.main(_loaded_faster_rcnn(tiny_checkpoint, tmp_path / "bench", warmup=2))
    assert not (tmp_path / "bench").exists()


def test_a_failing_detector_is_reported_and_the_others_are_kept(tiny_checkpoint, tmp_path, monkeypatch):
    original = runner.benchmark_detector

    def yolo_runs_out_of_memory(name, *args):
        if name == "yolo":
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(name, *args)

    monkeypatch.setattr(runner, "benchmark_detector", yolo_runs_out_of_memory)
    out = tmp_path / "bench"
    args = _loaded_faster_rcnn(tiny_checkpoint, out)
    args[args.index("faster_rcnn")] = "yolo,faster_rcnn"
    assert benchmark.main(args) == 1
    results = json.loads((out / "results.json").read_text())
    assert [row["detector"] for row in results["rows"]] == ["faster_rcnn"]   # the one after the failure ran
    assert results["failed"] == [{"detector": "yolo", "title": "YOLOv1", "error": "CUDA out of memory. Tried to allocate 2.00 GiB"}]
    assert "**Failed:** YOLOv1: CUDA out of memory" in (out / "results.md").read_text()
