"""The ``realistic`` SAM image-embedding stand-in (teacher_noise.md 7.3). NOT SAM features.

SAM's embedding encodes instances, parts, boundaries and geometry well and classes weakly
(a linear class probe on SAM-H reaches about 0.77x CLIP-L's). This stand-in is built from what
SAM sees, and NEVER from the semantic labels (it does not open the semantic PNG, and no table
keyed by class is involved):

* identity: a random vector per world object (the instance id, or for stuff the world region
  id), keyed by (seed, scene, id) so the same object has the same vector in every view,
  weighted ``identity_weight``;
* part: a random vector per world region (a thing's part, a facade section), weighted
  ``part_weight``;
* appearance: random Fourier features (``appearance_features`` of them, frequency scale
  ``appearance_scale`` in units of 1 / (RGB / 255)) of the RGB image blurred over
  ``appearance_blur`` pixels, weighted ``appearance_weight``;
* boundaries: ``exp(-d / s)`` of the distance d (pixels) to the nearest instance, region or
  strong RGB edge, for each scale s in ``boundary_scales``, weighted ``boundary_weight``;
* noise: i.i.d. Gaussian per embedding cell (keyed by the image), ``noise_weight``;
* shape (only with ``shape_weight`` > 0; the indoor preset): random Fourier features of the
  pixel's object in the image, read from the identity maps: the square root of its area, the
  height and width of its bounding box and its centroid row (fractions of the image), and the
  pixel's own row. SAM encodes object extent and layout; in a room whose colours do not give
  the class away (the synthetic indoor world draws materials across classes), this is the only
  label-blind cue that makes the class linearly readable at all (teacher_noise.md 7.3: a probe
  on SAM features reaches about 0.6-0.8x CLIP's).

Each part is computed per pixel, area-averaged onto SAM's valid embedding grid (a 1600 x 900
image -> 36 x 64 of the 64 x 64 cells, :func:`~cns_ros.teachers.sam.valid_embedding_size`), and
mapped to 256 channels by a fixed random matrix of the seed. Cells outside the valid grid are 0.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from cns_ros.teachers.sam import SAM_EMBEDDING_SHAPE, valid_embedding_size
from cns_ros.teachers.synthetic_truth import (
    GroundTruthImage,
    image_rng,
    world_entities,
    world_uniforms,
)

_SALT_ID, _SALT_PART, _SALT_NOISE, _SALT_PROJECTION, _SALT_SHAPE = 31, 32, 33, 34, 35
_ID_DIM = 32
_SHAPE_DIM, _SHAPE_SCALE = 32, 3.0  # shape Fourier features and their frequency std


@dataclass(frozen=True)
class SamEmbeddingConfig:
    """Weights and scales of :class:`SamEmbedding` (module docstring).

    Attributes:
        seed: Seed of the identity vectors, Fourier features, projection and noise.
        identity_weight: Weight of the per-object vector.
        part_weight: Weight of the per-region (part) vector.
        appearance_weight: Weight of the appearance features.
        appearance_features: Number of random Fourier features of the colour.
        appearance_scale: Standard deviation of their frequencies, 1 / (RGB / 255).
        appearance_blur: Gaussian blur of the RGB image before, pixels (sigma).
        boundary_weight: Weight of the boundary-distance features.
        boundary_scales: Distance scales of those features, pixels.
        edge_threshold: RGB gradient magnitude (per pixel, 0..255 units) that counts as an edge.
        noise_weight: Weight of the per-cell Gaussian noise.
        shape_weight: Weight of the object-shape features (0: none, and the embedding is that
            of the generator without them).
    """

    seed: int = 0
    identity_weight: float = 1.0
    part_weight: float = 0.5
    appearance_weight: float = 1.0
    appearance_features: int = 24
    appearance_scale: float = 3.0
    appearance_blur: float = 1.5
    boundary_weight: float = 0.5
    boundary_scales: tuple[float, ...] = (1.0, 3.0, 9.0)
    edge_threshold: float = 40.0
    noise_weight: float = 0.1
    shape_weight: float = 0.0

    def __post_init__(self) -> None:
        weights = ('identity_weight', 'part_weight', 'appearance_weight', 'boundary_weight',
                   'noise_weight', 'appearance_scale', 'appearance_blur', 'edge_threshold',
                   'shape_weight')
        bad = [n for n in weights if getattr(self, n) < 0]
        if self.appearance_features < 1 or any(s <= 0 for s in self.boundary_scales):
            bad.append('appearance_features >= 1 / boundary_scales > 0')
        if bad:
            raise ValueError(f'SamEmbeddingConfig: invalid {", ".join(bad)}')

    def as_dict(self) -> dict[str, object]:
        """Plain values, e.g. for a manifest."""
        return {f.name: np.asarray(getattr(self, f.name)).tolist() for f in fields(self)}


def _vectors(seed: int, salt: int, scene: str, ids: np.ndarray) -> np.ndarray:
    """float32 (H, W, 32) standard-normal-ish vectors per id (0 for ids < 0)."""
    unique, inverse = np.unique(ids, return_inverse=True)
    u = world_uniforms(seed, salt, scene, np.maximum(unique, 0), 2 * _ID_DIM)
    gauss = np.sqrt(-2.0 * np.log1p(-u[:, :_ID_DIM])) * np.cos(2 * np.pi * u[:, _ID_DIM:])
    gauss[unique < 0] = 0.0
    return gauss.astype(np.float32)[inverse.reshape(ids.shape)]


def _edges(instance: np.ndarray, region: np.ndarray, rgb: np.ndarray, threshold: float
           ) -> np.ndarray:
    """bool (H, W): identity boundaries (instance or region changes) and strong RGB edges."""
    import cv2

    edge = np.zeros(instance.shape, dtype=bool)
    for ids in (instance, region):
        edge[:, 1:] |= ids[:, 1:] != ids[:, :-1]
        edge[1:] |= ids[1:] != ids[:-1]
    grey = rgb.astype(np.float32).mean(axis=-1)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3) / 4.0
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3) / 4.0
    return edge | (np.hypot(gx, gy) > threshold)


def shape_descriptor(identity: np.ndarray) -> np.ndarray:
    """float32 (H, W, 5) per pixel, of its object (``identity``: int64 (H, W) world ids, -1 =
    nothing): sqrt(area), bounding-box height and width, centroid row (fractions of the image),
    and the pixel's own row fraction; zeros but the row where there is nothing."""
    h, w = identity.shape
    unique, inverse = np.unique(identity, return_inverse=True)
    inverse = inverse.reshape(-1)
    rows, cols = np.divmod(np.arange(h * w), w)
    count = len(unique)
    area = np.bincount(inverse, minlength=count)
    top, bottom = np.full(count, h), np.zeros(count, np.int64)
    left, right = np.full(count, w), np.zeros(count, np.int64)
    np.minimum.at(top, inverse, rows)
    np.maximum.at(bottom, inverse, rows)
    np.minimum.at(left, inverse, cols)
    np.maximum.at(right, inverse, cols)
    centroid = np.bincount(inverse, rows, count) / np.maximum(area, 1)
    table = np.stack([np.sqrt(area / (h * w)), (bottom - top + 1) / h, (right - left + 1) / w,
                      centroid / h], axis=1)
    table[unique < 0] = 0.0
    out = np.concatenate([table[inverse], (rows / h)[:, None]], axis=1)
    return out.reshape(h, w, 5).astype(np.float32)


class SamEmbedding:
    """SAM-embedding stand-in (module docstring): from identity, boundaries and appearance."""

    def __init__(self, config: SamEmbeddingConfig | None = None) -> None:
        self.config = config or SamEmbeddingConfig()
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, _SALT_PROJECTION])
        self._frequencies = rng.normal(0.0, cfg.appearance_scale, (3, cfg.appearance_features))
        self._phases = rng.uniform(0.0, 2 * np.pi, cfg.appearance_features)
        width = 2 * _ID_DIM + cfg.appearance_features + len(cfg.boundary_scales)
        width += _SHAPE_DIM if cfg.shape_weight > 0 else 0
        self._projection = (rng.standard_normal((SAM_EMBEDDING_SHAPE[0], width))
                            / np.sqrt(width)).astype(np.float32)
        shape_rng = np.random.default_rng([cfg.seed, _SALT_SHAPE])
        self._shape_frequencies = shape_rng.normal(0.0, _SHAPE_SCALE, (5, _SHAPE_DIM))
        self._shape_phases = shape_rng.uniform(0.0, 2 * np.pi, _SHAPE_DIM)

    def pixel_features(self, image: GroundTruthImage) -> np.ndarray:
        """float32 (H, W, K) weighted per-pixel features at the image's size (before pooling
        and projection); reads the instance, region and RGB images only."""
        import cv2

        cfg = self.config
        region, rgb = image.require_region(), image.require_rgb()
        instance = image.instance
        identity = world_entities(instance, region)
        part = np.where(region > 0, region.astype(np.int64), -1)
        blurred = cv2.GaussianBlur(rgb.astype(np.float32) / 255.0, (0, 0),
                                   cfg.appearance_blur) if cfg.appearance_blur > 0 else (
            rgb.astype(np.float32) / 255.0)
        appearance = np.cos(blurred @ self._frequencies.astype(np.float32)
                            + self._phases.astype(np.float32)) * np.sqrt(2.0)
        edges = _edges(instance, region, rgb, cfg.edge_threshold)
        distance = cv2.distanceTransform((~edges).astype(np.uint8), cv2.DIST_L2, 3)
        boundary = np.stack([np.exp(-distance / s) for s in cfg.boundary_scales], axis=-1)
        parts = [cfg.identity_weight * _vectors(cfg.seed, _SALT_ID, image.scene, identity),
                 cfg.part_weight * _vectors(cfg.seed, _SALT_PART, image.scene, part),
                 cfg.appearance_weight * appearance.astype(np.float32),
                 cfg.boundary_weight * boundary.astype(np.float32)]
        if cfg.shape_weight > 0:
            shape = np.cos(shape_descriptor(identity) @ self._shape_frequencies.astype(np.float32)
                           + self._shape_phases.astype(np.float32)) * np.sqrt(2.0)
            parts.append(cfg.shape_weight * shape.astype(np.float32))
        return np.concatenate(parts, axis=-1)

    def embedding(self, image: GroundTruthImage) -> np.ndarray:
        """(256, 64, 64) float32 stand-in for SAM's image embedding of ``image``: its valid
        top-left (rows, cols) cells hold the image (:func:`valid_embedding_size`), the rest 0."""
        import cv2

        features = self.pixel_features(image)
        rows, cols = valid_embedding_size(*image.instance.shape)
        pooled = np.stack([cv2.resize(np.ascontiguousarray(features[..., k]), (cols, rows),
                                      interpolation=cv2.INTER_AREA)
                           for k in range(features.shape[-1])], axis=-1)
        noise = image_rng(self.config.seed, _SALT_NOISE, image.key).standard_normal(
            (rows, cols, SAM_EMBEDDING_SHAPE[0])).astype(np.float32)
        out = np.zeros(SAM_EMBEDDING_SHAPE, dtype=np.float32)
        out[:, :rows, :cols] = np.moveaxis(pooled @ self._projection.T
                                           + self.config.noise_weight * noise, -1, 0)
        return out
