"""CLIP2Scene's image augmentation (cns_ros.training.image_augment) on hand-made grids.

Pixel convention of the code base: pixel (r, c) covers [r, r + 1) x [c, c + 1) in edge
coordinates. A crop [top, top + h) x [left, left + w) resized to (H, W) maps an edge coordinate
y to (y - top) * H / h; a pair moves to the output pixel holding its pixel's centre; the flip
maps column c to W - 1 - c. The expected pixels below are worked out from that by hand.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cns_ros.training.config import ConfigError, ImageAugmentConfig, load_config
from cns_ros.training.image_augment import (
    CropFlip,
    crop_image,
    crop_map,
    crop_pairs,
    draw_crop,
    draw_crop_flip,
)

SIZE = (6, 10)
#: label of pixel (r, c) = 10 r + c: every pixel its own label
LABELS = (np.arange(60).reshape(SIZE)).astype(np.uint8)
#: rows 1..4, columns 2..5 (scales 6 / 4 = 1.5 and 10 / 4 = 2.5), then the flip
CROP = CropFlip(top=1, left=2, height=4, width=4, size=SIZE, flip=True)


def _color(label: np.ndarray) -> np.ndarray:
    label = label.astype(np.int64)
    return np.stack([label, 255 - label, 2 * label], axis=-1).astype(np.uint8)


def test_a_known_crop_and_flip_moves_known_pixels():
    """(2, 4): crop pixel (1, 2), centre (1.5, 2.5) -> (2.25, 6.25) -> pixel (2, 6) -> flip
    (2, 3). (4, 5): crop (3, 3), centre (3.5, 3.5) -> (5.25, 8.75) -> (5, 8) -> (5, 1).
    (4, 2): crop (3, 0) -> (5.25, 1.25) -> (5, 1) -> (5, 8). Outside: (0, 0) above, (1, 6)
    right of the last crop column 5, (5, 3) below the last crop row 4."""
    rows = np.array([2, 0, 4, 1, 5, 4])
    cols = np.array([4, 0, 5, 6, 3, 2])
    keep, new_rows, new_cols = crop_pairs(rows, cols, CROP)
    assert keep.tolist() == [True, False, True, False, False, True]
    assert new_rows.tolist() == [2, 5, 5] and new_cols.tolist() == [3, 1, 8]
    labels = crop_map(LABELS, CROP)
    assert labels.shape == SIZE and labels.dtype == np.uint8
    # the label at each moved pair is its original pixel's label: 24, 45, 42
    assert labels[new_rows, new_cols].tolist() == [24, 45, 42]
    # two more map pixels by hand: output (0, 0) is column 9 before the flip, whose centre
    # 9.5 / 2.5 = 3.8 lies in crop column 3 = column 5; row centre 0.5 / 1.5 -> crop row 0 =
    # row 1: label 15. Output (0, 9) = column 0 before the flip -> column 2: label 12.
    assert labels[0, 0] == 15 and labels[0, 9] == 12


def test_the_image_moves_with_its_labels():
    """A 24 x 40 image of 4 x 4 blocks, block (r, c) colored by label 10 r + c: at the three
    moved pairs the augmented image (area-resized from its own resolution) shows exactly the
    color of the pair's original pixel (each output pixel there covers a single block)."""
    image = _color(np.kron(LABELS, np.ones((4, 4), dtype=np.uint8)))
    out = crop_image(image, CROP)
    assert out.shape == (*SIZE, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[[2, 5, 5], [3, 1, 8]], _color(np.array([24, 45, 42])))


@pytest.mark.parametrize('seed', range(20))
def test_every_kept_pair_keeps_its_label(seed):
    """Random grids, crops and flips: every pixel of the grid as a pair; exactly the pixels in
    the crop are kept, and the transformed label map reads each one's own label."""
    rng = np.random.default_rng(seed)
    size = (int(rng.integers(1, 40)), int(rng.integers(1, 60)))
    height, width = int(rng.integers(1, size[0] + 1)), int(rng.integers(1, size[1] + 1))
    crop = CropFlip(int(rng.integers(0, size[0] - height + 1)),
                    int(rng.integers(0, size[1] - width + 1)), height, width, size,
                    bool(rng.integers(0, 2)))
    labels = np.arange(size[0] * size[1], dtype=np.int64).reshape(size)
    rows, cols = np.indices(size).reshape(2, -1)
    keep, new_rows, new_cols = crop_pairs(rows, cols, crop)
    assert keep.sum() == height * width
    assert (0 <= new_rows).all() and (new_rows < size[0]).all()
    assert (0 <= new_cols).all() and (new_cols < size[1]).all()
    np.testing.assert_array_equal(crop_map(labels, crop)[new_rows, new_cols],
                                  labels[rows[keep], cols[keep]])


def test_the_whole_image_without_flip_changes_nothing():
    whole = CropFlip.whole(SIZE)
    rows, cols = np.indices(SIZE).reshape(2, -1)
    keep, new_rows, new_cols = crop_pairs(rows, cols, whole)
    assert keep.all() and np.array_equal(new_rows, rows) and np.array_equal(new_cols, cols)
    np.testing.assert_array_equal(crop_map(LABELS, whole), LABELS)
    image = np.random.default_rng(0).integers(0, 256, (45, 80, 3), dtype=np.uint8)
    np.testing.assert_array_equal(crop_image(image, whole), cv2.resize(
        image, (10, 6), interpolation=cv2.INTER_AREA))
    flipped = CropFlip.whole(SIZE, flip=True)  # the flip alone: c -> 9 - c
    _, _, mirrored = crop_pairs(rows, cols, flipped)
    np.testing.assert_array_equal(mirrored, 9 - cols)
    np.testing.assert_array_equal(crop_map(LABELS, flipped), LABELS[:, ::-1])
    with pytest.raises(ValueError, match='does not fit'):
        CropFlip(5, 0, 2, 3, SIZE)


def test_draw_crop_follows_scale_and_ratio_and_the_seed():
    size = (224, 416)
    boxes = [draw_crop(size, (0.3, 1.0), (14 / 9, 17 / 9), np.random.default_rng(s))
             for s in range(200)]
    assert all(b is not None for b in boxes)
    for top, left, height, width in boxes:
        assert 0 <= top and top + height <= 224 and 0 <= left and left + width <= 416
        assert 14 / 9 - 0.02 <= width / height <= 17 / 9 + 0.02  # up to rounding
        assert 0.3 - 0.01 <= height * width / (224 * 416) <= 1.0
    assert boxes[3] == draw_crop(size, (0.3, 1.0), (14 / 9, 17 / 9), np.random.default_rng(3))
    assert len(set(boxes)) > 150
    # a crop 10-20 times as wide as high cannot fit 6 x 10 at 90 % of the area
    assert draw_crop(SIZE, (0.9, 1.0), (10.0, 20.0), np.random.default_rng(0)) is None


def test_crops_are_redrawn_until_enough_pairs_fall_inside():
    """4 pairs in the top-left 2 x 2 corner of a 60 x 100 grid, fewer than min_pairs: a crop
    is accepted only with more than 75 % of them, i.e. all 4; else the whole image is kept."""
    rows, cols = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
    config = ImageAugmentConfig(enabled=True, flip=0.0)
    for seed in range(30):
        crop = draw_crop_flip((60, 100), rows, cols, config, np.random.default_rng(seed))
        assert crop_pairs(rows, cols, crop)[0].all() and not crop.flip
    # one draw of a small crop that cannot reach the corner: the whole image, flipped
    far = ImageAugmentConfig(enabled=True, scale=(0.01, 0.01), ratio=(1.0, 1.0), flip=1.0,
                             max_draws=1)
    crops = [draw_crop_flip((60, 100), rows, cols, far, np.random.default_rng(s))
             for s in range(30)]
    assert any(c == CropFlip.whole((60, 100), flip=True) for c in crops)
    for crop in crops:
        assert crop.flip and (crop == CropFlip.whole((60, 100), flip=True)
                              or crop_pairs(rows, cols, crop)[0].all())
    # enough pairs in absolute numbers: min_pairs = 0 accepts any crop holding one pair
    many = ImageAugmentConfig(enabled=True, min_pairs=0, min_pair_fraction=1.0)
    crop = draw_crop_flip((60, 100), rows, cols, many, np.random.default_rng(0))
    assert crop_pairs(rows, cols, crop)[0].any()


def test_config_is_off_by_default_and_refuses_the_cns_latent_loss():
    assert load_config(None).data.image_augment == ImageAugmentConfig()
    assert ImageAugmentConfig().enabled is False
    with pytest.raises(ConfigError, match=r'data\.image_augment\.enabled.*cns\.latent: false'):
        load_config(None, ['data.image_augment.enabled=true'])
    config = load_config(None, ['data.image_augment.enabled=true', 'cns.latent=false',
                                'data.image_augment.scale=[0.5, 1]'])
    assert config.data.image_augment.scale == (0.5, 1.0)
    assert load_config(None, ['method=clip2scene', 'data.image_augment.enabled=true'])
    with pytest.raises(ConfigError, match=r'data\.image_augment\.scale'):
        load_config(None, ['data.image_augment.scale=[0.5, 1.5]'])
    with pytest.raises(ConfigError, match=r'data\.image_augment\.flip'):
        load_config(None, ['data.image_augment.flip=2'])
