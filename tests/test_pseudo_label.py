"""The pseudo-label CLI end to end on the small synthetic world, and the IoU helpers (CPU)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from fixtures_synthetic import small_synthetic_nuscenes

from cns_ros.metrics import confusion_matrix, iou_per_class, mean_iou, summary
from cns_ros.teachers import cache
from offline_training.pseudo_label import main

SIMULATED = ['--teacher', 'simulated', '--sam', 'simulated', '--simulated-noise', 'clip_like',
             '--image-size', '48', '80', '--num-sweeps', '1', '--no-progress']


@pytest.fixture(scope='module')
def dataroot(tmp_path_factory) -> Path:
    return small_synthetic_nuscenes(tmp_path_factory)


def _run(dataroot, out, *args) -> int:
    return main(['--dataroot', str(dataroot), '--out', str(out), *args])


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes()
            for folder in ('keyframes', 'images') for p in sorted((out / folder).glob('*.npz'))}


@pytest.fixture(scope='module')
def full_run(dataroot, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp('cache') / 'full'
    assert _run(dataroot, out, *SIMULATED, '--save-2d') == 0
    return out


def test_cache_files_manifest_and_quality(full_run, dataroot):
    from cns_ros.data.nuscenes import NuScenesKeyframes

    data = NuScenesKeyframes(dataroot, 'v1.0-mini', num_sweeps=1)
    files = sorted((full_run / 'keyframes').glob('*.npz'))
    assert len(files) == len(data) == 6 and len(list((full_run / 'images').glob('*.npz'))) == 36
    manifest = json.loads((full_run / 'manifest.json').read_text())
    assert manifest['simulated'] and not manifest['random_weights']
    assert manifest['teachers']['clip']['name'] == 'simulated'
    assert manifest['config']['image_size'] == [48, 80] and manifest['versions']['numpy']
    for keyframe in data:
        item = cache.read_keyframe(cache.keyframe_path(full_run, keyframe.sample_token))
        assert item.labels.dtype == np.uint8 and item.confidence.dtype == np.float16
        assert len(item.labels) == len(keyframe.points)
        assert np.array_equal(item.sweep_index, keyframe.sweep_index)
        assert item.pair_point.dtype == item.pair_row.dtype == np.int32
        assert item.pair_row.max() < 48 and item.pair_col.max() < 80
        assert list(item.cameras) == list(keyframe.cameras) and str(item.sample_token)
        _assert_pairs_read_the_image_files(full_run, item)
        assert _assert_unambiguous_votes(item) > 0.5 * np.count_nonzero(item.labels != 255)
        assert np.all(item.confidence[item.labels == 255] == 0)
    image = cache.read_image(next((full_run / 'images').glob('*.npz')))
    assert image['labels'].shape == (48, 80) and image['embedding'].dtype == np.float16
    segments = image['segments']
    assert segments.dtype == np.uint16 and segments.shape == (48, 80) and segments.max() > 3
    for segment in np.unique(segments[segments > 0]):  # SAM-refined: one label per segment
        assert len(np.unique(image['labels'][segments == segment])) == 1
    with np.load(files[0], allow_pickle=False) as archive:
        assert 'pair_camera' in archive.files
    quality = json.loads((full_run / 'quality.json').read_text())
    assert quality['complete'] and quality['keyframes_evaluated'] == 6
    assert 0.1 < quality['miou'] < 0.9 and 0.6 < quality['paired_fraction'] < 0.95
    assert quality['teachers']['clip']['simulated']


def _assert_pairs_read_the_image_files(root: Path, item: cache.KeyframeLabels) -> None:
    """Each pair's label and confidence are its pixel's in the camera's image file."""
    for index, token in enumerate(item.camera_tokens):
        image = cache.read_image(cache.image_path(root, str(token)))
        mine = item.pair_camera == index
        rows, cols = item.pair_row[mine], item.pair_col[mine]
        assert np.array_equal(item.pair_label[mine], image['labels'][rows, cols])
        assert np.array_equal(item.pair_confidence[mine], image['confidence'][rows, cols])


def _assert_unambiguous_votes(item: cache.KeyframeLabels) -> int:
    """Points whose vote has one answer whatever the weights: no voting pair (label 255 is
    no vote) gives 255, voting pairs that all say c give c. Returns how many points agree."""
    voting = item.pair_label != 255
    point, label = item.pair_point[voting], item.pair_label[voting].astype(np.int64)
    lowest, highest = np.full(len(item.labels), 256), np.full(len(item.labels), -1)
    np.minimum.at(lowest, point, label)
    np.maximum.at(highest, point, label)
    assert np.all(item.labels[highest < 0] == 255)
    agree = lowest == highest
    assert np.array_equal(item.labels[agree], highest[agree])
    return int(np.count_nonzero(agree))


def test_rerun_after_a_kill_finishes_only_what_is_missing(dataroot, tmp_path, capsys):
    out = tmp_path / 'resume'
    assert _run(dataroot, out, *SIMULATED, '--limit', '2') == 0
    assert '2 keyframes labelled, 0 already done, 4 left' in capsys.readouterr().out
    first = {p: p.stat().st_mtime_ns for p in (out / 'keyframes').glob('*.npz')}
    assert len(first) == 2 and not json.loads((out / 'quality.json').read_text())['complete']
    time.sleep(0.01)
    assert _run(dataroot, out, *SIMULATED) == 0
    assert '4 keyframes labelled, 2 already done, 0 left' in capsys.readouterr().out
    assert all(p.stat().st_mtime_ns == t for p, t in first.items())
    # a kill: one keyframe lost, a stray temporary file of a dead process
    victim = sorted((out / 'keyframes').glob('*.npz'))[3]
    original = victim.read_bytes()
    victim.unlink()
    stray = out / 'keyframes' / f'.{victim.name}.tmp-999999999'
    stray.write_bytes(b'partial')
    os.utime(stray, (time.time() - 3600, time.time() - 3600))
    assert _run(dataroot, out, *SIMULATED) == 0
    assert '1 keyframes labelled, 5 already done' in capsys.readouterr().out
    assert victim.read_bytes() == original and not stray.exists()
    assert json.loads((out / 'quality.json').read_text())['complete']


def test_union_of_shards_equals_a_single_run(dataroot, full_run, tmp_path, monkeypatch):
    out = tmp_path / 'sharded'
    assert _run(dataroot, out, *SIMULATED, '--save-2d', '--shard', '0', '--num-shards', '2') == 0
    shard0 = _files(out)
    assert 0 < len([k for k in shard0 if k.startswith('keyframes')]) < 6
    monkeypatch.setenv('RANK', '1')  # torchrun: rank 1 of 2 takes shard 1
    monkeypatch.setenv('WORLD_SIZE', '2')
    assert _run(dataroot, out, *SIMULATED, '--save-2d') == 0
    assert _files(out) == _files(full_run)
    assert (out / 'manifest.json').read_bytes() == (full_run / 'manifest.json').read_bytes()


def test_a_cache_made_with_other_settings_is_refused(dataroot, full_run, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _run(dataroot, full_run, *SIMULATED, '--save-2d', '--occlusion-check')
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and 'other settings' in err
    # only the changed setting is named, not both whole configs
    assert 'occlusion_check: cache False vs now True)' in err and err.count(' vs now ') == 1


def test_quality_drops_with_the_configured_noise(dataroot, tmp_path):
    quality = {}
    for preset in ('noise_free', 'clip_like'):
        out = tmp_path / preset
        assert _run(dataroot, out, '--teacher', 'simulated', '--simulated-noise', preset,
                    '--image-size', '90', '160', '--no-progress') == 0
        quality[preset] = json.loads((out / 'quality.json').read_text())
    free, noisy = quality['noise_free'], quality['clip_like']
    assert free['accuracy'] > 0.93 and free['miou'] > 0.6
    # clip_like: 60 % pixel accuracy -> about 60 % of the noise-free point accuracy
    assert abs(noisy['accuracy'] - 0.6 * free['accuracy']) < 0.07, (noisy, free)
    assert noisy['miou'] < 0.7 * free['miou']
    assert noisy['paired_fraction'] == free['paired_fraction']


def test_realistic_noise_and_noise_files(dataroot, tmp_path):
    """--simulated-noise realistic: every pixel labelled, the manifest holds every resolved
    noise parameter; a noise file path (through the --simulated-preset alias) works the same."""
    from cns_ros.teachers.teacher_noise import resolve_noise_file

    args = ['--teacher', 'simulated', '--sam', 'simulated', '--save-2d', '--image-size', '48',
            '80', '--scenes', 'scene-0061', '--limit', '1', '--no-progress']
    out = tmp_path / 'realistic'
    assert _run(dataroot, out, '--simulated-noise', 'realistic', *args) == 0
    manifest = json.loads((out / 'manifest.json').read_text())
    clip, sam = manifest['teachers']['clip'], manifest['teachers']['sam']
    assert manifest['config']['simulated_noise'] == 'realistic' and clip['noise'] == 'realistic'
    assert clip['settings']['generator'] == 'realistic'
    assert len(clip['settings']['persistent_wrong']) == 16 and clip['settings']['seed'] == 0
    assert sam['settings']['generator'] == 'realistic' and 'keep_whole' in sam['settings']
    assert sam['embedding']['generator'] == 'realistic'
    for path in (out / 'images').glob('*.npz'):
        image = cache.read_image(path)
        assert image['labels'].max() < 16  # every pixel a class, the sky too
        assert image['embedding'].shape == (256, 64, 64)
    mine = tmp_path / 'mine.yaml'
    mine.write_text(resolve_noise_file('realistic').read_text())
    other = tmp_path / 'from_file'
    assert _run(dataroot, other, '--simulated-preset', str(mine), *args) == 0
    again = json.loads((other / 'manifest.json').read_text())['teachers']
    assert again['clip']['settings'] == clip['settings'] and again['clip']['noise'] == 'mine'
    assert again['sam']['settings'] == sam['settings']
    assert _files(other) == _files(out)


def test_maskclip_with_random_weights_runs_end_to_end(dataroot, tmp_path, capsys):
    model = tmp_path / 'cnstest-vit.json'
    model.write_text(json.dumps({
        'embed_dim': 32, 'quick_gelu': True,
        'vision_cfg': {'image_size': 64, 'layers': 1, 'width': 64, 'head_width': 64,
                       'patch_size': 16},
        'text_cfg': {'context_length': 77, 'vocab_size': 49408, 'width': 64, 'heads': 1,
                     'layers': 1}}))
    args = ['--teacher', 'maskclip', '--clip-model', str(model), '--clip-templates', 'single',
            '--image-size', '32', '64', '--scenes', 'scene-0061', '--limit', '2',
            '--device', 'cpu', '--no-progress']
    with pytest.raises(SystemExit) as exit_info:  # no weights, no permission: refused
        _run(dataroot, tmp_path / 'refused', *args)
    assert exit_info.value.code == 2 and 'checkpoint' in capsys.readouterr().err.lower()
    out = tmp_path / 'maskclip'
    assert _run(dataroot, out, *args, '--allow-random-weights') == 0
    manifest = json.loads((out / 'manifest.json').read_text())
    assert manifest['random_weights'] and manifest['teachers']['clip']['random_weights']
    assert not manifest['simulated'] and len(list((out / 'keyframes').glob('*.npz'))) == 2
    item = cache.read_keyframe(next((out / 'keyframes').glob('*.npz')))
    assert item.label_size.tolist() == [32, 64] and np.any(item.labels != 255)


def test_help_documents_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(['--help'])
    text = capsys.readouterr().out
    assert exit_info.value.code == 0
    for option in ('--teacher', '--sam', '--num-shards', '--occlusion-check', '--save-2d',
                   '--allow-random-weights', 'torchrun', 'quality.json'):
        assert option in text


def test_paint_segments_follows_the_refinement_order():
    masks = np.zeros((3, 2, 4), dtype=bool)
    masks[0, :, :2] = True  # area 4
    masks[1, 0, :] = True   # area 4 (after mask 0: stable)
    masks[2, 0, 3] = True   # area 1
    assert cache.paint_segments(masks).tolist() == [[3, 3, 3, 3], [2, 2, 0, 0]]
    assert cache.paint_segments(masks, 'area_descending').tolist() == [[2, 2, 2, 3],
                                                                       [1, 1, 0, 0]]
    assert cache.paint_segments(np.zeros((0, 2, 3), dtype=bool)).tolist() == [[0] * 3] * 2


def test_confusion_iou_and_miou():
    gt = np.array([0, 0, 1, 1, 2, 255, 2])
    pred = np.array([0, 1, 1, 1, 255, 0, 2])
    conf = confusion_matrix(gt, pred, num_classes=4)
    assert conf.shape == (4, 5) and conf.sum() == 6 and conf[2, 4] == 1  # 255 -> miss column
    iou = iou_per_class(conf)
    np.testing.assert_allclose(iou[:3], [1 / 2, 2 / 3, 1 / 2])
    assert np.isnan(iou[3])  # absent class: not part of the mean
    assert mean_iou(conf) == pytest.approx((1 / 2 + 2 / 3 + 1 / 2) / 3)
    scores = summary(conf, ['a', 'b', 'c', 'd'])
    assert scores['classes']['d']['iou'] is None and scores['accuracy'] == pytest.approx(4 / 6)
    with pytest.raises(ValueError):
        confusion_matrix([5], [0], num_classes=4)


def test_iou_per_class_scores_absent_classes_by_convention():
    """gt [0, 0, 1], pred [0, 3, 1], 4 classes: class 0 IoU 1 / 2, class 1 1 / 1, class 2
    neither in gt nor predicted, class 3 predicted once but absent from the gt: NaN when only
    classes with support are scored, 0 / 1 = 0 under the devkit's union convention."""
    conf = confusion_matrix([0, 0, 1], [0, 3, 1], num_classes=4)
    present = iou_per_class(conf)
    union = iou_per_class(conf, nan_if='no_union')
    np.testing.assert_array_equal(present, [0.5, 1.0, np.nan, np.nan])
    np.testing.assert_array_equal(union, [0.5, 1.0, np.nan, 0.0])
    with pytest.raises(ValueError, match='nan_if'):
        iou_per_class(conf, nan_if='absent')
