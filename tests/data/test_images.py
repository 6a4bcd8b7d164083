"""Image decoding: every valid format becomes RGB uint8; everything else is a DataError."""

import numpy as np
import pytest
from PIL import Image

from detect.data.images import read_image, read_image_size
from detect.errors import DataError


@pytest.mark.parametrize("mode, suffix", [("L", ".png"), ("RGBA", ".png"), ("P", ".png"), ("RGB", ".bmp"),
                                           ("CMYK", ".jpg"), ("LA", ".png")])
def test_modes_are_converted_to_rgb(tmp_path, mode, suffix):
    path = tmp_path / f"x{suffix}"
    Image.new(mode, (7, 5)).save(path)
    image = read_image(path)
    assert image.shape == (5, 7, 3) and image.dtype == np.uint8
    assert read_image_size(path) == (7, 5)


def test_sixteen_bit_png_is_rescaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16)).save(path)
    assert read_image(path)[0, :, 0].tolist() == [0, 128, 255]


def test_png_named_jpg_is_accepted(tmp_path):
    path = tmp_path / "actually_png.jpg"
    Image.new("RGB", (3, 3), (10, 20, 30)).save(path, format="PNG")
    assert read_image(path)[0, 0].tolist() == [10, 20, 30]


@pytest.mark.parametrize("content, message", [(b"", "not a readable image"),
                                               (b"hello world", "not a readable image")])
def test_non_images(tmp_path, content, message):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_image(path)


def test_missing_and_directory(tmp_path):
    with pytest.raises(DataError, match="image file not found"):
        read_image(tmp_path / "nope.jpg")
    with pytest.raises(DataError, match="directory"):
        read_image(tmp_path)
