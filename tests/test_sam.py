"""SAM teacher and SAM-mask label refinement (CPU).

Refinement is checked on hand-made label maps and masks, and against a brute-force per-pixel
Python reference (hypothesis). The SAM tests build the REAL segment_anything ViT-B with RANDOM
weights (no checkpoint can be downloaded here), once per module: they check shapes, dtypes,
the checkpoint round trip and the error messages, not mask quality. Every image-encoder pass
at 1024 x 1024 takes 15-40 s on 2 shared CPU cores, so the two tests that need one are marked
slow. Batching and padding are checked around a cheap stand-in encoder.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from segment_anything.modeling import Sam
from torch import nn

from cns_ros.teachers.refine import _refine_torch, refine_labels, resize_masks
from cns_ros.teachers.sam import (
    LoadedSam,
    MissingSamWeightsError,
    SamCheckpointError,
    SamConfig,
    SamMasks,
    SamTeacher,
    crop_valid_embedding,
    valid_embedding_size,
)


def masks_from(shape: tuple[int, int], *pixel_lists: list[tuple[int, int]]) -> np.ndarray:
    """(M, H, W) bool masks, mask m True at the (row, col) pixels of pixel_lists[m]."""
    masks = np.zeros((len(pixel_lists), *shape), dtype=bool)
    for m, pixels in enumerate(pixel_lists):
        for row, col in pixels:
            masks[m, row, col] = True
    return masks


def brute_force_refine(labels: np.ndarray, masks: np.ndarray, order: str,
                       ignore_index: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel Python reference of the refinement rules (module docstring of refine.py)."""
    height, width = labels.shape
    original = labels.tolist()
    refined = [row[:] for row in original]
    covered = [[False] * width for _ in range(height)]
    pixels = [[(r, c) for r in range(height) for c in range(width) if masks[m][r][c]]
              for m in range(len(masks))]
    sign = 1 if order == 'area_ascending' else -1
    for m in sorted(range(len(masks)), key=lambda i: sign * len(pixels[i])):  # stable
        votes = Counter(original[r][c] for r, c in pixels[m] if original[r][c] != ignore_index)
        for r, c in pixels[m]:
            covered[r][c] = True
        if votes:
            best = max(votes.values())
            mode = min(label for label, count in votes.items() if count == best)
            for r, c in pixels[m]:
                refined[r][c] = mode
    return np.array(refined, dtype=labels.dtype), np.array(covered, dtype=bool)


# ----------------------------------------------------------------------------- refinement


def test_refine_hand_made_map() -> None:
    labels = np.array([[1, 1, 2, 5],
                       [1, 3, 2, 5],
                       [4, 4, 4, 5]], dtype=np.uint8)
    masks = masks_from(labels.shape, [(0, 0), (0, 1), (1, 0), (1, 1)],
                       [(0, 3), (1, 3), (2, 3), (2, 2)])
    refined, covered = refine_labels(labels, masks)
    np.testing.assert_array_equal(refined, [[1, 1, 2, 5],
                                            [1, 1, 2, 5],
                                            [4, 4, 5, 5]])
    np.testing.assert_array_equal(covered, [[1, 1, 0, 1],
                                            [1, 1, 0, 1],
                                            [0, 0, 1, 1]])
    assert refined.dtype == np.uint8 and covered.dtype == np.bool_
    np.testing.assert_array_equal(labels[1, 1], 3)  # the input is not modified


def test_mask_order_decides_overlaps() -> None:
    labels = np.array([[7, 7, 2, 2],
                       [2, 2, 2, 2]], dtype=np.int64)
    small = [(0, 0), (0, 1)]                                   # votes 7
    large = [(r, c) for r in range(2) for c in range(4)]       # votes 2 (6 of 8)
    masks = masks_from(labels.shape, large, small)
    ascending, _ = refine_labels(labels, masks, order='area_ascending')
    descending, _ = refine_labels(labels, masks, order='area_descending')
    np.testing.assert_array_equal(ascending, np.full_like(labels, 2))  # large written last
    np.testing.assert_array_equal(descending, labels)                  # small written last


def test_votes_use_the_original_labels() -> None:
    labels = np.array([[0, 1, 1, 2, 2]])
    first = [(0, 0), (0, 1), (0, 2)]           # 0, 1, 1 -> 1
    second = [(0, 0), (0, 1), (0, 3), (0, 4)]  # original 0, 1, 2, 2 -> 2 (after `first`: a tie)
    refined, _ = refine_labels(labels, masks_from(labels.shape, first, second))
    np.testing.assert_array_equal(refined, [[2, 2, 1, 2, 2]])


def test_ties_go_to_the_smallest_class() -> None:
    labels = np.array([[3, 3, 1, 1, 5, 2, 5, 2, 9]])
    masks = masks_from(labels.shape, [(0, 0), (0, 1), (0, 2), (0, 3)],
                       [(0, 4), (0, 5), (0, 6), (0, 7), (0, 8)])
    refined, _ = refine_labels(labels, masks)
    np.testing.assert_array_equal(refined, [[1, 1, 1, 1, 2, 2, 2, 2, 2]])


def test_ignore_index_does_not_vote() -> None:
    labels = np.array([[255, 255, 4, 255, 255, 255]], dtype=np.uint8)
    voting = [(0, 0), (0, 1), (0, 2)]
    all_ignored = [(0, 0), (0, 3), (0, 4), (0, 5)]  # larger, written last, but has no vote
    refined, covered = refine_labels(labels, masks_from(labels.shape, voting, all_ignored))
    np.testing.assert_array_equal(refined, [[4, 4, 4, 255, 255, 255]])
    assert covered.all()
    refined, _ = refine_labels(labels, masks_from(labels.shape, voting), ignore_index=None)
    np.testing.assert_array_equal(refined, [[255, 255, 255, 255, 255, 255]])
    signed = np.array([[-1, -1, 3]])
    refined, _ = refine_labels(signed, masks_from(signed.shape, [(0, 0), (0, 1), (0, 2)]),
                               ignore_index=-1)
    np.testing.assert_array_equal(refined, [[3, 3, 3]])


def test_no_masks_and_uncovered_pixels_keep_labels() -> None:
    labels = np.arange(12, dtype=np.int32).reshape(3, 4)
    refined, covered = refine_labels(labels, np.zeros((0, 3, 4), dtype=bool))
    np.testing.assert_array_equal(refined, labels)
    assert not covered.any()


def test_torch_tensors_in_torch_tensors_out() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 6, size=(20, 30)).astype(np.uint8)
    labels[rng.random(labels.shape) < 0.2] = 255
    masks = rng.random((15, 20, 30)) < 0.3
    for order in ('area_ascending', 'area_descending'):
        expected, expected_covered = refine_labels(labels, masks, order=order)
        refined, covered = refine_labels(torch.from_numpy(labels), torch.from_numpy(masks),
                                         order=order)
        assert isinstance(refined, torch.Tensor) and refined.dtype == torch.uint8
        np.testing.assert_array_equal(refined.numpy(), expected)
        np.testing.assert_array_equal(covered.numpy(), expected_covered)
        # The loop-free device algorithm (used for CUDA tensors), run on CPU tensors.
        refined, covered = _refine_torch(torch.from_numpy(labels), torch.from_numpy(masks),
                                         order, 255)
        np.testing.assert_array_equal(refined.numpy(), expected)
        np.testing.assert_array_equal(covered.numpy(), expected_covered)


def test_refine_accepts_sam_masks_and_rejects_bad_input() -> None:
    labels = np.array([[1, 2, 2]])
    sam_masks = SamMasks.from_masks(masks_from(labels.shape, [(0, 0), (0, 1), (0, 2)]))
    np.testing.assert_array_equal(refine_labels(labels, sam_masks)[0], [[2, 2, 2]])
    with pytest.raises(ValueError, match='resize_masks'):
        refine_labels(labels, np.zeros((1, 2, 3), dtype=bool))
    with pytest.raises(ValueError, match='integer'):
        refine_labels(labels.astype(np.float32), sam_masks)
    with pytest.raises(ValueError, match='order'):
        refine_labels(labels, sam_masks, order='random')
    with pytest.raises(ValueError, match='>= 0'):
        refine_labels(np.array([[-2, 1, 1]]), sam_masks)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), order=st.sampled_from(['area_ascending', 'area_descending']),
       ignore_index=st.sampled_from([255, None]))
def test_refine_matches_brute_force(data: st.DataObject, order: str,
                                    ignore_index: int | None) -> None:
    height, width = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6))
    labels = data.draw(hnp.arrays(np.uint8, (height, width),
                                  elements=st.sampled_from([0, 1, 2, 3, 255])))
    masks = data.draw(hnp.arrays(np.bool_, (data.draw(st.integers(0, 5)), height, width)))
    expected, expected_covered = brute_force_refine(labels, masks, order, ignore_index)
    refined, covered = refine_labels(labels, masks, order=order, ignore_index=ignore_index)
    np.testing.assert_array_equal(refined, expected)
    np.testing.assert_array_equal(covered, expected_covered)
    refined, covered = _refine_torch(torch.from_numpy(labels), torch.from_numpy(masks), order,
                                     ignore_index)
    np.testing.assert_array_equal(refined.numpy(), expected)
    np.testing.assert_array_equal(covered.numpy(), expected_covered)


def test_resize_masks() -> None:
    masks = np.array([[[1, 0], [0, 1]]], dtype=bool)
    np.testing.assert_array_equal(resize_masks(masks, (4, 4))[0],
                                  [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]])
    big = np.kron(masks[0], np.ones((3, 3), dtype=bool))[None]  # 6 x 6 blocks
    np.testing.assert_array_equal(resize_masks(big, (2, 2)), masks)
    np.testing.assert_array_equal(resize_masks(big, (2, 2), mode='bilinear'), masks)
    assert resize_masks(np.zeros((0, 5, 7), dtype=bool), (3, 2)).shape == (0, 3, 2)
    resized = SamMasks.from_masks(masks).resized((4, 6))
    assert resized.masks.shape == (1, 4, 6) and resized.areas.tolist() == [12]


def test_import_is_cheap() -> None:
    code = ('import sys, cns_ros.teachers, cns_ros.teachers.sam, cns_ros.teachers.refine; '
            "print([m for m in ('torch', 'segment_anything', 'cv2') if m in sys.modules])")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip().splitlines()[-1] == '[]'


# ----------------------------------------------------------------------------- config, sizes


def test_valid_embedding_size() -> None:
    assert valid_embedding_size(900, 1600) == (36, 64)  # nuScenes camera
    assert valid_embedding_size(240, 320) == (48, 64)   # ScanNet (the reference's [:48])
    assert valid_embedding_size(224, 416) == (35, 64)
    assert valid_embedding_size(1600, 900) == (64, 36)
    assert valid_embedding_size(50, 50) == (64, 64)
    assert crop_valid_embedding(np.zeros((2, 256, 64, 64)), 900, 1600).shape == (2, 256, 36, 64)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match='model_type'):
        SamConfig(model_type='vit_x')
    with pytest.raises(ValueError, match='mask_order'):
        SamConfig(mask_order='random')
    with pytest.raises(ValueError, match='pred_iou_thresh'):
        SamConfig(pred_iou_thresh=1.5)
    with pytest.raises(ValueError, match='points_per_side'):
        SamConfig(points_per_side=0)


def test_missing_checkpoint_errors(tmp_path) -> None:
    with pytest.raises(MissingSamWeightsError) as error:
        SamTeacher(SamConfig(model_type='vit_b'))
    for text in ('sam_vit_b_01ec64.pth', 'checkpoint=', '--sam-checkpoint'):
        assert text in str(error.value)
    with pytest.raises(MissingSamWeightsError, match=re.escape('sam_vit_h_4b8939.pth')):
        SamTeacher(SamConfig(model_type='vit_h'))
    missing = tmp_path / 'nowhere' / 'sam_vit_b_01ec64.pth'
    with pytest.raises(MissingSamWeightsError, match=re.escape(str(missing))):
        SamTeacher(SamConfig(model_type='vit_b', checkpoint=str(missing)))


class _NotAllowed:
    """A pickled object that ``torch.load(weights_only=True)`` refuses to build."""


def test_non_sam_checkpoints_are_rejected(tmp_path) -> None:
    path = tmp_path / 'other.pth'
    torch.save({'encoder.weight': torch.zeros(3)}, path)
    with pytest.raises(SamCheckpointError, match='not a SAM checkpoint'):
        SamTeacher(SamConfig(model_type='vit_b', checkpoint=str(path)))
    torch.save({'weights': torch.zeros(3), 'note': _NotAllowed()}, path)  # arbitrary object
    with pytest.raises(SamCheckpointError, match='weights_only'):
        SamTeacher(SamConfig(model_type='vit_b', checkpoint=str(path)))


# ----------------------------------------------------------------------------- batching, padding


class _PoolEncoder(nn.Module):
    """A cheap stand-in image encoder: 16 x 16 average pooling, channels repeated to 256."""

    img_size = 1024

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 16).repeat(1, 86, 1, 1)[:, :256] * self.scale


@pytest.fixture(scope='module')
def pooling_sam() -> SamTeacher:
    """segment_anything's Sam (real preprocessing) around the stand-in encoder."""
    model = Sam(image_encoder=_PoolEncoder(), prompt_encoder=nn.Identity(),
                mask_decoder=nn.Identity())
    return SamTeacher(SamConfig(model_type='vit_b', batch_size=2),
                      loaded=LoadedSam(model=model.eval(), random_weights=True, source='stub'))


def test_batched_embeddings_equal_single_images(pooling_sam) -> None:
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, size=size, dtype=np.uint8)
              for size in ((24, 40, 3), (40, 24, 3), (45, 80, 3))]
    batched = pooling_sam.embeddings(images)
    assert batched.shape == (3, 256, 64, 64) and batched.dtype == np.float32
    for image, embedding in zip(images, batched, strict=True):
        np.testing.assert_array_equal(embedding, pooling_sam.embedding(image))
    assert not np.array_equal(batched[0], batched[1])


@pytest.mark.parametrize('size', [(24, 40), (40, 24), (45, 80), (30, 30)])
def test_valid_embedding_size_matches_sam_padding(pooling_sam, size) -> None:
    image = np.random.default_rng(6).integers(1, 256, size=(*size, 3), dtype=np.uint8)
    embedding = pooling_sam.embedding(image)
    rows, cols = valid_embedding_size(*size)
    assert np.abs(embedding[:, rows - 1, :cols]).sum(axis=0).min() > 0  # last row: image
    assert np.abs(embedding[:, :rows, cols - 1]).sum(axis=0).min() > 0  # last col: image
    assert not embedding[:, rows:].any() and not embedding[:, :, cols:].any()  # padding


# ----------------------------------------------------------------------------- SAM, random vit_b


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope='module')
def random_sam() -> tuple[SamTeacher, list[str]]:
    """The real vit_b with random weights (seed 0), 2 x 2 points, no quality thresholds."""
    handler = _Records()
    logger = logging.getLogger('cns_ros.teachers.sam')
    logger.addHandler(handler)
    try:
        teacher = SamTeacher(SamConfig(model_type='vit_b', allow_random_weights=True,
                                       points_per_side=2, pred_iou_thresh=0.0,
                                       stability_score_thresh=0.0, batch_size=2))
    finally:
        logger.removeHandler(handler)
    return teacher, handler.messages


@pytest.fixture(scope='module')
def image() -> np.ndarray:
    """A non-square RGB image (SAM pads it to a square)."""
    return np.random.default_rng(0).integers(0, 256, size=(24, 40, 3), dtype=np.uint8)


@pytest.fixture(scope='module')
def generated(random_sam, image) -> tuple[SamMasks, np.ndarray]:
    return random_sam[0].masks_and_embedding(image)


@pytest.fixture(scope='module')
def checkpoint(random_sam, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp('sam') / 'sam_vit_b_random.pth'
    torch.save(random_sam[0].loaded.model.state_dict(), path)
    return str(path)


def test_random_weights_need_the_flag_and_warn(random_sam) -> None:
    teacher, messages = random_sam
    assert teacher.random_weights and teacher.loaded.source == 'random(seed=0)'
    assert any('RANDOM weights' in message for message in messages)
    with pytest.raises(ValueError, match='define the model'):
        teacher.replace(checkpoint='x.pth')
    with pytest.raises(ValueError, match='uint8'):
        teacher.masks(np.zeros((8, 8, 3), dtype=np.float32))


@pytest.mark.slow
def test_masks_and_embedding(random_sam, image, generated) -> None:
    sam_masks, embedding = generated
    count = len(sam_masks)
    assert count >= 1 and sam_masks.random_weights
    assert sam_masks.masks.shape == (count, 24, 40) and sam_masks.masks.dtype == np.bool_
    np.testing.assert_array_equal(sam_masks.areas, sam_masks.masks.sum(axis=(1, 2)))
    assert sam_masks.scores.dtype == sam_masks.stability.dtype == np.float32
    assert sam_masks.scores.shape == sam_masks.stability.shape == (count,)
    assert embedding.shape == (256, 64, 64) and embedding.dtype == np.float32
    assert np.isfinite(embedding).all()
    labels = np.random.default_rng(1).integers(0, 4, size=(24, 40))
    refined, covered = random_sam[0].refine(labels, sam_masks)
    assert refined.shape == labels.shape and covered.any()


@pytest.mark.slow
def test_checkpoint_round_trip(checkpoint, image, generated) -> None:
    teacher = SamTeacher(SamConfig(model_type='vit_b', checkpoint=checkpoint))
    assert not teacher.random_weights and teacher.loaded.source == checkpoint
    embedding = teacher.embedding(image)  # the batched encoder path, one image
    assert embedding.shape == (256, 64, 64) and embedding.dtype == np.float32
    # Same weights, and the same numbers as SamPredictor.set_image (inside the mask generator).
    np.testing.assert_allclose(embedding, generated[1], rtol=1e-4, atol=1e-5)


def test_checkpoint_of_another_model_type(checkpoint) -> None:
    for model_type in ('vit_h', 'vit_l'):
        with pytest.raises(SamCheckpointError, match="holds SAM vit_b weights but model_type is"):
            SamTeacher(SamConfig(model_type=model_type, checkpoint=checkpoint))


def test_zero_masks_resize_and_refine_to_identity():
    """Random weights (or an empty scene) give no masks: every helper still works."""
    empty = SamMasks.from_masks(np.zeros((0, 9, 16), dtype=bool))
    assert empty.areas.shape == (0,)
    resized = empty.resized((18, 32))
    assert resized.masks.shape == (0, 18, 32)
    labels = np.arange(18 * 32, dtype=np.int64).reshape(18, 32) % 5
    refined, covered = refine_labels(labels, resized)
    np.testing.assert_array_equal(refined, labels)
    assert not covered.any()
