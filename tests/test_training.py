"""Training configs, data, checkpoints and the real entry point ``offline_training.train.main``
on the small synthetic world with a simulated-teacher cache (tiny networks, random weights
behind their explicit flags, CPU)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from fixtures_synthetic import small_synthetic_nuscenes

from cns_ros.training.checkpoint import load_checkpoint, rng_state, set_rng_state
from cns_ros.training.config import (
    ConfigError,
    DataConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    dump_config,
    load_config,
)
from cns_ros.training.data import CachedKeyframes, collate
from offline_training import train

PRESETS = Path(__file__).resolve().parents[1] / 'config' / 'train'

pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(dataroot, cache): mini_train of the small world (3 keyframes), 16 x 32 label maps,
    2 previous sweeps, per-image files with (simulated) SAM embeddings and segments."""
    from offline_training import pseudo_label

    dataroot = small_synthetic_nuscenes(tmp_path_factory)
    root = tmp_path_factory.mktemp('train_cache') / 'cache'
    assert pseudo_label.main([
        '--dataroot', str(dataroot), '--version', 'v1.0-mini', '--split', 'mini_train',
        '--teacher', 'simulated', '--sam', 'simulated', '--save-2d', '--num-sweeps', '2',
        '--image-size', '16', '32', '--out', str(root), '--no-progress']) == 0
    return dataroot, root


def _args(world: tuple[Path, Path], out: Path, preset: str, *extra: str) -> list[str]:
    dataroot, root = world
    return ['--config', str(PRESETS / preset), '--dataroot', str(dataroot), '--version',
            'v1.0-mini', '--cache', str(root), '--out', str(out), '--device', 'cpu',
            '--no-progress', '--set', 'data.batch_size=1', *extra]


def _history(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / 'losses.jsonl').read_text().splitlines()]


# --- configs --------------------------------------------------------------------------------

def test_unknown_config_key_is_an_error_naming_key_and_file(tmp_path, capsys):
    path = tmp_path / 'bad.yaml'
    path.write_text('method: cns\ncns:\n  co_trainin: false\n')
    with pytest.raises(ConfigError, match=r'bad\.yaml: cns\.co_trainin: unknown key'):
        load_config(path)
    with pytest.raises(SystemExit) as exc:
        train.main(['--config', str(path), '--out', str(tmp_path / 'run')])
    assert exc.value.code == 2 and 'cns.co_trainin: unknown key' in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r'--set: optim\.lr: expected a number'):
        load_config(None, ['optim.lr=fast'])
    with pytest.raises(ConfigError, match=r'--set: data\.bogus: unknown key'):
        load_config(None, ['data.bogus=1'])


@pytest.mark.parametrize('preset', sorted(p.name for p in PRESETS.glob('*.yaml')))
def test_presets_load_and_round_trip(preset):
    config = load_config(PRESETS / preset)
    again = config_from_dict(yaml.safe_load(dump_config(config)), 'dump')
    assert again == config
    # presets hold overrides only: every value they set differs from the default (the
    # method is named in every preset for the reader)
    data = yaml.safe_load((PRESETS / preset).read_text())

    def same_as_default(overrides: dict, defaults: object, path: str = '') -> list[str]:
        found = []
        for key, value in overrides.items():
            default = getattr(defaults, key)
            if isinstance(value, dict) and not isinstance(default, dict):
                found += same_as_default(value, default, f'{path}{key}.')
            elif config_to_dict(default) == value:
                found.append(f'{path}{key}')
        return found

    assert same_as_default(data, TrainConfig()) in ([], ['method']), preset


def test_set_overrides_are_typed():
    config = load_config(None, ['data.augment.scale=[1, 1]', 'cns.co_training=false',
                                'schedule.steps=7', 'model.options_3d={channel_scale: 0.5}'])
    assert config.data.augment.scale == (1.0, 1.0) and config.cns.co_training is False
    assert config.schedule.steps == 7 and config.model.options_3d == {'channel_scale': 0.5}
    with pytest.raises(ConfigError, match=r'cns\.switching: expected one of'):
        load_config(None, ['cns.switching=sometimes'])
    with pytest.raises(ConfigError, match='expected true/false'):
        load_config(None, ['cns.latent=maybe'])
    # overrides are checked together: the order of dependent switches does not matter
    for pair in (['data.images=false', 'cns.network_2d=false'],
                 ['cns.network_2d=false', 'data.images=false']):
        assert not load_config(None, pair).data.images
    with pytest.raises(ConfigError, match=r'the 2D network needs data\.images'):
        load_config(None, ['data.images=false'])
    # YAML 1.1 reads 1e-3 (no dot) as a string; a float field still takes it, a string not
    assert load_config(None, ['optim.lr=1e-3']).optim.lr == 0.001
    assert load_config(None, ['optim.lr=2.5E+1']).optim.lr == 25.0
    with pytest.raises(ConfigError, match='expected a number'):
        load_config(None, ['optim.lr=fast'])


# --- data and checkpoints -------------------------------------------------------------------

def test_dataset_pairs_sweeps_and_augmentation(world):
    dataroot, root = world
    base = DataConfig(dataroot=str(dataroot), version='v1.0-mini', cache=str(root),
                      num_sweeps=2)
    plain = CachedKeyframes(base, seed=1, augment=False)
    augmented = CachedKeyframes(base, seed=1, grid_size=0.1)
    assert len(plain) == 3
    a, b = plain[(0, 2)], augmented[(0, 2)]
    for key in ('pair_point', 'pair_camera', 'pair_row', 'pair_col', 'pair_label', 'label'):
        np.testing.assert_array_equal(a[key], b[key])
    assert a['points'].shape == b['points'].shape and set(np.unique(a['sweep'])) == {0, 1, 2}
    np.testing.assert_array_equal(a['points'][:, 3:], b['points'][:, 3:])
    radius_a = np.linalg.norm(a['points'][:, :2], axis=1)
    ratio = np.linalg.norm(b['points'][:, :2], axis=1) / np.maximum(radius_a, 1e-6)
    assert np.ptp(ratio[radius_a > 1]) < 1e-3 and 0.95 <= np.median(ratio) <= 1.05
    assert np.array_equal(augmented[(0, 2)]['points'], b['points'])       # a function of the key
    assert not np.array_equal(augmented[(1, 2)]['points'], b['points'])   # another epoch
    # the super-voxels come from the un-augmented cloud: grid ids are the rows of the sorted
    # unique 0.1 m voxel indices floor(p / 0.1) (numpy's row-wise unique, lexicographic)
    cells = np.floor(a['points'][:, :3].astype(np.float64) / 0.1)
    _, expected = np.unique(cells, axis=0, return_inverse=True)
    np.testing.assert_array_equal(b['grid'], expected.reshape(-1))
    assert b['grid'].dtype == np.int64
    keyframe_only = CachedKeyframes(DataConfig(**{**base.__dict__, 'num_sweeps': 0}), seed=1)
    c = keyframe_only[(0, 2)]
    assert set(np.unique(c['sweep'])) == {0} and c['pair_point'].max() < len(c['points'])
    batch = collate([augmented[(0, 0)], augmented[(0, 2)]])
    assert batch.num_images == 12 and batch.images.shape[-2:] == (16, 32)
    assert batch.segments is not None and batch.sam_embedding.shape == (12, 256, 64, 64)
    assert int(batch.pair_point.max()) < len(batch.points) and batch.num_elements == 2
    assert torch.equal(batch.image_labels[batch.pair_image, batch.pair_row, batch.pair_col],
                       batch.pair_label)


def _augmenting(base: DataConfig, **options) -> DataConfig:
    from cns_ros.training.config import ImageAugmentConfig

    return DataConfig(**{**base.__dict__,
                         'image_augment': ImageAugmentConfig(enabled=True, **options)})


def test_image_augmentation_off_changes_nothing_and_identity_crop_is_a_no_op(world):
    """Off (default): pairs are the cache's, images the plain resize. A crop of the whole grid
    without flip (scale 1, ratio W / H = 2, flip 0) gives exactly the same sample (but for the
    SAM embeddings, which augmented samples never carry); the 3D augmentation is unchanged."""
    import cv2

    from cns_ros.teachers import cache

    dataroot, root = world
    base = DataConfig(dataroot=str(dataroot), version='v1.0-mini', cache=str(root))
    off = CachedKeyframes(base, seed=1)[(0, 1)]
    item = cache.read_keyframe(cache.keyframe_path(root, off['token']))
    sweep0 = item.sweep_index[item.pair_point] == 0
    for key in ('pair_camera', 'pair_row', 'pair_col', 'pair_label'):
        np.testing.assert_array_equal(off[key], getattr(item, key)[sweep0])
    dataset = CachedKeyframes(base, seed=1)
    keyframe = dataset.keyframes[dataset.indices[1]]
    first = keyframe.cameras[str(item.cameras[0])].load_image()
    np.testing.assert_array_equal(off['images'][0], cv2.resize(
        first, (32, 16), interpolation=cv2.INTER_AREA).transpose(2, 0, 1))
    assert off['image_augmented'] is False and off['sam_embedding'][0] is not None
    same = CachedKeyframes(_augmenting(base, scale=(1.0, 1.0), ratio=(2.0, 2.0), flip=0.0),
                           seed=1)[(0, 1)]
    assert same['image_augmented'] is True and all(e is None for e in same['sam_embedding'])
    for key, value in off.items():
        if key not in ('sam_embedding', 'image_augmented'):
            np.testing.assert_array_equal(np.asarray(same[key]), np.asarray(value), key)


def test_image_augmentation_crops_flips_and_keeps_pair_labels(world):
    """Default CLIP2Scene crop + flip on the 16 x 32 label maps: the 3D augmentation is the
    un-augmented run's, pairs are dropped (never added) and every kept pair still reads its own
    cached label in the cropped, flipped label map; a function of (seed, epoch, sample)."""
    dataroot, root = world
    base = DataConfig(dataroot=str(dataroot), version='v1.0-mini', cache=str(root))
    plain = CachedKeyframes(base, seed=1)
    augmented = CachedKeyframes(_augmenting(base), seed=1)
    dropped = changed = 0
    for index in range(len(plain)):
        a, b = plain[(0, index)], augmented[(0, index)]
        np.testing.assert_array_equal(a['points'], b['points'])
        assert len(b['pair_row']) <= len(a['pair_row'])
        dropped += len(a['pair_row']) - len(b['pair_row'])
        changed += sum(not np.array_equal(x, y) for x, y in zip(a['image_labels'],
                                                                  b['image_labels'],
                                                                  strict=True))
        for key in ('pair_point', 'pair_camera', 'pair_label'):  # kept pairs, in order
            assert _is_subsequence(b[key], a[key], b['pair_point'], a['pair_point']), key
    assert dropped > 0 and changed > 0
    batch = collate([augmented[(0, 0)], augmented[(0, 2)]])
    assert batch.sam_embedding is None and batch.images.shape == (12, 3, 16, 32)
    assert torch.equal(batch.image_labels[batch.pair_image, batch.pair_row, batch.pair_col],
                       batch.pair_label)
    again = augmented[(0, 2)]
    np.testing.assert_array_equal(again['pair_col'], augmented[(0, 2)]['pair_col'])
    assert not all(np.array_equal(x, y) for x, y in zip(
        augmented[(1, 2)]['image_labels'], again['image_labels'], strict=True))


def _is_subsequence(values, of, keys, of_keys) -> bool:
    """Whether the (key, value) rows are an ordered subsequence of the (of_keys, of) rows."""
    rows = iter(zip(of_keys.tolist(), of.tolist(), strict=True))
    return all(any(row == wanted for row in rows)
               for wanted in zip(keys.tolist(), values.tolist(), strict=True))


def test_rng_state_round_trip_through_a_weights_only_file(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = rng_state()
    path = tmp_path / 'rng.pt'
    torch.save(state, path)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(torch.load(path, weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


# --- the real entry point -------------------------------------------------------------------

def test_train_cns_two_steps(world, tmp_path):
    out = tmp_path / 'cns'
    assert train.main(_args(world, out, 'synthetic_cns.yaml', '--steps', '2',
                            '--set', 'cns.start_step=1')) == 0
    rows = _history(out)
    assert [r['step'] for r in rows] == [0, 1]
    assert {'loss/ce_3d', 'loss/ce_2d', 'loss/latent_3d', 'loss/latent_2d'} <= set(rows[0])
    assert rows[0]['source_3d'] == 'teacher_pixel' and all(np.isfinite(r['loss']) for r in rows)
    checkpoint = out / 'checkpoints' / 'step_00000002.pt'
    state = load_checkpoint(checkpoint)
    assert state['step'] == 2 and state['text_embeddings'].shape == (16, 512)
    assert any(k.startswith('net2d.') for k in state['model'])
    assert load_config(checkpoint.with_suffix('.yaml')).schedule.steps == 2
    assert list((out / 'tensorboard').glob('events.out.tfevents.*'))


@pytest.mark.parametrize('name_2d', ['deeplabv3_mbv3', 'deeplabv3_r18'])
def test_train_cns_two_steps_with_a_light_2d_network(world, tmp_path, name_2d):
    """Co-training with the light 2D network; its checkpoint exports a bundle that records it."""
    from cns_ros.training.bundle_checkpoint import bundle_from_checkpoint
    from cns_ros.training.bundle_format import load_bundle

    out = tmp_path / 'light'
    options = 'model.options_2d={allow_random_weights: true, head: conv1x1}'  # the whole map
    assert train.main(_args(world, out, 'synthetic_cns.yaml', '--steps', '2', '--set', options,
                            '--set', 'cns.start_step=1', '--set', f'model.name_2d={name_2d}')) == 0
    rows = _history(out)
    assert [r['step'] for r in rows] == [0, 1] and all(np.isfinite(r['loss']) for r in rows)
    assert {'loss/ce_2d', 'loss/latent_2d'} <= set(rows[0]) and rows[1]['source_2d'] != 'none'
    checkpoint = out / 'checkpoints' / 'step_00000002.pt'  # after 2 steps (checkpoint.py)
    first = {'deeplabv3_mbv3': 'net2d.backbone.0.0.weight',  # MobileNetV3 features[0] conv
             'deeplabv3_r18': 'net2d.backbone.conv1.weight'}[name_2d]
    state = load_checkpoint(checkpoint)['model']
    assert first in state and state['net2d.aspp.convs.0.0.weight'].shape[1] == {
        'deeplabv3_mbv3': 960, 'deeplabv3_r18': 512}[name_2d]
    bundle = load_bundle(bundle_from_checkpoint(checkpoint, tmp_path / 'bundle'))
    assert bundle.image_model == name_2d and bundle.image_model_options['head'] == 'conv1x1'
    assert bundle.image_model_options['backbone'] == {
        'deeplabv3_mbv3': 'mobilenet_v3_large', 'deeplabv3_r18': 'resnet18'}[name_2d]


def test_train_cns_two_steps_with_image_augmentation(world, tmp_path):
    """Light 2D network, CLIP2Scene's crop + flip, no latent loss (SAM embeddings belong to
    the un-augmented images)."""
    out = tmp_path / 'augmented'
    assert train.main(_args(world, out, 'synthetic_cns.yaml', '--steps', '2',
                            '--set', 'model.name_2d=deeplabv3_mbv3',
                            '--set', 'data.image_augment.enabled=true',
                            '--set', 'cns.latent=false')) == 0
    rows = _history(out)
    assert [r['step'] for r in rows] == [0, 1] and all(np.isfinite(r['loss']) for r in rows)
    assert 'loss/ce_2d' in rows[0] and not any(k.startswith('loss/latent') for k in rows[0])
    assert load_config(out / 'config.yaml').data.image_augment.enabled


def test_resume_continues_with_the_identical_loss_trajectory(world, tmp_path):
    # 3D-only CNS with co-training from step 1; 3 keyframes, batch 1: step 3 opens epoch 1;
    # class weights on, so their running frequency estimate must resume exactly too
    extra = ('--set', 'cns.network_2d=false', '--set', 'cns.start_step=1',
             '--set', 'cns.class_balance=0.5', '--set', 'log.checkpoint_every=2')
    straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
    assert train.main(_args(world, straight, 'synthetic_cns.yaml', '--steps', '4', *extra)) == 0
    checkpoint = straight / 'checkpoints' / 'step_00000002.pt'
    assert train.main(['--resume', str(checkpoint), '--out', str(resumed), '--device', 'cpu',
                       '--no-progress']) == 0
    full, tail = _history(straight), _history(resumed)
    assert [r['step'] for r in full] == [0, 1, 2, 3] and [r['step'] for r in tail] == [2, 3]
    for a, b in zip(full[2:], tail, strict=True):
        assert a.keys() == b.keys()
        for key, value in a.items():
            if isinstance(value, float):
                assert value == pytest.approx(b[key], abs=1e-6, rel=0), key
            else:
                assert value == b[key], key
    state = load_checkpoint(resumed / 'checkpoints' / 'step_00000004.pt')
    assert state['step'] == 4 and int(state['model']['balance_3d.updates']) == 4


def test_train_clip2scene_two_steps(world, tmp_path):
    out = tmp_path / 'c2s'
    assert 0 == train.main(_args(world, out, 'synthetic_clip2scene.yaml', '--steps', '2',
                            '--set', 'clip2scene.self_training_start_step=0',
                            '--set', 'clip2scene.self_training_prob=1.0',
                            '--set', 'log.eval_every=1', '--set', 'log.eval_split=mini_val',
                            '--set', 'log.checkpoint_every=1'))
    rows = _history(out)
    assert [r['source'] for r in rows] == ['self', 'self']
    assert {'loss/semantic', 'loss/spatial_temporal'} <= set(rows[0])
    evaluation = [json.loads(line) for line in (out / 'eval.jsonl').read_text().splitlines()]
    assert [e['step'] for e in evaluation] == [1]
    # the step-1 evaluation scores the weights saved at step 1: the offline evaluator (whose
    # mIoU equals the devkit's, tests/test_evaluate.py) gives the same numbers for them
    offline = _offline_scores(world[0], out / 'checkpoints' / 'step_00000001.pt', tmp_path)
    assert evaluation[0]['miou'] == pytest.approx(offline['miou_present'], abs=1e-9)
    assert evaluation[0]['accuracy'] == pytest.approx(offline['accuracy'], abs=1e-9)


def test_train_with_spvcnn_exports_a_bundle_the_segmenter_runs(world, tmp_path):
    """CLIP2Scene on its paper backbone (SPVCNN, 1/8 width) for 2 steps; its exported bundle
    labels every point of a keyframe in the segmenter; 3D-only CNS's SAM latent head takes
    SPVCNN's 480-d (here 60-d) point latents."""
    from cns_ros.segmenter import Segmenter
    from cns_ros.training.bundle_checkpoint import bundle_from_checkpoint

    spvcnn = ('--set', 'model.name_3d=spvcnn', '--set', 'model.options_3d={channel_scale: 0.125}')
    out = tmp_path / 'c2s'
    assert train.main(_args(world, out, 'synthetic_clip2scene.yaml', '--steps', '2',
                            *spvcnn, '--set', 'log.checkpoint_every=1')) == 0
    rows = _history(out)
    assert [r['step'] for r in rows] == [0, 1] and all(np.isfinite(r['loss']) for r in rows)
    assert {'loss/semantic', 'loss/spatial_temporal'} <= set(rows[0])
    checkpoint = out / 'checkpoints' / 'step_00000001.pt'
    assert load_config(checkpoint.with_suffix('.yaml')).model.name_3d == 'spvcnn'
    bundle = bundle_from_checkpoint(checkpoint, tmp_path / 'bundle', include_2d=False)
    segmenter = Segmenter(bundle, device='cpu')
    points = CachedKeyframes(DataConfig(dataroot=str(world[0]), version='v1.0-mini',
                                        cache=str(world[1]), num_sweeps=0), seed=0,
                             augment=False)[(0, 0)]['points']
    result = segmenter.segment(points[:, :3], {'intensity': points[:, 3], 'ring': points[:, 4]})
    assert result.labels.shape == (len(points),) and result.num_valid == len(points)
    assert int(result.labels.max()) < 16
    cns = tmp_path / 'cns'
    assert train.main(_args(world, cns, 'synthetic_cns.yaml', '--steps', '2', *spvcnn,
                            '--set', 'cns.network_2d=false')) == 0
    assert 'loss/latent_3d' in _history(cns)[0]


def _offline_scores(dataroot: Path, checkpoint: Path, tmp_path: Path) -> dict:
    """offline_training.evaluate's 3D scores on mini_val of the checkpoint's exported bundle
    (its 'miou_present' is the mean over classes present, the training evaluator's mIoU)."""
    from cns_ros.training.bundle_checkpoint import bundle_from_checkpoint
    from offline_training import evaluate

    bundle = bundle_from_checkpoint(checkpoint, tmp_path / 'bundle', include_2d=False)
    assert evaluate.main(['--bundle', str(bundle), '--dataroot', str(dataroot), '--version',
                          'v1.0-mini', '--split', 'mini_val', '--out', str(tmp_path / 'eval'),
                          '--device', 'cpu', '--threads', '1', '--no-2d',
                          '--no-progress']) == 0
    return json.loads((tmp_path / 'eval' / 'metrics.json').read_text())['net3d']


def test_point_evaluator_scores_a_constant_prediction(world):
    """A network that predicts class k at every point (zero head weights, one-hot bias,
    identity text embeddings): accuracy n_k / N and, over the present classes (IoU_k = n_k / N,
    0 for the others), mIoU n_k / N / present; the counts n come from the devkit alone."""
    from types import SimpleNamespace

    from cns_ros.models.build import build_model, model_config
    from cns_ros.training.data import PointEvaluator

    k = 10  # driveable_surface
    net = build_model('minkunet14a', model_config('minkunet14a', channel_scale=0.125,
                                                  out_dim=16, input_features=['intensity']))
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.copy_(torch.eye(16)[k])
    net.classifier.set_text_embeddings(torch.eye(16))
    evaluator = PointEvaluator(str(world[0]), 'v1.0-mini', 'mini_val', ['intensity'], 0.5)
    scores = evaluator(SimpleNamespace(net3d=net.eval()))
    counts = _devkit_class_counts(world[0], 'mini_val')
    assert counts[k] > 0 and np.count_nonzero(counts) >= 4
    fraction = counts[k] / counts.sum()
    assert scores['accuracy'] == pytest.approx(fraction, abs=1e-12)
    assert scores['miou'] == pytest.approx(fraction / np.count_nonzero(counts), abs=1e-12)


def _devkit_class_counts(dataroot: Path, split: str) -> np.ndarray:
    """(16,) keyframe points per nuScenes-16 class of a split, with the devkit's split list,
    lidarseg files and 32 -> 16 class mapper only."""
    from nuscenes.eval.lidarseg.utils import LidarsegClassMapper
    from nuscenes.nuscenes import NuScenes
    from nuscenes.utils.splits import create_splits_scenes

    nusc = NuScenes('v1.0-mini', str(dataroot), verbose=False)
    mapper, scenes = LidarsegClassMapper(nusc), set(create_splits_scenes(verbose=False)[split])
    counts = np.zeros(17, dtype=np.int64)
    for sample in nusc.sample:
        if nusc.get('scene', sample['scene_token'])['name'] in scenes:
            record = nusc.get('lidarseg', sample['data']['LIDAR_TOP'])
            raw = np.fromfile(Path(dataroot) / record['filename'], dtype=np.uint8)
            counts += np.bincount(mapper.convert_label(raw), minlength=17)
    return counts[1:]  # index 0 of the devkit's classes is 'ignore'


class _Batch:
    def to(self, device: torch.device) -> _Batch:
        return self


class _RaisesAtStep(torch.nn.Module):
    """A method whose loss is its one weight squared, and whose forward raises at step 2."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))

    def forward(self, batch: _Batch, progress):
        from cns_ros.training.loop import LossOutput

        if progress.step == 2:
            raise RuntimeError('loss failed at step 2')
        return LossOutput(total=(self.weight ** 2).sum())


def test_fit_closes_its_writer_and_progress_bar_when_training_raises(tmp_path, monkeypatch):
    """Step 2 of 5 raises: fit propagates the error after closing the TensorBoard writer and
    the progress bar (both recorded by subclasses of the real classes), with steps 0 and 1 in
    the history and their event file complete."""
    import torch.utils.tensorboard
    import tqdm

    from cns_ros.training import data
    from cns_ros.training.loop import DistContext, fit

    closed = []

    class Writer(torch.utils.tensorboard.SummaryWriter):
        def close(self):
            closed.append('writer')
            super().close()

    class Bar(tqdm.tqdm):
        def close(self):
            closed.append('bar')
            super().close()

    monkeypatch.setattr(torch.utils.tensorboard, 'SummaryWriter', Writer)
    monkeypatch.setattr(tqdm, 'tqdm', Bar)
    monkeypatch.setattr(data, 'make_loader', lambda *args, **kwargs: [_Batch()] * 5)
    config = load_config(None, ['schedule.steps=5', 'data.batch_size=1', 'log.log_every=1',
                                'log.progress=false'])
    try:
        fit(_RaisesAtStep(), [0] * 5, config, tmp_path, context=DistContext())
    except RuntimeError as exc:  # fit's frames (and its writer and bar) are still alive here,
        assert 'at step 2' in str(exc)  # so no garbage collection closed them
        assert set(closed) == {'bar', 'writer'}
    else:
        pytest.fail('fit did not raise')
    assert [row['step'] for row in _history(tmp_path)] == [0, 1]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / 'tensorboard'))
    events.Reload()
    assert [e.step for e in events.Scalars('loss/total')] == [0, 1]


def test_missing_cache_or_dataroot_are_clear_errors(world, tmp_path, capsys):
    dataroot, _ = world
    with pytest.raises(SystemExit) as exc:
        train.main(['--config', str(PRESETS / 'synthetic_cns.yaml'), '--dataroot',
                    str(dataroot), '--version', 'v1.0-mini', '--cache', str(tmp_path / 'none'),
                    '--out', str(tmp_path / 'a')])
    assert exc.value.code == 2 and 'pseudo-label cache not found' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main(['--config', str(PRESETS / 'synthetic_cns.yaml'), '--dataroot',
                    str(tmp_path / 'nowhere'), '--version', 'v1.0-mini', '--cache',
                    str(world[1]), '--out', str(tmp_path / 'b')])
    assert 'dataroot not found' in capsys.readouterr().err
