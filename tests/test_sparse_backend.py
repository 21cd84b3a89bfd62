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

from cns_ros.models.layout import from_backend_layout, to_backend_layout  # noqa: E402
from cns_ros.models.sparse import (  # noqa: E402
    devoxelize,
    get_backend,
    resolve_backend,
    voxelize_batch,
    voxelize_cloud,
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


# --- voxelization: voxelize_cloud (the one implementation) and voxelize_batch -------------

def _brute_force_voxels(xyz: np.ndarray, voxel_size: float
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(absolute voxel indices (V, 3) in lexicographic order, inverse (N,), counts (V,)) by
    numpy's row-wise unique of floor(float64(p) / voxel_size): independent of the torch code."""
    idx = np.floor(xyz.astype(np.float64) / voxel_size).astype(np.int64)
    voxels, inverse, counts = np.unique(idx, axis=0, return_inverse=True, return_counts=True)
    return voxels, inverse.reshape(-1), counts


def _lidar_sweep(seed: int = 0) -> np.ndarray:
    """A nuScenes-layout sweep: 32 beams x 1080 azimuths over a ground plane, (34560, 3)."""
    rng = np.random.default_rng(seed)
    elevation = np.radians(np.linspace(-30.0, 10.0, 32))[:, None]
    azimuth = np.linspace(-np.pi, np.pi, 1080, endpoint=False)[None, :]
    ranges = np.minimum(1.84 / np.tan(-np.minimum(elevation, -1e-3)), 30.0) \
        + rng.normal(0, 0.02, (32, 1080))
    return np.stack([ranges * np.cos(elevation) * np.cos(azimuth),
                     ranges * np.cos(elevation) * np.sin(azimuth),
                     ranges * np.sin(elevation)], -1).reshape(-1, 3).astype(np.float32)


def test_voxelize_cloud_on_hand_computed_points():
    """0.5 m voxels: indices (0,0,0) (-1,0,0) (0,0,0) (2,-2,0) (-1,1,0); from the minimum
    (-1,-2,0): (1,2,0) (0,2,0) (1,2,0) (3,0,0) (0,3,0), in lexicographic order (0,2,0) (0,3,0)
    (1,2,0) (3,0,0)."""
    points = torch.tensor([[0.1, 0.2, 0.3], [-0.1, 0.0, 0.0], [0.4, 0.4, 0.4],
                           [1.2, -0.6, 0.0], [-0.1, 0.9, 0.0]])
    voxels = voxelize_cloud(points, 0.5, batch_index=3)
    assert voxels.coords.dtype == torch.int32 and voxels.inverse.dtype == torch.int64
    assert voxels.coords.tolist() == [[3, 0, 2, 0], [3, 0, 3, 0], [3, 1, 2, 0], [3, 3, 0, 0]]
    assert voxels.inverse.tolist() == [2, 0, 2, 3, 1]
    assert voxels.counts.tolist() == [1, 1, 2, 1] and voxels.counts.dtype == torch.int64
    assert voxels.origin_index.tolist() == [-1, -2, 0] and voxels.extent == (4, 4, 1)


def test_voxelize_cloud_voxels_are_half_open():
    """x = -0.25, -1e-7, 0, 0.2499999 (float32), 0.25 at 0.25 m: indices -1, -1, 0, 0, 1."""
    x = [-0.25, -1e-7, 0.0, 0.2499999, 0.25]
    points = torch.tensor([[v, 0.0, 0.0] for v in x], dtype=torch.float32)
    voxels = voxelize_cloud(points, 0.25)
    assert voxels.coords[:, 1].tolist() == [0, 1, 2] and voxels.origin_index.tolist() == [-1, 0, 0]
    assert voxels.inverse.tolist() == [0, 0, 1, 1, 2] and voxels.counts.tolist() == [2, 2, 1]
    empty = voxelize_cloud(torch.zeros((0, 3)), 0.25)
    assert empty.coords.shape == (0, 4) and empty.inverse.shape == (0,)
    assert empty.extent == (0, 0, 0) and empty.origin_index.tolist() == [0, 0, 0]


@pytest.mark.parametrize('voxel_size', [0.05, 0.5, 2.0, 0.003])
def test_voxelize_cloud_matches_a_brute_force_grouping(voxel_size):
    """3000 points over 60 m (50 of them sharing voxels) against numpy's row-wise unique; at
    0.003 m the grid has >= 2^31 cells (int64 keys), at 0.5 m fewer (int32 keys)."""
    rng = np.random.default_rng(4)
    xyz = (rng.standard_normal((3000, 3)) * [30.0, 30.0, 1.0]).astype(np.float32)
    xyz[:50] = xyz[50:100]
    voxels = voxelize_cloud(torch.from_numpy(xyz), voxel_size)
    reference, inverse, counts = _brute_force_voxels(xyz, voxel_size)
    absolute = voxels.coords[:, 1:].long() + voxels.origin_index
    np.testing.assert_array_equal(absolute.numpy(), reference)
    np.testing.assert_array_equal(voxels.inverse.numpy(), inverse)
    np.testing.assert_array_equal(voxels.counts.numpy(), counts)
    assert voxels.origin_index.tolist() == reference.min(0).tolist()
    assert list(voxels.extent) == (reference.max(0) - reference.min(0) + 1).tolist()
    cells = np.prod(voxels.extent, dtype=np.float64)
    if voxel_size in (0.5, 0.003):
        assert (cells >= 2**31) == (voxel_size == 0.003)


def test_voxelize_cloud_on_a_lidar_sweep():
    """The node's input (a nuScenes-layout sweep, 0.1 m voxels) against the brute force."""
    xyz = _lidar_sweep()
    voxels = voxelize_cloud(torch.from_numpy(xyz), 0.1)
    reference, inverse, counts = _brute_force_voxels(xyz, 0.1)
    assert 1000 < len(reference) < len(xyz)
    np.testing.assert_array_equal((voxels.coords[:, 1:].long() + voxels.origin_index).numpy(),
                                  reference)
    np.testing.assert_array_equal(voxels.inverse.numpy(), inverse)
    np.testing.assert_array_equal(voxels.counts.numpy(), counts)


def test_voxelize_cloud_refuses_bad_input():
    xyz = _lidar_sweep()[:100]
    for bad in (np.nan, np.inf, -np.inf):
        broken = xyz.copy()
        broken[7, 1] = bad
        broken[9, 0] = bad
        with pytest.raises(ValueError, match='2 non-finite points'):
            voxelize_cloud(torch.from_numpy(broken), 0.1)
    far = xyz.copy()
    far[0] = 1e12
    with pytest.raises(ValueError, match='too large'):
        voxelize_cloud(torch.from_numpy(far), 0.1)
    for size in (0.0, -0.1, float('nan'), float('inf')):
        with pytest.raises(ValueError, match='voxel_size'):
            voxelize_cloud(torch.from_numpy(xyz), size)
    with pytest.raises(ValueError, match=r'shape \(N, 3\)'):
        voxelize_cloud(torch.from_numpy(xyz[:, :2]), 0.1)


def _three_clouds() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """At 0.5 m: cloud 0 has voxels (0,0,0) [2 points] and (2,1,0); cloud 1 is empty; cloud 2
    has voxels (-1,4,0) and (1,5,-1), i.e. (0,0,1) and (2,1,0) from its minimum (-1,4,-1)."""
    points = [torch.tensor([[0.1, 0.1, 0.1], [0.4, 0.2, 0.3], [1.2, 0.7, 0.1]]),
              torch.zeros((0, 3)),
              torch.tensor([[-0.3, 2.1, 0.0], [0.6, 2.6, -0.1]])]
    features = [torch.tensor([[1.0, 10.0], [3.0, 20.0], [5.0, 30.0]]), torch.zeros((0, 2)),
                torch.tensor([[7.0, 0.0], [9.0, 4.0]])]
    return points, features


def test_voxelize_batch_stacks_the_clouds_with_mean_features():
    points, features = _three_clouds()
    batch = voxelize_batch(points, features, 0.5, shape_multiple=2)
    assert batch.coords.tolist() == [[0, 0, 0, 0], [0, 2, 1, 0], [2, 0, 0, 1], [2, 2, 1, 0]]
    assert batch.inverse.tolist() == [0, 0, 1, 2, 3] and batch.inverse.dtype == torch.int64
    assert batch.features.tolist() == [[2.0, 15.0], [5.0, 30.0], [7.0, 0.0], [9.0, 4.0]]
    assert batch.point_offsets.tolist() == [0, 3, 3, 5]
    assert batch.voxel_offsets.tolist() == [0, 2, 2, 4]
    assert batch.origin_index.tolist() == [[0, 0, 0], [0, 0, 0], [-1, 4, -1]]
    assert batch.spatial_shape == (4, 2, 2)  # extents (3, 2, 1) and (3, 2, 2), rounded up to 2
    assert voxelize_batch(points, features, 0.5).spatial_shape == (16, 16, 16)
    assert devoxelize(batch.features, batch.inverse)[:, 0].tolist() == [2.0, 2.0, 5.0, 7.0, 9.0]
    one = voxelize_batch(points[:1], features[:1], 0.5)  # the live node's batch of one
    assert one.coords.tolist() == [[0, 0, 0, 0], [0, 2, 1, 0]] and one.batch_size == 1
    with pytest.raises(ValueError, match='non-finite'):
        voxelize_batch([torch.tensor([[float('nan'), 0.0, 0.0]])], [torch.zeros(1, 1)], 0.1)
    with pytest.raises(ValueError, match='one features tensor per point cloud'):
        voxelize_batch(points, features[:2], 0.5)


def test_voxelize_batch_global_origin():
    """per_sample_origin=False: every cloud counted from the batch minimum (-1, 0, -1), so
    cloud 0 moves by (1, 0, 1) and cloud 2 by (0, 4, 0); voxels and inverse maps stay."""
    points, features = _three_clouds()
    batch = voxelize_batch(points, features, 0.5, per_sample_origin=False, shape_multiple=2)
    assert batch.coords.tolist() == [[0, 1, 0, 1], [0, 3, 1, 1], [2, 0, 4, 1], [2, 2, 5, 0]]
    assert batch.origin_index.tolist() == [[-1, 0, -1]] * 3
    assert batch.inverse.tolist() == [0, 0, 1, 2, 3]
    assert batch.spatial_shape == (4, 6, 2)  # extents (4, 2, 2) and (3, 6, 2)


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
