"""Rigid transforms, pinhole projection, ego-motion compensation, pixel grids (numpy only).

Voxelization is not here: :func:`cns_ros.models.sparse.voxelize_cloud` (torch) is the one
implementation, shared by the live node, training and the training data.

Quaternions are ROS ``(x, y, z, w)``; nuScenes ``(w, x, y, z)`` is converted only by
:func:`quat_xyzw_from_wxyz` / :func:`quat_wxyz_from_xyzw`. A transform ``a_from_b`` is a (4, 4)
float64 matrix with ``p_a = a_from_b @ p_b`` (metres). Camera points are in the optical frame
(x right, y down, z forward); pixels follow ROS/OpenCV: integer coordinates are pixel centres, so
``uv`` lies in pixel ``floor(uv + 0.5)`` as ``(col, row)``. Distortion is ``CameraInfo.D``:
plumb_bob ``(k1, k2, p1, p2[, k3])`` or rational_polynomial ``(k1, k2, p1, p2, k3, k4, k5, k6)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

_RIGID_ATOL = 1e-5
_INT32 = np.iinfo(np.int32)


def _array(name: str, value: ArrayLike, shape: Sequence[int | str], *, batched: bool = False,
           finite: bool = True, dtype: type | None = np.float64) -> np.ndarray:
    """Convert to an array; check its (trailing) shape, a str dim = any size, and finiteness."""
    arr = np.asarray(value, dtype=dtype)
    tail = arr.shape[max(arr.ndim - len(shape), 0):]
    ok = arr.ndim == len(shape) or (batched and arr.ndim > len(shape))
    if not ok or any(isinstance(e, int) and e != f for e, f in zip(shape, tail, strict=False)):
        dims = ["..."] * batched + [str(d) for d in shape]
        want = "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"
        raise ValueError(f"{name} must have shape {want}, found {arr.shape}")
    if finite and arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        bad = np.count_nonzero(~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1))
        unit = "row(s)" if arr.ndim > 1 else "value(s)"
        raise ValueError(f"{name} must be finite, found {bad} {unit} with NaN/inf")
    return arr


def _transform(name: str, value: ArrayLike, batched: bool = False) -> np.ndarray:
    """Check a homogeneous transform: (4, 4) (or (..., 4, 4)), finite, bottom row 0 0 0 1."""
    arr = _array(name, value, (4, 4), batched=batched)
    if not np.allclose(arr[..., 3, :], [0.0, 0.0, 0.0, 1.0], atol=_RIGID_ATOL):
        raise ValueError(f"{name} must have bottom row [0, 0, 0, 1], found {arr[..., 3, :]}")
    return arr


def _intrinsics(name: str, value: ArrayLike, batched: bool = False) -> np.ndarray:
    """Check camera matrices: (3, 3), finite, fx > 0, fy > 0, K[1,0] = 0, bottom row 0 0 1."""
    k = _array(name, value, (3, 3), batched=batched)
    if np.any(k[..., 0, 0] <= 0) or np.any(k[..., 1, 1] <= 0) or not (
            np.allclose(k[..., 1, 0], 0.0) and np.allclose(k[..., 2, :], [0.0, 0.0, 1.0])):
        raise ValueError(f"{name} needs focal lengths K[0,0], K[1,1] > 0, K[1,0] = 0 and bottom "
                         f"row [0, 0, 1], found {k.tolist()}")
    return k


def _distortion8(name: str, value: ArrayLike | None) -> np.ndarray:
    """Return distortion coefficients padded to (8,) float64; ``None`` or empty gives zeros."""
    d = np.zeros(0) if value is None else np.asarray(value, dtype=np.float64)
    if d.ndim > 1 or d.size not in (0, 4, 5, 8) or not np.all(np.isfinite(d)):
        raise ValueError(f"{name} must be finite with shape (0,), (4,), (5,) or (8,), found "
                         f"shape {d.shape}: {d.tolist()}")
    return np.concatenate([d.reshape(-1), np.zeros(8 - d.size)])


def _scalar(name: str, value: float, integer: bool = False) -> float:
    """Check a positive integer (``integer``) or a finite number >= 0."""
    if not (np.isfinite(value) and (value > 0 and int(value) == value if integer else value >= 0)):
        raise ValueError(f"{name} must be {'a positive integer' if integer else 'finite and >= 0'}"
                         f", found {value}")
    return value


def quat_xyzw_from_wxyz(q: ArrayLike) -> np.ndarray:
    """Returns nuScenes ``(w, x, y, z)`` quaternions (..., 4) as float64 ROS ``(x, y, z, w)``."""
    return np.roll(_array("q", q, (4,), batched=True), -1, axis=-1)


def quat_wxyz_from_xyzw(q: ArrayLike) -> np.ndarray:
    """Returns ROS ``(x, y, z, w)`` quaternions (..., 4) as float64 nuScenes ``(w, x, y, z)``."""
    return np.roll(_array("q", q, (4,), batched=True), 1, axis=-1)


def quat_to_matrix(q_xyzw: ArrayLike) -> np.ndarray:
    """Returns float64 (..., 3, 3) rotation matrices of quaternions (normalized first).

    Args:
        q_xyzw: Shape (..., 4), ROS order (x, y, z, w), any non-zero norm (else ValueError).
    """
    q = _array("q_xyzw", q_xyzw, (4,), batched=True)
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(norm < 1e-12):
        raise ValueError(f"q_xyzw has {np.count_nonzero(norm < 1e-12)} zero-norm quaternion(s)")
    x, y, z, w = np.moveaxis(q / norm, -1, 0)
    rows = [
        [1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y - z * w), 2.0 * (x * z + y * w)],
        [2.0 * (x * y + z * w), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z - x * w)],
        [2.0 * (x * z - y * w), 2.0 * (y * z + x * w), 1.0 - 2.0 * (x * x + y * y)],
    ]
    return np.stack([np.stack(row, axis=-1) for row in rows], axis=-2)


def matrix_to_quat(rotation: ArrayLike) -> np.ndarray:
    """Returns float64 unit quaternions (..., 4), order (x, y, z, w), canonical ``w >= 0``.

    Vectorized Shepperd method: of the symmetric matrix of products ``4 q_i q_j``, the row with the
    largest diagonal entry is normalized; well conditioned for every rotation (180 degrees too).

    Args:
        rotation: Rotation matrices, shape (..., 3, 3).
    """
    r = _array("rotation", rotation, (3, 3), batched=True)
    (a, b, c), (d, e, f), (g, h, i) = np.moveaxis(r, (-2, -1), (0, 1))
    xy, xz, yz, xw, yw, zw = b + d, c + g, f + h, h - f, c - g, d - b  # each 4 * q_i * q_j
    prod = np.stack([
        np.stack([1.0 + a - e - i, xy, xz, xw], axis=-1),
        np.stack([xy, 1.0 - a + e - i, yz, yw], axis=-1),
        np.stack([xz, yz, 1.0 - a - e + i, zw], axis=-1),
        np.stack([xw, yw, zw, 1.0 + a + e + i], axis=-1),
    ], axis=-2)
    best = np.argmax(np.diagonal(prod, axis1=-2, axis2=-1), axis=-1)
    row = np.take_along_axis(prod, best[..., None, None], axis=-2)[..., 0, :]
    q = row / np.linalg.norm(row, axis=-1, keepdims=True)
    return np.where(q[..., 3:4] < 0.0, -q, q)


def make_transform(rotation: ArrayLike, translation: ArrayLike) -> np.ndarray:
    """Returns the float64 (4, 4) homogeneous transform ``a_from_b``.

    Args:
        rotation: (3, 3) rotation matrix or (4,) quaternion (x, y, z, w), frame b to frame a.
        translation: (3,) metres: the origin of frame b expressed in frame a.
    """
    rot = np.asarray(rotation, dtype=np.float64)
    if rot.shape not in ((3, 3), (4,)):
        raise ValueError(f"rotation must have shape (3, 3) or (4,), found {rot.shape}")
    out = np.eye(4)
    out[:3, :3] = quat_to_matrix(rot) if rot.shape == (4,) else _array("rotation", rot, (3, 3))
    out[:3, 3] = _array("translation", translation, (3,))
    return out


def transform_from_xyz_rpy(values: ArrayLike) -> np.ndarray:
    """Returns the float64 (4, 4) ``a_from_b`` of a ``[x, y, z, roll, pitch, yaw]`` list.

    The ROS convention of ``static_transform_publisher`` and URDF joints: ``(x, y, z)`` is the
    origin of frame b in frame a (metres), the rotation is ``Rz(yaw) @ Ry(pitch) @ Rx(roll)``
    (radians, fixed axes x, then y, then z). ``[0, 0, 0, -pi/2, 0, -pi/2]`` is the usual
    ``camera_link`` from ``camera_*_optical_frame`` rotation (x forward, y left, z up from x
    right, y down, z forward).

    Args:
        values: Six finite numbers.
    """
    v = _array("xyz_rpy", values, (6,))
    (cr, cp, cy), (sr, sp, sy) = np.cos(v[3:]), np.sin(v[3:])
    rot = np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                    [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                    [-sp, cp * sr, cp * cr]])
    return make_transform(rot, v[:3])


def invert_transform(transform: ArrayLike) -> np.ndarray:
    """Returns ``b_from_a`` (float64, same shape), inverting rigid transforms with ``R^T``.

    Args:
        transform: ``a_from_b``, shape (4, 4) or (..., 4, 4); a rotation part that is not
            orthonormal raises ValueError.
    """
    t = _transform("transform", transform, batched=True)
    rot_t = np.swapaxes(t[..., :3, :3], -1, -2)
    if not np.allclose(rot_t @ t[..., :3, :3], np.eye(3), atol=_RIGID_ATOL):
        raise ValueError("transform must be rigid: its 3x3 rotation part is not orthonormal")
    out = np.broadcast_to(np.eye(4), t.shape).copy()
    out[..., :3, :3] = rot_t
    out[..., :3, 3] = -(rot_t @ t[..., :3, 3:4])[..., 0]
    return out


def transform_points(transform: ArrayLike, points: ArrayLike) -> np.ndarray:
    """Returns points (N, 3) mapped from frame b to frame a, in the float dtype of ``points``.

    Computed in float64; float32 in gives float32 out, integer input gives float64.

    Args:
        transform: ``a_from_b``, shape (4, 4).
        points: Shape (N, 3), metres, frame b.
    """
    t = _transform("transform", transform)
    pts = _array("points", points, ("N", 3), dtype=None)
    out_dtype = pts.dtype if pts.dtype.kind == "f" else np.dtype(np.float64)
    out = pts.astype(np.float64, copy=False) @ t[:3, :3].T + t[:3, 3]
    return out.astype(out_dtype, copy=False)


def _polynomial(r2: np.ndarray, c1: np.ndarray, c2: np.ndarray, c3: np.ndarray) -> np.ndarray:
    """``1 + c1 r2 + c2 r2^2 + c3 r2^3`` by Horner's rule, in one new array."""
    out = c3 * r2
    for c in (c2, c1):
        out += c
        out *= r2
    out += 1.0
    return out


def _distort(x: np.ndarray, y: np.ndarray, d8: np.ndarray) -> None:
    """Distort normalized x, y in place: shape (N,) with d8 (8,), or (M, N) with d8 (M, 8)."""
    k1, k2, p1, p2, k3, k4, k5, k6 = (d8[..., j, None] for j in range(8))
    r2 = x * x
    r2 += y * y
    radial = _polynomial(r2, k1, k2, k3)
    if np.any(d8[..., 5:] != 0.0):
        radial /= _polynomial(r2, k4, k5, k6)
    if np.any(d8[..., 2:4] != 0.0):  # tangential terms, in place to limit large temporaries
        xy2 = 2.0 * x * y
        x2, y2 = np.square(x), np.square(y)
        x *= radial
        y *= radial
        for out, sq, p_sq, p_xy in ((x, x2, p2, p1), (y, y2, p1, p2)):
            sq *= 2.0
            sq += r2
            sq *= p_sq
            out += sq
            np.multiply(xy2, p_xy, out=sq)
            out += sq
    else:
        x *= radial
        y *= radial


def _pinhole(x: np.ndarray, y: np.ndarray, z: np.ndarray, k: np.ndarray, d8: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """Overwrite x, y with u, v. x, y, z (N,), k (3, 3), d8 (8,); or (M, N), (M, 3, 3), (M, 8)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inv_z = np.divide(1.0, z)
        inv_z[z <= 0.0] = np.nan
        x *= inv_z
        y *= inv_z
        if np.any(d8 != 0.0):
            _distort(x, y, d8)
        x *= k[..., 0, 0, None]
        if np.any(k[..., 0, 1] != 0.0):
            x += k[..., 0, 1, None] * y
        x += k[..., 0, 2, None]
        y *= k[..., 1, 1, None]
        y += k[..., 1, 2, None]
    return x, y


def project_points(
    points_cam: ArrayLike, K: ArrayLike, D: ArrayLike | None = None  # noqa: N803 (ROS names)
) -> tuple[np.ndarray, np.ndarray]:
    """Project points in a camera optical frame to pixels (ROS/OpenCV pinhole model).

    Args:
        points_cam: Shape (N, 3), metres, optical frame (x right, y down, z forward).
        K: Camera matrix (CameraInfo.K), shape (3, 3), pixels.
        D: CameraInfo.D, 4/5 plumb_bob or 8 rational_polynomial coefficients, applied as in
            OpenCV (only meaningful inside the calibrated field of view; far outside it the
            polynomial can fold points back into the image); ``None``/empty/zeros: no distortion.

    Returns:
        ``(uv, depth)``: float64 (N, 2) pixel coordinates (col, row), pixel centres at integers,
        NaN where depth <= 0; float64 (N,) depth ``z`` in metres.
    """
    pts = _array("points_cam", points_cam, ("N", 3))
    uv = pts[:, :2].copy()
    _pinhole(uv[:, 0], uv[:, 1], pts[:, 2], _intrinsics("K", K), _distortion8("D", D))
    return uv, pts[:, 2].copy()


def pixel_indices(uv: ArrayLike) -> np.ndarray:
    """Returns the int64 (N, 2) pixel ``(col, row)`` = ``floor(uv + 0.5)`` containing each uv.

    Args:
        uv: Shape (N, 2), pixel coordinates; non-finite entries give -1 (never a valid index),
            values beyond the int32 range are clipped to it.
    """
    idx = np.floor(_array("uv", uv, ("N", 2), finite=False) + 0.5)
    idx = np.where(np.isfinite(idx), idx, -1.0)
    return np.clip(idx, _INT32.min, _INT32.max).astype(np.int64)


def resize_nearest(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W, ...) image to ``size = (H', W')`` pixels.

    Pixel-centre mapping (the convention of :func:`pixel_indices` and of an
    ``align_corners=False`` resize): output pixel (r, c) takes input pixel
    ``(floor((r + 0.5) H / H'), floor((c + 0.5) W / W'))``. Any dtype; labels stay labels.

    Args:
        image: (H, W) or (H, W, K) array, H, W >= 1.
        size: (H', W') output rows and columns, >= 1.

    Returns:
        (H', W'[, K]) array of ``image``'s dtype (a new array).
    """
    in_h, in_w = image.shape[:2]
    rows = np.minimum(((np.arange(size[0]) + 0.5) * in_h / size[0]).astype(np.int64), in_h - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * in_w / size[1]).astype(np.int64), in_w - 1)
    return image[rows][:, cols]  # rows, then columns: 5x faster than one 2-D fancy index


def _valid_mask(u: np.ndarray, v: np.ndarray, depth: np.ndarray, width: ArrayLike,
                height: ArrayLike, min_depth: float) -> np.ndarray:
    """Core of :func:`image_mask` (broadcasts; NaN compares False; inf depth not checked)."""
    valid = (depth >= min_depth) & (depth > 0.0)
    shifted = u + 0.5  # 0 <= floor(s) < w  <=>  0 <= s < w for integer w
    valid &= (shifted >= 0.0) & (shifted < width)
    np.add(v, 0.5, out=shifted)
    valid &= (shifted >= 0.0) & (shifted < height)
    return valid


def image_mask(uv: ArrayLike, depth: ArrayLike, width: int, height: int,
               min_depth: float = 1.0) -> np.ndarray:
    """Returns bool (N,): finite, ``depth >= min_depth`` (> 0), pixel index inside the image.

    Args:
        uv: Shape (N, 2), pixel coordinates; valid iff ``0 <= pixel_indices(uv) < (w, h)``.
        depth: Shape (N,), metres along the optical axis.
        width: Image width in pixels, > 0.
        height: Image height in pixels, > 0.
        min_depth: Minimum depth in metres, inclusive.
    """
    coords = _array("uv", uv, ("N", 2), finite=False)
    dep = _array("depth", depth, (coords.shape[0],), finite=False)
    w, h = _scalar("width", width, integer=True), _scalar("height", height, integer=True)
    valid = _valid_mask(coords[:, 0], coords[:, 1], dep, w, h, _scalar("min_depth", min_depth))
    return valid & np.isfinite(dep)


@dataclass(frozen=True)
class CameraProjection:
    """Projections of N points into M cameras.

    Attributes:
        uv: float32 (M, N, 2) pixel coordinates (col, row); NaN behind a camera.
        depth: float32 (M, N) metres along each camera's optical axis.
        valid: bool (M, N), :func:`image_mask` per camera (evaluated in float64).
    """

    uv: NDArray[np.float32]
    depth: NDArray[np.float32]
    valid: NDArray[np.bool_]


def project_to_cameras(
    points: ArrayLike, cams_from_source: ArrayLike, intrinsics: ArrayLike, image_sizes: ArrayLike,
    distortion: Sequence[ArrayLike | None] | None = None, min_depth: float = 1.0,
) -> CameraProjection:
    """Project one point cloud into M cameras at once.

    Args:
        points: Shape (N, 3), metres, source frame (for example the LiDAR frame).
        cams_from_source: Shape (M, 4, 4), ``cam_from_source`` per camera optical frame.
        intrinsics: Shape (M, 3, 3), camera matrices in pixels.
        image_sizes: Shape (M, 2), ``(width, height)`` in pixels, positive integers.
        distortion: ``None`` or M entries of CameraInfo.D (each ``None`` or 0/4/5/8 values).
        min_depth: Minimum depth in metres for ``valid``.

    Returns:
        :class:`CameraProjection`; camera m equals project_points + image_mask in that camera.
    """
    pts, min_depth = _array("points", points, ("N", 3)), _scalar("min_depth", min_depth)
    tfs = _transform("cams_from_source", _array("cams_from_source", cams_from_source, ("M", 4, 4)),
                     batched=True)
    m = tfs.shape[0]
    ks = _intrinsics("intrinsics", _array("intrinsics", intrinsics, (m, 3, 3)), batched=True)
    sizes = _array("image_sizes", image_sizes, (m, 2))
    if np.any(sizes <= 0) or np.any(sizes != np.round(sizes)):
        raise ValueError(f"image_sizes must be positive integers, found {sizes.tolist()}")
    if distortion is not None and len(distortion) != m:
        raise ValueError(f"distortion must have {m} entries, found {len(distortion)}")
    dist = np.zeros((m, 8)) if distortion is None else np.array(
        [_distortion8(f"distortion[{j}]", d) for j, d in enumerate(distortion)]).reshape(m, 8)
    homogeneous = np.vstack([pts.T, np.ones((1, pts.shape[0]))])
    cam = (tfs[:, :3, :].reshape(3 * m, 4) @ homogeneous).reshape(m, 3, len(pts))  # one GEMM
    u, v = _pinhole(cam[:, 0], cam[:, 1], cam[:, 2], ks, dist)
    valid = _valid_mask(u, v, cam[:, 2], sizes[:, :1], sizes[:, 1:], min_depth)
    uv = np.stack([u, v], axis=-1, dtype=np.float32)
    return CameraProjection(uv=uv, depth=cam[:, 2].astype(np.float32), valid=valid)


def ego_motion_transform(ego_from_sensor_a: ArrayLike, global_from_ego_at_ta: ArrayLike,
                         global_from_ego_at_tb: ArrayLike, ego_from_sensor_b: ArrayLike,
                         ) -> np.ndarray:
    """Returns float64 ``sensor_b_from_sensor_a`` (4, 4) via ego(t_a) -> global -> ego(t_b).

    Args:
        ego_from_sensor_a: (4, 4) extrinsics of sensor a.
        global_from_ego_at_ta: (4, 4) ego pose at the timestamp of sensor a's data.
        global_from_ego_at_tb: (4, 4) ego pose at the timestamp of sensor b's data.
        ego_from_sensor_b: (4, 4) extrinsics of sensor b.
    """
    a = _transform("ego_from_sensor_a", ego_from_sensor_a)
    ga = _transform("global_from_ego_at_ta", global_from_ego_at_ta)
    gb = _transform("global_from_ego_at_tb", global_from_ego_at_tb)
    b = _transform("ego_from_sensor_b", ego_from_sensor_b)
    return invert_transform(b) @ invert_transform(gb) @ ga @ a


def _slerp(q0: np.ndarray, q1: np.ndarray, alpha: float) -> np.ndarray:
    """Shortest-arc spherical interpolation of unit quaternions (x, y, z, w)."""
    dot = float(np.dot(q0, q1))
    q1, dot = (-q1, -dot) if dot < 0.0 else (q1, dot)
    if dot > 1.0 - 1e-12:
        q = q0 + alpha * (q1 - q0)
    else:
        theta = np.arccos(min(dot, 1.0))
        q = (np.sin((1.0 - alpha) * theta) * q0 + np.sin(alpha * theta) * q1) / np.sin(theta)
    return q / np.linalg.norm(q)


def interpolate_pose(t: float, t0: float, pose0: ArrayLike, t1: float, pose1: ArrayLike,
                     allow_extrapolation: bool = False) -> np.ndarray:
    """Interpolate a rigid pose: linear translation, shortest-arc slerp of the rotation.

    Args:
        t: Query time; t, t0 and t1 in one unit (seconds or microseconds).
        t0: Time of ``pose0``.
        pose0: (4, 4) rigid transform at ``t0`` (for example ``global_from_ego``).
        t1: Time of ``pose1``, >= ``t0``.
        pose1: (4, 4) rigid transform at ``t1``.
        allow_extrapolation: If False, ``t`` outside ``[t0, t1]`` raises ValueError; if True,
            the same constant-velocity model extrapolates.

    Returns:
        float64 (4, 4) pose: exactly ``pose0`` at ``t0`` or if ``t0 == t1``, ``pose1`` at ``t1``.
    """
    p0, p1 = _transform("pose0", pose0), _transform("pose1", pose1)
    if not np.all(np.isfinite([t, t0, t1])) or t1 < t0:
        raise ValueError(f"t, t0, t1 must be finite with t0 <= t1, found {t}, {t0}, {t1}")
    if not allow_extrapolation and not t0 <= t <= t1:
        raise ValueError(f"t={t} is outside [t0, t1] = [{t0}, {t1}] and extrapolation is off")
    if t == t0 or t0 == t1:
        return p0.copy()
    if t == t1:
        return p1.copy()
    alpha = (t - t0) / (t1 - t0)
    q = _slerp(matrix_to_quat(p0[:3, :3]), matrix_to_quat(p1[:3, :3]), alpha)
    return make_transform(q, p0[:3, 3] + alpha * (p1[:3, 3] - p0[:3, 3]))
