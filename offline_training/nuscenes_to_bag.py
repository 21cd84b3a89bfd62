"""Convert nuScenes scenes into one rosbag2 that `ros2 bag play`, RViz and Foxglove open.

Reads the dataset with nuscenes-devkit (cns_ros.data.nuscenes), writes with the pure-Python
`rosbags` (no ROS install needed), standard ROS 2 message types (rosbags' ROS2_HUMBLE type
store) serialized as CDR. Storage: mcap (default) or sqlite3.

Bag metadata version 8: Humble's rosbag2 cannot parse the version 9 metadata that newer
distros write (its offered_qos_profiles are names, Humble expects the integers of v8), while
Iron, Jazzy and later read v8; so v8 plays everywhere.

Every message is stamped with its sensor's own nuScenes timestamp (microseconds * 1000 ns),
both in the header and as the bag (receive) time, so play with --clock and use_sim_time:=true.
Topics (frames: lower-case nuScenes channel names, map, base_link):

  /lidar_top                   sensor_msgs/PointCloud2, every LIDAR_TOP sweep (20 Hz), frame
                               lidar_top, fields x, y, z, intensity, ring (float32): the bytes
                               of the .pcd.bin file, unchanged
  /lidar_top/labels_gt         sensor_msgs/PointCloud2, keyframes with nuScenes-lidarseg only
                               (2 Hz): x, y, z float32 + label uint8 (lidarseg-16 id, 0 = ignore)
  /<cam>/image_rect_compressed sensor_msgs/CompressedImage, every frame of the 6 cameras (12 Hz),
                               format 'jpeg', the original JPEG bytes (not re-encoded)
  /<cam>/camera_info           sensor_msgs/CameraInfo, same stamp and frame as each image: K,
                               plumb_bob with zero distortion (images are undistorted), P=[K|0]
  /odom                        nav_msgs/Odometry map -> base_link at every ego pose of the scene
                               (nuScenes stores one per sample_data, i.e. at every sensor
                               timestamp); twist by central differences, in base_link
  /tf                          tf2_msgs/TFMessage map -> base_link at the same ego poses
  /tf_static                   tf2_msgs/TFMessage base_link -> every sensor of the scene, once
                               at each scene's first timestamp; offered reliable +
                               transient-local (depth 1) so `ros2 bag play` latches it

All other topics are offered reliable + volatile; best-effort (sensor-data) subscribers
receive from them too. The calibration of each scene (cns_ros.calibration YAML) is written
inside the bag folder as <out>/calibration/<scene-name>.yaml; rosbag2 ignores extra files.

Several scenes go into one bag in time order; scenes of different logs are far apart in
time and `ros2 bag play` waits through those gaps, so for replay convert one scene per bag
(--scene NAME).

The bag is written to <out>.partial-<pid>/ and renamed to <out> when complete; an existing
<out> is refused. A left-over *.partial-* folder is from an interrupted run and can be deleted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cns_ros.calibration import Calibration, save_calibration
from cns_ros.data.bag_writer import (
    BAG_VERSION,
    STORAGES,
    StampedPose,
    TopicWriter,
    camera_info,
    cloud_message,
    ego_twists,
    folder_size,
    header,
    odometry,
    open_writer,
    refuse_existing,
    staged_bag,
    transform_stamped,
)
from cns_ros.data.nuscenes import (
    CAMERA_CHANNELS,
    LIDAR_CHANNEL,
    NuScenesNotFoundError,
    calibration_for_scene,
    lidarseg16_table,
    open_nuscenes,
    read_lidarseg16,
    read_pcd_bin,
    sample_data_by_scene,
    select_scenes,
)
from cns_ros.geometry import quat_xyzw_from_wxyz
from cns_ros.pointcloud import create_cloud, create_cloud_from_columns

MAP_FRAME = 'map'
BASE_FRAME = 'base_link'
LIDAR_TOPIC = '/lidar_top'
LABELS_TOPIC = '/lidar_top/labels_gt'
ODOM_TOPIC = '/odom'
TF_TOPIC = '/tf'
TF_STATIC_TOPIC = '/tf_static'
__all__ = ['BAG_VERSION', 'STORAGES', 'ConversionSummary', 'build_parser', 'camera_info_topic',
           'convert', 'ego_twists', 'image_topic', 'main']
_PCD_DTYPE = np.dtype([(name, '<f4') for name in ('x', 'y', 'z', 'intensity', 'ring')])
# Sort order of messages that share a timestamp.
_TF_STATIC, _POSE, _LIDAR, _LABELS, _CAMERA = range(5)


def image_topic(channel: str) -> str:
    """Image topic of a camera channel, e.g. '/cam_front/image_rect_compressed'."""
    return f'/{channel.lower()}/image_rect_compressed'


def camera_info_topic(channel: str) -> str:
    """CameraInfo topic of a camera channel, e.g. '/cam_front/camera_info'."""
    return f'/{channel.lower()}/camera_info'


@dataclass(frozen=True)
class ConversionSummary:
    """What :func:`convert` wrote.

    Attributes:
        output: The bag folder.
        storage: 'mcap' or 'sqlite3'.
        scenes: Converted scene names, in time order.
        message_counts: Topic -> number of messages.
        calibration_files: One calibration YAML per scene, inside the bag folder.
        size_bytes: Total size of the bag folder, bytes.
        seconds: Wall time of the conversion, seconds.
    """

    output: Path
    storage: str
    scenes: tuple[str, ...]
    message_counts: dict[str, int]
    calibration_files: tuple[Path, ...]
    size_bytes: int
    seconds: float


def _scene_events(nusc: Any, scene: str, channels: dict[str, list[dict[str, Any]]],
                  has_labels: set[str]) -> list[tuple[int, int, str, Any]]:
    """(stamp_ns, order, scene, payload) of every message of one scene, unsorted."""
    events: list[tuple[int, int, str, Any]] = []
    poses: dict[int, dict[str, Any]] = {}
    for channel, records in channels.items():
        for record in records:
            stamp = int(record['timestamp']) * 1000
            if channel == LIDAR_CHANNEL:
                events.append((stamp, _LIDAR, scene, record))
                if record['is_key_frame'] and record['token'] in has_labels:
                    events.append((stamp, _LABELS, scene, record))
            elif channel in CAMERA_CHANNELS:
                events.append((stamp, _CAMERA, scene, record))
            pose = nusc.get('ego_pose', record['ego_pose_token'])
            poses.setdefault(int(pose['timestamp']) * 1000, pose)
    ordered = [StampedPose(stamp, np.asarray(p['translation'], dtype=np.float64),
                     quat_xyzw_from_wxyz(p['rotation'])) for stamp, p in sorted(poses.items())]
    linear, angular = ego_twists(ordered)
    events += [(p.stamp_ns, _POSE, scene, (p, linear[i], angular[i]))
               for i, p in enumerate(ordered)]
    first = min(event[0] for event in events)
    events.append((first, _TF_STATIC, scene, None))
    return events


class _BagWriter:
    """Turns events into messages on a :class:`TopicWriter` (which counts them per topic)."""

    def __init__(self, topics: TopicWriter, nusc: Any,
                 calibrations: dict[str, Calibration]) -> None:
        self.ts, self._write = topics.ts, topics.write
        self.nusc, self.calibrations = nusc, calibrations
        self.label_table = lidarseg16_table(nusc)

    def event(self, stamp_ns: int, kind: int, scene: str, payload: Any) -> None:
        """Write the message(s) of one event from :func:`_scene_events`."""
        if kind == _TF_STATIC:
            self._tf_static(stamp_ns, self.calibrations[scene])
        elif kind == _POSE:
            self._pose(*payload)
        elif kind == _LIDAR:
            self._lidar(stamp_ns, payload)
        elif kind == _LABELS:
            self._labels(stamp_ns, payload)
        else:
            self._camera(stamp_ns, payload, self.calibrations[scene])

    def _tf_static(self, stamp_ns: int, calibration: Calibration) -> None:
        transforms = [transform_stamped(self.ts, stamp_ns, sensor.parent, sensor.frame_id,
                                         sensor.translation, sensor.rotation_xyzw)
                      for sensor in calibration.sensors.values()]
        msg = self.ts.types['tf2_msgs/msg/TFMessage'](transforms=transforms)
        self._write(TF_STATIC_TOPIC, msg, stamp_ns)

    def _pose(self, pose: StampedPose, linear: np.ndarray, angular: np.ndarray) -> None:
        stamp = pose.stamp_ns
        transform = transform_stamped(self.ts, stamp, MAP_FRAME, BASE_FRAME, pose.position,
                                      pose.orientation)
        self._write(TF_TOPIC, self.ts.types['tf2_msgs/msg/TFMessage'](transforms=[transform]),
                    stamp)
        self._write(ODOM_TOPIC, odometry(self.ts, stamp, MAP_FRAME, BASE_FRAME, pose.position,
                                         pose.orientation, linear, angular), stamp)

    def _lidar(self, stamp_ns: int, record: dict[str, Any]) -> None:
        points = read_pcd_bin(Path(self.nusc.dataroot) / record['filename'])
        cloud = create_cloud(points.view(_PCD_DTYPE).reshape(-1))
        self._write(LIDAR_TOPIC, cloud_message(self.ts, cloud, stamp_ns, 'lidar_top'), stamp_ns)

    def _labels(self, stamp_ns: int, record: dict[str, Any]) -> None:
        xyz = read_pcd_bin(Path(self.nusc.dataroot) / record['filename'])[:, :3]
        labels = read_lidarseg16(self.nusc, record['token'], self.label_table)
        if labels is None or len(labels) != len(xyz):
            found = 'none' if labels is None else len(labels)
            raise ValueError(f'lidarseg of LiDAR sample_data {record["token"]}: expected '
                             f'{len(xyz)} labels, found {found}')
        cloud = create_cloud_from_columns({'x': xyz[:, 0], 'y': xyz[:, 1], 'z': xyz[:, 2],
                                           'label': labels})
        self._write(LABELS_TOPIC, cloud_message(self.ts, cloud, stamp_ns, 'lidar_top'), stamp_ns)

    def _camera(self, stamp_ns: int, record: dict[str, Any], calibration: Calibration) -> None:
        t, channel = self.ts.types, record['channel']
        sensor = calibration.sensors[channel.lower()]
        path = Path(self.nusc.dataroot) / record['filename']
        if not path.is_file():
            raise NuScenesNotFoundError(f'nuScenes image file not found: {path}')
        data = np.frombuffer(path.read_bytes(), dtype=np.uint8)
        image_format = 'png' if data[:4].tobytes() == b'\x89PNG' else 'jpeg'
        msg_header = header(self.ts, stamp_ns, sensor.frame_id)
        image = t['sensor_msgs/msg/CompressedImage'](header=msg_header, format=image_format,
                                                     data=data)
        self._write(image_topic(channel), image, stamp_ns)
        self._write(camera_info_topic(channel), camera_info(self.ts, msg_header, sensor.camera),
                    stamp_ns)


def _write_bag(nusc: Any, names: Sequence[str], path: Path, storage: str,
               calibrations: dict[str, Calibration], progress: bool) -> dict[str, int]:
    """Write all messages of the scenes, in timestamp order, to a new bag at ``path``."""
    from tqdm import tqdm

    by_scene = sample_data_by_scene(nusc, names)
    has_labels = ({record['token'] for record in nusc.lidarseg}
                  if 'lidarseg' in nusc.table_names else set())
    events = [event for name in names
              for event in _scene_events(nusc, name, by_scene[name], has_labels)]
    events.sort(key=lambda event: event[:2])
    with open_writer(path, storage) as topics:
        bag = _BagWriter(topics, nusc, calibrations)
        for event in tqdm(events, desc=f'{path.name}', unit='event', disable=not progress):
            bag.event(*event)
    return topics.counts


def convert(dataroot: str | os.PathLike[str], output: str | os.PathLike[str],
            version: str = 'v1.0-mini', scenes: Sequence[str] | None = None,
            split: str | None = None, storage: str = 'mcap', progress: bool = True,
            nusc: Any = None) -> ConversionSummary:
    """Convert nuScenes scenes to one rosbag2 folder (format in the module docstring).

    Args:
        dataroot: nuScenes root folder.
        output: The bag folder to create; must not exist.
        version: nuScenes version folder, e.g. 'v1.0-mini'.
        scenes: Scene names; None = every scene of ``split`` (or of the version).
        split: Devkit split name ('train', 'val', 'mini_train', ...) or None.
        storage: 'mcap' or 'sqlite3'.
        progress: Show a tqdm progress bar on stderr.
        nusc: An already loaded devkit NuScenes of ``dataroot``/``version`` to reuse.

    Raises:
        FileExistsError: ``output`` exists.
        ValueError: Unknown storage, split or scene (the available ones are listed).
        NuScenesNotFoundError: A missing dataset folder, table or file (named).
    """
    start = time.monotonic()
    if storage not in STORAGES:
        raise ValueError(f'storage must be one of {", ".join(STORAGES)}, found {storage!r}')
    output = refuse_existing(output)
    nusc = open_nuscenes(dataroot, version) if nusc is None else nusc
    names = select_scenes(nusc, split, scenes)
    calibrations = {name: calibration_for_scene(nusc, name) for name in names}
    with staged_bag(output) as bag_path:
        counts = _write_bag(nusc, names, bag_path, storage, calibrations, progress)
        files = []
        for name in names:
            files.append(output / 'calibration' / f'{name}.yaml')
            save_calibration(calibrations[name], bag_path / 'calibration' / f'{name}.yaml')
    return ConversionSummary(output=output, storage=storage, scenes=tuple(names),
                             message_counts=dict(sorted(counts.items())),
                             calibration_files=tuple(files), size_bytes=folder_size(output),
                             seconds=time.monotonic() - start)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of :func:`main`."""
    parser = argparse.ArgumentParser(
        prog='nuscenes_to_bag', description=__doc__.split('\n\n')[0],
        epilog=__doc__.split('\n', 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--dataroot', required=True, help='nuScenes root folder (holds '
                        '<version>/, samples/, sweeps/, maps/)')
    parser.add_argument('--version', default='v1.0-mini',
                        help='nuScenes version folder (default: %(default)s)')
    parser.add_argument('--scene', dest='scenes', action='append', metavar='NAME',
                        help='scene to convert, e.g. scene-0061; repeat for several '
                        '(default: every scene of --split, or of the version)')
    parser.add_argument('--split', default=None, help="devkit split ('train', 'val', 'test', "
                        "'mini_train', 'mini_val', ...); default: all scenes of the version")
    parser.add_argument('--out', required=True, type=Path,
                        help='bag folder to create (must not exist)')
    parser.add_argument('--storage', choices=STORAGES, default='mcap',
                        help='rosbag2 storage plugin (default: %(default)s)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns 0 on success, exits with status 2 on bad input."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        summary = convert(args.dataroot, args.out, version=args.version, scenes=args.scenes,
                          split=args.split, storage=args.storage, progress=not args.no_progress)
    except (FileExistsError, NuScenesNotFoundError, ValueError) as exc:
        parser.error(str(exc))
    counts = ', '.join(f'{topic}: {n}' for topic, n in summary.message_counts.items())
    print(f'wrote {summary.output} ({summary.storage}, {summary.size_bytes / 1e6:.1f} MB, '
          f'{sum(summary.message_counts.values())} messages in {summary.seconds:.1f} s) for '
          f'{", ".join(summary.scenes)}\n  {counts}\n  calibration: '
          f'{summary.output / "calibration"}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
