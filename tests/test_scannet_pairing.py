"""Point <-> pixel pairing with the depth-image check (RGB-D, ScanNet) against a brute force."""

from __future__ import annotations

import numpy as np
import pytest

from cns_ros.teachers.lifting import CameraSet, LiftingConfig, compute_pairs

K = np.array([[50.0, 0.0, 31.5], [0.0, 50.0, 23.5], [0.0, 0.0, 1.0]])
W, H = 64, 48
OCCLUDER = (slice(10, 30), slice(20, 40))  # rows, cols of the near square


def _pose() -> np.ndarray:
    """camera-to-world: a yaw of 30 degrees and an offset (nothing axis aligned)."""
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    pose = np.eye(4)
    pose[:3, :3] = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
    pose[:3, 3] = [1.0, -2.0, 0.5]
    return pose


def _depth_image() -> np.ndarray:
    """A wall 3 m away with a square 1.5 m away in front of it; one invalid pixel."""
    depth = np.full((H, W), 3.0, dtype=np.float32)
    depth[OCCLUDER] = 1.5
    depth[40, 5] = 0.0
    return depth


def _scene_points() -> tuple[np.ndarray, np.ndarray]:
    """Points (camera frame) at every pixel centre on the wall and on the square."""
    rows, cols = np.mgrid[0:H, 0:W]
    wall_z = np.full(rows.shape, 3.0)
    near_z = np.full(rows.shape, 1.5)
    points = []
    for z in (wall_z, near_z):
        x = (cols - K[0, 2]) * z / K[0, 0]
        y = (rows - K[1, 2]) * z / K[1, 1]
        points.append(np.stack([x, y, z], -1).reshape(-1, 3))
    return np.concatenate(points), np.concatenate([np.zeros(H * W), np.ones(H * W)])


def _brute_force(cam_points: np.ndarray, depth: np.ndarray, tolerance: float) -> set[tuple]:
    """(point, row, col) kept by an explicit per-point loop (rounding to the pixel centre)."""
    kept = set()
    for i, (x, y, z) in enumerate(cam_points):
        if z <= 0.1:
            continue
        col = int(np.floor(K[0, 0] * x / z + K[0, 2] + 0.5))
        row = int(np.floor(K[1, 1] * y / z + K[1, 2] + 0.5))
        if not (0 <= row < H and 0 <= col < W):
            continue
        measured = depth[row, col]
        if measured > 0 and abs(measured - z) <= tolerance:
            kept.add((i, row, col))
    return kept


def _cameras(pose: np.ndarray) -> CameraSet:
    return CameraSet(names=('f0',), cams_from_points=np.linalg.inv(pose)[None],
                     intrinsics=K[None], image_sizes=np.array([[W, H]]))


def test_absolute_check_matches_brute_force_with_occlusion() -> None:
    pose = _pose()
    cam_points, on_square = _scene_points()
    world = cam_points @ pose[:3, :3].T + pose[:3, 3]
    depth = _depth_image()
    config = LiftingConfig(min_depth=0.1, depth_check='absolute')
    pairs = compute_pairs(world, _cameras(pose), config=config, depths=[depth])
    got = set(zip(pairs.point.tolist(), pairs.row.tolist(), pairs.col.tolist(), strict=True))
    assert got == _brute_force(cam_points, depth, 0.05)
    # independently known: wall points behind the square and the square's points outside
    # it are dropped; the invalid pixel drops its wall point.
    wall_behind = np.zeros((H, W), bool)
    wall_behind[OCCLUDER] = True
    kept = np.zeros(2 * H * W, bool)
    kept[pairs.point] = True
    wall, square = kept[:H * W].reshape(H, W), kept[H * W:].reshape(H, W)
    assert not wall[wall_behind].any() and not wall[40, 5]
    assert wall[~wall_behind].sum() == H * W - wall_behind.sum() - 1
    assert square[OCCLUDER].all() and square.sum() == wall_behind.sum()
    assert on_square[pairs.point].sum() == wall_behind.sum()


def test_relative_check_keeps_what_the_absolute_one_drops() -> None:
    pose = np.eye(4)
    depth = np.full((H, W), 2.0, dtype=np.float32)
    point = np.array([[0.0, 0.0, 2.3]])  # 30 cm off: outside 5 cm, inside 25 % of 2 m (0.5 m)
    cams = _cameras(pose)
    absolute = compute_pairs(point, cams, config=LiftingConfig(
        min_depth=0.1, depth_check='absolute'), depths=[depth])
    relative = compute_pairs(point, cams, config=LiftingConfig(
        min_depth=0.1, depth_check='relative'), depths=[depth])
    tight = compute_pairs(point, cams, config=LiftingConfig(
        min_depth=0.1, depth_check='relative', depth_rel_tolerance=0.1), depths=[depth])
    assert len(absolute) == 0 and len(relative) == 1 and len(tight) == 0


def test_depth_image_at_another_resolution_is_read_at_the_same_place() -> None:
    pose = _pose()
    cam_points, _ = _scene_points()
    world = cam_points @ pose[:3, :3].T + pose[:3, 3]
    full = _depth_image()
    full[40, 5] = 3.0
    half = full[::2, ::2]  # pixel-centre mapping: half-res pixel (r, c) covers full (2r, 2c)..
    config = LiftingConfig(min_depth=0.1, depth_check='absolute')
    a = compute_pairs(world, _cameras(pose), config=config, depths=[full])
    b = compute_pairs(world, _cameras(pose), config=config, depths=[half])
    assert np.array_equal(a.point, b.point) and np.array_equal(a.row, b.row)


def test_depth_check_needs_depth_images() -> None:
    with pytest.raises(ValueError, match='depth images'):
        compute_pairs(np.zeros((1, 3)), _cameras(np.eye(4)),
                      config=LiftingConfig(depth_check='absolute'))
    with pytest.raises(ValueError, match="depth_check: invalid value 'zbuffer'; expected one"):
        LiftingConfig(depth_check='zbuffer')
