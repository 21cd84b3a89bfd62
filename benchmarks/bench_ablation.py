"""CNS component ablation on the synthetic world: held-out mIoU of the trained 3D network.

Every row trains the same 3D-only CNS recipe (offline_training/study.py: MinkUNet14A at half
width, AdamW, the same steps and seeds) on CLIP-like simulated pseudo-labels of 24 training
scenes and evaluates on 6 held-out scenes; rows differ in one component:

  no_sam_refinement    teacher labels NOT refined by (simulated) SAM, plain cross-entropy
  sam_refinement       + SAM refinement of the teacher labels (CNS's label refinement)
  + co_training        + target switching after half the steps (3D-only: the 'code' rule over
                       teacher / teacher point / own refined prediction)
  + class_balance      refinement + label-frequency class weights (cns.class_balance 0.5)
  + both               refinement + class weights + co-training

The latent (SAM-feature) loss has no row: the simulated SAM embedding is a projection of the
ground-truth classes, so on this world it would leak labels (run it on real data). The 2D
network is off (too slow on a CPU), so co-training has no 2D-prediction source here.

Prints a table (mIoU %: network on all held-out points and on the paired points, the teacher
on the same paired points, the pseudo-labels trained on; point accuracy) and writes
results/ablation_cns.json and results/ablation_cns.png (per-class IoU bars). CPU only; about
5 CPU-minutes per row at --steps 1000 (rows run in parallel with --jobs).

usage: python benchmarks/bench_ablation.py [--steps 1000] [--work DIR] [--jobs 2] [--rows ...]
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from _common import write_results

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # offline_training (repo root)
from offline_training import study

#: name -> (training cache, --set overrides of the study recipe); {half} = steps // 2.
ROWS: dict[str, tuple[str, tuple[str, ...]]] = {
    'no_sam_refinement': ('train_nosam', ('cns.class_balance=0',)),
    'sam_refinement': ('train', ('cns.class_balance=0',)),
    'sam_refinement+co_training': ('train', ('cns.class_balance=0', 'cns.co_training=true',
                                             'cns.start_step={half}')),
    'sam_refinement+class_balance': ('train', ()),
    'sam_refinement+class_balance+co_training': ('train', ('cns.co_training=true',
                                                           'cns.start_step={half}')),
}


def _row(prepared: study.Study, name: str, steps: int) -> dict[str, Any]:
    cache, overrides = ROWS[name]
    overrides = tuple(item.format(half=steps // 2) for item in overrides)
    metrics = study.train_and_evaluate(prepared, name, steps, overrides, train_cache=cache)
    return {'overrides': list(overrides), **study.summary(metrics),
            'net_iou': {k: 100 * v['iou'] for k, v in metrics['net3d']['classes'].items()}}


def _prepare(work: Path, need_nosam: bool) -> study.Study:
    prepared = study.make_world(work)
    study.make_cache(prepared, 'train', prepared.setup.train_scenes)
    study.make_cache(prepared, 'held_out', prepared.setup.held_out_scenes)
    if need_nosam:
        study.make_cache(prepared, 'train_nosam', prepared.setup.train_scenes, sam='none')
    return prepared


def _table(rows: dict[str, dict[str, Any]]) -> str:
    head = (f'{"row":44s} {"net":>6s} {"paired":>7s} {"teacher":>8s} {"trained on":>11s} '
            f'{"acc":>6s} {"t.acc":>6s}')
    lines = [head]
    for name, r in rows.items():
        lines.append(f'{name:44s} {r["net_miou"]:6.1f} {r["net_paired_miou"]:7.1f} '
                     f'{r["teacher_held_out_miou"]:8.1f} {r["trained_on_miou"]:11.1f} '
                     f'{r["net_accuracy"]:6.1f} {r["teacher_accuracy"]:6.1f}')
    return '\n'.join(lines)


def plot(rows: dict[str, dict[str, Any]], path: Path, steps: int) -> None:
    """Per-class IoU bars of the held-out network, one colour per row (PNG)."""
    from offline_training.evaluate import bar_chart

    bars = {name: {'miou': r['net_miou'] / 100,
                   'classes': {c: {'iou': v / 100} for c, v in r['net_iou'].items()}}
            for name, r in rows.items()}
    bar_chart(path, f'CNS ablation, synthetic world, held-out scenes, {steps} steps: '
              '3D per-class IoU', bars)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--steps', type=int, default=1000, help='training steps per row')
    parser.add_argument('--work', default=None, help='work folder (default: a temporary one)')
    parser.add_argument('--jobs', type=int, default=2, help='rows trained in parallel')
    parser.add_argument('--rows', nargs='+', choices=list(ROWS), default=list(ROWS))
    parser.add_argument('--out-dir', default=None, help='results folder')
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix='cns_ablation_') as tmp:
        prepared = _prepare(Path(args.work or tmp).resolve(),
                            need_nosam=any(ROWS[r][0] == 'train_nosam' for r in args.rows))
        context = multiprocessing.get_context('spawn')
        with ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
            futures = {name: pool.submit(_row, prepared, name, args.steps)
                       for name in args.rows}
            rows = {name: future.result() for name, future in futures.items()}
    print(f'CNS component ablation, synthetic world, {args.steps} steps (mIoU / accuracy %):')
    print(_table(rows))
    path = write_results('ablation_cns', {'steps': args.steps, 'rows': rows}, args.out_dir)
    plot(rows, path.with_suffix('.png'), args.steps)
    print(f'wrote {path} and {path.with_suffix(".png")}')
    return rows


if __name__ == '__main__':
    main()
