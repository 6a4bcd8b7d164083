"""Training logs: CSV rows, TensorBoard scalars and a loss-curve PNG, all under the run folder."""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from pathlib import Path

import numpy as np

from detect.io import atomic_save, atomic_write_text

logger = logging.getLogger(__name__)


class TrainingLog:
    """Append-only record of losses and metrics.

    Files: ``log.csv`` (iteration, epoch, lr, each loss, total), ``metrics.csv`` (epoch, mAP…),
    TensorBoard events in ``tensorboard/``, and ``loss_curve.png``.

    Args:
        directory: the run's output folder.
        resume_iteration: on resume, rows logged after this iteration (work lost to the
            interruption) are dropped so the curves have no duplicates.
        tensorboard: also write TensorBoard events.
        enabled: write anything at all (False on the ranks > 0 of a multi-process run).
    """

    def __init__(self, directory: str | os.PathLike, resume_iteration: int | None = None, tensorboard: bool = True,
                 enabled: bool = True):
        self.enabled = enabled
        self.directory = Path(directory)
        self.loss_path = self.directory / "log.csv"
        self.metrics_path = self.directory / "metrics.csv"
        self.rows: list[dict] = self._read(self.loss_path, resume_iteration, "iteration")
        self.metric_rows: list[dict] = self._read(self.metrics_path, resume_iteration, "iteration")
        self.writer = None
        if tensorboard and enabled:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(self.directory / "tensorboard"), purge_step=resume_iteration)

    @staticmethod
    def _read(path: Path, resume_iteration: int | None, key: str) -> list[dict]:
        if resume_iteration is None or not path.is_file():
            return []
        with open(path, newline="", encoding="utf-8") as handle:
            return [row for row in csv.DictReader(handle) if int(row[key]) <= resume_iteration]

    @staticmethod
    def _write(path: Path, rows: list[dict]) -> None:
        if not rows:
            return
        fields = list(dict.fromkeys(key for row in rows for key in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(path, buffer.getvalue())

    def log_losses(self, iteration: int, epoch: int, lr: float, losses: dict[str, float]) -> None:
        row = {"iteration": iteration, "epoch": epoch, "lr": f"{lr:.6g}"}
        row.update({name: f"{value:.6f}" for name, value in losses.items()})
        row["total"] = f"{sum(losses.values()):.6f}"
        self.rows.append(row)
        if self.writer is not None:
            for name, value in losses.items():
                self.writer.add_scalar(f"loss/{name}", value, iteration)
            self.writer.add_scalar("lr", lr, iteration)

    def log_metrics(self, iteration: int, epoch: int, metrics: dict[str, float]) -> None:
        self.metric_rows.append({"iteration": iteration, "epoch": epoch,
                                 **{k: f"{v:.6f}" for k, v in metrics.items()}})
        if self.writer is not None:
            for name, value in metrics.items():
                self.writer.add_scalar(f"eval/{name}", value, iteration)

    def flush(self) -> None:
        """Rewrite the CSV files (atomically) and the loss-curve PNG."""
        if not self.enabled:
            return
        self._write(self.loss_path, self.rows)
        self._write(self.metrics_path, self.metric_rows)
        if self.writer is not None:
            self.writer.flush()
        if self.rows:
            plot_loss_curve(self.rows, self.metric_rows, self.directory / "loss_curve.png")

    def close(self) -> None:
        self.flush()
        if self.writer is not None:
            self.writer.close()


def plot_loss_curve(rows: list[dict], metric_rows: list[dict], path: str | os.PathLike) -> None:
    """Loss terms (log scale) against iteration, with test mAP on a second axis when available."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.5))
    FigureCanvasAgg(figure)
    axis = figure.add_subplot(1, 1, 1)
    iterations = np.array([int(r["iteration"]) for r in rows])
    names = [k for k in rows[0] if k not in ("iteration", "epoch", "lr")]
    for name in names:
        values = np.array([float(r.get(name) or math.nan) for r in rows])
        if np.isfinite(values).any() and (values[np.isfinite(values)] > 0).any():
            axis.plot(iterations, values, label=name, linewidth=2.0 if name == "total" else 1.0)
    axis.set_yscale("log")
    axis.set_xlabel("iteration")
    axis.set_ylabel("loss")
    axis.grid(True, alpha=0.3)
    if metric_rows and "map" in metric_rows[0]:
        second = axis.twinx()
        second.plot([int(r["iteration"]) for r in metric_rows], [float(r["map"]) for r in metric_rows],
                    "k--o", label="test mAP")
        second.set_ylabel("test mAP")
        second.set_ylim(0, 1)
        second.legend(loc="upper right")
    axis.legend(loc="upper center", ncol=min(len(names), 5), fontsize=8)
    figure.tight_layout()
    atomic_save(path, lambda handle: figure.savefig(handle, format="png", dpi=100))
