"""The cns_ros demo (`make demo`): label-free training to live ROS 2 segmentation, on one machine.

Every step runs the project's own entry points, in order:

  1. world     offline_training.make_synthetic: a synthetic driving world in the exact nuScenes
               on-disk format (4 mini_train scenes for training, scene-0103 held out)
  2. labels    offline_training.pseudo_label with the SIMULATED teachers (stand-ins for
               MaskCLIP + SAM built from the world's rendered ground truth plus noise; the
               'realistic' noise preset, calibrated to published MaskCLIP and SAM errors)
  3. train     offline_training.train: a small CNS 3D network, short CPU run (the recipe
               of offline_training/study.py)
  4. export    offline_training.export: the model bundle the live node loads
  5. bag       offline_training.nuscenes_to_bag: the held-out scene as a rosbag2
  6. live      replay_node and segment_node as separate processes, started by
               `ros2 launch cns_ros segment.launch.py` when launch_ros and an installed cns_ros
               exist, else by cns_ros/launcher.py (same arguments, same parameters file); the
               bag loops until every keyframe has been labeled and the node's /diagnostics
               came after that (the node drops sweeps that arrive while it is busy: a
               keyframe still unlabeled after 20 passes fails the step, never a partial
               score); /cns/labeled_points (plus /lidar_top, /cns/class_names,
               /diagnostics) are recorded into a bag
  7. score     live mIoU: the recorded labeled clouds against the bag's /lidar_top/labels_gt
               (lidarseg ground truth of the keyframes), matched by header stamp; latency from
               /diagnostics and from the recorded arrival times; the same bundle scored
               offline by offline_training.evaluate for comparison; a bird's-eye-view PNG

Everything goes under --out (default demo_out/, which gets its own .gitignore). Steps whose
output exists are reused (a changed setting starts over); the live step always runs again.
The results are printed and written to OUT/summary.json.

exit status: 0 done; 1 a step failed (the message says which and where its log is); 130
interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from offline_training.demo_common import (
    FAST,
    LIDAR,
    LIVE_SCENE,
    VERSION,
    DemoError,
    Paths,
    Settings,
    add_tuning_options,
    call_tool,
    pct,
    report_run,
    say,
    tuned,
)
from offline_training.demo_live import run_live
from offline_training.demo_score import score

ROOT = Path(__file__).resolve().parents[1]

SIMULATED_NOTICE = """\
NOTE: this demo used SIMULATED teachers. The pseudo-labels come from the synthetic world's own
rendered ground truth with structured noise, here the '{noise}' preset
(config/teacher_noise/{noise}.yaml: MaskCLIP-like errors, most of them persistent per object,
and overlapping SAM-like masks, calibrated to published MaskCLIP and SAM errors); no CLIP or
SAM model ran, and the world is synthetic, not nuScenes. The numbers show that the pipeline
works end to end, not how well CNS works on real data."""

REAL_RUN = """\
With real CLIP / SAM checkpoints and a real nuScenes root (weights never download; pass local
files; multi-GPU: torchrun --nproc-per-node N -m offline_training.<tool> ...):

  python -m offline_training.pseudo_label --dataroot /data/nuscenes --version v1.0-trainval \\
      --split train --teacher maskclip --clip-checkpoint weights/ViT-B-16.pt \\
      --sam sam --sam-checkpoint weights/sam_vit_h_4b8939.pth --save-2d --out cache/nuscenes_train
  python -m offline_training.train --config config/train/nuscenes_cns.yaml \\
      --dataroot /data/nuscenes --version v1.0-trainval --cache cache/nuscenes_train \\
      --out runs/cns --set text.clip_checkpoint=weights/ViT-B-16.pt \\
      --set model.options_2d.backbone_checkpoint=weights/resnet50-0676ba61.pth
  python -m offline_training.export --run runs/cns --out bundles/cns
  python -m offline_training.evaluate --bundle bundles/cns --dataroot /data/nuscenes \\
      --version v1.0-trainval --split val --format nuscenes --official --out eval/cns
  python -m offline_training.nuscenes_to_bag --dataroot /data/nuscenes --version v1.0-trainval \\
      --scene scene-0003 --out bags/scene-0003
  ros2 launch cns_ros segment.launch.py model:=bundles/cns bag:=bags/scene-0003 rviz:=true
  # no launch_ros (pip-only host): cns_launch model:=bundles/cns bag:=bags/scene-0003"""


@contextlib.contextmanager
def step(timings: dict[str, float], name: str, what: str) -> Iterator[None]:
    """Print a step's start and duration; record the duration in ``timings`` (s)."""
    say(f'--- {name}: {what}')
    start = time.monotonic()
    yield
    timings[name] = round(time.monotonic() - start, 2)
    say(f'    {name} done in {timings[name]:.1f} s')


# --- offline steps ------------------------------------------------------------------------------

#: Folders of the other demos inside OUT (make demo-indoor, make demo-ovs3d): kept when the
#: settings change.
OTHER_DEMOS = ('indoor', 'ovs3d')


def prepare(paths: Paths, settings: Any) -> None:
    """Create OUT (with a .gitignore); start over when the settings (a dataclass) changed,
    keeping the other demos' folders (:data:`OTHER_DEMOS`)."""
    paths.out.mkdir(parents=True, exist_ok=True)
    (paths.out / '.gitignore').write_text('# written by offline_training/demo.py\n*\n')
    saved = paths.out / 'settings.json'
    current = json.dumps(asdict(settings), indent=2)
    if saved.is_file() and saved.read_text() != current:
        say(f'settings changed since the last run in {paths.out}: starting over')
        for item in paths.out.iterdir():
            if item.name not in ('.gitignore', *OTHER_DEMOS):
                shutil.rmtree(item) if item.is_dir() else item.unlink()
    saved.write_text(current)


def make_world(paths: Paths, s: Settings) -> None:
    from offline_training import make_synthetic

    if (paths.world / VERSION).is_dir():
        say(f'    reusing {paths.world}')
        return
    scenes = [item for scene in (*s.train_scenes, LIVE_SCENE) for item in ('--scene', scene)]
    call_tool('make_synthetic', make_synthetic.main, [
        '--out', str(paths.world), *scenes,
        '--duration', str(s.scene_duration_s), '--seed', str(s.seed),
        '--image-width', str(s.image_width), '--image-height', str(s.image_height),
        '--lidar-azimuth-steps', str(s.lidar_azimuth_steps), '--workers', str(s.threads),
        '--no-progress'])


def make_labels(paths: Paths, s: Settings) -> None:
    from offline_training import pseudo_label

    call_tool('pseudo_label', pseudo_label.main, [
        '--dataroot', str(paths.world), '--version', VERSION, '--scenes', *s.train_scenes,
        '--teacher', 'simulated', '--sam', 'simulated', '--simulated-noise', s.teacher_noise,
        '--seed', str(s.seed),
        '--image-size', *map(str, s.label_size), '--out', str(paths.cache), '--device', 'cpu',
        '--no-progress'])


def train(paths: Paths, s: Settings) -> None:
    from offline_training.study import CNS_3D

    # the short-CPU-run recipe of offline_training/study.py (3D-only CNS: the 2D co-training
    # network is too slow here; 0.2 m voxels, half-width MinkUNet14A, AdamW, class weights)
    train_3d(paths, s, 'synthetic_cns.yaml', CNS_3D, ['--version', VERSION])


def train_3d(paths: Paths, s: Any, preset: str, recipe: Sequence[str],
             data_args: Sequence[str]) -> None:
    """offline_training.train of ``config/train/<preset>`` with the ``recipe`` overrides, the
    settings' voxel size, steps, threads and seed (``data_args``: the dataset's own options);
    reused when its final checkpoint exists, else started afresh."""
    from cns_ros.training.checkpoint import checkpoint_path
    from offline_training import train as train_tool

    if checkpoint_path(paths.run, s.steps).is_file():
        say(f'    reusing {checkpoint_path(paths.run, s.steps)}')
        return
    if paths.run.exists():
        shutil.rmtree(paths.run)
    call_tool('train', train_tool.main, [
        '--config', str(ROOT / 'config' / 'train' / preset), '--dataroot', str(paths.world),
        *data_args, '--cache', str(paths.cache), '--out', str(paths.run),
        '--steps', str(s.steps), '--device', 'cpu', '--threads', str(s.threads),
        '--no-progress', *[item for value in recipe for item in ('--set', value)],
        '--set', f'model.voxel_size={s.voxel_size}',
        '--set', f'log.checkpoint_every={s.steps}', '--set', f'seed={s.seed}'])


def export(paths: Paths) -> None:
    from offline_training import export as export_tool

    call_tool('export', export_tool.main, ['--run', str(paths.run), '--out', str(paths.bundle),
                                       '--no-2d', '--overwrite'])


def make_bag(paths: Paths) -> None:
    from offline_training import nuscenes_to_bag

    if (paths.bag / 'metadata.yaml').is_file():
        say(f'    reusing {paths.bag}')
        return
    call_tool('nuscenes_to_bag', nuscenes_to_bag.main, [
        '--dataroot', str(paths.world), '--version', VERSION, '--scene', LIVE_SCENE,
        '--out', str(paths.bag), '--no-progress'])


# --- report -------------------------------------------------------------------------------------

def report(summary: dict[str, Any]) -> None:
    """Print the results, the simulated-teacher notice and the real-run commands."""
    r, live = summary['results'], summary['live_run']
    print('\n==================== cns_ros demo: results ====================')
    print(f'Live segmentation of {LIVE_SCENE} (held out from training), replayed at rate '
          f'{summary["settings"]["rate"]} through {live["how"]}:')
    print(f'  labeled clouds recorded: {live["labeled_clouds"]}; keyframes with ground truth '
          f'scored: {r["keyframes_scored"]}/{r["keyframes_in_bag"]}')
    print(f'  live mIoU vs lidarseg ground truth: {pct(r["live"]["miou"])} '
          f'(classes present: {pct(r["live"]["miou_present"])}, point accuracy '
          f'{pct(r["live"]["accuracy"])}, {r["live"]["points"]} points)')
    print(f'  same bundle offline (offline_training.evaluate, same scene): '
          f'{pct(r["offline_miou"])}; simulated teacher on the training scene: '
          f'{pct(r["teacher_miou_on_training_scene"])}')
    notice = SIMULATED_NOTICE.format(noise=summary['settings']['teacher_noise'])
    report_run(summary, LIDAR, 'sweeps', "bird's-eye view", f'{notice}\n\n{REAL_RUN}')


# --- command line -------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='demo', description=__doc__.split('\n\n')[0],
        epilog=__doc__.split('\n\n', 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', type=Path, default=Path('demo_out'),
                        help='output folder (default: %(default)s)')
    parser.add_argument('--indoor', action='store_true',
                        help='the indoor demo instead (offline_training/demo_indoor.py: synthetic '
                        'rooms in the ScanNet layout, live RGB-D segmentation, mIoU against the '
                        'mesh vertices), under OUT/indoor/; the other options go to it (its own: '
                        'python -m offline_training.demo_indoor --help)')
    parser.add_argument('--fast', action='store_true',
                        help='reduced sizes (1 s scenes, one training scene, 4 training '
                        'steps, replay at rate 0.25): the test suite\'s run, about 15-40 s '
                        'instead of 3-4 min on 2 cores, useless scores')
    parser.add_argument('--duration', type=float, help='seconds per synthetic scene (default: '
                        '8; --fast: 1)')
    add_tuning_options(parser, Settings(), FAST)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    s = tuned(FAST if args.fast else Settings(), args)
    return s if args.duration is None else replace(s, scene_duration_s=args.duration)


def run_demo(paths: Paths, s: Settings) -> dict[str, Any]:
    """Every step; returns the summary (also written to OUT/summary.json)."""
    timings: dict[str, float] = {}
    trained_on = ', '.join(s.train_scenes)
    with step(timings, 'world', f'synthetic nuScenes-format world ({trained_on} for '
                                f'training, {LIVE_SCENE} held out)'):
        make_world(paths, s)
    with step(timings, 'labels', 'pseudo-labels from the SIMULATED teachers (not CLIP/SAM)'):
        make_labels(paths, s)
    with step(timings, 'train', f'3D CNS network, {s.steps} steps on the CPU'):
        train(paths, s)
    with step(timings, 'export', 'model bundle for the live node'):
        export(paths)
    with step(timings, 'bag', f'{LIVE_SCENE} as a rosbag2'):
        make_bag(paths)
    with step(timings, 'live', 'replay_node + segment_node, recording /cns/labeled_points'):
        live = run_live(paths, s)
    with step(timings, 'score', 'live mIoU, latency, offline comparison, bird\'s-eye view'):
        results = score(paths, s, live)
    summary = {
        'teachers': 'SIMULATED (synthetic ground truth + noise; no CLIP/SAM)',
        'dataset': f'synthetic nuScenes-format world ({VERSION}); trained on {trained_on}, '
                   f'live on {LIVE_SCENE}',
        'settings': asdict(s), 'live_run': asdict(live), 'results': results,
        'timings_s': timings,
        'files': {k: str(getattr(paths, k)) for k in ('png', 'recorded', 'summary', 'bundle',
                                                      'bag', 'live_log')},
    }
    paths.summary.write_text(json.dumps(summary, indent=2) + '\n')
    return summary


def indoor_argv(argv: Sequence[str]) -> list[str] | None:
    """The arguments of offline_training.demo_indoor when ``argv`` holds ``--indoor`` (it
    dropped, ``--out OUT`` as ``--out OUT/indoor``), else None."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('--out', type=Path, default=Path('demo_out'))
    parser.add_argument('--indoor', action='store_true')
    known, rest = parser.parse_known_args(argv)
    return ['--out', str(known.out / 'indoor'), *rest] if known.indoor else None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo (the indoor one with ``--indoor``); 0 when every step worked, 1 when one
    failed."""
    indoor = indoor_argv(sys.argv[1:] if argv is None else argv)
    if indoor is not None:
        from offline_training import demo_indoor

        return demo_indoor.main(indoor)
    args = build_parser().parse_args(argv)
    settings = _settings(args)
    say('cns_ros demo: synthetic world -> pseudo-labels (SIMULATED teachers) -> training -> '
        'bundle -> bag -> live ROS 2 segmentation -> mIoU')
    say(SIMULATED_NOTICE.format(noise=settings.teacher_noise).replace('\n', ' '))
    return run_and_report(Paths(args.out.resolve()), settings, run_demo, report)


def run_and_report(paths: Paths, settings: Any,
                   run: Callable[[Any, Any], dict[str, Any]],
                   report_summary: Callable[[dict[str, Any]], None]) -> int:
    """A demo's main part: :func:`prepare` OUT, ``run(paths, settings)`` every step, add the
    total time to the summary (OUT/summary.json), ``report_summary`` it; 0 done, 1 a step
    failed (DemoError, said), 130 interrupted."""
    start = time.monotonic()
    prepare(paths, settings)
    try:
        summary = run(paths, settings)
    except DemoError as err:
        say(f'FAILED: {err}')
        return 1
    except KeyboardInterrupt:
        say(f'interrupted; finished steps are kept in {paths.out} and reused by the next run')
        return 130
    summary['timings_s']['total'] = round(time.monotonic() - start, 1)
    paths.summary.write_text(json.dumps(summary, indent=2) + '\n')
    report_summary(summary)
    return 0


if __name__ == '__main__':
    sys.exit(main())
