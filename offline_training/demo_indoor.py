"""The cns_ros indoor demo (`make demo-indoor`, `make demo DEMO_ARGS=--indoor`): label-free
training on a synthetic indoor world in the ScanNet v2 layout, then live RGB-D segmentation of
a held-out room through ROS 2, scored against the mesh's vertex ground truth.

Every step runs the project's own entry points, in order:

  1. world     offline_training.make_synthetic_indoor: furnished rooms in the exact ScanNet
               layout (4 train rooms, 1 val room held out; 6 frames of the 25k layout per room)
  2. labels    offline_training.pseudo_label --dataset scannet with the SIMULATED teachers
               (stand-ins for MaskCLIP + SAM built from the world's rendered ground truth plus
               noise; the 'realistic_indoor' preset, calibrated to published indoor MaskCLIP
               and SAM errors), CLIP2Scene's 5 cm depth check
  3. train     offline_training.train: the 3D-only CNS recipe of the indoor study
               (offline_training/study.py INDOOR_CNS_3D: MinkUNet14A at half width, RGB input),
               at 0.1 m voxels (IndoorSettings.voxel_size says why), a short CPU schedule
  4. export    offline_training.export: the model bundle the live node loads
  5. bag       offline_training.scannet_to_bag: the held-out room as a rosbag2 of RealSense-style
               RGB-D topics (colour, aligned depth, camera_info, /tf, /odom) at 1.5 frames/s
  6. live      replay_node and segment_node (input_mode rgbd_images, config/segment_rgbd.yaml
               with network_frame odom: the network sees each frame in the mesh frame, z up,
               through the bag's /odom camera pose) as separate processes, started by
               `ros2 launch cns_ros segment_rgbd.launch.py` when launch_ros and an installed
               cns_ros exist, else by cns_ros/launcher.py; the
               bag loops until every frame has been labeled and the node's /diagnostics came
               after that (a frame still unlabeled after 20 passes fails the step);
               /cns/labeled_points, /cns/label_image, /camera/color/camera_info,
               /cns/class_names and /diagnostics are recorded into a bag
  7. score     live mIoU: each labeled cloud (camera optical frame, organized) moved to the
               world with its frame's /odom pose, each point labelled by its nearest mesh
               vertex within 5 cm; the official ScanNet mean and the papers' conventions side
               by side, point accuracy, latency (/diagnostics and the recorded arrival times),
               the same bundle scored offline per mesh vertex by offline_training.evaluate for
               comparison, and a PNG (colour | live label image | vertex ground truth)

Everything goes under --out (default demo_out/indoor/, which gets its own .gitignore). Steps
whose output exists are reused (a changed setting starts over); the live step always runs
again. The results are printed and written to OUT/summary.json.

exit status: 0 done; 1 a step failed (the message says which and where its log is); 130
interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cns_ros.data.synthetic_indoor_catalog import VAL_SCENES
from offline_training.demo import export, run_and_report, step, train_3d
from offline_training.demo_common import (
    Paths,
    add_tuning_options,
    call_tool,
    pct,
    report_run,
    say,
    tuned,
)
from offline_training.demo_live import LiveSetup, run_live

#: The held-out room replayed live: the world's (only) val scene.
INDOOR_SCENE = VAL_SCENES[0]
COLOR, CAMERA_INFO = '/camera/color/image_raw', '/camera/color/camera_info'
LABEL_IMAGE = '/cns/label_image'
#: The live step on the RGB-D topics of offline_training/scannet_to_bag.py. The hand-held
#: camera's points reach the network in the mesh (world) frame, z up, as in training: its pose
#: per frame is the bag's /odom (child frame: the optical frame, so body_from_sensor is the
#: identity).
INDOOR_LIVE = LiveSetup(keyframe_topic=COLOR, recorded=(CAMERA_INFO, LABEL_IMAGE),
                        launch_file='segment_rgbd.launch.py', params_file='segment_rgbd.yaml',
                        params=(('network_frame', 'odom'), ('body_from_sensor', [0.0] * 6)))

SIMULATED_NOTICE = """\
NOTE: this demo used SIMULATED teachers. The pseudo-labels come from the synthetic indoor
world's own rendered ground truth with structured noise, here the '{noise}' preset
(config/teacher_noise/{noise}.yaml: MaskCLIP-like errors, most of them persistent per object,
and overlapping SAM-like masks, calibrated to published indoor MaskCLIP and SAM errors); no
CLIP or SAM model ran, and the rooms are synthetic, not ScanNet. The numbers show that the
pipeline works end to end, not how well CNS works on real data."""

REAL_RUN = """\
With real CLIP / SAM checkpoints and a real ScanNet v2 root (scans/ with the SensReader export
and scannet_frames_25k/; weights never download; pass local files):

  python -m offline_training.pseudo_label --dataset scannet --dataroot /data/scannet \\
      --split train --teacher maskclip --clip-checkpoint weights/ViT-B-16.pt \\
      --sam sam --sam-checkpoint weights/sam_vit_h_4b8939.pth --depth-check absolute \\
      --save-2d --out cache/scannet_train
  python -m offline_training.train --config config/train/scannet_cns.yaml \\
      --dataroot /data/scannet --cache cache/scannet_train --out runs/scannet_cns \\
      --set text.clip_checkpoint=weights/ViT-B-16.pt
  python -m offline_training.export --run runs/scannet_cns --out bundles/scannet_cns
  python -m offline_training.evaluate --dataset scannet --bundle bundles/scannet_cns \\
      --dataroot /data/scannet --split val --format scannet --out eval/scannet_cns
  python -m offline_training.scannet_to_bag --root /data/scannet --scene scene0011_00 \\
      --out bags/scene0011_00
  # the bag's camera is hand-held: give the node a copy of config/segment_rgbd.yaml with
  # network_frame: odom and body_from_sensor all zeros (the bag's /odom is the camera's pose)
  ros2 launch cns_ros segment_rgbd.launch.py model:=bundles/scannet_cns \\
      bag:=bags/scene0011_00 params_file:=scannet_bag_rgbd.yaml
  # a RealSense camera instead of the bag: ros2 launch cns_ros segment_rgbd.launch.py \\
  #     model:=bundles/scannet_cns  (topics and QoS: config/segment_rgbd.yaml)"""


@dataclass(frozen=True)
class IndoorSettings:
    """Sizes of one indoor demo run (saved as OUT/settings.json; a change starts over)."""

    preset: str = 'default'
    """make_synthetic_indoor preset the world starts from."""
    train_scenes: int = 4
    """Train rooms (the preset's kinds first); one val room is held out for the live step."""
    frames_25k: int | None = 6
    """25k-layout frames per room (pseudo-labels); None: the preset's."""
    stride_25k: int | None = 2
    """Export (bag) frames per 25k frame; None: the preset's."""
    label_size: tuple[int, int] = (120, 160)
    """Pseudo-label maps (H, W): the indoor study's, a quarter of ScanNet's 480 x 640."""
    steps: int = 300
    voxel_size: float = 0.1
    """Voxel edge of the 3D network, m. Not ScanNet's 0.05: the synthetic meshes have a vertex
    every 8 cm on walls and floors (4 cm on furniture), so at 5 cm their voxels are a sparse
    lattice where a depth camera's are solid, and a 5 cm network trained on the vertices does
    not carry over to depth frames; at 0.1 m both are solid."""
    seed: int = 0
    teacher_noise: str = 'realistic_indoor'
    """Noise preset of the simulated teachers (config/teacher_noise/)."""
    bag_hz: float = 1.5
    """Frames per second of the written bag's stamps: the world's own frame spacing (every 20th
    frame of a 30 Hz camera). The bag must span more than the node's ``jump_threshold`` (1 s),
    or the start of the next loop is taken for frames out of order, not for a time jump."""
    rate: float = 1.0
    """Replay speed factor of the live step's bag (it loops until every frame is labeled)."""
    threads: int = 2


#: The test suite's run: the tiny world (two small train rooms; the val room's 4 frames, one
#: with a lost pose, in the bag), a short training on one thread (on a shared 2-core machine,
#: two torch threads spinning against other processes made it several times slower).
FAST = IndoorSettings(preset='tiny', train_scenes=2, frames_25k=None, stride_25k=None,
                      steps=30, threads=1)


@dataclass
class IndoorPaths(Paths):
    """The files of an indoor demo run under ``out`` (those of :class:`Paths`; the bag of the
    held-out room, the PNG of a labeled frame)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.bag = self.out / f'bag_{INDOOR_SCENE}'
        self.png = self.out / 'labels.png'


# --- offline steps ------------------------------------------------------------------------------

def make_world(paths: Paths, s: IndoorSettings) -> None:
    from offline_training import make_synthetic_indoor

    if (paths.world / 'scans').is_dir():
        say(f'    reusing {paths.world}')
        return
    frames = [item for flag, value in (('--frames-25k', s.frames_25k),
                                       ('--stride-25k', s.stride_25k)) if value is not None
              for item in (flag, str(value))]
    call_tool('make_synthetic_indoor', make_synthetic_indoor.main, [
        '--out', str(paths.world), '--preset', s.preset, '--train-scenes', str(s.train_scenes),
        '--val-scenes', '1', *frames, '--seed', str(s.seed), '--no-progress'])


def make_labels(paths: Paths, s: IndoorSettings) -> None:
    from offline_training import pseudo_label

    call_tool('pseudo_label', pseudo_label.main, [
        '--dataset', 'scannet', '--dataroot', str(paths.world), '--split', 'train',
        '--teacher', 'simulated', '--sam', 'simulated', '--simulated-noise', s.teacher_noise,
        '--depth-check', 'absolute', '--min-depth', '0.1', '--seed', str(s.seed),
        '--image-size', *map(str, s.label_size), '--out', str(paths.cache), '--device', 'cpu',
        '--no-progress'])


def train(paths: Paths, s: IndoorSettings) -> None:
    from offline_training.study import INDOOR_CNS_3D

    # the indoor study's 3D-only CNS recipe (offline_training/study.py: MinkUNet14A at half
    # width, RGB input, AdamW, class weights; no 2D network: too slow here)
    train_3d(paths, s, 'synthetic_indoor_cns.yaml', INDOOR_CNS_3D, [])


def make_bag(paths: Paths, s: IndoorSettings) -> None:
    from offline_training import scannet_to_bag

    if (paths.bag / 'metadata.yaml').is_file():
        say(f'    reusing {paths.bag}')
        return
    call_tool('scannet_to_bag', scannet_to_bag.main, [
        '--root', str(paths.world), '--scene', INDOOR_SCENE, '--out', str(paths.bag),
        '--rate', str(s.bag_hz), '--no-progress'])


# --- report -------------------------------------------------------------------------------------

def report(summary: dict[str, Any]) -> None:
    """Print the results, the simulated-teacher notice and the real-run commands."""
    r, live = summary['results'], summary['live_run']
    scores, offline = r['live'], r['offline'] or {}
    print('\n================= cns_ros indoor demo: results =================')
    print(f'Live RGB-D segmentation of {INDOOR_SCENE} (held out from training), replayed at rate '
          f'{summary["settings"]["rate"]} through {live["how"]}:')
    print(f'  labeled clouds recorded: {live["labeled_clouds"]}; frames scored: '
          f'{scores["frames"]}/{live["keyframes"]}; points with depth '
          f'{scores["points_with_depth"]}, within 5 cm of a mesh vertex '
          f'{scores["points_matched"]}, of a benchmark class {scores["points"]}')
    print(f'  live mIoU vs the vertex ground truth: {pct(scores["miou_official"])} official '
          f'(CLIP2Scene/CNS convention {pct(scores["miou_clip2scene"])}, OpenScene '
          f'{pct(scores["miou_openscene"])}); point accuracy {pct(scores["accuracy"])}')
    print(f'  same bundle offline per mesh vertex (offline_training.evaluate, same room): '
          f'{pct(offline.get("miou_official"))} official (CLIP2Scene/CNS '
          f'{pct(offline.get("miou_clip2scene"))}, OpenScene '
          f'{pct(offline.get("miou_openscene"))}), accuracy {pct(offline.get("accuracy"))}; '
          f'simulated teacher on the training rooms: '
          f'{pct(r["teacher_miou_on_training_scenes"])}')
    notice = SIMULATED_NOTICE.format(noise=summary['settings']['teacher_noise'])
    report_run(summary, CAMERA_INFO, 'frames', 'labels picture', f'{notice}\n\n{REAL_RUN}')


# --- command line -------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='demo_indoor', description=__doc__.split('\n\n')[0],
        epilog=__doc__.split('\n\n', 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', type=Path, default=Path('demo_out') / 'indoor',
                        help='output folder (default: %(default)s)')
    parser.add_argument('--fast', action='store_true',
                        help='reduced sizes (the tiny world: two small train rooms, 3 frames in '
                        'the bag; 30 training steps on one thread): the test suite\'s run, about '
                        '40 s instead of about 4 min on 2 idle cores, rough scores')
    add_tuning_options(parser, IndoorSettings(), FAST)
    return parser


def _settings(args: argparse.Namespace) -> IndoorSettings:
    return tuned(FAST if args.fast else IndoorSettings(), args)


def run_demo(paths: Paths, s: IndoorSettings) -> dict[str, Any]:
    """Every step; returns the summary (also written to OUT/summary.json)."""
    from offline_training.demo_indoor_score import score

    timings: dict[str, float] = {}
    with step(timings, 'world', f'synthetic indoor world in the ScanNet layout ({s.train_scenes} '
                                f'train rooms, {INDOOR_SCENE} held out)'):
        make_world(paths, s)
    with step(timings, 'labels', 'pseudo-labels from the SIMULATED teachers (not CLIP/SAM)'):
        make_labels(paths, s)
    with step(timings, 'train', f'3D CNS network, {s.steps} steps on the CPU'):
        train(paths, s)
    with step(timings, 'export', 'model bundle for the live node'):
        export(paths)
    with step(timings, 'bag', f'{INDOOR_SCENE} as a rosbag2 of RGB-D camera topics'):
        make_bag(paths, s)
    with step(timings, 'live', 'replay_node + segment_node (RGB-D images), recording '
                               '/cns/labeled_points'):
        live = run_live(paths, s, setup=INDOOR_LIVE)
    with step(timings, 'score', 'live mIoU vs the vertex ground truth, latency, offline '
                                'comparison, labels picture'):
        results = score(paths, s, INDOOR_SCENE, live)
    summary = {
        'teachers': 'SIMULATED (synthetic ground truth + noise; no CLIP/SAM)',
        'dataset': f'synthetic indoor world in the ScanNet v2 layout; trained on its train rooms, '
                   f'live on {INDOOR_SCENE}',
        'settings': asdict(s), 'live_run': asdict(live), 'results': results,
        'timings_s': timings,
        'files': {k: str(getattr(paths, k)) for k in ('png', 'recorded', 'summary', 'bundle',
                                                      'bag', 'live_log')},
    }
    paths.summary.write_text(json.dumps(summary, indent=2) + '\n')
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Run the indoor demo; 0 when every step worked, 1 when one failed."""
    args = build_parser().parse_args(argv)
    settings = _settings(args)
    say('cns_ros indoor demo: synthetic ScanNet-layout rooms -> pseudo-labels (SIMULATED '
        'teachers) -> training -> bundle -> RGB-D bag -> live ROS 2 segmentation -> mIoU')
    say(SIMULATED_NOTICE.format(noise=settings.teacher_noise).replace('\n', ' '))
    return run_and_report(IndoorPaths(args.out.resolve()), settings, run_demo, report)


if __name__ == '__main__':
    sys.exit(main())
