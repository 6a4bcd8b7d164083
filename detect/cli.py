"""Shared command-line plumbing for ``tools/*.py``: logging setup and one-line errors.

Every tool's ``main`` runs through :func:`run`: a :class:`~detect.errors.DetectError` (bad
data, config, checkpoint, output path) is printed as one line on stderr and exits with code 2;
``--debug`` shows the full traceback instead. Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from typing import Callable, Sequence

from detect.errors import DetectError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug logs")
    parser.add_argument("--quiet", action="store_true", help="only warnings and errors; no progress bars")


def setup_logging(debug: bool = False, quiet: bool = False) -> None:
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s" if not debug else "%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr, force=True)
    for noisy in ("PIL", "matplotlib", "h5py", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not debug:
        warnings.filterwarnings("ignore", category=UserWarning)


def run(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Call ``main(argv)``, mapping detect's errors to one line and exit code 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        return main(args)
    except DetectError as error:
        if debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
