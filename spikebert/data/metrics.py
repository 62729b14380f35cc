"""Task metrics, named as GLUE names them: accuracy, f1, matthews_correlation, pearson, spearmanr.

Plain numpy (no scikit-learn or scipy dependency):

* F1 of class 1: ``2 tp / (2 tp + fp + fn)``;
* Matthews correlation (multi-class, from the confusion matrix ``C``, ``t = C.sum(1)``,
  ``p = C.sum(0)``, ``c = trace(C)``, ``s = C.sum()``):
  ``(c s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t))``;
* Spearman's rho = Pearson's r of the average ranks (ties share the mean of their ranks).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .registry import TaskSpec, get_task

__all__ = ["compute_metrics"]


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks; a tie group occupying ranks ``end-count+1 .. end`` gets their mean."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2)[inverse]


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def compute_metrics(task_spec: TaskSpec | str, predictions: Sequence | np.ndarray,
                    labels: Sequence | np.ndarray) -> dict[str, float]:
    """Compute the task's metrics (``task_spec.metrics``) from predictions or logits.

    2-D ``predictions`` are logits (argmax for classification, squeezed for regression).
    """
    spec = get_task(task_spec)
    pred = np.asarray(predictions)
    y = np.asarray(labels)
    if len(pred) != len(y):
        raise ValueError(f"{len(pred)} predictions for {len(y)} labels")
    if spec.is_regression:
        pred = pred.reshape(len(y)).astype(np.float64)
        y = y.astype(np.float64)
    elif pred.ndim == 2:
        pred = pred.argmax(-1)
    out: dict[str, float] = {}
    for m in spec.metrics:
        if m == "accuracy":
            out[m] = float((pred == y).mean())
        elif m == "f1":
            tp = int(((pred == 1) & (y == 1)).sum())
            fp = int(((pred == 1) & (y != 1)).sum())
            fn = int(((pred != 1) & (y == 1)).sum())
            out[m] = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        elif m == "matthews_correlation":
            k = max(spec.num_labels, int(max(pred.max(), y.max())) + 1)
            cm = np.zeros((k, k), dtype=np.float64)
            np.add.at(cm, (y.astype(int), pred.astype(int)), 1)
            t, p, c, s = cm.sum(1), cm.sum(0), np.trace(cm), cm.sum()
            denom = np.sqrt((s * s - p @ p) * (s * s - t @ t))
            out[m] = float((c * s - t @ p) / denom) if denom > 0 else 0.0
        elif m == "pearson":
            out[m] = _pearson(pred, y)
        elif m == "spearmanr":
            out[m] = _pearson(_average_ranks(pred), _average_ranks(y))
        else:  # the registry and this function are kept in step by tests
            raise ValueError(f"unknown metric {m!r}")
    return out
