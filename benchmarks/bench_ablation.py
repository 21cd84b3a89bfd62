"""The synthetic-lab study: what each CNS and CLIP2Scene component contributes, in 3D and 2D.

Every row of offline_training/study.py (ROWS: CNS's 3D student on MaskCLIP labels, + SAM
refinement, + 2D-3D co-training, + the SAM latent loss, full CNS on Res16UNet34C; CLIP2Scene's
semantic loss, + spatial-temporal, + switchable self-training, full CLIP2Scene on SPVCNN) is
trained for --steps on the pseudo-labels of 24 train scenes, once per training seed, under each
teacher-noise preset (--noise: realistic, the headline and the default; clip_like, the old
world's, for comparison), and scored on 4 val scenes and 6 test scenes (reported; the recipe
choices were made on val: benchmarks/bench_recipe_val.py). The world
and the teachers' noise are fixed (seed 0); the seeds vary the training (initialisation,
sample order, augmentation, target switching).

Columns (devkit mIoU %, mean +- sample standard deviation over the seeds): the 3D network on
every test point and on the points the teacher labels, the teacher on those same points; the 2D
network on every test camera pixel against the ground-truth semantic images, the teacher on the
same pixels; the 3D network on the val scenes.

Writes results/ablation_<noise>.json (every seed's numbers, the means and spreads, the
settings) and results/ablation_<noise>.png (test per-class IoU bars, seed means, teacher
beside). The default run (realistic, 9 rows x 3 seeds at 200 steps) took 47 minutes on the
2-core development machine; each further noise preset as long again, less with --rows (4 rows:
20 minutes).

--world indoor runs the indoor study instead (study.INDOOR, study.INDOOR_ROWS): the synthetic
indoor world in the ScanNet layout (4 train rooms, 1 val room for choices, 2 test rooms
reported), teachers under the realistic_indoor noise, CLIP2Scene's ScanNet objective, the 20
classes scored per mesh vertex (3D) and per labelled frame (2D), official mIoU; it writes
results/ablation_indoor_<noise>.json and .png.

usage: python benchmarks/bench_ablation.py [--world outdoor|indoor] [--noise realistic ...]
           [--steps 200] [--seeds 0 1 2] [--rows KEY ...] [--jobs 2] [--work DIR] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from _common import write_results

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # offline_training (repo root)
from offline_training import study

WORLDS = {'outdoor': (study.StudyWorld(), study.ROWS, 'realistic'),  # world, rows, noise
          'indoor': (study.INDOOR, study.INDOOR_ROWS, 'realistic_indoor')}
ROWS = {row.key: row for row in study.ROWS}
#: Relative CPU cost of a row's training step (measured; schedules the slow rows first).
_COST = {'cns_clip': 1, 'cns_sam': 1, 'c2s_semantic': 2, 'c2s_st': 3, 'c2s_full': 3,
         'c2s_distill': 3, 'c2s_full_spvcnn': 5, 'cns_cotrain': 5, 'cns_full': 5,
         'cns_full_34c': 7}


def prepare(work: Path, noises: Sequence[str], rows: Sequence[study.Row],
            splits: Sequence[study.Split] = study.SPLITS,
            setup: study.StudyWorld | None = None) -> study.Study:
    """The world (default: the driving one) and every cache the rows need on ``splits``
    (resumed when present)."""
    prepared = study.make_world(work, setup or study.StudyWorld())
    for noise in noises:
        for sam in sorted({row.sam for row in rows}):
            for split in splits:
                study.make_cache(prepared, noise, sam, split)
    return prepared


def mean_std(values: Sequence[float | None]) -> dict[str, float | None]:
    """Mean and sample standard deviation (None when a value is missing; std 0 for one)."""
    if not values or any(v is None for v in values):
        return {'mean': None, 'std': None}
    return {'mean': statistics.fmean(values),
            'std': statistics.stdev(values) if len(values) > 1 else 0.0}


def aggregate(per_seed: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """{split: {metric: mean/std}} plus the test per-class IoU means, from per-seed results."""
    out: dict[str, Any] = {}
    for split in per_seed[0]:
        scalars = [k for k, v in per_seed[0][split].items() if not isinstance(v, dict)]
        out[split] = {k: mean_std([r[split][k] for r in per_seed]) for k in scalars}
    for key in ('net3d_iou', 'teacher3d_iou'):
        classes = per_seed[0]['test'][key]
        out['test'][key] = {c: mean_std([r['test'][key][c] for r in per_seed])['mean']
                            for c in classes}
    return out


def _cell(stat: dict[str, float | None]) -> str:
    if stat['mean'] is None:
        return f'{"-":>11s}'
    return f'{stat["mean"]:5.1f} +-{stat["std"]:4.1f}'


def table(results: dict[str, dict[str, Any]]) -> str:
    """Plain-text table of the aggregated rows (columns: module docstring)."""
    head = (f'{"row":48s} {"3D test":>11s} {"3D paired":>11s} {"teacher 3D":>11s} '
            f'{"2D test":>11s} {"teacher 2D":>11s} {"3D val":>11s}')
    lines = [head]
    for name, r in results.items():
        test, val = r['mean_std']['test'], r['mean_std']['val']
        lines.append(f'{name:48s} ' + ' '.join(_cell(s) for s in (
            test['net3d_miou'], test['net3d_paired_miou'], test['teacher3d_miou'],
            test['net2d_miou'], test['teacher2d_miou'], val['net3d_miou'])))
    return '\n'.join(lines)


def plot(results: dict[str, dict[str, Any]], path: Path, title: str,
         rows_by_key: dict[str, study.Row] = ROWS) -> None:
    """Per-class test IoU bars: each row's seed mean, and the teacher of the first row."""
    from offline_training.evaluate import bar_chart

    def bars(iou: dict[str, float | None], miou: float | None) -> dict[str, Any]:
        return {'miou': None if miou is None else miou / 100,
                'classes': {c: {'iou': None if v is None else v / 100} for c, v in iou.items()}}

    rows = {name: bars(r['mean_std']['test']['net3d_iou'],
                       r['mean_std']['test']['net3d_miou']['mean'])
            for name, r in results.items()}
    first = next(iter(results.values()))
    labels = 'SAM-refined MaskCLIP' if rows_by_key[first['key']].sam else 'MaskCLIP'
    test = first['mean_std']['test']
    rows[f'teacher ({labels} labels)'] = bars(test['teacher3d_iou'],
                                              test['teacher3d_miou']['mean'])
    bar_chart(path, title, rows)


def _run(prepared: study.Study, key: str, noise: str, steps: int, seed: int) -> dict[str, Any]:
    rows = study.INDOOR_ROWS if prepared.setup.dataset == 'scannet' else study.ROWS
    return study.run_row(prepared, next(r for r in rows if r.key == key), noise, steps, seed)


def run_all(prepared: study.Study, noises: Sequence[str], keys: Sequence[str], steps: int,
            seeds: Sequence[int], jobs: int, rows_by_key: dict[str, study.Row] = ROWS
            ) -> dict[str, dict[str, dict[str, Any]]]:
    """Every (noise, row, seed), slowest rows first, ``jobs`` at a time."""
    tasks = sorted(((n, k, s) for n in noises for k in keys for s in seeds),
                   key=lambda t: -_COST.get(t[1], 1))
    context = multiprocessing.get_context('spawn')
    with ProcessPoolExecutor(jobs, mp_context=context) as pool:
        futures = {t: pool.submit(_run, prepared, t[1], t[0], steps, t[2]) for t in tasks}
        done = {t: f.result() for t, f in futures.items()}
    return {noise: {rows_by_key[k].name: {'key': k,
                                          'overrides': list(rows_by_key[k].overrides),
                                          'per_seed': {s: done[(noise, k, s)] for s in seeds}}
                    for k in keys} for noise in noises}


def _teachers(prepared: study.Study, noise: str, rows: Sequence[study.Row]) -> dict[str, Any]:
    """Every resolved teacher setting of the train caches (from their manifests)."""
    from cns_ros.teachers import cache

    return {('sam' if sam else 'clip'): cache.read_manifest(
        prepared.cache(noise, sam, 'train'))['teachers'] for sam in sorted({r.sam for r in rows})}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--world', choices=list(WORLDS), default='outdoor',
                        help='the driving world (default) or the indoor world')
    parser.add_argument('--noise', nargs='+', default=None, help='teacher-noise presets '
                        '(config/teacher_noise/; default: realistic, indoors realistic_indoor)')
    parser.add_argument('--steps', type=int, default=200, help='training steps per run')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--rows', nargs='+', help='row keys (default: all of the world)')
    parser.add_argument('--jobs', type=int, default=2, help='runs trained in parallel')
    parser.add_argument('--work', default=None, help='work folder (default: a temporary one)')
    parser.add_argument('--out-dir', default=None, help='results folder')
    args = parser.parse_args(argv)
    setup, world_rows, default_noise = WORLDS[args.world]
    rows_by_key = {row.key: row for row in world_rows}
    args.rows = args.rows or list(rows_by_key)
    args.noise = args.noise or [default_noise]
    unknown = [k for k in args.rows if k not in rows_by_key]
    if unknown:
        parser.error(f'--rows: {unknown} are not rows of the {args.world} study; expected '
                     f'some of {list(rows_by_key)}')
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix='cns_ablation_') as tmp:
        prepared = prepare(Path(args.work or tmp).resolve(), args.noise,
                           [rows_by_key[k] for k in args.rows], setup=setup)
        raw = run_all(prepared, args.noise, args.rows, args.steps, args.seeds, args.jobs,
                      rows_by_key)
    minutes = (time.perf_counter() - start) / 60
    for noise, rows in raw.items():
        for row in rows.values():
            row['mean_std'] = aggregate(list(row['per_seed'].values()))
        indoor = args.world == 'indoor'
        title = (f'synthetic {"indoor " if indoor else ""}lab, {noise} teachers, test scenes, '
                 f'{args.steps} steps, seeds {args.seeds}: 3D per-class IoU (seed mean)')
        print(f'\n{title}\n(mIoU %, mean +- std over seeds)\n{table(rows)}')
        path = write_results(f'ablation_{"indoor_" if indoor else ""}{noise}', {
            'world': args.world, 'noise': noise, 'steps': args.steps, 'seeds': args.seeds,
            'scenes': {s: list(prepared.setup.scenes(s)) for s in study.SPLITS},
            'recipe': list(study.INDOOR_RECIPE if indoor else study.RECIPE),
            'teachers': _teachers(prepared, noise, [rows_by_key[k] for k in args.rows]),
            'minutes_all_noises': minutes, 'rows': rows}, args.out_dir)
        plot(rows, path.with_suffix('.png'), title, rows_by_key)
        print(f'wrote {path} and {path.with_suffix(".png")}')
    print(f'{minutes:.1f} minutes')
    return raw


if __name__ == '__main__':
    main()
