"""Safe file output: every file detect writes goes through here.

Files are written to a temporary sibling and moved into place with :func:`os.replace`, which is
atomic on POSIX and Windows: a reader sees either the old complete file or the new complete
file, never a partial one, and an error mid-write (disk full, permission denied, interruption)
leaves the previous version untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from detect.errors import OutputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file next to ``path``; on clean exit fsync it and rename it onto ``path``.

    Raises:
        OutputError: the directory cannot be created or written (read-only, disk full, ...).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports modes 'w' and 'wb', not {mode!r}")
    path = Path(path)
    make_output_dir(path.parent)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise OutputError(f"cannot write here ({error.strerror}); choose a writable output "
                          "directory", path) from None
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp_name, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise OutputError(f"writing failed ({error.strerror}); the previous version, if any, is "
                          "untouched — free space or choose another output directory", path) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise


def make_output_dir(path: str | os.PathLike) -> Path:
    """Create the output directory ``path`` (and its parents) or raise a one-line :class:`OutputError`."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create the output directory ({error.strerror}); choose a writable "
                          "location", path) from None
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see module docstring)."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    with atomic_open(path, "w") as handle:
        handle.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Serialise ``obj`` as JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def atomic_save(path: str | os.PathLike, writer: Callable[[IO], None]) -> None:
    """Call ``writer(handle)`` on a binary temporary file and move it onto ``path`` atomically.

    Used for formats with their own writer, e.g. ``atomic_save(p, lambda f: torch.save(obj, f))``.
    """
    with atomic_open(path, "wb") as handle:
        writer(handle)
