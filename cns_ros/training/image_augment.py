"""CLIP2Scene's image augmentation: random resized crop + horizontal flip (reference A3.4).

One :class:`CropFlip` per camera image moves the image, its label maps and its point <-> pixel
pairs together. Coordinates are the label-map grid (``label_size`` = (H, W), the grid the
cached ``pair_row`` / ``pair_col`` index), with this code base's pixel-centre convention
(:func:`cns_ros.geometry.resize_nearest`): pixel (r, c) covers [r, r + 1) x [c, c + 1) in edge
coordinates. A crop [top, top + h) x [left, left + w) is resized to (H, W), so it scales rows
by H / h >= 1 and columns by W / w >= 1:

- label maps (and SAM segments): output pixel r' takes crop row ``floor((r' + 0.5) h / H)``
  (nearest neighbour, ``resize_nearest``);
- pairs: crop row u = r - top goes to ``r' = floor((u + 0.5) H / h)``, the output pixel that
  holds the centre of the source pixel (integer arithmetic: ``((2u + 1) H) // (2h)``); columns
  alike. Because the scale is >= 1, the nearest-neighbour map sends r' back to u, so the label
  map read at a moved pair is the label of the pair's original pixel, exactly;
- flip (after the resize): column c' -> W - 1 - c' for maps and pairs.

Pairs whose pixel is outside the crop are dropped. The crop itself is drawn as torchvision's
``RandomResizedCrop.get_params`` does (area fraction uniform in ``scale``, aspect ratio
log-uniform in ``ratio``, 10 tries) and redrawn (``max_draws``) until more than
``min_pairs`` or more than ``min_pair_fraction`` of the image's pairs fall inside, as the
CLIP2Scene code; failing that, the whole image is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cns_ros.training.config import ImageAugmentConfig

__all__ = ['CropFlip', 'crop_image', 'crop_map', 'crop_pairs', 'draw_crop', 'draw_crop_flip']

_GET_PARAMS_TRIES = 10  # torchvision RandomResizedCrop.get_params


@dataclass(frozen=True)
class CropFlip:
    """One image's crop box on the label-map grid and its flip.

    Attributes:
        top, left: First row / column of the crop (label-map pixels).
        height, width: Crop size h, w in label-map pixels (1 <= h <= H, 1 <= w <= W).
        size: (H, W) label-map size; the crop is resized back to it.
        flip: Mirror the columns after the resize.
    """

    top: int
    left: int
    height: int
    width: int
    size: tuple[int, int]
    flip: bool = False

    def __post_init__(self) -> None:
        rows, cols = self.size
        if not (0 <= self.top and 1 <= self.height and self.top + self.height <= rows
                and 0 <= self.left and 1 <= self.width and self.left + self.width <= cols):
            raise ValueError(f'crop ({self.top}, {self.left}, {self.height}, {self.width}) '
                             f'does not fit a {rows} x {cols} grid')

    @classmethod
    def whole(cls, size: tuple[int, int], flip: bool = False) -> CropFlip:
        """The crop that keeps the whole (H, W) grid."""
        return cls(0, 0, int(size[0]), int(size[1]), (int(size[0]), int(size[1])), flip)


def draw_crop(size: tuple[int, int], scale: tuple[float, float], ratio: tuple[float, float],
              rng: np.random.Generator) -> tuple[int, int, int, int] | None:
    """One random-resized-crop box (top, left, h, w) on an (H, W) grid, or None.

    Up to 10 tries: area = uniform(scale) * H * W, aspect w / h = exp(uniform(log ratio)),
    w = round(sqrt(area * aspect)), h = round(sqrt(area / aspect)); the first box that fits
    gets a uniform top / left. None when no try fits.
    """
    rows, cols = int(size[0]), int(size[1])
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(_GET_PARAMS_TRIES):
        area = rows * cols * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_low, log_high))
        width = round(math.sqrt(area * aspect))
        height = round(math.sqrt(area / aspect))
        if 0 < width <= cols and 0 < height <= rows:
            top = int(rng.integers(0, rows - height + 1))
            left = int(rng.integers(0, cols - width + 1))
            return top, left, height, width
    return None


def _inside(rows: np.ndarray, cols: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    top, left, height, width = box
    return (rows >= top) & (rows < top + height) & (cols >= left) & (cols < left + width)


def draw_crop_flip(size: tuple[int, int], rows: np.ndarray, cols: np.ndarray,
                   config: ImageAugmentConfig, rng: np.random.Generator) -> CropFlip:
    """The crop and flip of one image with pairs at (rows, cols) (module docstring).

    Args:
        size: (H, W) label-map size.
        rows, cols: (P,) int pixel row / column of the image's pairs on that grid.
        config: Scale and ratio ranges, flip probability, acceptance rule, draws.
        rng: The sample's augmentation stream.
    """
    total = len(rows)
    box = None
    for _ in range(config.max_draws):
        candidate = draw_crop(size, config.scale, config.ratio, rng)
        if candidate is None:
            continue
        inside = int(_inside(rows, cols, candidate).sum())
        if inside > config.min_pairs or inside > config.min_pair_fraction * total:
            box = candidate
            break
    flip = bool(rng.random() < config.flip)
    if box is None:
        return CropFlip.whole(size, flip)
    return CropFlip(*box, size=(int(size[0]), int(size[1])), flip=flip)


def crop_pairs(rows: np.ndarray, cols: np.ndarray, crop: CropFlip
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs' pixels through the crop, resize and flip.

    Args:
        rows, cols: (P,) int pixel row / column on the (H, W) grid.
        crop: The image's :class:`CropFlip`.

    Returns:
        keep: bool (P,) pairs inside the crop; new_rows, new_cols: int64 (K,) their pixels on
        the (H, W) grid after the transform, K = keep.sum().
    """
    out_rows, out_cols = crop.size
    keep = _inside(rows, cols, (crop.top, crop.left, crop.height, crop.width))
    u = rows[keep].astype(np.int64) - crop.top
    v = cols[keep].astype(np.int64) - crop.left
    new_rows = ((2 * u + 1) * out_rows) // (2 * crop.height)
    new_cols = ((2 * v + 1) * out_cols) // (2 * crop.width)
    if crop.flip:
        new_cols = out_cols - 1 - new_cols
    return keep, new_rows, new_cols


def crop_map(values: np.ndarray, crop: CropFlip) -> np.ndarray:
    """An (H, W[, K]) map (labels, segments) through the crop, nearest resize and flip."""
    from cns_ros.geometry import resize_nearest

    if tuple(values.shape[:2]) != crop.size:
        raise ValueError(f'map of shape {values.shape[:2]}, expected {crop.size}')
    part = values[crop.top:crop.top + crop.height, crop.left:crop.left + crop.width]
    out = resize_nearest(part, crop.size)
    return np.ascontiguousarray(out[:, ::-1]) if crop.flip else out


def crop_image(rgb: np.ndarray, crop: CropFlip) -> np.ndarray:
    """A camera image at its own resolution -> (H, W, 3) at the label size, crop and flip.

    The crop box is scaled from the label grid to the image's pixels (edges rounded to whole
    pixels, so it may be off by up to half an image pixel), cut out and resized with area
    averaging (``cv2.INTER_AREA``, as the un-augmented images), then flipped. The whole-image
    crop without flip equals the un-augmented resize.

    Args:
        rgb: (h_img, w_img, 3) uint8 RGB image.
        crop: The image's :class:`CropFlip` (on the label grid).
    """
    import cv2

    rows, cols = crop.size
    img_h, img_w = rgb.shape[:2]
    top = round(crop.top * img_h / rows)
    bottom = max(round((crop.top + crop.height) * img_h / rows), top + 1)
    left = round(crop.left * img_w / cols)
    right = max(round((crop.left + crop.width) * img_w / cols), left + 1)
    out = cv2.resize(rgb[top:bottom, left:right], (cols, rows), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(out[:, ::-1]) if crop.flip else out
