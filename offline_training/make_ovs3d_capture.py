"""Write a posed capture (the bounded-box 3D-OVS scene folder) from a nuScenes scene or a rosbag2.

The capture folder OUT holds images/0000.png..., the frames of one camera in time order, and
capture.json: the camera matrix (fx, fy, cx, cy, width, height), one camera-to-world pose per
frame (NeRF convention: x right, y up, looking along -z; metres in the world frame), the frame
stamps (ns), the field's box (aabb, world metres) and ray range (near_far, metres). It is
written to OUT.partial-<pid> and renamed when complete; an existing OUT is refused.

Sources:
  --nuscenes DATAROOT --scene NAME   one camera channel (--channel, default CAM_FRONT) of a
        nuScenes-format scene (real or the synthetic world): every sample_data of that
        channel; pose = ego_pose @ calibrated_sensor at the image's timestamp; world frame map.
  --bag PATH   a rosbag2 with /<camera>/image_rect_compressed (sensor_msgs/CompressedImage),
        /<camera>/camera_info (K, width, height; rectified) and poses from /tf + /tf_static
        (--pose-source tf: chain --world-frame -> the image's frame id) or /odom
        (--pose-source odom: the base frame in --world-frame, times --base-to-camera, or the
        static base -> camera transform of /tf_static when that flag is absent). An image
        whose nearest pose is more than --tolerance seconds away is skipped and counted.

Frames: those stamped within [--start-ns, --end-ns], then every --stride-th, then the first
--first. Box: --aabb, or the camera centres expanded by --radius in x/y and by --z-range (below
the lowest, above the highest centre) in z. Ray range: --near-far, default 0.5 to 2 * radius.

examples:
  python -m offline_training.make_ovs3d_capture --nuscenes data/nuscenes --version v1.0-mini \\
      --scene scene-0061 --first 40 --out data/captures/scene-0061_front
  python -m offline_training.make_ovs3d_capture --bag runs/drive_bag --camera cam_front \\
      --pose-source odom --base-to-camera 1.70 0.016 1.51 -0.5 0.5 -0.5 0.5 \\
      --out data/captures/drive_front

exit status: 0 written, 2 bad arguments or input (the message names what is wrong).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cns_ros.ovs3d.capture import DEFAULT_RADIUS, DEFAULT_Z_RANGE, IMAGE_FORMATS


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of :func:`main`."""
    parser = argparse.ArgumentParser(
        prog='make_ovs3d_capture', description=__doc__.split('\n\n')[0],
        epilog=__doc__.split('\n\n', 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--nuscenes', type=Path, metavar='DATAROOT',
                        help='nuScenes root folder (holds <version>/, samples/, sweeps/, maps/)')
    source.add_argument('--bag', type=Path, help='rosbag2 folder (or .mcap/.db3 file)')
    add('--out', type=Path, required=True, help='capture folder to create (must not exist)')
    add('--version', default='v1.0-mini', help='nuScenes version folder (default %(default)s)')
    add('--scene', help='nuScenes scene name, e.g. scene-0061 (required with --nuscenes)')
    add('--channel', default='CAM_FRONT', help='nuScenes camera channel (default %(default)s)')
    add('--camera', default='cam_front',
        help='bag camera name: topics /CAMERA/image_rect_compressed, /CAMERA/camera_info '
             '(default %(default)s)')
    add('--pose-source', choices=('tf', 'odom'), default='tf',
        help='bag poses from /tf (+ /tf_static) or /odom (default %(default)s)')
    add('--world-frame', default='map', help='bag world frame of the poses (default map)')
    add('--base-to-camera', type=float, nargs=7, metavar=('X', 'Y', 'Z', 'QX', 'QY', 'QZ', 'QW'),
        help='with --pose-source odom: the camera optical frame in the base frame (m, '
             'quaternion x y z w)')
    add('--tolerance', type=float, default=0.05,
        help='bag: largest image-to-pose stamp difference, s (default %(default)s)')
    add('--start-ns', type=int, help='first frame stamp to keep, ns')
    add('--end-ns', type=int, help='last frame stamp to keep, ns')
    add('--stride', type=int, default=1, help='keep every STRIDE-th frame (default 1)')
    add('--first', type=int, help='keep at most the first FIRST frames')
    add('--radius', type=float, default=DEFAULT_RADIUS,
        help='box margin around the camera centres in x/y, m (default %(default)s)')
    add('--z-range', type=float, nargs=2, default=DEFAULT_Z_RANGE, metavar=('BELOW', 'ABOVE'),
        help='box z from the lowest centre + BELOW to the highest + ABOVE, m (default -3 12)')
    add('--aabb', type=float, nargs=6, metavar=('X0', 'Y0', 'Z0', 'X1', 'Y1', 'Z1'),
        help='explicit box in the world frame, m (overrides --radius/--z-range)')
    add('--near-far', type=float, nargs=2, metavar=('NEAR', 'FAR'),
        help='ray range, m (default 0.5 and 2 * radius)')
    add('--image-format', choices=IMAGE_FORMATS, default='png',
        help='image files (default png, lossless)')
    return parser


def _box_options(args: argparse.Namespace) -> dict[str, Any]:
    aabb = (tuple(args.aabb[:3]), tuple(args.aabb[3:])) if args.aabb else None
    return {'first': args.first, 'start_ns': args.start_ns, 'end_ns': args.end_ns,
            'stride': args.stride, 'radius': args.radius, 'z_range': tuple(args.z_range),
            'aabb': aabb, 'near_far': tuple(args.near_far) if args.near_far else None,
            'image_format': args.image_format}


def _base_to_camera(values: Sequence[float] | None) -> Any:
    if values is None:
        return None
    from cns_ros.geometry import make_transform

    return make_transform(values[3:], values[:3])


def run(args: argparse.Namespace) -> Any:
    """Write the capture the arguments describe; returns the CaptureResult."""
    from cns_ros.ovs3d.capture import capture_from_bag, capture_from_nuscenes

    if args.nuscenes is not None:
        if not args.scene:
            raise ValueError('--nuscenes needs --scene NAME')
        return capture_from_nuscenes(args.nuscenes, args.version, args.scene, args.out,
                                     channel=args.channel, **_box_options(args))
    if args.base_to_camera is not None and args.pose_source != 'odom':
        raise ValueError('--base-to-camera is only used with --pose-source odom')
    return capture_from_bag(args.bag, args.out, camera=args.camera,
                            pose_source=args.pose_source, world_frame=args.world_frame,
                            base_to_camera=_base_to_camera(args.base_to_camera),
                            tolerance_s=args.tolerance, **_box_options(args))


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns 0, exits with status 2 on bad input."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = run(args)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        parser.exit(2, f'make_ovs3d_capture: error: {exc}\n')
    capture = result.capture
    height, width, _ = capture.hwf
    print(f'make_ovs3d_capture: wrote {capture.root}: {len(capture.image_paths)} frames '
          f'{width}x{height} in frame {capture.frame_id} ({result.considered} in the window, '
          f'{result.skipped_no_pose} skipped without a pose); aabb {capture.aabb}, near_far '
          f'{capture.near_far}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
