"""Export a trained 3D-OVS field as a labeled map (:mod:`cns_ros.ovs3d.labeled_map`).

The field's surface is depth-rendered from every training camera at the evaluation resolution
(:func:`cns_ros.ovs3d.inference.surface_points`: pixels with opacity >= 0.5, the median-weight
surface point, deduplicated in voxels) and taken to the capture's own world frame: for an LLFF
scene the inverse of the recentring and near scaling; a posed capture is trained in its world
frame (e.g. a robot's ``map``) already. It is written with its colours, composited appearance
codes and opacities, the fused CLIP-feature head and the class texts' embeddings. Labels for
the PLY and the bag are the argmax over the scene's classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from cns_ros.ovs3d.capture import camera_model
from cns_ros.ovs3d.inference import surface_points
from cns_ros.ovs3d.labeled_map import (
    LabeledMap,
    labeled_cloud,
    save_labeled_map,
    write_cloud_bag,
    write_ply,
)
from cns_ros.ovs3d.llff import POSES_BOUNDS, process_poses, processed_to_world, read_poses_bounds
from cns_ros.ovs3d.model import Ovs3dModel


def scene_vocabulary(names: tuple[str, ...] | list[str]) -> Any:
    """A vocabulary of the scene's class texts (palette colours)."""
    from cns_ros.vocabulary import Vocabulary, VocabularyClass, palette

    colors = palette(len(names))
    return Vocabulary('ovs3d_scene', tuple(VocabularyClass(n, (), tuple(int(c) for c in col))
                                           for n, col in zip(names, colors, strict=True)))


def capture_frame_points(scene: Any, xyz: np.ndarray) -> np.ndarray:
    """Points of the scene's training frame [N, 3] in the capture's world frame, float32.

    A posed capture (bounded box) is trained in its world frame already; an LLFF scene in the
    recentred, near-scaled frame, which is undone here.
    """
    if getattr(scene, 'projection', None) is not None:
        return np.asarray(xyz, dtype=np.float32)
    raw = read_poses_bounds(Path(scene.root) / POSES_BOUNDS)
    processed = process_poses(raw.c2w_llff, raw.bounds)
    return processed_to_world(xyz, processed.average, processed.scale).astype(np.float32)


def export_labeled_map(model: Ovs3dModel, scene: Any, text: torch.Tensor, out: Path,
                       config: Any, *, voxel: float, ply: bool = False, bag: bool = False,
                       clip_model: str = '', frame_id: str = 'map') -> LabeledMap:
    """Write the labeled map folder ``out`` (+ ``out.ply``, + the rosbag2 ``out_bag``).

    Args:
        model: The stage-B model.
        scene: The :class:`~cns_ros.ovs3d.dataset.Ovs3dScene` it was trained on.
        text: float [C, D] unit embeddings of ``scene.class_names``.
        out: The map folder to create (refused when it exists and is not empty).
        config: The run's :class:`~cns_ros.ovs3d.training.Ovs3dConfig`.
        voxel: Deduplication voxel, in the training frame's units (LLFF-normalised for a
            3D-OVS scene, metres for a posed capture).
        ply, bag: Also write the PLY file / the rosbag2.
        clip_model: The CLIP text encoder's name ('' for stand-ins).
        frame_id: The map's frame (a posed capture's own ``frame_id`` wins).
    """
    height, width = scene.size(config.eval_downsample)
    focal, center = camera_model(scene, config.eval_downsample)
    points = surface_points(model, list(scene.poses), height, width, focal, config.render,
                            voxel, center=center)
    xyz = capture_frame_points(scene, points.xyz)
    frame_id = getattr(scene, 'frame_id', frame_id)
    weight, bias = model.head.fused()
    labeled = LabeledMap(xyz=xyz, rgb=points.rgb, codes=points.codes,
                         weight=points.weight.clip(0.0, 1.0), head_weight=weight.cpu().numpy(),
                         head_bias=bias.cpu().numpy(), frame_id=frame_id, clip_model=clip_model,
                         source=f'3D-OVS field of {scene.root}', templates=config.text_templates)
    vocabulary = scene_vocabulary(list(scene.class_names))
    embeddings = text.cpu().numpy()
    save_labeled_map(out, labeled, vocabulary, embeddings)
    if ply or bag:
        labels, confidence = labeled.label(embeddings)
        if ply:
            write_ply(out.with_suffix('.ply'), xyz, points.rgb, labels, confidence,
                      class_names=list(scene.class_names))
        if bag:
            cloud = labeled_cloud(labeled, labels, confidence, vocabulary)
            write_cloud_bag(out.parent / f'{out.name}_bag', cloud, frame_id, 0, vocabulary)
    return labeled
