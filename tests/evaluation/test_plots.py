"""PR-curve plot: a real PNG, written atomically, without touching pyplot."""

import subprocess
import sys

import numpy as np

from detect.evaluation.plots import plot_precision_recall
from detect.evaluation.voc import evaluate_voc

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_plot_writes_png(tmp_path):
    truth = {"a": {"boxes": np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32),
                   "labels": np.array([0, 0]), "difficult": np.array([False, False])}}
    found = {"a": {"boxes": np.array([[0, 0, 10, 10], [50, 50, 60, 60]]), "scores": np.array([0.9, 0.8]),
                   "labels": np.array([0, 1])}}
    result = evaluate_voc(truth, found, ["cat", "dog"])  # dog: no ground truth, AP NaN
    path = tmp_path / "plots" / "pr.png"
    plot_precision_recall(result, path)
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 5000
    assert [p.name for p in path.parent.iterdir()] == ["pr.png"]


def test_import_leaves_pyplot_alone():
    code = ("import sys, detect.evaluation.plots; "
            "assert 'matplotlib.pyplot' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
