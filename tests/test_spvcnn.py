"""SPVCNN and its point <-> voxel maps (cns_ros.models.point_voxel, cns_ros.models.spvcnn).

The maps are checked against hand-computed trilinear weights on a tiny grid; the network (tiny
width, RANDOM weights) for shapes, dtypes, gradients, per-point outputs, invariance to the
order of the points, and its full-size parameter count against a formula written from the
reference widths (reference/cns_clip2scene.md A4.1).
"""

from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip('torch')
pytest.importorskip('spconv')

from cns_ros.models.build import build_model, count_parameters, model_config  # noqa: E402
from cns_ros.models.minkunet import assemble_point_features  # noqa: E402
from cns_ros.models.point_voxel import PointVoxelMaps  # noqa: E402
from cns_ros.models.sparse import SparseBatch, voxelize_batch  # noqa: E402

pytestmark = pytest.mark.usefixtures('one_torch_thread')

TINY = {'channel_scale': 0.125, 'out_dim': 16, 'local_head': True,
        'input_features': ('intensity', 'xyz'), 'voxel_size': 0.25}

# one cloud, voxel size 0.5 m: occupied level-0 voxels (0,0,0), (1,0,0), (0,2,0) and (1,2,1)
_POINTS = [
    (0.25, 0.25, 0.25),    # 0: centre of (0,0,0)
    (0.75, 0.25, 0.25),    # 1: centre of (1,0,0)
    (0.25, 1.25, 0.25),    # 2: centre of (0,2,0)
    (0.50, 0.25, 0.25),    # 3: halfway between the centres of (0,0,0) and (1,0,0)
    (0.375, 0.25, 0.25),   # 4: a quarter of the way from (0,0,0) to (1,0,0)
    (0.25, 0.40, 0.25),    # 5: towards (0,1,0), which is empty
    (0.375, 0.25, 0.375),  # 6: towards (1,0,0), (0,0,1) and (1,0,1); only (1,0,0) occupied
    (0.50, 1.00, 0.50),    # 7: in (1,2,1), at the corner shared by 8 voxels
]


def _voxel_value(i: int, j: int, k: int, cloud: int = 0) -> list[float]:
    """A distinct hand-set 2-channel feature per voxel (and cloud)."""
    code = 100 * i + 10 * j + k + 1 + 1000 * cloud
    return [float(code), -0.5 * code]


def _tiny_grid_batch(shift=(3.0, -2.0, 5.0)) -> SparseBatch:
    """The points as cloud 0, and shifted by `shift` metres (whole voxels) as cloud 1."""
    points = torch.tensor(_POINTS, dtype=torch.float32)
    clouds = [points, points + torch.tensor(shift)]
    return voxelize_batch(clouds, [torch.zeros(len(points), 1)] * 2, 0.5, shape_multiple=2)


def test_trilinear_devoxelization_matches_hand_computed_weights():
    batch = _tiny_grid_batch()
    coords = batch.coords.tolist()
    assert [c[1:] for c in coords[:4]] == [[0, 0, 0], [0, 2, 0], [1, 0, 0], [1, 2, 1]]
    feats = torch.tensor([_voxel_value(*c[1:], cloud=c[0]) for c in coords])
    level0 = PointVoxelMaps(batch).level(0, batch.coords)
    out = level0.to_points(feats)
    assert out.shape == (16, 2) and out.dtype == torch.float32
    v = {key: torch.tensor(_voxel_value(*key)) for key in
         ((0, 0, 0), (1, 0, 0), (0, 2, 0), (1, 2, 1))}
    expected = torch.stack([
        v[0, 0, 0], v[1, 0, 0], v[0, 2, 0],       # voxel centres: exactly their voxel
        (v[0, 0, 0] + v[1, 0, 0]) / 2,            # halfway: the mean
        0.75 * v[0, 0, 0] + 0.25 * v[1, 0, 0],    # w = (0.25, 0, 0)
        v[0, 0, 0],                               # (0,1,0) is empty: weight renormalised away
        # w = (0.25, 0, 0.25): (0,0,0) 0.5625, (1,0,0) 0.1875, the two z = 1 voxels empty
        (0.5625 * v[0, 0, 0] + 0.1875 * v[1, 0, 0]) / 0.75,
        (v[0, 2, 0] + v[1, 2, 1]) / 2,            # 8 corners at 1/8: 2 occupied
    ])
    torch.testing.assert_close(out[:8], expected, rtol=0, atol=1e-5)
    # cloud 1 (the same points, shifted by whole voxels) reads only cloud 1's voxels
    cloud1 = torch.tensor([[1000.0, -500.0]])
    torch.testing.assert_close(out[8:], expected + cloud1, rtol=0, atol=1e-4)


def test_trilinear_devoxelization_on_a_coarser_level_in_any_row_order():
    """Level 1 (1 m voxels): (1,2,1) >> 1 = (0,1,0). Rows deliberately not sorted."""
    batch = _tiny_grid_batch()
    indices = torch.tensor([[1, 0, 1, 0], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]],
                           dtype=torch.int32)
    feats = torch.tensor([[10.0], [1.0], [20.0], [3.0]])
    level1 = PointVoxelMaps(batch).level(1, indices)
    out = level1.to_points(feats)[:, 0]
    # point 0 at u = (0.5, 0.5, 0.5): w = u / 2 - 0.5 = (-0.25, ...): only its own voxel
    # point 7 at u = (1, 2, 1): w = (0, 0.5, 0): half (0,0,0) = 3, half (0,1,0) = 1
    assert out[0].item() == pytest.approx(3.0, abs=1e-6)
    assert out[7].item() == pytest.approx(2.0, abs=1e-6)
    assert out[15].item() == pytest.approx(15.0, abs=1e-5)  # cloud 1: (10 + 20) / 2
    assert level1.point_rows[:8].tolist() == [3, 3, 1, 3, 3, 3, 3, 1]


def test_points_to_voxels_is_the_mean_of_each_voxels_points():
    batch = _tiny_grid_batch()
    values = torch.arange(16, dtype=torch.float32).unsqueeze(1)
    level0 = PointVoxelMaps(batch).level(0, batch.coords)
    out = level0.to_voxels(values)[:, 0].tolist()
    # cloud 0 rows (0,0,0): points 0, 4, 5, 6; (0,2,0): 2; (1,0,0): 1, 3; (1,2,1): 7
    assert out[:4] == [(0 + 4 + 5 + 6) / 4, 2.0, (1 + 3) / 2, 7.0]
    assert out[4:] == [v + 8 for v in out[:4]]
    level1 = PointVoxelMaps(batch).level(1, torch.tensor([[0, 0, 1, 0], [0, 0, 0, 0],
                                                          [1, 0, 0, 0], [1, 0, 1, 0]]))
    means = level1.to_voxels(values)[:2, 0].tolist()
    assert means == pytest.approx([(2 + 7) / 2, (0 + 1 + 3 + 4 + 5 + 6) / 6], rel=1e-6)


def test_point_voxel_maps_need_the_points():
    batch = _tiny_grid_batch()
    bare = SparseBatch(batch.coords, batch.features, batch.inverse, batch.point_offsets,
                       batch.voxel_offsets, batch.origin_index, batch.spatial_shape,
                       batch.voxel_size)
    with pytest.raises(ValueError, match='needs the batch'):
        PointVoxelMaps(bare)
    net = build_model('spvcnn', model_config('spvcnn', **TINY))
    bare = voxelize_batch([torch.rand(50, 3)], [torch.rand(50, 4)], 0.25)
    with pytest.raises(ValueError, match='needs the batch'):
        net(dataclasses.replace(bare, points=None))
    with pytest.raises(ValueError, match='input channels'):
        net(voxelize_batch([torch.rand(50, 3)], [torch.rand(50, 1)], 0.25))
    with pytest.raises(ValueError, match='multiple of 16'):
        net(voxelize_batch([torch.rand(50, 3)], [torch.rand(50, 4)], 0.25, shape_multiple=3))


def _clouds(seed: int, sizes=(700, 500)) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    points = [torch.rand((n, 3), generator=gen) * torch.tensor([8.0, 8.0, 2.0]) for n in sizes]
    feats = [assemble_point_features({'intensity': torch.rand(n, generator=gen) * 255,
                                      'xyz': p}, ('intensity', 'xyz'))
             for n, p in zip(sizes, points, strict=True)]
    return points, feats


def test_spvcnn_outputs_one_row_per_point_and_trains():
    torch.manual_seed(0)
    net = build_model('spvcnn', model_config('spvcnn', **TINY)).train()
    points, feats = _clouds(1)
    points[0][0], points[0][1] = torch.tensor([1.1] * 3), torch.tensor([1.2] * 3)  # 1 voxel
    batch = net.voxelize(points, feats)
    assert batch.inverse[0] == batch.inverse[1]
    out = net(batch)
    n = sum(len(p) for p in points)
    assert out.features.shape == (n, 16) and out.local.shape == (n, 16)
    assert out.latent.shape == (n, net.config.feature_dim) == (n, 32 + 16 + 12)
    assert {t.dtype for t in (out.features, out.latent, out.local)} == {torch.float32}
    assert not torch.equal(out.latent[0], out.latent[1])  # per point, not per voxel
    net.classifier.set_text_embeddings(torch.nn.functional.normalize(torch.randn(5, 16), dim=1))
    logits = net.classifier(out.features)
    assert logits.shape == (n, 5) and torch.isfinite(logits).all()
    (logits.logsumexp(1).mean() + out.local.square().mean()).backward()
    for param in (net.stem[0][0].backend_kernel, net.point_transforms[0][0].weight,
                  net.encoder[3][0].conv1.backend_kernel, net.decoder[3][1].conv2.backend_kernel):
        assert param.grad is not None and param.grad.abs().sum() > 0
    net.eval()
    with torch.no_grad():
        latent, rows = net.latent_rows(batch)
        torch.testing.assert_close(latent, net(batch).latent)
    assert rows is None


def test_permuting_the_points_permutes_the_outputs():
    torch.manual_seed(2)
    net = build_model('spvcnn', model_config('spvcnn', **TINY)).eval()
    points, feats = _clouds(3)
    gen = torch.Generator().manual_seed(4)
    perms = [torch.randperm(len(p), generator=gen) for p in points]
    with torch.no_grad():
        out = net(net.voxelize(points, feats))
        permuted = net(net.voxelize([p[i] for p, i in zip(points, perms, strict=True)],
                                    [f[i] for f, i in zip(feats, perms, strict=True)]))
    order = torch.cat([perms[0], perms[1] + len(points[0])])
    for name in ('features', 'latent', 'local'):
        torch.testing.assert_close(getattr(permuted, name), getattr(out, name)[order],
                                   rtol=1e-4, atol=1e-5)


def test_full_size_parameter_count_follows_the_reference_widths():
    """A4.1: cs = (32, 32, 64, 128, 256, 256, 128, 96, 96), 2 residual blocks per stage,
    point MLPs 32->256->128->96 (Linear + BN), heads 480 -> 512; 1 input channel."""
    cs = (32, 32, 64, 128, 256, 256, 128, 96, 96)

    def conv(k, a, b):
        return k ** 3 * a * b + 2 * b   # bias-free conv + BatchNorm

    def residual(a, b):
        return conv(3, a, b) + conv(3, b, b) + (a * b + 2 * b if a != b else 0)

    total = conv(3, 1, 32) + conv(3, 32, 32)
    for level in range(4):
        total += conv(2, cs[level], cs[level]) + residual(cs[level], cs[level + 1])
        total += residual(cs[level + 1], cs[level + 1])
    for i, skip in enumerate((cs[3], cs[2], cs[1], cs[0])):
        width = cs[5 + i]
        total += conv(2, cs[4 + i], width) + residual(width + skip, width)
        total += residual(width, width)
    total += sum(a * b + b + 2 * b for a, b in ((32, 256), (256, 128), (128, 96)))
    head = 480 * 512 + 512
    assert count_parameters(build_model('spvcnn')) == total + head == 22_019_840
    local = build_model('spvcnn', model_config('spvcnn', local_head=True))
    assert count_parameters(local) == total + 2 * head
