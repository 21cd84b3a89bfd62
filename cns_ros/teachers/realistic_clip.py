"""The ``realistic`` MaskCLIP stand-in: errors with MaskCLIP's structure (teacher_noise.md 7.1).

NOT a teacher: it degrades the synthetic world's ground truth. Per image, at the output size
(H, W), with MaskCLIP's token grid ``patch_grid`` (14 x 26 tokens over the label map, as for its
224 x 416 input with 16 px patches; 15 x 20 for ScanNet's 240 x 320). The classes are those of
the world's class space (:mod:`cns_ros.teachers.class_space`: nuScenes-16 or scannet20); the
per-class parameters have one value per class of that space:

1. **Persistent errors** (per object or region, the same in every view): every world entity, an
   instance (scene, instance id) or, for stuff, a world region (scene, region id; see
   :mod:`cns_ros.data.synthetic_regions`), is wrong with probability ``persistent_wrong[c]`` of
   its class c, with a wrong class drawn from row c of the confusion matrix. Both draws are keyed
   by (seed, scene, world id) and never by the image, so the same instance keeps its wrong class
   across cameras and keyframes. In each view, with probability ``flip_prob``, an entity's state
   is redrawn for that view only (keyed by the image and the entity).
2. **View-dependent errors** in patch-sized blobs: a smooth random field (white noise on the
   token grid, Gaussian-smoothed over ``blob_patches`` tokens, upsampled, rank-normalized to
   uniform) marks a pixel of class c wrong where it is below ``view_wrong[c]``; the blob's class
   is drawn per token from the confusion row or, with probability ``context_prob``, is one of
   the image's ``context_classes`` dominant classes (dominant-context bias).
3. **Sky** (any pixel without a ground-truth class: sky in a driving world; ceiling, clutter and
   unannotated pixels indoors): it has no class of its own and real CLIP never abstains, so
   these pixels take, per token, a class drawn from ``sky_classes`` (manmade and vegetation
   mostly in a street, wall indoors). They stay unscored (the ground truth there is 255).
4. **Resolution, boundary band and context**: each token's class scores are the class shares
   in a window of ``receptive_patches`` tokens around it (a token sees beyond its own patch:
   its effective receptive field), each class's score is multiplied by its ``salience`` (a
   salient class, e.g. a person, wins a cell it only partly covers: labels bleed outward around
   objects, as CLIP2Scene observes), the ``context_classes`` dominant classes of the image get
   ``context_bias`` added, and the scores are upsampled bilinearly and argmaxed, as MaskCLIP's
   logits are: small objects of low salience (cones, distant bicycles) are absorbed by their
   surroundings. Before the argmax, the upsampled scores are warped by a smooth random
   displacement field (Gaussian, ``band_patches`` tokens standard deviation per axis, smooth over
   about two tokens, drawn per image): boundaries move by up to about a patch either way, the
   boundary band of MaskCLIP's coarse, context-mixed tokens.

Every pixel gets a class (no 255). Confidence: ``confidence_low + (confidence_high -
confidence_low) * s``, where s is the winning class's share of the upsampled scores. Everything
is deterministic per seed and image key (view draws) or per seed, scene and world id
(persistent draws).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np

from cns_ros.geometry import resize_nearest
from cns_ros.teachers.class_space import ClassSpaceError
from cns_ros.teachers.synthetic_truth import (
    NUM_CLASSES,
    GroundTruthImage,
    draw_classes,
    image_rng,
    world_entities,
    world_uniforms,
)
from cns_ros.vocabulary import IGNORE_INDEX

if TYPE_CHECKING:
    from cns_ros.teachers.clip_dense import DenseClipOutput

_SALT_PERSIST, _SALT_VIEW = 11, 12
#: Error components of :class:`ClipStages` ``component``.
CORRECT, PERSISTENT, VIEW, RESOLUTION = 0, 1, 2, 3
_PER_CLASS = ('persistent_wrong', 'view_wrong', 'sky_classes', 'salience')


@dataclass(frozen=True)
class RealisticClipConfig:
    """Noise of :class:`RealisticClip` (module docstring). Per-class tuples have one entry per
    training class of the class space (C: 16 for nuScenes-16, the defaults, or 20 for scannet20;
    C is the length of ``persistent_wrong``); the YAML noise file names the classes.

    Attributes:
        seed: Seed of every draw (combined with the scene and world id, or the image key).
        patch_grid: MaskCLIP's token grid (rows, cols) over the label map.
        receptive_patches: Edge of the window a token's scores are pooled over, tokens (the
            boundary band is about half of it).
        persistent_wrong: Per class, probability that an object / region is persistently wrong.
        flip_prob: Per view and entity, probability that its persistent state is redrawn.
        view_wrong: Per class, share of the (otherwise right) pixels in view-dependent blobs.
        blob_patches: Smoothing scale of the blob field, tokens.
        context_prob: Share of blob classes taken from the image's dominant classes.
        context_classes: Number of dominant classes (by pixel share) of an image.
        context_bias: Score added to the dominant classes before the argmax (pooled scores of a
            cell sum to 1).
        salience: Per class, factor of its pooled score before the argmax (> 0).
        band_patches: Standard deviation per axis of the boundary displacement, tokens.
        sky_classes: Per class, weight of that class on pixels without a ground-truth class
            (sky, ceiling, ...).
        confusion: (C, C) wrong-class weights (row = true class; the diagonal is ignored).
        confusion_floor: Weight added to every off-diagonal entry.
        confidence_low: Confidence when the winning class has no score share.
        confidence_high: Confidence when the winning class has all of it.
    """

    seed: int = 0
    patch_grid: tuple[int, int] = (14, 26)
    receptive_patches: float = 1.0
    persistent_wrong: tuple[float, ...] = (0.0,) * NUM_CLASSES
    flip_prob: float = 0.0
    view_wrong: tuple[float, ...] = (0.0,) * NUM_CLASSES
    blob_patches: float = 1.5
    context_prob: float = 0.0
    context_classes: int = 3
    context_bias: float = 0.0
    salience: tuple[float, ...] = (1.0,) * NUM_CLASSES
    band_patches: float = 0.0
    sky_classes: tuple[float, ...] = (0.0,) * 14 + (1.0, 0.0)
    confusion: tuple[tuple[float, ...], ...] = ((0.0,) * NUM_CLASSES,) * NUM_CLASSES
    confusion_floor: float = 0.01
    confidence_low: float = 0.2
    confidence_high: float = 0.9

    @property
    def num_classes(self) -> int:
        """C, the number of classes of the class space the noise is for."""
        return len(self.persistent_wrong)

    def __post_init__(self) -> None:
        classes = self.num_classes
        for name in _PER_CLASS:
            value = getattr(self, name)
            if len(value) != classes or min(value) < 0:
                raise ValueError(f'RealisticClipConfig.{name}: {classes} values >= 0 expected '
                                 f'(as persistent_wrong), found {value}')
        probs = ('flip_prob', 'context_prob', 'confidence_low', 'confidence_high')
        bad = [n for n in probs if not 0.0 <= getattr(self, n) <= 1.0]
        bad += [n for n in ('persistent_wrong', 'view_wrong') if max(getattr(self, n)) > 1.0]
        if len(self.patch_grid) != 2 or min(self.patch_grid) < 1 or self.receptive_patches <= 0:
            bad.append('patch_grid / receptive_patches')
        if self.blob_patches <= 0 or self.context_classes < 1 or min(
                self.context_bias, self.band_patches) < 0:
            bad.append('blob_patches / context_classes / context_bias / band_patches')
        if np.shape(self.confusion) != (classes, classes) or self.confusion_floor < 0:
            bad.append(f'confusion ({classes} x {classes}) / confusion_floor')
        if sum(self.sky_classes) <= 0 or min(self.salience) <= 0:
            bad.append('sky_classes (all zero) / salience (> 0)')
        if bad:
            raise ValueError(f'RealisticClipConfig: invalid {", ".join(bad)}')

    def confusion_matrix(self) -> np.ndarray:
        """(C, C) float64 row-stochastic wrong-class distribution (zero diagonal)."""
        weights = np.array(self.confusion, dtype=np.float64) + self.confusion_floor
        np.fill_diagonal(weights, 0.0)
        if np.any(weights < 0) or np.any(weights.sum(axis=1) <= 0):
            raise ValueError('RealisticClipConfig.confusion: rows need positive off-diagonals')
        return weights / weights.sum(axis=1, keepdims=True)

    def as_dict(self) -> dict[str, object]:
        """Plain values (lists), e.g. for a manifest."""
        return {f.name: np.asarray(getattr(self, f.name)).tolist() for f in fields(self)}


@dataclass(frozen=True)
class ClipStages:
    """The stages of one :meth:`RealisticClip.stages` call (all (H, W) at the output size).

    Attributes:
        truth: uint8 ground truth (training ids, 255 = sky).
        persistent: uint8 labels after the persistent errors (sky 255).
        view: uint8 labels after the view-dependent errors and the sky classes.
        labels: uint8 final labels (every pixel a class).
        confidence: float32 confidence.
        component: uint8 what made a wrong pixel wrong (CORRECT, PERSISTENT, VIEW, RESOLUTION;
            CORRECT also on sky).
        entity: int64 world id of each pixel (instance, or REGION_OFFSET + region; -1 sky).
        scores: float32 (C, *patch_grid) token class scores (before salience and context).
    """

    truth: np.ndarray
    persistent: np.ndarray
    view: np.ndarray
    labels: np.ndarray
    confidence: np.ndarray
    component: np.ndarray
    entity: np.ndarray
    scores: np.ndarray


class RealisticClip:
    """MaskCLIP stand-in with persistent, per-object errors (module docstring). NOT a teacher."""

    random_weights = False
    simulated = True

    def __init__(self, config: RealisticClipConfig | None = None) -> None:
        self.config = config or RealisticClipConfig()
        self.num_classes = self.config.num_classes
        self._cdf = np.cumsum(self.config.confusion_matrix(), axis=1)
        sky = np.array(self.config.sky_classes, dtype=np.float64)
        self._sky_cdf = np.cumsum(sky / sky.sum())

    def _persistent(self, truth: np.ndarray, entity: np.ndarray, scene: str, key: str
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Labels after the persistent errors and bool (H, W): wrong by the world draw (not
        by this view's flip)."""
        cfg = self.config
        ids, first, inverse = np.unique(entity, return_index=True, return_inverse=True)
        inverse = inverse.reshape(entity.shape)
        cls = truth.reshape(-1)[first].astype(np.int64)
        sky = (ids < 0) | (cls == IGNORE_INDEX)
        cls = np.where(sky, 0, cls)
        p = np.array(cfg.persistent_wrong)[cls]
        world = world_uniforms(cfg.seed, _SALT_PERSIST, scene, ids, 2)
        view = world_uniforms(cfg.seed, _SALT_VIEW, f'{scene}/{key}', ids, 3)
        flipped = view[:, 0] < cfg.flip_prob
        wrong = np.where(flipped, view[:, 1] < p, world[:, 0] < p) & ~sky
        to = np.where(flipped, draw_classes(view[:, 2], cls, self._cdf),
                      draw_classes(world[:, 1], cls, self._cdf))
        labels = np.where(wrong[inverse], to[inverse], truth).astype(np.uint8)
        return labels, (wrong & ~flipped)[inverse]

    def _dominant(self, labels: np.ndarray) -> np.ndarray:
        """int64 (k,) the image's most frequent classes (255 excluded), most frequent first."""
        classes = self.num_classes
        counts = np.bincount(labels[labels != IGNORE_INDEX].reshape(-1), minlength=classes)
        order = np.argsort(-counts[:classes], kind='stable')
        return order[:self.config.context_classes][counts[order[:self.config.context_classes]]
                                                   > 0]

    def _blob_field(self, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        """float64 (H, W) uniform-marginal smooth field with blobs of ``blob_patches``."""
        import cv2

        gh, gw = self.config.patch_grid
        noise = rng.standard_normal((gh, gw)).astype(np.float32)
        sigma = self.config.blob_patches / 2.0
        smooth = cv2.GaussianBlur(noise, (0, 0), sigmaX=sigma, sigmaY=sigma,
                                  borderType=cv2.BORDER_REFLECT)
        up = cv2.resize(smooth, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        rank = np.empty(up.size, dtype=np.float64)
        rank[np.argsort(up.reshape(-1), kind='stable')] = np.arange(up.size) / up.size
        return rank.reshape(size)

    def _token_map(self, size: tuple[int, int]) -> np.ndarray:
        """int64 (H, W) token index (row-major over ``patch_grid``) of each pixel."""
        gh, gw = self.config.patch_grid
        rows = np.minimum((np.arange(size[0]) * gh) // size[0], gh - 1)
        cols = np.minimum((np.arange(size[1]) * gw) // size[1], gw - 1)
        return rows[:, None] * gw + cols[None, :]

    def _view(self, truth: np.ndarray, persistent: np.ndarray, rng: np.random.Generator
              ) -> np.ndarray:
        """Labels after the view-dependent blobs and the sky classes."""
        cfg, classes = self.config, self.num_classes
        size = truth.shape
        field = self._blob_field(size, rng)
        tokens = cfg.patch_grid[0] * cfg.patch_grid[1]
        rows = np.broadcast_to(np.arange(classes), (tokens, classes))
        to = draw_classes(rng.random((tokens, classes)), rows, self._cdf)
        dominant = self._dominant(truth)
        if dominant.size:
            pick = dominant[rng.integers(0, dominant.size, (tokens, classes))]
            use = (rng.random((tokens, classes)) < cfg.context_prob) & (pick != rows)
            to = np.where(use, pick, to)
        sky_to = np.minimum((rng.random(tokens)[:, None] > self._sky_cdf).sum(axis=1),
                            classes - 1)
        token = self._token_map(size)
        sky = truth == IGNORE_INDEX
        safe = np.where(sky, 0, truth).astype(np.int64)
        wrong = (~sky) & (persistent == truth) & (field < np.array(cfg.view_wrong)[safe])
        out = np.where(wrong, to[token, safe], persistent)
        return np.where(sky, sky_to[token], out).astype(np.uint8)

    def _warp(self, scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(C, H, W) scores warped by the smooth random displacement of ``band_patches``."""
        import cv2

        cfg = self.config
        if cfg.band_patches <= 0:
            return scores
        (gh, gw), (h, w) = cfg.patch_grid, scores.shape[1:]
        field = rng.standard_normal((2, gh, gw)).astype(np.float32)
        field = np.stack([cv2.GaussianBlur(f, (0, 0), 1.0, borderType=cv2.BORDER_REFLECT)
                          for f in field])
        field *= cfg.band_patches / max(float(field.std()), 1e-6)
        dy = cv2.resize(field[0], (w, h), interpolation=cv2.INTER_LINEAR) * (h / gh)
        dx = cv2.resize(field[1], (w, h), interpolation=cv2.INTER_LINEAR) * (w / gw)
        rows, cols = np.indices((h, w), dtype=np.float32)
        return np.stack([cv2.remap(s, cols + dx, rows + dy, cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REFLECT) for s in scores])

    def resolve(self, view: np.ndarray, rng: np.random.Generator | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """MaskCLIP's resolution step on (H, W) uint8 labels (no 255): float32 token scores
        (C, *patch_grid), the argmax of their bilinear upsampling with salience and context
        bias, warped by the band displacement drawn from ``rng`` (none without), as uint8
        (H, W) labels, and the confidence (float32 (H, W))."""
        import cv2

        cfg = self.config
        h, w = view.shape
        (gh, gw), window = cfg.patch_grid, cfg.receptive_patches
        size = (max(1, round(window * w / gw)), max(1, round(window * h / gh)))
        rows = np.minimum(((np.arange(gh) + 0.5) * h / gh).astype(np.int64), h - 1)
        cols = np.minimum(((np.arange(gw) + 0.5) * w / gw).astype(np.int64), w - 1)
        scores = np.stack([cv2.blur((view == c).astype(np.float32), size,
                                    borderType=cv2.BORDER_REFLECT)[rows][:, cols]
                           for c in range(self.num_classes)])
        biased = scores * np.array(cfg.salience, dtype=np.float32)[:, None, None]
        biased[self._dominant(view)] += cfg.context_bias
        up = np.stack([cv2.resize(s, (w, h), interpolation=cv2.INTER_LINEAR) for s in biased])
        if rng is not None:
            up = self._warp(up, rng)
        labels = np.argmax(up, axis=0).astype(np.uint8)
        share = np.max(up, axis=0) / np.maximum(up.sum(axis=0), 1e-6)
        conf = cfg.confidence_low + (cfg.confidence_high - cfg.confidence_low) * share
        return scores, labels, conf.astype(np.float32)

    def stages(self, image: GroundTruthImage, output_size: tuple[int, int] | None = None
               ) -> ClipStages:
        """Every stage of one image at ``output_size`` (H, W) (default: the image's size).

        Raises:
            ClassSpaceError: The noise has another number of classes than the image's world.
        """
        if image.num_classes != self.num_classes:
            raise ClassSpaceError(
                f'image {image.key} is from a {image.class_space} world ({image.num_classes} '
                f'classes), but the realistic CLIP noise has {self.num_classes} classes; use a '
                f'noise file with class_space: {image.class_space}')
        size = tuple(output_size or image.semantic.shape)
        truth = resize_nearest(image.train_labels(), size)
        entity = world_entities(resize_nearest(image.instance, size),
                                resize_nearest(image.require_region(), size))
        persistent, world_wrong = self._persistent(truth, entity, image.scene, image.key)
        rng = image_rng(self.config.seed, _SALT_VIEW, image.key)
        view = self._view(truth, persistent, rng)
        scores, labels, conf = self.resolve(view, rng)
        wrong = (labels != truth) & (truth != IGNORE_INDEX)
        component = np.where(wrong, RESOLUTION, CORRECT)
        component = np.where(wrong & (labels == view), VIEW, component)
        component = np.where(wrong & (labels == persistent) & world_wrong, PERSISTENT,
                             component).astype(np.uint8)
        return ClipStages(truth, persistent, view, labels, conf, component, entity, scores)

    def label_image(self, image: GroundTruthImage, output_size: tuple[int, int] | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (H, W) labels (training ids; every pixel a class) and float32 (H, W)
        confidence in [0, 1] of one image at ``output_size`` (default: the image's size)."""
        stages = self.stages(image, output_size)
        return stages.labels, stages.confidence

    def predict(self, images: Sequence[GroundTruthImage],
                output_size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (B, H, W) labels and float32 (B, H, W) confidences (see :meth:`label_image`)."""
        parts = [self.label_image(image, output_size) for image in images]
        return np.stack([p[0] for p in parts]), np.stack([p[1] for p in parts])

    def __call__(self, images: Sequence[GroundTruthImage],
                 output_size: tuple[int, int] | None = None) -> DenseClipOutput:
        """A ``DenseClipOutput`` (``simulated=True``), tensors on the CPU: ``labels`` (B, H, W)
        int64, ``confidence`` float32; ``features``/``logits`` are NOT CLIP embeddings: the
        per-token class histogram of the labels (B, C, *patch_grid), L2-normalized resp.
        mapped to [-1, 1]."""
        from cns_ros.teachers.simulated_clip import dense_output, images_class_space

        labels, conf = self.predict(images, output_size)
        return dense_output(labels, conf, self.config.patch_grid, images_class_space(images))
