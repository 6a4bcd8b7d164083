"""R-CNN's training pipeline: its four stages, each resumable and skipped when its output exists.

Run by ``python tools/train.py --config configs/rcnn_<data>.yaml``::

    stage 1  fine-tune the backbone on warped proposals   <output_dir>/finetuned.pt
             (the shared training engine; ``--resume`` continues it from last.pt)
    stage 2  features of every training proposal          <feature_cache_dir>/<key>/<image id>.npz
    stage 3  per-class SVMs with hard-negative mining     ┐
    stage 4  per-class ridge box regressors               ┘ <output_dir>/best.pt (the detector)

Stage 2 writes one file per image atomically and skips the files already there, so a killed
extraction continues where it stopped; its folder's key is a hash of the fine-tuned weights and
the proposal parameters, so features of another model are never mixed in. Stages 3 and 4 take
seconds and always run on the complete feature set, so an interrupted extraction followed by a
rerun gives exactly the SVMs of an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from detect.boxes import BoxCoder, box_iou
from detect.config import Config, config_to_dict
from detect.data.build import load_split
from detect.data.dataset import DetectionDataset
from detect.data.transforms import TestTransforms, collate
from detect.engine.checkpoint import checkpoint_config, load_checkpoint, save_checkpoint
from detect.engine.evaluate import evaluate_detector
from detect.engine.trainer import Trainer
from detect.errors import DetectError
from detect import distributed
from detect.io import atomic_write_bytes, atomic_write_json, make_output_dir
from detect.models.rcnn import RCNN
from detect.models.rcnn_svm import fit_ridge, mine_hard_negatives
from detect.proposals.cache import cache_file_name

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------- stage 2: feature cache

def weights_digest(model: torch.nn.Module) -> str:
    """A short hash of the model's trainable weights (names, shapes and values)."""
    digest = hashlib.sha1()
    for name, tensor in model.state_dict().items():
        if name.startswith(("svm_", "regressor_", "target_", "feature_scale")):
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


class FeatureCache:
    """Per-image files of R-CNN features: ``features`` (float16[G + K, D]: the G ground-truth boxes
    first, then the K proposals) and ``boxes`` (float32[G + K, 4], original pixels)."""

    def __init__(self, root: str | Path, model: RCNN, config: Config):
        params = {"weights": weights_digest(model), "proposals": config.model.proposals.selective_search.cache_params(),
                  "crop_size": config.model.rcnn.crop_size, "context_pad": config.model.rcnn.context_pad,
                  "max_proposals": config.model.rcnn.max_proposals,
                  "input_size": config.model.input_size, "dataset": config.data.dataset,
                  "split": config.data.train_split}
        key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
        self.directory = Path(root) / f"{config.name}-{key}"
        self.params = params

    def path(self, image_id: str) -> Path:
        return self.directory / cache_file_name(image_id)

    def read(self, image_id: str) -> dict[str, np.ndarray] | None:
        """The stored arrays, or None if absent or unreadable (logged)."""
        path = self.path(image_id)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as stored:
                data = {"features": stored["features"], "boxes": stored["boxes"]}
            if data["features"].ndim != 2 or len(data["features"]) != len(data["boxes"]):
                raise ValueError("inconsistent arrays")
            return data
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            logger.warning("%s: damaged feature file (%s); recomputing this image", path, type(error).__name__)
            return None

    @torch.no_grad()
    def ensure(self, model: RCNN, dataset: DetectionDataset, device: torch.device, num_workers: int = 0,
               progress: bool = True) -> None:
        """Extract and store the features of every image of ``dataset`` that has none yet.

        In a multi-process job each process extracts every N-th missing image; all return when
        the cache is complete.
        """
        make_output_dir(self.directory)
        atomic_write_json(self.directory / "params.json", self.params)
        missing = [i for i, a in enumerate(dataset.annotations) if self.read(a.image_id) is None]
        missing = distributed.broadcast_object(missing)   # one list for all processes, before anyone writes
        ctx = distributed.context()
        if ctx.enabled:
            self._extract(model, dataset, missing[ctx.rank::ctx.world_size], device, num_workers,
                          progress and ctx.is_main)
            distributed.barrier()
            return
        self._extract(model, dataset, missing, device, num_workers, progress)

    def _extract(self, model: RCNN, dataset: DetectionDataset, missing: list[int], device: torch.device,
                 num_workers: int, progress: bool) -> None:
        done = len(dataset) - len(missing)
        if not missing:
            logger.info("stage 2: features of all %d images already in %s", len(dataset), self.directory)
            return
        logger.info("stage 2: extracting features of %d images (%d already done) into %s",
                    len(missing), done, self.directory)
        model.eval()
        subset = torch.utils.data.Subset(dataset, missing)
        loader = DataLoader(subset, batch_size=1, shuffle=False, num_workers=num_workers, collate_fn=collate)
        started = time.perf_counter()
        for images, targets in tqdm(loader, desc="stage 2: features", unit="img", disable=not progress):
            target = targets[0]
            boxes = torch.cat([target["boxes"], target["proposals"][: model.config.max_proposals]])
            batch, _ = model.transform([images[0].to(device)])
            regions = model.transform.resize_boxes([boxes], batch)
            features = model.region_features(batch.tensors, regions).cpu().numpy().astype(np.float16)
            buffer = io.BytesIO()
            np.savez(buffer, features=features, boxes=boxes.numpy().astype(np.float32))
            atomic_write_bytes(self.path(target["image_id"]), buffer.getvalue())
        elapsed = time.perf_counter() - started
        size = sum(p.stat().st_size for p in self.directory.glob("*.npz"))
        logger.info("stage 2: %d images in %.0f s (%.2f images/s); cache holds %.1f MB", len(missing), elapsed,
                    len(missing) / max(elapsed, 1e-9), size / 1e6)


# ---------------------------------------------------------------------- stages 3 and 4

def train_svms_and_regressors(model: RCNN, dataset: DetectionDataset, cache: FeatureCache) -> dict:
    """Fit the SVMs (stage 3) and box regressors (stage 4) on the cached features; store them in
    ``model``'s buffers. Returns a summary per class."""
    config = model.config
    coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
    records = []   # per image, computed once for all classes
    norm_sum, count = 0.0, 0
    for annotation in dataset.annotations:
        stored = cache.read(annotation.image_id)
        if stored is None:
            raise DetectError("features missing after stage 2; rerun the same command", cache.path(annotation.image_id))
        features, boxes = stored["features"], stored["boxes"]
        norm_sum += float(np.linalg.norm(features.astype(np.float32), axis=1).sum())
        count += len(features)
        num_gt = len(annotation.boxes)
        proposals, truth = torch.from_numpy(boxes[num_gt:]), torch.from_numpy(annotation.boxes)
        overlap = box_iou(proposals, truth).numpy()                       # [K, G]
        if num_gt and len(proposals):
            match, best = overlap.argmax(axis=1), overlap.max(axis=1)
            deltas = coder.encode(proposals, truth[torch.from_numpy(match)]).numpy()
        else:
            match, best = np.zeros(len(proposals), np.int64), np.zeros(len(proposals), np.float32)
            deltas = np.zeros((len(proposals), 4), np.float32)
        records.append((annotation, features, overlap, match, best, deltas))
    scale = config.feature_norm / max(norm_sum / max(count, 1), 1e-12)
    summary = {}
    dim = config.feature_dim
    svm_weight, svm_bias = np.zeros((model.num_classes, dim)), np.zeros(model.num_classes)
    reg_weight = np.zeros((model.num_classes, dim + 1, 4))
    reg_mean, reg_std = np.zeros((model.num_classes, 4)), np.ones((model.num_classes, 4))
    for label, name in enumerate(dataset.class_names):
        positives, negatives, reg_x, reg_y = [], [], [], []
        for annotation, features, overlap, match, best, deltas in records:
            num_gt = len(annotation.boxes)
            mine = annotation.labels == label
            positives.append(features[:num_gt][mine & ~annotation.difficult].astype(np.float32) * scale)
            best_of_class = overlap[:, mine].max(axis=1) if mine.any() else np.zeros(len(overlap))
            negatives.append(features[num_gt:][best_of_class < config.svm_negative_iou].astype(np.float32) * scale)
            if mine.any():
                chosen = (best > config.regression_iou) & (annotation.labels[match] == label)
                if chosen.any():
                    reg_x.append(features[num_gt:][chosen].astype(np.float32) * scale)
                    reg_y.append(deltas[chosen])
        positives = np.concatenate(positives)
        if len(positives) == 0:
            logger.warning("class %r has no training example: its SVM stays at zero", name)
            continue
        result = mine_hard_negatives(positives, negatives, c=config.svm_c, positive_weight=config.svm_positive_weight,
                                     bias_term=config.svm_bias, hard_threshold=config.hard_threshold,
                                     evict_threshold=config.evict_threshold, retrain_every=config.retrain_every)
        svm_weight[label], svm_bias[label] = result.weight, result.bias
        entry = {"positives": len(positives), "hard_negatives_mined": result.mined,
                 "cache_at_end": result.cache_size, "retrains": result.retrains}
        if reg_x:
            weight, mean, std = fit_ridge(np.concatenate(reg_x), np.concatenate(reg_y), config.regression_lambda)
            reg_weight[label], reg_mean[label], reg_std[label] = weight, mean, std
            entry["regression_examples"] = int(sum(len(x) for x in reg_x))
        summary[name] = entry
        logger.info("stage 3-4: %-12s %s", name, entry)
    with torch.no_grad():
        model.feature_scale.fill_(scale)
        model.svm_weight.copy_(torch.from_numpy(svm_weight))
        model.svm_bias.copy_(torch.from_numpy(svm_bias))
        model.svm_trained.fill_(True)
        model.regressor_weight.copy_(torch.from_numpy(reg_weight))
        model.target_mean.copy_(torch.from_numpy(reg_mean))
        model.target_std.copy_(torch.from_numpy(reg_std))
        model.regressor_trained.fill_(True)
    return summary


# ---------------------------------------------------------------------- the pipeline

#: The settings stage 1 (fine-tuning) depends on, as ``section: keys`` (None: the whole section
#: but :data:`FINETUNING_IGNORED`); a ``finetuned.pt`` made with other values is not reused.
FINETUNING_SETTINGS = {
    "data": None,
    "model": ("name", "input_size", "backbone"),
    "model.rcnn": ("crop_size", "context_pad", "feature_dim", "pool_size", "batch_size_per_image", "positive_fraction",
                   "foreground_iou", "max_proposals"),
    "model.proposals": ("selective_search",),
    "train": ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "warmup_iters",
              "warmup_factor", "schedule", "milestones", "gamma", "clip_grad_norm", "seed", "amp", "cpu_amp"),
}
#: Settings inside those sections that do not change the fine-tuned weights.
FINETUNING_IGNORED = {"data.num_workers"}


def finetuning_settings(config: dict) -> dict:
    """The values of :data:`FINETUNING_SETTINGS` in a config dict, flattened to ``section.key``."""
    settings = {}
    for section, keys in FINETUNING_SETTINGS.items():
        values = config
        for part in section.split("."):
            values = values.get(part, {})
        for key in (keys if keys is not None else sorted(values)):
            settings[f"{section}.{key}"] = values.get(key)
    return {name: value for name, value in settings.items() if name not in FINETUNING_IGNORED}


def check_finetuned(checkpoint: dict, path: Path, config: Config) -> None:
    """Refuse to reuse ``finetuned.pt`` (loaded: ``checkpoint``) if it was fine-tuned with other stage-1 settings.

    Raises:
        DetectError: naming the settings that differ and what to do (the file is left as it is).
    """
    # through the Config type, so that keys newer than the file compare at their defaults
    saved = finetuning_settings(config_to_dict(checkpoint_config(checkpoint, path)))
    current = finetuning_settings(config_to_dict(config))
    changed = [f"{key}: {saved.get(key)!r} → {value!r}" for key, value in current.items() if saved.get(key) != value]
    if changed:
        raise DetectError(f"fine-tuned with other settings ({'; '.join(changed[:4])}"
                          f"{'; …' if len(changed) > 4 else ''}); choose another train.output_dir, "
                          "or fine-tune again with tools/train.py --overwrite", path)


def train_rcnn(config: Config, resume: bool = False, max_iterations: int | None = None,
               progress: bool = True, final_evaluation: bool = True) -> dict:
    """Run the stages that have no output yet; returns the summary (test mAP, times, paths).

    ``final_evaluation=False`` skips the test-split evaluation (the summary's ``map`` is then
    ``None``): for callers that evaluate the saved detector themselves, as the benchmark does.
    """
    started = time.perf_counter()
    trainer = Trainer(config, progress=progress)
    output = trainer.output_dir
    finetuned = output / "finetuned.pt"
    if finetuned.exists():
        checkpoint = load_checkpoint(finetuned, trainer.device)
        check_finetuned(checkpoint, finetuned, config)
        trainer.model.load_state_dict(checkpoint["model"])
        logger.info("stage 1: fine-tuned weights found in %s; skipped", finetuned)
    else:
        last = output / "last.pt"
        trainer.fit(resume=last if resume and last.exists() else None, max_iterations=max_iterations,
                    final_evaluation=False)
        if trainer.iteration < trainer.iterations_per_epoch() * config.train.epochs:
            return {"map": None, "stage": 1, "iterations": trainer.iteration, "last": str(last)}
        if trainer.is_main:
            shutil.copyfile(last, output / ".finetuned.tmp")
            (output / ".finetuned.tmp").replace(finetuned)
            logger.info("stage 1: done; fine-tuned weights in %s", finetuned)
    model = trainer.model.eval()
    features_set = load_split(config.data, config.data.train_split, TestTransforms(), class_names=trainer.class_names)
    features_set.proposals = trainer.train_set.proposals
    cache = FeatureCache(config.model.rcnn.feature_cache_dir, model, config)
    cache.ensure(model, features_set, trainer.device, config.data.num_workers, progress)
    if not trainer.is_main:
        # Stages 3-4 are single-process (liblinear) and may take longer than a collective's
        # timeout: rank 0 runs them and the evaluation alone; the other processes are done.
        return {"map": None, "stage": "svm on rank 0", "iterations": trainer.iteration}
    return _train_svms_and_evaluate(config, trainer, model, features_set, cache, progress, started,
                                    final_evaluation)


def _train_svms_and_evaluate(config: Config, trainer: Trainer, model: RCNN, features_set: DetectionDataset,
                             cache: FeatureCache, progress: bool, started: float,
                             final_evaluation: bool = True) -> dict:
    """Stages 3-4, the test-split evaluation and the shipped checkpoint."""
    output = trainer.output_dir
    svm_started = time.perf_counter()
    per_class = train_svms_and_regressors(model, features_set, cache)
    logger.info("stages 3-4: SVMs and regressors in %.1f s", time.perf_counter() - svm_started)
    train_seconds = time.perf_counter() - started
    metrics = {"map": None, "ap": None, "stage": "svm"}
    if final_evaluation:
        result, _ = evaluate_detector(model, trainer.test_set, trainer.device, metric="voc07",
                                      num_workers=config.data.num_workers, progress=progress)
        metrics.update(map=float(result.map), ap=result.as_dict()["ap"])
        logger.info("R-CNN test mAP@0.5 (VOC07) = %.4f\n%s", result.map, result.table())
    save_checkpoint(output / "best.pt", model=model, config=config, class_names=trainer.class_names,
                    metrics=metrics, svm=per_class)
    summary = {"map": metrics["map"], "metric": "voc07", "iterations": trainer.iteration,
               "train_seconds": train_seconds, "last": str(output / "last.pt"), "best": str(output / "best.pt"),
               "ap": metrics["ap"], "svm": per_class}
    atomic_write_json(output / "summary.json", summary)
    return summary
