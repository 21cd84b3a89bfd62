"""The five room kinds of the synthetic indoor world and what each one holds.

Every room has a door, windows, a ceiling lamp, pictures and a trash can. Beyond that:

* bedroom: bed (+ pillows), nightstand (+ lamp), wardrobe, desk (+ chair, monitor), curtains,
  rug, boxes;
* living room: sofa (+ pillows), coffee table, armchair, TV stand (+ TV), bookshelf (+ books),
  a kitchenette (cabinets, counter, sink, refrigerator), curtains, rug, floor lamp, plant;
* office: desks (+ office chairs, monitors, keyboards), bookshelf (+ books), file cabinet,
  small sofa, side table, whiteboard, plant, boxes;
* kitchen: base and wall cabinets, counter, sink, microwave, refrigerator, dining table
  (+ chairs), curtains, plant;
* bathroom: bathtub (+ shower curtain), toilet, vanity cabinet (+ counter, sink, mirror),
  towel, boxes.

So the 20 benchmark classes are all present in a world holding {bedroom, kitchen, office,
bathroom} or {living room, bedroom, bathroom}. A required object that finds no place raises
:class:`~cns_ros.data.synthetic_indoor_layout.LayoutError` (the caller retries with another
draw); optional ones are skipped.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cns_ros.data import synthetic_indoor_furniture as fu
from cns_ros.data.synthetic_indoor_layout import LayoutError, RoomBuilder, require, wall_of_yaw
from cns_ros.data.synthetic_indoor_materials import draw_material

#: Room kind -> ((W min, W max), (D min, D max)) interior size ranges, metres.
ROOM_SIZES: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    'bedroom': ((3.8, 4.6), (3.6, 4.2)), 'living_room': ((4.8, 5.6), (4.0, 4.6)),
    'office': ((4.0, 4.8), (3.6, 4.2)), 'kitchen': ((3.6, 4.4), (3.2, 3.8)),
    'bathroom': ((2.6, 3.0), (2.4, 2.8))}


def _walls(rng: np.random.Generator, first: int | None = None) -> tuple[int, ...]:
    order = [int(w) for w in rng.permutation(4)]
    if first is not None:
        order.remove(first)
        order.insert(0, first)
    return tuple(order)


def _door(b: RoomBuilder, width: float | None = None) -> int:
    """The door (embedded 2 cm in a wall) and its swing zone; returns its wall."""
    item = fu.door(b.rng, width)
    for wall in _walls(b.rng):
        for pose in b.wall_poses(item, (wall,), gap=-0.02):
            if b.fits(item, pose, inside=False):
                obj = b.place(item, pose)
                lo, hi = b.occupied[-1][:2]
                b.occupy(*_grow(lo, hi, wall, 0.9), owner=obj)
                return wall
    raise LayoutError('room: no free place for the door')


def _grow(lo: np.ndarray, hi: np.ndarray, wall: int, depth: float) -> tuple[np.ndarray, ...]:
    """A box grown ``depth`` metres into the room from wall ``wall``."""
    lo, hi = lo.copy(), hi.copy()
    if wall == 0:
        hi[1] += depth
    elif wall == 1:
        lo[0] -= depth
    elif wall == 2:
        lo[1] -= depth
    else:
        hi[0] += depth
    return lo, hi


def _windows(b: RoomBuilder, count: int, door_wall: int, size: tuple[float, float],
             sill: float, curtain: float) -> int:
    """Up to ``count`` windows (width, height ``size``) with curtains (probability
    ``curtain``, long or short) on walls other than the door's; returns how many fit."""
    placed = 0
    walls = [w for w in _walls(b.rng) if w != door_wall] + [door_wall]
    for wall in walls[:count + 1]:
        if placed == count:
            break
        item = fu.window(*size)
        top = sill + size[1]
        cloth = None
        if b.rng.random() < curtain:
            bottom = 0.03 if b.rng.random() < 0.5 else sill - 0.15
            cloth = fu.curtains(b.rng, size[0], top + 0.15, bottom)
        for pose in b.wall_poses(item, (wall,), z=sill, gap=-0.02, step=0.2):
            s = _along(b, pose, item, wall)
            drape = None if cloth is None else b.wall_pose(cloth, wall, s, 0.0, 0.1)
            if not b.fits(item, pose, inside=False) or (
                    drape is not None and not b.fits(cloth, drape)):
                continue
            obj = b.place(item, pose)
            lo, hi = b.occupied[-1][:2]
            b.occupy(*_grow(lo, hi, wall, 0.35), owner=obj)
            if drape is not None:
                b.place(cloth, drape)
            placed += 1
            break
    if placed == 0:
        raise LayoutError('room: no free place for a window')
    return placed


def _along(b: RoomBuilder, pose: tuple[float, ...], item: fu.Item, wall: int) -> float:
    """The along-wall position of the centre of ``item`` at ``pose``."""
    lo, hi = b.aabb(item, pose)
    centre = 0.5 * (lo + hi)
    return float(centre[0] if wall % 2 == 0 else centre[1])


def _pictures(b: RoomBuilder, count: int) -> None:
    """``count`` pictures on free wall spans (the first one is required)."""
    for k in range(count):
        w, h = b.rng.uniform(0.35, 1.0), b.rng.uniform(0.3, 0.75)
        item = fu.small('picture', w, 0.025, h, ('art',))
        placed = b.try_place(item, b.wall_poses(
            item, _walls(b.rng), z=b.rng.uniform(1.5, 1.7) - h / 2, gap=0.0))
        if k == 0:
            require(placed, 'picture', 'room')


def _common(b: RoomBuilder, pictures: int) -> None:
    """Ceiling lamp, pictures and a trash can (every room)."""
    w, d, h = b.size
    b.place(fu.ceiling_lamp(b.rng), (w / 2, d / 2, h, 0.0), occupy=False)
    _pictures(b, pictures)
    item = fu.trash_can(b.rng)
    require(b.try_place(item, b.wall_poses(item, _walls(b.rng))), 'trash can', 'room')


def _on_wall(b: RoomBuilder, item: fu.Item, what: str, walls: tuple[int, ...] | None = None,
             gap: float = 0.01) -> int:
    walls = walls if walls is not None else _walls(b.rng)
    return require(b.try_place(item, b.wall_poses(item, walls, gap=gap)), what, 'room')


def _boxes(b: RoomBuilder, count: int) -> None:
    for _ in range(count):
        s = b.rng.uniform(0.25, 0.5)
        item = fu.small('box', s, b.rng.uniform(0.25, 0.45), b.rng.uniform(0.2, 0.4),
                        ('paint', 'wood', 'fabric'))
        b.try_place(item, b.wall_poses(item, _walls(b.rng)))


def _rug(b: RoomBuilder, parent: int | None = None, dy: float = 0.0) -> None:
    item = fu.small('rug', b.rng.uniform(1.4, 2.2), b.rng.uniform(1.0, 1.6), 0.012,
                    ('fabric',))
    if parent is not None:
        b.attach(item, parent, dy=dy, dz=-b.poses[parent][2], occupy=False)
        return
    w, d, _ = b.size
    b.place(item, (w / 2, d / 2, 0.0, float(b.rng.choice([0.0, np.pi / 2]))), occupy=False)


def _desk_set(b: RoomBuilder, chair: Callable[[np.random.Generator], fu.Item],
              walls: tuple[int, ...] | None = None) -> int:
    """A desk against a wall, a chair facing it, a monitor (and keyboard) on it."""
    item = fu.desk(b.rng)
    desk = _on_wall(b, item, 'desk', walls)
    depth = float(np.ptp(item.extent()[:, 1]))
    require(b.attach(chair(b.rng), desk, dy=-depth / 2 - 0.2, dyaw=np.pi, check=True),
            'chair', 'room')
    if b.rng.random() < 0.8:
        b.attach(fu.display(b.rng, 'monitor'), desk, dx=b.rng.uniform(-0.2, 0.2),
                 dy=depth / 2 - 0.2, dz=0.75, check=True)
        b.attach(fu.small('keyboard', 0.44, 0.14, 0.02, ('metal', 'paint')), desk,
                 dy=-depth / 2 + 0.15, dz=0.75, check=True)
    return desk


def _bookshelf(b: RoomBuilder, walls: tuple[int, ...] | None = None) -> int:
    shelf, rows = fu.bookshelf(b.rng)
    obj = _on_wall(b, shelf, 'bookshelf', walls)
    for row in rows:
        b.attach(row, obj, occupy=False)
    return obj


def _counter_run(b: RoomBuilder, walls: tuple[int, ...], length: float,
                 upper: bool) -> int:
    """Base cabinets + counter + sink (+ microwave, wall cabinets) along a wall."""
    base = fu.cabinet('kitchen cabinets', length, 0.58, 0.86, max(2, round(length / 0.5)))
    cab = _on_wall(b, base, 'kitchen cabinets', walls)
    top = b.attach(fu.small('kitchen counter', length + 0.02, 0.62, 0.04,
                            ('stone', 'wood', 'ceramic')), cab, dy=-0.02, dz=0.86)
    require(b.attach(fu.basin(b.rng), top, dx=b.rng.uniform(-0.25, 0.25) * length,
                     dy=0.02, dz=0.04, check=True), 'sink', 'kitchen')
    b.attach(fu.small('microwave', 0.48, 0.36, 0.28, ('metal', 'paint')), top,
             dx=length / 2 - 0.3, dy=0.08, dz=0.04, check=True)
    if upper:
        b.attach(fu.cabinet('kitchen cabinets', length, 0.34, 0.7, max(2, round(length / 0.5))),
                 cab, dy=0.12, dz=1.45)
    return cab


def bedroom(b: RoomBuilder) -> None:
    """Fills a bedroom (see the module docstring)."""
    door = _door(b)
    _windows(b, int(b.rng.integers(1, 3)), door, (b.rng.uniform(0.9, 1.4), 1.3), 0.85, 1.0)
    bed_item = fu.bed(b.rng)
    bed = _on_wall(b, bed_item, 'bed')
    ext = bed_item.extent()
    width, length = float(np.ptp(ext[:, 0])), float(np.ptp(ext[:, 1]))
    for k in range(1 if width < 1.2 else 2):
        dx = 0.0 if width < 1.2 else (k - 0.5) * width / 2
        b.attach(fu.pillow(b.rng), bed, dx=dx, dy=length / 2 - 0.32, dz=0.5, occupy=False)
    stand = fu.cabinet('nightstand', 0.45, 0.4, 0.55, 1)
    table = b.try_place(stand, b.wall_poses(stand, _walls(b.rng)))
    if table is not None:
        b.attach(fu.lamp(b.rng, floor=False), table, dz=0.55, check=True)
    _on_wall(b, fu.cabinet('wardrobe', b.rng.uniform(0.9, 1.2), 0.6, 2.0, 2), 'wardrobe')
    _desk_set(b, fu.chair)
    _rug(b, bed, dy=-0.3)
    _boxes(b, int(b.rng.integers(0, 3)))
    _common(b, int(b.rng.integers(1, 3)))


def living_room(b: RoomBuilder) -> None:
    """Fills a living room with a kitchenette (see the module docstring)."""
    door = _door(b)
    _windows(b, 2, door, (b.rng.uniform(1.0, 1.6), 1.4), 0.8, 1.0)
    couch = _on_wall(b, fu.sofa(b.rng), 'sofa')
    facing = (wall_of_yaw(b.poses[couch][3]) + 2) % 4
    _rug(b, couch, dy=-1.1)
    table = fu.table(b.rng, 'coffee table', 0.42, (b.rng.uniform(0.9, 1.1), 0.55))
    require(b.attach(table, couch, dy=-1.05, check=True), 'coffee table', 'living room')
    b.attach(fu.pillow(b.rng), couch, dx=0.5, dy=0.15, dz=0.5, dyaw=0.3, occupy=False)
    stand = _on_wall(b, fu.cabinet('tv stand', b.rng.uniform(1.2, 1.6), 0.42, 0.5, 3),
                     'tv stand', _walls(b.rng, first=facing))
    b.attach(fu.display(b.rng, 'tv'), stand, dy=0.05, dz=0.5, check=True)
    _bookshelf(b)
    _counter_run(b, _walls(b.rng), b.rng.uniform(1.6, 2.2), upper=False)
    _on_wall(b, fu.refrigerator(b.rng), 'refrigerator')
    chair = fu.armchair(b.rng)
    require(b.try_place(chair, b.floor_poses(chair, margin=0.6,
                                             yaws=(0.0, 0.5 * np.pi, np.pi, -0.5 * np.pi))),
            'armchair', 'living room')
    lamp = fu.lamp(b.rng, floor=True)
    b.try_place(lamp, b.wall_poses(lamp, _walls(b.rng)))
    plant = fu.plant(b.rng)
    b.try_place(plant, b.wall_poses(plant, _walls(b.rng)))
    if b.rng.random() < 0.5:
        ottoman = fu.small('ottoman', 0.5, 0.5, 0.42, ('fabric', 'leather'))
        b.try_place(ottoman, b.floor_poses(ottoman, margin=0.5))
    _common(b, 2)


def office(b: RoomBuilder) -> None:
    """Fills an office (see the module docstring)."""
    door = _door(b)
    _windows(b, int(b.rng.integers(1, 3)), door, (b.rng.uniform(1.0, 1.6), 1.3), 0.9, 0.5)
    _desk_set(b, fu.office_chair)
    if b.rng.random() < 0.6:
        item = fu.desk(b.rng)
        if b.try_place(item, b.wall_poses(item, _walls(b.rng))) is not None:
            desk = len(b.objects) - 1
            depth = float(np.ptp(item.extent()[:, 1]))
            b.attach(fu.office_chair(b.rng), desk, dy=-depth / 2 - 0.2, dyaw=np.pi, check=True)
    _bookshelf(b)
    _on_wall(b, fu.cabinet('file cabinet', 0.47, 0.6, b.rng.uniform(0.7, 1.3), 1),
             'file cabinet')
    _on_wall(b, fu.sofa(b.rng, b.rng.uniform(1.4, 1.7)), 'sofa')
    side = fu.table(b.rng, 'table', 0.55, (0.5, 0.5))
    _on_wall(b, side, 'side table')
    if b.rng.random() < 0.7:
        board = fu.small('whiteboard', b.rng.uniform(1.2, 1.8), 0.02, 1.0, ('paint',))
        b.try_place(board, b.wall_poses(board, _walls(b.rng), z=1.0, gap=0.0))
    plant = fu.plant(b.rng)
    b.try_place(plant, b.wall_poses(plant, _walls(b.rng)))
    _boxes(b, int(b.rng.integers(1, 3)))
    _common(b, 1)


def kitchen(b: RoomBuilder) -> None:
    """Fills a kitchen (see the module docstring)."""
    door = _door(b)
    _windows(b, 1, door, (b.rng.uniform(0.9, 1.3), 1.2), 1.0, 0.8)
    walls = _walls(b.rng)
    _counter_run(b, walls, min(b.rng.uniform(1.8, 2.6), b.wall_length(walls[0]) - 1.0), True)
    _on_wall(b, fu.refrigerator(b.rng), 'refrigerator')
    table = fu.table(b.rng)
    dining = require(b.try_place(table, b.floor_poses(table, margin=0.8)), 'table', 'kitchen')
    ext = table.extent()
    half_w, half_d = float(ext[1, 0]), float(ext[1, 1])
    seats = [(-half_w / 3, -half_d - 0.15, np.pi), (half_w / 3, half_d + 0.15, 0.0),
             (half_w / 3, -half_d - 0.15, np.pi), (-half_w / 3, half_d + 0.15, 0.0)]
    for k, (dx, dy, yaw) in enumerate(seats[:int(b.rng.integers(2, 5))]):
        chair = b.attach(fu.chair(b.rng), dining, dx=dx, dy=dy, dyaw=yaw, check=True)
        if k == 0:
            require(chair, 'chair', 'kitchen')
    plant = fu.plant(b.rng)
    b.try_place(plant, b.wall_poses(plant, _walls(b.rng)))
    _common(b, 1)


def bathroom(b: RoomBuilder) -> None:
    """Fills a bathroom (see the module docstring)."""
    door = _door(b, width=0.8)
    _windows(b, 1, door, (0.6, 0.6), 1.35, 0.3)
    tub, curtain = fu.bathtub(b.rng)
    tub_obj = _on_wall(b, tub, 'bathtub')
    b.attach(curtain, tub_obj)
    _on_wall(b, fu.toilet(b.rng), 'toilet')
    width = b.rng.uniform(0.6, 0.9)
    vanity = _on_wall(b, fu.cabinet('cabinet', width, 0.48, 0.8, 2), 'vanity')
    top = b.attach(fu.small('counter', width + 0.04, 0.5, 0.03, ('stone', 'ceramic', 'wood')),
                   vanity, dy=-0.01, dz=0.8)
    require(b.attach(fu.basin(b.rng), top, dy=0.02, dz=0.03, check=True), 'sink', 'bathroom')
    b.attach(fu.small('mirror', width * 0.8, 0.02, 0.7, ('glass',)), vanity, dy=0.24,
             dz=1.15, check=True)
    towel = fu.small('towel', 0.45, 0.04, 0.6, ('fabric',))
    b.try_place(towel, b.wall_poses(towel, _walls(b.rng), z=0.85, gap=0.02))
    _boxes(b, int(b.rng.integers(0, 2)))
    _common(b, int(b.rng.integers(0, 2)))


#: Room kind -> recipe.
RECIPES: dict[str, Callable[[RoomBuilder], None]] = {
    'bedroom': bedroom, 'living_room': living_room, 'office': office, 'kitchen': kitchen,
    'bathroom': bathroom}


def build_room(kind: str, rng: np.random.Generator) -> RoomBuilder:
    """A furnished room of ``kind`` (one draw; may raise LayoutError)."""
    if kind not in RECIPES:
        raise ValueError(f'unknown room kind {kind!r}; expected one of {", ".join(RECIPES)}')
    (w0, w1), (d0, d1) = ROOM_SIZES[kind]
    size = (rng.uniform(w0, w1), rng.uniform(d0, d1), rng.uniform(2.5, 2.8))
    builder = RoomBuilder(rng, size)
    accent = int(rng.integers(4)) if rng.random() < 0.3 else None
    builder.shell(draw_material(rng, ('paint',)), accent)
    RECIPES[kind](builder)
    return builder
