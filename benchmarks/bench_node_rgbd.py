"""Indoor node latency: one 640x480 RGB-D frame through segment_node's ROS-free core.

The frame is what ``input_mode: rgbd_images`` receives from a RealSense-like camera: a 16UC1
depth image in millimetres aligned to an rgb8 colour image, and the colour CameraInfo (fx = fy
= 525 px, the principal point at the centre; no distortion). The scene is ray-cast here: a 6 x
5 x 2.8 m room seen from 1.4 m above the floor (floor, ceiling, three walls, a table and a
cabinet), textured with noise, with 3 % of the pixels without depth (dropout) plus a
no-return patch on the wall (a window), as stereo depth has.

Per frame, timed as the node's worker runs it (wall and worker-thread CPU ms, median of
``--repeats``):

* ``decode``: :func:`cns_ros.ros.rgbd_io.decode_rgbd_images` (16UC1 -> metres, colour ->
  RGB, back-projection with the cached pixel rays, checks); ``backprojection`` is
  :func:`cns_ros.rgbd.depth_to_points` alone;
* ``voxelize``, ``network``, ``classify``: :meth:`cns_ros.segmenter.Segmenter.segment`'s stages
  (5 cm voxels, the rgb input in [-1, 1]; the projection head folded with the 20 ScanNet text
  embeddings); ``voxelize`` includes turning the points z-up on the device, as
  ``config/segment_rgbd.yaml`` (``network_frame: body``) has the node do;
* ``encode``: the organized ``/cns/labeled_points`` cloud and the ``mono16`` label image;
* ``total``: all of it (what the node adds on top is the DDS publish).

Networks: the reference indoor ones with rgb input, D = 512, RANDOM weights (flagged in the
output; labels meaningless, compute as in a trained model): MinkUNet14A (CLIP2Scene on
ScanNet) and Res16UNet34C (``minkunet34c``, CNS on ScanNet). Also: points per frame, points with
depth, voxels at 0.05 m.

CPU: one torch thread on one pinned core by default (``--num-threads``, ``--all-cores``).
``--device cuda``: the same on a GPU (float16 autocast for the networks, as the node's default;
``--fp32`` to turn it off); the CUDA stages are timed with synchronization.

Writes ``benchmarks/results/node_rgbd.json`` (``--name``).

Usage: ``python benchmarks/bench_node_rgbd.py [--models minkunet14a,minkunet34c]
[--device cpu|cuda|auto] [--repeats R] [--num-threads N] [--all-cores] [--fp32]
[--out-dir DIR] [--name NAME]``
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from _common import pin_to_one_core, single_core_parser, time_call, write_results

WIDTH, HEIGHT = 640, 480
K = np.array([[525.0, 0.0, 319.5], [0.0, 525.0, 239.5], [0.0, 0.0, 1.0]])
MODELS = {'minkunet14a': 'MinkUNet14A (CLIP2Scene, ScanNet)',
          'minkunet34c': 'Res16UNet34C (CNS, ScanNet)'}
VOXEL_SIZE = 0.05
OUT_DIM = 512


def _box_hit(rays: np.ndarray, low: Sequence[float], high: Sequence[float]) -> np.ndarray:
    """Ray parameter t (= depth, rays have z = 1) of the first hit of an axis-aligned box in
    the camera frame, inf where a ray misses it (slab method)."""
    with np.errstate(divide='ignore', invalid='ignore'):  # rays start at the origin
        t0 = np.asarray(low) / rays
        t1 = np.asarray(high) / rays
    near = np.nanmax(np.minimum(t0, t1), axis=-1)
    far = np.nanmin(np.maximum(t0, t1), axis=-1)
    return np.where((near <= far) & (near > 0), near, np.inf)


def room_frame(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) uint16 depth in mm (0 = none) and (H, W, 3) uint8 RGB of the room (see the
    module docstring), in the optical frame (x right, y down, z forward) of a level camera."""
    from cns_ros.rgbd import pixel_rays

    rng = np.random.default_rng(seed)
    rays = pixel_rays(K, WIDTH, HEIGHT).astype(np.float64)
    x, y = rays[..., 0], rays[..., 1]
    with np.errstate(divide='ignore'):
        planes = {'floor': np.where(y > 0, 1.4 / y, np.inf),
                  'ceiling': np.where(y < 0, -1.4 / y, np.inf),
                  'back wall': np.full(x.shape, 4.5),
                  'left wall': np.where(x < 0, -2.5 / x, np.inf),
                  'right wall': np.where(x > 0, 3.0 / x, np.inf)}
    planes['table'] = _box_hit(rays, (-0.8, 0.65, 1.8), (0.6, 0.7, 2.8))
    planes['cabinet'] = _box_hit(rays, (1.8, -0.6, 3.0), (3.0, 1.4, 4.0))
    stack = np.stack(list(planes.values()))
    surface = np.argmin(stack, axis=0)
    depth = np.min(stack, axis=0)
    base = np.array([[150, 110, 70], [235, 235, 230], [200, 190, 170], [190, 180, 160],
                     [195, 185, 165], [120, 80, 40], [90, 90, 110]], np.float64)
    rgb = base[surface] + rng.normal(0.0, 12.0, (HEIGHT, WIDTH, 3))
    depth = depth * (1.0 + rng.normal(0.0, 0.002, depth.shape))  # stereo noise
    depth[rng.random(depth.shape) < 0.03] = 0.0  # dropout
    depth[60:160, 200:330] = 0.0  # a window: no return
    mm = np.clip(np.round(depth * 1000.0), 0, 65535).astype(np.uint16)
    return mm, np.clip(rgb, 0, 255).astype(np.uint8)


def messages(depth_mm: np.ndarray, rgb: np.ndarray) -> tuple[Any, Any, Any]:
    """sensor_msgs-like depth (16UC1), colour (rgb8) and CameraInfo objects (no ROS needed)."""
    header = SimpleNamespace(frame_id='camera_color_optical_frame', stamp=None)

    def image(pixels: np.ndarray, encoding: str) -> SimpleNamespace:
        rows = np.ascontiguousarray(pixels).view(np.uint8).reshape(HEIGHT, -1)
        return SimpleNamespace(header=header, height=HEIGHT, width=WIDTH, encoding=encoding,
                               is_bigendian=0, step=rows.shape[1], data=rows.tobytes())

    info = SimpleNamespace(header=header, width=WIDTH, height=HEIGHT, k=list(K.ravel()),
                           d=[0.0] * 5, distortion_model='plumb_bob')
    return image(depth_mm, '16UC1'), image(rgb, 'rgb8'), info


def write_indoor_bundle(path: Path, model: str) -> Path:
    """A random-weight bundle of ``model`` (rgb input, 5 cm voxels, ScanNet-20, D = 512)."""
    import torch

    from cns_ros.models.build import build_model, model_config
    from cns_ros.training.bundle_write import write_bundle
    from cns_ros.vocabulary import scannet20

    options = {'voxel_size': VOXEL_SIZE, 'input_features': ['rgb'], 'out_dim': OUT_DIM}
    torch.manual_seed(0)
    net = build_model(model, model_config(model, **options))
    vocabulary = scannet20()
    embeddings = torch.nn.functional.normalize(torch.randn(vocabulary.num_classes, OUT_DIM),
                                               dim=1)
    return write_bundle(path, net3d=net, model_name=model, model_options=options,
                        vocabulary=vocabulary, text_embeddings=embeddings,
                        metadata={'random_weights': True,
                                  'note': 'benchmarks/bench_node_rgbd.py: random weights'})


def network_from_sensor() -> np.ndarray:
    """(4, 4) transform of ``config/segment_rgbd.yaml``'s ``body_from_sensor``."""
    import yaml

    from cns_ros.geometry import transform_from_xyz_rpy

    config = Path(__file__).resolve().parents[1] / 'config' / 'segment_rgbd.yaml'
    values = yaml.safe_load(config.read_text())['/**']['ros__parameters']
    return transform_from_xyz_rpy(values['body_from_sensor'])


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.thread_time()


def run_frame(segmenter: Any, inputs: tuple[Any, Any, Any], rays: Any,
              colors: Callable[..., np.ndarray], move: np.ndarray
              ) -> tuple[dict[str, float], dict[str, float], Any]:
    """One frame the node's way (``move``: network_from_sensor): (wall ms, CPU ms per stage,
    the SegmentResult)."""
    from cns_ros.ros.rgbd_io import decode_rgbd_images, label_image_fields, labeled_frame_cloud

    def fail(reason: str, message: str, **_: Any) -> None:
        raise RuntimeError(f'frame dropped: {reason}: {message}')

    start = _clock()
    frame = decode_rgbd_images(*inputs, depth_unit=0.001, max_points=10**6, rays=rays,
                               report=fail)
    decoded = _clock()
    result = segmenter.segment(frame.xyz, {'rgb': frame.rgb}, move)
    segmented = _clock()
    labeled_frame_cloud(frame, result.labels, result.confidence,
                        colors(result, result.labels), photo_colors=False)
    label_image_fields(frame, result.labels)
    encoded = _clock()
    wall = {'decode': (decoded[0] - start[0]) * 1e3, **result.timings,
            'encode': (encoded[0] - segmented[0]) * 1e3, 'total': (encoded[0] - start[0]) * 1e3}
    cpu = {'decode': (decoded[1] - start[1]) * 1e3, **result.cpu_timings,
           'encode': (encoded[1] - segmented[1]) * 1e3, 'total': (encoded[1] - start[1]) * 1e3}
    return wall, cpu, result


def _medians(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: float(np.median([row[key] for row in rows])) for key in rows[0]}


def bench_model(model: str, bundle: Path, frame: tuple[np.ndarray, np.ndarray],
                args: Any) -> dict[str, Any]:
    """Warm up, then ``args.repeats`` frames; the medians and the frame's counts."""
    from cns_ros.rgbd import RayCache
    from cns_ros.ros.sweep_io import LabelColors
    from cns_ros.segmenter import Segmenter

    segmenter = Segmenter(bundle, device=args.device, fp16=not args.fp32)
    inputs = messages(*frame)
    rays, colors, move = RayCache(), LabelColors(), network_from_sensor()
    start = time.perf_counter()
    rays(K, WIDTH, HEIGHT, np.zeros(5))
    rays_ms = (time.perf_counter() - start) * 1e3
    for _ in range(args.warm_up):
        run_frame(segmenter, inputs, rays, colors, move)
    walls, cpus = [], []
    for _ in range(args.repeats):
        wall, cpu, result = run_frame(segmenter, inputs, rays, colors, move)
        walls.append(wall)
        cpus.append(cpu)
    return {'model': model, 'architecture': MODELS[model], 'random_weights': True,
            'device': str(segmenter.device) + (' fp16' if segmenter.fp16 else ''),
            'backend': segmenter.backend, 'input_features': ['rgb'], 'voxel_size_m': VOXEL_SIZE,
            'out_dim': OUT_DIM, 'classes': segmenter.vocabulary.num_classes,
            'points': len(result.labels), 'points_with_depth': result.num_valid,
            'voxels': result.num_voxels, 'repeats': args.repeats,
            'wall_ms': _medians(walls), 'cpu_ms': _medians(cpus),
            'ray_table_ms_once': rays_ms}


def backprojection_ms(depth_mm: np.ndarray, repeats: int) -> dict[str, float]:
    """depth_to_points alone on the frame (cached rays): wall ms."""
    from cns_ros.rgbd import depth_to_points, pixel_rays

    rays = pixel_rays(K, WIDTH, HEIGHT)
    depth = depth_mm.astype(np.float32) * np.float32(0.001)
    return time_call(lambda: depth_to_points(depth, rays=rays), repeats=max(repeats, 10),
                     warmup=3)


def print_table(results: dict[str, Any]) -> None:
    print(f"frame {WIDTH}x{HEIGHT}: {results['points']} points, {results['points_with_depth']} "
          f"with depth; back-projection alone {results['backprojection_ms']['median_ms']:.1f} "
          'ms (wall)')
    print(f"{'model':12s} {'device':10s} {'voxels':>7s} " + ' '.join(
        f'{s:>9s}' for s in ('decode', 'voxelize', 'network', 'classify', 'encode', 'total')))
    for run in results['runs'].values():
        for kind in ('wall_ms', 'cpu_ms'):
            times = run[kind]
            print(f"{run['model']:12s} {run['device']:10s} {run['voxels']:7d} " + ' '.join(
                f'{times[s]:9.1f}' for s in ('decode', 'voxelize', 'network', 'classify',
                                             'encode', 'total')) + f'  {kind[:-3]}')
    print('ms per frame (median): wall clock and worker-thread CPU time; RANDOM weights')


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = single_core_parser(__doc__.splitlines()[0], repeats=5)
    parser.add_argument('--models', default=','.join(MODELS),
                        help=f'comma-separated, from {sorted(MODELS)}')
    parser.add_argument('--device', default='cpu', help='cpu, cuda, cuda:N or auto')
    parser.add_argument('--num-threads', type=int, default=1, help='torch threads (0: torch '
                        'decides)')
    parser.add_argument('--warm-up', type=int, default=2, help='untimed frames per model')
    parser.add_argument('--fp32', action='store_true', help='no float16 autocast on CUDA')
    parser.add_argument('--name', default='node_rgbd', help='results file name')
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(',') if m.strip()]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        parser.error(f'unknown models {unknown}; choose from {sorted(MODELS)}')
    import torch

    pinned = pin_to_one_core(args.all_cores)
    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    frame = room_frame()
    results: dict[str, Any] = {
        'frame': {'width': WIDTH, 'height': HEIGHT, 'depth': '16UC1 mm', 'color': 'rgb8',
                  'K': K.tolist(), 'scene': 'ray-cast room, 3 % dropout + a window'},
        'points': WIDTH * HEIGHT, 'points_with_depth': int((frame[0] > 0).sum()),
        'pinned_to_one_core': pinned, 'torch_threads': torch.get_num_threads(),
        'random_weights': True, 'backprojection_ms': backprojection_ms(frame[0], args.repeats),
        'runs': {}}
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            print(f'{model}: {args.repeats} frames on {args.device} ...', flush=True)
            bundle = write_indoor_bundle(Path(tmp) / model, model)
            results['runs'][model] = bench_model(model, bundle, frame, args)
    results['load_average_1min'] = os.getloadavg()[0]
    print_table(results)
    out_dir = Path(args.out_dir) if args.out_dir else None
    print(f'written: {write_results(args.name, results, out_dir)}')
    return results


if __name__ == '__main__':
    main()
