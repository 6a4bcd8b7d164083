"""Run the benchmark: train (or load) each detector with its config for the data, evaluate it on
the test split, time it, and write the results after every detector. What each column means and
how configs are chosen: ``python tools/benchmark.py --help``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from detect.benchmark.memory import PeakMemory, release_memory
from detect.benchmark.report import machine, markdown, scatter
from detect.benchmark.reproduction import load_reference, reference_summary, reproduction
from detect.config import BUILTIN_DATASET, Config, config_to_dict, load_config
from detect.errors import ConfigError, DetectError, OutputError
from detect.io import atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)

DETECTORS = ("rcnn", "fast_rcnn", "faster_rcnn", "yolo", "torchvision")
TITLES = {"rcnn": "R-CNN", "fast_rcnn": "Fast R-CNN", "faster_rcnn": "Faster R-CNN", "yolo": "YOLOv1",
          "torchvision": "torchvision FasterRCNN"}
#: A checkpoint given for a detector must hold this ``model.name``.
MODEL_NAMES = {"rcnn": "rcnn", "fast_rcnn": "fast_rcnn", "faster_rcnn": "faster_rcnn", "yolo": "yolo",
               "torchvision": "torchvision_faster_rcnn"}
#: quick: a smaller built-in dataset and shortened schedules, labelled as such in the results.
QUICK_DATA = ["data.builtin_root=data/shapes_quick", "data.builtin.num_trainval=400", "data.builtin.num_test=100"]
QUICK_SCHEDULES = {"rcnn": ["train.epochs=1"], "fast_rcnn": ["train.epochs=2"], "faster_rcnn": ["train.epochs=2"],
                   "yolo": ["train.epochs=3"], "torchvision": ["train.epochs=2"]}


@dataclass
class BenchmarkOptions:
    """What one benchmark run does (``tools/benchmark.py``'s options, which document each)."""

    data: str = BUILTIN_DATASET
    detectors: Sequence[str] = DETECTORS
    out: Path | None = None               # default runs/benchmark_<dataset>[_quick]
    checkpoints: dict[str, str] = field(default_factory=dict)   # detector -> trained checkpoint to load
    backbone: str | None = None
    weights: str | None = None
    quick: bool = False
    variant: str | None = None
    configs: Path = Path("configs")
    images: int = 20                      # test images timed ...
    warmup: int = 5                       # ... after this many warm-up ones
    overrides: Sequence[str] = ()         # key.sub=value, applied to every detector's config
    overwrite: bool = False
    reference: Path | None = None         # an earlier run's results.json to check reproduction against
    tolerance: float = 0.02
    progress: bool = True
    debug: bool = False                   # log a failing detector's traceback

    @property
    def dataset(self) -> str:
        """The dataset's key: ``shapes`` for the built-in data, else the folder's (or COCO file's) name."""
        path = Path(self.data)
        return "shapes" if self.data == BUILTIN_DATASET else path.name if path.is_dir() else path.stem

    def output_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / f"benchmark_{self.dataset}{'_quick' if self.quick else ''}"

    def check(self) -> None:
        """The options themselves, each a one-line ``ConfigError`` (run_benchmark then checks the
        reference, ``--out``, every detector's config and the test split, all before any training)."""
        if not self.detectors:
            raise ConfigError(f"--detectors is empty; choose from {', '.join(DETECTORS)}")
        unknown = [name for name in self.detectors if name not in DETECTORS]
        if unknown:
            raise ConfigError(f"unknown detector(s) {', '.join(unknown)}; choose from {', '.join(DETECTORS)}")
        if self.images < 1 or self.warmup < 0:
            raise ConfigError(f"--images {self.images} --warmup {self.warmup}: time at least 1 image after 0 or more "
                              "warm-up ones")
        for name, path in self.checkpoints.items():
            if name not in DETECTORS:
                raise ConfigError(f"--checkpoint {name}={path}: {name} is not one of {', '.join(DETECTORS)}")
        for name, path in self.checkpoints.items():   # (loading them only once every name is known)
            _check_checkpoint_model(name, path)
        if self.variant and not any(config_path(n, self.dataset, self.configs, self.variant).exists()
                                    for n in self.detectors):
            raise ConfigError(f"--variant {self.variant}: no {self.configs}/<detector>_{self.dataset}_{self.variant}"
                              f".yaml for {', '.join(self.detectors)}; check the name (e.g. mnv2) or leave --variant out")
        if not self.tolerance >= 0:
            raise ConfigError(f"--tolerance {self.tolerance}: must be a mAP difference of 0 or more (e.g. 0.02)")


def config_path(name: str, dataset: str, configs_dir: Path, variant: str | None = None) -> Path:
    """``configs/<family>_<dataset>[_<variant>].yaml``; torchvision's reference uses Faster R-CNN's."""
    family = "faster_rcnn" if name == "torchvision" else name
    return configs_dir / f"{family}_{dataset}{f'_{variant}' if variant else ''}.yaml"


def detector_config(name: str, options: BenchmarkOptions) -> tuple[Config, str]:
    """The config used for ``name`` on the benchmark's data and a note on where it came from:
    ``configs/<detector>_<dataset>[_<variant>].yaml``, else the detector's raccoon recipe with the
    data replaced; torchvision's ``FasterRCNN`` is built from Faster R-CNN's config."""
    path = config_path(name, options.dataset, options.configs)
    variant = config_path(name, options.dataset, options.configs, options.variant)
    if options.variant and variant.exists():
        path = variant
    overrides: list[str] = []
    note = path.name
    if not path.exists():
        path = config_path(name, "raccoon", options.configs)
        overrides += [f"data.dataset={options.data}", "data.class_names=null"]
        note = f"{path.name} with data.dataset={options.data}"
    if not path.exists():
        raise ConfigError(f"no config for {name}; expected {path}")
    if name == "torchvision":
        overrides.append(f"model.name={MODEL_NAMES[name]}")
    if options.backbone:
        overrides.append(f"model.backbone.name={options.backbone}")
    if options.weights:
        overrides.append(f"model.backbone.weights={options.weights}")
    if options.quick:
        overrides += QUICK_SCHEDULES[name] + (QUICK_DATA if options.data == BUILTIN_DATASET else [])
        note += " (quick: " + ", ".join(QUICK_SCHEDULES[name]) + ")"
    out = options.output_dir()
    overrides += [f"train.output_dir={out / name}", "train.eval_every=0"]
    overrides += [f"model.rcnn.feature_cache_dir={out / 'cache' / 'features'}"] if name == "rcnn" else []
    return load_config(path, overrides + list(options.overrides)), note


def _check_checkpoint_model(name: str, path: str) -> None:
    """A checkpoint given for NAME must hold NAME's detector (checked before hours of training the others)."""
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
    """overwrite: nothing of the earlier run may be mistaken for this one's (a stale row, plot or
    R-CNN's fine-tuned weights, which would skip stage 1 and its time)."""
    from detect.engine.checkpoint import remove_earlier_run

    for name in earlier["results"]:
        (out / name).unlink(missing_ok=True)
    for folder, found in earlier["runs"].items():
        remove_earlier_run(folder, found)
    if earlier["results"]:
        logger.warning("--overwrite: deleted the earlier benchmark's %s in %s", ", ".join(earlier["results"]), out)


def check_test_split(config: Config, options: BenchmarkOptions) -> int:
    """The number of test images; refuses a split with none left to time after the warm-up."""
    from detect.data.build import load_test_split

    count = len(load_test_split(config.data))
    if count <= options.warmup:
        raise ConfigError(f"the test split has {count} image(s), none left to time after --warmup {options.warmup}; "
                          "lower --warmup or use a larger test split")
    if count < options.warmup + options.images:
        logger.warning("the test split has %d images: %d are timed after %d warm-up ones, not --images %d",
                       count, count - options.warmup, options.warmup, options.images)
    return count


def benchmark_detector(name: str, config: Config, options: BenchmarkOptions) -> dict:
    """Train (or load) one detector, evaluate it on the test split and time it: its row of the table."""
    from detect.benchmark.timing import Timing, backbone_timer, time_inference, time_proposals
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
    checkpoint = options.checkpoints.get(name)
    train_seconds = None
    if checkpoint is not None:
        model, stored = load_detector(checkpoint, device)
        # What was trained is the checkpoint's; only the data it is scored on is this benchmark's.
        config = dataclasses.replace(checkpoint_config(stored, checkpoint), data=config.data)
        class_names = stored["class_names"]
        del stored   # (a last.pt holds the optimizer state too: not part of inference's memory)
    elif config.model.name == "rcnn":
        summary = train_rcnn(config, progress=options.progress, final_evaluation=False)
        train_seconds = summary["train_seconds"]
        model, stored = load_detector(summary["best"], device)
        class_names = stored["class_names"]
        del stored
    else:
        started = time.perf_counter()
        trainer = Trainer(config, progress=options.progress, tensorboard=False)
        trainer.fit(final_evaluation=False)
        train_seconds = time.perf_counter() - started
        model, class_names = trainer.model.eval(), trainer.class_names
        del trainer   # its optimizer and data are not part of inference's memory
    test_set = load_test_split(config.data, TestTransforms(), class_names=class_names)
    if model.uses_proposals:
        attach_proposals(test_set, config.model.proposals, options.progress)
    detections = predict_dataset(model, test_set, device, progress=options.progress, desc=f"evaluate {name}")
    ground_truth = test_set.ground_truth()
    voc07 = evaluate_voc(ground_truth, detections, class_names, metric="voc07")
    area = evaluate_voc(ground_truth, detections, class_names, metric="voc")
    coco = evaluate_coco(ground_truth, detections, class_names)
    plot_precision_recall(voc07, options.output_dir() / f"pr_{name}.png",
                          title=f"{TITLES[name]} — VOC07 mAP {voc07.map:.4f}")
    release_memory(device)
    with PeakMemory(device) as memory, backbone_timer(model, device) as backbone:
        timing = time_inference(model, test_set, images=options.images, warmup=options.warmup, device=device,
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
        proposals = time_proposals(test_set, config.model.proposals.selective_search, options.images, options.warmup)
        row.update(proposals_ms=proposals.median, proposals_p10_ms=proposals.p10, proposals_p90_ms=proposals.p90)
    return row


def _write(results: dict, out: Path) -> None:
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", markdown(results))


def run_benchmark(options: BenchmarkOptions, command: str | None = None) -> dict:
    """The whole table: every detector of ``options`` in turn, its row written as soon as it is
    measured (a long run that stops keeps them). Returns the results (as in ``results.json``);
    a detector that fails is listed under ``failed`` and the others still run. ``command`` is
    what results.md says produced them (default: these options)."""
    options.check()
    reference = load_reference(options.reference, options.dataset, options.quick) if options.reference else None
    out = options.output_dir()
    earlier = earlier_benchmark(out, [n for n in options.detectors if n not in options.checkpoints], options.overwrite)
    # Every config before any training: a bad one must not stop the run after hours of the others.
    configs = {name: detector_config(name, options) for name in options.detectors}
    # The test split is there and has images to time (this also generates the built-in data, which
    # then is not counted in the first detector's training time).
    test_images = check_test_split(configs[options.detectors[0]][0], options)
    if earlier:
        remove_earlier_benchmark(out, earlier)
    started = time.perf_counter()
    results = {"dataset": options.dataset, "data": options.data, "quick": options.quick,
               "command": command or f"detect.benchmark.run_benchmark({options!r})",
               "machine": machine(), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "test_images": test_images, "warmup": options.warmup, "rows": [], "failed": []}
    if reference is not None:
        results.update(reference=reference_summary(options.reference, reference), tolerance=options.tolerance,
                       reproduction=[])
    for name in options.detectors:
        config, note = configs[name]
        logger.info("=== %s (%s)", TITLES[name], note)
        try:
            row = benchmark_detector(name, config, options)
        except (DetectError, RuntimeError, ValueError, OSError) as error:
            # One detector's failure (bad config, out of memory, a bug) must not cost the others' hours.
            logger.error("%s failed: %s", TITLES[name], error, exc_info=options.debug)
            results["failed"].append({"detector": name, "title": TITLES[name],
                                      "error": " ".join(str(error).split())[:300]})
            row = None
        if row is not None:
            checkpoint = options.checkpoints.get(name)
            row["config_note"] = note if checkpoint is None else f"{checkpoint} (loaded)"
            results["rows"].append(row)
            logger.info("%s: VOC07 mAP %.4f, %.1f ms/image", TITLES[name], row["voc07_map"], row["inference_ms"])
        if reference is not None:
            results["reproduction"] = reproduction(results["rows"], reference, options.tolerance)
        _write(results, out)
    results["total_seconds"] = time.perf_counter() - started
    _write(results, out)
    scatter(results["rows"], out / "speed_vs_map.png", f"{options.dataset}: speed against accuracy")
    return results
