"""Reproduction checks against an earlier run's results.json, and the results table that shows them."""

from pathlib import Path

import pytest

from detect.benchmark import TITLES, BenchmarkOptions, run_benchmark
from detect.benchmark.report import markdown
from detect.benchmark.reproduction import config_changes, load_reference, reproduction, reproduction_summary


def _results(maps: dict, epochs: int = 6, git: str = "abc1234") -> dict:
    rows = [{"detector": name, "title": TITLES[name], "voc07_map": value,
             "config": {"train": {"epochs": epochs, "output_dir": f"runs/{git}/{name}"}, "model": {"input_size": 480}}}
            for name, value in maps.items()]
    return {"rows": rows, "date": "2026-12-05 06:00 UTC",
            "machine": {"git": git, "cpu": "Test CPU", "cpu_count": 2, "torch_threads": 2, "cpu_bfloat16": False,
                        "gpu": None, "torch": "2.14.1"}}


def test_reproduction_checks_each_detector_against_the_reference():
    reference = _results({"rcnn": 0.80, "faster_rcnn": 0.90, "yolo": 0.81})
    ours = _results({"faster_rcnn": 0.88, "yolo": 0.7899, "torchvision": 0.87}, git="def5678")["rows"]
    checks = {c["detector"]: c for c in reproduction(ours, reference, tolerance=0.02)}
    # Only detectors present in both runs are compared; R-CNN (reference only) and torchvision (new) are not.
    assert set(checks) == {"faster_rcnn", "yolo"}
    assert checks["faster_rcnn"]["delta"] == pytest.approx(-0.02) and checks["faster_rcnn"]["within"]
    assert checks["yolo"]["delta"] == pytest.approx(-0.0201) and not checks["yolo"]["within"]
    # Output folders differ between any two runs and are not a config change.
    assert checks["yolo"]["config_changes"] == []


def test_reproduction_names_the_config_keys_that_changed():
    reference = _results({"yolo": 0.70}, epochs=3)
    (check,) = reproduction(_results({"yolo": 0.81}, epochs=9)["rows"], reference, tolerance=0.02)
    assert check["config_changes"] == ["train.epochs: 3 → 9"] and not check["within"]


def test_a_key_newer_than_the_reference_counts_only_when_set_away_from_its_default():
    """A reference written before ``data.train_difficult`` existed: the new key at its default (true,
    the behaviour from before) is no difference; set to false it is one."""
    from detect.config import Config

    assert Config().data.train_difficult is True
    reference = {"train": {"epochs": 6}, "data": {"root": "a"}}
    assert config_changes({"train": {"epochs": 6}, "data": {"root": "a", "train_difficult": True}},
                          reference) == []
    assert config_changes({"train": {"epochs": 6}, "data": {"root": "a", "train_difficult": False}},
                          reference) == ["data.train_difficult: (absent) → False"]
    # A key this run no longer has is always reported, whatever its value was.
    assert config_changes({"train": {"epochs": 6}, "data": {}}, reference) == ["data.root: a → (absent)"]


def test_reproduction_table_in_the_markdown():
    results = _results({"faster_rcnn": 0.9003, "yolo": 0.70}, git="new")
    for row in results["rows"]:
        row.update(voc_area_map=0.9, coco_ap=0.6, coco_ap50=0.9, ap={"circle": 0.9}, train_seconds=60.0,
                   inference_ms=40.0, inference_p10_ms=39.0, inference_p90_ms=41.0, parameters=10 ** 6,
                   peak_memory_mb=100.0, config_note="test.yaml")
    results.update(dataset="shapes", quick=False, command="python tools/benchmark.py",
                   reference={"path": "old/results.json", "git": "abc1234", "date": "2026-12-04 06:00 UTC",
                              "cpu": "Test CPU", "cpu_bfloat16": True}, tolerance=0.02)
    results["reproduction"] = reproduction(results["rows"], _results({"faster_rcnn": 0.9003, "yolo": 0.75}),
                                           tolerance=0.02)
    results["rows"][0]["backbone_ms"] = 21.24       # the other row is an older run's, without the backbone time
    table = markdown(results)
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
        run_benchmark(BenchmarkOptions(reference=path, out=tmp_path / "out"))
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


def test_an_older_results_file_without_a_date_is_a_reference():
    """The built-in table of fe07705 (docs/results/shapes_mnv2.json until c7e30b1) was written
    before results recorded their date."""
    path = Path(__file__).resolve().parent / "results_fe07705_without_date.json"
    reference = load_reference(path, "shapes", quick=False)
    assert "date" not in reference and reference["machine"]["git"] == "fe07705"
    checks = reproduction(reference["rows"], reference, tolerance=0.0)
    assert [c["detector"] for c in checks] == ["rcnn", "fast_rcnn", "faster_rcnn", "yolo", "torchvision"]
    assert all(c["within"] and c["delta"] == 0.0 and c["config_changes"] == [] for c in checks)


def test_reproduction_summary_line():
    reference = _results({"faster_rcnn": 0.90, "yolo": 0.81}, epochs=6)
    ours = _results({"faster_rcnn": 0.90, "yolo": 0.70}, epochs=9)["rows"]
    line = reproduction_summary(reproduction(ours, reference, 0.02), Path("r.json"), 0.02)
    assert line == ("reproduction against r.json: 1 of 2 detectors within ±0.02; not: YOLOv1 "
                    "(config differs: Faster R-CNN, YOLOv1)")
    nothing = reproduction(_results({"rcnn": 0.8})["rows"], reference, 0.02)
    assert "no detector of this run is in it" in reproduction_summary(nothing, Path("r.json"), 0.02)


def test_reference_of_another_dataset_or_a_bad_tolerance_is_refused_before_any_work(tmp_path):
    from detect.errors import ConfigError

    raccoon = Path(__file__).resolve().parents[2] / "docs" / "results" / "raccoon.json"
    with pytest.raises(ConfigError, match="reference is a run on 'raccoon', this is a run on 'shapes'"):
        run_benchmark(BenchmarkOptions(reference=raccoon, out=tmp_path / "out"))
    with pytest.raises(ConfigError, match="--tolerance -0.1: must be"):
        run_benchmark(BenchmarkOptions(reference=raccoon, tolerance=-0.1, out=tmp_path / "out"))
    assert not (tmp_path / "out").exists()
