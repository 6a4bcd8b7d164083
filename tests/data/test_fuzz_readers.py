"""Property-based fuzzing of the readers: whatever the bytes, only DataError escapes, naming the file.

The suite runs a bounded number of examples per reader; the long run is

    DETECT_FUZZ_EXAMPLES=10000 python -m pytest tests/data/test_fuzz_readers.py -p no:cacheprovider

Valid inputs must be read (grayscale, RGBA, palette and 16-bit images are converted to RGB).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from detect.data.coco import load_coco
from detect.data.images import read_image
from detect.data.voc import load_voc, write_split
from detect.errors import DataError

EXAMPLES = int(os.environ.get("DETECT_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 100,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

NAMES = st.sampled_from(["circle", "square", "", "Circle", "circle ", "ünïcode", "a" * 300])
NUMBERS = st.one_of(
    st.integers(-50, 120).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["", " ", "12.5", "1e3", "-0", "nan", "inf", "x", "10,5", "0x10"]))


def _png_bytes(mode: str, size: tuple[int, int]) -> bytes:
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    array = np.random.default_rng(0).integers(0, 255, (size[1], size[0], channels), dtype=np.uint8)
    image = Image.fromarray(array.squeeze(-1) if channels == 1 else array, mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


VALID_IMAGE = _png_bytes("RGB", (40, 30))


def _check(call) -> object:
    """Run ``call``; a DataError is fine if it names a file; anything else fails the test."""
    try:
        return call()
    except DataError as error:
        message = str(error)
        assert "\n" not in message
        assert error.path and error.path in message, f"error names no file: {message}"
        return None


@st.composite
def voc_objects(draw):
    fields = {tag: draw(NUMBERS) for tag in ("xmin", "ymin", "xmax", "ymax")}
    drop = draw(st.sets(st.sampled_from(["name", "bndbox", "xmin", "ymax", "difficult"]), max_size=2))
    parts = []
    if "name" not in drop:
        parts.append(f"<name>{draw(NAMES)}</name>")
    if "difficult" not in drop:
        parts.append(f"<difficult>{draw(st.sampled_from(['0', '1', 'yes', '', '2']))}</difficult>")
    if "bndbox" not in drop:
        inner = "".join(f"<{k}>{v}</{k}>" for k, v in fields.items() if k not in drop)
        parts.append(f"<bndbox>{inner}</bndbox>")
    return "<object>" + "".join(parts) + "</object>"


@st.composite
def voc_documents(draw):
    """Mostly well-formed VOC XML with hostile values; sometimes cut or garbled bytes."""
    size = (f"<size><width>{draw(NUMBERS)}</width><height>{draw(NUMBERS)}</height><depth>3</depth></size>"
            if draw(st.booleans()) else "")
    objects = "".join(draw(st.lists(voc_objects(), max_size=4)))
    text = f"<annotation><filename>{draw(st.sampled_from(['img.png', 'other.jpg', '', 'img']))}</filename>{size}{objects}</annotation>"
    data = text.encode("utf-8")
    mode = draw(st.sampled_from(["ok", "ok", "ok", "cut", "garble", "latin1", "empty"]))
    if mode == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    elif mode == "garble":
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        data = data[:position] + draw(st.binary(min_size=1, max_size=8)) + data[position + 1:]
    elif mode == "latin1":
        data = text.replace("circle", "c\xefrcle").encode("latin-1")
    elif mode == "empty":
        data = b""
    return data


@FUZZ
@given(document=voc_documents(), image=st.sampled_from(["valid", "missing", "garbage"]))
def test_voc_reader_only_raises_data_error(document, image):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "Annotations").mkdir()
        (root / "JPEGImages").mkdir()
        (root / "Annotations" / "img.xml").write_bytes(document)
        if image == "valid":
            (root / "JPEGImages" / "img.png").write_bytes(VALID_IMAGE)
        elif image == "garbage":
            (root / "JPEGImages" / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 7)
        write_split(root, "trainval", ["img"])
        for names in (["circle", "square"], None):
            for policy in ("error", "skip"):
                dataset = _check(lambda: load_voc(root, "trainval", names, on_invalid=policy))
                if dataset is not None and len(dataset):
                    sample = _check(lambda: dataset[0])
                    if sample is not None:
                        boxes = sample["boxes"]
                        assert np.isfinite(boxes).all()
                        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
                        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 40).all() and (boxes[:, 3] <= 30).all()


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 100), st.floats(allow_nan=True), st.text(max_size=5)),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=5), children, max_size=4)),
    max_leaves=12)


@st.composite
def coco_documents(draw):
    number = st.one_of(st.integers(-10, 60), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3),
                       st.none())
    image = {"id": draw(st.sampled_from([1, 1, 2, "1", None])), "file_name": draw(st.sampled_from(["img.png", "nope.png", 5])),
             "width": draw(st.sampled_from([40, 40, 0, -1, "40", 39])),
             "height": draw(st.sampled_from([30, 30, 0, "30", 31]))}
    annotations = [{"id": draw(st.integers(0, 3)), "image_id": draw(st.sampled_from([1, 2, "1"])),
                    "category_id": draw(st.sampled_from([1, 2, 9, "1"])),
                    "bbox": draw(st.one_of(st.lists(number, min_size=0, max_size=5), JSON_VALUES)),
                    "iscrowd": draw(st.sampled_from([0, 1, True, "0", None]))}
                   for _ in range(draw(st.integers(0, 3)))]
    content = {"images": draw(st.sampled_from([[image], [image, dict(image)], [], "x"])),
               "annotations": annotations,
               "categories": draw(st.sampled_from([[{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}],
                                                  [{"id": 1, "name": "circle"}, {"id": 1, "name": "square"}],
                                                  [{"id": 1}], [], None]))}
    for key in draw(st.sets(st.sampled_from(["images", "annotations", "categories"]), max_size=1)):
        del content[key]
    text = json.dumps(content, allow_nan=True)
    if draw(st.integers(0, 5)) == 0:
        text = text[: draw(st.integers(0, len(text)))]
    if draw(st.integers(0, 8)) == 0:
        text = json.dumps(draw(JSON_VALUES), allow_nan=True)
    return text.encode("utf-8")


@FUZZ
@given(document=coco_documents())
def test_coco_reader_only_raises_data_error(document):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "img.png").write_bytes(VALID_IMAGE)
        path = root / "instances.json"
        path.write_bytes(document)
        for policy in ("error", "skip"):
            dataset = _check(lambda: load_coco(path, None, None, on_invalid=policy))
            if dataset is not None:
                for index in range(len(dataset)):
                    sample = _check(lambda: dataset[index])
                    if sample is not None:
                        assert np.isfinite(sample["boxes"]).all()


@st.composite
def image_files(draw):
    """(bytes, suffix): valid images of many kinds, and broken ones."""
    kind = draw(st.sampled_from(["png", "jpeg", "gray", "rgba", "palette", "png16", "bmp",
                                 "truncated", "random", "empty", "png_as_jpg", "text"]))
    size = (draw(st.integers(1, 48)), draw(st.integers(1, 48)))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    rgb = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    if kind in ("png", "png_as_jpg", "truncated"):
        Image.fromarray(rgb).save(buffer, format="PNG")
    elif kind == "jpeg":
        Image.fromarray(rgb).save(buffer, format="JPEG")
    elif kind == "gray":
        Image.fromarray(rgb[..., 0]).save(buffer, format="PNG")
    elif kind == "rgba":
        Image.fromarray(np.dstack([rgb, rgb[..., :1]]), "RGBA").save(buffer, format="PNG")
    elif kind == "palette":
        Image.fromarray(rgb).convert("P").save(buffer, format="PNG")
    elif kind == "png16":
        Image.fromarray(rng.integers(0, 65535, (size[1], size[0]), dtype=np.uint16)).save(buffer, format="PNG")
    elif kind == "bmp":
        Image.fromarray(rgb).save(buffer, format="BMP")
    data = buffer.getvalue()
    if kind == "truncated":
        data = data[: draw(st.integers(0, max(len(data) - 1, 0)))]
    elif kind == "random":
        data = draw(st.binary(max_size=200))
    elif kind == "empty":
        data = b""
    elif kind == "text":
        data = "not an image ∞".encode("utf-8")
    suffix = ".jpg" if kind in ("png_as_jpg", "jpeg") else draw(st.sampled_from([".png", ".jpg", ".bmp", ""]))
    valid = kind in ("png", "jpeg", "gray", "rgba", "palette", "png16", "bmp", "png_as_jpg")
    return data, suffix, valid, size


@FUZZ
@given(case=image_files(), name=st.sampled_from(["img", "ïmage ü", "日本", "a b"]))
def test_image_reader_converts_valid_images_and_rejects_the_rest(case, name):
    data, suffix, valid, (width, height) = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}{suffix}"
        path.write_bytes(data)
        image = _check(lambda: read_image(path))
        if valid:
            assert image is not None, "a valid image was rejected"
            assert image.dtype == np.uint8 and image.shape == (height, width, 3)
