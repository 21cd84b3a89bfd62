"""World-level region identity of the synthetic world's camera pixels (``synthetic_gt/region``).

Instances give things (vehicles, people, cones, barriers) an identity that holds across cameras
and keyframes; stuff (ground, buildings, walls, trees, poles) has none. A *region* is such an
identity for every surface a camera ray hits, made from the world, never from the image:

* ground (the plane z = 0): its lidarseg-32 class, its paint code (lane markings) and the cell
  of a world grid of ``cell_m`` metres (x, y) that holds the hit point;
* a stuff box (one part of a building, wall, hedge, tree or pole): the part (its index in the
  scene's boxes) and the ``cell_m`` grid cell (x, y, z) of the hit point, so a large facade is
  several regions;
* a thing box: the part alone (a car's body and its cabin are two regions of one instance; a
  moving part keeps its region);
* sky (no hit): region 0.

Regions are numbered 1, 2, ... per scene in the order they are first seen (cameras in rig
order, frames in time order), so ids fit a uint16 PNG and are the same in every image of the
scene. The same key always gets the same id within a scene; ids of different scenes are
unrelated.
"""

from __future__ import annotations

import numpy as np

#: Key kinds (first column of a region key).
_SKY, _GROUND, _THING_PART, _STUFF_PART = 0, 1, 2, 3
MAX_REGIONS = 65535  # uint16 PNG


class TooManyRegionsError(ValueError):
    """A scene has more regions than a uint16 PNG holds (use a larger region cell)."""


def region_keys(labels: np.ndarray, box: np.ndarray, paint: np.ndarray, points: np.ndarray,
                part_is_thing: np.ndarray, cell_m: float) -> np.ndarray:
    """Region keys of a camera image's hits.

    Args:
        labels: uint8 (H, W) lidarseg-32 class per pixel (used for ground pixels only).
        box: int32 (H, W) index of the hit box in the scene's boxes, -1 for ground or sky.
        paint: uint8 (H, W) ground paint code (0 none).
        points: float32 (H, W, 3) world hit points, metres (ignored where nothing is hit).
        part_is_thing: bool (N,) per scene box: does it belong to a thing (instance > 0).
        cell_m: Edge of the world grid cells, metres (> 0).

    Returns:
        int64 (H, W, 5) keys ``(kind, a, b, c, d)``; sky is all zeros.
    """
    if not cell_m > 0:
        raise ValueError(f'region cell must be > 0 m, found {cell_m}')
    cell = np.floor(points.astype(np.float64) / cell_m).astype(np.int64)
    keys = np.zeros((*labels.shape, 5), dtype=np.int64)
    on_box = box >= 0
    ground = (~on_box) & (labels > 0)
    keys[ground] = np.stack([np.full(int(ground.sum()), _GROUND), labels[ground].astype(np.int64),
                             paint[ground].astype(np.int64), cell[ground][:, 0],
                             cell[ground][:, 1]], axis=1)
    thing = np.zeros(box.shape, dtype=bool)
    thing[on_box] = part_is_thing[box[on_box]]
    keys[thing, 0], keys[thing, 1] = _THING_PART, box[thing]
    stuff = on_box & ~thing
    keys[stuff] = np.concatenate([np.stack([np.full(int(stuff.sum()), _STUFF_PART),
                                            box[stuff].astype(np.int64)], axis=1),
                                  cell[stuff]], axis=1)
    return keys


class RegionIndex:
    """Numbers the region keys of one scene: 0 for sky, then 1, 2, ... in order of appearance."""

    def __init__(self) -> None:
        self._ids: dict[tuple[int, ...], int] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def ids(self, keys: np.ndarray) -> np.ndarray:
        """uint16 (H, W) region ids of int64 (H, W, 5) keys from :func:`region_keys`.

        Raises:
            TooManyRegionsError: The scene would get more than 65535 regions.
        """
        flat = keys.reshape(-1, keys.shape[-1])
        unique, inverse = np.unique(flat, axis=0, return_inverse=True)
        table = np.zeros(len(unique), dtype=np.int64)
        # np.unique sorts: numbering in order of first appearance keeps ids independent of it.
        first = np.full(len(unique), flat.shape[0], dtype=np.int64)
        np.minimum.at(first, inverse.reshape(-1), np.arange(flat.shape[0]))
        for k in np.argsort(first, kind='stable').tolist():
            key = tuple(unique[k].tolist())
            if key[0] == _SKY:
                continue
            table[k] = self._ids.setdefault(key, len(self._ids) + 1)
        if len(self._ids) > MAX_REGIONS:
            raise TooManyRegionsError(f'{len(self._ids)} regions in one scene exceed the uint16 '
                                      f'region PNG; use a larger region cell')
        return table[inverse.reshape(-1)].reshape(keys.shape[:-1]).astype(np.uint16)
