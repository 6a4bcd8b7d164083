"""Precision/recall curves of a VOC evaluation, drawn into one PNG.

Drawn with :class:`matplotlib.figure.Figure` on an explicit Agg canvas, never through pyplot, so
importing or calling this module changes no global matplotlib state (backend, open figures).
"""

from __future__ import annotations

import io
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from detect.evaluation.voc import VOCResult
from detect.io import atomic_write_bytes


def plot_precision_recall(result: VOCResult, path: str | os.PathLike, title: str | None = None,
                          dpi: int = 120) -> None:
    """Write one PNG with the precision/recall curve of every class of ``result``, atomically.

    Each curve is the raw precision against recall after each detection in descending score
    order (the points AP is computed from); the legend gives each class's AP. Classes without
    non-difficult ground truth (AP NaN) have no curve and are listed as "no ground truth".

    Raises:
        OutputError: ``path`` cannot be written.
    """
    figure = Figure(figsize=(8, 6), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for name in result.class_names:
        ap = result.ap[name]
        if np.isnan(ap):
            axes.plot([], [], " ", label=f"{name} (no ground truth)")
            continue
        axes.plot(result.recall[name], result.precision[name], linewidth=1.2, label=f"{name} (AP {ap:.3f})")
    axes.set_xlim(0.0, 1.0)
    axes.set_ylim(0.0, 1.02)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.grid(True, alpha=0.3)
    axes.set_title(title or f"mAP {result.map:.4f} ({result.metric}, IoU > {result.iou_threshold:g})")
    axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small",
                ncol=2 if len(result.class_names) > 25 else 1)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())
