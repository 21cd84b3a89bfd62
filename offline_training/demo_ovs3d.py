"""The 3D-OVS demo (`make demo-ovs3d`): a captured scene to a live, relabelled ROS 2 map.

Every step runs the project's own entry points, in order:

  1. train     offline_training.train_ovs3d on the synthetic table-top scene (3D-OVS layout,
               12 views, 3 annotated) with the STAND-IN teachers (colour and pattern
               descriptors; no CLIP or DINO weights): teachers, stage A (radiance field),
               stage B (CLIP + DINO distillation), evaluation of the annotated views (overlays
               in OUT/run/eval), export of the labeled map (OUT/map, OUT/map.ply)
  2. live      cns_ros.ros.ovs_map_node as a separate process serving OUT/map; this process
               subscribes transient-local to /cns/ovs/labeled_points and /cns/class_names and:
               scores the first cloud against the generator's ground truth (the map points on
               the surface seen by an annotated view: projected with the capture's poses,
               within 0.05 of the rendered depth; the cloud's label against the class drawn
               there); sets the node's vocabulary parameter to a reordered subset of the map's
               own class names (the node relabels from the map's text cache: a stand-in map
               carries no CLIP model, so new names would need a clip_checkpoint) and checks
               that every point of a kept class keeps it under its new id; requests an empty
               vocabulary and a name without a text embedding and shows both refused with the
               node's reason, the labels unchanged; stops the node with Ctrl-C (exit code 0)

ROS traffic stays on this host (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) in a random
ROS_DOMAIN_ID unless one is set. Everything goes under --out (default demo_out/ovs3d, with its
own .gitignore); the results are printed and written to OUT/summary.json. A run starts over
unless --keep finds a finished one with the same settings.

exit status: 0 done; 1 a step failed (the message says which and where its log is); 130
interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from offline_training.demo_common import DemoError, call_tool, say

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / 'config' / 'ovs3d' / 'synthetic_cpu.yaml'
NODE_MODULE = 'cns_ros.ros.ovs_map_node'
NODE_NAME = 'cns_ovs_map'
SURFACE_TOLERANCE = 0.05
"""A map point is on the surface an annotated view sees when its depth is within this of the
rendered depth (world units)."""
GT_DOWNSAMPLE = 4
"""Ground truth rendered at the evaluation size (160 x 120)."""
RELABEL = ('yellow plain box', 'brown banded table', 'blue checkered cylinder',
           'red plain ball')
"""The runtime vocabulary: four of the map's own names, reordered (the wall and the red box
dropped: their points go to the nearest kept class)."""
UNKNOWN_NAME = 'red thing'
STARTUP_TIMEOUT_S = 90.0
EXIT_TIMEOUT_S = 30.0

STANDIN_NOTICE = """\
NOTE: this demo uses the STAND-IN teachers (colour and pattern descriptors of the synthetic
scene, no CLIP or DINO weights) on a synthetic scene. The numbers show that the pipeline works
end to end, not how well 3D-OVS segments real scenes."""

REAL_RUN = """\
With a real 3D-OVS scene and local CLIP / DINO checkpoints (nothing is downloaded):

  python -m offline_training.train_ovs3d --scene data/3dovs/bed --out runs/bed \\
      --config config/ovs3d/reference.yaml --clip-checkpoint weights/ViT-B-16.pt \\
      --dino-checkpoint weights/dino_vitbase8_pretrain.pth --export runs/bed/map --ply
  ros2 launch cns_ros ovs_map.launch.py map:=runs/bed/map vocabulary:='[banana, white sheet]'
  # new names at run time need the map's CLIP model: clip_checkpoint:=weights/ViT-B-16.pt"""


class Paths:
    """The files of a run under ``out``."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.run = out / 'run'
        self.map = out / 'map'
        self.ply = out / 'map.ply'
        self.results = self.run / 'eval' / 'results.json'
        self.settings = out / 'settings.json'
        self.node_log = out / 'node.log'
        self.summary = out / 'summary.json'

    def overlays(self) -> list[str]:
        return sorted(str(p) for p in (self.run / 'eval').glob('*.png'))


@contextlib.contextmanager
def step(timings: dict[str, float], name: str, what: str) -> Iterator[None]:
    """Print a step's start and duration; record the duration in ``timings`` (s)."""
    say(f'--- {name}: {what}')
    start = time.monotonic()
    yield
    timings[name] = round(time.monotonic() - start, 1)
    say(f'    {name} done in {timings[name]:.1f} s')


# --- 1. train -----------------------------------------------------------------------------------

def _scaled(values: Sequence[int], preset: int, iterations: int) -> list[int]:
    """A schedule of the preset (iterations ``preset``) at the same fractions of ``iterations``."""
    return sorted({min(max(1, round(v * iterations / preset)), iterations - 1) for v in values})


def schedule_overrides(stage_a: int | None, stage_b: int | None) -> list[str]:
    """``--set`` arguments for other stage lengths: the preset's upsampling, alpha-mask and
    joint-start iterations at the same fractions of the new lengths."""
    import yaml

    preset = yaml.safe_load(PRESET.read_text())
    a, b = preset['stage_a'], preset['stage_b']
    sets: list[str] = []
    if stage_a is not None:
        sets += [f'stage_a.iterations={stage_a}',
                 f'stage_a.upsample_at={_scaled(a["upsample_at"], a["iterations"], stage_a)}',
                 f'stage_a.alpha_mask_at='
                 f'{_scaled(a["alpha_mask_at"], a["iterations"], stage_a)}']
    if stage_b is not None:
        sets += [f'stage_b.iterations={stage_b}',
                 f'stage_b.joint_start='
                 f'{_scaled([b["joint_start"]], b["iterations"], stage_b)[0]}']
    return [item for value in sets for item in ('--set', value)]


def prepare(paths: Paths, settings: dict[str, Any], keep: bool) -> bool:
    """Create OUT (with a .gitignore); True when --keep finds a finished run with the same
    settings, else the previous run's outputs are removed."""
    paths.out.mkdir(parents=True, exist_ok=True)
    (paths.out / '.gitignore').write_text('# written by offline_training/demo_ovs3d.py\n*\n')
    current = json.dumps(settings, indent=2, sort_keys=True)
    saved = paths.settings.read_text() if paths.settings.is_file() else None
    finished = all(p.exists() for p in (paths.results, paths.map / 'map.safetensors',
                                        paths.ply))
    if keep and finished and saved == current:
        return True
    if keep:
        say('    --keep: ' + ('the settings changed since the last run' if finished and
                              saved is not None else 'no finished run') + f' in {paths.out}; '
            'training again')
    for item in (paths.run, paths.map, paths.ply, paths.out / 'map_bag', paths.summary):
        if item.is_dir():
            shutil.rmtree(item)
        elif item.exists():
            item.unlink()
    paths.settings.write_text(current)
    return False


def train(paths: Paths, args: argparse.Namespace) -> dict[str, Any]:
    """offline_training.train_ovs3d with the stand-in teachers; returns OUT/run/eval's
    results."""
    from offline_training import train_ovs3d

    argv = ['--synthetic', '--teachers', 'standin', '--config', str(PRESET),
            '--out', str(paths.run), '--export', str(paths.map), '--ply',
            '--seed', str(args.seed)]
    if not sys.stdout.isatty():
        argv.append('--no-progress')
    if args.threads:
        argv += ['--threads', str(args.threads)]
    argv += schedule_overrides(args.stage_a_iterations, args.stage_b_iterations)
    call_tool('train_ovs3d', train_ovs3d.main, argv)
    return read_results(paths)


def read_results(paths: Paths) -> dict[str, Any]:
    if not paths.results.is_file():
        raise DemoError(f'train_ovs3d wrote no evaluation ({paths.results} is missing)')
    return json.loads(paths.results.read_text())


def evaluation_line(results: dict[str, Any]) -> str:
    ref, clean = results['reference'], results['clean']
    return (f'{len(results["views"])} annotated views: mIoU {100 * ref["miou"]:.1f} / accuracy '
            f'{100 * ref["accuracy"]:.1f} (reference protocol); mIoU '
            f'{100 * clean["miou"]:.1f} (clean)')


# --- 2. live ------------------------------------------------------------------------------------

def surface_truth(xyz: np.ndarray, seed: int) -> np.ndarray:
    """Per point, the class index (into ``synthetic.CLASS_NAMES``) the generator drew where an
    annotated view sees it on the surface (the first such view), -1 for points no annotated
    view sees on its surface."""
    from cns_ros.ovs3d.synthetic import SyntheticSceneConfig, capture_poses, render_view

    config = SyntheticSceneConfig(seed=seed)
    height, width = config.height // GT_DOWNSAMPLE, config.width // GT_DOWNSAMPLE
    focal = config.focal / GT_DOWNSAMPLE
    poses = capture_poses(config)
    points = np.asarray(xyz, np.float64)
    truth = np.full(len(points), -1, np.int64)
    for view in config.annotated:
        pose = poses[view]
        _, classes, depth = render_view(config, pose, height, width, focal)
        rel = (points - pose[:, 3]) @ pose[:, :3]  # camera frame (x right, y up, z back)
        z = -rel[:, 2]
        front = z > 1e-6
        u = np.full(len(points), -1)
        v = np.full(len(points), -1)
        u[front] = np.floor(rel[front, 0] / z[front] * focal + width / 2).astype(int)
        v[front] = np.floor(-rel[front, 1] / z[front] * focal + height / 2).astype(int)
        inside = front & (u >= 0) & (u < width) & (v >= 0) & (v < height)
        seen = np.zeros(len(points), bool)
        seen[inside] = np.abs(z[inside] - depth[v[inside], u[inside]]) < SURFACE_TOLERANCE
        new = seen & (truth < 0)
        truth[new] = classes[v[new], u[new]]
    return truth


def point_accuracy(labels: np.ndarray, names: Sequence[str], truth: np.ndarray
                   ) -> dict[str, Any]:
    """The cloud's labels (ids into ``names``) against ``truth`` (indices into the generator's
    CLASS_NAMES): per class the points on the annotated views' surface and their accuracy."""
    from cns_ros.ovs3d.synthetic import CLASS_NAMES

    to_truth = np.array([CLASS_NAMES.index(n) if n in CLASS_NAMES else -2 for n in names])
    predicted = to_truth[labels.astype(np.int64)]
    seen = truth >= 0
    per_class = {}
    for index, name in enumerate(CLASS_NAMES):
        sel = truth == index
        count = int(sel.sum())
        per_class[name] = {'points': count, 'accuracy': float((predicted[sel] == index).mean())
                           if count else None}
    return {'points_checked': int(seen.sum()),
            'accuracy': float((predicted[seen] == truth[seen]).mean()) if seen.any() else 0.0,
            'per_class': per_class}


def _tail(path: Path, lines: int = 25) -> str:
    text = path.read_text(errors='replace').splitlines() if path.is_file() else []
    return '\n'.join(text[-lines:])


def keep_ros_local() -> None:
    """DDS on this host, in a domain of its own unless ROS_DOMAIN_ID is set (the node inherits
    this environment)."""
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    os.environ.setdefault('ROS_LOCALHOST_ONLY', '1')  # the same for Humble
    os.environ.setdefault('ROS_DOMAIN_ID', str(random.SystemRandom().randint(1, 100)))


def _cloud(msg: Any) -> tuple[np.ndarray, np.ndarray]:
    """(xyz float64 [N,3], label int64 [N]) of a labeled cloud."""
    from cns_ros.pointcloud import read_cloud

    points = read_cloud(msg)
    xyz = np.stack([points[a].astype(np.float64) for a in 'xyz'], axis=1)
    return xyz, points['label'].astype(np.int64)


def run_live(paths: Paths, seed: int) -> dict[str, Any]:
    """ovs_map_node in a subprocess; score, relabel, refuse, stop (module docstring)."""
    from cns_ros.ros.node_process import reap, start_node

    keep_ros_local()
    try:
        from cns_ros.ros.ovs_map_client import OvsMapClient
    except ImportError as exc:
        raise DemoError(f'rclpy is not importable ({exc}): install the ROS 2 wheels (make '
                        'venv) or source a ROS 2 install') from None
    say(f'    ROS_DOMAIN_ID={os.environ["ROS_DOMAIN_ID"]}, discovery on localhost; node '
        f'output: {paths.node_log}')
    proc = start_node(NODE_MODULE, paths.node_log, {'map': str(paths.map)}, cwd=ROOT)
    live: dict[str, Any] = {'domain_id': os.environ['ROS_DOMAIN_ID'],
                            'command': ' '.join(proc.args)}
    try:
        with OvsMapClient(NODE_NAME, 'cns_ovs_demo') as client:
            live.update(_talk(client, proc, paths, seed))
        live['exit_code'] = _stop(proc, paths)
    finally:
        reap([proc], grace_s=10)
    log = paths.node_log.read_text(errors='replace')
    if 'Traceback' in log:
        raise DemoError(f'ovs_map_node logged a traceback; see {paths.node_log}:\n'
                        + _tail(paths.node_log))
    say(f'    ovs_map_node stopped with Ctrl-C: exit code {live["exit_code"]}')
    return live


def _alive(proc: subprocess.Popen, paths: Paths) -> Callable[[], None]:
    def check() -> None:
        if proc.poll() is not None:
            raise DemoError(f'ovs_map_node exited early (status {proc.returncode}); see '
                            f'{paths.node_log}:\n' + _tail(paths.node_log))
    return check


def _talk(client: Any, proc: subprocess.Popen, paths: Paths, seed: int) -> dict[str, Any]:
    alive = _alive(proc, paths)
    start = time.monotonic()
    if not client.spin_until(lambda: client.clouds and client.names and client.service_ready,
                             STARTUP_TIMEOUT_S, alive):
        raise DemoError(f'no labeled cloud from ovs_map_node within {STARTUP_TIMEOUT_S:.0f} s; '
                        f'see {paths.node_log}:\n' + _tail(paths.node_log))
    first_s = time.monotonic() - start
    names = [entry['name'] for entry in client.names[-1]]
    msg = client.clouds[-1]
    xyz, labels = _cloud(msg)
    say(f'    first cloud after {first_s:.1f} s: {len(labels)} points in frame '
        f'{msg.header.frame_id!r}, classes {names}')
    accuracy = point_accuracy(labels, names, surface_truth(xyz, seed))
    _print_accuracy(accuracy)
    result = {'first_cloud_s': round(first_s, 1), 'frame_id': msg.header.frame_id,
              'map_points': len(labels), 'classes': names, 'ground_truth': accuracy}
    result['relabel'] = _relabel(client, alive, paths, names, labels)
    result['refusals'] = _refusals(client, alive)
    return result


def _print_accuracy(accuracy: dict[str, Any]) -> None:
    say(f'    map points on the surface seen by the annotated views: '
        f'{accuracy["points_checked"]}; point accuracy vs the generator\'s ground truth: '
        f'{100 * accuracy["accuracy"]:.1f} %')
    say(f'      {"class":<26}{"points":>8}{"accuracy":>10}')
    for name, row in accuracy['per_class'].items():
        say(f'      {name:<26}{row["points"]:>8}{_pct(row["accuracy"]):>10}')


def _relabel(client: Any, alive: Callable[[], None], paths: Paths, names: list[str],
             labels: np.ndarray) -> dict[str, Any]:
    """vocabulary := RELABEL; the new cloud's labels against the old ones."""
    missing = [n for n in RELABEL if n not in names]
    if missing:
        raise DemoError(f'the map has no class {missing} (its classes: {names})')
    entries = list(RELABEL)
    say(f'    vocabulary := {entries} (the map\'s own names, reordered, without '
        f'{[n for n in names if n not in entries]})')
    clouds, lists = len(client.clouds), len(client.names)
    ok, reason = client.set_vocabulary(entries, abort=alive)
    if not ok:
        raise DemoError(f'ovs_map_node refused the vocabulary {entries}: {reason}')
    if not client.spin_until(lambda: len(client.clouds) > clouds and len(client.names) > lists,
                             30.0, alive):
        raise DemoError(f'no relabelled cloud within 30 s of the vocabulary change; see '
                        f'{paths.node_log}')
    new_names = [entry['name'] for entry in client.names[-1]]
    _, new_labels = _cloud(client.clouds[-1])
    if new_names != entries or len(new_labels) != len(labels):
        raise DemoError(f'relabelled cloud: classes {new_names}, {len(new_labels)} points; '
                        f'expected {entries}, {len(labels)} points')
    old = np.array(names)[labels]
    new = np.array(new_names)[new_labels]
    kept = np.isin(old, entries)
    unchanged = int((old[kept] == new[kept]).sum())
    moved = {name: {target: int(((old == name) & (new == target)).sum())
                    for target in entries if ((old == name) & (new == target)).any()}
             for name in names if name not in entries}
    shares = {name: float((new_labels == i).mean()) for i, name in enumerate(entries)}
    ids = {name: [names.index(name), i] for i, name in enumerate(entries)}
    say(f'    relabelled cloud: {int(kept.sum())} points of a kept class, {unchanged} keep '
        f'their class under its new id (' + ', '.join(f'{n} {a}->{b}' for n, (a, b) in
                                                       ids.items()) + ')')
    for name, targets in moved.items():
        say(f'      {name} (dropped): ' + (', '.join(f'{c} -> {t}' for t, c in targets.items())
                                           or 'no points'))
    say('    relabelled class shares: ' + ', '.join(f'{n} {100 * s:.1f} %'
                                                   for n, s in shares.items()))
    if unchanged != int(kept.sum()):
        raise DemoError(f'{int(kept.sum()) - unchanged} points of a kept class changed class '
                        'after relabelling (argmax over a subset must keep them)')
    return {'vocabulary': entries, 'successful': ok, 'kept_points': int(kept.sum()),
            'kept_unchanged': unchanged, 'ids': ids, 'moved': moved, 'shares': shares}


def _refusals(client: Any, alive: Callable[[], None]) -> list[dict[str, Any]]:
    """An empty vocabulary and a name without a text embedding: refused, labels stay."""
    out = []
    for entries, why in (([], 'an empty list'),
                         ([UNKNOWN_NAME, RELABEL[0]], 'a name the map has no text embedding '
                          'for (no clip_checkpoint)')):
        clouds, lists = len(client.clouds), len(client.names)
        labels = bytes(client.clouds[-1].data)
        ok, reason = client.set_vocabulary(entries, abort=alive)
        client.spin_until(lambda: False, 1.0, alive)
        stayed = (len(client.clouds), len(client.names)) == (clouds, lists) and \
            bytes(client.clouds[-1].data) == labels
        say(f'    vocabulary := {entries} ({why}): ' + (
            f'refused: "{reason}"' if not ok else 'ACCEPTED') +
            ('; labels unchanged' if stayed else '; the node republished'))
        if ok or not stayed:
            raise DemoError(f'ovs_map_node accepted the vocabulary {entries} or changed its '
                            f'labels (successful={ok}, reason {reason!r})')
        out.append({'vocabulary': entries, 'successful': ok, 'reason': reason,
                    'labels_unchanged': stayed})
    return out


def _stop(proc: subprocess.Popen, paths: Paths) -> int:
    """Ctrl-C the node; its exit code (a DemoError when it hangs or is not 0)."""
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(timeout=EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise DemoError(f'ovs_map_node did not exit within {EXIT_TIMEOUT_S:.0f} s of Ctrl-C; '
                        f'see {paths.node_log}') from None
    if code != 0:
        raise DemoError(f'ovs_map_node exited with {code} after Ctrl-C; see {paths.node_log}:\n'
                        + _tail(paths.node_log))
    return code


# --- report -------------------------------------------------------------------------------------

def _pct(value: float | None) -> str:
    return '-' if value is None else f'{100 * value:.1f} %'


def report(summary: dict[str, Any]) -> None:
    live, files = summary['live'], summary['files']
    acc, relabel = live['ground_truth'], live['relabel']
    print('\n==================== cns_ros 3D-OVS demo: results ====================')
    print(f'Training (stand-in teachers): {summary["evaluation"]}')
    print(f'Live ovs_map_node: {live["map_points"]} map points; accuracy vs the generator\'s '
          f'ground truth {100 * acc["accuracy"]:.1f} % on {acc["points_checked"]} points the '
          'annotated views see')
    print('  per class (accuracy, points): ' + ', '.join(
        f'{n} {_pct(r["accuracy"])} ({r["points"]})' for n, r in acc['per_class'].items()))
    print(f'  vocabulary {relabel["vocabulary"]}: relabelled, {relabel["kept_unchanged"]}/'
          f'{relabel["kept_points"]} points of a kept class unchanged; shares ' +
          ', '.join(f'{n} {100 * s:.1f} %' for n, s in relabel['shares'].items()))
    for refusal in live['refusals']:
        print(f'  vocabulary {refusal["vocabulary"]}: refused ("{refusal["reason"]}"), labels '
              'unchanged')
    print(f'  node stopped with Ctrl-C: exit code {live["exit_code"]}')
    print('  step times (s): ' + ', '.join(f'{k} {v:.0f}' for k, v in
                                          summary['timings_s'].items()))
    print(f'  PLY: {files["ply"]}\n  labeled map: {files["map"]}\n  overlays: '
          + ', '.join(files['overlays']) + f'\n  evaluation: {files["results"]}\n'
          f'  node log: {files["node_log"]}\n  summary: {files["summary"]}')
    print(f'  serve it yourself: ros2 launch cns_ros ovs_map.launch.py map:={files["map"]}')
    print('\n' + STANDIN_NOTICE + '\n\n' + REAL_RUN)


# --- main ---------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='demo_ovs3d', description=__doc__.split('\n\n')[0],
        epilog=__doc__.split('\n\n', 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add('--out', type=Path, default=Path('demo_out/ovs3d'),
        help='output folder (default: %(default)s)')
    add('--seed', type=int, default=0, help='synthetic scene seed (default: 0)')
    add('--stage-a-iterations', type=int, metavar='N',
        help='stage A iterations (default: the preset\'s, 400; the schedule scales along)')
    add('--stage-b-iterations', type=int, metavar='N',
        help='stage B iterations (default: the preset\'s, 300; the joint start scales along)')
    add('--threads', type=int, help='torch CPU threads (default: torch\'s)')
    add('--keep', action='store_true',
        help='reuse a finished run in OUT with the same settings (skip training)')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; 0 when every step worked, 1 when one failed, 130 on Ctrl-C."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for flag, value in (('--stage-a-iterations', args.stage_a_iterations),
                        ('--stage-b-iterations', args.stage_b_iterations)):
        if value is not None and value < 3:
            parser.error(f'{flag} must be at least 3, got {value}')
    paths = Paths(args.out.resolve())
    settings = {'seed': args.seed, 'stage_a_iterations': args.stage_a_iterations,
                'stage_b_iterations': args.stage_b_iterations}
    start = time.monotonic()
    timings: dict[str, float] = {}
    say('cns_ros 3D-OVS demo: synthetic scene -> radiance field + CLIP/DINO distillation '
        '(STAND-IN teachers) -> labeled map -> live ovs_map_node -> relabel')
    try:
        reuse = prepare(paths, settings, args.keep)
        with step(timings, 'train', 'train_ovs3d: teachers, stage A, stage B, evaluation, '
                                    'export'):
            if reuse:
                say(f'    --keep: reusing the finished run in {paths.run}')
                results = read_results(paths)
            else:
                results = train(paths, args)
            say(f'    evaluation: {evaluation_line(results)}')
        with step(timings, 'live', 'ovs_map_node: score the cloud, relabel, refuse, stop'):
            live = run_live(paths, args.seed)
    except DemoError as err:
        say(f'FAILED: {err}')
        return 1
    except KeyboardInterrupt:
        say(f'interrupted; a finished training in {paths.out} is reused with --keep')
        return 130
    timings['total'] = round(time.monotonic() - start, 1)
    summary = {
        'teachers': 'STAND-IN (colour and pattern descriptors; no CLIP/DINO weights)',
        'settings': settings, 'evaluation': evaluation_line(results),
        'results': {k: results[k] for k in ('classes', 'views', 'reference', 'clean')},
        'live': live, 'timings_s': timings,
        'files': {'ply': str(paths.ply), 'map': str(paths.map), 'overlays': paths.overlays(),
                  'results': str(paths.results), 'node_log': str(paths.node_log),
                  'summary': str(paths.summary)},
    }
    paths.summary.write_text(json.dumps(summary, indent=2) + '\n')
    report(summary)
    return 0


if __name__ == '__main__':
    sys.exit(main())
