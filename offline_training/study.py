"""The label-free study on the synthetic world: each CNS and CLIP2Scene component, measured.

One pipeline, through the same ``main(argv)`` entry points users run:

make_synthetic (train, val and test scenes) -> pseudo_label (simulated MaskCLIP, with or
without simulated SAM refinement, under a teacher-noise preset) for each split -> train (a
:class:`Row`: a method, its components, a backbone, a seed; a short CPU schedule) -> export
(bundle) -> evaluate (the bundle on the val and the test scenes, with their caches for the
teacher's scores on the very same points and pixels).

Scenes are split three ways: 24 train, 4 val (where every recipe choice is made) and 6 test
(reported only). Used by ``benchmarks/bench_ablation.py`` (the component table) and
``tests/test_core_claim.py`` (a reduced version).

The indoor study (:data:`INDOOR`, :data:`INDOOR_ROWS`) runs the same pipeline on the synthetic
indoor world in the ScanNet layout (make_synthetic_indoor; pseudo_label / evaluate
``--dataset scannet``): one keyframe per scan (mesh vertices + its 25k-layout frames), pairs
with CLIP2Scene's 5 cm depth check, the 20 benchmark classes scored per mesh vertex and per
labelled frame. Its recipe (:data:`INDOOR_RECIPE`) is the outdoor one at ScanNet's 5 cm voxels
with RGB input; CLIP2Scene's ScanNet objective has no super-voxels (one "sweep") but the per-pair
distillation of the CLIP features (``clip2scene.pair_distillation``).

The shared recipe (:data:`RECIPE`; first found on the clip_like teachers, then checked on the
val scenes under the realistic ones against the alternatives named below,
``benchmarks/bench_recipe_val.py``; the same for every row):

* MinkUNet14A at half width, 0.2 m voxels: a quarter width learns the vehicle classes too
  slowly; the synthetic LiDAR is sparse, so 0.2 m voxels hold about one point, as 0.1 m do, at
  twice the receptive field.
* AdamW 3e-3, cosine schedule, batch 2 (SGD at lr 0.1 learned slower at this budget; on val,
  1e-3 and 1e-2 gave 21.7 and 18.4 mIoU against 25.0).
* No random rotation about z (flips and scaling stay): every scene is a road seen from the ego
  lane, and learning rotation invariance costs about 2 mIoU at this budget (val: 23.1 vs 25.0).
* Label-frequency class weights, exponent 0.5 (``cns.class_balance``,
  ``clip2scene.class_balance``; from the pseudo-labels, no ground truth): the rare classes
  have a few hundred points in 24 scenes and are otherwise learned late (val: 0.5 gave 25.0,
  0 gave 23.0, 1 gave 15.7).
* The 2D network (CNS co-training rows) is DeepLabV3 on MobileNetV3-Large, from random weights
  (there are no ImageNet weights on a CI machine: the run is flagged as such), at the cache's
  label size (112 x 200).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from offline_training import evaluate, export, make_synthetic, pseudo_label, train

CONFIG = Path(__file__).resolve().parents[1] / 'config' / 'train'
#: ``--set`` overrides shared by every row (module docstring).
RECIPE: tuple[str, ...] = (
    'model.name_3d=minkunet14a', 'model.options_3d={channel_scale: 0.5}',
    'model.voxel_size=0.2', 'data.augment.rotate_z=false', 'optim.name=adamw',
    'optim.lr=0.003')
#: The 3D-only CNS recipe (the demo's and the live bundle's): no 2D network, no switching.
CNS_3D: tuple[str, ...] = (
    *RECIPE, 'cns.network_2d=false', 'data.images=false', 'cns.co_training=false',
    'cns.latent=false', 'cns.class_balance=0.5')
#: The 8 mini_train scenes and 16 more of the devkit's train split.
TRAIN_SCENES: tuple[str, ...] = (
    'scene-0061', 'scene-0553', 'scene-0655', 'scene-0757', 'scene-0796', 'scene-1077',
    'scene-1094', 'scene-1100', 'scene-0001', 'scene-0002', 'scene-0004', 'scene-0005',
    'scene-0006', 'scene-0007', 'scene-0008', 'scene-0009', 'scene-0010', 'scene-0011',
    'scene-0019', 'scene-0020', 'scene-0021', 'scene-0022', 'scene-0023', 'scene-0024')
#: Four scenes of the devkit's val split: recipe choices are made on these.
VAL_SCENES: tuple[str, ...] = ('scene-0015', 'scene-0016', 'scene-0017', 'scene-0018')
#: The 2 mini_val scenes and 4 more of the devkit's val split: reported only.
TEST_SCENES: tuple[str, ...] = (
    'scene-0103', 'scene-0916', 'scene-0003', 'scene-0012', 'scene-0013', 'scene-0014')
#: The synthetic indoor world's default scenes (make_synthetic_indoor): 4 train rooms; of its
#: 3 val rooms, the first is the study's val (choices), the other two its test (reported).
INDOOR_TRAIN: tuple[str, ...] = ('scene0000_00', 'scene0001_00', 'scene0002_00', 'scene0003_00')
INDOOR_VAL: tuple[str, ...] = ('scene0011_00',)
INDOOR_TEST: tuple[str, ...] = ('scene0015_00', 'scene0019_00')
Split = Literal['train', 'val', 'test']
SPLITS: tuple[Split, ...] = ('train', 'val', 'test')
#: Label maps (and the 2D network's input), (H, W) pixels.
IMAGE_SIZE = (112, 200)


@dataclass(frozen=True)
class StudyWorld:
    """Scale of the study's synthetic world."""

    dataset: Literal['nuscenes', 'scannet'] = 'nuscenes'
    """'nuscenes': the driving world (make_synthetic); 'scannet': the indoor world
    (make_synthetic_indoor)."""
    train_scenes: tuple[str, ...] = TRAIN_SCENES
    val_scenes: tuple[str, ...] = VAL_SCENES
    test_scenes: tuple[str, ...] = TEST_SCENES
    duration: float = 2.0
    """Seconds per scene (5 keyframes at 2 s)."""
    seed: int = 0
    """Seed of the world and of the simulated teachers (training seeds are per run)."""

    def scenes(self, split: Split) -> tuple[str, ...]:
        """The scene names of ``split``."""
        return {'train': self.train_scenes, 'val': self.val_scenes,
                'test': self.test_scenes}[split]


#: The indoor study's world.
INDOOR = StudyWorld(dataset='scannet', train_scenes=INDOOR_TRAIN, val_scenes=INDOOR_VAL,
                    test_scenes=INDOOR_TEST)


@dataclass(frozen=True)
class Study:
    """A study's world (``<root>/world``) and its settings; caches and runs live beside it."""

    world: Path
    setup: StudyWorld

    def cache(self, noise: str, sam: bool, split: Split) -> Path:
        """Root of the pseudo-label cache of ``split`` under teacher noise ``noise``, SAM-refined
        or not."""
        return self.world.parent / f'cache_{noise}_{"sam" if sam else "clip"}_{split}'


@dataclass(frozen=True)
class Row:
    """One trained configuration of the study.

    Attributes:
        key: Short identifier ('cns_sam'), for command lines and folders.
        name: Row label ('cns: + SAM refinement', ...).
        config: Training preset file name in ``config/train/``.
        sam: Train on SAM-refined teacher labels (else the raw MaskCLIP stand-in's).
        overrides: ``--set`` values on top of the preset; ``{warmup}`` becomes
            :func:`warmup` of the run's steps.
        net2d: The row trains a 2D network (exported and scored in 2D).
    """

    key: str
    name: str
    config: str
    sam: bool
    overrides: tuple[str, ...]
    net2d: bool = False


_CNS_YAML, _C2S_YAML = 'synthetic_cns.yaml', 'synthetic_clip2scene.yaml'
_CNS_2D = (*RECIPE, 'cns.class_balance=0.5', 'model.name_2d=deeplabv3_mbv3',
           'cns.start_step={warmup}')
_C2S = (*RECIPE, 'clip2scene.class_balance=0.5', 'clip2scene.self_training_start_step={warmup}')
#: The study's rows, in the structure of the CNS paper's ablation, then CLIP2Scene's; the
#: last row of each method on its paper's backbone (CNS: Res16UNet34C; CLIP2Scene on
#: nuScenes: SPVCNN), at half width like the rest.
ROWS: tuple[Row, ...] = (
    Row('cns_clip', 'cns: 3D student on MaskCLIP labels', _CNS_YAML, False, CNS_3D),
    Row('cns_sam', 'cns: + SAM refinement', _CNS_YAML, True, CNS_3D),
    Row('cns_cotrain', 'cns: + 2D-3D co-training', _CNS_YAML, True,
        (*_CNS_2D, 'cns.latent=false'), net2d=True),
    Row('cns_full', 'cns: + SAM latent loss (full CNS)', _CNS_YAML, True, _CNS_2D, net2d=True),
    Row('cns_full_34c', 'cns: full CNS, Res16UNet34C', _CNS_YAML, True,
        (*_CNS_2D, 'model.name_3d=minkunet34c'), net2d=True),
    Row('c2s_semantic', 'clip2scene: semantic loss', _C2S_YAML, False,
        (*_C2S, 'clip2scene.spatial_temporal=false', 'clip2scene.self_training=false')),
    Row('c2s_st', 'clip2scene: + spatial-temporal', _C2S_YAML, False,
        (*_C2S, 'clip2scene.self_training=false')),
    Row('c2s_full', 'clip2scene: + switchable self-training (full)', _C2S_YAML, False, _C2S),
    Row('c2s_full_spvcnn', 'clip2scene: full CLIP2Scene, SPVCNN', _C2S_YAML, False,
        (*_C2S, 'model.name_3d=spvcnn')),
)


#: Label maps and 2D input of the indoor study, (H, W): a quarter of ScanNet's 480 x 640 (CNS
#: uses half: 240 x 320).
INDOOR_IMAGE_SIZE = (120, 160)
#: The outdoor recipe at ScanNet's 5 cm voxels with RGB input (rotation about z stays: rooms
#: have no preferred heading).
INDOOR_RECIPE: tuple[str, ...] = (
    'model.name_3d=minkunet14a', 'model.options_3d={channel_scale: 0.5}',
    'model.voxel_size=0.05', 'model.input_features=[rgb]', 'optim.name=adamw',
    'optim.lr=0.003')
_INDOOR_CNS_YAML = 'synthetic_indoor_cns.yaml'
_INDOOR_C2S_YAML = 'synthetic_indoor_clip2scene.yaml'
#: The indoor 3D-only CNS recipe (the indoor demo's and its rows without a 2D network).
INDOOR_CNS_3D: tuple[str, ...] = (
    *INDOOR_RECIPE, 'cns.network_2d=false', 'data.images=false', 'cns.co_training=false',
    'cns.latent=false', 'cns.class_balance=0.5')
_INDOOR_CNS_2D = (*INDOOR_RECIPE, 'cns.class_balance=0.5', 'model.name_2d=deeplabv3_mbv3',
                  'cns.start_step={warmup}')
_INDOOR_C2S = (*INDOOR_RECIPE, 'clip2scene.class_balance=0.5',
               'clip2scene.self_training_start_step={warmup}')
#: The indoor study's rows: CNS as outdoors; CLIP2Scene's ScanNet objective (semantic CE, +
#: the per-pair CLIP feature distillation, + switchable self-training) on MinkUNet14A, its
#: ScanNet network.
INDOOR_ROWS: tuple[Row, ...] = (
    Row('cns_clip', 'cns: 3D student on MaskCLIP labels', _INDOOR_CNS_YAML, False,
        INDOOR_CNS_3D),
    Row('cns_sam', 'cns: + SAM refinement', _INDOOR_CNS_YAML, True, INDOOR_CNS_3D),
    Row('cns_cotrain', 'cns: + 2D-3D co-training', _INDOOR_CNS_YAML, True,
        (*_INDOOR_CNS_2D, 'cns.latent=false'), net2d=True),
    Row('cns_full', 'cns: + SAM latent loss (full CNS)', _INDOOR_CNS_YAML, True,
        _INDOOR_CNS_2D, net2d=True),
    Row('cns_full_34c', 'cns: full CNS, Res16UNet34C', _INDOOR_CNS_YAML, True,
        (*_INDOOR_CNS_2D, 'model.name_3d=minkunet34c'), net2d=True),
    Row('c2s_semantic', 'clip2scene: semantic loss', _INDOOR_C2S_YAML, False,
        (*_INDOOR_C2S, 'clip2scene.pair_distillation=false', 'data.images=false',
         'clip2scene.self_training=false')),
    Row('c2s_distill', 'clip2scene: + CLIP feature distillation', _INDOOR_C2S_YAML, False,
        (*_INDOOR_C2S, 'clip2scene.self_training=false')),
    Row('c2s_full', 'clip2scene: + switchable self-training (full)', _INDOOR_C2S_YAML, False,
        _INDOOR_C2S),
)


def warmup(steps: int) -> int:
    """Steps of teacher-only supervision before CNS's target switching and CLIP2Scene's
    self-training: three quarters of the run, chosen on the val scenes against a half and a
    quarter (``benchmarks/bench_recipe_val.py``; the reference codes switch after about half:
    CLIP2Scene from epoch 12 of 20, CNS after 10 epochs)."""
    return 3 * steps // 4


def _ok(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f'study: {what} failed with status {status}')


def make_world(root: Path, setup: StudyWorld = StudyWorld()) -> Study:
    """Generate the synthetic world under ``root/world`` (kept if already there)."""
    world = root / 'world'
    if setup.dataset == 'scannet':
        if not (world / 'scans').is_dir():
            from offline_training import make_synthetic_indoor

            _ok(make_synthetic_indoor.main(['--out', str(world), '--seed', str(setup.seed),
                                            '--no-progress']), 'make_synthetic_indoor')
        return Study(world, setup)
    if not (world / 'v1.0-mini').is_dir():
        args = ['--out', str(world), '--duration', str(setup.duration),
                '--image-width', str(IMAGE_SIZE[1]), '--image-height', str(IMAGE_SIZE[0]),
                '--seed', str(setup.seed), '--workers', '2', '--no-progress']
        for split in SPLITS:
            for scene in setup.scenes(split):
                args += ['--scene', scene]
        _ok(make_synthetic.main(args), 'make_synthetic')
    return Study(world, setup)


def make_cache(study: Study, noise: str, sam: bool, split: Split) -> Path:
    """Pseudo-label ``split``'s scenes with the simulated MaskCLIP (``noise``: a preset of
    ``config/teacher_noise/``), refined by the simulated SAM when ``sam``, with two previous
    sweeps (CLIP2Scene) and the per-image files (2D targets, SAM embeddings, 2D teacher
    scores); resumed when present. Returns the cache root."""
    out = study.cache(noise, sam, split)
    if study.setup.dataset == 'scannet':
        data = ('--dataset', 'scannet', '--depth-check', 'absolute', '--min-depth', '0.1',
                '--save-clip-features', '--image-size', *map(str, INDOOR_IMAGE_SIZE))
    else:
        data = ('--version', 'v1.0-mini', '--num-sweeps', '2', '--image-size',
                *map(str, IMAGE_SIZE))
    _ok(pseudo_label.main([
        '--dataroot', str(study.world), *data, '--scenes', *study.setup.scenes(split),
        '--teacher', 'simulated', '--simulated-noise', noise,
        '--sam', 'simulated' if sam else 'none', '--save-2d', '--seed', str(study.setup.seed),
        '--out', str(out), '--no-progress']), f'pseudo_label {out.name}')
    return out


def run_row(study: Study, row: Row, noise: str, steps: int, seed: int,
            splits: Sequence[Split] = ('val', 'test')) -> dict[str, Any]:
    """Train ``row`` with training seed ``seed`` on the ``noise`` train cache into
    ``<root>/runs/<noise>/<row.key>/seed<seed>`` (replaced if present), export, evaluate on
    ``splits``. Returns {split: :func:`summary` of evaluate's metrics.json}."""
    root = study.world.parent / 'runs' / noise / row.key / f'seed{seed}'
    shutil.rmtree(root, ignore_errors=True)  # a re-run trains the row afresh
    values = (*(v.replace('{warmup}', str(warmup(steps))) for v in row.overrides), f'seed={seed}',
              f'log.checkpoint_every={steps}')
    _ok(train.main(['--config', str(CONFIG / row.config), '--dataroot', str(study.world),
                    '--version', 'v1.0-mini', '--cache', str(study.cache(noise, row.sam, 'train')),
                    '--out', str(root / 'run'), '--device', 'cpu', '--threads', '1',
                    '--no-progress', '--steps', str(steps),
                    *[item for value in values for item in ('--set', value)]]),
        f'train {row.name}')
    _ok(export.main(['--run', str(root / 'run'), '--out', str(root / 'bundle'),
                     *(() if row.net2d else ('--no-2d',))]), f'export {row.name}')
    results = {}
    for split in splits:
        _ok(evaluate.main([
            '--bundle', str(root / 'bundle'), '--dataroot', str(study.world), '--version',
            'v1.0-mini', '--dataset', study.setup.dataset, '--scenes', *study.setup.scenes(split),
            '--cache', str(study.cache(noise, row.sam, split)), '--out',
            str(root / f'eval_{split}'), '--threads', '1', '--no-progress']),
            f'evaluate {row.name} on {split}')
        results[split] = summary(json.loads((root / f'eval_{split}' / 'metrics.json').read_text()))
    return results


def _percent(scores: dict[str, Any] | None, key: str = 'miou') -> float | None:
    value = None if scores is None else scores.get(key)
    return None if value is None else 100 * value


def summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The study's numbers (percent; devkit mIoU: mean over the classes with a union) from
    evaluate's metrics.json: the 3D network on every point and on the points the teacher
    labels, the teacher on those points; the 2D network and the teacher on every camera pixel
    (None without a 2D network); accuracies; the 3D per-class IoU."""
    net, paired, teacher = metrics['net3d'], metrics['net3d_paired'], metrics['teacher']
    return {
        'net3d_miou': _percent(net), 'net3d_paired_miou': _percent(paired),
        'teacher3d_miou': _percent(teacher), 'net2d_miou': _percent(metrics.get('net2d')),
        'teacher2d_miou': _percent(metrics.get('teacher_2d')),
        'net3d_paired_accuracy': _percent(paired, 'accuracy'),
        'teacher3d_accuracy': _percent(teacher, 'accuracy'),
        'net3d_iou': {name: _percent(c, 'iou') for name, c in net['classes'].items()},
        'teacher3d_iou': {name: _percent(c, 'iou') for name, c in teacher['classes'].items()},
    }
