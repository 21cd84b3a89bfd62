"""Backend-neutral sparse-convolution kernel layout: the ONE place kernels change layout.

Checkpoints and model bundles store every sparse-convolution kernel in the **neutral layout**

    ``(K0, K1, K2, C_in, C_out)``

where the kernel axes 0, 1, 2 follow the voxel coordinate columns ``i, j, k`` of
:class:`cns_ros.models.sparse.SparseBatch` (the x, y, z axes of the points' frame) and the
index ``a`` along an axis of size ``K`` means the voxel offset

- odd ``K`` (submanifold, stride 1): ``a - (K - 1) // 2`` (cross-correlation, as
  ``torch.nn.functional.conv3d``): ``out[p] = sum_abc in[p + (a-1, b-1, c-1)] @ W[a, b, c]``
  for ``K = 3``;
- ``K = 2``, stride 2 (down-sampling): ``out[q] = sum_abc in[2q + (a, b, c)] @ W[a, b, c]``;
- ``K = 2`` transposed (up-sampling back onto the finer level):
  ``out[2q + (a, b, c)] += in[q] @ W[a, b, c]``.

Backend layouts (facts checked against the libraries' sources; the spconv one is also pinned
numerically against dense ``conv3d`` in ``tests/test_models.py``):

- ``spconv`` 2.x (``ALL_WEIGHT_IS_KRSC``): ``weight`` of shape ``(C_out, K0, K1, K2, C_in)``,
  kernel axes in the order of the index columns ``[b, i, j, k]``; same offset semantics.
- ``torchsparse`` (1.4 / 2.0 ``get_kernel_offsets``; 2.1 ``lookup_coords_kernel`` in
  ``backend/hashmap/hashmap_cuda.cuh``): ``kernel`` of shape ``(K0*K1*K2, C_in, C_out)``; the
  flat offset index runs **x fastest for odd kernel volumes** (``a + K0*(b + K1*c)``) and
  **z fastest for even ones** (``c + K2*(b + K1*a)``, i.e. C order); offsets
  ``a - (K-1)//2`` (odd) and ``a`` (even), with the same cross-correlation semantics.

Only k > 1 kernels are sparse convolutions here; 1x1 layers are dense ``nn.Linear`` layers on
the voxel features and need no conversion.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ['LAYOUT_BACKENDS', 'from_backend_layout', 'to_backend_layout']

LAYOUT_BACKENDS = ('spconv', 'torchsparse')


def _check_backend(backend: str) -> None:
    if backend not in LAYOUT_BACKENDS:
        raise ValueError(f'unknown sparse backend {backend!r}; expected one of '
                         f'{LAYOUT_BACKENDS}')


def to_backend_layout(name: str, weight: torch.Tensor, backend: str) -> torch.Tensor:
    """Convert one kernel from the neutral layout to a backend's parameter layout.

    Args:
        name: Parameter name, for error messages.
        weight: (K0, K1, K2, C_in, C_out) neutral kernel, any float dtype and device.
        backend: 'spconv' or 'torchsparse'.

    Returns:
        A contiguous tensor: spconv (C_out, K0, K1, K2, C_in); torchsparse (K0*K1*K2, C_in,
        C_out) in its offset order (see the module docstring).
    """
    _check_backend(backend)
    if weight.dim() != 5:
        raise ValueError(f'{name}: expected a neutral (K0, K1, K2, C_in, C_out) kernel, '
                         f'found shape {tuple(weight.shape)}')
    if backend == 'spconv':
        return weight.permute(4, 0, 1, 2, 3).contiguous()
    k0, k1, k2, c_in, c_out = weight.shape
    if (k0 * k1 * k2) % 2 == 1:  # x fastest: flat = a + K0 * (b + K1 * c)
        weight = weight.permute(2, 1, 0, 3, 4)
    return weight.reshape(k0 * k1 * k2, c_in, c_out).contiguous()


def from_backend_layout(name: str, weight: torch.Tensor, backend: str,
                        kernel_size: tuple[int, int, int] | None = None) -> torch.Tensor:
    """Convert one kernel from a backend's parameter layout to the neutral layout.

    Args:
        name: Parameter name, for error messages.
        weight: spconv (C_out, K0, K1, K2, C_in) or torchsparse (K0*K1*K2, C_in, C_out).
        backend: 'spconv' or 'torchsparse'.
        kernel_size: (K0, K1, K2); needed for torchsparse unless the volume is a cube.

    Returns:
        The contiguous (K0, K1, K2, C_in, C_out) neutral kernel.
    """
    _check_backend(backend)
    if backend == 'spconv':
        if weight.dim() != 5:
            raise ValueError(f'{name}: expected a spconv (C_out, K0, K1, K2, C_in) kernel, '
                             f'found shape {tuple(weight.shape)}')
        return weight.permute(1, 2, 3, 4, 0).contiguous()
    if weight.dim() != 3:
        raise ValueError(f'{name}: expected a torchsparse (K^3, C_in, C_out) kernel, found '
                         f'shape {tuple(weight.shape)}')
    volume, c_in, c_out = weight.shape
    if kernel_size is None:
        side = round(volume ** (1.0 / 3.0))
        kernel_size = (side, side, side)
    k0, k1, k2 = kernel_size
    if k0 * k1 * k2 != volume:
        raise ValueError(f'{name}: kernel volume {volume} does not match kernel_size '
                         f'{tuple(kernel_size)}')
    if volume % 2 == 1:
        return weight.reshape(k2, k1, k0, c_in, c_out).permute(2, 1, 0, 3, 4).contiguous()
    return weight.reshape(k0, k1, k2, c_in, c_out).contiguous()
