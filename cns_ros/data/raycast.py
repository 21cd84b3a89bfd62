"""Vectorized CPU ray casting against a flat ground plane and oriented boxes (numpy only).

The synthetic world (:mod:`cns_ros.data.synthetic`) is a ground plane ``z = 0`` plus boxes
that are axis aligned in their own yaw. The LiDAR and the cameras both call :func:`cast_grid`,
so a LiDAR point and the pixel it projects to come from the same geometry.

Conventions:

* World coordinates are the nuScenes ``global`` frame: metres, z up, ground at ``z = 0``.
* Rays are ``origin + t * dir``. ``t`` is in units of ``|dir|``: unit directions give ranges in
  metres (LiDAR); camera directions ``K^-1 (u, v, 1)`` rotated to the world give depths along
  the optical axis (camera).
* Only hits with ``t > 0`` where the ray enters a box count: a sensor inside a box does not see it.
* Culling: each box is tested only on a window of the ray grid (rows ``r0:r1``, columns
  ``c0:c1``) that covers every ray that can hit it; :func:`camera_windows` (projected box hull
  clipped at the near plane) and :func:`lidar_windows` (azimuth and elevation spans of the
  box) compute those windows, nearest box first, with a lower bound of ``t`` per window so
  that boxes hidden behind nearer hits are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

#: Ray parameter assigned to rays that hit nothing.
NO_HIT = np.float32(np.inf)
_EPS_T = 1e-4
# Box corners as signs of the half extents (8, 3), and the 12 edges as corner index pairs.
_CORNER_SIGNS = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)],
                         dtype=np.float64)
_EDGES = np.array([[0, 1], [2, 3], [4, 5], [6, 7], [0, 2], [1, 3], [4, 6], [5, 7],
                   [0, 4], [1, 5], [2, 6], [3, 7]])


@dataclass(frozen=True)
class Boxes:
    """N oriented boxes at one instant, world frame.

    Attributes:
        center: float64 (N, 3) box centres, metres.
        yaw: float64 (N,) rotation of the box about +z, radians (box x axis = its length).
        half: float64 (N, 3) half extents along the box's own x, y, z axes, metres (> 0).
        label: uint8 (N,) nuScenes-lidarseg 32-class index of each box.
        instance: int32 (N,) instance id (0 = stuff or none).
        color: uint8 (N, 3) base RGB colour.
        reflectivity: float32 (N,) LiDAR reflectivity in [0, 1].
        pattern: uint8 (N,) texture code for the renderer (0 plain, 1 windows).
    """

    center: NDArray[np.float64]
    yaw: NDArray[np.float64]
    half: NDArray[np.float64]
    label: NDArray[np.uint8]
    instance: NDArray[np.int32]
    color: NDArray[np.uint8]
    reflectivity: NDArray[np.float32]
    pattern: NDArray[np.uint8]

    def __post_init__(self) -> None:
        n = self.yaw.shape[0]
        for name in ('center', 'half', 'color'):
            if getattr(self, name).shape != (n, 3):
                raise ValueError(f'Boxes.{name} must have shape ({n}, 3), found '
                                 f'{getattr(self, name).shape}')
        for name in ('label', 'instance', 'reflectivity', 'pattern'):
            if getattr(self, name).shape != (n,):
                raise ValueError(f'Boxes.{name} must have shape ({n},), found '
                                 f'{getattr(self, name).shape}')
        if n and not np.all(self.half > 0):
            raise ValueError('Boxes.half must be > 0 everywhere')

    def __len__(self) -> int:
        return int(self.yaw.shape[0])

    def corners(self) -> np.ndarray:
        """Returns float64 (N, 8, 3) world corners (order of ``_CORNER_SIGNS``)."""
        local = self.half[:, None, :] * _CORNER_SIGNS[None]
        c, s = np.cos(self.yaw)[:, None], np.sin(self.yaw)[:, None]
        x = c * local[..., 0] - s * local[..., 1]
        y = s * local[..., 0] + c * local[..., 1]
        return np.stack([x, y, local[..., 2]], axis=-1) + self.center[:, None, :]

    def take(self, index: np.ndarray) -> Boxes:
        """Returns the boxes selected by an index or boolean mask."""
        return Boxes(*(getattr(self, f)[index] for f in self.__dataclass_fields__))

    @staticmethod
    def concatenate(parts: list[Boxes]) -> Boxes:
        """Returns the boxes of ``parts`` in order."""
        return Boxes(*(np.concatenate([getattr(p, f) for p in parts])
                       for f in Boxes.__dataclass_fields__))


@dataclass(frozen=True)
class Hits:
    """First hits of a grid of rays (shape S = the ray grid's (rows, cols)).

    Attributes:
        t: float32 S ray parameter of the first hit, :data:`NO_HIT` for none.
        box: int32 S index of the hit box, -1 for the ground or no hit.
        face: int8 S hit face ``2 * axis + (1 if the outward normal is +axis else 0)``
            in the box's frame, -1 for the ground or no hit.
        unoccluded: int64 (N,) per box, the rays of the grid that would hit it if nothing
            else were there (within ``max_t``); ``bincount(box)`` over it is the visible part.
    """

    t: NDArray[np.float32]
    box: NDArray[np.int32]
    face: NDArray[np.int8]
    unoccluded: NDArray[np.int64]

    @property
    def ground(self) -> np.ndarray:
        """bool S: rays whose first hit is the ground plane."""
        return (self.box < 0) & np.isfinite(self.t)

    def normals(self, boxes: Boxes) -> np.ndarray:
        """Returns float32 S + (3,) world unit normals of the hit surfaces (0 for no hit)."""
        out = np.zeros((*self.t.shape, 3), dtype=np.float32)
        out[self.ground] = (0.0, 0.0, 1.0)
        hit = self.box >= 0
        if np.any(hit):
            out[hit] = face_normals(boxes)[self.box[hit], self.face[hit]]
        return out


def face_normals(boxes: Boxes) -> np.ndarray:
    """Returns float32 (N, 6, 3) world outward normals of every box face (face code of
    :class:`Hits`: ``2 * axis + (1 if +axis else 0)``)."""
    c, s = np.cos(boxes.yaw), np.sin(boxes.yaw)
    zero, one = np.zeros_like(c), np.ones_like(c)
    axes = np.stack([np.stack([c, s, zero], -1), np.stack([-s, c, zero], -1),
                     np.stack([zero, zero, one], -1)], axis=1)  # (N, 3 axes, 3)
    return np.stack([-axes[:, 0], axes[:, 0], -axes[:, 1], axes[:, 1], -axes[:, 2],
                     axes[:, 2]], axis=1).astype(np.float32)


def _ground_t(origin: np.ndarray, dz: np.ndarray, max_t: float) -> np.ndarray:
    """float32 ray parameter of the plane z = 0 from z components ``dz`` (NO_HIT when not hit
    within max_t)."""
    with np.errstate(divide='ignore', invalid='ignore'):
        t = np.where(dz < 0, np.float32(-origin[2]) / dz, NO_HIT).astype(np.float32)
    if origin[2] <= 0:
        t[:] = NO_HIT
    t[t > max_t] = NO_HIT
    return t


def cast_grid(origin: np.ndarray, dirs: np.ndarray, boxes: Boxes, windows: np.ndarray,
              max_t: float, ground: bool = True, t_lower: np.ndarray | None = None) -> Hits:
    """Cast a grid of rays from one origin against the ground plane and boxes.

    Args:
        origin: (3,) float64 ray origin, world frame, metres.
        dirs: float32 (H, W, 3) world ray directions (any length; ``t`` is in their units).
        boxes: The scene's boxes at the sensor's timestamp.
        windows: int64 (M, 5) rows ``(box, r0, r1, c0, c1)``: test box ``box`` on
            ``dirs[r0:r1, c0:c1]`` only (from :func:`camera_windows` / :func:`lidar_windows`).
        max_t: Hits with ``t > max_t`` are ignored.
        ground: Whether the plane z = 0 is part of the scene.
        t_lower: Optional float64 (M,) lower bounds of ``t`` over each window's box; a window
            whose rays all hit something nearer is skipped (give windows front to back).

    Returns:
        :class:`Hits` with grid shape (H, W).
    """
    if dirs.ndim != 3 or dirs.shape[2] != 3:
        raise ValueError(f'dirs must have shape (H, W, 3), found {dirs.shape}')
    origin = np.asarray(origin, dtype=np.float64).reshape(3)
    dx, dy, dz = (np.ascontiguousarray(dirs[..., k], dtype=np.float32) for k in range(3))
    if ground:
        t = _ground_t(origin, dz, max_t)
    else:
        t = np.full(dz.shape, NO_HIT, dtype=np.float32)
    box = np.full(dz.shape, -1, dtype=np.int32)
    face = np.full(dz.shape, -1, dtype=np.int8)
    unoccluded = np.zeros(len(boxes), dtype=np.int64)
    rel = origin - boxes.center
    cos_yaw, sin_yaw = np.cos(boxes.yaw), np.sin(boxes.yaw)
    o_local = np.stack([cos_yaw * rel[:, 0] + sin_yaw * rel[:, 1],
                        -sin_yaw * rel[:, 0] + cos_yaw * rel[:, 1], rel[:, 2]], axis=1)
    windows = np.asarray(windows, dtype=np.int64).reshape(-1, 5)
    lower = np.full(windows.shape[0], -np.inf) if t_lower is None else np.asarray(t_lower)
    for (b, r0, r1, c0, c1), low in zip(windows.tolist(), lower.tolist(), strict=True):
        t_win = t[r0:r1, c0:c1]
        if low > max_t or (low > 0 and t_win.max() < low):
            continue
        c, s = np.float32(cos_yaw[b]), np.float32(sin_yaw[b])
        wx, wy = dx[r0:r1, c0:c1], dy[r0:r1, c0:c1]
        local = (wx * c + wy * s, wy * c - wx * s, dz[r0:r1, c0:c1])
        t_near, t_far, near_axis = _slab(local, o_local[b], boxes.half[b])
        hit = (t_near <= t_far) & (t_near > _EPS_T) & (t_near <= max_t)
        unoccluded[b] += int(np.count_nonzero(hit))
        hit &= t_near < t_win
        if not hit.any():
            continue
        t_win[hit] = t_near[hit]
        box[r0:r1, c0:c1][hit] = b
        axis = near_axis[hit]
        d_axis = np.choose(axis, [local[0][hit], local[1][hit], local[2][hit]])
        face[r0:r1, c0:c1][hit] = (2 * axis + (d_axis < 0)).astype(np.int8)
    return Hits(t=t, box=box, face=face, unoccluded=unoccluded)


def _slab(local: tuple[np.ndarray, np.ndarray, np.ndarray], o_local: np.ndarray,
          half: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slab test of box-frame rays: entry t, exit t and entry axis (int8), per ray."""
    t_near = t_far = axis = None
    with np.errstate(divide='ignore', invalid='ignore', over='ignore'):
        for k in range(3):
            inv = np.float32(1.0) / local[k]
            ta = np.float32(-half[k] - o_local[k]) * inv
            tb = np.float32(half[k] - o_local[k]) * inv
            lo, hi = np.minimum(ta, tb), np.maximum(ta, tb)
            if t_near is None:
                t_near, t_far, axis = lo, hi, np.zeros(lo.shape, dtype=np.int8)
            else:
                axis[lo > t_near] = k
                t_near, t_far = np.maximum(t_near, lo), np.minimum(t_far, hi)
    return t_near, t_far, axis


def cast_rays(origin: np.ndarray, dirs: np.ndarray, boxes: Boxes, max_t: float,
              ground: bool = True) -> Hits:
    """Cast arbitrary rays (no culling: every box against every ray).

    Args:
        origin: (3,) float64 world origin, metres.
        dirs: (R, 3) world directions.
        boxes: Boxes at the sensor's timestamp.
        max_t: Hits beyond it are ignored.
        ground: Whether the plane z = 0 is part of the scene.

    Returns:
        :class:`Hits` with shape (R,).
    """
    d = np.asarray(dirs, dtype=np.float32)
    if d.ndim != 2 or d.shape[1] != 3:
        raise ValueError(f'dirs must have shape (R, 3), found {d.shape}')
    n = len(boxes)
    windows = np.stack([np.arange(n), np.zeros(n, np.int64), np.ones(n, np.int64),
                        np.zeros(n, np.int64), np.full(n, d.shape[0], np.int64)], axis=1)
    hits = cast_grid(origin, d[None], boxes, windows, max_t, ground)
    return Hits(hits.t[0], hits.box[0], hits.face[0], hits.unoccluded)


def camera_windows(boxes: Boxes, cam_from_world: np.ndarray, intrinsics: np.ndarray,
                   width: int, height: int, max_depth: float, near: float = 0.05
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Pixel windows of the boxes a pinhole camera can see (frustum and range cull).

    Each box is clipped at the plane ``z = near`` of the optical frame; the bounding rectangle
    of the projected clipped hull (grown by one pixel) is its window. Pixel centres are at
    integer coordinates (ROS/OpenCV).

    Args:
        boxes: Boxes in the world frame.
        cam_from_world: (4, 4) transform from world to the camera optical frame.
        intrinsics: (3, 3) camera matrix (no distortion).
        width: Image width in pixels.
        height: Image height in pixels.
        max_depth: Boxes whose nearest corner is deeper are culled, metres.
        near: Near clipping plane, metres.

    Returns:
        ``(windows, t_lower)`` for :func:`cast_grid`, nearest box first: int64 (M, 5)
        ``(box, row0, row1, col0, col1)`` and float64 (M,) the box's smallest depth.
    """
    if len(boxes) == 0:
        return np.zeros((0, 5), dtype=np.int64), np.zeros(0)
    cam = boxes.corners() @ cam_from_world[:3, :3].T + cam_from_world[:3, 3]  # (N, 8, 3)
    a, b = cam[:, _EDGES[:, 0]], cam[:, _EDGES[:, 1]]  # (N, 12, 3)
    za, zb = a[..., 2] - near, b[..., 2] - near
    crossing = za * zb < 0
    with np.errstate(divide='ignore', invalid='ignore'):
        alpha = np.where(crossing, za / (za - zb), 0.0)
    clipped = a + alpha[..., None] * (b - a)
    pts = np.concatenate([cam, clipped], axis=1)  # (N, 20, 3)
    ok = np.concatenate([cam[..., 2] >= near, crossing], axis=1)
    z = np.where(ok, pts[..., 2], 1.0)
    u = intrinsics[0, 0] * pts[..., 0] / z + intrinsics[0, 1] * pts[..., 1] / z + intrinsics[0, 2]
    v = intrinsics[1, 1] * pts[..., 1] / z + intrinsics[1, 2]
    big = np.float64(1e9)
    c0 = np.floor(np.where(ok, u, big).min(axis=1)) - 1
    c1 = np.ceil(np.where(ok, u, -big).max(axis=1)) + 2
    r0 = np.floor(np.where(ok, v, big).min(axis=1)) - 1
    r1 = np.ceil(np.where(ok, v, -big).max(axis=1)) + 2
    nearest = np.maximum(cam[..., 2].min(axis=1), near)
    bounds = np.stack([np.clip(r0, 0, height), np.clip(r1, 0, height),
                       np.clip(c0, 0, width), np.clip(c1, 0, width)], axis=1)
    keep = (ok.any(axis=1) & (nearest <= max_depth) & (bounds[:, 1] > bounds[:, 0])
            & (bounds[:, 3] > bounds[:, 2]))
    index = np.flatnonzero(keep)
    index = index[np.argsort(nearest[index], kind='stable')]
    windows = np.concatenate([index[:, None], bounds[index].astype(np.int64)], axis=1)
    return windows, nearest[index]


def lidar_windows(boxes: Boxes, lidar_from_world: np.ndarray, azimuth_start: float,
                  azimuth_steps: int, elevations: np.ndarray, max_range: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Windows of a spinning LiDAR's ray grid for the boxes within range.

    Column ``k`` of the grid has azimuth ``azimuth_start - k * 2 pi / azimuth_steps`` in the
    LiDAR frame (clockwise firing order); row ``r`` has elevation ``elevations[r]``
    (ascending). A window covers the azimuth span of the box's corners and the elevation span
    of the box (bounded through its nearest and farthest horizontal distance) plus one ray
    each side; a box around the LiDAR's vertical axis gets every column. The LiDAR's z axis
    must be the world's (an upright sensor on a level ego), else every row is tested.

    Args:
        boxes: Boxes in the world frame.
        lidar_from_world: (4, 4) transform from world to the LiDAR frame.
        azimuth_start: Azimuth of column 0, radians, counter-clockwise from the LiDAR x axis.
        azimuth_steps: Number of columns.
        elevations: float (B,) ascending beam elevations, radians.
        max_range: Boxes entirely beyond it are culled, metres.

    Returns:
        ``(windows, t_lower)`` for :func:`cast_grid`, nearest box first: int64 (M, 5)
        ``(box, row0, row1, col0, col1)`` (a window that wraps around in azimuth is split in
        two) and float64 (M,) a lower bound of the box's range.
    """
    if len(boxes) == 0:
        return np.zeros((0, 5), dtype=np.int64), np.zeros(0)
    corners = boxes.corners() @ lidar_from_world[:3, :3].T + lidar_from_world[:3, 3]
    d_min, inside = _footprint_distance(boxes, lidar_from_world)
    reach = np.sqrt(d_min ** 2 + np.maximum(0.0, np.maximum(
        corners[..., 2].min(axis=1), -corners[..., 2].max(axis=1))) ** 2)
    step = 2.0 * np.pi / azimuth_steps
    k_corner = (azimuth_start - np.arctan2(corners[..., 1], corners[..., 0])) / step
    k_ref = k_corner[:, 0]  # spans are measured from corner 0, wrapped to (-A/2, A/2]
    delta = np.mod(k_corner - k_ref[:, None] + azimuth_steps / 2, azimuth_steps)
    delta -= azimuth_steps / 2
    lo = np.floor(k_ref + delta.min(axis=1)).astype(np.int64) - 1
    hi = np.ceil(k_ref + delta.max(axis=1)).astype(np.int64) + 2
    full = (hi - lo >= azimuth_steps // 2) | inside
    rows = _elevation_rows(corners, d_min, np.asarray(elevations, dtype=np.float64),
                           upright=bool(np.allclose(lidar_from_world[2, :3], [0, 0, 1])))
    out, lower = [], []
    for b in np.flatnonzero((reach <= max_range) & (rows[:, 1] > rows[:, 0])).tolist():
        r0, r1 = int(rows[b, 0]), int(rows[b, 1])
        start = 0 if full[b] else int(lo[b]) % azimuth_steps
        end = azimuth_steps if full[b] else start + int(hi[b] - lo[b])
        out.append((b, r0, r1, start, min(end, azimuth_steps)))
        lower.append(reach[b])
        if end > azimuth_steps:
            out.append((b, r0, r1, 0, end - azimuth_steps))
            lower.append(reach[b])
    order = np.argsort(np.array(lower), kind='stable')
    return (np.array(out, dtype=np.int64).reshape(-1, 5)[order],
            np.array(lower, dtype=np.float64)[order])


def _footprint_distance(boxes: Boxes, sensor_from_world: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal distance (N,) from the sensor's vertical axis to each box footprint, and
    whether the axis passes within 0.5 m of the footprint (bool (N,))."""
    world_origin = -sensor_from_world[:3, :3].T @ sensor_from_world[:3, 3]
    rel = world_origin[:2] - boxes.center[:, :2]
    c, s = np.cos(boxes.yaw), np.sin(boxes.yaw)
    x, y = c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1]
    gx = np.maximum(np.abs(x) - boxes.half[:, 0], 0.0)
    gy = np.maximum(np.abs(y) - boxes.half[:, 1], 0.0)
    return np.hypot(gx, gy), (gx <= 0.5) & (gy <= 0.5)


def _elevation_rows(corners: np.ndarray, d_min: np.ndarray, elevations: np.ndarray,
                    upright: bool) -> np.ndarray:
    """int64 (N, 2) row ranges ``[r0, r1)`` of beams that can hit each box."""
    n, beams = corners.shape[0], elevations.shape[0]
    if not upright:
        return np.tile(np.array([0, beams]), (n, 1))
    d_max = np.hypot(corners[..., 0], corners[..., 1]).max(axis=1)
    z_lo, z_hi = corners[..., 2].min(axis=1), corners[..., 2].max(axis=1)
    top = np.arctan2(z_hi, np.where(z_hi > 0, d_min, d_max))
    bottom = np.arctan2(z_lo, np.where(z_lo < 0, d_min, d_max))
    r0 = np.searchsorted(elevations, bottom, side='left') - 1
    r1 = np.searchsorted(elevations, top, side='right') + 1
    return np.stack([np.clip(r0, 0, beams), np.clip(r1, 0, beams)], axis=1).astype(np.int64)
