"""Run a detector over a dataset and score it with the shared evaluators."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from detect.data.dataset import DetectionDataset
from detect.data.transforms import collate
from detect.distributed import DistributedContext, all_gather_objects
from detect.distributed import context as dist_context
from detect.evaluation.voc import VOCResult, evaluate_voc


@torch.no_grad()
def predict_dataset(model: nn.Module, dataset: DetectionDataset, device: torch.device, batch_size: int = 8,
                    num_workers: int = 0, progress: bool = True, desc: str = "predict",
                    distributed: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """Detections for every image of ``dataset`` (which must yield tensors: use TestTransforms).

    With ``distributed``, each process of the job predicts every N-th image and the detections
    are gathered, so every process returns all of them. The model must be in eval mode. Returns ``{image_id: {"boxes": float[K, 4] (x1 y1 x2 y2
    original pixels), "scores": float[K], "labels": int[K]}}``, the input of the evaluators.
    """
    ctx = dist_context() if distributed else DistributedContext()
    if ctx.enabled:
        dataset = Subset(dataset, range(ctx.rank, len(dataset), ctx.world_size))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate, generator=torch.Generator().manual_seed(0))
    results = {}
    for images, targets in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
        images = [image.to(device, non_blocking=True) for image in images]
        if "proposals" in targets[0]:  # the dataset carries cached proposals (R-CNN, Fast R-CNN)
            detections = model.predict(images, [target["proposals"].to(device) for target in targets])
        else:
            detections = model.predict(images)
        for target, det in zip(targets, detections):
            results[target["image_id"]] = {"boxes": det.boxes.float().cpu().numpy(),
                                           "scores": det.scores.float().cpu().numpy(),
                                           "labels": det.labels.cpu().numpy()}
    if ctx.enabled:   # gathered, then put back in the dataset's order (evaluation breaks ties by order)
        merged: dict[str, dict[str, np.ndarray]] = {}
        for part in all_gather_objects(results):
            merged.update(part)
        results = {a.image_id: merged[a.image_id] for a in dataset.dataset.annotations if a.image_id in merged}
    return results


def evaluate_detector(model: nn.Module, dataset: DetectionDataset, device: torch.device, metric: str = "voc07",
                      batch_size: int = 8, num_workers: int = 0, progress: bool = True, distributed: bool = False
                      ) -> tuple[VOCResult, dict[str, dict[str, np.ndarray]]]:
    """VOC AP of ``model`` (in eval mode) on ``dataset``; also returns the detections.

    ``distributed``: shard the images over the job's processes (see :func:`predict_dataset`).
    """
    detections = predict_dataset(model, dataset, device, batch_size, num_workers, progress, desc="evaluate",
                                 distributed=distributed)
    return evaluate_voc(dataset.ground_truth(), detections, dataset.class_names, metric=metric), detections
