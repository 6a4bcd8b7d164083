"""Check detect's VOC evaluator against the canonical py-faster-rcnn ``voc_eval`` on a real dataset.

    python benchmarks/check_voc_canonical.py --reference /tmp/voc_eval.py \\
        --data ../shared/data/raccoon [--split test] [--seed 0]

``--reference`` is py-faster-rcnn's ``lib/datasets/voc_eval.py`` (not part of this project; fetch it
yourself). It is Python 2 code, so it is copied into a temporary directory and patched there with
minimal textual fixes, each printed when applied:

* ``cPickle`` -> ``pickle``; ``print x`` statements -> ``print(x)``; the pickle files opened in binary
  mode; ``np.bool`` (removed from NumPy) -> ``bool``;
* ``prec = tp / (tp + fp)`` -> ``tp / np.maximum(tp + fp, eps)`` (the later upstream fix): with
  difficult objects, the top-ranked detections may all be ignored, and the original yields NaN
  where detect, like later canonical versions, yields precision 0.

The ground truth is perturbed into detections: each object is kept with probability 0.8 and
copied once or twice with jittered coordinates (the second copy is a duplicate, hence a false
positive), sometimes with the wrong class; random false positives are added; scores are rounded
to 2 decimals so that many tie (exercising the tie-breaking). About 10 % of the objects are
marked difficult (the datasets have none) by writing the annotation cache the canonical code
reads (``cachedir/annots.pkl``, parsed by the canonical ``parse_rec`` itself) and setting the same
flags in detect's ground truth. Detections are written as the canonical per-class results files
(``<image_id> <score> <x1 + 1> <y1 + 1> <x2> <y2>``, full precision: continuous pixels mapped to
VOC's 1-based convention) in the same order detect evaluates them. Prints the per-class APs of
both and the max |difference| for the 11-point ("voc07") and area ("voc") metrics.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import contextlib
import importlib.util
import io
import pickle
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from detect.data.voc import load_voc
from detect.evaluation.detections import write_detections
from detect.evaluation.voc import evaluate_voc

#: (description, old text, new text) applied to the reference file in a temporary copy.
PATCHES = (
    ("cPickle -> pickle", "import cPickle", "import pickle as cPickle"),
    ("print statement -> function", "print 'Reading annotation for {:d}/{:d}'.format(\n"
     "                    i + 1, len(imagenames))",
     "print('Reading annotation for {:d}/{:d}'.format(\n                    i + 1, len(imagenames)))"),
    ("print statement -> function", "print 'Saving cached annotations to {:s}'.format(cachefile)",
     "print('Saving cached annotations to {:s}'.format(cachefile))"),
    ("pickle written in binary mode", "open(cachefile, 'w')", "open(cachefile, 'wb')"),
    ("pickle read in binary mode", "open(cachefile, 'r')", "open(cachefile, 'rb')"),
    ("np.bool -> bool", ".astype(np.bool)", ".astype(bool)"),
    ("precision guarded against 0/0 (later upstream fix)", "prec = tp / (tp + fp)",
     "prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)"),
)


def load_reference(path: Path, workdir: Path):
    """Copy the canonical file into ``workdir``, apply PATCHES that match, import it."""
    text = path.read_text()
    for description, old, new in PATCHES:
        if old in text:
            text = text.replace(old, new)
            print(f"patched reference: {description}")
    patched = workdir / "voc_eval_patched.py"
    patched.write_text(text)
    spec = importlib.util.spec_from_file_location("voc_eval_patched", patched)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def perturbed_detections(ground_truth: dict, sizes: dict, num_classes: int,
                         rng: np.random.Generator) -> dict:
    """Detections (continuous pixels x1, y1, x2, y2) made by perturbing the ground truth."""
    detections = {}
    for image_id, gt in ground_truth.items():
        width, height = sizes[image_id]
        boxes, labels = [], []
        for box, label in zip(gt["boxes"].astype(np.float64), gt["labels"]):
            if rng.random() < 0.2:
                continue
            for _ in range(1 + int(rng.random() < 0.3)):
                size = np.tile(box[2:] - box[:2], 2)
                boxes.append(box + rng.normal(0, 0.1, 4) * size * (rng.random() < 0.9))
                labels.append(label if rng.random() < 0.9 else rng.integers(num_classes))
        for _ in range(rng.poisson(2)):
            x1, y1 = rng.uniform(0, width - 2), rng.uniform(0, height - 2)
            boxes.append([x1, y1, rng.uniform(x1 + 1, width), rng.uniform(y1 + 1, height)])
            labels.append(rng.integers(num_classes))
        boxes = np.array(boxes, np.float64).reshape(-1, 4)
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        detections[image_id] = {"boxes": boxes, "scores": np.round(rng.random(len(boxes)), 2),
                                "labels": np.array(labels, np.int64)}
    return detections


def write_results_files(detections: dict, class_names: list[str], template: str) -> None:
    """Canonical per-class results files, in detect's evaluation order, VOC 1-based boxes."""
    lines = {name: [] for name in class_names}
    for image_id, entry in detections.items():
        for (x1, y1, x2, y2), score, label in zip(entry["boxes"], entry["scores"], entry["labels"]):
            values = (float(score), float(x1) + 1.0, float(y1) + 1.0, float(x2), float(y2))
            lines[class_names[label]].append(" ".join([image_id] + [repr(v) for v in values]) + "\n")
    for name, class_lines in lines.items():
        Path(template.format(name)).write_text("".join(class_lines))


def cli_average_precisions(detections: dict, class_names: list[str], args, metric: str, workdir: Path) -> dict:
    """Per-class AP as ``tools/eval.py`` reports it for these detections (written as a detections file)."""
    dets_path, out_path = workdir / "detections.json", workdir / f"cli_{metric}.json"
    write_detections(dets_path, detections, class_names)
    tool = Path(__file__).resolve().parents[1] / "tools" / "eval.py"
    subprocess.run([sys.executable, str(tool), "--data", str(args.data), "--split", args.split, "--detections",
                    str(dets_path), "--metric", metric, "--json", str(out_path), "--quiet"], check=True,
                   stdout=subprocess.DEVNULL)
    return {name: (math.nan if value is None else value) for name, value in json.loads(out_path.read_text())["ap"].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="py-faster-rcnn voc_eval.py")
    parser.add_argument("--data", type=Path, required=True, help="a VOC-layout dataset folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--difficult-fraction", type=float, default=0.1)
    parser.add_argument("--via-cli", action="store_true",
                        help="also score the detections with `tools/eval.py --json` (a subprocess, reading the "
                             "dataset's own XML) and compare that too; needs --difficult-fraction 0")
    args = parser.parse_args()
    if args.via_cli and args.difficult_fraction:
        parser.error("--via-cli reads the real annotations, which flag nothing difficult: add --difficult-fraction 0")

    rng = np.random.default_rng(args.seed)
    dataset = load_voc(args.data, args.split)
    class_names = dataset.class_names
    ground_truth = dataset.ground_truth()
    sizes = {a.image_id: (a.width, a.height) for a in dataset.annotations}
    workdir = Path(tempfile.mkdtemp(prefix="check_voc_"))
    try:
        reference = load_reference(args.reference, workdir)
        annopath = str(args.data / "Annotations" / "{}.xml")
        imagesetfile = workdir / "imageset.txt"
        imagesetfile.write_text("".join(f"{image_id}\n" for image_id in ground_truth))
        cachedir = workdir / "cache"
        cachedir.mkdir()
        recs = {}
        for image_id, gt in ground_truth.items():
            recs[image_id] = reference.parse_rec(annopath.format(image_id))
            flags = rng.random(len(recs[image_id])) < args.difficult_fraction
            assert len(flags) == len(gt["labels"]), f"{image_id}: object counts differ"
            for obj, flag in zip(recs[image_id], flags):
                obj["difficult"] = int(flag)
            gt["difficult"] = flags
        with open(cachedir / "annots.pkl", "wb") as handle:
            pickle.dump(recs, handle)

        detections = perturbed_detections(ground_truth, sizes, len(class_names), rng)
        detpath = str(workdir / "det_{}.txt")
        write_results_files(detections, class_names, detpath)
        num_dets = sum(len(entry["scores"]) for entry in detections.values())
        print(f"{args.data.name}/{args.split}: {len(ground_truth)} images, {num_dets} detections, "
              f"{sum(int(g['difficult'].sum()) for g in ground_truth.values())} objects marked difficult")

        worst = {}
        for metric, use_07 in (("voc07", True), ("voc", False)):
            ours = evaluate_voc(ground_truth, detections, class_names, metric=metric)
            if args.via_cli:
                ours.ap = cli_average_precisions(detections, class_names, args, metric, workdir)
            differences = []
            for name in class_names:
                if ours.num_detections[name] == 0:  # the canonical code cannot read an empty file
                    print(f"  {metric:>5} {name:<12} skipped: no detections")
                    continue
                with contextlib.redirect_stdout(io.StringIO()):
                    _, _, canonical = reference.voc_eval(detpath, annopath, str(imagesetfile), name,
                                                         str(cachedir), use_07_metric=use_07)
                difference = abs(float(canonical) - ours.ap[name])
                differences.append(difference)
                print(f"  {metric:>5} {name:<12} canonical {float(canonical):.12f}  "
                      f"detect {ours.ap[name]:.12f}  |diff| {difference:.2e}")
            worst[metric] = max(differences)
        print(f"{args.data.name}: max |difference| voc07 {worst['voc07']:.3e}, voc {worst['voc']:.3e}")
        sys.exit(0 if max(worst.values()) <= 1e-9 else 1)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
