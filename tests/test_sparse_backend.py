"""Sparse backend layer: voxelization, layouts, and spconv's CPU numerics against dense conv3d.

spconv 2.3.8 on CPU (findings behind cns_ros.models.backends.patch_spconv):

- Its backward asks torch for the current CUDA stream and fails without a driver; patched.
- ``GatherCPU::scatter_add`` races between OpenMP threads (row pointers shared), so CPU
  outputs and input gradients were wrong in float32 and float64 (37 of 40 calls of the
  4k-voxel float32 test below without the fix; none with OMP_NUM_THREADS=1). That race is
  what made ``gradcheck`` fail (0 of 10 passed before the fix, 10 of 10 after). Patched with
  a race-free ``index_add_``.
- Index tensors must be row-major: spconv ignores strides, and ``torch.nonzero`` returns a
  column-major tensor, which silently gives wrong neighbourhoods. The backend makes them
  contiguous.

With the patches, every path (submanifold k3, strided k2, inverse k2; features, input and
weight gradients; float64) matches a dense ``conv3d`` / ``conv_transpose3d`` reference to
1e-12 here, and ``gradcheck`` passes.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

torch = pytest.importorskip('torch')
pytest.importorskip('spconv')

import torch.nn.functional as F  # noqa: E402, N812
from torch.func import functional_call  # noqa: E402

from cns_ros import geometry  # noqa: E402
from cns_ros.models.layout import from_backend_layout, to_backend_layout  # noqa: E402
from cns_ros.models.sparse import (  # noqa: E402
    devoxelize,
    get_backend,
    resolve_backend,
    voxelize_batch,
)

SHAPE = (8, 8, 8)


@pytest.fixture(scope='module')
def spconv_backend():
    return get_backend('spconv')


def _random_sites(seed: int, batch: int = 2, density: float = 0.3,
                  shape: tuple[int, ...] = SHAPE) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    occupied = torch.rand((batch, *shape), generator=gen) < density
    return occupied.nonzero().to(torch.int32).contiguous()


def _dense(features: torch.Tensor, coords: torch.Tensor, batch: int,
           shape: tuple[int, ...]) -> torch.Tensor:
    """Scatter (V, C) features at [b, i, j, k] into a (B, C, X, Y, Z) grid (differentiably)."""
    index = tuple(coords.long().t())
    grid = features.new_zeros((batch, *shape, features.shape[1])).index_put(index, features)
    return grid.permute(0, 4, 1, 2, 3)


def _at(dense: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    return dense.permute(0, 2, 3, 4, 1)[tuple(coords.long().t())]


def _sparse(backend, features, coords, batch=2, shape=SHAPE):
    import spconv.pytorch as spconv

    return spconv.SparseConvTensor(features, coords.contiguous(), list(shape), batch)


@pytest.mark.parametrize('kind', ['subm', 'down'])
def test_spconv_cpu_matches_dense_conv3d_float64(spconv_backend, kind):
    """Forward, input gradient and weight gradient equal a dense conv3d with the same kernel."""
    torch.manual_seed(1)
    coords = _random_sites(seed=2)
    feats = torch.randn(len(coords), 3, dtype=torch.float64)
    conv = spconv_backend.conv(3, 4, 3 if kind == 'subm' else 2, kind, 'k').double()
    x = feats.clone().requires_grad_(True)
    out = conv(_sparse(spconv_backend, x, coords))
    grad_out = torch.randn_like(out.features)
    (out.features * grad_out).sum().backward()

    x_ref = feats.clone().requires_grad_(True)
    w_ref = conv.weight.detach().clone().requires_grad_(True)  # (C_out, K, K, K, C_in)
    kwargs = {'padding': 1} if kind == 'subm' else {'stride': 2}
    dense = F.conv3d(_dense(x_ref, coords, 2, SHAPE), w_ref.permute(0, 4, 1, 2, 3), **kwargs)
    ref = _at(dense, out.indices)
    (ref * grad_out).sum().backward()
    if kind == 'down':  # every occupied coarse voxel, nothing else
        expected = torch.unique(torch.cat([coords[:, :1], coords[:, 1:] // 2], 1), dim=0)
        assert len(out.indices) == len(expected)
    torch.testing.assert_close(out.features, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(conv.weight.grad, w_ref.grad, rtol=0, atol=1e-11)


def test_spconv_cpu_inverse_conv_matches_dense_conv_transpose3d(spconv_backend):
    """SparseInverseConv3d = conv_transpose3d (stride 2) read at the original fine voxels."""
    torch.manual_seed(3)
    coords = _random_sites(seed=4)
    down = spconv_backend.conv(3, 4, 2, 'down', 'u').double()
    up = spconv_backend.conv(4, 5, 2, 'up', 'u').double()
    coarse = down(_sparse(spconv_backend, torch.randn(len(coords), 3).double(), coords))
    cf = coarse.features.detach().clone().requires_grad_(True)
    out = up(coarse.replace_feature(cf))
    grad_out = torch.randn_like(out.features)
    (out.features * grad_out).sum().backward()

    cf_ref = cf.detach().clone().requires_grad_(True)
    w_ref = up.weight.detach().clone().requires_grad_(True)
    half = tuple(s // 2 for s in SHAPE)
    dense = F.conv_transpose3d(_dense(cf_ref, coarse.indices, 2, half),
                               w_ref.permute(4, 0, 1, 2, 3), stride=2)
    ref = _at(dense, out.indices)
    (ref * grad_out).sum().backward()
    assert torch.equal(out.indices, coords.contiguous())
    torch.testing.assert_close(out.features, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(cf.grad, cf_ref.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(up.weight.grad, w_ref.grad, rtol=0, atol=1e-11)


@pytest.mark.parametrize('kind', ['subm', 'down'])
def test_spconv_cpu_gradcheck(spconv_backend, kind):
    """Numerical and analytical Jacobians agree (failed before the scatter-add fix)."""
    torch.manual_seed(5)
    coords = _random_sites(seed=6, batch=1, density=0.5, shape=(4, 4, 4))
    conv = spconv_backend.conv(1, 2, 3 if kind == 'subm' else 2, kind, 'g').double()

    def run(feats, weight):
        x = _sparse(spconv_backend, feats, coords, batch=1, shape=(4, 4, 4))
        return functional_call(conv, {'weight': weight}, (x,)).features

    inputs = (torch.randn(len(coords), 1, dtype=torch.float64, requires_grad=True),
              conv.weight.detach().clone().requires_grad_(True))
    assert torch.autograd.gradcheck(run, inputs)


def test_spconv_cpu_float32_deterministic_and_correct(spconv_backend):
    """Large float32 submanifold conv: repeated calls identical and equal to dense conv3d."""
    torch.manual_seed(7)
    shape = (32, 32, 16)
    occupied = torch.rand((1, *shape)) < 0.25
    coords = occupied.nonzero().to(torch.int32)
    feats = torch.randn(len(coords), 16)
    conv = spconv_backend.conv(16, 16, 3, 'subm', 's')
    outs = [conv(_sparse(spconv_backend, feats, coords, 1, shape)).features for _ in range(8)]
    dense = F.conv3d(_dense(feats, coords, 1, shape), conv.weight.permute(0, 4, 1, 2, 3),
                     padding=1)
    ref = _at(dense, coords).detach()
    for out in outs:
        torch.testing.assert_close(out.detach(), ref, rtol=1e-4, atol=1e-4)
        assert torch.equal(out, outs[0])


def test_backend_tensor_makes_column_major_indices_row_major(spconv_backend):
    """torch.nonzero gives column-major indices; spconv would misread them silently."""
    from cns_ros.models.sparse import SparseBatch

    coords = torch.ones((1, 4, 4, 4), dtype=torch.bool).nonzero().to(torch.int32)
    assert not coords.is_contiguous()
    zeros = torch.zeros(2, dtype=torch.int64)
    batch = SparseBatch(coords=coords, features=torch.ones(64, 1), inverse=torch.arange(64),
                        point_offsets=torch.tensor([0, 64]), voxel_offsets=torch.tensor([0, 64]),
                        origin_index=zeros.new_zeros((1, 3)), spatial_shape=(4, 4, 4),
                        voxel_size=1.0)
    out = spconv_backend.conv(1, 1, 2, 'down', 'c')(spconv_backend.tensor(batch, batch.features))
    assert len(out.indices) == 8  # 2 with the column-major tensor passed as is


def test_voxelize_batch_matches_geometry_voxelize():
    rng = np.random.default_rng(0)
    clouds = [rng.uniform(-5, 5, (400, 3)), rng.uniform(0, 2, (150, 3)), np.zeros((0, 3))]
    feats = [rng.normal(size=(len(c), 2)) for c in clouds]
    batch = voxelize_batch([torch.from_numpy(c) for c in clouds],
                           [torch.from_numpy(f) for f in feats], 0.5)
    assert batch.batch_size == 3 and batch.coords.dtype == torch.int32
    assert batch.inverse.dtype == torch.int64 and len(batch.inverse) == 550
    assert all(s % 16 == 0 for s in batch.spatial_shape)
    for b, (cloud, feat) in enumerate(zip(clouds[:2], feats[:2], strict=True)):
        ref = geometry.voxelize(cloud, 0.5)
        v0, v1 = batch.voxel_offsets[b:b + 2].tolist()
        p0, p1 = batch.point_offsets[b:b + 2].tolist()
        coords = batch.coords[v0:v1].numpy()
        assert (coords[:, 0] == b).all()
        np.testing.assert_array_equal(coords[:, 1:], ref.coords - ref.coords.min(0))
        np.testing.assert_array_equal(batch.inverse[p0:p1].numpy() - v0, ref.inverse)
        np.testing.assert_allclose(batch.features[v0:v1].numpy(),
                                   geometry.reduce_by_voxel(feat, ref), atol=1e-12)
        np.testing.assert_array_equal(batch.origin_index[b].numpy(), ref.coords.min(0))
    assert batch.voxel_offsets[-1] == batch.voxel_offsets[-2]  # the empty cloud has no voxels


def test_voxelize_batch_global_origin_and_devoxelize():
    pts = [torch.tensor([[0.05, 0.0, 0.0], [0.09, 0.01, 0.0], [1.0, 1.0, 1.0]]),
           torch.tensor([[-1.0, 0.0, 0.0]])]
    feats = [torch.tensor([[1.0], [3.0], [5.0]]), torch.tensor([[7.0]])]
    batch = voxelize_batch(pts, feats, 0.1, per_sample_origin=False)
    assert batch.origin_index.tolist() == [[-10, 0, 0], [-10, 0, 0]]
    assert batch.inverse[0] == batch.inverse[1]
    per_point = devoxelize(batch.features, batch.inverse)
    assert per_point[:, 0].tolist() == [2.0, 2.0, 5.0, 7.0]
    with pytest.raises(ValueError, match='non-finite'):
        voxelize_batch([torch.tensor([[float('nan'), 0.0, 0.0]])], [torch.zeros(1, 1)], 0.1)


def test_layout_round_trips_and_torchsparse_offset_order():
    neutral = torch.randn(3, 3, 3, 4, 5)
    for backend in ('spconv', 'torchsparse'):
        converted = to_backend_layout('w', neutral, backend)
        assert torch.equal(from_backend_layout('w', converted, backend, (3, 3, 3)), neutral)
    assert to_backend_layout('w', neutral, 'spconv').shape == (5, 3, 3, 3, 4)
    # torchsparse: odd kernels x fastest (a + 3b + 9c); even kernels z fastest (C order)
    ts = to_backend_layout('w', neutral, 'torchsparse')
    assert torch.equal(ts[1 + 3 * 2 + 9 * 0], neutral[1, 2, 0])
    even = torch.randn(2, 2, 2, 4, 5)
    ts_even = to_backend_layout('w', even, 'torchsparse')
    assert torch.equal(ts_even[1 * 4 + 0 * 2 + 1], even[1, 0, 1])
    assert torch.equal(from_backend_layout('w', ts_even, 'torchsparse'), even)
    with pytest.raises(ValueError, match='unknown sparse backend'):
        to_backend_layout('w', neutral, 'minkowski')


def _torchsparse_offsets(kernel_size: int) -> list[tuple[int, int, int]]:
    """torchsparse's kernel-offset order (odd volume: x fastest; even: z fastest)."""
    side = range(kernel_size)
    shift = (kernel_size - 1) // 2
    if kernel_size % 2:
        return [(a - shift, b - shift, c - shift) for c in side for b in side for a in side]
    return [(a, b, c) for a in side for b in side for c in side]


def _torchsparse_semantics_conv(coords, feats, kernel, kernel_size, stride):
    """Independent re-statement of torchsparse's conv: out[o] += in[o*s + off_n] @ W[n]."""
    rows = {tuple(r): n for n, r in enumerate(coords.tolist())}
    if stride == 1:
        out_coords = coords
    else:
        out_coords = torch.unique(torch.cat([coords[:, :1], coords[:, 1:] // 2], 1), dim=0)
    out = feats.new_zeros((len(out_coords), kernel.shape[-1]))
    for o, (b, *q) in enumerate(out_coords.tolist()):
        for n, off in enumerate(_torchsparse_offsets(kernel_size)):
            src = rows.get((b, *(qi * stride + d for qi, d in zip(q, off, strict=True))))
            if src is not None:
                out[o] += feats[src] @ kernel[n]
    return out_coords, out


@pytest.mark.parametrize('kind', ['subm', 'down'])
def test_torchsparse_layout_semantics_match_spconv(spconv_backend, kind):
    """A neutral kernel converted to each layout gives the same convolution."""
    torch.manual_seed(8)
    coords = _random_sites(seed=9, batch=1, density=0.3, shape=(6, 6, 6))
    feats = torch.randn(len(coords), 2, dtype=torch.float64)
    size = 3 if kind == 'subm' else 2
    neutral = torch.randn(size, size, size, 2, 3, dtype=torch.float64)
    conv = spconv_backend.conv(2, 3, size, kind, 't').double()
    with torch.no_grad():
        conv.weight.copy_(to_backend_layout('w', neutral, 'spconv'))
        out = conv(_sparse(spconv_backend, feats, coords, batch=1, shape=(6, 6, 6)))
    ts_coords, ts_out = _torchsparse_semantics_conv(
        coords, feats, to_backend_layout('w', neutral, 'torchsparse'), size,
        1 if kind == 'subm' else 2)
    order = torch.argsort(out.indices[:, 1:].long() @ torch.tensor([36, 6, 1]))
    torch.testing.assert_close(out.features[order], ts_out, rtol=0, atol=1e-12)
    assert torch.equal(out.indices[order], ts_coords.to(torch.int32))


@pytest.mark.skipif(torch.cuda.is_available(), reason='the stream patch applies without CUDA')
def test_spconv_stream_query_patched_without_cuda(spconv_backend):
    import spconv.pytorch.cppcore as cppcore
    import spconv.pytorch.ops as ops

    assert ops.get_current_stream() == 0 and cppcore.get_current_stream() == 0


def test_backend_selection():
    assert resolve_backend('spconv') == 'spconv'
    expected = 'torchsparse' if importlib.util.find_spec('torchsparse') else 'spconv'
    assert resolve_backend('auto') == expected
    with pytest.raises(ValueError, match='auto'):
        resolve_backend('minkowski')
    if importlib.util.find_spec('torchsparse') is None:
        with pytest.raises(ImportError, match=r'torchsparse.*not importable'):
            resolve_backend('torchsparse')
