"""The detections file: what ``tools/infer.py`` writes and ``tools/eval.py`` reads.

A UTF-8 JSON list with one record per detection::

    [{"image_id": "000005", "category": "chair", "score": 0.91, "bbox": [12.5, 40.0, 88.0, 140.25]},
     ...]

``bbox`` is ``[x1, y1, x2, y2]`` in continuous pixels of the original image (origin at the top-left
corner, width = x2 - x1) — not VOC's 1-based inclusive pixels and not COCO's ``[x, y, w, h]``.
``category`` is a class name, so a file stays meaningful without the model that produced it.

In memory, detections are per image: ``{image_id: {"boxes": float64[K, 4], "scores": float64[K],
"labels": int64[K]}}`` with labels indexing ``class_names``. Conversions keep the order of the
detections (image by image, then as given), which decides how the VOC evaluator breaks score ties.
"""

from __future__ import annotations

import json
import math
import os
from typing import Mapping, Sequence

import numpy as np

from detect.errors import DataError
from detect.io import atomic_write_text

#: Keys every record must have.
RECORD_KEYS = ("image_id", "category", "score", "bbox")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _record_problem(record, class_to_index: Mapping[str, int]) -> str | None:
    """Say what is wrong with one record (and what to do), or None."""
    if not isinstance(record, dict):
        return f"is not an object (got {type(record).__name__}); records have keys {', '.join(RECORD_KEYS)}"
    missing = [key for key in RECORD_KEYS if key not in record]
    if missing:
        return f"lacks {', '.join(missing)}; every record needs {', '.join(RECORD_KEYS)}"
    if not isinstance(record["image_id"], str):
        return f"has image_id {record['image_id']!r}; image ids are strings"
    if record["category"] not in class_to_index:
        known = ", ".join(class_to_index)
        return (f"has unknown category {record['category']!r} (known: {known}); use the class names "
                "of the model that made the detections")
    score = record["score"]
    if not _is_number(score) or not math.isfinite(score):
        return f"has score {score!r}; scores are finite numbers"
    bbox = record["bbox"]
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        return f"has bbox {bbox!r}; a bbox is 4 numbers [x1, y1, x2, y2]"
    if not all(math.isfinite(v) for v in bbox):
        return f"has bbox {bbox!r} with a non-finite coordinate; drop the detection"
    if bbox[2] < bbox[0] or bbox[3] < bbox[1]:
        return (f"has bbox {bbox!r} with x2 < x1 or y2 < y1; boxes are [x1, y1, x2, y2] "
                "(convert [x, y, w, h] first)")
    return None


def records_to_arrays(records: Sequence[Mapping], class_names: Sequence[str],
                      source: str | os.PathLike | None = None
                      ) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Validate records and return them as arrays, in their order.

    Returns:
        ``(image_ids list[str], boxes float64[K, 4] x1y1x2y2 continuous pixels, scores float64[K],
        labels int64[K])``.

    Raises:
        DataError: ``records`` is not a list, or a record is malformed; the message names
            ``source`` (the file, if any) and the record's index.
    """
    if not isinstance(records, list):
        raise DataError(f"detections are not a list (got {type(records).__name__}) of records "
                        f"with keys {', '.join(RECORD_KEYS)}; write them with write_detections", source)
    class_to_index = {name: index for index, name in enumerate(class_names)}
    for index, record in enumerate(records):
        problem = _record_problem(record, class_to_index)
        if problem is not None:
            raise DataError(f"detection entry {index} {problem}", source)
    image_ids = [record["image_id"] for record in records]
    boxes = np.array([record["bbox"] for record in records], dtype=np.float64).reshape(-1, 4)
    scores = np.array([record["score"] for record in records], dtype=np.float64)
    labels = np.array([class_to_index[record["category"]] for record in records], dtype=np.int64)
    return image_ids, boxes, scores, labels


def records_to_detections(records: Sequence[Mapping], class_names: Sequence[str],
                          source: str | os.PathLike | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Group validated records per image (images in order of first appearance, records in order).

    Raises:
        DataError: see :func:`records_to_arrays`.
    """
    image_ids, boxes, scores, labels = records_to_arrays(records, class_names, source)
    positions: dict[str, list[int]] = {}
    for index, image_id in enumerate(image_ids):
        positions.setdefault(image_id, []).append(index)
    return {image_id: {"boxes": boxes[index], "scores": scores[index], "labels": labels[index]}
            for image_id, index in positions.items()}


def detections_to_records(detections: Mapping[str, Mapping[str, np.ndarray]],
                          class_names: Sequence[str]) -> list[dict]:
    """Flatten per-image detections into records (images in dict order, detections in order).

    Boxes stay continuous-pixel ``[x1, y1, x2, y2]``; numbers become Python floats, which JSON
    writes with full precision (a write/read round trip is exact).

    Raises:
        DataError: a box or score is not finite.
        ValueError: a label is not a class index (a bug in the detector that made them).
    """
    records = []
    for image_id, entry in detections.items():
        boxes = np.asarray(entry["boxes"], dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(entry["scores"], dtype=np.float64).reshape(-1)
        if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
            raise DataError(f"detections of image {image_id!r} have a non-finite box or score, "
                            "which JSON cannot hold; drop them or fix the detector's output")
        labels = np.asarray(entry["labels"]).reshape(-1).tolist()
        if any(not 0 <= label < len(class_names) for label in labels):
            raise ValueError(f"detections of image {image_id!r} have labels outside 0..{len(class_names) - 1}: "
                             f"{sorted(set(labels))}")
        records.extend({"image_id": str(image_id), "category": class_names[label], "score": score,
                        "bbox": box} for box, score, label in zip(boxes.tolist(), scores.tolist(), labels))
    return records


def write_detections(path: str | os.PathLike, detections: Mapping[str, Mapping[str, np.ndarray]],
                     class_names: Sequence[str]) -> None:
    """Write per-image detections as a detections file (one record per line), atomically.

    Raises:
        DataError: a box or score is not finite.
        OutputError: ``path`` cannot be written.
    """
    records = detections_to_records(detections, class_names)
    lines = ",\n".join(json.dumps(record) for record in records)
    atomic_write_text(path, f"[\n{lines}\n]\n" if records else "[]\n")


def read_detections(path: str | os.PathLike, class_names: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
    """Read and validate a detections file into per-image detections (see module docstring).

    Raises:
        DataError: the file is missing or unreadable, is not JSON, is not a list, or an entry
            lacks a key, has an unknown category, a non-finite number, or a bbox that is not 4
            numbers ``[x1, y1, x2, y2]`` with x1 <= x2 and y1 <= y2. The message names the file
            and the entry index.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            records = json.load(handle)
    except FileNotFoundError:
        raise DataError("detections file not found; run tools/infer.py to make one", path) from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read detections file ({error})", path) from None
    except json.JSONDecodeError as error:
        raise DataError(f"not valid JSON ({error.msg} at line {error.lineno} column {error.colno}); "
                        "re-create the file with tools/infer.py", path) from None
    return records_to_detections(records, class_names, source=path)

