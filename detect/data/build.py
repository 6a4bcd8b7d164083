"""From a :class:`~detect.config.DataConfig` to the train and test datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from detect.config import BUILTIN_DATASET, DataConfig
from detect.data.coco import load_coco
from detect.data.dataset import DetectionDataset
from detect.data.synthetic import SHAPE_CLASSES, ensure_dataset
from detect.data.transforms import TestTransforms, TrainTransforms
from detect.data.voc import discover_voc_classes, load_voc
from detect.errors import ConfigError, DataError


def dataset_location(config: DataConfig) -> tuple[str, Path]:
    """``("voc" | "coco", path)`` for the configured dataset; generates the built-in one if needed."""
    if config.dataset == BUILTIN_DATASET:
        return "voc", ensure_dataset(config.builtin_root, config.builtin)
    path = Path(config.dataset)
    if path.is_dir():
        return "voc", path
    if path.suffix.lower() == ".json" or path.is_file():
        return "coco", path
    raise DataError("dataset not found; set data.dataset to 'builtin', a PASCAL VOC folder or a "
                    "COCO JSON file", path)


def load_split(config: DataConfig, split: str, transforms: Callable | None = None,
               class_names: list[str] | None = None) -> DetectionDataset:
    """Load one split. For COCO data, ``split`` is a JSON file (relative to the dataset's folder or
    absolute); a split that names no JSON file is ``config.dataset`` itself (see :func:`load_test_split`).

    ``class_names`` defaults to ``config.class_names``, then to the built-in classes, then to
    the classes found in the whole dataset (all VOC annotations, or the COCO categories).
    """
    kind, path = dataset_location(config)
    names = class_names or config.class_names
    if names is None and config.dataset == BUILTIN_DATASET:
        names = list(SHAPE_CLASSES)
    if kind == "voc":
        if names is None:
            names = discover_voc_classes(path, on_invalid=config.on_invalid)
        return load_voc(path, split, names, transforms, config.on_invalid)
    split_path = Path(split) if Path(split).is_absolute() else path.parent / split
    json_path = split_path if split_path.suffix.lower() == ".json" else path
    return load_coco(json_path, config.image_root, names, transforms, config.on_invalid)


def load_test_split(config: DataConfig, transforms: Callable | None = None,
                    class_names: list[str] | None = None) -> DetectionDataset:
    """The split an experiment is scored on, ``config.test_split``.

    For COCO data it must name a JSON file: ``data.dataset`` is the training file, which
    :func:`load_split` falls back to, and scoring it would report training mAP as test mAP.
    """
    kind, path = dataset_location(config)
    if kind == "coco" and Path(config.test_split).suffix.lower() != ".json":
        raise ConfigError(f"is the training file; set data.test_split=<test instances>.json (relative to its folder, "
                          f"or absolute): data.test_split {config.test_split!r} names no JSON file", path)
    return load_split(config, config.test_split, transforms, class_names)


def build_datasets(config: DataConfig, seed: int = 0) -> tuple[DetectionDataset, DetectionDataset]:
    """The training split (with augmentation seeded by ``seed``) and the test split (no augmentation).

    Both use the same class list, so labels agree.
    """
    train = load_split(config, config.train_split, TrainTransforms(config.augmentation))
    if not config.train_difficult:
        train.annotations = [annotation.without_difficult() for annotation in train.annotations]
    train.seed = seed
    test = load_test_split(config, TestTransforms(), class_names=train.class_names)
    return train, test
