"""Procedural placement of roads, buildings, vegetation and agents (see synthetic_scene).

:func:`build_scene` is the only public function. Objects are placed in the road frame
``(s, l)`` of :mod:`cns_ros.data.synthetic_scene`; lanes, slots and sidewalk tracks keep moving
agents from running into each other or into parked objects.
"""

from __future__ import annotations

import numpy as np

from cns_ros.data import synthetic_scene as sc
from cns_ros.data.raycast import Boxes

# A part: (offset xyz of the box centre from the object's ground point, in the object frame;
# size lwh; rgb; reflectivity; texture pattern). Parts take their object's label and instance.
_Part = tuple[tuple[float, float, float], tuple[float, float, float], tuple[int, int, int],
              float, int]
_CAR_COLORS = ((190, 30, 30), (30, 60, 150), (225, 225, 225), (35, 35, 38), (150, 152, 158),
               (30, 100, 60), (220, 175, 40), (110, 30, 40))
_BUILDING_COLORS = ((200, 185, 160), (160, 80, 60), (140, 140, 145), (225, 220, 210),
                    (90, 110, 140), (185, 160, 120))
_GLASS = (45, 55, 65)


class _Builder:
    """Accumulates objects in road-frame coordinates; :meth:`finish` makes the scene."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.objects: list[dict] = []
        self.parts: list[tuple[int, _Part]] = []
        self.next_instance = 1

    def add(self, label: int, s: float, lat: float, backward: bool,
            size: tuple[float, float, float], parts: list[_Part], speed: float = 0.0,
            attribute: str = '', thing: bool = True) -> None:
        """Add one object whose footprint centre is at road ``(s, lat)``; ``speed`` along +s
        (negative for -s); ``backward`` turns it to face -s."""
        instance = 0
        if thing:
            instance, self.next_instance = self.next_instance, self.next_instance + 1
        self.objects.append(dict(label=label, s=s, l=lat, yaw=np.pi if backward else 0.0,
                                 size=size, speed=speed, attribute=attribute,
                                 instance=instance))
        for part in parts:
            self.parts.append((len(self.objects) - 1, part))

    def color(self, palette: tuple[tuple[int, int, int], ...]) -> tuple[int, int, int]:
        """A palette colour with a small random brightness change."""
        base = np.array(palette[int(self.rng.integers(len(palette)))], dtype=np.float64)
        return tuple(int(v) for v in np.clip(base * self.rng.uniform(0.85, 1.1), 0, 255))

    def finish(self, name: str, ground: sc.GroundLayout, ego: sc.EgoMotion,
               extent: np.ndarray, sun: np.ndarray) -> sc.SyntheticScene:
        """Convert to world coordinates and arrays."""
        obj = self.objects
        yaw_rel = np.array([o['yaw'] for o in obj])
        size = np.array([o['size'] for o in obj], dtype=np.float64).reshape(-1, 3)
        xy = ground.to_world(np.array([o['s'] for o in obj]), np.array([o['l'] for o in obj]))
        center = np.concatenate([xy.reshape(-1, 2), size[:, 2:] / 2.0], axis=1)
        yaw = np.mod(ground.heading + yaw_rel, 2.0 * np.pi)
        speed = np.array([o['speed'] for o in obj])
        vel = np.stack([speed * np.cos(ground.heading), speed * np.sin(ground.heading),
                        np.zeros_like(speed)], axis=1)
        owner = np.array([k for k, _ in self.parts], dtype=np.int64)
        offset = np.array([p[0] for _, p in self.parts], dtype=np.float64)
        c, s = np.cos(yaw[owner]), np.sin(yaw[owner])
        part_xy = center[owner, :2] + np.stack([c * offset[:, 0] - s * offset[:, 1],
                                                 s * offset[:, 0] + c * offset[:, 1]], axis=1)
        labels = np.array([o['label'] for o in obj], dtype=np.uint8)
        instances = np.array([o['instance'] for o in obj], dtype=np.int32)
        parts = Boxes(
            center=np.concatenate([part_xy, offset[:, 2:]], axis=1), yaw=yaw[owner],
            half=np.array([p[1] for _, p in self.parts], dtype=np.float64) / 2.0,
            label=labels[owner], instance=instances[owner],
            color=np.array([p[2] for _, p in self.parts], dtype=np.uint8),
            reflectivity=np.array([p[3] for _, p in self.parts], dtype=np.float32),
            pattern=np.array([p[4] for _, p in self.parts], dtype=np.uint8))
        return sc.SyntheticScene(
            name=name, ground=ground, ego=ego, parts=parts, part_object=owner, velocity=vel,
            object_center=center, object_size=size, object_yaw=yaw, object_label=labels,
            object_instance=instances, object_attribute=tuple(o['attribute'] for o in obj),
            sun=sun, extent=extent)


def _spaced(rng: np.random.Generator, n: int, lo: float, hi: float, slot: float) -> np.ndarray:
    """Up to n sorted positions in [lo, hi), one per distinct slot of length ``slot``,
    jittered so that objects up to ``slot - 1`` m long never overlap."""
    slots = int((hi - lo) // slot)
    if n <= 0 or slots <= 0:
        return np.zeros(0)
    chosen = np.sort(rng.choice(slots, size=min(n, slots), replace=False))
    return lo + (chosen + 0.5) * slot + rng.uniform(-0.5, 0.5, chosen.shape[0])


def _car(b: _Builder, length: float, width: float, height: float) -> list[_Part]:
    body = b.color(_CAR_COLORS)
    return [((0.0, 0.0, 0.3 * height), (length, width, 0.6 * height), body, 0.35, 0),
            ((-0.05 * length, 0.0, 0.8 * height), (0.55 * length, 0.9 * width, 0.4 * height),
             _GLASS, 0.08, 0)]


def _vehicle(b: _Builder, label: int) -> tuple[tuple[float, float, float], list[_Part]]:
    """Size (l, w, h) and parts of a vehicle of lidarseg class ``label``."""
    u = b.rng.uniform
    if label == sc.CAR:
        size = (u(4.0, 4.8), u(1.75, 1.95), u(1.45, 1.7))
        return size, _car(b, *size)
    if label == sc.TRUCK:
        ln, w, h = u(6.0, 8.0), 2.45, u(2.8, 3.4)
        cab = b.color(_CAR_COLORS)
        return (ln, w, h), [((0.38 * ln, 0.0, 0.42 * h), (0.24 * ln, w, 0.84 * h), cab, 0.4, 0),
                            ((-0.12 * ln, 0.0, 0.5 * h), (0.74 * ln, w, h), (215, 215, 210),
                             0.45, 0)]
    if label == sc.BUS:
        ln, w, h = u(10.0, 12.0), 2.55, 3.2
        return (ln, w, h), [((0.0, 0.0, h / 2), (ln, w, h), b.color(((220, 170, 30),
                                                                     (40, 90, 170))), 0.4, 1)]
    if label == sc.TRAILER:
        ln, w, h = u(7.0, 8.5), 2.5, 3.6
        return (ln, w, h), [((0.0, 0.0, h / 2), (ln, w, h), (230, 230, 228), 0.45, 0)]
    if label == sc.CONSTRUCTION:
        ln, w, h = 6.5, 2.6, 3.2
        return (ln, w, h), [((0.0, 0.0, 0.8), (ln, w, 1.6), (225, 170, 20), 0.45, 0),
                            ((-1.2, 0.0, 2.4), (2.0, 2.0, 1.6), (60, 60, 60), 0.2, 0)]
    ln, w, h = 2.1, 0.8, 1.5  # motorcycle with rider
    return (ln, w, h), [((0.0, 0.0, 0.5), (ln, w, 1.0), b.color(_CAR_COLORS), 0.35, 0),
                        ((-0.2, 0.0, 1.25), (0.5, 0.5, 0.5), (40, 40, 45), 0.15, 0)]


def _pedestrian(b: _Builder) -> tuple[tuple[float, float, float], list[_Part]]:
    h = b.rng.uniform(1.55, 1.9)
    shirt = b.color(((200, 40, 40), (40, 80, 170), (230, 230, 230), (40, 130, 70),
                     (230, 200, 60), (60, 60, 60)))
    return (0.6, 0.6, h), [((0.0, 0.0, 0.24 * h), (0.3, 0.42, 0.48 * h), (40, 45, 60), 0.12, 0),
                           ((0.0, 0.0, 0.65 * h), (0.32, 0.56, 0.34 * h), shirt, 0.15, 0),
                           ((0.0, 0.0, 0.905 * h), (0.22, 0.2, 0.17 * h), (215, 170, 140),
                            0.12, 0)]


def _bicycle(b: _Builder, ridden: bool) -> tuple[tuple[float, float, float], list[_Part]]:
    frame = ((0.0, 0.0, 0.5), (1.75, 0.5, 1.0), b.color(_CAR_COLORS), 0.3, 0)
    if not ridden:
        return (1.75, 0.6, 1.1), [frame]
    return (1.75, 0.6, 1.75), [frame, ((-0.15, 0.0, 1.35), (0.45, 0.5, 0.8), (50, 50, 70),
                                       0.15, 0)]


def _place_buildings(b: _Builder, s0: float, s1: float, cfg: sc.WorldConfig,
                     patches: list[tuple[float, float, float, float, int]]) -> None:
    """Buildings, walls, hedges and lawns on both sides, plus a sparse second row."""
    u = b.rng.uniform
    for side in (-1.0, 1.0):
        s = s0 + u(-5.0, 5.0)
        while s < s1:
            gap, width = u(1.0, 9.0), u(8.0, 22.0)
            if gap > 4.0:
                kind = int(b.rng.integers(3))
                mid = s + gap / 2
                if kind == 0:
                    b.add(sc.MANMADE, mid, side * 14.6, False, (gap, 0.3, 1.8),
                          [((0, 0, 0.9), (gap, 0.3, 1.8), (150, 145, 140), 0.3, 0)], thing=False)
                elif kind == 1:
                    b.add(sc.VEGETATION, mid, side * 14.8, False, (gap, 1.0, 1.3),
                          [((0, 0, 0.65), (gap, 1.0, 1.3), (50, 100, 45), 0.2, 0)], thing=False)
                lo, hi = sorted((side * 14.0, side * 30.0))
                patches.append((s, s + gap, lo, hi, sc.TERRAIN))
            s += gap
            depth, height = u(8.0, 16.0), u(*cfg.building_height_range_m)
            lat = side * (u(15.0, 19.0) + depth / 2)
            b.add(sc.MANMADE, s + width / 2, lat, False, (width, depth, height),
                  [((0, 0, height / 2), (width, depth, height), b.color(_BUILDING_COLORS),
                    0.3, int(b.rng.random() < 0.8))], thing=False)
            if b.rng.random() < 0.4:
                lo, hi = sorted((side * 11.0, side * 14.0))
                patches.append((s + width / 2 - 2.0, s + width / 2 + 2.0, lo, hi, sc.OTHER_FLAT))
            s += width
        for s_far in np.arange(s0, s1, 35.0) + u(0.0, 20.0):
            width, depth, height = u(12.0, 25.0), u(10.0, 20.0), u(15.0, 40.0)
            b.add(sc.MANMADE, s_far, side * u(42.0, 55.0), False, (width, depth, height),
                  [((0, 0, height / 2), (width, depth, height), b.color(_BUILDING_COLORS),
                    0.3, 1)], thing=False)


def _place_roadside(b: _Builder, s0: float, s1: float, cfg: sc.WorldConfig) -> None:
    """Trees (trunk + canopy) and street lights on the terrain strips."""
    u = b.rng.uniform
    for side in (-1.0, 1.0):
        s = s0 + u(0.0, cfg.tree_spacing_m)
        while s < s1:
            trunk_h, crown, crown_h = u(2.2, 3.0), u(2.5, 4.5), u(2.5, 4.5)
            green = b.color(((45, 110, 40), (70, 120, 45), (35, 90, 50)))
            b.add(sc.VEGETATION, s, side * u(12.2, 13.0), False,
                  (crown, crown, trunk_h + crown_h),
                  [((0, 0, trunk_h / 2), (0.35, 0.35, trunk_h), (95, 70, 45), 0.2, 0),
                   ((0, 0, trunk_h + crown_h / 2 - 0.2), (crown, crown, crown_h), green, 0.25,
                    0)], thing=False)
            s += cfg.tree_spacing_m * u(0.6, 1.4)
        for s in np.arange(s0 + u(0.0, 10.0), s1, cfg.light_spacing_m):
            b.add(sc.MANMADE, s, side * 11.4, False, (0.2, 0.2, 7.0),
                  [((0, 0, 3.5), (0.2, 0.2, 7.0), (120, 120, 125), 0.5, 0),
                   ((0, -side * 0.8, 6.9), (0.15, 1.6, 0.15), (120, 120, 125), 0.5, 0)],
                  thing=False)


def _place_parking(b: _Builder, s0: float, s1: float, n: sc.AgentCounts) -> None:
    """Work zone (construction vehicle, barriers, cones) and parked vehicles, 9 m slots."""
    slot, u = 9.0, b.rng.uniform
    slots = [(side, s) for side in (-1.0, 1.0) for s in np.arange(s0, s1 - slot, slot) + slot / 2]
    order = [int(k) for k in b.rng.permutation(len(slots))]
    if slots and (n.construction_vehicles or n.barriers or n.traffic_cones):
        side, s_mid = slots[order[0]]
        order = [k for k in order
                 if slots[k][0] != side or abs(slots[k][1] - s_mid) > 2.5 * slot]
        lo, hi = s_mid - 1.5 * slot, s_mid + 1.5 * slot
        for s in np.linspace(lo + 4.0, hi - 4.0, n.construction_vehicles):
            size, parts = _vehicle(b, sc.CONSTRUCTION)
            b.add(sc.CONSTRUCTION, s, side * sc.PARKING_L, side > 0, size, parts,
                  attribute='vehicle.parked')
        for s in np.linspace(lo + 1.0, hi - 1.0, n.barriers):
            b.add(sc.BARRIER, s, side * 5.3, False, (1.9, 0.5, 1.0),
                  [((0, 0, 0.5), (1.9, 0.5, 1.0), (230, 120, 25), 0.7, 0)])
        for s in np.linspace(lo - 6.0, lo + 0.5, n.traffic_cones):
            lat = side * (sc.PARKING_L - 1.2 * (s - lo + 6.0) / 6.5)
            b.add(sc.CONE, s, lat, False, (0.4, 0.4, 0.75),
                  [((0, 0, 0.375), (0.4, 0.4, 0.75), (240, 100, 20), 0.8, 0)])
    kinds = ([sc.TRUCK] * (n.trucks // 2) + [sc.TRAILER] * n.trailers
             + [sc.CAR] * n.parked_cars)
    for label, k in zip(kinds, order, strict=False):
        side, s = slots[k]
        size, parts = _vehicle(b, label)
        b.add(label, s + u(-0.3, 0.3), side * sc.PARKING_L, side > 0, size, parts,
              attribute='vehicle.parked')


def _place_traffic(b: _Builder, s0: float, s1: float, n: sc.AgentCounts,
                   ego: sc.EgoMotion, duration: float) -> None:
    """Moving vehicles (oncoming lane, one leader in the ego lane) and ridden bicycles."""
    u = b.rng.uniform
    cars = n.moving_cars
    if cars >= 2:
        size, parts = _vehicle(b, sc.CAR)
        b.add(sc.CAR, u(18.0, 28.0), sc.EGO_LANE_L, False, size, parts, speed=ego.speed,
              attribute='vehicle.moving')
        cars -= 1
    labels = ([sc.TRUCK] * (n.trucks - n.trucks // 2) + [sc.BUS] * n.buses
              + [sc.MOTORCYCLE] * n.motorcycles + [sc.CAR] * cars)
    labels = [labels[k] for k in b.rng.permutation(len(labels))]
    speed = u(6.0, 11.0)
    for label, s in zip(labels, _spaced(b.rng, len(labels), s0, s1 + speed * duration, 16.0),
                        strict=False):
        size, parts = _vehicle(b, label)
        b.add(label, s, sc.ONCOMING_LANE_L, True, size, parts, speed=-speed,
              attribute='vehicle.moving')
    ridden = n.bicycles - n.bicycles // 2
    for side, count, bike_speed in ((-1.0, ridden - ridden // 2, 4.0),
                                    (1.0, ridden // 2, -4.5)):
        for s in _spaced(b.rng, count, s0, s1, 4.0):
            size, parts = _bicycle(b, True)
            b.add(sc.BICYCLE, s - bike_speed * duration / 2, side * sc.BIKE_LANE_L, side > 0,
                  size, parts, speed=bike_speed, attribute='cycle.with_rider')
    for s in _spaced(b.rng, n.bicycles // 2, s0, s1, 6.0):
        size, parts = _bicycle(b, False)
        b.add(sc.BICYCLE, s, float(b.rng.choice([-1.0, 1.0])) * 10.8, False, size, parts,
              attribute='cycle.without_rider')


def _place_pedestrians(b: _Builder, s0: float, s1: float, count: int, duration: float) -> None:
    """Pedestrians on sidewalk tracks; each track has one direction and speed."""
    tracks = [(side * lat, float(b.rng.choice([-1.0, 1.0])) * b.rng.uniform(1.0, 1.6))
              for side in (-1.0, 1.0) for lat in (8.1, 8.8, 9.5, 10.1)]
    track_of = b.rng.integers(len(tracks), size=count)
    for k, track in enumerate(tracks):
        members = int(np.count_nonzero(track_of == k))
        lat, speed = track
        walking = b.rng.random() < 0.75
        for s in _spaced(b.rng, members, s0, s1, 2.5):
            size, parts = _pedestrian(b)
            v = speed if walking else 0.0
            b.add(sc.PEDESTRIAN, s - v * duration / 2, lat, v < 0, size, parts, speed=v,
                  attribute='pedestrian.moving' if walking else 'pedestrian.standing')


def build_scene(config: sc.WorldConfig, name: str, seed: int, scene_index: int,
                duration_s: float) -> sc.SyntheticScene:
    """Generate one scene deterministically.

    Args:
        config: Content settings.
        name: Scene name.
        seed: Dataset seed.
        scene_index: Index of the scene in the dataset (with ``seed``, seeds the generator).
        duration_s: Time the ego drives, seconds (content covers the whole drive).

    Returns:
        The scene. The middle of the drive is at world ``(c, c)`` with ``c = (road length) / 2
        + 70`` m, so all content has positive coordinates and a 0.1 m map mask that starts at
        the world origin (as the devkit's MapMask assumes) stays small.
    """
    rng = np.random.default_rng([int(seed), int(scene_index), 0x5EED])
    speed = float(rng.uniform(*config.ego_speed_range_mps))
    ego = sc.EgoMotion(speed=speed, weave=config.ego_weave_m, period=config.ego_weave_period_s,
                       phase=float(rng.uniform(0.0, 2.0 * np.pi)))
    s0, s1 = -config.margin_m, speed * duration_s + config.margin_m
    heading = float(rng.uniform(-np.pi, np.pi))
    centre = np.full(2, (s1 - s0) / 2.0 + 70.0)
    origin = centre - (s0 + s1) / 2.0 * np.array([np.cos(heading), np.sin(heading)])
    b = _Builder(rng)
    patches: list[tuple[float, float, float, float, int]] = []
    _place_buildings(b, s0, s1, config, patches)
    _place_roadside(b, s0, s1, config)
    _place_parking(b, s0, s1, config.agents)
    _place_traffic(b, s0, s1, config.agents, ego, duration_s)
    _place_pedestrians(b, s0, s1, config.agents.pedestrians, duration_s)
    ground = sc.GroundLayout(
        origin=origin, heading=heading,
        patches=np.array([p[:4] for p in patches], dtype=np.float64).reshape(-1, 4),
        patch_labels=np.array([p[4] for p in patches], dtype=np.uint8))
    elevation, azimuth = rng.uniform(0.6, 1.1), rng.uniform(-np.pi, np.pi)
    sun = np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                    np.sin(elevation)])
    extent = np.array([s0, s1, -60.0, 60.0])
    return b.finish(name, ground, ego, extent, sun)
