"""COCO-format (JSON) datasets, read into the same samples as PASCAL VOC.

COCO stores ``bbox = [x, y, width, height]`` in continuous pixels, which maps to the library's
``x1, y1, x2, y2 = x, y, x + width, y + height`` with no offset. Crowd annotations
(``iscrowd = 1``) are kept as ``difficult`` objects, which VOC evaluation ignores.
Categories are mapped to labels ``0..C-1`` in order of increasing category id.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from detect.data.dataset import (Annotation, DetectionDataset, RawObject, build_annotation,
                                 check_image, check_policy, log_skipped)
from detect.errors import DataError

logger = logging.getLogger(__name__)


def _require(mapping: Any, key: str, kind: type | tuple, source: Path, where: str) -> Any:
    if not isinstance(mapping, dict) or key not in mapping:
        raise DataError(f"{where} has no {key!r}; every COCO {where.split()[0]} needs one", source)
    value = mapping[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DataError(f"{where} {key!r} is {value!r}; expected {getattr(kind, '__name__', kind)}", source)
    return value


def read_coco_json(path: str | os.PathLike) -> dict:
    """Load and structurally check a COCO annotation file.

    Raises:
        DataError: missing file, malformed JSON, missing sections or keys, duplicate ids.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("COCO annotation file not found; pass the path of the instances JSON", path)
    try:
        with open(path, "rb") as handle:
            content = json.loads(handle.read().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"malformed JSON ({error}); fix or re-export the annotation file", path) from None
    except (OSError, RecursionError, ValueError) as error:
        raise DataError(f"cannot read annotation file ({error})", path) from None
    if not isinstance(content, dict):
        raise DataError("top level must be an object with 'images', 'annotations', 'categories'", path)
    for section in ("images", "annotations", "categories"):
        if not isinstance(content.get(section), list):
            raise DataError(f"missing or non-list {section!r} section; is this a COCO instances file?", path)
    for kind, section in (("image", "images"), ("category", "categories"), ("annotation", "annotations")):
        seen = set()
        for index, entry in enumerate(content[section]):
            entry_id = _require(entry, "id", int, path, f"{kind} #{index}")
            if entry_id in seen:
                raise DataError(f"{kind} id {entry_id} appears twice; ids must be unique", path)
            seen.add(entry_id)
    return content


def default_image_root(json_path: Path) -> Path:
    """Where a COCO file's images are unless told: its folder's ``images/`` sub-folder if that
    exists; for COCO's own layout (``annotations/instances_val2017.json`` beside ``val2017/``)
    that folder; else the JSON's own folder."""
    if (json_path.parent / "images").is_dir():
        return json_path.parent / "images"
    split = json_path.stem.removeprefix("instances_")
    if json_path.parent.name == "annotations" and split != json_path.stem and (json_path.parent.parent / split).is_dir():
        return json_path.parent.parent / split
    return json_path.parent


def load_coco(json_path: str | os.PathLike, image_root: str | os.PathLike | None = None,
              class_names: Sequence[str] | None = None, transforms: Callable[[dict], dict] | None = None,
              on_invalid: str = "error") -> DetectionDataset:
    """Read a COCO instances JSON into a :class:`DetectionDataset`.

    Args:
        json_path: the annotation file.
        image_root: folder that ``file_name`` is relative to; default: see :func:`default_image_root`.
        class_names: label order; default: category names by increasing category id.
        transforms, on_invalid: as for :func:`detect.data.voc.load_voc`.

    The image id used for evaluation is the COCO image id as a string.
    """
    json_path = Path(json_path)
    check_policy(on_invalid)
    content = read_coco_json(json_path)
    image_root = default_image_root(json_path) if image_root is None else Path(image_root)
    categories = _categories(content, json_path)
    if class_names is None:
        class_names = [categories[key] for key in sorted(categories)]
    class_to_index = {name: i for i, name in enumerate(class_names)}
    objects_per_image, skipped_objects = _objects_per_image(content, categories, json_path, on_invalid)
    annotations: list[Annotation] = []
    skipped_images = 0
    for index, image in enumerate(content["images"]):
        try:
            annotation, dropped = _image_annotation(index, image, image_root, objects_per_image[image["id"]],
                                                    class_to_index, json_path, on_invalid)
        except DataError:
            if on_invalid == "error":
                raise
            skipped_images += 1
            continue
        skipped_objects += dropped
        annotations.append(annotation)
    log_skipped(str(json_path), skipped_images, skipped_objects)
    return DetectionDataset(annotations, class_names, transforms, name=json_path.stem)


def _categories(content: dict, json_path: Path) -> dict[int, str]:
    """Category id → name; two categories of one name are an error."""
    categories = {}
    for index, category in enumerate(content["categories"]):
        name = _require(category, "name", str, json_path, f"category #{index}")
        if name in categories.values():
            raise DataError(f"category #{index} (id {category['id']}) has the name {name!r} of another category; "
                            "give each category its own name", json_path)
        categories[category["id"]] = name
    return categories


def _objects_per_image(content: dict, categories: dict[int, str], json_path: Path,
                       on_invalid: str) -> tuple[dict[int, list[RawObject]], int]:
    """Every image id's annotations as raw objects (boxes ``[x, y, width, height]`` turned into corner
    form, not yet checked against the image), and how many annotations were skipped as malformed."""
    objects_per_image: dict[int, list[RawObject]] = {image["id"]: [] for image in content["images"]}
    skipped = 0
    for index, entry in enumerate(content["annotations"]):
        where = f"annotation #{index} (id {entry['id']})"
        try:
            image_id = _require(entry, "image_id", int, json_path, where)
            category_id = _require(entry, "category_id", int, json_path, where)
            bbox = _require(entry, "bbox", list, json_path, where)
            if image_id not in objects_per_image:
                raise DataError(f"{where} refers to image id {image_id}, which is not in 'images'", json_path)
            if category_id not in categories:
                raise DataError(f"{where} has unknown category id {category_id}; add it to 'categories'", json_path)
            if entry.get("iscrowd", 0) not in (0, 1):   # (the string "0" is neither)
                raise DataError(f"{where} iscrowd {entry['iscrowd']!r} must be 0 or 1", json_path)
            if len(bbox) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
                raise DataError(f"{where} bbox {bbox!r} must be 4 numbers [x, y, width, height]", json_path)
        except DataError:
            if on_invalid == "error":
                raise
            skipped += 1
            continue
        x, y, width, height = (float(v) for v in bbox)
        box = (x, y, x + width, y + height) if math.isfinite(width + height) else (x, y, math.nan, math.nan)
        area = entry.get("area")   # the segment's area; a box-only file may leave it out
        area = float(area) if isinstance(area, (int, float)) and not isinstance(area, bool) and area > 0 else math.nan
        objects_per_image[image_id].append(RawObject(categories[category_id], box, bool(entry.get("iscrowd", 0)),
                                                     ref=f"annotation id {entry['id']} of image id {image_id}",
                                                     area=area))
    return objects_per_image, skipped


def _image_annotation(index: int, image: dict, image_root: Path, objects: list[RawObject],
                      class_to_index: dict[str, int], json_path: Path, on_invalid: str) -> tuple[Annotation, int]:
    """Image entry ``#index`` checked against its file on disk, with its objects: the annotation and
    how many of its objects were dropped under ``on_invalid="skip"``."""
    file_name = _require(image, "file_name", str, json_path, f"image #{index} (id {image['id']})")
    declared = (image["width"], image["height"]) if "width" in image and "height" in image else None
    image_path = image_root / file_name
    if not image_path.exists():
        raise DataError(f"image #{index} (id {image['id']}): {file_name!r} not found in {image_root}; set "
                        "data.image_root (tools/eval.py: --image-root) to the folder holding the images", json_path)
    width, height = check_image(image_path, declared, json_path)
    return build_annotation(str(image["id"]), image_path, width, height, objects, class_to_index, json_path,
                            on_invalid)
