"""3D-OVS segmentation scores: the reference (sklearn-semantics) protocol and a clean one.

Inputs, for V annotated views of P pixels each and C classes (sorted class order): the ground
truth as multi-label indicators, bool [V, P, C] (a pixel may carry no label or several), and the
prediction as class indices, int [V, P] (the argmax over the full class list; closed set).

**Reference protocol** (:func:`reference_scores`, reference/ovs3d.md section 8), what the
released evaluation computes with sklearn, reproduced here in numpy:

* per view and class, IoU = TP / (TP + FP + FN) over the view's pixels, as
  ``jaccard_score(gt, onehot(pred), average=None)`` on multilabel indicators; a class absent
  from both the ground truth and the prediction of a view scores **0** (zero_division -> 0),
  which penalises views where a class is legitimately absent;
* per view, subset accuracy, as ``accuracy_score(gt, onehot(pred))``: a pixel counts only when
  its whole ground-truth row equals the one-hot prediction, so unlabelled and multi-labelled
  pixels are always wrong;
* mIoU = the flat mean over views x classes; accuracy = the mean over views.

**Clean protocol** (:func:`clean_scores`): per class, TP, FP and FN are accumulated over all
views' pixels before dividing; a class absent from both ground truth and prediction in every
view has no IoU (nan) and is left out of the mean; accuracy is the fraction of correctly
labelled pixels among those with exactly one ground-truth label, pooled over all views.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

REFERENCE_PROTOCOL = 'reference'
CLEAN_PROTOCOL = 'clean'


class MetricsInputError(ValueError):
    """Ground truth or prediction of the wrong shape, dtype or value range."""


@dataclass(frozen=True)
class Ovs3dScores:
    """Scores of one scene under one protocol.

    Attributes:
        per_view_iou: float64 [V, C] IoU per view and class. Reference: absent classes are 0.
            Clean: nan where the class is absent from both ground truth and prediction.
        miou: mean IoU. Reference: flat mean of ``per_view_iou``. Clean: nanmean of
            ``class_iou``.
        accuracy: pixel accuracy. Reference: mean of ``per_view_accuracy``. Clean: pooled over
            all views' single-label pixels.
        per_view_accuracy: float64 [V]. Reference: subset accuracy per view. Clean: accuracy
            over the view's single-label pixels (nan when it has none).
        class_iou: float64 [C]. Reference: mean over views of ``per_view_iou``. Clean: IoU of
            TP, FP, FN summed over views (nan for a class absent everywhere).
        protocol: 'reference' or 'clean'.
    """

    per_view_iou: np.ndarray
    miou: float
    accuracy: float
    per_view_accuracy: np.ndarray
    class_iou: np.ndarray
    protocol: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (nan stays nan; json writes it as NaN)."""
        return {'protocol': self.protocol, 'miou': self.miou, 'accuracy': self.accuracy,
                'class_iou': self.class_iou.tolist(),
                'per_view_iou': self.per_view_iou.tolist(),
                'per_view_accuracy': self.per_view_accuracy.tolist()}


def _check_inputs(gt: np.ndarray, pred: np.ndarray, num_classes: int | None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Validated (gt bool [V,P,C], one-hot prediction bool [V,P,C])."""
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.ndim != 3:
        raise MetricsInputError(f'gt: expected [V, P, C] indicators, found shape {gt.shape}')
    if gt.dtype != np.bool_:
        if not np.isin(gt, (0, 1)).all():
            raise MetricsInputError(f'gt: expected bool or 0/1 values, found dtype {gt.dtype} '
                                    f'with other values')
        gt = gt.astype(bool)
    classes = gt.shape[2]
    if num_classes is not None and num_classes != classes:
        raise MetricsInputError(f'num_classes: expected {classes} (gt.shape[2]), found '
                                f'{num_classes}')
    if pred.shape != gt.shape[:2] or not np.issubdtype(pred.dtype, np.integer):
        raise MetricsInputError(f'pred: expected int [V, P] = {gt.shape[:2]}, found '
                                f'{pred.dtype} {pred.shape}')
    if pred.size and (pred.min() < 0 or pred.max() >= classes):
        raise MetricsInputError(f'pred: expected class indices in [0, {classes}), found '
                                f'[{pred.min()}, {pred.max()}]')
    onehot = np.zeros(gt.shape, dtype=bool)
    np.put_along_axis(onehot, pred[..., None].astype(np.intp), True, axis=2)
    return gt, onehot


def _counts(gt: np.ndarray, onehot: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TP, FP, FN per view and class: int64 [V, C] each."""
    tp = (gt & onehot).sum(axis=1, dtype=np.int64)
    fp = (~gt & onehot).sum(axis=1, dtype=np.int64)
    fn = (gt & ~onehot).sum(axis=1, dtype=np.int64)
    return tp, fp, fn


def _ratio(numerator: np.ndarray, denominator: np.ndarray, empty: float) -> np.ndarray:
    """numerator / denominator as float64, ``empty`` where the denominator is 0."""
    out = np.full(np.shape(numerator), empty, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=np.asarray(denominator) > 0)
    return out


def reference_scores(gt: np.ndarray, pred: np.ndarray,
                     num_classes: int | None = None) -> Ovs3dScores:
    """Scores with the released evaluation's sklearn semantics (see the module docstring).

    Args:
        gt: bool (or 0/1) [V, P, C] ground-truth indicators per view, pixel and class.
        pred: int [V, P] predicted class index per pixel, in [0, C).
        num_classes: C, checked against ``gt`` when given.

    Returns:
        :class:`Ovs3dScores` with protocol 'reference'.
    """
    gt, onehot = _check_inputs(gt, pred, num_classes)
    tp, fp, fn = _counts(gt, onehot)
    per_view_iou = _ratio(tp, tp + fp + fn, 0.0)
    pixels = gt.shape[1]
    exact = (gt == onehot).all(axis=2).sum(axis=1)
    per_view_accuracy = _ratio(exact, np.full_like(exact, pixels), 0.0)
    return Ovs3dScores(per_view_iou=per_view_iou, miou=float(per_view_iou.mean()),
                       accuracy=float(per_view_accuracy.mean()),
                       per_view_accuracy=per_view_accuracy,
                       class_iou=per_view_iou.mean(axis=0), protocol=REFERENCE_PROTOCOL)


def clean_scores(gt: np.ndarray, pred: np.ndarray,
                 num_classes: int | None = None) -> Ovs3dScores:
    """Scores pooled over views, absent classes ignored (see the module docstring).

    Args:
        gt: bool (or 0/1) [V, P, C] ground-truth indicators per view, pixel and class.
        pred: int [V, P] predicted class index per pixel, in [0, C).
        num_classes: C, checked against ``gt`` when given.

    Returns:
        :class:`Ovs3dScores` with protocol 'clean'; ``miou`` is nan when no class occurs at
        all, ``accuracy`` is nan when no pixel has exactly one label.
    """
    gt, onehot = _check_inputs(gt, pred, num_classes)
    tp, fp, fn = _counts(gt, onehot)
    per_view_iou = _ratio(tp, tp + fp + fn, np.nan)
    class_iou = _ratio(tp.sum(axis=0), (tp + fp + fn).sum(axis=0), np.nan)
    single = gt.sum(axis=2) == 1                                      # [V, P]
    correct = (single & np.take_along_axis(gt, pred[..., None].astype(np.intp), axis=2)[..., 0])
    per_view_accuracy = _ratio(correct.sum(axis=1), single.sum(axis=1), np.nan)
    accuracy = _ratio(correct.sum(), single.sum(), np.nan)
    present = ~np.isnan(class_iou)
    miou = float(class_iou[present].mean()) if present.any() else float('nan')
    return Ovs3dScores(per_view_iou=per_view_iou, miou=miou, accuracy=float(accuracy),
                       per_view_accuracy=per_view_accuracy, class_iou=class_iou,
                       protocol=CLEAN_PROTOCOL)
