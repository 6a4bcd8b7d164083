"""Detect objects in images with a trained detector.

    python tools/infer.py image.jpg [more.jpg | folder ...] [--checkpoint runs/x/best.pt]
                          [--score-thr 0.5] [--out outputs/infer]

Writes each image with its detections drawn to --out, prints one line per image, and writes
all detections to <out>/detections.json (the format tools/eval.py reads; image ids are file
stems). Without --checkpoint it uses the default config's best checkpoint. Exits 1 if some
files could not be read (the others are still processed), 2 on a usage/config/checkpoint error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from detect.cli import add_common_arguments, run, setup_logging
from detect.config import DEFAULT_CONFIG_PATH, load_config
from detect.errors import CheckpointError, DataError



def default_checkpoint() -> Path:
    output_dir = Path(load_config(DEFAULT_CONFIG_PATH).train.output_dir)
    for name in ("best.pt", "last.pt"):
        if (output_dir / name).is_file():
            return output_dir / name
    raise CheckpointError("no trained model yet; run `python tools/train.py` first or pass --checkpoint",
                          output_dir / "best.pt")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", help="image files and/or folders")
    parser.add_argument("--checkpoint", type=Path, help="checkpoint (default: the default config's best.pt)")
    parser.add_argument("--score-thr", type=float, default=0.5, help="draw/print detections scoring at least this")
    parser.add_argument("--out", type=Path, default=Path("outputs/infer"), help="output folder (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(args.debug, args.quiet)

    from detect.inference import Predictor, check_outputs, collect_images, run_inference

    images = collect_images(args.images)
    if not images:
        raise DataError("no images found (extensions: jpg, jpeg, png, bmp, tif, webp)", args.images[0])
    check_outputs(images, Path(args.out))   # before loading the model
    predictor = Predictor(args.checkpoint or default_checkpoint(), args.device)
    summary = run_inference(predictor, images, args.out, args.score_thr, report=print)
    print(f"{len(summary.processed)} image(s) processed, {len(summary.failed)} failed; "
          f"detections: {summary.detections_path}")
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(run(main))
