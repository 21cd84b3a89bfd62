"""Convert one ScanNet scene into a rosbag2 of RGB-D camera topics (RealSense-style names).

Reads real ScanNet v2 or the synthetic indoor world in the same layout through
cns_ros.data.scannet (layout 'export': SensReader-python frames in scans/<scene>/, every
frame; layout '25k': scannet_frames_25k/<scene>/), writes with the pure-Python `rosbags`
(ROS 2 Humble message definitions, CDR, bag metadata version 8 so that Humble plays it too).
Storage: mcap (default) or sqlite3.

Topics (one message each per frame; camera frame camera_color_optical_frame, OpenCV axes
x right, y down, z forward; world frame map = the scene's mesh frame, metres, +Z up):

  /camera/color/image_raw                  sensor_msgs/Image rgb8, the colour image resized
                                           (bilinear) to the depth resolution (640x480)
  /camera/aligned_depth_to_color/image_raw sensor_msgs/Image 16UC1, depth in millimetres as
                                           stored (0 = no measurement)
  /camera/color/camera_info                sensor_msgs/CameraInfo: K = the depth intrinsics,
                                           plumb_bob with zero distortion, P = [K | 0]
  /tf                                      tf2_msgs/TFMessage map -> camera_color_optical_frame
                                           (the frame's camera_to_world pose)
  /odom                                    nav_msgs/Odometry, the same pose; twist by central
                                           differences in camera_color_optical_frame
  /camera/depth/color/points (--points)    sensor_msgs/PointCloud2, organized (one point per
                                           depth pixel, row-major), x, y, z float32 in
                                           camera_color_optical_frame + rgb (float32 holding
                                           0x00RRGGBB); NaN where depth is 0

ScanNet colour and depth are registered (same camera, colour at a larger size): using the depth
intrinsics on the resized colour is the standard approximation (about 0.4 % vertical error on
real scans, whose colour aspect is 1296/968, not 4/3).

ScanNet exports carry no timestamps: the n-th written frame is stamped start + n / rate (header
and bag time; --rate, default 10 Hz; --start-time, s). Frames whose pose is invalid (-inf:
lost tracking) or whose colour or depth file is missing are skipped (no time gap) and counted
in the printed summary. --every k keeps every k-th pose file before skipping.

The bag is written to <out>.partial-<pid>/ and renamed to <out> when complete; an existing
<out> is refused. A left-over *.partial-* folder is from an interrupted run and can be deleted.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cns_ros.calibration import CameraModel
from cns_ros.data.bag_writer import (
    STORAGES,
    StampedPose,
    TopicWriter,
    camera_info,
    cloud_message,
    ego_twists,
    folder_size,
    header,
    image,
    odometry,
    open_writer,
    refuse_existing,
    staged_bag,
    transform_stamped,
)
from cns_ros.data.scannet import LAYOUTS, ScanNetFrame, ScanNetNotFoundError, list_frames
from cns_ros.geometry import matrix_to_quat
from cns_ros.pointcloud import CloudData, create_cloud, pack_rgb

COLOR_TOPIC = '/camera/color/image_raw'
DEPTH_TOPIC = '/camera/aligned_depth_to_color/image_raw'
CAMERA_INFO_TOPIC = '/camera/color/camera_info'
POINTS_TOPIC = '/camera/depth/color/points'
TF_TOPIC = '/tf'
ODOM_TOPIC = '/odom'
MAP_FRAME = 'map'
CAMERA_FRAME = 'camera_color_optical_frame'
#: Default stamp of the first frame (s since the epoch; ScanNet exports have no time).
DEFAULT_START_S = 1_700_000_000.0
_CLOUD_DTYPE = np.dtype([('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('rgb', '<f4')])


@dataclass(frozen=True)
class ConversionSummary:
    """What :func:`convert` wrote.

    Attributes:
        output: The bag folder.
        storage: 'mcap' or 'sqlite3'.
        scene: The scene id.
        layout: 'export' or '25k'.
        frames: Frames written.
        skipped: Reason -> frames skipped (``invalid_pose``, ``missing_color``,
            ``missing_depth``; see :class:`cns_ros.data.scannet.FrameList`).
        message_counts: Topic -> number of messages.
        size_bytes: Total size of the bag folder, bytes.
        seconds: Wall time of the conversion, seconds.
    """

    output: Path
    storage: str
    scene: str
    layout: str
    frames: int
    skipped: dict[str, int]
    message_counts: dict[str, int]
    size_bytes: int
    seconds: float


def frame_images(frame: ScanNetFrame) -> tuple[np.ndarray, np.ndarray]:
    """The colour and depth images of a frame at the depth resolution.

    Returns:
        ``(rgb, depth_mm)``: uint8 (h, w, 3) RGB, resized bilinearly from the colour size when
        it differs; uint16 (h, w) depth in millimetres as stored, 0 = invalid.
    """
    rgb = frame.load_color()
    if frame.color_size != frame.depth_size:
        rgb = cv2.resize(rgb, frame.depth_size, interpolation=cv2.INTER_LINEAR)
    depth_mm = np.rint(frame.load_depth() * 1000.0).astype(np.uint16)
    return rgb, depth_mm


def organized_cloud(depth_mm: np.ndarray, rgb: np.ndarray, k: np.ndarray) -> CloudData:
    """The coloured organized cloud of a registered RGB-D pair, in the camera frame.

    Args:
        depth_mm: uint16 (h, w) depth (z) in millimetres, 0 = invalid.
        rgb: uint8 (h, w, 3) RGB of the same pixels.
        k: (3, 3) intrinsics of that image (no skew).

    Returns:
        Cloud of height h, width w, fields x, y, z, rgb (float32; rgb packed 0x00RRGGBB);
        pixel (col u, row v) with depth z m gives ``((u - cx) z / fx, (v - cy) z / fy, z)``;
        NaN x, y, z where depth is 0.
    """
    from cns_ros.rgbd import depth_to_points

    height, width = depth_mm.shape
    xyz = depth_to_points(depth_mm.astype(np.float32) / 1000.0, k)
    points = np.empty((height, width), dtype=_CLOUD_DTYPE)
    for axis, name in enumerate('xyz'):
        points[name] = xyz[..., axis]
    points['rgb'] = pack_rgb(rgb.reshape(-1, 3)).reshape(height, width)
    return create_cloud(points)


def frame_poses(frames: Sequence[ScanNetFrame], stamps_ns: Sequence[int]) -> list[StampedPose]:
    """The camera poses in map (position, (x, y, z, w) orientation) at the given stamps."""
    return [StampedPose(stamp, f.camera_to_world[:3, 3].copy(),
                        matrix_to_quat(f.camera_to_world[:3, :3]))
            for f, stamp in zip(frames, stamps_ns, strict=True)]


def _write_frame(topics: TopicWriter, frame: ScanNetFrame, pose: StampedPose,
                 twist: tuple[np.ndarray, np.ndarray], points: bool) -> None:
    ts, stamp = topics.ts, pose.stamp_ns
    transform = transform_stamped(ts, stamp, MAP_FRAME, CAMERA_FRAME, pose.position,
                                  pose.orientation)
    topics.write(TF_TOPIC, ts.types['tf2_msgs/msg/TFMessage'](transforms=[transform]), stamp)
    topics.write(ODOM_TOPIC, odometry(ts, stamp, MAP_FRAME, CAMERA_FRAME, pose.position,
                                      pose.orientation, *twist), stamp)
    rgb, depth_mm = frame_images(frame)
    msg_header = header(ts, stamp, CAMERA_FRAME)
    topics.write(COLOR_TOPIC, image(ts, msg_header, rgb, 'rgb8'), stamp)
    topics.write(DEPTH_TOPIC, image(ts, msg_header, depth_mm, '16UC1'), stamp)
    model = CameraModel(width=frame.depth_size[0], height=frame.depth_size[1],
                        K=frame.depth_intrinsics, D=np.zeros(5))
    topics.write(CAMERA_INFO_TOPIC, camera_info(ts, msg_header, model), stamp)
    if points:
        cloud = organized_cloud(depth_mm, rgb, frame.depth_intrinsics)
        topics.write(POINTS_TOPIC, cloud_message(ts, cloud, stamp, CAMERA_FRAME), stamp)


def _check_options(layout: str, storage: str, rate: float, start_time: float) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f'layout must be one of {", ".join(LAYOUTS)}, found {layout!r}')
    if storage not in STORAGES:
        raise ValueError(f'storage must be one of {", ".join(STORAGES)}, found {storage!r}')
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f'rate must be a finite number of Hz > 0, found {rate}')
    if not (math.isfinite(start_time) and start_time >= 0):
        raise ValueError(f'start time must be a finite number of s >= 0, found {start_time}')


def convert(root: str | Path, scene: str, output: str | Path, *, layout: str = 'export',
            every: int = 1, rate: float = 10.0, points: bool = False, storage: str = 'mcap',
            start_time: float = DEFAULT_START_S, progress: bool = True) -> ConversionSummary:
    """Convert one ScanNet scene to a rosbag2 folder (format in the module docstring).

    Args:
        root: ScanNet root (holds scans/ and/or scannet_frames_25k/).
        scene: Scene id, e.g. 'scene0000_00'.
        output: The bag folder to create; must not exist.
        layout: 'export' or '25k' (:func:`cns_ros.data.scannet.list_frames`).
        every: Keep every ``every``-th pose file.
        rate: Frames per second of the written stamps (Hz).
        points: Also write the organized coloured cloud.
        storage: 'mcap' or 'sqlite3'.
        start_time: Stamp of the first frame (s).
        progress: Show a tqdm progress bar on stderr.

    Raises:
        FileExistsError: ``output`` exists.
        ScanNetNotFoundError: Missing root, scene folder, poses or intrinsics (named).
        ValueError: Bad option, no usable frame, malformed ScanNet file (ScanNetFormatError).
    """
    from tqdm import tqdm

    start = time.monotonic()
    _check_options(layout, storage, rate, start_time)
    output = refuse_existing(output)
    listed = list_frames(root, scene, layout, every)  # type: ignore[arg-type]
    frames = listed.frames
    if not frames:
        raise ValueError(f'{scene} ({layout} layout in {root}): no usable frame; skipped '
                         f'{listed.skipped}')
    start_ns = round(start_time * 1e9)
    poses = frame_poses(frames, [start_ns + round(i * 1e9 / rate) for i in range(len(frames))])
    linear, angular = ego_twists(poses)
    with staged_bag(output) as bag_path, open_writer(bag_path, storage) as topics:
        for i in tqdm(range(len(frames)), desc=scene, unit='frame', disable=not progress):
            _write_frame(topics, frames[i], poses[i], (linear[i], angular[i]), points)
    return ConversionSummary(output=output, storage=storage, scene=scene, layout=layout,
                             frames=len(frames), skipped=dict(listed.skipped),
                             message_counts=dict(sorted(topics.counts.items())),
                             size_bytes=folder_size(output), seconds=time.monotonic() - start)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of :func:`main`."""
    parser = argparse.ArgumentParser(
        prog='scannet_to_bag', description=__doc__.split('\n\n')[0],
        epilog=__doc__.split('\n', 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    add: Any = parser.add_argument
    add('--root', required=True, type=Path, help='ScanNet root folder (holds scans/ and/or '
        'scannet_frames_25k/)')
    add('--scene', required=True, help='scene id, e.g. scene0000_00')
    add('--out', required=True, type=Path, help='bag folder to create (must not exist)')
    add('--layout', choices=LAYOUTS, default='export',
        help='frames from scans/<scene>/ (export, every frame) or scannet_frames_25k/<scene>/ '
        '(25k) (default: %(default)s)')
    add('--every', type=int, default=1, help='keep every k-th frame (default: %(default)s)')
    add('--rate', type=float, default=10.0, help='frames per second of the written stamps '
        '(default: %(default)s Hz)')
    add('--start-time', type=float, default=DEFAULT_START_S,
        help='stamp of the first frame, s since the epoch (default: %(default)s)')
    add('--points', action='store_true', help=f'also write the organized coloured cloud on '
        f'{POINTS_TOPIC}')
    add('--storage', choices=STORAGES, default='mcap',
        help='rosbag2 storage plugin (default: %(default)s)')
    add('--no-progress', action='store_true', help='no progress bar')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns 0 on success, exits with status 2 on bad input."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        summary = convert(args.root, args.scene, args.out, layout=args.layout, every=args.every,
                          rate=args.rate, points=args.points, storage=args.storage,
                          start_time=args.start_time, progress=not args.no_progress)
    except (FileExistsError, ScanNetNotFoundError, ValueError) as exc:
        parser.error(str(exc))
    counts = ', '.join(f'{topic}: {n}' for topic, n in summary.message_counts.items())
    skipped = ', '.join(f'{reason} {n}' for reason, n in summary.skipped.items())
    print(f'wrote {summary.output} ({summary.storage}, {summary.size_bytes / 1e6:.1f} MB, '
          f'{sum(summary.message_counts.values())} messages in {summary.seconds:.1f} s): '
          f'{summary.frames} frames of {summary.scene} ({summary.layout} layout)\n'
          f'  skipped frames: {skipped}\n  {counts}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
