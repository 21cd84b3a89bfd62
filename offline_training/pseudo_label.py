"""Pseudo-label LiDAR points with 2D teachers and write a resumable, sharded cache.

For every keyframe of a nuScenes split: a CLIP teacher labels the camera images (at
--image-size), SAM masks refine the label maps (optional), the labels are lifted to the LiDAR
points (cns_ros.teachers.lifting: per-camera ego-motion compensation, true image bounds, 1 m
minimum depth, optional occlusion check, confidence-weighted multi-camera vote) and written to
OUT/keyframes/<sample_token>.npz (format: cns_ros/teachers/cache.py). With --save-2d every
image also gets OUT/images/<camera token>.npz (refined labels, SAM embedding in float16).
OUT/manifest.json records the settings, the teachers (random_weights / simulated flags) and
the package versions; a cache made with other settings is refused.

Teachers: --teacher maskclip (MaskCLIP on open_clip, --clip-checkpoint) or simulated (ONLY for
the synthetic world of make_synthetic: labels from its rendered ground truth with structured
noise); --sam none, sam (segment_anything, --sam-checkpoint) or simulated. The simulated
teachers' noise is a YAML noise file or a preset (--simulated-noise; config/teacher_noise/):
noise_free, clip_like (errors redrawn per image, disjoint masks) or realistic (the default:
calibrated to teacher_noise.md 7: persistent per-object errors, overlapping SAM masks, an
embedding that never reads the labels; needs a world with synthetic_gt/region/). The manifest
records every resolved noise parameter.
Random weights only with --allow-random-weights (smoke runs; flagged in the manifest).
--paper makes MaskCLIP as the reference code does (cns_ros/paper.py): no CLIP mean/std input
normalisation and one literal name per class in the prompts ('traffic_cone', 'manmade').
SAM-refined pixels keep the CLIP confidence of their pixel.

ScanNet (--dataset scannet; the real dataset or the synthetic indoor world of
make_synthetic_indoor): one keyframe per scan, its points the mesh vertices, its cameras the
scan's frames (--layout 25k or export, --every k) as 640 x 480 depth cameras; pairs are kept
only where the frame's depth image agrees (--depth-check absolute: CLIP2Scene's 5 cm; or
relative: OpenScene's 25 %), --min-depth 0.1 suits a hand-held camera; the quality table is
over the 20 benchmark classes on the vertices seen by a frame.

Resumable: a keyframe is done iff its file exists (files are renamed into place when
complete), so a re-run after a kill does only what is missing. Sharding: keyframe k belongs to
shard k % n (--shard i --num-shards n); under torchrun (RANK / WORLD_SIZE set) each rank takes
its shard and GPU (LOCAL_RANK). With lidarseg ground truth, the quality of every finished
keyframe (all shards) is printed and written to OUT/quality.json: per-class IoU and mIoU
(nuScenes-16, index 0 ignored, classes present only) on keyframe points paired with a pixel,
and the fraction of points paired: the "teacher" line that training results compare with.
Every shard rewrites quality.json when it ends, so the last one to finish writes the complete
table ("complete": true); a re-run with nothing left to do recomputes it.

examples:
  python -m offline_training.pseudo_label --dataroot data/nuscenes --version v1.0-trainval \\
      --split train --teacher maskclip --clip-checkpoint weights/ViT-B-16.pt \\
      --sam sam --sam-checkpoint weights/sam_vit_h_4b8939.pth --out cache/nuscenes_train
  torchrun --nproc-per-node 4 -m offline_training.pseudo_label ...   # one shard per GPU
  python -m offline_training.pseudo_label --dataroot data/synthetic --split mini_train \\
      --teacher simulated --sam simulated --simulated-noise realistic --out cache/synthetic

exit status: 0 done (also when --limit left work for later), 2 bad arguments or settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import cns_ros
from cns_ros.data.keyframes import DATASETS, dataset_vocabulary, open_keyframes
from cns_ros.teachers import cache
from cns_ros.teachers.lifting import (
    DEPTH_CHECKS,
    FUSED_CONFIDENCE_MODES,
    LiftingConfig,
    fuse_labels,
    gather,
    keyframe_pairs,
)
from cns_ros.teachers.simulated import SIMULATED_PRESETS, TeacherNoise, load_noise
from cns_ros.vocabulary import IGNORE_INDEX

TEACHERS = ('maskclip', 'simulated')
SAMS = ('none', 'sam', 'simulated')
_PACKAGES = ('numpy', 'nuscenes-devkit', 'torch', 'open_clip_torch', 'segment-anything')


@dataclass(frozen=True)
class PseudoLabelConfig:
    """Everything that defines the cache contents (saved in the manifest, checked on resume).

    Attributes:
        teacher: 'maskclip' or 'simulated'.
        sam: 'none', 'sam' or 'simulated'.
        image_size: (H, W) of the teacher label maps, pixels.
        num_sweeps: Previous LiDAR sweeps lifted with each keyframe.
        lifting: Pairing and fusion settings.
        clip_model: open_clip model name or model-config JSON.
        clip_checkpoint: Local CLIP weights (None: random weights, if allowed).
        clip_templates: Prompt-template set.
        sam_model_type: 'vit_b', 'vit_l' or 'vit_h'.
        sam_checkpoint: Local SAM weights (None: random weights, if allowed).
        sam_points_per_side: SAM automatic-mask point grid.
        sam_resize: 'bilinear' (reference) or 'nearest' resize of SAM masks to image_size.
        allow_random_weights: Allow random teacher weights (smoke runs only).
        simulated_noise: Noise of the simulated teachers: a preset name (``noise_free``,
            ``clip_like``, ``realistic``) or a YAML noise file.
        paper: MaskCLIP as the reference code (:mod:`cns_ros.paper`): RGB / 255 input (no
            CLIP mean / std) and its one literal class name per class in the prompts.
        seed: Seed of the simulated teachers' noise.
        save_2d: Also write per-image refined labels (and SAM embeddings).
        save_clip_features: With ``save_2d``, also the CLIP teacher's dense features on its
            patch grid (CLIP2Scene's ScanNet pair distillation).
        fp16: float16 autocast for the teachers on CUDA.
    """

    teacher: str = 'maskclip'
    sam: str = 'none'
    image_size: tuple[int, int] = (224, 416)
    num_sweeps: int = 0
    lifting: LiftingConfig = dataclasses.field(default_factory=LiftingConfig)
    clip_model: str = 'ViT-B-16'
    clip_checkpoint: str | None = None
    clip_templates: str = 'maskclip85'
    sam_model_type: str = 'vit_h'
    sam_checkpoint: str | None = None
    sam_points_per_side: int = 32
    sam_resize: str = 'bilinear'
    allow_random_weights: bool = False
    simulated_noise: str = 'realistic'
    paper: bool = False
    seed: int = 0
    save_2d: bool = False
    fp16: bool = True
    save_clip_features: bool = False


@dataclass(frozen=True)
class RunOptions:
    """How to run (not part of the cache identity).

    Attributes:
        dataroot: nuScenes or ScanNet (or synthetic world) root folder.
        out: Cache root folder.
        dataset: 'nuscenes' or 'scannet' (:mod:`cns_ros.data.keyframes`).
        version: nuScenes version folder.
        split: Devkit split name (ScanNet: 'train', 'val', 'test'), or None for every scene.
        layout: ScanNet frames: '25k' or 'export'.
        every: ScanNet: every k-th frame.
        scenes: Only these scenes (within ``split``), or None.
        shard: This process's shard, in [0, num_shards).
        num_shards: Number of shards; keyframe k belongs to shard k % num_shards.
        limit: At most this many keyframes in this run (None: all pending).
        batch_size: Images per teacher call (keyframes are grouped to fill it).
        device: 'auto', 'cpu', 'cuda' or 'cuda:N'.
        progress: Show a tqdm bar.
    """

    dataroot: Path
    out: Path
    dataset: str = 'nuscenes'
    version: str = 'v1.0-mini'
    split: str | None = None
    layout: str = '25k'
    every: int = 1
    scenes: tuple[str, ...] | None = None
    shard: int = 0
    num_shards: int = 1
    limit: int | None = None
    batch_size: int = 12
    device: str = 'auto'
    progress: bool = True


@dataclass(frozen=True)
class RunSummary:
    """What :func:`run` did: keyframes processed now, already done, left, and the quality."""

    processed: int
    skipped: int
    remaining: int
    total: int
    shard: tuple[int, int]
    quality: dict[str, Any] | None
    seconds: float


def _resolve_device(device: str) -> str:
    if device != 'auto':
        return device
    import torch

    if not torch.cuda.is_available():
        return 'cpu'
    return f'cuda:{int(os.environ.get("LOCAL_RANK", "0"))}'


class _Teachers:
    """The chosen CLIP and SAM teachers behind one interface (numpy in and out)."""

    def __init__(self, config: PseudoLabelConfig, dataroot: Path, device: str,
                 batch_size: int) -> None:
        from cns_ros.teachers import simulated as sim

        self.config, self.clip, self.sam, self.gt = config, None, None, None
        self.noise: TeacherNoise = load_noise(config.simulated_noise, config.seed)
        clip_sim, sam_sim = self.noise.build()
        realistic = self.noise.generators()
        self.needs_rgb = config.sam == 'simulated' and (realistic['sam'] == 'realistic' or (
            config.save_2d and realistic['embedding'] == 'realistic'))
        if 'simulated' in (config.teacher, config.sam):
            self.gt = sim.SyntheticGroundTruth(dataroot)
            per_class = 'realistic' in (realistic['clip'], realistic['sam'])
            if per_class and self.noise.class_space != self.gt.class_space:
                raise ValueError(  # before the manifest is written: nothing left behind
                    f'--simulated-noise {config.simulated_noise}: its per-class noise is for '
                    f'{self.noise.class_space} worlds, but {dataroot} is a '
                    f'{self.gt.class_space} world (synthetic_gt/index.json); use a noise file '
                    f'with class_space: {self.gt.class_space} (e.g. realistic_indoor)')
        if config.teacher == 'simulated':
            self.clip = clip_sim
        else:
            from cns_ros.paper import paper_choices
            from cns_ros.teachers.clip_dense import ClipDenseConfig, MaskClipTeacher

            choices = paper_choices(config.paper)
            self.clip = MaskClipTeacher(ClipDenseConfig(
                model_name=config.clip_model, checkpoint=config.clip_checkpoint,
                allow_random_weights=config.allow_random_weights, image_size=config.image_size,
                templates=config.clip_templates, prompt_style=choices.prompt_style,
                normalize_input=choices.normalize_clip_input, device=_resolve_device(device),
                fp16=config.fp16, batch_size=batch_size))
        if config.sam == 'simulated':
            self.sam = sam_sim
        elif config.sam == 'sam':
            from cns_ros.teachers.sam import SamConfig, SamTeacher

            self.sam = SamTeacher(SamConfig(
                model_type=config.sam_model_type, checkpoint=config.sam_checkpoint,
                allow_random_weights=config.allow_random_weights,
                points_per_side=config.sam_points_per_side, device=_resolve_device(device),
                fp16=config.fp16, batch_size=batch_size))

    def describe(self) -> dict[str, Any]:
        """Manifest entry: names, flags and the settings of both teachers."""
        cfg, out = self.config, {}
        out['clip'] = {'name': cfg.teacher, 'random_weights': bool(self.clip.random_weights),
                       'simulated': cfg.teacher == 'simulated'}
        noise = self.noise.as_dict()
        if cfg.teacher == 'simulated':
            out['clip'].update(noise=noise['name'], seed=cfg.seed, settings=noise['clip'])
        else:
            out['clip'].update(model=cfg.clip_model, checkpoint=cfg.clip_checkpoint,
                               templates=cfg.clip_templates, source=self.clip.clip.source,
                               prompt_style=self.clip.config.prompt_style,
                               normalize_input=self.clip.config.normalize_input)
        sam_random = bool(self.sam is not None and self.sam.random_weights)
        out['sam'] = {'name': cfg.sam, 'random_weights': sam_random,
                      'simulated': cfg.sam == 'simulated'}
        if cfg.sam == 'simulated':
            out['sam'].update(noise=noise['name'], seed=cfg.seed, settings=noise['sam'],
                              embedding=noise['embedding'])
        elif cfg.sam == 'sam':
            out['sam'].update(model_type=cfg.sam_model_type, checkpoint=cfg.sam_checkpoint,
                              points_per_side=cfg.sam_points_per_side, resize=cfg.sam_resize,
                              source=self.sam.loaded.source)
        return out

    def label(self, frames: list[Any]) -> tuple[np.ndarray, np.ndarray, list[Any]]:
        """Refined labels uint8 (B, H, W), confidences float32 (B, H, W) and, per image with
        --save-2d and SAM, (embedding, segments) for the image cache (else (None, None))."""
        size = self.config.image_size
        gts = [self.gt.load(f.sample_data_token, rgb=self.needs_rgb) for f in frames] if (
            self.gt) else None
        needs_images = self.config.teacher == 'maskclip' or self.config.sam == 'sam'
        images = [f.load_image() for f in frames] if needs_images else None
        features = None
        if self.config.teacher == 'simulated' and self.config.save_clip_features:
            out = self.clip(gts, size)
            labels, conf = out.labels.numpy().astype(np.uint8), out.confidence.numpy()
            features = out.features.numpy()
        elif self.config.teacher == 'simulated':
            labels, conf = self.clip.predict(gts, size)
        else:
            labels, conf, features = self._maskclip(images)
        extras: list[Any] = [(None, None, None if features is None else features[b])
                             for b in range(len(frames))]
        for b in range(len(frames) if self.sam is not None else 0):
            if self.config.sam == 'simulated':
                masks = self.sam.masks(gts[b], size).masks
                emb = self.sam.embedding(gts[b]) if self.config.save_2d else None
            else:
                sam_masks, emb = self.sam.masks_and_embedding(images[b])
                masks = sam_masks.resized(size, self.config.sam_resize).masks
            labels[b] = self.sam.refine(labels[b], masks, ignore_index=IGNORE_INDEX)[0]
            if self.config.save_2d:
                extras[b] = (emb, cache.paint_segments(masks, self.sam.config.mask_order),
                             extras[b][2])
        return labels, conf, extras

    def _maskclip(self, images: list[np.ndarray]
                  ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray] | None]:
        size = self.config.image_size
        labels = np.empty((len(images), *size), dtype=np.uint8)
        conf = np.empty((len(images), *size), dtype=np.float32)
        features: list[Any] = [None] * len(images)
        for shape in dict.fromkeys(image.shape for image in images):
            index = [i for i, image in enumerate(images) if image.shape == shape]
            out = self.clip(np.stack([images[i] for i in index]), output_size=size)
            labels[index] = out.labels.cpu().numpy().astype(np.uint8)
            conf[index] = out.confidence.float().cpu().numpy()
            for j, i in enumerate(index):
                features[i] = out.features[j].float().cpu().numpy()
        return labels, conf, features if self.config.save_clip_features else None


def _keyframe_item(keyframe: Any, labels: np.ndarray, conf: np.ndarray,
                   config: PseudoLabelConfig, num_classes: int) -> cache.KeyframeLabels:
    """Lift one keyframe's (M, H, W) maps to its points; the cache record."""
    pairs = keyframe_pairs(keyframe, config.image_size, config.lifting)
    pair_labels, pair_conf = gather(pairs, labels), gather(pairs, conf)
    fused = fuse_labels(pairs.num_points, pairs.point, pair_labels, pair_conf, num_classes,
                        config.lifting.fused_confidence)
    frames = list(keyframe.cameras.values())
    return cache.KeyframeLabels(
        labels=fused.labels, confidence=fused.confidence, sweep_index=keyframe.sweep_index,
        pair_point=pairs.point, pair_camera=pairs.camera, pair_row=pairs.row,
        pair_col=pairs.col, pair_label=pair_labels, pair_confidence=pair_conf,
        cameras=np.array(pairs.cameras), camera_tokens=np.array([f.sample_data_token
                                                                 for f in frames]),
        image_sizes=np.array([(f.width, f.height) for f in frames]),
        label_size=np.array(config.image_size), sample_token=np.array(keyframe.sample_token),
        lidar_token=np.array(keyframe.lidar_token))


def _process(data: Any, indices: list[int], teachers: _Teachers, config: PseudoLabelConfig,
             out: Path, num_classes: int) -> None:
    """Label, refine, lift and write the keyframes ``indices`` (one teacher batch)."""
    keyframes = [data[k] for k in indices]
    frames = [f for kf in keyframes for f in kf.cameras.values()]
    labels, conf, extras = teachers.label(frames)
    start = 0
    for kf in keyframes:
        stop = start + len(kf.cameras)
        if config.save_2d:
            for b in range(start, stop):
                cache.write_image(out, frames[b].sample_data_token, labels[b], conf[b],
                                  *extras[b])
        cache.write_keyframe(out, _keyframe_item(kf, labels[start:stop], conf[start:stop],
                                                 config, num_classes))
        start = stop


def _manifest(config: PseudoLabelConfig, options: RunOptions, scenes: Sequence[str],
              num_keyframes: int, teachers: dict[str, Any]) -> dict[str, Any]:
    versions = {'cns_ros': cns_ros.__version__}
    for package in _PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        'format': cache.FORMAT_NAME, 'format_version': cache.FORMAT_VERSION,
        'config': json.loads(json.dumps(dataclasses.asdict(config))),
        'teachers': teachers,
        'random_weights': any(t['random_weights'] for t in teachers.values()),
        'simulated': any(t['simulated'] for t in teachers.values()),
        'dataset': {'name': options.dataset, 'version': options.version,
                    'split': options.split, 'scenes': list(scenes),
                    'num_keyframes': num_keyframes, **_scannet_frames(options)},
        'source': {'dataroot': str(options.dataroot)}, 'versions': versions,
        'classes': list(dataset_vocabulary(options.dataset).names),
        'ignore_index': IGNORE_INDEX,
        'layout': 'see cns_ros/teachers/cache.py',
    }


def run(config: PseudoLabelConfig, options: RunOptions) -> RunSummary:
    """Label this shard's unfinished keyframes, then evaluate the whole cache (if GT exists)."""
    from cns_ros.data.nuscenes import CAMERA_CHANNELS

    start = time.perf_counter()
    data = open_keyframes(options.dataset, options.dataroot, version=options.version,
                          split=options.split, num_sweeps=config.num_sweeps,
                          scenes=options.scenes, layout=options.layout, every=options.every)
    samples = cache.sample_tokens(data)
    classes = dataset_vocabulary(options.dataset).names
    teachers = _Teachers(config, options.dataroot, options.device, options.batch_size)
    manifest = _manifest(config, options, data.scene_names, len(samples), teachers.describe())
    options.out.mkdir(parents=True, exist_ok=True)
    cache.write_manifest(options.out, manifest)
    removed, kept = cache.remove_stale_temps(options.out)
    if removed or kept:
        print(f'temporary files of interrupted runs: {removed} removed, {kept} left (in use '
              f'or recent)', file=sys.stderr)
    mine = [k for k in range(len(samples)) if k % options.num_shards == options.shard]
    todo = [k for k in mine if not cache.keyframe_path(options.out, samples[k][0]).exists()]
    skipped, limit = len(mine) - len(todo), options.limit
    todo, later = (todo, []) if limit is None else (todo[:limit], todo[limit:])
    cameras = len(CAMERA_CHANNELS) if options.dataset == 'nuscenes' else options.batch_size
    per_batch = max(1, options.batch_size // cameras)  # keyframes per batch (ScanNet: 1)
    from tqdm import tqdm

    with tqdm(total=len(todo), unit='keyframe', disable=not options.progress,
              desc=f'pseudo-labels shard {options.shard}/{options.num_shards}') as bar:
        for first in range(0, len(todo), per_batch):
            group = todo[first:first + per_batch]
            _process(data, group, teachers, config, options.out, len(classes))
            bar.update(len(group))
    quality = cache.evaluate(options.out, data, samples, classes)
    if quality is not None:
        quality['teachers'] = manifest['teachers']
        cache.write_quality(options.out, quality)
    return RunSummary(processed=len(todo), skipped=skipped, remaining=len(later),
                      total=len(samples), shard=(options.shard, options.num_shards),
                      quality=quality, seconds=time.perf_counter() - start)


def _scannet_frames(options: RunOptions) -> dict[str, Any]:
    """The manifest's ScanNet frame selection (nothing for nuScenes)."""
    return {} if options.dataset == 'nuscenes' else {'layout': options.layout,
                                                     'every': options.every}


def _shard(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[int, int]:
    """(shard, num_shards) from the flags, else from torchrun's RANK / WORLD_SIZE."""
    world = os.environ.get('WORLD_SIZE')
    if args.shard is None and args.num_shards is None and world is not None:
        return int(os.environ.get('RANK', '0')), int(world)
    shard, count = args.shard or 0, args.num_shards or 1
    if not 0 <= shard < count:
        parser.error(f'--shard must be in [0, --num-shards={count}), found {shard}')
    return shard, count


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of :func:`main`."""
    d, lift = PseudoLabelConfig(), LiftingConfig()
    parser = argparse.ArgumentParser(
        prog='pseudo_label', description=__doc__.split('\n\n')[0],
        epilog=__doc__.split('\n\n', 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add('--dataroot', required=True, type=Path, help='nuScenes or ScanNet (or synthetic world) '
        'root folder')
    add('--dataset', choices=DATASETS, default='nuscenes', help='keyframes: nuScenes samples '
        'or ScanNet scans (default: %(default)s)')
    add('--layout', choices=('25k', 'export'), default='25k', help='ScanNet frames: '
        'scannet_frames_25k or the SensReader export in scans/<scene>/ (default: %(default)s)')
    add('--every', type=int, default=1, help='ScanNet: every k-th frame (default: 1)')
    add('--version', default='v1.0-mini', help='nuScenes version folder (default: %(default)s)')
    add('--split', default=None, help="devkit split: 'train', 'val', 'mini_train', ... "
        '(default: every scene of the version)')
    add('--scenes', nargs='+', metavar='NAME', help='only these scenes (within --split)')
    add('--out', required=True, type=Path, help='cache root folder (created; resumed if present)')
    add('--teacher', choices=TEACHERS, default=d.teacher, help='2D label teacher; simulated '
        'works only on the synthetic world (default: %(default)s)')
    add('--sam', choices=SAMS, default=d.sam, help='SAM refinement (default: %(default)s)')
    add('--simulated-noise', '--simulated-preset', dest='simulated_noise', metavar='FILE|PRESET',
        default=d.simulated_noise, help='noise of the simulated teachers: a YAML noise file or '
        f'a preset ({", ".join(SIMULATED_PRESETS)}; config/teacher_noise/); '
        '--simulated-preset is an alias (default: %(default)s)')
    add('--seed', type=int, default=d.seed, help='seed of the simulated teachers (default: 0)')
    add('--clip-checkpoint', help='local CLIP weights (ViT-B-16.pt or open_clip state dict)')
    add('--clip-model', default=d.clip_model, help='open_clip model name or model-config JSON '
        '(default: %(default)s)')
    add('--clip-templates', default=d.clip_templates, help="prompt templates: 'maskclip85' or "
        "'single' (default: %(default)s)")
    add('--paper', action='store_true', help="MaskCLIP as the reference code: no CLIP mean/std "
        "input normalisation, its literal class names in the prompts ('traffic_cone'); "
        'cns_ros/paper.py')
    add('--sam-checkpoint', help='local SAM weights (sam_vit_h_4b8939.pth, ...)')
    add('--sam-model-type', default=d.sam_model_type, choices=('vit_b', 'vit_l', 'vit_h'),
        help='SAM model (default: %(default)s)')
    add('--sam-points-per-side', type=int, default=d.sam_points_per_side,
        help='SAM automatic-mask point grid (default: %(default)s)')
    add('--sam-resize', choices=('bilinear', 'nearest'), default=d.sam_resize,
        help='resize of SAM masks to --image-size (default: %(default)s, as the reference)')
    add('--allow-random-weights', action='store_true', help='allow random teacher weights '
        'when no checkpoint is given (smoke runs; flagged in the manifest)')
    add('--image-size', nargs=2, type=int, default=d.image_size, metavar=('H', 'W'),
        help='label-map size in pixels (default: 224 416)')
    add('--num-sweeps', type=int, default=d.num_sweeps, help='previous LiDAR sweeps lifted '
        'with each keyframe (default: %(default)s)')
    add('--min-depth', type=float, default=lift.min_depth, help='metres (default: %(default)s)')
    add('--occlusion-check', action='store_true', help='drop pairs behind other points '
        '(coarse depth buffer per camera; off by default as in the reference)')
    add('--depth-check', choices=DEPTH_CHECKS, default=lift.depth_check, help='RGB-D data: '
        "keep a pair only if the depth image agrees: 'absolute' (CLIP2Scene, "
        "--depth-tolerance metres) or 'relative' (OpenScene, fraction) (default: %(default)s)")
    add('--depth-tolerance', type=float, help='tolerance of --depth-check (default: 0.05 m '
        'absolute, 0.25 relative)')
    add('--fused-confidence', choices=FUSED_CONFIDENCE_MODES, default=lift.fused_confidence,
        help='confidence of multi-camera votes (default: %(default)s)')
    add('--save-2d', action='store_true', help='also write per-image labels and SAM embeddings')
    add('--save-clip-features', action='store_true', help='with --save-2d: also the CLIP '
        "teacher's dense patch features (CLIP2Scene's ScanNet pair distillation)")
    add('--shard', type=int, help='this shard (default: RANK under torchrun, else 0)')
    add('--num-shards', type=int, help='number of shards (default: WORLD_SIZE or 1)')
    add('--limit', type=int, help='process at most this many keyframes in this run')
    add('--batch-size', type=int, default=12, help='images per teacher call (default: 12)')
    add('--device', default='auto', help="'auto' (CUDA if available), 'cpu', 'cuda:N'")
    add('--no-fp16', action='store_true', help='no float16 autocast on CUDA')
    add('--no-progress', action='store_true', help='no progress bar')
    return parser


def _lifting(args: argparse.Namespace) -> LiftingConfig:
    """The pairing settings of the command line."""
    tolerance = {}
    if args.depth_tolerance is not None:
        key = ('depth_rel_tolerance' if args.depth_check == 'relative'
               else 'depth_abs_tolerance_m')
        tolerance[key] = args.depth_tolerance
    return LiftingConfig(min_depth=args.min_depth, occlusion_check=args.occlusion_check,
                         fused_confidence=args.fused_confidence, depth_check=args.depth_check,
                         **tolerance)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; 0 on success, exits with status 2 on bad input."""
    from cns_ros.data.nuscenes import NuScenesNotFoundError
    from cns_ros.teachers.simulated import NotSyntheticError

    parser = build_parser()
    args = parser.parse_args(argv)
    shard, num_shards = _shard(args, parser)
    if args.batch_size < 1 or (args.limit is not None and args.limit < 0) or min(
            args.image_size) < 1:
        parser.error('--batch-size and --image-size must be >= 1 and --limit >= 0')
    if args.save_clip_features and not args.save_2d:
        parser.error('--save-clip-features writes into the per-image files: add --save-2d')
    try:
        config = PseudoLabelConfig(
            teacher=args.teacher, sam=args.sam, image_size=tuple(args.image_size),
            num_sweeps=args.num_sweeps, clip_model=args.clip_model,
            lifting=_lifting(args),
            clip_checkpoint=args.clip_checkpoint, clip_templates=args.clip_templates,
            sam_model_type=args.sam_model_type, sam_checkpoint=args.sam_checkpoint,
            sam_points_per_side=args.sam_points_per_side, sam_resize=args.sam_resize,
            allow_random_weights=args.allow_random_weights, seed=args.seed,
            simulated_noise=args.simulated_noise, save_2d=args.save_2d, paper=args.paper,
            save_clip_features=args.save_clip_features,
            fp16=not args.no_fp16)
        options = RunOptions(
            dataroot=args.dataroot, out=args.out, dataset=args.dataset, version=args.version,
            split=args.split, layout=args.layout, every=args.every,
            scenes=tuple(args.scenes) if args.scenes else None, shard=shard,
            num_shards=num_shards, limit=args.limit, batch_size=args.batch_size,
            device=args.device, progress=not args.no_progress)
        summary = run(config, options)
    except (NuScenesNotFoundError, NotSyntheticError, FileNotFoundError, ValueError) as exc:
        parser.error(str(exc))
    print(f'shard {shard}/{num_shards}: {summary.processed} keyframes labelled, '
          f'{summary.skipped} already done, {summary.remaining} left (--limit); '
          f'{summary.total} in the split; {summary.seconds:.1f} s; cache {args.out}')
    if summary.quality is not None:
        print(cache.format_quality(summary.quality))
    return 0


if __name__ == '__main__':
    sys.exit(main())
