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
        assert 0.0 < row["backbone_ms"]    # part of each image's time (the invariant: tests/test_benchmarking.py)
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


def _results(maps: dict, epochs: int = 6, git: str = "abc1234") -> dict:
    rows = [{"detector": name, "title": benchmark.TITLES[name], "voc07_map": value,
             "config": {"train": {"epochs": epochs, "output_dir": f"runs/{git}/{name}"}, "model": {"input_size": 480}}}
            for name, value in maps.items()]
    return {"rows": rows, "date": "2026-12-05 06:00 UTC",
            "machine": {"git": git, "cpu": "Test CPU", "cpu_count": 2, "torch_threads": 2, "cpu_bfloat16": False,
                        "gpu": None, "torch": "2.14.1"}}


def test_reproduction_checks_each_detector_against_the_reference():
    reference = _results({"rcnn": 0.80, "faster_rcnn": 0.90, "yolo": 0.81})
    ours = _results({"faster_rcnn": 0.88, "yolo": 0.7899, "torchvision": 0.87}, git="def5678")["rows"]
    checks = {c["detector"]: c for c in benchmark.reproduction(ours, reference, tolerance=0.02)}
    # Only detectors present in both runs are compared; R-CNN (reference only) and torchvision (new) are not.
    assert set(checks) == {"faster_rcnn", "yolo"}
    assert checks["faster_rcnn"]["delta"] == pytest.approx(-0.02) and checks["faster_rcnn"]["within"]
    assert checks["yolo"]["delta"] == pytest.approx(-0.0201) and not checks["yolo"]["within"]
    # Output folders differ between any two runs and are not a config change.
    assert checks["yolo"]["config_changes"] == []


def test_reproduction_names_the_config_keys_that_changed():
    reference = _results({"yolo": 0.70}, epochs=3)
    (check,) = benchmark.reproduction(_results({"yolo": 0.81}, epochs=9)["rows"], reference, tolerance=0.02)
    assert check["config_changes"] == ["train.epochs: 3 → 9"] and not check["within"]


def test_a_key_newer_than_the_reference_counts_only_when_set_away_from_its_default():
    """A reference written before ``data.train_difficult`` existed: the new key at its default (true,
    the behaviour from before) is no difference; set to false it is one."""
    from detect.config import Config

    assert Config().data.train_difficult is True
    reference = {"train": {"epochs": 6}, "data": {"root": "a"}}
    assert benchmark.config_changes({"train": {"epochs": 6}, "data": {"root": "a", "train_difficult": True}},
                                    reference) == []
    assert benchmark.config_changes({"train": {"epochs": 6}, "data": {"root": "a", "train_difficult": False}},
                                    reference) == ["data.train_difficult: (absent) → False"]
    # A key this run no longer has is always reported, whatever its value was.
    assert benchmark.config_changes({"train": {"epochs": 6}, "data": {}}, reference) == ["data.root: a → (absent)"]


def test_reproduction_table_in_the_markdown():
    results = _results({"faster_rcnn": 0.9003, "yolo": 0.70}, git="new")
    for row in results["rows"]:
        row.update(voc_area_map=0.9, coco_ap=0.6, coco_ap50=0.9, ap={"circle": 0.9}, train_seconds=60.0,
                   inference_ms=40.0, inference_p10_ms=39.0, inference_p90_ms=41.0, parameters=10 ** 6,
                   peak_memory_mb=100.0, config_note="test.yaml")
    results.update(dataset="shapes", quick=False, command="python tools/benchmark.py",
                   reference={"path": "old/results.json", "git": "abc1234", "date": "2026-12-04 06:00 UTC",
                              "cpu": "Test CPU", "cpu_bfloat16": True}, tolerance=0.02)
    results["reproduction"] = benchmark.reproduction(results["rows"], _results({"faster_rcnn": 0.9003, "yolo": 0.75}),
                                                     tolerance=0.02)
    results["rows"][0]["backbone_ms"] = 21.24       # the other row is an older run's, without the backbone time
    table = benchmark.markdown(results)
    assert "| 60.0 min |" not in table and "| 1.0 min | 40.0 (39.0–41.0) | 21.2 | — | 1.00 M | 100 MB |" in table
    assert "| 1.0 min | 40.0 (39.0–41.0) | — | — | 1.00 M | 100 MB |" in table
    assert "Against the reference run `old/results.json` (git abc1234, 2026-12-04 06:00 UTC" in table
    assert "| Faster R-CNN | 0.9003 | 0.9003 | +0.0000 | yes | none |" in table
    assert "| YOLOv1 | 0.7000 | 0.7500 | -0.0500 | **no** | none |" in table


@pytest.mark.parametrize("content, message", [
    (None, "reference results not found"),
    ("{not json", "not valid JSON"),
    ('{"rows": [{"detector": "yolo", "voc07_map": "high"}]}', "not a benchmark results.json"),
    ('{"rows": [{"detector": "yolo"}]}', "not a benchmark results.json"),
    ('[1, 2]', "not a benchmark results.json"),
])
def test_bad_reference_is_a_one_line_error_before_any_training(tmp_path, content, message):
    from detect.errors import ConfigError

    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message) as error:
        # The reference is read first: nothing is generated, trained or written.
        benchmark.main(["--reference", str(path), "--out", str(tmp_path / "out")])
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


def test_an_older_results_file_without_a_date_is_a_reference():
    """The built-in table of fe07705 (docs/results/shapes_mnv2.json until c7e30b1) was written
    before results recorded their date."""
    path = Path(__file__).resolve().parent / "results_fe07705_without_date.json"
    reference = benchmark.load_reference(path, "shapes", quick=False)
    assert "date" not in reference and reference["machine"]["git"] == "fe07705"
    checks = benchmark.reproduction(reference["rows"], reference, tolerance=0.0)
    assert [c["detector"] for c in checks] == ["rcnn", "fast_rcnn", "faster_rcnn", "yolo", "torchvision"]
    assert all(c["within"] and c["delta"] == 0.0 and c["config_changes"] == [] for c in checks)


def test_reproduction_summary_line():
    reference = _results({"faster_rcnn": 0.90, "yolo": 0.81}, epochs=6)
    ours = _results({"faster_rcnn": 0.90, "yolo": 0.70}, epochs=9)["rows"]
    line = benchmark.reproduction_summary(benchmark.reproduction(ours, reference, 0.02), Path("r.json"), 0.02)
    assert line == ("reproduction against r.json: 1 of 2 detectors within ±0.02; not: YOLOv1 "
                    "(config differs: Faster R-CNN, YOLOv1)")
    nothing = benchmark.reproduction(_results({"rcnn": 0.8})["rows"], reference, 0.02)
    assert "no detector of this run is in it" in benchmark.reproduction_summary(nothing, Path("r.json"), 0.02)


def test_reference_of_another_dataset_or_a_bad_tolerance_is_refused_before_any_work(tmp_path):
    from detect.errors import ConfigError

    raccoon = Path(__file__).resolve().parents[2] / "docs" / "results" / "raccoon.json"
    with pytest.raises(ConfigError, match="reference is a run on 'raccoon', this is a run on 'shapes'"):
        benchmark.main(["--reference", str(raccoon), "--out", str(tmp_path / "out")])
    with pytest.raises(ConfigError, match="--tolerance -0.1: must be"):
        benchmark.main(["--reference", str(raccoon), "--tolerance", "-0.1", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


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
    earlier = benchmark.earlier_benchmark(out, ["yolo"], overwrite=True)
    benchmark.remove_earlier_benchmark(out, earlier)
    assert not (out / "results.json").exists() and not (out / "yolo" / "last.pt").exists()
    assert (out / "cache" / "kept.npz").exists()
    # A loaded detector's folder is not this run's to judge: only results files count for it.
    assert benchmark.earlier_benchmark(out, [], overwrite=False) == {}


def test_checkpoint_of_another_detector_and_too_small_test_split_are_refused_before_training(tiny_checkpoint,
                                                                                             tmp_path):
    from detect.errors import ConfigError

    with pytest.raises(ConfigError, match="the checkpoint holds a faster_rcnn detector, not yolo"):
        benchmark.main(["--detectors", "yolo", "--checkpoint", f"yolo={tiny_checkpoint}", "--out", str(tmp_path)])
    with pytest.raises(ConfigError, match=r"the test split has 2 image\(s\), none left to time after --warmup 2"):
        benchmark.main(_loaded_faster_rcnn(tiny_checkpoint, tmp_path / "bench", warmup=2))
    assert not (tmp_path / "bench").exists()


def test_a_failing_detector_is_reported_and_the_others_are_kept(tiny_checkpoint, tmp_path, monkeypatch):
    original = benchmark.benchmark_detector

    def yolo_runs_out_of_memory(name, *args):
        if name == "yolo":
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(name, *args)

    monkeypatch.setattr(benchmark, "benchmark_detector", yolo_runs_out_of_memory)
    out = tmp_path / "bench"
    args = _loaded_faster_rcnn(tiny_checkpoint, out)
    args[args.index("faster_rcnn")] = "yolo,faster_rcnn"
    assert benchmark.main(args) == 1
    results = json.loads((out / "results.json").read_text())
    assert [row["detector"] for row in results["rows"]] == ["faster_rcnn"]   # the one after the failure ran
    assert results["failed"] == [{"detector": "yolo", "error": "CUDA out of memory. Tried to allocate 2.00 GiB"}]
    assert "**Failed:** YOLOv1: CUDA out of memory" in (out / "results.md").read_text()
