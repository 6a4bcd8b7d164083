"""Draw a grid of synthetic "shapes" samples with their ground-truth boxes.

    python tools/make_samples_figure.py                       # drawn in memory from --seed
    python tools/make_samples_figure.py --root data/shapes    # read back through the VOC reader

Solid boxes are normal objects, dashed boxes are ``difficult``; the label says the class and
"(t)" when the object is truncated by the image border (in-memory samples only: the VOC reader
does not keep the truncated flag).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the non-interactive backend)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detect.data.synthetic import (SHAPE_CLASSES, SyntheticConfig, generate_image,  # noqa: E402
                                   image_rng)
from detect.data.voc import load_voc  # noqa: E402
from detect.io import atomic_save  # noqa: E402


def in_memory_samples(count: int, seed: int, split: str) -> list[dict]:
    config = SyntheticConfig(seed=seed)
    samples = []
    for index in range(count):
        drawn = generate_image(image_rng(config, split, index), config)
        samples.append({"image": drawn.image, "boxes": drawn.boxes, "labels": drawn.labels,
                        "difficult": drawn.difficult, "truncated": drawn.truncated,
                        "image_id": f"{split} #{index}"})
    return samples


def disk_samples(root: Path, count: int, split: str) -> list[dict]:
    dataset = load_voc(root, split, list(SHAPE_CLASSES))
    return [dataset.load(index) for index in range(min(count, len(dataset)))]


def draw_grid(samples: list[dict], columns: int):
    rows = -(-len(samples) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(2.8 * columns, 2.8 * rows), squeeze=False)
    palette = plt.get_cmap("tab10")
    for axis in axes.flat:
        axis.axis("off")
    for axis, sample in zip(axes.flat, samples):
        axis.imshow(sample["image"], interpolation="nearest")
        truncated = sample.get("truncated", [False] * len(sample["labels"]))
        for box, label, difficult, cut in zip(sample["boxes"], sample["labels"], sample["difficult"], truncated):
            x1, y1, x2, y2 = box
            # imshow puts pixel centres at integers, so continuous coordinates shift by -0.5.
            colour = palette(int(label) % 10)
            axis.add_patch(plt.Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, lw=1.4,
                                         edgecolor=colour, linestyle="--" if difficult else "-"))
            axis.text(x1 - 0.5, y1 - 1.5, SHAPE_CLASSES[label] + (" (t)" if cut else ""), fontsize=6,
                      color="white", bbox={"facecolor": colour, "pad": 0.5, "lw": 0})
        count = len(sample["labels"])
        axis.set_title(f"{sample['image_id']}: {count} object{'' if count == 1 else 's'}", fontsize=8)
    figure.tight_layout()
    return figure


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="read a generated dataset instead of drawing in memory")
    parser.add_argument("--split", default="trainval", choices=("trainval", "test"))
    parser.add_argument("--seed", type=int, default=0, help="seed for in-memory samples")
    parser.add_argument("--count", type=int, default=12)
    parser.add_argument("--columns", type=int, default=4)
    parser.add_argument("--output", type=Path, default=Path("docs/images/shapes_samples.jpg"),
                        help="PNG or JPEG, by suffix (default: %(default)s)")
    args = parser.parse_args()
    samples = (disk_samples(args.root, args.count, args.split) if args.root
               else in_memory_samples(args.count, args.seed, args.split))
    figure = draw_grid(samples, args.columns)
    kind = "jpeg" if args.output.suffix.lower() in (".jpg", ".jpeg") else "png"
    options = {"pil_kwargs": {"quality": 85}} if kind == "jpeg" else {}
    atomic_save(args.output, lambda handle: figure.savefig(handle, format=kind, dpi=100, **options))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
