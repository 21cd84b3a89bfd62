"""The cns_ros demo (`make demo`): label-free training to live ROS 2 segmentation, on one machine.

Every step runs the project's own entry points, in order:

  1. world     offline_training.make_synthetic: a synthetic driving world in the exact nuScenes
               on-disk format (two scenes: scene-0061 for training, scene-0103 held out)
  2. labels    offline_training.pseudo_label with the SIMULATED teachers (stand-ins for
               MaskCLIP + SAM built from the world's rendered ground truth plus noise)
  3. train     offline_training.train: a small CNS 3D network, short CPU run
  4. export    offline_training.export: the model bundle the live node loads
  5. bag       offline_training.nuscenes_to_bag: the held-out scene as a rosbag2
  6. live      replay_node and segment_node as separate processes, started by
               `ros2 launch cns_ros segment.launch.py` when launch_ros and an installed cns_ros
               exist, else by cns_ros/launcher.py (same arguments, same parameters file); the
               bag loops until every keyframe has been labeled; /cns/labeled_points (plus
               /lidar_top, /cns/class_names, /diagnostics) are recorded into a bag
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
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VERSION = 'v1.0-mini'
TRAIN_SPLIT, TRAIN_SCENE = 'mini_train', 'scene-0061'
LIVE_SPLIT, LIVE_SCENE = 'mini_val', 'scene-0103'
LABELED, LIDAR, GT = '/cns/labeled_points', '/lidar_top', '/lidar_top/labels_gt'
CLASS_NAMES, DIAGNOSTICS = '/cns/class_names', '/diagnostics'
UNLABELED = 65535

SIMULATED_NOTICE = """\
NOTE: this demo used SIMULATED teachers. The pseudo-labels come from the synthetic world's own
rendered ground truth with structured noise (cns_ros/teachers/simulated.py); no CLIP or SAM
model ran, and the world is synthetic, not nuScenes. The numbers show that the pipeline works
end to end, not how well CNS works on real data."""

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


@dataclass(frozen=True)
class Settings:
    """Sizes of one demo run (saved as OUT/settings.json; a change starts over)."""

    scene_duration_s: float = 8.0
    image_width: int = 400
    image_height: int = 225
    lidar_azimuth_steps: int = 180
    label_size: tuple[int, int] = (112, 200)
    steps: int = 150
    voxel_size: float = 0.2
    seed: int = 0
    rate: float = 1.0
    threads: int = 2


FAST = Settings(scene_duration_s=1.0, image_width=160, image_height=90, label_size=(32, 64),
                steps=4)


@dataclass
class Paths:
    """The files of a demo run under ``out``."""

    out: Path
    world: Path = field(init=False)
    cache: Path = field(init=False)
    run: Path = field(init=False)
    bundle: Path = field(init=False)
    bag: Path = field(init=False)
    recorded: Path = field(init=False)
    live_log: Path = field(init=False)
    offline_eval: Path = field(init=False)
    png: Path = field(init=False)
    summary: Path = field(init=False)

    def __post_init__(self) -> None:
        for name, rel in (('world', 'world'), ('cache', 'pseudo_labels'), ('run', 'train'),
                          ('bundle', 'bundle'), ('bag', f'bag_{LIVE_SCENE}'),
                          ('recorded', 'recorded'), ('live_log', 'live.log'),
                          ('offline_eval', 'offline_eval'), ('png', 'bev.png'),
                          ('summary', 'summary.json')):
            setattr(self, name, self.out / rel)


class DemoError(RuntimeError):
    """A step failed; the message says which and where to look."""


def say(message: str) -> None:
    print(f'[demo] {message}', flush=True)


@contextlib.contextmanager
def step(timings: dict[str, float], name: str, what: str) -> Iterator[None]:
    """Print a step's start and duration; record the duration in ``timings`` (s)."""
    say(f'--- {name}: {what}')
    start = time.monotonic()
    yield
    timings[name] = round(time.monotonic() - start, 2)
    say(f'    {name} done in {timings[name]:.1f} s')


def _call(name: str, main: Any, argv: list[str]) -> None:
    """Run a tool's ``main(argv)``; a non-zero exit becomes a DemoError."""
    say('    python -m offline_training.' + name + ' ' + ' '.join(argv))
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    if code not in (0, None):
        raise DemoError(f'offline_training.{name} failed with exit status {code}')


# --- offline steps ------------------------------------------------------------------------------

def prepare(paths: Paths, settings: Settings) -> None:
    """Create OUT (with a .gitignore); start over when the settings changed."""
    paths.out.mkdir(parents=True, exist_ok=True)
    (paths.out / '.gitignore').write_text('# written by offline_training/demo.py\n*\n')
    saved = paths.out / 'settings.json'
    current = json.dumps(asdict(settings), indent=2)
    if saved.is_file() and saved.read_text() != current:
        say(f'settings changed since the last run in {paths.out}: starting over')
        for item in paths.out.iterdir():
            if item.name != '.gitignore':
                shutil.rmtree(item) if item.is_dir() else item.unlink()
    saved.write_text(current)


def make_world(paths: Paths, s: Settings) -> None:
    from offline_training import make_synthetic

    if (paths.world / VERSION).is_dir():
        say(f'    reusing {paths.world}')
        return
    _call('make_synthetic', make_synthetic.main, [
        '--out', str(paths.world), '--scene', TRAIN_SCENE, '--scene', LIVE_SCENE,
        '--duration', str(s.scene_duration_s), '--seed', str(s.seed),
        '--image-width', str(s.image_width), '--image-height', str(s.image_height),
        '--lidar-azimuth-steps', str(s.lidar_azimuth_steps), '--workers', str(s.threads),
        '--no-progress'])


def make_labels(paths: Paths, s: Settings) -> None:
    from offline_training import pseudo_label

    _call('pseudo_label', pseudo_label.main, [
        '--dataroot', str(paths.world), '--version', VERSION, '--split', TRAIN_SPLIT,
        '--teacher', 'simulated', '--sam', 'simulated', '--seed', str(s.seed),
        '--image-size', *map(str, s.label_size), '--out', str(paths.cache), '--device', 'cpu',
        '--no-progress'])


def train(paths: Paths, s: Settings) -> None:
    from cns_ros.training.checkpoint import checkpoint_path
    from offline_training import train as train_tool

    if checkpoint_path(paths.run, s.steps).is_file():
        say(f'    reusing {checkpoint_path(paths.run, s.steps)}')
        return
    if paths.run.exists():
        shutil.rmtree(paths.run)
    _call('train', train_tool.main, [
        '--config', str(ROOT / 'config' / 'train' / 'synthetic_cns.yaml'),
        '--dataroot', str(paths.world), '--version', VERSION, '--cache', str(paths.cache),
        '--out', str(paths.run), '--steps', str(s.steps), '--device', 'cpu',
        '--threads', str(s.threads), '--no-progress',
        # 3D-only CNS (the 2D co-training network is too slow for a short CPU run) on 0.2 m
        # voxels (the preset's 0.1 m costs about twice as much per step and per live sweep)
        '--set', 'cns.network_2d=false', '--set', 'data.images=false',
        '--set', f'model.voxel_size={s.voxel_size}',
        '--set', f'log.checkpoint_every={s.steps}', '--set', f'seed={s.seed}'])


def export(paths: Paths) -> None:
    from offline_training import export as export_tool

    _call('export', export_tool.main, ['--run', str(paths.run), '--out', str(paths.bundle),
                                       '--no-2d', '--overwrite'])


def make_bag(paths: Paths) -> None:
    from offline_training import nuscenes_to_bag

    if (paths.bag / 'metadata.yaml').is_file():
        say(f'    reusing {paths.bag}')
        return
    _call('nuscenes_to_bag', nuscenes_to_bag.main, [
        '--dataroot', str(paths.world), '--version', VERSION, '--scene', LIVE_SCENE,
        '--out', str(paths.bag), '--no-progress'])


# --- live step ----------------------------------------------------------------------------------

def launch_command(arguments: list[str]) -> tuple[list[str], str]:
    """(command, how): ``ros2 launch`` when it can find an installed cns_ros, else the
    package's Python launcher with the same arguments."""
    from cns_ros.launcher import ament_share

    share = ament_share('cns_ros')
    if (shutil.which('ros2') and importlib.util.find_spec('launch_ros') is not None
            and share is not None and (share / 'launch' / 'segment.launch.py').is_file()):
        return ['ros2', 'launch', 'cns_ros', 'segment.launch.py', *arguments], 'ros2 launch'
    return [sys.executable, '-m', 'cns_ros.launcher', *arguments], \
        'cns_ros/launcher.py (launch_ros is not installed here)'


def bag_keyframes(bag: Path) -> tuple[set[int], float]:
    """Header stamps (ns) of the ground-truth keyframes in the bag, and the bag's length (s)."""
    from cns_ros.data import bags

    with bags.open_bag(bag) as reader:
        stamps = {m.timestamp_ns for m in reader.messages([GT])}
        return stamps, reader.info.duration_s


@dataclass
class LiveRun:
    """What the live step saw."""

    how: str
    command: list[str]
    keyframes: int
    labeled_keyframes: int = 0
    labeled_clouds: int = 0
    wall_s: float = 0.0
    launch_exit: int | None = None


def _stop(proc: subprocess.Popen, timeout: float = 30.0) -> int:
    """Ctrl-C for the launch: SIGINT to its process group, as a terminal sends it (`ros2 launch`
    expects its nodes to get it from there; cns_launch forwards it to its nodes itself); kill
    the group if it hangs."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    return proc.returncode


def _tail(path: Path, lines: int = 25) -> str:
    text = path.read_text(errors='replace').splitlines() if path.is_file() else []
    return '\n'.join(text[-lines:])


def run_live(paths: Paths, s: Settings, startup_timeout_s: float = 240.0) -> LiveRun:
    """Launch replay + segmenter, record until every keyframe was labeled (or 4 passes)."""
    from cns_ros.launcher import default_params_file

    keyframes, bag_s = bag_keyframes(paths.bag)
    arguments = [f'model:={paths.bundle}', f'bag:={paths.bag}', f'rate:={s.rate}', 'loop:=true']
    if Path(default_params_file()).is_file():
        arguments.append(f'params_file:={default_params_file()}')
    command, how = launch_command(arguments)
    live = LiveRun(how, command, len(keyframes))
    if paths.recorded.exists():
        shutil.rmtree(paths.recorded)
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')  # keep DDS local
    os.environ.setdefault('ROS_LOCALHOST_ONLY', '1')  # the same for Humble
    say(f'    started through {how}: {" ".join(command)}')
    say(f'    node output: {paths.live_log}')
    labeled: set[int] = set()
    with _Recorder(paths.recorded, labeled) as recorder, open(paths.live_log, 'w') as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        start = time.monotonic()
        try:
            _record_until_done(recorder, proc, keyframes, labeled, start,
                               startup_timeout_s, 4 * bag_s / s.rate + 10.0, paths)
        finally:
            live.launch_exit = _stop(proc)
            live.wall_s = round(time.monotonic() - start, 1)
            recorder.spin(0.3)
    live.labeled_keyframes = len(keyframes & labeled)
    live.labeled_clouds = recorder.labeled_count
    say(f'    {live.labeled_clouds} labeled clouds recorded, {live.labeled_keyframes}/'
        f'{live.keyframes} keyframes labeled, launch exited with {live.launch_exit}')
    if live.labeled_clouds == 0:
        raise DemoError(f'no labeled cloud was recorded; see {paths.live_log}:\n'
                        + _tail(paths.live_log))
    return live


def _record_until_done(recorder: _Recorder, proc: subprocess.Popen, keyframes: set[int],
                       labeled: set[int], start: float, startup_timeout_s: float,
                       passes_s: float, paths: Paths) -> None:
    first_output: float | None = None
    while not keyframes <= labeled:
        recorder.spin(0.1)
        now = time.monotonic()
        if proc.poll() is not None:
            raise DemoError(f'the launch exited early (status {proc.returncode}); see '
                            f'{paths.live_log}:\n' + _tail(paths.live_log))
        if first_output is None and recorder.labeled_count:
            first_output = now
            say(f'    first labeled cloud after {now - start:.1f} s')
        if first_output is None and now - start > startup_timeout_s:
            raise DemoError(f'no labeled cloud within {startup_timeout_s:.0f} s; see '
                            f'{paths.live_log}:\n' + _tail(paths.live_log))
        if first_output is not None and now - first_output > passes_s:
            say(f'    stopping after {passes_s:.0f} s of output with '
                f'{len(keyframes & labeled)}/{len(keyframes)} keyframes labeled')
            return


class _Recorder:
    """record_node's RecordNode in this process (its own rclpy context), following progress."""

    def __init__(self, out: Path, labeled: set[int]) -> None:
        self.out, self.labeled, self.labeled_count = out, labeled, 0

    def __enter__(self) -> _Recorder:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.parameter import Parameter
        from rclpy.signals import SignalHandlerOptions

        from cns_ros.ros.record_node import RecordNode

        self.context = rclpy.Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = RecordNode(
            on_message=self._on_message, context=self.context, parameter_overrides=[
                Parameter('out', value=str(self.out)),
                Parameter('topics', value=[LABELED, CLASS_NAMES, DIAGNOSTICS, LIDAR])])
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        return self

    def _on_message(self, topic: str, _stamp: int, data: bytes) -> None:
        from cns_ros.ros.record_node import header_stamp_ns

        if topic == LABELED:
            self.labeled.add(header_stamp_ns(data))
            self.labeled_count += 1

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=min(0.05, max(end - time.monotonic(), 0)))

    def __exit__(self, *exc: object) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        if hasattr(rclpy, 'try_shutdown'):  # Iron and later
            rclpy.try_shutdown(context=self.context)
        elif self.context.ok():
            rclpy.shutdown(context=self.context)


# --- scoring ------------------------------------------------------------------------------------

@dataclass
class Recording:
    """The recorded bag, decoded: labeled clouds by header stamp, arrivals, names, diagnostics."""

    clouds: dict[int, np.ndarray] = field(default_factory=dict)
    outputs: list[tuple[int, int]] = field(default_factory=list)  # (receive ns, header stamp)
    inputs: dict[int, list[int]] = field(default_factory=dict)  # header stamp -> receive ns
    class_names: list[str] | None = None
    diagnostics: dict[str, str] = field(default_factory=dict)


def read_recording(path: Path) -> Recording:
    """Decode what :func:`run_live` recorded."""
    from rosbags.typesys import Stores, get_typestore

    from cns_ros.data import bags
    from cns_ros.pointcloud import read_cloud
    from cns_ros.ros.record_node import header_stamp_ns

    ts, rec = get_typestore(Stores.ROS2_HUMBLE), Recording()
    with bags.open_bag(path) as reader:
        for msg in reader.messages():
            if msg.topic == LIDAR:
                rec.inputs.setdefault(header_stamp_ns(msg.data), []).append(msg.timestamp_ns)
            elif msg.topic == LABELED:
                cloud = ts.deserialize_cdr(msg.data, msg.msgtype)
                stamp = cloud.header.stamp.sec * 10**9 + cloud.header.stamp.nanosec
                rec.outputs.append((msg.timestamp_ns, stamp))
                rec.clouds.setdefault(stamp, np.array(read_cloud(cloud)))  # first pass kept
            elif msg.topic == CLASS_NAMES:
                entries = json.loads(ts.deserialize_cdr(msg.data, msg.msgtype).data)
                rec.class_names = [e['name'] for e in sorted(entries, key=lambda e: e['id'])]
            elif msg.topic == DIAGNOSTICS:
                for status in ts.deserialize_cdr(msg.data, msg.msgtype).status:
                    if 'cns_segmenter' in status.name:
                        rec.diagnostics = {kv.key: kv.value for kv in status.values}
    return rec


def read_ground_truth(bag: Path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Header stamp -> (xyz (N, 3) float32, lidarseg-16 ids (N,) uint8) of every keyframe."""
    from rosbags.typesys import Stores, get_typestore

    from cns_ros.data import bags
    from cns_ros.pointcloud import read_cloud, read_field, read_xyz

    ts, found = get_typestore(Stores.ROS2_HUMBLE), {}
    with bags.open_bag(bag) as reader:
        for msg in reader.messages([GT]):
            points = read_cloud(ts.deserialize_cdr(msg.data, msg.msgtype))
            found[msg.timestamp_ns] = (read_xyz(points), read_field(points, 'label', np.uint8))
    return found


def to_vocabulary_ids(pred: np.ndarray, pred_names: Sequence[str],
                      names: Sequence[str]) -> np.ndarray:
    """Predicted label ids of the node's vocabulary -> ids of ``names`` (255 when absent)."""
    table = np.full(UNLABELED + 1, 255, dtype=np.int64)
    index = {n: i for i, n in enumerate(names)}
    for i, name in enumerate(pred_names):
        table[i] = index.get(name, 255)
    return table[pred.astype(np.int64)]


def score_live(rec: Recording, gt: dict[int, tuple[np.ndarray, np.ndarray]],
               node_names: Sequence[str]) -> tuple[dict[str, Any], list[int]]:
    """Scores of the recorded keyframes against the ground truth; the matched stamps."""
    from cns_ros.metrics import confusion_matrix
    from cns_ros.vocabulary import lidarseg16_to_train, nuscenes16
    from offline_training.evaluate import scores

    names = nuscenes16().names
    confusion = np.zeros((len(names), len(names) + 1), dtype=np.int64)
    matched = []
    for stamp, (_xyz, labels) in sorted(gt.items()):
        cloud = rec.clouds.get(stamp)
        if cloud is None or len(cloud) != len(labels):
            continue
        pred = to_vocabulary_ids(cloud['label'], node_names, names)
        confusion += confusion_matrix(lidarseg16_to_train(labels), pred, len(names))
        matched.append(stamp)
    return scores(confusion, names), matched


def recorded_latency_ms(rec: Recording, max_pairing_s: float = 2.0) -> dict[str, float]:
    """/lidar_top arrival -> /cns/labeled_points arrival at the recorder, per sweep (ms).

    The bag loops, so a stamp arrives once per pass: an output pairs with the latest arrival of
    its input before it, and not at all when that is over ``max_pairing_s`` old (the recorder
    missed this pass's input, a best-effort loss; the previous pass is a bag length ago).
    """
    samples = []
    for received, stamp in rec.outputs:
        before = [t for t in rec.inputs.get(stamp, ()) if t <= received]
        if before and received - max(before) <= max_pairing_s * 1e9:
            samples.append((received - max(before)) * 1e-6)
    if not samples:
        return {'count': 0}
    values = np.asarray(samples)
    return {'count': len(values), 'p50': float(np.percentile(values, 50)),
            'p95': float(np.percentile(values, 95)), 'max': float(values.max())}


def offline_miou(paths: Paths, s: Settings) -> float | None:
    """The bundle scored offline (offline_training.evaluate) on the held-out scene."""
    from offline_training import evaluate

    _call('evaluate', evaluate.main, [
        '--bundle', str(paths.bundle), '--dataroot', str(paths.world), '--version', VERSION,
        '--split', LIVE_SPLIT, '--scenes', LIVE_SCENE, '--out', str(paths.offline_eval),
        '--device', 'cpu', '--threads', str(s.threads), '--no-2d', '--no-progress'])
    metrics = json.loads((paths.offline_eval / evaluate.METRICS_FILE).read_text())
    return metrics.get('net3d', {}).get('miou')


def draw_bev(paths: Paths, rec: Recording, gt: dict[int, tuple[np.ndarray, np.ndarray]],
             stamp: int, node_names: Sequence[str], miou: float | None) -> None:
    """The bird's-eye-view PNG of one keyframe: live labels | ground truth."""
    from cns_ros.viz import render_bev
    from cns_ros.vocabulary import lidarseg16_to_train, nuscenes16

    vocab = nuscenes16()
    xyz, labels = gt[stamp]
    pred = to_vocabulary_ids(rec.clouds[stamp]['label'], node_names, vocab.names)
    index = sorted(gt).index(stamp)
    miou_text = '-' if miou is None else f'{100 * miou:.1f}'
    render_bev(paths.png, xyz, pred, lidarseg16_to_train(labels), vocab.names, vocab.colors,
               title=f'{LIVE_SCENE} (held out), keyframe {index + 1} of {len(gt)}: live '
                     f'labels from /cns/labeled_points vs lidarseg ground truth. Live mIoU '
                     f'{miou_text} over the scene (SIMULATED teachers, synthetic world)')


def node_class_names(rec: Recording, bundle: Path) -> list[str]:
    """The node's vocabulary: from /cns/class_names, else the bundle's vocabulary.yaml."""
    if rec.class_names:
        return rec.class_names
    from cns_ros.vocabulary import load_vocabulary

    return list(load_vocabulary(bundle / 'vocabulary.yaml').names)


def score(paths: Paths, s: Settings, live: LiveRun) -> dict[str, Any]:
    """Live mIoU, latency, offline mIoU, the PNG; returns the summary's results part."""
    rec, gt = read_recording(paths.recorded), read_ground_truth(paths.bag)
    names = node_class_names(rec, paths.bundle)
    live_scores, matched = score_live(rec, gt, names)
    if not matched:
        raise DemoError(f'no recorded labeled cloud matches a ground-truth keyframe by stamp; '
                        f'see {paths.live_log}')
    draw_bev(paths, rec, gt, matched[len(matched) // 2], names, live_scores['miou'])
    teacher = json.loads((paths.cache / 'quality.json').read_text()) \
        if (paths.cache / 'quality.json').is_file() else {}
    return {
        'live': {k: live_scores[k] for k in ('miou', 'miou_present', 'accuracy', 'points')},
        'live_per_class_iou': {n: c['iou'] for n, c in live_scores['classes'].items()},
        'keyframes_scored': len(matched), 'keyframes_in_bag': len(gt),
        'offline_miou': offline_miou(paths, s),
        'teacher_miou_on_training_scene': teacher.get('miou'),
        'latency_ms': {'recorded': recorded_latency_ms(rec), 'node_diagnostics': {
            k: v for k, v in rec.diagnostics.items()
            if k.startswith(('latency', 'input_rate', 'output_rate', 'drops', 'inputs',
                             'outputs', 'device'))}},
    }


# --- report -------------------------------------------------------------------------------------

def _pct(value: float | None) -> str:
    return '-' if value is None else f'{100 * value:.1f}'


def _ms(value: Any) -> str:
    try:
        return f'{float(value):.1f} ms'
    except (TypeError, ValueError):
        return '-'


def report(summary: dict[str, Any]) -> None:
    """Print the results, the simulated-teacher notice and the real-run commands."""
    r, live = summary['results'], summary['live_run']
    rec, diag = r['latency_ms']['recorded'], r['latency_ms']['node_diagnostics']
    print('\n==================== cns_ros demo: results ====================')
    print(f'Live segmentation of {LIVE_SCENE} (held out from training), replayed at rate '
          f'{summary["settings"]["rate"]} through {live["how"]}:')
    print(f'  labeled clouds recorded: {live["labeled_clouds"]}; keyframes with ground truth '
          f'scored: {r["keyframes_scored"]}/{r["keyframes_in_bag"]}')
    print(f'  live mIoU vs lidarseg ground truth: {_pct(r["live"]["miou"])} '
          f'(classes present: {_pct(r["live"]["miou_present"])}, point accuracy '
          f'{_pct(r["live"]["accuracy"])}, {r["live"]["points"]} points)')
    print(f'  same bundle offline (offline_training.evaluate, same scene): '
          f'{_pct(r["offline_miou"])}; simulated teacher on the training scene: '
          f'{_pct(r["teacher_miou_on_training_scene"])}')
    print(f'  latency received -> published (node /diagnostics): p50 '
          f'{_ms(diag.get("latency_p50_ms"))}, p95 {_ms(diag.get("latency_p95_ms"))}, max '
          f'{_ms(diag.get("latency_max_ms"))}; input {diag.get("input_rate_hz", "-")} Hz, '
          f'output {diag.get("output_rate_hz", "-")} Hz, dropped {diag.get("drops_total", "-")}')
    print(f'  latency /lidar_top -> /cns/labeled_points at the recorder: p50 '
          f'{_ms(rec.get("p50"))}, p95 {_ms(rec.get("p95"))}, max {_ms(rec.get("max"))} '
          f'({rec.get("count", 0)} sweeps)')
    times = summary['timings_s']
    print('  step times (s): ' + ', '.join(f'{k} {v:.0f}' for k, v in times.items()))
    files = summary['files']
    print(f'  bird\'s-eye view: {files["png"]}\n  recorded bag: {files["recorded"]}\n'
          f'  summary: {files["summary"]}\n  model bundle: {files["bundle"]}\n'
          f'  replayed bag: {files["bag"]}')
    print(f'\n{SIMULATED_NOTICE}\n\n{REAL_RUN}\n')


# --- command line -------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='demo', description=__doc__.split('\n\n')[0],
        epilog=__doc__.split('\n\n', 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', type=Path, default=Path('demo_out'),
                        help='output folder (default: %(default)s)')
    parser.add_argument('--fast', action='store_true',
                        help='reduced sizes (1 s scenes, 4 training steps): the test suite\'s '
                        'run, a few minutes less, useless scores')
    parser.add_argument('--steps', type=int, help='training steps (default: 150; --fast: 4)')
    parser.add_argument('--rate', type=float, help='replay speed factor (default: 1.0)')
    parser.add_argument('--duration', type=float, help='seconds per synthetic scene (default: '
                        '8; --fast: 1)')
    parser.add_argument('--voxel-size', type=float, help='voxel edge of the 3D network, m '
                        '(default: 0.2)')
    parser.add_argument('--seed', type=int, help='seed of world, teachers and training')
    parser.add_argument('--threads', type=int, help='CPU threads for generation and training '
                        '(default: 2)')
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    s = FAST if args.fast else Settings()
    overrides = {'steps': args.steps, 'rate': args.rate, 'scene_duration_s': args.duration,
                 'seed': args.seed, 'threads': args.threads, 'voxel_size': args.voxel_size}
    return replace(s, **{k: v for k, v in overrides.items() if v is not None})


def run_demo(paths: Paths, s: Settings) -> dict[str, Any]:
    """Every step; returns the summary (also written to OUT/summary.json)."""
    timings: dict[str, float] = {}
    with step(timings, 'world', f'synthetic nuScenes-format world ({TRAIN_SCENE} for training, '
                                f'{LIVE_SCENE} held out)'):
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
        'dataset': f'synthetic nuScenes-format world ({VERSION}); trained on {TRAIN_SCENE}, '
                   f'live on {LIVE_SCENE}',
        'settings': asdict(s), 'live_run': asdict(live), 'results': results,
        'timings_s': timings,
        'files': {k: str(getattr(paths, k)) for k in ('png', 'recorded', 'summary', 'bundle',
                                                      'bag', 'live_log')},
    }
    paths.summary.write_text(json.dumps(summary, indent=2) + '\n')
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; 0 when every step worked, 1 when one failed."""
    args = build_parser().parse_args(argv)
    settings, paths = _settings(args), Paths(args.out.resolve())
    start = time.monotonic()
    say('cns_ros demo: synthetic world -> pseudo-labels (SIMULATED teachers) -> training -> '
        'bundle -> bag -> live ROS 2 segmentation -> mIoU')
    say(SIMULATED_NOTICE.replace('\n', ' '))
    prepare(paths, settings)
    try:
        summary = run_demo(paths, settings)
    except DemoError as err:
        say(f'FAILED: {err}')
        return 1
    except KeyboardInterrupt:
        say(f'interrupted; finished steps are kept in {paths.out} and reused by the next run')
        return 130
    summary['timings_s']['total'] = round(time.monotonic() - start, 1)
    paths.summary.write_text(json.dumps(summary, indent=2) + '\n')
    report(summary)
    return 0


if __name__ == '__main__':
    sys.exit(main())
