"""The mAP benchmark: every detector trained and evaluated on the same data, in one table.

    python tools/benchmark.py                                  # built-in shapes, all detectors
    python tools/benchmark.py --quick                          # shortened schedules, <= 10 min on 2 cores
    python tools/benchmark.py --variant mnv2                   # built-in, *_shapes_mnv2.yaml where they exist
    python tools/benchmark.py --data ../shared/data/raccoon --out runs/benchmark_raccoon
    python tools/benchmark.py --data builtin --detectors faster_rcnn,yolo \\
        --checkpoint faster_rcnn=runs/faster_rcnn_shapes/last.pt

Each detector is trained with ``configs/<detector>_<dataset>.yaml`` (``<dataset>`` is ``shapes``
for the built-in data, else the dataset folder's name; without such a file, the detector's
raccoon recipe — MobileNetV2 ImageNet weights — is used with the data replaced;
``--variant V`` prefers ``configs/<detector>_<dataset>_V.yaml``) unless
``--checkpoint name=path`` gives a trained one (its row then shows the checkpoint's own model
settings, scored on ``--data``). ``torchvision`` is torchvision's own
``FasterRCNN`` built from the Faster R-CNN config: same backbone, weights, input size, anchors,
sampling and schedule. The final weights are evaluated (not the best epoch, which would be chosen
on the test split).

Columns: VOC07 11-point mAP@0.5, VOC area mAP@0.5, COCO AP and AP50 (pycocotools), training
wall-clock (R-CNN: all its stages; Fast R-CNN and R-CNN: selective search on both splits
included when computed by this run), inference per image (batch 1, median and 10th–90th
percentiles over ``--images`` test images after warm-up; proposals excluded and timed
separately), the median time of that spent in the shared backbone (what no head can save: it
bounds how much faster one detector can be than another on the same backbone), parameters, and
peak resident memory of the process during inference, training state released (on CUDA also the
GPU's peak allocation).

Writes in ``--out``: ``results.md`` (tables), ``results.json`` (everything, with the machine,
torch version, git revision and date), ``pr_<detector>.png`` (PR curves per class) and
``speed_vs_map.png``; the detectors train in ``--out/<detector>``. A folder that holds an earlier
benchmark is refused unless ``--overwrite`` (its results and checkpoints are deleted; the
proposal and feature caches, keyed by their settings, are kept). A detector that fails is
reported and the others still run; the exit code is then 1.

``--reference earlier/results.json`` checks that this run reproduces an earlier one: results.md
gains a table of each detector's VOC07 mAP against the earlier run's, the difference, whether it
is within ``--tolerance`` (0.02) and which config keys differ between the two runs (output
folders aside). Training on the CPU with a fixed seed is deterministic, so the same revision on
the same kind of machine gives the same mAPs; a change of code, config or floating-point
arithmetic (e.g. bfloat16 on one machine and float32 on another) moves small test splits by more.

From Python: ``detect.benchmark.run_benchmark(detect.benchmark.BenchmarkOptions(...))``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from detect.benchmark import DETECTORS, BenchmarkOptions, run_benchmark
from detect.benchmark.report import markdown
from detect.benchmark.reproduction import reproduction_summary
from detect.cli import add_common_arguments, run, setup_logging
from detect.errors import ConfigError


def parse_checkpoints(items: Sequence[str]) -> dict[str, str]:
    """``--checkpoint NAME=PATH`` (repeatable) as ``{NAME: PATH}`` (the names are checked with the other options)."""
    checkpoints = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not (sep and name and path):
            raise ConfigError(f"--checkpoint {item!r}: expected NAME=PATH with NAME one of {', '.join(DETECTORS)}")
        checkpoints[name] = path
    return checkpoints


def main(argv: Sequence[str] | None = None) -> int:
    defaults = BenchmarkOptions()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=defaults.data, help="'builtin', a VOC folder or a COCO JSON")
    parser.add_argument("--detectors", default=",".join(defaults.detectors), help="comma-separated subset of %(default)s")
    parser.add_argument("--backbone", help="override every detector's backbone")
    parser.add_argument("--weights", help="override every detector's backbone weights")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                        help="use this trained checkpoint for detector NAME instead of training it")
    parser.add_argument("--quick", action="store_true", help="small built-in dataset and shortened schedules")
    parser.add_argument("--images", type=int, default=defaults.images, help="test images timed (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=defaults.warmup)
    parser.add_argument("--variant", help="prefer configs/<detector>_<dataset>_<VARIANT>.yaml where it exists "
                        "(e.g. mnv2: the built-in configs with ImageNet MobileNetV2)")
    parser.add_argument("--configs", type=Path, default=defaults.configs)
    parser.add_argument("--out", type=Path, help="results folder (default runs/benchmark_<dataset>[_quick])")
    parser.add_argument("--overwrite", action="store_true",
                        help="start afresh in an --out that holds an earlier benchmark (its results and checkpoints "
                             "are deleted; caches are kept); without it such a folder is refused")
    parser.add_argument("--reference", type=Path, metavar="RESULTS_JSON",
                        help="an earlier run's results.json: report whether this run reproduces its mAPs")
    parser.add_argument("--tolerance", type=float, default=defaults.tolerance,
                        help="largest mAP difference from --reference that counts as reproduced (default %(default)s)")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="applied to every detector's config")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(args.debug, args.quiet)
    options = BenchmarkOptions(
        data=args.data, detectors=tuple(n.strip() for n in args.detectors.split(",") if n.strip()), out=args.out,
        checkpoints=parse_checkpoints(args.checkpoint), backbone=args.backbone, weights=args.weights,
        quick=args.quick, variant=args.variant, configs=args.configs, images=args.images, warmup=args.warmup,
        overrides=tuple(args.overrides), overwrite=args.overwrite, reference=args.reference,
        tolerance=args.tolerance, progress=not args.quiet, debug=args.debug)
    command = " ".join(["python", "tools/benchmark.py", *(argv if argv is not None else sys.argv[1:])])
    results = run_benchmark(options, command)
    print(markdown(results))
    print(f"total wall-clock {results['total_seconds'] / 60:.1f} min; results in {options.output_dir()}")
    if options.reference is not None:
        print(reproduction_summary(results["reproduction"], options.reference, options.tolerance))
    if results["failed"]:
        print("failed: " + ", ".join(f["title"] for f in results["failed"]) + " (see results.md)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
