"""The synthetic world's sensor rig and clocks (nuScenes-like placement and timing).

Part of :mod:`cns_ros.data.synthetic`, which re-exports everything public here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from cns_ros.geometry import make_transform, matrix_to_quat

if TYPE_CHECKING:
    from cns_ros.data.synthetic import SyntheticConfig

LIDAR_CHANNEL = 'LIDAR_TOP'
#: Camera channel, yaw in the ego frame (degrees, counter-clockwise from forward),
#: translation in the ego frame (metres), and (fx, cx, cy) in pixels at 1600 x 900.
CAMERA_RIG: tuple[tuple[str, float, tuple[float, float, float], tuple[float, float, float]],
                  ...] = (
    ('CAM_FRONT', 0.0, (1.70, 0.016, 1.51), (1266.4, 816.3, 491.5)),
    ('CAM_FRONT_RIGHT', -55.0, (1.55, -0.49, 1.50), (1260.8, 808.0, 495.3)),
    ('CAM_BACK_RIGHT', -110.0, (1.03, -0.48, 1.56), (1259.5, 807.3, 501.2)),
    ('CAM_BACK', 180.0, (0.03, 0.01, 1.58), (809.2, 829.2, 481.8)),
    ('CAM_BACK_LEFT', 110.0, (1.04, 0.48, 1.56), (1256.7, 792.1, 492.8)),
    ('CAM_FRONT_LEFT', 55.0, (1.52, 0.49, 1.51), (1272.6, 826.6, 479.8)),
)
#: LIDAR_TOP translation in the ego frame (metres); its x axis points right (yaw -90 deg).
LIDAR_TRANSLATION: tuple[float, float, float] = (0.94, 0.0, 1.84)
#: Timestamp (microseconds) of the first keyframe of scene 0 (2018-07-24, like nuScenes); scene
#: i starts ``i * SCENE_GAP_US`` later.
BASE_TIME_US = 1_532_402_900_000_000
SCENE_GAP_US = 3_600_000_000


@dataclass(frozen=True)
class SensorSpec:
    """One sensor of the rig: extrinsics as written to ``calibrated_sensor``.

    Attributes:
        channel: nuScenes channel name.
        modality: 'lidar' or 'camera'.
        translation: float64 (3,) sensor origin in the ego frame, metres.
        q_xyzw: float64 (4,) rotation ego <- sensor, ROS order.
        intrinsics: float64 (3, 3) camera matrix in pixels (zeros for the LiDAR).
        phase: Fraction of a LiDAR revolution after its start at which the sensor fires.
    """

    channel: str
    modality: str
    translation: np.ndarray
    q_xyzw: np.ndarray
    intrinsics: np.ndarray
    phase: float

    @property
    def ego_from_sensor(self) -> np.ndarray:
        """float64 (4, 4) extrinsics."""
        return make_transform(self.q_xyzw, self.translation)


def sensor_rig(config: SyntheticConfig) -> tuple[SensorSpec, ...]:
    """The LiDAR then the six cameras (nuScenes-like placement, intrinsics scaled from
    1600 x 900 to the configured size)."""
    lidar_rot = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # x right
    rig = [SensorSpec(LIDAR_CHANNEL, 'lidar', np.array(LIDAR_TRANSLATION),
                      matrix_to_quat(lidar_rot), np.zeros((3, 3)), 0.0)]
    sx, sy = config.image_width / 1600.0, config.image_height / 900.0
    for channel, yaw_deg, translation, (f, cx, cy) in CAMERA_RIG:
        yaw = np.deg2rad(yaw_deg)
        rot = np.array([[np.sin(yaw), 0.0, np.cos(yaw)], [-np.cos(yaw), 0.0, np.sin(yaw)],
                        [0.0, -1.0, 0.0]])  # columns: optical x (right), y (down), z (ahead)
        k = np.array([[f * sx, 0.0, (cx + 0.5) * sx - 0.5], [0.0, f * sy, (cy + 0.5) * sy - 0.5],
                      [0.0, 0.0, 1.0]])
        # The LiDAR starts at the back and turns clockwise: it crosses yaw y at (pi - y) / 2pi.
        phase = float(np.mod(np.pi - yaw, 2.0 * np.pi) / (2.0 * np.pi))
        rig.append(SensorSpec(channel, 'camera', np.array(translation), matrix_to_quat(rot), k,
                              phase))
    return tuple(rig)


def sensor_timestamps(config: SyntheticConfig, start_us: int) -> dict[str, np.ndarray]:
    """int64 microsecond timestamps per channel for a scene whose first keyframe is at
    ``start_us``. Sweep i of the LiDAR ends at ``start_us + i / lidar_hz``; camera frame k
    fires in the sweep ending at ``start_us + k / camera_hz`` when the LiDAR crosses it."""
    n = config.num_samples - 1
    sweep_us = 1e6 / config.lidar_hz
    lidar = np.arange(n * (config.lidar_hz // config.keyframe_hz) + 1) * sweep_us
    out = {LIDAR_CHANNEL: start_us + np.round(lidar).astype(np.int64)}
    frames = np.arange(n * (config.camera_hz // config.keyframe_hz) + 1) * (1e6 / config.camera_hz)
    for spec in sensor_rig(config)[1:]:
        times = frames - sweep_us + spec.phase * sweep_us
        out[spec.channel] = start_us + np.round(times).astype(np.int64)
    return out
