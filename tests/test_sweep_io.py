"""decode_sweep (cns_ros.ros.sweep_io): the columns a bundle needs, read from the cloud, with
every repair counted; here the packed ``rgb`` colour of RGB-D clouds."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cns_ros.pointcloud import create_cloud_from_columns
from cns_ros.ros.sweep_io import decode_sweep

# Hand-packed 0x00RRGGBB colours: (255, 0, 0), (0, 128, 255), (1, 2, 3), (0, 0, 0)
COLORS = np.array([[255, 0, 0], [0, 128, 255], [1, 2, 3], [0, 0, 0]], np.float32)
PACKED = np.array([0xFF0000, 0x0080FF, 0x010203, 0x000000], np.uint32)


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, bool]] = []

    def __call__(self, reason: str, message: str, drop: bool, **_) -> None:
        self.seen.append((reason, drop))


def cloud(**extra):
    xyz = np.arange(12, dtype=np.float32).reshape(4, 3)
    return create_cloud_from_columns({'x': xyz[:, 0], 'y': xyz[:, 1], 'z': xyz[:, 2],
                                      'intensity': np.full(4, 7, np.float32), **extra})


@pytest.mark.parametrize('packed', [PACKED.view(np.float32), PACKED], ids=['float32', 'uint32'])
def test_packed_rgb_becomes_colours(packed):
    report = Events()
    _, columns = decode_sweep(cloud(rgb=packed), 100, ('intensity', 'rgb'), report)
    np.testing.assert_array_equal(columns['rgb'], COLORS)
    assert columns['rgb'].dtype == np.float32 and report.seen == []
    np.testing.assert_array_equal(columns['intensity'], np.full(4, 7, np.float32))


def test_organized_cloud_keeps_row_major_order():
    flat = cloud(rgb=PACKED.view(np.float32))
    organized = dataclasses.replace(flat, height=2, width=2, row_step=2 * flat.point_step)
    xyz, columns = decode_sweep(organized, 100, ('rgb',), Events())
    np.testing.assert_array_equal(xyz[:, 0], [0, 3, 6, 9])
    np.testing.assert_array_equal(columns['rgb'], COLORS)


def test_missing_or_unusable_rgb_is_a_counted_event_with_zeros():
    report = Events()
    _, columns = decode_sweep(cloud(), 100, ('intensity', 'rgb'), report)
    np.testing.assert_array_equal(columns['rgb'], np.zeros((4, 3), np.float32))
    assert report.seen == [('no_rgb', False)]
    report = Events()
    _, columns = decode_sweep(cloud(rgb=np.ones(4, np.float64)), 100, ('rgb',), report)
    assert report.seen == [('bad_rgb', False)] and not columns['rgb'].any()


def test_rgb_is_not_read_when_the_bundle_does_not_take_it():
    report = Events()
    _, columns = decode_sweep(cloud(rgb=PACKED), 100, ('intensity',), report)
    assert set(columns) == {'intensity'} and report.seen == []


def test_an_rgb_bundle_labels_with_the_cloud_colours(tmp_path):
    pytest.importorskip('spconv')
    from test_segmenter import OPTIONS, make_tiny_bundle

    from cns_ros.segmenter import Segmenter

    bundle = make_tiny_bundle(tmp_path / 'rgb', options={**OPTIONS,
                                                          'input_features': ['xyz', 'rgb']})
    segmenter = Segmenter(bundle, device='cpu')
    rng = np.random.default_rng(0)
    n = 2000
    xyz = rng.uniform(-10, 10, (n, 3)).astype(np.float32)
    colours = rng.integers(0, 256, (n, 3)).astype(np.uint32)
    packed = (colours[:, 0] << 16) | (colours[:, 1] << 8) | colours[:, 2]
    base = {'x': xyz[:, 0], 'y': xyz[:, 1], 'z': xyz[:, 2]}
    results = []
    for rgb in (packed, np.zeros(n, np.uint32)):
        report = Events()
        _, columns = decode_sweep(create_cloud_from_columns({**base, 'rgb': rgb}), n,
                                  segmenter.bundle.input_features, report)
        np.testing.assert_array_equal(columns['rgb'], colours * (rgb is packed))
        results.append(segmenter.segment(xyz, columns))
        assert report.seen == [('no_intensity', False)]
    assert results[0].missing_columns == () and results[1].missing_columns == ()
    assert (results[0].labels != results[1].labels).any()  # the colours reach the network
