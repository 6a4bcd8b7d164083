"""Evaluate a split end to end: load ground truth, get detections, score, print, save, plot.

This is what ``tools/eval.py`` runs; it lives here so it can be called from Python too.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from detect.config import BUILTIN_DATASET, DataConfig
from detect.data.build import load_split
from detect.data.dataset import DetectionDataset
from detect.data.transforms import TestTransforms
from detect.evaluation.breakdown import DEFAULT_SIZE_EDGES, breakdown_text, error_breakdown, size_band_ap
from detect.evaluation.coco import evaluate_coco
from detect.evaluation.detections import read_detections
from detect.evaluation.plots import plot_precision_recall
from detect.evaluation.voc import evaluate_voc
from detect.errors import DataError
from detect.io import atomic_write_json

logger = logging.getLogger(__name__)


@dataclass
class EvaluationReport:
    """What an evaluation produced: the printable text and the JSON-ready results."""

    text: str
    results: dict


def _dataset(data: str, split: str, on_invalid: str, class_names: list[str] | None, image_root: str | None = None,
             trained_on: DataConfig | None = None) -> DetectionDataset:
    """The split to score. ``builtin`` is generated with the settings the checkpoint's data had
    (``trained_on``), so that a model trained on a non-default built-in set is scored on its own
    test images, and the folder on disk is not regenerated with the defaults."""
    base = trained_on if trained_on is not None and data == trained_on.dataset == BUILTIN_DATASET else DataConfig()
    config = dataclasses.replace(base, dataset=data, test_split=split, on_invalid=on_invalid, class_names=class_names,
                                 image_root=image_root)
    if data != BUILTIN_DATASET and Path(data).suffix.lower() == ".json":
        split = str(Path(data).resolve())   # the file itself (a relative path would be taken from its own folder)
    return load_split(config, split, TestTransforms())


def match_image_ids(found: dict[str, dict], dataset: DetectionDataset, source: str | os.PathLike,
                    on_invalid: str = "error") -> dict[str, dict]:
    """Detections read from ``source``, keyed by ``dataset``'s image ids.

    tools/infer.py names each image by its file stem. That is a VOC image's id, but a COCO image's id
    is its number, so a stem that names exactly one image of the split is read as that image. Other
    unknown ids are an error (``on_invalid="error"``: they were made for another split), or are left
    out with a warning (``"skip"``: e.g. images that loading skipped as invalid).
    """
    ids = {annotation.image_id for annotation in dataset.annotations}
    by_stem: dict[str, list[str]] = {}
    for annotation in dataset.annotations:
        by_stem.setdefault(Path(annotation.image_path).stem, []).append(annotation.image_id)
    matched, unknown = {}, []
    for image_id, entry in found.items():
        target = image_id if image_id in ids else (by_stem[image_id][0] if len(by_stem.get(image_id, ())) == 1
                                                   else None)
        if target is None:
            unknown.append(image_id)
        elif target in matched:
            raise DataError(f"image {target!r} has detections under two ids (its id and its file name); "
                            "give each image one id", source)
        else:
            matched[target] = entry
    if unknown and on_invalid != "skip":
        raise DataError(f"has detections of {len(unknown)} image(s) that are not in the evaluated split (first: "
                        f"{unknown[0]!r}); evaluate on the split they were made for, or leave them out with "
                        "--on-invalid skip", source)
    if unknown:
        logger.warning("%s: left out the detections of %d image(s) not in the evaluated split (first: %r; "
                       "on_invalid=skip)", source, len(unknown), unknown[0])
    return matched


def _coco_table(metrics: dict, class_names: list[str]) -> str:
    width = max([len("class")] + [len(n) for n in class_names])
    lines = [f"{'class':<{width}}  {'AP':>6}"]
    for name in class_names:
        value = metrics.get(f"AP/{name}", math.nan)
        lines.append(f"{name:<{width}}  {'n/a' if math.isnan(value) else f'{value:.4f}':>6}")
    summary = "  ".join(f"{key} {metrics[key]:.4f}" for key in ("AP", "AP50", "AP75", "APs", "APm", "APl")
                        if not math.isnan(metrics[key]))
    lines.append(f"COCO: {summary}")
    return "\n".join(lines)


def evaluate_split(data: str, split: str = "test", *, detections: str | os.PathLike | None = None,
                   checkpoint: str | os.PathLike | None = None, metric: str = "voc07", iou_threshold: float = 0.5,
                   on_invalid: str = "error", image_root: str | None = None, device: str = "auto",
                   json_path: str | os.PathLike | None = None,
                   plots_dir: str | os.PathLike | None = None, progress: bool = True,
                   breakdown: bool = False, breakdown_score: float = 0.5,
                   size_edges: Sequence[float] = DEFAULT_SIZE_EDGES) -> EvaluationReport:
    """Score detections (from a file, or from running ``checkpoint``) on ``data``/``split``.

    ``breakdown`` adds AP by object size and the categories of the detections scored at least
    ``breakdown_score`` (:mod:`detect.evaluation.breakdown`; VOC AP, 11-point for ``coco``).

    Returns:
        the printable per-class table and ``{"metric", "map", "ap": {class: AP}, ...}``.
    """
    class_names = None
    model = None
    trained_on = None
    if checkpoint is not None:
        from detect.engine.checkpoint import checkpoint_config, load_detector
        from detect.engine.runtime import select_device

        device = select_device(device)
        model, stored = load_detector(checkpoint, device)
        class_names = stored["class_names"]
        trained_on = checkpoint_config(stored, checkpoint).data
    dataset = _dataset(data, split, on_invalid, class_names, image_root, trained_on)
    if model is not None:
        from detect.engine.evaluate import predict_dataset

        if model.uses_proposals:
            from detect.proposals.cache import attach_proposals

            attach_proposals(dataset, checkpoint_config(stored, checkpoint).model.proposals, progress)

        found = predict_dataset(model, dataset, device, progress=progress)
    else:
        found = match_image_ids(read_detections(detections, dataset.class_names), dataset, detections, on_invalid)
    ground_truth = dataset.ground_truth()
    if metric == "coco":
        metrics = evaluate_coco(ground_truth, found, dataset.class_names)
        results = {"metric": "coco", "map": metrics["AP"],
                   "ap": {n: metrics.get(f"AP/{n}") for n in dataset.class_names}, "coco": metrics}
        text = _coco_table(metrics, dataset.class_names)
    else:
        result = evaluate_voc(ground_truth, found, dataset.class_names, metric=metric, iou_threshold=iou_threshold)
        results = result.as_dict()
        text = result.table()
        if plots_dir is not None:
            path = Path(plots_dir) / f"pr_curves_{metric}.png"
            plot_precision_recall(result, path, title=f"{dataset.name} — {metric} mAP {result.map:.4f}")
            text += f"\nPR curves: {path}"
    if breakdown:
        voc_metric = "voc07" if metric == "coco" else metric
        bands = size_band_ap(ground_truth, found, dataset.class_names, size_edges, voc_metric, iou_threshold)
        errors = error_breakdown(ground_truth, found, dataset.class_names, breakdown_score, iou_threshold)
        text += "\n\n" + breakdown_text(bands, errors)
        results["size_bands"] = [{"low": b.low, "high": None if math.isinf(b.high) else b.high,
                                  "objects": b.objects, "map": b.map, "agnostic_ap": b.agnostic_ap} for b in bands]
        results["errors"] = errors.as_dict()
    coco_file = data != BUILTIN_DATASET and Path(data).suffix.lower() == ".json"   # --split does not apply
    results.update(data=str(data), split=None if coco_file else split, images=len(dataset))   # what was scored
    results = _json_safe(results)
    if json_path is not None:
        atomic_write_json(json_path, results)
        text += f"\nresults: {json_path}"
    return EvaluationReport(text, results)


def _json_safe(value):
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    return value
