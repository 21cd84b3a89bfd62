"""Furniture and clutter of the synthetic indoor world, each made of axis-aligned boxes.

An :class:`Item` is one annotated object (one raw category, one instance) in its own frame:
x along its width, y along its depth with the back at +y (the side that goes against a wall)
and the front at -y, z up from the surface it stands on (the floor, a table top). Its parts
are boxes; parts that share a *slot* share a material, drawn per object from the slot's
material families (:mod:`cns_ros.data.synthetic_indoor_materials`). Sizes are metres, drawn
from typical furniture dimensions with ``rng``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Material families per slot kind, shared by many classes so that colour does not give
#: the class.
HARD = ('wood', 'paint', 'metal')
SOFT = ('fabric', 'leather')
BOARD = ('wood', 'paint')
CERAMIC = ('ceramic', 'paint')


@dataclass(frozen=True)
class Part:
    """One box of an item, in the item frame: centre (x, y), bottom z, size (w, d, h)."""

    x: float
    y: float
    z0: float
    w: float
    d: float
    h: float
    slot: str


@dataclass
class Item:
    """One object: raw category, parts and the material families of each slot."""

    raw: str
    parts: list[Part] = field(default_factory=list)
    slots: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def box(self, x: float, y: float, z0: float, w: float, d: float, h: float,
            slot: str = 'main') -> Item:
        """Adds a part; returns self."""
        self.parts.append(Part(float(x), float(y), float(z0), float(w), float(d), float(h),
                               slot))
        return self

    def extent(self) -> np.ndarray:
        """float64 (2, 3) min and max corner of the parts, item frame."""
        lo = np.array([[p.x - p.w / 2, p.y - p.d / 2, p.z0] for p in self.parts])
        hi = np.array([[p.x + p.w / 2, p.y + p.d / 2, p.z0 + p.h] for p in self.parts])
        return np.stack([lo.min(axis=0), hi.max(axis=0)])


def _legs(item: Item, w: float, d: float, h: float, size: float, slot: str) -> None:
    for sx in (-1, 1):
        for sy in (-1, 1):
            item.box(sx * (w / 2 - size / 2), sy * (d / 2 - size / 2), 0.0, size, size, h, slot)


def _fronts(item: Item, w: float, d: float, z0: float, h: float, count: int,
            slot: str = 'front') -> None:
    """``count`` door or drawer fronts side by side on the front face, with handles."""
    width = w / count
    for k in range(count):
        x = -w / 2 + width * (k + 0.5)
        item.box(x, -d / 2 - 0.01, z0 + 0.02, width - 0.01, 0.02, h - 0.04, slot)
        item.box(x + (0.3 * width if k % 2 == 0 else -0.3 * width) * (count > 1),
                 -d / 2 - 0.03, z0 + h * 0.6, 0.02, 0.02, 0.12, 'handle')


def chair(rng: np.random.Generator) -> Item:
    """A four-legged chair with a backrest (seat height 0.45 m)."""
    s, back = rng.uniform(0.42, 0.48), rng.uniform(0.38, 0.5)
    item = Item('chair', slots={'frame': HARD, 'seat': SOFT + BOARD})
    _legs(item, s, s, 0.42, 0.035, 'frame')
    item.box(0, 0, 0.42, s, s, 0.05, 'seat')
    return item.box(0, s / 2 - 0.02, 0.47, s, 0.04, back, 'frame')


def office_chair(rng: np.random.Generator) -> Item:
    """A swivel chair: star base, post, seat and back."""
    item = Item('office chair', slots={'base': ('metal',), 'seat': SOFT})
    item.box(0, 0, 0.02, 0.56, 0.05, 0.05, 'base').box(0, 0, 0.02, 0.05, 0.56, 0.05, 'base')
    item.box(0, 0, 0.07, 0.05, 0.05, 0.36, 'base')
    seat = rng.uniform(0.46, 0.52)
    item.box(0, 0, 0.43, seat, seat, 0.07, 'seat')
    return item.box(0, seat / 2 - 0.03, 0.55, seat - 0.04, 0.05, rng.uniform(0.4, 0.55),
                    'seat')


def armchair(rng: np.random.Generator) -> Item:
    """An upholstered armchair."""
    w = rng.uniform(0.75, 0.9)
    item = Item('armchair', slots={'body': SOFT, 'cushion': SOFT})
    item.box(0, 0, 0.05, w, 0.8, 0.35, 'body').box(0, -0.05, 0.4, w - 0.3, 0.65, 0.08, 'cushion')
    item.box(0, 0.31, 0.4, w, 0.18, 0.45, 'body')
    for sx in (-1, 1):
        item.box(sx * (w / 2 - 0.07), -0.05, 0.4, 0.14, 0.7, 0.2, 'body')
    _legs(item, w - 0.1, 0.7, 0.05, 0.04, 'body')
    return item


def sofa(rng: np.random.Generator, width: float | None = None) -> Item:
    """A sofa with seat cushions, back and arms (width 1.6-2.2 m)."""
    w = width if width is not None else rng.uniform(1.7, 2.2)
    item = Item('sofa', slots={'body': SOFT, 'cushion': SOFT})
    item.box(0, 0, 0.08, w, 0.9, 0.32, 'body')
    seats = 2 if w < 1.9 else 3
    inner = w - 0.36
    for k in range(seats):
        item.box(-inner / 2 + inner * (k + 0.5) / seats, -0.08, 0.4, inner / seats - 0.01, 0.7,
                 0.1, 'cushion')
    item.box(0, 0.35, 0.4, w, 0.2, 0.45, 'body')
    for sx in (-1, 1):
        item.box(sx * (w / 2 - 0.09), -0.05, 0.4, 0.18, 0.8, 0.22, 'body')
    _legs(item, w - 0.1, 0.8, 0.08, 0.05, 'legs')
    item.slots['legs'] = HARD
    return item


def bed(rng: np.random.Generator) -> Item:
    """A bed: frame, mattress, blanket and headboard at the back (+y)."""
    w, length = rng.choice([0.95, 1.4, 1.6]), rng.uniform(1.95, 2.1)
    item = Item('bed', slots={'frame': BOARD + SOFT, 'sheet': ('fabric',),
                              'blanket': ('fabric',)})
    item.box(0, 0, 0.0, w, length, 0.3, 'frame')
    item.box(0, 0, 0.3, w - 0.04, length - 0.06, 0.2, 'sheet')
    item.box(0, -length * 0.18, 0.5, w, length * 0.62, 0.03, 'blanket')
    return item.box(0, length / 2 + 0.03, 0.0, w + 0.04, 0.06, rng.uniform(0.9, 1.15), 'frame')


def pillow(rng: np.random.Generator) -> Item:
    """A pillow lying flat."""
    return Item('pillow', slots={'main': ('fabric',)}).box(
        0, 0, 0, rng.uniform(0.45, 0.6), rng.uniform(0.3, 0.38), rng.uniform(0.1, 0.14))


def table(rng: np.random.Generator, raw: str = 'table', height: float = 0.74,
          size: tuple[float, float] | None = None) -> Item:
    """A four-legged table (dining, coffee or side table)."""
    w, d = size if size is not None else (rng.uniform(1.2, 1.6), rng.uniform(0.8, 0.9))
    item = Item(raw, slots={'top': (*BOARD, 'stone'), 'legs': HARD})
    _legs(item, w - 0.08, d - 0.08, height - 0.04, 0.05, 'legs')
    return item.box(0, 0, height - 0.04, w, d, 0.04, 'top')


def desk(rng: np.random.Generator) -> Item:
    """A desk: top on two side panels with a modesty panel at the back."""
    w, d = rng.uniform(1.2, 1.5), rng.uniform(0.6, 0.72)
    item = Item('desk', slots={'top': BOARD, 'side': HARD})
    item.box(0, 0, 0.71, w, d, 0.04, 'top')
    for sx in (-1, 1):
        item.box(sx * (w / 2 - 0.03), 0, 0, 0.04, d - 0.04, 0.71, 'side')
    return item.box(0, d / 2 - 0.05, 0.35, w - 0.1, 0.02, 0.36, 'side')


def cabinet(raw: str, w: float, d: float, h: float, fronts: int, z0: float = 0.0) -> Item:
    """A cabinet body with ``fronts`` doors or drawers (kitchen, bathroom, file cabinet, TV
    stand, wardrobe, nightstand)."""
    item = Item(raw, slots={'body': BOARD, 'front': BOARD, 'handle': ('metal',)})
    item.box(0, 0, z0, w, d, h, 'body')
    _fronts(item, w, d, z0, h, fronts)
    return item


def bookshelf(rng: np.random.Generator) -> tuple[Item, list[Item]]:
    """A bookshelf (sides, top, plinth, back, shelves) and the rows of books on it."""
    w, d, h = rng.uniform(0.8, 1.0), rng.uniform(0.3, 0.38), rng.uniform(1.7, 2.0)
    shelf = Item('bookshelf', slots={'board': BOARD})
    for sx in (-1, 1):
        shelf.box(sx * (w / 2 - 0.01), 0, 0, 0.02, d, h, 'board')
    shelf.box(0, 0, h - 0.02, w - 0.04, d, 0.02, 'board').box(0, 0, 0, w - 0.04, d, 0.06, 'board')
    shelf.box(0, d / 2 - 0.005, 0.06, w - 0.04, 0.01, h - 0.08, 'board')
    levels = int(rng.integers(4, 6))
    rows = []
    for k in range(1, levels):
        z = 0.06 + (h - 0.1) * k / levels
        shelf.box(0, 0, z, w - 0.04, d - 0.012, 0.02, 'board')
        if rng.random() < 0.75:
            rows.append((books(rng, w - 0.08, d - 0.06), z + 0.02))
    rows.append((books(rng, w - 0.08, d - 0.06), 0.06))
    return shelf, [_lift(row, z) for row, z in rows]


def books(rng: np.random.Generator, width: float, depth: float) -> Item:
    """A row of standing books (each book a slot of its own: its own cover colour)."""
    item = Item('books')
    x = -width / 2 + rng.uniform(0.0, 0.2)
    k = 0
    while x < width / 2 - 0.08 and k < 12:
        t = rng.uniform(0.02, 0.05)
        bd, bh = rng.uniform(0.15, min(depth, 0.26)), rng.uniform(0.17, 0.28)
        item.box(x + t / 2, (depth - bd) / 2, 0, t, bd, bh, f'book{k}')
        item.slots[f'book{k}'] = ('paint', 'fabric', 'leather')
        x += t + 0.003
        k += 1
    return item


def _lift(item: Item, dz: float) -> Item:
    item.parts = [Part(p.x, p.y, p.z0 + dz, p.w, p.d, p.h, p.slot) for p in item.parts]
    return item


def refrigerator(rng: np.random.Generator) -> Item:
    """A refrigerator: body, freezer and fridge doors with handles."""
    w, h = rng.uniform(0.6, 0.75), rng.uniform(1.7, 1.9)
    item = Item('refrigerator', slots={'body': ('metal', 'paint'), 'handle': ('metal',)})
    item.box(0, 0, 0, w, 0.66, h, 'body')
    split = h * 0.68
    item.box(0, -0.34, 0.02, w - 0.01, 0.02, split - 0.03, 'body')
    item.box(0, -0.34, split + 0.01, w - 0.01, 0.02, h - split - 0.03, 'body')
    item.box(w / 2 - 0.06, -0.37, split - 0.5, 0.025, 0.03, 0.4, 'handle')
    return item.box(w / 2 - 0.06, -0.37, split + 0.08, 0.025, 0.03, 0.25, 'handle')


def toilet(rng: np.random.Generator) -> Item:
    """A toilet: pedestal, bowl, seat and tank at the back."""
    item = Item('toilet', slots={'body': ('ceramic',), 'seat': CERAMIC})
    item.box(0, -0.02, 0, 0.24, 0.32, 0.2, 'body').box(0, -0.06, 0.2, 0.38, 0.5, 0.18, 'body')
    item.box(0, -0.06, 0.38, 0.4, 0.48, 0.03, 'seat')
    return item.box(0, 0.25, 0.38, rng.uniform(0.4, 0.46), 0.18, 0.4, 'body')


def basin(rng: np.random.Generator) -> Item:
    """A vessel sink (open box: walls and bottom) with a faucet on its back rim."""
    w, d, h = rng.uniform(0.42, 0.55), rng.uniform(0.34, 0.42), 0.14
    item = Item('sink', slots={'bowl': ('ceramic', 'metal'), 'tap': ('metal',)})
    item.box(0, 0, 0, w, d, 0.03, 'bowl')
    for sx in (-1, 1):
        item.box(sx * (w / 2 - 0.015), 0, 0.03, 0.03, d, h - 0.03, 'bowl')
    for sy in (-1, 1):
        item.box(0, sy * (d / 2 - 0.015), 0.03, w - 0.06, 0.03, h - 0.03, 'bowl')
    item.box(0, d / 2 - 0.015, h, 0.04, 0.03, 0.14, 'tap')
    return item.box(0, d / 2 - 0.09, h + 0.1, 0.03, 0.12, 0.03, 'tap')


def bathtub(rng: np.random.Generator) -> tuple[Item, Item]:
    """A bathtub (walls and bottom) and a shower curtain on a rod along its front edge."""
    w, d, h = rng.uniform(1.5, 1.7), rng.uniform(0.7, 0.78), rng.uniform(0.52, 0.6)
    tub = Item('bathtub', slots={'shell': ('ceramic',)})
    tub.box(0, 0, 0, w, d, 0.1, 'shell')
    for sx in (-1, 1):
        tub.box(sx * (w / 2 - 0.05), 0, 0.1, 0.1, d, h - 0.1, 'shell')
    for sy in (-1, 1):
        tub.box(0, sy * (d / 2 - 0.05), 0.1, w - 0.2, 0.1, h - 0.1, 'shell')
    drawn = rng.uniform(0.4, 0.75) * w
    curtain = Item('shower curtain', slots={'cloth': ('fabric', 'ceramic'), 'rod': ('metal',)})
    curtain.box(-w / 2 + drawn / 2, -d / 2 + 0.04, h + 0.1, drawn, 0.02, 1.95 - h - 0.1, 'cloth')
    curtain.box(0, -d / 2 + 0.04, 2.05, w, 0.025, 0.025, 'rod')
    return tub, curtain


def small(raw: str, w: float, d: float, h: float, families: tuple[str, ...]) -> Item:
    """A one-box object (box, microwave, towel, mirror, whiteboard, rug, picture ...)."""
    return Item(raw, slots={'main': families}).box(0, 0, 0, w, d, h, 'main')


def lamp(rng: np.random.Generator, floor: bool) -> Item:
    """A table lamp or a floor lamp: base, stem, shade."""
    stem = rng.uniform(1.3, 1.45) if floor else rng.uniform(0.25, 0.35)
    shade = 0.35 if floor else 0.24
    item = Item('lamp', slots={'base': HARD, 'shade': ('fabric', 'paint')})
    item.box(0, 0, 0, shade * 0.7, shade * 0.7, 0.04, 'base')
    item.box(0, 0, 0.04, 0.03, 0.03, stem, 'base')
    return item.box(0, 0, stem, shade, shade, shade * 0.8, 'shade')


def display(rng: np.random.Generator, raw: str) -> Item:
    """A flat screen on a foot, facing -y: a TV (``raw`` 'tv', 0.9-1.2 m wide) or a computer
    monitor ('monitor', 0.5-0.62 m)."""
    w = rng.uniform(0.9, 1.2) if raw == 'tv' else rng.uniform(0.5, 0.62)
    h = w * 0.58
    item = Item(raw, slots={'body': ('metal',), 'screen': ('screen',)})
    item.box(0, 0.02, 0, 0.3 * w, 0.18, 0.02, 'body').box(0, 0.02, 0.02, 0.05, 0.04, 0.1, 'body')
    item.box(0, 0, 0.1, w, 0.04, h, 'body')
    return item.box(0, -0.025, 0.12, w - 0.04, 0.01, h - 0.04, 'screen')


def plant(rng: np.random.Generator) -> Item:
    """A potted plant: pot and a block of foliage."""
    pot = rng.uniform(0.22, 0.3)
    item = Item('plant', slots={'pot': CERAMIC, 'leaves': ('foliage',)})
    item.box(0, 0, 0, pot, pot, pot * 1.1, 'pot')
    leaves = rng.uniform(0.35, 0.5)
    return item.box(0, 0, pot * 1.1, leaves, leaves, rng.uniform(0.35, 0.6), 'leaves')


def trash_can(rng: np.random.Generator) -> Item:
    """A trash can with a lid."""
    s = rng.uniform(0.26, 0.34)
    item = Item('trash can', slots={'body': ('metal', 'paint')})
    item.box(0, 0, 0, s, s, 0.42, 'body')
    return item.box(0, 0, 0.42, s + 0.02, s + 0.02, 0.03, 'body')


def ceiling_lamp(rng: np.random.Generator) -> Item:
    """A pendant lamp (its top at z = 0: placed hanging from the ceiling)."""
    s = rng.uniform(0.3, 0.45)
    item = Item('lamp', slots={'shade': ('paint', 'metal', 'fabric')})
    item.box(0, 0, -0.45, 0.02, 0.02, 0.45, 'shade')
    return item.box(0, 0, -0.6, s, s, 0.16, 'shade')


def door(rng: np.random.Generator, width: float | None = None) -> Item:
    """A door leaf with casings and a handle; its back (y = 0.025) goes 2 cm into the wall."""
    w = width if width is not None else rng.uniform(0.8, 0.92)
    h = rng.uniform(2.0, 2.1)
    item = Item('door', slots={'leaf': BOARD, 'trim': ('paint', 'wood'), 'handle': ('metal',)})
    item.box(0, 0, 0, w, 0.05, h, 'leaf')
    for sx in (-1, 1):
        item.box(sx * (w / 2 + 0.035), 0.01, 0, 0.07, 0.03, h + 0.07, 'trim')
    item.box(0, 0.01, h, w, 0.03, 0.07, 'trim')
    return item.box(w / 2 - 0.09, -0.045, 0.95, 0.12, 0.04, 0.03, 'handle')


def window(width: float, height: float) -> Item:
    """A window (glass, frame, sill) with its base at the bottom of the glass; its back
    (y = 0.03) goes 2 cm into the wall."""
    item = Item('window', slots={'glass': ('glass',), 'frame': ('paint', 'wood', 'metal')})
    item.box(0, 0.015, 0, width, 0.03, height, 'glass')
    for sx in (-1, 1):
        item.box(sx * (width / 2 + 0.025), 0.005, -0.05, 0.05, 0.05, height + 0.1, 'frame')
    item.box(0, 0.005, height, width, 0.05, 0.05, 'frame')
    item.box(0, 0.005, -0.05, width, 0.05, 0.05, 'frame')
    return item.box(0, -0.03, -0.08, width + 0.16, 0.12, 0.03, 'frame')


def curtains(rng: np.random.Generator, window_width: float, top: float,
             bottom: float) -> Item:
    """Two curtain panels either side of a window, from ``bottom`` to ``top`` (heights above
    the floor), on a rod; centred on the window."""
    panel = rng.uniform(0.3, 0.45)
    item = Item('curtain', slots={'cloth': ('fabric',), 'rod': ('metal', 'wood')})
    for sx in (-1, 1):
        item.box(sx * (window_width / 2 + panel / 2 - 0.12), 0, bottom, panel, 0.03,
                 top - bottom, 'cloth')
    return item.box(0, 0, top + 0.01, window_width + 2 * panel, 0.025, 0.025, 'rod')
