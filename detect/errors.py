"""The project's own exception types.

Every failure caused by the user's input (data, configuration, checkpoints, output paths) is
raised as a :class:`DetectError` subclass whose message is one line that names the offending
file (and object) and says what to do. Command-line tools turn these into exit code 2 and that
single line; anything else escaping is a bug in detect.
"""

from __future__ import annotations

import os


class DetectError(Exception):
    """Base class of every error detect raises on bad user input.

    Args:
        message: what is wrong and what to do about it (one line).
        path: the file or directory concerned, if any; it is prefixed to the message.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        if path is None:
            message = _raised_in_loader_worker(message)
        self.path = None if path is None else os.fspath(path)
        self.reason = message
        text = message if self.path is None else f"{self.path}: {message}"
        super().__init__(" ".join(text.split()))  # guarantee one line


class DataError(DetectError):
    """A dataset file (annotation, image, detections) is missing, malformed or inconsistent."""


class ConfigError(DetectError):
    """A configuration file or override is invalid."""


class CheckpointError(DetectError):
    """A checkpoint is missing, unreadable or incompatible."""


class OutputError(DetectError):
    """An output location cannot be written."""


def _raised_in_loader_worker(message: str) -> str:
    """The one line a DataLoader worker raised, if ``message`` is how torch re-raises it.

    torch.utils.data re-raises a worker's exception in the main process as
    ``type(error)("Caught DataError in DataLoader worker process 0.\nOriginal Traceback …\n
    detect.errors.DataError: <the line>\n")``; without this the user would get the worker's
    traceback folded into one very long line.
    """
    if not (message.startswith("Caught ") and "DataLoader worker" in message and "Traceback" in message):
        return message
    name, separator, line = message.rstrip().splitlines()[-1].partition(": ")
    return line if separator and name.endswith("Error") else message
