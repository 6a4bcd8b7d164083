"""R-CNN's per-class linear SVMs with hard-negative mining, and its ridge box regressors.

SVMs (R-CNN §2.3, appendix B; the reference code's ``rcnn_train.m``): for one class,

* positives are the ground-truth boxes of the class; negatives are proposals whose IoU with
  every box of the class is below 0.3 (proposals in between are ignored);
* the model starts at zero, so every negative of the first image is "hard"; images are visited
  once in order; a negative is hard when the current model scores it above −1.0001 (inside the
  margin) and it is not cached yet;
* after every 2000 new hard negatives, the SVM is retrained on the positives and the cache, and
  cached negatives scoring below −1.2 are evicted; a last retrain follows the pass;
* the SVM is liblinear's L2-regularised hinge-loss (L1-loss) SVM, C = 0.001, positive class
  weight 2, bias term 10 (the constant feature liblinear appends), on features scaled to mean
  L2 norm 20.

Box regression (appendix C): for each class, ridge regression (λ = 1000) from features of
proposals with IoU > 0.6 with a box of that class to the box-coding targets ``(dx, dy, dw, dh)``
of that box, whitened (zero mean, unit variance per class).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

logger = logging.getLogger(__name__)


@dataclass
class MiningResult:
    """One class's SVM and how it was mined.

    Attributes:
        weight (float64[D]), bias: the decision function ``w·x + b``.
        retrains: how many times the SVM was trained.
        cache_size: negatives in the cache at the end.
        mined: hard negatives added over the pass.
        history: ``(images seen, cache size after eviction)`` at each retrain.
    """

    weight: np.ndarray
    bias: float
    retrains: int = 0
    cache_size: int = 0
    mined: int = 0
    history: list[tuple[int, int]] = field(default_factory=list)


def train_linear_svm(positives: np.ndarray, negatives: np.ndarray, c: float, positive_weight: float,
                     bias_term: float, tol: float = 0.1) -> tuple[np.ndarray, float]:
    """liblinear L2-regularised L1-loss (hinge) SVM, solved in the dual, as in R-CNN.

    Returns ``(weight float64[D], bias)``; the bias term is liblinear's: a constant feature of value
    ``bias_term`` whose weight is regularised like the others.
    """
    features = np.concatenate([positives, negatives]).astype(np.float64)
    labels = np.concatenate([np.ones(len(positives)), -np.ones(len(negatives))])
    # liblinear's solver 3 with its default stopping tolerance 0.1, as the reference code calls it
    # ("-s 3 -c C -w1 2 -B 10"); a tighter tolerance costs minutes per retrain and changes nothing
    # that mining does not revisit.
    svm = LinearSVC(C=c, loss="hinge", dual=True, class_weight={1: positive_weight, -1: 1.0},
                    intercept_scaling=bias_term, max_iter=1000, tol=tol)
    with warnings.catch_warnings():
        # liblinear stops at max_iter on hard, overlapping early caches; mining retrains anyway.
        warnings.simplefilter("ignore", ConvergenceWarning)
        svm.fit(features, labels)
    return svm.coef_[0].copy(), float(svm.intercept_[0])


def mine_hard_negatives(positives: np.ndarray, negatives_per_image: Iterable[np.ndarray], *, c: float = 1e-3,
                        positive_weight: float = 2.0, bias_term: float = 10.0, hard_threshold: float = -1.0001,
                        evict_threshold: float = -1.2, retrain_every: int = 2000, tol: float = 0.1) -> MiningResult:
    """Train one class's SVM with one pass of hard-negative mining (module docstring).

    Args:
        positives: features of the class's positives (float[P, D], already scaled).
        negatives_per_image: per image, the features of its negatives for this class (float[K_i, D]),
            in a fixed order (the images' order defines the mining).
        tol: liblinear's stopping tolerance (0.1, its default for this solver).
    """
    if len(positives) == 0:
        raise ValueError("no positive examples for this class")
    dim = positives.shape[1]
    weight, bias = np.zeros(dim), 0.0
    cache: dict[tuple[int, int], np.ndarray] = {}
    result = MiningResult(weight, bias)
    new_since_retrain = 0

    def retrain(images_seen: int) -> None:
        nonlocal weight, bias, new_since_retrain
        keys = list(cache)
        negatives = np.stack([cache[k] for k in keys]) if keys else np.zeros((0, dim))
        weight, bias = train_linear_svm(positives, negatives, c, positive_weight, bias_term, tol)
        if keys:
            scores = negatives @ weight + bias
            for key, score in zip(keys, scores):
                if score < evict_threshold:
                    del cache[key]
        result.retrains += 1
        result.history.append((images_seen, len(cache)))
        new_since_retrain = 0

    images_seen = 0
    for image_index, negatives in enumerate(negatives_per_image):
        images_seen = image_index + 1
        if len(negatives) == 0:
            continue
        scores = negatives @ weight + bias
        for row in np.flatnonzero(scores > hard_threshold):
            key = (image_index, int(row))
            if key not in cache:
                cache[key] = negatives[row]
                new_since_retrain += 1
                result.mined += 1
        if new_since_retrain >= retrain_every:
            retrain(images_seen)
    if new_since_retrain > 0 or result.retrains == 0:
        retrain(images_seen)
    result.weight, result.bias, result.cache_size = weight, bias, len(cache)
    return result


def fit_ridge(features: np.ndarray, targets: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge regression from ``features`` (float[N, D]) to whitened ``targets`` (float[N, 4]).

    Returns:
        ``(weight float64[D + 1, 4], mean float64[4], std float64[4])``: predict with
        ``[x, 1] @ weight * std + mean``. The bias (last row) is regularised like the rest, as in
        the reference code.
    """
    mean = targets.mean(axis=0)
    std = targets.std(axis=0)
    std = np.where(std > 1e-8, std, 1.0)
    whitened = (targets - mean) / std
    inputs = np.concatenate([features, np.ones((len(features), 1))], axis=1).astype(np.float64)
    gram = inputs.T @ inputs + lam * np.eye(inputs.shape[1])
    weight = np.linalg.solve(gram, inputs.T @ whitened)
    return weight, mean, std
