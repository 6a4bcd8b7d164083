"""Drawing detections onto images (OpenCV, no display needed)."""

from __future__ import annotations

import colorsys
from typing import Sequence

import cv2
import numpy as np


def class_colour(label: int) -> tuple[int, int, int]:
    """A distinct, stable RGB colour per class index (golden-ratio hue steps)."""
    hue = (label * 0.618033988749895) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(red * 255), int(green * 255), int(blue * 255)


def draw_detections(image: np.ndarray, boxes: np.ndarray, labels: Sequence[int], scores: Sequence[float] | None,
                    class_names: Sequence[str]) -> np.ndarray:
    """Return a copy of ``image`` (RGB uint8 ``[H, W, 3]``) with boxes, class names and scores drawn.

    Args:
        boxes (float[N, 4]): x1, y1, x2, y2 in the image's continuous pixels.
        labels: class indices into ``class_names``. scores: confidences (None to omit them).
    """
    canvas = np.ascontiguousarray(image.copy())
    height, width = canvas.shape[:2]
    thickness = max(1, round(max(height, width) / 400))
    font_scale = max(0.35, max(height, width) / 1200)
    for index, (box, label) in enumerate(zip(np.asarray(boxes).reshape(-1, 4), labels)):
        colour = class_colour(int(label))
        x1, y1 = int(np.floor(box[0])), int(np.floor(box[1]))
        # continuous x2 covers pixels up to x2 - 1
        x2, y2 = max(x1, int(np.ceil(box[2])) - 1), max(y1, int(np.ceil(box[3])) - 1)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness, cv2.LINE_AA)
        text = class_names[int(label)] if scores is None else f"{class_names[int(label)]} {float(scores[index]):.2f}"
        (text_width, text_height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        top = y1 - text_height - baseline - 2 if y1 - text_height - baseline - 2 >= 0 else y1
        cv2.rectangle(canvas, (x1, top), (x1 + text_width + 2, top + text_height + baseline + 2), colour, -1)
        cv2.putText(canvas, text, (x1 + 1, top + text_height + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return canvas
