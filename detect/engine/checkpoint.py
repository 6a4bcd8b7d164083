"""Checkpoints: one file with everything needed to resume, evaluate, infer or fine-tune.

Contents: ``model`` (state dict), ``optimizer``, ``scaler``, ``epoch`` and ``batch`` (the next
batch to run), ``iteration``, ``rng`` (every generator's state), ``config`` (as a dict),
``class_names``, ``metrics``, ``best_map`` and the format version. Files are written atomically
(temporary file + rename), so an interruption at any moment leaves the previous complete file.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from detect.config import Config, config_from_dict, config_to_dict
from detect.errors import CheckpointError, ConfigError, OutputError
from detect.io import atomic_write_bytes

logger = logging.getLogger(__name__)

FORMAT = "detect-checkpoint"
VERSION = 1


#: What a finished or interrupted run leaves in its ``train.output_dir`` (R-CNN's fine-tuned stage
#: 1 too); a new run there would replace them.
RUN_CHECKPOINTS = ("last.pt", "best.pt", "finetuned.pt")


def run_checkpoints(output_dir: Path) -> list[str]:
    """Which of :data:`RUN_CHECKPOINTS` an earlier run left in ``output_dir``."""
    return [name for name in RUN_CHECKPOINTS if (Path(output_dir) / name).is_file()]


def earlier_run(output_dir: Path, overwrite: bool, resume_hint: str = "") -> list[str]:
    """The checkpoints an earlier run left in ``output_dir`` (which ``overwrite`` allows deleting
    with :func:`remove_earlier_run`); without ``overwrite`` they are refused.

    Raises:
        OutputError: the folder holds a run and ``overwrite`` is false; ``resume_hint`` (e.g.
            "continue it with --resume, ") is offered when the run left a ``last.pt``.
    """
    found = run_checkpoints(output_dir)
    if not found or overwrite:
        return found
    hint = resume_hint if "last.pt" in found else ""
    raise OutputError(f"holds an earlier run ({', '.join(found)}); {hint}start afresh with --overwrite (its "
                      "checkpoints are deleted), or train elsewhere with train.output_dir=<folder>", output_dir)


def remove_earlier_run(output_dir: Path, checkpoints: list[str]) -> None:
    """Delete what an earlier run left that a new one would not overwrite at once: an interrupted
    new run must not leave the old best.pt or R-CNN's old finetuned.pt beside its own last.pt."""
    output_dir = Path(output_dir)
    for name in [*checkpoints, "summary.json"]:
        (output_dir / name).unlink(missing_ok=True)
    shutil.rmtree(output_dir / "tensorboard", ignore_errors=True)
    logger.warning("--overwrite: deleted the earlier run's %s in %s", ", ".join(checkpoints), output_dir)


def save_checkpoint(path: str | os.PathLike, *, model: nn.Module, config: Config, class_names: list[str],
                    **state: Any) -> None:
    """Atomically write a checkpoint; ``state`` adds optimizer, epoch, metrics… (see module docstring).

    Raises:
        OutputError: the file cannot be written; an earlier checkpoint at ``path`` is untouched.
    """
    payload = {"format": FORMAT, "version": VERSION, "model": model.state_dict(),
               "config": config_to_dict(config), "class_names": list(class_names), **state}
    # Serialised in memory first: torch's zip writer turns a failing write (disk full) into a
    # RuntimeError without the cause, while a plain file write raises the OSError we report.
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getbuffer())


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read and check a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: missing, truncated/corrupt, or not a detect checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("checkpoint not found; train one with `python tools/train.py` or pass "
                              "--checkpoint with an existing file", path)
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError,
            AttributeError, ModuleNotFoundError, OSError) as error:
        raise CheckpointError(f"checkpoint is corrupt or truncated ({type(error).__name__}); use "
                              "another one (runs keep both last.pt and best.pt)", path) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CheckpointError("not a detect checkpoint (for backbone weights use "
                              "model.backbone.weights instead)", path)
    if checkpoint.get("version", 0) > VERSION:
        raise CheckpointError(f"checkpoint format v{checkpoint['version']} is newer than this detect "
                              f"(v{VERSION}); upgrade detect", path)
    return checkpoint


def checkpoint_config(checkpoint: dict, path: str | os.PathLike) -> Config:
    """The :class:`Config` stored in a checkpoint."""
    try:
        return config_from_dict(checkpoint["config"], source=os.fspath(path))
    except ConfigError as error:
        raise CheckpointError(f"stored config does not fit this version of detect ({error.reason})", path) from None


def load_detector(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the detector stored in a checkpoint, in eval mode on ``device``.

    Returns:
        ``(model, checkpoint)``; ``checkpoint["class_names"]`` names the labels.
    """
    from detect.backbones import backbones_in
    from detect.models import build_detector

    checkpoint = load_checkpoint(path)
    config = checkpoint_config(checkpoint, path)
    pretrained = config.model.backbone.weights is not None
    config.model.backbone.weights = None  # the checkpoint holds the trained backbone
    model = build_detector(config.model, len(checkpoint["class_names"]))
    if pretrained:  # trained from pretrained weights: BatchNorm frozen and folded, as in training
        for backbone in backbones_in(model):
            backbone.freeze_batchnorm()
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as error:
        raise CheckpointError(f"weights do not fit the stored model ({str(error).splitlines()[0]})", path) from None
    return model.to(device).eval(), checkpoint


def load_matching_weights(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Load every tensor whose name and shape match ``model``; report the rest (fine-tuning).

    Loading a checkpoint trained with another class count keeps the backbone and the RPN and
    skips the class-specific layers, which stay freshly initialised.

    Returns:
        ``(loaded, skipped)`` tensor names; skipped ones are listed with the reason in the log.
    """
    own = model.state_dict()
    loaded, skipped = [], []
    for name, tensor in state_dict.items():
        if name in own and own[name].shape == tensor.shape:
            own[name] = tensor
            loaded.append(name)
        else:
            reason = "not in this model" if name not in own else \
                f"shape {tuple(tensor.shape)} != {tuple(own[name].shape)}"
            skipped.append(f"{name} ({reason})")
    model.load_state_dict(own)
    return loaded, skipped
