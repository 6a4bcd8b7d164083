"""The command-line tools as a user meets them: bad input gives one line and exit code 2."""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from detect.cli import run

ROOT = Path(__file__).resolve().parents[2]


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool(name: str, args: list[str], capsys) -> tuple[int, str, str]:
    code = run(load_tool(name).main, args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def detections_file(tmp_path, records) -> Path:
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(records))
    return path


def test_eval_prints_table_and_writes_json(tiny_voc, tmp_path, capsys):
    dets = detections_file(tmp_path, [{"image_id": "a", "category": "circle", "score": 0.9, "bbox": [4, 4, 20, 20]},
                                      {"image_id": "a", "category": "square", "score": 0.8, "bbox": [30, 10, 60, 40]}])
    out = tmp_path / "out.json"
    code, stdout, _ = run_tool("eval", ["--data", str(tiny_voc), "--split", "test", "--detections", str(dets),
                                        "--json", str(out), "--plots", str(tmp_path / "plots")], capsys)
    assert code == 0 and "mAP" in stdout
    result = json.loads(out.read_text())
    assert result["metric"] == "voc07" and result["map"] == pytest.approx(1.0)
    assert set(result["ap"]) == {"circle", "square"}
    assert (tmp_path / "plots" / "pr_curves_voc07.png").stat().st_size > 1000


def test_eval_breakdown(tiny_voc, tmp_path, capsys):
    # The circle is found; the square is detected as a circle.
    dets = detections_file(tmp_path, [{"image_id": "a", "category": "circle", "score": 0.9, "bbox": [4, 4, 20, 20]},
                                      {"image_id": "a", "category": "circle", "score": 0.8, "bbox": [30, 10, 60, 40]}])
    out = tmp_path / "out.json"
    code, stdout, _ = run_tool("eval", ["--data", str(tiny_voc), "--split", "test", "--detections", str(dets),
                                        "--json", str(out), "--breakdown", "--size-edges", "20"], capsys)
    assert code == 0 and "agnostic AP" in stdout and "square -> circle 1" in stdout
    result = json.loads(out.read_text())
    assert result["errors"]["counts"]["correct"] == 1 and result["errors"]["counts"]["wrong class"] == 1
    assert [(band["low"], band["high"], band["objects"]) for band in result["size_bands"]] == [(0, 20, 1), (20, None, 1)]
    assert result["size_bands"][1]["agnostic_ap"] == pytest.approx(1.0)
    with pytest.raises(SystemExit) as exit_info:   # argparse's usage error
        run_tool("eval", ["--data", str(tiny_voc), "--detections", str(dets), "--breakdown", "--size-edges", "32,16"],
                 capsys)
    assert exit_info.value.code == 2 and "positive and increasing" in capsys.readouterr().err


def _break(root: Path, kind: str) -> Path:
    annotation = root / "Annotations" / "a.xml"
    image = root / "JPEGImages" / "a.jpg"
    if kind == "malformed xml":
        annotation.write_text("<annotation><object>")
        return annotation
    if kind == "missing image":
        image.unlink()
        return image
    if kind == "corrupt image":
        data = image.read_bytes()
        image.write_bytes(data[: len(data) // 2])
        return image
    if kind == "not an image":
        image.write_text("hello")
        return image
    replacements = {"box outside": ("<xmax>20</xmax>", "<xmax>99</xmax>"),
                    "box without area": ("<xmax>20</xmax>", "<xmax>4</xmax>"),
                    "unknown class": ("<name>circle</name>", "<name>dragon</name>"),
                    "size mismatch": ("<width>64</width>", "<width>640</width>")}
    old, new = replacements[kind]
    annotation.write_text(annotation.read_text().replace(old, new, 1))
    return annotation


@pytest.mark.parametrize("kind, message", [
    ("malformed xml", "malformed XML"), ("missing image", "image file not found"),
    ("not an image", "not a readable image"), ("box outside", "outside the 64x48 image"),
    ("box without area", "has no area"), ("size mismatch", "annotation says the image is 640x48"),
])
def test_eval_bad_dataset_is_one_line_naming_the_file(tiny_voc, tmp_path, capsys, kind, message):
    dets = detections_file(tmp_path, [])
    broken = _break(tiny_voc, kind)
    code, _, err = run_tool("eval", ["--data", str(tiny_voc), "--split", "test", "--detections", str(dets)], capsys)
    line = one_line_error(err)
    assert code == 2 and message in line and str(broken) in line


def test_eval_with_model_reports_corrupt_image_and_unknown_class(tiny_voc, tiny_checkpoint, capsys):
    broken = _break(tiny_voc, "corrupt image")
    code, _, err = run_tool("eval", ["--data", str(tiny_voc), "--split", "test", "--checkpoint", str(tiny_checkpoint)], capsys)
    line = one_line_error(err)
    assert code == 2 and "corrupt or truncated" in line and str(broken) in line
    # the checkpoint's classes are the 8 shapes: "square" is known, "dragon" is not
    annotation = _break(tiny_voc, "unknown class")
    code, _, err = run_tool("eval", ["--data", str(tiny_voc), "--split", "test", "--checkpoint", str(tiny_checkpoint)], capsys)
    line = one_line_error(err)
    assert code == 2 and "unknown class" in line and "dragon" in line and str(annotation) in line


def test_eval_missing_checkpoint(tiny_voc, tmp_path, capsys):
    code, _, err = run_tool("eval", ["--data", str(tiny_voc), "--checkpoint", str(tmp_path / "none.pt")], capsys)
    assert code == 2 and "checkpoint not found" in one_line_error(err)


@pytest.mark.parametrize("content, message", [("{oops", "not valid JSON"), ('{"a": 1}', "list"),
                                               ('[{"image_id": "a"}]', "lacks category")])
def test_eval_bad_detections_file(tiny_voc, tmp_path, capsys, content, message):
    path = tmp_path / "dets.json"
    path.write_text(content)
    code, _, err = run_tool("eval", ["--data", str(tiny_voc), "--split", "test", "--detections", str(path)], capsys)
    line = one_line_error(err)
    assert code == 2 and message in line and str(path) in line


def test_eval_malformed_coco_json(tmp_path, capsys):
    path = tmp_path / "instances.json"
    path.write_text('{"images": [')
    code, _, err = run_tool("eval", ["--data", str(path), "--detections", str(detections_file(tmp_path, []))], capsys)
    assert code == 2 and "malformed JSON" in one_line_error(err)


def test_train_unknown_config_key(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("train:\n  epohcs: 3\n")
    code, _, err = run_tool("train", ["--config", str(config)], capsys)
    line = one_line_error(err)
    assert code == 2 and "unknown key 'train.epohcs' (did you mean 'epochs'?)" in line and str(config) in line


def test_train_default_without_its_weights_names_the_from_scratch_config(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    missing = tmp_path / "mobilenet_v2_imagenet.pth"
    code, _, err = run_tool("train", [f"model.backbone.weights={missing}"], capsys)
    line = one_line_error(err)
    assert code == 2 and str(missing) in line and "--config configs/faster_rcnn_shapes.yaml" in line


def test_infer_missing_checkpoint(tiny_voc, tmp_path, capsys):
    image = tiny_voc / "JPEGImages" / "a.jpg"
    code, _, err = run_tool("infer", [str(image), "--checkpoint", str(tmp_path / "missing.pt")], capsys)
    assert code == 2 and "checkpoint not found" in one_line_error(err)


def test_infer_folder_with_good_and_bad_files(tiny_voc, tiny_checkpoint, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a", "b"):
        (folder / f"{name}.jpg").write_bytes((tiny_voc / "JPEGImages" / f"{name}.jpg").read_bytes())
    (folder / "truncated.jpg").write_bytes((tiny_voc / "JPEGImages" / "c.jpg").read_bytes()[:300])
    (folder / "text.png").write_text("not an image")
    out = tmp_path / "out"
    code, stdout, _ = run_tool("infer", [str(folder), "--checkpoint", str(tiny_checkpoint), "--out", str(out),
                                         "--score-thr", "0.0"], capsys)
    assert code == 1
    assert "2 image(s) processed, 2 failed" in stdout
    assert sum("skipped" in line for line in stdout.splitlines()) == 2
    assert (out / "a.jpg").is_file() and (out / "b.jpg").is_file() and not (out / "truncated.jpg").exists()
    records = json.loads((out / "detections.json").read_text())
    assert {r["image_id"] for r in records} <= {"a", "b"}


def test_train_unknown_class_in_dataset(tiny_voc, tmp_path, capsys):
    code, _, err = run_tool("train", ["--config", str(ROOT / "configs" / "faster_rcnn_shapes.yaml"),
                                      f"data.dataset={tiny_voc}", "data.class_names=[circle]",
                                      f"train.output_dir={tmp_path}"], capsys)
    line = one_line_error(err)
    assert code == 2 and "unknown class" in line and "square" in line and "Annotations" in line


def test_real_process_exit_code_and_debug_traceback(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("model:\n  nmae: x\n")
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "train.py"), "--config", str(config)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "unknown key 'model.nmae'" in done.stderr
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "train.py"), "--config", str(config), "--debug"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode != 0 and "Traceback" in done.stderr


def test_infer_into_unwritable_output_is_one_line(tiny_voc, tiny_checkpoint, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    code, _, err = run_tool("infer", [str(tiny_voc / "JPEGImages"), "--checkpoint", str(tiny_checkpoint),
                                      "--out", str(blocker / "out")], capsys)
    line = one_line_error(err)
    assert code == 2 and "cannot create the output directory" in line and str(blocker / "out") in line
    assert blocker.read_text() == "keep me"


TINY_TRAINING = ["model.input_size=64", "data.augmentation.max_size=64", "model.anchors.sizes=[8,16,32]",
                 "model.rpn.min_size=1", "model.roi_head.hidden_dim=32", "data.num_workers=0", "train.epochs=1",
                 "train.batch_size=2", "train.eval_every=0"]


def test_train_refuses_to_replace_an_earlier_run_unless_told(tiny_voc, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "best.pt").write_bytes(b"an earlier run's weights")
    args = ["--config", str(ROOT / "configs" / "faster_rcnn_shapes.yaml"), f"data.dataset={tiny_voc}",
            "data.class_names=[circle,square]", f"train.output_dir={run_dir}", *TINY_TRAINING, "--quiet"]
    code, _, err = run_tool("train", args, capsys)
    line = one_line_error(err)
    assert code == 2 and str(run_dir) in line and "(best.pt)" in line and "--overwrite" in line
    assert "--resume" not in line   # nothing to resume: no last.pt
    (run_dir / "last.pt").write_bytes(b"an earlier run's state")
    code, _, err = run_tool("train", args, capsys)
    assert code == 2 and "(last.pt, best.pt); continue it with --resume" in one_line_error(err)
    assert (run_dir / "best.pt").read_bytes() == b"an earlier run's weights"
    assert (run_dir / "last.pt").read_bytes() == b"an earlier run's state"

    (run_dir / "finetuned.pt").write_bytes(b"R-CNN's stage 1 of the earlier run")
    code, out, _ = run_tool("train", [*args, "--overwrite"], capsys)
    assert code == 0 and "test mAP@0.5" in out
    assert torch.load(run_dir / "last.pt", weights_only=False)["class_names"] == ["circle", "square"]
    assert not (run_dir / "finetuned.pt").exists()   # deleted: never mistaken for this run's


def test_eval_coco_json_given_by_a_relative_path(tiny_coco, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    relative = tiny_coco.relative_to(tmp_path)   # coco/instances.json: its folder must not be added twice
    dets = detections_file(tmp_path, [{"image_id": "7", "category": "square", "score": 0.9, "bbox": [10, 5, 30, 20]}])
    code, stdout, err = run_tool("eval", ["--data", str(relative), "--detections", str(dets)], capsys)
    assert code == 0, err
    assert "mAP" in stdout


def test_eval_coco_reads_infer_file_stems_as_coco_image_ids(tiny_coco, tmp_path, capsys):
    """tools/infer.py names images by file stem ("x" for x.jpg); the COCO file numbers it 7."""
    square = {"category": "square", "score": 0.9, "bbox": [10, 5, 30, 20]}
    out = tmp_path / "out.json"
    dets = detections_file(tmp_path, [{"image_id": "x", **square}])
    code, _, err = run_tool("eval", ["--data", str(tiny_coco), "--detections", str(dets), "--json", str(out)], capsys)
    assert code == 0, err
    assert json.loads(out.read_text())["ap"]["square"] == pytest.approx(1.0)
    # The same image under both names, and an image of no split, are errors naming the detections file.
    detections_file(tmp_path, [{"image_id": "x", **square}, {"image_id": "7", **square}])
    code, _, err = run_tool("eval", ["--data", str(tiny_coco), "--detections", str(dets)], capsys)
    assert code == 2 and one_line_error(err) == (f"error: {dets}: image '7' has detections under two ids (its id "
                                                 "and its file name); give each image one id")
    detections_file(tmp_path, [{"image_id": "x", **square}, {"image_id": "zzz", **square}])
    code, _, err = run_tool("eval", ["--data", str(tiny_coco), "--detections", str(dets)], capsys)
    assert code == 2 and f"{dets}: has detections of 1 image(s) that are not in the evaluated split (first: " \
                         "'zzz')" in one_line_error(err) and "--on-invalid skip" in err
    # With --on-invalid skip (images skipped as invalid have detections but no ground truth) they are left out.
    code, _, err = run_tool("eval", ["--data", str(tiny_coco), "--detections", str(dets), "--on-invalid", "skip",
                                     "--json", str(out)], capsys)
    assert code == 0 and "left out the detections of 1 image(s)" in err
    assert json.loads(out.read_text())["ap"]["square"] == pytest.approx(1.0)


def test_train_image_corrupt_past_its_header_read_in_a_loader_worker_is_one_line(tiny_voc, tmp_path, capsys):
    image = tiny_voc / "JPEGImages" / "b.jpg"
    data = image.read_bytes()
    image.write_bytes(data[: len(data) * 2 // 3])   # the header (size) reads; the pixels do not
    args = ["--config", str(ROOT / "configs" / "faster_rcnn_shapes.yaml"), f"data.dataset={tiny_voc}",
            "data.class_names=[circle,square]", f"train.output_dir={tmp_path / 'run'}", *TINY_TRAINING,
            "data.num_workers=1", "--quiet"]
    code, _, err = run_tool("train", args, capsys)
    line = one_line_error(err)
    assert code == 2 and line.startswith(f"error: {image}: image data is corrupt") and "worker" not in line
    assert len(line) < 300
    # The workers ignore SIGTERM (a stop saves last.pt first), so one left running would hang the
    # interpreter's exit: the failed epoch must have shut them down.
    assert multiprocessing.active_children() == []


def test_infer_refuses_to_overwrite_its_inputs_or_merge_two_images_into_one_output(tiny_voc, tiny_checkpoint,
                                                                                  tmp_path, capsys):
    folder = tiny_voc / "JPEGImages"
    original = (folder / "a.jpg").read_bytes()
    code, _, err = run_tool("infer", [str(folder), "--checkpoint", str(tiny_checkpoint), "--out", str(folder)], capsys)
    line = one_line_error(err)
    assert code == 2 and str(folder / "a.jpg") in line and "choose another --out" in line
    assert (folder / "a.jpg").read_bytes() == original
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.png").write_bytes(b"not read: refused before")
    code, _, err = run_tool("infer", [str(folder / "a.jpg"), str(other / "a.png"), "--checkpoint",
                                      str(tiny_checkpoint), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and "same name stem" in one_line_error(err)
    assert not (tmp_path / "out").exists()


def test_eval_builtin_with_a_checkpoint_uses_the_built_in_data_it_was_trained_on(tiny_checkpoint, tmp_path, capsys,
                                                                                monkeypatch):
    monkeypatch.chdir(tmp_path)   # the default built-in settings would generate 2,500 images into data/shapes here
    out = tmp_path / "result.json"
    code, _, err = run_tool("eval", ["--data", "builtin", "--checkpoint", str(tiny_checkpoint), "--json", str(out),
                                     "--quiet"], capsys)
    assert code == 0, err
    assert not (tmp_path / "data").exists()
    assert json.loads(out.read_text())["images"] == 2   # the checkpoint's data.builtin.num_test


def test_eval_device_and_iou_are_checked(tiny_voc, tiny_checkpoint, tmp_path, capsys):
    dets = detections_file(tmp_path, [])
    with pytest.raises(SystemExit) as info:   # argparse's usage error
        run_tool("eval", ["--data", str(tiny_voc), "--detections", str(dets), "--iou", "1.5"], capsys)
    assert info.value.code == 2 and "--iou must be in [0, 1)" in capsys.readouterr().err
    # Options COCO AP would ignore are refused rather than silently dropped.
    for extra, message in ((["--plots", str(tmp_path / "plots")], "--plots draws VOC precision/recall curves"),
                           (["--iou", "0.7"], "it applies only to --breakdown")):
        with pytest.raises(SystemExit) as info:
            run_tool("eval", ["--data", str(tiny_voc), "--detections", str(dets), "--metric", "coco", *extra], capsys)
        assert info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "plots").exists()
    code, _, err = run_tool("eval", ["--data", str(tiny_voc), "--checkpoint", str(tiny_checkpoint),
                                     "--device", "cpu", "--quiet"], capsys)
    assert code == 0, err
    if not torch.cuda.is_available():
        code, _, err = run_tool("eval", ["--data", str(tiny_voc), "--checkpoint", str(tiny_checkpoint),
                                         "--device", "cuda"], capsys)
        assert code == 2 and "no CUDA device" in one_line_error(err)


def test_proposals_reports_recall_and_refuses_bad_arguments(tiny_voc, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)   # the default proposal cache is cache/proposals in the working folder
    out = tmp_path / "recall.json"
    code, stdout, err = run_tool("proposals", ["--data", str(tiny_voc), "--split", "trainval", "--workers", "1",
                                               "--max-boxes", "50", "--json", str(out), "--quiet"], capsys)
    assert code == 0, err
    result = json.loads(out.read_text())
    assert result["max_boxes"] == 50 and 0 < result["proposals_median"] <= 50
    recall = [result["recall"][budget] for budget in ("10", "50", "100")]
    for looser, stricter in ((r["0.5"], r["0.7"]) for r in recall):
        assert 0.0 <= stricter <= looser <= 1.0
    assert recall[0]["0.5"] <= recall[1]["0.5"] == recall[2]["0.5"]   # no image has more than 50 boxes
    assert "recall@0.5" in stdout
    with pytest.raises(SystemExit) as info:
        run_tool("proposals", ["--data", str(tiny_voc), "--workers", "0"], capsys)
    assert info.value.code == 2 and "--workers must be 1 or more" in capsys.readouterr().err
    (tiny_voc / "ImageSets" / "Main" / "none.txt").write_text("")
    code, _, err = run_tool("proposals", ["--data", str(tiny_voc), "--split", "none"], capsys)
    assert code == 2 and "no images" in one_line_error(err)


def test_export_refuses_a_negative_image_count(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:   # before the checkpoint is even looked for
        run_tool("export", ["--checkpoint", str(tmp_path / "none.pt"), "--check-images", "-1"], capsys)
    assert info.value.code == 2 and "--check-images must be 0" in capsys.readouterr().err
