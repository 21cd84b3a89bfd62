"""Sparse backend layer: voxelization, backend selection, neutral-layout sparse convolutions.

- :func:`voxelize_batch`: a batch of point clouds (torch, metres) -> :class:`SparseBatch`
  (voxel coordinates, mean voxel features, the point -> voxel inverse map).
- :func:`devoxelize`: voxel features -> per-point features through the inverse map.
- :func:`resolve_backend` / :func:`get_backend`: 'spconv' (default), 'torchsparse' (used by
  'auto' when importable), see :mod:`cns_ros.models.backends`.
- :class:`SparseConv`: a bias-free sparse convolution on any backend whose weights are
  initialised in the backend-neutral layout (:mod:`cns_ros.models.layout`), so the same seed
  gives the same network on both backends.
- :func:`neutral_state_dict` / :func:`load_neutral_state_dict`: checkpoint and bundle
  conversion; a state dict saved with one backend loads on the other.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from cns_ros.models.backends import CONV_KINDS, SparseBackend
from cns_ros.models.layout import from_backend_layout, to_backend_layout

__all__ = ['BACKEND_NAMES', 'SparseBatch', 'SparseConv', 'available_backends', 'devoxelize',
           'get_backend', 'load_neutral_state_dict', 'neutral_state_dict', 'resolve_backend',
           'voxelize_batch']

BACKEND_NAMES = ('spconv', 'torchsparse')


@dataclass(frozen=True, eq=False)
class SparseBatch:
    """Voxelized batch of B point clouds (all tensors on one device).

    Attributes:
        coords: (V, 4) int32 ``[batch, i, j, k]``, i, j, k >= 0; rows sorted by batch, then
            lexicographically by (i, j, k). i, j, k index voxels along x, y, z of the points'
            frame, counted from the origin voxel (``origin_index``).
        features: (V, C) float mean of the features of each voxel's points.
        inverse: (N,) int64 voxel row of each input point (points concatenated in batch order).
        point_offsets: (B + 1,) int64; cloud b's points are rows ``[o[b], o[b+1])`` of inverse.
        voxel_offsets: (B + 1,) int64; cloud b's voxels are rows ``[o[b], o[b+1])`` of coords.
        origin_index: (B, 3) int64 global voxel index ``floor(p / voxel_size)`` of each cloud's
            coordinate zero.
        spatial_shape: (X, Y, Z) grid size in voxels, >= every coordinate + 1 and a multiple
            of ``shape_multiple`` (so stride-2 convolutions never drop boundary voxels).
        voxel_size: Voxel edge in metres.
    """

    coords: torch.Tensor
    features: torch.Tensor
    inverse: torch.Tensor
    point_offsets: torch.Tensor
    voxel_offsets: torch.Tensor
    origin_index: torch.Tensor
    spatial_shape: tuple[int, int, int]
    voxel_size: float

    @property
    def batch_size(self) -> int:
        """Number of clouds B."""
        return int(self.point_offsets.shape[0]) - 1

    @property
    def num_voxels(self) -> int:
        """Number of occupied voxels V over the batch."""
        return int(self.coords.shape[0])

    def to(self, device: torch.device | str) -> SparseBatch:
        """Copy of the batch with every tensor on `device`."""
        return replace(self, **{name: getattr(self, name).to(device) for name in (
            'coords', 'features', 'inverse', 'point_offsets', 'voxel_offsets',
            'origin_index')})


def _check_inputs(points: Sequence[torch.Tensor], features: Sequence[torch.Tensor]) -> None:
    if len(points) == 0 or len(points) != len(features):
        raise ValueError(f'need one features tensor per point cloud and at least one cloud, '
                         f'found {len(points)} clouds and {len(features)} feature tensors')
    channels = {int(f.shape[1]) if f.dim() == 2 else -1 for f in features}
    for b, (pts, feats) in enumerate(zip(points, features, strict=True)):
        if pts.dim() != 2 or pts.shape[1] != 3:
            raise ValueError(f'points[{b}]: expected shape (N, 3), found {tuple(pts.shape)}')
        if feats.dim() != 2 or feats.shape[0] != pts.shape[0] or len(channels) != 1:
            raise ValueError(f'features[{b}]: expected shape ({pts.shape[0]}, C) with one C '
                             f'for all clouds, found {tuple(feats.shape)}')
        if not torch.isfinite(pts).all():
            raise ValueError(f'points[{b}]: {int((~torch.isfinite(pts)).any(1).sum())} '
                             f'non-finite points')


def voxelize_batch(points: Sequence[torch.Tensor], features: Sequence[torch.Tensor],
                   voxel_size: float, *, per_sample_origin: bool = True,
                   shape_multiple: int = 16) -> SparseBatch:
    """Group each cloud's points into voxels (one int64 key per point, one ``torch.unique``).

    Args:
        points: B tensors (N_b, 3) float, metres, any frame (a cloud may be empty).
        features: B tensors (N_b, C) float, one row per point.
        voxel_size: Voxel edge in metres, > 0. Voxel indices are ``floor(p / voxel_size)``
            computed in float64 (as :func:`cns_ros.geometry.voxelize` with origin 0).
        per_sample_origin: Subtract each cloud's own minimum index (True) or the batch's
            (False, keeps clouds aligned in one grid).
        shape_multiple: ``spatial_shape`` is rounded up to a multiple of this (2^levels of
            stride-2 convolutions: 16 for MinkUNet).

    Returns:
        :class:`SparseBatch` on the points' device; features keep their dtype.
    """
    if not voxel_size > 0 or not math.isfinite(voxel_size):
        raise ValueError(f'voxel_size must be finite and > 0, found {voxel_size}')
    _check_inputs(points, features)
    device = points[0].device
    counts = torch.tensor([len(p) for p in points], dtype=torch.int64, device=device)
    point_offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    batch = torch.repeat_interleave(torch.arange(len(points), device=device), counts)
    idx = torch.floor(torch.cat(list(points)).double() / voxel_size).to(torch.int64)
    origin = _origins(idx, batch, len(points), per_sample_origin)
    rel = idx - origin[batch]
    extent = rel.amax(0) + 1 if len(rel) else torch.ones(3, dtype=torch.int64, device=device)
    e0, e1, e2 = (int(e) for e in extent.tolist())
    if max(e0, e1, e2) >= 2**31 or float(len(points)) * e0 * e1 * e2 >= 2.0**62:
        raise ValueError(f'voxel grid extent {[e0, e1, e2]} is too large (int32 coordinates, '
                         f'int64 keys): check voxel_size and the points\' range')
    key = ((batch * e0 + rel[:, 0]) * e1 + rel[:, 1]) * e2 + rel[:, 2]
    uniq, inverse, voxel_counts = torch.unique(key, sorted=True, return_inverse=True,
                                               return_counts=True)
    coords = torch.stack([uniq // (e0 * e1 * e2), (uniq // (e1 * e2)) % e0, (uniq // e2) % e1,
                          uniq % e2], 1).to(torch.int32)
    feats = torch.cat(list(features))
    summed = feats.new_zeros((len(uniq), feats.shape[1])).index_add_(0, inverse, feats)
    mean = summed / voxel_counts.unsqueeze(1).to(feats.dtype)
    per_cloud = torch.bincount(coords[:, 0].long(), minlength=len(points))
    x, y, z = (int(math.ceil(e / shape_multiple) * shape_multiple) for e in (e0, e1, e2))
    return SparseBatch(coords=coords, features=mean, inverse=inverse.to(torch.int64),
                       point_offsets=point_offsets,
                       voxel_offsets=torch.cat([per_cloud.new_zeros(1), per_cloud.cumsum(0)]),
                       origin_index=origin, spatial_shape=(x, y, z),
                       voxel_size=float(voxel_size))


def _origins(idx: torch.Tensor, batch: torch.Tensor, size: int,
             per_sample: bool) -> torch.Tensor:
    """(B, 3) minimum voxel index per cloud (or of the batch); 0 for empty clouds."""
    if len(idx) == 0:
        return idx.new_zeros((size, 3))
    if not per_sample:
        return idx.amin(0).expand(size, 3).clone()
    big = torch.iinfo(torch.int64).max
    out = idx.new_full((size, 3), big).scatter_reduce_(0, batch[:, None].expand(-1, 3), idx,
                                                       reduce='amin')
    return torch.where(out == big, torch.zeros_like(out), out)


def devoxelize(voxel_features: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """Per-point features: row ``inverse[n]`` of (V, C) `voxel_features` -> (N, C)."""
    return voxel_features.index_select(0, inverse)


def available_backends() -> tuple[str, ...]:
    """Installed sparse-convolution libraries, in preference order for 'auto'."""
    order = ('torchsparse', 'spconv')
    return tuple(name for name in order if importlib.util.find_spec(name) is not None)


def resolve_backend(name: str = 'auto') -> str:
    """'auto' -> 'torchsparse' when importable, else 'spconv'; explicit names are checked.

    Raises:
        ValueError: Unknown name. ImportError: the named library is not installed.
    """
    if name not in ('auto', *BACKEND_NAMES):
        raise ValueError(f"sparse backend must be 'auto' or one of {BACKEND_NAMES}, found "
                         f'{name!r}')
    installed = available_backends()
    if name == 'auto':
        if not installed:
            raise ImportError("no sparse-convolution backend: install spconv ('pip install "
                              "spconv' on CPU, 'spconv-cu120' or newer on CUDA)")
        return installed[0]
    if name not in installed:
        hint = ("build torchsparse from source (not on PyPI: FORCE_CUDA=1 pip install "
                "git+https://github.com/mit-han-lab/torchsparse.git), or use "
                "backend='spconv'" if name == 'torchsparse' else
                "pip install spconv (CPU) or spconv-cu12x (CUDA 12)")
        raise ImportError(f'sparse backend {name!r} is not importable: {hint}')
    return name


@functools.cache
def get_backend(name: str) -> SparseBackend:
    """The backend object for a resolved name ('spconv' or 'torchsparse'); cached."""
    from cns_ros.models import backends

    resolved = resolve_backend(name)
    if resolved == 'spconv':
        return backends.SpconvBackend()
    return backends.TorchsparseBackend()


class SparseConv(nn.Module):
    """Bias-free sparse convolution on a backend, initialised in the neutral layout.

    Initialisation draws the same random numbers on every backend, so with one seed a network
    starts from the same weights on spconv and torchsparse. Input and output are backend
    sparse tensors. The kernel lives in the backend conv module
    (``self.conv.<backend.kernel_param>``); :func:`neutral_state_dict` exposes it as
    ``<path>.kernel`` in the neutral (K, K, K, C_in, C_out) layout.
    """

    def __init__(self, backend: str, in_channels: int, out_channels: int, kernel_size: int,
                 kind: str, key: str) -> None:
        super().__init__()
        if kind not in CONV_KINDS:
            raise ValueError(f'kind must be one of {CONV_KINDS}, found {kind!r}')
        self.backend_name = resolve_backend(backend)
        self.kernel_size = (kernel_size,) * 3
        self.kind = kind
        with torch.random.fork_rng(devices=[]):  # backend init leaves the global RNG alone
            self.conv = get_backend(self.backend_name).conv(in_channels, out_channels,
                                                            kernel_size, kind, key)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal (fan-out, ReLU) neutral kernel, converted to the backend layout."""
        weight = self.backend_kernel
        out_channels = weight.shape[0] if self.backend_name == 'spconv' else weight.shape[-1]
        in_channels = weight.shape[-1] if self.backend_name == 'spconv' else weight.shape[-2]
        fan_out = out_channels * math.prod(self.kernel_size)
        neutral = torch.randn(*self.kernel_size, in_channels, out_channels,
                              dtype=weight.dtype) * math.sqrt(2.0 / fan_out)
        with torch.no_grad():
            weight.copy_(to_backend_layout('kernel', neutral, self.backend_name))

    @property
    def backend_kernel(self) -> nn.Parameter:
        """The kernel parameter in the backend's layout."""
        return getattr(self.conv, get_backend(self.backend_name).kernel_param)

    def forward(self, x: Any) -> Any:
        """Convolve a backend sparse tensor."""
        return self.conv(x)


def _sparse_convs(model: nn.Module) -> dict[str, SparseConv]:
    return {name: module for name, module in model.named_modules()
            if isinstance(module, SparseConv)}


def neutral_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` with every sparse kernel as ``<path>.kernel`` in neutral layout.

    Dense parameters and buffers keep their keys. Use for checkpoints and bundles.
    """
    state = dict(model.state_dict())
    for path, module in _sparse_convs(model).items():
        key = f'{path}.conv.{get_backend(module.backend_name).kernel_param}'
        weight = state.pop(key)
        state[f'{path}.kernel'] = from_backend_layout(key, weight, module.backend_name,
                                                      module.kernel_size)
    return state


def load_neutral_state_dict(model: nn.Module, state: dict[str, torch.Tensor],
                            strict: bool = True) -> Any:
    """Load a :func:`neutral_state_dict` (from any backend) into `model`'s backend.

    Returns:
        ``model.load_state_dict``'s result (missing / unexpected keys when not strict).
    """
    state = dict(state)
    for path, module in _sparse_convs(model).items():
        key = f'{path}.kernel'
        if key not in state:
            if strict:
                raise KeyError(f'neutral state dict has no sparse kernel {key!r}')
            continue
        backend_key = f'{path}.conv.{get_backend(module.backend_name).kernel_param}'
        state[backend_key] = to_backend_layout(key, state.pop(key), module.backend_name)
    return model.load_state_dict(state, strict=strict)
