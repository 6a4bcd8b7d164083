"""On-disk proposal cache: selective search runs once per image and parameter set.

Layout (one folder per image folder + parameters, so changing a parameter never reuses stale
boxes; inside it, the image folder's tree)::

    <cache_dir>/<dataset name>-<key>/params.json            what the key stands for
    <cache_dir>/<dataset name>-<key>/<image path>.npz       boxes (float32[K, 4]) + the image's size and mtime

Files are named after the image *file* (its path inside the image folder, e.g. ``000005.jpg.npz``),
not after the image id: two COCO files that number their images from 1 and share one image folder
then share each picture's boxes, instead of overwriting each other's.

Each image's file is written atomically by the worker that computed it, so an interrupted run
keeps every finished image and the next run computes only the rest. A file that cannot be read
(corrupt, truncated: ``.npz`` is a zip archive whose CRC is checked on read) or that describes
another version of the image (size or modification time changed) is recomputed, for that image
only, with a log line.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import multiprocessing
import os
import re
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import cv2
import numpy as np
from tqdm import tqdm

from detect.data.dataset import Annotation, DetectionDataset
from detect.data.images import read_image
from detect import distributed
from detect.errors import DataError
from detect.io import atomic_write_bytes, atomic_write_json, make_output_dir
from detect.proposals.selective_search import SelectiveSearchConfig, selective_search

if TYPE_CHECKING:
    from detect.config import ProposalConfig

logger = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def cache_file_name(image_id: str) -> str:
    """A file name for ``image_id`` that is safe on every file system and unique per id."""
    safe = _UNSAFE.sub("_", image_id)
    if safe != image_id:  # two ids that differ only in unsafe characters must not collide
        safe += "-" + hashlib.sha1(image_id.encode("utf-8")).hexdigest()[:8]
    return safe + ".npz"


def _stamp(path: Path) -> np.ndarray:
    """The image file's size and modification time: which version of the image boxes belong to."""
    try:
        status = path.stat()
    except OSError as error:
        raise DataError(f"cannot read the image ({error.strerror}); restore it or remove it from the dataset",
                        path) from None
    return np.array([status.st_size, status.st_mtime_ns], dtype=np.int64)


def _compute_and_store(job: tuple[str, str, str, SelectiveSearchConfig]) -> tuple[str, int, float]:
    """Worker: selective search on one image, stored atomically. Returns (image id, boxes, seconds)."""
    image_id, image_path, file_path, config = job
    start = time.perf_counter()
    stamp = _stamp(Path(image_path))  # before reading: an image replaced meanwhile then fails the check on read
    boxes = selective_search(read_image(Path(image_path)), config)
    buffer = io.BytesIO()
    np.savez(buffer, boxes=boxes, stamp=stamp)
    Path(file_path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(file_path, buffer.getvalue())
    return image_id, len(boxes), time.perf_counter() - start


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one image per process; OpenCV's own threads would oversubscribe the cores


class ProposalCache:
    """Selective-search boxes for the images of one dataset, computed once and kept on disk.

    Args:
        cache_dir: the root named by the config (``model.proposals.cache_dir``).
        dataset_name: a readable prefix for the folder (e.g. the dataset folder's name).
        image_root: the folder that holds every image of the dataset (in subfolders or not); with
            ``config`` it forms the cache key, and each image's file mirrors its path in it.
        config: selective-search parameters.
    """

    def __init__(self, cache_dir: str | os.PathLike, dataset_name: str, image_root: str | os.PathLike,
                 config: SelectiveSearchConfig):
        self.config = config
        self.image_root = Path(image_root).resolve()
        params = {"dataset": str(self.image_root), "files": "image paths",
                  "selective_search": config.cache_params()}
        key = hashlib.sha1(json.dumps(params, sort_keys=True).encode("utf-8")).hexdigest()[:12]
        self.directory = Path(cache_dir) / f"{_UNSAFE.sub('_', dataset_name)}-{key}"
        self.params = params

    def path(self, annotation: Annotation) -> Path:
        """Where the boxes of ``annotation``'s image are kept: its path under the image root + ``.npz``."""
        image = Path(annotation.image_path).resolve()
        try:
            relative = image.relative_to(self.image_root)
        except ValueError:
            raise DataError(f"the image is outside the proposal cache's image folder {self.image_root}",
                            image) from None
        return self.directory / relative.parent / (relative.name + ".npz")

    def read(self, annotation: Annotation) -> np.ndarray | None:
        """The cached boxes (float32[K, 4], original pixels) of one image, or None when they must
        be (re)computed; a damaged or stale file is logged."""
        path = self.path(annotation)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as stored:
                boxes, stamp = stored["boxes"], stored["stamp"]
            if boxes.dtype != np.float32 or boxes.ndim != 2 or boxes.shape[1] != 4 or not np.isfinite(boxes).all():
                raise ValueError("unexpected array")
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            logger.warning("%s: damaged proposal file (%s); recomputing this image", path, type(error).__name__)
            return None
        if not np.array_equal(stamp, _stamp(annotation.image_path)):
            logger.warning("%s: the image changed since its proposals were computed; recomputing", path)
            return None
        return boxes

    def ensure(self, annotations: Iterable[Annotation], workers: int = 2, progress: bool = True) -> dict[str, np.ndarray]:
        """Boxes of every image, computing the missing ones in ``workers`` processes.

        Returns:
            ``{image_id: float32[K, 4]}`` in original image pixels.
        """
        annotations = list(annotations)
        make_output_dir(self.directory)
        if not (self.directory / "params.json").exists():
            atomic_write_json(self.directory / "params.json", self.params)
        boxes = {a.image_id: self.read(a) for a in annotations}
        missing = [a for a in annotations if boxes[a.image_id] is None]
        absent = [a for a in missing if not self.path(a).exists()]
        if 0 < len(absent) <= 20 and len(absent) < len(annotations):  # a few files gone from a filled cache
            for annotation in absent:
                logger.warning("%s: proposal file missing; computing this image", self.path(annotation))
        if missing:
            logger.info("selective search (%s) on %d of %d images into %s", self.config.describe(),
                        len(missing), len(annotations), self.directory)
            jobs = [(a.image_id, str(a.image_path), str(self.path(a)), self.config) for a in missing]
            start, total_boxes = time.perf_counter(), 0
            bar = tqdm(total=len(jobs), desc="selective search", unit="img", disable=not progress)
            if workers > 1 and len(jobs) > 1:
                with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
                    for _, count, _ in pool.imap_unordered(_compute_and_store, jobs, chunksize=4):
                        total_boxes += count
                        bar.update()
            else:
                for job in jobs:
                    total_boxes += _compute_and_store(job)[1]
                    bar.update()
            bar.close()
            elapsed = time.perf_counter() - start
            logger.info("selective search: %d images in %.1f s (%.2f images/s, %.0f boxes/image)", len(jobs),
                        elapsed, len(jobs) / max(elapsed, 1e-9), total_boxes / len(jobs))
            for annotation in missing:
                boxes[annotation.image_id] = self.read(annotation)
                if boxes[annotation.image_id] is None:   # logged by read: changed while being computed
                    raise DataError("proposals just computed cannot be read back (the image or its proposal file "
                                    f"{self.path(annotation)} changed meanwhile); rerun the same command",
                                    annotation.image_path)
        return boxes


def attach_proposals(dataset: DetectionDataset, config: ProposalConfig, progress: bool = True) -> None:
    """Compute or load the proposals of every image of ``dataset`` and add them to its samples.

    The cache folder is keyed by the folder holding the dataset's images and the selective-search
    parameters (``config``: :class:`detect.config.ProposalConfig`).
    """
    if not dataset.annotations:
        dataset.proposals = {}
        return
    image_root = os.path.commonpath([str(Path(a.image_path).resolve().parent) for a in dataset.annotations])
    cache = ProposalCache(config.cache_dir, Path(image_root).parent.name or dataset.name, image_root,
                          config.selective_search)
    ctx = distributed.context()
    if ctx.enabled:  # each process of a multi-process job computes every N-th image, then all read
        cache.ensure(dataset.annotations[ctx.rank::ctx.world_size], config.workers, progress and ctx.is_main)
        distributed.barrier()
    dataset.proposals = cache.ensure(dataset.annotations, config.workers, progress)
