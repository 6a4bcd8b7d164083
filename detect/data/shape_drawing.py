"""Drawing one image of the synthetic "shapes" dataset (see :mod:`detect.data.synthetic`).

What makes it a detection problem rather than a toy:

- the class is the *shape* only: colours (solid, two-colour gradient, outlined) are drawn
  independently of the class, every shape is stretched (aspect ratio 1/1.6 .. 1.6) and rotated,
  and shape details (star depth, cross arm width, ring thickness) vary within a class;
- by default, object sizes are log-uniform between 4 % and 60 % of the image side, 1 to 8 objects
  per image, and about 3 % of images contain none (negatives);
- objects are painted in order, so later objects occlude earlier ones, and may cross the image
  border (truncated);
- backgrounds are a gradient with colour noise and soft blobs, a finer noise texture and crisp
  distractor strokes (lines, curves, open arcs) that are not objects; blur and sensor noise last.

Annotation rules (pixels are "visible" when painted by the object and not covered later):

- a box is the tight box of the object's visible pixels: columns ``cmin..cmax`` give
  ``x1 = cmin, x2 = cmax + 1`` (continuous pixels, origin at the top-left corner);
- ``difficult`` when the box's shorter side is under ``difficult_min_side`` pixels or less than
  ``difficult_visible_fraction`` of the object's full (unclipped, unoccluded) area is visible;
- an object is never painted when it would leave itself or an earlier object with less than
  ``drop_visible_fraction`` of its area (or fewer than ``drop_min_pixels`` pixels) visible: its
  pose is drawn again, and after ``placement_attempts`` failures the object is left out (about
  2 % of objects with the default settings). So every painted object is annotated; no unlabelled shape hides in the clutter to teach detectors that
  real objects are background.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from detect.data.synthetic import SyntheticConfig

#: Foreground classes in label order.
SHAPE_CLASSES: tuple[str, ...] = ("circle", "triangle", "square", "star", "cross", "hexagon", "ring", "heart")

# fillPoly/polylines/ellipse fixed-point precision: coordinates are scaled by 2**_SHIFT.
_SHIFT = 4


@dataclass
class SyntheticImage:
    """One generated image and its ground truth.

    Attributes:
        image (uint8[H, W, 3]): RGB pixels.
        boxes (float32[N, 4]): x1, y1, x2, y2 in continuous pixels, origin top-left; the tight box
            of the object's visible pixels.
        labels (int64[N]): indices into :data:`SHAPE_CLASSES`.
        difficult (bool[N]): tiny or mostly hidden (see the module docstring).
        truncated (bool[N]): part of the object lies outside the image.
        masks (bool[N, H, W]): the object's visible pixels.
    """

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    truncated: np.ndarray
    masks: np.ndarray

    @property
    def names(self) -> list[str]:
        """Class names of the objects, in order."""
        return [SHAPE_CLASSES[i] for i in self.labels]


# --- shapes ---------------------------------------------------------------------------------

def _regular_polygon(sides: int, start: float = math.pi / 2) -> np.ndarray:
    angles = start + np.arange(sides) * 2 * math.pi / sides
    return np.stack([np.cos(angles), -np.sin(angles)], axis=1)


def _unit_contours(label: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Contours (float[K, 2], x right, y down) of class ``label`` scaled to extent [-1, 1].

    The first contour is the outline; further contours are holes. Shape parameters (star depth,
    cross arm width, ring thickness) vary within the class.
    """
    name = SHAPE_CLASSES[label]
    if name == "circle":
        contours = [_regular_polygon(64)]
    elif name == "triangle":
        contours = [_regular_polygon(3)]
    elif name == "square":
        contours = [_regular_polygon(4, math.pi / 4)]
    elif name == "hexagon":
        contours = [_regular_polygon(6)]
    elif name == "star":
        radii = np.tile([1.0, rng.uniform(0.38, 0.55)], 5)
        contours = [_regular_polygon(10) * radii[:, None]]
    elif name == "cross":
        w = rng.uniform(0.22, 0.38)
        contours = [np.array([[-w, -1], [w, -1], [w, -w], [1, -w], [1, w], [w, w], [w, 1],
                              [-w, 1], [-w, w], [-1, w], [-1, -w], [-w, -w]])]
    elif name == "ring":
        contours = [_regular_polygon(64), _regular_polygon(64) * rng.uniform(0.45, 0.7)]
    else:  # heart: the classic parametric curve, point down
        t = np.linspace(0, 2 * math.pi, 72, endpoint=False)
        contours = [np.stack([16 * np.sin(t) ** 3,
                              -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))], axis=1)]
    points = np.concatenate(contours)
    low, high = points.min(0), points.max(0)
    center, half_extent = (low + high) / 2, (high - low).max() / 2
    return [(c - center) / half_extent for c in contours]


@dataclass
class _Shape:
    """A posed shape rasterised into its own patch, unclipped: the patch starts at pixel (x0, y0)."""

    x0: int
    y0: int
    fill: np.ndarray      # bool[h, w], interior
    outline: np.ndarray   # bool[h, w], outline stroke (all False when not outlined)

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.fill | self.outline))


def _pose_shape(label: int, rng: np.random.Generator, config: SyntheticConfig) -> _Shape:
    """Draw size, aspect ratio, rotation, position and outline of one object and rasterise it."""
    side = config.image_size
    diameter = side * math.exp(rng.uniform(math.log(config.min_size), math.log(config.max_size)))
    aspect = math.exp(rng.uniform(-1, 1) * math.log(config.max_aspect))
    angle = rng.uniform(0, 2 * math.pi)
    margin = config.truncation_margin * diameter
    center = rng.uniform(-margin, side + margin, size=2)
    scale = np.array([math.sqrt(aspect), 1 / math.sqrt(aspect)]) * diameter / 2
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    # -0.5: cv2 puts pixel centres at integers, the continuous convention at half-integers.
    contours = [(c * scale) @ rotation.T + center - 0.5 for c in _unit_contours(label, rng)]
    outline_width = int(rng.integers(1, 4)) if rng.random() < 0.3 and diameter > 16 else 0
    pad = outline_width + 1
    points = np.concatenate(contours)
    x0, y0 = np.floor(points.min(0)).astype(int) - pad
    x1, y1 = np.ceil(points.max(0)).astype(int) + pad
    fixed = [np.round((c - (x0, y0)) * (1 << _SHIFT)).astype(np.int32) for c in contours]
    fill = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
    cv2.fillPoly(fill, fixed, 1, cv2.LINE_8, _SHIFT)
    outline = np.zeros_like(fill)
    if outline_width:
        cv2.polylines(outline, fixed, True, 1, outline_width, cv2.LINE_8, _SHIFT)
    return _Shape(int(x0), int(y0), fill.astype(bool), outline.astype(bool))


def _clip(shape: _Shape, side: int) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
    """Image and patch slices of the part of ``shape`` inside a ``side x side`` image."""
    h, w = shape.fill.shape
    ix0, iy0 = max(shape.x0, 0), max(shape.y0, 0)
    ix1, iy1 = min(shape.x0 + w, side), min(shape.y0 + h, side)
    if ix1 <= ix0 or iy1 <= iy0:
        return None
    image_slices = (slice(iy0, iy1), slice(ix0, ix1))
    patch_slices = (slice(iy0 - shape.y0, iy1 - shape.y0), slice(ix0 - shape.x0, ix1 - shape.x0))
    return image_slices, patch_slices


def _image_mask(shape: _Shape, side: int) -> np.ndarray:
    """bool[side, side]: the shape's pixels inside the image."""
    mask = np.zeros((side, side), bool)
    clipped = _clip(shape, side)
    if clipped is not None:
        image_slices, patch_slices = clipped
        mask[image_slices] = (shape.fill | shape.outline)[patch_slices]
    return mask


def _keeps_enough(visible: np.ndarray, area: int, config: SyntheticConfig) -> bool:
    count = np.count_nonzero(visible)
    return count >= config.drop_min_pixels and count >= config.drop_visible_fraction * area


# --- appearance -----------------------------------------------------------------------------

def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, size=3).astype(np.float32)


def _linear_gradient(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """float32[h, w, 3]: a two-colour gradient in a random direction."""
    angle = rng.uniform(0, 2 * math.pi)
    t = np.add.outer(np.arange(height, dtype=np.float32) * math.sin(angle),
                     np.arange(width, dtype=np.float32) * math.cos(angle))
    t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    first, second = _random_colour(rng), _random_colour(rng)
    return first + t[..., None] * (second - first)


def _paint_shape(canvas: np.ndarray, shape: _Shape, rng: np.random.Generator) -> None:
    """Paint ``shape`` onto ``canvas`` (float32 [H, W, 3]) in colours unrelated to its class.

    The interior is a solid colour or (35 %) a two-colour gradient; the outline, if any, has its
    own colour.
    """
    height, width = shape.fill.shape
    colours = (_linear_gradient(rng, height, width) if rng.random() < 0.35
               else np.broadcast_to(_random_colour(rng), (height, width, 3)))
    if shape.outline.any():
        colours = np.where(shape.outline[..., None], _random_colour(rng), colours)
    clipped = _clip(shape, canvas.shape[0])
    if clipped is not None:
        image_slices, patch_slices = clipped
        mask = (shape.fill | shape.outline)[patch_slices]
        canvas[image_slices][mask] = colours[patch_slices][mask]


def _value_noise(rng: np.random.Generator, side: int, cells: int, amplitude: float) -> np.ndarray:
    grid = rng.normal(0, amplitude, size=(cells, cells, 3)).astype(np.float32)
    return cv2.resize(grid, (side, side), interpolation=cv2.INTER_CUBIC)


def _draw_distractors(canvas: np.ndarray, rng: np.random.Generator, count: int) -> None:
    """Crisp strokes that are not objects: straight lines, smooth curves and open arcs."""
    side = canvas.shape[0]
    for _ in range(count):
        colour = tuple(float(c) for c in _random_colour(rng))
        thickness = int(rng.integers(1, 4))
        kind = rng.integers(3)
        if kind == 0:
            p, q = rng.integers(-side // 4, side * 5 // 4, size=(2, 2))
            cv2.line(canvas, tuple(int(v) for v in p), tuple(int(v) for v in q), colour, thickness, cv2.LINE_AA)
        elif kind == 1:  # quadratic Bezier curve through three random points
            control = rng.uniform(-0.1, 1.1, size=(3, 2)) * side
            t = np.linspace(0, 1, 32)[:, None]
            curve = (1 - t) ** 2 * control[0] + 2 * t * (1 - t) * control[1] + t ** 2 * control[2]
            cv2.polylines(canvas, [np.round(curve).astype(np.int32)], False, colour, thickness, cv2.LINE_AA)
        else:  # open arcs only (at most 240 degrees), so no stroke closes into a ring
            center = tuple(int(v) for v in rng.integers(0, side, size=2))
            axes = tuple(int(v) for v in rng.integers(max(side // 16, 4), side // 2, size=2))
            start = float(rng.uniform(0, 360))
            cv2.ellipse(canvas, center, axes, float(rng.uniform(0, 180)), start,
                        start + float(rng.uniform(30, 240)), colour, thickness, cv2.LINE_AA)


def _background(rng: np.random.Generator, config: SyntheticConfig) -> np.ndarray:
    """float32[H, W, 3]: gradient, colour noise, soft blobs, texture and distractor strokes.

    The blobs are blurred with sigma 5-10 % of the side, so their edges are far softer than an
    object's: a crisp ellipse in the background would be an unlabelled "circle". This smooth
    layer is drawn at 1/8 resolution and upsampled, which is much faster than blurring at full size.
    """
    side = config.image_size
    low = max(side // 8, 8)
    canvas = _linear_gradient(rng, low, low) + _value_noise(rng, low, 4, rng.uniform(5, 40))
    for _ in range(rng.integers(0, 7)):
        center = np.round(rng.uniform(0, low, size=2) * (1 << _SHIFT)).astype(int)
        axes = np.round(rng.uniform(low / 32, low / 4, size=2) * (1 << _SHIFT)).astype(int)
        cv2.ellipse(canvas, tuple(center), tuple(axes), float(rng.uniform(0, 180)), 0, 360,
                    tuple(float(c) for c in _random_colour(rng)), -1, cv2.LINE_AA, _SHIFT)
    canvas = cv2.GaussianBlur(canvas, (0, 0), rng.uniform(0.05, 0.1) * low)
    canvas = cv2.resize(canvas, (side, side), interpolation=cv2.INTER_CUBIC)
    canvas += _value_noise(rng, side, 16, rng.uniform(0, 20))
    _draw_distractors(canvas, rng, int(rng.integers(0, config.max_distractors + 1)))
    return canvas


def _finish(canvas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Camera effects: a slight blur on half of the images, then luminance noise (std 2-10).

    The noise is uniform rather than Gaussian: six times cheaper to draw, and no detector can
    tell at this level.
    """
    if rng.random() < 0.5:
        canvas = cv2.GaussianBlur(canvas, (0, 0), rng.uniform(0.4, 0.9))
    noise = rng.random((*canvas.shape[:2], 1), dtype=np.float32) - 0.5
    canvas = canvas + noise * (math.sqrt(12) * rng.uniform(2, 10)) + 0.5
    np.clip(canvas, 0, 255, out=canvas)
    return canvas.astype(np.uint8)


# --- one image ------------------------------------------------------------------------------

def generate_image(rng: np.random.Generator, config: SyntheticConfig) -> SyntheticImage:
    """Draw one image and its ground truth (see the module docstring for the annotation rules).

    Args:
        rng: the image's random generator; the result is a pure function of its state and ``config``.
        config: a :class:`~detect.data.synthetic.SyntheticConfig` (``image_size`` and the
            object, difficulty and clutter parameters; the split sizes are not used).
    """
    side = config.image_size
    canvas = _background(rng, config)
    num_objects = 0 if rng.random() < config.negative_fraction else \
        int(rng.integers(config.min_objects, config.max_objects + 1))
    labels, areas, visible, truncated = [], [], [], []
    for label in rng.integers(0, len(SHAPE_CLASSES), size=num_objects):
        for _ in range(config.placement_attempts):
            shape = _pose_shape(int(label), rng, config)
            mask = _image_mask(shape, side)
            occluded = [v & ~mask for v in visible]
            if _keeps_enough(mask, shape.area, config) and all(
                    _keeps_enough(v, a, config) for v, a in zip(occluded, areas)):
                break
        else:
            continue  # no acceptable pose: leave the object out rather than paint it unlabelled
        _paint_shape(canvas, shape, rng)
        labels.append(int(label))
        areas.append(shape.area)
        truncated.append(bool(np.count_nonzero(mask) < shape.area))
        visible = occluded + [mask]
    masks = np.array(visible, bool).reshape(-1, side, side)
    boxes = np.array([_tight_box(m) for m in masks], np.float32).reshape(-1, 4)
    visible_fraction = masks.sum((1, 2)) / np.array(areas, np.float64)
    difficult = ((np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) < config.difficult_min_side)
                 | (visible_fraction < config.difficult_visible_fraction))
    return SyntheticImage(image=_finish(canvas, rng), boxes=boxes, labels=np.array(labels, np.int64),
                          difficult=difficult, truncated=np.array(truncated, bool), masks=masks)


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Continuous box ``(cmin, rmin, cmax + 1, rmax + 1)`` around the True pixels of ``mask``."""
    columns, rows = np.flatnonzero(mask.any(0)), np.flatnonzero(mask.any(1))
    return int(columns[0]), int(rows[0]), int(columns[-1]) + 1, int(rows[-1]) + 1
