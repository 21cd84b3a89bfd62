"""MinkUNet / Res16UNet family on the sparse backend layer (reference A4.2, B4).

One U-Net skeleton (MinkowskiEngine's MinkUNet and Res16UNet share it):

- stem: k3 (``stem_kernel``) submanifold conv ``in -> stem_width`` + BN + ReLU;
- encoder level l = 1..4: k2/s2 conv (width of the previous level) + BN + ReLU, then
  ``layers[l-1]`` BasicBlocks to ``planes[l-1]``;
- decoder level l = 5..8: k2/s2 transposed conv to ``planes[l-1]`` + BN + ReLU, concatenation
  with the encoder output of the same resolution (the stem output for the last level), then
  ``layers[l-1]`` BasicBlocks to ``planes[l-1]``;
- BasicBlock: k3 conv + BN + ReLU + k3 conv + BN, plus the input (through a 1x1 conv + BN when
  the width changes), ReLU.

Presets (``MINKUNET_PRESETS``): 14A planes (32, 64, 128, 256, 128, 128, 96, 96), layers 1 each;
18A the same planes, layers 2 each; 34C (Res16UNet34C) planes (32, 64, 128, 256, 256, 128, 96,
96), layers (2, 3, 4, 6, 2, 2, 2, 2). The 96-d output (``feature_dim``) is the latent of the SAM
head; a linear projection maps it to the CLIP text dimension D (``out_dim``), compared with the
text embeddings by :class:`cns_ros.models.heads.TextClassifier` (``self.classifier``). An
optional second D-dim head (``local_head``) is CLIP2Scene's separate ``local_feature`` layer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from cns_ros.models.heads import TextClassifier, TextClassifierConfig
from cns_ros.models.sparse import SparseBatch, devoxelize, get_backend, voxelize_batch
from cns_ros.models.sparse_blocks import ConvNormAct, residual_stage

__all__ = ['INPUT_FEATURES', 'MINKUNET_PRESETS', 'MinkUNet', 'MinkUNetConfig', 'PointOutput',
           'assemble_point_features', 'check_input_features', 'check_sizes', 'input_width',
           'scaled_width']

MINKUNET_PRESETS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    '14A': ((32, 64, 128, 256, 128, 128, 96, 96), (1, 1, 1, 1, 1, 1, 1, 1)),
    '18A': ((32, 64, 128, 256, 128, 128, 96, 96), (2, 2, 2, 2, 2, 2, 2, 2)),
    '34C': ((32, 64, 128, 256, 256, 128, 96, 96), (2, 3, 4, 6, 2, 2, 2, 2)),
}
INPUT_FEATURES: dict[str, int] = {'intensity': 1, 'ring': 1, 'xyz': 3, 'rgb': 3}
NUM_LEVELS = 4  # stride-2 levels: coordinates must fit a grid that is a multiple of 2**4


@dataclass(frozen=True)
class MinkUNetConfig:
    """Architecture of a MinkUNet (everything a bundle needs to rebuild it).

    Attributes:
        planes: 8 output widths (4 encoder, 4 decoder levels); None: from the builder's preset.
        layers: 8 BasicBlock counts; None: from the builder's preset.
        stem_width: Width of the stem (INIT_DIM, 32).
        stem_kernel: Stem kernel size (3 in the reference; MinkowskiEngine's examples use 5).
        channel_scale: Multiplies every width (e.g. 0.125 for tiny test networks).
        input_features: Ordered subset of ``INPUT_FEATURES`` (see
            :func:`assemble_point_features`); sets the input width.
        out_dim: D, the CLIP text-embedding dimension of the projection head(s).
        local_head: Add CLIP2Scene's second D-dim projection (``PointOutput.local``).
        bn_momentum: Momentum of the stem / down / up BatchNorms (reference 0.05).
        block_bn_momentum: Momentum of the BatchNorms inside BasicBlocks (reference 0.1).
        voxel_size: Voxel edge in metres the network was trained with.
        backend: 'auto', 'spconv' or 'torchsparse' (not part of the weights).
        classifier: Text-classifier settings (logit scale, feature normalization).
    """

    planes: tuple[int, ...] | None = None
    layers: tuple[int, ...] | None = None
    stem_width: int = 32
    stem_kernel: int = 3
    channel_scale: float = 1.0
    input_features: tuple[str, ...] = ('intensity',)
    out_dim: int = 512
    local_head: bool = False
    bn_momentum: float = 0.05
    block_bn_momentum: float = 0.1
    voxel_size: float = 0.1
    backend: str = 'auto'
    classifier: TextClassifierConfig = dataclasses.field(default_factory=TextClassifierConfig)

    def __post_init__(self) -> None:
        check_input_features('MinkUNetConfig', self.input_features)
        for name in ('planes', 'layers'):
            value = getattr(self, name)
            if value is not None and (len(value) != 2 * NUM_LEVELS or min(value) < 1):
                raise ValueError(f'MinkUNetConfig.{name}: expected {2 * NUM_LEVELS} '
                                 f'positive ints, found {value}')
        if self.stem_kernel % 2 == 0 or self.stem_kernel < 1:
            raise ValueError(f'MinkUNetConfig.stem_kernel must be odd, found '
                             f'{self.stem_kernel}')
        check_sizes('MinkUNetConfig', self.channel_scale, self.out_dim, self.voxel_size)

    def with_preset(self, preset: str) -> MinkUNetConfig:
        """This config with `planes` / `layers` taken from a preset where they are None."""
        planes, layers = MINKUNET_PRESETS[preset]
        return dataclasses.replace(self, planes=self.planes or planes,
                                   layers=self.layers or layers)

    @property
    def in_channels(self) -> int:
        """Input feature width (sum of the selected features' widths)."""
        return input_width(self.input_features)

    def width(self, channels: int) -> int:
        """A nominal width scaled by `channel_scale` (at least 1)."""
        return scaled_width(channels, self.channel_scale)

    @property
    def feature_dim(self) -> int:
        """Width of the backbone output / SAM-head latent (96 at full width)."""
        if self.planes is None:
            raise ValueError('MinkUNetConfig.planes is unset: use with_preset() or a builder')
        return self.width(self.planes[-1])


@dataclass(frozen=True, eq=False)
class PointOutput:
    """Per-point outputs of a 3D network (rows follow the input points, batch concatenated).

    Attributes:
        features: (N, D) float projection to the text space, for classification.
        latent: (N, feature_dim) float backbone features, for the SAM-projection head.
        local: (N, D) float second projection (``local_head``), else None.
    """

    features: torch.Tensor
    latent: torch.Tensor
    local: torch.Tensor | None = None


def input_width(names: Sequence[str]) -> int:
    """Input feature width of a 3D network: the sum of the named features' widths."""
    return sum(INPUT_FEATURES[name] for name in names)


def scaled_width(channels: int, channel_scale: float) -> int:
    """A nominal layer width times ``channel_scale``, rounded, at least 1."""
    return max(1, round(channels * channel_scale))


def check_sizes(owner: str, channel_scale: float, out_dim: int, voxel_size: float) -> None:
    """Raise ValueError unless a 3D network config's scale, output width and voxel are > 0."""
    if not channel_scale > 0 or out_dim < 1 or not voxel_size > 0:
        raise ValueError(f'{owner}: channel_scale, out_dim and voxel_size must be > 0')


def check_input_features(owner: str, names: Sequence[str]) -> None:
    """Raise ValueError unless `names` are distinct keys of ``INPUT_FEATURES`` (at least one).

    Args:
        owner: The config class, for the message.
        names: The configured input features.
    """
    unknown = [name for name in names if name not in INPUT_FEATURES]
    if unknown or not names or len(set(names)) != len(names):
        raise ValueError(f'{owner}.input_features: expected distinct names from '
                         f'{tuple(INPUT_FEATURES)}, found {names}')


def assemble_point_features(columns: Mapping[str, Any], names: Sequence[str], *,
                            intensity_max: float = 255.0, num_rings: int = 32,
                            xyz_scale: float = 50.0) -> torch.Tensor:
    """Build the (N, C) float32 network input from named point columns.

    Args:
        columns: Arrays or tensors with N rows: 'intensity' (N,) raw 0..intensity_max,
            'ring' (N,) beam index 0..num_rings-1, 'xyz' (N, 3) metres (or 'x', 'y', 'z'),
            'rgb' (N, 3) 0..255.
        names: Ordered subset of ``INPUT_FEATURES``.
        intensity_max: Intensity scale (nuScenes: 255) -> intensity / intensity_max.
        num_rings: Beams (nuScenes HDL-32E: 32) -> ring / (num_rings - 1) in [0, 1].
        xyz_scale: Metres -> xyz / xyz_scale (about [-1, 1] within 50 m).

    Returns:
        (N, C) float32 tensor on the device of the first tensor column (CPU for numpy).
        rgb is mapped to [-1, 1] as rgb / 127.5 - 1 (CLIP2Scene's ScanNet input).
    """
    parts = []
    for name in names:
        if name not in INPUT_FEATURES:
            raise ValueError(f'unknown input feature {name!r}; expected {tuple(INPUT_FEATURES)}')
        if name == 'xyz' and 'xyz' not in columns and all(a in columns for a in 'xyz'):
            value = torch.stack([_as_tensor(columns[a], a).reshape(-1) for a in 'xyz'], 1)
        elif name not in columns:
            raise KeyError(f'input feature {name!r} needs column {name!r}; found '
                           f'{sorted(columns)}')
        else:
            value = _as_tensor(columns[name], name)
        value = value.to(torch.float32).reshape(value.shape[0], INPUT_FEATURES[name])
        if name == 'intensity':
            value = value / intensity_max
        elif name == 'ring':
            value = value / max(num_rings - 1, 1)
        elif name == 'xyz':
            value = value / xyz_scale
        else:
            value = value / 127.5 - 1.0
        parts.append(value)
    if len({p.shape[0] for p in parts}) > 1:
        raise ValueError(f'feature columns differ in length: {[p.shape[0] for p in parts]}')
    return parts[0].contiguous() if len(parts) == 1 else torch.cat(parts, 1)  # a new tensor


#: Named columns after x, y, z of the point layouts the datasets produce, by array width:
#: nuScenes (x, y, z, intensity[, ring]) and RGB-D scans such as ScanNet (x, y, z, r, g, b).
POINT_LAYOUTS: dict[int, tuple[str, ...]] = {4: ('intensity',), 5: ('intensity', 'ring'),
                                             6: ('rgb',)}


def point_columns(points: Any) -> dict[str, Any]:
    """Named input columns of an (N, 4 | 5 | 6) point array or tensor (:data:`POINT_LAYOUTS`):
    'xyz' (N, 3) and 'intensity' + 'ring' (LiDAR) or 'rgb' (N, 3) (RGB-D); slices, no copy."""
    width = int(points.shape[1]) if points.ndim == 2 else -1
    if width not in POINT_LAYOUTS:
        raise ValueError(f'points: expected (N, 4), (N, 5) (x, y, z, intensity[, ring]) or '
                         f'(N, 6) (x, y, z, r, g, b), found {tuple(points.shape)}')
    if width == 6:
        return {'xyz': points[:, :3], 'rgb': points[:, 3:6]}
    columns = {'xyz': points[:, :3], 'intensity': points[:, 3]}
    if width == 5:
        columns['ring'] = points[:, 4]
    return columns


def _as_tensor(value: Any, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    array = np.asarray(value)
    if array.dtype.kind not in 'biuf':
        raise ValueError(f'column {name!r} must be numeric, found dtype {array.dtype}')
    return torch.from_numpy(np.ascontiguousarray(array))


class MinkUNet(nn.Module):
    """Sparse U-Net: voxels in, per-point text-space features out (see the module docstring).

    Attributes:
        config: The resolved :class:`MinkUNetConfig` (planes and layers set).
        classifier: :class:`TextClassifier`; ``classifier(output.features)`` gives (N, C) logits
            once ``classifier.set_text_embeddings`` was called.
    """

    def __init__(self, config: MinkUNetConfig) -> None:
        super().__init__()
        if config.planes is None or config.layers is None:
            raise ValueError('MinkUNetConfig.planes / layers are unset: build through '
                             'cns_ros.models.build or call config.with_preset(...)')
        self.config = config
        backend = self.backend_name = get_backend(config.backend).name
        planes = [config.width(p) for p in config.planes]
        stem = config.width(config.stem_width)
        stem_key = 'subm0' if config.stem_kernel == 3 else 'stem'
        self.stem = ConvNormAct(backend, config.in_channels, stem, config.stem_kernel, 'subm',
                                stem_key, config.bn_momentum)
        down, enc, up, dec = [], [], [], []
        widths = [stem, *planes[:NUM_LEVELS]]  # encoder output width per resolution level
        for level in range(NUM_LEVELS):
            down.append(ConvNormAct(backend, widths[level], widths[level], 2, 'down',
                                    f'down{level + 1}', config.bn_momentum))
            enc.append(residual_stage(backend, widths[level], planes[level],
                                      config.layers[level], f'subm{level + 1}',
                                      config.block_bn_momentum))
        previous = planes[NUM_LEVELS - 1]
        for i in range(NUM_LEVELS):
            level, width = NUM_LEVELS - i, planes[NUM_LEVELS + i]
            up.append(ConvNormAct(backend, previous, width, 2, 'up', f'down{level}',
                                  config.bn_momentum))
            dec.append(residual_stage(backend, width + widths[level - 1], width,
                                      config.layers[NUM_LEVELS + i], f'subm{level - 1}',
                                      config.block_bn_momentum))
            previous = width
        self.down, self.encoder = nn.ModuleList(down), nn.ModuleList(enc)
        self.up, self.decoder = nn.ModuleList(up), nn.ModuleList(dec)
        self.head = nn.Linear(previous, config.out_dim)
        self.local_head = nn.Linear(previous, config.out_dim) if config.local_head else None
        self.classifier = TextClassifier(config.out_dim, config.classifier)

    def voxelize(self, points: Sequence[torch.Tensor],
                 features: Sequence[torch.Tensor]) -> SparseBatch:
        """Voxelize B clouds ((N_b, 3) metres, (N_b, in_channels) features) for this network.

        Uses ``config.voxel_size``, per-cloud origins and a spatial shape that is a multiple of
        16, as :meth:`forward` requires.
        """
        return voxelize_batch(points, features, self.config.voxel_size,
                              shape_multiple=2 ** NUM_LEVELS)

    def voxel_features(self, batch: SparseBatch) -> torch.Tensor:
        """(V, feature_dim) backbone features of the voxels of `batch`."""
        if batch.features.shape[1] != self.config.in_channels:
            raise ValueError(f'batch has {batch.features.shape[1]} input channels, the network '
                             f'expects {self.config.in_channels} ({self.config.input_features})')
        multiple = 2 ** NUM_LEVELS
        if any(size % multiple for size in batch.spatial_shape):
            raise ValueError(f'spatial_shape {batch.spatial_shape} must be a multiple of '
                             f'{multiple}: voxelize with shape_multiple={multiple}')
        backend = get_backend(self.backend_name)
        x = self.stem(backend.tensor(batch, batch.features))
        skips = [x]
        for down, stage in zip(self.down, self.encoder, strict=True):
            x = stage(down(x))
            skips.append(x)
        for i, (up, stage) in enumerate(zip(self.up, self.decoder, strict=True)):
            x = up(x)
            skip = backend.features(skips[NUM_LEVELS - 1 - i])
            x = stage(backend.replace(x, torch.cat([backend.features(x), skip], 1)))
        return backend.features(x)

    def latent_rows(self, batch: SparseBatch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Latents to classify and how points find their row: the (V, feature_dim) voxel
        latents and ``batch.inverse``, the (N,) int64 row of each point (a network with
        per-point latents returns None instead)."""
        return self.voxel_features(batch), batch.inverse

    def forward(self, batch: SparseBatch) -> PointOutput:
        """Per-point outputs for the points of `batch` (through ``batch.inverse``).

        Args:
            batch: From :func:`cns_ros.models.sparse.voxelize_batch` with
                ``shape_multiple=16`` and features from :func:`assemble_point_features`.

        Returns:
            :class:`PointOutput` with N = ``len(batch.inverse)`` rows.
        """
        latent = self.voxel_features(batch)
        features = self.head(latent)
        local = self.local_head(latent) if self.local_head is not None else None
        return PointOutput(features=devoxelize(features, batch.inverse),
                           latent=devoxelize(latent, batch.inverse),
                           local=None if local is None else devoxelize(local, batch.inverse))
