"""Train a detector.

    python tools/train.py                                   # Faster R-CNN (MobileNetV2) on the built-in shapes
    python tools/train.py --config configs/<name>.yaml [key.sub=value ...]
    python tools/train.py --config ... --resume             # continue from <output_dir>/last.pt
    python tools/train.py --config ... --overwrite          # start afresh where an earlier run is
    python tools/train.py --config ... --weights other.pt   # fine-tune (other classes are fine)
    torchrun --nproc_per_node 2 tools/train.py --config ... # several processes (DDP; see README)
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from detect import distributed
from detect.cli import add_common_arguments, run, setup_logging
from detect.config import DEFAULT_CONFIG_PATH, dump_config, load_config
from detect.engine.checkpoint import earlier_run, remove_earlier_run
from detect.errors import CheckpointError, ConfigError

logger = logging.getLogger("train")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH, help="YAML config (default: %(default)s)")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides, e.g. train.lr=0.01")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--resume", nargs="?", const="last", default=None, metavar="CHECKPOINT",
                       help="continue an interrupted run (default: <output_dir>/last.pt)")
    start.add_argument("--overwrite", action="store_true",
                       help="start afresh in a train.output_dir that holds an earlier run (its checkpoints, summary "
                            "and TensorBoard events are deleted first); without it such a folder is refused")
    parser.add_argument("--weights", type=Path, help="initialise from a checkpoint; tensors that do not fit are skipped")
    parser.add_argument("--max-iterations", type=int, help="stop after this many iterations in total")
    parser.add_argument("--on-invalid", choices=("error", "skip"),
                        help="bad annotations/images: stop with an error (default) or skip them and report a count "
                             "(same as data.on_invalid=...)")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(args.debug, args.quiet)

    if args.resume is not None and "=" in args.resume and not Path(args.resume).exists():
        # `--resume key=value ...`: argparse took the first override for the optional checkpoint path.
        args.overrides.insert(0, args.resume)
        args.resume = "last"
    overrides = list(args.overrides) + ([f"data.on_invalid={args.on_invalid}"] if args.on_invalid else [])
    config = load_config(args.config, overrides)
    if args.config.resolve() == DEFAULT_CONFIG_PATH.resolve():
        _check_default_weights(config.model.backbone.weights)
    earlier = [] if args.resume is not None else earlier_run(Path(config.train.output_dir), args.overwrite,
                                                             "continue it with --resume, ")
    ctx = distributed.init_from_environment(config.train.device)
    if not ctx.is_main:  # one voice: rank 0 logs and shows progress
        setup_logging(args.debug, quiet=True)
        args.quiet = True
    if earlier and ctx.is_main:   # --overwrite: nothing of the old run may be taken for the new one's
        remove_earlier_run(Path(config.train.output_dir), earlier)
    distributed.barrier()
    logger.info("effective config (%s):\n%s", args.config, dump_config(config))
    if ctx.enabled:
        logger.info("distributed: %d processes, global batch %d (%s per process)", ctx.world_size,
                    config.train.batch_size, " / ".join(str(len(distributed.share(list(range(config.train.batch_size)),
                                                                             r, ctx.world_size)))
                                                         for r in range(ctx.world_size)))
    if config.model.name == "rcnn":
        return _train_rcnn(config, args)
    from detect.engine.trainer import Trainer

    trainer = Trainer(config, progress=not args.quiet)
    logger.info("%s: %d training / %d test images, %d classes, device %s", config.name, len(trainer.train_set),
                len(trainer.test_set), len(trainer.class_names), trainer.device)
    if args.weights is not None:
        trainer.load_weights(args.weights)
    resume = None
    if args.resume is not None:
        resume = Path(config.train.output_dir) / "last.pt" if args.resume == "last" else Path(args.resume)
    summary = trainer.fit(resume=resume, max_iterations=args.max_iterations)
    if not ctx.is_main:
        return 0
    print(f"test mAP@0.5 (VOC07): {summary['map']:.4f} after {summary['iterations']} iterations "
          f"in {summary['train_seconds'] / 60:.1f} min")
    print(f"checkpoints: {summary['last']} (last), {summary['best']} (best)")
    return 0


def _check_default_weights(weights: str | None) -> None:
    """The default config fine-tunes ../shared's MobileNetV2: before any work, name the from-scratch
    config if that file is missing (build_backbone would only say the file is missing)."""
    if weights not in (None, "imagenet") and not Path(weights).is_file():
        raise CheckpointError("backbone weights file not found; the default config fine-tunes the ImageNet MobileNetV2 "
                              "(mobilenet_v2_imagenet.pth): copy it here, or train the small backbone from scratch: "
                              "python tools/train.py --config configs/faster_rcnn_shapes.yaml", weights)


def _train_rcnn(config, args) -> int:
    """R-CNN trains in stages (fine-tuning, features, SVMs, regressors), not by SGD alone."""
    from detect.engine.rcnn import train_rcnn

    if args.weights is not None:
        raise ConfigError("--weights is not supported for R-CNN; set model.backbone.weights instead")
    summary = train_rcnn(config, resume=args.resume is not None, max_iterations=args.max_iterations,
                         progress=not args.quiet)
    if not distributed.context().is_main:
        return 0
    if summary["map"] is None:
        print(f"stage 1 stopped after {summary['iterations']} iterations; continue with --resume ({summary['last']})")
        return 0
    print(f"test mAP@0.5 (VOC07): {summary['map']:.4f}; all stages in {summary['train_seconds'] / 60:.1f} min")
    print(f"checkpoint: {summary['best']}")
    return 0


if __name__ == "__main__":
    exit_code = run(main)
    distributed.shutdown()
    sys.exit(exit_code)
