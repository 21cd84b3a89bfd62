"""offline_training/evaluate.py: our nuScenes-16 scores equal the official devkit evaluator's
(nuscenes.eval.lidarseg.evaluate.LidarSegEval) on the same predictions; JSON, PNG, lidarseg
prediction files and the teacher comparison. A synthetic world whose scenes make up the whole
mini_val split, tiny random networks, CPU."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cns_ros.data.synthetic import SyntheticConfig, generate_synthetic_nuscenes
from cns_ros.metrics import confusion_matrix
from cns_ros.models.build import build_model, model_config
from cns_ros.training.bundle_write import write_bundle
from cns_ros.vocabulary import lidarseg16_to_train, nuscenes16
from offline_training import evaluate

SPLIT = 'mini_val'
OPTIONS = {'channel_scale': 0.125, 'out_dim': 16, 'input_features': ['intensity', 'ring'],
           'voxel_size': 0.5}
CONSTANT = 'driveable_surface'


pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(dataroot, cache, bundle): both mini_val scenes (3 keyframes each), a simulated-teacher
    cache of them, and a bundle of a tiny random MinkUNet whose text embeddings are spread so
    that it predicts many classes."""
    from nuscenes.utils.splits import create_splits_scenes

    from offline_training import pseudo_label

    base = tmp_path_factory.mktemp('evaluate')
    dataroot = base / 'nuscenes'
    generate_synthetic_nuscenes(dataroot, SyntheticConfig(
        scene_names=tuple(create_splits_scenes(verbose=False)[SPLIT]), scene_duration_s=1.0,
        image_width=160, image_height=90))
    cache = base / 'cache'
    assert pseudo_label.main([
        '--dataroot', str(dataroot), '--version', 'v1.0-mini', '--split', SPLIT,
        '--teacher', 'simulated', '--sam', 'simulated', '--image-size', '45', '80',
        '--out', str(cache), '--no-progress']) == 0
    torch.manual_seed(3)
    net = build_model('minkunet14a', model_config('minkunet14a', **OPTIONS))
    bundle = write_bundle(base / 'bundle', net3d=net, model_name='minkunet14a',
                          model_options=OPTIONS, vocabulary=nuscenes16(),
                          text_embeddings=torch.eye(16) * 3.0)
    return dataroot, cache, bundle


@pytest.fixture(scope='module')
def constant_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle whose 3D network predicts CONSTANT at every point: the head's weights are
    zero and its bias is the unit vector of CONSTANT, the text embeddings the identity."""
    net = build_model('minkunet14a', model_config('minkunet14a', **OPTIONS))
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.copy_(torch.eye(16)[nuscenes16().index(CONSTANT)])
    return write_bundle(tmp_path_factory.mktemp('constant') / 'bundle', net3d=net,
                        model_name='minkunet14a', model_options=OPTIONS,
                        vocabulary=nuscenes16(), text_embeddings=torch.eye(16))


def _run(world: tuple[Path, Path, Path], out: Path, *extra: str,
         bundle: Path | None = None) -> dict:
    dataroot, _, default = world
    assert evaluate.main(['--bundle', str(bundle or default), '--dataroot', str(dataroot),
                          '--version', 'v1.0-mini', '--split', SPLIT, '--out', str(out),
                          '--threads', '1', '--no-progress', *extra]) == 0
    return json.loads((out / 'metrics.json').read_text())


def test_scores_follow_the_devkit_on_hand_made_labels():
    from nuscenes.eval.lidarseg.utils import ConfusionMatrix

    rng = np.random.default_rng(0)
    gt16 = rng.choice([0, 1, 2, 4, 11, 13, 15], size=5000)          # classes 3, 5, ... absent
    pred16 = np.where(rng.random(5000) < 0.6, np.maximum(gt16, 1), rng.integers(1, 9, 5000))
    official = ConfusionMatrix(17, 0)
    official.update(gt16, pred16)
    ours = evaluate.scores(confusion_matrix(lidarseg16_to_train(gt16), pred16 - 1, 16),
                           nuscenes16().names)
    assert ours['miou'] == pytest.approx(official.get_mean_iou(), abs=1e-6)
    iou = official.get_per_class_iou()[1:]
    for (name, row), value in zip(ours['classes'].items(), iou, strict=True):
        assert (row['iou'] is None) == bool(np.isnan(value)), name
        if row['iou'] is not None:
            assert row['iou'] == pytest.approx(float(value), abs=1e-6), name
    # a class predicted but absent from the ground truth counts 0 for the devkit only
    assert ours['classes']['bus']['iou'] == 0.0 and ours['classes']['bus']['support'] == 0
    assert ours['classes']['bus']['iou_if_present'] is None
    assert ours['miou_present'] > ours['miou']
    assert ours['classes']['trailer']['iou'] is None          # neither in gt nor predicted
    assert ours['miou_union0_as_1'] > ours['miou']


def test_our_miou_equals_the_official_lidarseg_eval(world, tmp_path):
    from nuscenes.eval.lidarseg.evaluate import LidarSegEval
    from nuscenes.nuscenes import NuScenes

    dataroot = world[0]
    out = tmp_path / 'eval'
    document = _run(world, out, '--format', 'nuscenes', '--official')
    nusc = NuScenes('v1.0-mini', str(dataroot), verbose=False)
    official = LidarSegEval(nusc, str(out), eval_set=SPLIT).evaluate()
    ours = document['net3d']
    assert ours['classes_scored'] >= 4            # a non-trivial prediction mix
    assert ours['miou'] == pytest.approx(official['miou'], abs=1e-6)
    assert document['official']['miou'] == pytest.approx(official['miou'], abs=1e-12)
    for name, row in ours['classes'].items():
        value = official['iou_per_class'][name]
        assert (row['iou'] is None) == bool(np.isnan(value)), name
        if row['iou'] is not None:
            assert row['iou'] == pytest.approx(float(value), abs=1e-6), name
    # one uint8 file per keyframe of the split, one label 1..16 per point of its .pcd.bin
    files = sorted((out / 'lidarseg' / SPLIT).iterdir())
    assert len(files) == len(nusc.sample) == document['dataset']['keyframes'] == 6
    for path in files:
        token = path.name.removesuffix('_lidarseg.bin')
        points = np.fromfile(Path(dataroot) / nusc.get('sample_data', token)['filename'],
                             dtype=np.float32).reshape(-1, 5)
        labels = np.fromfile(path, dtype=np.uint8)
        assert len(labels) == len(points) and labels.min() >= 1 and labels.max() <= 16


def _hand_counts(dataroot: Path, cache_root: Path) -> tuple[np.ndarray, np.ndarray]:
    """(16,) ground-truth points per nuScenes-16 class over the split's keyframes, all and
    those paired with a pixel in the cache: the devkit's lidarseg files and 32 -> 16 class
    mapper, the cache's pair_point, nothing of evaluate.py."""
    from nuscenes.eval.lidarseg.utils import LidarsegClassMapper
    from nuscenes.nuscenes import NuScenes

    from cns_ros.teachers import cache

    nusc = NuScenes('v1.0-mini', str(dataroot), verbose=False)
    mapper = LidarsegClassMapper(nusc)
    every, paired = np.zeros(17, dtype=np.int64), np.zeros(17, dtype=np.int64)
    for sample in nusc.sample:
        path = Path(dataroot) / nusc.get('lidarseg', sample['data']['LIDAR_TOP'])['filename']
        labels = mapper.convert_label(np.fromfile(path, dtype=np.uint8))
        pair_point = cache.read_keyframe(cache.keyframe_path(cache_root, sample['token'])) \
            .pair_point
        mask = np.zeros(len(labels), dtype=bool)
        mask[pair_point[pair_point < len(labels)]] = True
        every += np.bincount(labels, minlength=17)
        paired += np.bincount(labels[mask], minlength=17)
    return every[1:], paired[1:]  # index 0 of the devkit's 16 classes is 'ignore'


def _assert_constant_prediction_scores(scores: dict, support: np.ndarray) -> None:
    """Every point predicted CONSTANT (k): the confusion is ``support`` in column k; IoU_k =
    support_k / N (its union is every point), 0 for the other present classes, so mIoU =
    support_k / N / (number of present classes), and the accuracy is support_k / N."""
    k = nuscenes16().index(CONSTANT)
    assert support[k] > 0 and np.count_nonzero(support) >= 4  # a non-trivial expectation
    expected = np.zeros((16, 17), dtype=np.int64)
    expected[:, k] = support
    assert scores['confusion'] == expected.tolist()
    fraction = support[k] / support.sum()
    assert scores['miou'] == pytest.approx(fraction / np.count_nonzero(support), abs=1e-12)
    assert scores['accuracy'] == pytest.approx(fraction, abs=1e-12)


def test_json_png_and_teacher_scores_on_the_same_points(world, constant_bundle, tmp_path,
                                                        capsys):
    cache = world[1]
    out = tmp_path / 'eval'
    document = _run(world, out, '--cache', str(cache), bundle=constant_bundle)
    every, paired = _hand_counts(world[0], cache)
    _assert_constant_prediction_scores(document['net3d'], every)
    _assert_constant_prediction_scores(document['net3d_paired'], paired)
    teacher = np.array(document['teacher']['confusion'])
    assert teacher.shape == (16, 17) and teacher.sum(axis=1).tolist() == paired.tolist()
    assert len(document['teacher']['classes']) == 16
    assert document['net3d_paired']['points'] < document['net3d']['points']
    assert document['dataset']['teacher_keyframes'] == 6
    assert document['net2d_skipped'] == 'the bundle has no 2D network'
    # the teacher line is the pseudo-label quality of the cache, point for point
    quality = json.loads((cache / 'quality.json').read_text())
    assert document['teacher']['confusion'] == quality['confusion']
    assert document['teacher']['miou_present'] == pytest.approx(quality['miou'])
    png = (out / 'iou_3d.png').read_bytes()
    assert png.startswith(b'\x89PNG\r\n\x1a\n') and len(png) > 10_000
    assert not (out / 'iou_2d.png').exists() and not (out / 'lidarseg').exists()
    printed = capsys.readouterr().out
    assert 'teacher' in printed and 'miou' in printed and 'metrics.json' in printed
    assert not list(out.glob('.*tmp*'))       # atomic writes leave nothing behind


def test_bad_arguments_exit_2(world, tmp_path, capsys):
    dataroot, _, bundle = world
    common = ['--dataroot', str(dataroot), '--version', 'v1.0-mini', '--out', str(tmp_path)]
    cases = [
        (['--bundle', str(bundle), *common, '--format', 'nuscenes'], 'needs --split'),
        (['--bundle', str(tmp_path / 'none'), *common, '--split', SPLIT], 'model bundle'),
        (['--bundle', str(bundle), *common, '--split', 'mini_val', '--official'],
         '--official needs --format nuscenes'),
        (['--bundle', str(bundle), *common, '--split', SPLIT, '--cache', str(tmp_path)],
         'manifest.json not found'),
        (['--bundle', str(bundle), *common, '--split', 'train'], "split 'train' has no scene"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exc:
            evaluate.main(argv)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err, message


def test_2d_network_scored_on_pixels_or_skipped_without_pixel_ground_truth(world, tmp_path,
                                                                            capsys):
    """A bundle with a 2D network: scored against synthetic_gt/, skipped with a message on a
    dataroot without it (as real nuScenes)."""
    dataroot, _, _ = world
    torch.manual_seed(0)
    options = {'channel_scale': 0.125, 'out_dim': 8, 'voxel_size': 0.5}
    net3d = build_model('minkunet14a', model_config('minkunet14a', **options))
    with pytest.warns(UserWarning, match='random backbone'):
        net2d = build_model('deeplabv3_r50', model_config(
            'deeplabv3_r50', out_dim=8, head='conv1x1', allow_random_weights=True))
    bundle = write_bundle(tmp_path / 'bundle', net3d=net3d, model_name='minkunet14a',
                          model_options=options, vocabulary=nuscenes16(),
                          text_embeddings=np.random.default_rng(0).normal(size=(16, 8)),
                          net2d=net2d, image_model='deeplabv3_r50',
                          image_model_options={'out_dim': 8, 'head': 'conv1x1'},
                          metadata={'image_size': [45, 80]})
    argv = ['--bundle', str(bundle), '--version', 'v1.0-mini', '--split', SPLIT, '--limit', '1',
            '--no-progress']
    assert evaluate.main([*argv, '--dataroot', str(dataroot), '--out', str(tmp_path / 'a')]) == 0
    document = json.loads((tmp_path / 'a' / 'metrics.json').read_text())
    assert document['dataset']['images'] == 6 and document['net2d_skipped'] is None
    assert document['net2d']['points'] > 0.5 * 6 * 90 * 160     # ground-truth resolution
    assert (tmp_path / 'a' / 'iou_2d.png').is_file()
    copy = tmp_path / 'nuscenes'
    shutil.copytree(dataroot, copy, ignore=shutil.ignore_patterns('synthetic_gt'))
    assert evaluate.main([*argv, '--dataroot', str(copy), '--out', str(tmp_path / 'b')]) == 0
    document = json.loads((tmp_path / 'b' / 'metrics.json').read_text())
    assert 'net2d' not in document and 'synthetic_gt' in document['net2d_skipped']
    assert '2D evaluation skipped' in capsys.readouterr().err
    assert document['dataset']['keyframes'] == 1


class _FixedLogits(torch.nn.Module):
    """Stands in for a 2D network: its features are the given (16, h, w) logits whatever the
    (1, 3, h, w) image; its classifier has the identity as text embeddings (logits unchanged,
    exactly, on both paths)."""

    def __init__(self, logits: torch.Tensor) -> None:
        from cns_ros.models.heads import TextClassifier

        super().__init__()
        self.logits = logits
        self.classifier = TextClassifier(16)
        self.classifier.set_text_embeddings(torch.eye(16))

    def forward(self, images: torch.Tensor):
        from cns_ros.models.image_net import ImageOutput

        assert images.shape == (1, 3, *self.logits.shape[1:])
        return ImageOutput(features=self.logits[None], latent=self.logits[None])


def test_offline_and_live_2d_labels_agree_on_the_same_logits(tmp_path):
    """The same (16, 45, 80) logits through offline evaluation (Evaluator.predict_image) and the
    live node's path (Segmenter.segment_image) give the same 90 x 160 labels: the argmax at
    45 x 80 (class (r // 5 + 3 * (c // 8)) mod 16 at (r, c), by construction), each pixel
    doubled (output pixel (R, C) has its centre in input pixel (R // 2, C // 2))."""
    from cns_ros.segmenter import Segmenter

    options = {'channel_scale': 0.125, 'out_dim': 16, 'voxel_size': 0.5}
    bundle = write_bundle(tmp_path / 'bundle', net3d=build_model(
        'minkunet14a', model_config('minkunet14a', **options)), model_name='minkunet14a',
        model_options=options, vocabulary=nuscenes16(), text_embeddings=torch.eye(16))
    rows, cols = np.meshgrid(np.arange(45), np.arange(80), indexing='ij')
    small = (rows // 5 + 3 * (cols // 8)) % 16
    classes = torch.arange(16, dtype=torch.float32)[:, None, None]
    logits = -(classes - torch.from_numpy(small).float()) ** 2  # unique maximum at `small`
    net2d = _FixedLogits(logits)
    live = Segmenter(bundle, device='cpu', image_size=(45, 80))
    live.net2d = net2d
    offline = evaluate.Evaluator(None, net2d, evaluate.class_order(nuscenes16()), 'cpu',
                                 (45, 80))
    rgb = np.random.default_rng(0).integers(0, 256, (90, 160, 3), dtype=np.uint8)
    expected = np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)
    np.testing.assert_array_equal(offline.predict_image(rgb, (90, 160)), expected)
    np.testing.assert_array_equal(live.segment_image(rgb), expected)
