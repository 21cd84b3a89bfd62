"""Camera rays for the radiance field: pixel directions, world rays, NDC rays, block rays.

Conventions (the package's ``ovs3d`` convention, NeRF's): a camera looks along its -z axis with
x right and y up; pixel (u, v) = (column, row) has its centre at (u + 0.5, v + 0.5). A
camera-to-world pose ``c2w`` is float32 [3, 4]: rotation columns = camera axes in the world,
last column = camera centre. A ROS optical-frame pose (x right, y down, z forward) converts
with :func:`nerf_from_optical`.

Two scene parameterisations:

* **NDC** (forward-facing captures, LLFF): rays are mapped into normalised device coordinates
  of a pinhole camera at the world origin looking along -z with the given focal and near plane
  (:func:`ndc_rays`), so the whole depth range to infinity fits in z in [-1, 1];
* **bounded** (a robot's own stream, not forward-facing): world rays inside an axis-aligned box.
"""

from __future__ import annotations

import torch
from torch import Tensor


def pixel_directions(height: int, width: int, focal: float | tuple[float, float],
                     center: tuple[float, float] | None = None,
                     step: float = 1.0, offset: float = 0.5) -> Tensor:
    """Camera-frame ray directions through a grid of pixel positions (not normalised).

    Args:
        height, width: Number of rows and columns of the grid.
        focal: Focal length (px), one value or (fx, fy).
        center: Principal point (cx, cy) in px; default the image centre (width/2, height/2)
            of a grid with ``step`` 1.
        step: Pixel spacing of the grid (8 gives one ray per 8x8 block).
        offset: Position of the first ray inside its cell, px (0.5 = pixel centres; 4 = the
            centres of 8 px blocks).

    Returns:
        float32 [height, width, 3]: ((u - cx) / fx, -(v - cy) / fy, -1), u = offset + step*col.
    """
    if center is None:
        center = (width * step / 2.0, height * step / 2.0)
    u = torch.arange(width, dtype=torch.float32) * step + offset
    v = torch.arange(height, dtype=torch.float32) * step + offset
    vv, uu = torch.meshgrid(v, u, indexing='ij')
    return directions_at(torch.stack([uu, vv], dim=-1), focal, center)


def directions_at(uv: Tensor, focal: float | tuple[float, float],
                  center: tuple[float, float]) -> Tensor:
    """Camera-frame directions through pixel positions.

    Args:
        uv: float [..., 2] positions (u = column, v = row) in px (pixel centres at +0.5).
        focal: Focal length (px), one value or (fx, fy).
        center: Principal point (cx, cy), px.

    Returns:
        float32 [..., 3]: ((u - cx) / fx, -(v - cy) / fy, -1).
    """
    fx, fy = (focal, focal) if isinstance(focal, (int, float)) else focal
    uv = uv.float()
    return torch.stack([(uv[..., 0] - center[0]) / fx, -(uv[..., 1] - center[1]) / fy,
                        -torch.ones_like(uv[..., 0])], dim=-1)


def world_rays(directions: Tensor, c2w: Tensor) -> tuple[Tensor, Tensor]:
    """World-frame rays of camera-frame directions.

    Args:
        directions: float [..., 3] camera-frame directions.
        c2w: float [3, 4] camera-to-world pose.

    Returns:
        (origins [M, 3], unit directions [M, 3]) with M = the product of the leading dims.
    """
    dirs = directions.reshape(-1, 3) @ c2w[:, :3].T
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    return c2w[:, 3].expand_as(dirs).contiguous(), dirs


def ndc_rays(origins: Tensor, directions: Tensor, height: int, width: int, focal: float,
             near: float = 1.0) -> tuple[Tensor, Tensor]:
    """Map world rays into NDC space (forward-facing scenes).

    The origin is first moved along the ray onto the plane z = -near; then, with
    ax = -2 f / W and ay = -2 f / H::

        o' = (ax ox/oz, ay oy/oz, 1 + 2 near/oz)
        d' = (ax (dx/dz - ox/oz), ay (dy/dz - oy/oz), -2 near/oz)

    so o' + t d' runs from the near plane (t = 0, z' = -1) to infinity (t = 1, z' = 1).

    Args:
        origins, directions: float [M, 3] world rays (any direction scale).
        height, width, focal: The image size and focal (px) that define the NDC frustum.
        near: The near plane (1 after LLFF scaling).

    Returns:
        (NDC origins [M, 3], NDC directions [M, 3]).
    """
    t = -(near + origins[:, 2]) / directions[:, 2]
    o = origins + t[:, None] * directions
    ax, ay = -2.0 * focal / width, -2.0 * focal / height
    ox_oz, oy_oz = o[:, 0] / o[:, 2], o[:, 1] / o[:, 2]
    o_ndc = torch.stack([ax * ox_oz, ay * oy_oz, 1.0 + 2.0 * near / o[:, 2]], dim=-1)
    d_ndc = torch.stack([ax * (directions[:, 0] / directions[:, 2] - ox_oz),
                         ay * (directions[:, 1] / directions[:, 2] - oy_oz),
                         -2.0 * near / o[:, 2]], dim=-1)
    return o_ndc, d_ndc


def world_from_ndc(points: Tensor, height: int, width: int, focal: float,
                   near: float = 1.0) -> Tensor:
    """Invert the NDC map for points: NDC [M, 3] -> world [M, 3] (z' < 1, finite depth).

    z = 2 near / (z' - 1), x = -x' z W / (2 f), y = -y' z H / (2 f).
    """
    z = 2.0 * near / (points[:, 2] - 1.0)
    return torch.stack([-points[:, 0] * z * width / (2.0 * focal),
                        -points[:, 1] * z * height / (2.0 * focal), z], dim=-1)


def nerf_from_optical(c2w_optical: Tensor) -> Tensor:
    """A ROS optical-frame camera pose (x right, y down, z forward) in the NeRF convention.

    Args:
        c2w_optical: float [..., 3, 4] camera-to-world with optical-frame axes.

    Returns:
        float [..., 3, 4]: the same camera with its y and z axes negated.
    """
    flip = torch.tensor([1.0, -1.0, -1.0], dtype=c2w_optical.dtype)
    out = c2w_optical.clone()
    out[..., :, :3] = out[..., :, :3] * flip
    return out
