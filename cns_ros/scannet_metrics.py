"""ScanNet v2 20-class semantic evaluation: the official benchmark semantics (numpy only).

Facts (``shared/reference/scannet.md`` §3.2-3.4, pitfalls 9 and 16):

* Labels are **nyu40 ids** (0 = unannotated, 1..40; real files also hold 50 and 149). The
  benchmark scores the 20 ids of :data:`VALID_CLASS_IDS`, in that order.
* 3D (``evaluate_semantic_label.py``): one prediction per vertex of ``_vh_clean_2.ply``. A
  vertex whose ground truth is not one of the 20 is skipped; a prediction that is not one of the
  20 becomes :data:`UNKNOWN_ID` (40), so it is a false negative of the ground-truth class and a
  false positive of no class. The (41, 41) confusion (row = ground truth, column = prediction)
  is summed over all scenes (dataset-level IoU, not a mean of per-scene IoUs).
* IoU(c) = TP / (TP + FP + FN): FN = row c minus TP, FP = column c over the rows of the OTHER
  valid classes only; a denominator of 0 gives NaN.
* 2D (``evalPixelLevelSemanticLabeling.py``): ground truth and prediction are both resized to
  640x480 with NEAREST before counting (never bilinear); same IoU.

Three means of the same per-class IoU (they agree when every class occurs; on a small world
where some classes are absent they differ, so every result carries all three):

* ``official``: mean over the classes whose IoU is not NaN (TP + FP + FN > 0), as the 2D
  script and the benchmark; a class absent from the ground truth but predicted scores 0.
* ``clip2scene``: CLIP2Scene / CNS ``compute_IoU``: a class with union 0 scores 1.0; mean of 20.
* ``openscene``: sum of the IoUs of the classes present in the ground truth, divided by 20
  (absent classes add 0).

Relation to :mod:`cns_ros.metrics` (training ids, (C, C + 1) confusion, last column = "no
prediction"): :func:`train_confusion` folds the (41, 41) matrix into that layout, and then
``metrics.iou_per_class(..., nan_if='no_union')`` equals :func:`official_iou`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from cns_ros.data.scannet_labels import (
    BENCHMARK_NAMES,
    UNKNOWN_ID,
    VALID_CLASS_IDS,
    train_to_nyu40,
)
from cns_ros.fileio import atomic_write_text
from cns_ros.geometry import resize_nearest
from cns_ros.vocabulary import IGNORE_INDEX

#: Side of the official (41, 41) confusion matrix (nyu40 ids 0..40).
NUM_IDS = UNKNOWN_ID + 1
#: The 2D evaluation size, (width, height) pixels.
OFFICIAL_SIZE_2D = (640, 480)
#: The mean-IoU conventions of :class:`ScanNetScores`, in report order.
CONVENTIONS = ('official', 'clip2scene', 'openscene')
#: Prediction values that mean "no label" in :func:`predictions_to_nyu40` (training ignore id
#: and the live node's mono16 "no label").
NO_LABEL_IDS = (IGNORE_INDEX, 65535)

_VALID = np.array(VALID_CLASS_IDS, dtype=np.int64)
_IS_VALID = np.zeros(NUM_IDS, dtype=bool)
_IS_VALID[_VALID] = True


def _int_array(name: str, values: ArrayLike) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype.kind not in 'iu':
        raise ValueError(f'{name}: expected integer nyu40 ids, found dtype {array.dtype}')
    return array.astype(np.int64).reshape(-1)


def _is_valid(ids: np.ndarray) -> np.ndarray:
    """bool mask: which int64 ids are one of the 20 benchmark ids (any value allowed)."""
    inside = (ids >= 0) & (ids < NUM_IDS)
    return inside & _IS_VALID[np.where(inside, ids, 0)]


def official_confusion(gt_nyu40: ArrayLike, pred_nyu40: ArrayLike) -> np.ndarray:
    """The official script's int64 (41, 41) confusion: row = ground truth, column = prediction.

    Args:
        gt_nyu40: Integer nyu40 ground truth, any shape (vertices of one or more scenes, or
            pixels); elements whose id is not one of the 20 valid ids are skipped.
        pred_nyu40: Integer nyu40 predictions, same number of elements; any value that is not
            one of the 20 valid ids (0, 22, 40, 255, -1, ...) is counted in column 40.

    Returns:
        int64 (41, 41); only the 20 valid rows can be non-zero, and only the 20 valid
        columns and column 40.

    Raises:
        ValueError: Non-integer dtype or different element counts.
    """
    gt, pred = _int_array('gt_nyu40', gt_nyu40), _int_array('pred_nyu40', pred_nyu40)
    if gt.size != pred.size:
        raise ValueError(f'official_confusion: gt and pred must have the same number of '
                         f'elements, found {gt.size} and {pred.size}')
    keep = _is_valid(gt)
    gt, pred = gt[keep], pred[keep]
    pred = np.where(_is_valid(pred), pred, UNKNOWN_ID)
    counts = np.bincount(gt * NUM_IDS + pred, minlength=NUM_IDS * NUM_IDS)
    return counts.reshape(NUM_IDS, NUM_IDS).astype(np.int64)


def _check_confusion(confusion: ArrayLike) -> np.ndarray:
    conf = np.asarray(confusion)
    if conf.shape != (NUM_IDS, NUM_IDS):
        raise ValueError(f'expected a ({NUM_IDS}, {NUM_IDS}) nyu40 confusion matrix, found '
                         f'shape {conf.shape}')
    if conf.dtype.kind not in 'iu' or (conf.size and conf.min() < 0):
        raise ValueError('expected non-negative integer counts in the confusion matrix')
    return conf.astype(np.int64)


def official_iou(confusion: ArrayLike) -> np.ndarray:
    """float64 (20,) IoU of the valid classes, benchmark order, NaN where TP + FP + FN = 0.

    FN = row total - TP (column 40 included); FP = column c summed over the rows of the other
    valid classes only, so the rows of ignored ids (if a caller filled them) never count.

    Args:
        confusion: (41, 41) non-negative integer counts (:func:`official_confusion`).
    """
    conf = _check_confusion(confusion)
    rows = conf[_VALID]                     # (20, 41): the valid ground-truth rows
    tp = rows[np.arange(_VALID.size), _VALID]
    fn = rows.sum(axis=1) - tp
    fp = rows[:, _VALID].sum(axis=0) - tp
    denom = tp + fp + fn
    return np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)


def mean_ious(iou: ArrayLike, support: ArrayLike) -> dict[str, float]:
    """The three means of a (20,) official IoU vector (module docstring).

    Args:
        iou: float64 (20,) from :func:`official_iou` (NaN = union 0).
        support: (20,) ground-truth count of each class (0 = absent from the ground truth).

    Returns:
        {'official': NaN-skipping mean (NaN if every class is NaN), 'clip2scene': union-0
        classes count 1.0, mean of 20, 'openscene': sum over present classes / 20}.
    """
    iou, present = np.asarray(iou, dtype=np.float64), np.asarray(support) > 0
    scored = ~np.isnan(iou)
    return {
        'official': float(iou[scored].mean()) if scored.any() else float('nan'),
        'clip2scene': float(np.where(scored, iou, 1.0).mean()),
        'openscene': float(np.where(present & scored, iou, 0.0).sum() / iou.size),
    }


@dataclass(frozen=True, eq=False)
class ScanNetScores:
    """All three mean-IoU conventions of one (41, 41) confusion, side by side.

    Attributes:
        confusion: int64 (41, 41) the counts scored.
        iou: float64 (20,) official per-class IoU, benchmark order, NaN where union = 0.
        support: int64 (20,) ground-truth elements (vertices or pixels) of each class.
        predicted: int64 (20,) elements with a valid ground truth predicted as each class.
        miou: convention name (:data:`CONVENTIONS`) -> mean IoU (fraction, not percent).
        absent: names of the classes with no ground truth (support 0).
        unscored: names of the classes with TP + FP + FN = 0 (NaN officially, 1.0 in
            clip2scene); a subset of ``absent``.
    """

    confusion: np.ndarray
    iou: np.ndarray
    support: np.ndarray
    predicted: np.ndarray
    miou: dict[str, float]
    absent: tuple[str, ...]
    unscored: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN -> None); ``miou`` is the official mean, as in cns_ros.metrics."""
        def num(value: float) -> float | None:
            return None if np.isnan(value) else float(value)
        points = int(self.support.sum())
        correct = int(self.confusion[_VALID, _VALID].sum())
        return {
            'miou': num(self.miou['official']),
            **{f'miou_{name}': num(self.miou[name]) for name in CONVENTIONS},
            'accuracy': correct / points if points else None,
            'points': points,
            'classes': {name: {'iou': num(v), 'support': int(s), 'predicted': int(p)}
                        for name, v, s, p in zip(BENCHMARK_NAMES, self.iou, self.support,
                                                 self.predicted, strict=True)},
            'absent': list(self.absent),
            'unscored': list(self.unscored),
            'confusion': self.confusion.tolist(),
        }


def scannet_scores(confusion: ArrayLike) -> ScanNetScores:
    """Per-class official IoU and the three means of a (41, 41) confusion (3D or 2D)."""
    conf = _check_confusion(confusion)
    iou = official_iou(conf)
    support = conf[_VALID].sum(axis=1)
    predicted = conf[_VALID][:, _VALID].sum(axis=0)
    names = np.array(BENCHMARK_NAMES)
    return ScanNetScores(
        confusion=conf, iou=iou, support=support, predicted=predicted,
        miou=mean_ious(iou, support), absent=tuple(names[support == 0].tolist()),
        unscored=tuple(names[np.isnan(iou)].tolist()))


def train_confusion(confusion: ArrayLike) -> np.ndarray:
    """Fold a (41, 41) nyu40 confusion into :mod:`cns_ros.metrics`' int64 (20, 21) layout.

    Rows and the first 20 columns are the valid ids in benchmark (training id) order; the last
    column sums every other column (predictions outside the 20: column 40 here, "no
    prediction" there). Rows of ignored ids are dropped (neither layout scores them).
    """
    conf = _check_confusion(confusion)
    rows = conf[_VALID]
    inside = rows[:, _VALID]
    return np.concatenate([inside, (rows.sum(axis=1) - inside.sum(axis=1))[:, None]], axis=1)


def predictions_to_nyu40(pred_train: ArrayLike,
                         no_label: Sequence[int] = NO_LABEL_IDS) -> np.ndarray:
    """Training-id predictions (0..19) -> nyu40 ids for the official files and confusion.

    Args:
        pred_train: Integer array-like, any shape: 0..19, or a ``no_label`` value.
        no_label: Values meaning "no prediction" (255 always does); they become 0
            (unannotated), which the official evaluation counts as a false negative of the
            ground-truth class.

    Returns:
        uint8 array of the same shape.

    Raises:
        ValueError: A value that is neither a training id nor a ``no_label`` value.
    """
    array = np.asarray(pred_train)
    if array.dtype.kind not in 'iu':
        raise ValueError(f'predictions_to_nyu40: expected integer ids, found {array.dtype}')
    array = array.astype(np.int64)
    missing = np.isin(array, np.asarray(no_label, dtype=np.int64))
    return train_to_nyu40(np.where(missing, IGNORE_INDEX, array))


def official_confusion_train(gt_train: ArrayLike, pred_train: ArrayLike) -> np.ndarray:
    """:func:`official_confusion` of training-id labels (gt 0..19 / 255, predictions as
    :func:`predictions_to_nyu40`): the official counts without writing nyu40 files."""
    return official_confusion(train_to_nyu40(gt_train), predictions_to_nyu40(pred_train))


# --- official per-scene prediction files ----------------------------------------------------

def write_predictions(folder: str | os.PathLike[str], scene: str,
                      pred_nyu40: ArrayLike) -> Path:
    """Write ``<folder>/<scene>.txt``: one nyu40 id per line, in vertex order (atomic).

    Args:
        folder: Output folder (created).
        scene: Scan id, e.g. ``scene0011_00`` (a plain file name, no separators).
        pred_nyu40: Integer (N,) predictions for the N vertices of ``_vh_clean_2.ply``.

    Returns:
        The path written.
    """
    if not scene or scene in ('.', '..') or '/' in scene or os.sep in scene:
        raise ValueError(f'write_predictions: scene must be a plain name, found {scene!r}')
    pred = np.asarray(pred_nyu40)
    if pred.ndim != 1 or pred.dtype.kind not in 'iu':
        raise ValueError(f'write_predictions: {scene}: expected integer (N,) nyu40 ids, '
                         f'found dtype {pred.dtype} shape {pred.shape}')
    path = Path(folder) / f'{scene}.txt'
    atomic_write_text(path, ''.join(f'{v}\n' for v in pred.tolist()))
    return path


def read_predictions(path: str | os.PathLike[str], num_vertices: int) -> np.ndarray:
    """Read an official prediction file: int64 (num_vertices,) nyu40 ids in vertex order.

    Raises:
        FileNotFoundError: No such file.
        ValueError: A line that is not one integer (its 1-based line number and text), or a
            line count different from ``num_vertices`` (file, expected vs found).
    """
    path = Path(path)
    lines = path.read_text(encoding='utf-8', errors='replace').splitlines()
    try:
        ids = np.array(lines, dtype=np.int64).reshape(-1)
    except (ValueError, OverflowError):
        for number, line in enumerate(lines, start=1):
            try:
                int(line)
            except ValueError:
                raise ValueError(f'{path}: line {number}: expected one integer nyu40 id, '
                                 f'found {line[:40]!r}') from None
        raise ValueError(f'{path}: a value does not fit in int64') from None
    if ids.size != num_vertices:
        raise ValueError(f'{path}: expected {num_vertices} predictions (one per vertex), '
                         f'found {ids.size}')
    return ids


# --- 2D ---------------------------------------------------------------------------------------

def _label_image(name: str, what: str, image: ArrayLike) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim != 2:
        raise ValueError(f'{name}: {what} must be a single-channel (H, W) label image, found '
                         f'shape {array.shape}')
    if array.dtype.kind not in 'iu':
        raise ValueError(f'{name}: {what} must hold integer nyu40 ids, found {array.dtype}')
    return array


def evaluate_frame_2d(gt_nyu40: ArrayLike, pred_nyu40: ArrayLike,
                      name: str = 'frame') -> np.ndarray:
    """The official 2D counts of one frame: int64 (41, 41) confusion at 640x480.

    Both images are resized to 640x480 with nearest neighbour (pixel-centre mapping, as PIL's
    NEAREST) and then counted as :func:`official_confusion`.

    Args:
        gt_nyu40: (H, W) integer nyu40 ground truth (a ``scannet_frames_25k`` ``label/`` PNG).
        pred_nyu40: (h, w) integer nyu40 prediction; accepted when w == W or (w, h) ==
            (640, 480) (the official size check).
        name: The frame (token or file name) named in errors.

    Raises:
        ValueError: Not single-channel integer images, or a prediction that fails the size
            check (sizes given as width x height).
    """
    gt = _label_image(name, 'ground truth', gt_nyu40)
    pred = _label_image(name, 'prediction', pred_nyu40)
    if pred.shape[1] != gt.shape[1] and pred.shape[::-1] != OFFICIAL_SIZE_2D:
        raise ValueError(f'{name}: prediction is {pred.shape[1]}x{pred.shape[0]}, expected the '
                         f'ground truth width {gt.shape[1]} (ground truth {gt.shape[1]}x'
                         f'{gt.shape[0]}) or {OFFICIAL_SIZE_2D[0]}x{OFFICIAL_SIZE_2D[1]}')
    size = OFFICIAL_SIZE_2D[::-1]
    return official_confusion(resize_nearest(gt, size), resize_nearest(pred, size))


def evaluate_frames_2d(frames: Iterable[tuple[str, ArrayLike, ArrayLike]]) -> np.ndarray:
    """Sum :func:`evaluate_frame_2d` over ``(name, gt_nyu40, pred_nyu40)`` frames: the
    dataset-level int64 (41, 41) confusion (score it with :func:`scannet_scores`)."""
    total = np.zeros((NUM_IDS, NUM_IDS), dtype=np.int64)
    for name, gt, pred in frames:
        total += evaluate_frame_2d(gt, pred, name)
    return total
