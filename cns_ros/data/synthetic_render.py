"""Sensor models of the synthetic world: a spinning LiDAR and pinhole cameras (numpy, CPU).

Both sensors ray cast the same :class:`~cns_ros.data.synthetic_scene.SyntheticScene` at their
own timestamp (:func:`cns_ros.data.raycast.cast_grid`), from a pose the caller builds out of
the very ``ego_pose`` / ``calibrated_sensor`` values written to the nuScenes tables.

* LiDAR: frame x right, y forward, z up (nuScenes ``LIDAR_TOP``). Beam ``ring`` 0 is the
  lowest; the sweep fires column by column, clockwise seen from above, starting at the back.
  Points are ``(x, y, z, intensity, ring)`` float32; intensity is 0..255 (class reflectivity
  times incidence, integer valued); returns from the ego vehicle (label vehicle.ego) are
  removed, as are returns closer than ``min_range_m`` or farther than ``max_range_m``.
* Camera: optical frame x right, y down, z forward; one ray through every pixel centre
  (``K^-1 (u, v, 1)``, so the ray parameter is the depth). RGB is the hit object's colour with
  Lambert shading, texture noise, windows on buildings and buses, and fog; pixels that hit
  nothing are sky (label 0, instance 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from cns_ros.data import synthetic_scene as sc
from cns_ros.data.raycast import (
    Boxes,
    Hits,
    camera_windows,
    cast_grid,
    face_normals,
    lidar_windows,
)
from cns_ros.geometry import invert_transform

# Ground colour and LiDAR reflectivity per ground label; paint (markings) overrides.
_GROUND_COLOR = {sc.DRIVEABLE: (72, 72, 76), sc.SIDEWALK: (172, 168, 160),
                 sc.TERRAIN: (88, 125, 58), sc.OTHER_FLAT: (150, 138, 118)}
_GROUND_REFLECTIVITY = {sc.DRIVEABLE: 0.08, sc.SIDEWALK: 0.22, sc.TERRAIN: 0.12,
                        sc.OTHER_FLAT: 0.18}
_PAINT_COLOR = np.array([[0, 0, 0], [225, 225, 220], [225, 185, 40]], dtype=np.float32)
_PAINT_REFLECTIVITY = 0.55
_SKY_TOP = np.array([95, 140, 205], dtype=np.float32)
_SKY_HORIZON = np.array([200, 215, 232], dtype=np.float32)
_WINDOW_COLOR = np.array([55, 70, 90], dtype=np.float32)


@dataclass(frozen=True)
class LidarModel:
    """A spinning multi-beam LiDAR.

    Attributes:
        beams: Number of beams (rows), evenly spaced in elevation.
        azimuth_steps: Firings per revolution (columns).
        max_elevation_deg: Elevation of the top beam, degrees.
        min_elevation_deg: Elevation of the bottom beam (ring 0), degrees.
        max_range_m: Farthest return, metres.
        min_range_m: Nearest return, metres.
        range_noise_m: Standard deviation of the Gaussian range noise, metres.
    """

    beams: int
    azimuth_steps: int
    max_elevation_deg: float
    min_elevation_deg: float
    max_range_m: float
    min_range_m: float
    range_noise_m: float

    @property
    def azimuth_start(self) -> float:
        """Azimuth of the first firing in the LiDAR frame: the back (-y), radians."""
        return -0.5 * np.pi

    def elevations_deg(self) -> np.ndarray:
        """Returns float64 (beams,) beam elevations in degrees, ring 0 (lowest) first."""
        return np.linspace(self.min_elevation_deg, self.max_elevation_deg, self.beams)

    def ray_grid(self) -> np.ndarray:
        """Returns float32 (beams, azimuth_steps, 3) unit directions in the LiDAR frame."""
        elevation = np.deg2rad(self.elevations_deg())
        azimuth = self.azimuth_start - np.arange(self.azimuth_steps) * (
            2.0 * np.pi / self.azimuth_steps)
        ce, se = np.cos(elevation)[:, None], np.sin(elevation)[:, None]
        dirs = np.stack([ce * np.cos(azimuth), ce * np.sin(azimuth),
                         np.broadcast_to(se, (self.beams, self.azimuth_steps))], axis=-1)
        return dirs.astype(np.float32)


@dataclass(frozen=True)
class LidarSweep:
    """One rendered sweep, points in firing order.

    Attributes:
        points: float32 (N, 5) ``x, y, z, intensity, ring`` in the LiDAR frame.
        labels: uint8 (N,) lidarseg-32 label per point.
        instance: int32 (N,) instance id per point (0 = stuff).
        unoccluded: int64 (I + 1,) per instance id, rays that would hit it if unoccluded.
    """

    points: NDArray[np.float32]
    labels: NDArray[np.uint8]
    instance: NDArray[np.int32]
    unoccluded: NDArray[np.int64]


@dataclass(frozen=True)
class CameraFrame:
    """One rendered image.

    Attributes:
        rgb: uint8 (H, W, 3) colour image.
        labels: uint8 (H, W) lidarseg-32 label per pixel, 0 for sky.
        instance: uint16 (H, W) instance id per pixel, 0 for stuff and sky.
        depth: float32 (H, W) depth along the optical axis, metres (inf for sky).
        box: int32 (H, W) index of the hit box in ``scene.boxes_at(t)`` (the scene's parts, in
            order), -1 for the ground and sky.
        paint: uint8 (H, W) ground paint code (0 none, 1 white, 2 yellow).
        points: float32 (H, W, 3) world hit points, metres (the camera origin for sky).
    """

    rgb: NDArray[np.uint8]
    labels: NDArray[np.uint8]
    instance: NDArray[np.uint16]
    depth: NDArray[np.float32]
    box: NDArray[np.int32]
    paint: NDArray[np.uint8]
    points: NDArray[np.float32]


def camera_rays(intrinsics: np.ndarray, width: int, height: int) -> np.ndarray:
    """Returns float32 (H, W, 3) optical-frame rays ``K^-1 (u, v, 1)`` through pixel centres."""
    k = np.asarray(intrinsics, dtype=np.float64)
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    y = (v - k[1, 2]) / k[1, 1]
    x = (u - k[0, 2] - k[0, 1] * y) / k[0, 0]
    return np.stack([x, y, np.ones_like(x)], axis=-1).astype(np.float32)


def _hit_labels(scene: sc.SyntheticScene, boxes: Boxes, hits: Hits, origin: np.ndarray,
                dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per ray: lidarseg label, instance id, float32 world hit points and ground paint code."""
    box = hits.box
    on_box = box >= 0
    labels = np.zeros(box.shape, dtype=np.uint8)
    instance = np.zeros(box.shape, dtype=np.int32)
    labels[on_box] = boxes.label[box[on_box]]
    instance[on_box] = boxes.instance[box[on_box]]
    t = np.where(np.isfinite(hits.t), hits.t, np.float32(0.0))[..., None]
    points = origin.astype(np.float32) + t * dirs
    paint = np.zeros(box.shape, dtype=np.uint8)
    ground = hits.ground
    s, lat = scene.ground.to_road(points[ground].astype(np.float64))
    labels[ground] = scene.ground.labels(s, lat)
    paint[ground] = scene.ground.markings(s, lat)
    return labels, instance, points, paint


def _noise(points: np.ndarray, cell: float) -> np.ndarray:
    """Deterministic value noise in [0, 1) per ``cell``-metre cube of world points (N, 3)."""
    idx = np.floor(points * np.float32(1.0 / cell)).astype(np.int64)
    h = (idx[:, 0] * 73856093) ^ (idx[:, 1] * 19349663) ^ (idx[:, 2] * 83492791)
    return ((h * 2654435761) & 1023).astype(np.float32) * np.float32(1.0 / 1024.0)


def _window_mask(boxes: Boxes, box: np.ndarray, face: np.ndarray,
                 points: np.ndarray) -> np.ndarray:
    """bool (R,): hits (box index, face code, world point) inside a window of a patterned
    box's side face (a 3 m x 3.2 m grid of 1.5 m x 1.4 m panes above 1.2 m)."""
    rel = points[:, :2] - boxes.center[box, :2].astype(np.float32)
    c = np.cos(boxes.yaw[box]).astype(np.float32)
    s = np.sin(boxes.yaw[box]).astype(np.float32)
    along = np.where(face < 2, c * rel[:, 1] - s * rel[:, 0], c * rel[:, 0] + s * rel[:, 1])
    along = np.mod(along, np.float32(3.0))
    z = points[:, 2]
    height = np.mod(z, np.float32(3.2))
    return ((face < 4) & (z > 1.2) & (along > 0.9) & (along < 2.4) & (height > 1.0)
            & (height < 2.4))


def _base_colors(boxes: Boxes, box: np.ndarray, face: np.ndarray, labels: np.ndarray,
                 points: np.ndarray, paint: np.ndarray) -> np.ndarray:
    """float32 (R, 3) unshaded colours of flattened hits (ground by label and paint, boxes by
    their colour with windows)."""
    n = len(boxes)
    table = np.zeros((n + 256, 3), dtype=np.float32)
    table[:n] = boxes.color
    for label, rgb in _GROUND_COLOR.items():
        table[n + label] = rgb
    color = table[np.where(box >= 0, box, n + labels.astype(np.int32))]
    painted = paint > 0
    color[painted] = _PAINT_COLOR[paint[painted]]
    patterned = np.flatnonzero(np.append(boxes.pattern > 0, False)[box])
    if patterned.size:
        glass = _window_mask(boxes, box[patterned], face[patterned], points[patterned])
        color[patterned[glass]] = _WINDOW_COLOR
    return color


def _shade(scene: sc.SyntheticScene, boxes: Boxes, hits: Hits, labels: np.ndarray,
           points: np.ndarray, paint: np.ndarray, up: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) RGB of a camera's hits; ``up`` (R,) is each ray's sine of elevation."""
    shape = hits.t.shape
    box, face = hits.box.reshape(-1), hits.face.reshape(-1)
    flat_points = points.reshape(-1, 3)
    color = _base_colors(boxes, box, face, labels.reshape(-1), flat_points, paint.reshape(-1))
    sun = scene.sun.astype(np.float32)
    face_light = 0.5 + 0.5 * np.clip(face_normals(boxes) @ sun, 0.0, 1.0)  # (N, 6)
    light = np.full(box.shape, 0.5 + 0.5 * max(float(sun[2]), 0.0), dtype=np.float32)
    on_box = box >= 0
    light[on_box] = face_light[box[on_box], face[on_box]]
    light *= np.float32(0.93) + np.float32(0.1) * _noise(flat_points, 0.35)
    depth = hits.t.reshape(-1)
    fog = np.exp(np.minimum(depth, np.float32(1e6)) * np.float32(-1.0 / 350.0))  # 1 - fog
    color *= (light * fog)[:, None]
    fog = np.float32(1.0) - fog
    color += _SKY_HORIZON * fog[:, None]
    color += (_SKY_TOP - _SKY_HORIZON) * (np.sqrt(np.clip(up, 0.0, 1.0)) * fog)[:, None]
    return np.minimum(color, np.float32(255.0)).astype(np.uint8).reshape((*shape, 3))


def render_camera(scene: sc.SyntheticScene, t: float, global_from_cam: np.ndarray,
                  rays_cam: np.ndarray, intrinsics: np.ndarray, max_depth: float,
                  inv_ray_norm: np.ndarray | None = None) -> CameraFrame:
    """Render one camera image of ``scene`` at scene time ``t`` seconds.

    Args:
        scene: The scene.
        t: Scene time of the exposure, seconds.
        global_from_cam: (4, 4) pose of the camera optical frame in the world at ``t``.
        rays_cam: float32 (H, W, 3) from :func:`camera_rays` for ``intrinsics``.
        intrinsics: (3, 3) camera matrix, pixels.
        max_depth: Farther surfaces are sky, metres.
        inv_ray_norm: Optional float32 (H, W) ``1 / |rays_cam|`` (computed when None).

    Returns:
        :class:`CameraFrame`.
    """
    height, width = rays_cam.shape[:2]
    boxes = scene.boxes_at(t)
    origin = global_from_cam[:3, 3]
    dirs = rays_cam @ global_from_cam[:3, :3].T.astype(np.float32)
    windows, lower = camera_windows(boxes, invert_transform(global_from_cam), intrinsics,
                                    width, height, max_depth)
    hits = cast_grid(origin, dirs, boxes, windows, max_depth, t_lower=lower)
    labels, instance, points, paint = _hit_labels(scene, boxes, hits, origin, dirs)
    if inv_ray_norm is None:
        inv_ray_norm = np.float32(1.0) / np.linalg.norm(rays_cam, axis=-1)
    up = (dirs[..., 2] * inv_ray_norm).reshape(-1)
    rgb = _shade(scene, boxes, hits, labels, points, paint, up)
    return CameraFrame(rgb=rgb, labels=labels, instance=instance.astype(np.uint16),
                       depth=hits.t, box=hits.box, paint=paint, points=points)


def _intensity(scene: sc.SyntheticScene, boxes: Boxes, hits: Hits, labels: np.ndarray,
               paint: np.ndarray, dirs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """float32 LiDAR intensity 0..255 (integer valued) of flattened hits."""
    refl = np.zeros(labels.shape, dtype=np.float32)
    ground = hits.ground
    for label, value in _GROUND_REFLECTIVITY.items():
        refl[ground & (labels == label)] = value
    refl[ground & (paint > 0)] = _PAINT_REFLECTIVITY
    on_box = hits.box >= 0
    refl[on_box] = boxes.reflectivity[hits.box[on_box]]
    cos_inc = np.abs(np.sum(hits.normals(boxes) * dirs, axis=-1))
    value = 255.0 * refl * (0.25 + 0.75 * cos_inc) + rng.normal(0.0, 1.5, refl.shape)
    return np.clip(np.round(value), 0.0, 255.0).astype(np.float32)


def render_lidar(scene: sc.SyntheticScene, t: float, global_from_lidar: np.ndarray,
                 model: LidarModel, rays_lidar: np.ndarray,
                 rng: np.random.Generator) -> LidarSweep:
    """Render one LiDAR sweep of ``scene`` at scene time ``t`` (the whole sweep at one pose).

    Args:
        scene: The scene.
        t: Scene time of the sweep, seconds.
        global_from_lidar: (4, 4) pose of the LiDAR frame in the world at ``t``.
        model: The LiDAR.
        rays_lidar: ``model.ray_grid()``.
        rng: Source of range and intensity noise.

    Returns:
        :class:`LidarSweep`.
    """
    boxes = Boxes.concatenate([scene.boxes_at(t), scene.ego_boxes(t)])
    origin = global_from_lidar[:3, 3]
    dirs = rays_lidar @ global_from_lidar[:3, :3].T.astype(np.float32)
    windows, lower = lidar_windows(boxes, invert_transform(global_from_lidar),
                                   model.azimuth_start, model.azimuth_steps,
                                   np.deg2rad(model.elevations_deg()), model.max_range_m)
    hits = cast_grid(origin, dirs, boxes, windows, model.max_range_m, t_lower=lower)
    # Firing order: column (azimuth) major, ring minor.
    hits = Hits(hits.t.T.copy(), hits.box.T.copy(), hits.face.T.copy(), hits.unoccluded)
    dirs, local = dirs.transpose(1, 0, 2), rays_lidar.transpose(1, 0, 2)
    labels, instance, _, paint = _hit_labels(scene, boxes, hits, origin, dirs)
    ring = np.broadcast_to(np.arange(model.beams, dtype=np.float32), hits.t.shape)
    keep = (np.isfinite(hits.t) & (hits.t >= model.min_range_m) & (labels != sc.EGO))
    rng_noise = rng.normal(0.0, model.range_noise_m, int(np.count_nonzero(keep)))
    flat = Hits(hits.t[keep], hits.box[keep], hits.face[keep], hits.unoccluded)
    intensity = _intensity(scene, boxes, flat, labels[keep], paint[keep], dirs[keep], rng)
    rng_dist = (flat.t + rng_noise).astype(np.float32)
    xyz = local[keep] * rng_dist[:, None]
    points = np.concatenate([xyz, intensity[:, None], ring[keep][:, None]], axis=1)
    unoccluded = np.bincount(boxes.instance, weights=hits.unoccluded,
                             minlength=int(boxes.instance.max(initial=0)) + 1)
    return LidarSweep(points=points.astype(np.float32), labels=labels[keep],
                      instance=instance[keep], unoccluded=unoccluded.astype(np.int64))
