"""Using a trained 3D-OVS model: render any camera, segment for any text list, evaluate, export.

* :func:`render_camera`: RGB, depth, opacity and the rendered CLIP feature of one camera.
* :func:`relevancy` and :func:`segment`: per-class cosine maps between the rendered feature and
  each text embedding, and their argmax (3D-OVS's closed-set assignment over the given list).
* :func:`evaluate_scene`: the annotated views rendered at the evaluation resolution and scored
  with both protocols of :mod:`cns_ros.ovs3d.metrics`.
* :func:`surface_points`: the field's surface as points, depth-rendered from cameras and
  deduplicated in voxels, with colour, the composited appearance code and its opacity (what the
  labeled map stores; :mod:`cns_ros.ovs3d.labeled_map`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cns_ros.ovs3d.capture import camera_model
from cns_ros.ovs3d.model import Ovs3dModel
from cns_ros.ovs3d.render import RenderConfig, render_chunked, samples_per_ray


@torch.no_grad()
def render_camera(model: Ovs3dModel, c2w: np.ndarray | Tensor, height: int, width: int,
                  focal: float | tuple[float, float], config: RenderConfig, *,
                  features: bool = True, center: tuple[float, float] | None = None
                  ) -> dict[str, Tensor]:
    """Render one pinhole camera.

    Args:
        model: The trained model (its heads are needed for ``features``).
        c2w: float [3, 4] camera-to-world, NeRF convention, the scene's normalised frame.
        height, width, focal: The image (px); focal one value or (fx, fy).
        center: Principal point (px, pixel centres at +0.5); default the image centre.
        config: Rendering settings (samples from the field's current grid, capped).
        features: Also render the CLIP feature.

    Returns:
        ``rgb`` [H, W, 3] in [0, 1], ``depth`` [H, W] (expected ray parameter, the opacity
        divided out), ``opacity`` [H, W], ``points`` [H, W, 3] (the surface point at the
        median-weight ray parameter, in the scene's normalised frame), and with ``features``:
        ``appearance`` [H, W, A] (the composited code) and ``feature`` [H, W, D].
    """
    device = model.field.aabb.device
    pose = torch.as_tensor(np.asarray(c2w, dtype=np.float32)).to('cpu')
    origins, directions = model.projection.image_rays(pose, height, width, focal, center)
    outputs = ('rgb', 'depth', 'median', 'opacity') + (('appearance',) if features else ())
    n = samples_per_ray(model.field.resolution, config)
    out = render_chunked(model.field, origins.to(device), directions.to(device), config, n,
                         outputs=outputs)
    opacity = out['opacity']
    t = out['depth'] / opacity.clamp(min=1e-6)
    points = model.projection.to_world(origins.to(device)
                                       + out['median'][:, None] * directions.to(device))
    result = {'rgb': out['rgb'].clamp(0, 1), 'depth': t, 'opacity': opacity, 'points': points}
    if features:
        result['appearance'] = out['appearance']
        result['feature'] = model.rendered_features(out)
    return {k: v.reshape(height, width, -1).squeeze(-1) if v.dim() == 1 else
            v.reshape(height, width, -1) for k, v in result.items()}


def relevancy(feature: Tensor, text: Tensor) -> Tensor:
    """Per-class relevancy of rendered features: the cosine with each text, float [..., C].

    Args:
        feature: float [..., D] rendered CLIP features.
        text: float [C, D] unit text embeddings.
    """
    return torch.nn.functional.normalize(feature, dim=-1) @ text.to(feature.device).T


def segment(feature: Tensor, text: Tensor) -> tuple[Tensor, Tensor]:
    """Closed-set labels of rendered features: the argmax of :func:`relevancy`.

    Returns:
        (labels int64 [...], cosine of the winner float [...]).
    """
    best, labels = relevancy(feature, text).max(dim=-1)
    return labels, best


@dataclass(frozen=True)
class SceneEvaluation:
    """Scores of the annotated views and their predictions.

    Attributes:
        reference, clean: :class:`cns_ros.ovs3d.metrics.Ovs3dScores` of both protocols.
        views: The annotated view indices, in order.
        predictions: int64 [V, h, w] labels.
    """

    reference: Any
    clean: Any
    views: tuple[int, ...]
    predictions: np.ndarray


def evaluate_scene(model: Ovs3dModel, scene: Any, text: Tensor, downsample: float,
                   config: RenderConfig, views: Sequence[int] | None = None
                   ) -> SceneEvaluation:
    """Render the annotated views at ``downsample`` and score them (both protocols).

    Args:
        model: The stage-B model.
        scene: An :class:`~cns_ros.ovs3d.dataset.Ovs3dScene`.
        text: float [C, D] unit embeddings of ``scene.class_names`` (same order).
        downsample: Evaluation downsampling (3D-OVS: 8).
        config: Rendering settings.
        views: Views to score (default: all annotated ones).
    """
    from cns_ros.ovs3d.metrics import clean_scores, reference_scores

    views = tuple(scene.annotated_views if views is None else views)
    height, width = scene.size(downsample)
    gts, preds = [], []
    for view in views:
        focal, center = camera_model(scene, downsample)
        out = render_camera(model, scene.poses[view], height, width, focal, config,
                            center=center)
        labels, _ = segment(out['feature'], text)
        preds.append(labels.cpu().numpy())
        gts.append(scene.masks(view, downsample).reshape(height * width, -1))
    pred = np.stack(preds)
    gt = np.stack(gts)
    flat = pred.reshape(len(views), -1)
    classes = len(scene.class_names)
    return SceneEvaluation(reference_scores(gt, flat, classes), clean_scores(gt, flat, classes),
                           views, pred)


@dataclass(frozen=True)
class SurfacePoints:
    """Deduplicated surface points (one per occupied voxel: the means of its samples).

    Attributes:
        xyz: float32 [N, 3] in the scene's normalised frame.
        rgb: uint8 [N, 3] rendered colour.
        codes: float32 [N, A] composited appearance codes.
        weight: float32 [N] composited opacity.
    """

    xyz: np.ndarray
    rgb: np.ndarray
    codes: np.ndarray
    weight: np.ndarray


def surface_points(model: Ovs3dModel, cameras: Sequence[np.ndarray], height: int, width: int,
                   focal: float | tuple[float, float], config: RenderConfig, voxel: float,
                   min_opacity: float = 0.5, center: tuple[float, float] | None = None
                   ) -> SurfacePoints:
    """The field's surface seen from ``cameras``, deduplicated in ``voxel``-sized cells.

    Pixels whose opacity is below ``min_opacity`` (sky, holes) give no point. Points from all
    cameras falling in one voxel are averaged (position, colour, code, opacity). ``focal`` and
    ``center`` are the cameras' shared intrinsics (see :func:`render_camera`).
    """
    parts = []
    for c2w in cameras:
        out = render_camera(model, c2w, height, width, focal, config, center=center)
        keep = (out['opacity'] >= min_opacity).reshape(-1)
        parts.append(torch.cat([out['points'].reshape(-1, 3), out['rgb'].reshape(-1, 3),
                                out['appearance'].reshape(height * width, -1),
                                out['opacity'].reshape(-1, 1)], -1)[keep].cpu())
    rows = torch.cat(parts).double()
    if rows.shape[0] == 0:
        raise ValueError(f'no rendered pixel reaches opacity {min_opacity}: nothing to export')
    cells = torch.floor(rows[:, :3] / voxel).long()
    _, inverse, counts = torch.unique(cells, dim=0, return_inverse=True, return_counts=True)
    sums = torch.zeros(counts.shape[0], rows.shape[1], dtype=torch.float64)
    sums.index_add_(0, inverse, rows)
    mean = (sums / counts[:, None]).numpy()
    return SurfacePoints(mean[:, :3].astype(np.float32),
                         np.round(mean[:, 3:6] * 255).clip(0, 255).astype(np.uint8),
                         mean[:, 6:-1].astype(np.float32), mean[:, -1].astype(np.float32))
