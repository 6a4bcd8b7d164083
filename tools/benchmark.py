"""The mAP benchmark: every detector trained and evaluated on the same data, in one table.

    python tools/benchmark.py                                  # built-in shapes, all detectors
    python tools/benchmark.py --quick                          # shortened schedules, <= 10 min on 2 cores
    python tools/benchmark.py --variant mnv2                   # built-in, *_shapes_mnv2.yaml where they exist
    python tools/benchmark.py --data ../shared/data/raccoon --out runs/benchmark_raccoon
    python tools/benchmark.py --data builtin --detectors faster_rcnn,yolo \\
        --checkpoint faster_rcnn=runs/faster_rcnn_shapes/last.pt

Each detector is trained with ``configs/<detector>_<dataset>.yaml`` (``<dataset>`` is ``shapes``
for the built-in data, else the dataset folder's name; without such a file, the detector's
raccoon recipe — MobileNetV2 ImageNet weights — is used with the data replaced;
``--variant V`` prefers ``configs/<detector>_<dataset>_V.yaml``) unless
``--checkpoint name=path`` gives a trained one (its row then shows the checkpoint's own model
settings, scored on ``--data``). ``torchvision`` is torchvision's own
``FasterRCNN`` built from the Faster R-CNN config: same backbone, weights, input size, anchors,
sampling and schedule. The final weights are evaluated (not the best epoch, which would be chosen
on the test split).

Columns: VOC07 11-point mAP@0.5, VOC area mAP@0.5, COCO AP and AP50 (pycocotools), training
wall-clock (R-CNN: all its stages; Fast R-CNN and R-CNN: selective search on both splits
included when computed by this run), inference per image (batch 1, median and 10th–90th
percentiles over ``--images`` test images after warm-up; proposals excluded and timed
separately), the median time of that spent in the shared backbone (what no head can save: it
bounds how much faster one detector can be than another on the same backbone), parameters, and
peak resident memory of the process during inference, training state released (on CUDA also the
GPU's peak allocation).

Writes in ``--out``: ``results.md`` (tables), ``results.json`` (everything, with the machine,
torch version, git revision and date), ``pr_<detector>.png`` (PR curves per class) and
``speed_vs_map.png``; the detectors train in ``--out/<detector>``. A folder that holds an earlier
benchmark is refused unless ``--overwrite`` (its results and checkpoints are deleted; the
proposal and feature caches, keyed by their settings, are kept). A detector that fails is
reported and the others still run; the exit code is then 1.

``--reference earlier/results.json`` checks that this run reproduces an earlier one: results.md
gains a table of each detector's VOC07 mAP against the earlier run's, the difference, whether it
is within ``--tolerance`` (0.02) and which config keys differ between the two runs (output
folders aside). Training on the CPU with a fixed seed is deterministic, so the same revision on
the same kind of machine gives the same mAPs; a change of code, config or floating-point
arithmetic (e.g. bfloat16 on one machine and float32 on another) moves small test splits by more.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import gc
import json
import logging
import math
import os
import platform
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import torch

from detect.cli import add_common_arguments, run, setup_logging
from detect.config import BUILTIN_DATASET, Config, config_to_dict, load_config
from detect.engine.runtime import cpu_has_native_bfloat16
from detect.errors import ConfigError, DetectError, OutputError
from detect.io import atomic_write_json, atomic_write_text

logger = logging.getLogger("benchmark")

DETECTORS = ("rcnn", "fast_rcnn", "faster_rcnn", "yolo", "torchvision")
TITLES = {"rcnn": "R-CNN", "fast_rcnn": "Fast R-CNN", "faster_rcnn": "Faster R-CNN", "yolo": "YOLOv1",
          "torchvision": "torchvision FasterRCNN"}
#: --quick: a smaller built-in dataset and shortened schedules, labelled as such in the results.
QUICK_DATA = ["data.builtin_root=data/shapes_quick", "data.builtin.num_trainval=400", "data.builtin.num_test=100"]
QUICK_SCHEDULES = {"rcnn": ["train.epochs=1"], "fast_rcnn": ["train.epochs=2"], "faster_rcnn": ["train.epochs=2"],
                   "yolo": ["train.epochs=3"], "torchvision": ["train.epochs=2"]}


def dataset_key(data: str) -> str:
    return "shapes" if data == BUILTIN_DATASET else Path(data).name if Path(data).is_dir() else Path(data).stem


def config_path(name: str, key: str, configs_dir: Path, variant: str | None = None) -> Path:
    """``configs/<family>_<dataset key>[_<variant>].yaml``; torchvision's reference uses Faster R-CNN's."""
    family = "faster_rcnn" if name == "torchvision" else name
    return configs_dir / f"{family}_{key}{f'_{variant}' if variant else ''}.yaml"


def detector_config(name: str, data: str, args: argparse.Namespace, configs_dir: Path) -> tuple[Config, str]:
    """The config used for ``name`` on ``data`` and a note on where it came from."""
    path = config_path(name, dataset_key(data), configs_dir)
    variant = config_path(name, dataset_key(data), configs_dir, args.variant)
    if args.variant and variant.exists():
        path = variant
    overrides: list[str] = []
    note = path.name
    if not path.exists():
        path = config_path(name, "raccoon", configs_dir)
        overrides += [f"data.dataset={data}", "data.class_names=null"]
        note = f"{path.name} with data.dataset={data}"
    if not path.exists():
        raise ConfigError(f"no config for {name}; expected {path}")
    if name == "torchvision":
        overrides.append("model.name=torchvision_faster_rcnn")
    if args.backbone:
        overrides.append(f"model.backbone.name={args.backbone}")
    if args.weights:
        overrides.append(f"model.backbone.weights={args.weights}")
    if args.quick:
        overrides += QUICK_SCHEDULES[name] + (QUICK_DATA if data == BUILTIN_DATASET else [])
        note += " (quick: " + ", ".join(QUICK_SCHEDULES[name]) + ")"
    overrides += [f"train.output_dir={args.out / name}", "train.eval_every=0"]
    overrides += [f"model.rcnn.feature_cache_dir={args.out / 'cache' / 'features'}"] if name == "rcnn" else []
    return load_config(path, overrides + list(args.overrides)), note


#: ``--checkpoint NAME=...``: the ``model.name`` a checkpoint for NAME must hold.
MODEL_NAMES = {"rcnn": "rcnn", "fast_rcnn": "fast_rcnn", "faster_rcnn": "faster_rcnn", "yolo": "yolo",
               "torchvision": "torchvision_faster_rcnn"}


def release_memory(device: torch.device) -> None:
    """Hand freed memory back before measuring a peak: Python's garbage, glibc's free lists (Linux)
    and PyTorch's CUDA cache, whose peak statistics restart here."""
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):   # not glibc
            pass
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


class PeakMemory:
    """Peak resident set size (bytes) of this process while the context is open (Linux /proc;
    elsewhere the process's lifetime peak from ``resource``), and on CUDA the peak of PyTorch's
    allocations on ``device`` (``gpu_peak``; None on the CPU)."""

    def __init__(self, device: torch.device | None = None):
        self.device = device
        self.gpu_peak: int | None = None

    def __enter__(self) -> "PeakMemory":
        self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if self.device is not None and self.device.type == "cuda":
            self.gpu_peak = torch.cuda.max_memory_allocated(self.device)

    @staticmethod
    def _rss() -> int:
        try:
            with open("/proc/self/statm") as handle:
                return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            import resource
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return peak if sys.platform == "darwin" else peak * 1024   # bytes on macOS, KiB elsewhere


def benchmark_detector(name: str, config: Config, checkpoint: str | None, args: argparse.Namespace) -> dict:
    """Train (or load) one detector, evaluate it on the test split and time it."""
    from detect.benchmarking import Timing, backbone_timer, time_inference, time_proposals
    from detect.data.build import load_test_split
    from detect.data.transforms import TestTransforms
    from detect.engine.checkpoint import checkpoint_config, load_detector
    from detect.engine.evaluate import predict_dataset
    from detect.engine.rcnn import train_rcnn
    from detect.engine.runtime import select_device
    from detect.engine.trainer import Trainer
    from detect.evaluation.coco import evaluate_coco
    from detect.evaluation.plots import plot_precision_recall
    from detect.evaluation.voc import evaluate_voc
    from detect.proposals.cache import attach_proposals

    device = select_device(config.train.device)
    progress = not args.quiet
    train_seconds = None
    if checkpoint is not None:
        model, stored = load_detector(checkpoint, device)
        # What was trained is the checkpoint's; only the data it is scored on is this benchmark's.
        config = dataclasses.replace(checkpoint_config(stored, checkpoint), data=config.data)
        class_names = stored["class_names"]
        del stored   # (a last.pt holds the optimizer state too: not part of inference's memory)
    elif config.model.name == "rcnn":
        summary = train_rcnn(config, progress=progress, final_evaluation=False)
        train_seconds = summary["train_seconds"]
        model, stored = load_detector(summary["best"], device)
        class_names = stored["class_names"]
        del stored
    else:
        started = time.perf_counter()
        trainer = Trainer(config, progress=progress, tensorboard=False)
        trainer.fit(final_evaluation=False)
        train_seconds = time.perf_counter() - started
        model, class_names = trainer.model.eval(), trainer.class_names
        del trainer   # its optimizer and data are not part of inference's memory
    test_set = load_test_split(config.data, TestTransforms(), class_names=class_names)
    if model.uses_proposals:
        attach_proposals(test_set, config.model.proposals, progress)
    detections = predict_dataset(model, test_set, device, progress=progress, desc=f"evaluate {name}")
    ground_truth = test_set.ground_truth()
    voc07 = evaluate_voc(ground_truth, detections, class_names, metric="voc07")
    area = evaluate_voc(ground_truth, detections, class_names, metric="voc")
    coco = evaluate_coco(ground_truth, detections, class_names)
    plot_precision_recall(voc07, args.out / f"pr_{name}.png", title=f"{TITLES[name]} — VOC07 mAP {voc07.map:.4f}")
    release_memory(device)
    with PeakMemory(device) as memory, backbone_timer(model, device) as backbone:
        timing = time_inference(model, test_set, images=args.images, warmup=args.warmup, device=device,
                                timers=[backbone])
    row = {"detector": name, "title": TITLES[name], "voc07_map": voc07.map, "voc_area_map": area.map,
           "coco_ap": coco["AP"], "coco_ap50": coco["AP50"], "ap": voc07.as_dict()["ap"],
           "train_seconds": train_seconds, "inference_ms": timing.median, "inference_p10_ms": timing.p10,
           "inference_p90_ms": timing.p90, "timed_images": timing.count,
           "backbone_ms": Timing.of(backbone.per_image_ms).median,
           "parameters": sum(p.numel() for p in model.parameters()), "peak_memory_mb": memory.peak / 2 ** 20,
           "peak_gpu_memory_mb": None if memory.gpu_peak is None else memory.gpu_peak / 2 ** 20,
           "checkpoint": checkpoint, "backbone": config.model.backbone.name, "input_size": config.model.input_size,
           "config": config_to_dict(config)}
    if model.uses_proposals:
        proposals = time_proposals(test_set, config.model.proposals.selective_search, args.images, args.warmup)
        row.update(proposals_ms=proposals.median, proposals_p10_ms=proposals.p10, proposals_p90_ms=proposals.p90)
    return row


#: Config keys that only say where things are written; a reference run may differ in them.
LOCATION_KEYS = ("train.output_dir", "model.rcnn.feature_cache_dir", "model.proposals.cache_dir", "data.builtin_root")


def load_reference(path: Path, dataset: str, quick: bool) -> dict:
    """An earlier run's ``results.json`` (``--reference``) on the same ``dataset`` and schedule, read
    before any training starts."""
    hint = "give the results.json that an earlier tools/benchmark.py run wrote in its --out folder"
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: reference results not found; {hint}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path}: not valid JSON ({error}); {hint}") from None
    try:
        rows = [{**row, "detector": str(row["detector"]), "voc07_map": float(row["voc07_map"])}
                for row in results["rows"]]
        info = results.get("machine")
        results = {**results, "rows": rows, "machine": info if isinstance(info, dict) else {}}
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ConfigError(f"{path}: not a benchmark results.json (no 'rows' list of rows with 'detector' and a "
                          f"numeric 'voc07_map'); {hint}") from None
    earlier = (results.get("dataset", dataset), bool(results.get("quick", quick)))
    if earlier != (dataset, quick):
        raise ConfigError(f"{path}: reference is a {'--quick ' if earlier[1] else ''}run on '{earlier[0]}', this is a "
                          f"{'--quick ' if quick else ''}run on '{dataset}'; give a results.json of the same dataset "
                          "and schedule")
    return results


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_changes(ours: dict, theirs: dict) -> list[str]:
    """``key: reference value → this run's`` for every config key (output folders aside) that differs.

    A key that the reference run's version did not have yet, and that this run leaves at its
    default, is not a difference: a new setting's default keeps the behaviour from before it.
    """
    ours, theirs = _flatten(ours), _flatten(theirs)
    defaults = _flatten(config_to_dict(Config()))
    absent = "(absent)"

    def differs(key: str) -> bool:
        if key in LOCATION_KEYS:
            return False
        if key not in theirs and key in defaults and ours.get(key, absent) == defaults[key]:
            return False
        return ours.get(key, absent) != theirs.get(key, absent)

    return [f"{key}: {theirs.get(key, absent)} → {ours.get(key, absent)}"
            for key in sorted(ours.keys() | theirs.keys()) if differs(key)]


def reproduction(rows: list[dict], reference: dict, tolerance: float) -> list[dict]:
    """Each detector's VOC07 mAP against the same detector's in ``reference`` (detectors in both runs),
    with the config keys (output folders aside) whose values differ between the two runs (``None``
    when the reference did not record its config)."""
    earlier = {row["detector"]: row for row in reference["rows"]}
    checks = []
    for row in rows:
        before = earlier.get(row["detector"])
        if before is None:
            continue
        changed = config_changes(row.get("config", {}), before["config"]) if "config" in before else None
        delta = row["voc07_map"] - before["voc07_map"]
        checks.append({"detector": row["detector"], "title": row["title"], "voc07_map": row["voc07_map"],
                       "reference_map": before["voc07_map"], "delta": delta,
                       # A hair of slack so that a difference of exactly the tolerance counts as within it.
                       "within": abs(delta) <= tolerance + 1e-9, "config_changes": changed})
    return checks


def reproduction_summary(checks: list[dict], reference: Path, tolerance: float) -> str:
    """One line: how many detectors reproduced the reference run, which did not, whose config differs."""
    if not checks:
        return f"reproduction against {reference}: no detector of this run is in it, nothing compared"
    missed = [c["title"] for c in checks if not c["within"]]
    changed = [c["title"] for c in checks if c["config_changes"]]
    return (f"reproduction against {reference}: {len(checks) - len(missed)} of {len(checks)} detectors within "
            f"±{tolerance:g}" + (f"; not: {', '.join(missed)}" if missed else "")
            + (f" (config differs: {', '.join(changed)})" if changed else ""))


def _check_checkpoint_model(name: str, path: str) -> None:
    """``--checkpoint NAME=PATH`` must hold NAME's detector (before hours of training the others)."""
    from detect.engine.checkpoint import checkpoint_config, load_checkpoint

    held = checkpoint_config(load_checkpoint(path), path).model.name
    if held != MODEL_NAMES[name]:
        raise ConfigError(f"--checkpoint {name}={path}: the checkpoint holds a {held} detector, not {MODEL_NAMES[name]}; "
                          f"give it as --checkpoint <its detector>=PATH")


def earlier_benchmark(out: Path, trained: Sequence[str], overwrite: bool) -> dict:
    """What an earlier benchmark left in ``out``: its results files and the checkpoints in the
    folders of the detectors this run trains (``{"results": [...], "runs": {folder: [...]}}``,
    empty when nothing). Refused without ``overwrite``."""
    from detect.engine.checkpoint import run_checkpoints

    results = sorted({path.name for pattern in ("results.json", "results.md", "pr_*.png", "speed_vs_map.png")
                      for path in out.glob(pattern)})
    runs = {out / name: found for name in trained if (found := run_checkpoints(out / name))}
    if not (results or runs):
        return {}
    if not overwrite:
        held = results + [f"{folder.name}/{checkpoint}" for folder, found in runs.items() for checkpoint in found]
        shown = ", ".join(held[:6]) + (f" and {len(held) - 6} more" if len(held) > 6 else "")
        raise OutputError(f"holds an earlier benchmark ({shown}); start afresh with --overwrite (its results and "
                          "checkpoints are deleted; the proposal and feature caches are kept), or choose another --out",
                          out)
    return {"results": results, "runs": runs}


def remove_earlier_benchmark(out: Path, earlier: dict) -> None:
    """--overwrite: nothing of the earlier run may be mistaken for this one's (a stale row, plot or
    R-CNN's fine-tuned weights, which would skip stage 1 and its time)."""
    from detect.engine.checkpoint import remove_earlier_run

    for name in earlier["results"]:
        (out / name).unlink(missing_ok=True)
    for folder, found in earlier["runs"].items():
        remove_earlier_run(folder, found)
    if earlier["results"]:
        logger.warning("--overwrite: deleted the earlier benchmark's %s in %s", ", ".join(earlier["results"]), out)


def check_test_split(config: Config, args: argparse.Namespace) -> int:
    """The number of test images; refuses a split with none left to time after ``--warmup``."""
    from detect.data.build import load_test_split

    count = len(load_test_split(config.data))
    if count <= args.warmup:
        raise ConfigError(f"the test split has {count} image(s), none left to time after --warmup {args.warmup}; "
                          "lower --warmup or use a larger test split")
    if count < args.warmup + args.images:
        logger.warning("the test split has %d images: %d are timed after %d warm-up ones, not --images %d",
                       count, count - args.warmup, args.warmup, args.images)
    return count


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                  check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.strip()
        revision += " (with uncommitted changes)" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        revision = "unknown"
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            # Whether train.cpu_amp trains under bfloat16 here: it changes both times and mAPs.
            "cpu_bfloat16": cpu_has_native_bfloat16(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch": torch.__version__, "python": platform.python_version(), "git": revision}


def _bfloat16_note(native: bool) -> str:
    return ("native bfloat16 (configs with train.cpu_amp train under it)" if native
            else "no native bfloat16 (CPU training in float32)")


def _fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def markdown(results: dict) -> str:
    rows, info = results["rows"], results["machine"]
    lines = [f"# Benchmark: {results['dataset']}" + (" (--quick: shortened schedules)" if results["quick"] else ""),
             "", f"Command: `{results['command']}`  ",
             f"Machine: {info['cpu']}, {info['cpu_count']} CPUs, {info['torch_threads']} torch threads, "
             f"{_bfloat16_note(info['cpu_bfloat16'])}, "
             f"GPU {info['gpu'] or 'none'}; torch {info['torch']}; git {info['git']}", "",
             "| detector | VOC07 mAP@0.5 | VOC area mAP | COCO AP | COCO AP50 | training | inference ms/img "
             "(p10–p90) | of which backbone | proposals ms/img | parameters | peak memory |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        training = "loaded" if row["train_seconds"] is None else f"{row['train_seconds'] / 60:.1f} min"
        memory = f"{row['peak_memory_mb']:.0f} MB" + (f" (GPU {row['peak_gpu_memory_mb']:.0f} MB)"
                                                     if row.get("peak_gpu_memory_mb") is not None else "")
        proposals = (f"{row['proposals_ms']:.0f} ({row['proposals_p10_ms']:.0f}–{row['proposals_p90_ms']:.0f})"
                     if "proposals_ms" in row else "—")
        lines.append(f"| {row['title']} | {_fmt(row['voc07_map'])} | {_fmt(row['voc_area_map'])} | "
                     f"{_fmt(row['coco_ap'])} | {_fmt(row['coco_ap50'])} | {training} | "
                     f"{row['inference_ms']:.1f} ({row['inference_p10_ms']:.1f}–{row['inference_p90_ms']:.1f}) | "
                     f"{_fmt(row.get('backbone_ms'), 1)} | {proposals} | {row['parameters'] / 1e6:.2f} M | "
                     f"{memory} |")
    timed = sorted({row["timed_images"] for row in rows if "timed_images" in row})
    if timed:
        lines += ["", f"Inference: batch 1, {' / '.join(map(str, timed))} test images timed after "
                      f"{results.get('warmup', 'the')} warm-up ones; proposals excluded (timed alone on the same images)."]
    if results.get("failed"):
        lines += ["", "**Failed:** " + "; ".join(f"{TITLES[f['detector']]}: {f['error']}" for f in results["failed"])]
    classes = list(rows[0]["ap"]) if rows else []
    lines += ["", "Per-class AP (VOC07, IoU > 0.5):", "",
              "| class | " + " | ".join(r["title"] for r in rows) + " |", "|---|" + "---|" * len(rows)]
    for name in classes:
        lines.append(f"| {name} | " + " | ".join(_fmt(r["ap"].get(name)) for r in rows) + " |")
    lines += ["", "Configs: " + "; ".join(f"{r['title']}: {r['config_note']}" for r in rows), ""]
    if "reproduction" in results:
        lines += _reproduction_markdown(results)
    return "\n".join(lines)


def _reproduction_markdown(results: dict) -> list[str]:
    reference, tolerance = results["reference"], results["tolerance"]
    precision = ("bfloat16 support not recorded" if reference["cpu_bfloat16"] is None
                 else _bfloat16_note(reference["cpu_bfloat16"]))
    lines = [f"Against the reference run `{reference['path']}` (git {reference['git']}, {reference['date']}, "
             f"{reference['cpu']}, {precision}):", "",
             f"| detector | VOC07 mAP@0.5 | reference | this run − reference | within ±{tolerance:g} | "
             "config that differs (reference → this run) |",
             "|---|---|---|---|---|---|"]
    for check in results["reproduction"]:
        changes = ("not recorded in the reference" if check["config_changes"] is None
                   else "; ".join(f"`{change}`" for change in check["config_changes"]) or "none")
        lines.append(f"| {check['title']} | {_fmt(check['voc07_map'])} | {_fmt(check['reference_map'])} | "
                     f"{check['delta']:+.4f} | {'yes' if check['within'] else '**no**'} | {changes} |")
    return lines + [""]


def scatter(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from detect.io import atomic_save

    figure, axes = plt.subplots(figsize=(6, 4.5))
    for row in rows:
        axes.scatter(row["inference_ms"], row["voc07_map"], s=40)
        axes.annotate(row["title"], (row["inference_ms"], row["voc07_map"]), textcoords="offset points",
                      xytext=(5, 5), fontsize=9)
    axes.set_xscale("log")
    axes.set_xlabel("inference ms per image (median, proposals excluded; log scale)")
    axes.set_ylabel("VOC07 mAP@0.5")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    atomic_save(path, lambda handle: figure.savefig(handle, format="png", dpi=120))
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=BUILTIN_DATASET, help="'builtin', a VOC folder or a COCO JSON")
    parser.add_argument("--detectors", default=",".join(DETECTORS), help="comma-separated subset of %(default)s")
    parser.add_argument("--backbone", help="override every detector's backbone")
    parser.add_argument("--weights", help="override every detector's backbone weights")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                        help="use this trained checkpoint for detector NAME instead of training it")
    parser.add_argument("--quick", action="store_true", help="small built-in dataset and shortened schedules")
    parser.add_argument("--images", type=int, default=20, help="test images timed (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--variant", help="prefer configs/<detector>_<dataset>_<VARIANT>.yaml where it exists "
                        "(e.g. mnv2: the built-in configs with ImageNet MobileNetV2)")
    parser.add_argument("--configs", type=Path, default=Path("configs"))
    parser.add_argument("--out", type=Path, help="results folder (default runs/benchmark_<dataset>[_quick])")
    parser.add_argument("--overwrite", action="store_true",
                        help="start afresh in an --out that holds an earlier benchmark (its results and checkpoints "
                             "are deleted; caches are kept); without it such a folder is refused")
    parser.add_argument("--reference", type=Path, metavar="RESULTS_JSON",
                        help="an earlier run's results.json: report whether this run reproduces its mAPs")
    parser.add_argument("--tolerance", type=float, default=0.02,
                        help="largest mAP difference from --reference that counts as reproduced (default %(default)s)")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="applied to every detector's config")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(args.debug, args.quiet)
    names = [n.strip() for n in args.detectors.split(",") if n.strip()]
    unknown = [n for n in names if n not in DETECTORS]
    if unknown:
        raise ConfigError(f"unknown detector(s) {', '.join(unknown)}; choose from {', '.join(DETECTORS)}")
    if args.images < 1 or args.warmup < 0:
        raise ConfigError(f"--images {args.images} --warmup {args.warmup}: time at least 1 image after 0 or more "
                          "warm-up ones")
    checkpoints = {}
    for item in args.checkpoint:
        name, sep, path = item.partition("=")
        if not sep or name not in DETECTORS:
            raise ConfigError(f"--checkpoint {item!r}: expected NAME=PATH with NAME one of {', '.join(DETECTORS)}")
        checkpoints[name] = path
        _check_checkpoint_model(name, path)
    key = dataset_key(args.data)
    if args.variant and not any(config_path(n, key, args.configs, args.variant).exists() for n in names):
        raise ConfigError(f"--variant {args.variant}: no {args.configs}/<detector>_{key}_{args.variant}.yaml for "
                          f"{', '.join(names)}; check the name (e.g. mnv2) or leave --variant out")
    if not args.tolerance >= 0:
        raise ConfigError(f"--tolerance {args.tolerance}: must be a mAP difference of 0 or more (e.g. 0.02)")
    reference = load_reference(args.reference, key, args.quick) if args.reference else None
    args.out = args.out or Path("runs") / f"benchmark_{key}{'_quick' if args.quick else ''}"
    earlier = earlier_benchmark(args.out, [n for n in names if n not in checkpoints], args.overwrite)
    # Before any training: the test split is there and has images to time (this also generates the
    # built-in data, which then is not counted in the first detector's training time).
    test_images = check_test_split(detector_config(names[0], args.data, args, args.configs)[0], args)
    if earlier:
        remove_earlier_benchmark(args.out, earlier)
    started = time.perf_counter()
    results = {"dataset": key, "data": args.data, "quick": args.quick, "command": " ".join(["python", "tools/benchmark.py",
               *(argv if argv is not None else sys.argv[1:])]), "machine": machine(),
               "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "test_images": test_images,
               "warmup": args.warmup, "rows": [], "failed": []}
    if reference is not None:
        info = reference["machine"]
        results["reference"] = {"path": str(args.reference), "git": info.get("git", "unknown"),
                                "date": reference.get("date", "date not recorded"), "cpu": info.get("cpu", "unknown CPU"),
                                "cpu_bfloat16": info.get("cpu_bfloat16")}
        results["tolerance"] = args.tolerance
        results["reproduction"] = []
    for name in names:
        config, note = detector_config(name, args.data, args, args.configs)
        logger.info("=== %s (%s)", TITLES[name], note)
        try:
            row = benchmark_detector(name, config, checkpoints.get(name), args)
        except (DetectError, RuntimeError, ValueError, OSError) as error:
            # One detector's failure (bad config, out of memory, a bug) must not cost the others' hours.
            logger.error("%s failed: %s", TITLES[name], error, exc_info=args.debug)
            results["failed"].append({"detector": name, "error": " ".join(str(error).split())[:300]})
            row = None
        if row is not None:
            row["config_note"] = note if name not in checkpoints else f"{checkpoints[name]} (loaded)"
            results["rows"].append(row)
            logger.info("%s: VOC07 mAP %.4f, %.1f ms/image", TITLES[name], row["voc07_map"], row["inference_ms"])
        if reference is not None:
            results["reproduction"] = reproduction(results["rows"], reference, args.tolerance)
        # Written after every detector, so a long run that stops keeps the rows already measured.
        atomic_write_json(args.out / "results.json", results)
        atomic_write_text(args.out / "results.md", markdown(results))
    results["total_seconds"] = time.perf_counter() - started
    atomic_write_json(args.out / "results.json", results)
    atomic_write_text(args.out / "results.md", markdown(results))
    scatter(results["rows"], args.out / "speed_vs_map.png", f"{key}: speed against accuracy")
    print(markdown(results))
    print(f"total wall-clock {results['total_seconds'] / 60:.1f} min; results in {args.out}")
    if reference is not None:
        print(reproduction_summary(results["reproduction"], args.reference, args.tolerance))
    if results["failed"]:
        print("failed: " + ", ".join(TITLES[f["detector"]] for f in results["failed"]) + " (see results.md)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
