"""ScanNet scenes as keyframes: what pseudo-labelling, training and evaluation iterate over.

One keyframe = one scan (reference/cns_clip2scene.md B10: CNS trains on a scene's vertices with
its frames): the points are every vertex of ``<scene>_vh_clean_2.ply`` (the evaluation unit of
the benchmark, reference/scannet.md §3.2) and the cameras are the scene's frames of the chosen
layout (``scannet_frames_25k`` by default).

Conventions (reference/scannet.md §4.2, §5):

* Points are (N, 6) float32 ``x, y, z`` (metres, the mesh's unaligned frame, which the poses
  use) and ``r, g, b`` (0..255, photo colours); the network input 'rgb' maps them to [-1, 1].
  No axis alignment is applied (as in OpenScene, CLIP2Scene and Pointcept).
* Each camera is the DEPTH camera: 640 x 480 with the depth intrinsics; the colour image is
  resized to it (bilinear, the standard approximation: colour and depth are registered, the
  aspect differs by ~0.4 %). ``load_depths`` gives the depth images for the pairing's depth
  check (:mod:`cns_ros.teachers.lifting`).
* Poses are camera-to-world with OpenCV camera axes; frames with invalid (-inf) poses or
  missing files were skipped by the reader and are counted in ``Keyframe.skipped``.
* Ground truth: ``labels.ply`` nyu40 ids -> training ids 0..19, 255 ignore.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cns_ros.data.nuscenes import CameraFrame
from cns_ros.data.scannet_labels import nyu40_to_train

#: Channel prefix of ScanNet cameras (the channel is ``rgbd/<frame token>``).
CHANNEL_PREFIX = 'rgbd/'


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


@dataclass(frozen=True, eq=False)
class ScanNetCameraFrame(CameraFrame):
    """A ScanNet frame seen as a camera of its scene keyframe (the depth camera).

    ``width`` x ``height`` and ``intrinsics`` are the depth image's; ``global_from_ego`` is the
    camera-to-world pose and ``ego_from_sensor`` the identity.

    Attributes:
        frame: The reader's ``ScanNetFrame`` (colour, depth, label files).
    """

    frame: Any = None

    def load_image(self) -> np.ndarray:
        """uint8 (height, width, 3) RGB: the colour image resized to the depth camera."""
        import cv2

        rgb = self.frame.load_color()
        if rgb.shape[:2] != (self.height, self.width):
            rgb = cv2.resize(rgb, (self.width, self.height), interpolation=cv2.INTER_LINEAR)
        return rgb

    def load_depth(self) -> np.ndarray:
        """float32 (height, width) metres, 0 = invalid."""
        return self.frame.load_depth()

    def load_train_labels(self) -> np.ndarray | None:
        """uint8 (height, width) training ids of the frame's label PNG, resized with nearest
        (the official 2D protocol's 640 x 480), or None when the frame has no label file."""
        if self.frame.label_path is None:
            return None
        return self.frame.load_label20((self.width, self.height))


@dataclass(frozen=True, eq=False)
class ScanNetKeyframe:
    """One ScanNet scan: its vertices and its frames (field names as nuScenes' ``Keyframe``).

    Attributes:
        sample_token: The scene id (also ``lidar_token``: the cache's keys).
        scene_name: The scene id, e.g. 'scene0000_00'.
        points: float32 (N, 6) x, y, z (metres, mesh frame), r, g, b (0..255).
        sweep_index: uint8 (N,) zeros (one "sweep").
        cameras: ``rgbd/<frame token>`` -> :class:`ScanNetCameraFrame`, frame order.
        nyu40: uint16 (N,) nyu40 ids of ``labels.ply``, or None (test scans).
        mesh_path: The scan's ``_vh_clean_2.ply``.
        skipped: Reason -> number of frames the reader skipped (e.g. 'invalid_pose').
        lidar_ego_from_sensor, lidar_global_from_ego: Identities: the points are in the
            world (mesh) frame, which :func:`cns_ros.teachers.lifting.keyframe_cameras` needs.
    """

    sample_token: str
    scene_name: str
    points: np.ndarray
    sweep_index: np.ndarray
    cameras: dict[str, ScanNetCameraFrame]
    nyu40: np.ndarray | None
    mesh_path: Path
    skipped: dict[str, int] = field(default_factory=dict)
    lidar_ego_from_sensor: np.ndarray = field(default_factory=lambda: np.eye(4))
    lidar_global_from_ego: np.ndarray = field(default_factory=lambda: np.eye(4))
    point_columns: ClassVar[tuple[str, ...]] = ('x', 'y', 'z', 'r', 'g', 'b')

    @property
    def lidar_token(self) -> str:
        return self.sample_token

    @property
    def num_keyframe_points(self) -> int:
        return int(self.points.shape[0])

    def train_labels(self) -> np.ndarray | None:
        """uint8 (N,) training ids 0..19 (255 ignore) of every vertex, or None."""
        return None if self.nyu40 is None else nyu40_to_train(self.nyu40)

    def load_depths(self, names: Sequence[str] | None = None) -> list[np.ndarray]:
        """Depth images (float32 metres, 0 invalid) of the cameras ``names`` (default all)."""
        names = list(self.cameras) if names is None else list(names)
        return [self.cameras[name].load_depth() for name in names]


def camera_frame(frame: Any) -> ScanNetCameraFrame:
    """The :class:`ScanNetCameraFrame` of a reader ``ScanNetFrame`` (reads no pixels)."""
    width, height = frame.depth_size
    return ScanNetCameraFrame(
        channel=CHANNEL_PREFIX + frame.token, sample_data_token=frame.token, timestamp_us=0,
        image_path=Path(frame.color_path), width=int(width), height=int(height),
        intrinsics=_readonly(np.array(frame.depth_intrinsics, dtype=np.float64)),
        ego_from_sensor=_readonly(np.eye(4)),
        global_from_ego=_readonly(np.array(frame.camera_to_world, dtype=np.float64)),
        frame=frame)


class ScanNetKeyframes:
    """The scans of a ScanNet split as keyframes; ``len``, ``[i]`` and iteration.

    Args:
        root: ScanNet root (``scans/``, split files, ``scannet_frames_25k/``).
        split: 'train', 'val', 'test' or None for ``scenes`` only.
        scenes: Optional scene ids to keep (within the split).
        layout: '25k' (``scannet_frames_25k``) or 'export' (SensReader export in ``scans/``).
        every: Keep every k-th frame of the layout.
    """

    def __init__(self, root: str | os.PathLike[str], split: str | None = None,
                 scenes: Sequence[str] | None = None, layout: str = '25k',
                 every: int = 1) -> None:
        from cns_ros.data.scannet import ScanNetScenes

        self.root, self.layout, self.every = Path(root), layout, int(every)
        self.scenes = ScanNetScenes(root, split, scenes, layout)
        self.scene_names: tuple[str, ...] = tuple(self.scenes[i] for i in range(
            len(self.scenes)))

    def __len__(self) -> int:
        return len(self.scene_names)

    def __getitem__(self, index: int) -> ScanNetKeyframe:
        if not -len(self) <= index < len(self):
            raise IndexError(f'scene index {index} out of range for {len(self)} scenes')
        return self.keyframe(self.scene_names[index])

    def __iter__(self) -> Iterator[ScanNetKeyframe]:
        for name in self.scene_names:
            yield self.keyframe(name)

    def sample_tokens(self) -> list[tuple[str, str]]:
        """(sample token, lidar token) per keyframe: both the scene id."""
        return [(name, name) for name in self.scene_names]

    def ground_truth(self, sample_token: str) -> np.ndarray | None:
        """uint8 (N,) training ids 0..19 (255 ignore) of the scene's vertices, or None."""
        from cns_ros.data.scannet import read_mesh

        mesh = read_mesh(self.root, sample_token, labels=True)
        return None if mesh.nyu40 is None else nyu40_to_train(mesh.nyu40)

    def keyframe(self, scene: str) -> ScanNetKeyframe:
        """The keyframe of scene id ``scene`` (mesh read now, images lazily)."""
        from cns_ros.data.scannet import list_frames, read_mesh

        mesh = read_mesh(self.root, scene, labels=True)
        listed = list_frames(self.root, scene, self.layout, self.every)
        points = np.concatenate([mesh.xyz, mesh.rgb.astype(np.float32)], axis=1)
        cameras = {CHANNEL_PREFIX + f.token: camera_frame(f) for f in listed.frames}
        return ScanNetKeyframe(
            sample_token=scene, scene_name=scene,
            points=_readonly(points.astype(np.float32)),
            sweep_index=_readonly(np.zeros(len(points), dtype=np.uint8)), cameras=cameras,
            nyu40=None if mesh.nyu40 is None else _readonly(np.asarray(mesh.nyu40)),
            mesh_path=self.root / 'scans' / scene / f'{scene}_vh_clean_2.ply',
            skipped=dict(listed.skipped))
