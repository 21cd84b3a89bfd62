"""Renders the scenes of an :class:`~cns_ros.data.synthetic_indoor.IndoorConfig` and writes
every file of the ScanNet layout plus ``synthetic_gt/`` (layout: :mod:`.synthetic_indoor`).

Used by :func:`cns_ros.data.synthetic_indoor.generate_synthetic_indoor`, which owns the
temporary-folder handling; this module only writes below the folder it is given.

Label sources, all from the same boxes: mesh vertex labels = nyu40 of the box a vertex lies
on; 25k label / instance PNGs and ``synthetic_gt`` = nyu40 / object of the box a pixel ray
hits. 25k instance = ``nyu40 * 1000 + objectId + 1`` (``objectId`` of ``aggregation.json``);
``synthetic_gt`` instance = ``objectId + 1`` for things, 0 for wall, floor and ceiling;
region = box (part) index + 1: one world region per wall plane, floor, ceiling and per part of
every object, the same in every image of the scene.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cns_ros.data.scannet_labels import NYU40_NAMES
from cns_ros.data.scannet_writer import (
    write_label_tsv,
    write_matrix,
    write_meta,
    write_ply,
    write_split,
)
from cns_ros.data.synthetic_indoor_camera import camera_path
from cns_ros.data.synthetic_indoor_catalog import ROOM_KINDS, label_palette, label_rows
from cns_ros.data.synthetic_indoor_mesh import IndoorMesh, sample_mesh
from cns_ros.data.synthetic_indoor_render import (
    DEPTH_SIZE,
    IndoorView,
    depth_intrinsics,
    render_view,
    scaled_intrinsics,
)
from cns_ros.data.synthetic_indoor_scene import IndoorScene, build_scene
from cns_ros.data.synthetic_render import camera_rays
from cns_ros.data.synthetic_writer import progress_bar
from cns_ros.fileio import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    from cns_ros.data.synthetic_indoor import IndoorConfig

GT_FOLDER = 'synthetic_gt'
FRAMES_25K = 'scannet_frames_25k'
PROVENANCE = 'synthetic_indoor.json'


def _encode(ext: str, image: np.ndarray, params: list[int]) -> bytes:
    import cv2

    ok, data = cv2.imencode(ext, image, params)
    if not ok:
        raise ValueError(f'could not encode a {ext} image of shape {image.shape}')
    return data.tobytes()


def _histogram(labels: np.ndarray) -> dict[int, int]:
    values, counts = np.unique(labels, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts, strict=True)}


def _k4(k: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = k
    return out


class IndoorWriter:
    """Writes one world below ``root`` (see :mod:`cns_ros.data.synthetic_indoor`)."""

    def __init__(self, root: Path, config: IndoorConfig) -> None:
        self.root, self.config = root, config
        self.depth_k = depth_intrinsics()
        self.color_k = scaled_intrinsics(self.depth_k, DEPTH_SIZE, config.color_size)
        self.depth_rays = camera_rays(self.depth_k, *DEPTH_SIZE)
        self.same_camera = tuple(config.color_size) == DEPTH_SIZE
        self.color_rays = self.depth_rays if self.same_camera else camera_rays(
            self.color_k, *config.color_size)
        self.gt_images: list[dict[str, str]] = []
        self.instances: dict[str, dict[str, dict[str, Any]]] = {}
        self.vertex_counts: Counter[int] = Counter()
        self.pixel_counts: Counter[int] = Counter()
        self.object_counts: Counter[str] = Counter()
        self.records: list[dict[str, Any]] = []

    @property
    def lost_index(self) -> int:
        """Path frame index of the lost frame (-1: none): the second 25k frame."""
        cfg = self.config
        return min(1, cfg.frames_25k - 1) * cfg.stride_25k if cfg.lost_frame else -1

    def write_all(self, progress: bool = False) -> dict[str, Any]:
        """Render and write every scene, then the shared files; returns the summary counts."""
        scenes = self.config.scenes()
        bar = progress_bar(len(scenes) * self.config.path_frames, progress, 'synthetic indoor')
        try:
            for index, (split, name, kind) in enumerate(scenes):
                self._scene(index, split, name, kind, bar)
        finally:
            bar.close()
        self._shared_files()
        split_names = {s: [n for split, n, _ in scenes if split == s] for s in ('train', 'val')}
        return dict(scenes=split_names, path_frames=len(scenes) * self.config.path_frames,
                    frames_25k=len(self.gt_images),
                    vertices=sum(r['vertices'] for r in self.records),
                    vertex_counts=dict(sorted(self.vertex_counts.items())),
                    pixel_counts=dict(sorted(self.pixel_counts.items())))

    def _scene(self, index: int, split: str, name: str, kind: str, bar: Any) -> None:
        cfg = self.config
        scene = build_scene(name, kind, cfg.seed, index)
        mesh = sample_mesh(scene, cfg.mesh_spacing_m, cfg.shell_spacing_m)
        folder = self.root / 'scans' / name
        self._mesh_files(scene, mesh, folder)
        poses = camera_path(scene, cfg.path_frames, np.random.default_rng([cfg.seed, index, 7]))
        self._meta(scene, folder)
        for j, pose in enumerate(poses):
            self._frame(scene, j, pose)
            bar.update(1)
        self.records.append({'split': split, 'scene': name, 'kind': kind,
                             'vertices': int(mesh.xyz.shape[0]),
                             'faces': int(mesh.faces.shape[0]), 'objects': len(scene.objects),
                             'boxes': len(scene.boxes), 'room_size_m': list(scene.size),
                             'lost_frame': self.lost_index * cfg.sens_step
                             if self.lost_index >= 0 else None})

    def _mesh_files(self, scene: IndoorScene, mesh: IndoorMesh, folder: Path) -> None:
        """Both PLY files, segs.json and aggregation.json of a scene."""
        name = scene.name
        label = scene.boxes.label[mesh.part].astype(np.uint16)
        xyz = {axis: mesh.xyz[:, k] for k, axis in enumerate('xyz')}
        alpha = np.full(mesh.xyz.shape[0], 255, dtype=np.uint8)
        photo = {c: mesh.rgb[:, k] for k, c in enumerate(('red', 'green', 'blue'))}
        write_ply(folder / f'{name}_vh_clean_2.ply', {**xyz, **photo, 'alpha': alpha},
                  mesh.faces)
        palette = label_palette()[label]
        classes = {c: palette[:, k] for k, c in enumerate(('red', 'green', 'blue'))}
        write_ply(folder / f'{name}_vh_clean_2.labels.ply',
                  {**xyz, **classes, 'alpha': alpha, 'label': label}, mesh.faces)
        segs_file = f'{name}_vh_clean_2.0.010000.segs.json'
        atomic_write_text(folder / segs_file, json.dumps(
            {'params': {'kThresh': 0.01, 'segMinVerts': 20}, 'sceneId': name,
             'segIndices': mesh.segment.tolist()}, separators=(',', ':')))
        obj = scene.boxes.instance[mesh.part] - 1
        groups = []
        for k, raw in enumerate(scene.objects):
            segments = np.unique(mesh.segment[obj == k])
            if segments.size:
                groups.append({'id': k, 'objectId': k, 'segments': segments.tolist(),
                               'label': raw})
                self.object_counts[raw] += 1
        atomic_write_text(folder / f'{name}.aggregation.json', json.dumps(
            {'sceneId': f'scannet.{name}', 'appId': 'Aggregator.v2',
             'segGroups': groups, 'segmentsFile': f'scannet.{segs_file}'}, indent=1))
        self.vertex_counts.update(_histogram(label))
        self.instances[name] = {str(k + 1): {'category': raw, 'nyu40': int(nyu40)}
                                for k, (raw, nyu40) in enumerate(
                                    zip(scene.objects, scene.object_nyu40(), strict=True))}

    def _meta(self, scene: IndoorScene, folder: Path) -> None:
        """``<scene>.txt`` and the export's intrinsic folder; the 25k intrinsics files."""
        cfg = self.config
        (cw, ch), (dw, dh) = cfg.color_size, DEPTH_SIZE
        ck, dk = self.color_k, self.depth_k
        frames = (cfg.path_frames - 1) * cfg.sens_step + 1
        write_meta(folder / f'{scene.name}.txt', {
            'axisAlignment': scene.room_from_world.reshape(-1), 'colorHeight': ch,
            'colorToDepthExtrinsics': np.eye(4).reshape(-1), 'colorWidth': cw,
            'depthHeight': dh, 'depthWidth': dw, 'fx_color': ck[0, 0], 'fx_depth': dk[0, 0],
            'fy_color': ck[1, 1], 'fy_depth': dk[1, 1], 'mx_color': ck[0, 2],
            'mx_depth': dk[0, 2], 'my_color': ck[1, 2], 'my_depth': dk[1, 2],
            'numColorFrames': frames, 'numDepthFrames': frames, 'numIMUmeasurements': 0,
            'sceneType': ROOM_KINDS[scene.kind]})
        write_matrix(folder / 'intrinsic' / 'intrinsic_color.txt', _k4(ck))
        write_matrix(folder / 'intrinsic' / 'intrinsic_depth.txt', _k4(dk))
        write_matrix(folder / 'intrinsic' / 'extrinsic_color.txt', np.eye(4))
        write_matrix(folder / 'intrinsic' / 'extrinsic_depth.txt', np.eye(4))
        frames_folder = self.root / FRAMES_25K / scene.name
        write_matrix(frames_folder / 'intrinsics_color.txt', _k4(ck))
        write_matrix(frames_folder / 'intrinsics_depth.txt', _k4(dk))

    def _frame(self, scene: IndoorScene, j: int, pose: np.ndarray) -> None:
        """One path frame: export files, and the 25k files every ``stride_25k`` frames."""
        import cv2

        cfg = self.config
        index = j * cfg.sens_step
        depth = render_view(scene, pose, self.depth_k, DEPTH_SIZE, self.depth_rays)
        color = depth if self.same_camera else render_view(scene, pose, self.color_k,
                                                           cfg.color_size, self.color_rays)
        jpg = _encode('.jpg', np.ascontiguousarray(color.rgb[..., ::-1]),
                      [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality])
        png = _encode('.png', depth.depth_mm(), [cv2.IMWRITE_PNG_COMPRESSION,
                                                 cfg.png_compression])
        lost = j == self.lost_index
        written = np.full((4, 4), -np.inf) if lost else pose
        folder = self.root / 'scans' / scene.name
        atomic_write_bytes(folder / 'color' / f'{index}.jpg', jpg)
        atomic_write_bytes(folder / 'depth' / f'{index}.png', png)
        write_matrix(folder / 'pose' / f'{index}.txt', written)
        if j % cfg.stride_25k == 0:
            self._frame_25k(scene, index, jpg, png, color, written, lost)

    def _frame_25k(self, scene: IndoorScene, index: int, jpg: bytes, png: bytes,
                   color: IndoorView, pose: np.ndarray, lost: bool) -> None:
        """25k files and synthetic_gt PNGs of one frame (labels at colour resolution)."""
        import cv2

        level = [cv2.IMWRITE_PNG_COMPRESSION, self.config.png_compression]
        hit = color.part >= 0
        part = np.where(hit, color.part, 0)
        nyu40 = np.where(hit, scene.boxes.label[part], 0).astype(np.uint8)
        obj = np.where(hit, scene.boxes.instance[part], 0).astype(np.uint16)
        folder = self.root / FRAMES_25K / scene.name
        name = f'{index:06d}'
        atomic_write_bytes(folder / 'color' / f'{name}.jpg', jpg)
        atomic_write_bytes(folder / 'depth' / f'{name}.png', png)
        write_matrix(folder / 'pose' / f'{name}.txt', pose)
        instance = np.where(hit, nyu40.astype(np.uint16) * 1000 + obj, 0).astype(np.uint16)
        if lost:
            nyu40_png, instance = np.zeros_like(nyu40), np.zeros_like(instance)
        else:
            nyu40_png = nyu40
            self.pixel_counts.update(_histogram(nyu40))
        atomic_write_bytes(folder / 'label' / f'{name}.png', _encode('.png', nyu40_png, level))
        atomic_write_bytes(folder / 'instance' / f'{name}.png', _encode('.png', instance, level))
        token = f'{scene.name}_{name}'
        stuff = scene.object_is_stuff()[np.maximum(obj.astype(np.int64) - 1, 0)]
        gt = {'semantic': nyu40, 'instance': np.where(stuff | ~hit, 0, obj).astype(np.uint16),
              'region': np.where(hit, part + 1, 0).astype(np.uint16)}
        for kind, image in gt.items():
            atomic_write_bytes(self.root / GT_FOLDER / kind / f'{token}.png',
                               _encode('.png', image, level))
        self.gt_images.append({'sample_data_token': token, 'scene': scene.name,
                               'image': f'{FRAMES_25K}/{scene.name}/color/{name}.jpg'})

    def _shared_files(self) -> None:
        """Label table, split files, synthetic_gt/index.json and the provenance file."""
        from dataclasses import asdict

        write_label_tsv(self.root / 'scannetv2-labels.combined.tsv',
                        label_rows(dict(self.object_counts)))
        for split in ('train', 'val', 'test'):
            write_split(self.root / f'scannetv2_{split}.txt',
                        [r['scene'] for r in self.records if r['split'] == split])
        index = {
            'class_space': 'scannet20', 'region': True,
            'description': 'Ground truth of the synthetic indoor world for simulated 2D '
                           'teachers, one semantic, instance and region PNG per 25k frame '
                           '(the lost-pose frame included), at the colour resolution.',
            'seed': self.config.seed,
            'semantic': {'path': f'{GT_FOLDER}/semantic/<token>.png', 'dtype': 'uint8',
                         'meaning': 'nyu40 id (0 = nothing)'},
            'instance_info': {'path': f'{GT_FOLDER}/instance/<token>.png', 'dtype': 'uint16',
                              'meaning': 'objectId + 1 of aggregation.json, unique within a '
                                         'scene; 0 = wall, floor, ceiling (stuff) or nothing'},
            'region_info': {'path': f'{GT_FOLDER}/region/<token>.png', 'dtype': 'uint16',
                            'meaning': 'world region id, unique within a scene, the same in '
                                       'every image: box (part) index + 1, so each wall '
                                       'plane, the floor, the ceiling and each object part '
                                       'is a region; 0 = nothing'},
            'nyu40_names': list(NYU40_NAMES), 'images': self.gt_images,
            'instances': self.instances}
        atomic_write_text(self.root / GT_FOLDER / 'index.json', json.dumps(index, indent=1))
        provenance = {'generator': 'cns_ros.data.synthetic_indoor', 'seed': self.config.seed,
                      'config': asdict(self.config), 'scenes': self.records,
                      'vertex_counts': {NYU40_NAMES[k]: int(v)
                                        for k, v in sorted(self.vertex_counts.items())},
                      'pixel_counts_25k': {NYU40_NAMES[k]: int(v)
                                           for k, v in sorted(self.pixel_counts.items())}}
        atomic_write_text(self.root / PROVENANCE, json.dumps(provenance, indent=1))
