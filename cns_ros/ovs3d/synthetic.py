"""A synthetic forward-facing capture in the 3D-OVS layout, ray-cast exactly with numpy.

The scene (world frame: x right, y up, z towards the cameras; units are metre-like):

* ``white plain wall``: the plane z = -2, unbounded, behind everything, so every pixel of a
  capture view has exactly one class;
* ``brown banded table``: a block x in [-1.1, 1.1], y in [-0.6, 0], z in [-2, -0.45] whose top
  (y = 0) carries the objects;
* on the table: ``red striped box``, ``red plain ball``, ``blue checkered cylinder`` (vertical)
  and ``yellow plain box``. The box and the ball share their colour and differ in pattern and
  shape, so colour alone cannot separate them.

Colours and patterns come from :mod:`cns_ros.ovs3d.lexicon`. A pattern is a sine of period
``stripe_period_px`` pixels at full image size and ``REFERENCE_DEPTH``, with peak-to-peak
contrast ``PATTERN_CONTRAST``; it varies along world x (image x) for "striped", along the
vertical (world y, or depth z on upward-facing surfaces such as the table top: image y) for
"banded", along both for "checkered". Shading: ambient plus Lambertian from one directional
light, no shadows.

The capture imitates a phone sweep: ``views`` camera centres on a small ellipse in the plane
z = 0.6 around (0, 0.7), all looking at (0, 0.1, -1.25) with world y up, centres and look-at
points jittered per seed. :func:`make_synthetic_scene` writes exactly what a 3D-OVS scene holds
(``images/``, LLFF ``poses_bounds.npy``, ``segmentations/``) plus ``synthetic.json`` (the
config, for provenance). :func:`render_view` renders any view of the scene as ground truth.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cns_ros.fileio import temporary_sibling
from cns_ros.ovs3d.dataset import CLASSES_FILE, IMAGE_DIR, SEGMENTATION_DIR
from cns_ros.ovs3d.lexicon import PATTERN_CONTRAST, parse_description
from cns_ros.ovs3d.llff import POSES_BOUNDS, write_poses_bounds

PROVENANCE_FILE = 'synthetic.json'
REFERENCE_DEPTH = 1.7
"""Depth (world units, about the objects' median) at which a pattern period spans
``stripe_period_px`` full-size pixels."""
CAMERA_CENTRE = (0.0, 0.7, 0.6)
SWEEP = (0.3, 0.12)
"""Half-axes (x, y) of the ellipse of camera centres, world units."""
LOOK_AT = (0.0, 0.1, -1.25)
LIGHT = tuple(np.array([-0.3, 0.6, 0.75]) / np.linalg.norm([-0.3, 0.6, 0.75]))
"""Unit direction towards the light, world frame."""
NEAR_MARGIN = 0.9
FAR_MARGIN = 1.1
"""A view's LLFF bounds are (0.9 * its minimum depth, 1.1 * its maximum depth)."""
_EPS = 1e-9


@dataclass(frozen=True)
class SyntheticSceneConfig:
    """How to capture the synthetic scene.

    Attributes:
        seed: Seeds the jitter of camera centres and look-at points.
        width, height: Full image size, px (the hwf stored in ``poses_bounds.npy``).
        views: Number of images.
        annotated_views: View indices that get masks; None = (0, views // 2, views - 1).
        fov_x_deg: Horizontal field of view, degrees.
        stripe_period_px: Pattern period, px at full size and ``REFERENCE_DEPTH``.
        ambient: Shading floor in [0, 1]; 1 = no Lambertian term.
        jitter: Standard deviation of the per-seed jitter of centres and look-at, world units.
    """

    seed: int = 0
    width: int = 640
    height: int = 480
    views: int = 12
    annotated_views: tuple[int, ...] | None = None
    fov_x_deg: float = 60.0
    stripe_period_px: float = 40.0
    ambient: float = 0.85
    jitter: float = 0.02

    def __post_init__(self) -> None:
        if self.width < 8 or self.height < 8 or self.views < 1:
            raise ValueError(f'SyntheticSceneConfig: need width, height >= 8 and views >= 1, '
                             f'found {self.width} x {self.height}, {self.views} views')
        if not 0 < self.fov_x_deg < 150 or not 0 <= self.ambient <= 1:
            raise ValueError(f'SyntheticSceneConfig: fov_x_deg in (0, 150) and ambient in '
                             f'[0, 1], found {self.fov_x_deg}, {self.ambient}')
        if any(not 0 <= v < self.views for v in self.annotated):
            raise ValueError(f'SyntheticSceneConfig.annotated_views: indices must be in '
                             f'[0, {self.views}), found {self.annotated_views}')

    @property
    def focal(self) -> float:
        """Focal length at full size, px."""
        return 0.5 * self.width / float(np.tan(np.radians(self.fov_x_deg) / 2))

    @property
    def annotated(self) -> tuple[int, ...]:
        """The annotated view indices, sorted and unique."""
        views = self.annotated_views
        if views is None:
            views = (0, self.views // 2, self.views - 1)
        return tuple(sorted(set(views)))

    @property
    def pattern_period(self) -> float:
        """Pattern period in world units."""
        return self.stripe_period_px * REFERENCE_DEPTH / self.focal


# Shapes: intersect(origins [P,3], directions [P,3]) -> (t [P], normals [P,3]); t = inf on a miss,
# t in units of the direction's length.

@dataclass(frozen=True)
class Wall:
    """The plane z = ``z`` facing +z (seen from either side)."""

    z: float

    def intersect(self, origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(divide='ignore', invalid='ignore'):
            t = (self.z - origins[:, 2]) / dirs[:, 2]
        t = np.where(np.isfinite(t) & (t > _EPS), t, np.inf)
        return t, np.broadcast_to(np.array([0.0, 0.0, 1.0]), dirs.shape)


@dataclass(frozen=True)
class Box:
    """The axis-aligned box ``lo <= p <= hi`` (seen from outside)."""

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]

    def intersect(self, origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        safe = np.where(dirs == 0, 1e-300, dirs)
        t0 = (np.asarray(self.lo) - origins) / safe
        t1 = (np.asarray(self.hi) - origins) / safe
        t_near_axes = np.minimum(t0, t1)
        axis = t_near_axes.argmax(axis=1)
        t_near = t_near_axes.max(axis=1)
        t_far = np.maximum(t0, t1).min(axis=1)
        t = np.where((t_near <= t_far) & (t_near > _EPS), t_near, np.inf)
        normals = np.zeros_like(dirs)
        rows = np.arange(len(dirs))
        normals[rows, axis] = -np.sign(dirs[rows, axis])
        return t, normals


@dataclass(frozen=True)
class Sphere:
    """The sphere of ``radius`` around ``centre``."""

    centre: tuple[float, float, float]
    radius: float

    def intersect(self, origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        oc = origins - np.asarray(self.centre)
        a = np.einsum('pi,pi->p', dirs, dirs)
        b = np.einsum('pi,pi->p', oc, dirs)
        disc = b * b - a * (np.einsum('pi,pi->p', oc, oc) - self.radius ** 2)
        t = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
        t = np.where((disc >= 0) & (t > _EPS), t, np.inf)
        normals = (origins + np.where(np.isfinite(t), t, 0.0)[:, None] * dirs - self.centre)
        return t, normals / self.radius


@dataclass(frozen=True)
class Cylinder:
    """The vertical (axis parallel to y) solid cylinder at (x, z), ``bottom <= y <= top``."""

    x: float
    z: float
    radius: float
    bottom: float
    top: float

    def intersect(self, origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ox, oz = origins[:, 0] - self.x, origins[:, 2] - self.z
        dx, dz = dirs[:, 0], dirs[:, 2]
        a = np.maximum(dx * dx + dz * dz, 1e-300)
        b = ox * dx + oz * dz
        disc = b * b - a * (ox * ox + oz * oz - self.radius ** 2)
        t_side = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
        y_side = origins[:, 1] + t_side * dirs[:, 1]
        t_side = np.where((disc >= 0) & (t_side > _EPS) & (y_side >= self.bottom)
                          & (y_side <= self.top), t_side, np.inf)
        t_caps = [self._cap(origins, dirs, y) for y in (self.top, self.bottom)]
        t = np.minimum(t_side, np.minimum(*t_caps))
        normals = np.zeros_like(dirs)
        side = (t == t_side) & np.isfinite(t)
        normals[side, 0] = (ox + t_side * dx)[side] / self.radius
        normals[side, 2] = (oz + t_side * dz)[side] / self.radius
        normals[~side & (t == t_caps[0]), 1] = 1.0
        normals[~side & (t == t_caps[1]) & (t != t_caps[0]), 1] = -1.0
        return t, normals

    def _cap(self, origins: np.ndarray, dirs: np.ndarray, y: float) -> np.ndarray:
        with np.errstate(divide='ignore', invalid='ignore'):
            t = (y - origins[:, 1]) / dirs[:, 1]
        px = origins[:, 0] + t * dirs[:, 0] - self.x
        pz = origins[:, 2] + t * dirs[:, 2] - self.z
        inside = np.isfinite(t) & (t > _EPS) & (px * px + pz * pz <= self.radius ** 2)
        return np.where(inside, t, np.inf)


@dataclass(frozen=True)
class SceneObject:
    """One class of the scene: its description (colour, pattern, shape noun) and its shape."""

    name: str
    shape: Wall | Box | Sphere | Cylinder


SCENE_OBJECTS: tuple[SceneObject, ...] = (
    SceneObject('white plain wall', Wall(-2.0)),
    SceneObject('brown banded table', Box((-1.1, -0.6, -2.0), (1.1, 0.0, -0.45))),
    SceneObject('red striped box', Box((-0.8, 0.0, -1.35), (-0.4, 0.36, -0.95))),
    SceneObject('red plain ball', Sphere((-0.05, 0.17, -0.8), 0.17)),
    SceneObject('blue checkered cylinder', Cylinder(0.35, -1.35, 0.17, 0.0, 0.5)),
    SceneObject('yellow plain box', Box((0.55, 0.0, -0.95), (0.85, 0.24, -0.65))),
)
"""The scene's classes in the order ``classes.txt`` lists them (not sorted)."""
CLASS_NAMES: tuple[str, ...] = tuple(sorted(o.name for o in SCENE_OBJECTS))
"""Class names as the 3D-OVS reader orders them (sorted); class index = position."""


def capture_poses(config: SyntheticSceneConfig) -> np.ndarray:
    """The capture's camera-to-world poses: float64 [N,3,4], NeRF convention, world frame."""
    rng = np.random.default_rng(config.seed)
    angles = 2 * np.pi * np.arange(config.views) / config.views
    centres = np.asarray(CAMERA_CENTRE) + np.stack(
        [SWEEP[0] * np.cos(angles), SWEEP[1] * np.sin(angles), np.zeros_like(angles)], axis=1)
    centres = centres + config.jitter * rng.standard_normal(centres.shape)
    targets = np.asarray(LOOK_AT) + config.jitter * rng.standard_normal(centres.shape)
    poses = np.empty((config.views, 3, 4))
    for i, (centre, target) in enumerate(zip(centres, targets, strict=True)):
        back = (centre - target) / np.linalg.norm(centre - target)
        right = np.cross([0.0, 1.0, 0.0], back)
        right /= np.linalg.norm(right)
        poses[i] = np.stack([right, np.cross(back, right), back, centre], axis=1)
    return poses


def render_view(config: SyntheticSceneConfig, c2w: np.ndarray, h: int, w: int, focal: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray-cast one pinhole view of the scene (principal point at the image centre).

    Args:
        config: Supplies the pattern period and the ambient term.
        c2w: [3,4] camera-to-world, NeRF convention, world frame (as :func:`capture_poses`).
        h, w: Image size, px. focal: Focal length, px. Rays pass through pixel centres (+0.5).

    Returns:
        (rgb uint8 [h,w,3]; class index int64 [h,w] into ``CLASS_NAMES``, -1 where a ray hits
        nothing (black, never in the capture's views); depth float64 [h,w]: distance along the
        camera's viewing axis (-z) in world units, inf where nothing is hit).
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    u = (np.arange(w) + 0.5 - w / 2) / focal
    v = (np.arange(h) + 0.5 - h / 2) / focal
    cam = np.stack(np.broadcast_arrays(u[None, :], -v[:, None], -1.0), axis=-1).reshape(-1, 3)
    dirs = cam @ c2w[:, :3].T
    origins = np.broadcast_to(c2w[:, 3], dirs.shape)
    hits = [obj.shape.intersect(origins, dirs) for obj in SCENE_OBJECTS]
    ts = np.stack([t for t, _ in hits])
    nearest = ts.argmin(axis=0)
    depth = ts.min(axis=0)
    rgb = np.zeros((len(dirs), 3))
    class_index = np.full(len(dirs), -1, dtype=np.int64)
    for k, obj in enumerate(SCENE_OBJECTS):
        sel = (nearest == k) & np.isfinite(depth)
        class_index[sel] = CLASS_NAMES.index(obj.name)
        points = origins[sel] + depth[sel, None] * dirs[sel]
        rgb[sel] = _surface_colour(config, obj.name, points, hits[k][1][sel])
    rgb8 = np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)
    return rgb8.reshape(h, w, 3), class_index.reshape(h, w), depth.reshape(h, w)


def _surface_colour(config: SyntheticSceneConfig, name: str, points: np.ndarray,
                    normals: np.ndarray) -> np.ndarray:
    """Shaded, patterned colour float64 [P,3] in [0, ~1.2] of class ``name`` at world points."""
    base, (along_x, along_y) = parse_description(name)
    phase = 2 * np.pi / config.pattern_period
    upward = np.abs(normals[:, 1]) > 0.7
    vertical = np.where(upward, points[:, 2], points[:, 1])
    wave = np.ones(len(points))
    if along_x:
        wave = wave * np.sin(phase * points[:, 0])
    if along_y:
        wave = wave * np.sin(phase * vertical)
    if not (along_x or along_y):
        wave = np.zeros(len(points))
    lambert = np.maximum(normals @ np.asarray(LIGHT), 0.0)
    shade = config.ambient + (1.0 - config.ambient) * lambert
    return base[None, :] * ((1.0 + 0.5 * PATTERN_CONTRAST * wave) * shade)[:, None]


def make_synthetic_scene(out: str | os.PathLike[str], config: SyntheticSceneConfig) -> Path:
    """Write the synthetic capture as a 3D-OVS scene folder at ``out`` (module docstring).

    Files: ``images/IMG_<i:04d>.png`` (RGB, full size), ``poses_bounds.npy`` (LLFF, hwf =
    (height, width, focal), per-view bounds 0.9 x min depth and 1.1 x max depth),
    ``segmentations/classes.txt`` (scene order), ``segmentations/<i:02d>/<class>.png`` (exact
    0/255, all zero when the class is not visible) for the annotated views, ``synthetic.json``.
    The folder is assembled under a temporary sibling name and renamed into place.

    Returns:
        ``out`` as a Path.

    Raises:
        FileExistsError: ``out`` exists and is not an empty folder.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f'{out}: exists and is not an empty folder')
    tmp = temporary_sibling(out)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_scene(tmp, config)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _write_scene(root: Path, config: SyntheticSceneConfig) -> None:
    """Render every view and write the layout under ``root``."""
    poses = capture_poses(config)
    (root / IMAGE_DIR).mkdir(parents=True)
    (root / SEGMENTATION_DIR).mkdir()
    bounds = np.empty((config.views, 2))
    digits = max(2, len(str(config.views - 1)))
    for i, c2w in enumerate(poses):
        rgb, class_index, depth = render_view(config, c2w, config.height, config.width,
                                              config.focal)
        if (class_index < 0).any():
            raise RuntimeError(f'synthetic view {i}: {int((class_index < 0).sum())} rays hit '
                               f'nothing; the capture must look at the wall')
        bounds[i] = NEAR_MARGIN * depth.min(), FAR_MARGIN * depth.max()
        _write_png(root / IMAGE_DIR / f'IMG_{i:04d}.png', rgb)
        if i in config.annotated:
            folder = root / SEGMENTATION_DIR / f'{i:0{digits}d}'
            folder.mkdir()
            for index, name in enumerate(CLASS_NAMES):
                mask = np.where(class_index == index, 255, 0).astype(np.uint8)
                _write_png(folder / f'{name}.png', mask)
    (root / SEGMENTATION_DIR / CLASSES_FILE).write_text(
        ''.join(f'{o.name}\n' for o in SCENE_OBJECTS), encoding='utf-8')
    write_poses_bounds(root / POSES_BOUNDS, poses, (config.height, config.width, config.focal),
                       bounds)
    provenance = {'generator': __name__, 'config': asdict(config), 'classes': list(CLASS_NAMES)}
    (root / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, sort_keys=True) + '\n',
                                        encoding='utf-8')


def _write_png(path: Path, pixels: np.ndarray) -> None:
    """Write uint8 [H,W] (grey) or [H,W,3] (RGB) pixels as a PNG."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format='PNG')
    path.write_bytes(buffer.getvalue())
