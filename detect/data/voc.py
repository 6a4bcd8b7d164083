"""PASCAL VOC layout: reading and writing.

Layout (``root`` is e.g. ``VOCdevkit/VOC2007`` or ``data/shapes``)::

    root/JPEGImages/<id>.jpg
    root/Annotations/<id>.xml
    root/ImageSets/Main/<split>.txt      one image id per line

Box convention: VOC XML stores 1-based inclusive integer pixels. They are loaded as continuous
pixels ``(xmin - 1, ymin - 1, xmax, ymax)`` and written back as ``(x1 + 1, y1 + 1, x2, y2)``;
with this mapping the continuous IoU equals the VOC devkit's "+1" IoU exactly.
"""

from __future__ import annotations

import logging
import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from detect.data.dataset import (Annotation, DetectionDataset, RawObject, build_annotation,
                                 check_image, check_policy, log_skipped)
from detect.data.images import IMAGE_EXTENSIONS
from detect.errors import DataError
from detect.io import atomic_write_text

logger = logging.getLogger(__name__)


def read_split(root: str | os.PathLike, split: str) -> list[str]:
    """Image ids listed in ``root/ImageSets/Main/<split>.txt``.

    Raises:
        DataError: the split file is missing (the message lists the available splits).
    """
    split_dir = Path(root) / "ImageSets" / "Main"
    split_file = split_dir / f"{split}.txt"
    if not split_file.is_file():
        available = sorted(p.stem for p in split_dir.glob("*.txt") if "_" not in p.stem) if split_dir.is_dir() else []
        hint = f"available splits: {', '.join(available)}" if available else \
            "is this a PASCAL VOC folder (JPEGImages/, Annotations/, ImageSets/Main/)?"
        raise DataError(f"split {split!r} not found; {hint}", split_file)
    try:
        text = split_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read split file ({error}); re-create it", split_file) from None
    # Lines may carry a second column (the per-class files use "<id> <flag>"); keep the id.
    return [line.split()[0] for line in text.splitlines() if line.strip()]


def _text(element: ET.Element, tag: str, source: Path, where: str) -> str:
    node = element.find(tag)
    if node is None or node.text is None or not node.text.strip():
        raise DataError(f"{where} has no <{tag}>; add it", source)
    return node.text.strip()


def _number(element: ET.Element, tag: str, source: Path, where: str) -> float:
    text = _text(element, tag, source, where)
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{where} <{tag}> is {text!r}, not a number; fix it", source) from None
    if not math.isfinite(value):
        raise DataError(f"{where} <{tag}> is {text!r}, not a finite number; fix it", source)
    return value


def parse_voc_xml(path: str | os.PathLike) -> tuple[str | None, tuple[int, int] | None, list[RawObject]]:
    """Parse one VOC annotation file.

    Returns:
        ``(filename or None, (width, height) or None, objects)`` with boxes converted to
        continuous pixels ``(xmin - 1, ymin - 1, xmax, ymax)``.

    Raises:
        DataError: missing or malformed XML, missing tags, non-numeric values.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("annotation file not found; every listed image needs Annotations/<id>.xml", path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as error:
        raise DataError(f"malformed XML ({error}); fix or re-export the annotation", path) from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise DataError(f"cannot read annotation ({error})", path) from None
    if root.tag != "annotation":
        raise DataError(f"root element is <{root.tag}>, expected <annotation>; is this a VOC file?", path)
    filename_node = root.find("filename")
    filename = filename_node.text.strip() if filename_node is not None and filename_node.text else None
    size = None
    size_node = root.find("size")
    if size_node is not None and size_node.find("width") is not None:
        width = _number(size_node, "width", path, "<size>")
        height = _number(size_node, "height", path, "<size>")
        if not (width >= 1 and height >= 1 and width == int(width) and height == int(height)):
            raise DataError(f"<size> is {width}x{height}; width and height must be positive integers", path)
        size = (int(width), int(height))
    objects = []
    for index, node in enumerate(root.findall("object")):
        name = _text(node, "name", path, f"object {index}")
        where = f"object {index} ({name!r})"
        box_node = node.find("bndbox")
        if box_node is None:
            raise DataError(f"{where} has no <bndbox>; add it", path)
        xmin, ymin, xmax, ymax = (_number(box_node, tag, path, where) for tag in ("xmin", "ymin", "xmax", "ymax"))
        difficult_node = node.find("difficult")
        difficult_text = difficult_node.text.strip() if difficult_node is not None and difficult_node.text else "0"
        if difficult_text not in ("0", "1"):
            raise DataError(f"{where} <difficult> is {difficult_text!r}; use 0 or 1", path)
        objects.append(RawObject(name=name, box=(xmin - 1.0, ymin - 1.0, xmax, ymax),
                                 difficult=difficult_text == "1"))
    return filename, size, objects


def _find_image(root: Path, image_id: str, filename: str | None) -> Path:
    folder = root / "JPEGImages"
    candidates = [folder / f"{image_id}.jpg"]
    if filename:
        candidates.append(folder / filename)
    candidates += [folder / f"{image_id}{ext}" for ext in IMAGE_EXTENSIONS]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return candidates[0]


def discover_voc_classes(root: str | os.PathLike, image_ids: Sequence[str] | None = None,
                         on_invalid: str = "error") -> list[str]:
    """Sorted class names found in the annotations (of ``image_ids``, or of every XML file);
    with ``on_invalid="skip"`` a file that does not parse is left out (the split's loading counts it)."""
    annotations = Path(root) / "Annotations"
    paths = [annotations / f"{i}.xml" for i in image_ids] if image_ids is not None else sorted(annotations.glob("*.xml"))
    names = set()
    for path in paths:
        try:
            _, _, objects = parse_voc_xml(path)
        except DataError:
            if on_invalid == "error":
                raise
            continue
        names.update(obj.name for obj in objects)
    if not names:
        raise DataError("no objects found, so no classes could be discovered; pass the class list", annotations)
    return sorted(names)


def load_voc(root: str | os.PathLike, split: str = "trainval", class_names: Sequence[str] | None = None,
             transforms: Callable[[dict], dict] | None = None, on_invalid: str = "error") -> DetectionDataset:
    """Read a PASCAL VOC-layout dataset split into a :class:`DetectionDataset`.

    Args:
        root: folder holding ``JPEGImages/``, ``Annotations/`` and ``ImageSets/Main/``.
        split: name of the ``ImageSets/Main/<split>.txt`` file.
        class_names: foreground classes in label order; discovered (sorted) from all
            annotations of the dataset if None, so train and test splits agree.
        transforms: applied to each sample by ``__getitem__``.
        on_invalid: ``"error"`` stops at the first bad file or object with a message naming it;
            ``"skip"`` drops bad objects and images and logs how many were dropped.

    Boxes are loaded as ``(xmin - 1, ymin - 1, xmax, ymax)`` (see module docstring).
    Every image header is read to check that the image exists and that its size agrees with the XML.
    """
    root = Path(root)
    check_policy(on_invalid)
    if not root.is_dir():
        raise DataError("dataset folder not found; pass the folder holding JPEGImages/, "
                        "Annotations/ and ImageSets/Main/", root)
    image_ids = read_split(root, split)
    if class_names is None:
        class_names = discover_voc_classes(root, on_invalid=on_invalid)
    class_to_index = {name: i for i, name in enumerate(class_names)}
    annotations: list[Annotation] = []
    skipped_images = skipped_objects = 0
    for image_id in image_ids:
        xml_path = root / "Annotations" / f"{image_id}.xml"
        try:
            filename, size, objects = parse_voc_xml(xml_path)
            image_path = _find_image(root, image_id, filename)
            width, height = check_image(image_path, size, xml_path)
            annotation, dropped = build_annotation(image_id, image_path, width, height, objects,
                                                   class_to_index, xml_path, on_invalid)
        except DataError as error:
            if on_invalid == "error":
                raise
            logger.debug("skipped image: %s", error)
            skipped_images += 1
            continue
        skipped_objects += dropped
        annotations.append(annotation)
    log_skipped(f"{root}:{split}", skipped_images, skipped_objects)
    return DetectionDataset(annotations, class_names, transforms, name=f"{root.name}/{split}")


def voc_xml_text(filename: str, width: int, height: int, names: Sequence[str], boxes: np.ndarray,
                 difficult: Sequence[bool], truncated: Sequence[bool] | None = None,
                 folder: str = "", depth: int = 3) -> str:
    """Render a VOC annotation; ``boxes`` (float[N, 4]) are continuous pixels, rounded to integers.

    Written as 1-based inclusive ``(round(x1) + 1, round(y1) + 1, round(x2), round(y2))``.
    """
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = folder
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    for tag, value in (("width", width), ("height", height), ("depth", depth)):
        ET.SubElement(size, tag).text = str(int(value))
    ET.SubElement(root, "segmented").text = "0"
    truncated = truncated if truncated is not None else [False] * len(names)
    for name, box, is_difficult, is_truncated in zip(names, np.asarray(boxes).reshape(-1, 4), difficult, truncated):
        node = ET.SubElement(root, "object")
        ET.SubElement(node, "name").text = name
        ET.SubElement(node, "pose").text = "Unspecified"
        ET.SubElement(node, "truncated").text = str(int(bool(is_truncated)))
        ET.SubElement(node, "difficult").text = str(int(bool(is_difficult)))
        bndbox = ET.SubElement(node, "bndbox")
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        for tag, value in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
            ET.SubElement(bndbox, tag).text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def write_voc_xml(path: str | os.PathLike, filename: str, width: int, height: int,
                  names: Sequence[str], boxes: np.ndarray, difficult: Sequence[bool],
                  truncated: Sequence[bool] | None = None, folder: str = "") -> None:
    """Write a VOC annotation file atomically (see :func:`voc_xml_text` for the box convention)."""
    atomic_write_text(path, voc_xml_text(filename, width, height, names, boxes, difficult, truncated, folder))


def write_split(root: str | os.PathLike, split: str, image_ids: Sequence[str]) -> None:
    """Write ``root/ImageSets/Main/<split>.txt`` atomically."""
    atomic_write_text(Path(root) / "ImageSets" / "Main" / f"{split}.txt", "".join(f"{i}\n" for i in image_ids))
