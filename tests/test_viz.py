"""cns_ros.viz: bird's-eye-view rasters and the predicted-vs-ground-truth PNG.

A synthetic cloud is drawn: dense square patches of known classes at known places; the PNG's
size is checked and the pixel colors at those places must be the class colors (prediction on
the left panel, ground truth on the right).
"""

from __future__ import annotations

import numpy as np
import pytest

from cns_ros.viz import BACKGROUND, NO_CLASS, rasterize_bev, render_bev
from cns_ros.vocabulary import nuscenes16

PIL = pytest.importorskip('PIL.Image')


def patch(cx: float, cy: float, z: float, half: float = 2.0, step: float = 0.1) -> np.ndarray:
    """Points filling the square |x - cx|, |y - cy| <= half at height z."""
    grid = np.arange(-half, half + 1e-9, step)
    xx, yy = np.meshgrid(grid + cx, grid + cy, indexing='ij')
    return np.stack([xx.ravel(), yy.ravel(), np.full(xx.size, z)], axis=1)


def scene() -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, tuple[float, float]]]:
    """(xyz, pred, gt, centres): three patches; the front one is predicted wrongly."""
    names = nuscenes16().names
    car, road, ped, veg = (names.index(n) for n in ('car', 'driveable_surface', 'pedestrian',
                                                    'vegetation'))
    centres = {'front': (20.0, 0.0), 'left': (0.0, 15.0), 'back_right': (-10.0, -25.0)}
    parts, pred, gt = [], [], []
    for (cx, cy), p, g in zip(centres.values(), (car, road, veg), (ped, road, veg),
                              strict=True):
        points = patch(cx, cy, z=0.5)
        parts.append(points)
        pred.append(np.full(len(points), p))
        gt.append(np.full(len(points), g))
    return np.concatenate(parts), np.concatenate(pred), np.concatenate(gt), centres


def test_raster_orientation_highest_point_wins_and_no_class_color():
    colors = np.array([[255, 0, 0], [0, 255, 0]], dtype=np.uint8)
    xyz = np.array([[9.9, 0.05, 0.0],     # forward: top row, middle column
                    [0.05, 9.9, 0.0],     # left: left column, middle row
                    [0.05, 9.9, 1.0],     # same cell, higher: wins
                    [-9.9, -9.9, 0.0],    # back right: bottom-right corner
                    [50.0, 0.0, 0.0]])    # outside the view: dropped
    labels = np.array([0, 0, 1, 7, 0])  # 7 is no class of a 2-class palette
    image = rasterize_bev(xyz, labels, colors, extent=10.0, resolution=1.0, dilate=0)
    assert image.shape == (20, 20, 3) and image.dtype == np.uint8
    assert tuple(image[0, 9]) == (255, 0, 0)
    assert tuple(image[9, 0]) == (0, 255, 0)
    assert tuple(image[19, 19]) == NO_CLASS
    assert (image.reshape(-1, 3) != BACKGROUND).any(axis=1).sum() == 3
    grown = rasterize_bev(xyz[:1], labels[:1], colors, extent=10.0, resolution=1.0, dilate=1)
    assert (grown.reshape(-1, 3) == (255, 0, 0)).all(axis=1).sum() == 4  # 3 in view + itself
    with pytest.raises(ValueError, match='labels'):
        rasterize_bev(xyz, labels[:2], colors)


def test_png_has_the_size_and_the_class_colors_at_the_points(tmp_path):
    vocab = nuscenes16()
    xyz, pred, gt, centres = scene()
    path = tmp_path / 'out' / 'bev.png'
    layout = render_bev(path, xyz, pred, gt, vocab.names, vocab.colors, title='test',
                        size=(1200, 700))
    assert path.is_file() and layout.size == (1200, 700)
    image = np.asarray(PIL.open(path).convert('RGB'))
    assert image.shape == (700, 1200, 3)
    colors = vocab.colors
    for panel, labels in ((0, pred), (1, gt)):
        left, top, right, bottom = layout.panels[panel]
        assert 0 <= left < right <= 1200 and 0 <= top < bottom <= 700
        for i, (cx, cy) in enumerate(centres.values()):
            column, row = layout.pixel(panel, cx, cy)
            expected = colors[labels[i * len(patch(0, 0, 0))]]
            assert tuple(image[row, column]) == tuple(expected), (panel, i)
        # the view's centre (no points) is background
        column, row = layout.pixel(panel, 0.0, 0.0)
        assert tuple(image[row, column]) == BACKGROUND
    # left panel is left of the right one; forward (+x) is up, left (+y) is left
    assert layout.panels[0][2] < layout.panels[1][0]
    front, left = layout.pixel(0, *centres['front']), layout.pixel(0, *centres['left'])
    assert front[1] < left[1] and left[0] < front[0]


def test_single_panel_without_ground_truth(tmp_path):
    vocab = nuscenes16()
    xyz, pred, _, centres = scene()
    layout = render_bev(tmp_path / 'pred.png', xyz, pred, None, vocab.names, vocab.colors,
                        size=(800, 600))
    assert len(layout.panels) == 1
    image = np.asarray(PIL.open(tmp_path / 'pred.png').convert('RGB'))
    column, row = layout.pixel(0, *centres['left'])
    assert tuple(image[row, column]) == tuple(vocab.colors[pred[len(patch(0, 0, 0))]])
