"""3D-OVS radiance field: VM sampling, compositing, NDC rays, the commuting feature head."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from cns_ros.ovs3d.field import FieldConfig, TensorVM, VMGrid, grid_resolution, upsample_schedule
from cns_ros.ovs3d.rays import (
    ndc_rays,
    nerf_from_optical,
    pixel_directions,
    world_from_ndc,
    world_rays,
)
from cns_ros.ovs3d.render import RenderConfig, composite_weights, render_rays
from cns_ros.ovs3d.semantic import FeatureHead, SelectionVolume

TINY = FieldConfig(density_components=(3, 2, 2), appearance_components=(4, 3, 2),
                   appearance_dim=5, mlp_width=8, voxels_init=8 ** 3, voxels_final=16 ** 3)


def test_vm_sampling_equals_trilinear_on_the_dense_grid() -> None:
    torch.manual_seed(0)
    grid = VMGrid((3, 2, 2), [5, 7, 6])
    dense = grid.dense()  # [R, X, Y, Z]
    assert dense.shape == (7, 5, 7, 6)
    xyz = torch.rand(50, 3) * 2 - 1
    # grid_sample 3D: input [1, C, D, H, W] indexed by (x -> W, y -> H, z -> D)
    volume = dense.permute(0, 3, 2, 1)[None]
    reference = F.grid_sample(volume, xyz.view(1, -1, 1, 1, 3), align_corners=True)
    reference = reference[0, :, :, 0, 0].T
    torch.testing.assert_close(grid.sample(xyz), reference, atol=1e-5, rtol=1e-5)


def test_vm_sampling_at_a_vertex_is_plane_times_line() -> None:
    torch.manual_seed(1)
    grid = VMGrid((1, 1, 1), [4, 5, 6])
    i, j, k = 1, 3, 2
    xyz = torch.tensor([[2 * i / 3 - 1, 2 * j / 4 - 1, 2 * k / 5 - 1]])
    got = grid.sample(xyz)[0]
    xy = grid.planes[0][0, 0, j, i] * grid.lines[0][0, 0, k, 0]
    xz = grid.planes[1][0, 0, k, i] * grid.lines[1][0, 0, j, 0]
    yz = grid.planes[2][0, 0, k, j] * grid.lines[2][0, 0, i, 0]
    torch.testing.assert_close(got, torch.stack([xy, xz, yz]))


def test_resize_keeps_values_at_shared_vertices() -> None:
    torch.manual_seed(2)
    grid = VMGrid((2, 2, 2), [3, 3, 3])
    corners = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    before = grid.sample(corners)
    grid.resize([5, 5, 5])
    assert grid.resolution == [5, 5, 5]
    torch.testing.assert_close(grid.sample(corners), before, atol=1e-6, rtol=1e-6)


def test_grid_resolution_and_schedule_match_the_reference_numbers() -> None:
    aabb = torch.tensor([[-2.0, -2.0, -1.0], [2.0, 2.0, 1.0]])
    # ovs3d.md section 3: 128^3 voxels on the NDC box give [161, 161, 80]
    assert grid_resolution(2097156, aabb) == [161, 161, 80]
    counts = upsample_schedule(FieldConfig(), 4)
    assert counts[-1] == 262144000
    assert [round(c ** (1 / 3)) for c in counts] == [191, 286, 428, 640]
    assert [grid_resolution(c, aabb) for c in counts] == [
        [241, 241, 120], [360, 360, 180], [539, 539, 269], [806, 806, 403]]


def test_composite_weights_for_constant_density() -> None:
    sigma, delta, scale, n = 0.3, 0.05, 25.0, 40
    weights = composite_weights(torch.full((1, n), sigma), torch.full((1, n), delta), scale)[0]
    a = 1 - math.exp(-sigma * delta * scale)
    expected = torch.tensor([a * (1 - a) ** i for i in range(n)])
    torch.testing.assert_close(weights, expected.float(), atol=1e-6, rtol=1e-5)
    assert float(weights.sum()) == pytest.approx(1 - (1 - a) ** n, abs=1e-5)


def test_ndc_rays_follow_the_projection_formulas() -> None:
    height, width, focal = 30, 40, 35.0
    c2w = torch.tensor([[1.0, 0, 0, 0.2], [0, 1, 0, -0.1], [0, 0, 1, 0.5]])
    dirs = pixel_directions(height, width, focal)
    origins, directions = world_rays(dirs[::7, ::9], c2w)
    o_ndc, d_ndc = ndc_rays(origins, directions, height, width, focal, near=1.0)
    for depth in (1.5, 3.0, 20.0):  # world points on each ray, in front of the near plane
        s = (depth + origins[:, 2]) / -directions[:, 2]
        p = origins + s[:, None] * directions
        ndc = torch.stack([-2 * focal / width * p[:, 0] / p[:, 2],
                           -2 * focal / height * p[:, 1] / p[:, 2], 1 + 2 / p[:, 2]], -1)
        t = (ndc[:, 2] - o_ndc[:, 2]) / d_ndc[:, 2]
        assert bool(((t >= 0) & (t <= 1)).all())
        torch.testing.assert_close(o_ndc + t[:, None] * d_ndc, ndc, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(world_from_ndc(ndc, height, width, focal), p,
                                   atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(o_ndc[:, 2], torch.full_like(o_ndc[:, 2], -1.0))


def test_pixel_directions_use_pixel_centres_and_minus_z() -> None:
    dirs = pixel_directions(2, 4, 10.0)
    torch.testing.assert_close(dirs[0, 0], torch.tensor([-0.15, 0.05, -1.0]))  # c = (2, 1)
    blocks = pixel_directions(2, 2, 10.0, center=(8.0, 8.0), step=8.0, offset=4.0)
    torch.testing.assert_close(blocks[1, 1], torch.tensor([0.4, -0.4, -1.0]))


def test_nerf_from_optical_flips_y_and_z() -> None:
    optical = torch.eye(3, 4)
    nerf = nerf_from_optical(optical)
    torch.testing.assert_close(nerf[:, :3], torch.diag(torch.tensor([1.0, -1.0, -1.0])))


def test_feature_head_commutes_with_compositing() -> None:
    torch.manual_seed(3)
    head = FeatureHead(appearance_dim=5, hidden=7, dim=11)
    weights = torch.rand(4, 9) * 0.2
    appearance = torch.randn(4, 9, 5)
    per_sample = (weights[..., None] * head(appearance.view(-1, 5)).view(4, 9, 11)).sum(1)
    composited = head.composited((weights[..., None] * appearance).sum(1), weights.sum(1))
    torch.testing.assert_close(composited, per_sample, atol=1e-5, rtol=1e-5)
    weight, bias = head.fused()
    a = torch.randn(3, 5)
    torch.testing.assert_close(a @ weight.T + bias, head(a), atol=1e-5, rtol=1e-5)


def test_empty_field_renders_the_background() -> None:
    torch.manual_seed(4)
    field = TensorVM(TINY, torch.tensor([[-1.0, -1, -1], [1, 1, 1]]))
    for grid in field.density.planes:
        grid.data.zero_()
    origins = torch.tensor([[0.0, 0, -3], [0.5, 0.5, -3]])
    directions = torch.tensor([[0.0, 0, 1], [0, 0, 1]])
    out = render_rays(field, origins, directions, RenderConfig(near_far=(0.0, 6.0)), 32,
                      outputs=('rgb', 'opacity', 'appearance'), white_background=True)
    torch.testing.assert_close(out['opacity'], torch.zeros(2))
    torch.testing.assert_close(out['rgb'], torch.ones(2, 3))
    torch.testing.assert_close(out['appearance'], torch.zeros(2, 5))


def test_rendered_selection_and_appearance_match_explicit_sums() -> None:
    torch.manual_seed(5)
    field = TensorVM(TINY, torch.tensor([[-1.0, -1, -1], [1, 1, 1]]))
    for grid in field.density.planes:
        grid.data.abs_().add_(0.3)
    for grid in field.density.lines:
        grid.data.abs_().add_(0.3)
    volume = SelectionVolume(field.resolution, components=(2, 2, 2))
    origins = torch.tensor([[0.1, -0.2, -3.0]])
    directions = torch.tensor([[0.0, 0.1, 1.0]])
    config = RenderConfig(near_far=(1.0, 5.0), weight_threshold=0.0)
    out = render_rays(field, origins, directions, config, 16,
                      outputs=('appearance', 'selection', 'opacity'), selection=volume)
    t = torch.linspace(1.0, 5.0, 16)
    points = origins + t[:, None] * directions
    inside = (points.abs() <= 1).all(-1)
    sigma = torch.where(inside, field.sigma(points), torch.zeros(16))
    deltas = torch.cat([t[1:] - t[:-1], torch.zeros(1)]) * directions.norm()
    w = composite_weights(sigma[None], deltas[None], 25.0)[0]
    a = torch.where(inside[:, None], field.appearance_feature(points), torch.zeros(1))
    s = torch.where(inside[:, None], volume(field.normalize(points)), torch.zeros(1))
    torch.testing.assert_close(out['appearance'][0], (w[:, None] * a).sum(0), atol=1e-5,
                               rtol=1e-4)
    torch.testing.assert_close(out['selection'][0], (w[:, None] * s).sum(0), atol=1e-5,
                               rtol=1e-4)
    assert float(out['opacity'][0].detach()) > 0.5


def test_selection_volume_learns_the_scale_that_matches_the_feature() -> None:
    """Rendered features equal CLIP scale 1 of every ray; distillation through the selection
    volume must make scale 1 the selected one everywhere. The composited selection lies in
    [0, sum w] = [0, 1], so a perfect choice gives softmax weight e / (e + 2) = 0.576."""
    from cns_ros.ovs3d.losses import distillation_loss, selected_target
    from cns_ros.ovs3d.semantic import selection_weights

    torch.manual_seed(6)
    rays, samples = 64, 8
    clip = F.normalize(torch.randn(rays, 3, 16), dim=-1)
    feature = clip[:, 1]
    points = torch.rand(rays, samples, 3) * 2 - 1
    weights = torch.softmax(torch.randn(rays, samples), dim=-1)  # each ray sums to 1
    volume = SelectionVolume([6, 6, 6], components=(2, 2, 2))
    optimizer = torch.optim.Adam(volume.parameters(), lr=0.05)

    def select() -> torch.Tensor:
        values = volume(points.view(-1, 3)).view(rays, samples, 3)
        return selection_weights((weights[..., None] * values).sum(1))
    before = select().detach()
    for _ in range(150):
        loss = distillation_loss(feature, selected_target(clip, select()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = select().detach()
    assert bool((after.argmax(dim=1) == 1).all())
    assert float(after[:, 1].min()) > 0.55 > float(before[:, 1].max())


def test_shrink_crops_the_box_to_the_occupied_vertices_and_keeps_the_field() -> None:
    torch.manual_seed(7)
    field = TensorVM(TINY, torch.tensor([[-1.0, -1, -1], [1, 1, 1]]), resolution=[9, 9, 5])
    occupied = torch.zeros(9, 9, 5, dtype=torch.bool)
    occupied[2:6, 1:8, 1:3] = True  # vertices x 2..5, y 1..7, z 1..2
    low, size = torch.tensor([-0.5, -0.75, -0.5]), torch.tensor([0.75, 1.5, 0.5])
    inside = low + torch.rand(200, 3) * size
    before_sigma, before_app = field.sigma(inside), field.appearance_feature(inside)
    assert field.shrink(occupied)
    # vertex i of 9 over [-1, 1] sits at -1 + i / 4; of 5 at -1 + i / 2
    torch.testing.assert_close(field.aabb, torch.tensor([[-0.5, -0.75, -0.5], [0.25, 0.75, 0.0]]))
    assert field.resolution == [4, 7, 2]
    torch.testing.assert_close(field.sigma(inside), before_sigma, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(field.appearance_feature(inside), before_app, atol=1e-5,
                               rtol=1e-5)
    assert not field.shrink(torch.ones(4, 7, 2, dtype=torch.bool))  # already tight
