"""The synthetic indoor world in the ScanNet v2 layout, checked file by file.

One ``tiny`` world (a bathroom for train, a kitchen for val, 4 path frames each, about 2.5 s)
is generated per module; the determinism test makes a second one through the CLI. The files
are read back with code written here (PLY header parsed from the bytes, numpy dtypes spelled
out), never with the writer's own helpers, and the geometry is checked independently: mesh
vertices projected with the written pose and intrinsics must land on depth pixels that show
their own depth and label.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cns_ros.data.scannet_labels import TSV_COLUMNS, VALID_CLASS_IDS
from cns_ros.data.scannet_writer import ply_bytes, write_matrix, write_meta, write_ply
from cns_ros.data.synthetic import DatasetExistsError
from cns_ros.data.synthetic_indoor import (
    PRESETS,
    IndoorConfig,
    generate_synthetic_indoor,
    kinds_for,
    preset,
)
from cns_ros.data.synthetic_indoor_camera import camera_path
from cns_ros.data.synthetic_indoor_mesh import sample_mesh
from cns_ros.data.synthetic_indoor_render import depth_intrinsics, render_view, scaled_intrinsics
from cns_ros.data.synthetic_indoor_scene import build_scene
from cns_ros.geometry import resize_nearest
from offline_training import make_synthetic_indoor

cv2 = pytest.importorskip('cv2')

TINY = preset('tiny')
SCENES = ('scene0000_00', 'scene0011_00')
PATH_INDICES = (0, 20, 40, 60)          # path frame j -> .sens index 20 j
INDICES_25K = (0, 40)                   # every 2nd path frame
LOST = 40                               # the second 25k frame
VERTEX_DTYPE = np.dtype([('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('red', 'u1'),
                         ('green', 'u1'), ('blue', 'u1'), ('alpha', 'u1')])
LABEL_DTYPE = np.dtype([*VERTEX_DTYPE.descr, ('label', '<u2')])
FACE_DTYPE = np.dtype([('n', 'u1'), ('i', '<i4', (3,))])
BENCHMARK_RGB = {1: (174, 199, 232), 2: (152, 223, 138), 3: (31, 119, 180), 8: (214, 39, 40),
                 24: (255, 127, 14), 33: (44, 160, 44), 36: (227, 119, 194)}
STUFF = (1, 2, 22)


@pytest.fixture(scope='module')
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('indoor') / 'world'
    generate_synthetic_indoor(root, TINY)
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob('*')) if p.is_file()}


def _read_ply(path: Path, dtype: np.dtype) -> tuple[list[str], np.ndarray, np.ndarray]:
    data = path.read_bytes()
    end = data.index(b'end_header\n') + len(b'end_header\n')
    header = data[:end].decode('ascii').splitlines()
    vertices = int(header[2].split()[2])
    faces = int(next(line for line in header if line.startswith('element face')).split()[2])
    body = np.frombuffer(data, dtype=dtype, count=vertices, offset=end)
    face = np.frombuffer(data, dtype=FACE_DTYPE, count=faces,
                         offset=end + vertices * dtype.itemsize)
    assert end + vertices * dtype.itemsize + faces * FACE_DTYPE.itemsize == len(data)
    assert np.all(face['n'] == 3)
    return header, body, face['i']


def _expected_header(vertices: int, faces: int, label: bool) -> list[str]:
    props = ['property float x', 'property float y', 'property float z',
             'property uchar red', 'property uchar green', 'property uchar blue',
             'property uchar alpha'] + (['property ushort label'] if label else [])
    return ['ply', 'format binary_little_endian 1.0', f'element vertex {vertices}', *props,
            f'element face {faces}', 'property list uchar int vertex_indices', 'end_header']


def _matrix(path: Path) -> np.ndarray:
    return np.array([[float(v) for v in line.split()] for line in
                     path.read_text().splitlines()])


def test_every_file_of_the_layout_and_nothing_else(world):
    expected = {'scannetv2-labels.combined.tsv', 'scannetv2_train.txt', 'scannetv2_val.txt',
                'scannetv2_test.txt', 'synthetic_indoor.json', 'synthetic_gt/index.json'}
    for scene in SCENES:
        scan = f'scans/{scene}'
        expected |= {f'{scan}/{scene}_vh_clean_2.ply', f'{scan}/{scene}_vh_clean_2.labels.ply',
                     f'{scan}/{scene}_vh_clean_2.0.010000.segs.json',
                     f'{scan}/{scene}.aggregation.json', f'{scan}/{scene}.txt'}
        expected |= {f'{scan}/intrinsic/{k}_{c}.txt' for k in ('intrinsic', 'extrinsic')
                     for c in ('color', 'depth')}
        expected |= {f'{scan}/{kind}/{i}.{ext}' for i in PATH_INDICES
                     for kind, ext in (('color', 'jpg'), ('depth', 'png'), ('pose', 'txt'))}
        frames = f'scannet_frames_25k/{scene}'
        expected |= {f'{frames}/intrinsics_color.txt', f'{frames}/intrinsics_depth.txt'}
        expected |= {f'{frames}/{kind}/{i:06d}.{ext}' for i in INDICES_25K
                     for kind, ext in (('color', 'jpg'), ('depth', 'png'), ('label', 'png'),
                                       ('instance', 'png'), ('pose', 'txt'))}
        expected |= {f'synthetic_gt/{kind}/{scene}_{i:06d}.png' for i in INDICES_25K
                     for kind in ('semantic', 'instance', 'region')}
    assert set(_files(world)) == expected


def test_same_seed_gives_identical_bytes_through_the_cli(world, tmp_path, capsys):
    out = tmp_path / 'again'
    out.mkdir()
    (out / 'old.txt').write_text('stale')
    with pytest.raises(SystemExit) as refused:
        make_synthetic_indoor.main(['--out', str(out), '--preset', 'tiny', '--no-progress'])
    assert refused.value.code == 2 and (out / 'old.txt').read_text() == 'stale'
    assert make_synthetic_indoor.main(['--out', str(out), '--preset', 'tiny', '--overwrite',
                                       '--no-progress']) == 0
    printed = capsys.readouterr().out
    assert 'MB in' in printed and 'shower curtain' in printed
    assert _files(out) == _files(world)
    assert not list(tmp_path.glob('again.*'))


def test_a_different_seed_gives_a_different_room():
    a = build_scene('scene0000_00', 'bathroom', 0, 0)
    b = build_scene('scene0000_00', 'bathroom', 1, 0)
    mesh_a, mesh_b = sample_mesh(a, 0.1), sample_mesh(b, 0.1)
    assert a.size != b.size
    assert ply_bytes({'x': mesh_a.xyz[:, 0]}, mesh_a.faces) != ply_bytes(
        {'x': mesh_b.xyz[:, 0]}, mesh_b.faces)


def test_ply_headers_properties_and_shared_vertices(world):
    for scene in SCENES:
        folder = world / 'scans' / scene
        header, mesh, faces = _read_ply(folder / f'{scene}_vh_clean_2.ply', VERTEX_DTYPE)
        assert header == _expected_header(len(mesh), len(faces), label=False)
        lheader, labels, lfaces = _read_ply(folder / f'{scene}_vh_clean_2.labels.ply',
                                            LABEL_DTYPE)
        assert lheader == _expected_header(len(mesh), len(faces), label=True)
        for axis in 'xyz':
            np.testing.assert_array_equal(labels[axis], mesh[axis])
        np.testing.assert_array_equal(lfaces, faces)
        assert faces.min() >= 0 and faces.max() == len(mesh) - 1
        assert np.all(mesh['alpha'] == 255) and np.all(labels['alpha'] == 255)
        assert set(np.unique(labels['label']).tolist()) <= set(range(1, 41))
        for nyu40, rgb in BENCHMARK_RGB.items():
            sel = labels['label'] == nyu40
            colours = np.stack([labels['red'], labels['green'], labels['blue']], 1)[sel]
            assert np.all(colours == rgb)
        photo = np.stack([mesh['red'], mesh['green'], mesh['blue']], 1)
        assert len(np.unique(photo, axis=0)) > 100  # textured, not class colours


def test_labels_equal_the_aggregation_through_the_label_table(world):
    rows = [line.split('\t') for line in
            (world / 'scannetv2-labels.combined.tsv').read_text().splitlines()]
    assert tuple(rows[0]) == TSV_COLUMNS and all(len(r) == 17 for r in rows)
    raw_to_nyu40 = {r[1]: int(r[4]) for r in rows[1:]}
    for scene in SCENES:
        folder = world / 'scans' / scene
        _, labels, _ = _read_ply(folder / f'{scene}_vh_clean_2.labels.ply', LABEL_DTYPE)
        segs = json.loads((folder / f'{scene}_vh_clean_2.0.010000.segs.json').read_text())
        agg = json.loads((folder / f'{scene}.aggregation.json').read_text())
        seg = np.array(segs['segIndices'])
        assert segs['sceneId'] == scene and seg.shape == (len(labels),)
        from_groups = np.zeros(len(labels), dtype=np.int64)
        seen = set()
        for group in agg['segGroups']:
            assert not seen & set(group['segments'])
            seen |= set(group['segments'])
            from_groups[np.isin(seg, group['segments'])] = raw_to_nyu40[group['label']]
        np.testing.assert_array_equal(from_groups, labels['label'])
        assert seen == set(seg.tolist())
        assert [g['objectId'] for g in agg['segGroups']] == sorted(
            g['objectId'] for g in agg['segGroups'])


def _valid_frames(world: Path, scene: str):
    folder = world / 'scannet_frames_25k' / scene
    for i in INDICES_25K:
        pose = _matrix(folder / 'pose' / f'{i:06d}.txt')
        if np.all(np.isfinite(pose)):
            yield i, pose, folder


def test_visible_vertices_project_onto_their_own_depth_and_label(world):
    for scene in SCENES:
        _, labels, _ = _read_ply(world / 'scans' / scene / f'{scene}_vh_clean_2.labels.ply',
                                 LABEL_DTYPE)
        xyz = np.stack([labels['x'], labels['y'], labels['z']], 1).astype(np.float64)
        for i, pose, folder in _valid_frames(world, scene):
            k = _matrix(folder / 'intrinsics_depth.txt')[:3, :3]
            depth = cv2.imread(str(folder / 'depth' / f'{i:06d}.png'), cv2.IMREAD_UNCHANGED)
            label = cv2.imread(str(folder / 'label' / f'{i:06d}.png'), cv2.IMREAD_UNCHANGED)
            assert depth.dtype == np.uint16 and depth.shape == (480, 640)
            label = resize_nearest(label, (480, 640))  # pixel centres (identity at 640 x 480)
            cam = (xyz - pose[:3, 3]) @ pose[:3, :3]
            front = np.flatnonzero(cam[:, 2] > 0.1)
            u = np.round(k[0, 0] * cam[front, 0] / cam[front, 2] + k[0, 2]).astype(int)
            v = np.round(k[1, 1] * cam[front, 1] / cam[front, 2] + k[1, 2]).astype(int)
            inside = (u >= 0) & (u < 640) & (v >= 0) & (v < 480)
            front, u, v = front[inside], u[inside], v[inside]
            seen = np.abs(depth[v, u] / 1000.0 - cam[front, 2]) < 0.02
            assert seen.sum() > 300, (scene, i)  # the tiny mesh has 8 cm spacing
            agree = label[v[seen], u[seen]] == labels['label'][front[seen]]
            assert agree.mean() >= 0.95, (scene, i, agree.mean())


def test_one_lost_frame_per_scene_in_both_layouts(world):
    for scene in SCENES:
        frames = world / 'scannet_frames_25k' / scene
        lost = [i for i in INDICES_25K
                if not np.all(np.isfinite(_matrix(frames / 'pose' / f'{i:06d}.txt')))]
        assert lost == [LOST]
        for pose in (_matrix(frames / 'pose' / f'{LOST:06d}.txt'),
                     _matrix(world / 'scans' / scene / 'pose' / f'{LOST}.txt')):
            assert pose.shape == (4, 4) and np.all(pose == -np.inf)
        assert '-inf' in (frames / 'pose' / f'{LOST:06d}.txt').read_text()
        for kind in ('label', 'instance'):
            image = cv2.imread(str(frames / kind / f'{LOST:06d}.png'), cv2.IMREAD_UNCHANGED)
            assert image.shape == (480, 640) and not image.any()
        assert cv2.imread(str(frames / 'color' / f'{LOST:06d}.jpg')).std() > 5


def test_poses_are_hand_held_and_the_alignment_squares_the_walls(world):
    for scene in SCENES:
        folder = world / 'scans' / scene
        meta = dict(line.split(' = ', 1) for line in
                    (folder / f'{scene}.txt').read_text().splitlines())
        align = np.array([float(v) for v in meta['axisAlignment'].split()]).reshape(4, 4)
        assert not np.allclose(align[:3, :3], np.eye(3), atol=1e-3)
        np.testing.assert_allclose(align[:3, :3] @ align[:3, :3].T, np.eye(3), atol=1e-9)
        assert np.allclose(align[2], [0, 0, 1, align[2, 3]])
        _, labels, _ = _read_ply(folder / f'{scene}_vh_clean_2.labels.ply', LABEL_DTYPE)
        xyz = np.stack([labels['x'], labels['y'], labels['z']], 1) @ align[:3, :3].T + align[
            :3, 3]
        floor = xyz[labels['label'] == 2]
        assert np.ptp(floor[:, 2]) < 1e-3 and abs(floor[:, 2].mean()) < 1e-3
        wall = xyz[labels['label'] == 1]
        lo, hi = wall.min(axis=0), wall.max(axis=0)
        assert np.all(floor[:, :2] > lo[:2]) and np.all(floor[:, :2] < hi[:2])
        on_plane = ((np.abs(wall[:, 0] - lo[0]) < 0.01) | (np.abs(wall[:, 0] - hi[0]) < 0.01)
                    | (np.abs(wall[:, 1] - lo[1]) < 0.01) | (np.abs(wall[:, 1] - hi[1]) < 0.01))
        assert on_plane.mean() > 0.99
        for i in PATH_INDICES:
            pose = _matrix(folder / 'pose' / f'{i}.txt')
            if i == LOST:
                continue
            aligned = align @ pose
            rot = aligned[:3, :3]
            np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-5)
            assert 1.25 < aligned[2, 3] < 1.65
            assert -0.65 < np.arcsin(rot[2, 2]) < 0.1      # forward (z) pitched down
            assert abs(np.arcsin(rot[2, 0])) < 0.1          # little roll: x stays level
        for name in ('fx_depth', 'fy_depth'):
            assert float(meta[name]) == pytest.approx(577.870605)
        assert (meta['colorWidth'], meta['depthHeight']) == ('640', '480')


def test_25k_instances_and_synthetic_gt_agree_with_the_labels(world):
    index = json.loads((world / 'synthetic_gt' / 'index.json').read_text())
    assert index['class_space'] == 'scannet20' and index['region'] is True
    tokens = {image['sample_data_token'] for image in index['images']}
    assert tokens == {f'{s}_{i:06d}' for s in SCENES for i in INDICES_25K}
    for image in index['images']:
        assert (world / image['image']).is_file() and image['image'].startswith(
            f'scannet_frames_25k/{image["scene"]}/color/')
    for scene in SCENES:
        agg = json.loads((world / 'scans' / scene / f'{scene}.aggregation.json').read_text())
        for i, _, folder in _valid_frames(world, scene):
            label = cv2.imread(str(folder / 'label' / f'{i:06d}.png'), cv2.IMREAD_UNCHANGED)
            inst = cv2.imread(str(folder / 'instance' / f'{i:06d}.png'), cv2.IMREAD_UNCHANGED)
            assert label.dtype == np.uint8 and inst.dtype == np.uint16
            np.testing.assert_array_equal(inst // 1000, label)
            objects = np.unique(inst % 1000)
            assert set((objects - 1).tolist()) <= {g['objectId'] for g in agg['segGroups']}
            gt = {kind: cv2.imread(str(world / 'synthetic_gt' / kind / f'{scene}_{i:06d}.png'),
                                   cv2.IMREAD_UNCHANGED) for kind in
                  ('semantic', 'instance', 'region')}
            np.testing.assert_array_equal(gt['semantic'], label)
            stuff = np.isin(label, STUFF)
            assert not gt['instance'][stuff].any() and np.all(gt['instance'][~stuff] > 0)
            np.testing.assert_array_equal(gt['instance'][~stuff], inst[~stuff] % 1000)
            assert gt['region'].dtype == np.uint16 and np.all(gt['region'] > 0)
            walls = np.unique(gt['region'][label == 1])
            assert len(walls) >= 2  # one region per wall plane


def test_split_files_use_official_ids(world):
    assert (world / 'scannetv2_train.txt').read_bytes() == b'scene0000_00\n'
    assert (world / 'scannetv2_val.txt').read_bytes() == b'scene0011_00\n'
    assert (world / 'scannetv2_test.txt').read_bytes() == b''
    default = [name for _, name, _ in PRESETS['default'].scenes()]
    assert default == ['scene0000_00', 'scene0001_00', 'scene0002_00', 'scene0003_00',
                       'scene0011_00', 'scene0015_00', 'scene0019_00']


def test_scene_counts_cycle_through_the_kinds_and_bad_settings_are_named():
    assert kinds_for(6, ('bedroom', 'kitchen')) == (
        'bedroom', 'kitchen', 'bedroom', 'living_room', 'office', 'kitchen')
    assert kinds_for(1, ('bedroom', 'kitchen')) == ('bedroom',)
    with pytest.raises(ValueError, match=r'train_kinds.*garage'):
        IndoorConfig(train_kinds=('garage',))
    with pytest.raises(ValueError, match='frames_25k'):
        IndoorConfig(frames_25k=0)
    with pytest.raises(ValueError, match='unknown preset'):
        preset('huge')


@pytest.mark.parametrize('split', ['train', 'val'])
def test_each_split_of_the_default_world_holds_all_20_classes(split):
    config = PRESETS['default']
    found = set()
    for index, (where, name, kind) in enumerate(config.scenes()):
        if where == split:
            scene = build_scene(name, kind, config.seed, index)
            found |= set(scene.boxes.label[sample_mesh(scene, 0.2).part].tolist())
    assert set(VALID_CLASS_IDS) <= found
    assert {18, 22, 23, 29, 35, 40} & found  # ignored clutter is there too


def test_a_failed_run_leaves_nothing(tmp_path, monkeypatch):
    from cns_ros.data import synthetic_indoor_writer

    def broken(*args, **kwargs):
        raise RuntimeError('render failed')

    monkeypatch.setattr(synthetic_indoor_writer, 'render_view', broken)
    with pytest.raises(RuntimeError, match='render failed'):
        generate_synthetic_indoor(tmp_path / 'out', TINY)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / 'full').mkdir()
    (tmp_path / 'full' / 'x').write_text('x')
    with pytest.raises(DatasetExistsError, match='not empty'):
        generate_synthetic_indoor(tmp_path / 'full', TINY)


def test_colour_intrinsics_scale_about_pixel_centres():
    depth = np.array([[577.870605, 0, 319.5], [0, 577.870605, 239.5], [0, 0, 1]])
    colour = scaled_intrinsics(depth, (640, 480), (1296, 968))
    assert colour[0, 0] == pytest.approx(577.870605 * 1296 / 640)
    assert colour[1, 1] == pytest.approx(577.870605 * 968 / 480)
    point = np.array([0.3, -0.2, 2.0])
    uv_d, uv_c = depth @ point / point[2], colour @ point / point[2]
    # the colour pixel, nearest-resized to 640 x 480, is the depth pixel
    assert (uv_c[0] + 0.5) * 640 / 1296 - 0.5 == pytest.approx(uv_d[0])
    assert (uv_c[1] + 0.5) * 480 / 968 - 0.5 == pytest.approx(uv_d[1])


def test_a_larger_colour_image_is_registered_with_the_depth_image():
    scene = build_scene('scene0000_00', 'bathroom', 0, 0)
    pose = camera_path(scene, 4, np.random.default_rng(0))[1]
    depth_k = depth_intrinsics()
    small = render_view(scene, pose, depth_k, (640, 480))
    large = render_view(scene, pose, scaled_intrinsics(depth_k, (640, 480), (960, 720)),
                        (960, 720))
    assert large.rgb.shape == (720, 960, 3) and small.depth.shape == (480, 640)
    same = resize_nearest(large.part, (480, 640)) == small.part
    assert same.mean() > 0.97


def test_format_writers(tmp_path):
    write_ply(tmp_path / 'a.ply', {'x': np.array([0.0, 1.0, 2.0], np.float32),
                                   'label': np.array([1, 2, 3], np.uint16)},
              np.array([[0, 1, 2]]))
    data = (tmp_path / 'a.ply').read_bytes()
    assert data.startswith(b'ply\nformat binary_little_endian 1.0\nelement vertex 3\n'
                           b'property float x\nproperty ushort label\nelement face 1\n')
    body = data[data.index(b'end_header\n') + 11:]
    assert body == (np.array([0, 1, 2], '<f4').tobytes()[:4] + b'\x01\x00'
                    + np.float32(1).tobytes() + b'\x02\x00' + np.float32(2).tobytes()
                    + b'\x03\x00' + b'\x03' + np.array([0, 1, 2], '<i4').tobytes())
    with pytest.raises(ValueError, match=r"'y'.*shape"):
        write_ply(tmp_path / 'b.ply', {'x': np.zeros(3, np.float32),
                                       'y': np.zeros(2, np.float32)}, np.zeros((0, 3), int))
    with pytest.raises(ValueError, match='int64'):
        write_ply(tmp_path / 'b.ply', {'x': np.zeros(3, np.int64)}, np.zeros((0, 3), int))
    with pytest.raises(ValueError, match=r'0\.\.2'):
        write_ply(tmp_path / 'b.ply', {'x': np.zeros(3, np.float32)}, np.array([[0, 1, 3]]))
    write_matrix(tmp_path / 'p.txt', np.full((4, 4), -np.inf))
    assert (tmp_path / 'p.txt').read_text() == '-inf -inf -inf -inf\n' * 4
    write_matrix(tmp_path / 'k.txt', np.eye(4) * 0.5)
    assert (tmp_path / 'k.txt').read_text().splitlines()[0] == '0.500000 0.000000 0.000000 ' \
                                                               '0.000000'
    write_meta(tmp_path / 'm.txt', {'colorWidth': 640, 'fx': 577.870605,
                                    'axisAlignment': np.eye(2).reshape(-1), 'sceneType': 'Office'})
    assert (tmp_path / 'm.txt').read_text() == ('colorWidth = 640\nfx = 577.870605\n'
                                                'axisAlignment = 1 0 0 1\nsceneType = Office\n')
