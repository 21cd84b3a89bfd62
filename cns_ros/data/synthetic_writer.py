"""Renders the scenes of a :class:`~cns_ros.data.synthetic.SyntheticConfig` and writes every
nuScenes file (tables, sweeps, images, lidarseg, map masks) plus ``synthetic_gt/``.

Used by :func:`cns_ros.data.synthetic.generate_synthetic_nuscenes`, which owns the atomic
temporary-folder handling; this module only writes below the folder it is given.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cns_ros.data import synthetic_tables as tables
from cns_ros.data.synthetic_content import build_scene
from cns_ros.data.synthetic_regions import RegionIndex, region_keys
from cns_ros.data.synthetic_render import camera_rays, render_camera, render_lidar
from cns_ros.data.synthetic_rig import BASE_TIME_US, SCENE_GAP_US, sensor_timestamps
from cns_ros.data.synthetic_scene import SyntheticScene
from cns_ros.geometry import make_transform
from cns_ros.vocabulary import LIDARSEG32_NAMES

if TYPE_CHECKING:
    from cns_ros.data.synthetic import SyntheticConfig
    from cns_ros.data.synthetic_rig import SensorSpec

TABLE_NAMES: tuple[str, ...] = (
    'attribute', 'calibrated_sensor', 'category', 'ego_pose', 'instance', 'log', 'map',
    'sample', 'sample_annotation', 'sample_data', 'scene', 'sensor', 'visibility')
GT_FOLDER = 'synthetic_gt'


class DatasetWriter:
    """Writes one dataset below ``root`` (see :mod:`cns_ros.data.synthetic` for the layout).

    Scenes are independent: :meth:`write_all` renders them in this process or in worker
    processes (each worker writes its scene's files and returns its records, which are merged
    in scene order, so the output does not depend on the number of workers).
    """

    def __init__(self, root: Path, config: SyntheticConfig, rig: tuple[SensorSpec, ...]) -> None:
        self.root, self.config, self.rig = root, config, rig
        self.tables: dict[str, list[dict]] = {name: [] for name in TABLE_NAMES}
        self.tables['category'] = tables.category_table()
        self.tables['attribute'] = tables.attribute_table()
        self.tables['visibility'] = tables.visibility_table()
        self.tables['sensor'] = tables.sensor_table([(s.channel, s.modality) for s in rig])
        self.lidarseg: list[dict] = []
        self.gt_images: list[dict] = []
        self.instance_index: dict[str, dict[str, Any]] = {}
        self.channel_of: dict[str, int] = {}  # calibrated_sensor token -> rig index
        self.scene_index = 0
        self.regions = RegionIndex()
        self.points = 0
        self.lidar = config.lidar_model()
        self.lidar_rays = self.lidar.ray_grid()
        self.camera_rays = {s.channel: camera_rays(s.intrinsics, config.image_width,
                                                   config.image_height)
                            for s in rig if s.modality == 'camera'}
        self.inv_ray_norm = {c: np.float32(1.0) / np.linalg.norm(r, axis=-1)
                             for c, r in self.camera_rays.items()}

    def token(self, *keys: object) -> str:
        """A token unique to this dataset (seed and version) and ``keys``."""
        return tables.make_token(self.config.seed, self.config.version, *keys)

    def write_all(self, progress: bool = False, workers: int = 1) -> dict[str, Any]:
        """Render and write every scene, then the tables; returns the summary counts.

        Args:
            progress: Show a tqdm bar over sensor frames (per scene with several workers).
            workers: Processes rendering scenes in parallel (1: this process).
        """
        cfg = self.config
        per_scene = sum(len(v) for v in sensor_timestamps(cfg, 0).values())
        bar = progress_bar(per_scene * len(cfg.scene_names), progress, 'synthetic nuScenes')
        try:
            if workers <= 1 or len(cfg.scene_names) == 1:
                for index, name in enumerate(cfg.scene_names):
                    self._scene(index, name, bar)
            else:
                self._parallel(min(workers, len(cfg.scene_names)), bar, per_scene)
        finally:
            bar.close()
        self._write_json()
        channels = [s.channel for s in self.rig]
        per_channel = {c: 0 for c in channels}
        for record in self.tables['sample_data']:
            per_channel[channels[self.channel_of[record['calibrated_sensor_token']]]] += 1
        return dict(scenes=len(cfg.scene_names), samples=len(self.tables['sample']),
                    sample_data=per_channel, lidarseg_files=len(self.lidarseg),
                    gt_images=len(self.gt_images), lidar_points=self.points,
                    annotations=len(self.tables['sample_annotation']))

    def _parallel(self, workers: int, bar: Any, per_scene: int) -> None:
        """Render the scenes in ``workers`` spawned processes; merge in scene order."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        context = multiprocessing.get_context('spawn')
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = [pool.submit(_render_scene, self.root, self.config, self.rig, index, name)
                       for index, name in enumerate(self.config.scene_names)]
            try:
                for future in as_completed(futures):
                    future.result()
                    bar.update(per_scene)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            for future in futures:
                self._merge(future.result())

    def scene_records(self) -> dict[str, Any]:
        """Everything this writer collected (what a worker sends back)."""
        static = ('category', 'attribute', 'visibility', 'sensor')
        return {'tables': {k: v for k, v in self.tables.items() if k not in static},
                'lidarseg': self.lidarseg, 'gt_images': self.gt_images,
                'instance_index': self.instance_index, 'channel_of': self.channel_of,
                'points': self.points}

    def _merge(self, part: dict[str, Any]) -> None:
        for name, records in part['tables'].items():
            self.tables[name].extend(records)
        self.lidarseg.extend(part['lidarseg'])
        self.gt_images.extend(part['gt_images'])
        self.instance_index.update(part['instance_index'])
        self.channel_of.update(part['channel_of'])
        self.points += part['points']

    def _scene(self, index: int, name: str, bar: Any) -> None:
        """All records and files of one scene."""
        cfg = self.config
        self.scene_index, self.regions = index, RegionIndex()
        scene = build_scene(cfg.world, name, cfg.seed, index, cfg.scene_duration_s)
        start_us = BASE_TIME_US + index * SCENE_GAP_US
        log_token = self._log_and_map(scene, name, start_us)
        calib = self._calibrated_sensors(name)
        times = sensor_timestamps(cfg, start_us)
        sample_times = times['LIDAR_TOP'][:: cfg.lidar_hz // cfg.keyframe_hz]
        samples = [{'token': self.token(name, 'sample', m), 'timestamp': int(ts),
                    'prev': '', 'next': '', 'scene_token': self.token(name, 'scene')}
                   for m, ts in enumerate(sample_times)]
        tables.link(samples)
        self.tables['sample'].extend(samples)
        self.tables['scene'].append({
            'token': self.token(name, 'scene'), 'log_token': log_token,
            'nbr_samples': len(samples), 'first_sample_token': samples[0]['token'],
            'last_sample_token': samples[-1]['token'], 'name': name,
            'description': f'Synthetic drive at {scene.ego.speed:.1f} m/s, seed {cfg.seed}.'})
        logfile = self._logfile(name, start_us)
        rows: list[dict] = []
        for spec in self.rig:
            records = self._channel(scene, spec, calib[spec.channel], times[spec.channel],
                                    samples, logfile, start_us, rows, bar)
            tables.link(records)
            self.tables['sample_data'].extend(records)
        self._annotations(scene, rows)

    def _logfile(self, name: str, start_us: int) -> str:
        stamp = time.strftime('%Y-%m-%d-%H-%M-%S', time.gmtime(start_us / 1e6))
        return f'syn{self.config.seed}-{stamp}+0000-{name}'

    def _log_and_map(self, scene: SyntheticScene, name: str, start_us: int) -> str:
        """log and map records, and the map mask PNG; returns the log token."""
        log_token, map_token = self.token(name, 'log'), self.token(name, 'map')
        self.tables['log'].append({
            'token': log_token, 'logfile': self._logfile(name, start_us),
            'vehicle': 'synthetic-ego', 'location': f'synthetic-{name}',
            'date_captured': time.strftime('%Y-%m-%d', time.gmtime(start_us / 1e6))})
        filename = f'maps/{map_token}.png'
        s0, s1 = scene.extent[0], scene.extent[1]
        corners = scene.ground.to_world(np.array([s0, s1, s1, s0]),
                                        np.array([-11.0, -11.0, 11.0, 11.0]))
        tables.write_map_mask(self.root / filename, corners)
        self.tables['map'].append({'token': map_token, 'category': 'semantic_prior',
                                   'filename': filename, 'log_tokens': [log_token]})
        return log_token

    def _calibrated_sensors(self, name: str) -> dict[str, str]:
        """One calibrated_sensor record per channel for this scene; channel -> token."""
        out = {}
        for k, spec in enumerate(self.rig):
            token = self.token(name, 'calibrated_sensor', spec.channel)
            intrinsic = spec.intrinsics.tolist() if spec.modality == 'camera' else []
            self.tables['calibrated_sensor'].append({
                'token': token, 'sensor_token': tables.make_token('sensor', spec.channel),
                'translation': [float(v) for v in spec.translation],
                'rotation': tables.quat_record(spec.q_xyzw), 'camera_intrinsic': intrinsic})
            self.channel_of[token] = k
            out[spec.channel] = token
        return out

    def _ego_pose(self, scene: SyntheticScene, token: str, timestamp: int,
                  start_us: int) -> np.ndarray:
        """Append the ego_pose record of a sample_data; returns global_from_ego (4, 4)."""
        translation, q_xyzw = scene.ego_pose((timestamp - start_us) / 1e6)
        self.tables['ego_pose'].append({
            'token': token, 'timestamp': int(timestamp),
            'rotation': tables.quat_record(q_xyzw),
            'translation': [float(v) for v in translation]})
        return make_transform(q_xyzw, translation)

    def _channel(self, scene: SyntheticScene, spec: SensorSpec, calib_token: str,
                 times: np.ndarray, samples: list[dict], logfile: str, start_us: int,
                 rows: list[dict], bar: Any) -> list[dict]:
        """Render and write every frame of one channel; returns its sample_data records."""
        cfg = self.config
        sample_times = np.array([s['timestamp'] for s in samples])
        per_sample = (cfg.lidar_hz if spec.modality == 'lidar' else cfg.camera_hz) // (
            cfg.keyframe_hz)
        ext = 'pcd.bin' if spec.modality == 'lidar' else 'jpg'
        records = []
        for k, ts in enumerate(times.tolist()):
            key = k % per_sample == 0
            sample = samples[k // per_sample] if key else samples[
                int(np.argmin(np.abs(sample_times - ts)))]
            token = self.token(scene.name, spec.channel, k)
            filename = (f'{"samples" if key else "sweeps"}/{spec.channel}/'
                        f'{logfile}__{spec.channel}__{ts}.{ext}')
            pose = self._ego_pose(scene, token, ts, start_us) @ spec.ego_from_sensor
            t = (ts - start_us) / 1e6
            if spec.modality == 'lidar':
                self._lidar_frame(scene, t, pose, filename, token, key, sample, rows, k)
                size = (0, 0)
            else:
                self._camera_frame(scene, t, pose, spec, filename, token, key, sample)
                size = (cfg.image_width, cfg.image_height)
            records.append(tables.sample_data_record(token, sample['token'], calib_token, ts,
                                                     filename, key, size))
            bar.update(1)
        return records

    def _lidar_frame(self, scene: SyntheticScene, t: float, pose: np.ndarray, filename: str,
                     token: str, key: bool, sample: dict, rows: list[dict], k: int) -> None:
        rng = np.random.default_rng([self.config.seed, self.scene_index, 1, k])
        sweep = render_lidar(scene, t, pose, self.lidar, self.lidar_rays, rng)
        tables.write_bytes(self.root / filename, sweep.points.astype('<f4').tobytes())
        self.points += int(sweep.points.shape[0])
        if not key:
            return
        label_file = f'lidarseg/{self.config.version}/{token}_lidarseg.bin'
        tables.write_bytes(self.root / label_file, sweep.labels.astype(np.uint8).tobytes())
        self.lidarseg.append({'token': token, 'sample_data_token': token,
                              'filename': label_file})
        counts = np.bincount(sweep.instance, minlength=sweep.unoccluded.shape[0])
        centers = scene.objects_at(t)
        for obj in np.flatnonzero(scene.object_instance > 0).tolist():
            iid = int(scene.object_instance[obj])
            if iid >= counts.shape[0] or counts[iid] == 0:
                continue
            yaw = scene.object_yaw[obj]
            rows.append({
                'token': self.token(scene.name, 'annotation', sample['token'], iid),
                'sample_token': sample['token'], 'instance_id': iid,
                'category': LIDARSEG32_NAMES[scene.object_label[obj]],
                'attribute': scene.object_attribute[obj], 'translation': centers[obj],
                'size_lwh': scene.object_size[obj],
                'q_xyzw': np.array([0.0, 0.0, np.sin(yaw / 2), np.cos(yaw / 2)]),
                'num_lidar_pts': int(counts[iid]),
                'visible': float(counts[iid]) / max(float(sweep.unoccluded[iid]), 1.0)})

    def _camera_frame(self, scene: SyntheticScene, t: float, pose: np.ndarray,
                      spec: SensorSpec, filename: str, token: str, key: bool,
                      sample: dict) -> None:
        import cv2

        frame = render_camera(scene, t, pose, self.camera_rays[spec.channel], spec.intrinsics,
                              self.config.camera_max_depth_m, self.inv_ray_norm[spec.channel])
        ok, jpg = cv2.imencode('.jpg', np.ascontiguousarray(frame.rgb[..., ::-1]),
                               [cv2.IMWRITE_JPEG_QUALITY, self.config.jpeg_quality])
        if not ok:
            raise ValueError(f'could not encode {filename}')
        tables.write_bytes(self.root / filename, jpg.tobytes())
        if not key:
            return
        keys = region_keys(frame.labels, frame.box, frame.paint, frame.points,
                           scene.parts.instance > 0, self.config.region_cell_m)
        region = self.regions.ids(keys)
        for kind, image in (('semantic', frame.labels), ('instance', frame.instance),
                            ('region', region)):
            ok, png = cv2.imencode('.png', image, [cv2.IMWRITE_PNG_COMPRESSION, 6])
            if not ok:
                raise ValueError(f'could not encode the {kind} image of {filename}')
            tables.write_bytes(self.root / GT_FOLDER / kind / f'{token}.png', png.tobytes())
        self.gt_images.append({'sample_data_token': token, 'sample_token': sample['token'],
                               'channel': spec.channel, 'scene': scene.name,
                               'image': filename,
                               'semantic': f'{GT_FOLDER}/semantic/{token}.png',
                               'instance': f'{GT_FOLDER}/instance/{token}.png',
                               'region': f'{GT_FOLDER}/region/{token}.png'})

    def _annotations(self, scene: SyntheticScene, rows: list[dict]) -> None:
        """instance + sample_annotation records, and the scene's entry of the GT index."""
        categories = {c['name']: c['token'] for c in self.tables['category']}
        attributes = {a['name']: a['token'] for a in self.tables['attribute']}
        ids = sorted({r['instance_id'] for r in rows})
        instance_tokens = {i: self.token(scene.name, 'instance', i) for i in ids}
        for row in rows:
            row['category_token'] = categories[row['category']]
            row['attribute_token'] = attributes.get(row['attribute'], '')
            row['visibility'] = tables.visibility_token(min(row['visible'], 1.0))
        annotations, instances = tables.annotation_records(instance_tokens, rows)
        self.tables['sample_annotation'].extend(annotations)
        self.tables['instance'].extend(instances)
        index = {}
        for obj in np.flatnonzero(scene.object_instance > 0).tolist():
            iid = int(scene.object_instance[obj])
            index[str(iid)] = {'category': LIDARSEG32_NAMES[scene.object_label[obj]],
                               'instance_token': instance_tokens.get(iid)}
        self.instance_index[scene.name] = index

    def _write_json(self) -> None:
        folder = self.root / self.config.version
        for name, records in {**self.tables, 'lidarseg': self.lidarseg}.items():
            tables.write_bytes(folder / f'{name}.json',
                               json.dumps(records, indent=0).encode('utf-8'))
        if not self.lidarseg:
            (self.root / 'lidarseg' / self.config.version).mkdir(parents=True, exist_ok=True)
        index = {
            'description': 'Ground truth of the synthetic world for simulated 2D teachers. '
                           'One semantic, one instance and one region PNG per keyframe camera '
                           'image.',
            'version': self.config.version, 'seed': self.config.seed,
            'semantic': {'path': f'{GT_FOLDER}/semantic/<camera sample_data token>.png',
                         'dtype': 'uint8', 'meaning': 'nuScenes-lidarseg 32-class index '
                         '(category.json index, names below); 0 = sky / nothing'},
            'instance': {'path': f'{GT_FOLDER}/instance/<camera sample_data token>.png',
                         'dtype': 'uint16', 'meaning': 'instance id, unique within a scene '
                         '(see instances); 0 = stuff / sky'},
            'region': {'path': f'{GT_FOLDER}/region/<camera sample_data token>.png',
                       'dtype': 'uint16', 'cell_m': self.config.region_cell_m,
                       'meaning': 'world region id, unique within a scene, the same in every '
                       'image of it: ground = (class, paint, world cell), stuff box = (part, '
                       'world cell), thing box = part; 0 = sky (cns_ros/data/'
                       'synthetic_regions.py)'},
            'classes': list(LIDARSEG32_NAMES), 'images': self.gt_images,
            'instances': self.instance_index}
        tables.write_bytes(self.root / GT_FOLDER / 'index.json',
                           json.dumps(index, indent=1).encode('utf-8'))


def _render_scene(root: Path, config: SyntheticConfig, rig: tuple[SensorSpec, ...],
                  index: int, name: str) -> dict[str, Any]:
    """Worker-process entry: write one scene's files and return its records."""
    writer = DatasetWriter(root, config, rig)
    writer._scene(index, name, _NoBar())
    return writer.scene_records()


class _NoBar:
    def update(self, n: int) -> None:
        del n

    def close(self) -> None:
        pass


def progress_bar(total: int, enabled: bool, desc: str) -> Any:
    """A tqdm bar over ``total`` frames, or an object with the same ``update`` / ``close``
    that shows nothing."""
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit='frame', desc=desc)
