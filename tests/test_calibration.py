"""Tests for cns_ros.calibration: YAML round trips, transform chaining, CameraInfo, validation."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import yaml

from cns_ros.calibration import (
    Calibration,
    CalibrationError,
    CameraModel,
    SensorCalibration,
    calibration_from_dict,
    calibration_to_dict,
    camera_info_fields,
    camera_model_from_camera_info,
    load_calibration,
    nuscenes_sensor,
    save_calibration,
)

K_FRONT = [1266.4, 0.0, 816.3, 0.0, 1266.4, 491.5, 0.0, 0.0, 1.0]
# Optical frame (x right, y down, z forward) in base_link (x forward, y left, z up).
OPTICAL_XYZW = [-0.5, 0.5, -0.5, 0.5]


def _doc() -> dict[str, Any]:
    """A valid calibration document: LiDAR, a camera, and a sensor parented to the camera."""
    s = math.sqrt(0.5)
    return {
        'format_version': 1,
        'base_frame': 'base_link',
        'sensors': {
            'lidar_top': {'frame_id': 'lidar_top', 'parent': 'base_link',
                          'translation': [0.94, 0.0, 1.84], 'rotation': [0.0, 0.0, -s, s]},
            'cam_front': {'frame_id': 'cam_front', 'parent': 'base_link',
                          'translation': [1.70, 0.02, 1.51], 'rotation': list(OPTICAL_XYZW),
                          'camera': {'width': 1600, 'height': 900, 'K': list(K_FRONT),
                                     'D': [0.0] * 5, 'distortion_model': 'plumb_bob'}},
            'cam_front_ir': {'frame_id': 'cam_front_ir', 'parent': 'cam_front',
                             'translation': [0.05, -0.01, 0.0], 'rotation': [0.0, s, 0.0, s]},
        },
    }


def _write(tmp_path: Path, data: object, name: str = 'calib.yaml') -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_save_load_round_trip_is_exact(tmp_path: Path) -> None:
    cal = calibration_from_dict(_doc())
    path = tmp_path / 'out' / 'calib.yaml'
    save_calibration(cal, path)
    text = path.read_text()
    assert text.startswith('# cns_ros sensor calibration')
    assert 'ROS order' in text
    assert load_calibration(path) == cal
    assert [p.name for p in path.parent.iterdir()] == ['calib.yaml']  # no temporary left
    assert list(cal.sensors) == ['lidar_top', 'cam_front', 'cam_front_ir']  # file order kept


def test_dict_round_trip() -> None:
    cal = calibration_from_dict(_doc())
    data = calibration_to_dict(cal)
    assert calibration_from_dict(data) == cal
    assert data['sensors']['cam_front']['camera']['K'] == K_FRONT
    assert cal.cameras() == ['cam_front']
    cam = cal.sensors['cam_front'].camera
    assert cam is not None and cam.K.shape == (3, 3) and cam.K.dtype == np.float64


def test_arrays_are_read_only() -> None:
    sensor = calibration_from_dict(_doc()).sensors['cam_front']
    with pytest.raises(ValueError):
        sensor.translation[0] = 5.0
    assert sensor.camera is not None
    with pytest.raises(ValueError):
        sensor.camera.K[0, 0] = 1.0


def test_parent_from_sensor_maps_optical_axis_forward() -> None:
    cal = calibration_from_dict(_doc())
    transform = cal.base_from_sensor('cam_front')
    np.testing.assert_allclose(transform[:3, :3] @ [0.0, 0.0, 1.0], [1.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(transform[:3, 3], [1.70, 0.02, 1.51])
    np.testing.assert_allclose(transform[3], [0.0, 0.0, 0.0, 1.0])


def test_base_from_sensor_chains_parents() -> None:
    cal = calibration_from_dict(_doc())
    chained = cal.base_from_sensor('cam_front_ir')
    expected = cal.base_from_sensor('cam_front') @ cal.sensors['cam_front_ir'].parent_from_sensor()
    np.testing.assert_allclose(chained, expected, atol=1e-12)
    point = np.array([0.3, -0.2, 4.0, 1.0])
    via_parent = cal.base_from_sensor('cam_front') @ (
        cal.sensors['cam_front_ir'].parent_from_sensor() @ point)
    np.testing.assert_allclose(chained @ point, via_parent, atol=1e-12)


def test_base_from_sensor_unknown_sensor_is_named() -> None:
    with pytest.raises(CalibrationError, match="unknown sensor 'cam_back'"):
        calibration_from_dict(_doc()).base_from_sensor('cam_back')


def test_near_unit_quaternion_is_normalised() -> None:
    doc = _doc()
    doc['sensors']['cam_front']['rotation'] = [v * (1 + 5e-4) for v in OPTICAL_XYZW]
    sensor = calibration_from_dict(doc).sensors['cam_front']
    assert np.linalg.norm(sensor.rotation_xyzw) == pytest.approx(1.0, abs=1e-15)
    np.testing.assert_allclose(sensor.rotation_xyzw, OPTICAL_XYZW, atol=1e-12)


def test_camera_info_fields_round_trip() -> None:
    model = CameraModel(640, 480, np.array([[500.0, 0, 320], [0, 510.0, 240], [0, 0, 1]]),
                        np.arange(8, dtype=np.float64) * 0.01, 'rational_polynomial')
    fields = camera_info_fields(model)
    assert set(fields) == {'width', 'height', 'distortion_model', 'd', 'k', 'r', 'p',
                           'binning_x', 'binning_y'}
    assert fields['r'] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    assert fields['p'] == [500.0, 0.0, 320.0, 0.0, 0.0, 510.0, 240.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert all(isinstance(v, float) for v in fields['k'] + fields['d'])
    assert camera_model_from_camera_info(SimpleNamespace(**fields)) == model


def test_camera_model_from_rosbags_style_message() -> None:
    msg = SimpleNamespace(width=np.uint32(1600), height=np.uint32(900),
                          k=np.array(K_FRONT), d=np.zeros(0), distortion_model='')
    model = camera_model_from_camera_info(msg)
    assert model.distortion_model == 'plumb_bob' and model.D.shape == (0,)
    np.testing.assert_array_equal(model.K.reshape(-1), K_FRONT)


def test_camera_info_uncalibrated_is_refused() -> None:
    msg = SimpleNamespace(width=640, height=480, k=[0.0] * 9, d=[], distortion_model='plumb_bob')
    with pytest.raises(CalibrationError, match=r'CameraInfo: k: .*uncalibrated'):
        camera_model_from_camera_info(msg)


def test_nuscenes_sensor_converts_quaternion_order() -> None:
    half = math.radians(30.0)  # a 60 degree yaw, nuScenes order (w, x, y, z)
    sensor = nuscenes_sensor('CAM_FRONT', [1.7, 0.0, 1.5], [math.cos(half), 0.0, 0.0,
                                                             math.sin(half)],
                             camera_intrinsic=np.reshape(K_FRONT, (3, 3)).tolist(),
                             width=1600, height=900)
    assert sensor.name == sensor.frame_id == 'cam_front'
    assert sensor.parent == 'base_link'
    np.testing.assert_allclose(sensor.rotation_xyzw, [0.0, 0.0, math.sin(half), math.cos(half)])
    rotated = sensor.parent_from_sensor()[:3, :3] @ [1.0, 0.0, 0.0]
    np.testing.assert_allclose(rotated, [0.5, math.sqrt(3) / 2, 0.0], atol=1e-12)
    assert sensor.camera is not None and sensor.camera.width == 1600
    lidar = nuscenes_sensor('LIDAR_TOP', [0.9, 0.0, 1.8], [1.0, 0.0, 0.0, 0.0],
                            camera_intrinsic=[])
    assert lidar.camera is None
    with pytest.raises(CalibrationError, match='width and height'):
        nuscenes_sensor('CAM_BACK', [0, 0, 0], [1, 0, 0, 0], camera_intrinsic=[[1, 0, 0]] * 3)


def test_constructors_validate() -> None:
    with pytest.raises(CalibrationError, match='CameraModel: K: expected bottom row'):
        CameraModel(10, 10, np.eye(3) * 2)
    with pytest.raises(CalibrationError, match='rotation_xyzw: expected a unit quaternion'):
        SensorCalibration('a', 'a', 'base_link', np.zeros(3), np.array([0.0, 0.0, 0.0, 2.0]))
    sensor = SensorCalibration('a', 'a', 'b', np.zeros(3), np.array([0.0, 0.0, 0.0, 1.0]))
    with pytest.raises(CalibrationError, match=r"sensors.a.parent: expected 'base_link'"):
        Calibration(sensors={'a': sensor})


def _set(*keys: str, value: object) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        target = doc
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return mutate


def _delete(*keys: str) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        target = doc
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]
    return mutate


CAM = ('sensors', 'cam_front', 'camera')
INVALID_CASES = [
    ('unknown_top_key', _set('extra', value=1),
     'expected only the keys format_version, base_frame, sensors', 'found unknown key(s) extra'),
    ('unknown_sensor_key', _set('sensors', 'lidar_top', 'rot', value=[0, 0, 0, 1]),
     'sensors.lidar_top: ', 'found unknown key(s) rot'),
    ('unknown_camera_key', _set(*CAM, 'fx', value=1.0), 'sensors.cam_front.camera: ',
     'expected only the keys width, height, K, D, distortion_model; found unknown key(s) fx'),
    ('missing_version', _delete('format_version'), 'format_version: ', 'required key missing'),
    ('missing_translation', _delete('sensors', 'cam_front', 'translation'),
     'sensors.cam_front.translation: ', 'required key missing'),
    ('missing_K', _delete(*CAM, 'K'), 'sensors.cam_front.camera.K: ', 'required key missing'),
    ('K_length', _set(*CAM, 'K', value=K_FRONT[:6]), 'sensors.cam_front.camera.K: ',
     'expected 9 numbers, found 6'),
    ('translation_length', _set('sensors', 'lidar_top', 'translation', value=[1.0, 2.0]),
     'sensors.lidar_top.translation: ', 'expected 3 numbers, found 2'),
    ('rotation_length', _set('sensors', 'lidar_top', 'rotation', value=[0.0, 0.0, 1.0]),
     'sensors.lidar_top.rotation: ', 'expected 4 numbers, found 3'),
    ('translation_nan', _set('sensors', 'lidar_top', 'translation', value=[math.nan, 0, 0]),
     'sensors.lidar_top.translation[0]: ', 'expected a finite number, found nan'),
    ('K_inf', _set(*CAM, 'K', value=[*K_FRONT[:8], math.inf]),
     'sensors.cam_front.camera.K[8]: ', 'expected a finite number, found inf'),
    ('rotation_string', _set('sensors', 'lidar_top', 'rotation', value=[0, 0, 'z', 1]),
     'sensors.lidar_top.rotation[2]: ', "expected a number, found str 'z'"),
    ('quaternion_norm', _set('sensors', 'cam_front', 'rotation', value=[0.0, 0.0, 0.0, 1.01]),
     'sensors.cam_front.rotation: ', 'expected a unit quaternion (x, y, z, w), found norm 1.01'),
    ('fx_zero', _set(*CAM, 'K', value=[0.0, *K_FRONT[1:]]), 'sensors.cam_front.camera.K: ',
     'expected fx > 0 and fy > 0, found fx=0.0'),
    ('fy_negative', _set(*CAM, 'K', value=[*K_FRONT[:4], -5.0, *K_FRONT[5:]]),
     'sensors.cam_front.camera.K: ', 'fy=-5.0'),
    ('K_bottom_row', _set(*CAM, 'K', value=[*K_FRONT[:6], 0.0, 0.0, 2.0]),
     'sensors.cam_front.camera.K: ', 'expected bottom row [0, 0, 1], found [0.0, 0.0, 2.0]'),
    ('width_zero', _set(*CAM, 'width', value=0), 'sensors.cam_front.camera.width: ',
     'expected a positive integer, found 0'),
    ('height_negative', _set(*CAM, 'height', value=-900), 'sensors.cam_front.camera.height: ',
     'expected a positive integer, found -900'),
    ('width_float', _set(*CAM, 'width', value=1600.5), 'sensors.cam_front.camera.width: ',
     'expected a positive integer, found float 1600.5'),
    ('distortion_model', _set(*CAM, 'distortion_model', value='fisheye'),
     'sensors.cam_front.camera.distortion_model: ',
     "expected one of plumb_bob, rational_polynomial, found 'fisheye'"),
    ('plumb_bob_coeffs', _set(*CAM, 'D', value=[0.1, 0.2, 0.3]), 'sensors.cam_front.camera.D: ',
     'expected 0 or 4 or 5 finite coefficients for plumb_bob, found 3'),
    ('rational_coeffs', _set(*CAM, 'distortion_model', value='rational_polynomial'),
     'sensors.cam_front.camera.D: ', 'expected 8 finite coefficients for rational_polynomial, '
     'found 5'),
    ('D_not_list', _set(*CAM, 'D', value=0.0), 'sensors.cam_front.camera.D: ',
     'expected numbers, found float 0.0'),
    ('version', _set('format_version', value=2), 'format_version: ', 'expected 1, found 2'),
    ('sensors_list', _set('sensors', value=['lidar_top']), 'sensors: ',
     'expected a mapping, found a list of 1'),
    ('sensor_not_mapping', _set('sensors', 'lidar_top', value=[1, 2]), 'sensors.lidar_top: ',
     'expected a mapping'),
    ('frame_id_blank', _set('sensors', 'lidar_top', 'frame_id', value=' '),
     'sensors.lidar_top.frame_id: ', 'expected a non-empty string'),
    ('unknown_parent', _set('sensors', 'lidar_top', 'parent', value='odom'),
     'sensors.lidar_top.parent: ', "found 'odom'"),
    ('duplicate_frame', _set('sensors', 'cam_front_ir', 'frame_id', value='cam_front'),
     'sensors.cam_front_ir.frame_id: ', "expected a unique frame id, found 'cam_front'"),
    ('parent_cycle', _set('sensors', 'cam_front', 'parent', value='cam_front_ir'),
     'sensors.cam_front.parent: ', 'found a cycle cam_front -> cam_front_ir -> cam_front'),
]


@pytest.mark.parametrize(('mutate', 'path', 'message'), [c[1:] for c in INVALID_CASES],
                         ids=[c[0] for c in INVALID_CASES])
def test_invalid_file_names_file_and_field(tmp_path: Path, mutate: Callable[[dict], None],
                                           path: str, message: str) -> None:
    doc = copy.deepcopy(_doc())
    mutate(doc)
    file = _write(tmp_path, doc)
    with pytest.raises(CalibrationError) as info:
        load_calibration(file)
    text = str(info.value)
    assert text.startswith(f'{file}: '), text
    assert path in text, text
    assert message in text, text


def test_error_message_matches_documented_example() -> None:
    doc = _doc()
    doc['sensors']['cam_front']['camera']['K'] = K_FRONT[:6]
    with pytest.raises(CalibrationError) as info:
        calibration_from_dict(doc, source='calib.yaml')
    assert str(info.value) == 'calib.yaml: sensors.cam_front.camera.K: expected 9 numbers, found 6'


def test_unknown_key_error_lists_allowed_keys(tmp_path: Path) -> None:
    doc = _doc()
    doc['sensors']['lidar_top']['rot'] = [0, 0, 0, 1]
    with pytest.raises(CalibrationError) as info:
        load_calibration(_write(tmp_path, doc))
    for key in ('frame_id', 'parent', 'translation', 'rotation', 'camera'):
        assert key in str(info.value)


def test_missing_file_names_path(tmp_path: Path) -> None:
    missing = tmp_path / 'nope.yaml'
    with pytest.raises(CalibrationError, match=r'nope\.yaml: calibration file not found'):
        load_calibration(missing)
    with pytest.raises(FileNotFoundError):
        load_calibration(missing)


@pytest.mark.parametrize('text', ['- a\n- b\n', 'just a string\n', ''])
def test_not_a_mapping(tmp_path: Path, text: str) -> None:
    path = tmp_path / 'calib.yaml'
    path.write_text(text)
    with pytest.raises(CalibrationError, match=r'calib.yaml: expected a mapping'):
        load_calibration(path)


def test_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / 'calib.yaml'
    path.write_text('sensors: [unclosed\n')
    with pytest.raises(CalibrationError, match=r'calib\.yaml: not valid YAML'):
        load_calibration(path)
