"""3D-OVS's FDA term on the synthetic table-top scenes: off, pairwise JS, pairwise KL.

Per scene (synthetic seeds; the scene's objects are the same, the capture differs): the teacher
cache (stand-in CLIP and DINO) and stage A are run once; then every row's stage B runs for each
training seed from that stage A, through the real ``train_ovs3d`` entry point, and the annotated
views are scored (reference protocol and clean protocol). The teachers' own mIoU on the same
views (the argmax of the finest CLIP scale's relevancy, at the CLIP resolution) is the
baseline a distilled field should beat.

Scene seed 0 is the validation scene: ``--validation`` runs the candidates of FDA's positive
weight there (results/ovs3d_val.json; the CPU preset's 20 was chosen from it, and the JS
divergence from an earlier val run); the report is on the test scenes (default seeds 1 and 2,
3 training seeds). Rows x seeds run in ``--jobs`` processes.

Writes benchmarks/results/ovs3d_ablation.json (every run's numbers, mean and sample std per row)
and ovs3d_ablation.png (per-class IoU per row).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from _common import RESULTS_DIR, write_results

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # offline_training (repo root)

PRESET = Path(__file__).resolve().parent.parent / 'config' / 'ovs3d' / 'synthetic_cpu.yaml'
ROWS: dict[str, tuple[str, list[str]]] = {  # name: (run folder, --set overrides)
    'no FDA': ('no_fda', ['stage_b.fda=false']),
    'FDA, pairwise JS (preset: positive weight 20)': ('fda_js', ['stage_b.fda_divergence=js']),
    'FDA, pairwise JS, reference weights (200)': (
        'fda_js_ref', ['stage_b.fda_divergence=js', 'stage_b.dino_pos_weight=200']),
    'FDA, pairwise KL (released code), weight 20': ('fda_kl', ['stage_b.fda_divergence=kl']),
}
VAL_ROWS: dict[str, tuple[str, list[str]]] = {  # the positive-weight candidates (validation)
    'no FDA': ('no_fda', ['stage_b.fda=false']),
    **{f'FDA JS, positive weight {w}': (f'js_pos{w}', ['stage_b.fda_divergence=js',
                                                        f'stage_b.dino_pos_weight={w}'])
       for w in (0, 5, 20, 50, 100, 200)},
}


def _main(argv: list[str]) -> None:
    from offline_training.train_ovs3d import main

    if main(argv) != 0:
        raise RuntimeError(f'train_ovs3d {argv} failed')


def prepare_scene(work: Path, seed: int) -> Path:
    """Scene, teachers and stage A of one synthetic seed (reused when present)."""
    base = work / f'scene_{seed}' / 'base'
    _main(['--synthetic', '--seed', str(seed), '--teachers', 'standin', '--config', str(PRESET),
           '--out', str(base), '--no-progress', '--threads', '1', '--stop-after', 'stage_a'])
    return base


def run_row(base: Path, name: str, seed: int, iterations: int) -> dict[str, Any]:
    """One row's stage B from ``base``'s stage A; the evaluation's numbers."""
    folder, overrides = ROWS[name]
    out = base.parent / f'{folder}_seed{seed}'
    if not (out / 'eval' / 'results.json').is_file():
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        for part in ('scene', 'teachers', 'stage_a'):
            shutil.copytree(base / part, out / part)
        sets = [*overrides, f'stage_b.seed={seed}', f'stage_b.iterations={iterations}',
                f'stage_b.joint_start={iterations // 3}']
        _main(['--scene', str(out / 'scene'), '--teachers', 'standin', '--config', str(PRESET),
               '--out', str(out), '--no-progress', '--threads', '1',
               *[a for s in sets for a in ('--set', s)]])
    return json.loads((out / 'eval' / 'results.json').read_text())


def teacher_miou(base: Path) -> dict[str, Any]:
    """The stand-in CLIP teacher's own scores (finest scale, argmax of the cosine)."""
    import numpy as np
    import torch

    from cns_ros.ovs3d.dataset import read_scene
    from cns_ros.ovs3d.metrics import reference_scores
    from cns_ros.ovs3d.pipeline import text_embeddings
    from cns_ros.ovs3d.standin import StandinClip
    from cns_ros.ovs3d.teacher_cache import TeacherCache

    scene, cache = read_scene(base / 'scene'), TeacherCache(base / 'teachers')
    text = text_embeddings(StandinClip(pattern_period=5.0), scene.class_names)
    gts, preds = [], []
    for view in scene.annotated_views:
        finest = cache.clip_features(view)[-1]
        preds.append(torch.einsum('dhw,cd->chw', finest, text).argmax(0).numpy().reshape(-1))
        gts.append(scene.masks(view, cache.clip_downsample).reshape(len(preds[-1]), -1))
    scores = reference_scores(np.stack(gts), np.stack(preds), len(scene.class_names))
    return {'miou': scores.miou, 'class_iou': scores.class_iou.tolist()}


def summarise(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample std of the reference and clean mIoU and of each class's IoU."""
    def stats(values: list[float]) -> dict[str, float]:
        return {'mean': statistics.fmean(values),
                'std': statistics.stdev(values) if len(values) > 1 else 0.0}
    classes = len(runs[0]['reference']['class_iou'])
    return {'reference_miou': stats([r['reference']['miou'] for r in runs]),
            'clean_miou': stats([r['clean']['miou'] for r in runs]),
            'accuracy': stats([r['reference']['accuracy'] for r in runs]),
            'class_iou': [stats([r['reference']['class_iou'][c] for r in runs])['mean']
                          for c in range(classes)]}


def plot(path: Path, classes: list[str], rows: dict[str, Any], teacher: list[float]) -> None:
    """Per-class IoU bars per row, the teacher beside them."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    series = {'teacher (finest CLIP scale)': teacher,
              **{k: v['class_iou'] for k, v in rows.items()}}
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series.items()):
        ax.bar(np.arange(len(classes)) + i * width, 100 * np.asarray(values), width, label=name)
    ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes, rotation=15, fontsize=8)
    ax.set_ylabel('IoU (%), test scenes')
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ablation; print the table; write JSON and PNG."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--work', type=Path, default=Path('/tmp/cns_ovs3d_ablation'))
    parser.add_argument('--scenes', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--iterations', type=int, default=600, help='stage-B iterations')
    parser.add_argument('--jobs', type=int, default=2)
    parser.add_argument('--out-dir', type=Path, default=RESULTS_DIR)
    parser.add_argument('--validation', action='store_true',
                        help='the positive-weight candidates on the validation scene (seed 0, '
                             'one training seed): results/ovs3d_val.json')
    args = parser.parse_args(argv)
    if args.validation:
        ROWS.clear()
        ROWS.update(VAL_ROWS)
        args.scenes, args.seeds = [0], [0]
    out_name = 'ovs3d_val' if args.validation else 'ovs3d_ablation'
    with ProcessPoolExecutor(args.jobs) as pool:
        bases = list(pool.map(prepare_scene, [args.work] * len(args.scenes), args.scenes))
        jobs = {(b, name, seed): pool.submit(run_row, b, name, seed, args.iterations)
                for b in bases for name in ROWS for seed in args.seeds}
        runs = {key: job.result() for key, job in jobs.items()}
    teachers = [teacher_miou(b) for b in bases]
    rows = {name: summarise([runs[(b, name, s)] for b in bases for s in args.seeds])
            for name in ROWS}
    teacher_classes = [statistics.fmean(t['class_iou'][c] for t in teachers)
                       for c in range(len(teachers[0]['class_iou']))]
    classes = runs[next(iter(runs))]['classes']
    print(f'scenes {args.scenes} x seeds {args.seeds}, stage B {args.iterations} iterations')
    teacher = 100 * statistics.fmean(t['miou'] for t in teachers)
    print(f'  teacher (finest CLIP scale): mIoU {teacher:.1f}')
    for name, row in rows.items():
        m, c = row['reference_miou'], row['clean_miou']
        print(f'  {name:34s} mIoU {100 * m["mean"]:.1f} +- {100 * m["std"]:.1f} '
              f'(clean {100 * c["mean"]:.1f} +- {100 * c["std"]:.1f})')
    results = {'classes': classes, 'scenes': args.scenes, 'seeds': args.seeds,
               'iterations': args.iterations, 'teacher': teachers, 'rows': rows,
               'runs': [{'scene': str(k[0]), 'row': k[1], 'seed': k[2],
                         'reference': v['reference'], 'clean': v['clean']}
                        for k, v in runs.items()]}
    write_results(out_name, results, args.out_dir)
    plot(Path(args.out_dir) / f'{out_name}.png', classes, rows, teacher_classes)
    return 0


if __name__ == '__main__':
    sys.exit(main())
