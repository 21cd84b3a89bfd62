"""Semantic-segmentation metrics: confusion matrix, per-class IoU, mIoU (numpy only).

Class ids are training ids 0..C-1; ``ignore_index`` (255) in the ground truth removes a point
from every count. A prediction outside 0..C-1 (for example 255 = "no label") counts as a miss
of the ground-truth class: it lands in the extra last column of the (C, C + 1) confusion
matrix, so it lowers recall (IoU) but is never a false positive of any class.

mIoU averages the IoU over the classes PRESENT in the ground truth (support > 0), as the
nuScenes lidarseg evaluator does on a split; absent classes are NaN in the per-class IoU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from cns_ros.vocabulary import IGNORE_INDEX


def confusion_matrix(gt: ArrayLike, pred: ArrayLike, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """int64 (C, C + 1) counts: row = ground-truth class, column = predicted class.

    Args:
        gt: Integer ground truth, any shape; ``ignore_index`` entries are skipped; other values
            must be in [0, C).
        pred: Integer predictions, same shape; values outside [0, C) go to column C.
        num_classes: C.
        ignore_index: Ground-truth label that is not evaluated.
    """
    gt, pred = np.asarray(gt).reshape(-1), np.asarray(pred).reshape(-1)
    if gt.shape != pred.shape:
        raise ValueError(f'gt and pred must have the same size, found {gt.size} and {pred.size}')
    keep = gt != ignore_index
    gt, pred = gt[keep].astype(np.int64), pred[keep].astype(np.int64)
    if gt.size and (gt.min() < 0 or gt.max() >= num_classes):
        raise ValueError(f'gt values must be in [0, {num_classes}) or {ignore_index}')
    pred = np.where((pred >= 0) & (pred < num_classes), pred, num_classes)
    counts = np.bincount(gt * (num_classes + 1) + pred, minlength=num_classes * (num_classes + 1))
    return counts.reshape(num_classes, num_classes + 1)


def iou_per_class(confusion: ArrayLike, nan_if: str = 'no_support') -> np.ndarray:
    """float64 (C,) IoU = TP / (TP + FP + FN) of each class of a (C, C + 1) confusion matrix.

    Predictions outside 0..C-1 (the last column) are misses (FN), never false positives.

    Args:
        confusion: (C, C + 1) counts from :func:`confusion_matrix`.
        nan_if: Which classes are NaN (not scored): ``'no_support'`` (default) those absent
            from the ground truth (the present-class mean of this module); ``'no_union'`` only
            those with TP + FP + FN = 0 (the nuScenes devkit's LidarSegEval: a class predicted
            but absent from the ground truth scores 0).
    """
    if nan_if not in ('no_support', 'no_union'):
        raise ValueError(f"nan_if must be 'no_support' or 'no_union', found {nan_if!r}")
    conf = np.asarray(confusion, dtype=np.float64)
    c = conf.shape[0]
    tp = np.diag(conf[:, :c])
    union = conf.sum(axis=1) + conf[:, :c].sum(axis=0) - tp
    scored = conf.sum(axis=1) > 0 if nan_if == 'no_support' else union > 0
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(scored, tp / union, np.nan)


def mean_iou(confusion: ArrayLike) -> float:
    """Mean IoU over the classes present in the ground truth (NaN if none is)."""
    iou = iou_per_class(confusion)
    present = ~np.isnan(iou)
    return float(iou[present].mean()) if present.any() else float('nan')


def summary(confusion: ArrayLike, class_names: Sequence[str]) -> dict[str, Any]:
    """JSON-ready scores: miou, accuracy, per-class iou/support (None for absent classes)."""
    conf = np.asarray(confusion, dtype=np.int64)
    iou = iou_per_class(conf)
    total = int(conf.sum())
    return {
        'miou': mean_iou(conf),
        'accuracy': float(np.trace(conf[:, :conf.shape[0]]) / total) if total else float('nan'),
        'points': total,
        'classes': {name: {'iou': None if np.isnan(v) else float(v), 'support': int(s)}
                    for name, v, s in zip(class_names, iou, conf.sum(axis=1), strict=True)},
    }


def format_table(scores: dict[str, Any], title: str = 'IoU') -> str:
    """A plain-text table of :func:`summary` output (absent classes shown as '-')."""
    width = max(len(name) for name in scores['classes']) + 2
    lines = [f'{"class":<{width}}{title:>8}{"support":>10}']
    for name, row in scores['classes'].items():
        value = '-' if row['iou'] is None else f'{100 * row["iou"]:.1f}'
        lines.append(f'{name:<{width}}{value:>8}{row["support"]:>10}')
    lines.append(f'{"mIoU":<{width}}{100 * scores["miou"]:>8.1f}{scores["points"]:>10}')
    return '\n'.join(lines)
