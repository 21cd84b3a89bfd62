"""A synthetic driving world written in the exact nuScenes on-disk format (with lidarseg).

``NuScenes(version=config.version, dataroot=...)`` of nuscenes-devkit loads the output
unmodified. Layout under ``dataroot``::

    <version>/*.json            the 13 nuScenes tables + lidarseg.json
    samples/LIDAR_TOP/*.pcd.bin keyframe sweeps: float32 x, y, z, intensity, ring (20 B/point)
    sweeps/LIDAR_TOP/*.pcd.bin  the other sweeps
    samples/CAM_*/*.jpg         keyframe images; sweeps/CAM_*/*.jpg the other images
    lidarseg/<version>/<lidar sample_data token>_lidarseg.bin   uint8 32-class label per point
    maps/<token>.png            semantic-prior map mask (road + sidewalk), 0.1 m per pixel
    synthetic_gt/               ignored by the devkit: per keyframe image a semantic label PNG
                                (uint8, 32-class index, 0 = sky), an instance PNG (uint16,
                                0 = stuff/sky) and a region PNG (uint16 world region id, unique
                                within a scene, 0 = sky; synthetic_regions), named by the camera
                                sample_data token; index.json

Sensors (:mod:`cns_ros.data.synthetic_render`): LIDAR_TOP, a 32-beam spinning LiDAR at
``lidar_hz`` (x right, y forward, z up, on the ego roof), and six cameras at ``camera_hz`` with
nuScenes-like placement and intrinsics scaled from 1600 x 900. A sample (keyframe) is every
``lidar_hz / keyframe_hz``-th sweep; each camera fires when the LiDAR sweeps across its optical
axis, and its frame in the keyframe sweep is the keyframe image. Every sample_data has its own
ego pose (token = sample_data token) at its own timestamp, and is rendered from it.

Content (:mod:`cns_ros.data.synthetic_content`): a straight road with lanes, bike lanes,
parking, sidewalks, terrain strips, buildings, walls, trees, street lights, a work zone, parked
and moving vehicles, cyclists and pedestrians. The same config (seed included) gives
byte-identical files. Output is written to ``<dataroot>.tmp-<pid>`` and renamed when complete.

Modules: this one (config, entry point; re-exports the rig), ``synthetic_rig`` (sensor
placement and clocks), ``synthetic_scene`` (scene model, ground layout, ego motion),
``synthetic_content`` (procedural placement), ``synthetic_render`` (LiDAR and camera models),
``raycast`` (vectorized ray casting), ``synthetic_tables`` (nuScenes records) and
``synthetic_writer`` (rendering loop and files).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cns_ros.data import synthetic_tables as tables
from cns_ros.data.synthetic_render import LidarModel
from cns_ros.data.synthetic_rig import (
    BASE_TIME_US,
    CAMERA_RIG,
    LIDAR_CHANNEL,
    LIDAR_TRANSLATION,
    SCENE_GAP_US,
    SensorSpec,
    sensor_rig,
    sensor_timestamps,
)
from cns_ros.data.synthetic_scene import WorldConfig
from cns_ros.data.synthetic_writer import DatasetWriter
from cns_ros.fileio import replace_folder

__all__ = ['BASE_TIME_US', 'CAMERA_RIG', 'DEFAULT_SCENE_NAMES', 'LIDAR_CHANNEL',
           'LIDAR_TRANSLATION', 'SCENE_GAP_US', 'DatasetExistsError', 'SensorSpec',
           'SyntheticConfig', 'SyntheticSummary', 'WorldConfig', 'generate_synthetic_nuscenes',
           'sensor_rig', 'sensor_timestamps']

#: First scene of ``nuscenes.utils.splits.mini_train`` and of ``mini_val`` (v1.0-mini).
DEFAULT_SCENE_NAMES: tuple[str, ...] = ('scene-0061', 'scene-0103')


@dataclass(frozen=True)
class SyntheticConfig:
    """Settings of :func:`generate_synthetic_nuscenes` (defaults: 2 scenes of 8 s).

    Attributes:
        seed: Seed of all content, noise and tokens.
        version: nuScenes version folder name (a devkit version such as 'v1.0-mini').
        scene_names: Scene names, unique; by default the first mini_train and mini_val scene,
            so the devkit's ``splits`` work on the output.
        scene_duration_s: Time from a scene's first to its last keyframe, seconds.
        lidar_hz: LiDAR sweeps per second (a multiple of ``keyframe_hz``).
        camera_hz: Images per second per camera (a multiple of ``keyframe_hz``).
        keyframe_hz: Samples (keyframes) per second.
        lidar_beams: LiDAR beams (rings).
        lidar_azimuth_steps: Firings per revolution. The HDL-32E of nuScenes has about 1080;
            the default is lower so that the default dataset stays under 50 MB.
        lidar_max_elevation_deg: Elevation of the top beam, degrees (HDL-32E: +10.67).
        lidar_min_elevation_deg: Elevation of the bottom beam, degrees (HDL-32E: -30.67).
        lidar_max_range_m: Farthest LiDAR return, metres.
        lidar_min_range_m: Nearest LiDAR return, metres.
        lidar_range_noise_m: Standard deviation of the LiDAR range noise, metres.
        image_width: Image width, pixels (intrinsics scale with it from 1600).
        image_height: Image height, pixels (intrinsics scale with it from 900).
        jpeg_quality: JPEG quality, 1..100.
        camera_max_depth_m: Farther surfaces render as sky, metres.
        region_cell_m: World grid cell of the stuff regions in ``synthetic_gt/region``, metres
            (:mod:`cns_ros.data.synthetic_regions`).
        world: Procedural content settings.
    """

    seed: int = 0
    version: str = 'v1.0-mini'
    scene_names: tuple[str, ...] = DEFAULT_SCENE_NAMES
    scene_duration_s: float = 8.0
    lidar_hz: int = 20
    camera_hz: int = 12
    keyframe_hz: int = 2
    lidar_beams: int = 32
    lidar_azimuth_steps: int = 180
    lidar_max_elevation_deg: float = 10.67
    lidar_min_elevation_deg: float = -30.67
    lidar_max_range_m: float = 70.0
    lidar_min_range_m: float = 1.0
    lidar_range_noise_m: float = 0.01
    image_width: int = 400
    image_height: int = 225
    jpeg_quality: int = 80
    camera_max_depth_m: float = 300.0
    region_cell_m: float = 8.0
    world: WorldConfig = field(default_factory=WorldConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, 'scene_names', tuple(self.scene_names))
        for name in ('seed', 'lidar_hz', 'camera_hz', 'keyframe_hz', 'lidar_beams',
                     'lidar_azimuth_steps', 'image_width', 'image_height', 'jpeg_quality'):
            value, least = getattr(self, name), 0 if name == 'seed' else 1
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or (
                    value < least):
                raise ValueError(f'{name} must be an integer >= {least}, found {value!r}')
        self._check_names()
        for name in ('lidar_hz', 'camera_hz'):
            if getattr(self, name) % self.keyframe_hz:
                raise ValueError(f'{name} must be a multiple of keyframe_hz={self.keyframe_hz}, '
                                 f'found {getattr(self, name)}')
        if not 0.0 < self.scene_duration_s <= 600.0:
            raise ValueError(f'scene_duration_s must be in (0, 600], found '
                             f'{self.scene_duration_s}')
        if self.jpeg_quality > 100 or self.lidar_beams < 2:
            raise ValueError(f'jpeg_quality must be <= 100 and lidar_beams >= 2, found '
                             f'{self.jpeg_quality} and {self.lidar_beams}')
        if not -90.0 < self.lidar_min_elevation_deg < self.lidar_max_elevation_deg < 90.0:
            raise ValueError('lidar elevations must satisfy -90 < min < max < 90, found '
                             f'{self.lidar_min_elevation_deg}, {self.lidar_max_elevation_deg}')
        if not 0.0 < self.lidar_min_range_m < self.lidar_max_range_m:
            raise ValueError('lidar ranges must satisfy 0 < min < max, found '
                             f'{self.lidar_min_range_m}, {self.lidar_max_range_m}')
        if not self.lidar_range_noise_m >= 0.0 or not self.camera_max_depth_m > 1.0:
            raise ValueError('lidar_range_noise_m must be >= 0 and camera_max_depth_m > 1, '
                             f'found {self.lidar_range_noise_m}, {self.camera_max_depth_m}')
        if not self.region_cell_m >= 1.0:
            raise ValueError(f'region_cell_m must be >= 1 m, found {self.region_cell_m}')

    def _check_names(self) -> None:
        if not self.scene_names or len(set(self.scene_names)) != len(self.scene_names):
            raise ValueError(f'scene_names must be non-empty and unique, found '
                             f'{list(self.scene_names)}')
        for name in (self.version, *self.scene_names):
            if not isinstance(name, str) or not name or '/' in name or name.startswith('.'):
                raise ValueError(f'version and scene names must be plain non-empty names '
                                 f'(no "/"), found {name!r}')

    @property
    def num_samples(self) -> int:
        """Keyframes per scene: one every ``1 / keyframe_hz`` s over the duration, both ends."""
        return int(np.floor(self.scene_duration_s * self.keyframe_hz + 1e-9)) + 1

    def lidar_model(self) -> LidarModel:
        """The LiDAR of this config."""
        return LidarModel(self.lidar_beams, self.lidar_azimuth_steps,
                          self.lidar_max_elevation_deg, self.lidar_min_elevation_deg,
                          self.lidar_max_range_m, self.lidar_min_range_m,
                          self.lidar_range_noise_m)


@dataclass(frozen=True)
class SyntheticSummary:
    """What :func:`generate_synthetic_nuscenes` wrote.

    Attributes:
        dataroot: The dataset root.
        version: The version folder.
        scenes: Number of scenes.
        samples: Number of samples (keyframes).
        sample_data: Number of sample_data records per channel (keyframes and sweeps).
        lidarseg_files: Number of lidarseg label files.
        gt_images: Number of semantic (= number of instance) ground-truth images.
        lidar_points: Total LiDAR points over all sweeps.
        annotations: Number of sample_annotation records.
        bytes: Total size of the dataset on disk.
        seconds: Wall-clock generation time.
    """

    dataroot: str
    version: str
    scenes: int
    samples: int
    sample_data: dict[str, int]
    lidarseg_files: int
    gt_images: int
    lidar_points: int
    annotations: int
    bytes: int
    seconds: float


def generate_synthetic_nuscenes(dataroot: str | os.PathLike[str],
                                config: SyntheticConfig | None = None, *,
                                overwrite: bool = False, progress: bool = False,
                                workers: int = 1) -> SyntheticSummary:
    """Generate the synthetic nuScenes dataset (layout in the module docstring).

    Args:
        dataroot: Output folder (the devkit's ``dataroot``). Created with its parents.
        config: Settings; ``SyntheticConfig()`` when None.
        overwrite: Replace an existing non-empty ``dataroot`` (only once the new one is
            complete).
        progress: Show a tqdm progress bar over rendered sensor frames.
        workers: Processes that render scenes in parallel (the output is the same for any
            number; 1 renders in this process).

    Returns:
        A :class:`SyntheticSummary`.

    Raises:
        DatasetExistsError: ``dataroot`` is a file, or a non-empty folder and not ``overwrite``.
        ValueError: Invalid config.
    """
    config = SyntheticConfig() if config is None else config
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f'workers must be an integer >= 1, found {workers!r}')
    start = time.perf_counter()
    root = Path(os.path.abspath(dataroot))
    check_dataroot(root, overwrite)
    tmp = root.with_name(f'{root.name}.tmp-{os.getpid()}')
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        counts = DatasetWriter(tmp, config, sensor_rig(config)).write_all(progress, workers)
        replace_folder(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SyntheticSummary(dataroot=str(root), version=config.version,
                            bytes=tables.folder_bytes(root),
                            seconds=time.perf_counter() - start, **counts)


class DatasetExistsError(FileExistsError, ValueError):
    """The output dataroot exists (and is not empty) and overwriting was not asked for."""


def check_dataroot(root: Path, overwrite: bool) -> None:
    """Raises :class:`DatasetExistsError` when ``root`` is a file, or a non-empty folder and
    not ``overwrite``."""
    if root.exists() and not root.is_dir():
        raise DatasetExistsError(f'dataroot {root} exists and is not a folder')
    if root.is_dir() and any(root.iterdir()) and not overwrite:
        raise DatasetExistsError(f'dataroot {root} exists and is not empty; pass overwrite=True '
                                 '(--overwrite) to replace it')
