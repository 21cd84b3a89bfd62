"""The ScanNet pipeline end to end on the tiny synthetic indoor world: make_synthetic_indoor ->
pseudo_label --dataset scannet (simulated teachers, 5 cm depth check) -> train (CLIP2Scene with
the CLIP feature distillation; 3D-only CNS) -> export -> evaluate --dataset scannet, whose
official per-scan files are scored again here from the files alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cns_ros.data.scannet import read_mesh
from cns_ros.data.scannet_keyframes import ScanNetKeyframes
from cns_ros.scannet_metrics import official_confusion, read_predictions, scannet_scores
from cns_ros.teachers import cache
from offline_training import evaluate, export, make_synthetic_indoor, pseudo_label, train

LABELS = ('--teacher', 'simulated', '--sam', 'simulated', '--simulated-noise',
          'realistic_indoor', '--depth-check', 'absolute', '--min-depth', '0.1',
          '--image-size', '60', '80', '--save-2d', '--save-clip-features', '--no-progress')


@pytest.fixture(scope='module')
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp('indoor') / 'world'
    assert make_synthetic_indoor.main(['--preset', 'tiny', '--out', str(root),
                                       '--no-progress']) == 0
    for split in ('train', 'val'):
        assert pseudo_label.main(['--dataset', 'scannet', '--dataroot', str(root), '--split',
                                  split, *LABELS, '--out', str(root.parent / split)]) == 0
    return root


def test_cache_pairs_are_consistent_with_the_depth_images(world: Path) -> None:
    manifest = cache.read_manifest(world.parent / 'train')
    assert manifest['dataset']['name'] == 'scannet' and len(manifest['classes']) == 20
    keyframe = ScanNetKeyframes(world, 'train')[0]
    item = cache.read_keyframe(cache.keyframe_path(world.parent / 'train', keyframe.sample_token))
    assert len(item.labels) == len(keyframe.points) and len(item.pair_point) > 0
    # every cached pair lies within 5 cm of the depth its camera measured at that pixel
    # (pairs index the 60 x 80 label maps: 8 x 8 depth pixels each; test the block's depths)
    names = list(keyframe.cameras)
    depths = keyframe.load_depths()
    for k, name in enumerate(names):
        mine = item.pair_camera == k
        cam = keyframe.cameras[name]
        xyz = keyframe.points[item.pair_point[mine], :3].astype(np.float64)
        world_to_cam = np.linalg.inv(cam.global_from_ego)
        z = xyz @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
        rows, cols = item.pair_row[mine], item.pair_col[mine]
        block = np.stack([depths[k][8 * r:8 * r + 8, 8 * c:8 * c + 8] for r, c in zip(
            rows, cols, strict=True)])
        error = np.abs(block - z[:, 2, None, None]).reshape(len(z), -1).min(axis=1)
        assert np.all(error <= 0.05 + 1e-6), name


def test_train_export_evaluate_and_the_official_files(world: Path, tmp_path: Path) -> None:
    runs = {'c2s': ('synthetic_indoor_clip2scene.yaml', ()),
            'cns': ('synthetic_indoor_cns.yaml', ('cns.network_2d=false', 'data.images=false'))}
    for key, (preset, extra) in runs.items():
        sets = [x for value in ('data.batch_size=1', *extra) for x in ('--set', value)]
        assert train.main(['--config', f'config/train/{preset}', '--dataroot', str(world),
                           '--cache', str(world.parent / 'train'), '--out',
                           str(tmp_path / key), '--steps', '2', '--device', 'cpu',
                           '--no-progress', *sets]) == 0
        history = [json.loads(line) for line in (tmp_path / key / 'losses.jsonl').open()]
        if key == 'c2s':
            assert history[-1]['loss/pair_distillation'] > 0
        assert export.main(['--run', str(tmp_path / key), '--out', str(tmp_path / f'b_{key}'),
                            '--no-2d']) == 0
    out = tmp_path / 'eval'
    assert evaluate.main(['--dataset', 'scannet', '--bundle', str(tmp_path / 'b_c2s'),
                          '--dataroot', str(world), '--split', 'val', '--cache',
                          str(world.parent / 'val'), '--out', str(out), '--format', 'scannet',
                          '--no-progress']) == 0
    document = json.loads((out / 'metrics.json').read_text())
    scene = document['dataset']['scenes'][0]
    mesh = read_mesh(world, scene)
    pred = read_predictions(out / 'scannet' / f'{scene}.txt', len(mesh.xyz))
    official = scannet_scores(official_confusion(mesh.nyu40, pred)).as_dict()
    for key in ('miou_official', 'miou_clip2scene', 'miou_openscene', 'accuracy'):
        assert document['net3d'][key] == pytest.approx(official[key]), key
    assert document['net3d']['points'] == int(np.count_nonzero(mesh.labels20() != 255))
    assert document['teacher']['points'] < document['net3d']['points']


def test_driving_noise_on_the_indoor_world_is_refused_before_any_output(
        world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        pseudo_label.main(['--dataset', 'scannet', '--dataroot', str(world), '--split', 'val',
                           '--teacher', 'simulated', '--simulated-noise', 'realistic',
                           '--out', str(tmp_path / 'cache'), '--no-progress'])
    assert exc.value.code == 2
    assert 'for nuscenes16 worlds' in capsys.readouterr().err
    assert not (tmp_path / 'cache').exists()
