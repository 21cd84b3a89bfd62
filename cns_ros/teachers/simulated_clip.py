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
of the image's class space (nuScenes-16: sidewalk <-> driveable surface, terrain <-> vegetation,
car <-> truck <-> bus, bicycle <-> motorcycle, barrier <-> manmade, pedestrian <-> manmade, ...;
scannet20: table <-> desk, cabinet <-> counter / other furniture, curtain <-> shower curtain /
window, sofa <-> chair / bed, picture <-> wall, door <-> wall, ...) over a small uniform floor.
With ``target_accuracy``, the noise is calibrated PER IMAGE on fixed random draws: region swaps are
undone (largest first) while the accuracy is below the target, then the patch confusion
probability is bisected to hit the target pixel accuracy (over pixels with a ground-truth
class). Labels: training ids of the world's class space (nuScenes-16 or scannet20), 255 = sky /
ignore. Confidence: ``confidence_correct`` on right and ``confidence_wrong`` on wrong pixels, plus
``confidence_spread`` times a per-patch Gaussian, clipped to [1/C, 1] (C classes).

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
from cns_ros.teachers.class_space import NUSCENES16, SCANNET20, ClassSpaceError, class_space
from cns_ros.teachers.synthetic_truth import GroundTruthImage, draw_classes, image_rng, regions
from cns_ros.vocabulary import IGNORE_INDEX

if TYPE_CHECKING:
    from cns_ros.teachers.clip_dense import DenseClipOutput

#: Class space -> (class a, class b, weight): symmetric CLIP-like confusions (teacher_noise.md
#: 1.4 and 7.1; the indoor pairs past 7.1's list are guesses).
_CONFUSION_PAIRS: dict[str, tuple[tuple[str, str, float], ...]] = {
    NUSCENES16: (
        ('sidewalk', 'driveable_surface', 3.0), ('other_flat', 'driveable_surface', 2.0),
        ('other_flat', 'sidewalk', 2.0), ('terrain', 'vegetation', 3.0),
        ('terrain', 'sidewalk', 1.0), ('truck', 'car', 3.0), ('bus', 'car', 2.0),
        ('bus', 'truck', 2.0), ('trailer', 'truck', 2.0), ('construction_vehicle', 'truck', 2.0),
        ('construction_vehicle', 'car', 1.0), ('bicycle', 'motorcycle', 3.0),
        ('bicycle', 'pedestrian', 1.0), ('barrier', 'manmade', 3.0),
        ('traffic_cone', 'barrier', 2.0), ('traffic_cone', 'manmade', 1.0),
        ('pedestrian', 'manmade', 2.0), ('manmade', 'vegetation', 1.0)),
    SCANNET20: (
        ('table', 'desk', 3.0), ('cabinet', 'counter', 2.0), ('cabinet', 'other furniture', 2.0),
        ('curtain', 'shower curtain', 3.0), ('curtain', 'window', 2.0), ('sofa', 'chair', 2.0),
        ('sofa', 'bed', 2.0), ('picture', 'wall', 3.0), ('door', 'wall', 3.0),
        ('refrigerator', 'cabinet', 2.0), ('sink', 'counter', 2.0), ('bookshelf', 'cabinet', 1.0),
        ('bathtub', 'shower curtain', 1.0), ('toilet', 'sink', 1.0), ('window', 'wall', 1.0),
        ('chair', 'other furniture', 1.0), ('desk', 'other furniture', 1.0)),
}


def clip_like_confusion(floor: float = 0.05, space: str = NUSCENES16) -> np.ndarray:
    """(C, C) float64 row-stochastic wrong-class distribution (zero diagonal, train ids of
    class space ``space``): the CLIP-like pairs of the module docstring (weights 1-3) over a
    uniform ``floor``."""
    names = class_space(space).names
    weights = np.full((len(names), len(names)), floor)
    for a, b, w in _CONFUSION_PAIRS[space]:
        weights[names.index(a), names.index(b)] += w
        weights[names.index(b), names.index(a)] += w
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
        confusion: (C, C) confusion weights of a class space of C classes (rows normalized,
            diagonal ignored), or None for :func:`clip_like_confusion` of the image's class
            space (then the config fits every world).
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
        shape = np.shape(self.confusion)
        if self.boundary_radius < 0 or self.patch_size < 1 or self.confidence_spread < 0 or (
                self.confusion is not None and (len(shape) != 2 or shape[0] != shape[1])):
            bad.append('boundary_radius / patch_size / confidence_spread / confusion (C x C)')
        if bad:
            raise ValueError(f'SimulatedClipConfig: invalid {", ".join(bad)}')

    def confusion_matrix(self, space: str = NUSCENES16) -> np.ndarray:
        """(C, C) row-stochastic wrong-class distribution (zero diagonal) for images of class
        space ``space``.

        Raises:
            ClassSpaceError: ``confusion`` is given with another number of classes.
        """
        if self.confusion is None:
            return clip_like_confusion(space=space)
        expected = class_space(space).num_classes
        if len(self.confusion) != expected:
            raise ClassSpaceError(
                f'SimulatedClipConfig.confusion has {len(self.confusion)} classes, but the '
                f'images are {space} ({expected} classes); use a noise file of that class space')
        return _row_stochastic(np.array(self.confusion, dtype=np.float64))


def _row_stochastic(weights: np.ndarray) -> np.ndarray:
    """(C, C) confusion weights with the diagonal zeroed and rows normalized."""
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
        self._cdfs: dict[str, np.ndarray] = {}
        if self.config.confusion is not None:  # fail early on a bad matrix
            _row_stochastic(np.array(self.config.confusion, dtype=np.float64))

    def _cdf(self, space: str) -> np.ndarray:
        """(C, C) cumulative confusion rows for images of class space ``space`` (cached)."""
        if space not in self._cdfs:
            self._cdfs[space] = np.cumsum(self.config.confusion_matrix(space), axis=1)
        return self._cdfs[space]

    def _draws(self, gt: np.ndarray, region_ids: np.ndarray, region_cls: np.ndarray,
               rng: np.random.Generator, cdf: np.ndarray) -> _Draws:
        import cv2

        cfg, (h, w), classes = self.config, gt.shape, len(cdf)
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
        swap_to = draw_classes(rng.random(len(region_cls)), region_cls, cdf)
        ch, cw = -(-h // cfg.patch_size), -(-w // cfg.patch_size)
        cell = (np.arange(h)[:, None] // cfg.patch_size) * cw + np.arange(w)[None, :] // (
            cfg.patch_size)
        patch_u = rng.random((ch * cw, classes))
        patch_to = draw_classes(rng.random((ch * cw, classes)),
                                np.broadcast_to(np.arange(classes), (ch * cw, classes)), cdf)
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
        """Noisy uint8 (H, W) labels (training ids of the image's class space, 255 = ignore) and
        float32 (H, W) confidence in [0, 1] (0 where the label is 255) of one image at
        ``output_size`` (H, W) (default: the image's size; the ground truth is resized
        nearest)."""
        cfg, cdf = self.config, self._cdf(image.class_space)
        size = tuple(output_size or image.semantic.shape)
        gt = resize_nearest(image.train_labels(), size)
        ids, cls = regions(gt, resize_nearest(image.instance, size))
        d = self._draws(gt, ids, cls, image_rng(cfg.seed, 1, image.key), cdf)
        swapped = (d.swap_u < cfg.region_swap_prob) & (cls != IGNORE_INDEX)
        if cfg.target_accuracy is None:
            labels = np.where(swapped[ids], d.swap_to[ids], d.bled).astype(np.uint8)
            labels = self._patch(labels, d, cfg.patch_confusion_prob)
        else:
            labels, _ = self._calibrate(gt, ids, d, swapped)
        conf = np.where(labels == gt, cfg.confidence_correct, cfg.confidence_wrong)
        conf = np.clip(conf + cfg.confidence_spread * d.smooth[d.cell], 1.0 / len(cdf), 1.0)
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
        labels (B, C, ceil(H/patch), ceil(W/patch)), L2-normalized resp. mapped to [-1, 1],
        C the classes of the images' class space.
        """
        labels, conf = self.predict(images, output_size)
        grid = tuple(-(-s // self.config.patch_size) for s in labels.shape[1:])
        return dense_output(labels, conf, grid, images_class_space(images))


@functools.cache
def simulated_output_class() -> type:
    """``SimulatedClipOutput``: ``DenseClipOutput`` plus ``simulated: bool = True``."""
    from dataclasses import dataclass as _dataclass

    from cns_ros.teachers.clip_dense import DenseClipOutput

    @_dataclass
    class SimulatedClipOutput(DenseClipOutput):
        simulated: bool = True

    return SimulatedClipOutput


def images_class_space(images: Sequence[GroundTruthImage]) -> str:
    """The one class space of a batch of images (nuscenes16 for an empty batch).

    Raises:
        ClassSpaceError: The images come from worlds of different class spaces.
    """
    spaces = sorted({image.class_space for image in images})
    if len(spaces) > 1:
        raise ClassSpaceError(f'one batch holds images of class spaces {", ".join(spaces)}')
    return spaces[0] if spaces else NUSCENES16


def dense_output(labels: np.ndarray, confidence: np.ndarray, grid: tuple[int, int],
                 space: str = NUSCENES16) -> DenseClipOutput:
    """A ``SimulatedClipOutput`` of uint8 (B, H, W) ``labels`` (255 = ignore) and float32
    ``confidence``: ``labels`` int64, and as ``features`` / ``logits`` the per-token class
    histogram of the labels on ``grid`` (rows, cols) tokens (B, C, rows, cols), L2-normalized
    resp. mapped to [-1, 1] (NOT CLIP embeddings); C and ``class_names`` are those of class
    space ``space``."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    names = class_space(space).names
    classes = len(names)
    lab = torch.from_numpy(labels.astype(np.int64))
    one_hot = F.one_hot(lab.clamp(max=classes), classes + 1)[..., :classes]
    hist = F.adaptive_avg_pool2d(one_hot.permute(0, 3, 1, 2).float(), list(grid))
    return simulated_output_class()(
        labels=lab, confidence=torch.from_numpy(confidence), features=F.normalize(hist, dim=1),
        logits=hist * 2.0 - 1.0, class_names=names, random_weights=False)
