"""A nuImages-format export of the synthetic world: its keyframe camera images with 2D labels.

The synthetic nuScenes world (:mod:`cns_ros.data.synthetic`) renders, for every keyframe
camera image, a semantic and an instance ground-truth PNG (``synthetic_gt/``). This module
writes some of those images as a nuImages dataset that nuscenes-devkit's
``NuImages(version=..., dataroot=...)`` loads, annotated the way nuImages annotates::

    <version>/attribute.json calibrated_sensor.json category.json ego_pose.json log.json
              object_ann.json sample.json sample_data.json sensor.json surface_ann.json
    samples/<CHANNEL>/<image>.jpg     the world's JPEG files, byte for byte

- one ``sample`` per image (its ``key_camera_token``; ``key_lidar_token`` is '' since no LiDAR
  is exported), one keyframe ``sample_data`` (same token, file name, size, timestamp,
  calibrated sensor and ego pose as in the world; no prev / next sweeps);
- ``object_ann``: one per (instance, category) of the instance PNG whose lidarseg category is a
  nuImages object category (:data:`cns_ros.data.nuimages.OBJECT_CATEGORIES`): its mask, the
  box of its visible pixels as ``bbox`` (nuImages boxes are amodal; the world's are not), no
  attributes; object-category pixels outside any instance form one annotation per category;
- ``surface_ann``: one per image and surface category present (``flat.driveable_surface``,
  ``vehicle.ego``);
- every other pixel (sidewalk, terrain, buildings, vegetation, sky, ...) is unannotated, as in
  nuImages.

Masks are pycocotools RLE in base64 (:func:`cns_ros.data.nuimages.encode_mask`). Tables hold the
25 nuImages categories, the nuScenes attributes plus nuImages' four, and the calibrated
sensors (zero distortion), ego poses (rotation rate, acceleration and speed not simulated:
zeros and g), sensors and logs of the exported images. Tokens are hashes: the same world and
selection give byte-identical files.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cns_ros.data import synthetic_tables as tables
from cns_ros.data.nuimages import NUIMAGES_CATEGORIES, OBJECT_CATEGORIES, SURFACE_CATEGORIES
from cns_ros.data.nuimages import encode_mask as _encode
from cns_ros.data.synthetic import DatasetExistsError
from cns_ros.vocabulary import LIDARSEG32_NAMES

__all__ = ['NUIMAGES_TABLES', 'NuImagesExportSummary', 'export_synthetic_nuimages']

#: The ten tables nuscenes-devkit's NuImages loads.
NUIMAGES_TABLES: tuple[str, ...] = ('attribute', 'calibrated_sensor', 'category', 'ego_pose',
                                    'log', 'object_ann', 'sample', 'sample_data', 'sensor',
                                    'surface_ann')
#: The attributes nuImages adds to nuScenes' (devkit docs/instructions_nuimages.md).
EXTRA_ATTRIBUTES: tuple[str, ...] = (
    'vehicle_light.emergency.flashing', 'vehicle_light.emergency.not_flashing',
    'vertical_position.off_ground', 'vertical_position.on_ground')
_GRAVITY = 9.81


@dataclass(frozen=True)
class NuImagesExportSummary:
    """What :func:`export_synthetic_nuimages` wrote (counts of records)."""

    dataroot: str
    version: str
    images: int
    object_anns: int
    surface_anns: int


def _token(*keys: object) -> str:
    return tables.make_token('nuimages', *keys)


def _read_tables(world: Path, version: str) -> dict[str, dict[str, dict]]:
    """The world's tables needed here, each as token -> record."""
    out = {}
    for name in ('sample', 'scene', 'sample_data', 'calibrated_sensor', 'sensor', 'ego_pose',
                 'log'):
        path = world / version / f'{name}.json'
        if not path.is_file():
            raise FileNotFoundError(f'synthetic world table not found: {path}')
        out[name] = {r['token']: r for r in json.loads(path.read_text(encoding='utf-8'))}
    return out


def _read_ground_truth(world: Path, token: str) -> tuple[np.ndarray, np.ndarray]:
    """(semantic32 uint8 (H, W), instance uint16 (H, W)) of a keyframe camera image."""
    from cns_ros.teachers.simulated import SyntheticGroundTruth

    gt = SyntheticGroundTruth(world).load(token)
    return gt.semantic32, gt.instance


def image_annotations(semantic32: np.ndarray, instance: np.ndarray
                      ) -> tuple[list[tuple[str, np.ndarray]], list[tuple[str, np.ndarray]]]:
    """nuImages annotations of one ground-truth image (module docstring).

    Args:
        semantic32: uint8 (H, W) lidarseg-32 index per pixel.
        instance: uint16 (H, W) instance id per pixel (0 = none).

    Returns:
        (objects, surfaces): lists of (nuImages category name, bool (H, W) mask); objects in
        (instance, category) order, surfaces in :data:`SURFACE_CATEGORIES` order.
    """
    objects = []
    names = np.array(LIDARSEG32_NAMES)
    is_object = np.isin(names[semantic32], OBJECT_CATEGORIES)
    keys = instance.astype(np.int64) * 256 + semantic32
    for key in np.unique(keys[is_object]).tolist():
        mask = (keys == key) & is_object
        objects.append((LIDARSEG32_NAMES[key % 256], mask))
    surfaces = [(name, semantic32 == LIDARSEG32_NAMES.index(name)) for name in SURFACE_CATEGORIES]
    return objects, [(name, mask) for name, mask in surfaces if mask.any()]


def _bbox(mask: np.ndarray) -> list[int]:
    """[xmin, ymin, xmax, ymax] pixel box of a non-empty mask (inclusive corners)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return [int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])]


class _Writer:
    """Collects the nuImages records of the exported images."""

    def __init__(self, world: Path, version: str) -> None:
        self.world, self.src = world, _read_tables(world, version)
        self.records: dict[str, list[dict]] = {name: [] for name in NUIMAGES_TABLES}
        self.category = {name: _token('category', name) for name in NUIMAGES_CATEGORIES}
        self.records['category'] = [
            {'token': self.category[n], 'name': n,
             'description': f'nuImages category {n} (synthetic world)'}
            for n in NUIMAGES_CATEGORIES]
        attributes = [*tables.ATTRIBUTES, *EXTRA_ATTRIBUTES]
        self.records['attribute'] = [{'token': _token('attribute', n), 'name': n,
                                      'description': f'nuImages attribute {n}.'}
                                     for n in attributes]
        self._seen: set[tuple[str, str]] = set()

    def _once(self, table: str, record: dict) -> None:
        if (table, record['token']) not in self._seen:
            self._seen.add((table, record['token']))
            self.records[table].append(record)

    def image(self, entry: dict[str, Any]) -> None:
        """Add one keyframe camera image (an entry of synthetic_gt/index.json)."""
        sd = self.src['sample_data'][entry['sample_data_token']]
        calib = self.src['calibrated_sensor'][sd['calibrated_sensor_token']]
        pose = self.src['ego_pose'][sd['ego_pose_token']]
        scene = self.src['scene'][self.src['sample'][sd['sample_token']]['scene_token']]
        log = self.src['log'][scene['log_token']]
        sample_token = _token('sample', sd['token'])
        self._once('calibrated_sensor', {**calib, 'camera_distortion': [0.0] * 5})
        self._once('sensor', self.src['sensor'][calib['sensor_token']])
        self._once('log', {k: log[k] for k in ('token', 'logfile', 'vehicle', 'date_captured',
                                                 'location')})
        self._once('ego_pose', {**pose, 'rotation_rate': [0.0, 0.0, 0.0],
                                'acceleration': [0.0, 0.0, _GRAVITY], 'speed': 0.0})
        self.records['sample'].append({
            'token': sample_token, 'timestamp': sd['timestamp'], 'log_token': log['token'],
            'key_camera_token': sd['token'], 'key_lidar_token': ''})
        self.records['sample_data'].append({
            'token': sd['token'], 'sample_token': sample_token,
            'ego_pose_token': sd['ego_pose_token'],
            'calibrated_sensor_token': sd['calibrated_sensor_token'],
            'filename': sd['filename'], 'fileformat': 'jpg', 'width': sd['width'],
            'height': sd['height'], 'timestamp': sd['timestamp'], 'is_key_frame': True,
            'prev': '', 'next': ''})
        self._annotations(sd['token'], *_read_ground_truth(self.world, sd['token']))

    def _annotations(self, sd_token: str, semantic32: np.ndarray, instance: np.ndarray) -> None:
        objects, surfaces = image_annotations(semantic32, instance)
        for k, (name, mask) in enumerate(objects):
            self.records['object_ann'].append({
                'token': _token('object_ann', sd_token, k), 'sample_data_token': sd_token,
                'category_token': self.category[name], 'attribute_tokens': [],
                'bbox': _bbox(mask), 'mask': _encode(mask)})
        for name, mask in surfaces:
            self.records['surface_ann'].append({
                'token': _token('surface_ann', sd_token, name), 'sample_data_token': sd_token,
                'category_token': self.category[name], 'mask': _encode(mask)})

    def write(self, out: Path, version: str) -> None:
        """Write the tables and copy the images below ``out``."""
        (out / version).mkdir(parents=True, exist_ok=True)
        for name, records in self.records.items():
            tables.write_bytes(out / version / f'{name}.json',
                               json.dumps(records, indent=0).encode('utf-8'))
        for sd in self.records['sample_data']:
            target = out / sd['filename']
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.world / sd['filename'], target)


def _select(world: Path, channels: Sequence[str] | None, scenes: Sequence[str] | None,
            limit: int | None) -> list[dict[str, Any]]:
    from cns_ros.teachers.simulated import SyntheticGroundTruth

    images = [e for e in SyntheticGroundTruth(world).index['images']
              if (channels is None or e['channel'] in channels)
              and (scenes is None or e['scene'] in scenes)]
    return images if limit is None else images[:limit]


def export_synthetic_nuimages(world: str | os.PathLike[str], out: str | os.PathLike[str],
                              world_version: str = 'v1.0-mini', version: str = 'v1.0-mini', *,
                              channels: Sequence[str] | None = None,
                              scenes: Sequence[str] | None = None, limit: int | None = None,
                              overwrite: bool = False) -> NuImagesExportSummary:
    """Write the nuImages dataset of the world's keyframe camera images (module docstring).

    Args:
        world: Root of a synthetic world (``make_synthetic``; it has ``synthetic_gt/``).
        out: nuImages root to create (written to a sibling temporary folder, then renamed).
        world_version: The world's nuScenes version folder.
        version: nuImages version folder name to write (a devkit name, e.g. 'v1.0-mini').
        channels, scenes: Only images of these camera channels / scenes (None: all).
        limit: At most this many images (in the world's index order).
        overwrite: Replace an existing non-empty ``out``.

    Raises:
        DatasetExistsError: ``out`` exists, is not empty and ``overwrite`` is False.
        cns_ros.teachers.simulated.NotSyntheticError: ``world`` has no ``synthetic_gt/``.
        ValueError: No image is selected.
    """
    world, out = Path(world), Path(os.path.abspath(out))
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise DatasetExistsError(f'{out} exists and is not empty; pass overwrite=True '
                                 '(--overwrite) to replace it')
    images = _select(world, channels, scenes, limit)
    if not images:
        raise ValueError(f'no keyframe camera image of {world} matches channels={channels}, '
                         f'scenes={scenes}, limit={limit}')
    writer = _Writer(world, world_version)
    for entry in images:
        writer.image(entry)
    tmp = out.with_name(f'{out.name}.tmp-{os.getpid()}')
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        writer.write(tmp, version)
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    counts = {k: len(writer.records[k]) for k in ('object_ann', 'surface_ann')}
    return NuImagesExportSummary(dataroot=str(out), version=version, images=len(images),
                                 object_anns=counts['object_ann'],
                                 surface_anns=counts['surface_ann'])
