"""Our Faster R-CNN against torchvision's ``FasterRCNN`` built from the same config, in one run.

    python benchmarks/compare_torchvision.py [--config configs/faster_rcnn_shapes.yaml] [key=value ...]
                                             [--out runs/compare_torchvision] [--rounds 3]

Both detectors get the same backbone (and weights), input size, anchors, sampling, thresholds,
data, augmentation, seed and schedule (see detect/models/torchvision_reference.py for the few
implementation differences that remain). Each is trained with the shared engine and evaluated
on the test split (VOC07 mAP@0.5, final weights); then, on the same inputs, training-step time
(median over 20 steps of batch ``train.batch_size``) and inference time per image (median over
30 test images, batch 1) are measured. The timings alternate between the two detectors for
``--rounds`` rounds, so that a slow spell of a shared machine slows both; each figure is the
median of its rounds' medians. Writes ``results.json`` and ``results.md`` in --out.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
from pathlib import Path
from typing import Sequence

import torch
from torch.utils.data import DataLoader

from detect.benchmark.timing import time_inference, time_training_steps
from detect.cli import run
from detect.config import load_config
from detect.data.transforms import collate
from detect.engine.trainer import Trainer
from detect.io import atomic_write_json, atomic_write_text

DETECTORS = ("faster_rcnn", "torchvision_faster_rcnn")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/faster_rcnn_shapes.yaml"))
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--out", type=Path, default=Path("runs/compare_torchvision"))
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds per detector")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    base = load_config(args.config, args.overrides)
    rows, trainers = {}, {}
    for name in DETECTORS:
        config = copy.deepcopy(base)
        config.model.name = name
        config.train.output_dir = str(args.out / name)
        config.train.eval_every = 0          # one evaluation, of the final weights
        trainer = Trainer(config, progress=True, tensorboard=False)
        summary = trainer.fit()
        trainers[name] = trainer
        rows[name] = {"map": summary["map"], "train_minutes": summary["train_seconds"] / 60,
                      "parameters": sum(p.numel() for p in trainer.model.parameters())}
        print(name, json.dumps(rows[name]), flush=True)
    first = trainers[DETECTORS[0]]
    loader = DataLoader(first.train_set, batch_size=base.train.batch_size, shuffle=False, collate_fn=collate)
    batches = [batch for batch, _ in zip(loader, range(23))]
    timings = {name: {"step_ms": [], "inference_ms": []} for name in DETECTORS}
    for round_index in range(args.rounds):
        for name in DETECTORS if round_index % 2 == 0 else reversed(DETECTORS):
            model = trainers[name].model
            timings[name]["step_ms"].append(time_training_steps(copy.deepcopy(model), batches).median)
            timings[name]["inference_ms"].append(time_inference(model, first.test_set, images=30, warmup=5).median)
        print(f"timing round {round_index + 1}/{args.rounds}:", json.dumps(timings), flush=True)
    for name in DETECTORS:
        for key, values in timings[name].items():
            rows[name][key] = statistics.median(values)
            rows[name][key.replace("_ms", "_rounds_ms")] = values
    ours, theirs = rows["faster_rcnn"], rows["torchvision_faster_rcnn"]
    comparison = {"map_difference": ours["map"] - theirs["map"],
                  "step_time_ratio": ours["step_ms"] / theirs["step_ms"],
                  "inference_time_ratio": ours["inference_ms"] / theirs["inference_ms"]}
    result = {"config": str(args.config), "overrides": args.overrides, "rows": rows, "comparison": comparison,
              "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                          "torch": torch.__version__}}
    atomic_write_json(args.out / "results.json", result)
    lines = ["| detector | VOC07 mAP@0.5 | train (min) | step (ms, median) | inference (ms/img, median) | parameters |",
             "|---|---|---|---|---|---|"]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['map']:.4f} | {row['train_minutes']:.1f} | {row['step_ms']:.0f} | "
                     f"{row['inference_ms']:.1f} | {row['parameters']:,} |")
    lines.append("")
    lines.append(f"ours − torchvision mAP: {comparison['map_difference']:+.4f}; step-time ratio (ours / theirs): "
                 f"{comparison['step_time_ratio']:.2f}; inference-time ratio: {comparison['inference_time_ratio']:.2f} "
                 f"(timings: median of {args.rounds} alternating rounds)")
    atomic_write_text(args.out / "results.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
