"""SPVCNN, CLIP2Scene's nuScenes 3D network (reference A4.1), on the sparse backend layer.

A voxel branch (a sparse U-Net) and a point branch (one feature per input point) exchange
features three times (:mod:`cns_ros.models.point_voxel`: points -> voxels by the mean,
voxels -> points by trilinear interpolation between voxel centres). Widths
``planes = cs = (32, 32, 64, 128, 256, 256, 128, 96, 96)``, 2 residual blocks per stage:

- stem: 2x (k3 submanifold conv + BN + ReLU), ``in -> cs0 -> cs0``: voxels ``x0`` (level 0);
  ``z0 = devox(x0)`` (cs0 per point);
- encoder stage l = 1..4 on ``vox(x0, z0)``: k2/s2 conv + BN + ReLU (width kept), then
  residual blocks to ``cs_l``: ``x1 .. x4`` (level l);
- ``z1 = devox(x4) + MLP(z0)`` (cs0 -> cs4); the decoder starts from ``vox(x4, z1)``;
- decoder stage 1..4: k2/s2 transposed conv + BN + ReLU to ``cs_{4+i}``, concatenation with
  ``x3, x2, x1, x0``, residual blocks; ``z2 = devox(y2) + MLP(z1)`` (level 2, cs4 -> cs6),
  the third stage starts from ``vox(y2, z2)``; ``z3 = devox(y4) + MLP(z2)`` (level 0,
  cs6 -> cs8). Each MLP is Linear + BN + ReLU; ``vox`` replaces a tensor's features with the
  mean of its points' features;
- latent = ``concat(z1, z2, z3)``: 256 + 128 + 96 = 480 per point (``feature_dim``);
- heads as :class:`cns_ros.models.minkunet.MinkUNet`: ``head`` (CLIP2Scene's
  ``point_mapping_global``) maps the latent to the text dimension D, optional ``local_head``
  (``point_mapping_local``), and the :class:`~cns_ros.models.heads.TextClassifier`.

The reference runs SPVCNN on voxel-quantised points (one "point" per 0.1 m voxel); here the
point branch holds the real input points, so the outputs are per input point, in input order.
BatchNorm momentum 0.1 (the reference's SyncBatchNorm default), dropout p = 0 (omitted).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cns_ros.models.heads import TextClassifier, TextClassifierConfig
from cns_ros.models.minkunet import (
    PointOutput,
    check_input_features,
    check_sizes,
    input_width,
    scaled_width,
)
from cns_ros.models.point_voxel import PointVoxelMaps
from cns_ros.models.sparse import SparseBatch, get_backend, voxelize_batch
from cns_ros.models.sparse_blocks import ConvNormAct, residual_stage

__all__ = ['SPVCNN', 'SPVCNN_PLANES', 'SPVCNNConfig']

SPVCNN_PLANES = (32, 32, 64, 128, 256, 256, 128, 96, 96)
NUM_LEVELS = 4  # stride-2 levels: the spatial shape must be a multiple of 2**4
_FUSION_PLANES = (4, 6, 8)  # planes of z1, z2, z3 (the latent is their concatenation)


@dataclass(frozen=True)
class SPVCNNConfig:
    """Architecture of an SPVCNN (everything a bundle needs to rebuild it).

    Attributes:
        planes: 9 widths: stem, 4 encoder stages, 4 decoder stages (reference ``cs``).
        layers: 8 residual-block counts (4 encoder, 4 decoder stages; reference 2 each).
        channel_scale: Multiplies every width (e.g. 0.125 for tiny test networks).
        input_features: Ordered subset of ``INPUT_FEATURES`` (see
            :func:`cns_ros.models.minkunet.assemble_point_features`); sets the input width.
        out_dim: D, the CLIP text-embedding dimension of the projection head(s).
        local_head: Add CLIP2Scene's second D-dim projection (``PointOutput.local``).
        bn_momentum: Momentum of every BatchNorm (reference: SyncBatchNorm's default 0.1).
        voxel_size: Voxel edge in metres the network was trained with.
        backend: 'auto', 'spconv' or 'torchsparse' (not part of the weights).
        classifier: Text-classifier settings (logit scale, feature normalization).
    """

    planes: tuple[int, ...] = SPVCNN_PLANES
    layers: tuple[int, ...] = (2,) * 8
    channel_scale: float = 1.0
    input_features: tuple[str, ...] = ('intensity',)
    out_dim: int = 512
    local_head: bool = False
    bn_momentum: float = 0.1
    voxel_size: float = 0.1
    backend: str = 'auto'
    classifier: TextClassifierConfig = dataclasses.field(default_factory=TextClassifierConfig)

    def __post_init__(self) -> None:
        check_input_features('SPVCNNConfig', self.input_features)
        for name, size in (('planes', 2 * NUM_LEVELS + 1), ('layers', 2 * NUM_LEVELS)):
            value = getattr(self, name)
            if len(value) != size or min(value) < 1:
                raise ValueError(f'SPVCNNConfig.{name}: expected {size} positive ints, found '
                                 f'{value}')
        check_sizes('SPVCNNConfig', self.channel_scale, self.out_dim, self.voxel_size)

    @property
    def in_channels(self) -> int:
        """Input feature width (sum of the selected features' widths)."""
        return input_width(self.input_features)

    def width(self, channels: int) -> int:
        """A nominal width scaled by `channel_scale` (at least 1)."""
        return scaled_width(channels, self.channel_scale)

    @property
    def feature_dim(self) -> int:
        """Width of the per-point latent ``concat(z1, z2, z3)`` (480 at full width)."""
        return sum(self.width(self.planes[i]) for i in _FUSION_PLANES)


def _point_mlp(in_channels: int, out_channels: int, momentum: float) -> nn.Sequential:
    """Linear + BatchNorm1d + ReLU on per-point features."""
    return nn.Sequential(nn.Linear(in_channels, out_channels),
                         nn.BatchNorm1d(out_channels, momentum=momentum), nn.ReLU())


class SPVCNN(nn.Module):
    """Point-voxel network: points in, per-point text-space features out (module docstring).

    Same interface as :class:`cns_ros.models.minkunet.MinkUNet` (``voxelize``, ``forward`` ->
    :class:`PointOutput`, ``latent_rows``, ``head``, ``local_head``, ``classifier``), so the
    training code, bundles and the segmenter take either.

    Attributes:
        config: The :class:`SPVCNNConfig`.
        classifier: :class:`TextClassifier`; ``classifier(output.features)`` gives (N, C) logits
            once ``classifier.set_text_embeddings`` was called.
    """

    def __init__(self, config: SPVCNNConfig) -> None:
        super().__init__()
        self.config = config
        backend = self.backend_name = get_backend(config.backend).name
        w = [config.width(p) for p in config.planes]
        m = config.bn_momentum
        self.stem = nn.Sequential(
            ConvNormAct(backend, config.in_channels, w[0], 3, 'subm', 'subm0', m),
            ConvNormAct(backend, w[0], w[0], 3, 'subm', 'subm0', m))
        self.down = nn.ModuleList(
            ConvNormAct(backend, w[level], w[level], 2, 'down', f'down{level + 1}', m)
            for level in range(NUM_LEVELS))
        self.encoder = nn.ModuleList(
            residual_stage(backend, w[level], w[level + 1], config.layers[level],
                           f'subm{level + 1}', m) for level in range(NUM_LEVELS))
        up, dec = [], []
        for i in range(NUM_LEVELS):
            level, width = NUM_LEVELS - i, w[NUM_LEVELS + 1 + i]
            up.append(ConvNormAct(backend, w[NUM_LEVELS + i], width, 2, 'up', f'down{level}', m))
            dec.append(residual_stage(backend, width + w[level - 1], width,
                                      config.layers[NUM_LEVELS + i], f'subm{level - 1}', m))
        self.up, self.decoder = nn.ModuleList(up), nn.ModuleList(dec)
        fusion = [w[0], *(w[i] for i in _FUSION_PLANES)]
        self.point_transforms = nn.ModuleList(
            _point_mlp(fusion[i], fusion[i + 1], m) for i in range(len(_FUSION_PLANES)))
        self.head = nn.Linear(config.feature_dim, config.out_dim)
        self.local_head = (nn.Linear(config.feature_dim, config.out_dim) if config.local_head
                           else None)
        self.classifier = TextClassifier(config.out_dim, config.classifier)

    def voxelize(self, points: Sequence[torch.Tensor],
                 features: Sequence[torch.Tensor]) -> SparseBatch:
        """Voxelize B clouds ((N_b, 3) metres, (N_b, in_channels) features) for this network.

        Uses ``config.voxel_size``, per-cloud origins and a spatial shape that is a multiple of
        16; the batch keeps the points for the point branch.
        """
        return voxelize_batch(points, features, self.config.voxel_size,
                              shape_multiple=2 ** NUM_LEVELS)

    def _check(self, batch: SparseBatch) -> None:
        if batch.features.shape[1] != self.config.in_channels:
            raise ValueError(f'batch has {batch.features.shape[1]} input channels, the network '
                             f'expects {self.config.in_channels} ({self.config.input_features})')
        multiple = 2 ** NUM_LEVELS
        if any(size % multiple for size in batch.spatial_shape):
            raise ValueError(f'spatial_shape {batch.spatial_shape} must be a multiple of '
                             f'{multiple}: voxelize with shape_multiple={multiple}')

    def point_features(self, batch: SparseBatch) -> torch.Tensor:
        """(N, feature_dim) per-point latents ``concat(z1, z2, z3)``, rows = input points.

        Args:
            batch: From :func:`cns_ros.models.sparse.voxelize_batch` (which keeps the points)
                with ``shape_multiple=16`` and features from ``assemble_point_features``.
        """
        self._check(batch)
        backend = get_backend(self.backend_name)
        maps = PointVoxelMaps(batch)
        x0 = self.stem(backend.tensor(batch, batch.features))
        z0 = self._to_points(maps, 0, x0)
        x = self._to_voxels(maps, 0, x0, z0)
        skips = [x0]
        for down, stage in zip(self.down, self.encoder, strict=True):
            x = stage(down(x))
            skips.append(x)
        z1 = self._to_points(maps, NUM_LEVELS, x) + self.point_transforms[0](z0)
        y = self._to_voxels(maps, NUM_LEVELS, x, z1)
        y = self._up(1, self._up(0, y, skips[3]), skips[2])
        z2 = self._to_points(maps, 2, y) + self.point_transforms[1](z1)
        y = self._to_voxels(maps, 2, y, z2)
        y = self._up(3, self._up(2, y, skips[1]), skips[0])
        z3 = self._to_points(maps, 0, y) + self.point_transforms[2](z2)
        return torch.cat([z1, z2, z3], 1)

    def _up(self, stage: int, x: Any, skip: Any) -> Any:
        """Decoder `stage`: transposed conv, concatenation with `skip`, residual blocks."""
        backend = get_backend(self.backend_name)
        x = self.up[stage](x)
        joined = torch.cat([backend.features(x), backend.features(skip)], 1)
        return self.decoder[stage](backend.replace(x, joined))

    def _to_points(self, maps: PointVoxelMaps, level: int, x: Any) -> torch.Tensor:
        """(N, C) trilinear point features of the level-`level` backend tensor `x`."""
        backend = get_backend(self.backend_name)
        return maps.level(level, backend.indices(x)).to_points(backend.features(x))

    def _to_voxels(self, maps: PointVoxelMaps, level: int, x: Any, z: torch.Tensor) -> Any:
        """`x` with its features replaced by the mean of its points' (N, C') features `z`."""
        backend = get_backend(self.backend_name)
        return backend.replace(x, maps.level(level, backend.indices(x)).to_voxels(z))

    def latent_rows(self, batch: SparseBatch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Latents to classify and how points find their row: ``(point_features(batch), None)``
        (one row per point; MinkUNet returns voxel rows and ``batch.inverse``)."""
        return self.point_features(batch), None

    def forward(self, batch: SparseBatch) -> PointOutput:
        """Per-point outputs for the points of `batch`.

        Returns:
            :class:`PointOutput` with N = ``len(batch.inverse)`` rows in input order.
        """
        latent = self.point_features(batch)
        local = self.local_head(latent) if self.local_head is not None else None
        return PointOutput(features=self.head(latent), latent=latent, local=local)
