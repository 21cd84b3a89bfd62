"""Sparse-network building blocks shared by the sparse U-Nets (MinkUNet, SPVCNN).

Each block takes and returns a backend sparse tensor (:mod:`cns_ros.models.backends`):

- :class:`FeatureNorm`: BatchNorm1d (+ ReLU) on the voxel features;
- :class:`ConvNormAct`: :class:`~cns_ros.models.sparse.SparseConv` -> BatchNorm -> ReLU;
- :class:`BasicBlock`: the residual block of two k3 submanifold convolutions (MinkowskiEngine's
  BasicBlock, SPVCNN's ResidualBlock); a width change goes through a bias-free 1x1 (dense
  ``nn.Linear`` on the voxel features) + BatchNorm;
- :func:`residual_stage`: ``blocks`` BasicBlocks, the first one changing the width.

State-dict keys are those of the modules' attributes (``<path>.0.kernel`` / ``<path>.1.bn.*``
for a ConvNormAct, ``conv1`` / ``norm1`` / ... for a BasicBlock).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cns_ros.models.sparse import SparseConv, get_backend

__all__ = ['BasicBlock', 'ConvNormAct', 'FeatureNorm', 'residual_stage']


class FeatureNorm(nn.Module):
    """BatchNorm1d (and optional ReLU) on the features of a backend sparse tensor."""

    def __init__(self, backend: str, channels: int, momentum: float, relu: bool) -> None:
        super().__init__()
        self.backend_name = backend
        self.bn = nn.BatchNorm1d(channels, momentum=momentum)
        self.relu = relu

    def forward(self, x: Any) -> Any:
        backend = get_backend(self.backend_name)
        out = self.bn(backend.features(x))
        return backend.replace(x, torch.relu(out) if self.relu else out)


class ConvNormAct(nn.Sequential):
    """SparseConv -> BatchNorm -> ReLU."""

    def __init__(self, backend: str, in_channels: int, out_channels: int, kernel_size: int,
                 kind: str, key: str, momentum: float) -> None:
        super().__init__(SparseConv(backend, in_channels, out_channels, kernel_size, kind, key),
                         FeatureNorm(backend, out_channels, momentum, relu=True))


class BasicBlock(nn.Module):
    """Residual block of two k3 submanifold convolutions (expansion 1)."""

    def __init__(self, backend: str, in_channels: int, out_channels: int, key: str,
                 momentum: float) -> None:
        super().__init__()
        self.backend_name = backend
        self.conv1 = SparseConv(backend, in_channels, out_channels, 3, 'subm', key)
        self.norm1 = FeatureNorm(backend, out_channels, momentum, relu=True)
        self.conv2 = SparseConv(backend, out_channels, out_channels, 3, 'subm', key)
        self.norm2 = FeatureNorm(backend, out_channels, momentum, relu=False)
        self.downsample: nn.Module | None = None
        if in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Linear(in_channels, out_channels, bias=False),
                                            nn.BatchNorm1d(out_channels, momentum=momentum))

    def forward(self, x: Any) -> Any:
        backend = get_backend(self.backend_name)
        identity = backend.features(x)
        if self.downsample is not None:
            identity = self.downsample(identity)
        out = self.norm2(self.conv2(self.norm1(self.conv1(x))))
        return backend.replace(out, torch.relu(backend.features(out) + identity))


def residual_stage(backend: str, in_channels: int, out_channels: int, blocks: int, key: str,
                   momentum: float) -> nn.Sequential:
    """`blocks` BasicBlocks ``in -> out``, then ``out -> out``, all with submanifold `key`."""
    modules = [BasicBlock(backend, in_channels if i == 0 else out_channels, out_channels, key,
                          momentum) for i in range(blocks)]
    return nn.Sequential(*modules)
