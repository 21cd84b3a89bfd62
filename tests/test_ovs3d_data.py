"""3D-OVS data: the LLFF pose file and its processing, the scene reader, the synthetic capture.

One default synthetic scene (12 views of 640 x 480, about 3 s) is generated per module; tests
that damage a scene write a tiny one of their own. Expected values are hand-derived (the LLFF
column order, the average-pose formula of ovs3d.md section 2) or come from the renderer's exact
geometry (the ball's silhouette, the class maps).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cns_ros.ovs3d import llff
from cns_ros.ovs3d.dataset import Ovs3dSceneError, read_scene
from cns_ros.ovs3d.lexicon import COLOURS, PATTERNS, parse_description
from cns_ros.ovs3d.synthetic import (
    CLASS_NAMES,
    SCENE_OBJECTS,
    Box,
    Sphere,
    SyntheticSceneConfig,
    capture_poses,
    make_synthetic_scene,
    render_view,
)

CONFIG = SyntheticSceneConfig()
TINY = SyntheticSceneConfig(width=64, height=48, views=4)
SORTED_CLASSES = ('blue checkered cylinder', 'brown banded table', 'red plain ball',
                  'red striped box', 'white plain wall', 'yellow plain box')


@pytest.fixture(scope='module')
def scene_root(tmp_path_factory) -> Path:
    return make_synthetic_scene(tmp_path_factory.mktemp('ovs3d') / 'table', CONFIG)


@pytest.fixture
def tiny_root(tmp_path) -> Path:
    return make_synthetic_scene(tmp_path / 'tiny', TINY)


def _object(name: str):
    return next(o.shape for o in SCENE_OBJECTS if o.name == name)


def _average_pose(c2w: np.ndarray) -> np.ndarray:
    """ovs3d.md section 2, written out: mean centre, mean z, x = y_mean x z, y = z x x."""
    z = c2w[:, :, 2].mean(0) / np.linalg.norm(c2w[:, :, 2].mean(0))
    x = np.cross(c2w[:, :, 1].mean(0), z)
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z, c2w[:, :, 3].mean(0)], axis=1)


def _project(c2w: np.ndarray, point: np.ndarray, focal: float, h: int, w: int) -> np.ndarray:
    """Pinhole (u, v) px of a point for a NeRF camera-to-world (looking along -z)."""
    cam = c2w[:, :3].T @ (point - c2w[:, 3])
    return np.array([w / 2 + focal * cam[0] / -cam[2], h / 2 - focal * cam[1] / -cam[2]])


# --- the reader on a generated scene -----------------------------------------------------------

def test_reader_round_trip(scene_root):
    scene = read_scene(scene_root)
    height, width, focal = scene.hwf
    assert (height, width) == (480, 640) and focal == pytest.approx(CONFIG.focal)
    assert scene.class_names == SORTED_CLASSES == CLASS_NAMES
    assert scene.annotated_views == (0, 6, 11)
    assert [p.name for p in scene.image_paths] == [f'IMG_{i:04d}.png' for i in range(12)]
    assert scene.poses.shape == (12, 3, 4) and scene.poses.dtype == np.float32
    assert scene.bounds.shape == (12, 2) and scene.bounds.dtype == np.float32
    assert scene.size(8) == (60, 80) and scene.size(2.5) == (192, 256)
    assert scene.focal(8) == pytest.approx(focal * 80 / 640)
    rgb, _, _ = render_view(CONFIG, capture_poses(CONFIG)[3], 480, 640, CONFIG.focal)
    np.testing.assert_array_equal(scene.image(3, 1), rgb)
    assert scene.image(3, 8).shape == (60, 80, 3) and scene.image(3, 8).dtype == np.uint8
    assert (scene_root / 'segmentations' / 'classes.txt').read_text().splitlines() == [
        o.name for o in SCENE_OBJECTS]  # file order is the scene's; the reader sorts


@pytest.mark.parametrize('downsample', [1.0, 2.5, 8.0])
def test_masks_equal_the_renderers_class_map_resized_nearest(scene_root, downsample):
    scene = read_scene(scene_root)
    height, width = scene.size(downsample)
    poses = capture_poses(CONFIG)
    for view in scene.annotated_views:
        _, class_index, _ = render_view(CONFIG, poses[view], 480, 640, CONFIG.focal)
        small = Image.fromarray(class_index.astype(np.uint8)).resize(
            (width, height), Image.Resampling.NEAREST)
        expected = np.asarray(small)[:, :, None] == np.arange(len(CLASS_NAMES))
        masks = scene.masks(view, downsample)
        assert masks.dtype == bool and masks.shape == (height, width, 6)
        np.testing.assert_array_equal(masks, expected)
        assert (masks.sum(axis=2) == 1).all()  # the wall leaves no pixel unlabelled


def test_masks_of_an_unannotated_view_raise(scene_root):
    with pytest.raises(Ovs3dSceneError, match='view 1 is not annotated'):
        read_scene(scene_root).masks(1, 8)


def test_images_are_sized_from_the_stored_hwf_not_the_files(tiny_root):
    originals = [np.asarray(Image.open(p)) for p in sorted((tiny_root / 'images').iterdir())]
    for path in sorted((tiny_root / 'images').iterdir()):
        with Image.open(path) as image:
            image.resize((128, 96), Image.Resampling.BICUBIC).save(path.with_suffix('.JPG'),
                                                                   quality=95)
        path.unlink()
    scene = read_scene(tiny_root)
    assert [p.suffix for p in scene.image_paths] == ['.JPG'] * 4
    for view, original in enumerate(originals):
        image = scene.image(view, 1)
        assert image.shape == (48, 64, 3)
        assert np.abs(image.astype(float) - original).mean() < 12


# --- LLFF poses ------------------------------------------------------------------------------

def test_write_poses_bounds_stores_llff_down_right_back_columns(tmp_path):
    c2w = np.array([[[1.0, 0, 0, 1], [0, 1, 0, 2], [0, 0, 1, 3]]])  # NeRF identity at (1,2,3)
    llff.write_poses_bounds(tmp_path / 'p.npy', c2w, (48, 64, 50.0), np.array([[0.5, 4.0]]))
    stored = np.load(tmp_path / 'p.npy')
    expected = [0, 1, 0, 1, 48,  # down = -up = (0,-1,0), right = (1,0,0), back = (0,0,1)
                -1, 0, 0, 2, 64,
                0, 0, 1, 3, 50.0, 0.5, 4.0]
    assert stored.shape == (1, 17) and stored.dtype == np.float64
    np.testing.assert_array_equal(stored[0], expected)


def test_write_then_read_gives_the_original_poses_after_the_reorder(tmp_path):
    rng = np.random.default_rng(3)
    rotations, _ = np.linalg.qr(rng.standard_normal((7, 3, 3)))
    c2w = np.concatenate([rotations, rng.standard_normal((7, 3, 1))], axis=2)
    bounds = np.stack([rng.uniform(0.5, 1, 7), rng.uniform(2, 5, 7)], axis=1)
    llff.write_poses_bounds(tmp_path / 'p.npy', c2w, (480, 640, 500.5), bounds)
    read = llff.read_poses_bounds(tmp_path / 'p.npy')
    assert read.hwf == (480, 640, 500.5)
    np.testing.assert_array_equal(llff.llff_to_nerf(read.c2w_llff), c2w)
    np.testing.assert_array_equal(llff.nerf_to_llff(c2w), read.c2w_llff)
    np.testing.assert_array_equal(read.bounds, bounds)


def test_recentred_average_pose_is_the_identity(scene_root):
    scene = read_scene(scene_root)
    average = _average_pose(scene.poses.astype(np.float64))
    np.testing.assert_allclose(average, np.eye(3, 4), atol=1e-6)
    np.testing.assert_allclose(scene.poses[:, :, :3] @ scene.poses[:, :, :3].transpose(0, 2, 1),
                               np.broadcast_to(np.eye(3), (12, 3, 3)), atol=1e-6)


def test_bounds_and_centres_scale_with_the_nearest_depth(scene_root):
    scene = read_scene(scene_root)
    raw = np.load(scene_root / 'poses_bounds.npy')
    assert scene.bounds[:, 0].min() * 0.75 == pytest.approx(1.0, abs=1e-6)
    assert scene.rays_scale == pytest.approx(1 / (0.75 * raw[:, 15].min()), rel=1e-12)
    np.testing.assert_allclose(scene.bounds, raw[:, 15:] * scene.rays_scale, rtol=1e-6)
    world = capture_poses(CONFIG)[:, :, 3]
    gaps = np.linalg.norm(world[:, None] - world[None], axis=2)
    processed = scene.poses[:, :, 3].astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(processed[:, None] - processed[None], axis=2),
                               gaps * scene.rays_scale, atol=1e-6)


def test_processed_poses_project_box_corners_where_the_world_cameras_do(scene_root):
    scene = read_scene(scene_root)
    world = capture_poses(CONFIG)
    average = _average_pose(world)
    box = _object('red striped box')
    assert isinstance(box, Box)
    corners = np.array([[x, y, z] for x in (box.lo[0], box.hi[0]) for y in (box.lo[1], box.hi[1])
                        for z in (box.lo[2], box.hi[2])])
    for view in range(12):
        for corner in corners:
            scaled = scene.rays_scale * average[:, :3].T @ (corner - average[:, 3])
            uv = _project(scene.poses[view].astype(np.float64), scaled, CONFIG.focal, 480, 640)
            expected = _project(world[view], corner, CONFIG.focal, 480, 640)
            np.testing.assert_allclose(uv, expected, atol=1e-3)


def test_processed_poses_reproduce_the_drawn_ball_silhouette(scene_root):
    """Every pixel whose processed-frame ray passes inside the scaled ball is drawn as ball, and
    no other; only rays tangent to within 1e-4 radii may disagree (float32 poses)."""
    scene = read_scene(scene_root)
    average = _average_pose(capture_poses(CONFIG))
    ball = _object('red plain ball')
    assert isinstance(ball, Sphere)
    centre = scene.rays_scale * average[:, :3].T @ (np.asarray(ball.centre) - average[:, 3])
    radius = scene.rays_scale * ball.radius
    u, v = np.meshgrid(np.arange(640) + 0.5, np.arange(480) + 0.5)
    cam = np.stack([(u - 320) / CONFIG.focal, -(v - 240) / CONFIG.focal, -np.ones_like(u)], -1)
    for view in scene.annotated_views:
        pose = scene.poses[view].astype(np.float64)
        dirs = cam @ pose[:, :3].T
        to_centre = centre - pose[:, 3]
        dist = np.linalg.norm(np.cross(to_centre, dirs), axis=-1) / np.linalg.norm(dirs, axis=-1)
        predicted = dist < radius
        drawn = scene.masks(view, 1)[:, :, CLASS_NAMES.index('red plain ball')]
        assert drawn.sum() > 1000
        disagree = predicted != drawn
        assert (np.abs(dist - radius)[disagree] < 1e-4 * radius).all(), disagree.sum()


# --- bad input ---------------------------------------------------------------------------------

def _remove_mask(root: Path) -> str:
    (root / 'segmentations' / '00' / 'red plain ball.png').unlink()
    return r"00/red plain ball\.png: missing mask for class 'red plain ball'"


def _extra_mask(root: Path) -> str:
    shutil.copy(root / 'segmentations' / '00' / 'red plain ball.png',
                root / 'segmentations' / '00' / 'green plain cone.png')
    return r"00/green plain cone\.png: mask for class 'green plain cone' which is not in"


def _remove_image(root: Path) -> str:
    (root / 'images' / 'IMG_0003.png').unlink()
    return r'images: 3 images but .*poses_bounds\.npy has 4 poses'


def _non_integer_folder(root: Path) -> str:
    (root / 'segmentations' / '00').rename(root / 'segmentations' / 'view0')
    return r"segmentations/view0: .*must be an integer.*'view0'"


def _view_beyond_images(root: Path) -> str:
    (root / 'segmentations' / '00').rename(root / 'segmentations' / '7')
    return r'segmentations/7: view index 7 is outside the 4 images'


def _two_folders_one_view(root: Path) -> str:
    shutil.copytree(root / 'segmentations' / '00', root / 'segmentations' / '000')
    return r'segmentations/000: view 0 also annotated in .*segmentations/00'


def _bad_pose_shape(root: Path) -> str:
    np.save(root / 'poses_bounds.npy', np.ones((4, 15)))
    return r'poses_bounds\.npy: expected an \(N, 17\) array .*found shape \(4, 15\)'


def _non_finite_pose(root: Path) -> str:
    array = np.load(root / 'poses_bounds.npy')
    array[2, 3] = np.nan
    np.save(root / 'poses_bounds.npy', array)
    return r'poses_bounds\.npy: non-finite values in rows \[2\]'


def _duplicate_class(root: Path) -> str:
    with open(root / 'segmentations' / 'classes.txt', 'a', encoding='utf-8') as handle:
        handle.write('\n  red plain ball  \n')
    return r"classes\.txt: duplicate class names \['red plain ball'\]"


@pytest.mark.parametrize('damage', [_remove_mask, _extra_mask, _remove_image, _non_integer_folder,
                                    _view_beyond_images, _two_folders_one_view, _bad_pose_shape,
                                    _non_finite_pose, _duplicate_class])
def test_bad_scenes_raise_naming_the_file(tiny_root, damage):
    pattern = damage(tiny_root)
    with pytest.raises(Ovs3dSceneError, match=pattern) as info:
        read_scene(tiny_root)
    assert isinstance(info.value, ValueError) and str(tiny_root) in str(info.value)


def test_classes_file_lines_are_stripped_and_blank_lines_dropped(tiny_root):
    path = tiny_root / 'segmentations' / 'classes.txt'
    path.write_text('\n'.join(f'  {line}\t' for line in path.read_text().splitlines()) + '\n\n')
    assert read_scene(tiny_root).class_names == SORTED_CLASSES


def test_llff_reader_rejects_bad_bounds_naming_the_file(tmp_path):
    c2w = np.broadcast_to(np.eye(3, 4), (2, 3, 4))
    llff.write_poses_bounds(tmp_path / 'p.npy', c2w, (8, 8, 8.0), np.array([[1, 2], [0, 2.0]]))
    with pytest.raises(llff.LlffFormatError, match=re.escape(str(tmp_path / 'p.npy'))):
        llff.read_poses_bounds(tmp_path / 'p.npy')


# --- the synthetic capture ---------------------------------------------------------------------

def test_same_seed_same_bytes_other_seed_other_poses(tmp_path):
    first = make_synthetic_scene(tmp_path / 'a', TINY)
    second = make_synthetic_scene(tmp_path / 'b', TINY)
    other = make_synthetic_scene(tmp_path / 'c', SyntheticSceneConfig(
        seed=1, width=64, height=48, views=4))
    for name in ('images/IMG_0001.png', 'poses_bounds.npy', 'segmentations/02/red plain ball.png'):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    assert not np.array_equal(np.load(first / 'poses_bounds.npy'),
                              np.load(other / 'poses_bounds.npy'))


def test_two_classes_share_a_colour_and_differ_in_pattern_and_shape():
    words = {name: name.split() for name in CLASS_NAMES}
    assert all(w[0] in COLOURS and w[1] in PATTERNS for w in words.values())
    pairs = [(a, b) for a in CLASS_NAMES for b in CLASS_NAMES
             if a < b and words[a][0] == words[b][0]]
    assert pairs == [('red plain ball', 'red striped box')]
    (a, b), = pairs
    np.testing.assert_array_equal(parse_description(a)[0], parse_description(b)[0])
    assert words[a][1:] != words[b][1:] and words[a][2] != words[b][2]


def test_scene_layout_is_exactly_3d_ovs_plus_provenance(scene_root):
    top = sorted(p.name for p in scene_root.iterdir())
    assert top == ['images', 'poses_bounds.npy', 'segmentations', 'synthetic.json']
    folders = sorted(p.name for p in (scene_root / 'segmentations').iterdir())
    assert folders == ['00', '06', '11', 'classes.txt']
    for folder in folders[:-1]:
        masks = sorted((scene_root / 'segmentations' / folder).iterdir())
        assert [p.stem for p in masks] == list(CLASS_NAMES)
        for path in masks:
            values = set(np.unique(np.asarray(Image.open(path))).tolist())
            assert values <= {0, 255} and Image.open(path).mode == 'L'
    total = sum(p.stat().st_size for p in scene_root.rglob('*') if p.is_file())
    assert total < 3_000_000
    assert not list(scene_root.parent.glob('.*tmp*'))


def test_make_synthetic_scene_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / 'x').mkdir()
    (tmp_path / 'x' / 'keep.txt').write_text('mine')
    with pytest.raises(FileExistsError, match='not an empty folder'):
        make_synthetic_scene(tmp_path / 'x', TINY)
    assert (tmp_path / 'x' / 'keep.txt').read_text() == 'mine'


def test_bounds_bracket_every_views_depths(scene_root):
    bounds = np.load(scene_root / 'poses_bounds.npy')[:, 15:]
    for view, c2w in enumerate(capture_poses(CONFIG)):
        _, _, depth = render_view(CONFIG, c2w, 60, 80, CONFIG.focal / 4)
        assert bounds[view, 0] < depth.min() and depth.max() < bounds[view, 1]


def _inner(mask: np.ndarray) -> np.ndarray:
    """Mask pixels whose four neighbours are in the mask too."""
    return (mask & np.roll(mask, 1, 1) & np.roll(mask, -1, 1) & np.roll(mask, 1, 0)
            & np.roll(mask, -1, 0))


def test_striped_box_varies_along_image_x_and_the_ball_is_plain(scene_root):
    """The red box's stripes: strong horizontal gradients, weak vertical ones, period 32-48 px
    (the lexicon's 'striped'); the red ball, same colour, has only smooth shading."""
    scene = read_scene(scene_root)
    red = scene.image(6, 1)[:, :, 0].astype(float)
    grad_x = np.abs(np.diff(red, axis=1, append=0))
    grad_y = np.abs(np.diff(red, axis=0, append=0))
    masks = scene.masks(6, 1)
    box = _inner(masks[:, :, CLASS_NAMES.index('red striped box')])
    ball = _inner(masks[:, :, CLASS_NAMES.index('red plain ball')])
    assert grad_x[box].mean() > 3 * grad_y[box].mean()
    assert grad_x[ball].mean() < grad_x[box].mean() / 3
    rows, cols = np.nonzero(box)
    row = np.bincount(rows).argmax()
    profile = red[row, cols[rows == row]]
    peaks = np.flatnonzero((profile[1:-1] > profile[:-2]) & (profile[1:-1] >= profile[2:]))
    assert len(peaks) >= 3
    assert 32 <= np.median(np.diff(peaks)) <= 48
