"""Network speed: 3D inference ms per nuScenes-sized sweep and training steps/s; 2D forward ms.

A synthetic 32-beam x 1080-azimuth sweep (34,560 points, elevations -30..+10 degrees, sensor
1.84 m above a ground plane, walls 10-35 m away, 2 cm range noise, intensity 0..255) is
voxelized at 0.1 m (about 24k voxels, surface-like neighbourhoods as in a real sweep) and run
through MinkUNet14A / 18A / 34C and SPVCNN (random weights, D = 512) on each requested backend:

- inference: ``model.eval()``, no grad, network forward to per-point outputs (ms per sweep;
  voxelization is timed separately);
- training: forward + a scalar loss + backward + SGD step on a batch of ``--train-batch``
  sweeps (steps/s); ``--train-repeats 0`` skips it.

The 2D networks (``--nets2d``: DeepLabV3 on ResNet-50, ResNet-18, MobileNetV3-Large; random
weights, D = 512, the 3x3 head, OS 16) are timed as the live node runs them: ``model.eval()``,
no grad, a batch of ``--image-batch`` (default 1) normalised 224 x 416 images (nuScenes
images at the reference's training size) to (B, D, 224, 416) text-space features, which
includes the D-channel head at OS 16 and the bilinear upsampling of the D channels to the
input size (``backbone_aspp_ms`` times the backbone and ASPP alone: the rest is that head and
upsampling, the same for every backbone).

On CPU: float32. On CUDA (when present): float32 and float16 autocast (training with a
GradScaler). Writes ``benchmarks/results/<--name>.json`` (default ``models.json``): ``cases``
(3D) and ``image_cases``
(2D); ``--models none`` or ``--nets2d none`` skips a part and keeps that part of the previous
file (its rows carry their own ``measured`` time and load average). DESIGN.md budgets: 50 ms
per sweep at 20 Hz; spconv anchor: 7.4 ms FP16 forward of a basic net on 120k voxels (RTX 4090).

Usage: ``python benchmarks/bench_models.py [--models 14a,18a,34c,spvcnn|none] [--backends spconv]
[--nets2d r50,r18,mbv3|none] [--devices cpu,cuda] [--repeats R] [--train-repeats R]
[--train-batch B] [--image-batch B] [--name NAME]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import RESULTS_DIR, time_call, write_results

from cns_ros.models.build import build_model, count_parameters, model_config
from cns_ros.models.minkunet import assemble_point_features
from cns_ros.models.sparse import SparseBatch, available_backends, voxelize_batch


def make_sweep(seed: int = 0, rings: int = 32, azimuths: int = 1080) -> tuple[np.ndarray,
                                                                             np.ndarray]:
    """Points (rings * azimuths, 3) float32 metres in the LiDAR frame, intensity (N,) 0..255."""
    rng = np.random.default_rng(seed)
    elevation = np.radians(np.linspace(-30.0, 10.0, rings))[:, None]
    azimuth = np.linspace(-math.pi, math.pi, azimuths, endpoint=False)[None, :]
    phase = rng.uniform(0, 2 * math.pi)
    wall = 10.0 + 25.0 * (0.5 + 0.5 * np.sin(3 * azimuth + phase) * np.cos(5 * azimuth))
    ground = np.where(elevation < 0, 1.84 / np.tan(-np.minimum(elevation, -1e-3)), np.inf)
    ranges = np.minimum(np.minimum(ground, wall / np.cos(elevation)), 70.0)
    ranges = ranges + rng.normal(0.0, 0.02, size=(rings, azimuths))
    points = np.stack([ranges * np.cos(elevation) * np.cos(azimuth),
                       ranges * np.cos(elevation) * np.sin(azimuth),
                       ranges * np.sin(elevation)], axis=-1).reshape(-1, 3)
    intensity = rng.uniform(0.0, 255.0, size=len(points))
    return points.astype(np.float32), intensity.astype(np.float32)


def _sweeps(count: int, device: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """`count` sweeps as (N, 3) points and (N, 1) normalised-intensity features on device."""
    points, feats = [], []
    for seed in range(count):
        xyz, intensity = make_sweep(seed)
        points.append(torch.from_numpy(xyz).to(device))
        feats.append(assemble_point_features({'intensity': intensity}, ('intensity',)).to(device))
    return points, feats


def _batch(count: int, voxel_size: float, device: str) -> SparseBatch:
    return voxelize_batch(*_sweeps(count, device), voxel_size)


def _synced(function: Callable[[], Any], device: str) -> Callable[[], Any]:
    if device != 'cuda':
        return function

    def run() -> Any:
        out = function()
        torch.cuda.synchronize()
        return out
    return run


def _autocast(device: str, precision: str) -> contextlib.AbstractContextManager:
    if precision == 'fp16':
        return torch.autocast('cuda', dtype=torch.float16)
    return contextlib.nullcontext()


def bench_case(name: str, backend: str, device: str, precision: str,
               args: argparse.Namespace) -> dict[str, Any]:
    """Inference and training timings of one (model, backend, device, precision)."""
    torch.manual_seed(0)
    net = build_model(name, model_config(name, backend=backend)).to(device)
    single = _batch(1, args.voxel_size, device)

    def infer() -> Any:
        with torch.no_grad(), _autocast(device, precision):
            return net(single).features

    net.eval()
    inference = time_call(_synced(infer, device), args.repeats, warmup=args.warmup)
    training = _train_timing(net, device, precision, args)
    points, feats = _sweeps(1, device)
    voxelize = time_call(_synced(lambda: voxelize_batch(points, feats, args.voxel_size),
                                 device), max(args.repeats, 5), warmup=2)
    return {'model': name, 'backend': backend, 'device': device, 'precision': precision,
            'parameters': count_parameters(net), 'points': len(single.inverse),
            'voxels': single.num_voxels, 'train_batch_sweeps': args.train_batch,
            'voxelize_ms': voxelize, 'inference_ms': inference, 'train_step_ms': training,
            'train_steps_per_s': 1e3 / training['median_ms'] if training else None}


def _train_timing(net: torch.nn.Module, device: str, precision: str,
                  args: argparse.Namespace) -> dict[str, float] | None:
    """Timings of forward + loss + backward + SGD step on ``--train-batch`` sweeps (None when
    ``--train-repeats 0``)."""
    if args.train_repeats < 1:
        return None
    train_batch = _batch(args.train_batch, args.voxel_size, device)
    net.train()
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler('cuda', enabled=precision == 'fp16')

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, precision):
            out = net(train_batch)
            loss = out.features.float().square().mean()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return time_call(_synced(step, device), args.train_repeats, warmup=args.warmup)


def _measured() -> dict[str, Any]:
    """When a row was measured and how busy the machine was."""
    return {'measured': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
            'load_average': os.getloadavg() if hasattr(os, 'getloadavg') else None}


def bench_image_case(name: str, device: str, precision: str,
                     args: argparse.Namespace) -> dict[str, Any]:
    """Forward ms of one 2D network (random weights, eval, no grad) on 224 x 416 images."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)  # the random-weights warning
        net = build_model(name, model_config(name, allow_random_weights=True)).to(device).eval()
    height, width = args.image_size
    images = torch.randn(args.image_batch, 3, height, width, device=device)

    def forward() -> Any:
        with torch.no_grad(), _autocast(device, precision):
            return net(images).features

    def latent() -> Any:
        with torch.no_grad(), _autocast(device, precision):
            return net.aspp(net.backbone(images)['out'])

    timing = time_call(_synced(forward, device), args.image_repeats, warmup=args.warmup)
    latent_timing = time_call(_synced(latent, device), args.image_repeats, warmup=args.warmup)
    return {'model': name, 'backbone': net.config.backbone, 'device': device,
            'precision': precision, 'parameters': count_parameters(net),
            'image_size': [height, width], 'batch': args.image_batch,
            'out_dim': net.config.out_dim, 'forward_ms': timing,
            'forward_ms_per_image': timing['median_ms'] / args.image_batch,
            'backbone_aspp_ms': latent_timing, **_measured()}


def _devices_precisions(args: argparse.Namespace) -> list[tuple[str, str]]:
    devices = [d for d in args.devices.split(',') if d == 'cpu' or torch.cuda.is_available()]
    return [(device, precision) for device in devices
            for precision in (('fp32', 'fp16') if device == 'cuda' else ('fp32',))]


def _previous(out_dir: str | None, name: str) -> dict[str, Any]:
    """The previous results file (its parts are kept when this run skips them), or {}."""
    path = (RESULTS_DIR if out_dir is None else Path(out_dir)) / f'{name}.json'
    return json.loads(path.read_text()) if path.is_file() else {}


def _run_images(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.nets2d == 'none':
        return list(_previous(args.out_dir, args.name).get('image_cases', []))
    rows = []
    print(f"{'2D model':15s} {'device':6s} {'prec':5s} {'params':>11s} {'fwd ms':>8s} "
          f"{'p90 ms':>8s} {'bb+aspp':>8s}", flush=True)
    for device, precision in _devices_precisions(args):
        for short in args.nets2d.split(','):
            row = bench_image_case(f'deeplabv3_{short.strip()}', device, precision, args)
            rows.append(row)
            print(f"{row['model']:15s} {device:6s} {precision:5s} {row['parameters']:11,d} "
                  f"{row['forward_ms']['median_ms']:8.1f} {row['forward_ms']['p90_ms']:8.1f} "
                  f"{row['backbone_aspp_ms']['median_ms']:8.1f}", flush=True)
    return rows


def _cases(args: argparse.Namespace) -> list[tuple[str, str, str, str]]:
    if args.models == 'none':
        return []
    models = [m if m == 'spvcnn' else f'minkunet{m}'
              for m in (m.strip().lower() for m in args.models.split(','))]
    backends = (list(available_backends()) if args.backends == 'all'
                else args.backends.split(','))
    cases = []
    for device, precision in _devices_precisions(args):
        for backend in backends:
            cases.extend((m, backend, device, precision) for m in models)
    return cases


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--models', default='14a,18a,34c,spvcnn',
                        help="comma list of 14a,18a,34c,spvcnn; 'none' keeps the previous 3D rows")
    parser.add_argument('--nets2d', default='r50,r18,mbv3',
                        help="comma list of r50,r18,mbv3; 'none' keeps the previous 2D rows")
    parser.add_argument('--image-size', type=int, nargs=2, default=(224, 416),
                        metavar=('H', 'W'), help='2D input size')
    parser.add_argument('--image-batch', type=int, default=1, help='images per 2D forward')
    parser.add_argument('--image-repeats', type=int, default=5, help='timed 2D forwards')
    parser.add_argument('--backends', default='spconv', help="comma list, or 'all' installed")
    parser.add_argument('--devices', default='cpu,cuda', help='cuda is skipped when absent')
    parser.add_argument('--repeats', type=int, default=5, help='timed inference runs')
    parser.add_argument('--train-repeats', type=int, default=3, help='timed training steps')
    parser.add_argument('--warmup', type=int, default=1, help='untimed runs before timing')
    parser.add_argument('--train-batch', type=int, default=1, help='sweeps per training step')
    parser.add_argument('--voxel-size', type=float, default=0.1, help='voxel edge, metres')
    parser.add_argument('--out-dir', default=None, help='results folder')
    parser.add_argument('--name', default='models', help='results file name (without .json)')
    args = parser.parse_args(argv)
    image_rows = _run_images(args)
    rows, measured = [], _measured()
    if args.models == 'none':  # keep the previous 3D rows, when and at what load measured
        previous = _previous(args.out_dir, args.name)
        rows = list(previous.get('cases', []))
        measured = previous.get('cases_measured') or {
            'measured': previous.get('host', {}).get('time'),
            'load_average': previous.get('load_average')}
    print(f"{'model':12s} {'backend':8s} {'device':6s} {'prec':5s} {'voxels':>7s} "
          f"{'infer ms':>9s} {'p90 ms':>8s} {'train it/s':>10s} {'vox ms':>7s}", flush=True)
    for name, backend, device, precision in _cases(args):
        row = bench_case(name, backend, device, precision, args)
        rows.append(row)
        print(f"{name:12s} {backend:8s} {device:6s} {precision:5s} {row['voxels']:7d} "
              f"{row['inference_ms']['median_ms']:9.1f} {row['inference_ms']['p90_ms']:8.1f} "
              f"{row['train_steps_per_s'] or float('nan'):10.3f} "
              f"{row['voxelize_ms']['median_ms']:7.2f}", flush=True)
    results = {'cases': rows, 'cases_measured': measured, 'image_cases': image_rows,
               'torch': torch.__version__,
               'torch_threads': torch.get_num_threads(),
               'cuda_device': torch.cuda.get_device_name() if torch.cuda.is_available() else None,
               'load_average': os.getloadavg() if hasattr(os, 'getloadavg') else None,
               'weights': 'random (speed only)'}
    print(f"written: {write_results(args.name, results, args.out_dir)}")
    return results


if __name__ == '__main__':
    main()
