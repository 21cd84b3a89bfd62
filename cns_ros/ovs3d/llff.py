"""LLFF camera files (``poses_bounds.npy``) and the standard forward-facing pose processing.

An LLFF capture stores one row of 17 numbers per image (float64 ``(N, 17)``): the 3x5 matrix
``[R | t | hwf]`` flattened row by row, then ``(near, far)``.

* ``R`` (3x3): the camera's axes in the world (COLMAP's world frame), as columns in LLFF's
  order **down, right, back** (the camera looks along -back).
* ``t`` (3): the camera centre in the world.
* ``hwf`` (3): image height, width (px) and focal length (px) of the images the poses were
  solved for. They need not be the size of the image files next to them.
* ``near, far``: the closest and farthest scene depth (along the viewing axis) seen in the view.

Processing (what TensoRF and 3D-OVS apply before building rays; ovs3d.md section 2):

1. **Reorder** the rotation columns to ``[y, -x, z]``: down-right-back becomes right-up-back,
   the "NeRF" convention of :mod:`cns_ros.ovs3d` (x right, y up, looking along -z).
2. **Recentre** on the average pose: its centre is the mean camera centre, its z axis the mean
   back axis, its x axis ``normalize(mean_up x z)``, its y axis ``z x x``. Every pose is then
   expressed in that frame: ``R' = R_avg^T R``, ``t' = R_avg^T (t - c_avg)``.
3. **Scale** centres and bounds by ``scale = 1 / (0.75 * min(near))``, so that 0.75 times the
   nearest depth maps to 1 (the NDC near plane) and the nearest depth becomes 4/3.

A world point ``p`` is therefore at ``scale * R_avg^T (p - c_avg)`` in the processed frame
(:func:`world_to_processed`). :func:`write_poses_bounds` is the inverse of the reorder, so
generated scenes write genuine LLFF files.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cns_ros.fileio import atomic_write_bytes

POSES_BOUNDS = 'poses_bounds.npy'
NEAR_FRACTION = 0.75
"""The nearest depth times this maps to 1 after scaling (the NDC near plane)."""


class LlffFormatError(ValueError):
    """A ``poses_bounds.npy`` that does not hold a valid LLFF capture."""


@dataclass(frozen=True, eq=False)
class LlffPoses:
    """The raw content of one ``poses_bounds.npy``.

    Attributes:
        c2w_llff: float64 [N,3,4] camera-to-world, columns (down, right, back, centre), world
            units of the capture.
        hwf: (H, W, focal) px as stored (the same for every view).
        bounds: float64 [N,2] (near, far) depths along the viewing axis, world units.
    """

    c2w_llff: np.ndarray
    hwf: tuple[int, int, float]
    bounds: np.ndarray


@dataclass(frozen=True, eq=False)
class ProcessedPoses:
    """Poses after the reorder, recentring and scaling (module docstring).

    Attributes:
        poses: float32 [N,3,4] camera-to-world, NeRF convention, processed frame.
        bounds: float32 [N,2] (near, far), processed units (min near = 1 / 0.75).
        average: float64 [3,4] the average pose (NeRF columns) in the capture's world: the
            processed frame's axes and origin.
        scale: processed units per world unit, ``1 / (0.75 * min(near))``.
    """

    poses: np.ndarray
    bounds: np.ndarray
    average: np.ndarray
    scale: float


def read_poses_bounds(path: str | os.PathLike[str]) -> LlffPoses:
    """Read and validate ``poses_bounds.npy``.

    Raises:
        LlffFormatError: naming the file, when it is not a float ``(N, 17)`` array with N >= 1,
            holds non-finite values, has views with differing or invalid hwf, or bounds with
            ``near <= 0`` or ``far <= near``.
    """
    path = Path(path)
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise LlffFormatError(f'{path}: not a readable .npy file ({error})') from error
    if array.ndim != 2 or array.shape[1] != 17 or array.shape[0] < 1:
        raise LlffFormatError(f'{path}: expected an (N, 17) array with N >= 1, found shape '
                              f'{array.shape}')
    if not np.issubdtype(array.dtype, np.floating) and not np.issubdtype(array.dtype,
                                                                         np.integer):
        raise LlffFormatError(f'{path}: expected a float array, found dtype {array.dtype}')
    array = array.astype(np.float64)
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        raise LlffFormatError(f'{path}: non-finite values in rows {np.flatnonzero(bad)[:8]}')
    mats = array[:, :15].reshape(-1, 3, 5)
    bounds = array[:, 15:17].copy()
    if (bounds[:, 0] <= 0).any() or (bounds[:, 1] <= bounds[:, 0]).any():
        raise LlffFormatError(f'{path}: bounds must satisfy 0 < near < far; found near in '
                              f'[{bounds[:, 0].min()}, {bounds[:, 0].max()}], far in '
                              f'[{bounds[:, 1].min()}, {bounds[:, 1].max()}]')
    return LlffPoses(c2w_llff=mats[:, :, :4].copy(), hwf=_hwf(mats[:, :, 4], path),
                     bounds=bounds)


def _hwf(columns: np.ndarray, path: Path) -> tuple[int, int, float]:
    """(H, W, focal) from the hwf columns float64 [N,3]; all views must agree."""
    if not np.array_equal(columns, np.broadcast_to(columns[:1], columns.shape)):
        raise LlffFormatError(f'{path}: hwf differs between views (first {columns[0]}, '
                              f'others e.g. {columns[(columns != columns[0]).any(1)][0]})')
    height, width, focal = (float(v) for v in columns[0])
    sizes_ok = all(v >= 1 and abs(v - round(v)) < 1e-3 for v in (height, width))
    if not sizes_ok or focal <= 0:
        raise LlffFormatError(f'{path}: hwf must be positive integer H, W and a positive '
                              f'focal, found {columns[0].tolist()}')
    return round(height), round(width), focal


def llff_to_nerf(c2w_llff: np.ndarray) -> np.ndarray:
    """Reorder [down, right, back, t] -> [right, up, back, t], i.e. columns ``[y, -x, z, t]``.

    Args:
        c2w_llff: [..., 3, >=4] LLFF poses (extra columns, e.g. hwf, are dropped).

    Returns:
        [..., 3, 4] NeRF-convention camera-to-world, same dtype.
    """
    c = c2w_llff
    return np.concatenate([c[..., 1:2], -c[..., 0:1], c[..., 2:4]], axis=-1)


def nerf_to_llff(c2w_nerf: np.ndarray) -> np.ndarray:
    """The inverse of :func:`llff_to_nerf`: [right, up, back, t] -> [down, right, back, t]."""
    c = c2w_nerf
    return np.concatenate([-c[..., 1:2], c[..., 0:1], c[..., 2:4]], axis=-1)


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def average_pose(c2w: np.ndarray) -> np.ndarray:
    """The average of NeRF-convention poses [N,3,4]: float64 [3,4] (orthonormal rotation).

    Centre = mean centre; z = normalize(mean z axis); x = normalize(mean y axis x z); y = z x x.
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    centre = c2w[:, :, 3].mean(axis=0)
    z = _normalize(c2w[:, :, 2].mean(axis=0))
    x = _normalize(np.cross(c2w[:, :, 1].mean(axis=0), z))
    y = np.cross(z, x)
    return np.stack([x, y, z, centre], axis=1)


def recentre(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Express NeRF-convention poses [N,3,4] in the frame of their average pose.

    Returns:
        (float64 [N,3,4] recentred poses, float64 [3,4] the average pose in the input frame).
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    average = average_pose(c2w)
    rot_t = average[:, :3].T
    rotations = rot_t @ c2w[:, :, :3]
    centres = (c2w[:, :, 3] - average[:, 3]) @ rot_t.T
    return np.concatenate([rotations, centres[:, :, None]], axis=2), average


def near_scale(bounds: np.ndarray) -> float:
    """Processed units per world unit: ``1 / (0.75 * min(near))`` for bounds [N,2]."""
    return float(1.0 / (NEAR_FRACTION * np.min(bounds[:, 0])))


def process_poses(c2w_llff: np.ndarray, bounds: np.ndarray) -> ProcessedPoses:
    """Reorder, recentre and scale LLFF poses (module docstring).

    Args:
        c2w_llff: [N,3,4] (or [N,3,5]) LLFF poses, world units.
        bounds: [N,2] (near, far), world units.
    """
    recentred, average = recentre(llff_to_nerf(np.asarray(c2w_llff, dtype=np.float64)))
    scale = near_scale(np.asarray(bounds, dtype=np.float64))
    recentred[:, :, 3] *= scale
    return ProcessedPoses(poses=recentred.astype(np.float32),
                          bounds=(np.asarray(bounds, dtype=np.float64) * scale).astype(
                              np.float32),
                          average=average, scale=scale)


def world_to_processed(points: np.ndarray, average: np.ndarray, scale: float) -> np.ndarray:
    """Capture-world points [..., 3] -> processed frame: ``scale * R_avg^T (p - c_avg)``."""
    points = np.asarray(points, dtype=np.float64)
    return scale * ((points - average[:, 3]) @ average[:, :3])


def processed_to_world(points: np.ndarray, average: np.ndarray, scale: float) -> np.ndarray:
    """Processed-frame points [..., 3] -> capture world: ``R_avg p / scale + c_avg`` (the
    inverse of :func:`world_to_processed`)."""
    points = np.asarray(points, dtype=np.float64)
    return (points / scale) @ average[:, :3].T + average[:, 3]


def write_poses_bounds(path: str | os.PathLike[str], c2w_nerf: np.ndarray,
                       hwf: tuple[int, int, float], bounds: np.ndarray) -> None:
    """Write an LLFF ``poses_bounds.npy`` (float64 ``(N, 17)``), atomically.

    Args:
        path: Output file.
        c2w_nerf: [N,3,4] NeRF-convention camera-to-world (right, up, back, centre), world
            units; stored with the inverse of the reorder, as (down, right, back, centre).
        hwf: (H, W, focal) px, stored in every row.
        bounds: [N,2] (near, far) depths along the viewing axis, world units.
    """
    c2w_nerf = np.asarray(c2w_nerf, dtype=np.float64)
    bounds = np.asarray(bounds, dtype=np.float64)
    n = c2w_nerf.shape[0]
    if c2w_nerf.shape != (n, 3, 4) or bounds.shape != (n, 2):
        raise ValueError(f'{path}: expected c2w [N,3,4] and bounds [N,2], found '
                         f'{c2w_nerf.shape} and {bounds.shape}')
    hwf_column = np.broadcast_to(np.asarray(hwf, dtype=np.float64)[None, :, None], (n, 3, 1))
    mats = np.concatenate([nerf_to_llff(c2w_nerf), hwf_column], axis=2)
    array = np.concatenate([mats.reshape(n, 15), bounds], axis=1)
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())
