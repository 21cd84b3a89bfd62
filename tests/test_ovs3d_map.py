"""cns_ros.ovs3d.labeled_map without ROS: fused labelling, the folder format, PLY and bag output.

The fused K-dim labelling is checked against the explicit 512-d features (cosine argmax and the
softmax of cosine / 0.2), and on a map whose labels are known by hand; the Gram-matrix norm
against numpy's norm and a 3-4-5 example. Every malformed folder gives a LabeledMapError that
names the file and the field; the PLY is parsed back from its header with numpy; the bag is
read back with cns_ros.data.bags.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from cns_ros.ovs3d import labeled_map as lm
from cns_ros.ovs3d.labeled_map import (
    CLASS_NAMES_TOPIC,
    LABELED_POINTS_TOPIC,
    LabeledMap,
    LabeledMapError,
    MapLabeler,
    labeled_cloud,
    load_labeled_map,
    save_labeled_map,
    write_cloud_bag,
    write_ply,
)
from cns_ros.pointcloud import LABELED_CLOUD_DTYPE, read_cloud, unpack_rgb
from cns_ros.text_vocabulary import VocabularyUpdateError
from cns_ros.vocabulary import Vocabulary, VocabularyClass


def random_map(n: int = 50, k: int = 27, d: int = 16, seed: int = 0) -> LabeledMap:
    rng = np.random.default_rng(seed)
    return LabeledMap(xyz=rng.normal(size=(n, 3)).astype(np.float32),
                      rgb=rng.integers(0, 256, (n, 3), dtype=np.uint8),
                      codes=rng.normal(size=(n, k)).astype(np.float32),
                      weight=rng.random(n).astype(np.float32),
                      head_weight=rng.normal(size=(d, k)).astype(np.float32),
                      head_bias=rng.normal(size=d).astype(np.float32),
                      frame_id='map', clip_model='ViT-B-16', source='synthetic test map')


def vocabulary(*names: str) -> Vocabulary:
    colors = [(200, 0, 0), (0, 200, 0), (0, 0, 200), (90, 90, 0)]
    return Vocabulary('test', tuple(VocabularyClass(n, (), colors[i])
                                    for i, n in enumerate(names)))


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def hand_map() -> tuple[LabeledMap, Vocabulary, np.ndarray]:
    """D = K = 3, A = 2 I, b = e_2: point i's feature is 2 c_i + w_i e_2, i.e. (2, 0, 1),
    (0, 2, 1), (0, 0, 1), (0.4, 1.8, 0.5), 0. Texts are the axes (chair = e_0, table = e_1,
    wall = e_2), so the label is the feature's largest axis."""
    codes = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0], [0.2, 0.9, 0], [0, 0, 0]], np.float32)
    weight = np.array([1, 1, 1, 0.5, 0], np.float32)  # point 2: only the bias, e_2 (wall)
    xyz = np.arange(15, dtype=np.float32).reshape(5, 3)
    m = LabeledMap(xyz=xyz, rgb=np.full((5, 3), 7, np.uint8), codes=codes, weight=weight,
                   head_weight=2 * np.eye(3, dtype=np.float32),
                   head_bias=np.array([0, 0, 1], np.float32), frame_id='map', clip_model='',
                   source='hand')
    return m, vocabulary('chair', 'table', 'wall'), np.eye(3, dtype=np.float32)


HAND_LABELS = [0, 1, 2, 1, 0]  # the last point has a zero feature: cosine 0, class 0


# --- labelling ------------------------------------------------------------------------------

def test_fused_labels_equal_the_argmax_of_the_explicit_512d_cosine(monkeypatch):
    monkeypatch.setattr(lm, '_CHUNK', 170)  # several chunks, a short last one
    m = random_map(n=1000, d=512, seed=1)
    text = unit(np.random.default_rng(2).normal(size=(3, 512)))
    features = m.features()
    assert features.shape == (1000, 512)
    cosine = unit(features) @ text.T
    labels, confidence = m.label(text)
    assert labels.dtype == np.uint16 and confidence.dtype == np.float32
    np.testing.assert_array_equal(labels, cosine.argmax(axis=1))
    softmax = np.exp(cosine / 0.2) / np.exp(cosine / 0.2).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(confidence, softmax.max(axis=1), rtol=1e-4)
    # embeddings are normalised first; the temperature changes confidences only
    again, sharper = m.label(3.0 * text, temperature=0.05)
    np.testing.assert_array_equal(again, labels)
    assert (sharper >= confidence - 1e-6).all()


def test_gram_norm_identity_and_a_3_4_5_point():
    m = random_map(n=300, seed=3)
    np.testing.assert_allclose(m.feature_norms(), np.linalg.norm(m.features(), axis=1),
                               rtol=1e-4)
    # A = [3, 0]^T, b = [0, 4], c = 1, w = 1: f = (3, 4), |f| = 5; w = 0.5: (3, 2), sqrt 13
    m = LabeledMap(xyz=np.zeros((2, 3), np.float32), rgb=np.zeros((2, 3), np.uint8),
                   codes=np.ones((2, 1), np.float32), weight=np.array([1, 0.5], np.float32),
                   head_weight=np.array([[3], [0]], np.float32),
                   head_bias=np.array([0, 4], np.float32), frame_id='map', clip_model='',
                   source='')
    np.testing.assert_allclose(m.feature_norms(), [5.0, np.sqrt(13.0)], rtol=1e-6)


def test_labels_known_by_hand():
    m, _, text = hand_map()
    labels, confidence = m.label(text)
    assert labels.tolist() == HAND_LABELS
    # point 2: f = e_2, cosines (0, 0, 1) -> softmax of (0, 0, 5); point 0: f = (2, 0, 1)
    np.testing.assert_allclose(confidence[2], np.e**5 / (np.e**5 + 2), rtol=1e-6)
    high, low = np.exp(2 / np.sqrt(5) / 0.2), np.exp(1 / np.sqrt(5) / 0.2)
    np.testing.assert_allclose(confidence[0], high / (high + 1 + low), rtol=1e-6)
    np.testing.assert_allclose(confidence[4], 1 / 3, rtol=1e-6)  # "no idea"
    with pytest.raises(LabeledMapError, match=r'text_embeddings: expected .*D = 3'):
        m.label(np.eye(4, dtype=np.float32))
    with pytest.raises(LabeledMapError, match='temperature'):
        m.label(text, temperature=0.0)


def test_map_labeler_reorders_refuses_and_encodes_new_names():
    m, vocab, text = hand_map()
    labeler = MapLabeler(m, vocab, text)
    assert labeler.current.labels.tolist() == HAND_LABELS and labeler.current.version == 0
    now = labeler.set_vocabulary(['wall', 'chair'])
    assert now.vocabulary.names == ('wall', 'chair') and now.version == 1
    assert now.vocabulary.colors.tolist() == [[0, 0, 200], [200, 0, 0]]  # colours kept
    assert now.labels.tolist() == [1, 0, 0, 0, 0]  # table is gone: point 1 is equidistant
    for names, reason in (([], 'empty'), (['chair', 'Chair'], 'unique'),
                          (['lamp'], 'no text embedding')):
        with pytest.raises(VocabularyUpdateError, match=reason):
            labeler.set_vocabulary(names)
    assert labeler.current is now

    def encoder(prompt_names):  # a stand-in text encoder: 'lamp' = the table axis
        return np.array([[0, 1, 0] for _ in prompt_names], np.float32)

    labeler = MapLabeler(m, vocab, text, text_encoder=encoder)
    assert labeler.set_vocabulary(['chair', 'lamp']).labels.tolist() == [0, 1, 0, 1, 0]


def test_labeled_cloud_has_the_live_layout_and_colours():
    m, vocab, text = hand_map()
    labels, confidence = m.label(text)
    points = read_cloud(labeled_cloud(m, labels, confidence, vocab))
    assert points.dtype == LABELED_CLOUD_DTYPE
    np.testing.assert_array_equal(points['label'], HAND_LABELS)
    np.testing.assert_array_equal(points['intensity'], m.weight)
    np.testing.assert_array_equal(unpack_rgb(points['rgb']), vocab.colors[HAND_LABELS])
    scene = read_cloud(labeled_cloud(m, labels, confidence, vocab, color_mode='map'))
    np.testing.assert_array_equal(unpack_rgb(scene['rgb']), m.rgb)


# --- the folder -----------------------------------------------------------------------------

def test_save_load_round_trip(tmp_path):
    m = random_map()
    vocab = vocabulary('chair', 'table', 'wall')
    text = unit(np.random.default_rng(4).normal(size=(3, 16)))
    out = save_labeled_map(tmp_path / 'map', m, vocab, text)
    assert sorted(p.name for p in out.iterdir()) == sorted(lm.MAP_FILES)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]  # no temporary left
    loaded, vocab2, text2 = load_labeled_map(out)
    for name in ('xyz', 'rgb', 'codes', 'weight', 'head_weight', 'head_bias'):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(m, name))
        assert getattr(loaded, name).dtype == getattr(m, name).dtype
    assert (loaded.frame_id, loaded.clip_model, loaded.source, loaded.templates) == (
        'map', 'ViT-B-16', 'synthetic test map', 'maskclip85')
    assert vocab2 == vocab
    np.testing.assert_array_equal(text2, text)
    with pytest.raises(FileExistsError, match='not empty'):
        save_labeled_map(out, m, vocab, text)
    smaller = random_map(n=5)
    save_labeled_map(out, smaller, vocab, text, overwrite=True)
    assert load_labeled_map(out)[0].num_points == 5
    with pytest.raises(LabeledMapError, match=r'text_embeddings: expected finite \(3, 16\)'):
        save_labeled_map(tmp_path / 'other', m, vocab, text[:2])


def _rewrite_map(folder, **changes):
    path = folder / lm.MAP_FILE
    tensors = load_file(str(path))
    from safetensors import safe_open

    with safe_open(str(path), framework='np') as handle:
        meta = handle.metadata()
    meta.update(changes.pop('meta', {}))
    for key, value in changes.items():
        if value is None:
            del tensors[key]
        else:
            tensors[key] = value
    save_file(tensors, str(path), metadata=meta)


def _write_text(folder, shape) -> None:
    save_file({'text_embeddings': np.ones(shape, np.float32)},
              str(folder / 'text_embeddings.safetensors'))


N = 50  # points of the broken maps
BREAK = {
    'missing folder': lambda f: __import__('shutil').rmtree(f),
    'missing vocabulary': lambda f: (f / 'vocabulary.yaml').unlink(),
    'corrupt map': lambda f: (f / lm.MAP_FILE).write_bytes(b'\x07' * 40),
    'format': lambda f: _rewrite_map(f, meta={'format': 'cns_ros.model_bundle'}),
    'version': lambda f: _rewrite_map(f, meta={'version': '2'}),
    'missing codes': lambda f: _rewrite_map(f, codes=None),
    'codes rows': lambda f: _rewrite_map(f, codes=np.zeros((N - 1, 27), np.float32)),
    'rgb dtype': lambda f: _rewrite_map(f, rgb=np.zeros((N, 3), np.float32)),
    'head_bias D': lambda f: _rewrite_map(f, head_bias=np.zeros(15, np.float32)),
    'non-finite weight': lambda f: _rewrite_map(f, weight=np.full(N, np.nan, np.float32)),
    'blank frame_id': lambda f: _rewrite_map(f, meta={'frame_id': ' '}),
    'vocabulary': lambda f: (f / 'vocabulary.yaml').write_text('classes: []\n'),
    'text D': lambda f: _write_text(f, (3, 8)),
    'text rows': lambda f: _write_text(f, (2, 16)),
}

BAD = {
    'missing folder': (None, 'not found'),
    'missing vocabulary': ('vocabulary.yaml', 'missing file'),
    'corrupt map': ('map.safetensors', 'not a readable safetensors file'),
    'format': ('map.safetensors', "metadata format: expected 'cns_ros.ovs_map', found "
               "'cns_ros.model_bundle'"),
    'version': ('map.safetensors', "metadata version: expected 1..1 (newer needs a newer "
                "cns_ros), found '2'"),
    'missing codes': ('map.safetensors', "missing tensor(s) ['codes']"),
    'codes rows': ('map.safetensors', 'codes: expected float of shape (N, K) with N = 50 (xyz '
                   'rows), K = 27 (codes columns), found float32 (49, 27)'),
    'rgb dtype': ('map.safetensors', 'rgb: expected uint8 of shape (N, 3) with N = 50 (xyz '
                  'rows), found float32 (50, 3)'),
    'head_bias D': ('map.safetensors', 'head_bias: expected float of shape (D,) with D = 16 '
                    '(head_weight rows), found float32 (15,)'),
    'non-finite weight': ('map.safetensors', 'weight: expected finite values, found 50 NaN'),
    'blank frame_id': ('map.safetensors', 'metadata frame_id: expected a non-blank string'),
    'vocabulary': ('vocabulary.yaml', 'classes: expected a non-empty list'),
    'text D': ('text_embeddings.safetensors', 'expected D = 16 columns (head_weight rows in '
               'map.safetensors), found (3, 8)'),
    'text rows': ('text_embeddings.safetensors', '2 text-embedding rows for the 3 classes'),
}


@pytest.mark.parametrize('case', list(BAD))
def test_each_bad_folder_names_the_file_and_the_field(case, tmp_path):
    folder = save_labeled_map(tmp_path / 'map', random_map(n=N), vocabulary('a', 'b', 'c'),
                              unit(np.ones((3, 16))))
    BREAK[case](folder)
    name, expected = BAD[case]
    with pytest.raises(LabeledMapError) as info:
        load_labeled_map(folder)
    message = str(info.value)
    prefix = f'labeled map {folder}' + (f': {name}: ' if name else ': ')
    assert message.startswith(prefix) and expected in message, message
    assert '\n' not in message


# --- PLY and bag ----------------------------------------------------------------------------

def read_ply(path) -> tuple[list[str], np.ndarray]:
    """An independent reader: header lines and the vertices through a dtype built from them."""
    data = path.read_bytes()
    end = data.index(b'end_header\n') + len(b'end_header\n')
    lines = data[:end].decode('ascii').splitlines()
    assert lines[:2] == ['ply', 'format binary_little_endian 1.0']
    count = int(next(line for line in lines if line.startswith('element vertex')).split()[2])
    kinds = {'float': '<f4', 'uchar': 'u1', 'ushort': '<u2'}
    fields = [(line.split()[2], kinds[line.split()[1]]) for line in lines
              if line.startswith('property')]
    vertices = np.frombuffer(data[end:], dtype=np.dtype(fields))
    assert len(vertices) == count
    return lines, vertices


def test_ply_is_readable_with_and_without_features(tmp_path):
    m, vocab, text = hand_map()
    labels, confidence = m.label(text)
    path = write_ply(tmp_path / 'map.ply', m.xyz, m.rgb, labels, confidence,
                     class_names=vocab.names)
    lines, vertices = read_ply(path)
    assert 'comment class 2 wall' in lines
    assert vertices.dtype.names == ('x', 'y', 'z', 'red', 'green', 'blue', 'label',
                                    'confidence')
    assert vertices.dtype.itemsize == 3 * 4 + 3 + 2 + 4  # packed
    np.testing.assert_array_equal(np.stack([vertices[a] for a in 'xyz'], 1), m.xyz)
    np.testing.assert_array_equal(np.stack([vertices[c] for c in ('red', 'green', 'blue')], 1),
                                  m.rgb)
    np.testing.assert_array_equal(vertices['label'], HAND_LABELS)
    np.testing.assert_array_equal(vertices['confidence'], confidence)
    features = m.features()
    _, vertices = read_ply(write_ply(tmp_path / 'f.ply', m.xyz, m.rgb, labels, confidence,
                                     features=features))
    assert vertices.dtype.names[-3:] == ('f_0', 'f_1', 'f_2')
    np.testing.assert_array_equal(np.stack([vertices[f'f_{i}'] for i in range(3)], 1),
                                  features)
    with pytest.raises(LabeledMapError, match=r'write_ply: labels: expected shape \(5,\)'):
        write_ply(tmp_path / 'bad.ply', m.xyz, m.rgb, labels[:4], confidence)


def test_bag_holds_the_cloud_and_the_class_names(tmp_path):
    from rosbags.typesys import Stores, get_typestore

    from cns_ros.data.bags import open_bag

    m, vocab, text = hand_map()
    labels, confidence = m.label(text)
    stamp = 1_700_000_000_123_456_789
    path = write_cloud_bag(tmp_path / 'map_bag', labeled_cloud(m, labels, confidence, vocab),
                           'map', stamp, vocab)
    ts = get_typestore(Stores.LATEST)
    with open_bag(path) as bag:
        assert bag.info.message_count == 2
        assert {t.name: (t.msgtype, t.count, t.latched) for t in bag.info.topics.values()} == {
            LABELED_POINTS_TOPIC: ('sensor_msgs/msg/PointCloud2', 1, True),
            CLASS_NAMES_TOPIC: ('std_msgs/msg/String', 1, True)}
        messages = {msg.topic: ts.deserialize_cdr(msg.data, msg.msgtype)
                    for msg in bag.messages()}
    cloud = messages[LABELED_POINTS_TOPIC]
    assert cloud.header.frame_id == 'map'
    assert cloud.header.stamp.sec * 10**9 + cloud.header.stamp.nanosec == stamp
    points = read_cloud(cloud)
    assert points.dtype.names == LABELED_CLOUD_DTYPE.names
    np.testing.assert_array_equal(points['label'], HAND_LABELS)
    np.testing.assert_array_equal(np.stack([points[a] for a in 'xyz'], 1), m.xyz)
    assert json.loads(messages[CLASS_NAMES_TOPIC].data) == vocab.to_json_list()
    with pytest.raises(FileExistsError):
        write_cloud_bag(path, labeled_cloud(m, labels, confidence, vocab), 'map', stamp, vocab)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['map_bag']
