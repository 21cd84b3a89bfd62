"""cns_ros.data.scannet on small hand-made ScanNet files (PLY bytes built here with struct)."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from cns_ros.data.scannet import (
    SKIP_REASONS,
    ScanNetFormatError,
    ScanNetMesh,
    ScanNetNotFoundError,
    ScanNetScenes,
    axis_alignment,
    list_frames,
    read_label_tsv,
    read_matrix,
    read_mesh,
    read_meta,
    read_ply,
    read_split,
)
from cns_ros.data.scannet_labels import TSV_COLUMNS

SCENE = 'scene0000_00'
# Three vertices + a fourth, two triangles; colours and nyu40 labels per vertex.
XYZ = np.array([[0.0, 0.0, 0.0], [1.5, 0.0, 0.25], [0.0, 2.0, -1.0], [1.0, 1.0, 3.0]], np.float32)
RGB = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]], np.uint8)
FACES = [(0, 1, 2), (1, 3, 2)]
NYU40 = [1, 22, 50, 39]   # wall, ceiling (ignored), a value > 40 (ignored), otherfurniture
# A z-rotation by 90 degrees plus a translation (x, y, z) -> (-y + 1, x + 2, z + 3).
#: scannet.md §3.1: the nyu40 id of training id i, in benchmark order.
BENCHMARK_IDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39]
ALIGN = [0, -1, 0, 1, 1, 0, 0, 2, 0, 0, 1, 3, 0, 0, 0, 1]
K_DEPTH = [[5.0, 0, 1.5, 0], [0, 6.0, 1.0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
K_COLOR = [[10.0, 0, 3.5, 0], [0, 12.0, 2.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]]


def _ply_header(fmt: str, vertex_props: list[str], n_vertex: int, face_list: str | None,
                n_face: int) -> bytes:
    lines = ['ply', f'format {fmt} 1.0', 'comment made by hand', f'element vertex {n_vertex}']
    lines += [f'property {p}' for p in vertex_props]
    if face_list is not None:
        lines += [f'element face {n_face}', f'property list {face_list} vertex_indices']
    return ('\n'.join([*lines, 'end_header']) + '\n').encode('ascii')


def _mesh_bytes(labels: list[int] | None = None, n_vertex: int = 4,
                faces: list[tuple[int, int, int]] = FACES) -> bytes:
    """The ScanNet layout: x y z float, red green blue alpha uchar (+ label ushort)."""
    props = ['float x', 'float y', 'float z', 'uchar red', 'uchar green', 'uchar blue',
             'uchar alpha'] + (['ushort label'] if labels is not None else [])
    body = b''
    for i in range(n_vertex):
        body += struct.pack('<3f4B', *XYZ[i].tolist(), *RGB[i].tolist(), 255)
        if labels is not None:
            body += struct.pack('<H', labels[i])
    for face in faces:
        body += struct.pack('<B3i', 3, *face)
    return _ply_header('binary_little_endian', props, n_vertex, 'uchar int', len(faces)) + body


def _write_matrix(path: Path, matrix, newline: str = '\n') -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = np.asarray(matrix, dtype=np.float64).reshape(4, 4)
    path.write_text(newline.join(' '.join(f'{v:f}' for v in row) for row in rows) + newline)


def _pose(tx: float) -> np.ndarray:
    """A camera-to-world pose: camera z along world +x, centre (tx, 2, 1.5)."""
    pose = np.eye(4)
    pose[:3, :3] = [[0, 0, 1], [-1, 0, 0], [0, -1, 0]]
    pose[:3, 3] = (tx, 2.0, 1.5)
    return pose


def _write_scan(root: Path, labels: bool = True) -> Path:
    folder = root / 'scans' / SCENE
    folder.mkdir(parents=True)
    (folder / f'{SCENE}_vh_clean_2.ply').write_bytes(_mesh_bytes())
    if labels:
        (folder / f'{SCENE}_vh_clean_2.labels.ply').write_bytes(_mesh_bytes(NYU40))
    (folder / f'{SCENE}.txt').write_text(
        'colorWidth = 8\r\nsceneType = Bedroom / Hotel\r\n'
        f'axisAlignment = {" ".join(map(str, ALIGN))}\r\n')
    return folder


def _write_frames(folder: Path, stems: list[str], invalid: tuple[str, ...] = (),
                  naming: str = '25k') -> dict[str, np.ndarray]:
    """Colour 8x6 (solid, BGR on disk), depth 4x3 mm, poses; returns depth mm by stem."""
    depths = {}
    for k, stem in enumerate(stems):
        for sub in ('color', 'depth', 'pose'):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / 'color' / f'{stem}.jpg'), np.full((6, 8, 3), (0, 0, 255),
                                                                   np.uint8))
        depth = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 250 + k).astype(np.uint16)
        depth[0, 0] = 0
        cv2.imwrite(str(folder / 'depth' / f'{stem}.png'), depth)
        depths[stem] = depth
        pose = np.full((4, 4), -np.inf) if stem in invalid else _pose(float(int(stem)))
        _write_matrix(folder / 'pose' / f'{stem}.txt', pose)
    prefix = 'intrinsics_' if naming == '25k' else 'intrinsic/intrinsic_'
    _write_matrix(folder / f'{prefix}color.txt', K_COLOR)
    _write_matrix(folder / f'{prefix}depth.txt', K_DEPTH)
    return depths


# ---------------------------------------------------------------- PLY


def _read_bytes(tmp_path: Path, data: bytes, name: str = 'mesh.ply'):
    (tmp_path / name).write_bytes(data)
    return read_ply(tmp_path / name)


def test_read_ply_binary_scannet_layout_values(tmp_path):
    vertex, faces = _read_bytes(tmp_path, _mesh_bytes(NYU40))
    assert list(vertex) == ['x', 'y', 'z', 'red', 'green', 'blue', 'alpha', 'label']
    np.testing.assert_array_equal(np.stack([vertex['x'], vertex['y'], vertex['z']], 1), XYZ)
    assert vertex['x'].dtype == np.float32 and vertex['red'].dtype == np.uint8
    np.testing.assert_array_equal(np.stack([vertex[c] for c in ('red', 'green', 'blue')], 1),
                                  RGB)
    assert vertex['label'].dtype == np.uint16 and vertex['label'].tolist() == NYU40
    assert faces.dtype == np.int32 and faces.tolist() == [list(f) for f in FACES]


def test_read_ply_any_property_order_types_and_big_endian(tmp_path):
    """Label first, double coordinates, colours as int, an extra element, int/uint face list."""
    props = ['int label', 'double z', 'uchar blue', 'double x', 'short green', 'double y',
             'uint red']
    header = _ply_header('binary_big_endian', props, 2, 'int uint', 1)
    header = header.replace(b'end_header', b'element extra 2\nproperty float w\nend_header')
    body = struct.pack('>id B d h d I', 7, 3.25, 9, -1.5, 300, 2.5, 4)
    body += struct.pack('>id B d h d I', 40, -0.5, 0, 0.0, -2, 1e-3, 65000)
    body += struct.pack('>i3I', 3, 1, 0, 1) + struct.pack('>2f', 1.0, 2.0)
    vertex, faces = _read_bytes(tmp_path, header + body)
    assert list(vertex) == ['label', 'z', 'blue', 'x', 'green', 'y', 'red']
    assert vertex['x'].dtype == np.float64 and vertex['x'].tolist() == [-1.5, 0.0]
    assert vertex['z'].tolist() == [3.25, -0.5] and vertex['y'].tolist() == [2.5, 1e-3]
    assert vertex['green'].dtype == np.int16 and vertex['green'].tolist() == [300, -2]
    assert vertex['red'].dtype == np.uint32 and vertex['red'].tolist() == [4, 65000]
    assert vertex['label'].tolist() == [7, 40]
    assert faces.tolist() == [[1, 0, 1]]


def test_read_ply_ascii_with_crlf(tmp_path):
    text = ('ply\r\nformat ascii 1.0\r\nelement vertex 3\r\nproperty float x\r\n'
            'property float y\r\nproperty float z\r\nproperty uchar red\r\nproperty uchar green'
            '\r\nproperty uchar blue\r\nelement face 1\r\nproperty list uchar int vertex_indices'
            '\r\nend_header\r\n0 0 0 1 2 3\r\n1.5 0 0.25 4 5 6\r\n0 2 -1 7 8 9\r\n3 2 1 0\r\n')
    vertex, faces = _read_bytes(tmp_path, text.encode())
    assert vertex['x'].dtype == np.float32 and vertex['x'].tolist() == [0.0, 1.5, 0.0]
    assert vertex['z'].tolist() == [0.0, 0.25, -1.0]
    assert vertex['blue'].dtype == np.uint8 and vertex['blue'].tolist() == [3, 6, 9]
    assert faces.dtype == np.int32 and faces.tolist() == [[2, 1, 0]]


_BAD_PLY = {
    'magic': (b'plx\nformat ascii 1.0\nend_header\n', 'magic'),
    'format': (_mesh_bytes().replace(b'binary_little_endian', b'binary_middle_endian'),
               'format'),
    'type': (_mesh_bytes().replace(b'float y', b'float16 y'), "found 'float16'"),
    'truncated': (_mesh_bytes()[:-5], 'truncated'),
    'quad': (_mesh_bytes()[:-26] + struct.pack('<B4i', 4, 0, 1, 2, 3)
             + struct.pack('<B4i', 4, 0, 1, 2, 3), 'expected 3 vertex indices'),
    'mixed_counts': (_mesh_bytes()[:-13] + struct.pack('<B3i', 4, 0, 1, 2), 'variable-length'),
    'index_range': (_mesh_bytes()[:-13] + struct.pack('<B3i', 3, 0, 1, 9), 'in 0..3, found 0..9'),
    'no_vertex': (b'ply\nformat ascii 1.0\nelement face 0\nproperty list uchar int '
                  b'vertex_indices\nend_header\n', 'element "vertex"'),
    'ascii_text': (b'ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n'
                   b'abc\n', 'expected numbers'),
    'ascii_fraction_int': (b'ply\nformat ascii 1.0\nelement vertex 1\nproperty uchar red\n'
                           b'end_header\n1.5\n', 'expected integers'),
}


@pytest.mark.parametrize('case', sorted(_BAD_PLY))
def test_read_ply_bad_input_names_file_and_field(tmp_path, case):
    data, fragment = _BAD_PLY[case]
    with pytest.raises(ScanNetFormatError) as error:
        _read_bytes(tmp_path, data, f'bad_{case}.ply')
    assert f'bad_{case}.ply' in str(error.value) and fragment in str(error.value)


def test_read_ply_missing_file(tmp_path):
    with pytest.raises(ScanNetNotFoundError, match=r'nothing\.ply'):
        read_ply(tmp_path / 'nothing.ply')


# ---------------------------------------------------------------- meshes


def test_read_mesh_values_labels_and_alignment(tmp_path):
    _write_scan(tmp_path)
    mesh = read_mesh(tmp_path, SCENE)
    assert isinstance(mesh, ScanNetMesh) and mesh.scene == SCENE
    assert mesh.xyz.dtype == np.float32 and mesh.xyz.shape == (4, 3)
    np.testing.assert_array_equal(mesh.xyz, XYZ)
    np.testing.assert_array_equal(mesh.rgb, RGB)
    assert mesh.faces.dtype == np.int32 and mesh.faces.tolist() == [list(f) for f in FACES]
    assert mesh.nyu40.dtype == np.uint16 and mesh.nyu40.tolist() == NYU40
    # wall -> 0, ceiling -> ignore, 50 (> 40) -> ignore, otherfurniture -> 19
    assert mesh.labels20().dtype == np.uint8 and mesh.labels20().tolist() == [0, 255, 255, 19]
    np.testing.assert_array_equal(mesh.axis_alignment, np.reshape(ALIGN, (4, 4)))
    aligned = read_mesh(tmp_path, SCENE, align=True).xyz
    expected = np.stack([-XYZ[:, 1] + 1, XYZ[:, 0] + 2, XYZ[:, 2] + 3], 1)
    np.testing.assert_allclose(aligned, expected, atol=1e-6)
    assert read_mesh(tmp_path, SCENE, labels=False).nyu40 is None


def test_mesh_without_labels_file_has_none_and_labels20_raises(tmp_path):
    _write_scan(tmp_path, labels=False)
    (tmp_path / 'scans' / SCENE / f'{SCENE}.txt').unlink()
    mesh = read_mesh(tmp_path, SCENE)
    assert mesh.nyu40 is None
    np.testing.assert_array_equal(mesh.axis_alignment, np.eye(4))
    with pytest.raises(ValueError, match=SCENE):
        mesh.labels20()
    with pytest.raises(ScanNetNotFoundError, match=f'{SCENE}.txt'):
        read_mesh(tmp_path, SCENE, align=True)


def test_labels_ply_vertex_count_mismatch_is_an_error(tmp_path):
    folder = _write_scan(tmp_path)
    (folder / f'{SCENE}_vh_clean_2.labels.ply').write_bytes(
        _mesh_bytes(NYU40[:3], n_vertex=3, faces=[(0, 1, 2)]))
    with pytest.raises(ScanNetFormatError) as error:
        read_mesh(tmp_path, SCENE)
    message = str(error.value)
    assert 'labels.ply' in message and 'expected 4' in message and 'found 3' in message


def test_mesh_missing_colour_property_and_missing_scene(tmp_path):
    folder = _write_scan(tmp_path)
    (folder / f'{SCENE}_vh_clean_2.ply').write_bytes(_mesh_bytes().replace(b'uchar red',
                                                                            b'uchar reed'))
    with pytest.raises(ScanNetFormatError, match=r'_vh_clean_2\.ply.*\'red\''):
        read_mesh(tmp_path, SCENE, labels=False)
    with pytest.raises(ScanNetNotFoundError, match='scene0001_00'):
        read_mesh(tmp_path, 'scene0001_00')


# ---------------------------------------------------------------- label spaces


def test_twenty_class_map_matches_benchmark_ids_and_order(tmp_path):
    """Reference table scannet.md §3.1: training id i <-> nyu40 id, in this order."""
    ids = np.array([*range(256), 300, 65535], dtype=np.uint16)
    mesh = ScanNetMesh(SCENE, XYZ, RGB, np.zeros((0, 3), np.int32), ids, np.eye(4))
    train = mesh.labels20()
    expected = np.full(len(ids), 255, np.uint8)
    expected[BENCHMARK_IDS] = np.arange(20)
    np.testing.assert_array_equal(train, expected)
    assert train[22] == 255 and train[40] == 255 and train[149] == 255 and train[-1] == 255


# ---------------------------------------------------------------- text files


def test_read_meta_crlf_and_axis_alignment(tmp_path):
    folder = _write_scan(tmp_path)
    meta = read_meta(folder / f'{SCENE}.txt')
    assert meta['colorWidth'] == '8' and meta['sceneType'] == 'Bedroom / Hotel'
    np.testing.assert_array_equal(axis_alignment(meta), np.reshape(ALIGN, (4, 4)))
    np.testing.assert_array_equal(axis_alignment({}), np.eye(4))
    with pytest.raises(ScanNetFormatError, match=r'x\.txt: axisAlignment: expected 16 numbers'):
        axis_alignment({'axisAlignment': '1 0 0'}, source='x.txt')
    (folder / 'bad.txt').write_text('colorWidth = 8\nno equals sign here\n')
    with pytest.raises(ScanNetFormatError, match=r'bad\.txt: line 2: expected "key = value"'):
        read_meta(folder / 'bad.txt')


def test_read_matrix_values_inf_and_errors(tmp_path):
    _write_matrix(tmp_path / 'k.txt', K_DEPTH, newline='\r\n')
    np.testing.assert_array_equal(read_matrix(tmp_path / 'k.txt'), K_DEPTH)
    _write_matrix(tmp_path / 'lost.txt', np.full((4, 4), -np.inf))
    assert np.all(read_matrix(tmp_path / 'lost.txt') == -np.inf)
    (tmp_path / 'short.txt').write_text('1 0 0\n0 1 0\n')
    with pytest.raises(ScanNetFormatError, match=r'short\.txt: 4x4 matrix: expected 16 numbers, '
                                                 r'found 6'):
        read_matrix(tmp_path / 'short.txt')
    (tmp_path / 'word.txt').write_text('1 0 0 x\n' * 4)
    with pytest.raises(ScanNetFormatError, match=r'word\.txt'):
        read_matrix(tmp_path / 'word.txt')
    with pytest.raises(ScanNetNotFoundError, match=r'none\.txt'):
        read_matrix(tmp_path / 'none.txt')


def test_read_split_locations_suffix_crlf_and_errors(tmp_path):
    (tmp_path / 'scannetv2_train.txt').write_text('scene0000_00\nscene0000_01\n')
    bench = tmp_path / 'Tasks' / 'Benchmark'
    bench.mkdir(parents=True)
    (bench / 'scannetv2_val.txt').write_text('scene0011_00.ply\r\n\r\nscene0011_01_vh_clean_2.ply')
    assert read_split(tmp_path, 'train') == ['scene0000_00', 'scene0000_01']
    assert read_split(tmp_path, 'val') == ['scene0011_00', 'scene0011_01']
    with pytest.raises(ScanNetNotFoundError, match=r'scannetv2_test\.txt'):
        read_split(tmp_path, 'test')
    with pytest.raises(ValueError, match='trainval'):
        read_split(tmp_path, 'trainval')
    (tmp_path / 'scannetv2_test.txt').write_text('scene0707_00\nscene0707_00\n')
    with pytest.raises(ScanNetFormatError, match=r'scannetv2_test\.txt: line 2'):
        read_split(tmp_path, 'test')


def _tsv_row(label_id: int, raw: str, nyu40: int) -> str:
    row = dict.fromkeys(TSV_COLUMNS, 'x')
    row.update(id=str(label_id), raw_category=raw, nyu40id=str(nyu40))
    return '\t'.join(row[c] for c in TSV_COLUMNS)


def test_read_label_tsv_last_row_wins_and_crlf(tmp_path):
    rows = ['\t'.join(TSV_COLUMNS), _tsv_row(1, 'wall', 1), _tsv_row(107, 'pipe', 40),
            _tsv_row(2, 'chair', 5), _tsv_row(107, 'pipes', 38), _tsv_row(3, 'wardrobe ', 39)]
    (tmp_path / 'labels.tsv').write_text('\r\n'.join(rows) + '\r\n')
    table = read_label_tsv(tmp_path / 'labels.tsv')
    assert table.by_id == {1: 1, 107: 38, 2: 5, 3: 39}
    assert table.by_category == {'wall': 1, 'pipe': 40, 'chair': 5, 'pipes': 38, 'wardrobe': 39}
    by_category, by_id = table
    assert by_id[107] == 38 and by_category['chair'] == 5


@pytest.mark.parametrize(('row', 'fragment'), [
    (_tsv_row(5, 'lamp', 41), 'line 2 field nyu40id: expected an integer in 0..40'),
    (_tsv_row(-1, 'lamp', 35), 'line 2 field id'),
    ('5\tlamp', 'line 2: expected at least 5'),
])
def test_read_label_tsv_bad_rows(tmp_path, row, fragment):
    (tmp_path / 'bad.tsv').write_text('\t'.join(TSV_COLUMNS) + '\n' + row + '\n')
    with pytest.raises(ScanNetFormatError) as error:
        read_label_tsv(tmp_path / 'bad.tsv')
    assert 'bad.tsv' in str(error.value) and fragment in str(error.value)
    (tmp_path / 'nohead.tsv').write_text('a\tb\n')
    with pytest.raises(ScanNetFormatError, match=r'nohead\.tsv: header.*nyu40id'):
        read_label_tsv(tmp_path / 'nohead.tsv')


# ---------------------------------------------------------------- frames


def test_list_frames_25k_numeric_order_skips_and_values(tmp_path):
    folder = tmp_path / 'scannet_frames_25k' / SCENE
    depths = _write_frames(folder, ['000010', '000002', '000100', '000003'],
                           invalid=('000003',))
    (folder / 'depth' / '000100.png').unlink()                       # missing depth
    label = np.array([[1, 2, 5, 149], [39, 0, 22, 24]], np.uint8)   # nyu40, 4x2
    (folder / 'label').mkdir()
    cv2.imwrite(str(folder / 'label' / '000002.png'), label)
    result = list_frames(tmp_path, SCENE)
    assert [f.index for f in result.frames] == [2, 10]                # numeric: 2 before 10
    assert result.skipped == {'invalid_pose': 1, 'missing_color': 0, 'missing_depth': 1}
    assert set(result.skipped) == set(SKIP_REASONS)
    first = result.frames[0]
    assert first.token == 'scene0000_00_000002' and first.scene == SCENE
    assert first.color_size == (8, 6) and first.depth_size == (4, 3)
    np.testing.assert_array_equal(first.camera_to_world, _pose(2.0))
    np.testing.assert_array_equal(first.depth_intrinsics, np.asarray(K_DEPTH)[:3, :3])
    np.testing.assert_array_equal(first.color_intrinsics, np.asarray(K_COLOR)[:3, :3])
    colour = first.load_color()                       # written BGR (0, 0, 255) = pure red
    assert colour.shape == (6, 8, 3) and colour.dtype == np.uint8
    assert colour[..., 0].min() > 240 and colour[..., 2].max() < 15
    depth = first.load_depth()
    assert depth.dtype == np.float32 and depth[0, 0] == 0.0
    np.testing.assert_array_equal(depth, depths['000002'].astype(np.float32) / 1000)
    assert first.label_path is not None and result.frames[1].label_path is None
    assert first.instance_path is None
    np.testing.assert_array_equal(first.load_label20(size=(4, 2)),
                                  [[0, 1, 4, 255], [19, 255, 255, 14]])
    with pytest.raises(ScanNetNotFoundError, match='000010'):
        result.frames[1].load_label20()


def test_load_label20_resizes_with_nearest_only(tmp_path):
    folder = tmp_path / 'scannet_frames_25k' / SCENE
    _write_frames(folder, ['0'])
    checker = np.where((np.arange(4)[:, None] + np.arange(6)[None, :]) % 2, 5, 39)
    (folder / 'label').mkdir()
    cv2.imwrite(str(folder / 'label' / '0.png'), checker.astype(np.uint8))
    frame = list_frames(tmp_path, SCENE).frames[0]
    up = frame.load_label20(size=(12, 8))             # chair (4) / otherfurniture (19)
    assert set(np.unique(up).tolist()) == {4, 19}
    train = np.where(checker == 5, 4, 19)
    np.testing.assert_array_equal(up, np.repeat(np.repeat(train, 2, 0), 2, 1))
    benchmark = np.array(BENCHMARK_IDS)
    ramp = benchmark[np.arange(24).reshape(4, 6) % 20]      # a different class at each pixel
    cv2.imwrite(str(folder / 'label' / '0.png'), ramp.astype(np.uint8))
    # sampled at pixel centres: source rows 1, 3 and columns 1, 3, 5
    down = frame.load_label20(size=(3, 2))
    np.testing.assert_array_equal(down, (np.arange(24).reshape(4, 6) % 20)[1::2, 1::2])


def test_list_frames_export_layout_every_and_unpadded_names(tmp_path):
    folder = _write_scan(tmp_path)
    _write_frames(folder, [str(i) for i in (0, 1, 2, 10, 11, 20)], invalid=('2',),
                  naming='export')
    (folder / 'color' / '11.jpg').unlink()
    (folder / 'pose' / 'notes.md').write_text('ignored')
    all_frames = list_frames(tmp_path, SCENE, layout='export')
    assert [f.index for f in all_frames.frames] == [0, 1, 10, 20]
    assert all_frames.skipped == {'invalid_pose': 1, 'missing_color': 1, 'missing_depth': 0}
    assert all_frames.frames[2].token == 'scene0000_00_000010'
    assert all(f.label_path is None for f in all_frames.frames)
    every2 = list_frames(tmp_path, SCENE, layout='export', every=2)   # 0, 2 (lost), 11 (no jpg)
    assert [f.index for f in every2.frames] == [0]
    assert every2.skipped == {'invalid_pose': 1, 'missing_color': 1, 'missing_depth': 0}
    np.testing.assert_array_equal(every2.frames[0].depth_intrinsics, np.asarray(K_DEPTH)[:3, :3])


def test_list_frames_accepts_the_other_intrinsics_naming(tmp_path):
    folder = tmp_path / 'scannet_frames_25k' / SCENE
    _write_frames(folder, ['000000'], naming='export')    # intrinsic/intrinsic_*.txt in 25k
    frame = list_frames(tmp_path, SCENE).frames[0]
    np.testing.assert_array_equal(frame.color_intrinsics, np.asarray(K_COLOR)[:3, :3])


def test_list_frames_errors_name_the_file(tmp_path):
    with pytest.raises(ScanNetNotFoundError, match='not found'):
        list_frames(tmp_path / 'absent', SCENE)
    folder = tmp_path / 'scannet_frames_25k' / SCENE
    _write_frames(folder, ['000000', '000001'])
    with pytest.raises(ValueError, match='layout'):
        list_frames(tmp_path, SCENE, layout='sens')
    _write_matrix(folder / 'pose' / '0.txt', _pose(0.0))               # index 0 twice
    with pytest.raises(ScanNetFormatError, match=r'frame 0: expected one pose file'):
        list_frames(tmp_path, SCENE)
    (folder / 'pose' / '0.txt').unlink()
    bad = _pose(1.0)
    bad[3] = (0, 0, 1, 1)
    _write_matrix(folder / 'pose' / '000001.txt', bad)
    with pytest.raises(ScanNetFormatError, match=r'000001\.txt: pose: expected'):
        list_frames(tmp_path, SCENE)
    _write_matrix(folder / 'pose' / '000001.txt', _pose(1.0))
    _write_matrix(folder / 'intrinsics_depth.txt', np.zeros((4, 4)))
    with pytest.raises(ScanNetFormatError, match=r'intrinsics_depth\.txt: intrinsics'):
        list_frames(tmp_path, SCENE)
    (folder / 'intrinsics_depth.txt').unlink()
    with pytest.raises(ScanNetNotFoundError, match=r'intrinsics_depth\.txt'):
        list_frames(tmp_path, SCENE)


def test_load_errors_name_the_file(tmp_path):
    folder = tmp_path / 'scannet_frames_25k' / SCENE
    _write_frames(folder, ['000000', '000001'])
    cv2.imwrite(str(folder / 'depth' / '000001.png'), np.zeros((3, 4), np.uint8))  # 8-bit
    (folder / 'color' / '000001.jpg').write_bytes(b'not a jpeg')
    frame = list_frames(tmp_path, SCENE).frames[1]
    with pytest.raises(ScanNetFormatError, match=r'000001\.png: depth: expected a single-channel'):
        frame.load_depth()
    with pytest.raises(ScanNetFormatError, match=r'000001\.jpg: expected a readable colour'):
        frame.load_color()
    cv2.imwrite(str(folder / 'depth' / '000001.png'), np.zeros((5, 4), np.uint16))
    with pytest.raises(ScanNetFormatError, match=r'000001\.png: depth size: expected 4x3'):
        frame.load_depth()
    (folder / 'depth' / '000001.png').unlink()
    with pytest.raises(ScanNetNotFoundError, match=r'000001\.png'):
        frame.load_depth()


# ---------------------------------------------------------------- scenes


def test_scannet_scenes_split_list_and_discovery(tmp_path):
    _write_scan(tmp_path)
    _write_frames(tmp_path / 'scans' / SCENE, ['0', '5'], naming='export')
    (tmp_path / 'scannetv2_val.txt').write_text(f'{SCENE}\n')
    (tmp_path / 'scannetv2_train.txt').write_text('scene0001_00\n')
    scenes = ScanNetScenes(tmp_path, split='val', layout='export')
    assert len(scenes) == 1 and scenes[0] == SCENE and list(scenes) == [SCENE]
    assert scenes.mesh(0).nyu40.tolist() == NYU40
    assert [f.index for f in scenes.frames(0).frames] == [0, 5]
    assert list(ScanNetScenes(tmp_path, layout='export')) == [SCENE]
    assert list(ScanNetScenes(tmp_path)) == []                       # no 25k folder
    with pytest.raises(ValueError, match='not in the'):
        ScanNetScenes(tmp_path, split='train', scenes=[SCENE])
    with pytest.raises(ScanNetNotFoundError, match='scene0001_00'):
        ScanNetScenes(tmp_path, split='train', layout='export').frames(0)
    with pytest.raises(ScanNetNotFoundError, match='nowhere'):
        ScanNetScenes(tmp_path / 'nowhere')
