"""Sparse-convolution backends: spconv (default) and torchsparse (when importable).

A backend turns a :class:`cns_ros.models.sparse.SparseBatch` into its own sparse tensor, reads
and replaces voxel features, reads voxel indices, and builds three kinds of k > 1
convolutions:

- ``'subm'``: submanifold (stride 1, outputs on the input voxels);
- ``'down'``: kernel 2, stride 2 (outputs on the occupied coarse voxels);
- ``'up'``: kernel 2, stride 2, transposed onto the voxels of the matching ``'down'`` input
  (spconv ``SparseInverseConv3d`` with the down conv's ``indice_key``; torchsparse
  ``Conv3d(transposed=True)``, matched by tensor stride).

Kernels are created in the backend's own layout; :mod:`cns_ros.models.layout` converts.

spconv 2.3.8 on CPU needs two fixes, applied once by :func:`patch_spconv` (and documented
with the evidence in ``tests/test_models.py``):

1. **CUDA stream query in the CPU backward.** ``spconv.pytorch.ops.indice_conv_backward``
   calls ``get_current_stream()`` (``torch.cuda.current_stream()``) unconditionally; with the
   CUDA build of torch on a machine without a driver this raises "Found no NVIDIA driver".
   When ``torch.cuda.is_available()`` is False, spconv's ``get_current_stream`` (in
   ``spconv.pytorch.cppcore`` and every spconv module that imported it) is replaced with a
   function returning stream 0, which the CPU kernels ignore.
2. **Data race in the CPU scatter-add.** ``GatherCPU::scatter_add`` (used by the CPU forward
   of every non-centre kernel offset and by the CPU input-gradient) declares its row pointers
   outside the OpenMP-parallel loop and shares them between threads, so with more than one
   thread some rows receive another row's values: wrong outputs and gradients in float32,
   float64 and float16 (37 of 40 float32 calls of a 16-channel submanifold conv on 4k voxels,
   about 1 in 10 on a hundred voxels; none with OMP_NUM_THREADS=1). The
   CPU path now calls a race-free ``torch.Tensor.index_add_`` instead
   (``SpconvOps.scatter_add_cpu`` is wrapped; everything else is spconv's own). CUDA paths
   do not use that function and are untouched.

spconv also reads the index tensor as row-major int32 without checking strides: a
column-major tensor (``torch.nonzero`` returns one) silently gives wrong neighbourhoods. The
backend always passes ``coords.contiguous()``.
"""

from __future__ import annotations

import copy
import functools
import sys
import threading
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

if TYPE_CHECKING:
    from cns_ros.models.sparse import SparseBatch

__all__ = ['CONV_KINDS', 'SparseBackend', 'SpconvBackend', 'TorchsparseBackend',
           'patch_spconv']

CONV_KINDS = ('subm', 'down', 'up')
_PATCH_LOCK = threading.Lock()
_PATCHED: dict[str, bool] = {}


class SparseBackend(Protocol):
    """What the network layers need from a sparse-convolution library."""

    name: str
    kernel_param: str  # name of the kernel parameter inside the backend's conv module

    def tensor(self, batch: SparseBatch, features: torch.Tensor) -> Any:
        """The backend's sparse tensor for `batch` with (V, C) voxel `features`."""

    def features(self, x: Any) -> torch.Tensor:
        """(V, C) voxel features of a backend tensor."""

    def indices(self, x: Any) -> torch.Tensor:
        """(V, 4) int ``[b, i, j, k]`` of the rows of `x`, counted in `x`'s own voxels: at
        stride ``2^l`` the voxel holding level-0 voxel ``(i, j, k)`` is ``(i, j, k) >> l``."""

    def replace(self, x: Any, features: torch.Tensor) -> Any:
        """A tensor on the same voxels (and kernel-map caches) with new (V, C') features."""

    def conv(self, in_channels: int, out_channels: int, kernel_size: int, kind: str,
             key: str) -> nn.Module:
        """A bias-free convolution of `kind` ('subm', 'down', 'up'); `key` names its level."""


def _null_stream() -> int:
    """Stream handle for CPU tensors (spconv's CPU kernels ignore it)."""
    return 0


class _RaceFreeSpconvOps:
    """spconv's ``SpconvOps`` with a race-free ``scatter_add_cpu``; all else delegates."""

    def __init__(self, original: Any) -> None:
        self._original = original

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)

    @staticmethod
    def scatter_add_cpu(out: Any, inp: Any, inds: Any) -> None:
        """out[inds[r]] += inp[r] for r < len(inds), on spconv (tensorview) CPU tensors."""
        index = torch.from_numpy(inds.numpy_view())
        rows = torch.from_numpy(inp.numpy_view())[:index.shape[0]]
        torch.from_numpy(out.numpy_view()).index_add_(0, index, rows)


def patch_spconv() -> None:
    """Apply the two spconv CPU fixes described in the module docstring (idempotent)."""
    with _PATCH_LOCK:
        import spconv.pytorch.cppcore as cppcore
        import spconv.pytorch.ops as ops

        if not _PATCHED.get('scatter'):
            ops.SpconvOps = _RaceFreeSpconvOps(ops.SpconvOps)
            _PATCHED['scatter'] = True
        if not _PATCHED.get('stream') and not torch.cuda.is_available():
            original = cppcore.get_current_stream
            for module in list(sys.modules.values()):
                name = getattr(module, '__name__', '') or ''
                if (name.startswith('spconv.')
                        and getattr(module, 'get_current_stream', None) is original):
                    module.get_current_stream = _null_stream
            _PATCHED['stream'] = True


class SpconvBackend:
    """spconv 2.x (``spconv`` CPU wheel or ``spconv-cu12x``)."""

    name = 'spconv'
    kernel_param = 'weight'

    def __init__(self) -> None:
        import spconv.pytorch as spconv

        self._spconv = spconv
        patch_spconv()

    def tensor(self, batch: SparseBatch, features: torch.Tensor) -> Any:
        """``spconv.SparseConvTensor`` with indices [b, i, j, k] (int32, row-major)."""
        coords = batch.coords.to(torch.int32).contiguous()
        return self._spconv.SparseConvTensor(features.contiguous(), coords,
                                             list(batch.spatial_shape), batch.batch_size)

    def features(self, x: Any) -> torch.Tensor:
        """(V, C) features."""
        return x.features

    def indices(self, x: Any) -> torch.Tensor:
        """spconv's indices: already ``[b, i, j, k]`` on the tensor's own grid."""
        return x.indices

    def replace(self, x: Any, features: torch.Tensor) -> Any:
        """Same indices and indice dict, new features."""
        return x.replace_feature(features)

    def conv(self, in_channels: int, out_channels: int, kernel_size: int, kind: str,
             key: str) -> nn.Module:
        """SubMConv3d / SparseConv3d (stride 2) / SparseInverseConv3d sharing `key`."""
        sp = self._spconv
        if kind == 'subm':
            return sp.SubMConv3d(in_channels, out_channels, kernel_size, bias=False,
                                 indice_key=key)
        if kind == 'down':
            return sp.SparseConv3d(in_channels, out_channels, kernel_size, stride=2,
                                   bias=False, indice_key=key)
        if kind == 'up':
            return sp.SparseInverseConv3d(in_channels, out_channels, kernel_size,
                                          indice_key=key, bias=False)
        raise ValueError(f'conv kind must be one of {CONV_KINDS}, found {kind!r}')


@functools.lru_cache(maxsize=1)
def _torchsparse_version() -> tuple[int, ...]:
    import torchsparse

    text = getattr(torchsparse, '__version__', '0')
    parts = []
    for piece in text.split('.')[:3]:
        digits = ''.join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


class TorchsparseBackend:
    """torchsparse (source build; not on PyPI).

    Written against torchsparse's documented API: ``torchsparse.SparseTensor(feats, coords,
    stride=1[, spatial_range])`` and ``torchsparse.nn.Conv3d(in, out, kernel_size, stride,
    transposed=...)`` with a ``kernel`` parameter. Coordinates are ``[b, x, y, z]`` from
    version 2.1 on (with ``spatial_range = (B, X, Y, Z)``) and ``[x, y, z, b]`` before.
    """

    name = 'torchsparse'
    kernel_param = 'kernel'

    def __init__(self) -> None:
        import torchsparse
        import torchsparse.nn as spnn

        self._ts = torchsparse
        self._spnn = spnn
        self._batch_first = _torchsparse_version() >= (2, 1)

    def tensor(self, batch: SparseBatch, features: torch.Tensor) -> Any:
        """``torchsparse.SparseTensor`` in the installed version's coordinate order."""
        coords = batch.coords.to(torch.int32)
        if self._batch_first:
            spatial_range = (batch.batch_size, *batch.spatial_shape)
            return self._ts.SparseTensor(features, coords.contiguous(), stride=1,
                                         spatial_range=spatial_range)
        return self._ts.SparseTensor(features, coords[:, [1, 2, 3, 0]].contiguous(), stride=1)

    def features(self, x: Any) -> torch.Tensor:
        """(V, C) features."""
        return x.feats

    def indices(self, x: Any) -> torch.Tensor:
        """torchsparse's coordinates (multiples of the tensor stride, level-0 units) divided
        by ``x.stride``, batch column first."""
        coords = x.coords if self._batch_first else x.coords[:, [3, 0, 1, 2]]
        stride = torch.tensor([1, *x.stride], dtype=coords.dtype, device=coords.device)
        return torch.div(coords, stride, rounding_mode='floor')

    def replace(self, x: Any, features: torch.Tensor) -> Any:
        """Shallow copy (coords, stride and kernel-map caches shared) with new features."""
        out = copy.copy(x)
        out.feats = features
        return out

    def conv(self, in_channels: int, out_channels: int, kernel_size: int, kind: str,
             key: str) -> nn.Module:
        """``torchsparse.nn.Conv3d``: stride 1, stride 2, or stride 2 transposed."""
        del key  # torchsparse pairs down and up convolutions by tensor stride
        if kind not in CONV_KINDS:
            raise ValueError(f'conv kind must be one of {CONV_KINDS}, found {kind!r}')
        stride = 1 if kind == 'subm' else 2
        return self._spnn.Conv3d(in_channels, out_channels, kernel_size, stride=stride,
                                 bias=False, transposed=kind == 'up')
