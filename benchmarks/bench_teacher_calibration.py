"""Calibration report of the simulated teachers against teacher_noise.md section 7.

Driving (default): generates a small synthetic driving world (``make_synthetic``: the first
``--scenes`` scenes of the study's scene lists, ``--duration`` s each, 400 x 225 images) unless
``--world`` names one, then measures, on every keyframe image at the label size (default
224 x 416, MaskCLIP's input). Indoor (``--indoor``): the synthetic indoor world
(``make_synthetic_indoor --preset default`` per seed, about 3 min each, or ``--world``), the
``realistic_indoor`` noise, the ``segformer_like_indoor`` labeler, 240 x 320 label maps (CNS's
ScanNet input; SAM at 320 x 240) and the indoor targets (wall / floor masks in place of road /
building); ``results/teacher_calibration_indoor.json``. Both measure:

* 7.1 MaskCLIP stand-in: 2D mIoU and pixel accuracy against the ground truth (sky unscored),
  per-class IoU against the high / mid / near-zero ranges, the share of wrong pixels in the
  persistent component, the boundary band (90th percentile distance of the resolution errors
  to a class boundary, in tokens), the share of wrong labels that are an image-dominant class,
  and a cross-view check: for objects / regions seen in several images, how often a wrong one
  is wrong with the same class in another view;
* 7.2 SAM stand-in: masks per image, coverage, overlap, area-weighted purity (and by mask
  size), masks crossing a class boundary (purity < 0.9), islands, nesting (objects with a whole
  and a part mask), small-mask share, road / building masks per image; and the mIoU gain of
  majority voting inside the masks on a 50-70 mIoU labeler (``--labeler``, SSA's order, where
  the published +1 to +3 comes from; CNS's order too), plus the gain on the teacher itself;
* 7.3 SAM embedding stand-in: a linear probe (ridge regression on every embedding cell,
  two-fold over the scenes) from it and from the CLIP stand-in's features (per-token label
  histograms) to the classes, and their ratio.

Every seed (``--seeds``, default 0 1 2) generates its own world and seeds the teachers: with
a few instances per class in a small world, one large object decides a class's IoU, so the
report is the mean over the seeds, with every seed's value and how many are inside. Writes
``results/teacher_calibration.json`` (each target: range, mean, per seed, inside or by how much
not) and ``results/teacher_calibration.png`` (per-class IoU bars of the mean against the target
ranges; example images of the first seed: ground truth / simulated CLIP / SAM masks). About
4 minutes on 2 cores with the defaults.

usage: python benchmarks/bench_teacher_calibration.py [--world DIR ...] [--scenes 8]
       [--duration 2] [--seeds 0 1 2] [--noise realistic] [--labeler segformer_like]
       [--out-dir DIR]
       python benchmarks/bench_teacher_calibration.py --indoor [--world DIR ...]
       [--indoor-preset default] [--seeds 0 1 2] [--max-images N]

The indoor report in results/ was made from three pre-generated default worlds
(``make_synthetic_indoor --preset default --seed 0|1|2``), nine runs (world k mod 3, teacher
seed k) of 49 images each::

    python benchmarks/bench_teacher_calibration.py --indoor --world W0 W1 W2 \
        --seeds 0 1 2 3 4 5 6 7 8 --max-images 49
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _common import write_results

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # cns_ros, offline_training
from cns_ros.geometry import resize_nearest
from cns_ros.teachers.class_space import NUSCENES16, SCANNET20, class_space
from cns_ros.teachers.sam import valid_embedding_size
from cns_ros.teachers.synthetic_truth import SyntheticGroundTruth
from cns_ros.teachers.teacher_calibration import (
    ClipMeter,
    SamMeter,
    TwoFoldProbe,
    VotingMeter,
    targets,
)
from cns_ros.teachers.teacher_noise import load_noise
from cns_ros.vocabulary import IGNORE_INDEX
from offline_training import make_synthetic, study

#: --indoor defaults: noise, labeler, label size (H, W), results name.
INDOOR = {'noise': 'realistic_indoor', 'labeler': 'segformer_like_indoor', 'size': (240, 320),
          'name': 'teacher_calibration_indoor'}


def make_world(root: Path, scenes: int, duration: float, seed: int) -> Path:
    """A synthetic world of the first ``scenes`` study scenes (train and held-out lists
    interleaved, so both halves of the probe split see both)."""
    names = [s for pair in zip(study.TRAIN_SCENES, study.TEST_SCENES, strict=False)
             for s in pair][:scenes]
    args = ['--out', str(root), '--duration', str(duration), '--seed', str(seed),
            '--workers', '2', '--no-progress', '--overwrite']
    for name in names:
        args += ['--scene', name]
    if make_synthetic.main(args) != 0:
        raise RuntimeError('make_synthetic failed')
    return root


def make_indoor_world(root: Path, preset: str, seed: int) -> Path:
    """A synthetic indoor world (``make_synthetic_indoor --preset``)."""
    from offline_training import make_synthetic_indoor

    args = ['--out', str(root), '--preset', preset, '--seed', str(seed), '--no-progress']
    if make_synthetic_indoor.main(args) != 0:
        raise RuntimeError('make_synthetic_indoor failed')
    return root


def _probe_samples(clip_hist: np.ndarray, embedding: np.ndarray, truth: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(CLIP features, SAM features, classes) of every labelled embedding cell."""
    import cv2

    rows, cols = truth.shape
    clip = np.stack([cv2.resize(h, (cols, rows), interpolation=cv2.INTER_LINEAR)
                     for h in clip_hist], axis=-1).reshape(-1, clip_hist.shape[0])
    sam = np.moveaxis(embedding[:, :rows, :cols], 0, -1).reshape(-1, embedding.shape[0])
    labels = truth.reshape(-1)
    index = np.flatnonzero(labels != IGNORE_INDEX)
    return clip[index], sam[index], labels[index]


def _token_histogram(labels: np.ndarray, grid: tuple[int, int], classes: int = 16
                     ) -> np.ndarray:
    """float32 (C, rows, cols) per-token class histogram of (H, W) labels (the CLIP
    stand-in's features; C = ``classes``)."""
    import cv2

    return np.stack([cv2.resize((labels == c).astype(np.float32), grid[::-1],
                                interpolation=cv2.INTER_AREA) for c in range(classes)])


class Measurement:
    """Runs the teachers over the world's images and feeds the meters."""

    def __init__(self, world: Path, noise: str, labeler: str, size: tuple[int, int],
                 seed: int) -> None:
        self.gt = SyntheticGroundTruth(world)
        self.space = self.gt.class_space
        self.classes = class_space(self.space).num_classes
        self.noise = load_noise(noise, seed)
        self.clip, self.sam = self.noise.build()
        self.labeler = load_noise(labeler, seed).build()[0]
        self.size = size
        self.clip_meter = ClipMeter(self.noise.clip.patch_grid, self.space)
        self.sam_meter = SamMeter(self.space)
        self.voting, self.teacher_voting = VotingMeter(self.classes), VotingMeter(self.classes)
        self.probes = {name: TwoFoldProbe(classes=self.classes) for name in ('clip', 'sam')}
        self.examples: list[dict[str, np.ndarray]] = []
        self.rng = np.random.default_rng(seed)
        scenes = sorted({e['scene'] for e in self.gt.index['images']})
        self.first_scenes = set(scenes[: max(1, len(scenes) // 2)])  # probe fold 0
        entries = sorted(self.gt.index['images'], key=lambda e: (e['scene'], e['image']))
        if self.space == NUSCENES16:
            self.example_tokens = {next(e['sample_data_token'] for e in entries
                                        if e['channel'] == channel)
                                   for channel in ('CAM_FRONT', 'CAM_FRONT_LEFT', 'CAM_BACK')}
        else:  # the middle image of each of the first three scenes
            self.example_tokens = {
                [e for e in entries if e['scene'] == scene][
                    sum(e['scene'] == scene for e in entries) // 2]['sample_data_token']
                for scene in scenes[:3]}

    def image(self, token: str) -> None:
        """Measure one image."""
        image = self.gt.load(token, rgb=True)
        stages = self.clip.stages(image, self.size)
        self.clip_meter.add(stages, image.scene, image.key)
        sky = stages.truth == IGNORE_INDEX
        self.clip_meter.add_band(stages.truth, self.clip.resolve(
            np.where(sky, stages.view, stages.truth), self.rng)[1])
        masks, stats = self.sam.masks_with_stats(image, self.size)
        truth = stages.truth
        self.sam_meter.add(masks.masks, truth, stats.level, stats.instance)
        self.voting.add(self.labeler.label_image(image, self.size)[0], masks.masks, truth)
        self.teacher_voting.add(stages.labels, masks.masks, truth)
        embedding = self.sam.embedding(image)
        grid = valid_embedding_size(*image.instance.shape)
        clip, sam, labels = _probe_samples(_token_histogram(
            stages.labels, self.noise.clip.patch_grid, self.classes), embedding,
            resize_nearest(image.train_labels(), grid))
        fold = int(image.scene not in self.first_scenes)
        self.probes['clip'].add(fold, clip, labels)
        self.probes['sam'].add(fold, sam, labels)
        if token in self.example_tokens:
            self.examples.append({'rgb': image.rgb, 'truth': truth, 'clip': stages.labels,
                                  'masks': masks.masks})

    def probe_result(self) -> dict[str, float]:
        """Linear-probe mIoU of the CLIP and SAM stand-ins' features, and the ratio."""
        clip, sam = self.probes['clip'].miou(), self.probes['sam'].miou()
        return {'probe_clip_miou': clip, 'probe_sam_miou': sam, 'probe_ratio': sam / clip}


def measure(world: Path, noise: str, labeler: str, size: tuple[int, int], seed: int,
            max_images: int | None) -> tuple[dict[str, Any], list[dict[str, np.ndarray]]]:
    """Every statistic of the report, and a few example images."""
    run = Measurement(world, noise, labeler, size, seed)
    tokens = sorted(run.gt.tokens, key=lambda t: (run.gt.images[t]['scene'], t))
    if max_images:
        tokens = tokens[:: max(1, len(tokens) // max_images)][:max_images]
        tokens += sorted(run.example_tokens - set(tokens))
    start = time.perf_counter()
    for token in tokens:
        run.image(token)
    seconds = time.perf_counter() - start
    voting, teacher = run.voting.result(), run.teacher_voting.result()
    stats = {**run.clip_meter.result(), **run.sam_meter.result(), **run.probe_result(),
             'sam_voting_gain': voting['gain_area_descending'], 'voting': voting,
             'teacher_sam_refinement': teacher, 'images': len(tokens),
             'ms_per_image': 1000 * seconds / max(len(tokens), 1)}
    stats['noise'] = run.noise.as_dict()
    stats['class_space'] = run.space
    return stats, run.examples


def _status(value: float, lo: float, hi: float) -> str:
    if lo <= value <= hi:
        return 'inside'
    return f'{value - hi:+.3g} above' if value > hi else f'{value - lo:+.3g} below'


def table(runs: list[dict[str, Any]], space: str = NUSCENES16) -> dict[str, dict[str, Any]]:
    """Target -> {range, measured (mean over the runs), per_run, inside_runs, status (of the
    mean), section, meaning}; per-class IoU included (targets of class space ``space``; a class
    absent from a run's images has IoU None there, and the mean is over the runs that have
    it)."""
    stats_targets, class_targets = targets(space)
    rows = [(name, target.lo, target.hi, target.section, target.meaning,
             [float(r[name]) for r in runs]) for name, target in stats_targets.items()]
    rows += [(f'iou_{name}', lo, hi, '7.1', f'2D IoU of {name}, %',
              [float(r['per_class_iou'][name]) for r in runs])
             for name, (lo, hi) in class_targets.items()]
    out = {}
    for name, lo, hi, section, meaning, values in rows:
        present = [v for v in values if np.isfinite(v)]
        mean = float(np.mean(present)) if present else None
        out[name] = {'range': [lo, hi], 'measured': mean,
                     'per_run': [v if np.isfinite(v) else None for v in values],
                     'inside_runs': sum(lo <= v <= hi for v in present),
                     'status': 'absent' if mean is None else _status(mean, lo, hi),
                     'section': section, 'meaning': meaning}
    return out


def _paint(masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 (H, W, 3) masks painted in refinement order (smaller first, larger on top),
    black where no mask."""
    from cns_ros.teachers.cache import paint_segments

    ids = paint_segments(masks)
    colours = rng.integers(40, 255, (len(masks) + 1, 3)).astype(np.uint8)
    colours[0] = 0
    return colours[ids]


def plot(path: Path, results: dict[str, dict[str, Any]], examples: list[dict[str, Any]],
         space: str = NUSCENES16) -> None:
    """Per-class IoU bars against target ranges, and example images (PNG)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    vocabulary = class_space(space).vocabulary()
    names = [name for name in vocabulary.names if f'iou_{name}' in results]
    colours = np.array([c.color for c in vocabulary.classes]
                       + [(0, 0, 0)] * (256 - len(vocabulary.classes)), dtype=np.uint8)
    fig = plt.figure(figsize=(15, 3.2 + 2.2 * len(examples)), layout='constrained')
    grid = fig.add_gridspec(1 + len(examples), 4, height_ratios=[1.5] + [1] * len(examples))
    ax = fig.add_subplot(grid[0, :])
    for k, name in enumerate(names):
        lo, hi = results[f'iou_{name}']['range']
        ax.add_patch(plt.Rectangle((k - 0.45, lo), 0.9, hi - lo, color='0.85', zorder=0))
        value = results[f'iou_{name}']['measured']
        if value is not None:  # None: the class is in no measured image
            ax.bar(k, value, 0.6, color='tab:green' if lo <= value <= hi else 'tab:red',
                   zorder=1)
    ax.set_xticks(range(len(names)), names, rotation=35, ha='right', fontsize=8)
    ax.set_ylabel('2D IoU %')
    miou, accuracy = results['clip_miou']['measured'], results['clip_accuracy']['measured']
    ax.set_title(f'simulated CLIP ({space}) per-class IoU, mean over seeds, vs '
                 f'teacher_noise.md 7.1 ranges (grey); mIoU {miou:.1f}, accuracy '
                 f'{accuracy:.1f} %', fontsize=10)
    rng = np.random.default_rng(0)
    for r, example in enumerate(examples):
        panels = [('RGB', example['rgb']), ('ground truth', colours[example['truth']]),
                  ('simulated CLIP', colours[example['clip']]),
                  (f'simulated SAM ({len(example["masks"])} masks)',
                   _paint(example['masks'], rng))]
        for c, (title, image) in enumerate(panels):
            axis = fig.add_subplot(grid[r + 1, c])
            axis.imshow(image)
            axis.set_title(title, fontsize=9)
            axis.axis('off')
    fig.savefig(path, dpi=80)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    """The command line of :func:`main`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--world', type=Path, nargs='+', help='existing synthetic worlds (with '
                        'regions): the k-th seed measures world k mod (number of worlds); '
                        'default: one generated world per seed')
    parser.add_argument('--indoor', action='store_true', help='the synthetic indoor world, the '
                        'realistic_indoor noise and the indoor targets (defaults of --noise, '
                        '--labeler, --size change with it)')
    parser.add_argument('--indoor-preset', default='default', help='make_synthetic_indoor '
                        '--preset of a generated indoor world (default: default)')
    parser.add_argument('--scenes', type=int, default=8, help='scenes of a generated world')
    parser.add_argument('--duration', type=float, default=2.0, help='seconds per scene')
    parser.add_argument('--noise', help='noise preset or file (default: realistic; indoor: '
                        'realistic_indoor)')
    parser.add_argument('--labeler', help='labeler for SAM voting (default: segformer_like; '
                        'indoor: segformer_like_indoor)')
    parser.add_argument('--size', nargs=2, type=int, metavar=('H', 'W'),
                        help='label size (default: 224 416; indoor: 240 320)')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2],
                        help='seeds of the worlds and teachers; the report is their mean')
    parser.add_argument('--max-images', type=int, help='measure at most this many images')
    parser.add_argument('--out-dir', type=Path, help='results folder')
    return parser


def _print(results: dict[str, dict[str, Any]], runs: int) -> None:
    def number(value: float | None) -> str:
        return 'absent' if value is None else f'{value:.3g}'

    print(f'{"target":28s} {"range":>17s} {"mean":>8s}  per seed')
    for name, row in results.items():
        print(f'{name:28s} {row["range"][0]:>7g} .. {row["range"][1]:<7g} '
              f'{number(row["measured"]):>8s}  {" ".join(number(v) for v in row["per_run"])}  '
              f'{row["status"]} ({row["inside_runs"]}/{runs} inside)')


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    noise = args.noise or (INDOOR['noise'] if args.indoor else 'realistic')
    labeler = args.labeler or (INDOOR['labeler'] if args.indoor else 'segformer_like')
    size = tuple(args.size or (INDOOR['size'] if args.indoor else (224, 416)))
    start, runs, examples = time.perf_counter(), [], []
    for k, seed in enumerate(args.seeds):
        with tempfile.TemporaryDirectory(prefix='teacher_calibration_') as tmp:
            world = args.world[k % len(args.world)] if args.world else (
                make_indoor_world(Path(tmp) / 'world', args.indoor_preset, seed) if args.indoor
                else make_world(Path(tmp) / 'world', args.scenes, args.duration, seed))
            stats, shown = measure(world, noise, labeler, size, seed, args.max_images)
        runs.append({'seed': seed, 'world': str(world) if args.world else 'generated', **stats})
        examples = examples or shown
    space = runs[0]['class_space']
    results = table(runs, space)
    _print(results, len(runs))
    seconds = time.perf_counter() - start
    generated = {'preset': args.indoor_preset} if space == SCANNET20 else {
        'scenes': args.scenes, 'duration_s': args.duration}
    document = {'world': {**({} if args.world else generated), 'class_space': space,
                          'path': [str(w) for w in args.world] if args.world else 'generated',
                          'label_size': list(size),
                          'seeds': args.seeds, 'max_images': args.max_images},
                'targets': results, 'runs': runs, 'seconds': seconds}
    name = INDOOR['name'] if space == SCANNET20 else 'teacher_calibration'
    path = write_results(name, document, args.out_dir)
    plot(path.with_suffix('.png'), results, examples, space)
    print(f'wrote {path} and {path.with_suffix(".png")} ({seconds:.0f} s)')
    return document


if __name__ == '__main__':
    main()
