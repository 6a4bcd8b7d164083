"""Reading images for detection: one decoder, one set of checks, one error type.

Every image that enters detect passes through :func:`read_image`, which returns an RGB
``uint8`` array of shape ``[H, W, 3]``. Grayscale, palette, RGBA/LA, CMYK and 16-bit images are
converted; anything that is not a decodable image raises :class:`~detect.errors.DataError`
naming the file. EXIF orientation is deliberately *not* applied: annotations refer to the
stored pixel grid, as in PASCAL VOC and COCO.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from detect.errors import DataError

#: Largest accepted image, in pixels (width × height). Bigger files are almost always corrupt
#: headers or decompression bombs; raise it with ``detect.data.images.MAX_PIXELS = ...``.
MAX_PIXELS = 10_000 * 10_000

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def _open(path: str | os.PathLike) -> Image.Image:
    if not os.path.exists(path):
        raise DataError("image file not found; check the path (in a dataset: the image folder "
                        "and the file name in the annotation)", path)
    if os.path.isdir(path):
        raise DataError("expected an image file but found a directory", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
    except (UnidentifiedImageError, Image.DecompressionBombWarning,
            Image.DecompressionBombError, SyntaxError, ValueError) as error:
        raise DataError(f"not a readable image ({type(error).__name__}); replace or remove the "
                        "file", path) from None
    except OSError as error:
        raise DataError(f"cannot read image ({error.strerror or error}); check the file", path) from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise DataError(f"image has no pixels ({width}x{height}); replace or remove the file", path)
    if width * height > MAX_PIXELS:
        raise DataError(f"image is {width}x{height}, larger than the {MAX_PIXELS} pixel limit; "
                        "downscale it or raise detect.data.images.MAX_PIXELS", path)
    return image


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """Return ``(width, height)`` from the image header, without decoding the pixels.

    Raises:
        DataError: missing file, directory, not an image, empty or oversized image.
    """
    with _open(path) as image:
        return image.size


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    """Convert any PIL mode to an RGB uint8 array ``[H, W, 3]``."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # High-bit-depth grayscale: PIL's convert("RGB") would clip at 255, so rescale instead.
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") else max(float(values.max()), 1.0)
        gray = np.clip(values / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        span = max(float(values.max() - values.min()), 1e-12)
        gray = ((values - values.min()) / span * 255.0 + 0.5).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8).copy()


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file into an RGB ``uint8`` array of shape ``[H, W, 3]``.

    Raises:
        DataError: the file is missing, not an image, truncated or otherwise undecodable.
    """
    image = _open(path)
    try:
        with image:
            image.load()
            array = _to_rgb_array(image)
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError, TypeError, IndexError, EOFError,
            Image.DecompressionBombError, MemoryError) as error:
        raise DataError(f"image data is corrupt or truncated ({error}); re-export or remove the "
                        "file", path) from None
    if array.ndim != 3 or array.shape[2] != 3 or array.size == 0:
        raise DataError(f"decoded to an unexpected shape {array.shape}; re-export the image", path)
    return array
