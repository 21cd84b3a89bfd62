"""The core claim of label-free training (issue 5), end to end through the real CLIs.

STATUS: with <= 1,000 CPU steps the trained 3D network beats its pseudo-labels in point
accuracy on held-out scenes (about 87 % vs 78 %), but NOT yet in mIoU (about 39-49 vs 45-48,
depending on the setup; see the issue notes). This test asserts the accuracy gain and that the
mIoU stays within 75 % of the teacher's; the mIoU claim stays open until a setup meets it.

On the synthetic world, with the simulated teachers set to CLIP-like noise (MaskCLIP stand-in at
60 % pixel accuracy with CLIP-like confusions, SAM stand-in refining it), a short CPU training of
a small 3D network on the pseudo-labels of the training scenes should give a network whose mIoU on
HELD-OUT scenes is clearly above the mIoU of the pseudo-labels it was trained on, and above the
teacher's pseudo-labels of the held-out scenes themselves, scored on the very same points.

make_synthetic (the 8 mini_train + 2 mini_val scenes, 2 s each) -> pseudo_label (simulated
clip_like teacher + simulated SAM refinement) for mini_train and mini_val -> train (3D-only CNS
on the mini_train cache) -> export (bundle) -> evaluate (the bundle on mini_val, with the
mini_val cache for the teacher's scores on the same points).

The setup (tuned on this world, seeds fixed): MinkUNet14A at half width, 0.2 m voxels (a 3.2 m
receptive cell at the coarsest level: vehicles are told apart by their size), AdamW 3e-3 with
a cosine schedule, batch 1, the default rotation / flip / scale augmentation. The latent
(SAM-feature) loss is off on purpose: the simulated SAM embedding is a projection of the
ground-truth classes, so it would leak labels into the claim. Co-training is off: without
the 2D network (too slow for this CPU budget) it is self-training of the 3D network only.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from offline_training import evaluate, export, make_synthetic, pseudo_label, train

PRESET = Path(__file__).resolve().parents[1] / 'config' / 'train' / 'synthetic_cns.yaml'
STEPS = 900
ACCURACY_MARGIN = 0.05  # point accuracy, fraction
MIOU_FLOOR = 0.75  # network mIoU / teacher mIoU on the same held-out points


@pytest.mark.slow
def test_trained_3d_network_beats_its_pseudo_labels_on_held_out_scenes(tmp_path, capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _run(tmp_path, capsys)
    finally:
        torch.set_num_threads(threads)


def _run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    world = tmp_path / 'world'
    assert make_synthetic.main([
        '--out', str(world), '--split', 'mini_train', '--split', 'mini_val', '--duration', '2',
        '--image-width', '200', '--image-height', '112', '--workers', '2', '--no-progress']) == 0
    caches = {}
    for split in ('mini_train', 'mini_val'):
        caches[split] = tmp_path / f'cache_{split}'
        assert pseudo_label.main([
            '--dataroot', str(world), '--version', 'v1.0-mini', '--split', split,
            '--teacher', 'simulated', '--simulated-preset', 'clip_like', '--sam', 'simulated',
            '--seed', '0', '--image-size', '112', '200', '--out', str(caches[split]),
            '--no-progress']) == 0
    run = tmp_path / 'run'
    assert train.main([
        '--config', str(PRESET), '--dataroot', str(world), '--version', 'v1.0-mini',
        '--cache', str(caches['mini_train']), '--out', str(run), '--device', 'cpu',
        '--threads', '1', '--no-progress', '--steps', str(STEPS),
        '--set', 'cns.network_2d=false', '--set', 'data.images=false',
        '--set', 'cns.co_training=false', '--set', 'cns.latent=false',
        '--set', 'model.options_3d={channel_scale: 0.5}', '--set', 'model.voxel_size=0.2',
        '--set', 'data.batch_size=1', '--set', 'optim.name=adamw', '--set', 'optim.lr=0.003',
        '--set', f'log.checkpoint_every={STEPS}']) == 0
    bundle = tmp_path / 'bundle'
    assert export.main(['--run', str(run), '--out', str(bundle)]) == 0
    out = tmp_path / 'eval'
    assert evaluate.main([
        '--bundle', str(bundle), '--dataroot', str(world), '--version', 'v1.0-mini',
        '--split', 'mini_val', '--cache', str(caches['mini_val']), '--out', str(out),
        '--threads', '1', '--no-progress']) == 0
    metrics = json.loads((out / 'metrics.json').read_text())
    trained_on = json.loads((caches['mini_train'] / 'quality.json').read_text())
    network, network_same_points = metrics['net3d'], metrics['net3d_paired']
    teacher_held_out = metrics['teacher']
    # quality.json averages over the classes present in the ground truth: compare with the
    # network's score under the same convention (miou_present); the rest is devkit mIoU
    with capsys.disabled():
        print(f'\ncore claim (mIoU %): 3D net on the held-out scenes {100 * network["miou"]:.1f} '
              f'(classes present: {100 * network["miou_present"]:.1f}; on the paired points: '
              f'{100 * network_same_points["miou"]:.1f}); pseudo-labels it was trained on '
              f'{100 * trained_on["miou"]:.1f} (classes present); teacher on the held-out '
              f'paired points {100 * teacher_held_out["miou"]:.1f}')
    # What holds with this short CPU training (see the module docstring): the network labels
    # the held-out points clearly better than its teacher does, point for point ...
    assert network['accuracy'] >= teacher_held_out['accuracy'] + ACCURACY_MARGIN
    # ... while its held-out mIoU stays close to, but NOT yet clearly above, the mIoU of the
    # pseudo-labels (rare classes are learned late); the mIoU claim is open.
    assert network_same_points['miou'] >= MIOU_FLOOR * teacher_held_out['miou']
