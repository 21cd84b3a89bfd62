"""Training rays of a captured scene: pixel rays with colours, CLIP-supervised rays, DINO patches.

* :class:`RayTable`: every pixel ray of some views at one working resolution, with its colour
  (stage A's batches, stage B's RGB term).
* :class:`ClipRays`: the rays of the CLIP views at the teacher cache's resolution, each with the
  unit CLIP feature of every pyramid scale and the per-image min-max relevancy of every class.
* :class:`PatchSource`: for FDA, the views at the patch resolution as grids of 8 px blocks: one
  ray through each block centre and the cached DINO token of that block. A patch is a square of
  blocks; its rays are the block-centre rays (3D-OVS average-pools the 64 pixel rays of a block,
  which for a pinhole camera is the same ray up to the NDC map's small nonlinearity). The DINO
  tokens come from the whole image once (cached), not from each 256 px crop; this changes the
  tokens' context, not their grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cns_ros.ovs3d.capture import camera_model
from cns_ros.ovs3d.projection import Projection, pixel_grid


@dataclass
class RayTable:
    """Pixel rays with colours.

    Attributes:
        origins, directions: float32 [M, 3] in the field's ray space.
        rgb: float32 [M, 3] in [0, 1].
    """

    origins: Tensor
    directions: Tensor
    rgb: Tensor

    def __len__(self) -> int:
        return self.origins.shape[0]

    def draw(self, count: int, generator: torch.Generator) -> Tensor:
        """``count`` random row indices (with replacement), int64 [count]."""
        return torch.randint(0, len(self), (count,), generator=generator)


def _view_rays(scene: Any, projection: Projection, view: int, downsample: float
               ) -> tuple[Tensor, Tensor, tuple[int, int]]:
    height, width = scene.size(downsample)
    pose = torch.from_numpy(np.asarray(scene.poses[view], dtype=np.float32))
    focal, center = camera_model(scene, downsample)
    origins, directions = projection.image_rays(pose, height, width, focal, center)
    return origins, directions, (height, width)


def _colours(scene: Any, view: int, downsample: float) -> Tensor:
    """float32 [h*w, 3] in [0, 1]: the view's pixels, row-major."""
    return torch.from_numpy(np.array(scene.image(view, downsample))).reshape(-1, 3).float() / 255


def image_ray_table(scene: Any, projection: Projection, views: Sequence[int],
                    downsample: float) -> RayTable:
    """Every pixel ray of ``views`` at ``scene.size(downsample)`` with the image's colours."""
    parts = []
    for view in views:
        origins, directions, _ = _view_rays(scene, projection, view, downsample)
        rgb = _colours(scene, view, downsample)
        parts.append((origins, directions, rgb))
    return RayTable(*(torch.cat(p) for p in zip(*parts, strict=True)))


@dataclass
class ClipRays:
    """CLIP-supervised rays.

    Attributes:
        rays: The rays and their colours.
        features: float16 [M, S, D] unit CLIP features per scale (0 = the largest patch).
        relevancy: float32 [M, S, C] per-image min-max relevancy in [0, 1].
    """

    rays: RayTable
    features: Tensor
    relevancy: Tensor


def clip_ray_table(scene: Any, projection: Projection, cache: Any, views: Sequence[int],
                   text: Tensor) -> ClipRays:
    """The rays of ``views`` at the cache's CLIP resolution with their teacher targets."""
    from cns_ros.ovs3d.clip_pyramid import relevancy_maps

    tables, features, relevancy = [], [], []
    for view in views:
        pyramid = cache.clip_features(view)  # [S, D, h, w]
        origins, directions, (height, width) = _view_rays(scene, projection, view,
                                                          cache.clip_downsample)
        if tuple(pyramid.shape[2:]) != (height, width):
            raise ValueError(f'teacher cache view {view}: CLIP features are '
                             f'{tuple(pyramid.shape[2:])}, the scene at x{cache.clip_downsample}'
                             f' is {(height, width)}')
        rgb = _colours(scene, view, cache.clip_downsample)
        tables.append(RayTable(origins, directions, rgb))
        features.append(pyramid.flatten(2).permute(2, 0, 1).half())
        relevancy.append(relevancy_maps(pyramid, text).flatten(2).permute(2, 0, 1))
    rays = RayTable(*(torch.cat([getattr(t, k) for t in tables])
                      for k in ('origins', 'directions', 'rgb')))
    return ClipRays(rays, torch.cat(features), torch.cat(relevancy))


@dataclass
class PatchSource:
    """Block-centre rays and DINO tokens of the views at the patch resolution.

    Attributes:
        rays: float32 [V, Hb, Wb, 6] origin | direction per 8 px block.
        tokens: float32 [V, Hb, Wb, Dd] DINO tokens.
    """

    rays: Tensor
    tokens: Tensor

    def side(self, patch_size: int) -> int:
        """Blocks per patch side: patch_size / 8, clamped to the token grid."""
        return max(1, min(patch_size // 8, self.rays.shape[1], self.rays.shape[2]))

    def draw(self, patches: int, side: int, generator: torch.Generator
             ) -> tuple[Tensor, Tensor, Tensor]:
        """``patches`` random side x side block squares.

        Returns:
            (origins [P*T, 3], directions [P*T, 3], tokens [P, T, Dd]), T = side^2.
        """
        views, rows, cols = self.rays.shape[:3]
        view = torch.randint(0, views, (patches,), generator=generator)
        top = torch.randint(0, rows - side + 1, (patches,), generator=generator)
        left = torch.randint(0, cols - side + 1, (patches,), generator=generator)
        rays, tokens = [], []
        for v, t, s in zip(view.tolist(), top.tolist(), left.tolist(), strict=True):
            rays.append(self.rays[v, t:t + side, s:s + side].reshape(-1, 6))
            tokens.append(self.tokens[v, t:t + side, s:s + side].reshape(-1,
                                                                         self.tokens.shape[-1]))
        rays_all = torch.cat(rays)
        return rays_all[:, :3], rays_all[:, 3:], torch.stack(tokens)


def patch_source(scene: Any, projection: Projection, cache: Any, views: Sequence[int]
                 ) -> PatchSource:
    """Block-centre rays of ``views`` at the cache's DINO resolution and their tokens."""
    rays, tokens = [], []
    downsample = cache.dino_downsample
    focal, center = camera_model(scene, downsample)
    for view in views:
        grid = cache.dino_tokens(view)  # [Hb, Wb, Dd]
        rows, cols = grid.shape[:2]
        pose = torch.from_numpy(np.asarray(scene.poses[view], dtype=np.float32))
        uv = pixel_grid(rows, cols, step=8, offset=4.0)
        origins, directions = projection.rays(pose, uv, focal, center)
        rays.append(torch.cat([origins, directions], -1).view(rows, cols, 6))
        tokens.append(grid.float())
    return PatchSource(torch.stack(rays), torch.stack(tokens))
