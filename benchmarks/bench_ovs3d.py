"""3D-OVS speed at the reference's sizes: stage A and stage B iterations, a rendered view, the
commuting feature head, and the FDA term's memory against the naive pairwise tensor.

The field is the reference's TensoRF-VM at its initial grid (~128^3 voxels on the NDC box,
16/4/4 density and 48/12/12 appearance components) with random weights and a density that fills
the box; rays are random NDC rays, teachers random tensors of the reference's shapes. So the
numbers are the cost of the computation, not of a converged scene (a converged field with an
alpha mask skips empty space and is faster).

* stage A: 4096 rays per step, samples per ray from the grid (482);
* stage B: 4096 CLIP rays (+ RGB after the joint start) and 8 patches x 32 x 32 FDA rays, 512-d
  features, 3 scales, 6 classes;
* one rendered 180 x 135 view (a 1440 x 1080 capture at x8) with the CLIP feature, per chunk of
  4096 rays, at the evaluation's sample count of the initial grid;
* the head applied after compositing (27 channels composited) vs per sample (512 channels);
* FDA memory: from results/ovs3d_fda.json (benchmarks/bench_ovs3d_fda.py measures it).

CUDA too when available (--devices). Writes benchmarks/results/ovs3d.json.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from _common import RESULTS_DIR, single_core_parser, write_results

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cns_ros.ovs3d.model import Ovs3dModel
from cns_ros.ovs3d.projection import Projection
from cns_ros.ovs3d.ray_data import ClipRays, PatchSource, RayTable
from cns_ros.ovs3d.render import (
    RenderConfig,
    composite_weights,
    render_chunked,
    sample_parameters,
    samples_per_ray,
)
from cns_ros.ovs3d.training import Ovs3dConfig, StageA, StageB, build_adam

PROJECTION = Projection('ndc', 1080, 1440, 1150.0)


def _model(device: torch.device, semantic: bool) -> Ovs3dModel:
    torch.manual_seed(0)
    model = Ovs3dModel(Ovs3dConfig().field, PROJECTION)
    for grid in model.field.density.planes:
        grid.data.abs_().add_(0.05)
    for grid in model.field.density.lines:
        grid.data.abs_().add_(0.05)
    if semantic:
        model.add_semantic_heads(512, 3)
    return model.to(device)


def _rays(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    origins = torch.rand(count, 3) * 2 - 1
    origins[:, 2] = -1.0
    directions = torch.randn(count, 3) * 0.05
    directions[:, 2] = 2.0
    return origins, directions


def _time(step: Callable[[], None], repeats: int, device: torch.device) -> float:
    step()  # warm-up
    if device.type == 'cuda':
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    if device.type == 'cuda':
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def _stage_step(stage: Any, iteration: int) -> Callable[[], None]:
    stage.events(iteration)
    optimizer = build_adam(stage.param_groups())
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        out = stage.loss(iteration, generator)
        optimizer.zero_grad(set_to_none=True)
        out.total.backward()
        optimizer.step()
    return step


def stage_speeds(device: torch.device, repeats: int) -> dict[str, float]:
    """Seconds per iteration of stage A, stage B before and after the joint start."""
    config = Ovs3dConfig()
    origins, directions = _rays(200_000)
    table = RayTable(origins, directions, torch.rand(200_000, 3))
    out = {'stage_a_s_per_it': _time(_stage_step(StageA(_model(device, False), table, config),
                                                 1), repeats, device)}
    clip = ClipRays(table, torch.nn.functional.normalize(torch.randn(200_000, 3, 512), dim=-1)
                    .half(), torch.rand(200_000, 3, 6))
    o, d = _rays(4 * 40 * 40)
    patches = PatchSource(torch.cat([o, d], -1).view(4, 40, 40, 6), torch.randn(4, 40, 40, 768))
    text = torch.nn.functional.normalize(torch.randn(6, 512), dim=-1)
    for name, iteration in (('stage_b_s_per_it', 1), ('stage_b_joint_s_per_it', 5001)):
        stage = StageB(_model(device, True), clip, patches, text, config)
        out[name] = _time(_stage_step(stage, iteration), repeats, device)
    return out


@torch.no_grad()
def view_and_head(device: torch.device, repeats: int) -> dict[str, float]:
    """ms per rendered 180 x 135 view with features; composited vs per-sample head."""
    model = _model(device, True)
    config = RenderConfig(chunk=4096)
    n = samples_per_ray(model.field.resolution, config)
    origins, directions = _rays(180 * 135)
    origins, directions = origins.to(device), directions.to(device)

    def view() -> None:
        out = render_chunked(model.field, origins, directions, config, n,
                             outputs=('rgb', 'appearance', 'opacity'))
        model.rendered_features(out)
    o, d = origins[:1024], directions[:1024]
    t = sample_parameters(len(o), n, config.near_far, False, device)
    points = o[:, None] + t[..., None] * d[:, None]
    deltas = torch.cat([t[:, 1:] - t[:, :-1], torch.zeros_like(t[:, :1])], 1) * d.norm(
        dim=-1, keepdim=True)
    weights = composite_weights(model.field.sigma(points.reshape(-1, 3)).view(t.shape), deltas,
                                config.distance_scale)
    live = weights > config.weight_threshold

    def composited() -> None:  # ours: 27 channels composited, the head once per ray
        full = torch.zeros(*live.shape, 27, device=device)
        full[live] = model.field.appearance_feature(points[live])
        model.head.composited((weights[..., None] * full).sum(1), weights.sum(1))

    def per_sample() -> None:  # the reference's order: the 512-d head at every live sample
        full = torch.zeros(*live.shape, 512, device=device)
        full[live] = model.head(model.field.appearance_feature(points[live]))
        (weights[..., None] * full).sum(1)
    return {'samples_per_ray': n,
            'view_180x135_ms': 1e3 * _time(view, max(1, repeats // 2), device),
            'live_samples_per_ray': float(live.sum()) / len(o),
            'head_composited_ms_per_1024_rays': 1e3 * _time(composited, repeats, device),
            'head_per_sample_ms_per_1024_rays': 1e3 * _time(per_sample, repeats, device)}


def fda_memory() -> dict[str, Any] | None:
    """The FDA memory of both divergences vs the naive tensor, from bench_ovs3d_fda's results
    (None when it has not run)."""
    path = RESULTS_DIR / 'ovs3d_fda.json'
    if not path.is_file():
        return None
    cases = {(c['case'], c['chunk']): c['peak_extra_mb'] for c in
             json.loads(path.read_text())['cases'] if c['device'] == 'cpu'}
    out = {}
    for divergence in ('kl', 'js'):
        ours = cases.get((f'fda_loss {divergence}', 128))
        naive = cases.get((f'fda_naive {divergence}', 128))
        if ours and naive:
            out[divergence] = {'ours_mb': ours, 'naive_mb': naive, 'naive_over_ours': naive / ours}
    return out or None


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = single_core_parser(__doc__.splitlines()[0], repeats=3)
    parser.add_argument('--devices', default='cpu,cuda', help='devices to measure (if present)')
    args = parser.parse_args(argv)
    results: dict[str, Any] = {'devices': {}}
    for name in args.devices.split(','):
        if name == 'cuda' and not torch.cuda.is_available():
            continue
        device = torch.device(name)
        results['devices'][name] = {**stage_speeds(device, args.repeats),
                                    **view_and_head(device, args.repeats)}
        for key, value in results['devices'][name].items():
            print(f'{name:5s} {key:36s} {value:10.3f}')
    results['fda_memory'] = fda_memory()
    print(f'FDA memory: {results["fda_memory"]}')
    write_results('ovs3d', results, args.out_dir)
    return results


if __name__ == '__main__':
    main()
