"""Teacher throughput: images/s of the label-free teachers, on the CPU and on a GPU.

One function per teacher (``bench_<name>(args) -> dict``, listed in ``TEACHERS``); ``main`` runs
those asked for, records a teacher whose dependencies are missing as skipped, prints a table and
writes ``benchmarks/results/teachers.json``.

MaskCLIP: ViT-B/16 at 224 x 416 (the nuScenes setting, a 14 x 26 token grid), fed nuScenes-size
uint8 images (1600 x 900, resized inside the teacher), batches of 1 and 6 (one keyframe's
cameras); fp32, plus fp16 autocast on CUDA. Without ``--clip-checkpoint`` the weights are
random (flagged ``random_weights`` in the JSON): the speed does not depend on weight values.
Text embeddings are encoded once at start-up and not timed.

SAM: ViT-B on 1600 x 900 uint8 images: image embeddings alone (batch 1; batches 1 and 6 on
CUDA) and automatic masks (default thresholds) for a few point grids: 8 x 8 and 16 x 16 on the
CPU, where the default 32 x 32 takes minutes per image; 32 x 32 on CUDA; fp32, plus fp16 autocast
on CUDA. Also ``refine_labels`` with 100 masks on a 224 x 416 label map (numpy; CUDA tensors on
a GPU). Random weights (no ``--sam-checkpoint``) give the encoder's real cost but keep few masks
after the quality thresholds, so the post-processing part is cheaper than with real weights
(``masks_per_image`` says how many were kept). Results of teachers not run this time are kept
from the previous ``teachers.json``.

Usage: ``python benchmarks/bench_teachers.py [--teachers maskclip,sam] [--device cpu|cuda]
[--repeats R] [--clip-checkpoint PATH] [--sam-checkpoint PATH]
[--sam-points-per-side 8,16]``
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULTS_DIR, time_call, write_results

NUSCENES_IMAGE = (900, 1600)  # H, W of a nuScenes camera image


def _default_device() -> str:
    import torch

    return 'cuda' if torch.cuda.is_available() else 'cpu'


def _synchronized(function: Callable[[], Any], device: str) -> Callable[[], Any]:
    """Wrap ``function`` so that a timed call includes the GPU work it queued."""
    import torch

    def call() -> Any:
        result = function()
        if device.startswith('cuda'):
            torch.cuda.synchronize()
        return result
    return call


def bench_maskclip(args: argparse.Namespace) -> dict[str, Any]:
    """MaskCLIP ViT-B/16 images/s at 224 x 416, batches 1 and 6, fp32 (+ fp16 on CUDA)."""
    from cns_ros.teachers.clip_dense import ClipDenseConfig, MaskClipTeacher

    device = args.device or _default_device()
    config = ClipDenseConfig(model_name='ViT-B-16', checkpoint=args.clip_checkpoint,
                             allow_random_weights=args.clip_checkpoint is None,
                             image_size=(224, 416), templates='single', device=device,
                             fp16=False)
    teacher = MaskClipTeacher(config)
    precisions = {'fp32': teacher}
    if device.startswith('cuda'):
        precisions['fp16'] = MaskClipTeacher(replace(config, fp16=True), clip=teacher.clip)
    cpu = not device.startswith('cuda')
    repeats = args.repeats or (3 if cpu else 30)
    rng = np.random.default_rng(0)
    timings = {}
    for batch in (1, 6):
        images = rng.integers(0, 256, (batch, *NUSCENES_IMAGE, 3), dtype=np.uint8)
        for precision, model in precisions.items():
            timing = time_call(_synchronized(lambda m=model, x=images: m(x), device), repeats,
                               warmup=1 if cpu else 5)
            timing['images_per_s'] = batch * 1e3 / timing['median_ms']
            timings[f'batch {batch}, {precision}'] = timing
    return {'model': 'ViT-B-16', 'image_size': list(config.image_size),
            'token_grid': [14, 26], 'input': f'uint8 RGB {NUSCENES_IMAGE[1]}x'
            f'{NUSCENES_IMAGE[0]}, resized in the teacher', 'device': device,
            'device_name': _device_name(device), 'random_weights': teacher.random_weights,
            'classes': teacher.vocabulary.num_classes, 'timings': timings}


def _random_label_map_and_masks(count: int, size: tuple[int, int],
                                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) uint8 labels (16 classes, 10 % ignore 255) and (count, H, W) blob-like masks."""
    rng = np.random.default_rng(seed)
    height, width = size
    labels = rng.integers(0, 16, size, dtype=np.uint8)
    labels[rng.random(size) < 0.1] = 255
    rows, cols = np.mgrid[:height, :width]
    centres = rng.uniform((0, 0), (height, width), size=(count, 2))
    radii = np.exp(rng.uniform(np.log(4.0), np.log(height / 2), size=(count, 2)))
    masks = (((rows[None] - centres[:, 0, None, None]) / radii[:, 0, None, None]) ** 2
             + ((cols[None] - centres[:, 1, None, None]) / radii[:, 1, None, None]) ** 2) <= 1
    return labels, masks


def _sam_refine_timings(device: str, repeats: int) -> dict[str, dict[str, float]]:
    """refine_labels with 100 masks at 224 x 416 (numpy; plus the CUDA tensor path)."""
    from cns_ros.teachers.refine import refine_labels

    labels, masks = _random_label_map_and_masks(100, (224, 416))
    cases = {'refine 100 masks, numpy': lambda: refine_labels(labels, masks)}
    if device.startswith('cuda'):
        import torch

        labels_t, masks_t = torch.from_numpy(labels).to(device), torch.from_numpy(masks).to(device)
        cases['refine 100 masks, cuda'] = _synchronized(
            lambda: refine_labels(labels_t, masks_t), device)
    timings = {}
    for case, function in cases.items():
        timing = time_call(function, max(20, repeats), warmup=3)
        timing['images_per_s'] = 1e3 / timing['median_ms']  # label maps refined per second
        timings[case] = timing
    return timings


def _extrapolate_masks_ms(timings: dict[str, Any], points: list[int]) -> dict[str, float]:
    """fp32 masks ms for 32 x 32 points, linear in the prompt count from the two largest grids."""
    measured = sorted(p for p in points if f'masks {p}x{p} pts, fp32' in timings)
    if 32 in measured or len(measured) < 2:
        return {}
    (a, b) = measured[-2:]
    ms_a, ms_b = (timings[f'masks {p}x{p} pts, fp32']['median_ms'] for p in (a, b))
    per_prompt = (ms_b - ms_a) / (b * b - a * a)
    return {'masks 32x32 pts, fp32 (extrapolated)': ms_b + per_prompt * (32 * 32 - b * b)}


def bench_sam(args: argparse.Namespace) -> dict[str, Any]:
    """SAM ViT-B automatic masks and embeddings of 1600 x 900 images; refine_labels ms."""
    from cns_ros.teachers.sam import SamConfig, SamTeacher

    device = args.device or _default_device()
    cpu = not device.startswith('cuda')
    config = SamConfig(model_type='vit_b', checkpoint=args.sam_checkpoint,
                       allow_random_weights=args.sam_checkpoint is None, device=device,
                       fp16=False, batch_size=6)
    teacher = SamTeacher(config)
    precisions = {'fp32': teacher} if cpu else {'fp32': teacher,
                                                 'fp16': teacher.replace(fp16=True)}
    # 32 x 32 points decode 1024 prompts into 1600 x 900 masks: minutes per image on 2 CPU cores.
    points = ([int(p) for p in args.sam_points_per_side.split(',')] if args.sam_points_per_side
              else [8, 16] if cpu else [32])
    repeats = args.repeats or (2 if cpu else 10)
    mask_repeats = args.repeats or (1 if cpu else 10)  # plus one untimed call (mask count)
    image = np.random.default_rng(0).integers(0, 256, (*NUSCENES_IMAGE, 3), dtype=np.uint8)
    timings, mask_counts = {}, {}
    for precision, model in precisions.items():
        for batch in (1,) if cpu else (1, 6):
            images = [image] * batch
            timing = time_call(_synchronized(lambda m=model, x=images: m.embeddings(x), device),
                               repeats, warmup=1)
            timing['images_per_s'] = batch * 1e3 / timing['median_ms']
            timings[f'embeddings b{batch}, {precision}'] = timing
        for side in points:
            generator = model.replace(points_per_side=side)
            mask_counts[f'{side} points, {precision}'] = len(generator.masks(image))
            timing = time_call(_synchronized(lambda g=generator: g.masks(image), device),
                               mask_repeats, warmup=0)
            timing['images_per_s'] = 1e3 / timing['median_ms']
            timings[f'masks {side}x{side} pts, {precision}'] = timing
    timings.update(_sam_refine_timings(device, repeats))
    return {'model': 'vit_b', 'input': f'uint8 RGB {NUSCENES_IMAGE[1]}x{NUSCENES_IMAGE[0]}',
            'device': device, 'device_name': _device_name(device),
            'random_weights': teacher.random_weights, 'points_per_side': points,
            'thresholds': {'pred_iou': config.pred_iou_thresh,
                           'stability': config.stability_score_thresh},
            'masks_per_image': mask_counts, 'refine_input': '224x416 labels, 100 masks',
            'estimated_masks_ms': _extrapolate_masks_ms(timings, points),
            'timings': timings}


def _device_name(device: str) -> str:
    import torch

    if device.startswith('cuda'):
        return torch.cuda.get_device_name(torch.device(device))
    return f'cpu ({torch.get_num_threads()} threads)'


#: Teacher name -> benchmark function. Add a teacher by adding its function here.
TEACHERS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    'maskclip': bench_maskclip,
    'sam': bench_sam,
}


def _print_table(results: dict[str, Any]) -> None:
    print(f"{'teacher':10s} {'case':18s} {'median ms':>10s} {'images/s':>9s}  device")
    for name, result in results.items():
        if 'skipped' in result:
            print(f"{name:10s} skipped: {result['skipped']}")
            continue
        flag = ' (random weights)' if result.get('random_weights') else ''
        for case, timing in result['timings'].items():
            print(f"{name:10s} {case:18s} {timing['median_ms']:10.1f} "
                  f"{timing['images_per_s']:9.2f}  {result['device_name']}{flag}")


def _merge_previous(results: dict[str, Any], load: list[float],
                    out_dir: str | None) -> dict[str, Any]:
    """This run's results plus the other teachers' from the existing teachers.json.

    Every entry records when it was measured and the load average then, since teachers are
    often benchmarked in separate runs (``--teachers sam``).
    """
    now = time.strftime('%Y-%m-%dT%H:%M:%S%z')
    merged = {name: {**result, 'measured_at': now, 'load_average_1min': load}
              for name, result in results.items()}
    try:
        previous = json.loads((Path(out_dir or RESULTS_DIR) / 'teachers.json').read_text())
    except (OSError, ValueError):
        return merged
    for name, result in previous.get('teachers', {}).items():
        if name not in merged:
            result.setdefault('measured_at', previous.get('host', {}).get('time'))
            result.setdefault('load_average_1min', previous.get('load_average_1min'))
            merged[name] = result
    return merged


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--teachers', default=','.join(TEACHERS),
                        help=f'comma-separated subset of {", ".join(TEACHERS)}')
    parser.add_argument('--device', default=None, help="'cpu' or 'cuda' (default: cuda if "
                                                         "available)")
    parser.add_argument('--repeats', type=int, default=None,
                        help='timed runs per case (default 3 on CPU, 30 on GPU)')
    parser.add_argument('--clip-checkpoint', default=None,
                        help='CLIP ViT-B/16 weights (default: random weights, flagged)')
    parser.add_argument('--sam-checkpoint', default=None,
                        help='SAM vit_b weights, sam_vit_b_01ec64.pth (default: random weights, '
                             'flagged)')
    parser.add_argument('--sam-points-per-side', default=None,
                        help='comma-separated SAM point grids to time (default 8,16 on CPU, 32 '
                             'on GPU)')
    parser.add_argument('--out-dir', default=None, help='results folder')
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.teachers.split(',') if n.strip()]
    unknown = sorted(set(names) - set(TEACHERS))
    if unknown:
        parser.error(f'unknown teachers {unknown}; expected some of {sorted(TEACHERS)}')
    results: dict[str, Any] = {}
    load_before = os.getloadavg()[0]  # other processes on the machine skew CPU numbers
    for name in names:
        try:
            results[name] = TEACHERS[name](args)
        except ImportError as exc:  # a teacher's optional dependency is not installed
            results[name] = {'skipped': f'{type(exc).__name__}: {exc}'}
    _print_table(results)
    load = [load_before, os.getloadavg()[0]]
    record = {'teachers': _merge_previous(results, load, args.out_dir), 'load_average_1min': load}
    print(f"load average (1 min) before/after: {record['load_average_1min']}")
    print(f"written: {write_results('teachers', record, args.out_dir)}")
    return results


if __name__ == '__main__':
    main()
