"""3D-OVS scores: the reference protocol against sklearn (jaccard_score(average=None,
zero_division=0) and accuracy_score on multilabel indicators) and against hand-made views with
stated numbers; the clean protocol on the same hand case."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, jaccard_score

from cns_ros.ovs3d.metrics import MetricsInputError, clean_scores, reference_scores


def _onehot(pred: np.ndarray, classes: int) -> np.ndarray:
    return np.eye(classes, dtype=int)[pred]


def _hand_case() -> tuple[np.ndarray, np.ndarray]:
    """2 views x 4 pixels x 4 classes; class 3 occurs nowhere (neither gt nor prediction).

    view 0: gt [c0], [c0], [c1], [] (unlabelled); pred 0, 1, 1, 1
        IoU c0 = 1/2 (TP px0, FN px1), c1 = 1/3 (TP px2, FP px1 px3), c2 = 0 (absent), c3 = 0
        subset accuracy 2/4 (px1 wrong, px3 unlabelled)
    view 1: gt [c0, c1] (multi), [c2], [c2], [c1]; pred 0, 2, 2, 1
        IoU c0 = 1, c1 = 1/2 (TP px3, FN px0), c2 = 1, c3 = 0; subset accuracy 3/4 (px0 multi)
    """
    gt = np.zeros((2, 4, 4), dtype=bool)
    gt[0, 0, 0] = gt[0, 1, 0] = gt[0, 2, 1] = True
    gt[1, 0, 0] = gt[1, 0, 1] = gt[1, 1, 2] = gt[1, 2, 2] = gt[1, 3, 1] = True
    pred = np.array([[0, 1, 1, 1], [0, 2, 2, 1]])
    return gt, pred


def test_reference_hand_case_stated_numbers():
    gt, pred = _hand_case()
    scores = reference_scores(gt, pred, num_classes=4)
    assert scores.protocol == 'reference'
    np.testing.assert_allclose(scores.per_view_iou, [[1 / 2, 1 / 3, 0, 0], [1, 1 / 2, 1, 0]])
    # flat mean over 2 views x 4 classes: (1/2 + 1/3 + 1 + 1/2 + 1) / 8 = 5/12
    assert scores.miou == pytest.approx(5 / 12)
    np.testing.assert_allclose(scores.per_view_accuracy, [0.5, 0.75])
    assert scores.accuracy == pytest.approx(0.625)
    np.testing.assert_allclose(scores.class_iou, [0.75, 5 / 12, 0.5, 0.0])


def test_reference_hand_case_matches_sklearn():
    gt, pred = _hand_case()
    scores = reference_scores(gt, pred)
    for view in range(2):
        onehot = _onehot(pred[view], 4)
        np.testing.assert_allclose(scores.per_view_iou[view], jaccard_score(
            gt[view].astype(int), onehot, average=None, zero_division=0))
        assert scores.per_view_accuracy[view] == accuracy_score(gt[view].astype(int), onehot)


@pytest.mark.parametrize('seed', range(4))
def test_reference_matches_sklearn_on_random_multilabel_views(seed):
    rng = np.random.default_rng(seed)
    views, pixels, classes = 3, 300, 6
    gt = rng.random((views, pixels, classes)) < 0.22     # empty, single and multi-label rows
    pred = rng.integers(0, classes - 1, size=(views, pixels))
    gt[0, :, 5] = False                                  # class 5 absent from view 0 entirely
    gt[1, : pixels // 2] = np.eye(classes, dtype=bool)[pred[1, : pixels // 2]]  # exact rows
    scores = reference_scores(gt.astype(np.uint8), pred, classes)
    expected_iou = np.stack([jaccard_score(gt[v], _onehot(pred[v], classes), average=None,
                                           zero_division=0) for v in range(views)])
    expected_acc = np.array([accuracy_score(gt[v], _onehot(pred[v], classes))
                             for v in range(views)])
    np.testing.assert_allclose(scores.per_view_iou, expected_iou, atol=1e-15)
    np.testing.assert_allclose(scores.per_view_accuracy, expected_acc, atol=1e-15)
    assert scores.per_view_iou[0, 5] == 0.0
    assert scores.miou == pytest.approx(float(np.mean(expected_iou)))
    assert scores.accuracy == pytest.approx(float(np.mean(expected_acc)))


def test_clean_hand_case_stated_numbers():
    gt, pred = _hand_case()
    scores = clean_scores(gt, pred, num_classes=4)
    assert scores.protocol == 'clean'
    # pooled: c0 TP 2 FP 0 FN 1 -> 2/3; c1 TP 2 FP 2 FN 1 -> 2/5; c2 TP 2 -> 1; c3 absent -> nan
    np.testing.assert_allclose(scores.class_iou, [2 / 3, 2 / 5, 1.0, np.nan])
    assert scores.miou == pytest.approx((2 / 3 + 2 / 5 + 1) / 3)      # = 31/45
    np.testing.assert_allclose(scores.per_view_iou,
                               [[1 / 2, 1 / 3, np.nan, np.nan], [1, 1 / 2, 1, np.nan]])
    # single-label pixels: view 0 px0-2 (2 right), view 1 px1-3 (3 right); pooled 5/6
    np.testing.assert_allclose(scores.per_view_accuracy, [2 / 3, 1.0])
    assert scores.accuracy == pytest.approx(5 / 6)


def test_clean_pools_views_instead_of_averaging_them():
    # view 0: c0 1 px right; view 1: c0 3 px, 1 predicted as c1. Per-view means would give
    # IoU c0 (1 + 2/3) / 2 = 5/6; pooled is TP 3 / (TP 3 + FN 1) = 3/4.
    gt = np.zeros((2, 3, 2), dtype=bool)
    gt[0, 0, 0] = gt[1, :, 0] = True
    gt[0, 1:, 1] = True
    pred = np.array([[0, 1, 1], [0, 0, 1]])
    scores = clean_scores(gt, pred)
    assert scores.class_iou[0] == pytest.approx(3 / 4)
    assert scores.class_iou[1] == pytest.approx(2 / 3)   # TP 2, FP 1
    assert reference_scores(gt, pred).class_iou[0] == pytest.approx(5 / 6)


def test_clean_with_no_class_or_no_single_label_pixel_is_nan():
    gt = np.zeros((1, 2, 2), dtype=bool)
    gt[0, 1] = True                                   # px0 unlabelled, px1 multi-labelled
    scores = clean_scores(gt, np.array([[0, 0]]))
    assert math.isnan(scores.accuracy) and math.isnan(scores.per_view_accuracy[0])
    assert reference_scores(gt, np.array([[0, 0]])).accuracy == 0.0


def test_as_dict_is_json_ready():
    gt, pred = _hand_case()
    data = reference_scores(gt, pred).as_dict()
    assert data['protocol'] == 'reference' and len(data['per_view_iou']) == 2
    assert data['miou'] == pytest.approx(5 / 12)


@pytest.mark.parametrize(('gt_shape', 'pred', 'num_classes', 'field'), [
    ((2, 4), np.zeros((2, 4), dtype=int), None, 'gt'),
    ((2, 4, 3), np.zeros((2, 5), dtype=int), None, 'pred'),
    ((2, 4, 3), np.full((2, 4), 3), None, 'pred'),
    ((2, 4, 3), np.zeros((2, 4)), None, 'pred'),       # float prediction
    ((2, 4, 3), np.zeros((2, 4), dtype=int), 4, 'num_classes'),
])
def test_bad_inputs_name_the_field(gt_shape, pred, num_classes, field):
    gt = np.zeros(gt_shape, dtype=bool)
    for function in (reference_scores, clean_scores):
        with pytest.raises(MetricsInputError, match=field):
            function(gt, pred, num_classes)


def test_non_binary_gt_is_rejected():
    with pytest.raises(MetricsInputError, match='gt'):
        reference_scores(np.full((1, 2, 2), 255, dtype=np.uint8), np.zeros((1, 2), dtype=int))
