"""The model bundle (cns_ros/training/bundle*.py): round trip, every BundleError, no pickle,
and the export CLI on a real (2-step) training run. Tiny networks with random weights, CPU."""

from __future__ import annotations

import json
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from fixtures_synthetic import small_synthetic_nuscenes

from cns_ros.models.build import build_model, model_config
from cns_ros.training.bundle_checkpoint import bundle_from_checkpoint
from cns_ros.training.bundle_format import BUNDLE_FILES, BundleError, ModelBundle, load_bundle
from cns_ros.training.bundle_networks import load_bundle_networks, point_logits
from cns_ros.training.bundle_write import write_bundle
from cns_ros.vocabulary import Vocabulary, VocabularyClass, nuscenes16, save_vocabulary
from offline_training import export

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ROOT / 'config' / 'train'
OPTIONS = {'channel_scale': 0.125, 'out_dim': 32, 'input_features': ['intensity', 'ring'],
           'voxel_size': 0.2}


pytestmark = pytest.mark.usefixtures('one_torch_thread')


def _cloud(n: int = 2000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xyz = rng.uniform(-12.0, 12.0, (n, 3)) * np.array([1.0, 1.0, 0.2])
    return np.column_stack([xyz, rng.uniform(0, 255, n), rng.integers(0, 32, n)]).astype(
        np.float32)


def _trained_like_net(name: str = 'minkunet14a') -> tuple[torch.nn.Module, torch.Tensor]:
    """A tiny 3D network on spconv whose BatchNorm statistics moved (as after training)."""
    torch.manual_seed(0)
    net = build_model(name, model_config(name, **OPTIONS, backend='spconv'))
    text = torch.nn.functional.normalize(torch.randn(16, 32), dim=1)
    net.classifier.set_text_embeddings(text)
    net.train()
    for seed in range(2):
        point_logits(net, _cloud(seed=seed + 10))
    return net.eval(), text


@pytest.fixture(scope='module')
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A written bundle and the reference logits of its network on :func:`_cloud`."""
    net, text = _trained_like_net()
    reference = point_logits(net, _cloud()).numpy()
    out = tmp_path_factory.mktemp('bundle') / 'tiny'
    path = write_bundle(out, net3d=net, model_name='minkunet14a', model_options=OPTIONS,
                        vocabulary=nuscenes16(), text_embeddings=text,
                        metadata={'method': 'test', 'teachers': {'clip': {'simulated': True}}})
    assert path == out
    return out, reference


def _copy(bundle: Path, tmp_path: Path) -> Path:
    target = tmp_path / 'copy'
    shutil.copytree(bundle, target)
    return target


# --- round trip -------------------------------------------------------------------------------

def test_round_trip_gives_identical_outputs_on_spconv(bundle_dir):
    out, reference = bundle_dir
    assert sorted(p.name for p in out.iterdir()) == sorted(BUNDLE_FILES)
    bundle = load_bundle(out)
    assert isinstance(bundle, ModelBundle)
    assert bundle.model_name == 'minkunet14a' and bundle.voxel_size == 0.2
    assert bundle.input_features == ('intensity', 'ring') and bundle.embedding_dim == 32
    assert bundle.vocabulary == nuscenes16() and bundle.text_embeddings.dtype == np.float32
    assert bundle.text_embeddings.shape == (16, 32) and not bundle.has_image_net
    assert bundle.image_model is None and bundle.image_model_options == {}
    assert bundle.clip_model is None and bundle.templates == 'maskclip85'
    assert bundle.metadata['method'] == 'test' and bundle.metadata['cns_ros_version']
    # the options rebuild the architecture (planes / layers resolved, no backend stored)
    config = model_config(bundle.model_name, **bundle.model_options)
    assert config.planes == (32, 64, 128, 256, 128, 128, 96, 96) and config.backend == 'auto'
    assert 'backend' not in bundle.model_options
    net3d, net2d = load_bundle_networks(bundle, backend='spconv')
    assert net2d is None and not net3d.training and net3d.backend_name == 'spconv'
    np.testing.assert_array_equal(point_logits(net3d, _cloud()).numpy(), reference)
    # the text-embeddings file is also a training ``text.embeddings`` file
    from safetensors.torch import load_file
    tensors = load_file(str(out / 'text_embeddings.safetensors'))
    np.testing.assert_array_equal(tensors['text_embeddings'].numpy(), bundle.text_embeddings)
    document = yaml.safe_load((out / 'model.yaml').read_text())
    assert document['format'] == 'cns_ros.model_bundle' and document['format_version'] == 1
    assert document['net3d']['voxel_size'] == 0.2


def test_spvcnn_round_trip_gives_identical_per_point_outputs(tmp_path):
    net, text = _trained_like_net('spvcnn')
    reference = point_logits(net, _cloud()).numpy()
    out = write_bundle(tmp_path / 'spvcnn', net3d=net, model_name='spvcnn',
                       model_options=OPTIONS, vocabulary=nuscenes16(), text_embeddings=text)
    bundle = load_bundle(out)
    assert bundle.model_name == 'spvcnn' and bundle.model_options['planes'] == [
        32, 32, 64, 128, 256, 256, 128, 96, 96]
    net3d, _ = load_bundle_networks(bundle, backend='spconv')
    assert type(net3d).__name__ == 'SPVCNN' and not net3d.training
    logits = point_logits(net3d, _cloud()).numpy()
    assert logits.shape == (2000, 16)
    np.testing.assert_array_equal(logits, reference)


def test_write_refuses_a_non_empty_folder_and_overwrites_atomically(bundle_dir, tmp_path):
    out, _ = bundle_dir
    net, text = _trained_like_net()
    target = _copy(out, tmp_path)
    kwargs = {'net3d': net, 'model_name': 'minkunet14a', 'model_options': OPTIONS,
              'vocabulary': nuscenes16(), 'text_embeddings': text}
    with pytest.raises(FileExistsError, match='not empty'):
        write_bundle(target, **kwargs)
    write_bundle(target, **kwargs, metadata={'method': 'again'}, overwrite=True)
    assert load_bundle(target).metadata['method'] == 'again'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['copy']  # no temporary leftovers
    with pytest.raises(ValueError, match=r"model_options\['voxel_size'\] = 0.5"):
        write_bundle(tmp_path / 'b', **{**kwargs, 'model_options': {**OPTIONS,
                                                                    'voxel_size': 0.5}})
    with pytest.raises(ValueError, match='text_embeddings'):
        write_bundle(tmp_path / 'c', **{**kwargs, 'text_embeddings': text[:3]})
    with pytest.raises(ValueError, match='outputs 32'):
        write_bundle(tmp_path / 'd', **{**kwargs, 'text_embeddings': torch.ones(16, 8)})
    assert not (tmp_path / 'b').exists() and not (tmp_path / 'c').exists()


# --- every BundleError ----------------------------------------------------------------------

def _edit_yaml(path: Path, change) -> None:
    document = yaml.safe_load(path.read_text())
    change(document)
    path.write_text(yaml.safe_dump(document))


def _rewrite_text(bundle: Path, array: np.ndarray, names: list[str] | None = None) -> None:
    from safetensors.numpy import save_file
    names = list(nuscenes16().names) if names is None else names
    save_file({'text_embeddings': array.astype(np.float32)},
              str(bundle / 'text_embeddings.safetensors'),
              metadata={'class_names': json.dumps(names)})


def _rewrite_weights(bundle: Path, change) -> None:
    from safetensors.numpy import load_file, save_file
    tensors = load_file(str(bundle / 'model.safetensors'))
    change(tensors)
    save_file(tensors, str(bundle / 'model.safetensors'),
              metadata={'format': 'cns_ros.model_bundle'})


def _only_other_tensor(bundle: Path) -> None:
    from safetensors.numpy import save_file
    save_file({'other': np.ones((16, 32), np.float32)},
              str(bundle / 'text_embeddings.safetensors'))


def _rename_all(tensors: dict) -> None:
    for key in list(tensors):
        tensors['x.' + key] = tensors.pop(key)


def _other_vocabulary(bundle: Path) -> None:
    save_vocabulary(Vocabulary('two', (VocabularyClass('road', (), (1, 2, 3)),
                                       VocabularyClass('car', (), (4, 5, 6)))),
                    bundle / 'vocabulary.yaml')


BROKEN = {
    'unknown format': ('model.yaml', "unknown format 'someone.else'",
                       lambda b: _edit_yaml(b / 'model.yaml',
                                            lambda d: d.update(format='someone.else'))),
    'newer version': ('model.yaml', 'format_version 2 is newer',
                      lambda b: _edit_yaml(b / 'model.yaml',
                                           lambda d: d.update(format_version=2))),
    'bad version': ('model.yaml', "unknown format_version 'one'",
                    lambda b: _edit_yaml(b / 'model.yaml',
                                         lambda d: d.update(format_version='one'))),
    'not yaml': ('model.yaml', 'not valid YAML',
                 lambda b: (b / 'model.yaml').write_text('format: [unclosed\n')),
    'unknown key': ('model.yaml', r"unknown key\(s\) \['extra'\]",
                    lambda b: _edit_yaml(b / 'model.yaml', lambda d: d.update(extra=1))),
    'unknown model': ('model.yaml', "unknown model 'minkunet99'",
                      lambda b: _edit_yaml(b / 'model.yaml',
                                           lambda d: d['net3d'].update(model='minkunet99'))),
    'unknown option': ('model.yaml', r'net3d.options: .*unknown option',
                       lambda b: _edit_yaml(b / 'model.yaml',
                                            lambda d: d['net3d']['options'].update(wings=2))),
    'bad input feature': ('model.yaml', 'input_features',
                          lambda b: _edit_yaml(b / 'model.yaml', lambda d: d['net3d'].update(
                              input_features=['colour']))),
    'too few rows': ('text_embeddings.safetensors', '15 text-embedding rows for the 16',
                     lambda b: _rewrite_text(b, np.ones((15, 32)), nuscenes16().names[:15])),
    'wrong D': ('text_embeddings.safetensors', 'dimension 8, but net3d outputs 32',
                lambda b: _rewrite_text(b, np.ones((16, 8)))),
    'renamed class': ('text_embeddings.safetensors', 'differ from those of vocabulary.yaml',
                      lambda b: _rewrite_text(b, np.ones((16, 32)),
                                              ['road', *nuscenes16().names[1:]])),
    'NaN embedding': ('text_embeddings.safetensors', 'finite',
                      lambda b: _rewrite_text(b, np.full((16, 32), np.nan))),
    'no tensor': ('text_embeddings.safetensors', 'no tensor named text_embeddings',
                  _only_other_tensor),
    'vocabulary size': ('text_embeddings.safetensors', 'for the 2 classes of vocabulary.yaml',
                        _other_vocabulary),
    'bad vocabulary': ('vocabulary.yaml', 'classes',
                       lambda b: (b / 'vocabulary.yaml').write_text('classes: []\n')),
    'garbage weights': ('model.safetensors', 'not a readable safetensors file',
                        lambda b: (b / 'model.safetensors').write_bytes(b'\x80\x04garbage')),
    'no 3d weights': ('model.safetensors', r'no 3D-network weights',
                      lambda b: _rewrite_weights(b, _rename_all)),
    'head of wrong D': ('model.safetensors', 'does not output D = 32',
                        lambda b: _rewrite_weights(b, lambda t: t.update(
                            {'3d.head.weight': np.ones((8, 12), np.float32)}))),
    'stray 2d weights': ('model.safetensors', 'net2d is absent',
                         lambda b: _rewrite_weights(b, lambda t: t.update(
                             {'2d.w': np.ones(2, np.float32)}))),
}


@pytest.mark.parametrize('name', [f'missing {f}' for f in BUNDLE_FILES])
def test_missing_file_is_named(bundle_dir, tmp_path, name):
    target = _copy(bundle_dir[0], tmp_path)
    missing = name.split()[1]
    (target / missing).unlink()
    with pytest.raises(BundleError) as error:
        load_bundle(target)
    message = str(error.value)
    assert message.startswith(f'model bundle {target}: {missing}: file missing')
    assert '\n' not in message


@pytest.mark.parametrize('name', sorted(BROKEN))
def test_broken_bundle_raises_a_one_line_bundle_error(bundle_dir, tmp_path, name):
    filename, pattern, breaker = BROKEN[name]
    target = _copy(bundle_dir[0], tmp_path)
    breaker(target)
    with pytest.raises(BundleError) as error:
        load_bundle(target)
    message = str(error.value)
    assert message.startswith(f'model bundle {target}: {filename}: '), message
    assert re.search(pattern, message), message
    assert '\n' not in message and isinstance(error.value, ValueError)


def test_not_a_folder_and_weights_that_do_not_fit(bundle_dir, tmp_path):
    with pytest.raises(BundleError, match=f'model bundle {tmp_path / "none"}: not found'):
        load_bundle(tmp_path / 'none')
    target = _copy(bundle_dir[0], tmp_path)
    # a header-valid file whose kernel has the wrong shape: found when loading the weights
    key = next(k for k in json.loads((target / 'model.safetensors').read_bytes()[
        8:8 + int.from_bytes((target / 'model.safetensors').read_bytes()[:8], 'little')])
        if k.endswith('.kernel'))
    _rewrite_weights(target, lambda t: t.update({key: np.ones((1, 1, 1, 1, 1), np.float32)}))
    bundle = load_bundle(target)
    with pytest.raises(BundleError, match=r'model.safetensors: the 3D weights do not fit '
                                          r'model.yaml'):
        load_bundle_networks(bundle, backend='spconv')
    _rewrite_weights(target, lambda t: t.pop(key))
    with pytest.raises(BundleError, match=r'model\.safetensors: the 3D weights do not fit'):
        load_bundle_networks(target, backend='spconv')


# --- nothing is unpickled -------------------------------------------------------------------

def test_sources_never_unpickle():
    sources = [*sorted((ROOT / 'cns_ros' / 'training').glob('bundle*.py')),
               ROOT / 'offline_training' / 'export.py', ROOT / 'offline_training' /
               'evaluate.py', ROOT / 'cns_ros' / 'training' / 'checkpoint.py']
    for path in sources:
        text = path.read_text()
        assert 'weights_only=False' not in text and 'pickle.load' not in text, path
        for call in re.findall(r'torch\.load\([^)]*\)', text):
            assert 'weights_only=True' in call, (path, call)


def test_load_works_with_torch_load_and_pickle_disabled(bundle_dir, monkeypatch):
    out, reference = bundle_dir

    def refuse(*args, **kwargs):
        raise AssertionError('a bundle must not be unpickled')

    monkeypatch.setattr(torch, 'load', refuse)
    monkeypatch.setattr(pickle, 'load', refuse)
    monkeypatch.setattr(pickle, 'loads', refuse)
    monkeypatch.setattr(np, 'load', refuse)
    net3d, _ = load_bundle_networks(load_bundle(out), backend='spconv')
    np.testing.assert_array_equal(point_logits(net3d, _cloud()).numpy(), reference)


# --- export of a real training run ----------------------------------------------------------

@pytest.fixture(scope='module')
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(dataroot, cache, run folder) of a 2-step CNS run with the 2D network (tiny sizes)."""
    from offline_training import pseudo_label, train

    dataroot = small_synthetic_nuscenes(tmp_path_factory)
    base = tmp_path_factory.mktemp('export_run')
    cache = base / 'cache'
    assert pseudo_label.main([
        '--dataroot', str(dataroot), '--version', 'v1.0-mini', '--split', 'mini_train',
        '--teacher', 'simulated', '--sam', 'simulated', '--save-2d', '--image-size', '16',
        '32', '--out', str(cache), '--no-progress']) == 0
    run = base / 'run'
    assert train.main([
        '--config', str(PRESETS / 'synthetic_cns.yaml'), '--dataroot', str(dataroot),
        '--version', 'v1.0-mini', '--cache', str(cache), '--out', str(run), '--device', 'cpu',
        '--no-progress', '--steps', '2', '--set', 'data.batch_size=1',
        '--set', 'model.options_3d={channel_scale: 0.125}', '--set', 'text.dim=32',
        '--set', 'model.options_2d={allow_random_weights: true, head: conv1x1}']) == 0
    return dataroot, cache, run


def test_export_of_a_training_run_loads_and_matches_the_checkpoint(trained, tmp_path, capsys):
    from cns_ros.models.sparse import load_neutral_state_dict
    from cns_ros.training.checkpoint import latest_checkpoint, load_checkpoint

    _, _, run = trained
    out = tmp_path / 'bundle'
    assert export.main(['--run', str(run), '--out', str(out)]) == 0
    assert 'exported' in capsys.readouterr().out
    bundle = load_bundle(out)
    assert bundle.has_image_net and bundle.image_model == 'deeplabv3_r50'
    assert 'backbone_checkpoint' not in bundle.image_model_options
    assert bundle.metadata['method'] == 'cns' and bundle.metadata['steps'] == 2
    assert bundle.metadata['simulated_teachers'] is True
    assert bundle.metadata['teachers']['clip']['simulated'] is True
    assert bundle.metadata['image_size'] == [16, 32] and bundle.clip_model is None
    assert bundle.metadata['text_source'].startswith('random')
    assert bundle.vocabulary == nuscenes16() and bundle.embedding_dim == 32
    net3d, net2d = load_bundle_networks(bundle, backend='spconv')
    # the same networks as the checkpoint's weights, built as training builds them
    state = load_checkpoint(latest_checkpoint(run))
    np.testing.assert_array_equal(bundle.text_embeddings, state['text_embeddings'].numpy())
    reference = build_model('minkunet14a', model_config('minkunet14a', **bundle.model_options))
    load_neutral_state_dict(reference, {k[6:]: v for k, v in state['model'].items()
                                        if k.startswith('net3d.')})
    reference.classifier.set_text_embeddings(state['text_embeddings'])
    cloud = _cloud()
    np.testing.assert_array_equal(point_logits(net3d, cloud).numpy(),
                                  point_logits(reference.eval(), cloud).numpy())
    images = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        features = net2d(images).features
    assert features.shape == (1, 32, 32, 48) and torch.isfinite(features).all()
    # --no-2d, --checkpoint, refusal of an existing folder, bad inputs
    small = tmp_path / 'small'
    assert export.main(['--checkpoint', str(latest_checkpoint(run)), '--out', str(small),
                        '--no-2d']) == 0
    assert not load_bundle(small).has_image_net
    assert (small / 'model.safetensors').stat().st_size < (
        out / 'model.safetensors').stat().st_size / 10
    for argv, message in (([ '--run', str(run), '--out', str(small)], 'not empty'),
                          (['--run', str(tmp_path), '--out', str(tmp_path / 'x')],
                           'no checkpoint'),
                          (['--checkpoint', str(tmp_path / 'no.pt'), '--out',
                            str(tmp_path / 'y')], 'not found')):
        with pytest.raises(SystemExit) as exc:
            export.main(argv)
        assert exc.value.code == 2 and message in capsys.readouterr().err
    not_a_checkpoint = tmp_path / 'weights.pt'
    torch.save({'weights': torch.ones(2)}, not_a_checkpoint)
    with pytest.raises(SystemExit):
        export.main(['--checkpoint', str(not_a_checkpoint), '--out', str(tmp_path / 'z')])
    assert 'not a cns_ros training checkpoint' in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        export.main(['--help'])
    assert exc.value.code == 0 and 'model bundle' in capsys.readouterr().out


def test_bundle_from_checkpoint_refuses_a_checkpoint_that_does_not_fit(trained, tmp_path):
    from cns_ros.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint

    _, _, run = trained
    state = load_checkpoint(latest_checkpoint(run))
    state['config'] = state['config'].replace('channel_scale: 0.125', 'channel_scale: 0.25')
    for key in ('format', 'format_version'):
        state.pop(key)
    bad = tmp_path / 'bad.pt'
    save_checkpoint(bad, state)
    with pytest.raises(ValueError, match='net3d weights do not fit the architecture'):
        bundle_from_checkpoint(bad, tmp_path / 'out')
    assert not (tmp_path / 'out').exists()
