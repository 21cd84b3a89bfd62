"""Room shells and furniture placement of the synthetic indoor world (room frame).

Room frame: metres, +z up, the floor surface at z = 0, the interior is
``[0, W] x [0, D] x [0, H]``. Walls are numbered 0 (south, y = 0), 1 (east, x = W), 2 (north,
y = D) and 3 (west, x = 0). The shell is six separate slabs (floor, ceiling, four walls), each
``SLAB`` thick and reaching ``SLAB`` past the interior so that they overlap at the edges: the
ray caster never sees a box from inside, and the overlaps hide the slabs' ends.

:class:`RoomBuilder` places :class:`~cns_ros.data.synthetic_indoor_furniture.Item` objects by
pose ``(x, y, z, yaw)`` (the item frame's origin in the room, its rotation about +z) and keeps
an occupancy list of axis-aligned boxes so that objects never intersect, do not block doors
and leave windows free of tall furniture. Objects placed on or in another one (books, pillows,
a sink on a counter) are attached in their parent's frame.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from cns_ros.data.synthetic_indoor_furniture import Item
from cns_ros.data.synthetic_indoor_materials import FLOOR_FAMILIES, Material, draw_material

#: Thickness of the shell slabs (and how far they reach past the interior), metres.
SLAB = 0.1
#: Clearance kept between placed objects, metres.
CLEARANCE = 0.03
_INWARD = np.array([[0.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [1.0, 0.0]])
_WALL_YAW = (np.pi, -0.5 * np.pi, 0.0, 0.5 * np.pi)

Pose = tuple[float, float, float, float]


class LayoutError(RuntimeError):
    """A required object found no free place in the room."""


@dataclass(frozen=True)
class PlacedPart:
    """One box in the room frame: centre (3,), half extents (3,), yaw, object index, material
    index."""

    center: tuple[float, float, float]
    half: tuple[float, float, float]
    yaw: float
    obj: int
    material: int


class RoomBuilder:
    """Collects the parts, objects and materials of one room (see the module docstring)."""

    def __init__(self, rng: np.random.Generator, size: tuple[float, float, float]) -> None:
        self.rng = rng
        self.size = tuple(float(v) for v in size)
        self.parts: list[PlacedPart] = []
        self.materials: list[Material] = []
        self.objects: list[str] = []
        self.poses: list[Pose] = []
        self.parent: list[int] = []
        self.occupied: list[tuple[np.ndarray, np.ndarray, int]] = []

    def wall_length(self, wall: int) -> float:
        """Length of wall ``wall`` along its interior face, metres."""
        return self.size[0] if wall % 2 == 0 else self.size[1]

    def shell(self, wall_paint: Material, accent_wall: int | None = None) -> None:
        """The floor, the ceiling and the four walls (one object each)."""
        w, d, h = self.size
        t = SLAB
        floor = draw_material(self.rng, FLOOR_FAMILIES)
        ceiling = draw_material(self.rng, ('paint',))
        self._slab('floor', (w / 2, d / 2, -t / 2), (w / 2 + t, d / 2 + t, t / 2), floor)
        self._slab('ceiling', (w / 2, d / 2, h + t / 2), (w / 2 + t, d / 2 + t, t / 2), ceiling)
        walls = (((w / 2, -t / 2), (w / 2 + t, t / 2)), ((w + t / 2, d / 2), (t / 2, d / 2 + t)),
                 ((w / 2, d + t / 2), (w / 2 + t, t / 2)), ((-t / 2, d / 2), (t / 2, d / 2 + t)))
        for k, (center, half) in enumerate(walls):
            paint = draw_material(self.rng, ('paint',)) if k == accent_wall else wall_paint
            self._slab('wall', (*center, h / 2), (*half, h / 2 + t), paint)

    def _slab(self, raw: str, center: tuple[float, ...], half: tuple[float, ...],
              material: Material) -> None:
        self.objects.append(raw)
        self.poses.append((0.0, 0.0, 0.0, 0.0))
        self.parent.append(-1)
        self.materials.append(material)
        self.parts.append(PlacedPart(tuple(center), tuple(half), 0.0, len(self.objects) - 1,
                                     len(self.materials) - 1))

    def aabb(self, item: Item, pose: Pose) -> tuple[np.ndarray, np.ndarray]:
        """Room-frame AABB (lo, hi) of an item at a pose."""
        ext = item.extent()
        corners = np.array([[ext[i, 0], ext[j, 1]] for i in (0, 1) for j in (0, 1)])
        c, s = np.cos(pose[3]), np.sin(pose[3])
        xy = corners @ np.array([[c, s], [-s, c]]) + np.array(pose[:2])
        lo = np.array([*xy.min(axis=0), pose[2] + ext[0, 2]])
        hi = np.array([*xy.max(axis=0), pose[2] + ext[1, 2]])
        return lo, hi

    def fits(self, item: Item, pose: Pose, ignore: int = -1, inside: bool = True) -> bool:
        """Whether ``item`` at ``pose`` stays in the room (if ``inside``) and clear of every
        occupied box (except those of object ``ignore`` and of what it is attached to)."""
        skip = set()
        while ignore >= 0:
            skip.add(ignore)
            ignore = self.parent[ignore]
        lo, hi = self.aabb(item, pose)
        room = np.array(self.size)
        if inside and (np.any(lo < -1e-6) or np.any(hi > room + 1e-6)):
            return False
        for other_lo, other_hi, owner in self.occupied:
            if owner not in skip and np.all(lo < other_hi + CLEARANCE) and np.all(
                    hi > other_lo - CLEARANCE):
                return False
        return True

    def occupy(self, lo: np.ndarray, hi: np.ndarray, owner: int = -1) -> None:
        """Marks a room-frame box as taken (doorways, window zones, objects)."""
        self.occupied.append((np.asarray(lo, dtype=float), np.asarray(hi, dtype=float), owner))

    def place(self, item: Item, pose: Pose, occupy: bool = True, parent: int = -1) -> int:
        """Adds ``item`` at ``pose`` (no checks), attached to object ``parent`` (-1: none);
        returns its object index."""
        obj = len(self.objects)
        self.objects.append(item.raw)
        self.poses.append(pose)
        self.parent.append(parent)
        slot_material = {}
        for slot in dict.fromkeys(p.slot for p in item.parts):
            self.materials.append(draw_material(self.rng, item.slots.get(slot, ('paint',))))
            slot_material[slot] = len(self.materials) - 1
        c, s = np.cos(pose[3]), np.sin(pose[3])
        for p in item.parts:
            center = (pose[0] + c * p.x - s * p.y, pose[1] + s * p.x + c * p.y,
                      pose[2] + p.z0 + p.h / 2)
            self.parts.append(PlacedPart(center, (p.w / 2, p.d / 2, p.h / 2), pose[3], obj,
                                         slot_material[p.slot]))
        if occupy:
            self.occupy(*self.aabb(item, pose), owner=obj)
        return obj

    def try_place(self, item: Item, poses: Iterator[Pose], ignore: int = -1,
                  inside: bool = True) -> int | None:
        """Places ``item`` at the first pose that fits; None when none does."""
        for pose in poses:
            if self.fits(item, pose, ignore, inside):
                return self.place(item, pose)
        return None

    def wall_pose(self, item: Item, wall: int, s: float, z: float = 0.0,
                  gap: float = 0.01) -> Pose:
        """The pose that puts ``item``'s back ``gap`` in front of wall ``wall`` (negative:
        into it), its width centred at ``s`` along the wall, its base at height ``z``."""
        ext = item.extent()
        yaw = _WALL_YAW[wall]
        inward = _INWARD[wall]
        along = np.array([1.0, 0.0]) if wall % 2 == 0 else np.array([0.0, 1.0])
        base = {0: (0.0, 0.0), 1: (self.size[0], 0.0), 2: (0.0, self.size[1]),
                3: (0.0, 0.0)}[wall]
        c, s_yaw = np.cos(yaw), np.sin(yaw)
        cx = 0.5 * (ext[0, 0] + ext[1, 0])
        origin = (np.array(base) + along * s + inward * (gap + ext[1, 1])
                  - np.array([c * cx, s_yaw * cx]))
        return (float(origin[0]), float(origin[1]), float(z), float(yaw))

    def wall_poses(self, item: Item, walls: tuple[int, ...], z: float = 0.0,
                   gap: float = 0.01, step: float = 0.1) -> Iterator[Pose]:
        """Poses along ``walls`` (in a random order within each wall, walls in the given
        order) for :meth:`try_place`."""
        width = float(np.ptp(item.extent()[:, 0]))
        for wall in walls:
            length = self.wall_length(wall)
            spots = np.arange(width / 2, length - width / 2 + 1e-9, step)
            for s in self.rng.permutation(spots).tolist():
                yield self.wall_pose(item, wall, s, z, gap)

    def floor_poses(self, item: Item, count: int = 200, margin: float = 0.3,
                    yaws: tuple[float, ...] = (0.0, 0.5 * np.pi)) -> Iterator[Pose]:
        """Random poses on the floor, ``margin`` from the walls, for :meth:`try_place`."""
        w, d, _ = self.size
        for _ in range(count):
            yield (float(self.rng.uniform(margin, w - margin)),
                   float(self.rng.uniform(margin, d - margin)), 0.0,
                   float(yaws[int(self.rng.integers(len(yaws)))]))

    def attach(self, item: Item, parent: int, dx: float = 0.0, dy: float = 0.0,
               dz: float = 0.0, dyaw: float = 0.0, check: bool = False,
               occupy: bool = True) -> int | None:
        """Places ``item`` at offset (dx, dy, dz) and extra yaw in object ``parent``'s frame.

        With ``check``, it must fit (ignoring the parent); returns None when it does not.
        With ``occupy``, its box is marked taken.
        """
        x, y, z, yaw = self.poses[parent]
        c, s = np.cos(yaw), np.sin(yaw)
        pose = (x + c * dx - s * dy, y + s * dx + c * dy, z + dz, yaw + dyaw)
        if check and not self.fits(item, pose, ignore=parent):
            return None
        return self.place(item, pose, occupy=occupy, parent=parent)

    def top_of(self, obj: int) -> float:
        """Height of the highest part of object ``obj``, metres."""
        return max(p.center[2] + p.half[2] for p in self.parts if p.obj == obj)


def wall_of_yaw(yaw: float) -> int:
    """The wall an item with this yaw has its back against (yaw a multiple of 90 degrees)."""
    return (round(yaw / (0.5 * np.pi)) + 2) % 4


def require(index: int | None, what: str, room: str) -> int:
    """``index``, or :class:`LayoutError` naming what did not fit."""
    if index is None:
        raise LayoutError(f'{room}: no free place for the required {what}')
    return index
