"""Pictures of labels: bird's-eye views of labeled point clouds (predicted vs ground truth, side
by side), and label overlays on camera images (:func:`overlay_labels`, :func:`render_overlays`).

ROS-free (numpy; matplotlib with the Agg backend, imported when a picture is drawn).

The view looks down the z axis of the cloud's frame (``lidar_top`` for nuScenes: x forward,
y left, REP-103), forward up and left to the left, ``extent`` metres around the origin. Each
panel is a raster of ``resolution``-metre cells; a cell takes the class color of its highest
point, so tall objects stay visible over the ground around them. Points without a class
(ground-truth ignore, or predictions outside the vocabulary) are drawn in :data:`NO_CLASS`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

#: Background of empty cells (RGB).
BACKGROUND = (24, 24, 24)
#: Color of points without a class (ignore / unlabeled).
NO_CLASS = (110, 110, 110)


@dataclass(frozen=True)
class BevLayout:
    """Where the panels of a :func:`render_bev` picture are, to map metres to PNG pixels.

    Attributes:
        size: (width, height) of the PNG in pixels.
        panels: Per panel (pred first), its raster's (left, top, right, bottom) edges in PNG
            pixels (origin top-left, x right, y down).
        extent: Half-width of the view (m).
    """

    size: tuple[int, int]
    panels: tuple[tuple[float, float, float, float], ...]
    extent: float

    def pixel(self, panel: int, x: float, y: float) -> tuple[int, int]:
        """PNG (column, row) of the point (x, y) (metres, cloud frame) in ``panel``."""
        left, top, right, bottom = self.panels[panel]
        column = left + (self.extent - y) / (2 * self.extent) * (right - left)
        row = top + (self.extent - x) / (2 * self.extent) * (bottom - top)
        return int(column), int(row)


def rasterize_bev(xyz: ArrayLike, labels: ArrayLike, colors: ArrayLike, *,
                  extent: float = 40.0, resolution: float = 0.25,
                  dilate: int = 1) -> np.ndarray:
    """(H, W, 3) uint8 top view: forward (+x) up, left (+y) to the left.

    Args:
        xyz: (N, 3) points (m).
        labels: (N,) class ids; ids outside ``[0, C)`` are drawn in :data:`NO_CLASS`.
        colors: (C, 3) uint8 RGB per class.
        extent: The view covers x and y in ``[-extent, extent)`` (m).
        resolution: Cell edge (m); H = W = ``2 * extent / resolution``.
        dilate: Empty cells within this many cells of an occupied one take its color
            (makes sparse rings readable; 0 draws single cells).
    """
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    labels = np.asarray(labels).reshape(-1)
    palette = np.concatenate([np.asarray(colors, dtype=np.uint8).reshape(-1, 3),
                              np.array([NO_CLASS], dtype=np.uint8)])
    num_classes = len(palette) - 1
    if len(labels) != len(xyz):
        raise ValueError(f'expected {len(xyz)} labels, found {len(labels)}')
    size = round(2 * extent / resolution)
    rows = np.floor((extent - xyz[:, 0]) / resolution)
    cols = np.floor((extent - xyz[:, 1]) / resolution)
    keep = (rows >= 0) & (rows < size) & (cols >= 0) & (cols < size) & np.isfinite(xyz).all(1)
    rows, cols, z = rows[keep].astype(np.int64), cols[keep].astype(np.int64), xyz[keep, 2]
    ids = labels[keep].astype(np.int64)
    ids = np.where((ids >= 0) & (ids < num_classes), ids, num_classes)
    cell = rows * size + cols
    order = np.lexsort((z, cell))  # by cell, then height: the last of each cell is the highest
    last = np.flatnonzero(np.r_[cell[order][1:] != cell[order][:-1], True])
    chosen = order[last]
    image = np.empty((size, size, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    filled = np.zeros((size, size), dtype=bool)
    image[rows[chosen], cols[chosen]] = palette[ids[chosen]]
    filled[rows[chosen], cols[chosen]] = True
    for _ in range(max(dilate, 0)):
        image, filled = _grow(image, filled)
    return image


def _grow(image: np.ndarray, filled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Empty cells next to a filled one (4-neighbourhood) take its color."""
    image, grown = image.copy(), filled.copy()
    for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        source = np.roll(filled, (dr, dc), axis=(0, 1))
        colors = np.roll(image, (dr, dc), axis=(0, 1))
        if dr == 1:
            source[0] = False
        elif dr == -1:
            source[-1] = False
        elif dc == 1:
            source[:, 0] = False
        else:
            source[:, -1] = False
        take = source & ~grown
        image[take] = colors[take]
        grown |= take
    return image, grown


def render_bev(path: str | os.PathLike[str], xyz: ArrayLike, pred: ArrayLike,
               gt: ArrayLike | None, class_names: Sequence[str], colors: ArrayLike, *,
               title: str = '', extent: float = 40.0, resolution: float = 0.25,
               dilate: int = 1, size: tuple[int, int] = (1600, 900),
               panel_titles: tuple[str, str] = ('predicted (live)', 'ground truth')) -> BevLayout:
    """Write a PNG: predicted labels (left) and ground truth (right) from above, and a legend.

    Args:
        path: PNG file to write (folders are created).
        xyz: (N, 3) points (m).
        pred: (N,) predicted class ids (indices into ``class_names``).
        gt: (N,) ground-truth class ids in the same vocabulary (ignore = anything outside
            ``[0, C)``), or None for a single panel.
        class_names: C names, for the legend.
        colors: (C, 3) uint8 RGB per class.
        title: Figure title (e.g. the mIoU).
        extent, resolution, dilate: See :func:`rasterize_bev`.
        size: (width, height) of the PNG in pixels.
        panel_titles: Titles of the two panels.

    Returns:
        The :class:`BevLayout` of the picture.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    colors = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    labelings = [np.asarray(pred)] + ([] if gt is None else [np.asarray(gt)])
    dpi = 100
    fig = Figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi, facecolor='white')
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(labelings), squeeze=False)[0]
    fig.subplots_adjust(left=0.04, right=0.99, top=0.9, bottom=0.2, wspace=0.12)
    for ax, labels, name in zip(axes, labelings, panel_titles, strict=False):
        raster = rasterize_bev(xyz, labels, colors, extent=extent, resolution=resolution,
                               dilate=dilate)
        # left edge = +y (left of the vehicle), top edge = +x (forward)
        ax.imshow(raster, extent=(extent, -extent, -extent, extent), interpolation='nearest')
        ax.set_title(name)
        ax.set_xlabel('y (m, left +)')
        ax.set_ylabel('x (m, forward +)')
    present = sorted({int(i) for labels in labelings for i in np.unique(labels)
                      if 0 <= i < len(class_names)})
    handles = [Patch(facecolor=colors[i] / 255.0, edgecolor='black', label=class_names[i])
               for i in present]
    handles.append(Patch(facecolor=np.array(NO_CLASS) / 255.0, edgecolor='black',
                         label='no class / ignored'))
    fig.legend(handles=handles, loc='lower center', ncol=min(len(handles), 6), fontsize=10,
               frameon=False)
    if title:
        fig.suptitle(title)
    fig.canvas.draw()
    height = fig.bbox.height
    panels = []
    for ax in axes:
        box = ax.get_window_extent()  # display pixels, origin bottom-left
        panels.append((box.x0, height - box.y1, box.x1, height - box.y0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return BevLayout(size=(int(fig.bbox.width), int(height)), panels=tuple(panels),
                     extent=extent)


def overlay_labels(image: np.ndarray, labels: np.ndarray, colors: ArrayLike,
                   alpha: float = 0.65) -> np.ndarray:
    """Blend class colours over an image and draw class boundaries in black.

    Args:
        image: uint8 [H, W, 3] RGB.
        labels: int [H, W] class ids (indices into ``colors``; others are left unpainted).
        colors: (C, 3) uint8 RGB per class.
        alpha: Weight of the class colour.

    Returns:
        uint8 [H, W, 3].
    """
    colors = np.asarray(colors, dtype=np.float64).reshape(-1, 3)
    valid = (labels >= 0) & (labels < len(colors))
    out = image.astype(np.float64)
    out[valid] = (1 - alpha) * out[valid] + alpha * colors[labels[valid]]
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[1:, :] |= labels[1:, :] != labels[:-1, :]
    out[edge] = 0.0
    return np.round(out).clip(0, 255).astype(np.uint8)


def render_overlays(path: str | os.PathLike[str], panels: Sequence[tuple[str, np.ndarray]],
                    class_names: Sequence[str], colors: ArrayLike, title: str = '') -> None:
    """Write a PNG of image panels side by side with a class legend.

    Args:
        path: PNG file (folders are created).
        panels: (title, uint8 [H, W, 3] image) per panel.
        class_names, colors: The legend (C names, (C, 3) uint8 RGB); none when empty.
        title: Figure title.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    colors = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    fig = Figure(figsize=(4.2 * len(panels), 4.2), dpi=100, facecolor='white')
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    fig.subplots_adjust(left=0.02, right=0.98, top=0.85, bottom=0.22, wspace=0.05)
    for ax, (name, picture) in zip(axes, panels, strict=True):
        ax.imshow(picture, interpolation='nearest')
        ax.set_title(name, fontsize=10)
        ax.axis('off')
    handles = [Patch(facecolor=colors[i] / 255.0, edgecolor='black', label=name)
               for i, name in enumerate(class_names)]
    if handles:  # no legend for pictures without classes (e.g. heat maps)
        # about three columns per panel: 20 ScanNet classes under three panels take 3 rows,
        # which fit below them (at 4 columns, 5 rows ran into the pictures)
        columns = min(len(handles), max(4, 3 * len(panels)))
        fig.legend(handles=handles, loc='lower center', ncol=columns, fontsize=9, frameon=False)
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def heat_image(values: np.ndarray, low: float | None = None, high: float | None = None
               ) -> np.ndarray:
    """A float map [H, W] as a viridis RGB picture, uint8 [H, W, 3], scaled from ``low`` to
    ``high`` (default its own min and max)."""
    from matplotlib import colormaps

    low = float(np.min(values)) if low is None else low
    high = float(np.max(values)) if high is None else high
    unit = (np.asarray(values, dtype=np.float64) - low) / max(high - low, 1e-12)
    return (colormaps['viridis'](unit.clip(0, 1))[..., :3] * 255).round().astype(np.uint8)
