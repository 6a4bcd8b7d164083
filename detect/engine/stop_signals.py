"""SIGINT/SIGTERM during training: a flag checked between iterations, so that ``last.pt`` is saved
at an iteration boundary instead of the process dying mid-step."""

from __future__ import annotations

import contextlib
import logging
import signal

logger = logging.getLogger(__name__)


def ignore_stop_signals(worker_id: int) -> None:
    """Loader workers leave SIGINT/SIGTERM to the training process, which saves ``last.pt`` at the
    next iteration (torchrun and a terminal send the signal to the whole process group)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class StopSignal:
    """Turns SIGINT/SIGTERM into a flag checked between iterations (a second signal aborts)."""

    def __init__(self):
        self.received: str | None = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name
        logger.warning("%s received: saving last.pt at the end of this iteration (again to abort)", self.received)

    def __enter__(self):
        with contextlib.suppress(ValueError):  # not in the main thread: no handlers
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
