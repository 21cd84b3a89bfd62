"""The ROS-free inference core (cns_ros.segmenter) on tiny bundles with RANDOM weights.

The networks are the real architectures at reduced width (MinkUNet14A with channel_scale 1/8,
D = 16) and random weights, so the labels mean nothing; what is checked is the plumbing:
labels equal the argmax of a hand computation through the bundle's own network, confidences
are the softmax, invalid points are UNLABELED, and vocabulary updates keep their contract.
Steered bundles (``make_tiny_bundle(steer=...)``) output one hand-set feature everywhere, so
the labels and confidences of a vocabulary of several classes are known without a network.
"""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pytest

torch = pytest.importorskip('torch')
pytest.importorskip('spconv')

from cns_ros.models.build import build_model, model_config  # noqa: E402
from cns_ros.models.minkunet import assemble_point_features  # noqa: E402
from cns_ros.models.sparse import voxelize_batch  # noqa: E402
from cns_ros.segmenter import (  # noqa: E402
    UNLABELED,
    UNLABELED_COLOR,
    Segmenter,
    SegmenterError,
    VocabularyUpdateError,
    parse_vocabulary_entries,
    resolve_device,
)
from cns_ros.training.bundle_format import BundleError, load_bundle  # noqa: E402
from cns_ros.training.bundle_networks import load_bundle_networks  # noqa: E402
from cns_ros.training.bundle_write import write_bundle  # noqa: E402
from cns_ros.vocabulary import nuscenes16, palette  # noqa: E402

DIM = 16
OPTIONS = {'channel_scale': 0.125, 'out_dim': DIM, 'voxel_size': 0.5,
           'input_features': ['intensity', 'ring']}


def make_tiny_bundle(path, *, seed=0, net2d=False, clip_model=None, options=None,
                     steer=None, model='minkunet14a', image_model='deeplabv3_r50'):
    """A bundle of a random-weight 3D network at 1/8 width (`model`: MinkUNet14A by default,
    or SPVCNN) and optionally DeepLabV3.

    ``image_model``: the 2D network's builder with ``net2d`` (the light ``deeplabv3_r18`` /
    ``deeplabv3_mbv3`` or the reference ``deeplabv3_r50``).

    ``steer``: a (16,) feature that both networks output at every point and pixel (their
    last layer's weights zeroed, its bias set to ``steer``), with the identity as text
    embeddings (class i of nuScenes-16 is the unit vector e_i). The logit of class name n is
    then ``steer[nuscenes16().index(n)]``, known without running a network.
    """
    options = dict(options or OPTIONS)
    torch.manual_seed(seed)
    net = build_model(model, model_config(model, **options))
    with torch.no_grad():  # spread the random features so labels differ between points
        for name, param in net.named_parameters():
            if name.endswith('weight') and param.dim() > 1:
                param.normal_(0.0, 0.5)
    vocabulary = nuscenes16()
    embeddings = torch.nn.functional.normalize(torch.randn(vocabulary.num_classes, DIM), dim=1)
    extra = {}
    if net2d:
        options2d = {'out_dim': DIM, 'allow_random_weights': True, 'head': 'conv1x1'}
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            extra = {'net2d': build_model(image_model, model_config(image_model, **options2d)),
                     'image_model': image_model, 'image_model_options': options2d}
    if steer is not None:
        embeddings = torch.eye(vocabulary.num_classes, DIM)
        for head in (net.head, *([extra['net2d'].head] if net2d else [])):
            with torch.no_grad():
                head.weight.zero_()
                head.bias.copy_(torch.as_tensor(steer, dtype=torch.float32))
    return write_bundle(path, net3d=net, model_name=model, model_options=options,
                        vocabulary=vocabulary, text_embeddings=embeddings,
                        clip_model=clip_model, metadata={
                            'random_weights': True, 'image_size': [32, 64],
                            'note': 'random weights: plumbing tests only'}, **extra)


def steer():
    """The steered bundles' (16,) feature: every class a distinct logit (a wrong embedding row
    shows), driveable_surface 3, pedestrian 2, car 1, vegetation 0, the others below 0."""
    names = nuscenes16().names
    logits = np.array([-0.5 - 0.25 * i for i in range(len(names))], dtype=np.float32)
    for name, value in (('driveable_surface', 3.0), ('pedestrian', 2.0), ('car', 1.0),
                        ('vegetation', 0.0)):
        logits[names.index(name)] = value
    return logits


def sweep(n=600, seed=1, scale=8.0):
    rng = np.random.default_rng(seed)
    xyz = (rng.standard_normal((n, 3)) * [scale, scale, 1.0]).astype(np.float32)
    columns = {'intensity': rng.uniform(0, 255, n).astype(np.float32),
               'ring': rng.integers(0, 32, n).astype(np.float32)}
    return xyz, columns


def fake_encoder(prompt_names):
    """Deterministic unit embeddings from a hash of the prompt names (no CLIP needed)."""
    rows = []
    for names in prompt_names:
        digest = hashlib.sha256('|'.join(names).encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], 'little'))
        row = rng.standard_normal(DIM)
        rows.append(row / np.linalg.norm(row))
    return np.array(rows, dtype=np.float32)


pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def bundle_dir(tmp_path_factory):
    return make_tiny_bundle(tmp_path_factory.mktemp('bundle') / 'tiny')


@pytest.fixture
def segmenter(bundle_dir):
    return Segmenter(bundle_dir, device='cpu')


def hand_logits(bundle_dir, xyz, columns, embeddings):
    """(N, C) logits the long way: the bundle's network on per-point features, then its own
    TextClassifier with the given (C, D) embeddings."""
    net, _ = load_bundle_networks(load_bundle(bundle_dir), 'cpu')
    net.classifier.set_text_embeddings(torch.as_tensor(np.asarray(embeddings)))
    points = torch.from_numpy(xyz)
    features = assemble_point_features(columns, ['intensity', 'ring'])
    with torch.no_grad():
        out = net(voxelize_batch([points], [features], 0.5, shape_multiple=16))
        return net.classifier(out.features)


def test_normalized_features_and_logit_scale_follow_the_classifier_config(tmp_path):
    options = {**OPTIONS, 'classifier': {'normalize_features': True, 'logit_scale': 20.0}}
    bundle = make_tiny_bundle(tmp_path / 'cosine', options=options)
    xyz, columns = sweep(500, seed=7)
    result = Segmenter(bundle, device='cpu').segment(xyz, columns)
    logits = hand_logits(bundle, xyz, columns, load_bundle(bundle).text_embeddings)
    assert_argmax(result.labels, logits)
    softmax = torch.softmax(logits, 1).max(1).values.numpy()
    np.testing.assert_allclose(result.confidence, softmax, rtol=1e-4, atol=1e-5)


def assert_argmax(labels, logits):
    """labels == argmax(logits) wherever the top two logits differ by more than float noise
    (the segmenter folds the projection head into the classifier: same math, other rounding)."""
    top2 = torch.topk(logits, 2, dim=1).values
    clear = ((top2[:, 0] - top2[:, 1]) > 1e-4 * top2[:, 0].abs().clamp_min(1.0)).numpy()
    assert clear.mean() > 0.98
    np.testing.assert_array_equal(labels[clear], logits.argmax(1).numpy()[clear])


def test_labels_are_the_argmax_of_a_hand_computation(segmenter, bundle_dir):
    xyz, columns = sweep()
    result = segmenter.segment(xyz, columns)
    logits = hand_logits(bundle_dir, xyz, columns, load_bundle(bundle_dir).text_embeddings)
    expected = logits.argmax(1).numpy()
    assert result.labels.dtype == np.uint16 and result.confidence.dtype == np.float32
    assert result.labels.shape == result.confidence.shape == (len(xyz),)
    assert len(np.unique(expected)) > 1, 'test network gives one class: not a useful test'
    assert_argmax(result.labels, logits)
    softmax = torch.softmax(logits, 1).max(1).values.numpy()
    np.testing.assert_allclose(result.confidence, softmax, rtol=1e-4, atol=1e-5)
    assert result.num_valid == len(xyz) and result.missing_columns == ()
    assert set(result.timings) == {'voxelize', 'network', 'classify'}
    assert all(v >= 0 for v in result.timings.values())


def test_a_point_voxel_bundle_labels_every_point_in_input_order(tmp_path):
    """SPVCNN: one latent per input point (no voxel -> point step); the labels equal the
    argmax of the long way through the loaded network, and follow the input order."""
    bundle = make_tiny_bundle(tmp_path / 'spvcnn', model='spvcnn')
    assert load_bundle(bundle).model_name == 'spvcnn'
    segmenter = Segmenter(bundle, device='cpu')
    xyz, columns = sweep(700, seed=3)
    xyz[:2] = [[1.1, 1.1, 0.1], [1.2, 1.2, 0.2]]  # two points of one 0.5 m voxel
    columns['intensity'][1] = columns['intensity'][0]
    result = segmenter.segment(xyz, columns)
    logits = hand_logits(bundle, xyz, columns, load_bundle(bundle).text_embeddings)
    assert result.labels.shape == result.confidence.shape == (len(xyz),)
    assert len(np.unique(logits.argmax(1).numpy())) > 1, 'one class: not a useful test'
    assert not torch.equal(logits[0], logits[1])  # per point, not per voxel
    assert_argmax(result.labels, logits)
    np.testing.assert_allclose(result.confidence, torch.softmax(logits, 1).max(1).values,
                               rtol=1e-4, atol=1e-5)
    order = np.random.default_rng(5).permutation(len(xyz))
    shuffled = segmenter.segment(xyz[order], {k: v[order] for k, v in columns.items()})
    assert_argmax(shuffled.labels, logits[torch.from_numpy(order)])


def test_temperature_changes_confidence_not_labels(segmenter):
    xyz, columns = sweep(300)
    base = segmenter.segment(xyz, columns)
    segmenter.temperature = 10.0
    flat = segmenter.segment(xyz, columns)
    np.testing.assert_array_equal(flat.labels, base.labels)
    assert (flat.confidence <= base.confidence + 1e-6).all()
    assert flat.confidence.min() >= 1.0 / segmenter.vocabulary.num_classes - 1e-6
    with pytest.raises(SegmenterError, match='temperature'):
        segmenter.temperature = 0.0


def test_nonfinite_and_far_points_are_unlabeled(segmenter):
    xyz, columns = sweep(400)
    xyz[[3, 10]] = np.nan
    xyz[20, 1] = np.inf
    xyz[30, 2] = -np.inf
    xyz[40] = [1e7, 0, 0]  # beyond max_range (500 m): would blow up the voxel grid
    columns['intensity'][50] = np.nan  # a bad feature is zeroed, not propagated
    result = segmenter.segment(xyz, columns)
    bad = [3, 10, 20, 30, 40]
    assert (result.labels[bad] == UNLABELED).all() and (result.confidence[bad] == 0).all()
    good = np.setdiff1d(np.arange(len(xyz)), bad)
    assert (result.labels[good] < segmenter.vocabulary.num_classes).all()
    assert (result.confidence[good] > 0).all() and np.isfinite(result.confidence).all()
    assert result.num_valid == len(good)
    # The valid points get the labels they get without the invalid ones.
    clean = segmenter.segment(xyz[good], {k: np.nan_to_num(v[good]) for k, v in columns.items()})
    np.testing.assert_array_equal(result.labels[good], clean.labels)


def test_empty_and_all_invalid_clouds(segmenter):
    empty = segmenter.segment(np.zeros((0, 3), np.float32), {'intensity': np.zeros(0)})
    assert empty.labels.shape == (0,) and empty.labels.dtype == np.uint16
    assert empty.confidence.shape == (0,) and empty.num_valid == 0
    nan = segmenter.segment(np.full((5, 3), np.nan, np.float32))
    assert (nan.labels == UNLABELED).all() and (nan.confidence == 0).all()
    with pytest.raises(ValueError, match=r'\(N, 3\)'):
        segmenter.segment(np.zeros((4, 2), np.float32))


def test_missing_columns_are_zeros(segmenter):
    xyz, columns = sweep(200)
    result = segmenter.segment(xyz, {'intensity': columns['intensity']})
    assert result.missing_columns == ('ring',)
    zeros = segmenter.segment(xyz, {'intensity': columns['intensity'], 'ring': np.zeros(200)})
    np.testing.assert_array_equal(result.labels, zeros.labels)
    with pytest.raises(ValueError, match='rows'):
        segmenter.segment(xyz, {'intensity': np.zeros(5)})


def test_host_labels_and_confidences_equal_the_plain_formula():
    """label_confidence's numpy path (in place, uint8 ranks) equals the straightforward
    computation bit for bit: argmax (first maximum on ties) and 1 / sum(exp((l - max) / T))."""
    from cns_ros.segmenter_ops import label_confidence

    rng = np.random.default_rng(3)
    for classes in (2, 16, 300):
        logits = rng.standard_normal((classes, 4000)).astype(np.float32) * 4
        logits[:, :20] = 1.5  # ties
        logits[classes - 1, 20:30] = logits[:, 20:30].max(0) + 1.0  # the last class wins
        for temperature in (1.0, 0.3, 7.0):
            labels, confidence = label_confidence(logits.copy(), temperature)
            best = logits.max(0)
            expected = (1.0 / np.exp((logits - best) / np.float32(temperature)).sum(0))
            assert labels.dtype == np.uint16 and confidence.dtype == np.float32
            np.testing.assert_array_equal(labels, logits.argmax(0))
            np.testing.assert_array_equal(confidence, expected.astype(np.float32))


def test_known_names_use_the_bundle_cache(segmenter, bundle_dir):
    bundle = load_bundle(bundle_dir)
    names = ['pedestrian', 'car', 'driveable_surface']
    segmenter.set_vocabulary(names)
    assert segmenter.vocabulary.names == tuple(names)
    assert segmenter.vocabulary_version == 1
    rows = [bundle.vocabulary.index(n) for n in names]
    np.testing.assert_array_equal(segmenter.colors, bundle.vocabulary.colors[rows])
    xyz, columns = sweep()
    result = segmenter.segment(xyz, columns)
    assert result.vocabulary_version == 1 and result.vocabulary.names == tuple(names)
    assert_argmax(result.labels,
                  hand_logits(bundle_dir, xyz, columns, bundle.text_embeddings[rows]))


def test_cached_names_ignore_case_and_underscores(tmp_path):
    """Case and '_' vs ' ' do not matter for the cache; the requested spelling is kept. In the
    steered bundle every point's logits for (vegetation, driveable_surface, car) are (0, 3, 1):
    label 1 with softmax confidence e^3 / (e^0 + e^3 + e^1), whatever the points."""
    segmenter = Segmenter(make_tiny_bundle(tmp_path / 'steered', steer=steer()), device='cpu')
    segmenter.set_vocabulary(['vegetation', 'Driveable Surface', 'CAR'])
    assert segmenter.vocabulary.names == ('vegetation', 'Driveable Surface', 'CAR')
    result = segmenter.segment(*sweep(300))
    assert (result.labels == 1).all()
    np.testing.assert_allclose(result.confidence, 1.0 / (1.0 + np.exp(-3.0) + np.exp(-2.0)),
                               rtol=1e-6)


@pytest.mark.parametrize('names, synonyms, reason', [
    ([], None, 'empty'),
    (['car', 'Car'], None, 'unique'),
    (['car', 'road_works'], None, 'no text embedding'),
    (['car'], {'car': ['automobile', 'sedan']}, 'no text embedding'),
    (['car'], {'truck': ['lorry']}, 'not in the list'),
    (['car', ' '], None, 'non-blank'),
    ('car', None, 'list'),
])
def test_invalid_vocabulary_is_refused_and_the_old_one_stays(segmenter, names, synonyms,
                                                            reason):
    before = (segmenter.vocabulary, segmenter.vocabulary_version)
    with pytest.raises(VocabularyUpdateError, match=reason):
        segmenter.set_vocabulary(names, synonyms)
    assert (segmenter.vocabulary, segmenter.vocabulary_version) == before


def test_unknown_names_without_clip_name_the_missing_checkpoint(tmp_path):
    bundle = make_tiny_bundle(tmp_path / 'clip', clip_model='ViT-B-16')
    segmenter = Segmenter(bundle, device='cpu')
    assert not segmenter.can_encode_text
    with pytest.raises(VocabularyUpdateError, match='clip_checkpoint'):
        segmenter.set_vocabulary(['car', 'excavator'])


def test_new_names_and_synonyms_go_through_the_text_encoder(bundle_dir):
    calls = []

    def encoder(prompt_names):
        calls.append([tuple(p) for p in prompt_names])
        return fake_encoder(prompt_names)

    segmenter = Segmenter(bundle_dir, device='cpu', text_encoder=encoder)
    segmenter.set_vocabulary(['car', 'excavator', 'truck'], {'truck': ['lorry']})
    assert calls == [[('excavator',), ('truck', 'lorry')]]  # car: from the cache
    vocab = segmenter.vocabulary
    assert vocab.classes[2].synonyms == ('lorry',)
    assert vocab.classes[0].synonyms == nuscenes16().classes[nuscenes16().index('car')].synonyms
    # Colors: known classes keep theirs, new ones get palette colors not in use.
    assert tuple(vocab.colors[0]) == nuscenes16().classes[nuscenes16().index('car')].color
    assert tuple(vocab.colors[1]) in {tuple(c) for c in palette(6)}
    xyz, columns = sweep()
    result = segmenter.segment(xyz, columns)
    assert result.vocabulary_version == 1
    # The labels use the cached row for car and the encoder's rows for the new names.
    car = load_bundle(bundle_dir).text_embeddings[nuscenes16().index('car')]
    rows = np.vstack([car, fake_encoder([('excavator',), ('truck', 'lorry')])])
    logits = hand_logits(bundle_dir, xyz, columns, rows)
    assert len(np.unique(logits.argmax(1).numpy())) == 3, 'a class never wins: weak test'
    assert_argmax(result.labels, logits)
    # Encoded names are cached: asking again does not call the encoder.
    segmenter.set_vocabulary(['excavator', 'truck'], {'truck': ['lorry']})
    assert len(calls) == 1
    # A bad encoder output is refused with a reason.
    broken = Segmenter(bundle_dir, device='cpu', text_encoder=lambda p: np.zeros((1, 3)))
    with pytest.raises(VocabularyUpdateError, match='shape'):
        broken.set_vocabulary(['excavator'])
    assert broken.vocabulary_version == 0


def test_parse_vocabulary_entries():
    names, synonyms = parse_vocabulary_entries(['road', ' car : automobile | van ', 'tree'])
    assert names == ['road', 'car', 'tree'] and synonyms == {'car': ['automobile', 'van']}
    for bad, reason in ((['car:'], 'empty synonym'), ([':x'], 'empty class name'),
                        ([3], 'not a string'), ('road', 'list')):
        with pytest.raises(VocabularyUpdateError, match=reason):
            parse_vocabulary_entries(bad)


def test_colors_and_unlabeled_color(segmenter):
    assert segmenter.colors.shape == (16, 3) and segmenter.colors.dtype == np.uint8
    np.testing.assert_array_equal(segmenter.colors, nuscenes16().colors)
    assert tuple(segmenter._state.colors[-1]) == UNLABELED_COLOR


def test_node_label_colors_are_the_packed_class_colors(segmenter):
    """The node's LabelColors (packed table, one gather) = pack_rgb of each label's color, the
    unlabeled color for 65535, rebuilt when the vocabulary changes."""
    from cns_ros.pointcloud import pack_rgb
    from cns_ros.ros.sweep_io import LabelColors

    xyz, columns = sweep(300)
    xyz[5] = np.nan
    colors = LabelColors()
    for names in (None, ['car', 'vegetation']):
        if names:
            segmenter.set_vocabulary(names)
        result = segmenter.segment(xyz, columns)
        table = np.concatenate([segmenter.colors, [UNLABELED_COLOR]]).astype(np.uint8)
        expected = pack_rgb(table[np.minimum(result.labels, len(table) - 1)])
        packed = colors(result, result.labels)
        assert packed.dtype == np.float32 and result.labels[5] == UNLABELED
        np.testing.assert_array_equal(packed.view(np.uint32), expected.view(np.uint32))


def test_warm_up_and_description(segmenter):
    timings = segmenter.warm_up(num_points=500, passes=1)
    assert set(timings) == {'voxelize', 'network', 'classify'}
    text = segmenter.describe()
    assert 'minkunet14a' in text and 'cpu' in text and 'RANDOM WEIGHTS' in text
    assert segmenter.random_weights and not segmenter.fp16


def test_bad_bundle_and_device(tmp_path, bundle_dir):
    with pytest.raises(BundleError, match='not found'):
        Segmenter(tmp_path / 'nowhere', device='cpu')
    with pytest.raises(SegmenterError, match="device must be"):
        resolve_device('gpu')
    if not torch.cuda.is_available():
        with pytest.raises(SegmenterError, match='CUDA is not available'):
            Segmenter(bundle_dir, device='cuda')
        assert resolve_device('auto') == 'cpu'


IMAGE_MODELS = {'deeplabv3_r50': 'resnet50', 'deeplabv3_r18': 'resnet18',
                'deeplabv3_mbv3': 'mobilenet_v3_large'}


@pytest.mark.parametrize('image_model', sorted(IMAGE_MODELS))
def test_segment_image_with_a_2d_network(tmp_path, image_model):
    import cv2
    import yaml

    from cns_ros.models.image_net import label_image, normalize_images

    bundle = make_tiny_bundle(tmp_path / 'with2d', net2d=True, image_model=image_model)
    net2d = yaml.safe_load((bundle / 'model.yaml').read_text())['net2d']
    assert net2d['model'] == image_model
    assert net2d['options']['backbone'] == IMAGE_MODELS[image_model]
    assert 'allow_random_weights' not in net2d['options']
    segmenter = Segmenter(bundle, device='cpu')
    assert segmenter.has_image_net and segmenter.image_size == (32, 64)
    assert segmenter.net2d.config.backbone == IMAGE_MODELS[image_model]
    image = np.random.default_rng(0).integers(0, 256, (45, 80, 3), dtype=np.uint8)
    labels = segmenter.segment_image(image)
    assert labels.shape == (45, 80) and labels.dtype == np.uint8
    assert labels.max() < segmenter.vocabulary.num_classes
    # the long way: the bundle's 2D network reloaded, its own classifier, then label_image
    _, net = load_bundle_networks(load_bundle(bundle), 'cpu')
    small = cv2.resize(image, (64, 32), interpolation=cv2.INTER_AREA)
    with torch.no_grad():
        rgb = torch.from_numpy(small).permute(2, 0, 1).float()[None] / 255.0
        logits = net.classifier(net(normalize_images(rgb)).features, dim=1)[0]
    np.testing.assert_array_equal(labels, label_image(logits, (45, 80)))
    with pytest.raises(ValueError, match='uint8'):
        segmenter.segment_image(image.astype(np.float32))
    no2d = Segmenter(make_tiny_bundle(tmp_path / 'no2d'), device='cpu')
    with pytest.raises(SegmenterError, match='no 2D network'):
        no2d.segment_image(image)


@pytest.mark.parametrize('image_model', sorted(IMAGE_MODELS))
def test_image_labels_follow_the_vocabulary(tmp_path, image_model):
    """The steered 2D network gives every pixel the logits car 1, pedestrian 2, vegetation 0,
    driveable_surface 3: the label is the position of the largest in the current list."""
    bundle = make_tiny_bundle(tmp_path / 'steered2d', net2d=True, steer=steer(),
                              image_model=image_model)
    segmenter = Segmenter(bundle, device='cpu')
    image = np.random.default_rng(0).integers(0, 256, (45, 80, 3), dtype=np.uint8)
    segmenter.set_vocabulary(['car', 'pedestrian', 'vegetation'])
    assert (segmenter.segment_image(image) == 1).all()
    segmenter.set_vocabulary(['driveable_surface', 'car'])
    assert (segmenter.segment_image(image) == 0).all()


def test_device_and_host_label_paths_agree(segmenter):
    """The torch path (used on CUDA) and the numpy path (CPU) give the same labels and
    confidences, first maximum on ties as argmax."""
    logits = torch.randn(7, 5000)
    logits[:, :10] = 1.0  # ties: all classes equal -> label 0, confidence 1/7
    for temperature in (1.0, 0.5):
        segmenter.temperature = temperature
        host = segmenter._label_confidence(logits.numpy().copy())
        device = segmenter._label_confidence(logits.clone())
        np.testing.assert_array_equal(host[0], device[0])
        np.testing.assert_allclose(host[1], device[1], rtol=1e-6)
        np.testing.assert_array_equal(host[0], logits.argmax(0).numpy())
        np.testing.assert_allclose(host[1], torch.softmax(logits / temperature, 0).amax(0),
                                   rtol=1e-5)
        assert host[0].dtype == np.uint16 and host[1].dtype == np.float32
    assert (host[0][:10] == 0).all() and np.allclose(host[1][:10], 1 / 7)


def test_import_is_cheap():
    """The node imports the segmenter before it needs torch: importing it loads no torch."""
    import subprocess
    import sys

    code = ('import sys, cns_ros.segmenter, cns_ros.ros.diagnostics; '
            "print(','.join(m for m in ('torch', 'spconv', 'rclpy', 'open_clip') "
            'if m in sys.modules))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1:] in ([], ['']), out.stdout


def test_network_from_sensor_moves_the_network_input_only(bundle_dir):
    """Labels with a transform equal the labels of the moved points (the network sees them),
    while max_range is still measured in the sensor frame: a point 3 m away stays labeled when
    the transform puts it 64 m out, and a point beyond max_range stays unlabeled. Coordinates
    are odd multiples of 1/128 m, away from the 0.5 m voxel borders, so turning and shifting
    them by whole voxels keeps every point's voxel neighbourhood."""
    from cns_ros.geometry import transform_from_xyz_rpy, transform_points

    segmenter = Segmenter(bundle_dir, device='cpu', max_range=50.0)
    rng = np.random.default_rng(3)
    xyz = ((2 * rng.integers(-192, 192, (400, 3)) + 1) / 128).astype(np.float32)
    xyz[0] = (60.0, 0.0, 0.0)  # beyond max_range in the sensor frame
    columns = {'intensity': rng.uniform(0, 255, 400).astype(np.float32)}
    turn = transform_from_xyz_rpy([0.0, 0.0, 0.0, -np.pi / 2, 0.0, -np.pi / 2])
    far = transform_from_xyz_rpy([64.0, 0.0, 0.0, 0.0, 0.0, 0.0]) @ turn
    got = segmenter.segment(xyz, columns, far)
    moved = transform_points(turn, xyz[1:])  # a translation by whole voxels changes nothing
    expected = Segmenter(bundle_dir, device='cpu', max_range=50.0).segment(
        moved, {'intensity': columns['intensity'][1:]})
    assert got.labels[0] == 65535 and got.num_valid == 399
    np.testing.assert_array_equal(got.labels[1:], expected.labels)
    assert (segmenter.segment(xyz, columns).labels[1:] != expected.labels).any()
    with pytest.raises(ValueError, match='rigid'):
        segmenter.segment(xyz, columns, np.diag([2.0, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r'4, 4\), found \(3, 3\)'):
        segmenter.segment(xyz, columns, np.eye(3))
