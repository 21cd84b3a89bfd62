"""Procedural driving scenes for the synthetic nuScenes world (content only, no sensors).

A scene is a straight road in a *road frame* ``(s, l)``: ``s`` along the driving direction of
the ego lane, ``l`` to its left, metres, mapped to the world (nuScenes ``global``) frame by a
rotation ``heading`` and a translation ``origin``. Across the road (``|l|``):

* ``0 .. 7.5`` flat.driveable_surface: two 3.5 m lanes (ego lane ``l < 0``, driving +s; the
  other lane driving -s), a 1.5 m bike lane and a 2.5 m parking strip on each side;
* ``7.5 .. 11`` flat.sidewalk; ``11 .. 14`` flat.terrain (trees, street lights, hedges);
* beyond ``14`` flat.other forecourts with flat.terrain lawns, and static.manmade buildings
  and walls.

Objects are boxes (:class:`~cns_ros.data.raycast.Boxes`) grouped into objects: a car is a body
and a cabin, a tree a trunk and a canopy. Things (vehicles, pedestrians, cycles, barriers,
cones) carry an instance id >= 1 and move at constant velocity along their lane or sidewalk;
stuff (buildings, walls, vegetation, poles) has instance id 0. Scene time ``t`` is in seconds
from the scene's first keyframe. The scene is made by
:func:`cns_ros.data.synthetic_content.build_scene` from a seeded ``numpy.random.Generator``:
the same seed gives the same scene.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from cns_ros.data.raycast import Boxes
from cns_ros.geometry import make_transform
from cns_ros.vocabulary import LIDARSEG32_NAMES

_IDX = {name: i for i, name in enumerate(LIDARSEG32_NAMES)}
DRIVEABLE, SIDEWALK = _IDX['flat.driveable_surface'], _IDX['flat.sidewalk']
TERRAIN, OTHER_FLAT = _IDX['flat.terrain'], _IDX['flat.other']
MANMADE, VEGETATION = _IDX['static.manmade'], _IDX['static.vegetation']
CAR, TRUCK, BUS = _IDX['vehicle.car'], _IDX['vehicle.truck'], _IDX['vehicle.bus.rigid']
TRAILER, CONSTRUCTION = _IDX['vehicle.trailer'], _IDX['vehicle.construction']
PEDESTRIAN, BICYCLE = _IDX['human.pedestrian.adult'], _IDX['vehicle.bicycle']
MOTORCYCLE, BARRIER = _IDX['vehicle.motorcycle'], _IDX['movable_object.barrier']
CONE, EGO = _IDX['movable_object.trafficcone'], _IDX['vehicle.ego']

#: Road-frame bands: (outer |l| in metres, ground label), then OTHER_FLAT beyond.
GROUND_BANDS: tuple[tuple[float, int], ...] = ((7.5, DRIVEABLE), (11.0, SIDEWALK),
                                               (14.0, TERRAIN))
EGO_LANE_L, ONCOMING_LANE_L, BIKE_LANE_L, PARKING_L = -1.75, 1.75, 4.25, 6.25
#: Ego vehicle (Renault Zoe-like) as boxes in the ego frame: (centre xyz, size lwh), metres.
#: From the LiDAR at 1.84 m the roof hides the ground closer than about 5 m ahead and 3 m to
#: the sides (those rays return from the ego and are removed).
EGO_PARTS: tuple[tuple[tuple[float, float, float], tuple[float, float, float]], ...] = (
    ((1.40, 0.0, 0.475), (4.10, 1.73, 0.95)),
    ((1.10, 0.0, 1.225), (1.60, 1.20, 0.55)),
)


@dataclass(frozen=True)
class AgentCounts:
    """How many objects of each kind a scene gets (all >= 0).

    Attributes:
        parked_cars: Cars parked on the parking strips.
        moving_cars: Cars driving in the lanes (one may lead the ego).
        trucks: Trucks (half driving, half parked, moving first).
        buses: Buses driving in the oncoming lane.
        trailers: Parked trailers.
        construction_vehicles: Construction vehicles inside a barrier-fenced work zone.
        pedestrians: Pedestrians on the sidewalks (about 3/4 walking).
        bicycles: Bicycles (half ridden in the bike lanes, half parked on the sidewalk).
        motorcycles: Motorcycles driving in the oncoming lane.
        barriers: Barriers around the work zone.
        traffic_cones: Traffic cones along the work zone.
    """

    parked_cars: int = 8
    moving_cars: int = 4
    trucks: int = 2
    buses: int = 1
    trailers: int = 1
    construction_vehicles: int = 1
    pedestrians: int = 10
    bicycles: int = 4
    motorcycles: int = 2
    barriers: int = 5
    traffic_cones: int = 6


@dataclass(frozen=True)
class WorldConfig:
    """Procedural content of every scene.

    Attributes:
        agents: Object counts per scene.
        ego_speed_range_mps: Ego speed is drawn uniformly in this range, m/s.
        ego_weave_m: Amplitude of the ego's lateral weave in its lane, metres (yaw follows it).
        ego_weave_period_s: Period of that weave, seconds.
        building_height_range_m: Building heights, metres.
        tree_spacing_m: Mean distance between trees along each terrain strip, metres.
        light_spacing_m: Distance between street lights along each terrain strip, metres.
        margin_m: Content extends this far behind the ego's start and beyond its end, metres.
    """

    agents: AgentCounts = field(default_factory=AgentCounts)
    ego_speed_range_mps: tuple[float, float] = (5.0, 10.0)
    ego_weave_m: float = 0.3
    ego_weave_period_s: float = 7.0
    building_height_range_m: tuple[float, float] = (6.0, 24.0)
    tree_spacing_m: float = 11.0
    light_spacing_m: float = 25.0
    margin_m: float = 70.0

    def __post_init__(self) -> None:
        for name, value in vars(self.agents).items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f'agents.{name} must be an integer >= 0, found {value!r}')
        lo, hi = self.ego_speed_range_mps
        if not 0.0 <= lo <= hi <= 30.0:
            raise ValueError(f'ego_speed_range_mps must satisfy 0 <= lo <= hi <= 30, found '
                             f'{self.ego_speed_range_mps}')
        lo, hi = self.building_height_range_m
        if not 0.0 < lo <= hi:
            raise ValueError(f'building_height_range_m must satisfy 0 < lo <= hi, found '
                             f'{self.building_height_range_m}')
        for name in ('tree_spacing_m', 'light_spacing_m', 'margin_m', 'ego_weave_period_s'):
            if not getattr(self, name) > 0:
                raise ValueError(f'{name} must be > 0, found {getattr(self, name)}')
        if not 0.0 <= self.ego_weave_m <= 1.0:
            raise ValueError(f'ego_weave_m must be in [0, 1], found {self.ego_weave_m}')


@dataclass(frozen=True)
class GroundLayout:
    """Labels and markings of the ground plane z = 0.

    Attributes:
        origin: (2,) world xy of the road-frame origin, metres.
        heading: World yaw of the road's +s direction, radians.
        patches: float64 (P, 4) road-frame rectangles ``(s0, s1, l0, l1)`` that override the
            bands, later ones win.
        patch_labels: uint8 (P,) their lidarseg-32 labels.
    """

    origin: NDArray[np.float64]
    heading: float
    patches: NDArray[np.float64]
    patch_labels: NDArray[np.uint8]

    def to_road(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Returns road-frame ``(s, l)`` (each shaped like ``xy[..., 0]``) of world ``xy``."""
        dx, dy = xy[..., 0] - self.origin[0], xy[..., 1] - self.origin[1]
        c, s = np.cos(self.heading), np.sin(self.heading)
        return c * dx + s * dy, -s * dx + c * dy

    def to_world(self, s: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Returns world xy (..., 2) of road-frame coordinates."""
        c, sn = np.cos(self.heading), np.sin(self.heading)
        return np.stack([self.origin[0] + c * s - sn * lat,
                         self.origin[1] + sn * s + c * lat], axis=-1)

    def labels(self, s: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Returns uint8 lidarseg-32 ground labels at road-frame coordinates."""
        a = np.abs(lat)
        out = np.full(np.shape(s), OTHER_FLAT, dtype=np.uint8)
        for bound, label in reversed(GROUND_BANDS):
            out[a <= bound] = label
        if not self.patches.shape[0] or not out.size:
            return out
        # Test patches only on points that can be in one: |l| and s within the patches' reach.
        p = self.patches
        reach = np.where(p[:, 2] * p[:, 3] <= 0, 0.0, np.minimum(np.abs(p[:, 2]),
                                                                  np.abs(p[:, 3])))
        cand = np.flatnonzero(a >= reach.min())
        if not cand.size:
            return out
        cs, cl = s[cand], lat[cand]
        lo, hi = float(cs.min()), float(cs.max())
        sub = out[cand]
        for (s0, s1, l0, l1), label in zip(p.tolist(), self.patch_labels.tolist(), strict=True):
            if s1 > lo and s0 <= hi:
                sub[(cs >= s0) & (cs < s1) & (cl >= l0) & (cl < l1)] = label
        out[cand] = sub
        return out

    def markings(self, s: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Returns uint8 paint codes: 0 none, 1 white (lane edges, dashed), 2 yellow (centre)."""
        out = np.zeros(np.shape(s), dtype=np.uint8)
        cand = np.flatnonzero(np.abs(lat) < 5.1)
        a, cs = np.abs(lat[cand]), s[cand]
        sub = np.zeros(cand.shape, dtype=np.uint8)
        sub[np.abs(a - 3.5) < 0.08] = 1
        sub[(np.abs(a - 5.0) < 0.06) & (np.mod(cs, 6.0) < 3.0)] = 1
        sub[np.abs(a - 0.12) < 0.06] = 2
        out[cand] = sub
        return out


@dataclass(frozen=True)
class EgoMotion:
    """Ego trajectory: constant speed along the ego lane with a sinusoidal lateral weave.

    Attributes:
        speed: m/s along +s.
        weave: Lateral amplitude, metres.
        period: Weave period, seconds.
        phase: Weave phase, radians.
    """

    speed: float
    weave: float
    period: float
    phase: float

    def road_state(self, t: float) -> tuple[float, float, float]:
        """Returns ``(s, l, yaw relative to the road)`` at scene time ``t`` seconds."""
        omega = 2.0 * np.pi / self.period
        s = self.speed * t
        lat = EGO_LANE_L + self.weave * np.sin(omega * t + self.phase)
        dlat = self.weave * omega * np.cos(omega * t + self.phase)
        return float(s), float(lat), float(np.arctan2(dlat, max(self.speed, 1e-6)))


@dataclass(frozen=True)
class SyntheticScene:
    """One procedural scene; times are seconds from the scene's first LiDAR keyframe.

    Attributes:
        name: Scene name (a nuScenes split name such as 'scene-0061').
        ground: Ground labels and markings.
        ego: Ego trajectory.
        parts: Boxes at ``t = 0`` in the world frame.
        part_object: int64 (P,) object index of each box.
        velocity: float64 (K, 3) per object, world frame, m/s.
        object_center: float64 (K, 3) per object annotation-box centre at ``t = 0``.
        object_size: float64 (K, 3) annotation-box ``(length, width, height)``, metres.
        object_yaw: float64 (K,) world yaw, radians.
        object_label: uint8 (K,) lidarseg-32 category.
        object_instance: int32 (K,) instance id (0 for stuff).
        object_attribute: nuScenes attribute name per object ('' for none).
        sun: float64 (3,) unit vector towards the sun, world frame.
        extent: float64 (4,) road-frame bounds ``(s_min, s_max, l_min, l_max)``: the stretch
            of road populated with content (the drive plus margins) and the lateral reach of
            the content. The map mask covers the road and sidewalks (``|l| <= 11``) over it.
    """

    name: str
    ground: GroundLayout
    ego: EgoMotion
    parts: Boxes
    part_object: NDArray[np.int64]
    velocity: NDArray[np.float64]
    object_center: NDArray[np.float64]
    object_size: NDArray[np.float64]
    object_yaw: NDArray[np.float64]
    object_label: NDArray[np.uint8]
    object_instance: NDArray[np.int32]
    object_attribute: tuple[str, ...]
    sun: NDArray[np.float64]
    extent: NDArray[np.float64]

    def boxes_at(self, t: float) -> Boxes:
        """Returns every box of the scene at time ``t`` (objects moved at their velocity)."""
        shift = self.velocity[self.part_object] * t
        p = self.parts
        return Boxes(p.center + shift, p.yaw, p.half, p.label, p.instance, p.color,
                     p.reflectivity, p.pattern)

    def objects_at(self, t: float) -> np.ndarray:
        """Returns float64 (K, 3) annotation-box centres at time ``t``."""
        return self.object_center + self.velocity * t

    def ego_pose(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Returns the ego pose at time ``t``: translation (3,) and quaternion (x, y, z, w)."""
        s, lat, rel_yaw = self.ego.road_state(t)
        xy = self.ground.to_world(np.array(s), np.array(lat))
        yaw = self.ground.heading + rel_yaw
        quat = np.array([0.0, 0.0, np.sin(yaw / 2.0), np.cos(yaw / 2.0)])
        return np.array([xy[0], xy[1], 0.0]), quat

    def ego_boxes(self, t: float) -> Boxes:
        """Returns the ego vehicle's boxes (label vehicle.ego) at time ``t``, world frame."""
        translation, quat = self.ego_pose(t)
        global_from_ego = make_transform(quat, translation)
        centers = np.array([c for c, _ in EGO_PARTS]) @ global_from_ego[:3, :3].T
        yaw = float(np.arctan2(global_from_ego[1, 0], global_from_ego[0, 0]))
        n = len(EGO_PARTS)
        return Boxes(centers + translation, np.full(n, yaw),
                     np.array([s for _, s in EGO_PARTS]) / 2.0, np.full(n, EGO, np.uint8),
                     np.zeros(n, np.int32), np.zeros((n, 3), np.uint8),
                     np.zeros(n, np.float32), np.zeros(n, np.uint8))
