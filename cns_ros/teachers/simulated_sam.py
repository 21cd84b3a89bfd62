"""The ``clip_like`` SAM stand-in (presets ``noise_free`` and ``clip_like``). NOT a teacher.

Masks: one mask per image-level region of the ground truth (an instance, or a connected region
of one stuff class; the sky too); a region of >= ``min_split_area`` px is cut in two by a
random line through its centroid with probability ``split_prob``; each pair of adjacent masks,
in random order, merges with probability ``merge_prob`` (a mask merges at most once); masks
under ``min_area`` px are dropped. Masks never overlap and are class-pure up to the merges, far
kinder than SAM. Embedding: a fixed random projection of the one-hot semantic PNG ids
(lidarseg-32, or nyu40 in a scannet20 world; a label leak: never use it to measure the latent
loss). Deterministic per ``seed`` and image key.
:mod:`cns_ros.teachers.realistic_sam` and :mod:`cns_ros.teachers.sam_embedding` are the
realistic stand-ins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cns_ros.geometry import resize_nearest
from cns_ros.teachers.refine import refine_labels
from cns_ros.teachers.sam import SamMasks, valid_embedding_size
from cns_ros.teachers.synthetic_truth import GroundTruthImage, image_rng, regions
from cns_ros.vocabulary import IGNORE_INDEX


@dataclass(frozen=True)
class SimulatedSamConfig:
    """Noise of :class:`SimulatedSam` (module docstring).

    Attributes:
        seed: Seed of every random draw (combined with each image's key).
        split_prob: Probability that a region is split in two.
        merge_prob: Probability that a pair of adjacent masks is merged.
        min_split_area: Smallest region that can be split, px.
        min_area: Masks smaller than this are dropped, px (0: keep all).
        mask_order: Refinement order, as ``SamConfig.mask_order``.
    """

    seed: int = 0
    split_prob: float = 0.0
    merge_prob: float = 0.0
    min_split_area: int = 32
    min_area: int = 0
    mask_order: str = 'area_ascending'

    def __post_init__(self) -> None:
        if not (0 <= self.split_prob <= 1 and 0 <= self.merge_prob <= 1
                and self.min_split_area >= 2 and self.min_area >= 0):
            raise ValueError(f'SimulatedSamConfig: invalid values {self}')


@dataclass(frozen=True)
class SimulatedSamStats:
    """What :class:`SimulatedSam` did to one image: regions, splits, merges, dropped masks."""

    regions: int
    splits: int
    merges: int
    dropped: int


class SimulatedSam:
    """SAM stand-in for the synthetic world (module docstring). NOT a real teacher."""

    random_weights = False
    simulated = True

    def __init__(self, config: SimulatedSamConfig | None = None,
                 embedding: Any | None = None) -> None:
        self.config = config or SimulatedSamConfig()
        self._embedding = embedding

    def _split(self, ids: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        count = int(ids.max(initial=-1)) + 1
        areas = np.bincount(ids.reshape(-1), minlength=count)
        u, angle = rng.random(count), rng.uniform(0.0, np.pi, count)
        rows, cols = np.indices(ids.shape)
        cy = np.bincount(ids.reshape(-1), rows.reshape(-1), count) / np.maximum(areas, 1)
        cx = np.bincount(ids.reshape(-1), cols.reshape(-1), count) / np.maximum(areas, 1)
        chosen = (u < self.config.split_prob) & (areas >= self.config.min_split_area)
        side = ((cols - cx[ids]) * np.cos(angle[ids]) + (rows - cy[ids]) * np.sin(angle[ids])) > 0
        moved = chosen[ids] & side
        moved_area = np.bincount(ids[moved], minlength=count)
        real = chosen & (moved_area > 0) & (moved_area < areas)
        new_id = np.cumsum(real) - 1 + count
        out = np.where(moved & real[ids], new_id[ids], ids)
        return out, int(real.sum())

    def _merge(self, ids: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        count = int(ids.max(initial=-1)) + 1
        pairs = np.concatenate([np.stack([ids[:, :-1].ravel(), ids[:, 1:].ravel()], 1),
                                np.stack([ids[:-1].ravel(), ids[1:].ravel()], 1)])
        pairs = np.unique(np.sort(pairs[pairs[:, 0] != pairs[:, 1]], axis=1), axis=0)
        parent, done, merges = np.arange(count), np.zeros(count, bool), 0
        u = rng.random(len(pairs))
        for k in rng.permutation(len(pairs)):
            a, b = pairs[k]
            if u[k] < self.config.merge_prob and not done[a] and not done[b]:
                parent[b], done[a], done[b], merges = a, True, True, merges + 1
        return parent[ids], merges

    def masks_with_stats(self, image: GroundTruthImage,
                         output_size: tuple[int, int] | None = None
                         ) -> tuple[SamMasks, SimulatedSamStats]:
        """Masks of one image at ``output_size`` (default its size), and the noise counts."""
        size = tuple(output_size or image.semantic.shape)
        ids, _ = regions(resize_nearest(image.train_labels(), size),
                         resize_nearest(image.instance, size))
        rng = image_rng(self.config.seed, 2, image.key)
        num_regions = int(ids.max(initial=-1)) + 1
        ids, splits = self._split(ids, rng)
        ids, merges = self._merge(ids, rng)
        labels, flat = np.unique(ids, return_inverse=True)
        areas = np.bincount(flat, minlength=len(labels))
        keep = np.flatnonzero(areas >= max(self.config.min_area, 1))
        masks = flat.reshape(1, *size) == keep[:, None, None]
        ones = np.ones(len(keep), dtype=np.float32)
        sam = SamMasks(masks, areas[keep].astype(np.int64), ones, ones.copy(), False)
        return sam, SimulatedSamStats(num_regions, splits, merges, len(labels) - len(keep))

    def masks(self, image: GroundTruthImage, size: tuple[int, int] | None = None) -> SamMasks:
        """``SamMasks`` of one image (see :meth:`masks_with_stats`)."""
        return self.masks_with_stats(image, size)[0]

    def embedding(self, image: GroundTruthImage) -> np.ndarray:
        """(256, 64, 64) float32 stand-in for SAM's embedding (NOT SAM features): the
        configured embedding generator's, else (a LABEL LEAK) the one-hot semantic PNG ids (K =
        32 lidarseg-32 ids, or 41 nyu40 ids in a scannet20 world) area-pooled onto SAM's valid
        grid (zeros elsewhere) times a fixed random (256, K) matrix of ``seed``."""
        import cv2

        if self._embedding is not None:
            return self._embedding.embedding(image)
        ids = image.space.semantic_ids
        rows, cols = valid_embedding_size(*image.semantic.shape)
        one_hot = (image.semantic[..., None] == np.arange(ids)).astype(np.float32)
        pooled = np.stack([cv2.resize(one_hot[..., k], (cols, rows), interpolation=cv2.INTER_AREA)
                           for k in range(ids)])
        proj = np.random.default_rng([self.config.seed, 3]).standard_normal((256, ids))
        out = np.zeros((256, 64, 64), dtype=np.float32)
        out[:, :rows, :cols] = np.tensordot(proj, pooled, axes=1)
        return out

    def refine(self, labels: Any, masks: SamMasks | np.ndarray,
               ignore_index: int | None = IGNORE_INDEX) -> tuple[Any, Any]:
        """``refine_labels`` with this teacher's ``config.mask_order``."""
        return refine_labels(labels, masks, order=self.config.mask_order,
                             ignore_index=ignore_index)
