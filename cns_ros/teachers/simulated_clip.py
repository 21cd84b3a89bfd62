"""The ``clip_like`` MaskCLIP stand-in (presets ``noise_free`` and ``clip_like``). NOT a teacher.

It degrades the ground truth of the synthetic world (:mod:`cns_ros.teachers.synthetic_truth`)
per image at the output size, in this order:

1. boundary bleeding: a pixel within ``boundary_radius`` px of a class boundary takes, with
   probability ``boundary_prob``, the label of a random pixel within that radius;
2. region swaps: each region (an instance, or a connected region of one stuff class) is
   relabelled as a whole, with probability ``region_swap_prob``, to a class drawn from the
   confusion matrix row of its class;
3. patch confusions: in each ``patch_size`` cell (MaskCLIP's token) each class is replaced by a
   class drawn from the confusion matrix with probability ``patch_confusion_prob``.

The default confusion matrix (:func:`clip_like_confusion`) puts most errors on CLIP-like pairs
(sidewalk <-> driveable surface, terrain <-> vegetation, car <-> truck <-> bus, bicycle <->
motorcycle, barrier <-> manmade, pedestrian <-> manmade, ...) over a small uniform floor. With
``target_accuracy``, the noise is calibrated PER IMAGE on fixed random draws: region swaps are
undone (largest first) while the accuracy is below the target, then the patch confusion
probability is bisected to hit the target pixel accuracy (over pixels with a ground-truth
class). Labels: nuScenes-16 training ids, 255 = sky / ignore. Confidence: ``confidence_correct``
on right and ``confidence_wrong`` on wrong pixels, plus ``confidence_spread`` times a per-patch
Gaussian, clipped to [1/16, 1].

Every error is drawn afresh for every image (keyed by the image): a learner that averages over
views beats these labels by construction. :mod:`cns_ros.teachers.realistic_clip` is the stand-in
with persistent, per-object errors.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from cns_ros.geometry import resize_nearest
from cns_ros.teachers.synthetic_truth import (
    NUM_CLASSES,
    GroundTruthImage,
    draw_classes,
    image_rng,
    regions,
)
from cns_ros.vocabulary import IGNORE_INDEX

if TYPE_CHECKING:
    from cns_ros.teachers.clip_dense import DenseClipOutput

_CONFUSION_PAIRS = (  # (class a, class b, weight): symmetric CLIP-like confusions (train ids)
    (12, 10, 3.0), (11, 10, 2.0), (11, 12, 2.0), (13, 15, 3.0), (13, 12, 1.0), (9, 3, 3.0),
    (2, 3, 2.0), (2, 9, 2.0), (8, 9, 2.0), (4, 9, 2.0), (4, 3, 1.0), (1, 5, 3.0), (1, 6, 1.0),
    (0, 14, 3.0), (7, 0, 2.0), (7, 14, 1.0), (6, 14, 2.0), (14, 15, 1.0))


def clip_like_confusion(floor: float = 0.05) -> np.ndarray:
    """(16, 16) float64 row-stochastic wrong-class distribution (zero diagonal, train ids): the
    CLIP-like pairs of the module docstring (weights 1-3) over a uniform ``floor``."""
    weights = np.full((NUM_CLASSES, NUM_CLASSES), floor)
    for a, b, w in _CONFUSION_PAIRS:
        weights[a, b] += w
        weights[b, a] += w
    np.fill_diagonal(weights, 0.0)
    return weights / weights.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class SimulatedClipConfig:
    """Noise of :class:`SimulatedClip` (module docstring). Sizes are pixels at output size.

    Attributes:
        seed: Seed of every random draw (combined with each image's key).
        target_accuracy: Pixel accuracy to calibrate each image to, or None (rates as given).
        boundary_radius: Bleeding radius, px (0: no bleeding).
        boundary_prob: Probability that a pixel near a boundary bleeds.
        region_swap_prob: Probability that a region is relabelled as a whole.
        patch_size: Cell size of patch confusions, px.
        patch_confusion_prob: Probability per (cell, class) of a confusion (bisected when
            ``target_accuracy`` is set).
        confusion: (16, 16) confusion weights (rows normalized, diagonal ignored), or None for
            :func:`clip_like_confusion`.
        confidence_correct: Mean confidence of right pixels.
        confidence_wrong: Mean confidence of wrong pixels.
        confidence_spread: Std of the smooth confidence noise.
    """

    seed: int = 0
    target_accuracy: float | None = None
    boundary_radius: int = 0
    boundary_prob: float = 0.0
    region_swap_prob: float = 0.0
    patch_size: int = 16
    patch_confusion_prob: float = 0.0
    confusion: tuple[tuple[float, ...], ...] | None = None
    confidence_correct: float = 1.0
    confidence_wrong: float = 1.0
    confidence_spread: float = 0.0

    def __post_init__(self) -> None:
        probs = ('boundary_prob', 'region_swap_prob', 'patch_confusion_prob',
                 'confidence_correct', 'confidence_wrong', 'target_accuracy')
        bad = [n for n in probs if getattr(self, n) is not None and not 0 <= getattr(self, n) <= 1]
        if self.boundary_radius < 0 or self.patch_size < 1 or self.confidence_spread < 0 or (
                self.confusion is not None and np.shape(self.confusion) != (16, 16)):
            bad.append('boundary_radius / patch_size / confidence_spread / confusion (16 x 16)')
        if bad:
            raise ValueError(f'SimulatedClipConfig: invalid {", ".join(bad)}')

    def confusion_matrix(self) -> np.ndarray:
        """(16, 16) row-stochastic wrong-class distribution (zero diagonal)."""
        if self.confusion is None:
            return clip_like_confusion()
        weights = np.array(self.confusion, dtype=np.float64)
        np.fill_diagonal(weights, 0.0)
        if np.any(weights < 0) or np.any(weights.sum(axis=1) <= 0):
            raise ValueError('SimulatedClipConfig.confusion: rows need positive off-diagonals')
        return weights / weights.sum(axis=1, keepdims=True)


@dataclass
class _Draws:
    """Fixed random draws of one image (common random numbers for calibration)."""

    bled: np.ndarray        # (H, W) labels after boundary bleeding
    swap_u: np.ndarray      # (R,) region swap uniforms
    swap_to: np.ndarray     # (R,) region swap targets
    cell: np.ndarray        # (H, W) patch cell index
    patch_u: np.ndarray     # (cells, C) patch confusion uniforms
    patch_to: np.ndarray    # (cells, C) patch confusion targets
    smooth: np.ndarray      # (cells,) confidence noise


class SimulatedClip:
    """MaskCLIP stand-in for the synthetic world (module docstring). NOT a real teacher."""

    random_weights = False
    simulated = True

    def __init__(self, config: SimulatedClipConfig | None = None) -> None:
        self.config = config or SimulatedClipConfig()
        self._cdf = np.cumsum(self.config.confusion_matrix(), axis=1)

    def _draws(self, gt: np.ndarray, region_ids: np.ndarray, region_cls: np.ndarray,
               rng: np.random.Generator) -> _Draws:
        import cv2

        cfg, (h, w) = self.config, gt.shape
        bled = gt.copy()
        if cfg.boundary_radius > 0:
            r = cfg.boundary_radius
            kernel = np.ones((2 * r + 1, 2 * r + 1), np.uint8)
            near = cv2.dilate(gt, kernel) != cv2.erode(gt, kernel)
            dy, dx = rng.integers(-r, r + 1, size=(2, h, w))
            rows = np.clip(np.arange(h)[:, None] + dy, 0, h - 1)
            cols = np.clip(np.arange(w)[None, :] + dx, 0, w - 1)
            bleed = near & (rng.random((h, w)) < cfg.boundary_prob)
            bled[bleed] = gt[rows[bleed], cols[bleed]]
        swap_u = rng.random(len(region_cls))
        swap_to = draw_classes(rng.random(len(region_cls)), region_cls, self._cdf)
        ch, cw = -(-h // cfg.patch_size), -(-w // cfg.patch_size)
        cell = (np.arange(h)[:, None] // cfg.patch_size) * cw + np.arange(w)[None, :] // (
            cfg.patch_size)
        patch_u = rng.random((ch * cw, NUM_CLASSES))
        patch_to = draw_classes(rng.random((ch * cw, NUM_CLASSES)),
                                 np.broadcast_to(np.arange(NUM_CLASSES), (ch * cw, NUM_CLASSES)),
                                 self._cdf)
        return _Draws(bled, swap_u, swap_to, cell, patch_u, patch_to,
                      rng.standard_normal(ch * cw))

    @staticmethod
    def _patch(labels: np.ndarray, d: _Draws, prob: float) -> np.ndarray:
        if prob <= 0:
            return labels
        safe = np.where(labels == IGNORE_INDEX, 0, labels)
        hit = (labels != IGNORE_INDEX) & (d.patch_u[d.cell, safe] < prob)
        return np.where(hit, d.patch_to[d.cell, safe], labels).astype(np.uint8)

    def _calibrate(self, gt: np.ndarray, ids: np.ndarray, d: _Draws,
                   swapped: np.ndarray) -> tuple[np.ndarray, float]:
        """Labels with swaps undone (largest first) while below target, then the patch
        probability bisected so that the pixel accuracy hits ``target_accuracy``."""
        target, valid = self.config.target_accuracy, gt != IGNORE_INDEX

        def accuracy(labels: np.ndarray) -> float:
            return float(np.mean(labels[valid] == gt[valid])) if valid.any() else 1.0

        base = np.where(swapped[ids], d.swap_to[ids], d.bled).astype(np.uint8)
        if accuracy(base) < target and swapped.any():
            areas = np.bincount(ids.reshape(-1), minlength=len(swapped)) * swapped
            for region in np.argsort(-areas, kind='stable')[:int(swapped.sum())]:
                base = np.where(ids == region, d.bled, base)
                if accuracy(base) >= target:
                    break
        if accuracy(self._patch(base, d, 1.0)) >= target:
            return self._patch(base, d, 1.0), 1.0
        if accuracy(base) <= target:
            return base, 0.0
        lo, hi = 0.0, 1.0
        for _ in range(18):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if accuracy(self._patch(base, d, mid)) > target else (lo, mid)
        return self._patch(base, d, hi), hi

    def label_image(self, image: GroundTruthImage, output_size: tuple[int, int] | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Noisy uint8 (H, W) labels (training ids, 255 = ignore) and float32 (H, W) confidence
        in [0, 1] (0 where the label is 255) of one image at ``output_size`` (H, W) (default:
        the image's size; the ground truth is resized nearest)."""
        cfg = self.config
        size = tuple(output_size or image.semantic32.shape)
        gt = resize_nearest(image.train_labels(), size)
        ids, cls = regions(gt, resize_nearest(image.instance, size))
        d = self._draws(gt, ids, cls, image_rng(cfg.seed, 1, image.key))
        swapped = (d.swap_u < cfg.region_swap_prob) & (cls != IGNORE_INDEX)
        if cfg.target_accuracy is None:
            labels = np.where(swapped[ids], d.swap_to[ids], d.bled).astype(np.uint8)
            labels = self._patch(labels, d, cfg.patch_confusion_prob)
        else:
            labels, _ = self._calibrate(gt, ids, d, swapped)
        conf = np.where(labels == gt, cfg.confidence_correct, cfg.confidence_wrong)
        conf = np.clip(conf + cfg.confidence_spread * d.smooth[d.cell], 1.0 / NUM_CLASSES, 1.0)
        conf[labels == IGNORE_INDEX] = 0.0
        return labels, conf.astype(np.float32)

    def predict(self, images: Sequence[GroundTruthImage],
                output_size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (B, H, W) labels and float32 (B, H, W) confidences (see :meth:`label_image`)."""
        parts = [self.label_image(image, output_size) for image in images]
        return np.stack([p[0] for p in parts]), np.stack([p[1] for p in parts])

    def __call__(self, images: Sequence[GroundTruthImage],
                 output_size: tuple[int, int] | None = None) -> DenseClipOutput:
        """A ``DenseClipOutput`` (subclass with ``simulated=True``), tensors on the CPU.

        ``labels`` (B, H, W) int64 training ids (255 = ignore), ``confidence`` float32;
        ``features``/``logits`` are NOT CLIP embeddings: the per-token class histogram of the
        labels (B, 16, ceil(H/patch), ceil(W/patch)), L2-normalized resp. mapped to [-1, 1].
        """
        labels, conf = self.predict(images, output_size)
        grid = tuple(-(-s // self.config.patch_size) for s in labels.shape[1:])
        return dense_output(labels, conf, grid)


@functools.cache
def simulated_output_class() -> type:
    """``SimulatedClipOutput``: ``DenseClipOutput`` plus ``simulated: bool = True``."""
    from dataclasses import dataclass as _dataclass

    from cns_ros.teachers.clip_dense import DenseClipOutput

    @_dataclass
    class SimulatedClipOutput(DenseClipOutput):
        simulated: bool = True

    return SimulatedClipOutput


def dense_output(labels: np.ndarray, confidence: np.ndarray, grid: tuple[int, int]
                 ) -> DenseClipOutput:
    """A ``SimulatedClipOutput`` of uint8 (B, H, W) ``labels`` (255 = ignore) and float32
    ``confidence``: ``labels`` int64, and as ``features`` / ``logits`` the per-token class
    histogram of the labels on ``grid`` (rows, cols) tokens (B, 16, rows, cols), L2-normalized
    resp. mapped to [-1, 1] (NOT CLIP embeddings)."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    from cns_ros.vocabulary import nuscenes16

    lab = torch.from_numpy(labels.astype(np.int64))
    one_hot = F.one_hot(lab.clamp(max=NUM_CLASSES), NUM_CLASSES + 1)[..., :NUM_CLASSES]
    hist = F.adaptive_avg_pool2d(one_hot.permute(0, 3, 1, 2).float(), list(grid))
    return simulated_output_class()(
        labels=lab, confidence=torch.from_numpy(confidence), features=F.normalize(hist, dim=1),
        logits=hist * 2.0 - 1.0, class_names=nuscenes16().names, random_weights=False)
