"""Time the VOC evaluator on a large synthetic set.

Default: 5,000 images x 20 classes, 3-5 ground-truth objects per image, 100 detections per image
(500,000 detections; about a third are jittered copies of ground truth, the rest random).
Prints the median of ``--runs`` evaluations for each VOC metric. Target: both metrics < 5 s total.

    python benchmarks/eval_speed.py [--images 5000] [--classes 20] [--detections 100] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from detect.evaluation.voc import VOC_METRICS, evaluate_voc

IMAGE_SIZE = 500.0


def random_boxes(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` random boxes x1, y1, x2, y2 (continuous pixels) inside an IMAGE_SIZE square."""
    x1y1 = rng.uniform(0, IMAGE_SIZE * 0.8, (count, 2))
    size = rng.uniform(10, IMAGE_SIZE * 0.4, (count, 2))
    return np.concatenate([x1y1, np.minimum(x1y1 + size, IMAGE_SIZE)], axis=1)


def synthetic_set(num_images: int, num_classes: int, detections_per_image: int, seed: int = 0):
    """Random ground truth and detections in the evaluators' input format."""
    rng = np.random.default_rng(seed)
    ground_truth, detections = {}, {}
    for index in range(num_images):
        image_id = f"{index:06d}"
        num_objects = int(rng.integers(3, 6))
        gt_boxes = random_boxes(rng, num_objects)
        gt_labels = rng.integers(0, num_classes, num_objects)
        ground_truth[image_id] = {"boxes": gt_boxes.astype(np.float32), "labels": gt_labels,
                                  "difficult": rng.random(num_objects) < 0.1}
        copies = rng.integers(0, num_objects, detections_per_image // 3)
        jitter = rng.normal(0, 8, (copies.size, 4))
        boxes = np.concatenate([gt_boxes[copies] + jitter,
                                random_boxes(rng, detections_per_image - copies.size)])
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        labels = np.concatenate([gt_labels[copies],
                                 rng.integers(0, num_classes, detections_per_image - copies.size)])
        detections[image_id] = {"boxes": boxes, "scores": rng.random(detections_per_image),
                                "labels": labels}
    return ground_truth, detections


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--detections", type=int, default=100, help="detections per image")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ground_truth, detections = synthetic_set(args.images, args.classes, args.detections, args.seed)
    class_names = [f"class{index}" for index in range(args.classes)]
    total_detections = sum(len(entry["scores"]) for entry in detections.values())
    print(f"{args.images} images, {args.classes} classes, {total_detections} detections, "
          f"median of {args.runs} runs")
    total = 0.0
    for metric in VOC_METRICS:
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            result = evaluate_voc(ground_truth, detections, class_names, metric=metric)
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        total += median
        print(f"{metric:>6}: {median:.3f} s   (mAP {result.map:.4f}; runs: "
              f"{', '.join(f'{t:.3f}' for t in times)})")
    print(f" total: {total:.3f} s   (target < 5 s)")


if __name__ == "__main__":
    main()
