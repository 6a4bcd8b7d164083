"""Bad input as a new user meets it: what each command says, and that nothing earlier is lost.

    python benchmarks/bad_inputs.py [--out docs/bad_inputs.md]

Builds, in a temporary folder, a tiny VOC dataset, a COCO file and a finished training run
(checkpoints, logs, summary, detections), then runs the real command-line tools as separate
processes on one bad input at a time. For each it records the exit code and the last line on
stderr (or stdout), and checks that every file of the earlier run is byte-identical afterwards.
Prints a Markdown table (and writes it to ``--out``); exits 1 if any case crashed with a
traceback, printed more than one error line, or changed an earlier file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detect.io import atomic_write_text  # noqa: E402

# The small from-scratch config: the default fine-tunes ../shared's MobileNetV2 (a case of its own below).
SMALL = ["--config", "configs/faster_rcnn_shapes.yaml"]
TINY = [*SMALL, "data.builtin.image_size=64", "data.builtin.num_trainval=8", "data.builtin.num_test=2", "data.num_workers=0",
        "data.augmentation.max_size=64", "model.input_size=64", "model.anchors.sizes=[8,16,32]", "model.rpn.min_size=1",
        "model.roi_head.hidden_dim=32", "train.epochs=1", "train.batch_size=2", "train.warmup_iters=1"]


def tool(name: str, *args: str) -> list[str]:
    return [sys.executable, str(ROOT / "tools" / f"{name}.py"), *args]


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def build_fixtures(work: Path) -> dict[str, Path]:
    """A VOC folder, a trained run and its detections file; returns the paths the cases use."""
    import cv2
    import numpy as np

    from detect.data.voc import write_split, write_voc_xml

    voc = work / "voc"
    rng = np.random.default_rng(0)
    for index in range(4):
        (voc / "JPEGImages").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(voc / "JPEGImages" / f"im{index}.jpg"), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
        write_voc_xml(voc / "Annotations" / f"im{index}.xml", f"im{index}.jpg", 64, 48, ["circle"],
                      np.array([[4.0, 4.0, 30.0, 30.0]]), [False])
    write_split(voc, "trainval", [f"im{i}" for i in range(4)])
    write_split(voc, "test", ["im0", "im1"])
    run = work / "run"
    subprocess.run(tool("train", "--quiet", *TINY, f"data.builtin_root={work / 'shapes'}", f"train.output_dir={run}"),
                   check=True, capture_output=True, cwd=ROOT)
    subprocess.run(tool("infer", str(voc / "JPEGImages"), "--checkpoint", str(run / "best.pt"), "--out",
                        str(run / "infer"), "--quiet"), check=True, capture_output=True, cwd=ROOT)
    (run / "benchmark").mkdir()   # stands for an earlier benchmark's results
    (run / "benchmark" / "results.json").write_text('{"rows": []}\n')
    return {"voc": voc, "run": run}


def variant(voc: Path, work: Path, name: str, edit) -> Path:
    """A copy of the VOC folder with ``edit(copy)`` applied."""
    copy = work / name
    shutil.copytree(voc, copy)
    edit(copy)
    return copy


def truncate_pixels(copy: Path) -> None:
    """Keep two thirds of a JPEG: its header (size) reads when the dataset loads, its pixels do not."""
    image = copy / "JPEGImages" / "im2.jpg"
    data = image.read_bytes()
    image.write_bytes(data[: len(data) * 2 // 3])


def cases(work: Path, fx: dict[str, Path]) -> list[tuple[str, list[str]]]:
    voc, run = fx["voc"], fx["run"]
    ckpt = str(run / "best.pt")
    xml = "Annotations/im1.xml"

    def replace_xml(text_from: str, text_to: str):
        def edit(copy: Path) -> None:
            path = copy / xml
            path.write_text(path.read_text().replace(text_from, text_to))
        return edit

    images = work / "mixed"
    images.mkdir()
    for index in range(2):
        shutil.copy(voc / "JPEGImages" / f"im{index}.jpg", images)
    (images / "truncated.jpg").write_bytes((voc / "JPEGImages" / "im2.jpg").read_bytes()[:200])
    (images / "notes.png").write_text("not an image")
    coco_bad = work / "bad.json"
    coco_bad.write_text('{"images": [ {"id": 1, ')
    coco_ref = work / "ref.json"
    coco_ref.write_text(json.dumps({"images": [{"id": 1, "file_name": "im0.jpg", "width": 64, "height": 48}],
                                    "categories": [{"id": 1, "name": "circle"}],
                                    "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [1, 1, 5, 5]}]}))
    shutil.copy(voc / "JPEGImages" / "im0.jpg", work / "im0.jpg")
    bad_config = work / "typo.yaml"
    bad_config.write_text("train:\n  epohcs: 3\n")
    corrupt_ckpt = work / "corrupt.pt"
    corrupt_ckpt.write_bytes((run / "best.pt").read_bytes()[:1000])
    other_split = work / "dets_trainval.json"
    other_split.write_text(json.dumps([{"image_id": f"im{i}", "category": "circle", "score": 0.9, "bbox": [4, 4, 30, 30]}
                                       for i in (0, 3)]))
    blocker = work / "a_file"
    blocker.write_text("x")
    train = ["--quiet", *TINY]
    return [
        ("image file does not exist", tool("infer", str(work / "nothere.jpg"), "--checkpoint", ckpt, "--out",
                                           str(work / "o0"))),
        ("truncated JPEG", tool("infer", str(images / "truncated.jpg"), "--checkpoint", ckpt, "--out", str(work / "o1"))),
        ("folder with 2 good images, a truncated JPEG and a text file named .png",
         tool("infer", str(images), "--checkpoint", ckpt, "--out", str(work / "o2"))),
        ("malformed VOC XML", tool("train", *train, f"data.dataset={variant(voc, work, 'v1', replace_xml('</annotation>', ''))}",
                                   f"train.output_dir={work / 'r1'}")),
        ("box outside the image (xmax 900 > width 64)",
         tool("train", *train, f"data.dataset={variant(voc, work, 'v2', replace_xml('<xmax>30</xmax>', '<xmax>900</xmax>'))}",
              f"train.output_dir={work / 'r2'}")),
        ("same, with --on-invalid skip",
         tool("train", "--on-invalid", "skip", *train, f"data.dataset={work / 'v2'}", "data.class_names=[circle]",
              f"train.output_dir={work / 'r2b'}")),
        ("empty box (VOC xmin 5, xmax 4: zero width)",
         tool("train", *train, f"data.dataset={variant(voc, work, 'v3', replace_xml('<xmax>30</xmax>', '<xmax>4</xmax>'))}",
              f"train.output_dir={work / 'r3'}")),
        ("unknown class in an annotation",
         tool("train", *train, f"data.dataset={variant(voc, work, 'v4', replace_xml('<name>circle</name>', '<name>dog</name>'))}",
              "data.class_names=[circle]", f"train.output_dir={work / 'r4'}")),
        ("image listed in the split but missing",
         tool("train", *train, f"data.dataset={variant(voc, work, 'v5', lambda c: (c / 'JPEGImages' / 'im3.jpg').unlink())}",
              f"train.output_dir={work / 'r5'}")),
        ("dataset folder does not exist", tool("train", *train, f"data.dataset={work / 'nowhere'}",
                                               f"train.output_dir={work / 'r6'}")),
        ("malformed COCO JSON", tool("eval", "--data", str(coco_bad), "--checkpoint", ckpt)),
        ("COCO annotation of an unknown image id", tool("eval", "--data", str(coco_ref), "--checkpoint", ckpt)),
        ("unknown config key (typo)", tool("train", "--config", str(bad_config))),
        ("wrong type on the command line", tool("train", *SMALL, "train.epochs=three")),
        ("out-of-range value", tool("train", *SMALL, "train.lr=-0.1")),
        ("IoU threshold above 1", tool("train", *SMALL, "model.rpn.nms_iou=1.5")),
        ("the default config without its ImageNet weights file",
         tool("train", f"model.backbone.weights={work / 'mobilenet_v2_imagenet.pth'}")),
        ("missing checkpoint", tool("infer", str(work / "im0.jpg"), "--checkpoint", str(work / "none.pt"))),
        ("truncated checkpoint file", tool("infer", str(work / "im0.jpg"), "--checkpoint", str(corrupt_ckpt))),
        ("--resume with another model config into the earlier run",
         tool("train", *train, f"data.builtin_root={work / 'shapes'}", "model.roi_head.hidden_dim=64",
              f"train.output_dir={run}", "--resume")),
        ("a new run into the earlier run's folder, without --resume",
         tool("train", *train, f"data.builtin_root={work / 'shapes'}", f"train.output_dir={run}")),
        ("infer with --out set to the folder of its input images (the earlier run's annotated images)",
         tool("infer", str(run / "infer"), "--checkpoint", ckpt, "--out", str(run / "infer"))),
        ("image whose pixels are truncated past a readable header, met by a loader worker during training",
         tool("train", *train, f"data.dataset={variant(voc, work, 'v7', truncate_pixels)}", "data.num_workers=1",
              f"train.output_dir={work / 'r7'}")),
        ("output folder cannot be created (a file is in the way)",
         tool("infer", str(work / "im0.jpg"), "--checkpoint", ckpt, "--out", str(blocker / "out"))),
        ("detections file that is not JSON", tool("eval", "--data", str(voc), "--detections", str(bad_config))),
        ("benchmark --reference that is not a results.json",
         tool("benchmark", "--data", str(voc), "--reference", str(bad_config), "--out", str(work / "b1"))),
        ("benchmark into the folder of an earlier benchmark, without --overwrite",
         tool("benchmark", "--data", str(voc), "--detectors", "faster_rcnn", "--out", str(run / "benchmark"))),
        ("eval of detections that include an image outside the split (im3; the test split is im0, im1)",
         tool("eval", "--data", str(voc), "--split", "test", "--detections", str(other_split))),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    args = parser.parse_args()
    rows, failures = [], 0
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        fixtures = build_fixtures(work)
        before = digest(fixtures["run"])
        for title, command in cases(work, fixtures):
            result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
            errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
            reported = [line for line in result.stdout.splitlines() if "skipped" in line]  # infer: per image
            shown = errors[-1] if errors else " / ".join(reported[:2] + (result.stdout.strip().splitlines() or [""])[-1:])
            intact = digest(fixtures["run"]) == before
            ok = "Traceback" not in result.stderr and len(errors) <= 1 and intact and result.returncode != 0
            if title == "same, with --on-invalid skip":
                ok = result.returncode == 0 and intact
                shown = next((line for line in result.stderr.splitlines() if "skip" in line.lower()), shown)
            failures += not ok
            shown = shown.replace(str(work), "<tmp>").replace("|", "\\|")
            rows.append(f"| {title} | {result.returncode} | `{shown}` | {'yes' if intact else '**NO**'} |"
                        f"{'' if ok else ' **FAIL**'}")
    table = "\n".join(["| bad input | exit | what the user sees (last line) | earlier run intact |",
                       "|---|---|---|---|", *rows])
    print(table)
    if args.out:
        atomic_write_text(args.out, table + "\n")
    print(f"\n{len(rows)} cases, {failures} failing", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
