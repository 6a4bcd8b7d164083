"""Peak memory of inference: what a detector needs to run, with training's state released first."""

from __future__ import annotations

import ctypes
import gc
import os
import sys
import threading

import torch


def release_memory(device: torch.device) -> None:
    """Hand freed memory back before measuring a peak: Python's garbage, glibc's free lists (Linux)
    and PyTorch's CUDA cache, whose peak statistics restart here."""
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):   # not glibc
            pass
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


class PeakMemory:
    """Peak resident set size (bytes) of this process while the context is open (Linux /proc;
    elsewhere the process's lifetime peak from ``resource``), and on CUDA the peak of PyTorch's
    allocations on ``device`` (``gpu_peak``; None on the CPU)."""

    def __init__(self, device: torch.device | None = None):
        self.device = device
        self.gpu_peak: int | None = None

    def __enter__(self) -> "PeakMemory":
        self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if self.device is not None and self.device.type == "cuda":
            self.gpu_peak = torch.cuda.max_memory_allocated(self.device)

    @staticmethod
    def _rss() -> int:
        try:
            with open("/proc/self/statm") as handle:
                return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            import resource
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return peak if sys.platform == "darwin" else peak * 1024   # bytes on macOS, KiB elsewhere
