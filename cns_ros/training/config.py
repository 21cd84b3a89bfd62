"""Typed training configs: dataclass defaults, YAML presets that override only what differs.

A preset (``config/train/*.yaml``) is a nested mapping of overrides on :class:`TrainConfig`'s
defaults; ``--set section.key=value`` overrides go on top (values parsed as YAML scalars, so
``--set cns.co_training=false``, ``--set optim.lr=0.01``, ``--set data.augment.scale=[1,1]``).
Every value is checked against the field's type (int, float, bool, str, choices, tuples, maps,
nested sections); unknown keys and wrong types raise :class:`ConfigError` naming the key and the
file (or ``--set``). The resolved config (:func:`dump_config`) is written beside every checkpoint
and loads back into the same :class:`TrainConfig`.

The defaults are the reference's nuScenes settings (reference/cns_clip2scene.md A6, B6): SGD
lr 0.1, momentum 0.9, dampening 0.1, weight decay 1e-4, cosine schedule, 20 epochs, target
switching / self-training after 10 epochs, 0.1 m voxels.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from cns_ros.fileio import atomic_write_text

METHODS = ('cns', 'clip2scene')
#: Target sources of CNS co-training (reference B1: P*_x, P*_p, P^*_x, P^*_p):
#: ``teacher_pixel`` = the SAM-refined teacher label at the pixel (P*_x; for the 3D net: the
#: label of the paired pixel), ``teacher_point`` = the teacher label lifted to the point (P*_p:
#: the multi-camera fused label of the cache), ``pred_2d`` / ``pred_3d`` = the 2D / 3D network's
#: own argmax prediction, SAM-refined when segments are available (P^*_x, P^*_p).
TARGET_SOURCES = ('teacher_pixel', 'teacher_point', 'pred_2d', 'pred_3d')
#: The switching presets: (3D-net sources, 2D-net sources, refine 3D predictions).
SWITCHING_PRESETS: dict[str, tuple[dict[str, float], dict[str, float], bool]] = {
    # CNS-derived code (reference B5.2): per modality 20 % teacher, 40 % own prediction,
    # 40 % the other modality's prediction; the 3D self-labels are NOT SAM-refined.
    'code': ({'teacher_pixel': 0.2, 'pred_3d': 0.4, 'pred_2d': 0.4},
             {'teacher_pixel': 0.2, 'pred_2d': 0.4, 'pred_3d': 0.4}, False),
    # Paper (reference B1): equal probability over the 4 SAM-refined sources, both networks.
    'paper': ({s: 0.25 for s in TARGET_SOURCES}, {s: 0.25 for s in TARGET_SOURCES}, True),
}


class ConfigError(ValueError):
    """An invalid config: the message names the key and where it came from."""


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f'{key}: {message}')


@dataclass(frozen=True)
class AugmentConfig:
    """3D augmentation, applied to point coordinates AFTER pairing (pairs are indices)."""

    rotate_z: bool = True
    """Random rotation about z, uniform in [0, 2 pi)."""
    flip_x: float = 0.5
    """Probability of x -> -x."""
    flip_y: float = 0.5
    """Probability of y -> -y."""
    scale: tuple[float, float] = (0.95, 1.05)
    """Uniform isotropic scale range; (1, 1) turns scaling off."""

    def __post_init__(self) -> None:
        for name in ('flip_x', 'flip_y'):
            _check(0.0 <= getattr(self, name) <= 1.0, f'data.augment.{name}', 'must be in [0, 1]')
        _check(0.0 < self.scale[0] <= self.scale[1], 'data.augment.scale',
               f'expected 0 < low <= high, found {list(self.scale)}')


@dataclass(frozen=True)
class ImageAugmentConfig:
    """CLIP2Scene's image augmentation (reference A3.4), OFF by default.

    Per camera image of a training sample (seeded: a function of the run seed, epoch and
    sample, as the 3D augmentation, on its own random stream): a random resized crop of the
    label-map grid, resized back to ``label_size``, then a horizontal flip with probability
    ``flip``, applied together to the image, its cached label map and SAM segments (nearest
    neighbour) and its point <-> pixel pairs (pairs outside the crop are dropped; the others
    move exactly with the pixel grid: ``cns_ros.training.image_augment``). With
    ``data.images: false`` only the pairs are cropped and flipped.

    The cached SAM embeddings belong to the un-augmented images, so they are not used with
    this option (CNS needs ``cns.latent: false``; the CNS-derived code turns image
    augmentation off for this reason, reference B6). Unlike the CLIP2Scene code, which loads
    the images again for every sweep, all sweeps of a sample share one crop per camera.
    """

    enabled: bool = False
    """Crop and flip the images, label maps and pairs of training samples."""
    scale: tuple[float, float] = (0.3, 1.0)
    """Range of the crop area as a fraction of the label map (uniform; code: [0.3, 1])."""
    ratio: tuple[float, float] = (14.0 / 9.0, 17.0 / 9.0)
    """Range of the crop width / height in label-map pixels (log-uniform; code: [14/9, 17/9]
    for 224 x 416 images)."""
    flip: float = 0.5
    """Probability of the horizontal flip (column c -> W - 1 - c)."""
    min_pairs: int = 1024
    """A crop is accepted when more than ``min_pairs`` of the image's pairs fall inside ..."""
    min_pair_fraction: float = 0.75
    """... or more than this fraction of them (code: 1024 or 75 %)."""
    max_draws: int = 10
    """Crops drawn before giving up; then the whole image is kept (the code redraws forever)."""

    def __post_init__(self) -> None:
        _check(0.0 < self.scale[0] <= self.scale[1] <= 1.0, 'data.image_augment.scale',
               f'expected 0 < low <= high <= 1, found {list(self.scale)}')
        _check(0.0 < self.ratio[0] <= self.ratio[1], 'data.image_augment.ratio',
               f'expected 0 < low <= high, found {list(self.ratio)}')
        _check(0.0 <= self.flip <= 1.0, 'data.image_augment.flip', 'must be in [0, 1]')
        _check(self.min_pairs >= 0, 'data.image_augment.min_pairs', 'must be >= 0')
        _check(0.0 <= self.min_pair_fraction <= 1.0, 'data.image_augment.min_pair_fraction',
               'must be in [0, 1]')
        _check(self.max_draws >= 1, 'data.image_augment.max_draws', 'must be >= 1')


@dataclass(frozen=True)
class DataConfig:
    """Where the keyframes and pseudo-labels come from and how they are batched."""

    dataroot: str | None = None
    """nuScenes (or synthetic world) root; ``--dataroot``."""
    version: str = 'v1.0-trainval'
    """nuScenes version folder; ``--version``."""
    cache: str | None = None
    """Pseudo-label cache root (offline_training/pseudo_label.py); ``--cache``."""
    num_sweeps: int = 0
    """Previous LiDAR sweeps fed with each keyframe (at most the cache's num_sweeps)."""
    sweep_choice: Literal['nearest', 'random'] = 'nearest'
    """Which cached previous sweeps: the nearest ones, or a random subset per sample (the
    CLIP2Scene code draws 2 of the previous 9)."""
    separate_sweeps: bool = False
    """Each sweep is its own batch element with its own augmentation (CLIP2Scene code);
    False: the sweeps are merged into one cloud."""
    images: bool = True
    """Load the camera images and per-image cache files (2D network, 2D latent loss,
    segments). Needs a cache made with ``pseudo_label --save-2d``."""
    batch_size: int = 2
    """Keyframes per process per step."""
    num_workers: int = 2
    """DataLoader worker processes (0: load in the training process)."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    image_augment: ImageAugmentConfig = field(default_factory=ImageAugmentConfig)
    """CLIP2Scene's random resized crop + flip of images, label maps and pairs (off)."""

    def __post_init__(self) -> None:
        _check(0 <= self.num_sweeps <= 254, 'data.num_sweeps', 'must be in 0..254')
        _check(self.batch_size >= 1, 'data.batch_size', 'must be >= 1')
        _check(self.num_workers >= 0, 'data.num_workers', 'must be >= 0')


@dataclass(frozen=True)
class ModelConfig:
    """The networks (built by ``cns_ros.models.build``)."""

    name_3d: str = 'minkunet34c'
    """3D network: a key of ``cns_ros.models.build.MODEL_BUILDERS``: 'minkunet14a',
    'minkunet18a', 'minkunet34c' (CNS) or 'spvcnn' (CLIP2Scene's nuScenes network)."""
    name_2d: str = 'deeplabv3_r50'
    """2D network (CNS only): a key of ``MODEL_BUILDERS``: 'deeplabv3_r50' (reference) or the
    light 'deeplabv3_r18' / 'deeplabv3_mbv3' (CPU studies, embedded targets; their ImageNet
    checkpoint goes in ``options_2d.backbone_checkpoint`` as for ResNet-50)."""
    voxel_size: float = 0.1
    """Voxel edge, metres."""
    input_features: tuple[str, ...] = ('intensity',)
    """Point features fed to the 3D network (see the models' input features)."""
    options_3d: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments of the 3D network's config (e.g. widths for a tiny net)."""
    options_2d: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments of the 2D network's config."""
    latent_dim: int = 64
    """K_f: dimension of the SAM-projection space of the CNS latent loss (Eq. 7)."""

    def __post_init__(self) -> None:
        _check(self.voxel_size > 0, 'model.voxel_size', 'must be > 0')
        _check(self.latent_dim >= 1, 'model.latent_dim', 'must be >= 1')


@dataclass(frozen=True)
class TextConfig:
    """Where the (C, D) class text embeddings come from (exactly one source)."""

    embeddings: str | None = None
    """A safetensors file holding a (C, D) tensor ``text_embeddings`` (e.g. from a bundle)."""
    clip_checkpoint: str | None = None
    """Local CLIP weights: embeddings computed with cns_ros.teachers.clip_dense."""
    clip_model: str = 'ViT-B-16'
    """open_clip model name of ``clip_checkpoint``."""
    templates: str = 'maskclip85'
    """Prompt-template set for ``clip_checkpoint``."""
    random: bool = False
    """Random unit text embeddings (seeded): ONLY for smoke tests and simulated teachers."""
    dim: int = 512
    """D, the text dimension (checked against the file / CLIP model)."""

    def __post_init__(self) -> None:
        given = [n for n in ('embeddings', 'clip_checkpoint') if getattr(self, n)]
        _check(len(given) + int(self.random) <= 1, 'text',
               'give exactly one of embeddings, clip_checkpoint, random')
        _check(self.dim >= 1, 'text.dim', 'must be >= 1')


@dataclass(frozen=True)
class CNSConfig:
    """CNS objective (reference B1, B5). Every term switches off for the paper's ablations."""

    network_2d: bool = True
    """Train the 2D network too (needs ``data.images``); False: 3D-only CNS."""
    ce_3d_weight: float = 1.0
    """Weight of the 3D cross-entropy on paired points (0 turns it off)."""
    ce_2d_weight: float = 1.0
    """Weight of the 2D cross-entropy on pixels (0 turns it off)."""
    co_training: bool = True
    """Prediction-consistency co-training (target switching) after the warm-up; False = the
    "w/o co-training" ablation: the teacher's labels all the way."""
    switching: Literal['code', 'paper', 'custom'] = 'code'
    """Target-switching rule. 'code' (default): per batch and modality, 20 % refined teacher,
    40 % own prediction, 40 % the other network's prediction; 'paper': equal probability over
    the 4 refined sources; 'custom': ``sources_3d`` / ``sources_2d``. Default 'code' because it
    is the executable rule (the CNS-derived code, whose loss variants carry the paper's ablation
    names), while the paper's rule is known only from a figure caption and a blog summary
    ("randomly, equal probability"); it also keeps the teacher in every modality's mix."""
    sources_3d: dict[str, float] = field(default_factory=dict)
    """'custom' switching: probability of each target source for the 3D net."""
    sources_2d: dict[str, float] = field(default_factory=dict)
    """'custom' switching: probability of each target source for the 2D net."""
    refine_predictions: bool = True
    """Refine network predictions by SAM segments (per-segment mode; needs ``segments`` in the
    per-image cache); False = "w/o refinement" of the predictions (the teacher labels are
    refined, or not, when the cache is made: ``pseudo_label --sam none`` for that ablation)."""
    refine_3d_predictions: bool | None = None
    """Refine the 3D net's own predictions too; None: as the switching preset ('code': no,
    as the code; 'paper': yes, as Fig. 2)."""
    start_epoch: int = 10
    """Warm-up: epochs of teacher-only supervision before switching (code: 10)."""
    start_step: int | None = None
    """Warm-up in steps instead of epochs (overrides ``start_epoch`` when set)."""
    latent: bool = True
    """Latent-space consistency with SAM features (Eq. 7) when the cache has SAM embeddings;
    False = "w/o latent loss"."""
    latent_3d_weight: float = 1.0
    """Weight of 1 - cos(proj(point latent), proj(SAM)) on paired points."""
    latent_2d_weight: float = 1.0
    """Weight of 1 - cos(proj(pixel latent), proj(SAM)) on the SAM grid's valid region."""
    class_balance: float = 0.0
    """Exponent p of label-frequency class weights w_c ~ f_c^-p in both cross-entropies, f_c
    the running frequency of class c among the targets (pseudo-labels, no ground truth; see
    cns_ros.training.balance). 0 = the papers' plain CE (default); 0.5 = inverse square root
    frequency, which lets a short training learn the rare classes."""

    def __post_init__(self) -> None:
        _check(self.class_balance >= 0, 'cns.class_balance', 'must be >= 0')
        for name in ('ce_3d_weight', 'ce_2d_weight', 'latent_3d_weight', 'latent_2d_weight'):
            _check(getattr(self, name) >= 0, f'cns.{name}', 'must be >= 0')
        _check(self.start_epoch >= 0, 'cns.start_epoch', 'must be >= 0')
        _check(self.start_step is None or self.start_step >= 0, 'cns.start_step',
               'must be >= 0 or null')
        if self.switching == 'custom':
            for name in ('sources_3d', 'sources_2d'):
                _check_sources(getattr(self, name), f'cns.{name}')
        else:
            _check(not self.sources_3d and not self.sources_2d, 'cns.sources_3d',
                   "sources_3d / sources_2d are used only with switching: custom")

    def sources(self) -> tuple[dict[str, float], dict[str, float]]:
        """(3D-net, 2D-net) source probabilities of the switching rule."""
        if self.switching == 'custom':
            return dict(self.sources_3d), dict(self.sources_2d)
        three, two, _ = SWITCHING_PRESETS[self.switching]
        return dict(three), dict(two)

    def refines_3d(self) -> bool:
        """Whether the 3D net's own predictions are SAM-refined before use as targets."""
        if self.refine_3d_predictions is not None:
            return self.refine_3d_predictions
        return SWITCHING_PRESETS.get(self.switching, ({}, {}, True))[2]


def _check_paper_switching(cns: CNSConfig, clip2scene: Clip2SceneConfig) -> None:
    """``paper: true`` pins the reference code's switching rule (reference B5.2, A5.2)."""
    why = 'paper: true uses the reference code\'s switching rule; '
    _check(cns.switching == 'code', 'cns.switching',
           why + f"expected 'code' (20/40/40 per modality), found {cns.switching!r}")
    _check(not cns.refines_3d(), 'cns.refine_3d_predictions',
           why + 'the code does not refine the 3D predictions: expected false or null')
    _check(clip2scene.self_training_prob == 0.5, 'clip2scene.self_training_prob',
           why + f'expected 0.5, found {clip2scene.self_training_prob}')


def _check_sources(sources: Mapping[str, float], key: str) -> None:
    _check(bool(sources), key, 'must name at least one source')
    for name, p in sources.items():
        _check(name in TARGET_SOURCES, f'{key}.{name}',
               f'unknown target source; expected one of {", ".join(TARGET_SOURCES)}')
        _check(p >= 0, f'{key}.{name}', 'probability must be >= 0')
    _check(abs(sum(sources.values()) - 1.0) < 1e-6, key,
           f'probabilities must sum to 1, found {sum(sources.values())}')


@dataclass(frozen=True)
class Clip2SceneConfig:
    """CLIP2Scene objective (reference A5, A9). Every term switches off for the ablations."""

    semantic: bool = True
    """Semantic-driven CE of paired points against the MaskCLIP label of their pixel."""
    semantic_weight: float = 1.0
    temperature: float = 1.0
    """Logits / temperature in the semantic CE: 1.0 as the code; the paper states 0.5."""
    spatial_temporal: bool = True
    """Spatial-temporal consistency over super-voxels of the merged multi-sweep cloud."""
    spatial_temporal_weight: float = 1.0
    grid_size: float = 0.1
    """Super-voxel edge, metres (merged voxelization of the un-augmented cloud)."""
    max_per_grid: int = 8
    """Pairs kept per super-voxel (code: 8; the rest are dropped)."""
    fusion_temperature: float = 1.0
    """lambda of the text-guided attention softmax(p . t / lambda) (paper and code: 1)."""
    fusion_reduction: Literal['code', 'mean'] = 'code'
    """'code': mean of (1 - sigmoid(p . f)) over grids x max_per_grid slots, empty slots
    counting sigmoid(0) = 0.5 as in the code; 'mean': mean over the real entries (paper)."""
    self_training: bool = True
    """Switchable self-training: after the start, per batch with ``self_training_prob`` the
    targets are the network's own argmax labels."""
    self_training_prob: float = 0.5
    self_training_start_epoch: int = 11
    """First epoch (0-based) with self-training (code: ``epoch > 10``)."""
    self_training_start_step: int | None = None
    """Start in steps instead of epochs (overrides the epoch when set)."""
    class_balance: float = 0.0
    """Exponent of label-frequency class weights in the semantic CE, as ``cns.class_balance``
    (0 = the paper's plain CE)."""
    pair_distillation: bool = False
    """ScanNet's L_spatial (reference A5.3): per pair 1 - cos(local head feature, the CLIP
    teacher's dense feature at the pair's pixel); needs a cache made with
    ``pseudo_label --save-2d --save-clip-features`` and ``data.images: true``."""
    pair_distillation_weight: float = 1.0

    def __post_init__(self) -> None:
        for name in ('semantic_weight', 'spatial_temporal_weight', 'pair_distillation_weight'):
            _check(getattr(self, name) >= 0, f'clip2scene.{name}', 'must be >= 0')
        for name in ('temperature', 'fusion_temperature', 'grid_size'):
            _check(getattr(self, name) > 0, f'clip2scene.{name}', 'must be > 0')
        _check(self.max_per_grid >= 1, 'clip2scene.max_per_grid', 'must be >= 1')
        _check(self.class_balance >= 0, 'clip2scene.class_balance', 'must be >= 0')
        _check(0.0 <= self.self_training_prob <= 1.0, 'clip2scene.self_training_prob',
               'must be in [0, 1]')


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer (reference: SGD lr 0.1, momentum 0.9, dampening 0.1, weight decay 1e-4)."""

    name: Literal['sgd', 'adamw'] = 'sgd'
    lr: float = 0.1
    momentum: float = 0.9
    dampening: float = 0.1
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    grad_clip: float = 10.0
    """Max global gradient norm (0: no clipping; the norm is logged either way)."""

    def __post_init__(self) -> None:
        _check(self.lr > 0, 'optim.lr', 'must be > 0')
        _check(self.weight_decay >= 0, 'optim.weight_decay', 'must be >= 0')
        _check(self.grad_clip >= 0, 'optim.grad_clip', 'must be >= 0')


@dataclass(frozen=True)
class ScheduleConfig:
    """Length and learning-rate schedule: linear warm-up, then cosine per step."""

    epochs: int = 20
    """Training length in epochs (unless ``steps`` is set)."""
    steps: int | None = None
    """Training length in optimizer steps (overrides ``epochs``); ``--steps``."""
    warmup_steps: int = 0
    """Linear LR warm-up from 0."""
    min_lr_ratio: float = 0.0
    """Final LR as a fraction of ``optim.lr``."""

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, 'schedule.epochs', 'must be >= 1')
        _check(self.steps is None or self.steps >= 1, 'schedule.steps', 'must be >= 1 or null')
        _check(self.warmup_steps >= 0, 'schedule.warmup_steps', 'must be >= 0')
        _check(0.0 <= self.min_lr_ratio <= 1.0, 'schedule.min_lr_ratio', 'must be in [0, 1]')


@dataclass(frozen=True)
class LogConfig:
    """Logging, checkpoints and in-training evaluation."""

    log_every: int = 10
    """TensorBoard scalars every N steps (the loss history file gets every step)."""
    checkpoint_every: int = 1000
    """Checkpoint every N steps (and always at the end)."""
    keep_checkpoints: int = 3
    """Keep the newest N step checkpoints (0: keep all)."""
    eval_every: int = 0
    """Evaluate the 3D net on ``eval_split`` every N steps (0: never)."""
    eval_split: str | None = None
    """Devkit split with lidarseg ground truth for in-training evaluation."""
    progress: bool = True
    """tqdm progress bar (rank 0)."""

    def __post_init__(self) -> None:
        for name in ('log_every', 'checkpoint_every'):
            _check(getattr(self, name) >= 1, f'log.{name}', 'must be >= 1')
        _check(self.keep_checkpoints >= 0, 'log.keep_checkpoints', 'must be >= 0')
        _check(self.eval_every >= 0, 'log.eval_every', 'must be >= 0')


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (resolved copy saved beside each checkpoint)."""

    method: Literal['cns', 'clip2scene'] = 'cns'
    paper: bool = False
    """The reference code's choices (:mod:`cns_ros.paper`): text embeddings from
    ``text.clip_checkpoint`` use its one literal name per class (``traffic_cone``), each DDP
    rank draws its own target source, and the switching rule must be the code's
    (``cns.switching: code``, 3D predictions unrefined, ``clip2scene.self_training_prob``
    0.5: the defaults). Pseudo-labels get the same setting from ``pseudo_label --paper``."""
    seed: int = 0
    """Seeds weights, data order (a function of seed and epoch), augmentation, switching."""
    amp: Literal['bf16', 'fp16', 'off'] = 'fp16'
    """Autocast on CUDA (fp16 with a GradScaler: the precision spconv's kernels are built and
    benchmarked for; bf16 where the sparse backend supports it); always off on the CPU."""
    sync_batchnorm: bool = True
    """Convert BatchNorm to SyncBatchNorm under DDP on CUDA (the reference trains with SyncBN)."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    text: TextConfig = field(default_factory=TextConfig)
    cns: CNSConfig = field(default_factory=CNSConfig)
    clip2scene: Clip2SceneConfig = field(default_factory=Clip2SceneConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def __post_init__(self) -> None:
        if self.method == 'cns' and self.cns.network_2d:
            _check(self.data.images, 'cns.network_2d',
                   'the 2D network needs data.images: true (or set cns.network_2d: false)')
        if self.paper:
            _check_paper_switching(self.cns, self.clip2scene)
        if self.method == 'clip2scene' and self.clip2scene.pair_distillation:
            _check(self.data.images and not self.data.image_augment.enabled,
                   'clip2scene.pair_distillation', 'needs data.images: true (the per-image '
                   'CLIP features) and data.image_augment off (the features are of the '
                   'un-augmented images)')
        if self.method == 'cns' and self.data.image_augment.enabled:
            _check(not self.cns.latent, 'data.image_augment.enabled',
                   'the CNS latent loss compares with the SAM embeddings of the un-augmented '
                   'images: set cns.latent: false to crop and flip the images')


# --- YAML <-> dataclass ---------------------------------------------------------------------

def _type_name(tp: Any) -> str:
    return getattr(tp, '__name__', None) or str(tp).replace('typing.', '')


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked (and converted: list -> tuple, int -> float) against type ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else
                          f'{key}: expected {_type_name(tp)}, found {value!r}')
    if origin is Literal:
        _check(value in args, key, f'expected one of {", ".join(map(str, args))}, '
               f'found {value!r}')
        return value
    if dataclasses.is_dataclass(tp):
        _check(isinstance(value, Mapping), key, f'expected a mapping, found {value!r}')
        return _build(tp, value, key)
    if origin is tuple:
        _check(isinstance(value, (list, tuple)), key, f'expected a list, found {value!r}')
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f'{key}[{i}]') for i, v in enumerate(value))
        _check(len(value) == len(args), key, f'expected {len(args)} values, found {value!r}')
        pairs = enumerate(zip(value, args, strict=True))
        return tuple(_coerce(v, a, f'{key}[{i}]') for i, (v, a) in pairs)
    if origin is dict:
        _check(isinstance(value, Mapping), key, f'expected a mapping, found {value!r}')
        return {_coerce(k, args[0], key): _coerce(v, args[1], f'{key}.{k}')
                for k, v in value.items()}
    return _scalar(value, tp, key)


_FLOAT_TEXT = re.compile(r'[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+')


def _scalar(value: Any, tp: Any, key: str) -> Any:
    if tp is Any:
        return value
    if tp is bool:
        _check(isinstance(value, bool), key, f'expected true/false, found {value!r}')
    elif tp is int:
        _check(isinstance(value, int) and not isinstance(value, bool), key,
               f'expected an integer, found {value!r}')
    elif tp is float:
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads '1e-2' (no dot) as a string
        _check(isinstance(value, (int, float)) and not isinstance(value, bool), key,
               f'expected a number, found {value!r}')
        return float(value)
    elif tp is str:
        _check(isinstance(value, str), key, f'expected a string, found {value!r}')
    else:
        raise ConfigError(f'{key}: unsupported field type {_type_name(tp)}')
    return value


def _build(cls: type, data: Mapping[str, Any], prefix: str, base: Any = None) -> Any:
    """A ``cls`` from ``base`` (default: its defaults) with ``data``'s keys overridden."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    base = cls() if base is None else base
    values = {}
    for key, value in data.items():
        path = f'{prefix}.{key}' if prefix else str(key)
        if key not in names:
            raise ConfigError(f'{path}: unknown key; {cls.__name__} has '
                              f'{", ".join(names)}')
        current = getattr(base, key)
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, Mapping):
            values[key] = _build(hints[key], value, path, current)
        else:
            values[key] = _coerce(value, hints[key], path)
    return dataclasses.replace(base, **values)


def config_from_dict(data: Mapping[str, Any] | None, source: str = '<dict>',
                     base: Any = None) -> Any:
    """``base`` (default: :class:`TrainConfig` defaults) with the overrides of ``data``.

    ``base`` may be any config dataclass (e.g. the 3D-OVS ``Ovs3dConfig``); the result has its
    type.

    Raises:
        ConfigError: Unknown key, wrong type or invalid value; the message starts with
            ``source`` and names the key path.
    """
    if data is None:
        return base or TrainConfig()
    if not isinstance(data, Mapping):
        raise ConfigError(f'{source}: expected a mapping at the top level, found '
                          f'{type(data).__name__}')
    try:
        return _build(type(base) if base is not None else TrainConfig, data, '', base)
    except ConfigError as exc:
        raise ConfigError(f'{source}: {exc}') from None


def load_config(path: str | os.PathLike[str] | None, overrides: Sequence[str] = (),
                base: Any = None) -> Any:
    """Load a preset YAML (None: defaults only) and apply ``key=value`` overrides.

    ``base`` (default :class:`TrainConfig` defaults) gives the config type and its starting
    values.

    The overrides are merged first (later ones win) and checked together, so
    ``--set data.images=false --set cns.network_2d=false`` works in either order.

    Raises:
        ConfigError: Unknown key / bad value (naming the key and the file or ``--set``);
            FileNotFoundError for a missing file.
    """
    config = base or TrainConfig()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f'training config not found: {path}')
        try:
            data = yaml.safe_load(path.read_text(encoding='utf-8'))
        except yaml.YAMLError as exc:
            raise ConfigError(f'{path}: not valid YAML: {exc}') from None
        config = config_from_dict(data, str(path), config)
    merged: dict[str, Any] = {}
    for item in overrides:
        _merge(merged, parse_override(item))
    return config_from_dict(merged, '--set', config) if merged else config


def parse_override(item: str) -> dict[str, Any]:
    """``'a.b=value'`` -> ``{'a': {'b': value}}`` (the value parsed as YAML)."""
    key, sep, text = item.partition('=')
    if not sep or not key.strip():
        raise ConfigError(f'--set {item!r}: expected key=value, e.g. optim.lr=0.01')
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f'--set {item!r}: value is not valid YAML: {exc}') from None
    nested: Any = value
    for part in reversed(key.strip().split('.')):
        nested = {part: nested}
    return nested


def _merge(target: dict[str, Any], update: Mapping[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


def config_to_dict(config: Any) -> Any:
    """Plain YAML-ready data of a config (tuples as lists)."""
    if dataclasses.is_dataclass(config):
        return {f.name: config_to_dict(getattr(config, f.name))
                for f in dataclasses.fields(config)}
    if isinstance(config, (list, tuple)):
        return [config_to_dict(v) for v in config]
    if isinstance(config, Mapping):
        return {k: config_to_dict(v) for k, v in config.items()}
    return config


def dump_config(config: TrainConfig) -> str:
    """The resolved config as YAML text (loads back with :func:`config_from_dict`)."""
    header = '# cns_ros resolved training config (every field; load with --config)\n'
    return header + yaml.safe_dump(config_to_dict(config), sort_keys=False)


def save_config(config: TrainConfig, path: str | os.PathLike[str]) -> None:
    """Write :func:`dump_config` atomically."""
    atomic_write_text(path, dump_config(config))


def total_steps(schedule: ScheduleConfig, steps_per_epoch: int) -> int:
    """Optimizer steps of the run: ``schedule.steps`` or epochs x steps per epoch."""
    return schedule.steps if schedule.steps is not None else schedule.epochs * steps_per_epoch
