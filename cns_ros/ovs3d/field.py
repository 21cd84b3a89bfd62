"""TensoRF-VM: a radiance field factorised into plane and line tensors (vector-matrix).

A :class:`VMGrid` holds, for each of the three axis pairs (XY, XZ, YZ), ``R_k`` planes over the
pair and ``R_k`` lines along the remaining axis (Z, Y, X). At a point x (normalised to [-1, 1]
inside the box, ``align_corners=True``) component r of pair k is the bilinear plane value times
the linear line value; :meth:`VMGrid.sample` returns all of them, [M, sum R_k].

:class:`TensorVM` is the field: density sigma(x) = ReLU(sum of the density grid's products);
appearance a(x) = basis([products of the appearance grid]) in R^27; colour = MLP(a(x), view
direction) through a sigmoid. It grows on a log-linear voxel schedule (:meth:`upsample`) and
keeps a dilated occupancy mask (:class:`AlphaMask`) that lets rendering skip empty space; the
first mask update also shrinks the box to the occupied region (:meth:`TensorVM.shrink`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

PLANE_AXES = ((0, 1), (0, 2), (1, 2))
"""Axis pairs of the three planes: XY, XZ, YZ (plane tensors are [1, R, G[b], G[a]])."""
LINE_AXES = (2, 1, 0)
"""The axis of the line paired with each plane: Z, Y, X."""


@dataclass(frozen=True)
class FieldConfig:
    """The TensoRF-VM field. Defaults are the 3D-OVS reconstruction configuration.

    Attributes:
        density_components: Components per plane/line pair of the density grid.
        appearance_components: Components per pair of the appearance grid.
        appearance_dim: Size of the appearance feature a(x) (the basis matrix's output).
        mlp_width: Width of the colour MLP's two hidden layers.
        voxels_init: Voxel count of the initial grid (~128^3).
        voxels_final: Voxel count after the last upsampling (640^3).
        init_scale: Std of the normal initialisation of planes and lines.
    """

    density_components: tuple[int, int, int] = (16, 4, 4)
    appearance_components: tuple[int, int, int] = (48, 12, 12)
    appearance_dim: int = 27
    mlp_width: int = 128
    voxels_init: int = 2097156
    voxels_final: int = 262144000
    init_scale: float = 0.1


def grid_resolution(voxels: int, aabb: Tensor) -> list[int]:
    """Per-axis resolution of a grid of about ``voxels`` cubic voxels filling ``aabb`` [2, 3]."""
    size = aabb[1] - aabb[0]
    voxel = float(size.prod() / voxels) ** (1.0 / 3.0)
    return [int(s) for s in (size / voxel).long()]


def upsample_schedule(config: FieldConfig, steps: int) -> list[int]:
    """Voxel counts after each of ``steps`` upsamplings, log-linear from init to final."""
    if steps == 0:
        return []
    logs = torch.linspace(math.log(config.voxels_init), math.log(config.voxels_final), steps + 1,
                          dtype=torch.float64)
    return [round(math.exp(v)) for v in logs[1:].tolist()]


class VMGrid(nn.Module):
    """Planes and lines of one VM-factorised grid.

    Args:
        components: (R_XY, R_XZ, R_YZ) components per plane/line pair.
        resolution: Grid size per axis (x, y, z).
        scale: Std of the normal initialisation.
    """

    def __init__(self, components: tuple[int, int, int], resolution: list[int],
                 scale: float = 0.1) -> None:
        super().__init__()
        self.components = tuple(components)
        self.planes = nn.ParameterList()
        self.lines = nn.ParameterList()
        for (a, b), c, r in zip(PLANE_AXES, LINE_AXES, components, strict=True):
            self.planes.append(nn.Parameter(scale * torch.randn(1, r, resolution[b],
                                                                resolution[a])))
            self.lines.append(nn.Parameter(scale * torch.randn(1, r, resolution[c], 1)))

    @property
    def resolution(self) -> list[int]:
        """Grid size per axis (x, y, z)."""
        return [self.planes[0].shape[3], self.planes[0].shape[2], self.planes[1].shape[2]]

    def sample(self, xyz: Tensor) -> Tensor:
        """Plane x line products at normalised points.

        Args:
            xyz: float [M, 3] in [-1, 1] (box-normalised; outside values clamp to the border).

        Returns:
            float [M, sum R_k]: the products, pair by pair.
        """
        out = []
        for k, ((a, b), c) in enumerate(zip(PLANE_AXES, LINE_AXES, strict=True)):
            plane_xy = xyz[:, [a, b]].view(1, -1, 1, 2)
            line_xy = torch.stack([torch.zeros_like(xyz[:, c]), xyz[:, c]], -1).view(1, -1, 1, 2)
            plane = F.grid_sample(self.planes[k], plane_xy, align_corners=True)
            line = F.grid_sample(self.lines[k], line_xy, align_corners=True)
            out.append((plane * line)[0, :, :, 0].T)
        return torch.cat(out, dim=-1)

    @torch.no_grad()
    def resize(self, resolution: list[int]) -> None:
        """Resample every plane and line to a new grid size (bilinear, ``align_corners``)."""
        for k, ((a, b), c) in enumerate(zip(PLANE_AXES, LINE_AXES, strict=True)):
            plane = F.interpolate(self.planes[k].data, size=(resolution[b], resolution[a]),
                                  mode='bilinear', align_corners=True)
            line = F.interpolate(self.lines[k].data, size=(resolution[c], 1),
                                 mode='bilinear', align_corners=True)
            self.planes[k] = nn.Parameter(plane)
            self.lines[k] = nn.Parameter(line)

    @torch.no_grad()
    def crop(self, low: list[int], high: list[int]) -> None:
        """Keep the grid vertices low[i] <= index < high[i] on each axis (x, y, z)."""
        for k, ((a, b), c) in enumerate(zip(PLANE_AXES, LINE_AXES, strict=True)):
            plane = self.planes[k].data[:, :, low[b]:high[b], low[a]:high[a]]
            self.planes[k] = nn.Parameter(plane.contiguous())
            self.lines[k] = nn.Parameter(self.lines[k].data[:, :, low[c]:high[c]].contiguous())

    def dense(self) -> Tensor:
        """The full grid of products, float [sum R_k, X, Y, Z] (tests and small grids only)."""
        parts = []
        for k, ((a, b), c) in enumerate(zip(PLANE_AXES, LINE_AXES, strict=True)):
            plane = self.planes[k][0]  # [R, G_b, G_a]
            line = self.lines[k][0, :, :, 0]  # [R, G_c]
            grid = plane[:, :, :, None] * line[:, None, None, :]  # [R, G_b, G_a, G_c]
            order = [0] + [1 + [b, a, c].index(axis) for axis in (0, 1, 2)]
            parts.append(grid.permute(order))
        return torch.cat(parts, dim=0)


class ColourMLP(nn.Module):
    """Colour from the appearance feature and the view direction: 2 hidden ReLU layers."""

    def __init__(self, appearance_dim: int, width: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(appearance_dim + 3, width), nn.ReLU(),
                                    nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 3))
        nn.init.zeros_(self.layers[-1].bias)

    def forward(self, appearance: Tensor, view_dirs: Tensor) -> Tensor:
        """float [M, A], [M, 3] -> RGB in (0, 1), float [M, 3]."""
        return torch.sigmoid(self.layers(torch.cat([appearance, view_dirs], dim=-1)))


class AlphaMask:
    """Occupancy of the field's box: points where the dilated alpha is above a threshold.

    Args:
        aabb: float [2, 3] box it covers.
        occupied: bool [X, Y, Z] grid (True = may hold matter).
    """

    def __init__(self, aabb: Tensor, occupied: Tensor) -> None:
        self.aabb = aabb
        self.occupied = occupied

    def contains(self, xyz: Tensor) -> Tensor:
        """bool [M]: world points [M, 3] inside an occupied cell (nearest cell)."""
        size = torch.tensor(self.occupied.shape, dtype=xyz.dtype, device=xyz.device)
        unit = (xyz - self.aabb[0]) / (self.aabb[1] - self.aabb[0])
        index = torch.round(unit * (size - 1)).long()
        index = torch.minimum(index.clamp(min=0), (size - 1).long())
        return self.occupied[index[:, 0], index[:, 1], index[:, 2]]


class TensorVM(nn.Module):
    """The TensoRF-VM radiance field in an axis-aligned box.

    Args:
        config: Field sizes.
        aabb: float [2, 3] the scene box (NDC: [[-2, -2, -1], [2, 2, 1]]; bounded: metres).
        resolution: Initial grid size per axis (default from ``config.voxels_init``).
    """

    def __init__(self, config: FieldConfig, aabb: Tensor,
                 resolution: list[int] | None = None) -> None:
        super().__init__()
        self.config = config
        self.register_buffer('aabb', aabb.float().clone())
        resolution = resolution or grid_resolution(config.voxels_init, self.aabb)
        self.density = VMGrid(config.density_components, resolution, config.init_scale)
        self.appearance = VMGrid(config.appearance_components, resolution, config.init_scale)
        self.basis = nn.Linear(sum(config.appearance_components), config.appearance_dim,
                               bias=False)
        self.colour = ColourMLP(config.appearance_dim, config.mlp_width)
        self.alpha_mask: AlphaMask | None = None

    @property
    def resolution(self) -> list[int]:
        """Current grid size per axis."""
        return self.density.resolution

    def normalize(self, xyz: Tensor) -> Tensor:
        """World points [M, 3] -> box coordinates in [-1, 1]."""
        return (xyz - self.aabb[0]) * (2.0 / (self.aabb[1] - self.aabb[0])) - 1.0

    def sigma(self, xyz: Tensor) -> Tensor:
        """Density (>= 0) at world points: float [M, 3] -> [M]."""
        return F.relu(self.density.sample(self.normalize(xyz)).sum(dim=-1))

    def appearance_feature(self, xyz: Tensor) -> Tensor:
        """a(x): float [M, 3] world points -> [M, appearance_dim]."""
        return self.basis(self.appearance.sample(self.normalize(xyz)))

    def rgb(self, appearance: Tensor, view_dirs: Tensor) -> Tensor:
        """Colour of appearance features seen along view directions, float [M, 3]."""
        return self.colour(appearance, view_dirs)

    def upsample(self, resolution: list[int]) -> None:
        """Resample both grids to a new size (the optimiser must be rebuilt afterwards)."""
        self.density.resize(resolution)
        self.appearance.resize(resolution)

    @torch.no_grad()
    def shrink(self, occupied: Tensor) -> bool:
        """Crop the box and both grids to the bounding box of ``occupied`` vertices.

        Args:
            occupied: bool [X, Y, Z] on the current grid's vertices.

        Returns:
            Whether the box changed (nothing happens when fewer than 2 vertices per axis would
            remain). Values at the kept vertices are unchanged, so the field is the same inside
            the new box.
        """
        found = occupied.nonzero()
        if found.shape[0] == 0:
            return False
        low, high = found.min(0).values, found.max(0).values + 1
        res = torch.tensor(self.resolution, device=low.device)
        if bool(((high - low) < 2).any()) or bool((low == 0).all() and (high == res).all()):
            return False
        unit = (self.aabb[1] - self.aabb[0]) / (res - 1).to(self.aabb)
        box = torch.stack([self.aabb[0] + low * unit, self.aabb[0] + (high - 1) * unit])
        self.density.crop(low.tolist(), high.tolist())
        self.appearance.crop(low.tolist(), high.tolist())
        self.aabb.copy_(box)
        return True

    @torch.no_grad()
    def update_alpha_mask(self, step_size: float, distance_scale: float, threshold: float,
                          chunk: int = 65536) -> float:
        """Rebuild the occupancy mask from alpha on the current grid, dilated by a 3^3 max-pool.

        alpha = 1 - exp(-sigma * step_size * distance_scale) at every grid vertex.

        Returns:
            The occupied fraction of the box.
        """
        res = self.resolution
        axes = [torch.linspace(0.0, 1.0, n, device=self.aabb.device) for n in res]
        grid = torch.stack(torch.meshgrid(*axes, indexing='ij'), -1).reshape(-1, 3)
        xyz = self.aabb[0] + grid * (self.aabb[1] - self.aabb[0])
        sigma = torch.cat([self.sigma(part) for part in xyz.split(chunk)])
        alpha = (1.0 - torch.exp(-sigma * step_size * distance_scale)).view(1, 1, *res)
        alpha = F.max_pool3d(alpha, kernel_size=3, stride=1, padding=1)[0, 0]
        occupied = alpha > threshold
        self.alpha_mask = AlphaMask(self.aabb.clone(), occupied)
        return float(occupied.float().mean())
