"""Training data: keyframes (nuScenes samples, ScanNet scans) joined with the pseudo-labels.

One item = one cached keyframe (cns_ros/teachers/cache.py format): its LiDAR points (keyframe
sweep first, then the previous sweeps, as the cache indexes them), the cached per-point labels,
the point <-> pixel pairs with their pixel labels and, with ``DataConfig.images``, the camera
images resized to the cache's ``label_size`` with the per-image cache files (refined 2D labels,
optional SAM embedding, optional SAM ``segments``).

Per-image cache keys read here (``images/<camera token>.npz``):

* ``labels``     uint8 (H, W) SAM-refined teacher labels at ``label_size``, 255 = ignore;
* ``embedding``  float16 (256, 64, 64) SAM image embedding (optional: CNS latent loss);
* ``segments``   uint16 (H, W) at ``label_size`` (optional: refining NETWORK predictions in CNS
  co-training): the SAM masks painted in the refinement order, 0 = no mask
  (``cns_ros.teachers.cache.paint_segments``).

Randomness is a pure function of (seed, epoch, sample index): the sampler order (a
``DistributedSampler`` with ``set_epoch``), the sweep subset and the augmentation. So a resumed
run sees exactly the batches the uninterrupted run would have seen, on any number of workers.

3D augmentation (reference A3.4, B3.3: cloud only, applied AFTER pairing, so pairs are plain
indices and stay valid): rotation about z, x / y flips, isotropic scaling. With
``separate_sweeps`` each sweep gets its own draw and is its own batch element (CLIP2Scene code).
CLIP2Scene's super-voxels come from the merged, UN-augmented cloud (reference A3.3).

2D augmentation (``DataConfig.image_augment``, off by default; reference A3.4): per camera
image a random resized crop and a horizontal flip (:mod:`cns_ros.training.image_augment`) of
the image, its label map and segments, and its point <-> pixel pairs (pairs outside the crop
are dropped, the others move exactly with the pixel grid). Drawn from its own random stream,
so switching it on leaves the 3D augmentation unchanged. The SAM embeddings of augmented
images are not loaded (they describe the un-augmented image).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cns_ros.models.sparse import voxelize_cloud
from cns_ros.teachers import cache
from cns_ros.training.config import AugmentConfig, DataConfig
from cns_ros.training.image_augment import (
    CropFlip,
    crop_image,
    crop_map,
    crop_pairs,
    draw_crop_flip,
)

#: Salts of the per-sample random streams (sweep choice, 3D augmentation, image augmentation).
_SWEEP_SALT, _AUGMENT_SALT, _IMAGE_SALT = 1, 2, 3


class CacheNotFoundError(FileNotFoundError):
    """The pseudo-label cache (or a file it needs) is missing; the message says how to make it."""


def sample_rng(seed: int, epoch: int, index: int, salt: int) -> np.random.Generator:
    """The random stream of one sample in one epoch (independent of workers and resumes)."""
    return np.random.default_rng([seed, epoch, index, salt])


def augment_points(xyz: np.ndarray, config: AugmentConfig, rng: np.random.Generator
                   ) -> np.ndarray:
    """Rotate about z, flip x / y, scale (in this order); (N, 3) float32 metres -> same."""
    angle = rng.uniform(0.0, 2.0 * math.pi) if config.rotate_z else 0.0
    flip_x = rng.random() < config.flip_x
    flip_y = rng.random() < config.flip_y
    scale = rng.uniform(*config.scale)
    c, s = math.cos(angle), math.sin(angle)
    matrix = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    matrix = np.diag([-1.0 if flip_x else 1.0, -1.0 if flip_y else 1.0, 1.0]) @ matrix
    return (xyz.astype(np.float64) @ (scale * matrix).T).astype(np.float32)


@dataclass
class TrainBatch:
    """A collated batch (torch tensors; ``B`` keyframes, ``N`` points, ``P`` pairs, ``I`` images).

    Attributes:
        points: float32 (N, 5) x, y, z (augmented, metres, LiDAR frame), intensity, ring.
        point_element: int64 (N,) network batch element of each point (the keyframe, or one
            element per (keyframe, sweep) with ``separate_sweeps``).
        num_elements: Number of network batch elements.
        point_sample: int64 (N,) keyframe of each point, 0..B-1.
        point_label: int64 (N,) cached fused teacher label per point (255 = none).
        point_grid: int64 (N,) super-voxel id of each point, unique across the batch (merged
            un-augmented cloud), or None when not requested.
        pair_point: int64 (P,) point index of each point <-> pixel pair.
        pair_image: int64 (P,) image index (into ``images``) of each pair.
        pair_row: int64 (P,) pixel row at ``label_size``.
        pair_col: int64 (P,) pixel column at ``label_size``.
        pair_label: int64 (P,) (refined) teacher label at the pair's pixel (255 = ignore).
        label_size: (H, W) of label maps and images.
        images: float32 (I, 3, H, W) RGB in [0, 1], or None without ``DataConfig.images``.
        image_labels: int64 (I, H, W) refined teacher labels, or None.
        segments: int64 (I, H, W) SAM segment ids (0 = none), or None when any is missing.
        sam_embedding: float32 (I, 256, 64, 64) SAM embeddings, or None when any is missing
            (always None with ``DataConfig.image_augment``: they are of un-augmented images).
        sam_valid: int64 (I, 2) (rows, cols) of the embedding grid holding image content.
        clip_features: float32 (I, D, h, w) the CLIP teacher's dense patch features, or None
            when any image lacks them (``pseudo_label --save-clip-features``).
        sample_tokens: The B keyframes' sample tokens.
    """

    points: torch.Tensor
    point_element: torch.Tensor
    num_elements: int
    point_sample: torch.Tensor
    point_label: torch.Tensor
    point_grid: torch.Tensor | None
    pair_point: torch.Tensor
    pair_image: torch.Tensor
    pair_row: torch.Tensor
    pair_col: torch.Tensor
    pair_label: torch.Tensor
    label_size: tuple[int, int]
    images: torch.Tensor | None = None
    image_labels: torch.Tensor | None = None
    segments: torch.Tensor | None = None
    sam_embedding: torch.Tensor | None = None
    sam_valid: torch.Tensor | None = None
    sample_tokens: tuple[str, ...] = ()
    clip_features: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> TrainBatch:
        """A copy with every tensor on ``device`` (non-blocking from pinned memory)."""
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                value = value.to(device, non_blocking=True)
            moved[f.name] = value
        return TrainBatch(**moved)

    @property
    def num_images(self) -> int:
        """Number of camera images in the batch (0 without images)."""
        return 0 if self.images is None else int(self.images.shape[0])


class CachedKeyframes(torch.utils.data.Dataset):
    """Cached keyframes as training samples; ``dataset[(epoch, index)]`` -> a sample dict.

    Args:
        config: Data settings (dataroot, version, cache, sweeps, images, augmentation).
        seed: Seed of sweep choice and augmentation.
        grid_size: Super-voxel edge in metres (CLIP2Scene), or None for no super-voxels.
        augment: Apply the 3D augmentation (False: evaluation).

    Raises:
        CacheNotFoundError: Missing cache root, manifest, keyframe files, or per-image files
            when images are requested (the message names them).
        NuScenesNotFoundError: Missing dataroot / version / tables (from the reader).
        ValueError: The cache does not match the dataset (version, point counts, sweeps).
    """

    def __init__(self, config: DataConfig, seed: int = 0, grid_size: float | None = None,
                 augment: bool = True) -> None:
        from cns_ros.data.keyframes import open_keyframes

        if config.dataroot is None:
            raise ValueError('no dataroot: pass --dataroot (or data.dataroot)')
        if config.cache is None:
            raise CacheNotFoundError('no pseudo-label cache: pass --cache (or data.cache), a '
                                     'folder made by offline_training/pseudo_label.py')
        self.config, self.seed, self.grid_size, self.augment = config, seed, grid_size, augment
        self.root = Path(config.cache)
        manifest = cache.read_manifest(self.root)
        if manifest is None:
            raise CacheNotFoundError(
                f'pseudo-label cache not found: {self.root / cache.MANIFEST} does not exist; '
                f'make it with python -m offline_training.pseudo_label --out {self.root} ...')
        self.manifest = manifest
        dataset = manifest['dataset']
        self.dataset_name = str(dataset.get('name', 'nuscenes'))
        if self.dataset_name == 'nuscenes' and dataset['version'] != config.version:
            raise ValueError(f'the cache {self.root} was made from nuScenes version '
                             f'{dataset["version"]!r}, not {config.version!r} (--version)')
        self.cache_sweeps = int(manifest['config']['num_sweeps'])
        if config.num_sweeps > self.cache_sweeps:
            raise ValueError(f'data.num_sweeps = {config.num_sweeps} but the cache {self.root} '
                             f'holds {self.cache_sweeps} previous sweeps per keyframe')
        self.keyframes = open_keyframes(
            self.dataset_name, config.dataroot, version=config.version, split=dataset['split'],
            num_sweeps=self.cache_sweeps, scenes=dataset['scenes'],
            layout=dataset.get('layout', '25k'), every=int(dataset.get('every', 1)))
        tokens = cache.sample_tokens(self.keyframes)
        self.indices = [k for k, (sample, _) in enumerate(tokens)
                        if cache.keyframe_path(self.root, sample).is_file()]
        self.tokens = [tokens[k][0] for k in self.indices]
        if not self.indices:
            raise CacheNotFoundError(f'the cache {self.root} holds no finished keyframe of '
                                     f'{dataset["split"]!r}; run pseudo_label to completion')
        if len(self.indices) < len(tokens):
            warnings.warn(f'{len(tokens) - len(self.indices)} of {len(tokens)} keyframes are '
                          f'not in the cache {self.root} yet; training on the rest', stacklevel=2)
        self.num_classes = len(manifest.get('classes', ())) or 16

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        keyframe = self.keyframes[self.indices[index]]
        item = cache.read_keyframe(cache.keyframe_path(self.root, self.tokens[index]))
        points = np.array(keyframe.points, dtype=np.float32)
        if len(points) != len(item.labels):
            raise ValueError(f'keyframe {self.tokens[index]}: {len(points)} points in the '
                             f'dataset but {len(item.labels)} in the cache; was the cache made '
                             f'from another dataroot?')
        keep = self._choose_sweeps(item.sweep_index, epoch, index)
        sample = self._points_and_pairs(points, item, keep)
        if self.grid_size is not None:
            xyz = torch.from_numpy(sample['points'][:, :3])
            sample['grid'] = voxelize_cloud(xyz, self.grid_size).inverse.numpy()
        self._augment(sample, epoch, index)
        crops = self._augment_pairs(sample, item, epoch, index)
        if self.config.images:
            sample.update(self._images(keyframe, item, crops))
        sample['image_augmented'] = crops is not None
        sample['label_size'] = tuple(int(v) for v in item.label_size)
        sample['token'] = self.tokens[index]
        sample['separate_sweeps'] = self.config.separate_sweeps
        return sample

    def _choose_sweeps(self, sweep_index: np.ndarray, epoch: int, index: int) -> np.ndarray:
        """bool (N,) points of the keyframe sweep and the chosen previous sweeps."""
        previous = [s for s in np.unique(sweep_index).tolist() if s > 0]
        wanted = self.config.num_sweeps
        if self.config.sweep_choice == 'random' and len(previous) > wanted:
            rng = sample_rng(self.seed, epoch, index, _SWEEP_SALT)
            chosen = sorted(rng.choice(previous, size=wanted, replace=False).tolist())
        else:
            chosen = previous[:wanted]
        return np.isin(sweep_index, [0, *chosen])

    @staticmethod
    def _points_and_pairs(points: np.ndarray, item: cache.KeyframeLabels, keep: np.ndarray
                          ) -> dict[str, Any]:
        new_index = np.cumsum(keep) - 1
        pair_keep = keep[item.pair_point]
        return {
            'points': points[keep], 'sweep': item.sweep_index[keep].astype(np.int64),
            'label': item.labels[keep].astype(np.int64),
            'pair_point': new_index[item.pair_point[pair_keep]].astype(np.int64),
            'pair_camera': item.pair_camera[pair_keep].astype(np.int64),
            'pair_row': item.pair_row[pair_keep].astype(np.int64),
            'pair_col': item.pair_col[pair_keep].astype(np.int64),
            'pair_label': item.pair_label[pair_keep].astype(np.int64),
        }

    def _augment(self, sample: dict[str, Any], epoch: int, index: int) -> None:
        if not self.augment:
            return
        rng = sample_rng(self.seed, epoch, index, _AUGMENT_SALT)
        xyz, sweep = sample['points'][:, :3], sample['sweep']
        groups = np.unique(sweep) if self.config.separate_sweeps else [None]
        for group in groups:
            rows = slice(None) if group is None else sweep == group
            xyz[rows] = augment_points(xyz[rows], self.config.augment, rng)
        sample['points'][:, :3] = xyz

    def _augment_pairs(self, sample: dict[str, Any], item: cache.KeyframeLabels, epoch: int,
                       index: int) -> list[CropFlip] | None:
        """Draw each camera's crop and flip and move (or drop) its pairs; None when off."""
        if not (self.augment and self.config.image_augment.enabled):
            return None
        rng = sample_rng(self.seed, epoch, index, _IMAGE_SALT)
        size = (int(item.label_size[0]), int(item.label_size[1]))
        camera, rows, cols = sample['pair_camera'], sample['pair_row'], sample['pair_col']
        keep = np.zeros(len(camera), dtype=bool)
        crops = []
        for k in range(len(item.cameras)):
            mine = np.flatnonzero(camera == k)
            crop = draw_crop_flip(size, rows[mine], cols[mine], self.config.image_augment, rng)
            inside, new_rows, new_cols = crop_pairs(rows[mine], cols[mine], crop)
            rows[mine[inside]], cols[mine[inside]] = new_rows, new_cols
            keep[mine[inside]] = True
            crops.append(crop)
        for key in ('pair_point', 'pair_camera', 'pair_row', 'pair_col', 'pair_label'):
            sample[key] = sample[key][keep]
        return crops

    def _images(self, keyframe: Any, item: cache.KeyframeLabels,
                crops: list[CropFlip] | None = None) -> dict[str, Any]:
        """Images resized to ``label_size`` and the per-image cache arrays, camera order
        (cropped and flipped as ``crops`` says, when given)."""
        import cv2

        from cns_ros.teachers.sam import valid_embedding_size

        height, width = (int(v) for v in item.label_size)
        out: dict[str, list[Any]] = {'images': [], 'image_labels': [], 'segments': [],
                                     'sam_embedding': [], 'sam_valid': [], 'clip_features': []}
        for k, (channel, token, size) in enumerate(zip(
                item.cameras.tolist(), item.camera_tokens.tolist(), item.image_sizes.tolist(),
                strict=True)):
            path = cache.image_path(self.root, token)
            if not path.is_file():
                raise CacheNotFoundError(
                    f'per-image cache file {path} (camera {channel} of keyframe '
                    f'{item.sample_token}) not found: make the cache with pseudo_label '
                    f'--save-2d, or train 3D-only (data.images: false, cns.network_2d: false)')
            arrays = cache.read_image(path)
            rgb = keyframe.cameras[channel].load_image()
            if crops is None:
                rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
            else:
                rgb, arrays = _crop_image_arrays(rgb, arrays, crops[k])
            out['images'].append(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
            out['image_labels'].append(arrays['labels'].astype(np.int64))
            out['segments'].append(arrays.get('segments'))
            out['sam_embedding'].append(arrays.get('embedding'))
            out['clip_features'].append(arrays.get('clip_features'))
            out['sam_valid'].append(valid_embedding_size(int(size[1]), int(size[0])))
        return out


def _crop_image_arrays(rgb: np.ndarray, arrays: dict[str, np.ndarray], crop: CropFlip
                       ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(H, W, 3) image and the per-image label maps through ``crop``; the SAM embedding (of the
    un-augmented image) is left out."""
    maps = {key: crop_map(arrays[key], crop) for key in ('labels', 'segments') if key in arrays}
    return crop_image(rgb, crop), maps


def _stack_optional(values: list[np.ndarray | None], dtype: torch.dtype) -> torch.Tensor | None:
    if not values or any(v is None for v in values):
        return None
    return torch.from_numpy(np.stack(values)).to(dtype)


_MISSING_WARNED: set[str] = set()


def _warn_missing(name: str, values: list[Any]) -> None:
    if values and any(v is None for v in values) and name not in _MISSING_WARNED:
        _MISSING_WARNED.add(name)
        warnings.warn(f'the per-image cache has no {name!r} for some images; features that '
                      f'need it are off for such batches (warned once)', stacklevel=3)


def collate(samples: Sequence[dict[str, Any]]) -> TrainBatch:
    """Concatenate samples into a :class:`TrainBatch` (indices offset per sample)."""
    sizes = {s['label_size'] for s in samples}
    if len(sizes) != 1:
        raise ValueError(f'samples with different label sizes in one batch: {sorted(sizes)}')
    offset = image_offset = grid_offset = element = 0
    cat: dict[str, list[np.ndarray]] = {k: [] for k in (
        'points', 'element', 'sample', 'label', 'grid', 'pair_point', 'pair_image', 'pair_row',
        'pair_col', 'pair_label')}
    with_images = 'images' in samples[0]
    images: dict[str, list[Any]] = {k: [] for k in (
        'images', 'image_labels', 'segments', 'sam_embedding', 'sam_valid', 'clip_features')}
    for b, s in enumerate(samples):
        n = len(s['points'])
        if s['separate_sweeps']:  # one network batch element per sweep
            _, local = np.unique(s['sweep'], return_inverse=True)
            local = local.reshape(-1).astype(np.int64)
        else:
            local = np.zeros(n, np.int64)
        cat['element'].append(element + local)
        element += int(local.max(initial=0)) + 1
        cat['points'].append(s['points'])
        cat['sample'].append(np.full(n, b, np.int64))
        cat['label'].append(s['label'])
        if 'grid' in s:
            cat['grid'].append(s['grid'] + grid_offset)
            grid_offset += int(s['grid'].max(initial=-1)) + 1
        cat['pair_point'].append(s['pair_point'] + offset)
        cat['pair_image'].append(s['pair_camera'] + image_offset)
        for key in ('pair_row', 'pair_col', 'pair_label'):
            cat[key].append(s[key])
        offset += n
        if with_images:
            image_offset += len(s['images'])
            for key in images:
                images[key].extend(s[key])
    out = {k: torch.from_numpy(np.concatenate(v)) for k, v in cat.items() if v}
    _warn_missing('segments', images['segments'])
    if not any(s.get('image_augmented') for s in samples):  # augmented: dropped on purpose
        _warn_missing('sam_embedding', images['sam_embedding'])
    return TrainBatch(
        points=out['points'].float(), point_element=out['element'], num_elements=element,
        point_sample=out['sample'], point_label=out['label'], point_grid=out.get('grid'),
        pair_point=out['pair_point'], pair_image=out['pair_image'], pair_row=out['pair_row'],
        pair_col=out['pair_col'], pair_label=out['pair_label'], label_size=sizes.pop(),
        images=(torch.from_numpy(np.stack(images['images'])).float().div_(255.0)
                if with_images else None),
        image_labels=_stack_optional(images['image_labels'], torch.int64),
        segments=_stack_optional(images['segments'], torch.int64),
        sam_embedding=_stack_optional(images['sam_embedding'], torch.float32),
        sam_valid=(torch.tensor(images['sam_valid'], dtype=torch.int64).reshape(-1, 2)
                   if with_images else None),
        sample_tokens=tuple(s['token'] for s in samples),
        clip_features=_stack_optional(images['clip_features'], torch.float32))


class EpochBatchSampler(torch.utils.data.Sampler):
    """Batches of ``(epoch, index)`` keys: order = ``DistributedSampler(seed).set_epoch(epoch)``.

    The order of every epoch is a function of (seed, epoch) only, so ``skip`` batches (those a
    resumed run already consumed) are dropped without changing what follows. Incomplete last
    batches are dropped, so every rank runs the same number of steps.
    """

    def __init__(self, dataset_size: int, batch_size: int, seed: int, epoch: int,
                 rank: int = 0, world_size: int = 1, skip: int = 0) -> None:
        self.sampler = torch.utils.data.DistributedSampler(
            range(dataset_size), num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
            drop_last=True)
        self.sampler.set_epoch(epoch)
        self.batch_size, self.epoch, self.skip = batch_size, epoch, skip

    def __len__(self) -> int:
        return max(0, len(self.sampler) // self.batch_size - self.skip)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = list(self.sampler)
        for b in range(self.skip, len(order) // self.batch_size):
            chunk = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield [(self.epoch, int(i)) for i in chunk]


def steps_per_epoch(dataset_size: int, batch_size: int, world_size: int = 1) -> int:
    """Optimizer steps per epoch (drop-last on every rank)."""
    return (dataset_size // world_size) // batch_size


def make_loader(dataset: CachedKeyframes, batch_size: int, seed: int, epoch: int,
                rank: int = 0, world_size: int = 1, skip: int = 0, num_workers: int = 0,
                pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """The DataLoader of one epoch (its own generator, so the global torch RNG is untouched)."""
    sampler = EpochBatchSampler(len(dataset), batch_size, seed, epoch, rank, world_size, skip)
    generator = torch.Generator().manual_seed(seed * 100003 + epoch)
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=collate,
        pin_memory=pin_memory, generator=generator,
        worker_init_fn=_worker_init if num_workers else None)


def _worker_init(worker_id: int) -> None:
    # Workers must not race on torch threads with the training process (2-core machines).
    torch.set_num_threads(1)
    os.environ.setdefault('OMP_NUM_THREADS', '1')


class PointEvaluator:
    """mIoU of a 3D network's keyframe predictions against the ground truth (in training).

    Keyframe points only (no previous sweeps), no augmentation; predictions are argmax of the
    text logits; ground truth as training ids (``Keyframe.train_labels()``: nuScenes-lidarseg-16
    or ScanNet-20 vertices). Scores via :mod:`cns_ros.metrics`.

    Args:
        dataroot, version, split: The evaluation keyframes (must have ground truth).
        input_features, voxel_size: The network's input.
        limit: Evaluate at most this many keyframes (evenly spread), None = all.
        dataset: 'nuscenes' or 'scannet' (:func:`cns_ros.data.keyframes.open_keyframes`).
    """

    def __init__(self, dataroot: str, version: str, split: str,
                 input_features: Sequence[str], voxel_size: float,
                 limit: int | None = None, dataset: str = 'nuscenes') -> None:
        from cns_ros.data.keyframes import open_keyframes

        self.keyframes = open_keyframes(dataset, dataroot, version=version, split=split)
        count = len(self.keyframes)
        step = 1 if limit is None or count <= limit else count / limit
        self.indices = sorted({int(k * step) for k in range(min(count, limit or count))})
        self.input_features, self.voxel_size = tuple(input_features), voxel_size

    @torch.no_grad()
    def __call__(self, method: torch.nn.Module) -> dict[str, float]:
        """{'miou', 'accuracy'} of ``method.net3d`` over the evaluation keyframes."""
        from cns_ros.metrics import confusion_matrix, summary
        from cns_ros.models.minkunet import assemble_point_features, point_columns
        from cns_ros.models.sparse import voxelize_batch

        net = method.net3d
        device = next(net.parameters()).device
        num_classes = net.classifier.num_classes
        confusion = np.zeros((num_classes, num_classes + 1), dtype=np.int64)
        for k in self.indices:
            keyframe = self.keyframes[k]
            gt = keyframe.train_labels()
            if gt is None:
                continue
            points = torch.from_numpy(np.array(keyframe.points, dtype=np.float32)).to(device)
            features = assemble_point_features(point_columns(points), self.input_features)
            output = net(voxelize_batch([points[:, :3]], [features], self.voxel_size))
            pred = net.classifier(output.features).argmax(dim=1).cpu().numpy()
            confusion += confusion_matrix(gt, pred[:len(gt)], num_classes)
        scores = summary(confusion, [str(c) for c in range(num_classes)])
        return {'miou': scores['miou'], 'accuracy': scores['accuracy']}
