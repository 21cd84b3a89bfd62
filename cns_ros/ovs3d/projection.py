"""How a scene's cameras become the field's rays: NDC (forward-facing) or a bounded box.

:class:`Projection` is stored with every checkpoint, so any later render (a new camera, an
export) builds its rays the way training did.

* ``ndc``: the field lives in the NDC space of one pinhole frustum (``height``, ``width``,
  ``focal`` of the stored hwf, near plane 1 after LLFF scaling); box [[-2, -2, -1], [2, 2, 1]],
  ray parameter range (-0.5, 1.5) as in 3D-OVS.
* ``bounded``: world rays (the scene's own units) inside ``aabb``; ray parameters over
  ``near_far``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from cns_ros.ovs3d.rays import directions_at, ndc_rays, world_from_ndc, world_rays

NDC_AABB = ((-2.0, -2.0, -1.0), (2.0, 2.0, 1.0))
NDC_NEAR_FAR = (-0.5, 1.5)


@dataclass(frozen=True)
class Projection:
    """The field's ray space.

    Attributes:
        kind: 'ndc' or 'bounded'.
        height, width, focal: The NDC frustum (px of the stored hwf); unused for 'bounded'.
        aabb: The field's box ((x0, y0, z0), (x1, y1, z1)) in ray space.
        near_far: Ray parameter range.
    """

    kind: Literal['ndc', 'bounded']
    height: int
    width: int
    focal: float
    aabb: tuple[tuple[float, float, float], tuple[float, float, float]] = NDC_AABB
    near_far: tuple[float, float] = NDC_NEAR_FAR

    def aabb_tensor(self) -> Tensor:
        """The box as float32 [2, 3]."""
        return torch.tensor(self.aabb, dtype=torch.float32)

    def rays(self, c2w: Tensor, uv: Tensor, focal: float, center: tuple[float, float]
             ) -> tuple[Tensor, Tensor]:
        """Rays through pixel positions of a camera, in the field's space.

        Args:
            c2w: float [3, 4] camera-to-world (NeRF convention, the scene's normalised frame).
            uv: float [M, 2] pixel positions (u, v), px, pixel centres at +0.5.
            focal: Focal length (px) at the image scale of ``uv``.
            center: Principal point (cx, cy) at that scale.

        Returns:
            (origins, directions), float32 [M, 3] each.
        """
        origins, directions = world_rays(directions_at(uv, focal, center), c2w.float())
        if self.kind == 'ndc':
            return ndc_rays(origins, directions, self.height, self.width, self.focal)
        return origins, directions

    def image_rays(self, c2w: Tensor, height: int, width: int,
                   focal: float | tuple[float, float],
                   center: tuple[float, float] | None = None) -> tuple[Tensor, Tensor]:
        """Rays through every pixel centre of a height x width image, row-major [H*W, 3];
        ``center`` (px) defaults to the image centre, ``focal`` is one value or (fx, fy)."""
        center = (width / 2.0, height / 2.0) if center is None else center
        return self.rays(c2w, pixel_grid(height, width), focal, center)

    def to_world(self, points: Tensor) -> Tensor:
        """Ray-space points [M, 3] -> the scene's normalised world frame."""
        if self.kind == 'ndc':
            return world_from_ndc(points, self.height, self.width, self.focal)
        return points


def pixel_grid(height: int, width: int, step: int = 1, offset: float = 0.5) -> Tensor:
    """Pixel positions (u, v) of a grid, float32 [height * width, 2], row-major."""
    v, u = torch.meshgrid(torch.arange(height) * step + offset,
                          torch.arange(width) * step + offset, indexing='ij')
    return torch.stack([u, v], dim=-1).reshape(-1, 2).float()
