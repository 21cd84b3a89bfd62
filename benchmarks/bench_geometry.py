"""Geometry speed on a nuScenes-sized sweep: multi-camera projection and voxelization.

A synthetic 32-ring x 1080-azimuth LiDAR sweep (34,560 points, ranges 1.5-70 m) is projected
into a six-camera nuScenes-like rig (1600x900) and voxelized at 0.1 m with the package's one
voxelization (``cns_ros.models.sparse.voxelize_cloud``; torch on one thread), alone and as the
live node calls it (``voxelize_batch`` of one cloud with the mean of 4 features per voxel).
Prints a table and writes
``benchmarks/results/geometry.json``. Budget context (DESIGN.md): 50 ms per sweep at 20 Hz and
<= 5 ms of node overhead outside the network, so these steps should take a few ms.

Usage: ``python benchmarks/bench_geometry.py [--repeats R] [--voxel-size S] [--all-cores]``
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from _common import pin_to_one_core, single_core_parser, time_call, write_results

from cns_ros import geometry as geo
from cns_ros.models.sparse import voxelize_batch, voxelize_cloud

CAMERA_YAWS_DEG = (0.0, 55.0, -55.0, 180.0, 110.0, -110.0)  # front, fl, fr, back, bl, br
IMAGE_SIZE = (1600, 900)
K_NUSCENES = np.array([[1266.4, 0.0, 816.3], [0.0, 1266.4, 491.5], [0.0, 0.0, 1.0]])
PLUMB_BOB = (-0.12, 0.03, 0.0005, -0.0003, 0.0)


def make_sweep(rings: int = 32, azimuths: int = 1080, seed: int = 0) -> np.ndarray:
    """(rings * azimuths, 3) float32 points in the LiDAR frame, metres."""
    rng = np.random.default_rng(seed)
    elevation = np.radians(np.linspace(-30.0, 10.0, rings))[:, None]
    azimuth = np.linspace(-math.pi, math.pi, azimuths, endpoint=False)[None, :]
    ranges = rng.uniform(1.5, 70.0, size=(rings, azimuths))
    points = np.stack([ranges * np.cos(elevation) * np.cos(azimuth),
                       ranges * np.cos(elevation) * np.sin(azimuth),
                       ranges * np.sin(elevation) + 1.8], axis=-1)
    return points.reshape(-1, 3).astype(np.float32)


def make_rig() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cams_from_lidar (6, 4, 4), intrinsics (6, 3, 3), image sizes (6, 2)."""
    tfs = []
    for yaw_deg in CAMERA_YAWS_DEG:
        yaw = math.radians(yaw_deg)
        forward = [math.cos(yaw), math.sin(yaw), 0.0]
        right = [math.sin(yaw), -math.cos(yaw), 0.0]
        lidar_from_cam = geo.make_transform(np.c_[right, [0.0, 0.0, -1.0], forward],
                                            [0.5 * math.cos(yaw), 0.5 * math.sin(yaw), -0.3])
        tfs.append(geo.invert_transform(lidar_from_cam))
    m = len(tfs)
    return np.stack(tfs), np.repeat(K_NUSCENES[None], m, axis=0), np.tile(IMAGE_SIZE, (m, 1))


def run(repeats: int, voxel_size: float) -> dict[str, Any]:
    points = make_sweep()
    cams, intrinsics, sizes = make_rig()
    distortion = [PLUMB_BOB] * len(cams)
    projection = geo.project_to_cameras(points, cams, intrinsics, sizes)
    torch.set_num_threads(1)
    xyz = torch.from_numpy(points)
    voxels = voxelize_cloud(xyz, voxel_size)
    features = torch.from_numpy(
        np.random.default_rng(1).normal(size=(len(points), 4)).astype(np.float32))
    timings = {
        'project_to_cameras (6 cams, D=None)': time_call(
            lambda: geo.project_to_cameras(points, cams, intrinsics, sizes), repeats),
        'project_to_cameras (6 cams, plumb_bob)': time_call(
            lambda: geo.project_to_cameras(points, cams, intrinsics, sizes, distortion), repeats),
        f'voxelize_cloud ({voxel_size} m)': time_call(
            lambda: voxelize_cloud(xyz, voxel_size), repeats),
        'voxelize_batch (1 cloud, mean of 4 features)': time_call(
            lambda: voxelize_batch([xyz], [features], voxel_size), repeats),
        'transform_points (1 transform)': time_call(
            lambda: geo.transform_points(cams[0], points), repeats),
    }
    return {'points': len(points), 'cameras': len(cams), 'voxel_size_m': voxel_size,
            'voxels': len(voxels.counts),
            'points_in_any_camera': int(projection.valid.any(axis=0).sum()),
            'timings': timings}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = single_core_parser(__doc__.splitlines()[0], repeats=100)
    parser.add_argument('--voxel-size', type=float, default=0.1, help='voxel edge in metres')
    args = parser.parse_args(argv)
    pinned = pin_to_one_core(args.all_cores)
    results = run(args.repeats, args.voxel_size)
    results['one_core'] = pinned
    print(f"geometry, {results['points']} points, {results['cameras']} cameras, "
          f"{results['voxels']} voxels at {results['voxel_size_m']} m, "
          f"{'one core' if results['one_core'] else 'all cores'}")
    print(f"{'case':46s} {'median ms':>10s} {'p90 ms':>8s}")
    for case, timing in results['timings'].items():
        print(f"{case:46s} {timing['median_ms']:10.3f} {timing['p90_ms']:8.3f}")
    print(f"written: {write_results('geometry', results, args.out_dir)}")
    return results


if __name__ == '__main__':
    main()
