"""CNS objective: SAM-refined pseudo-labels, 2D-3D prediction-consistency co-training and
latent-space consistency with SAM features (reference/cns_clip2scene.md B1, B3.2, B5, B6).

Per step (:class:`CNSMethod.forward`):

1. the 3D net (MinkUNet) gives per-point text-space features -> logits at the N points, kept
   at the P point <-> pixel pairs; the 2D net (DeepLabV3, optional) gives per-pixel logits of
   the I camera images (at the cache's ``label_size``);
2. targets (:class:`CoTraining`): during the warm-up, the SAM-refined teacher labels (3D: the
   label of each pair's pixel; 2D: the refined label map). After it, per batch and per network,
   one source is drawn (:class:`TargetSwitch`) from ``teacher_pixel`` (P*_x), ``teacher_point``
   (P*_p: the multi-camera fused point label of the cache), ``pred_2d`` (P^*_x: the 2D net's
   argmax, refined by SAM segments) and ``pred_3d`` (P^*_p: the 3D net's argmax at the pairs,
   refined by SAM segments: the per-segment mode over the pairs that fall in each segment).
   The 'code' rule draws 20/40/40 over {teacher, own, other}; 'paper' 25 % each of the 4.
   Targets for the 2D net from 3D sources are the teacher map with the paired pixels (or, when
   refined, the whole segments holding pairs) overwritten by the point labels, as the code;
3. losses: ``ce_3d`` = CE(pair logits, 3D targets), ``ce_2d`` = CE(pixel logits, 2D targets)
   (ignore 255, mean over the counted entries), ``latent_3d`` = mean over pairs of
   1 - cos(P(point latent), S(SAM embedding at the pixel)) and ``latent_2d`` = mean over the
   SAM grid's valid cells of 1 - cos(I(pixel latent resized to the grid), S(SAM embedding))
   (Eq. 7; P, I, S = :class:`~cns_ros.models.heads.SamProjectionHeads`; the normalisation of
   S(s) in Eq. 7 is a no-op inside a cosine). Total = weighted sum (all weights 1 by default).

Refining predictions needs SAM segments at training time: the optional per-image cache array
``segments`` (see :mod:`cns_ros.training.data`). Without it, predictions are used unrefined and
a warning is given once. Refining by the per-segment mode of a partition equals
:func:`cns_ros.teachers.refine.refine_labels` for non-overlapping masks; with overlapping masks
the vote of a mask is over its visible (not overwritten) part only.

Every random choice is a function of (seed, step) (:class:`TargetSwitch`), so resumed runs
repeat it exactly; all DDP ranks make the same choice, or, with ``per_rank_switching`` (the
``paper`` setting, :mod:`cns_ros.paper`), each rank its own, as the code does.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from cns_ros.models.image_net import normalize_images
from cns_ros.training.balance import ClassBalance
from cns_ros.training.config import CNSConfig, ModelConfig
from cns_ros.training.data import TrainBatch
from cns_ros.training.loop import LossOutput, Progress
from cns_ros.vocabulary import IGNORE_INDEX

if TYPE_CHECKING:
    from cns_ros.models.sparse import SparseBatch

_WARNED: set[str] = set()


def warn_once(key: str, message: str) -> None:
    """``warnings.warn`` the first time ``key`` is seen in this process."""
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, stacklevel=3)


# --- building blocks ------------------------------------------------------------------------

def cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                  ignore_index: int = IGNORE_INDEX,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean CE over the entries whose target is not ``ignore_index`` (0 if there is none).

    Args:
        logits: (M, C) or (B, C, H, W) float.
        targets: (M,) or (B, H, W) int64 class ids, ``ignore_index`` = not counted.
        weight: Optional (C,) class weights; the mean is then weighted (sum w l / sum w).

    Returns:
        Scalar; a graph-connected zero when every target is ignored (F.cross_entropy gives NaN).
    """
    if not bool((targets != ignore_index).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), targets, ignore_index=ignore_index,
                           weight=None if weight is None else weight.float())


def cosine_distance(a: torch.Tensor, b: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Mean of 1 - cos(a, b) along ``dim`` (0 for empty inputs, graph-connected)."""
    if a.numel() == 0:
        return a.sum() * 0.0
    return (1.0 - F.cosine_similarity(a.float(), b.float(), dim=dim, eps=1e-8)).mean()


def segment_mode(labels: torch.Tensor, keys: torch.Tensor, num_classes: int,
                 ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Every entry takes the most common label among the entries with the same key.

    Args:
        labels: (M,) int64 class ids in [0, C) or ``ignore_index`` (does not vote).
        keys: (M,) int64 group ids; entries with a negative key keep their label.
        num_classes: C.

    Returns:
        (M,) int64; ties go to the smallest class id (as ``torch.mode``); groups without a
        voting entry keep their labels.
    """
    grouped = keys >= 0
    if not bool(grouped.any()):
        return labels.clone()
    uniq, group = torch.unique(keys[grouped], return_inverse=True)
    votes = labels[grouped]
    voting = votes != ignore_index
    counts = torch.zeros((len(uniq), num_classes), dtype=torch.int64, device=labels.device)
    flat = group[voting] * num_classes + votes[voting]
    counts.view(-1).index_add_(0, flat, torch.ones_like(flat))
    mode = counts.argmax(dim=1)  # first maximum: the smallest class id
    has_vote = counts.sum(dim=1) > 0
    out = labels.clone()
    out[grouped] = torch.where(has_vote[group], mode[group], votes)
    return out


def refine_dense(labels: torch.Tensor, segments: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Refine (I, H, W) label maps by SAM segments (I, H, W) (0 = no segment): per-segment mode."""
    num = int(segments.max()) + 1 if segments.numel() else 1
    image = torch.arange(len(labels), device=labels.device).view(-1, 1, 1)
    keys = torch.where(segments > 0, image * num + segments, torch.full_like(segments, -1))
    return segment_mode(labels.reshape(-1), keys.reshape(-1), num_classes).view_as(labels)


def pair_segment_keys(batch: TrainBatch) -> torch.Tensor:
    """(P,) int64 (image, segment) key of each pair's pixel, -1 outside every segment."""
    segments = batch.segments
    seg = segments[batch.pair_image, batch.pair_row, batch.pair_col]
    num = int(segments.max()) + 1
    return torch.where(seg > 0, batch.pair_image * num + seg, torch.full_like(seg, -1))


def pixel_keys(batch: TrainBatch) -> torch.Tensor:
    """(P,) int64 flat pixel index (image, row, col) of each pair."""
    height, width = batch.label_size
    return (batch.pair_image * height + batch.pair_row) * width + batch.pair_col


def paint_pairs(base: torch.Tensor, batch: TrainBatch, pair_labels: torch.Tensor,
                num_classes: int, segments: bool) -> torch.Tensor:
    """A copy of (I, H, W) ``base`` with 3D labels written at the paired pixels.

    Pairs sharing a pixel write its mode (deterministic). With ``segments``, every SAM segment
    that holds a pair takes the mode of its pairs' labels (refined 3D labels spread to 2D).
    Ignored (255) pair labels write nothing.
    """
    out = base.clone()
    flat = out.view(-1)
    keys = pixel_keys(batch)
    per_pixel = segment_mode(pair_labels, keys, num_classes)
    ok = per_pixel != IGNORE_INDEX
    flat[keys[ok]] = per_pixel[ok]
    if segments:
        seg_keys = pair_segment_keys(batch)
        refined = segment_mode(pair_labels, seg_keys, num_classes)
        num = int(batch.segments.max()) + 1
        table = torch.full((len(base) * num,), -1, dtype=out.dtype, device=out.device)
        ok = (seg_keys >= 0) & (refined != IGNORE_INDEX)
        table[seg_keys[ok]] = refined[ok]  # every pair of a segment carries the same mode
        image = torch.arange(len(base), device=base.device).view(-1, 1, 1)
        pixel_value = table[(image * num + batch.segments).view(-1)]
        hit = (batch.segments.view(-1) > 0) & (pixel_value >= 0)
        flat[hit] = pixel_value[hit]
    return out


class TargetSwitch:
    """Draws one target source per step from fixed probabilities, as a function of (seed, step)
    (and, with ``per_rank``, of the DDP rank).

    The draw: u = uniform [0, 1) of the generator keyed by (seed, salt, step), the first source
    whose cumulative probability (in ``probabilities`` order) exceeds u. ``per_rank``: ranks
    > 0 key their generator by (seed, salt, step, rank) too, so each rank draws its own source,
    as the reference code (rank 0 keeps the shared stream: a one-process run is the same).

    Args:
        probabilities: Source name -> probability (summing to 1).
        seed: Run seed.
        salt: Separates the streams of different switches (e.g. the 3D and the 2D net).
        per_rank: Each DDP rank draws independently; False: every rank draws rank 0's source.
    """

    def __init__(self, probabilities: Mapping[str, float], seed: int, salt: int,
                 per_rank: bool = False) -> None:
        self.probabilities = dict(probabilities)
        self.seed, self.salt, self.per_rank = int(seed), int(salt), bool(per_rank)

    def draw(self, step: int, available: Sequence[str] | None = None, rank: int = 0) -> str:
        """The source of ``step`` on ``rank``; sources not ``available`` are dropped and the
        rest renormalised (e.g. no 2D network -> no ``pred_2d``)."""
        names = [n for n, p in self.probabilities.items()
                 if p > 0 and (available is None or n in available)]
        if not names:
            raise ValueError(f'no available target source among {self.probabilities} '
                             f'(available: {available})')
        weights = np.array([self.probabilities[n] for n in names], dtype=np.float64)
        key = [self.seed, self.salt, int(step)]
        if self.per_rank and rank > 0:
            key.append(int(rank))
        u = np.random.default_rng(key).random()
        index = int(np.searchsorted(np.cumsum(weights / weights.sum()), u, side='right'))
        return names[min(index, len(names) - 1)]


def switch_active(progress: Progress, start_epoch: int, start_step: int | None) -> bool:
    """Whether a warm-up given in epochs (or steps, when set) is over."""
    if start_step is not None:
        return progress.step >= start_step
    return progress.epoch >= start_epoch


# --- the CNS method -------------------------------------------------------------------------

@dataclass
class _Predictions:
    """Network outputs of one step."""

    pair_logits: torch.Tensor          # (P, C)
    pair_latent: torch.Tensor          # (P, F)
    image_logits: torch.Tensor | None  # (I, C, H, W)
    image_latent: torch.Tensor | None  # (I, 256, h, w)


class CoTraining:
    """Target selection of CNS (module docstring, step 2): the sources and their refinement.

    ``per_rank_switching``: each DDP rank draws its own sources (:class:`TargetSwitch`).
    """

    def __init__(self, config: CNSConfig, seed: int, num_classes: int,
                 per_rank_switching: bool = False) -> None:
        self.config, self.num_classes = config, num_classes
        sources_3d, sources_2d = config.sources()
        self.switch_3d = TargetSwitch(sources_3d, seed, salt=3, per_rank=per_rank_switching)
        self.switch_2d = TargetSwitch(sources_2d, seed, salt=2, per_rank=per_rank_switching)

    def sources(self, progress: Progress, has_2d: bool) -> tuple[str, str]:
        """(3D-net source, 2D-net source) of this step."""
        c = self.config
        if not c.co_training or not switch_active(progress, c.start_epoch, c.start_step):
            return 'teacher_pixel', 'teacher_pixel'
        available = ['teacher_pixel', 'teacher_point', 'pred_3d'] + (['pred_2d'] * has_2d)
        step, rank = progress.step, progress.rank
        return (self.switch_3d.draw(step, available, rank),
                self.switch_2d.draw(step, available, rank) if has_2d else 'teacher_pixel')

    def _can_refine(self, batch: TrainBatch) -> bool:
        if not self.config.refine_predictions:
            return False
        if batch.segments is None:
            warn_once('segments', 'CNS co-training: the per-image cache has no SAM '
                      "'segments', so network predictions are used UNREFINED (add them "
                      'to the cache to refine predictions by SAM)')
            return False
        return True

    @torch.no_grad()
    def pred_3d(self, batch: TrainBatch, out: _Predictions) -> tuple[torch.Tensor, bool]:
        """(P,) the 3D net's argmax at the pairs (refined if configured) and whether refined."""
        labels = out.pair_logits.argmax(dim=1)
        if self.config.refines_3d() and batch.num_images and self._can_refine(batch):
            return segment_mode(labels, pair_segment_keys(batch), self.num_classes), True
        return labels, False

    @torch.no_grad()
    def pred_2d(self, batch: TrainBatch, out: _Predictions) -> torch.Tensor:
        """(I, H, W) the 2D net's argmax (refined by segments if possible)."""
        labels = out.image_logits.argmax(dim=1)
        if self._can_refine(batch):
            labels = refine_dense(labels, batch.segments, self.num_classes)
        return labels

    def targets_3d(self, source: str, batch: TrainBatch, out: _Predictions) -> torch.Tensor:
        """(P,) targets of the 3D net from ``source``."""
        if source == 'teacher_pixel':
            return batch.pair_label
        if source == 'teacher_point':
            return batch.point_label[batch.pair_point]
        if source == 'pred_3d':
            return self.pred_3d(batch, out)[0]
        pred = self.pred_2d(batch, out)
        return pred[batch.pair_image, batch.pair_row, batch.pair_col]

    def targets_2d(self, source: str, batch: TrainBatch, out: _Predictions) -> torch.Tensor:
        """(I, H, W) targets of the 2D net from ``source``."""
        teacher = batch.image_labels
        if source == 'teacher_pixel':
            return teacher
        if source == 'pred_2d':
            return self.pred_2d(batch, out)
        if source == 'teacher_point':
            labels = batch.point_label[batch.pair_point]
            return paint_pairs(teacher, batch, labels, self.num_classes, segments=False)
        labels, refined = self.pred_3d(batch, out)
        return paint_pairs(teacher, batch, labels, self.num_classes, segments=refined)


def point_input(batch: TrainBatch, model: ModelConfig) -> SparseBatch:
    """The 3D network's :class:`~cns_ros.models.sparse.SparseBatch` of a training batch."""
    from cns_ros.models.minkunet import assemble_point_features, point_columns
    from cns_ros.models.sparse import voxelize_batch

    points = batch.points
    features = assemble_point_features(point_columns(points), model.input_features)
    counts = torch.bincount(batch.point_element, minlength=batch.num_elements).tolist()
    if len(counts) > 1 and not bool((batch.point_element[1:] >= batch.point_element[:-1]).all()):
        raise ValueError('points must be grouped by batch element (point_element sorted)')
    return voxelize_batch(points[:, :3].split(counts), features.split(counts),
                          model.voxel_size, shape_multiple=16)


def sample_sam_at_pairs(sam: torch.Tensor, batch: TrainBatch) -> torch.Tensor:
    """(P, K) bilinear samples of per-image (I, K, 64, 64) maps at the paired pixels.

    Each image's map is cropped to its valid region (``sam_valid``) and read as if upsampled
    to ``label_size`` (bilinear, align_corners=False, as the reference), without building the
    upsampled map.
    """
    height, width = batch.label_size
    out = sam.new_zeros((len(batch.pair_image), sam.shape[1]))
    for i in torch.unique(batch.pair_image).tolist():
        rows, cols = (int(v) for v in batch.sam_valid[i])
        sel = batch.pair_image == i
        x = (batch.pair_col[sel].to(sam.dtype) + 0.5) / width * 2.0 - 1.0
        y = (batch.pair_row[sel].to(sam.dtype) + 0.5) / height * 2.0 - 1.0
        grid = torch.stack([x, y], dim=1).view(1, 1, -1, 2)
        crop = sam[i:i + 1, :, :rows, :cols]
        sampled = F.grid_sample(crop, grid, mode='bilinear', padding_mode='border',
                                align_corners=False)
        out[sel] = sampled.view(sam.shape[1], -1).t()
    return out


def latent_loss_2d(image_latent: torch.Tensor, sam: torch.Tensor,
                   valid: torch.Tensor) -> torch.Tensor:
    """Mean over the valid SAM cells of 1 - cos(image latent resized to the cells, SAM).

    Args:
        image_latent: (I, K, h, w) projected 2D latents.
        sam: (I, K, 64, 64) projected SAM embeddings.
        valid: (I, 2) valid (rows, cols) of each embedding grid.
    """
    losses, counts = [], []
    for rows, cols in {tuple(int(v) for v in r) for r in valid.tolist()}:
        sel = (valid[:, 0] == rows) & (valid[:, 1] == cols)
        resized = F.interpolate(image_latent[sel].float(), size=(rows, cols), mode='bilinear',
                                align_corners=False)
        losses.append(cosine_distance(resized, sam[sel, :, :rows, :cols], dim=1))
        counts.append(int(sel.sum()) * rows * cols)
    weights = torch.tensor(counts, dtype=torch.float32, device=sam.device)
    return (torch.stack(losses) * weights).sum() / weights.sum()


class CNSMethod(nn.Module):
    """The CNS networks and heads, with the CNS objective as ``forward``.

    Args:
        net3d: MinkUNet (``forward(SparseBatch) -> PointOutput``, ``classifier``).
        net2d: DeepLabV3Text (``forward(images) -> ImageOutput``, ``classifier``) or None for
            3D-only CNS.
        heads: SamProjectionHeads (``point``, ``image``, ``sam``) or None without the latent
            loss.
        config: CNS settings; model: voxel size and input features; seed: run seed.
        per_rank_switching: Each DDP rank draws its own target sources (the reference code;
            the ``paper`` setting); False: one draw per step shared by all ranks.
    """

    def __init__(self, net3d: nn.Module, net2d: nn.Module | None, heads: nn.Module | None,
                 config: CNSConfig, model: ModelConfig, seed: int,
                 per_rank_switching: bool = False) -> None:
        super().__init__()
        self.net3d, self.net2d, self.heads = net3d, net2d, heads
        self.config, self.model_config = config, model
        self.co_training = CoTraining(config, seed, self.num_classes, per_rank_switching)
        self.balance_3d = ClassBalance(self.num_classes, config.class_balance)
        self.balance_2d = ClassBalance(self.num_classes, config.class_balance)

    @property
    def num_classes(self) -> int:
        """C, the number of classes of the text embeddings."""
        return self.net3d.classifier.num_classes

    def _forward_nets(self, batch: TrainBatch) -> _Predictions:
        output = self.net3d(point_input(batch, self.model_config))
        pair_logits = self.net3d.classifier(output.features[batch.pair_point])
        image_logits = image_latent = None
        if self.net2d is not None:
            if batch.images is None:
                raise ValueError('the 2D network needs images: set data.images: true')
            image_logits, image_latent = self.net2d.logits(normalize_images(batch.images))
        return _Predictions(pair_logits, output.latent[batch.pair_point], image_logits,
                            image_latent)

    def forward(self, batch: TrainBatch, progress: Progress) -> LossOutput:
        """Weighted CNS loss of one batch (module docstring); terms reported unweighted."""
        c = self.config
        out = self._forward_nets(batch)
        has_2d = out.image_logits is not None and batch.image_labels is not None
        source_3d, source_2d = self.co_training.sources(progress, has_2d)
        terms, weights = {}, {}
        if c.ce_3d_weight > 0:
            targets = self.co_training.targets_3d(source_3d, batch, out)
            terms['ce_3d'] = cross_entropy(out.pair_logits, targets,
                                           weight=self.balance_3d(targets))
            weights['ce_3d'] = c.ce_3d_weight
        if has_2d and c.ce_2d_weight > 0:
            targets = self.co_training.targets_2d(source_2d, batch, out)
            terms['ce_2d'] = cross_entropy(out.image_logits, targets,
                                           weight=self.balance_2d(targets))
            weights['ce_2d'] = c.ce_2d_weight
        terms.update(self._latent_terms(batch, out, weights))
        if not terms:
            raise ValueError('every CNS loss term is switched off (or has weight 0)')
        total = sum(weights[k] * v for k, v in terms.items())
        info = {'source_3d': source_3d, 'source_2d': source_2d if has_2d else 'none'}
        return LossOutput(total=total, terms=terms, info=info)

    def _latent_terms(self, batch: TrainBatch, out: _Predictions,
                      weights: dict[str, float]) -> dict[str, torch.Tensor]:
        c = self.config
        if not c.latent or self.heads is None:
            return {}
        if batch.sam_embedding is None:
            warn_once('embedding', 'CNS latent loss: the per-image cache has no SAM '
                      "'embedding' (pseudo_label --save-2d with a SAM teacher); the latent "
                      'terms are off')
            return {}
        sam = self.heads.sam(batch.sam_embedding)
        terms = {}
        if c.latent_3d_weight > 0:
            target = sample_sam_at_pairs(sam, batch)
            terms['latent_3d'] = cosine_distance(self.heads.point(out.pair_latent), target)
            weights['latent_3d'] = c.latent_3d_weight
        if out.image_latent is not None and c.latent_2d_weight > 0:
            projected = self.heads.image(out.image_latent)
            terms['latent_2d'] = latent_loss_2d(projected, sam, batch.sam_valid)
            weights['latent_2d'] = c.latent_2d_weight
        return terms
