"""nuScenes keyframes (LiDAR + sweeps, 6 cameras, poses, lidarseg) through nuscenes-devkit.

ROS-free. Any nuScenes version (v1.0-mini, v1.0-trainval, v1.0-test) or the synthetic world of
:mod:`cns_ros.data.synthetic` (same on-disk format). Scenes are picked by the devkit's official
splits (``nuscenes.utils.splits.create_splits_scenes``: 'train', 'val', 'test', 'mini_train',
'mini_val', ...) or None (every scene of the version).

Conventions (DESIGN.md):

* Transforms are float64 (4, 4) ``a_from_b`` matrices (:mod:`cns_ros.geometry`); nuScenes'
  (w, x, y, z) quaternions are converted by :func:`cns_ros.geometry.quat_xyzw_from_wxyz` only.
* ``ego_from_sensor`` comes from the ``calibrated_sensor`` record, ``global_from_ego`` from the
  ``ego_pose`` record of the same sample_data (the ego pose at the sensor's timestamp).
* Timestamps are integer microseconds (nuScenes ``timestamp``); points are metres.
* LiDAR points are (N, 5) float32 ``x, y, z, intensity, ring`` in the ``LIDAR_TOP`` frame.

Missing folders, tables and files raise :class:`NuScenesNotFoundError` (a FileNotFoundError)
naming what is missing and the path looked at (the devkit would raise a bare AssertionError).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cns_ros.calibration import Calibration, SensorCalibration, nuscenes_sensor
from cns_ros.geometry import (
    invert_transform,
    make_transform,
    quat_xyzw_from_wxyz,
    transform_points,
)
from cns_ros.vocabulary import LIDARSEG32_NAMES, lidarseg32_to_16

if TYPE_CHECKING:
    from nuscenes.nuscenes import NuScenes

#: The LiDAR channel that keyframes are built around.
LIDAR_CHANNEL = 'LIDAR_TOP'
#: The six camera channels, in the order of DESIGN.md's interface list.
CAMERA_CHANNELS: tuple[str, ...] = ('CAM_FRONT', 'CAM_FRONT_LEFT', 'CAM_FRONT_RIGHT', 'CAM_BACK',
                                    'CAM_BACK_LEFT', 'CAM_BACK_RIGHT')
#: Columns of a ``.pcd.bin`` file: 5 little-endian float32 per point.
POINT_COLUMNS: tuple[str, ...] = ('x', 'y', 'z', 'intensity', 'ring')
#: Tables that nuscenes-devkit loads unconditionally (``<dataroot>/<version>/<table>.json``).
REQUIRED_TABLES: tuple[str, ...] = (
    'category', 'attribute', 'visibility', 'instance', 'sensor', 'calibrated_sensor', 'ego_pose',
    'log', 'scene', 'sample', 'sample_data', 'sample_annotation', 'map')
_POINT_BYTES = 4 * len(POINT_COLUMNS)


class NuScenesNotFoundError(FileNotFoundError):
    """A nuScenes folder, table or data file is missing; the message names it and where."""


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def read_pcd_bin(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a nuScenes LiDAR ``.pcd.bin`` file.

    Args:
        path: The file: 20 bytes per point, 5 little-endian float32 (x, y, z, intensity, ring).

    Returns:
        (N, 5) float32 array in the LiDAR frame (metres; intensity 0..255; ring = beam index).

    Raises:
        NuScenesNotFoundError: The file does not exist (named).
        ValueError: Its size is not a multiple of 20 bytes (the file is named).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise NuScenesNotFoundError(f'nuScenes LiDAR file not found: {path}') from None
    if size % _POINT_BYTES:
        raise ValueError(f'{path}: size {size} bytes is not a multiple of {_POINT_BYTES} '
                         f'(5 float32 x, y, z, intensity, ring per point): truncated or not a '
                         f'nuScenes .pcd.bin file')
    return np.fromfile(path, dtype='<f4').astype(np.float32, copy=False).reshape(-1, 5)


def _check_maps(root: Path, table_root: Path) -> None:
    """Every map image of map.json must exist (the devkit opens them while loading)."""
    map_json = table_root / 'map.json'
    with open(map_json, encoding='utf-8') as handle:
        records = json.load(handle)
    for record in records:
        path = root / record.get('filename', '')
        if not path.is_file():
            raise NuScenesNotFoundError(f'nuScenes map image {record.get("filename")!r} (listed '
                                        f'in {map_json}) not found: looked for {path}')


def check_nuscenes_root(dataroot: str | os.PathLike[str], version: str) -> Path:
    """Check that a nuScenes dataroot holds everything the devkit needs to load ``version``.

    Args:
        dataroot: Folder with ``<version>/``, ``samples/``, ``sweeps/``, ``maps/``.
        version: Table folder name, e.g. 'v1.0-mini'.

    Returns the dataroot as a Path. Raises :class:`NuScenesNotFoundError` naming a missing
    dataroot, version folder, table, map image or lidarseg folder and the path looked at.
    """
    root = Path(dataroot)
    if not root.is_dir():
        raise NuScenesNotFoundError(f'nuScenes dataroot not found: {root} (expected a folder '
                                    f'holding {version}/, samples/, sweeps/ and maps/)')
    table_root = root / version
    if not table_root.is_dir():
        present = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith('v'))
        raise NuScenesNotFoundError(f'nuScenes version {version!r} not found: looked for '
                                    f'{table_root}; version folders in {root}: '
                                    f'{", ".join(present) or "none"}')
    for table in REQUIRED_TABLES:
        path = table_root / f'{table}.json'
        if not path.is_file():
            raise NuScenesNotFoundError(f'nuScenes table {table}.json of {version} not found: '
                                        f'looked for {path}')
    _check_maps(root, table_root)
    labels = root / 'lidarseg' / version
    if (table_root / 'lidarseg.json').is_file() and not labels.is_dir():
        raise NuScenesNotFoundError(f'nuScenes-lidarseg label folder not found: looked for '
                                    f'{labels} (lidarseg.json is present in {table_root})')
    return root


def open_nuscenes(dataroot: str | os.PathLike[str], version: str = 'v1.0-mini',
                  verbose: bool = False) -> NuScenes:
    """Check the dataroot (:func:`check_nuscenes_root`), then load it with nuscenes-devkit.

    Raises:
        NuScenesNotFoundError: Something the devkit needs is missing (named).
        ValueError: The devkit rejects the tables (its assertion message is kept).
        ImportError: nuscenes-devkit is not installed.
    """
    root = check_nuscenes_root(dataroot, version)
    try:
        from nuscenes.nuscenes import NuScenes
    except ImportError as exc:
        raise ImportError('cns_ros.data.nuscenes needs nuscenes-devkit: '
                          'pip install nuscenes-devkit') from exc
    try:
        return NuScenes(version=version, dataroot=str(root), verbose=verbose)
    except AssertionError as exc:
        raise ValueError(f'nuscenes-devkit could not load {version} from {root}: {exc}') from exc


def record_transform(record: Mapping[str, Any]) -> np.ndarray:
    """(4, 4) float64 transform of a ``calibrated_sensor`` or ``ego_pose`` record.

    Returns ``ego_from_sensor`` for a calibrated_sensor, ``global_from_ego`` for an ego_pose.
    """
    return make_transform(quat_xyzw_from_wxyz(record['rotation']), record['translation'])


def sample_data_pose(nusc: NuScenes, sd_token: str) -> tuple[np.ndarray, np.ndarray]:
    """Pose of one sample_data: ``(ego_from_sensor, global_from_ego)``, float64 (4, 4) each.

    ``global_from_ego`` is the ego pose at the sample_data's own timestamp.
    """
    sd = nusc.get('sample_data', sd_token)
    calibrated = nusc.get('calibrated_sensor', sd['calibrated_sensor_token'])
    pose = nusc.get('ego_pose', sd['ego_pose_token'])
    return record_transform(calibrated), record_transform(pose)


def scene_record(nusc: NuScenes, name: str) -> dict[str, Any]:
    """The ``scene`` record called ``name``; ValueError listing the available scenes if none."""
    for record in nusc.scene:
        if record['name'] == name:
            return record
    available = ', '.join(s['name'] for s in nusc.scene) or 'none'
    raise ValueError(f'scene {name!r} not found in {nusc.version} at {nusc.dataroot}; '
                     f'available scenes: {available}')


def select_scenes(nusc: NuScenes, split: str | None = None,
                  scenes: Sequence[str] | None = None) -> list[str]:
    """Scene names of a split (and/or an explicit list), in the order of the scene table.

    Args:
        nusc: The loaded dataset.
        split: A devkit split name ('train', 'val', 'test', 'mini_train', 'mini_val', ...) or
            None for every scene of the version.
        scenes: Optional scene names; each must exist (and belong to ``split`` when given).

    Raises:
        ValueError: Unknown split, a split with no scene in this version, or an unknown scene
            (the message lists what is available).
    """
    chosen = [record['name'] for record in nusc.scene]
    if split is not None:
        from nuscenes.utils.splits import create_splits_scenes

        splits = create_splits_scenes()
        if split not in splits:
            raise ValueError(f'unknown nuScenes split {split!r}; expected None or one of '
                             f'{", ".join(sorted(splits))}')
        members = set(splits[split])
        chosen = [name for name in chosen if name in members]
        if not chosen:
            raise ValueError(f'split {split!r} has no scene in {nusc.version} at '
                             f'{nusc.dataroot}; scenes present: '
                             f'{", ".join(s["name"] for s in nusc.scene) or "none"}')
    if scenes is not None:
        for name in scenes:
            if name not in chosen:
                where = f'split {split!r} of ' if split is not None else ''
                raise ValueError(f'scene {name!r} not found in {where}{nusc.version} at '
                                 f'{nusc.dataroot}; available scenes: {", ".join(chosen)}')
        chosen = [name for name in chosen if name in set(scenes)]
    return chosen


def scene_sample_tokens(nusc: NuScenes, name: str) -> list[str]:
    """Sample (keyframe) tokens of a scene, in time order."""
    tokens, token = [], scene_record(nusc, name)['first_sample_token']
    while token:
        tokens.append(token)
        token = nusc.get('sample', token)['next']
    return tokens


def sample_data_by_scene(nusc: NuScenes, names: Sequence[str]
                         ) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every sample_data record (sweeps and keyframes) of the named scenes, in one table pass.

    A record belongs to the scene of its ``sample_token``. Returns scene name -> channel ->
    records sorted by timestamp (microseconds).
    """
    scene_of_sample = {token: name for name in names for token in scene_sample_tokens(nusc, name)}
    out: dict[str, dict[str, list[dict[str, Any]]]] = {name: {} for name in names}
    for record in nusc.sample_data:
        name = scene_of_sample.get(record['sample_token'])
        if name is not None:
            out[name].setdefault(record['channel'], []).append(record)
    for channels in out.values():
        for records in channels.values():
            records.sort(key=lambda r: r['timestamp'])
    return out


def _channel_order(channel: str) -> tuple[int, str]:
    order = (LIDAR_CHANNEL, *CAMERA_CHANNELS)
    return (order.index(channel) if channel in order else len(order), channel)


def calibration_for_scene(nusc: NuScenes, scene: str | Mapping[str, Any]) -> Calibration:
    """Sensor calibration of a scene (from its first keyframe) as a cns_ros Calibration.

    Every sensor of that keyframe (LiDAR, cameras, radars) becomes a sensor named after its
    channel in lower case, posed in ``base_link`` (the nuScenes ego frame); cameras get
    ``K``, the image size and zero plumb_bob distortion (nuScenes images are undistorted).
    Order: lidar_top, the cameras in :data:`CAMERA_CHANNELS` order, then the rest by name.
    """
    record = scene_record(nusc, scene) if isinstance(scene, str) else scene
    sample = nusc.get('sample', record['first_sample_token'])
    sensors: dict[str, SensorCalibration] = {}
    for channel in sorted(sample['data'], key=_channel_order):
        sd = nusc.get('sample_data', sample['data'][channel])
        cs = nusc.get('calibrated_sensor', sd['calibrated_sensor_token'])
        intrinsic = cs.get('camera_intrinsic') or None
        sensor = nuscenes_sensor(channel, cs['translation'], cs['rotation'], intrinsic,
                                 width=sd.get('width') or None, height=sd.get('height') or None)
        sensors[sensor.name] = sensor
    return Calibration(sensors=sensors)


def lidarseg16_table(nusc: NuScenes) -> np.ndarray:
    """(256,) uint8 map from the dataset's lidarseg label index to lidarseg-16 id (0 = ignore).

    Built by category name through :func:`cns_ros.vocabulary.lidarseg32_to_16`, so it is right
    even if a dataset numbers its categories differently; unknown indices map to 0.
    """
    coarse = lidarseg32_to_16()
    table = np.zeros(256, dtype=np.uint8)
    for category in nusc.category:
        index, name = category.get('index'), category['name']
        if index is not None and 0 <= index < 256 and name in LIDARSEG32_NAMES:
            table[index] = coarse[LIDARSEG32_NAMES.index(name)]
    return _readonly(table)


def read_lidarseg16(nusc: NuScenes, lidar_token: str, table: np.ndarray | None = None
                    ) -> np.ndarray | None:
    """lidarseg-16 ids (N,) uint8 of the points of a keyframe's LIDAR_TOP sample_data
    ``lidar_token``, or None without lidarseg for it; ``table``: :func:`lidarseg16_table`."""
    if 'lidarseg' not in nusc.table_names or lidar_token not in nusc._token2ind['lidarseg']:
        return None
    path = Path(nusc.dataroot) / nusc.get('lidarseg', lidar_token)['filename']
    if not path.is_file():
        raise NuScenesNotFoundError(f'nuScenes-lidarseg label file not found: {path}')
    table = lidarseg16_table(nusc) if table is None else table
    return _readonly(table[np.fromfile(path, dtype=np.uint8)])


@dataclass(frozen=True, eq=False)
class CameraFrame:
    """One camera image of nuScenes with its calibration and pose; the image loads lazily.

    Attributes:
        channel: nuScenes channel, e.g. 'CAM_FRONT' (frame id: :attr:`frame_id`).
        sample_data_token: The image's sample_data token.
        timestamp_us: Exposure timestamp, microseconds.
        image_path: The JPEG file.
        width: Image width, pixels.
        height: Image height, pixels.
        intrinsics: (3, 3) float64 camera matrix K, pixels (images are undistorted).
        ego_from_sensor: (4, 4) float64, camera optical frame -> ego frame (base_link).
        global_from_ego: (4, 4) float64, ego frame at ``timestamp_us`` -> global (map) frame.
    """

    channel: str
    sample_data_token: str
    timestamp_us: int
    image_path: Path
    width: int
    height: int
    intrinsics: np.ndarray
    ego_from_sensor: np.ndarray
    global_from_ego: np.ndarray

    @property
    def frame_id(self) -> str:
        """ROS frame id of the camera: the channel in lower case."""
        return self.channel.lower()

    def load_image(self) -> np.ndarray:
        """Decode the image: (height, width, 3) uint8 RGB; a missing/broken file is named."""
        import cv2

        if not self.image_path.is_file():
            raise NuScenesNotFoundError(f'nuScenes image file not found: {self.image_path}')
        bgr = cv2.imread(str(self.image_path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f'{self.image_path}: not a decodable image')
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def camera_frame(nusc: NuScenes, sd_token: str) -> CameraFrame:
    """The :class:`CameraFrame` of any camera sample_data (keyframe or not); reads no pixels."""
    sd = nusc.get('sample_data', sd_token)
    calibrated = nusc.get('calibrated_sensor', sd['calibrated_sensor_token'])
    ego_from_sensor, global_from_ego = sample_data_pose(nusc, sd_token)
    intrinsics = np.asarray(calibrated['camera_intrinsic'], dtype=np.float64).reshape(3, 3)
    return CameraFrame(channel=sd['channel'], sample_data_token=sd_token,
                       timestamp_us=int(sd['timestamp']),
                       image_path=Path(nusc.dataroot) / sd['filename'],
                       width=int(sd['width']), height=int(sd['height']),
                       intrinsics=_readonly(intrinsics),
                       ego_from_sensor=_readonly(ego_from_sensor),
                       global_from_ego=_readonly(global_from_ego))


@dataclass(frozen=True, eq=False)
class Keyframe:
    """One annotated nuScenes sample: LiDAR (+ previous sweeps), cameras, poses, labels.

    Attributes:
        sample_token: The sample's token.
        scene_name: e.g. 'scene-0061'.
        timestamp_us: The sample's timestamp (= the LIDAR_TOP keyframe's), microseconds.
        lidar_token: The keyframe's LIDAR_TOP sample_data token.
        lidar_path: The keyframe's ``.pcd.bin`` file.
        points: (N, 5) float32 x, y, z, intensity, ring in the keyframe's LIDAR_TOP frame,
            metres: the keyframe's own points first (file order), then the previous sweeps,
            each moved through ``sensor -> ego(t_sweep) -> global -> ego(t_key) -> sensor``.
        sweep_index: (N,) uint8, 0 = keyframe, k = the k-th previous sweep.
        sweep_timestamps_us: Timestamp of each sweep index, microseconds.
        lidar_ego_from_sensor: (4, 4) float64, LIDAR_TOP -> ego (base_link).
        lidar_global_from_ego: (4, 4) float64, ego at ``timestamp_us`` -> global (map).
        cameras: Channel -> :class:`CameraFrame` of the sample's camera keyframes, in
            :data:`CAMERA_CHANNELS` order.
        lidarseg: (M,) uint8 lidarseg-16 ids (0 = ignore, 1..16) of the keyframe's own points
            (``points[:M]``, M = :attr:`num_keyframe_points`), or None without lidarseg.
    """

    sample_token: str
    scene_name: str
    timestamp_us: int
    lidar_token: str
    lidar_path: Path
    points: np.ndarray
    sweep_index: np.ndarray
    sweep_timestamps_us: tuple[int, ...]
    lidar_ego_from_sensor: np.ndarray
    lidar_global_from_ego: np.ndarray
    cameras: Mapping[str, CameraFrame]
    lidarseg: np.ndarray | None

    @property
    def num_keyframe_points(self) -> int:
        """Number of points of the keyframe sweep itself (they come first in ``points``)."""
        return int(np.count_nonzero(self.sweep_index == 0))

    def train_labels(self) -> np.ndarray | None:
        """uint8 (M,) nuScenes-16 training ids (255 ignore) of the keyframe points, or None."""
        from cns_ros.vocabulary import lidarseg16_to_train

        return None if self.lidarseg is None else lidarseg16_to_train(self.lidarseg)


def load_sweeps(nusc: NuScenes, lidar_token: str, num_sweeps: int = 0
                ) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """A LiDAR sweep plus up to ``num_sweeps`` previous ones, in the given sweep's frame.

    Follows ``prev`` links as the devkit's ``from_file_multisweep`` does (fewer sweeps at the
    start of a scene), but keeps every point and the ring column.

    Returns:
        ``(points, sweep_index, timestamps_us)``: (N, 5) float32, (N,) uint8, one int per sweep.
    """
    if not 0 <= num_sweeps <= 254:
        raise ValueError(f'num_sweeps must be in 0..254, found {num_sweeps}')
    ego_key, global_key = sample_data_pose(nusc, lidar_token)
    key_from_global = invert_transform(global_key @ ego_key)
    record = nusc.get('sample_data', lidar_token)
    parts, indices, stamps = [], [], []
    for k in range(num_sweeps + 1):
        points = read_pcd_bin(Path(nusc.dataroot) / record['filename'])
        if k:
            ego, glob = sample_data_pose(nusc, record['token'])
            points[:, :3] = transform_points(key_from_global @ glob @ ego, points[:, :3])
        parts.append(points)
        indices.append(np.full(len(points), k, dtype=np.uint8))
        stamps.append(int(record['timestamp']))
        if not record['prev']:
            break
        record = nusc.get('sample_data', record['prev'])
    return np.concatenate(parts), np.concatenate(indices), tuple(stamps)


class NuScenesKeyframes:
    """The keyframes (samples) of a nuScenes version or split, read from disk on access.

    ``len(data)``, ``data[i]`` and ``for keyframe in data`` give :class:`Keyframe` objects.

    Args:
        dataroot: nuScenes root folder.
        version: Table folder, e.g. 'v1.0-mini', 'v1.0-trainval', 'v1.0-test'.
        split: Devkit split name ('train', 'val', 'mini_train', 'mini_val', 'test', ...) or
            None for every scene of the version.
        num_sweeps: Previous LiDAR sweeps merged into each keyframe (0..254; nuScenes uses 9
            for 10 sweeps in total).
        scenes: Optional scene names to keep (within ``split``).
        nusc: An already loaded devkit ``NuScenes`` of the same dataroot/version, to share it.
    """

    def __init__(self, dataroot: str | os.PathLike[str], version: str = 'v1.0-mini',
                 split: str | None = None, num_sweeps: int = 0, *,
                 scenes: Sequence[str] | None = None, nusc: NuScenes | None = None) -> None:
        if not 0 <= num_sweeps <= 254:
            raise ValueError(f'num_sweeps must be in 0..254, found {num_sweeps}')
        self.nusc = open_nuscenes(dataroot, version) if nusc is None else nusc
        self.num_sweeps = int(num_sweeps)
        self.scene_names: tuple[str, ...] = tuple(select_scenes(self.nusc, split, scenes))
        self._samples = [(token, name) for name in self.scene_names
                         for token in scene_sample_tokens(self.nusc, name)]
        self._label_table = lidarseg16_table(self.nusc)

    def __len__(self) -> int:
        return len(self._samples)

    def __getitem__(self, index: int) -> Keyframe:
        if not -len(self) <= index < len(self):
            raise IndexError(f'keyframe index {index} out of range for {len(self)} keyframes')
        token, scene = self._samples[index]
        return self._keyframe(token, scene)

    def __iter__(self) -> Iterator[Keyframe]:
        for token, scene in self._samples:
            yield self._keyframe(token, scene)

    def sample_tokens(self) -> list[tuple[str, str]]:
        """(sample token, LIDAR_TOP sample_data token) of every keyframe, in index order."""
        return [(token, self.nusc.get('sample', token)['data'][LIDAR_CHANNEL])
                for token, _ in self._samples]

    def ground_truth(self, sample_token: str) -> np.ndarray | None:
        """uint8 (M,) nuScenes-16 training ids (255 ignore) of a keyframe's own points, or
        None without lidarseg (reads only the label file)."""
        from cns_ros.vocabulary import lidarseg16_to_train

        lidar_token = self.nusc.get('sample', sample_token)['data'][LIDAR_CHANNEL]
        labels = read_lidarseg16(self.nusc, lidar_token, self._label_table)
        return None if labels is None else lidarseg16_to_train(labels)

    def _keyframe(self, sample_token: str, scene: str) -> Keyframe:
        sample = self.nusc.get('sample', sample_token)
        lidar_token = sample['data'][LIDAR_CHANNEL]
        points, sweep_index, stamps = load_sweeps(self.nusc, lidar_token, self.num_sweeps)
        ego_from_sensor, global_from_ego = sample_data_pose(self.nusc, lidar_token)
        cameras = {channel: camera_frame(self.nusc, sample['data'][channel])
                   for channel in CAMERA_CHANNELS if channel in sample['data']}
        labels = read_lidarseg16(self.nusc, lidar_token, self._label_table)
        num_points = int(np.count_nonzero(sweep_index == 0))
        if labels is not None and len(labels) != num_points:
            raise ValueError(f'lidarseg labels of LiDAR sample_data {lidar_token}: '
                             f'{len(labels)} labels for {num_points} points')
        return Keyframe(
            sample_token=sample_token, scene_name=scene, timestamp_us=int(sample['timestamp']),
            lidar_token=lidar_token,
            lidar_path=Path(self.nusc.get_sample_data_path(lidar_token)),
            points=_readonly(points), sweep_index=_readonly(sweep_index),
            sweep_timestamps_us=stamps, lidar_ego_from_sensor=_readonly(ego_from_sensor),
            lidar_global_from_ego=_readonly(global_from_ego), cameras=cameras, lidarseg=labels)
