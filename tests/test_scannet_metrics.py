"""cns_ros/scannet_metrics.py: the official ScanNet 20-class semantics on hand-made cases with
values computed by hand, a brute-force per-vertex loop, the three mean conventions, the
prediction files, the 2D nearest resize (against PIL, the official script's resizer) and the
agreement with cns_ros/metrics.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cns_ros import metrics
from cns_ros.data.scannet_labels import UNKNOWN_ID, VALID_CLASS_IDS, nyu40_to_train
from cns_ros.scannet_metrics import (
    evaluate_frame_2d,
    evaluate_frames_2d,
    official_confusion,
    official_confusion_train,
    official_iou,
    predictions_to_nyu40,
    read_predictions,
    scannet_scores,
    train_confusion,
    write_predictions,
)

WALL, FLOOR, CHAIR, TABLE, OTHERFURNITURE = 1, 2, 5, 7, 39   # nyu40 ids (valid)
CEILING, OTHERPROP = 22, 40                                    # nyu40 ids (not evaluated)


def idx(nyu40: int) -> int:
    """Benchmark position of a valid nyu40 id."""
    return VALID_CLASS_IDS.index(nyu40)


# Three classes present with known TP/FP/FN, one class absent but predicted, two ignored
# ground-truth vertices predicted as wall, one chair predicted 0 (out of set):
#   wall  : 4 GT, 3 right, 1 -> floor                 TP 3 FN 1 FP 0  -> 3/4
#   floor : 3 GT, 2 right, 1 -> table                 TP 2 FN 1 FP 1  -> 2/4
#   chair : 2 GT, 1 right, 1 -> 0 (unknown)           TP 1 FN 1 FP 0  -> 1/2
#   table : 0 GT, predicted once                      TP 0 FN 0 FP 1  -> 0
#   the other 16 classes: TP + FP + FN = 0 -> NaN
GT = np.array([1, 1, 1, 1, 2, 2, 2, 5, 5, 0, 22])
PRED = np.array([1, 1, 1, 2, 2, 2, 7, 5, 0, 1, 1])


def test_hand_case_counts_and_iou() -> None:
    conf = official_confusion(GT, PRED)
    assert conf.shape == (41, 41) and conf.dtype == np.int64
    assert conf.sum() == 9                                    # the 2 ignored vertices skipped
    assert conf[WALL, WALL] == 3 and conf[WALL, FLOOR] == 1
    assert conf[FLOOR, FLOOR] == 2 and conf[FLOOR, TABLE] == 1
    assert conf[CHAIR, CHAIR] == 1 and conf[CHAIR, UNKNOWN_ID] == 1
    iou = official_iou(conf)
    assert iou.shape == (20,) and iou.dtype == np.float64
    assert iou[idx(WALL)] == 3 / 4 and iou[idx(FLOOR)] == 2 / 4 and iou[idx(CHAIR)] == 1 / 2
    assert iou[idx(TABLE)] == 0.0
    others = [i for i in range(20) if i not in (idx(WALL), idx(FLOOR), idx(CHAIR), idx(TABLE))]
    assert np.isnan(iou[others]).all() and len(others) == 16


def test_three_means_differ_on_absent_classes() -> None:
    scores = scannet_scores(official_confusion(GT, PRED))
    # official: NaN-skipping mean over wall, floor, chair, table (table 0 counts)
    assert scores.miou['official'] == pytest.approx((0.75 + 0.5 + 0.5 + 0.0) / 4)    # 0.4375
    # clip2scene: the 16 classes with union 0 count 1.0; table (union 1) counts 0; / 20
    assert scores.miou['clip2scene'] == pytest.approx((0.75 + 0.5 + 0.5 + 16 * 1.0) / 20)
    # openscene: sum over the classes present in the ground truth / 20
    assert scores.miou['openscene'] == pytest.approx((0.75 + 0.5 + 0.5) / 20)        # 0.0875
    assert len({round(v, 6) for v in scores.miou.values()}) == 3
    assert len(scores.absent) == 17 and 'table' in scores.absent
    assert len(scores.unscored) == 16 and 'table' not in scores.unscored
    assert set(scores.unscored) < set(scores.absent)
    assert scores.support[[idx(WALL), idx(FLOOR), idx(CHAIR)]].tolist() == [4, 3, 2]
    assert scores.predicted[[idx(WALL), idx(FLOOR), idx(TABLE)]].tolist() == [3, 3, 1]
    doc = scores.as_dict()
    assert doc['miou'] == doc['miou_official'] == pytest.approx(0.4375)
    assert doc['points'] == 9 and doc['accuracy'] == pytest.approx(6 / 9)
    assert doc['classes']['sink']['iou'] is None and doc['classes']['table']['iou'] == 0.0
    assert metrics.format_table(doc).splitlines()[-1].split()[:2] == ['mIoU', '43.8']


def test_all_present_means_agree_and_empty_is_nan() -> None:
    gt = np.array(VALID_CLASS_IDS * 3)
    pred = gt.copy()
    pred[:20] = OTHERPROP                                      # one miss per class: IoU 2/3
    scores = scannet_scores(official_confusion(gt, pred))
    for value in scores.miou.values():
        assert value == pytest.approx(2 / 3)
    empty = scannet_scores(official_confusion([0, 22], [1, 2]))
    assert np.isnan(empty.miou['official']) and empty.miou['clip2scene'] == 1.0
    assert empty.miou['openscene'] == 0.0 and empty.as_dict()['accuracy'] is None


def test_out_of_set_prediction_is_a_false_negative_only() -> None:
    for outside in (0, CEILING, OTHERPROP, 50, 255, -1):
        conf = official_confusion([CHAIR], [outside])
        assert conf[CHAIR, UNKNOWN_ID] == 1 and conf.sum() == 1
        iou = official_iou(conf)
        assert iou[idx(CHAIR)] == 0.0                          # FN of chair
        assert np.isnan(np.delete(iou, idx(CHAIR))).all()      # FP of no class
    # a valid prediction of the wrong class is a FP of that class
    iou = official_iou(official_confusion([CHAIR], [OTHERFURNITURE]))
    assert iou[idx(CHAIR)] == 0.0 and iou[idx(OTHERFURNITURE)] == 0.0


def test_ignored_ground_truth_predicted_as_wall_is_no_false_positive() -> None:
    conf = official_confusion([0, CEILING, 149, WALL], [WALL, WALL, WALL, WALL])
    assert official_iou(conf)[idx(WALL)] == 1.0
    # rows of ignored ids filled by a caller (the 2D C path counts them) still never count
    conf[CEILING, WALL] = 100
    assert official_iou(conf)[idx(WALL)] == 1.0


def test_official_mean_equals_brute_force_loop() -> None:
    rng = np.random.default_rng(3)
    gt = rng.choice([0, 1, 2, 3, 5, 7, 22, 39, 40, 50], size=3000)
    pred = rng.choice([0, 1, 2, 3, 4, 5, 7, 22, 39, 40], size=3000)
    expected = []
    for c in VALID_CLASS_IDS:
        tp = fp = fn = 0
        for g, p in zip(gt.tolist(), pred.tolist(), strict=True):
            if g not in VALID_CLASS_IDS:
                continue
            tp += g == c and p == c
            fn += g == c and p != c
            fp += g != c and p == c
        expected.append(tp / (tp + fp + fn) if tp + fp + fn else float('nan'))
    iou = official_iou(official_confusion(gt, pred))
    np.testing.assert_allclose(iou, expected, rtol=0, atol=1e-12, equal_nan=True)
    assert np.isfinite(iou[idx(4)])                            # bed: predicted, never in GT
    scores = scannet_scores(official_confusion(gt, pred))
    assert scores.miou['official'] == pytest.approx(np.nanmean(expected))


def test_agreement_with_repository_metrics() -> None:
    rng = np.random.default_rng(5)
    gt = rng.choice([0, 1, 2, 5, 7, 14, 22, 36, 40], size=2000)
    pred = rng.choice([0, 1, 2, 4, 5, 7, 14, 22, 36, 40], size=2000)
    conf41 = official_confusion(gt, pred)
    conf20 = metrics.confusion_matrix(nyu40_to_train(gt), nyu40_to_train(pred), 20)
    assert np.array_equal(train_confusion(conf41), conf20)
    ours = official_iou(conf41)
    np.testing.assert_array_equal(metrics.iou_per_class(conf20, nan_if='no_union'), ours)
    # where they differ: metrics' default NaNs classes absent from the ground truth (bed is
    # predicted but absent: 0 officially), so its mean is over the present classes only
    bed = idx(4)
    assert ours[bed] == 0.0 and np.isnan(metrics.iou_per_class(conf20)[bed])
    present = np.isfinite(metrics.iou_per_class(conf20))
    np.testing.assert_array_equal(metrics.iou_per_class(conf20)[present], ours[present])
    assert metrics.mean_iou(conf20) > scannet_scores(conf41).miou['official']


def test_training_id_helpers() -> None:
    assert predictions_to_nyu40([0, 12, 19, 255, 65535]).tolist() == [1, 14, 39, 0, 0]
    with pytest.raises(ValueError, match=r'0\.\.19'):
        predictions_to_nyu40([20])
    with pytest.raises(ValueError, match='integer'):
        predictions_to_nyu40([0.5])
    gt_train, pred_train = nyu40_to_train(GT), np.array([0, 0, 0, 1, 1, 1, 6, 4, 255, 0, 0])
    assert np.array_equal(official_confusion_train(gt_train, pred_train),
                          official_confusion(GT, PRED))


def test_bad_input_errors() -> None:
    with pytest.raises(ValueError, match='same number of elements, found 2 and 3'):
        official_confusion([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match='pred_nyu40: expected integer'):
        official_confusion([1], [1.0])
    with pytest.raises(ValueError, match=r'\(41, 41\).*\(20, 21\)'):
        official_iou(np.zeros((20, 21), dtype=np.int64))


def test_prediction_files_round_trip_and_errors(tmp_path: Path) -> None:
    pred = np.array([1, 39, 0, 40, 149])
    path = write_predictions(tmp_path / 'pred', 'scene0011_00', pred)
    assert path == tmp_path / 'pred' / 'scene0011_00.txt'
    assert path.read_text() == '1\n39\n0\n40\n149\n'
    assert [p.name for p in path.parent.iterdir()] == ['scene0011_00.txt']  # no temp left
    assert read_predictions(path, 5).tolist() == pred.tolist()
    with pytest.raises(ValueError, match=r'scene0011_00\.txt: expected 6 .*found 5'):
        read_predictions(path, 6)
    bad = tmp_path / 'bad.txt'
    bad.write_text('1\n2\n3.0\n4\n')
    with pytest.raises(ValueError, match=r"bad\.txt: line 3: .*'3\.0'"):
        read_predictions(bad, 4)
    bad.write_text('1\n\n2\n')
    with pytest.raises(ValueError, match='line 2'):
        read_predictions(bad, 3)
    with pytest.raises(FileNotFoundError):
        read_predictions(tmp_path / 'missing.txt', 1)
    with pytest.raises(ValueError, match='plain name'):
        write_predictions(tmp_path, '../x', pred)
    with pytest.raises(ValueError, match='integer'):
        write_predictions(tmp_path, 'scene0011_00', pred.astype(float))


def test_2d_checkerboard_nearest_resize_counts() -> None:
    board = np.array([[WALL, FLOOR], [FLOOR, WALL]], dtype=np.uint8)
    conf = evaluate_frame_2d(board, np.full((2, 2), WALL, np.uint8))
    assert conf.sum() == 640 * 480
    # every quadrant is exactly 320 x 240 pixels; only the two board values appear
    assert conf[WALL, WALL] == 2 * 320 * 240 and conf[FLOOR, WALL] == 2 * 320 * 240
    assert np.count_nonzero(conf) == 2
    iou = official_iou(conf)
    assert iou[idx(WALL)] == 0.5 and iou[idx(FLOOR)] == 0.0
    # 3x3 -> 640x480: columns split 213 / 214 / 213 (floor((c + 0.5) * 3 / 640)), rows 160 each
    grid = np.full((3, 3), WALL, np.uint8)
    grid[1, 1] = CHAIR
    conf = evaluate_frame_2d(grid, grid)
    assert conf[CHAIR, CHAIR] == 214 * 160 and conf[WALL, WALL] == 640 * 480 - 214 * 160


def test_2d_resize_matches_pil_and_accumulates() -> None:
    from PIL import Image
    rng = np.random.default_rng(7)
    gt = rng.integers(0, 41, size=(968, 1296), dtype=np.uint8)
    pred = rng.integers(0, 41, size=(240, 320), dtype=np.uint8)
    pred_640 = np.array(Image.fromarray(pred).resize((640, 480), Image.NEAREST))
    gt_640 = np.array(Image.fromarray(gt).resize((640, 480), Image.NEAREST))
    expected = official_confusion(gt_640, pred_640)
    assert np.array_equal(evaluate_frame_2d(gt, pred_640), expected)
    total = evaluate_frames_2d([('a', gt, pred_640), ('b', gt_640, pred_640)])
    assert np.array_equal(total, 2 * expected)


def test_2d_size_check() -> None:
    gt = np.ones((968, 1296), np.uint8)
    with pytest.raises(ValueError, match=r'scene0000_00_000100: prediction is 320x240, '
                                         r'expected the ground truth width 1296'):
        evaluate_frame_2d(gt, np.ones((240, 320), np.uint8), 'scene0000_00_000100')
    assert evaluate_frame_2d(gt, np.ones((480, 640), np.uint8)).sum() == 640 * 480
    # the official check compares widths only: same width, other height passes
    assert evaluate_frame_2d(gt, np.ones((100, 1296), np.uint8))[WALL, WALL] == 640 * 480
    with pytest.raises(ValueError, match='single-channel'):
        evaluate_frame_2d(gt, np.ones((480, 640, 3), np.uint8))
