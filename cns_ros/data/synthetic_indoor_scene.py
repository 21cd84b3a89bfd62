"""One scene of the synthetic indoor world: a furnished room placed in an unaligned frame.

Real ScanNet meshes and poses live in the scan's own frame (z up, arbitrary heading and
origin); ``axisAlignment`` in ``<scene>.txt`` maps them to a frame whose walls are aligned with
x and y. Here the room is built in its aligned *room frame* (:mod:`.synthetic_indoor_layout`)
and placed in the *world* (scan) frame by a random rotation about z and an offset; the
inverse, ``room_from_world``, is the scene's axis alignment. Boxes, mesh and poses are all in
the world frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from cns_ros.data.raycast import Boxes
from cns_ros.data.synthetic_indoor_catalog import nyu40_of
from cns_ros.data.synthetic_indoor_layout import LayoutError, RoomBuilder
from cns_ros.data.synthetic_indoor_materials import Lighting, Materials
from cns_ros.data.synthetic_indoor_rooms import build_room
from cns_ros.geometry import invert_transform

#: Objects without an instance in ``synthetic_gt/instance`` (stuff).
STUFF: frozenset[str] = frozenset({'wall', 'floor', 'ceiling'})
_ATTEMPTS = 60


@dataclass(frozen=True, eq=False)
class IndoorScene:
    """A furnished room in the world (scan) frame.

    Attributes:
        name: Scene id, e.g. ``scene0000_00``.
        kind: Room kind (:data:`cns_ros.data.synthetic_indoor_catalog.ROOM_KINDS`).
        boxes: The N parts, world frame: ``label`` = nyu40 id, ``instance`` = object index
            + 1, ``color`` = base colour, ``pattern`` = texture pattern.
        materials: Material of each part (N).
        objects: Raw category of each object (object index = instance - 1).
        room_from_world: float64 (4, 4) the axis alignment (rotation about z + translation).
        size: Interior (W, D, H) of the room, metres (room frame ``[0, W] x [0, D] x [0, H]``).
        lighting: The room's light, world frame.
    """

    name: str
    kind: str
    boxes: Boxes
    materials: Materials
    objects: tuple[str, ...]
    room_from_world: NDArray[np.float64]
    size: tuple[float, float, float]
    lighting: Lighting

    @property
    def world_from_room(self) -> np.ndarray:
        """float64 (4, 4) the inverse of the axis alignment."""
        return invert_transform(self.room_from_world)

    def object_nyu40(self) -> np.ndarray:
        """uint8 (K,) nyu40 id per object."""
        return np.array([nyu40_of(raw) for raw in self.objects], dtype=np.uint8)

    def object_is_stuff(self) -> np.ndarray:
        """bool (K,): wall, floor or ceiling."""
        return np.array([raw in STUFF for raw in self.objects], dtype=bool)


def _world_from_room(rng: np.random.Generator) -> np.ndarray:
    yaw = rng.uniform(-np.pi, np.pi)
    out = np.eye(4)
    out[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
    out[:3, 3] = [rng.uniform(-3.0, 3.0), rng.uniform(-3.0, 3.0), rng.uniform(-0.3, 0.3)]
    return out


def _boxes(room: RoomBuilder, world_from_room: np.ndarray, materials: Materials) -> Boxes:
    center = np.array([p.center for p in room.parts], dtype=np.float64)
    center = center @ world_from_room[:3, :3].T + world_from_room[:3, 3]
    turn = float(np.arctan2(world_from_room[1, 0], world_from_room[0, 0]))
    obj = np.array([p.obj for p in room.parts], dtype=np.int32)
    nyu40 = np.array([nyu40_of(room.objects[k]) for k in obj.tolist()], dtype=np.uint8)
    n = len(room.parts)
    return Boxes(center=center, yaw=np.array([p.yaw for p in room.parts]) + turn,
                 half=np.array([p.half for p in room.parts], dtype=np.float64), label=nyu40,
                 instance=obj + 1, color=materials.base, reflectivity=np.zeros(n, np.float32),
                 pattern=materials.pattern)


def _lighting(rng: np.random.Generator, room: RoomBuilder,
              world_from_room: np.ndarray) -> Lighting:
    azimuth, elevation = rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 0.9)
    direction = np.array([np.cos(azimuth) * np.cos(elevation),
                          np.sin(azimuth) * np.cos(elevation), np.sin(elevation)])
    w, d, h = room.size
    lamp = np.array([[w / 2, d / 2, h - 0.7]]) @ world_from_room[:3, :3].T
    return Lighting(direction @ world_from_room[:3, :3].T, lamp + world_from_room[:3, 3],
                    ambient=float(rng.uniform(0.5, 0.62)), daylight=float(rng.uniform(0.2, 0.4)),
                    lamp=float(rng.uniform(0.3, 0.6)))


def build_scene(name: str, kind: str, seed: int, index: int) -> IndoorScene:
    """The scene ``index`` of a world with ``seed``: a room of ``kind`` (deterministic).

    Raises:
        LayoutError: No arrangement of the required objects was found in 60 draws.
    """
    for attempt in range(_ATTEMPTS):
        rng = np.random.default_rng([seed, index, attempt])
        try:
            room = build_room(kind, rng)
        except LayoutError:
            continue
        world_from_room = _world_from_room(rng)
        materials = Materials.stack(room.materials)
        part_materials = Materials(*(getattr(materials, f)[[p.material for p in room.parts]]
                                     for f in Materials.__dataclass_fields__))
        return IndoorScene(
            name=name, kind=kind, boxes=_boxes(room, world_from_room, part_materials),
            materials=part_materials, objects=tuple(room.objects),
            room_from_world=invert_transform(world_from_room), size=room.size,
            lighting=_lighting(rng, room, world_from_room))
    raise LayoutError(f'{name}: no layout of a {kind} found in {_ATTEMPTS} draws (seed {seed})')
