"""Atoms of the realistic SAM stand-in: the smallest segments it works with, and their graph.

An *atom* is a 4-connected piece of one world region (:mod:`cns_ros.data.synthetic_regions`) in
one image: a thing's part (a car's body), a section of a facade, a cell of road, a tree crown, a
piece of sky. Atoms come from geometry and identity only (region and instance ids) and from the
rendered RGB image (their mean colour); the semantic labels are never read.

:func:`merge_by_colour` joins adjacent atoms whose colours are close (SAM follows appearance),
which is how masks that cross class boundaries arise (terrain and vegetation, a dark car and the
road) without any look at the classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Atoms:
    """The atoms of one image.

    Attributes:
        ids: int32 (H, W) atom index per pixel, 0..A-1.
        area: int64 (A,) pixels.
        colour: float64 (A, 3) mean RGB, 0..255.
        instance: int64 (A,) instance id (0 = stuff or sky).
        sky: bool (A,) atoms of no world surface (region 0).
        centroid: float64 (A, 2) mean (row, col), pixels.
    """

    ids: np.ndarray
    area: np.ndarray
    colour: np.ndarray
    instance: np.ndarray
    sky: np.ndarray
    centroid: np.ndarray

    def __len__(self) -> int:
        return len(self.area)


def find_atoms(region: np.ndarray, instance: np.ndarray, rgb: np.ndarray) -> Atoms:
    """Atoms of an image at one size.

    Args:
        region: uint16 (H, W) world region id (0 = sky).
        instance: uint16 (H, W) instance id (0 = stuff / sky).
        rgb: uint8 (H, W, 3) the camera image at the same size.

    Returns:
        :class:`Atoms`, numbered in order of (region id, component) so the numbering depends on
        the image only.
    """
    import cv2
    from scipy import ndimage

    ids = np.full(region.shape, -1, dtype=np.int32)
    count = 0
    values = np.unique(region)
    slices = ndimage.find_objects(region.astype(np.int64) + 1)
    for value in values.tolist():
        box = slices[value]
        crop = region[box] == value
        n, comp = cv2.connectedComponents(crop.astype(np.uint8), connectivity=4)
        target = ids[box]
        target[crop] = comp[crop] - 1 + count
        count += n - 1
    flat = ids.reshape(-1)
    area = np.bincount(flat, minlength=count).astype(np.int64)
    colour = np.stack([np.bincount(flat, rgb[..., k].reshape(-1).astype(np.float64), count)
                       for k in range(3)], axis=1) / area[:, None]
    rows, cols = np.indices(region.shape)
    centroid = np.stack([np.bincount(flat, rows.reshape(-1), count),
                         np.bincount(flat, cols.reshape(-1), count)], axis=1) / area[:, None]
    first = np.full(count, flat.size, dtype=np.int64)
    np.minimum.at(first, flat, np.arange(flat.size))
    return Atoms(ids, area, colour, instance.reshape(-1)[first].astype(np.int64),
                 region.reshape(-1)[first] == 0, centroid)


def adjacency(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of 4-adjacent atoms: int64 (E, 2) sorted pairs (a < b) and int64 (E,) the length
    of their shared boundary, pixels."""
    pairs = np.concatenate([np.stack([ids[:, :-1].ravel(), ids[:, 1:].ravel()], 1),
                            np.stack([ids[:-1].ravel(), ids[1:].ravel()], 1)])
    pairs = np.sort(pairs[pairs[:, 0] != pairs[:, 1]], axis=1).astype(np.int64)
    if not len(pairs):
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.int64)
    unique, counts = np.unique(pairs, axis=0, return_counts=True)
    return unique, counts.astype(np.int64)


def _find(parent: np.ndarray, a: int) -> int:
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = int(parent[a])
    return a


def merge_by_colour(atoms: Atoms, pairs: np.ndarray, allowed: np.ndarray,
                    threshold: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """Union of adjacent atoms whose colours are close.

    Args:
        atoms: The atoms.
        pairs: int64 (E, 2) adjacent pairs (:func:`adjacency`).
        allowed: bool (E,) pairs that may merge at all.
        threshold: float64 (E,) per pair: merge when the RGB distance of the two atoms' mean
            colours (Euclidean, 0..441) is below it.
        start: int64 (A,) an earlier grouping to merge further (default: every atom alone).

    Returns:
        int64 (A,) group of each atom (the smallest atom index of its group).
    """
    parent = np.arange(len(atoms)) if start is None else start.copy()
    distance = np.linalg.norm(atoms.colour[pairs[:, 0]] - atoms.colour[pairs[:, 1]], axis=1)
    for k in np.flatnonzero(allowed & (distance < threshold)).tolist():
        a, b = _find(parent, int(pairs[k, 0])), _find(parent, int(pairs[k, 1]))
        if a != b:
            parent[max(a, b)] = min(a, b)
    return np.array([_find(parent, a) for a in range(len(atoms))], dtype=np.int64)


def subparts(atoms: Atoms, rgb: np.ndarray, threshold: float, min_pixels: int
             ) -> list[tuple[int, np.ndarray]]:
    """Texture pieces inside atoms: 8-connected pixels whose colour is farther than
    ``threshold`` (RGB distance) from their atom's mean colour (windows on a facade or a bus),
    at least ``min_pixels`` large and at most half their atom.

    Returns:
        (atom index, int64 flat pixel indices) per piece, ordered by atom then first pixel.
    """
    import cv2

    deviation = np.linalg.norm(rgb.astype(np.float64) - atoms.colour[atoms.ids], axis=-1)
    odd = (deviation > threshold) & ~atoms.sky[atoms.ids]
    if not odd.any():
        return []
    _, comp = cv2.connectedComponents(odd.astype(np.uint8), connectivity=8)
    flat = np.flatnonzero(odd)
    key = comp.reshape(-1)[flat].astype(np.int64) * len(atoms) + atoms.ids.reshape(-1)[flat]
    unique, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    atom = unique % len(atoms)
    ok = (counts >= min_pixels) & (counts <= atoms.area[atom] // 2)
    order = np.argsort(inverse, kind='stable')
    groups = np.split(flat[order], np.cumsum(counts)[:-1])
    return [(int(atom[k]), groups[k]) for k in np.flatnonzero(ok).tolist()]
