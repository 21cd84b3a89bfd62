"""ScanNet v2 reader: annotated meshes, posed RGB-D frames, scenes of a split.

ROS-free; numpy + OpenCV. Reads real ScanNet v2 and the synthetic indoor world written in the
same layout (``shared/reference/scannet.md`` §1, §2, §2.3, §5, §6)::

    <root>/scannetv2-labels.combined.tsv, scannetv2_{train,val,test}.txt (or Tasks/Benchmark/)
    <root>/scans[_test]/<scene>/<scene>_vh_clean_2.ply, _vh_clean_2.labels.ply, <scene>.txt
    <root>/scans[_test]/<scene>/{color/<i>.jpg, depth/<i>.png, pose/<i>.txt,
                                 intrinsic/intrinsic_{color,depth}.txt}      layout 'export'
    <root>/scannet_frames_{25k,test}/<scene>/{color/%06d.jpg, depth/%06d.png, pose/%06d.txt,
                                 label/%06d.png, instance/%06d.png,
                                 intrinsics_{color,depth}.txt}               layout '25k'

Conventions:

* Mesh vertices and poses share one frame (metres, +Z up, *before* ``axisAlignment``); with
  ``align=True`` the mesh is moved by A (apply A to poses too, ``A @ camera_to_world``).
* ``camera_to_world`` is float64 (4, 4), OpenCV camera (x right, y down, z forward); its last
  column is the camera centre in the world.
* Frames are found from ``pose/`` files, sorted by their **numeric** index (2 before 10), in
  either naming (``7.txt`` or ``000007.txt``; colour/depth use the same stem). A pose that is
  not finite (``-inf``: lost tracking) and a pose without its colour or depth file are skipped
  and counted in :attr:`FrameList.skipped`.
* Intrinsics: ``intrinsics_{color,depth}.txt`` at the scene root (25k) or
  ``intrinsic/intrinsic_{color,depth}.txt`` (export); either naming is accepted in either
  layout. Colour and depth are registered; never apply the extrinsics (§2.2).
* Colour is returned RGB (OpenCV decodes BGR); depth is uint16 mm on disk, returned float32
  metres with 0 = invalid; labels are nyu40 ids mapped to training ids 0..19 (255 = ignore,
  ids > 40 ignored) and resized with nearest neighbour only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from cns_ros.data.scannet_files import (
    LabelTable,
    axis_alignment,
    read_label_tsv,
    read_matrix,
    read_meta,
    read_split,
)
from cns_ros.data.scannet_labels import nyu40_to_train
from cns_ros.data.scannet_ply import ScanNetFormatError, ScanNetNotFoundError, read_ply

__all__ = [
    'DEPTH_SCALE', 'LAYOUTS', 'SKIP_REASONS', 'FrameList', 'LabelTable', 'ScanNetFormatError',
    'ScanNetFrame', 'ScanNetMesh', 'ScanNetNotFoundError', 'ScanNetScenes', 'axis_alignment',
    'list_frames', 'read_label_tsv', 'read_matrix', 'read_mesh', 'read_meta', 'read_ply',
    'read_split']

Layout = Literal['25k', 'export']
#: Frame layouts: the 2D benchmark subset and SensReader-python exports inside ``scans/``.
LAYOUTS: tuple[str, ...] = ('25k', 'export')
#: Depth PNG units per metre (``depthShift``).
DEPTH_SCALE = 1000.0
#: Reasons a listed frame is skipped (keys of :attr:`FrameList.skipped`).
SKIP_REASONS: tuple[str, ...] = ('invalid_pose', 'missing_color', 'missing_depth')
_SCAN_FOLDERS = ('scans', 'scans_test')
_FRAME_FOLDERS = {'25k': ('scannet_frames_25k', 'scannet_frames_test'), 'export': _SCAN_FOLDERS}
_INTRINSICS = {'25k': ('intrinsics_{}.txt', 'intrinsic/intrinsic_{}.txt'),
               'export': ('intrinsic/intrinsic_{}.txt', 'intrinsics_{}.txt')}
_INDEX_NAME = re.compile(r'^(\d+)\.txt$')


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _labels20(nyu40: np.ndarray) -> np.ndarray:
    """nyu40 ids (any unsigned integer dtype, uint16 too) -> uint8 training ids; every id
    above 40 (real files hold 50, 149) -> 255."""
    return nyu40_to_train(np.where(nyu40 > 40, 0, nyu40))


@dataclass(frozen=True, eq=False)
class ScanNetMesh:
    """One scan's annotation mesh (``_vh_clean_2``), vertex-aligned with its labels.

    Attributes:
        scene: Scene id, e.g. 'scene0000_00'.
        xyz: float32 (N, 3) metres, the file frame (aligned by ``axis_alignment`` when read
            with ``align=True``).
        rgb: uint8 (N, 3) photo colours of ``_vh_clean_2.ply``.
        faces: int32 (F, 3) vertex indices.
        nyu40: uint16 (N,) nyu40 ids of ``labels.ply`` (0 = unannotated; real files hold a few
            ids above 40), None when that file is absent (test scans).
        axis_alignment: float64 (4, 4) A of ``<scene>.txt`` (identity when absent).
    """

    scene: str
    xyz: np.ndarray
    rgb: np.ndarray
    faces: np.ndarray
    nyu40: np.ndarray | None
    axis_alignment: np.ndarray

    def labels20(self) -> np.ndarray:
        """uint8 (N,) training ids 0..19 (benchmark order), 255 = ignore (ids > 40 too)."""
        if self.nyu40 is None:
            raise ValueError(f'{self.scene}: no labels.ply was read (test scan, or read with '
                             f'labels=False)')
        return _labels20(self.nyu40)


def _imread(path: Path, flags: int, what: str) -> np.ndarray:
    if not path.is_file():
        raise ScanNetNotFoundError(f'ScanNet {what} image not found: {path}')
    image = cv2.imread(str(path), flags)
    if image is None:
        raise ScanNetFormatError(f'{path}: expected a readable {what} image, found data '
                                 f'OpenCV cannot decode')
    return image


def _check_size(path: Path, image: np.ndarray, size: tuple[int, int], what: str) -> None:
    found = (image.shape[1], image.shape[0])
    if found != size:
        raise ScanNetFormatError(f'{path}: {what} size: expected {size[0]}x{size[1]} (as the '
                                 f'first frame of the scene), found {found[0]}x{found[1]}')


@dataclass(frozen=True, eq=False)
class ScanNetFrame:
    """One posed RGB-D frame.

    Attributes:
        scene: Scene id.
        index: Original ``.sens`` frame index.
        token: ``f'{scene}_{index:06d}'``.
        color_path, depth_path: The colour JPEG and the uint16 depth PNG.
        label_path, instance_path: 25k ``label/`` (nyu40, uint8) and ``instance/`` PNGs, None
            where absent (always None in the export layout).
        camera_to_world: float64 (4, 4), finite; camera (OpenCV axes) -> world, metres.
        color_intrinsics: float64 (3, 3) K at the colour resolution.
        depth_intrinsics: float64 (3, 3) K at the depth resolution.
        color_size, depth_size: (width, height) of the colour / depth images on disk.
    """

    scene: str
    index: int
    token: str
    color_path: Path
    depth_path: Path
    label_path: Path | None
    instance_path: Path | None
    camera_to_world: np.ndarray
    color_intrinsics: np.ndarray
    depth_intrinsics: np.ndarray
    color_size: tuple[int, int]
    depth_size: tuple[int, int]

    def load_color(self) -> np.ndarray:
        """uint8 (H, W, 3) RGB at the colour resolution."""
        image = _imread(self.color_path, cv2.IMREAD_COLOR, 'colour')
        _check_size(self.color_path, image, self.color_size, 'colour')
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

    def load_depth(self) -> np.ndarray:
        """float32 (h, w) depth in metres (uint16 mm / 1000), 0 = invalid."""
        raw = _imread(self.depth_path, cv2.IMREAD_UNCHANGED, 'depth')
        if raw.dtype != np.uint16 or raw.ndim != 2:
            raise ScanNetFormatError(f'{self.depth_path}: depth: expected a single-channel '
                                     f'16-bit PNG (mm), found dtype {raw.dtype} with shape '
                                     f'{raw.shape}')
        _check_size(self.depth_path, raw, self.depth_size, 'depth')
        return raw.astype(np.float32) / np.float32(DEPTH_SCALE)

    def load_label20(self, size: tuple[int, int] = (640, 480)) -> np.ndarray:
        """uint8 (size[1], size[0]) training ids 0..19, 255 = ignore.

        The nyu40 label PNG is mapped (ids > 40 ignored) and resized with nearest neighbour
        sampled at pixel centres (``cv2.INTER_NEAREST_EXACT``, as PIL's NEAREST) to
        ``size`` = (width, height); no value is ever interpolated.
        """
        if self.label_path is None:
            raise ScanNetNotFoundError(f'{self.token}: no label image (the export layout and '
                                       f'test frames have none)')
        raw = _imread(self.label_path, cv2.IMREAD_UNCHANGED, 'label')
        if raw.ndim != 2 or raw.dtype.kind != 'u':
            raise ScanNetFormatError(f'{self.label_path}: label: expected a single-channel '
                                     f'unsigned PNG of nyu40 ids, found dtype {raw.dtype} '
                                     f'with shape {raw.shape}')
        labels = _labels20(raw)
        if (labels.shape[1], labels.shape[0]) != tuple(size):
            labels = cv2.resize(labels, tuple(size), interpolation=cv2.INTER_NEAREST_EXACT)
        return labels


@dataclass(frozen=True)
class FrameList:
    """The usable frames of a scene, numeric index order, and what was skipped.

    Attributes:
        frames: The frames.
        skipped: reason -> count over the listed poses, every key of :data:`SKIP_REASONS`.
    """

    frames: tuple[ScanNetFrame, ...]
    skipped: dict[str, int]


def _scene_dir(root: str | os.PathLike[str], scene: str, folders: Sequence[str],
               what: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise ScanNetNotFoundError(f'ScanNet root not found: {root}')
    candidates = [root / folder / scene for folder in folders]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise ScanNetNotFoundError(f'ScanNet {what} of {scene!r} not found: looked for '
                               f'{", ".join(str(c) for c in candidates)}')


def _vertex_column(path: Path, vertex: dict[str, np.ndarray], name: str, kind: str) -> np.ndarray:
    if name not in vertex:
        raise ScanNetFormatError(f'{path}: element "vertex": expected a property {name!r}, '
                                 f'found {list(vertex)}')
    column = vertex[name]
    if column.dtype.kind not in kind:
        raise ScanNetFormatError(f'{path}: vertex property {name!r}: expected type kind '
                                 f'{kind!r} (f = float, iu = integer), found {column.dtype}')
    return column


def _vertex_colours(path: Path, vertex: dict[str, np.ndarray]) -> np.ndarray:
    rgb = np.stack([_vertex_column(path, vertex, c, 'iu') for c in ('red', 'green', 'blue')], 1)
    if rgb.size and (rgb.min() < 0 or rgb.max() > 255):
        raise ScanNetFormatError(f'{path}: vertex properties red, green, blue: expected values '
                                 f'in 0..255, found {int(rgb.min())}..{int(rgb.max())}')
    return rgb.astype(np.uint8)


def _mesh_labels(path: Path, vertices: int) -> np.ndarray | None:
    """uint16 (N,) nyu40 ids of ``labels.ply``; None when the file is absent."""
    if not path.is_file():
        return None
    vertex, _ = read_ply(path)
    label = _vertex_column(path, vertex, 'label', 'iu')
    if len(label) != vertices:
        raise ScanNetFormatError(f'{path}: vertex count: expected {vertices} (as '
                                 f'{path.name.replace(".labels", "")}), found {len(label)}')
    if label.size and (label.min() < 0 or label.max() > np.iinfo(np.uint16).max):
        raise ScanNetFormatError(f'{path}: vertex property "label": expected nyu40 ids in '
                                 f'0..65535, found {int(label.min())}..{int(label.max())}')
    return label.astype(np.uint16)


def read_mesh(root: str | os.PathLike[str], scene: str, *, labels: bool = True,
              align: bool = False) -> ScanNetMesh:
    """Read ``<root>/scans[_test]/<scene>/<scene>_vh_clean_2[.labels].ply`` and the alignment.

    Args:
        root: The ScanNet root.
        scene: Scene id.
        labels: Read ``labels.ply`` when present (``nyu40`` stays None if absent or False).
        align: Return vertices moved by ``axisAlignment`` (``<scene>.txt`` is then required).

    Raises:
        ScanNetNotFoundError: Root, scan folder, mesh, or (align=True) metadata missing.
        ScanNetFormatError: Malformed PLY, missing vertex properties, labels.ply with another
            vertex count, malformed ``axisAlignment``.
    """
    folder = _scene_dir(root, scene, _SCAN_FOLDERS, 'scan folder')
    mesh_path = folder / f'{scene}_vh_clean_2.ply'
    vertex, faces = read_ply(mesh_path)
    xyz = np.stack([_vertex_column(mesh_path, vertex, c, 'f') for c in 'xyz'], 1)
    xyz = xyz.astype(np.float32)
    nyu40 = _mesh_labels(folder / f'{scene}_vh_clean_2.labels.ply', len(xyz)) if labels else None
    meta_path = folder / f'{scene}.txt'
    matrix = np.eye(4)
    if align or meta_path.is_file():
        matrix = axis_alignment(read_meta(meta_path), source=str(meta_path))
    if align:
        xyz = (xyz.astype(np.float64) @ matrix[:3, :3].T + matrix[:3, 3]).astype(np.float32)
    return ScanNetMesh(scene, _readonly(xyz), _readonly(_vertex_colours(mesh_path, vertex)),
                       _readonly(faces), None if nyu40 is None else _readonly(nyu40),
                       _readonly(matrix))


def _intrinsics(folder: Path, layout: str, camera: str) -> np.ndarray:
    candidates = [folder / name.format(camera) for name in _INTRINSICS[layout]]
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        raise ScanNetNotFoundError(f'ScanNet {camera} intrinsics not found: looked for '
                                   f'{", ".join(str(c) for c in candidates)}')
    k = read_matrix(path)[:3, :3]
    if not (np.isfinite(k).all() and k[0, 0] > 0 and k[1, 1] > 0
            and np.allclose(k[2], (0, 0, 1))):
        raise ScanNetFormatError(f'{path}: intrinsics: expected finite fx, fy > 0 and third '
                                 f'row 0 0 1, found {k.ravel().tolist()}')
    return _readonly(k)


def _pose_files(folder: Path) -> list[tuple[int, str]]:
    """(index, stem) of ``pose/<digits>.txt``, numeric order; other names are ignored."""
    pose_dir = folder / 'pose'
    if not pose_dir.is_dir():
        raise ScanNetNotFoundError(f'ScanNet pose folder not found: {pose_dir}')
    found: dict[int, str] = {}
    for name in os.listdir(pose_dir):
        match = _INDEX_NAME.match(name)
        if not match:
            continue
        index = int(match.group(1))
        if index in found:
            raise ScanNetFormatError(f'{pose_dir}: frame {index}: expected one pose file, found '
                                     f'{found[index]}.txt and {name}')
        found[index] = match.group(1)
    return sorted(found.items())


def _check_pose(path: Path, pose: np.ndarray) -> bool:
    """True for a usable pose, False for a lost one (not finite); error if malformed."""
    if not np.isfinite(pose).all():
        return False
    if not np.allclose(pose[3], (0, 0, 0, 1), atol=1e-6):
        raise ScanNetFormatError(f'{path}: pose: expected a camera-to-world transform with '
                                 f'last row 0 0 0 1, found {pose[3].tolist()}')
    return True


def _usable(folder: Path, stems: list[tuple[int, str]],
            skipped: dict[str, int]) -> list[tuple[int, str, np.ndarray]]:
    usable = []
    for index, stem in stems:
        if not (folder / 'color' / f'{stem}.jpg').is_file():
            skipped['missing_color'] += 1
        elif not (folder / 'depth' / f'{stem}.png').is_file():
            skipped['missing_depth'] += 1
        else:
            path = folder / 'pose' / f'{stem}.txt'
            pose = read_matrix(path)
            if _check_pose(path, pose):
                usable.append((index, stem, _readonly(pose)))
            else:
                skipped['invalid_pose'] += 1
    return usable


def _image_size(path: Path, what: str) -> tuple[int, int]:
    image = _imread(path, cv2.IMREAD_UNCHANGED, what)
    return image.shape[1], image.shape[0]


def _optional(path: Path) -> Path | None:
    return path if path.is_file() else None


def list_frames(root: str | os.PathLike[str], scene: str, layout: Layout = '25k',
                every: int = 1) -> FrameList:
    """The posed RGB-D frames of a scene.

    Args:
        root: The ScanNet root.
        scene: Scene id.
        layout: '25k' (``scannet_frames_{25k,test}/<scene>``) or 'export'
            (``scans[_test]/<scene>``, SensReader-python export).
        every: Keep every ``every``-th pose file of the numeric order (position 0, k, 2k, ...,
            before skipping: as SensReader's ``frame_skip``).

    Returns:
        :class:`FrameList`; image sizes come from the first usable frame's files.

    Raises:
        ValueError: Unknown layout or ``every`` < 1.
        ScanNetNotFoundError: Root, scene folder, ``pose/`` or intrinsics missing.
        ScanNetFormatError: Malformed pose or intrinsics, two pose files for one index, an
            image OpenCV cannot decode.
    """
    if layout not in LAYOUTS:
        raise ValueError(f'ScanNet layout: expected one of {", ".join(LAYOUTS)}, found '
                         f'{layout!r}')
    if every < 1:
        raise ValueError(f'ScanNet frames: expected every >= 1, found {every}')
    folder = _scene_dir(root, scene, _FRAME_FOLDERS[layout], f'{layout} frame folder')
    color_k, depth_k = _intrinsics(folder, layout, 'color'), _intrinsics(folder, layout, 'depth')
    skipped = dict.fromkeys(SKIP_REASONS, 0)
    usable = _usable(folder, _pose_files(folder)[::every], skipped)
    if not usable:
        return FrameList((), skipped)
    stem = usable[0][1]
    color_size = _image_size(folder / 'color' / f'{stem}.jpg', 'colour')
    depth_size = _image_size(folder / 'depth' / f'{stem}.png', 'depth')
    frames = tuple(
        ScanNetFrame(scene, index, f'{scene}_{index:06d}', folder / 'color' / f'{stem}.jpg',
                     folder / 'depth' / f'{stem}.png', _optional(folder / 'label' / f'{stem}.png'),
                     _optional(folder / 'instance' / f'{stem}.png'), pose, color_k, depth_k,
                     color_size, depth_size)
        for index, stem, pose in usable)
    return FrameList(frames, skipped)


class ScanNetScenes:
    """The scenes of a split (or a list, or every scene found), by position.

    ``len(scenes)``, ``scenes[i]`` -> scene id, ``scenes.mesh(i)`` -> :class:`ScanNetMesh`,
    ``scenes.frames(i)`` -> :class:`FrameList` (in ``layout``).

    Args:
        root: The ScanNet root.
        split: 'train', 'val' or 'test' (:func:`read_split`), or None.
        scenes: Explicit scene ids (each must be in ``split`` when both are given), or None.
        layout: Frame layout for :meth:`frames`.

    With neither ``split`` nor ``scenes``: every scene folder of the layout's frame folders
    (``scannet_frames_{25k,test}/`` or ``scans[_test]/``), sorted.
    """

    def __init__(self, root: str | os.PathLike[str], split: str | None = None,
                 scenes: Sequence[str] | None = None, layout: Layout = '25k') -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ScanNetNotFoundError(f'ScanNet root not found: {self.root}')
        if layout not in LAYOUTS:
            raise ValueError(f'ScanNet layout: expected one of {", ".join(LAYOUTS)}, found '
                             f'{layout!r}')
        self.layout: Layout = layout
        self.split = split
        listed = read_split(self.root, split) if split is not None else None
        if scenes is not None:
            unknown = [s for s in scenes if listed is not None and s not in listed]
            if unknown:
                raise ValueError(f'ScanNet scenes {unknown[:5]} are not in the {split!r} split '
                                 f'of {self.root}')
            listed = list(scenes)
        self.scenes: tuple[str, ...] = tuple(listed if listed is not None else self._found())

    def _found(self) -> list[str]:
        names: set[str] = set()
        for folder in _FRAME_FOLDERS[self.layout]:
            if (self.root / folder).is_dir():
                names.update(p.name for p in (self.root / folder).iterdir() if p.is_dir())
        return sorted(names)

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, i: int) -> str:
        return self.scenes[i]

    def __iter__(self) -> Iterator[str]:
        return iter(self.scenes)

    def mesh(self, i: int, *, labels: bool = True, align: bool = False) -> ScanNetMesh:
        """:func:`read_mesh` of scene ``i``."""
        return read_mesh(self.root, self.scenes[i], labels=labels, align=align)

    def frames(self, i: int, every: int = 1) -> FrameList:
        """:func:`list_frames` of scene ``i`` in this dataset's layout."""
        return list_frames(self.root, self.scenes[i], self.layout, every)
