"""Per-camera label images of ``segment_node``: the 2D network's, or LiDAR labels projected.

:class:`CameraLabeler` turns a sweep's paired camera messages into mono8 label images
(:data:`cns_ros.segmenter.UNLABELED_MONO8` = 255 for unlabeled pixels), one per camera:

* ``network``: the image decoded (CompressedImage, or Image through :func:`raw_image_rgb`) and
  labeled by the bundle's 2D network;
* ``projected``: the sweep's labels projected into the camera with its CameraInfo intrinsics
  and the extrinsics of a calibration YAML (plus ego motion between the sweep and image stamps
  from :class:`OdometryBuffer`) or of tf2 (a time-travel lookup through ``tf_fixed_frame``).

Problems are reported as events (``image_decode``, ``no_camera_info``, ``bad_camera_info``,
``no_odometry``, ``unknown_lidar_frame``, ``tf_unavailable``, ``tf_no_motion``): that camera
gets no label image for that sweep, or an uncompensated one.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
from nav_msgs.msg import Odometry
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from cns_ros.rgbd import raw_image_rgb
from cns_ros.ros.mailbox import Sweep
from cns_ros.ros.sync import header_stamp_ns
from cns_ros.segmenter import UNLABELED, UNLABELED_MONO8

__all__ = ['CameraLabeler', 'OdometryBuffer', 'decode_image', 'raw_image_rgb']


class OdometryBuffer:
    """Recent ego poses (global_from_ego) from nav_msgs/Odometry, for ego-motion compensation."""

    def __init__(self, size: int = 400) -> None:
        self._lock = threading.Lock()
        self._poses: deque[tuple[int, np.ndarray]] = deque(maxlen=size)

    def add(self, msg: Odometry, jump_ns: int) -> bool:
        """Store a pose; returns True when its stamp jumped back (history cleared)."""
        from cns_ros.geometry import make_transform

        stamp = header_stamp_ns(msg)
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        pose = make_transform([q.x, q.y, q.z, q.w], [p.x, p.y, p.z])
        with self._lock:
            jumped = bool(self._poses) and stamp < self._poses[-1][0] - jump_ns
            if jumped:
                self._poses.clear()
            if not self._poses or stamp >= self._poses[-1][0]:  # out-of-order poses skipped
                self._poses.append((stamp, pose))
            return jumped

    def forget_after(self, stamp_ns: int) -> None:
        """Drop the poses stamped after ``stamp_ns``: the old timeline after a time jump back
        of the sweeps (a looping bag), keeping a pose of the new one that came first."""
        with self._lock:
            while self._poses and self._poses[-1][0] > stamp_ns:
                self._poses.pop()

    def pose_at(self, stamp_ns: int, tolerance_ns: int = 100_000_000) -> np.ndarray | None:
        """Interpolated pose at ``stamp_ns``; the nearest end pose within ``tolerance_ns``."""
        from cns_ros.geometry import interpolate_pose

        with self._lock:
            poses = list(self._poses)
        if not poses:
            return None
        stamps = [s for s, _ in poses]
        if stamp_ns <= stamps[0]:
            return poses[0][1] if stamps[0] - stamp_ns <= tolerance_ns else None
        if stamp_ns >= stamps[-1]:
            return poses[-1][1] if stamp_ns - stamps[-1] <= tolerance_ns else None
        i = int(np.searchsorted(stamps, stamp_ns))
        (t0, p0), (t1, p1) = poses[i - 1], poses[i]
        return interpolate_pose(stamp_ns * 1e-9, t0 * 1e-9, p0, t1 * 1e-9, p1)


class CameraLabeler:
    """Label images of the cameras paired with a sweep (see the module docstring).

    Args:
        node: The node (its logger; the tf2 listener subscribes through it).
        params: The node's parameters (``camera_labels``, ``cameras``, ``calibration``,
            ``calibration_source``, ``lidar_sensor``, ``odom_topic``, ``tf_fixed_frame``,
            ``model``).
        has_image_net: Whether the bundle has a 2D network.
        report: ``report(reason, message, drop=False)`` counts and logs an event.
        odometry: Ego poses for the motion between sweep and image (yaml calibration).

    Attributes:
        mode: ``network``, ``projected`` or ``off`` (``auto`` resolved).
        cameras: The cameras labeled (none when ``off``).
        camera_info: Latest CameraInfo by camera.

    Raises:
        ValueError: ``network`` without a 2D network, ``projected`` without extrinsics, a
            calibration without the cameras, tf2_ros not importable for ``tf``.
    """

    def __init__(self, node: Node, params: Mapping[str, Any], has_image_net: bool,
                 report: Callable[..., None], odometry: OdometryBuffer) -> None:
        p = self._params = params
        self._report = report
        self._odometry = odometry
        mode = p['camera_labels']
        if mode == 'auto':
            mode = 'network' if has_image_net else 'off'
        if mode == 'network' and not has_image_net:
            raise ValueError("camera_labels 'network' needs a bundle with a 2D network "
                             f"({p['model']} has none); use 'projected' or 'off'")
        self.mode = mode
        self.cameras: list[str] = list(p['cameras']) if mode != 'off' else []
        self.camera_info: dict[str, CameraInfo] = {}
        if p['cameras'] and not self.cameras:
            node.get_logger().info(
                f"cameras {p['cameras']} not subscribed: the bundle has no 2D network and "
                "camera_labels is 'off' (set camera_labels 'projected' to paint LiDAR labels "
                'into them)')
        self._calibration = None
        self._tf_buffer = None
        if self.cameras and mode == 'projected':
            if p['calibration_source'] == 'tf':
                self._setup_tf(node)
            elif not p['calibration']:
                raise ValueError("camera_labels 'projected' needs extrinsics: set the "
                                 "'calibration' parameter to a calibration YAML, or "
                                 "calibration_source 'tf'")
            else:
                self._load_calibration(p['calibration'])

    def _load_calibration(self, path: str) -> None:
        from cns_ros.calibration import load_calibration

        self._calibration = load_calibration(path)
        unknown = [c for c in self.cameras if c not in self._calibration.sensors]
        if unknown:
            raise ValueError(f"calibration {path} has no sensor(s) "
                             f'{unknown} (it has {list(self._calibration.sensors)})')

    def _setup_tf(self, node: Node) -> None:
        try:
            import tf2_ros
        except ImportError as exc:
            raise ValueError(
                "calibration_source 'tf' needs the ROS 2 package tf2_ros, which is not "
                f'importable here ({exc}); install ros-<distro>-tf2-ros (part of every ROS 2 '
                "install) or use calibration_source 'yaml' with the calibration parameter"
            ) from None
        self._tf_buffer = tf2_ros.Buffer()
        self._tf_listener = tf2_ros.TransformListener(self._tf_buffer, node)

    def label_images(self, sweep: Sweep, xyz: np.ndarray, labels: np.ndarray,
                     segment_image: Callable[[np.ndarray], np.ndarray]
                     ) -> Iterator[tuple[str, Image]]:
        """(camera, mono8 Image with the camera image's header) for each camera of ``sweep``
        that gets a label image; ``segment_image``: RGB -> labels (the 2D network)."""
        for camera, match in sweep.cameras.items():
            if self.mode == 'network':
                rgb = self._decode_image(camera, match.msg)
                image = None if rgb is None else segment_image(rgb)
            else:
                image = self._projected_labels(camera, match.msg, sweep.msg, xyz, labels)
            if image is None:
                continue
            msg = Image(header=match.msg.header, height=image.shape[0], width=image.shape[1],
                        encoding='mono8', is_bigendian=0, step=image.shape[1])
            msg.data = np.ascontiguousarray(image).tobytes()
            yield camera, msg

    def _decode_image(self, camera: str, msg: Any) -> np.ndarray | None:
        """RGB uint8 (H, W, 3) of a CompressedImage or Image, or None (counted)."""
        import cv2

        try:
            return decode_image(msg)
        except (ValueError, cv2.error) as exc:
            self._report('image_decode', f'{camera}: {exc}', drop=False)
            return None

    def _projected_labels(self, camera: str, image_msg: Any, cloud_msg: PointCloud2,
                          xyz: np.ndarray, labels: np.ndarray) -> np.ndarray | None:
        from cns_ros.calibration import CalibrationError, camera_model_from_camera_info
        from cns_ros.geometry import project_to_cameras

        info = self.camera_info.get(camera)
        if info is None:
            self._report('no_camera_info', f'{camera}: no CameraInfo received yet: no label '
                         'image', drop=False)
            return None
        try:
            model = camera_model_from_camera_info(info)
        except CalibrationError as exc:
            self._report('bad_camera_info', f'{camera}: {exc}', drop=False)
            return None
        cam_from_lidar = self._camera_from_lidar(camera, image_msg, cloud_msg)
        if cam_from_lidar is None:
            return None
        image = np.full((model.height, model.width), UNLABELED_MONO8, np.uint8)
        keep = labels != UNLABELED
        if not keep.any():
            return image
        projection = project_to_cameras(xyz[keep], cam_from_lidar[None], model.K[None],
                                        [[model.width, model.height]], [model.D])
        valid = projection.valid[0]
        uv = np.floor(projection.uv[0][valid] + 0.5).astype(np.int64)
        depth = projection.depth[0][valid]
        values = np.minimum(labels[keep][valid], UNLABELED_MONO8).astype(np.uint8)
        order = np.argsort(-depth, kind='stable')  # far first: the nearest point is written last
        image[uv[order, 1], uv[order, 0]] = values[order]
        return image

    def _camera_from_lidar(self, camera: str, image_msg: Any,
                           cloud_msg: PointCloud2) -> np.ndarray | None:
        """cam(t_image) <- lidar(t_sweep) (4, 4), with ego motion when poses are known."""
        from cns_ros.geometry import ego_motion_transform, invert_transform

        t_lidar, t_image = header_stamp_ns(cloud_msg), header_stamp_ns(image_msg)
        if self._tf_buffer is not None:
            return self._tf_camera_from_lidar(camera, image_msg, cloud_msg, t_lidar, t_image)
        lidar = self._params['lidar_sensor'] or cloud_msg.header.frame_id
        if lidar not in self._calibration.sensors:
            self._report('unknown_lidar_frame', f'LiDAR sensor {lidar!r} not in the '
                         f'calibration (set lidar_sensor); sensors: '
                         f'{list(self._calibration.sensors)}', drop=False)
            return None
        ego_from_lidar = self._calibration.base_from_sensor(lidar)
        ego_from_cam = self._calibration.base_from_sensor(camera)
        pose_lidar = self._odometry.pose_at(t_lidar)
        pose_image = self._odometry.pose_at(t_image)
        if pose_lidar is None or pose_image is None:
            if self._params['odom_topic']:
                self._report('no_odometry', f'{camera}: no odometry around the sweep / image '
                             'stamps: projected without ego-motion compensation', drop=False)
            return invert_transform(ego_from_cam) @ ego_from_lidar
        return ego_motion_transform(ego_from_lidar, pose_lidar, pose_image, ego_from_cam)

    def _tf_camera_from_lidar(self, camera: str, image_msg: Any, cloud_msg: PointCloud2,
                              t_lidar: int, t_image: int) -> np.ndarray | None:
        from rclpy.duration import Duration
        from rclpy.time import Time

        from cns_ros.geometry import make_transform

        target, source = image_msg.header.frame_id, cloud_msg.header.frame_id
        try:
            stamped = self._tf_buffer.lookup_transform_full(
                target, Time(nanoseconds=t_image), source, Time(nanoseconds=t_lidar),
                self._params['tf_fixed_frame'], Duration(seconds=0.0))
        except Exception:  # tf2 raises several exception types
            try:
                stamped = self._tf_buffer.lookup_transform(target, source, Time())
            except Exception as exc:
                self._report('tf_unavailable', f'{camera}: no transform {source} -> {target}: '
                             f'{exc}', drop=False)
                return None
            self._report('tf_no_motion', f'{camera}: no time-travel transform through '
                         f"{self._params['tf_fixed_frame']}: latest static transform used",
                         drop=False)
        t, q = stamped.transform.translation, stamped.transform.rotation
        return make_transform([q.x, q.y, q.z, q.w], [t.x, t.y, t.z])


def decode_image(msg: Any) -> np.ndarray:
    """RGB uint8 (H, W, 3) of a sensor_msgs/CompressedImage or Image.

    Raises:
        ValueError, cv2.error: The image does not decode.
    """
    import cv2

    if isinstance(msg, CompressedImage):
        bgr = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f'{len(msg.data)} bytes of {msg.format!r} do not decode')
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return raw_image_rgb(msg)
