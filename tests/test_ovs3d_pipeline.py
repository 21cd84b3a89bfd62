"""3D-OVS end to end through ``offline_training.train_ovs3d.main`` on the synthetic table-top
scene with the stand-in teachers (colour and pattern descriptors; no weights), at a CPU size.

One run (teachers, stage A 150 iterations, stage B 600 iterations, evaluation, a query and the
export) is shared by the module (about 70 s on one core); the FDA ablation trains stage B once
more; the other tests are small.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cns_ros.ovs3d.labeled_map import load_labeled_map
from cns_ros.ovs3d.synthetic import (
    CLASS_NAMES,
    SyntheticSceneConfig,
    capture_poses,
    make_synthetic_scene,
    render_view,
)
from offline_training.train_ovs3d import main

PRESET = Path(__file__).resolve().parents[1] / 'config' / 'ovs3d' / 'synthetic_cpu.yaml'
SHORT = ['--set', 'stage_a.iterations=150', '--set', 'stage_a.upsample_at=[50, 100]',
         '--set', 'stage_a.alpha_mask_at=[75]', '--set', 'stage_b.iterations=600',
         '--set', 'stage_b.joint_start=200']
COMMON = ['--teachers', 'standin', '--config', str(PRESET), '--no-progress', '--threads', '1']


@pytest.fixture(scope='module')
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp('ovs3d') / 'run'
    code = main(['--synthetic', '--out', str(out), *COMMON, *SHORT,
                 '--query', 'red thing, blue thing, yellow thing',
                 '--export', str(out / 'map'), '--ply', '--bag'])
    assert code == 0
    return out


def _results(run: Path) -> dict:
    return json.loads((run / 'eval' / 'results.json').read_text())


def test_both_stages_reach_the_stated_scores(run: Path) -> None:
    history = [json.loads(line) for line in
               (run / 'stage_a' / 'losses.jsonl').read_text().splitlines()]
    assert len(history) == 150 and float(history[-1]['psnr']) >= 24.0
    results = _results(run)
    assert results['classes'] == sorted(CLASS_NAMES) and results['views'] == [0, 6, 11]
    assert not results['random_weights']
    # measured 80.4 / 93.9 (reference protocol), 80.4 (clean); without FDA 61.5 / 87.9; a
    # field that labels only the table and the wall scores about 27 / 79
    assert results['reference']['miou'] >= 0.72
    assert results['reference']['accuracy'] >= 0.90
    assert results['clean']['miou'] >= 0.72
    for view in results['views']:
        assert (run / 'eval' / f'view_{view:03d}.png').stat().st_size > 10_000


def test_rerun_resumes_without_training_again(run: Path) -> None:
    before = sorted(p.name for p in (run / 'stage_b' / 'checkpoints').iterdir())
    lines = (run / 'stage_b' / 'losses.jsonl').read_text()
    assert main(['--scene', str(run / 'scene'), '--out', str(run), *COMMON, *SHORT,
                 '--stop-after', 'stage_b']) == 0
    assert sorted(p.name for p in (run / 'stage_b' / 'checkpoints').iterdir()) == before
    assert (run / 'stage_b' / 'losses.jsonl').read_text() == lines
    assert 'step_00000600.pt' in before and 'step_00000600.yaml' in before
    assert any((run / 'stage_b' / 'tensorboard').iterdir())


def test_query_labels_any_text_list(run: Path) -> None:
    query = json.loads((run / 'query' / 'query.json').read_text())
    assert query['query'] == ['red thing', 'blue thing', 'yellow thing']
    assert sum(query['pixel_share'].values()) == pytest.approx(1.0)
    assert (run / 'query' / 'view_000.png').is_file()
    assert (run / 'query' / 'relevancy_000.png').stat().st_size > 10_000


def test_exported_map_lies_on_the_scene_and_carries_its_labels(run: Path) -> None:
    """Project the map's points into an annotated camera of the generator's own world: points
    on the visible surface must take the class the generator drew at their pixel."""
    labeled, vocabulary, text = load_labeled_map(run / 'map')
    assert labeled.frame_id == 'map' and list(vocabulary.names) == sorted(CLASS_NAMES)
    assert (run / 'map.ply').stat().st_size > 0 and (run / 'map_bag').is_dir()
    labels, _ = labeled.label(text)
    config = SyntheticSceneConfig()
    height, width, focal = 120, 160, config.focal / 4
    pose = capture_poses(config)[6]
    _, classes, depth = render_view(config, pose, height, width, focal)
    rel = (labeled.xyz.astype(np.float64) - pose[:, 3]) @ pose[:, :3]  # camera frame
    z = -rel[:, 2]
    u = np.floor(rel[:, 0] / z * focal + width / 2).astype(int)
    v = np.floor(-rel[:, 1] / z * focal + height / 2).astype(int)
    inside = (z > 0) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    on_surface = np.zeros_like(inside)
    on_surface[inside] = np.abs(z[inside] - depth[v[inside], u[inside]]) < 0.05
    assert on_surface.sum() > 2000
    truth = classes[v[on_surface], u[on_surface]]  # indices into CLASS_NAMES (sorted)
    got = labels[on_surface]
    # measured: 0.82 overall; table 1.00, cylinder 0.92, yellow box 0.64 (the red objects are
    # the field's known weakness, see test_both_stages_reach_the_stated_scores)
    assert (got == truth).mean() >= 0.75
    for name, least in (('brown banded table', 0.95), ('blue checkered cylinder', 0.8),
                        ('yellow plain box', 0.5)):
        index = CLASS_NAMES.index(name)
        assert (got[truth == index] == index).mean() >= least, name


def test_fda_ablation(run: Path, tmp_path: Path) -> None:
    """Stage B again from the same stage A without FDA. FDA separates the two red objects,
    which the stand-in CLIP tells apart only weakly (pattern) and the DINO stand-in clearly:
    measured at this size, red plain ball 0.56 vs 0.12 IoU, red striped box 0.66 vs 0.57; it
    also sharpens the other objects (cylinder 0.90 vs 0.63, yellow box 0.86 vs 0.66) and the
    mean (80.4 vs 61.5)."""
    out = tmp_path / 'no_fda'
    for part in ('scene', 'teachers', 'stage_a'):
        shutil.copytree(run / part, out / part)
    assert main(['--scene', str(out / 'scene'), '--out', str(out), *COMMON, *SHORT,
                 '--set', 'stage_b.fda=false']) == 0
    with_fda, without = _results(run), _results(out)
    iou = {name: (with_fda['reference']['class_iou'][i], without['reference']['class_iou'][i])
           for i, name in enumerate(with_fda['classes'])}
    for name, gain in (('red plain ball', 0.3), ('red striped box', 0.05),
                       ('blue checkered cylinder', 0.1), ('yellow plain box', 0.1)):
        assert iou[name][0] >= iou[name][1] + gain, (name, iou[name])
    assert with_fda['reference']['miou'] >= without['reference']['miou'] + 0.1


def test_real_teachers_need_checkpoints_or_the_flag(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(['--synthetic', '--out', str(tmp_path / 'x'), '--no-progress'])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert '--clip-checkpoint and --dino-checkpoint' in err and '--random-weights' in err
    with pytest.raises(SystemExit) as exc:
        main(['--synthetic', '--out', str(tmp_path / 'y'), '--set', 'stage_b.nope=1'])
    assert exc.value.code == 2 and 'stage_b.nope: unknown key' in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # before any training
        main(['--synthetic', '--out', str(tmp_path / 'z'), *COMMON, '--query', ' , '])
    assert exc.value.code == 2 and 'no class text' in capsys.readouterr().err
    assert not (tmp_path / 'z').exists()


def test_random_weight_open_clip_and_timm_dino_smoke_run(tmp_path: Path) -> None:
    """Both stages with the real teacher architectures (tiny, random weights), marked so."""
    from cns_ros.ovs3d.teachers import OpenClipImageText, TimmDino
    from offline_training import train_ovs3d

    config_path = tmp_path / 'tiny_clip.json'
    config_path.write_text(json.dumps({
        'embed_dim': 32, 'quick_gelu': True,
        'vision_cfg': {'image_size': 224, 'layers': 1, 'width': 64, 'patch_size': 32},
        'text_cfg': {'context_length': 77, 'vocab_size': 49408, 'width': 64, 'heads': 1,
                     'layers': 1}}))
    clip = OpenClipImageText(None, model_name=str(config_path), random_weights=True)
    dino = TimmDino(None, model_name='vit_small_patch8_224.dino', random_weights=True,
                    model_kwargs={'embed_dim': 32, 'depth': 1, 'num_heads': 2})
    scene_root = make_synthetic_scene(tmp_path / 'scene', SyntheticSceneConfig(
        width=200, height=160, views=3, stripe_period_px=12.0))
    out = tmp_path / 'run'
    args = train_ovs3d.build_parser().parse_args([
        '--scene', str(scene_root), '--out', str(out), '--config', str(PRESET),
        '--no-progress', '--set', 'stage_a.iterations=4', '--set', 'stage_a.upsample_at=[2]',
        '--set', 'stage_a.alpha_mask_at=[3]', '--set', 'stage_b.iterations=4',
        '--set', 'stage_b.joint_start=2', '--set', 'stage_b.patch_size=16'])
    config = train_ovs3d.resolve_config(args)
    scene = train_ovs3d.load_scene(args)
    torch.manual_seed(0)
    assert train_ovs3d.run(args, config, torch.device('cpu'), scene, (clip, clip, dino)) == 0
    results = _results(out)
    assert results['random_weights'] is True
    assert 0.0 <= results['reference']['miou'] <= 1.0
