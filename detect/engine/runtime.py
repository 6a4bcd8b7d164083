"""Devices, seeds and random-number-generator state (saved in checkpoints for exact resumes)."""

from __future__ import annotations

import random

import numpy as np
import torch

from detect.errors import ConfigError


def select_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; otherwise the named device (checked to exist)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device is {name!r} but no CUDA device is available; use auto or cpu")
    return device


def autocast_dtype(device: torch.device, cuda: bool = True, cpu: bool = False) -> torch.dtype | None:
    """The mixed-precision dtype for training on ``device``, or None for float32 throughout.

    ``cuda`` (``train.amp``): float16 on CUDA, with a gradient scaler. ``cpu`` (``train.cpu_amp``):
    bfloat16 on the CPU, but only where the CPU computes it natively (AVX512-BF16 or AMX); elsewhere
    it is emulated and slower than float32, so training stays float32. On the 2-core reference
    machine (AVX512-BF16) it makes a Faster R-CNN step on the small backbone ~1.3x faster late in
    training and ~1.5x early. Weights, gradients, losses and box arithmetic stay float32.
    """
    if device.type == "cuda":
        return torch.float16 if cuda else None
    if device.type == "cpu" and cpu and cpu_has_native_bfloat16():
        return torch.bfloat16
    return None


def cpu_has_native_bfloat16() -> bool:
    """True when this CPU has bfloat16 instructions (AVX512-BF16 or AMX)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every global RNG state, for a checkpoint."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured (torch wants its states as CPU byte tensors, however
    the checkpoint was mapped when loaded)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([cuda_state.cpu() for cuda_state in state["cuda"]])
