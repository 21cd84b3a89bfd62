"""CLIP2Scene objective (reference/cns_clip2scene.md A5, A9, A10): semantic-driven CE on
paired points, spatial-temporal consistency over multi-sweep super-voxels, switchable
self-training.

Per step (:class:`Clip2SceneMethod.forward`), with P point <-> pixel pairs:

1. ``semantic``: CE(features[pair_point] . T^T / temperature, MaskCLIP label of the pair's
   pixel), mean over the pairs whose label is not 255 (the code: plain CE over raw dot
   products, temperature 1; the paper's Eq. 1 uses 0.5: ``clip2scene.temperature``). Unpaired
   points get no loss (as the code, whose unpaired self-training term is dead code).
2. ``self-training`` (S^3T): from ``self_training_start_epoch`` (code: ``epoch > 10``), per
   batch with probability 0.5 (:class:`~cns_ros.training.cns.TargetSwitch`, a function of
   (seed, step); with ``per_rank_switching``, the ``paper`` setting, of the DDP rank too, as
   the code), the targets of ALL pairs become the network's own argmax labels.
3. ``spatial_temporal``: :func:`supervoxel_fusion_loss` on the 3D net's separate ``local``
   head (the paper: it only worked with a separate linear layer) over the super-voxels of the
   merged, un-augmented multi-sweep cloud (``grid_size`` 0.1 m): per super-voxel, the paired
   entries (at most ``max_per_grid``) are fused by a text-guided softmax attention
   a_i = softmax_i(p_i . t / lambda), t = the text embedding of the super-voxel's first entry's
   MaskCLIP label, f = sum_i a_i p_i; loss 1 - sigmoid(p_i . f). As the code: point features
   only (the paper also fuses pixel features, which the cache does not hold), raw dot
   products, and ``fusion_reduction: code`` averages over grids x ``max_per_grid`` slots with
   empty slots counting 0.5; ``mean`` averages over the real entries (paper). Entries are
   ordered by pair index within a super-voxel (the code's unstable sort picks arbitrarily).
4. ``pair_distillation`` (ScanNet, reference A5.3: one "sweep", no super-voxels):
   mean over pairs of 1 - cos(local head feature of the point, the CLIP teacher's dense feature
   at the pair's pixel), the feature read from the cached patch grid at the patch holding the
   pixel. When the teacher's width differs from the local head's (the simulated teachers' class
   histograms), a fixed random projection (seeded by the run seed, not trained) maps it to the
   head's width, as the code's random-projected MaskCLIP features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from cns_ros.training.balance import ClassBalance
from cns_ros.training.cns import TargetSwitch, cross_entropy, point_input, switch_active
from cns_ros.training.config import Clip2SceneConfig, ModelConfig
from cns_ros.training.data import TrainBatch
from cns_ros.training.loop import LossOutput, Progress
from cns_ros.vocabulary import IGNORE_INDEX


def pair_feature_targets(batch: TrainBatch) -> torch.Tensor:
    """float32 (P, D) the cached CLIP patch feature at each pair's pixel.

    The pixel (row, col) at ``label_size`` (H, W) lies in patch (row * h // H, col * w // W)
    of the (I, D, h, w) feature grid.
    """
    if batch.clip_features is None:
        raise ValueError('clip2scene.pair_distillation needs the CLIP features in the '
                         'per-image cache: make it with pseudo_label --save-2d '
                         '--save-clip-features')
    height, width = batch.label_size
    grid_h, grid_w = batch.clip_features.shape[-2:]
    rows = torch.div(batch.pair_row * grid_h, height, rounding_mode='floor')
    cols = torch.div(batch.pair_col * grid_w, width, rounding_mode='floor')
    return batch.clip_features[batch.pair_image, :, rows, cols]


def random_projection(in_dim: int, out_dim: int, seed: int) -> torch.Tensor:
    """float32 (in_dim, out_dim) fixed Gaussian projection (columns scaled by 1/sqrt(in))."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randn(in_dim, out_dim, generator=generator) / in_dim ** 0.5


def supervoxel_fusion_loss(local: torch.Tensor, grid: torch.Tensor, labels: torch.Tensor,
                           text: torch.Tensor, max_per_grid: int = 8, temperature: float = 1.0,
                           reduction: str = 'code') -> torch.Tensor:
    """Spatial-temporal consistency of point features within super-voxels (module docstring).

    Args:
        local: (M, D) float point features of the entries (pairs).
        grid: (M,) int64 super-voxel id of each entry.
        labels: (M,) int64 teacher label of each entry; 255 entries are left out.
        text: (C, D) float text embeddings.
        max_per_grid: Entries kept per super-voxel, in entry order.
        temperature: lambda of the attention softmax.
        reduction: 'code' (over grids x max_per_grid slots, empty slots 0.5) or 'mean'.

    Returns:
        Scalar (a graph-connected zero without entries).
    """
    keep = labels != IGNORE_INDEX
    if not bool(keep.any()):
        return local.sum() * 0.0
    x_all, grid, labels = local[keep].float(), grid[keep], labels[keep]
    order = torch.sort(grid, stable=True).indices
    _, group, counts = torch.unique_consecutive(grid[order], return_inverse=True,
                                                return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(order), device=grid.device) - starts[group]
    kept = rank < max_per_grid
    order, group, rank = order[kept], group[kept], rank[kept]
    x = x_all[order]
    num_grids = len(counts)
    anchor = labels[order][rank == 0]  # one per super-voxel, in super-voxel order
    t = text.float()[anchor]
    attention = (x * t[group]).sum(dim=1) / temperature
    peak = attention.new_full((num_grids,), -torch.inf).scatter_reduce(
        0, group, attention, reduce='amax')
    weight = torch.exp(attention - peak[group])
    weight = weight / weight.new_zeros(num_grids).index_add(0, group, weight)[group]
    fused = x.new_zeros((num_grids, x.shape[1])).index_add(0, group, weight[:, None] * x)
    inner = torch.sigmoid((fused[group] * x).sum(dim=1))
    if reduction == 'mean':
        return (1.0 - inner).mean()
    slots = num_grids * max_per_grid
    return ((1.0 - inner).sum() + 0.5 * (slots - len(x))) / slots


class Clip2SceneMethod(nn.Module):
    """The CLIP2Scene 3D network with the CLIP2Scene objective as ``forward``.

    Args:
        net3d: MinkUNet built with ``local_head=True`` (``PointOutput.local``) when the
            spatial-temporal term is on.
        config: CLIP2Scene settings; model: voxel size and input features; seed: run seed.
        per_rank_switching: Each DDP rank draws its own self-training switch (the reference
            code; the ``paper`` setting); False: one draw per step shared by all ranks.
    """

    def __init__(self, net3d: nn.Module, config: Clip2SceneConfig, model: ModelConfig,
                 seed: int, per_rank_switching: bool = False) -> None:
        super().__init__()
        self.net3d, self.config, self.model_config = net3d, config, model
        self.self_training = TargetSwitch({'teacher': 1.0 - config.self_training_prob,
                                           'self': config.self_training_prob}, seed, salt=5,
                                          per_rank=per_rank_switching)
        self.balance = ClassBalance(net3d.classifier.num_classes, config.class_balance)
        self.seed = int(seed)
        self.register_buffer('projection', torch.empty(0), persistent=False)

    def pair_distillation(self, local: torch.Tensor, batch: TrainBatch) -> torch.Tensor:
        """Mean over pairs of 1 - cos(local feature, CLIP feature at the pixel)."""
        target = pair_feature_targets(batch).to(local.dtype)
        if target.shape[1] != local.shape[1]:
            if self.projection.shape != (target.shape[1], local.shape[1]):
                self.projection = random_projection(target.shape[1], local.shape[1],
                                                    self.seed).to(local.device)
            target = target @ self.projection.to(local.dtype)
        return (1.0 - F.cosine_similarity(local, target, dim=1)).mean()

    def source(self, progress: Progress) -> str:
        """'teacher' or 'self': the semantic targets of this step."""
        c = self.config
        if not c.self_training or not switch_active(progress, c.self_training_start_epoch,
                                                    c.self_training_start_step):
            return 'teacher'
        return self.self_training.draw(progress.step, rank=progress.rank)

    def forward(self, batch: TrainBatch, progress: Progress) -> LossOutput:
        """Weighted CLIP2Scene loss of one batch; terms reported unweighted."""
        c = self.config
        output = self.net3d(point_input(batch, self.model_config))
        source = self.source(progress)
        terms, weights = {}, {}
        if c.semantic and c.semantic_weight > 0:
            logits = self.net3d.classifier(output.features[batch.pair_point]) / c.temperature
            targets = logits.detach().argmax(dim=1) if source == 'self' else batch.pair_label
            terms['semantic'] = cross_entropy(logits, targets, weight=self.balance(targets))
            weights['semantic'] = c.semantic_weight
        if c.spatial_temporal and c.spatial_temporal_weight > 0:
            if output.local is None or batch.point_grid is None:
                raise ValueError('the spatial-temporal term needs the 3D net\'s local head '
                                 '(model local_head) and super-voxels (grid_size)')
            terms['spatial_temporal'] = supervoxel_fusion_loss(
                output.local[batch.pair_point], batch.point_grid[batch.pair_point],
                batch.pair_label, self.net3d.classifier.text_embeddings, c.max_per_grid,
                c.fusion_temperature, c.fusion_reduction)
            weights['spatial_temporal'] = c.spatial_temporal_weight
        if c.pair_distillation and c.pair_distillation_weight > 0:
            if output.local is None:
                raise ValueError('clip2scene.pair_distillation needs the 3D net\'s local head')
            terms['pair_distillation'] = self.pair_distillation(
                output.local[batch.pair_point], batch)
            weights['pair_distillation'] = c.pair_distillation_weight
        if not terms:
            raise ValueError('every CLIP2Scene loss term is switched off')
        total = sum(weights[k] * v for k, v in terms.items())
        return LossOutput(total=total, terms=terms, info={'source': source})
