"""The scene mesh of the synthetic indoor world (``_vh_clean_2.ply`` and what goes with it).

Vertices are sampled on the visible surfaces of the scene's boxes, on a regular grid of about
``spacing`` metres per box face (both face edges included), and triangulated per grid cell
with outward-facing winding. A sample is dropped when it is hidden:

* its face points out of the room (the outside of the shell slabs), or
* it lies inside or on another box (within 2 mm): the bottom of a chair leg on the floor, the
  floor under it, the wall behind a picture, the ends of the shell slabs.

Triangles that lose a corner are dropped, then vertices that no triangle uses. So every vertex
is on a surface that a camera inside the room can see, and the renderer (which ray casts the
same boxes) sees it at the same place.

Over-segmentation (``segs.json``): each box face is cut into patches of about
``segment_size`` metres; a segment id is the smallest vertex index of its patch (ScanNet's
segment ids are likewise vertex indices, not contiguous). Every patch lies on one object, so
the aggregation (one group per object, its raw category as label) reproduces the labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from cns_ros.data.raycast import Boxes
from cns_ros.data.synthetic_indoor_materials import surface_colors
from cns_ros.data.synthetic_indoor_scene import IndoorScene

_COVER_EPS = 2e-3
_TANGENTS = ((1, 2), (0, 2), (0, 1))


@dataclass(frozen=True, eq=False)
class IndoorMesh:
    """Mesh of one scene, world (scan) frame.

    Attributes:
        xyz: float32 (V, 3) vertices, metres.
        rgb: uint8 (V, 3) shaded surface colour.
        part: int32 (V,) index of the box each vertex lies on.
        faces: int32 (F, 3) triangles, counter-clockwise seen from outside.
        segment: int64 (V,) segment id per vertex (smallest vertex index of the segment).
    """

    xyz: NDArray[np.float32]
    rgb: NDArray[np.uint8]
    part: NDArray[np.int32]
    faces: NDArray[np.int32]
    segment: NDArray[np.int64]


@dataclass
class _Grid:
    """Samples of one box face before culling."""

    points: np.ndarray   # float64 (n, 3) world
    faces: np.ndarray    # int64 (m, 3) indices into points
    patch: np.ndarray    # int64 (n,) patch index within the face
    box: int
    face: int


def _face_grid(boxes: Boxes, b: int, face: int, spacing: float, segment_size: float) -> _Grid:
    """Grid samples and triangles of face ``face`` (code ``2 * axis + positive``) of box b."""
    axis, positive = face // 2, face % 2
    t0, t1 = _TANGENTS[axis]
    half = boxes.half[b]
    n0 = max(2, int(np.ceil(2 * half[t0] / spacing)) + 1)
    n1 = max(2, int(np.ceil(2 * half[t1] / spacing)) + 1)
    u, v = np.meshgrid(np.linspace(-half[t0], half[t0], n0),
                       np.linspace(-half[t1], half[t1], n1), indexing='ij')
    local = np.zeros((n0 * n1, 3))
    local[:, axis] = half[axis] if positive else -half[axis]
    local[:, t0], local[:, t1] = u.reshape(-1), v.reshape(-1)
    c, s = np.cos(boxes.yaw[b]), np.sin(boxes.yaw[b])
    world = np.stack([c * local[:, 0] - s * local[:, 1], s * local[:, 0] + c * local[:, 1],
                      local[:, 2]], axis=1) + boxes.center[b]
    i, j = np.meshgrid(np.arange(n0 - 1), np.arange(n1 - 1), indexing='ij')
    a = (i * n1 + j).reshape(-1)
    quads = np.stack([a, a + n1, a + n1 + 1, a + 1], axis=1)
    # (t0, t1) is right-handed about +axis for axes 0 and 2, left-handed for axis 1.
    outward = (1 if positive else -1) * (-1 if axis == 1 else 1) > 0
    tris = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    if not outward:
        tris = tris[:, ::-1]
    k0 = np.floor((u.reshape(-1) + half[t0]) / segment_size).astype(np.int64)
    k1 = np.floor((v.reshape(-1) + half[t1]) / segment_size).astype(np.int64)
    return _Grid(world, tris, k0 * 4096 + k1, b, face)


def _faces_into_room(scene: IndoorScene) -> np.ndarray:
    """bool (N, 6): does the face's centre lie in the room interior (room frame, 1 mm)."""
    boxes = scene.boxes
    c, s = np.cos(boxes.yaw), np.sin(boxes.yaw)
    out = np.zeros((len(boxes), 6), dtype=bool)
    room_from_world = scene.room_from_world
    size = np.array(scene.size)
    for face in range(6):
        axis, sign = face // 2, 1.0 if face % 2 else -1.0
        local = np.zeros((len(boxes), 3))
        local[:, axis] = sign * boxes.half[:, axis]
        world = np.stack([c * local[:, 0] - s * local[:, 1], s * local[:, 0] + c * local[:, 1],
                          local[:, 2]], axis=1) + boxes.center
        room = world @ room_from_world[:3, :3].T + room_from_world[:3, 3]
        out[:, face] = np.all((room > -1e-3) & (room < size + 1e-3), axis=1)
    return out


def covered(boxes: Boxes, points: np.ndarray, own: np.ndarray, eps: float = _COVER_EPS
            ) -> np.ndarray:
    """bool (P,): points inside or within ``eps`` of a box other than their own.

    Args:
        boxes: N boxes (world frame).
        points: float64 (P, 3) world points.
        own: int (P,) the box each point lies on.
    """
    hidden = np.zeros(points.shape[0], dtype=bool)
    corners = boxes.corners()
    lo, hi = corners.min(axis=1) - eps, corners.max(axis=1) + eps
    for b in range(len(boxes)):
        near = np.flatnonzero(np.all((points >= lo[b]) & (points <= hi[b]), axis=1)
                              & (own != b) & ~hidden)
        if near.size == 0:
            continue
        rel = points[near] - boxes.center[b]
        c, s = np.cos(boxes.yaw[b]), np.sin(boxes.yaw[b])
        local = np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1],
                          rel[:, 2]], axis=1)
        hidden[near[np.all(np.abs(local) <= boxes.half[b] + eps, axis=1)]] = True
    return hidden


def sample_mesh(scene: IndoorScene, spacing: float, shell_spacing: float | None = None,
                segment_size: float = 0.5) -> IndoorMesh:
    """The mesh of ``scene`` (see the module docstring).

    Args:
        scene: The scene.
        spacing: Target distance between neighbouring vertices, metres (> 0).
        shell_spacing: The same on walls, floor and ceiling (default: ``spacing``).
        segment_size: Edge of the segment patches, metres.
    """
    shell_spacing = spacing if shell_spacing is None else shell_spacing
    if not (spacing > 0 and shell_spacing > 0):
        raise ValueError(f'spacings must be > 0 m, found {spacing}, {shell_spacing}')
    stuff = scene.object_is_stuff()[scene.boxes.instance - 1]
    grids = [_face_grid(scene.boxes, b, f, shell_spacing if stuff[b] else spacing,
                        segment_size)
             for b, f in zip(*np.nonzero(_faces_into_room(scene)), strict=True)]
    points = np.concatenate([g.points for g in grids])
    own = np.concatenate([np.full(len(g.points), g.box) for g in grids])
    face = np.concatenate([np.full(len(g.points), g.face) for g in grids])
    offsets = np.cumsum([0] + [len(g.points) for g in grids])
    tris = np.concatenate([g.faces + o for g, o in zip(grids, offsets[:-1], strict=True)])
    patch = np.concatenate([g.patch + k * (1 << 32) for k, g in enumerate(grids)])
    keep = ~covered(scene.boxes, points, own)
    tris = tris[np.all(keep[tris], axis=1)]
    used = np.zeros(points.shape[0], dtype=bool)
    used[tris.reshape(-1)] = True
    index = np.full(points.shape[0], -1, dtype=np.int64)
    index[used] = np.arange(int(used.sum()))
    points, own, face, patch = points[used], own[used], face[used], patch[used]
    rgb = surface_colors(scene.boxes, scene.materials, own, face, points, scene.lighting)
    _, first, inverse = np.unique(patch, return_index=True, return_inverse=True)
    return IndoorMesh(xyz=points.astype(np.float32), rgb=rgb, part=own.astype(np.int32),
                      faces=index[tris].astype(np.int32),
                      segment=first[inverse.reshape(-1)].astype(np.int64))
