"""The two keyframe sources behind one call: nuScenes samples and ScanNet scans.

Pseudo-labelling, training and evaluation iterate over "keyframes": a point cloud with the
camera images that see it. nuScenes gives one per annotated sample (LiDAR sweep + 6 cameras,
:class:`cns_ros.data.nuscenes.NuScenesKeyframes`); ScanNet gives one per scan (mesh vertices +
the scan's RGB-D frames, :class:`cns_ros.data.scannet_keyframes.ScanNetKeyframes`). Both yield
objects with the same fields (``sample_token``, ``lidar_token``, ``scene_name``, ``points``,
``sweep_index``, ``cameras``, ``num_keyframe_points``, ``train_labels()``), and both datasets
have ``scene_names`` and ``sample_tokens()``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

from cns_ros.vocabulary import Vocabulary, nuscenes16, scannet20

Dataset = Literal['nuscenes', 'scannet']
DATASETS: tuple[str, ...] = ('nuscenes', 'scannet')


def open_keyframes(dataset: Dataset, dataroot: str | os.PathLike[str], *,
                   version: str = 'v1.0-trainval', split: str | None = None,
                   num_sweeps: int = 0, scenes: Sequence[str] | None = None,
                   layout: str = '25k', every: int = 1) -> Any:
    """The keyframes of a split.

    Args:
        dataset: 'nuscenes' (also the synthetic nuScenes-format world) or 'scannet' (also the
            synthetic indoor world).
        dataroot: The dataset root.
        version: nuScenes table folder (nuScenes only).
        split: nuScenes devkit split name, or ScanNet 'train' / 'val' / 'test'; None: all.
        num_sweeps: Previous LiDAR sweeps per keyframe (nuScenes only; ScanNet: 0).
        scenes: Scene names to keep (within the split).
        layout: ScanNet frames: '25k' (``scannet_frames_25k``) or 'export' (SensReader export).
        every: ScanNet: keep every k-th frame.
    """
    if dataset == 'nuscenes':
        from cns_ros.data.nuscenes import NuScenesKeyframes

        return NuScenesKeyframes(dataroot, version, split, num_sweeps, scenes=scenes)
    if dataset == 'scannet':
        if num_sweeps:
            raise ValueError(f'num_sweeps = {num_sweeps}: ScanNet scans have no LiDAR sweeps')
        from cns_ros.data.scannet_keyframes import ScanNetKeyframes

        return ScanNetKeyframes(dataroot, split, scenes, layout, every)
    raise ValueError(f'unknown dataset {dataset!r}; expected one of {DATASETS}')


def dataset_vocabulary(dataset: Dataset) -> Vocabulary:
    """The benchmark classes of a dataset (training ids = vocabulary indices)."""
    if dataset == 'nuscenes':
        return nuscenes16()
    if dataset == 'scannet':
        return scannet20()
    raise ValueError(f'unknown dataset {dataset!r}; expected one of {DATASETS}')
