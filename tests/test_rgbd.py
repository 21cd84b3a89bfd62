"""RGB-D frames without ROS: back-projection (cns_ros.rgbd) against hand-computed pixels, depth
and colour decoding, and the node's frame decoding / outputs (cns_ros.ros.rgbd_io) on
message-like objects, with every malformed case dropped under its reason."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from cns_ros.geometry import project_points
from cns_ros.pointcloud import create_cloud, pack_rgb, read_cloud, unpack_rgb
from cns_ros.rgbd import (
    NO_LABEL,
    RayCache,
    decode_depth,
    depth_to_points,
    invalid_points,
    label_image,
    pixel_rays,
    raw_image_rgb,
)
from cns_ros.ros.rgbd_io import (
    RGBD_DROP_REASONS,
    decode_rgbd_cloud,
    decode_rgbd_images,
    label_image_fields,
    labeled_frame_cloud,
)

# fx 100, fy 50, principal point (2, 1): small numbers a reader can redo by hand.
K = np.array([[100.0, 0.0, 2.0], [0.0, 50.0, 1.0], [0.0, 0.0, 1.0]])
# 3 rows x 4 columns (metres): 0 / NaN / inf / negative are "no measurement".
DEPTH = np.array([[1.5, 2.0, 0.0, 2.0],
                  [1.0, np.nan, 3.0, np.inf],
                  [2.0, -1.0, 4.0, 2.0]], np.float32)
INVALID = ~(np.isfinite(DEPTH) & (DEPTH > 0))


class Drops:
    """A report callable that records (reason, drop)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bool]] = []

    def __call__(self, reason: str, message: str, drop: bool, **_) -> None:
        self.seen.append((reason, drop))


def image(data: np.ndarray, encoding: str, *, frame: str = 'cam', big: bool = False,
          pad: int = 0):
    """A sensor_msgs/Image-like object of an (H, W[, C]) array (``pad`` bytes after each row)."""
    height, width = data.shape[:2]
    rows = np.ascontiguousarray(data).view(np.uint8).reshape(height, -1)
    if pad:
        rows = np.concatenate([rows, np.full((height, pad), 0xEE, np.uint8)], axis=1)
    return SimpleNamespace(header=SimpleNamespace(frame_id=frame, stamp=None), height=height,
                           width=width, encoding=encoding, is_bigendian=int(big),
                           step=rows.shape[1], data=rows.tobytes())


def camera_info(k=K, width: int = 4, height: int = 3, d=(0.0,) * 5):
    return SimpleNamespace(width=width, height=height, k=list(np.ravel(k)), d=list(d),
                           distortion_model='plumb_bob')


# --- cns_ros.rgbd ----------------------------------------------------------------------------

def test_back_projection_of_hand_computed_pixels():
    points = depth_to_points(DEPTH, K)
    assert points.shape == (3, 4, 3) and points.dtype == np.float32
    # pixel (col 0, row 0), z 1.5: x = (0 - 2) / 100 * 1.5, y = (0 - 1) / 50 * 1.5
    np.testing.assert_allclose(points[0, 0], [-0.03, -0.03, 1.5], rtol=1e-6)
    # (col 3, row 2), z 2: x = (3 - 2) / 100 * 2 = 0.02, y = (2 - 1) / 50 * 2 = 0.04
    np.testing.assert_allclose(points[2, 3], [0.02, 0.04, 2.0], rtol=1e-6)
    # (col 2, row 1), z 3: on the principal row: y = 0
    np.testing.assert_allclose(points[1, 2], [0.0, 0.0, 3.0], atol=1e-7)
    assert np.isnan(points[INVALID]).all() and np.isfinite(points[~INVALID]).all()
    skewed = K.copy()
    skewed[0, 1] = 10.0  # u = fx x + s y + cx: y = 1 / 50, x = (3 - 2 - 10 * 0.02) / 100
    np.testing.assert_allclose(depth_to_points(DEPTH, skewed)[2, 3], [0.016, 0.04, 2.0],
                               rtol=1e-6)


@pytest.mark.parametrize('d', [(0.1, -0.05, 0.001, -0.002, 0.01),
                               (-0.3, 0.1, 0.001, 0.0005, -0.02, 0.01, 0.002, 0.0001)],
                         ids=['plumb_bob', 'rational_polynomial'])
def test_distorted_rays_project_back_onto_their_pixels(d):
    k = np.array([[300.0, 0.5, 80.0], [0.0, 310.0, 60.0], [0.0, 0.0, 1.0]])
    rays = pixel_rays(k, 160, 120, d)
    uv, depth = project_points((rays * 2.5).reshape(-1, 3), k, d)
    cols, rows = np.meshgrid(np.arange(160), np.arange(120))
    np.testing.assert_allclose(uv, np.stack([cols.ravel(), rows.ravel()], 1), atol=1e-3)
    np.testing.assert_allclose(depth, 2.5, rtol=1e-6)
    shift_px = np.abs(rays - pixel_rays(k, 160, 120)).max() * k[0, 0]
    assert shift_px > 0.5  # the distortion moves corner rays by more than half a pixel
    np.testing.assert_array_equal(pixel_rays(k, 160, 120, np.zeros(5)), pixel_rays(k, 160, 120))


def test_bad_intrinsics_and_shapes_are_refused():
    with pytest.raises(ValueError, match='K: expected'):
        pixel_rays(np.zeros((3, 3)), 4, 3)
    with pytest.raises(ValueError, match='D: expected'):
        pixel_rays(K, 4, 3, [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r'rays: expected shape \(3, 4, 3\)'):
        depth_to_points(DEPTH, rays=pixel_rays(K, 5, 3))
    with pytest.raises(ValueError, match='exactly one'):
        depth_to_points(DEPTH)


def test_ray_cache_recomputes_only_when_the_camera_changes():
    cache = RayCache()
    first = cache(K, 4, 3)
    assert cache(K.copy(), 4, 3) is first
    assert cache(K, 5, 3).shape == (3, 5, 3)
    other = K.copy()
    other[0, 0] = 200.0
    np.testing.assert_allclose(cache(other, 4, 3)[0, 0, 0], (0 - 2) / 200)


def test_depth_images_decode_to_metres():
    mm = np.array([[0, 1000], [1234, 65535]], np.uint16)
    np.testing.assert_allclose(decode_depth(image(mm, '16UC1')), [[0, 1], [1.234, 65.535]],
                               rtol=1e-6)
    np.testing.assert_allclose(decode_depth(image(mm.astype('>u2'), '16UC1', big=True)),
                               [[0, 1], [1.234, 65.535]], rtol=1e-6)
    np.testing.assert_allclose(decode_depth(image(mm, '16UC1', pad=6), unit=0.00025),
                               [[0, 0.25], [0.3085, 16.38375]], rtol=1e-6)
    metres = np.array([[0.5, np.nan], [2.25, 0.0]], np.float32)
    np.testing.assert_array_equal(decode_depth(image(metres, '32FC1', pad=4)), metres)
    with pytest.raises(ValueError, match="encoding 'mono16' not supported"):
        decode_depth(image(mm, 'mono16'))
    short = image(mm, '16UC1')
    short.data = short.data[:-2]
    with pytest.raises(ValueError, match='needs 8 bytes, found 6'):
        decode_depth(short)


def test_colour_images_decode_to_rgb():
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    np.testing.assert_array_equal(raw_image_rgb(image(rgb, 'rgb8', pad=3)), rgb)
    np.testing.assert_array_equal(raw_image_rgb(image(rgb[:, :, ::-1], 'bgr8')), rgb)
    rgba = np.concatenate([rgb, np.full((2, 3, 1), 9, np.uint8)], axis=2)
    np.testing.assert_array_equal(raw_image_rgb(image(rgba[:, :, [2, 1, 0, 3]], 'bgra8')), rgb)
    with pytest.raises(ValueError, match="colour image: encoding 'yuv422'"):
        raw_image_rgb(image(rgb, 'yuv422'))


def test_invalid_points_and_label_images():
    xyz = np.array([[1, 2, 3], [np.nan, 0, 1], [0, 0, 0], [0, 0, 1], [np.inf, 1, 1]],
                   np.float32)
    np.testing.assert_array_equal(invalid_points(xyz), [False, True, True, False, True])
    labels = np.array([3, 65535, 0, 19, 7, 1], np.uint16)
    np.testing.assert_array_equal(label_image(labels, 2, 3), [[3, 65535, 0], [19, 7, 1]])
    signed = np.array([3, -1, 70000, 2], np.int64)
    np.testing.assert_array_equal(label_image(signed, 2, 2), [[3, NO_LABEL], [NO_LABEL, 2]])
    with pytest.raises(ValueError, match='expected 2 x 2 = 4 entries, found 6'):
        label_image(labels, 2, 2)


# --- cns_ros.ros.rgbd_io ---------------------------------------------------------------------

def coloured_cloud(height: int, width: int, *, rgb: bool = True):
    """An organized x, y, z (+ packed rgb) cloud with padding after the fields: point k of the
    row-major grid is at (k, 2k, 3k) m with colour (k, 2k, 255 - k), except point 1 (x NaN) and
    point 4 (z = 0, so at (4, 8, 0): a measurement); point 0 is (0, 0, 0): no depth."""
    n = height * width
    names = ['x', 'y', 'z', *(['rgb'] if rgb else [])]
    dtype = np.dtype({'names': names, 'formats': ['<f4'] * len(names),
                      'offsets': [0, 4, 8, 16][:len(names)], 'itemsize': 32})
    points = np.zeros(n, dtype)
    k = np.arange(n, dtype=np.float32)
    points['x'], points['y'], points['z'] = k, 2 * k, 3 * k
    points['x'][1] = np.nan
    points['z'][4] = 0.0
    colours = np.stack([k, 2 * k, 255 - k], 1).astype(np.uint8)
    if rgb:
        points['rgb'] = pack_rgb(colours)
    return create_cloud(points.reshape(height, width) if height > 1 else points), colours


def test_an_organized_coloured_cloud_keeps_its_grid():
    cloud, colours = coloured_cloud(2, 3)
    drops = Drops()
    frame = decode_rgbd_cloud(cloud, 100, drops)
    assert drops.seen == [] and frame.shape == (2, 3) and frame.num_invalid == 2
    assert np.isnan(frame.xyz[[0, 1]]).all()  # (0, 0, 0) and the NaN point
    np.testing.assert_array_equal(frame.xyz[2:], [[2, 4, 6], [3, 6, 9], [4, 8, 0], [5, 10, 15]])
    np.testing.assert_array_equal(frame.rgb, colours.astype(np.float32))
    flat = dataclasses.replace(cloud, height=1, width=6, row_step=6 * cloud.point_step)
    assert decode_rgbd_cloud(flat, 100, drops).shape is None and drops.seen == []


def test_bad_coloured_clouds_are_dropped_by_reason():
    drops = Drops()
    assert decode_rgbd_cloud(coloured_cloud(2, 3, rgb=False)[0], 100, drops) is None
    assert decode_rgbd_cloud(coloured_cloud(2, 3)[0], 5, drops) is None
    truncated = coloured_cloud(2, 3)[0]
    truncated = dataclasses.replace(truncated, data=truncated.data[:-8])
    assert decode_rgbd_cloud(truncated, 100, drops) is None
    doubles = create_cloud(np.zeros(4, [('x', '<f4'), ('y', '<f4'), ('z', '<f4'),
                                        ('rgb', '<f8')]))
    assert decode_rgbd_cloud(doubles, 100, drops) is None
    assert drops.seen == [('missing_rgb', True), ('too_large', True), ('malformed', True),
                          ('bad_rgb', True)]


def images(depth_m=DEPTH, *, colour_encoding='bgr8', info=None, unit=0.001):
    """Depth (16UC1 mm, invalid -> 0) + colour ((col, row, col + row) RGB) messages."""
    mm = np.where(np.isfinite(depth_m) & (depth_m > 0), depth_m / unit, 0)
    depth = image(np.round(mm).astype(np.uint16), '16UC1')
    rows, cols = np.indices(depth_m.shape)
    rgb = np.stack([cols, rows, cols + rows], -1).astype(np.uint8)
    pixels = rgb[:, :, ::-1] if colour_encoding == 'bgr8' else rgb
    return depth, image(pixels, colour_encoding), camera_info() if info is None else info, rgb


def test_depth_and_colour_become_an_organized_cloud():
    depth, colour, info, rgb = images()
    drops = Drops()
    frame = decode_rgbd_images(depth, colour, info, depth_unit=0.001, max_points=100,
                               rays=RayCache(), report=drops)
    assert drops.seen == [] and frame.shape == (3, 4) and frame.header is colour.header
    assert frame.num_invalid == INVALID.sum() == 4
    np.testing.assert_allclose(frame.xyz.reshape(3, 4, 3)[2, 3], [0.02, 0.04, 2.0], rtol=1e-6)
    np.testing.assert_allclose(frame.xyz.reshape(3, 4, 3)[0, 0], [-0.03, -0.03, 1.5],
                               rtol=1e-6)
    assert np.isnan(frame.xyz[INVALID.ravel()]).all()
    np.testing.assert_array_equal(frame.rgb, rgb.reshape(-1, 3))  # bgr8 read as RGB


def test_malformed_rgbd_images_are_dropped_by_reason():
    depth, colour, info, _ = images()
    cases = {
        'unmatched_depth': (depth, None, info),
        'no_camera_info': (depth, colour, None),
        'bad_camera_info': (depth, colour, camera_info(k=np.zeros((3, 3)))),
        'bad_depth': (image(np.zeros((3, 4), np.uint8), 'mono8'), colour, info),
        'bad_color': (depth, image(np.zeros((3, 4, 2), np.uint8), 'yuv422'), info),
        'size_mismatch': (depth, image(np.zeros((3, 5, 3), np.uint8), 'rgb8'), info),
        'frame_mismatch': (image(np.ones((3, 4), np.uint16), '16UC1', frame='depth_optical'),
                           colour, info),
        'too_large': (image(np.ones((11, 10), np.uint16), '16UC1'), colour, info),
    }
    for reason, (d, c, i) in cases.items():
        drops = Drops()
        frame = decode_rgbd_images(d, c, i, depth_unit=0.001, max_points=100,
                                   rays=RayCache(), report=drops)
        assert frame is None and drops.seen == [(reason, True)], (reason, drops.seen)
    assert set(cases) - {'too_large'} <= set(RGBD_DROP_REASONS)
    documented = (Path(__file__).resolve().parents[1] / 'cns_ros' / 'ros' /
                  'segment_node.py').read_text()
    assert all(f'``{reason}``' in documented for reason in RGBD_DROP_REASONS)
    drops = Drops()  # CameraInfo of another resolution: a size mismatch too
    assert decode_rgbd_images(depth, colour, camera_info(width=8, height=6), depth_unit=0.001,
                              max_points=100, rays=RayCache(), report=drops) is None
    assert drops.seen == [('size_mismatch', True)]


def test_outputs_of_a_frame_stay_on_its_grid():
    depth, colour, info, rgb = images()
    frame = decode_rgbd_images(depth, colour, info, depth_unit=0.001, max_points=100,
                               rays=RayCache(), report=Drops())
    labels = np.where(INVALID.ravel(), 65535, np.arange(12) % 20).astype(np.uint16)
    confidence = np.where(INVALID.ravel(), 0.0, 0.5).astype(np.float32)
    classes = pack_rgb(np.full((12, 3), 7, np.uint8))
    cloud = labeled_frame_cloud(frame, labels, confidence, classes, photo_colors=False)
    assert (cloud.height, cloud.width, cloud.point_step) == (3, 4, 28) and not cloud.is_dense
    points = read_cloud(cloud, organized=True)
    np.testing.assert_array_equal(points['label'], labels.reshape(3, 4))
    assert np.isnan(points['x'][INVALID]).all() and (points['intensity'] == 0).all()
    np.testing.assert_array_equal(unpack_rgb(points['rgb'].ravel()), np.full((12, 3), 7))
    photo = read_cloud(labeled_frame_cloud(frame, labels, confidence, classes, True))
    np.testing.assert_array_equal(unpack_rgb(photo['rgb']), rgb.reshape(-1, 3))
    fields = label_image_fields(frame, labels)
    assert (fields['height'], fields['width'], fields['encoding'], fields['step']) == \
        (3, 4, 'mono16', 8) and fields['header'] is colour.header and not fields['is_bigendian']
    pixels = np.frombuffer(bytes(fields['data']), '<u2').reshape(3, 4)
    np.testing.assert_array_equal(pixels, points['label'])
    np.testing.assert_array_equal(pixels == 65535, INVALID)
    with pytest.raises(ValueError, match='unorganized'):
        label_image_fields(dataclasses.replace(frame, shape=None), labels)
