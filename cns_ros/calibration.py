"""Sensor calibration: extrinsics and camera intrinsics, read from and written to YAML.

ROS-free (numpy and pyyaml only). Frames follow REP-103: x forward, y left, z up, metres.

YAML format (``format_version: 1``)::

    format_version: 1        # required; only 1 is supported
    base_frame: base_link    # optional (default base_link); the root of every chain
    sensors:                 # required: sensor name -> record, in any order
      cam_front:
        frame_id: cam_front  # required; the sensor's TF frame, unique
        parent: base_link    # required; base_frame or another sensor's frame_id
        translation: [1.70, 0.02, 1.51]   # required; metres, sensor origin in the parent frame
        rotation: [-0.5, 0.5, -0.5, 0.5]  # required; unit quaternion (x, y, z, w): ROS order,
                                          # NOT nuScenes' (w, x, y, z); parent_from_sensor
        camera:              # optional; pinhole intrinsics of the image as published
          width: 1600        # pixels, > 0
          height: 900        # pixels, > 0
          K: [1266.4, 0.0, 816.3, 0.0, 1266.4, 491.5, 0.0, 0.0, 1.0]  # 3x3 row-major, pixels;
                             # fx, fy > 0, bottom row 0 0 1
          D: [0.0, 0.0, 0.0, 0.0, 0.0]  # optional (default []); distortion coefficients
          distortion_model: plumb_bob   # optional; plumb_bob (0/4/5 coefficients, the default)
                                        # or rational_polynomial (8 coefficients)

``translation`` and ``rotation`` are the transform ``parent_from_sensor``:
``p_parent = R @ p_sensor + t``. A quaternion within 1e-3 of unit norm is normalised; one further
away is an error, as are unknown keys. Errors are `CalibrationError`, naming the source file and
the field path, e.g. ``calib.yaml: sensors.cam_front.camera.K: expected 9 numbers, found 6``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import yaml

from cns_ros.fileio import atomic_write_text
from cns_ros.geometry import make_transform, quat_xyzw_from_wxyz

FORMAT_VERSION = 1
DEFAULT_BASE_FRAME = 'base_link'
#: Supported distortion models and the coefficient counts each accepts.
DISTORTION_COEFFS: Mapping[str, tuple[int, ...]] = {'plumb_bob': (0, 4, 5),
                                                     'rational_polynomial': (8,)}
QUAT_NORM_TOLERANCE = 1e-3

_HEADER = ('# cns_ros sensor calibration (format_version 1), written by cns_ros.calibration.\n'
           '# translation: metres, sensor origin in the parent frame; rotation: quaternion\n'
           '# x, y, z, w (ROS order), parent_from_sensor; camera.K: 3x3 row-major, pixels.\n')
_TOP_KEYS = ('format_version', 'base_frame', 'sensors')
_SENSOR_KEYS = ('frame_id', 'parent', 'translation', 'rotation', 'camera')
_CAMERA_KEYS = ('width', 'height', 'K', 'D', 'distortion_model')


class CalibrationError(ValueError):
    """Invalid calibration data; the message names the source, the field path and the problem."""


class CalibrationFileNotFoundError(CalibrationError, FileNotFoundError):
    """The calibration file does not exist (also a `FileNotFoundError`)."""


def _child(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f'{path}[{key}]'
    return f'{path}.{key}' if path else key


def _fail(src: str, path: str, message: str) -> NoReturn:
    raise CalibrationError(f'{src}: {path}: {message}' if path else f'{src}: {message}')


def _describe(value: object) -> str:
    if isinstance(value, (Mapping, list, tuple)):
        return 'a mapping' if isinstance(value, Mapping) else f'a list of {len(value)}'
    return 'null' if value is None else f'{type(value).__name__} {value!r}'


def _is_number(value: object) -> bool:
    number = isinstance(value, (int, float, np.integer, np.floating))
    return number and not isinstance(value, (bool, np.bool_))


def _numbers(value: object, counts: Sequence[int] | None, src: str, path: str) -> np.ndarray:
    """Check a list of finite numbers, of a length in `counts` (None: any); return float64."""
    expected = ' or '.join(map(str, counts)) + ' numbers' if counts else 'numbers'
    if isinstance(value, np.ndarray):
        value = value.reshape(-1).tolist()
    if not isinstance(value, (list, tuple)):
        _fail(src, path, f'expected {expected}, found {_describe(value)}')
    if counts is not None and len(value) not in counts:
        _fail(src, path, f'expected {expected}, found {len(value)}')
    for i, item in enumerate(value):
        if not _is_number(item):
            _fail(src, _child(path, i), f'expected a number, found {_describe(item)}')
        if not math.isfinite(float(item)):
            _fail(src, _child(path, i), f'expected a finite number, found {item}')
    return np.asarray(value, dtype=np.float64)


def _positive_int(value: object, src: str, path: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        _fail(src, path, f'expected a positive integer, found {_describe(value)}')
    if value <= 0:
        _fail(src, path, f'expected a positive integer, found {value}')
    return int(value)


def _name(value: object, src: str, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        _fail(src, path, f'expected a non-empty string, found {_describe(value)}')
    return value


def _mapping(value: object, src: str, path: str, required: Sequence[str],
             allowed: Sequence[str]) -> Mapping[str, Any]:
    """Check that `value` is a mapping with every `required` key and only `allowed` keys."""
    if not isinstance(value, Mapping):
        _fail(src, path, f'expected a mapping, found {_describe(value)}')
    unknown = sorted(str(k) for k in value if k not in allowed)
    if unknown:
        _fail(src, path, f'expected only the keys {", ".join(allowed)}; found unknown '
                         f'key(s) {", ".join(unknown)}')
    for key in required:
        if key not in value:
            _fail(src, _child(path, key), 'expected a value, found the required key missing')
    return value


def _unit_quaternion(q: np.ndarray, src: str, path: str) -> np.ndarray:
    """Normalise a quaternion within `QUAT_NORM_TOLERANCE` of unit norm; refuse others."""
    norm = float(np.linalg.norm(q))
    if abs(norm - 1.0) > QUAT_NORM_TOLERANCE:
        _fail(src, path, f'expected a unit quaternion (x, y, z, w), found norm {norm:.6g}')
    if abs(norm - 1.0) > 1e-12:  # leave exactly-unit input bit-identical (round trips)
        q = q / norm
    return q


def _check_camera(width: int, height: int, k: np.ndarray, d: np.ndarray,
                  distortion_model: str, src: str, path: str) -> None:
    """Validate already-typed intrinsics; raise `CalibrationError` naming `path`."""
    _positive_int(width, src, _child(path, 'width'))
    _positive_int(height, src, _child(path, 'height'))
    k_path = _child(path, 'K')
    if k.shape != (3, 3) or not np.all(np.isfinite(k)):
        _fail(src, k_path, f'expected 3x3 finite numbers, found shape {k.shape}')
    if k[0, 0] <= 0 or k[1, 1] <= 0:
        _fail(src, k_path, f'expected fx > 0 and fy > 0, found fx={k[0, 0]}, fy={k[1, 1]}')
    if not np.array_equal(k[2], [0.0, 0.0, 1.0]):
        _fail(src, k_path, f'expected bottom row [0, 0, 1], found {k[2].tolist()}')
    if distortion_model not in DISTORTION_COEFFS:
        _fail(src, _child(path, 'distortion_model'),
              f'expected one of {", ".join(DISTORTION_COEFFS)}, found {distortion_model!r}')
    counts = DISTORTION_COEFFS[distortion_model]
    if d.ndim != 1 or d.shape[0] not in counts or not np.all(np.isfinite(d)):
        found = d.shape[0] if d.ndim == 1 else f'shape {d.shape}'
        _fail(src, _child(path, 'D'), f'expected {" or ".join(map(str, counts))} finite '
                                      f'coefficients for {distortion_model}, found {found}')


def _frozen_array(value: object) -> np.ndarray:
    array = np.array(value, dtype=np.float64)
    array.flags.writeable = False
    return array


@dataclass(frozen=True, eq=False)
class CameraModel:
    """Pinhole camera intrinsics of the image as published (ROS CameraInfo K and D).

    Attributes:
        width: Image width in pixels (> 0).
        height: Image height in pixels (> 0).
        K: (3, 3) float64 intrinsic matrix in pixels, [[fx, s, cx], [0, fy, cy], [0, 0, 1]].
        D: (k,) float64 distortion coefficients; k depends on `distortion_model`.
        distortion_model: 'plumb_bob' (k in 0, 4, 5) or 'rational_polynomial' (k = 8).
    """

    width: int
    height: int
    K: np.ndarray
    D: np.ndarray = field(default_factory=lambda: np.zeros(0))
    distortion_model: str = 'plumb_bob'

    def __post_init__(self) -> None:
        object.__setattr__(self, 'K', _frozen_array(self.K))
        object.__setattr__(self, 'D', _frozen_array(self.D).reshape(-1))
        _check_camera(self.width, self.height, self.K, self.D, self.distortion_model,
                      'CameraModel', '')

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CameraModel):
            return NotImplemented
        return (self.width, self.height, self.distortion_model) == (
            other.width, other.height, other.distortion_model
        ) and np.array_equal(self.K, other.K) and np.array_equal(self.D, other.D)


@dataclass(frozen=True, eq=False)
class SensorCalibration:
    """Extrinsics (and optional intrinsics) of one sensor.

    Attributes:
        name: Sensor name (key in `Calibration.sensors`), e.g. 'cam_front'.
        frame_id: The sensor's TF frame id.
        parent: Frame id the pose is expressed in: the base frame or another sensor's frame_id.
        translation: (3,) float64, metres: sensor origin in the parent frame.
        rotation_xyzw: (4,) float64 unit quaternion (x, y, z, w), rotation parent_from_sensor.
        camera: Intrinsics when the sensor is a camera, else None.
    """

    name: str
    frame_id: str
    parent: str
    translation: np.ndarray
    rotation_xyzw: np.ndarray
    camera: CameraModel | None = None

    def __post_init__(self) -> None:
        src = f'SensorCalibration {self.name!r}'
        for attribute in ('name', 'frame_id', 'parent'):
            _name(getattr(self, attribute), src, attribute)
        translation = _numbers(np.asarray(self.translation), (3,), src, 'translation')
        rotation = _numbers(np.asarray(self.rotation_xyzw), (4,), src, 'rotation_xyzw')
        rotation = _unit_quaternion(rotation, src, 'rotation_xyzw')
        object.__setattr__(self, 'translation', _frozen_array(translation))
        object.__setattr__(self, 'rotation_xyzw', _frozen_array(rotation))

    def parent_from_sensor(self) -> np.ndarray:
        """Return the (4, 4) float64 homogeneous transform mapping sensor to parent coordinates."""
        return make_transform(self.rotation_xyzw, self.translation)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SensorCalibration):
            return NotImplemented
        return (self.name, self.frame_id, self.parent, self.camera) == (
            other.name, other.frame_id, other.parent, other.camera
        ) and np.array_equal(self.translation, other.translation) and np.array_equal(
            self.rotation_xyzw, other.rotation_xyzw)


def _check_tree(base_frame: str, sensors: Mapping[str, SensorCalibration], src: str) -> None:
    """Check keys match names, frame ids are unique, parents exist and there are no cycles."""
    frames: dict[str, str] = {}
    for key, sensor in sensors.items():
        if key != sensor.name:
            _fail(src, _child('sensors', key), f'expected name {key!r}, found {sensor.name!r}')
        if sensor.frame_id == base_frame or sensor.frame_id in frames:
            other = 'base_frame' if sensor.frame_id == base_frame else frames[sensor.frame_id]
            _fail(src, _child(_child('sensors', key), 'frame_id'),
                  f'expected a unique frame id, found {sensor.frame_id!r} (also {other})')
        frames[sensor.frame_id] = key
    for key, sensor in sensors.items():
        if sensor.parent != base_frame and sensor.parent not in frames:
            _fail(src, _child(_child('sensors', key), 'parent'),
                  f'expected {base_frame!r} or a sensor frame_id ({", ".join(frames)}), '
                  f'found {sensor.parent!r}')
    for key in sensors:
        _chain(base_frame, sensors, frames, key, src)


def _chain(base_frame: str, sensors: Mapping[str, SensorCalibration], frames: Mapping[str, str],
           name: str, src: str) -> list[SensorCalibration]:
    """Sensors from `name` up to (not including) the base frame; error on a parent cycle."""
    chain: list[SensorCalibration] = []
    current = name
    while True:
        sensor = sensors[current]
        if any(s.name == current for s in chain):
            names = ' -> '.join([*(s.name for s in chain), current])
            _fail(src, _child(_child('sensors', name), 'parent'),
                  f'expected a chain ending at {base_frame!r}, found a cycle {names}')
        chain.append(sensor)
        if sensor.parent == base_frame:
            return chain
        current = frames[sensor.parent]


@dataclass(frozen=True)
class Calibration:
    """All sensors of a robot, each posed in the base frame or in another sensor's frame.

    Attributes:
        base_frame: Root frame id of every chain (REP-105 'base_link').
        sensors: Sensor name -> calibration, in file order.
    """

    base_frame: str = DEFAULT_BASE_FRAME
    sensors: Mapping[str, SensorCalibration] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _name(self.base_frame, 'Calibration', 'base_frame')
        object.__setattr__(self, 'sensors', dict(self.sensors))
        _check_tree(self.base_frame, self.sensors, 'Calibration')

    def base_from_sensor(self, name: str) -> np.ndarray:
        """Return the (4, 4) float64 transform mapping `name`'s frame to the base frame.

        The product of parent_from_sensor along the parent chain.

        Raises:
            CalibrationError: Unknown sensor name, or a parent cycle (both named).
        """
        if name not in self.sensors:
            _fail('Calibration', 'sensors', f'expected one of {", ".join(self.sensors)}, '
                                            f'found unknown sensor {name!r}')
        frames = {s.frame_id: key for key, s in self.sensors.items()}
        transform = np.eye(4)
        for sensor in _chain(self.base_frame, self.sensors, frames, name, 'Calibration'):
            transform = sensor.parent_from_sensor() @ transform
        return transform

    def cameras(self) -> list[str]:
        """Return the names of the sensors that have intrinsics, in file order."""
        return [key for key, sensor in self.sensors.items() if sensor.camera is not None]


def _camera_from_dict(value: object, src: str, path: str) -> CameraModel:
    data = _mapping(value, src, path, ('width', 'height', 'K'), _CAMERA_KEYS)
    k = _numbers(data['K'], (9,), src, _child(path, 'K')).reshape(3, 3)
    model = data.get('distortion_model', 'plumb_bob')
    if not isinstance(model, str):
        model = _describe(model)  # reported as unsupported by _check_camera
    d = _numbers([] if data.get('D') is None else data['D'], None, src, _child(path, 'D'))
    _check_camera(data['width'], data['height'], k, d, model, src, path)
    return CameraModel(width=int(data['width']), height=int(data['height']), K=k, D=d,
                       distortion_model=model)


def _sensor_from_dict(name: object, value: object, src: str) -> SensorCalibration:
    path = _child('sensors', str(name))
    _name(name, src, path)
    data = _mapping(value, src, path, _SENSOR_KEYS[:4], _SENSOR_KEYS)
    translation = _numbers(data['translation'], (3,), src, _child(path, 'translation'))
    rotation = _numbers(data['rotation'], (4,), src, _child(path, 'rotation'))
    rotation = _unit_quaternion(rotation, src, _child(path, 'rotation'))
    camera = None
    if data.get('camera') is not None:
        camera = _camera_from_dict(data['camera'], src, _child(path, 'camera'))
    frame_id = _name(data['frame_id'], src, _child(path, 'frame_id'))
    parent = _name(data['parent'], src, _child(path, 'parent'))
    return SensorCalibration(str(name), frame_id, parent, translation, rotation, camera)


def calibration_from_dict(data: object, source: str = '<dict>') -> Calibration:
    """Build a `Calibration` from parsed YAML (the format in the module docstring).

    Args:
        data: The parsed document (a mapping).
        source: Name used in error messages, usually the file path.

    Raises:
        CalibrationError: Any schema or value problem, naming `source` and the field path.
    """
    top = _mapping(data, source, '', ('format_version', 'sensors'), _TOP_KEYS)
    version = top['format_version']
    if isinstance(version, bool) or version != FORMAT_VERSION:
        _fail(source, 'format_version', f'expected {FORMAT_VERSION}, found {version!r}')
    base_frame = _name(top.get('base_frame', DEFAULT_BASE_FRAME), source, 'base_frame')
    sensors_data = {} if top['sensors'] is None else top['sensors']
    if not isinstance(sensors_data, Mapping):
        _fail(source, 'sensors', f'expected a mapping, found {_describe(sensors_data)}')
    sensors = {str(k): _sensor_from_dict(k, v, source) for k, v in sensors_data.items()}
    _check_tree(base_frame, sensors, source)
    return Calibration(base_frame=base_frame, sensors=sensors)


def _floats(array: np.ndarray) -> list[float]:
    return [float(x) for x in np.asarray(array).reshape(-1)]


def calibration_to_dict(cal: Calibration) -> dict[str, Any]:
    """Return the YAML-ready plain-Python form of `cal` (inverse of `calibration_from_dict`)."""
    sensors: dict[str, Any] = {}
    for key, sensor in cal.sensors.items():
        sensors[key] = record = {
            'frame_id': sensor.frame_id, 'parent': sensor.parent,
            'translation': _floats(sensor.translation), 'rotation': _floats(sensor.rotation_xyzw)}
        if (cam := sensor.camera) is not None:
            record['camera'] = {'width': cam.width, 'height': cam.height, 'K': _floats(cam.K),
                                'D': _floats(cam.D), 'distortion_model': cam.distortion_model}
    return {'format_version': FORMAT_VERSION, 'base_frame': cal.base_frame, 'sensors': sensors}


def load_calibration(path: str | os.PathLike[str]) -> Calibration:
    """Read a calibration YAML file (format in the module docstring).

    Raises:
        CalibrationFileNotFoundError: No such file (also a `FileNotFoundError`).
        CalibrationError: Invalid YAML or an invalid field, naming the file and field path.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding='utf-8')
    except FileNotFoundError:
        raise CalibrationFileNotFoundError(f'{path}: calibration file not found') from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CalibrationError(f'{path}: not valid YAML: {exc}') from exc
    return calibration_from_dict(data, source=str(path))


def save_calibration(cal: Calibration, path: str | os.PathLike[str]) -> None:
    """Write `cal` to `path` atomically, with a header comment stating units and conventions."""
    body = yaml.safe_dump(calibration_to_dict(cal), sort_keys=False, default_flow_style=None,
                          width=1000)
    atomic_write_text(path, _HEADER + body)


def camera_model_from_camera_info(msg: Any) -> CameraModel:
    """Read intrinsics from any object with sensor_msgs/CameraInfo attributes.

    Works for rclpy and rosbags messages: reads ``width``, ``height``, ``k`` (9, row-major),
    ``d`` and ``distortion_model`` ('' with no coefficients is read as 'plumb_bob').

    Raises:
        CalibrationError: Uncalibrated (``k`` all zeros) or invalid intrinsics.
    """
    src = 'CameraInfo'
    k = _numbers(np.asarray(msg.k, dtype=np.float64), (9,), src, 'k').reshape(3, 3)
    if not np.any(k):
        _fail(src, 'k', 'expected calibrated intrinsics, found all zeros (uncalibrated camera)')
    d = np.asarray(msg.d, dtype=np.float64).reshape(-1)
    model = str(msg.distortion_model) or ('plumb_bob' if d.size == 0 else '')
    _check_camera(msg.width, msg.height, k, d, model, src, '')
    return CameraModel(width=int(msg.width), height=int(msg.height), K=k, D=d,
                       distortion_model=model)


def camera_info_fields(model: CameraModel) -> dict[str, Any]:
    """Return keyword arguments for ``sensor_msgs.msg.CameraInfo(**fields)``.

    Keys: width, height (int); distortion_model (str); d (list[float]); k (9 floats,
    row-major); r (identity, 9 floats); p (12 floats: [K | 0], row-major); binning_x,
    binning_y (0). The header is left to the caller.
    """
    projection = np.zeros((3, 4))
    projection[:, :3] = model.K
    return {'width': int(model.width), 'height': int(model.height),
            'distortion_model': model.distortion_model, 'd': _floats(model.D),
            'k': _floats(model.K), 'r': _floats(np.eye(3)), 'p': _floats(projection),
            'binning_x': 0, 'binning_y': 0}


def nuscenes_sensor(name: str, translation: Sequence[float], rotation_wxyz: Sequence[float],
                    camera_intrinsic: Sequence[Sequence[float]] | None = None,
                    width: int | None = None, height: int | None = None,
                    parent: str = DEFAULT_BASE_FRAME) -> SensorCalibration:
    """Convert a nuScenes ``calibrated_sensor`` record to a `SensorCalibration`.

    Args:
        name: nuScenes channel, e.g. 'CAM_FRONT'; name and frame id become 'cam_front'.
        translation: (3,) metres, sensor origin in the ego frame (`parent`).
        rotation_wxyz: (4,) quaternion in nuScenes order (w, x, y, z), ego_from_sensor.
        camera_intrinsic: 3x3 pixels, or None / empty for LiDAR and radar.
        width: Image width in pixels; required with `camera_intrinsic` (likewise `height`).
        height: Image height in pixels.
        parent: Parent frame id (the ego frame).

    Returns:
        The sensor, rotation in ROS (x, y, z, w) order; cameras get 'plumb_bob' with 5 zero
        coefficients (nuScenes images are undistorted).
    """
    src = f'nuScenes calibrated_sensor {name}'
    camera = None
    if camera_intrinsic is not None and len(camera_intrinsic) > 0:
        if width is None or height is None:
            _fail(src, 'width', f'expected width and height with camera_intrinsic, found '
                                f'width={width}, height={height}')
        k = _numbers(np.asarray(camera_intrinsic, dtype=np.float64), (9,), src,
                     'camera_intrinsic').reshape(3, 3)
        camera = CameraModel(width=int(width), height=int(height), K=k, D=np.zeros(5),
                             distortion_model='plumb_bob')
    rotation = _numbers(np.asarray(rotation_wxyz, dtype=np.float64), (4,), src, 'rotation')
    return SensorCalibration(name.lower(), name.lower(), parent, np.asarray(translation),
                             quat_xyzw_from_wxyz(rotation), camera)
