"""The built-in synthetic "shapes" dataset: generated on the machine, so nothing is downloaded.

Eight shape classes (:data:`SHAPE_CLASSES`) on cluttered backgrounds, with occlusion,
truncation, tiny and difficult objects and a few negatives; how one image is drawn and
annotated is described in :mod:`detect.data.shape_drawing`. The dataset is written in PASCAL
VOC layout, readable by :func:`detect.data.voc.load_voc`::

    root/JPEGImages/<id>.jpg              256 x 256 RGB by default, JPEG quality 95
    root/Annotations/<id>.xml             boxes as VOC 1-based inclusive pixels
    root/ImageSets/Main/{trainval,test}.txt
    root/SOURCE.txt                       written first: says what made the folder
    root/dataset.json                     written last: generator version and config

Ids are ``trainval_000000``, ``test_000000``, ... Image ``i`` of a split is a pure function of
``np.random.default_rng([seed, split_code, i])`` (:func:`image_rng`), so the dataset does not
depend on the order or the number of processes that draw it, and growing a split keeps the
images it already had.

Typical use::

    root = ensure_dataset("data/shapes")      # instant when already generated with this config
    train = load_voc(root, "trainval", list(SHAPE_CLASSES))

or from the shell: ``python -m detect.data.synthetic --root data/shapes``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import multiprocessing
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from tqdm import tqdm

from detect.data.shape_drawing import SHAPE_CLASSES, SyntheticImage, generate_image
from detect.data.voc import load_voc, write_split, write_voc_xml
from detect.errors import ConfigError, OutputError
from detect.io import atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = ["SHAPE_CLASSES", "SPLIT_CODES", "DEFAULT_ROOT", "SyntheticConfig", "SyntheticImage",
           "generate_image", "image_rng", "image_id", "split_sizes", "is_complete",
           "generate_dataset", "ensure_dataset", "main"]

logger = logging.getLogger(__name__)

#: Splits written, with the code that seeds their images' random generators.
SPLIT_CODES = {"trainval": 0, "test": 1}

#: Where ``python -m detect.data.synthetic`` writes by default (relative to the working directory).
DEFAULT_ROOT = Path("data") / "shapes"

#: Bump when the drawn images change for the same config, so existing datasets are regenerated.
GENERATOR_VERSION = 1

MARKER_FILE = "dataset.json"
SOURCE_FILE = "SOURCE.txt"
_GENERATOR = "detect.data.synthetic"
_VOC_FOLDERS = ("JPEGImages", "Annotations", "ImageSets")


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that determines the generated dataset (stored in ``dataset.json``).

    Sizes are fractions of the image side unless they say pixels.

    Attributes:
        image_size: width and height of every image, in pixels.
        num_trainval, num_test: images per split.
        seed: base seed; image ``i`` of a split uses ``default_rng([seed, split_code, i])``.
        min_objects, max_objects: objects per non-negative image, drawn uniformly (inclusive).
        negative_fraction: probability that an image has no objects at all.
        min_size, max_size: range of an object's unrotated extent (log-uniform).
        max_aspect: an object's aspect ratio is log-uniform in ``[1 / max_aspect, max_aspect]``.
        truncation_margin: an object's centre may lie this fraction of its size outside the image.
        difficult_min_side: pixels; boxes with a shorter side are marked difficult.
        difficult_visible_fraction: objects with less of their area visible are marked difficult.
        drop_visible_fraction, drop_min_pixels: an object may never be left with less visible
            (see :mod:`detect.data.shape_drawing`).
        placement_attempts: poses tried before an object is left out of its image.
        max_distractors: background strokes per image, drawn uniformly from ``0..max_distractors``.
        jpeg_quality: JPEG quality of the written images (0..100).
    """

    image_size: int = 256
    num_trainval: int = 2000
    num_test: int = 500
    seed: int = 0
    min_objects: int = 1
    max_objects: int = 8
    negative_fraction: float = 0.03
    min_size: float = 0.04
    max_size: float = 0.6
    max_aspect: float = 1.6
    truncation_margin: float = 0.1
    # "Tiny": under 12 px (4.7 % of 256) a shape's class is guesswork (a crop classifier gets
    # 66 % right under 12 px, ~90 % above); "mostly hidden": less than half visible.
    difficult_min_side: float = 12.0
    difficult_visible_fraction: float = 0.5
    drop_visible_fraction: float = 0.15
    drop_min_pixels: int = 12
    placement_attempts: int = 20
    max_distractors: int = 8
    jpeg_quality: int = 95

    def __post_init__(self):
        checks = [
            (self.image_size >= 16, f"image_size must be at least 16, got {self.image_size}"),
            (self.num_trainval >= 0 and self.num_test >= 0,
             f"split sizes must be >= 0, got {self.num_trainval} and {self.num_test}"),
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
            (1 <= self.min_objects <= self.max_objects,
             f"need 1 <= min_objects <= max_objects, got {self.min_objects} and {self.max_objects}"),
            (0.0 <= self.negative_fraction <= 1.0,
             f"negative_fraction must be in [0, 1], got {self.negative_fraction}"),
            (0.0 < self.min_size <= self.max_size <= 1.0,
             f"need 0 < min_size <= max_size <= 1, got {self.min_size} and {self.max_size}"),
            (self.max_aspect >= 1.0, f"max_aspect must be >= 1, got {self.max_aspect}"),
            (0.0 <= self.truncation_margin <= 0.5,
             f"truncation_margin must be in [0, 0.5], got {self.truncation_margin}"),
            (0.0 <= self.drop_visible_fraction <= self.difficult_visible_fraction <= 1.0,
             "need 0 <= drop_visible_fraction <= difficult_visible_fraction <= 1, got "
             f"{self.drop_visible_fraction} and {self.difficult_visible_fraction}"),
            (self.drop_min_pixels >= 1, f"drop_min_pixels must be >= 1, got {self.drop_min_pixels}"),
            (self.placement_attempts >= 1, f"placement_attempts must be >= 1, got {self.placement_attempts}"),
            (self.max_distractors >= 0, f"max_distractors must be >= 0, got {self.max_distractors}"),
            (0 <= self.jpeg_quality <= 100, f"jpeg_quality must be in [0, 100], got {self.jpeg_quality}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"invalid synthetic dataset setting: {message}")


# --- the dataset on disk --------------------------------------------------------------------

def image_id(split: str, index: int) -> str:
    """The id (file stem) of image ``index`` of ``split``, e.g. ``trainval_000042``."""
    return f"{split}_{index:06d}"


def split_sizes(config: SyntheticConfig) -> dict[str, int]:
    """Number of images per split, in :data:`SPLIT_CODES` order."""
    return {"trainval": config.num_trainval, "test": config.num_test}


def image_rng(config: SyntheticConfig, split: str, index: int) -> np.random.Generator:
    """The random generator of image ``index`` of ``split``: ``default_rng([seed, split_code, index])``."""
    return np.random.default_rng([config.seed, SPLIT_CODES[split], index])


def _description(config: SyntheticConfig) -> dict:
    """What ``dataset.json`` holds; a dataset is up to date when this compares equal."""
    return {"generator": _GENERATOR, "version": GENERATOR_VERSION,
            "class_names": list(SHAPE_CLASSES), "config": dataclasses.asdict(config)}


def _source_text(root: Path, config: SyntheticConfig) -> str:
    return (f"Synthetic shapes dataset generated by {_GENERATOR} (version {GENERATOR_VERSION}).\n"
            "Everything in this folder is generated and may be deleted. Regenerate it with\n"
            f"  python -m {_GENERATOR} --root {root} --trainval {config.num_trainval} "
            f"--test {config.num_test} --seed {config.seed} --image-size {config.image_size}\n"
            f"{MARKER_FILE} holds the exact settings; it is written last, so a folder without it "
            "is incomplete.\n")


def _write_image(root: Path, config: SyntheticConfig, split: str, index: int) -> int:
    """Generate image ``index`` of ``split`` and write its JPEG and XML; return its object count."""
    sample = generate_image(image_rng(config, split, index), config)
    stem = image_id(split, index)
    _, encoded = cv2.imencode(".jpg", cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR),
                              [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality])
    atomic_write_bytes(root / "JPEGImages" / f"{stem}.jpg", encoded.tobytes())
    write_voc_xml(root / "Annotations" / f"{stem}.xml", f"{stem}.jpg", config.image_size,
                  config.image_size, sample.names, sample.boxes, sample.difficult, sample.truncated)
    return len(sample.labels)


def _write_task(task: tuple[str, SyntheticConfig, str, int]) -> int:
    root, config, split, index = task
    return _write_image(Path(root), config, split, index)


def _is_ours(root: Path) -> bool:
    source = root / SOURCE_FILE
    try:
        return source.read_text(encoding="utf-8").startswith(f"Synthetic shapes dataset generated by {_GENERATOR}")
    except (OSError, UnicodeDecodeError):
        return False


def _clear(root: Path) -> None:
    """Make ``root`` ready for a fresh dataset, removing only what an earlier generation wrote.

    Raises:
        OutputError: ``root`` holds files that this generator did not write.
    """
    if not root.exists():
        return
    if not root.is_dir() or (any(root.iterdir()) and not _is_ours(root)):
        raise OutputError(f"exists and was not written by {_GENERATOR} (no {SOURCE_FILE}); "
                          "choose another root for the synthetic dataset, or empty this folder", root)
    (root / MARKER_FILE).unlink(missing_ok=True)  # first, so an interruption leaves it incomplete
    for folder in _VOC_FOLDERS:
        shutil.rmtree(root / folder, ignore_errors=True)


def is_complete(root: str | os.PathLike, config: SyntheticConfig = SyntheticConfig()) -> bool:
    """True if ``root`` holds the complete dataset that ``config`` describes.

    Checks the marker file (generator version and config), the split files and that every
    listed JPEG and XML file exists; no pixels are read.
    """
    root = Path(root)
    try:
        if json.loads((root / MARKER_FILE).read_text(encoding="utf-8")) != _description(config):
            return False
        for split, size in split_sizes(config).items():
            listed = (root / "ImageSets" / "Main" / f"{split}.txt").read_text(encoding="utf-8").split()
            if listed != [image_id(split, i) for i in range(size)]:
                return False
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    ids = [image_id(split, i) for split, size in split_sizes(config).items() for i in range(size)]
    return all((root / "JPEGImages" / f"{i}.jpg").is_file() and (root / "Annotations" / f"{i}.xml").is_file()
               for i in ids)


def generate_dataset(root: str | os.PathLike = DEFAULT_ROOT, config: SyntheticConfig = SyntheticConfig(),
                     progress: bool = True, workers: int | None = None) -> Path:
    """Write the dataset ``config`` describes into ``root`` (PASCAL VOC layout), replacing any earlier one.

    ``SOURCE.txt`` is written first and ``dataset.json`` last, so an interrupted run is detected
    by :func:`is_complete`. The result does not depend on ``workers``.

    Args:
        root: output folder; must be missing, empty, or an earlier output of this generator.
        config: what to generate.
        progress: show a tqdm progress bar.
        workers: processes drawing images; None uses up to 2 (the CPU count), 1 draws in-process.
            The processes are spawned, so a script calling this with ``workers > 1`` needs the
            usual ``if __name__ == "__main__":`` guard.

    Returns:
        ``root`` as a Path.

    Raises:
        OutputError: ``root`` holds other files, or cannot be written.
    """
    root = Path(root)
    _clear(root)
    atomic_write_text(root / SOURCE_FILE, _source_text(root, config))
    sizes = split_sizes(config)
    tasks = [(str(root), config, split, i) for split, size in sizes.items() for i in range(size)]
    workers = min(os.cpu_count() or 1, 2) if workers is None else workers
    logger.info("generating %d synthetic images into %s (%d worker(s))", len(tasks), root, workers)
    start, num_objects = time.perf_counter(), 0
    with tqdm(total=len(tasks), desc=f"generating {root.name}", unit="img", disable=not progress) as bar:
        if workers <= 1 or len(tasks) < 64:   # a pool costs more than it saves on a few images
            for task in tasks:
                num_objects += _write_task(task)
                bar.update()
        else:
            # spawn, not fork: the caller may hold threads (torch, OpenCV, OpenMP) that fork breaks.
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                for count in pool.imap_unordered(_write_task, tasks, chunksize=16):
                    num_objects += count
                    bar.update()
    for split, size in sizes.items():
        write_split(root, split, [image_id(split, i) for i in range(size)])
    atomic_write_json(root / MARKER_FILE, _description(config))
    logger.info("wrote %d images with %d objects to %s in %.1f s", len(tasks), num_objects, root,
                time.perf_counter() - start)
    return root


def ensure_dataset(root: str | os.PathLike = DEFAULT_ROOT, config: SyntheticConfig = SyntheticConfig(),
                   progress: bool = True, workers: int | None = None) -> Path:
    """Return ``root`` at once if it holds the dataset ``config`` describes, else generate it.

    Regenerates when the stored config or generator version differs or the folder is
    incomplete (see :func:`is_complete`). Arguments as for :func:`generate_dataset`.
    """
    if is_complete(root, config):
        logger.info("synthetic dataset %s is up to date", root)
        return Path(root)
    return generate_dataset(root, config, progress=progress, workers=workers)


# --- command line ---------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    """``python -m detect.data.synthetic``: generate (if needed) and print per-split statistics."""
    parser = argparse.ArgumentParser(prog=f"python -m {_GENERATOR}", description=__doc__.splitlines()[0])
    defaults = SyntheticConfig()
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="output folder (default: %(default)s)")
    parser.add_argument("--trainval", type=int, default=defaults.num_trainval, help="trainval images")
    parser.add_argument("--test", type=int, default=defaults.num_test, help="test images")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="base random seed")
    parser.add_argument("--image-size", type=int, default=defaults.image_size, help="image side in pixels")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: up to 2)")
    parser.add_argument("--force", action="store_true", help="regenerate even if up to date")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = SyntheticConfig(image_size=args.image_size, num_trainval=args.trainval,
                             num_test=args.test, seed=args.seed)
    start = time.perf_counter()
    if args.force:
        generate_dataset(args.root, config, workers=args.workers)
    else:
        ensure_dataset(args.root, config, workers=args.workers)
    print(f"{args.root}: ready in {time.perf_counter() - start:.1f} s")
    for split in SPLIT_CODES:
        print(f"{split}: {json.dumps(load_voc(args.root, split, list(SHAPE_CLASSES)).statistics())}")
    return 0


if __name__ == "__main__":
    from detect.cli import run

    sys.exit(run(main))
