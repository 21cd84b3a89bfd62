"""Measurements of simulated teachers against the calibration targets of teacher_noise.md 7.

Meters accumulate statistics image by image and report them as plain dicts; they count the
classes of a class space (``space``: nuScenes-16, the default, or scannet20). The targets are the
ranges of teacher_noise.md section 7 per class space (:mod:`cns_ros.teachers.calibration_targets`,
re-exported here). Used by ``benchmarks/bench_teacher_calibration.py`` and the tests.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cns_ros.metrics import confusion_matrix, iou_per_class
from cns_ros.teachers.calibration_targets import (
    CLASS_TARGETS,
    INDOOR_CLASS_TARGETS,
    INDOOR_TARGETS,
    STUFF_MASK_CLASSES,
    TARGETS,
    Target,
    targets,
)
from cns_ros.teachers.class_space import NUSCENES16, class_space
from cns_ros.teachers.realistic_clip import PERSISTENT, RESOLUTION, VIEW, ClipStages
from cns_ros.teachers.refine import refine_labels
from cns_ros.teachers.synthetic_truth import NUM_CLASSES
from cns_ros.vocabulary import IGNORE_INDEX

__all__ = ['CLASS_TARGETS', 'INDOOR_CLASS_TARGETS', 'INDOOR_TARGETS', 'TARGETS', 'ClipMeter',
           'LinearProbe', 'SamMeter', 'Target', 'TwoFoldProbe', 'VotingMeter',
           'linear_probe_miou', 'miou_percent', 'targets']


def _confusion(classes: int) -> np.ndarray:
    return np.zeros((classes, classes + 1), np.int64)


_BAND_EDGES = (0.25, 0.5, 1.0, 2.0)  # patches
_BAND_LABELS = ('<0.25', '0.25-0.5', '0.5-1', '1-2', '>2')


def _boundary_distance(labels: np.ndarray) -> np.ndarray:
    """float32 (H, W) distance (px) of each pixel to the nearest pixel whose 4-neighbour has
    another label."""
    import cv2

    boundary = np.zeros(labels.shape, dtype=bool)
    boundary[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    boundary[1:] |= labels[1:] != labels[:-1]
    return cv2.distanceTransform((~boundary).astype(np.uint8), cv2.DIST_L2, 3)


def miou_percent(confusion: np.ndarray) -> tuple[float, list[float]]:
    """mIoU over the classes present and the per-class IoU (NaN if absent), percent."""
    iou = iou_per_class(confusion)
    return float(100 * np.nanmean(iou)), [float(100 * v) for v in iou]


@dataclass
class ClipMeter:
    """Statistics of :class:`~cns_ros.teachers.realistic_clip.RealisticClip` stages (of images
    of class space ``space``)."""

    patch_grid: tuple[int, int] = (14, 26)
    space: str = NUSCENES16
    confusion: np.ndarray | None = None
    components: np.ndarray = field(default_factory=lambda: np.zeros(4, np.int64))
    band_distances: list[np.ndarray] = field(default_factory=list)
    band_errors: np.ndarray = field(default_factory=lambda: np.zeros(len(_BAND_EDGES) + 1))
    band_pixels: np.ndarray = field(default_factory=lambda: np.zeros(len(_BAND_EDGES) + 1))
    context_wrong: int = 0
    observations: dict[tuple[str, int], list[tuple[str, int, int]]] = field(
        default_factory=lambda: defaultdict(list))

    def __post_init__(self) -> None:
        self.classes = class_space(self.space).num_classes
        if self.confusion is None:
            self.confusion = _confusion(self.classes)

    def add(self, stages: ClipStages, scene: str, key: str, min_pixels: int = 200) -> None:
        """Add one image's stages (``scene`` / ``key`` identify entities and views; entities
        of at least ``min_pixels`` pixels enter the cross-view check)."""

        truth, labels, classes = stages.truth, stages.labels, self.classes
        self.confusion += confusion_matrix(truth, labels, classes)
        self.components += np.bincount(stages.component.reshape(-1), minlength=4)[:4]
        valid = truth != IGNORE_INDEX
        near_truth = np.minimum(np.digitize(_boundary_distance(truth) / (
            truth.shape[0] / self.patch_grid[0]), _BAND_EDGES), len(_BAND_EDGES))
        self.band_errors += np.bincount(near_truth[valid], (labels != truth)[valid],
                                        len(_BAND_EDGES) + 1)
        self.band_pixels += np.bincount(near_truth[valid], minlength=len(_BAND_EDGES) + 1)
        counts = np.bincount(truth[truth != IGNORE_INDEX], minlength=classes)
        top = np.argsort(-counts[:classes], kind='stable')[:3]
        wrong = (labels != truth) & (truth != IGNORE_INDEX)
        self.context_wrong += int(np.isin(labels[wrong], top).sum())
        ids, inverse = np.unique(stages.entity, return_inverse=True)
        inverse = inverse.reshape(-1)
        for k in np.flatnonzero((ids >= 0) & (np.bincount(inverse) >= min_pixels)).tolist():
            pix = inverse == k
            true = np.bincount(truth.reshape(-1)[pix], minlength=256).argmax()
            said = np.bincount(labels.reshape(-1)[pix], minlength=classes).argmax()
            if true != IGNORE_INDEX:
                self.observations[(scene, int(ids[k]))].append((key, int(true), int(said)))

    def add_band(self, truth: np.ndarray, resolved: np.ndarray) -> None:
        """Add the resolution step alone on one image: ``resolved`` = the teacher's
        ``resolve`` of the ground truth (sky filled with the teacher's sky classes); its
        errors are the boundary band."""
        patch = truth.shape[0] / self.patch_grid[0]
        wrong = (resolved != truth) & (truth != IGNORE_INDEX)
        self.band_distances.append(_boundary_distance(truth)[wrong] / patch)

    def cross_view(self) -> dict[str, float]:
        """Over entities seen in >= 2 images: P(same wrong class in another view | wrong in
        one), P(wrong in another view | wrong in one), and pairs counted."""
        same = wrong_again = pairs = 0
        for views in self.observations.values():
            for a, (_, true_a, said_a) in enumerate(views):
                if said_a == true_a:
                    continue
                for b, (_, _, said_b) in enumerate(views):
                    if a != b:
                        pairs += 1
                        same += said_b == said_a
                        wrong_again += said_b != true_a
        return {'same_wrong_class': same / max(pairs, 1),
                'wrong_again': wrong_again / max(pairs, 1), 'pairs': pairs}

    def result(self) -> dict[str, Any]:
        """The measured statistics (percent for mIoU, IoU and accuracy)."""
        miou, per_class = miou_percent(self.confusion)
        wrong = max(int(self.components[1:].sum()), 1)
        band = np.concatenate(self.band_distances) if self.band_distances else np.zeros(1)
        names = class_space(self.space).names
        return {
            'clip_miou': miou, 'clip_accuracy': float(
                100 * np.trace(self.confusion[:, :self.classes]) / max(self.confusion.sum(), 1)),
            'per_class_iou': dict(zip(names, per_class, strict=True)),
            'persistent_share': float(self.components[PERSISTENT] / wrong),
            'view_share': float(self.components[VIEW] / wrong),
            'resolution_share': float(self.components[RESOLUTION] / wrong),
            'boundary_band_patches': float(np.percentile(band, 90)) if band.size else 0.0,
            'error_rate_by_boundary_distance': {
                label: float(e / max(n, 1)) for label, e, n in zip(
                    _BAND_LABELS, self.band_errors, self.band_pixels, strict=True)},
            'context_share': self.context_wrong / wrong, 'cross_view': self.cross_view()}


@dataclass
class SamMeter:
    """Statistics of simulated SAM masks against the ground truth (of class space ``space``)."""

    space: str = NUSCENES16
    masks_per_image: list[int] = field(default_factory=list)
    coverage: list[float] = field(default_factory=list)
    overlap: list[float] = field(default_factory=list)
    purity_sum: np.ndarray = field(default_factory=lambda: np.zeros((2, 5)))
    crossing: int = 0
    islands: int = 0
    small: int = 0
    total: int = 0
    objects: int = 0
    nested: int = 0
    #: result key (``road``, ``wall``, ...) -> per image with that class, its masks of that class
    stuff: dict[str, list[int]] = field(default_factory=dict)

    #: Mask-area bins (fraction of the image) of the purity-by-size breakdown.
    area_bins: tuple[float, ...] = (0.001, 0.005, 0.02, 0.1)

    def add(self, masks: np.ndarray, truth: np.ndarray, levels: tuple[str, ...] = (),
            instances: np.ndarray | None = None) -> None:
        """Add one image: (M, H, W) bool masks, (H, W) truth (255 = no class), and, for the
        nesting statistic, each mask's level and instance."""
        import cv2

        counts = masks.sum(axis=0)
        covered = int((counts > 0).sum())
        self.masks_per_image.append(len(masks))
        self.coverage.append(covered / truth.size)
        self.overlap.append(int((counts > 1).sum()) / max(covered, 1))
        majority = []
        for mask in masks:
            area = mask.sum() / mask.size
            self.total += 1
            self.small += area < 0.005
            n, _ = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
            self.islands += n - 1 > 1
            lab = truth[mask]
            lab = lab[lab != IGNORE_INDEX]
            if not lab.size:
                continue
            hist = np.bincount(lab, minlength=class_space(self.space).num_classes)
            bin_ = int(np.digitize(area, self.area_bins))
            self.purity_sum[:, bin_] += (hist.max(), lab.size)
            self.crossing += hist.max() / lab.size < 0.9
            majority.append(int(hist.argmax()))
        names = class_space(self.space).names
        for key, name in STUFF_MASK_CLASSES[self.space].items():
            if np.any(truth == names.index(name)):
                self.stuff.setdefault(key, []).append(majority.count(names.index(name)))
        if instances is not None and len(levels):
            level = np.array(levels)
            wholes, parts = set(instances[level == 'whole']), set(instances[level == 'part'])
            self.objects += len(wholes | parts)
            self.nested += len(wholes & parts)

    def result(self) -> dict[str, Any]:
        """The measured statistics."""
        purity = self.purity_sum[0] / np.maximum(self.purity_sum[1], 1)
        edges = ('<0.1%', '0.1-0.5%', '0.5-2%', '2-10%', '>10%')
        return {
            'sam_masks_per_image': float(np.median(self.masks_per_image)),
            'sam_masks_per_image_mean': float(np.mean(self.masks_per_image)),
            'sam_coverage': float(np.mean(self.coverage)),
            'sam_overlap': float(np.mean(self.overlap)),
            'sam_purity': float(self.purity_sum[0].sum() / max(self.purity_sum[1].sum(), 1)),
            'sam_purity_by_area': dict(zip(edges, purity.tolist(), strict=True)),
            'sam_crossing': self.crossing / max(self.total, 1),
            'sam_islands': self.islands / max(self.total, 1),
            'sam_small_share': self.small / max(self.total, 1),
            'sam_nesting': self.nested / max(self.objects, 1),
            **{f'sam_{key}_masks': float(np.median(self.stuff[key])) if self.stuff.get(key)
               else 0.0 for key in STUFF_MASK_CLASSES[self.space]}}


@dataclass
class VotingMeter:
    """mIoU of a labeler before and after majority voting in SAM masks, for both orders
    (``classes``: C of the class space)."""

    classes: int = NUM_CLASSES
    before: np.ndarray | None = None
    after: dict[str, np.ndarray] | None = None

    def __post_init__(self) -> None:
        self.before = _confusion(self.classes) if self.before is None else self.before
        if self.after is None:
            self.after = {order: _confusion(self.classes)
                          for order in ('area_descending', 'area_ascending')}

    def add(self, labels: np.ndarray, masks: np.ndarray, truth: np.ndarray) -> None:
        """Add one image: (H, W) labeler labels, (M, H, W) masks, (H, W) truth."""
        self.before += confusion_matrix(truth, labels, self.classes)
        for order, confusion in self.after.items():
            refined = refine_labels(labels, masks, order=order, ignore_index=IGNORE_INDEX)[0]
            confusion += confusion_matrix(truth, refined, self.classes)

    def result(self) -> dict[str, float]:
        """mIoU before, after (per order) and the gains, percent points."""
        base = miou_percent(self.before)[0]
        out = {'labeler_miou': base}
        for order, confusion in self.after.items():
            out[f'refined_miou_{order}'] = miou_percent(confusion)[0]
            out[f'gain_{order}'] = out[f'refined_miou_{order}'] - base
        return out


@dataclass
class LinearProbe:
    """A linear class probe fitted from streamed samples: ridge regression of standardized
    features onto one-hot classes (0..C-1, C = ``classes``), prediction by argmax. Only
    sufficient statistics are kept, so every embedding cell of every image can be used."""

    ridge: float = 1.0
    classes: int = NUM_CLASSES
    _xtx: np.ndarray | None = None
    _xty: np.ndarray | None = None
    _sum: np.ndarray | None = None
    _ysum: np.ndarray | None = None
    _n: int = 0
    _weights: np.ndarray | None = None
    _mean: np.ndarray | None = None
    _std: np.ndarray | None = None
    confusion: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.confusion = _confusion(self.classes) if self.confusion is None else self.confusion

    def add_train(self, x: np.ndarray, y: np.ndarray) -> None:
        """Add (N, K) features with (N,) classes 0..C-1."""
        x = x.astype(np.float64)
        target = np.eye(self.classes)[y]
        if self._xtx is None:
            k = x.shape[1]
            self._xtx, self._xty = np.zeros((k, k)), np.zeros((k, self.classes))
            self._sum, self._ysum = np.zeros(k), np.zeros(self.classes)
        self._xtx += x.T @ x
        self._xty += x.T @ target
        self._sum += x.sum(axis=0)
        self._ysum += target.sum(axis=0)
        self._n += len(x)

    def fit(self) -> None:
        """Solve the ridge regression on the standardized features (plus a bias)."""
        n, mean = self._n, self._sum / self._n
        cov = self._xtx - n * np.outer(mean, mean)
        std = np.sqrt(np.maximum(np.diag(cov) / n, 0.0)) + 1e-6
        k = len(mean)
        gram = np.zeros((k + 1, k + 1))
        gram[:k, :k] = cov / np.outer(std, std)
        gram[k, k] = n
        rhs = np.zeros((k + 1, self.classes))
        rhs[:k] = (self._xty - np.outer(mean, self._ysum)) / std[:, None]
        rhs[k] = self._ysum
        self._weights = np.linalg.solve(gram + self.ridge * np.eye(k + 1), rhs)
        self._mean, self._std = mean, std

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` has run."""
        return self._weights is not None

    def add_test(self, x: np.ndarray, y: np.ndarray) -> None:
        """Score (N, K) features against (N,) classes (after :meth:`fit`)."""
        z = (x.astype(np.float64) - self._mean) / self._std
        pred = np.argmax(z @ self._weights[:-1] + self._weights[-1], axis=1)
        self.confusion += confusion_matrix(y, pred, self.classes)

    def miou(self) -> float:
        """Test mIoU over the classes present, percent."""
        return miou_percent(self.confusion)[0]


@dataclass
class TwoFoldProbe:
    """A linear probe scored two-fold: cells are added with their fold (0 or 1, e.g. by
    scene); each fold's probe is fitted on every cell of its fold and scored on every
    ``stride``-th cell of the other fold; the mIoU is over both scorings together
    (``classes``: C of the class space)."""

    stride: int = 4
    classes: int = NUM_CLASSES
    probes: tuple[LinearProbe, LinearProbe] | None = None
    held: list[tuple[int, np.ndarray, np.ndarray]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.probes is None:
            self.probes = (LinearProbe(classes=self.classes), LinearProbe(classes=self.classes))

    def add(self, fold: int, x: np.ndarray, y: np.ndarray) -> None:
        """Add (N, K) features with (N,) classes of one fold."""
        self.probes[fold].add_train(x, y)
        self.held.append((fold, x[::self.stride].astype(np.float32), y[::self.stride]))

    def miou(self) -> float:
        """Test mIoU (percent, classes present) over both folds."""
        for probe in self.probes:
            probe.fit()
        confusion = _confusion(self.classes)
        for fold, x, y in self.held:
            probe = self.probes[1 - fold]
            probe.confusion[:] = 0
            probe.add_test(x, y)
            confusion += probe.confusion
        return miou_percent(confusion)[0]


def linear_probe_miou(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                      test_y: np.ndarray, ridge: float = 1.0, classes: int = NUM_CLASSES
                      ) -> float:
    """mIoU (percent, classes present in ``test_y``) of a linear probe: ridge regression of
    standardized (N, K) features onto one-hot classes (0..C-1, C = ``classes``), argmax."""
    mean, std = train_x.mean(axis=0), train_x.std(axis=0) + 1e-6

    def design(x: np.ndarray) -> np.ndarray:
        z = (x - mean) / std
        return np.concatenate([z, np.ones((len(z), 1))], axis=1)

    a = design(train_x.astype(np.float64))
    target = np.eye(classes)[train_y]
    weights = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ target)
    pred = np.argmax(design(test_x.astype(np.float64)) @ weights, axis=1)
    return miou_percent(confusion_matrix(test_y, pred, classes))[0]
