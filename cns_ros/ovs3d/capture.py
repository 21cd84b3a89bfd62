"""Posed captures: a robot's own camera stream as a scene for the bounded-box radiance field.

A *posed capture* is a folder of frames of one static scene with metric camera-to-world poses
in a world frame (e.g. ``map``), the camera intrinsics, the box the field fills and the ray
range. :class:`PosedCapture` offers the interface of :class:`cns_ros.ovs3d.dataset.Ovs3dScene`
(images, poses, hwf, classes, masks), so the 3D-OVS pipeline trains on either; its
:attr:`PosedCapture.projection` is the ``bounded`` :class:`~cns_ros.ovs3d.projection.Projection`
(world rays, metres, no LLFF recentring or scaling).

Layout::

    <capture>/images/<0000>.png|jpg      the frames; sorted by name = view index
    <capture>/capture.json               {"format": "cns_ros.ovs3d_capture", "version": 1,
        "frame_id": world frame of the poses, "width", "height", "fx", "fy", "cx", "cy" (px,
        the camera matrix K as in sensor_msgs/CameraInfo and nuScenes: pixel centres at
        integer coordinates), "poses": [N][3][4] camera-to-world, NeRF convention (x right,
        y up, looking along -z), metres, "stamps_ns": [N], "aabb": [[x0, y0, z0], [x1, y1, z1]]
        (world, m), "near_far": [near, far] (m, along unit ray directions), "source": text,
        "class_names": [...] (optional)}
    <capture>/segmentations/classes.txt + <view>/<class>.png     optional, as in 3D-OVS

Pixel conventions: inside ``cns_ros.ovs3d`` pixel (u, v) has its centre at +0.5, so the
principal point used for rays is ``cx + 0.5`` (:meth:`PosedCapture.principal`). The pipeline's
rays before the patch proposed with this module assumed a centred principal point and one focal
length; :meth:`PosedCapture.check_centred` raises for captures that break that assumption.

Sources: :func:`capture_from_nuscenes` (one camera channel of a nuScenes-format scene, the pose
``global_from_ego @ ego_from_sensor`` of each sample_data) and :func:`capture_from_bag` (a
rosbag2 with ``/<cam>/image_rect_compressed`` + ``/<cam>/camera_info`` and poses from ``/tf``
(+ ``/tf_static``) or from ``/odom`` plus a base -> camera extrinsic).

Box and ray range defaults (outdoor, world z up as in REP 103 and nuScenes): x/y from the camera
centres expanded by ``radius`` (30 m), z from the lowest camera centre - 3 m (the ground below
a car- or robot-mounted camera with margin) to the highest + 12 m (trees, building fronts);
``near_far = (0.5, 2 * radius)``: every camera sees the box region within ``radius`` of itself
in any direction (the horizontal diagonal is ``radius * sqrt(2)``) and no samples are spent far
beyond it; content farther than ``2 * radius`` from every camera is not reconstructed.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from cns_ros.ovs3d.dataset import (
    CLASSES_FILE,
    IMAGE_DIR,
    SEGMENTATION_DIR,
    Ovs3dSceneError,
    _check_masks,
    _class_names,
    _image_paths,
    _view_folders,
    read_image,
    read_masks,
)
from cns_ros.ovs3d.projection import Projection

CAPTURE_FILE = 'capture.json'
CAPTURE_FORMAT = 'cns_ros.ovs3d_capture'
CAPTURE_VERSION = 1
DEFAULT_RADIUS = 30.0
DEFAULT_Z_RANGE = (-3.0, 12.0)
DEFAULT_NEAR = 0.5
IMAGE_FORMATS = ('png', 'jpg')
_REQUIRED = ('format', 'version', 'frame_id', 'width', 'height', 'fx', 'fy', 'cx', 'cy', 'poses',
             'stamps_ns', 'aabb', 'near_far', 'source')

Box = tuple[tuple[float, float, float], tuple[float, float, float]]


class CaptureError(Ovs3dSceneError):
    """A posed capture (folder, bag or nuScenes selection) that cannot be used; the message
    names the file or source, the field, and what was expected and found."""


@dataclass(frozen=True)
class Intrinsics:
    """A pinhole camera (images are undistorted).

    Attributes:
        width, height: Image size, px.
        fx, fy, cx, cy: The camera matrix K (px), pixel centres at integer coordinates (ROS
            CameraInfo, OpenCV, nuScenes).
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    @classmethod
    def from_matrix(cls, k: Any, width: int, height: int) -> Intrinsics:
        """From a (3, 3) (or 9-element row-major) camera matrix."""
        k = np.asarray(k, dtype=np.float64).reshape(3, 3)
        return cls(int(width), int(height), float(k[0, 0]), float(k[1, 1]), float(k[0, 2]),
                   float(k[1, 2]))

    def matrix(self) -> np.ndarray:
        """float64 (3, 3) K."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])


@dataclass(frozen=True, eq=False)
class PosedCapture:
    """A validated posed capture (module docstring); pixels are read on demand.

    Attributes:
        root: The capture folder.
        image_paths: The frames, sorted by name; position = view index.
        poses: float32 [N,3,4] camera-to-world, NeRF convention, world frame ``frame_id``, m.
        hwf: (H, W, fx) px.
        intrinsics: The full camera model (fx, fy, cx, cy).
        stamps_ns: Exposure time of each view, ns.
        aabb: The field's box in the world frame, m.
        near_far: Ray parameter range, m.
        frame_id: The world frame of the poses.
        source: Where the frames came from (free text).
        class_names: The sorted class texts (``segmentations/classes.txt``, else the
            ``class_names`` field), possibly empty.
        annotated_views: ``int(folder)`` of each ``segmentations/<folder>/``, sorted.
    """

    root: Path
    image_paths: tuple[Path, ...]
    poses: np.ndarray
    hwf: tuple[int, int, float]
    intrinsics: Intrinsics
    stamps_ns: tuple[int, ...]
    aabb: Box
    near_far: tuple[float, float]
    frame_id: str
    source: str
    class_names: tuple[str, ...]
    annotated_views: tuple[int, ...]

    @property
    def bounds(self) -> np.ndarray:
        """float32 [N,2]: ``near_far`` for every view (the Ovs3dScene attribute)."""
        return np.tile(np.asarray(self.near_far, dtype=np.float32), (len(self.image_paths), 1))

    @property
    def rays_scale(self) -> float:
        """1: rays are in world metres (no LLFF scaling)."""
        return 1.0

    @property
    def projection(self) -> Projection:
        """The bounded projection: world rays inside :attr:`aabb` over :attr:`near_far`."""
        height, width, focal = self.hwf
        return Projection('bounded', height, width, focal, self.aabb, self.near_far)

    def size(self, downsample: float) -> tuple[int, int]:
        """(h, w) px of the working resolution: ``(int(H / ds), int(W / ds))``."""
        height, width, _ = self.hwf
        return int(height / downsample), int(width / downsample)

    def focal(self, downsample: float) -> float:
        """fx (px) at the working resolution: ``fx * w / W``."""
        return self.focal_xy(downsample)[0]

    def focal_xy(self, downsample: float) -> tuple[float, float]:
        """(fx * w / W, fy * h / H) px at the working resolution."""
        height, width = self.size(downsample)
        k = self.intrinsics
        return k.fx * width / k.width, k.fy * height / k.height

    def principal(self, downsample: float) -> tuple[float, float]:
        """Principal point (cx, cy) px at the working resolution in the ovs3d pixel convention
        (pixel centres at +0.5): ``((cx + 0.5) * w / W, (cy + 0.5) * h / H)``."""
        height, width = self.size(downsample)
        k = self.intrinsics
        return (k.cx + 0.5) * width / k.width, (k.cy + 0.5) * height / k.height

    def check_centred(self, tolerance_px: float = 1.0, focal_tolerance: float = 1e-3) -> None:
        """Raise :class:`CaptureError` unless rays with one focal (fx) and the image centre as
        principal point are right: ``|cx + 0.5 - W/2| <= tolerance_px`` (same for y) and
        ``|fx - fy| / fx <= focal_tolerance``. For a pipeline without principal-point support."""
        k, path = self.intrinsics, self.root / CAPTURE_FILE
        for axis, c, size in (('cx', k.cx, k.width), ('cy', k.cy, k.height)):
            if abs(c + 0.5 - size / 2.0) > tolerance_px:
                raise CaptureError(f'{path}: {axis} {c:.3f} px is {c + 0.5 - size / 2.0:+.3f} px'
                                   f' from the image centre ({size / 2.0 - 0.5:.1f} in K '
                                   f'convention); rays need a principal-point-aware pipeline')
        if abs(k.fx - k.fy) / k.fx > focal_tolerance:
            raise CaptureError(f'{path}: fx {k.fx:.3f} != fy {k.fy:.3f} px; rays need a '
                               'pipeline that takes (fx, fy)')

    def image(self, view: int, downsample: float) -> np.ndarray:
        """View ``view`` as uint8 [h,w,3] RGB, LANCZOS-resized to :meth:`size`."""
        return read_image(self.image_paths[view], self.size(downsample))

    def masks(self, view: int, downsample: float) -> np.ndarray:
        """Ground-truth masks of an annotated view: bool [h,w,C] in class order (NEAREST, only
        255 positive), as :meth:`cns_ros.ovs3d.dataset.Ovs3dScene.masks`."""
        return read_masks(self.root, view, self.class_names, self.size(downsample),
                          CaptureError)


def camera_model(scene: Any, downsample: float
                 ) -> tuple[tuple[float, float], tuple[float, float]]:
    """((fx, fy), (cx, cy)) px of any scene at a working resolution, ovs3d pixel convention.

    A :class:`PosedCapture` gives its full model; a scene without :meth:`~PosedCapture.principal`
    (an LLFF :class:`~cns_ros.ovs3d.dataset.Ovs3dScene`) one focal and the image centre.
    """
    if hasattr(scene, 'principal'):
        return scene.focal_xy(downsample), scene.principal(downsample)
    height, width = scene.size(downsample)
    focal = float(scene.focal(downsample))
    return (focal, focal), (width / 2.0, height / 2.0)


# ----------------------------------------------------------------------------- reading


def _field(data: dict[str, Any], name: str, path: Path) -> Any:
    if name not in data:
        raise CaptureError(f'{path}: missing field {name!r}')
    return data[name]


def _number_array(data: dict[str, Any], name: str, shape: tuple[int | None, ...],
                  path: Path) -> np.ndarray:
    """Field ``name`` as a finite float64 array of ``shape`` (None = any length)."""
    value = _field(data, name, path)
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise CaptureError(f'{path}: field {name!r} must be numbers of shape {shape}, found '
                           f'{str(value)[:80]}') from None
    if array.ndim != len(shape) or any(s is not None and s != n
                                       for s, n in zip(shape, array.shape, strict=True)):
        raise CaptureError(f'{path}: field {name!r} must have shape {shape}, found '
                           f'{array.shape}')
    if not np.isfinite(array).all():
        raise CaptureError(f'{path}: field {name!r} has non-finite values')
    return array


def _read_header(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CaptureError(f'{path}: missing (not a posed capture folder)')
    try:
        data = json.loads(path.read_text(encoding='utf-8'))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CaptureError(f'{path}: not valid JSON ({error})') from None
    if not isinstance(data, dict):
        raise CaptureError(f'{path}: expected a JSON object, found {type(data).__name__}')
    for name in _REQUIRED:
        _field(data, name, path)
    if data['format'] != CAPTURE_FORMAT:
        raise CaptureError(f'{path}: field \'format\' must be {CAPTURE_FORMAT!r}, found '
                           f'{data["format"]!r}')
    if data['version'] != CAPTURE_VERSION:
        raise CaptureError(f'{path}: field \'version\' must be {CAPTURE_VERSION}, found '
                           f'{data["version"]!r}')
    return data


def _intrinsics(data: dict[str, Any], path: Path) -> Intrinsics:
    values = {}
    for name in ('width', 'height', 'fx', 'fy', 'cx', 'cy'):
        value = data[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
                value) or (name in ('width', 'height', 'fx', 'fy') and value <= 0):
            raise CaptureError(f'{path}: field {name!r} must be a finite number'
                               f'{" > 0" if name in ("width", "height", "fx", "fy") else ""}, '
                               f'found {value!r}')
        values[name] = value
    for name in ('width', 'height'):
        if values[name] != int(values[name]):
            raise CaptureError(f'{path}: field {name!r} must be an integer, found '
                               f'{values[name]!r}')
    return Intrinsics(int(values['width']), int(values['height']), float(values['fx']),
                      float(values['fy']), float(values['cx']), float(values['cy']))


def _box_and_range(data: dict[str, Any], path: Path) -> tuple[Box, tuple[float, float]]:
    aabb = _number_array(data, 'aabb', (2, 3), path)
    if not (aabb[0] < aabb[1]).all():
        raise CaptureError(f'{path}: field \'aabb\' must have min < max on every axis, found '
                           f'{aabb.tolist()}')
    near_far = _number_array(data, 'near_far', (2,), path)
    if not 0.0 <= near_far[0] < near_far[1]:
        raise CaptureError(f'{path}: field \'near_far\' must be 0 <= near < far, found '
                           f'{near_far.tolist()}')
    box = (tuple(float(v) for v in aabb[0]), tuple(float(v) for v in aabb[1]))
    return box, (float(near_far[0]), float(near_far[1]))  # type: ignore[return-value]


def _capture_classes(root: Path, data: dict[str, Any], path: Path) -> tuple[str, ...]:
    """classes.txt when present (it must then agree with an optional class_names field)."""
    listed = data.get('class_names')
    if listed is not None and (not isinstance(listed, list)
                               or not all(isinstance(n, str) for n in listed)):
        raise CaptureError(f'{path}: field \'class_names\' must be a list of strings, found '
                           f'{str(listed)[:80]}')
    names = tuple(sorted(n.strip() for n in listed or () if n.strip()))
    classes_file = root / SEGMENTATION_DIR / CLASSES_FILE
    if classes_file.is_file():
        from_file = _class_names(classes_file)
        if listed is not None and names != from_file:
            raise CaptureError(f'{path}: field \'class_names\' {list(names)} differs from '
                               f'{classes_file} {list(from_file)}')
        return from_file
    if _view_folders(root / SEGMENTATION_DIR):
        raise CaptureError(f'{classes_file}: missing class list (segmentations/ has view '
                           'folders)')
    return names


def read_capture(root: str | os.PathLike[str]) -> PosedCapture:
    """Read and validate a posed capture folder (module docstring).

    Raises:
        CaptureError: naming the file and field: a missing or malformed ``capture.json``
            field, a pose or stamp count that differs from the image count, an image whose size
            differs from width x height, or a bad optional segmentation folder.
    """
    root = Path(root)
    path = root / CAPTURE_FILE
    data = _read_header(path)
    intrinsics = _intrinsics(data, path)
    poses = _number_array(data, 'poses', (None, 3, 4), path)
    stamps = data['stamps_ns']
    if not isinstance(stamps, list) or not all(isinstance(s, int) and not isinstance(s, bool)
                                               for s in stamps):
        raise CaptureError(f'{path}: field \'stamps_ns\' must be a list of integers (ns)')
    aabb, near_far = _box_and_range(data, path)
    try:
        image_paths = _image_paths(root / IMAGE_DIR)
    except Ovs3dSceneError as error:
        raise CaptureError(str(error)) from None
    if not len(image_paths) == len(poses) == len(stamps):
        raise CaptureError(f'{path}: {len(poses)} poses and {len(stamps)} stamps_ns for '
                           f'{len(image_paths)} images in {root / IMAGE_DIR}')
    for image_path in image_paths:
        with Image.open(image_path) as image:
            if image.size != (intrinsics.width, intrinsics.height):
                raise CaptureError(f'{image_path}: size {image.size[0]}x{image.size[1]}, '
                                   f'{path} says {intrinsics.width}x{intrinsics.height}')
    class_names = _capture_classes(root, data, path)
    folders = _view_folders(root / SEGMENTATION_DIR)
    for view, folder in folders.items():
        if not 0 <= view < len(image_paths):
            raise CaptureError(f'{folder}: view index {view} is outside the '
                               f'{len(image_paths)} images')
        _check_masks(folder, class_names)
    return PosedCapture(
        root=root, image_paths=image_paths, poses=poses.astype(np.float32),
        hwf=(intrinsics.height, intrinsics.width, intrinsics.fx), intrinsics=intrinsics,
        stamps_ns=tuple(stamps), aabb=aabb, near_far=near_far, frame_id=str(data['frame_id']),
        source=str(data['source']), class_names=class_names,
        annotated_views=tuple(sorted(folders)))


# ----------------------------------------------------------------------------- writing


def default_aabb(positions: np.ndarray, radius: float = DEFAULT_RADIUS,
                 z_range: tuple[float, float] = DEFAULT_Z_RANGE) -> Box:
    """The box around camera centres: x/y expanded by ``radius``, z from the lowest centre +
    ``z_range[0]`` to the highest + ``z_range[1]`` (m, world z up).

    Args:
        positions: float [N, 3] camera centres in the world frame, m.
    """
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    if radius <= 0 or z_range[0] >= z_range[1]:
        raise ValueError(f'radius must be > 0 and z_range increasing, found radius {radius}, '
                         f'z_range {z_range}')
    low, high = positions.min(0), positions.max(0)
    return ((float(low[0] - radius), float(low[1] - radius), float(low[2] + z_range[0])),
            (float(high[0] + radius), float(high[1] + radius), float(high[2] + z_range[1])))


def _check_write_inputs(images: Sequence[Any], poses: np.ndarray, stamps_ns: Sequence[int],
                        aabb: Any, near_far: Any) -> None:
    if poses.ndim != 3 or poses.shape[1:] != (3, 4) or not np.isfinite(poses).all():
        raise ValueError(f'poses must be finite [N,3,4] camera-to-world, found shape '
                         f'{poses.shape}')
    if not len(images) == len(poses) == len(stamps_ns) or not len(poses):
        raise ValueError(f'need as many images, poses and stamps (at least one); found '
                         f'{len(images)}, {len(poses)}, {len(stamps_ns)}')
    box = np.asarray(aabb, dtype=np.float64)
    if box.shape != (2, 3) or not (box[0] < box[1]).all():
        raise ValueError(f'aabb must be [[x0, y0, z0], [x1, y1, z1]] with min < max, found '
                         f'{box.tolist()}')
    if not 0.0 <= near_far[0] < near_far[1]:
        raise ValueError(f'near_far must be 0 <= near < far, found {tuple(near_far)}')


def write_capture(out: str | os.PathLike[str], images: Sequence[np.ndarray], poses: Any,
                  intrinsics: Intrinsics, stamps_ns: Sequence[int], frame_id: str, aabb: Any,
                  near_far: tuple[float, float], source: str, *,
                  class_names: Sequence[str] | None = None,
                  image_format: Literal['png', 'jpg'] = 'png') -> PosedCapture:
    """Write a posed capture folder atomically (``out.partial-<pid>``, then renamed).

    Args:
        out: The folder to create; must not exist.
        images: uint8 [H,W,3] RGB frames (any Sequence; read one at a time), H x W =
            ``intrinsics``' size.
        poses: float [N,3,4] camera-to-world, NeRF convention, world frame ``frame_id``, m.
        intrinsics: The camera (K convention, see :class:`Intrinsics`).
        stamps_ns: Exposure time of each frame, ns.
        frame_id: The world frame.
        aabb: [[x0, y0, z0], [x1, y1, z1]] m (e.g. :func:`default_aabb`).
        near_far: Ray range, m.
        source: Free text: where the frames come from.
        class_names: Optional class texts stored in ``capture.json``.
        image_format: 'png' (lossless, default) or 'jpg' (quality 95).

    Returns:
        The written capture, read back with :func:`read_capture`.

    Raises:
        FileExistsError: ``out`` exists.
        ValueError: Inconsistent counts or shapes, a bad box or range, a wrong image size.
    """
    out = Path(out)
    poses = np.asarray(poses, dtype=np.float64)
    _check_write_inputs(images, poses, stamps_ns, aabb, near_far)
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f'image_format must be one of {IMAGE_FORMATS}, found {image_format!r}')
    if out.exists() or out.is_symlink():
        raise FileExistsError(f'{out}: exists already; refusing to overwrite it')
    staging = out.with_name(f'{out.name}.partial-{os.getpid()}')
    header = {'format': CAPTURE_FORMAT, 'version': CAPTURE_VERSION, 'frame_id': frame_id,
              'width': intrinsics.width, 'height': intrinsics.height, 'fx': intrinsics.fx,
              'fy': intrinsics.fy, 'cx': intrinsics.cx, 'cy': intrinsics.cy,
              'poses': poses.tolist(), 'stamps_ns': [int(s) for s in stamps_ns],
              'aabb': np.asarray(aabb, dtype=np.float64).tolist(),
              'near_far': [float(v) for v in near_far], 'source': source}
    if class_names is not None:
        header['class_names'] = list(class_names)
    try:
        (staging / IMAGE_DIR).mkdir(parents=True)
        digits = max(4, len(str(len(poses) - 1)))
        for index in range(len(poses)):
            _write_image(staging / IMAGE_DIR / f'{index:0{digits}d}.{image_format}',
                         images[index], intrinsics)
        (staging / CAPTURE_FILE).write_text(_header_text(header), encoding='utf-8')
        os.rename(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return read_capture(out)


def _header_text(header: dict[str, Any]) -> str:
    """capture.json text: one field per line, one pose per line."""
    lines = []
    for key, value in header.items():
        if key == 'poses':
            text = '[\n  ' + ',\n  '.join(json.dumps(pose) for pose in value) + ']'
        else:
            text = json.dumps(value)
        lines.append(f' {json.dumps(key)}: {text}')
    return '{\n' + ',\n'.join(lines) + '\n}\n'


def _write_image(path: Path, image: np.ndarray, intrinsics: Intrinsics) -> None:
    image = np.asarray(image)
    expected = (intrinsics.height, intrinsics.width, 3)
    if image.dtype != np.uint8 or image.shape != expected:
        raise ValueError(f'{path.name}: image must be uint8 {expected}, found {image.dtype} '
                         f'{image.shape}')
    options = {'quality': 95} if path.suffix == '.jpg' else {}
    Image.fromarray(image).save(path, **options)


def nerf_poses(world_from_optical: np.ndarray) -> np.ndarray:
    """float64 [N,3,4] NeRF camera-to-world from [N,4,4] optical-frame camera-to-world
    (:func:`cns_ros.ovs3d.rays.nerf_from_optical`)."""
    import torch

    from cns_ros.ovs3d.rays import nerf_from_optical

    c2w = torch.from_numpy(np.asarray(world_from_optical, dtype=np.float64)[:, :3, :4].copy())
    return nerf_from_optical(c2w).numpy()


@dataclass(frozen=True)
class CaptureResult:
    """What a capture_from_* call wrote.

    Attributes:
        capture: The capture, read back.
        considered: Frames inside the time window (before stride and ``first``).
        skipped_no_pose: Frames dropped because no pose was found within the tolerance.
    """

    capture: PosedCapture
    considered: int
    skipped_no_pose: int


def _select(count: int, first: int | None, stride: int) -> list[int]:
    if stride < 1 or (first is not None and first < 1):
        raise ValueError(f'stride and first must be >= 1, found stride {stride}, first {first}')
    chosen = list(range(0, count, stride))
    return chosen[:first] if first is not None else chosen


def _finish(out: Path, images: Sequence[np.ndarray], world_from_optical: np.ndarray,
            intrinsics: Intrinsics, stamps: Sequence[int], frame_id: str, source: str,
            box: dict[str, Any]) -> PosedCapture:
    """Poses -> NeRF, the box and range (explicit or default), then :func:`write_capture`."""
    poses = nerf_poses(world_from_optical)
    radius = box.get('radius') or DEFAULT_RADIUS
    aabb = box.get('aabb') or default_aabb(poses[:, :, 3], radius,
                                           box.get('z_range') or DEFAULT_Z_RANGE)
    near_far = box.get('near_far') or (DEFAULT_NEAR, 2.0 * radius)
    return write_capture(out, images, poses, intrinsics, stamps, frame_id, aabb, near_far,
                         source, image_format=box.get('image_format') or 'png')


# ----------------------------------------------------------------------------- nuScenes


class _LazyImages(Sequence[np.ndarray]):
    """A sequence of images decoded on access (``load(item) -> uint8 [H,W,3]``)."""

    def __init__(self, items: Sequence[Any], load: Any) -> None:
        self.items, self.load = list(items), load

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: Any) -> Any:
        return self.load(self.items[index])


def capture_from_nuscenes(dataroot: str | os.PathLike[str], version: str, scene_name: str,
                          out: str | os.PathLike[str], *, channel: str = 'CAM_FRONT',
                          first: int | None = None, start_ns: int | None = None,
                          end_ns: int | None = None, stride: int = 1,
                          radius: float = DEFAULT_RADIUS,
                          z_range: tuple[float, float] = DEFAULT_Z_RANGE,
                          aabb: Any = None, near_far: tuple[float, float] | None = None,
                          image_format: Literal['png', 'jpg'] = 'png', nusc: Any = None
                          ) -> CaptureResult:
    """One camera channel of a nuScenes-format scene as a posed capture in the global frame.

    Frames: every sample_data (keyframes and sweeps) of ``channel`` in the scene, by
    timestamp, inside [start_ns, end_ns] (ns; nuScenes microseconds * 1000), then every
    ``stride``-th, then the first ``first``. Pose: ``global_from_ego @ ego_from_sensor``
    (:func:`cns_ros.data.nuscenes.camera_frame`; ego pose at the image's own timestamp),
    converted from the optical frame to NeRF; intrinsics from its calibrated_sensor. The world
    frame is called ``map`` (nuScenes' global frame, as in nuscenes_to_bag).

    Raises:
        CaptureError: Unknown scene or channel, no frame in the window, intrinsics changing
            within the selection.
        NuScenesNotFoundError: Missing dataset files (named).
    """
    from cns_ros.data.nuscenes import camera_frame, open_nuscenes, sample_data_by_scene

    nusc = open_nuscenes(dataroot, version) if nusc is None else nusc
    try:
        records = sample_data_by_scene(nusc, [scene_name])[scene_name]
    except ValueError as error:
        raise CaptureError(str(error)) from None
    if channel not in records:
        raise CaptureError(f'{dataroot} ({version}) scene {scene_name}: no channel {channel!r};'
                           f' channels: {", ".join(sorted(records))}')
    window = [r for r in records[channel]
              if (start_ns is None or r['timestamp'] * 1000 >= start_ns)
              and (end_ns is None or r['timestamp'] * 1000 <= end_ns)]
    frames = [camera_frame(nusc, window[i]['token']) for i in _select(len(window), first, stride)]
    if not frames:
        raise CaptureError(f'{dataroot} ({version}) scene {scene_name} {channel}: no frame '
                           f'between start_ns {start_ns} and end_ns {end_ns}')
    intrinsics = {Intrinsics.from_matrix(f.intrinsics, f.width, f.height) for f in frames}
    if len(intrinsics) != 1:
        raise CaptureError(f'{scene_name} {channel}: the intrinsics change within the '
                           f'selection: {sorted(intrinsics, key=str)}')
    world = np.stack([f.global_from_ego @ f.ego_from_sensor for f in frames])
    source = (f'nuScenes {version} {scene_name} {channel} at {Path(dataroot).resolve()}: '
              f'{len(frames)} frames')
    capture = _finish(Path(out), _LazyImages(frames, lambda f: f.load_image()), world,
                      intrinsics.pop(), [f.timestamp_us * 1000 for f in frames], 'map', source,
                      {'radius': radius, 'z_range': z_range, 'aabb': aabb,
                       'near_far': near_far, 'image_format': image_format})
    return CaptureResult(capture, len(window), 0)


# ----------------------------------------------------------------------------- rosbag2


class TransformTree:
    """Transforms read from ``/tf`` and ``/tf_static``: each child frame has one parent; static
    links hold one transform, dynamic links a stamped series looked up by nearest stamp."""

    def __init__(self) -> None:
        self._parent: dict[str, str] = {}
        self._static: dict[str, np.ndarray] = {}
        self._series: dict[str, tuple[list[int], list[np.ndarray]]] = {}

    def add(self, parent: str, child: str, stamp_ns: int, parent_from_child: np.ndarray,
            static: bool) -> None:
        """Record one transform (frame ids without a leading '/')."""
        parent, child = parent.lstrip('/'), child.lstrip('/')
        known = self._parent.setdefault(child, parent)
        if known != parent:
            raise CaptureError(f'tf: frame {child!r} has two parents, {known!r} and {parent!r}')
        if static:
            self._static[child] = parent_from_child
        else:
            stamps, transforms = self._series.setdefault(child, ([], []))
            stamps.append(int(stamp_ns))
            transforms.append(parent_from_child)

    def frames(self) -> list[str]:
        """Every frame id seen, sorted."""
        return sorted(set(self._parent) | set(self._parent.values()))

    def _link(self, child: str, stamp_ns: int, tolerance_ns: int) -> np.ndarray | None:
        if child in self._static:
            return self._static[child]
        stamps, transforms = self._series[child]
        order = np.asarray(stamps)
        index = int(np.argmin(np.abs(order - stamp_ns)))
        return transforms[index] if abs(stamps[index] - stamp_ns) <= tolerance_ns else None

    def _to_root(self, frame: str) -> list[str]:
        chain = [frame]
        while chain[-1] in self._parent:
            chain.append(self._parent[chain[-1]])
            if len(chain) > 64:
                raise CaptureError(f'tf: cycle in the parents of {frame!r}')
        return chain

    def lookup(self, target: str, source: str, stamp_ns: int, tolerance_ns: int
               ) -> np.ndarray | None:
        """float64 (4, 4) ``target_from_source`` at ``stamp_ns``, or None when a dynamic link
        has no transform within ``tolerance_ns``.

        Raises:
            CaptureError: The frames are not connected (names both chains and known frames).
        """
        target, source = target.lstrip('/'), source.lstrip('/')
        up_source, up_target = self._to_root(source), self._to_root(target)
        common = next((f for f in up_source if f in up_target), None)
        if common is None:
            raise CaptureError(f'tf: no transform chain from {target!r} to {source!r} '
                               f'({" -> ".join(up_source)} and {" -> ".join(up_target)} do not '
                               f'meet); frames in the bag: {", ".join(self.frames())}')
        result = []
        for chain in (up_source, up_target):
            transform = np.eye(4)
            for child in chain[:chain.index(common)]:
                link = self._link(child, stamp_ns, tolerance_ns)
                if link is None:
                    return None
                transform = link @ transform
            result.append(transform)
        return np.linalg.inv(result[1]) @ result[0]


def _transform(translation: Any, rotation: Any) -> np.ndarray:
    from cns_ros.geometry import make_transform

    return make_transform([rotation.x, rotation.y, rotation.z, rotation.w],
                          [translation.x, translation.y, translation.z])


def _stamp(header: Any) -> int:
    return int(header.stamp.sec) * 10**9 + int(header.stamp.nanosec)


@dataclass
class _BagContent:
    """What one pass over the bag collected."""

    images: list[tuple[int, str, bytes]]  # (header stamp ns, frame_id, compressed bytes)
    infos: list[Any]
    tree: TransformTree
    odometry: list[tuple[int, str, str, np.ndarray]]  # (stamp, frame, child, frame_from_child)


def _required_topics(bag: Any, topics: dict[str, str], path: Path) -> None:
    for topic, role in topics.items():
        if topic not in bag.info.topics:
            present = ', '.join(sorted(bag.info.topics)) or 'none'
            raise CaptureError(f'{path}: missing topic {topic} ({role}); topics in the bag: '
                               f'{present}')


def _read_bag(path: Path, camera: str, pose_source: str) -> _BagContent:
    from rosbags.typesys import Stores, get_typestore

    from cns_ros.data.bags import open_bag

    image_topic, info_topic = f'/{camera}/image_rect_compressed', f'/{camera}/camera_info'
    pose_topics = {'/tf': 'tf2_msgs/TFMessage'} if pose_source == 'tf' else {
        '/odom': 'nav_msgs/Odometry'}
    store = get_typestore(Stores.ROS2_HUMBLE)
    content = _BagContent([], [], TransformTree(), [])
    with open_bag(path) as bag:
        _required_topics(bag, {image_topic: 'sensor_msgs/CompressedImage',
                               info_topic: 'sensor_msgs/CameraInfo', **pose_topics}, path)
        wanted = {image_topic, info_topic, '/tf', '/tf_static', '/odom'}
        for message in bag.messages(wanted & set(bag.info.topics)):
            msg = store.deserialize_cdr(message.data, message.msgtype)
            if message.topic == image_topic:
                content.images.append((_stamp(msg.header), msg.header.frame_id,
                                       bytes(msg.data)))
            elif message.topic == info_topic:
                content.infos.append(msg)
            elif message.topic in ('/tf', '/tf_static'):
                for t in msg.transforms:
                    content.tree.add(t.header.frame_id, t.child_frame_id, _stamp(t.header),
                                     _transform(t.transform.translation, t.transform.rotation),
                                     message.topic == '/tf_static')
            else:
                pose = msg.pose.pose
                content.odometry.append((_stamp(msg.header), msg.header.frame_id.lstrip('/'),
                                         msg.child_frame_id.lstrip('/'),
                                         _transform(pose.position, pose.orientation)))
    return content


def _bag_intrinsics(infos: list[Any], path: Path, topic: str) -> Intrinsics:
    if not infos:
        raise CaptureError(f'{path}: no sensor_msgs/CameraInfo message on {topic}')
    models = {Intrinsics.from_matrix(np.asarray(i.k), i.width, i.height) for i in infos}
    if len(models) != 1:
        raise CaptureError(f'{path}: {topic} changes within the bag: {sorted(models, key=str)}')
    model = models.pop()
    distortion = np.asarray(infos[0].d, dtype=np.float64)
    if model.width <= 0 or model.height <= 0 or model.fx <= 0 or model.fy <= 0:
        raise CaptureError(f'{path}: {topic} has no usable K/width/height: {model}')
    if np.abs(distortion).max(initial=0.0) > 1e-9:
        raise CaptureError(f'{path}: {topic} has distortion D={distortion.tolist()}; a capture '
                           'needs rectified images (image_rect_compressed)')
    return model


class _OdometryPoses:
    """``world_from_camera`` from odometry (nearest stamp) and a fixed base -> camera."""

    def __init__(self, odometry: list[tuple[int, str, str, np.ndarray]], world: str,
                 base_from_camera: np.ndarray, path: Path) -> None:
        frames = {(frame, child) for _, frame, child, _ in odometry}
        if len(frames) != 1:
            raise CaptureError(f'{path}: /odom must hold one frame pair, found {sorted(frames)}')
        frame, _ = frames.pop()
        if frame != world:
            raise CaptureError(f'{path}: /odom poses are in frame {frame!r}, world_frame is '
                               f'{world!r} (pass world_frame={frame!r})')
        self.stamps = np.asarray([s for s, *_ in odometry], dtype=np.int64)
        self.poses = [p for *_, p in odometry]
        self.base_from_camera = base_from_camera

    def __call__(self, stamp_ns: int, tolerance_ns: int) -> np.ndarray | None:
        index = int(np.argmin(np.abs(self.stamps - stamp_ns)))
        if abs(int(self.stamps[index]) - stamp_ns) > tolerance_ns:
            return None
        return self.poses[index] @ self.base_from_camera


def _pose_lookup(content: _BagContent, pose_source: str, world: str, camera_frame: str,
                 base_from_camera: np.ndarray | None, path: Path) -> Any:
    """A function ``(stamp_ns, tolerance_ns) -> world_from_camera | None``."""
    if pose_source == 'tf':
        content.tree.lookup(world, camera_frame, 0, 2**62)  # the chain must exist
        return lambda stamp, tol: content.tree.lookup(world, camera_frame, stamp, tol)
    if not content.odometry:
        raise CaptureError(f'{path}: no nav_msgs/Odometry message on /odom')
    if base_from_camera is None:
        base = content.odometry[0][2]
        base_from_camera = content.tree.lookup(base, camera_frame, 0, 0)
        if base_from_camera is None:
            raise CaptureError(f'{path}: {base!r} -> {camera_frame!r} is not static in the '
                               'bag; pass base_to_camera')
    else:
        base_from_camera = np.asarray(base_from_camera, dtype=np.float64)
        if base_from_camera.shape != (4, 4):
            raise ValueError(f'base_to_camera must be a (4, 4) transform, found '
                             f'{base_from_camera.shape}')
    return _OdometryPoses(content.odometry, world, base_from_camera, path)


def _image_frame(images: Sequence[tuple[int, str, bytes]], path: Path) -> str:
    """The one frame id of the images."""
    frames = {frame.lstrip('/') for _, frame, _ in images}
    if len(frames) != 1:
        raise CaptureError(f'{path}: the images have several frame ids {sorted(frames)}')
    return frames.pop()


def _decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert('RGB'))


def capture_from_bag(bag: str | os.PathLike[str], out: str | os.PathLike[str], *,
                     camera: str = 'cam_front', pose_source: Literal['tf', 'odom'] = 'tf',
                     world_frame: str = 'map', base_to_camera: Any = None,
                     tolerance_s: float = 0.05, first: int | None = None,
                     start_ns: int | None = None, end_ns: int | None = None, stride: int = 1,
                     radius: float = DEFAULT_RADIUS,
                     z_range: tuple[float, float] = DEFAULT_Z_RANGE, aabb: Any = None,
                     near_far: tuple[float, float] | None = None,
                     image_format: Literal['png', 'jpg'] = 'png') -> CaptureResult:
    """A camera of a rosbag2 as a posed capture in ``world_frame``.

    Reads ``/<camera>/image_rect_compressed`` (sensor_msgs/CompressedImage, jpeg or png),
    ``/<camera>/camera_info`` (K, width, height; zero distortion required) and the poses:

    * ``pose_source='tf'``: ``/tf`` + ``/tf_static``, the chain ``world_frame`` -> ... -> the
      image's ``header.frame_id``; every dynamic link at its nearest stamp;
    * ``pose_source='odom'``: ``/odom`` (nav_msgs/Odometry: the base frame in the odometry's
      frame, which must be ``world_frame``) at the nearest stamp, times ``base_to_camera``
      (float (4, 4) ``base_from_camera``, camera optical frame), or when None the static
      base -> camera chain of ``/tf_static``.

    Frames (by header stamp) inside [start_ns, end_ns]; a frame whose nearest pose (each
    dynamic link) is more than ``tolerance_s`` away is skipped and counted; then every
    ``stride``-th frame, then the first ``first``. Camera frames are optical (x right, y down,
    z forward), converted to NeRF.

    Raises:
        CaptureError: A missing topic or message, a broken tf chain, no frame with a pose.
        BagError: An unreadable bag.
    """
    path = Path(bag)
    if pose_source not in ('tf', 'odom'):
        raise ValueError(f"pose_source must be 'tf' or 'odom', found {pose_source!r}")
    content = _read_bag(path, camera, pose_source)
    intrinsics = _bag_intrinsics(content.infos, path, f'/{camera}/camera_info')
    images = sorted((s, f, d) for s, f, d in content.images
                    if (start_ns is None or s >= start_ns) and (end_ns is None or s <= end_ns))
    if not images:
        raise CaptureError(f'{path}: no image on /{camera}/image_rect_compressed between '
                           f'start_ns {start_ns} and end_ns {end_ns}')
    lookup = _pose_lookup(content, pose_source, world_frame, _image_frame(images, path),
                          base_to_camera, path)
    tolerance_ns = round(tolerance_s * 1e9)
    posed = [(image, lookup(image[0], tolerance_ns)) for image in images]
    kept = [(image, pose) for image, pose in posed if pose is not None]
    skipped = len(posed) - len(kept)
    if not kept:
        raise CaptureError(f'{path}: none of {len(images)} images has a pose within '
                           f'{tolerance_s} s ({pose_source})')
    kept = [kept[i] for i in _select(len(kept), first, stride)]
    source = (f'rosbag2 {path.resolve()} /{camera} poses from {pose_source}: {len(kept)} '
              f'frames ({skipped} skipped without a pose within {tolerance_s} s)')
    capture = _finish(Path(out), _LazyImages([i for i, _ in kept], lambda i: _decode(i[2])),
                      np.stack([p for _, p in kept]), intrinsics, [i[0] for i, _ in kept],
                      world_frame, source, {'radius': radius, 'z_range': z_range, 'aabb': aabb,
                                            'near_far': near_far, 'image_format': image_format})
    return CaptureResult(capture, len(images), skipped)

