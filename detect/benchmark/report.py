"""The benchmark's results as people read them: the machine they were measured on, ``results.md``
(the table, per-class APs, the reproduction check) and the speed-against-mAP scatter plot."""

from __future__ import annotations

import math
import os
import platform
import subprocess
from pathlib import Path

import torch

from detect.engine.runtime import cpu_has_native_bfloat16


def machine() -> dict:
    """CPU, threads, GPU, bfloat16 support, torch and Python versions and the git revision."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                  check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.strip()
        revision += " (with uncommitted changes)" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        revision = "unknown"
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            # Whether train.cpu_amp trains under bfloat16 here: it changes both times and mAPs.
            "cpu_bfloat16": cpu_has_native_bfloat16(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch": torch.__version__, "python": platform.python_version(), "git": revision}


def _bfloat16_note(native: bool) -> str:
    return ("native bfloat16 (configs with train.cpu_amp train under it)" if native
            else "no native bfloat16 (CPU training in float32)")


def _fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def markdown(results: dict) -> str:
    """``results.md``: the table of every detector, per-class APs, configs and, with a reference run,
    the reproduction check."""
    rows, info = results["rows"], results["machine"]
    lines = [f"# Benchmark: {results['dataset']}" + (" (--quick: shortened schedules)" if results["quick"] else ""),
             "", f"Command: `{results['command']}`  ",
             f"Machine: {info['cpu']}, {info['cpu_count']} CPUs, {info['torch_threads']} torch threads, "
             f"{_bfloat16_note(info['cpu_bfloat16'])}, "
             f"GPU {info['gpu'] or 'none'}; torch {info['torch']}; git {info['git']}", "",
             "| detector | VOC07 mAP@0.5 | VOC area mAP | COCO AP | COCO AP50 | training | inference ms/img "
             "(p10–p90) | of which backbone | proposals ms/img | parameters | peak memory |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        training = "loaded" if row["train_seconds"] is None else f"{row['train_seconds'] / 60:.1f} min"
        memory = f"{row['peak_memory_mb']:.0f} MB" + (f" (GPU {row['peak_gpu_memory_mb']:.0f} MB)"
                                                     if row.get("peak_gpu_memory_mb") is not None else "")
        proposals = (f"{row['proposals_ms']:.0f} ({row['proposals_p10_ms']:.0f}–{row['proposals_p90_ms']:.0f})"
                     if "proposals_ms" in row else "—")
        lines.append(f"| {row['title']} | {_fmt(row['voc07_map'])} | {_fmt(row['voc_area_map'])} | "
                     f"{_fmt(row['coco_ap'])} | {_fmt(row['coco_ap50'])} | {training} | "
                     f"{row['inference_ms']:.1f} ({row['inference_p10_ms']:.1f}–{row['inference_p90_ms']:.1f}) | "
                     f"{_fmt(row.get('backbone_ms'), 1)} | {proposals} | {row['parameters'] / 1e6:.2f} M | "
                     f"{memory} |")
    timed = sorted({row["timed_images"] for row in rows if "timed_images" in row})
    if timed:
        lines += ["", f"Inference: batch 1, {' / '.join(map(str, timed))} test images timed after "
                      f"{results.get('warmup', 'the')} warm-up ones; proposals excluded (timed alone on the same images)."]
    if results.get("failed"):
        lines += ["", "**Failed:** " + "; ".join(f"{f['title']}: {f['error']}" for f in results["failed"])]
    classes = list(rows[0]["ap"]) if rows else []
    lines += ["", "Per-class AP (VOC07, IoU > 0.5):", "",
              "| class | " + " | ".join(r["title"] for r in rows) + " |", "|---|" + "---|" * len(rows)]
    for name in classes:
        lines.append(f"| {name} | " + " | ".join(_fmt(r["ap"].get(name)) for r in rows) + " |")
    lines += ["", "Configs: " + "; ".join(f"{r['title']}: {r['config_note']}" for r in rows), ""]
    if "reproduction" in results:
        lines += _reproduction_markdown(results)
    return "\n".join(lines)


def _reproduction_markdown(results: dict) -> list[str]:
    reference, tolerance = results["reference"], results["tolerance"]
    precision = ("bfloat16 support not recorded" if reference["cpu_bfloat16"] is None
                 else _bfloat16_note(reference["cpu_bfloat16"]))
    lines = [f"Against the reference run `{reference['path']}` (git {reference['git']}, {reference['date']}, "
             f"{reference['cpu']}, {precision}):", "",
             f"| detector | VOC07 mAP@0.5 | reference | this run − reference | within ±{tolerance:g} | "
             "config that differs (reference → this run) |",
             "|---|---|---|---|---|---|"]
    for check in results["reproduction"]:
        changes = ("not recorded in the reference" if check["config_changes"] is None
                   else "; ".join(f"`{change}`" for change in check["config_changes"]) or "none")
        lines.append(f"| {check['title']} | {_fmt(check['voc07_map'])} | {_fmt(check['reference_map'])} | "
                     f"{check['delta']:+.4f} | {'yes' if check['within'] else '**no**'} | {changes} |")
    return lines + [""]


def scatter(rows: list[dict], path: Path, title: str) -> None:
    """``speed_vs_map.png``: each detector's VOC07 mAP against its inference time per image."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from detect.io import atomic_save

    figure, axes = plt.subplots(figsize=(6, 4.5))
    for row in rows:
        axes.scatter(row["inference_ms"], row["voc07_map"], s=40)
        axes.annotate(row["title"], (row["inference_ms"], row["voc07_map"]), textcoords="offset points",
                      xytext=(5, 5), fontsize=9)
    axes.set_xscale("log")
    axes.set_xlabel("inference ms per image (median, proposals excluded; log scale)")
    axes.set_ylabel("VOC07 mAP@0.5")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    atomic_save(path, lambda handle: figure.savefig(handle, format="png", dpi=120))
    plt.close(figure)
