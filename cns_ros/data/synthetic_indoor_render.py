"""Pinhole rendering of the synthetic indoor world (colour, depth, part per pixel).

One ray per pixel centre (``K^-1 (u, v, 1)``, :func:`cns_ros.data.synthetic_render.camera_rays`:
the ray parameter is the depth along the optical axis) is cast against the scene's boxes
(:func:`cns_ros.data.raycast.cast_grid`, no ground plane: the floor is a slab). The mesh
(:mod:`.synthetic_indoor_mesh`) samples the same boxes, so a visible vertex projects to a
pixel whose depth is its own depth (up to the pixel footprint), and the colours come from the
same material and light functions.

Intrinsics: ScanNet's depth camera (``shared/reference/scannet.md`` §1.5: fx = fy =
577.870605, cx = 319.5, cy = 239.5 at 640 x 480, the value OpenScene uses for every scene);
a larger colour image gets the depth intrinsics scaled per axis about pixel centres, so
colour and depth are registered exactly (nearest-resizing colour to 640 x 480 lands on the
depth pixels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from cns_ros.data.raycast import camera_windows, cast_grid
from cns_ros.data.synthetic_indoor_materials import surface_colors
from cns_ros.data.synthetic_indoor_scene import IndoorScene
from cns_ros.data.synthetic_render import camera_rays
from cns_ros.geometry import invert_transform

DEPTH_SIZE = (640, 480)
DEPTH_FOCAL = 577.870605
#: Farthest valid depth of the sensor, metres (farther pixels are 0 in the depth PNG).
MAX_DEPTH_M = 6.0
#: Farthest surface the renderer looks for, metres.
MAX_RANGE_M = 20.0


def depth_intrinsics() -> np.ndarray:
    """float64 (3, 3) intrinsics of the 640 x 480 depth image."""
    return np.array([[DEPTH_FOCAL, 0.0, 319.5], [0.0, DEPTH_FOCAL, 239.5], [0.0, 0.0, 1.0]])


def scaled_intrinsics(k: np.ndarray, size: tuple[int, int], new_size: tuple[int, int]
                      ) -> np.ndarray:
    """Intrinsics of the same camera at another resolution (per axis, pixel-centre
    convention: ``c' = (c + 0.5) s - 0.5``); sizes are (width, height)."""
    sx, sy = new_size[0] / size[0], new_size[1] / size[1]
    out = np.array(k, dtype=np.float64)
    out[0, 0], out[1, 1] = k[0, 0] * sx, k[1, 1] * sy
    out[0, 2], out[1, 2] = (k[0, 2] + 0.5) * sx - 0.5, (k[1, 2] + 0.5) * sy - 0.5
    return out


@dataclass(frozen=True, eq=False)
class IndoorView:
    """One rendered view.

    Attributes:
        rgb: uint8 (H, W, 3) colour.
        depth: float32 (H, W) depth along the optical axis, metres (inf where nothing is hit).
        part: int32 (H, W) index of the box seen, -1 where nothing is hit.
    """

    rgb: NDArray[np.uint8]
    depth: NDArray[np.float32]
    part: NDArray[np.int32]

    def depth_mm(self) -> np.ndarray:
        """uint16 (H, W) depth in millimetres, 0 beyond :data:`MAX_DEPTH_M` or no hit."""
        valid = np.isfinite(self.depth) & (self.depth <= MAX_DEPTH_M)
        return np.where(valid, np.round(self.depth * 1000.0), 0.0).astype(np.uint16)


def render_view(scene: IndoorScene, camera_to_world: np.ndarray, intrinsics: np.ndarray,
                size: tuple[int, int], rays: np.ndarray | None = None) -> IndoorView:
    """Render ``scene`` from a camera.

    Args:
        scene: The scene.
        camera_to_world: (4, 4) pose, OpenCV optical frame, world (scan) frame.
        intrinsics: (3, 3) camera matrix at ``size``.
        size: (width, height) pixels.
        rays: Optional cached ``camera_rays(intrinsics, width, height)``.

    Returns:
        :class:`IndoorView`.
    """
    width, height = size
    rays = camera_rays(intrinsics, width, height) if rays is None else rays
    dirs = rays @ camera_to_world[:3, :3].T.astype(np.float32)
    origin = camera_to_world[:3, 3]
    windows, lower = camera_windows(scene.boxes, invert_transform(camera_to_world), intrinsics,
                                    width, height, MAX_RANGE_M, near=0.02)
    hits = cast_grid(origin, dirs, scene.boxes, windows, MAX_RANGE_M, ground=False,
                     t_lower=lower)
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    hit = hits.box >= 0
    points = origin.astype(np.float32) + hits.t[hit][:, None] * dirs[hit]
    rgb[hit] = surface_colors(scene.boxes, scene.materials, hits.box[hit], hits.face[hit],
                              points, scene.lighting)
    return IndoorView(rgb=rgb, depth=hits.t, part=hits.box)
