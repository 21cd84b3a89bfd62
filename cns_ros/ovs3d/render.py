"""Volume rendering of a :class:`~cns_ros.ovs3d.field.TensorVM` along rays, in chunks.

Per ray: ``n`` sample parameters t evenly spaced over [near, far] (one uniform jitter of up to
one spacing per sample when training); samples outside the box or the alpha mask have zero
density; delta_i = (t_{i+1} - t_i) |d| (the last delta is 0); alpha_i = 1 - exp(-sigma_i delta_i
s) with the distance scale s; T_i = prod_{j<i} (1 - alpha_j + 1e-10); w_i = alpha_i T_i.
Appearance, colour and the semantic heads are evaluated only where w_i > the weight threshold
(0 elsewhere). Outputs are weighted sums over the samples:

* ``rgb`` [R, 3]: sum w_i c_i (+ (1 - sum w) with a white background);
* ``depth`` [R]: sum w_i t_i (the expected ray parameter times the opacity);
* ``median`` [R]: the ray parameter where the accumulated weight reaches 0.5 (the last
  sample's when it never does): the surface, robust to semi-transparent floaters;
* ``opacity`` [R]: sum w_i;
* ``appearance`` [R, A]: sum w_i a(x_i), the composited appearance feature. The CLIP feature
  head is affine, so the rendered CLIP feature is the head applied to this sum with its biases
  scaled by the opacity (:meth:`cns_ros.ovs3d.semantic.FeatureHead.composited`): 27 channels
  are composited instead of 512;
* ``selection`` [R, S]: sum w_i s(x_i), the selection volume's composited scale weights.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import torch
from torch import Tensor

from cns_ros.ovs3d.field import TensorVM

OUTPUTS = ('rgb', 'depth', 'median', 'opacity', 'appearance', 'selection')


@dataclass(frozen=True)
class RenderConfig:
    """Ray sampling and compositing. Defaults are 3D-OVS's NDC settings.

    Attributes:
        near_far: Ray parameter range (NDC: (-0.5, 1.5); only t in [0, 1] lies in the box).
        step_ratio: Samples per ray = |grid resolution| / step_ratio (then ``max_samples``).
        max_samples: Cap on samples per ray (None = no cap).
        distance_scale: Multiplier of delta inside alpha.
        weight_threshold: Samples with w at or below this skip appearance and the heads.
        chunk: Rays per rendering chunk outside training.
    """

    near_far: tuple[float, float] = (-0.5, 1.5)
    step_ratio: float = 0.5
    max_samples: int | None = None
    distance_scale: float = 25.0
    weight_threshold: float = 1e-4
    chunk: int = 4096


def samples_per_ray(resolution: list[int], config: RenderConfig) -> int:
    """int(|resolution| / step_ratio), capped by ``max_samples``."""
    n = int(torch.tensor(resolution, dtype=torch.float32).norm() / config.step_ratio)
    return min(n, config.max_samples) if config.max_samples else n


def sample_parameters(rays: int, n: int, near_far: tuple[float, float], jitter: bool,
                      device: torch.device, generator: torch.Generator | None = None) -> Tensor:
    """Ray parameters t, float [rays, n]: linspace(near, far, n) (+ U[0, spacing) jitter)."""
    near, far = near_far
    t = torch.linspace(near, far, n, device=device).expand(rays, n)
    if jitter:
        noise = torch.rand(rays, n, device=device, generator=generator)
        t = t + noise * ((far - near) / n)
    return t


def composite_weights(sigma: Tensor, deltas: Tensor, distance_scale: float) -> Tensor:
    """w_i = alpha_i prod_{j<i} (1 - alpha_j + 1e-10), alpha = 1 - exp(-sigma delta scale).

    Args:
        sigma, deltas: float [R, N] densities and sample spacings.

    Returns:
        float [R, N] weights (each row sums to at most 1).
    """
    alpha = 1.0 - torch.exp(-sigma * deltas * distance_scale)
    ones = torch.ones_like(alpha[:, :1])
    transmittance = torch.cumprod(torch.cat([ones, 1.0 - alpha + 1e-10], dim=-1), dim=-1)
    return alpha * transmittance[:, :-1]


def _weighted(weights: Tensor, mask: Tensor, values: Tensor) -> Tensor:
    """sum_i w_i v_i per ray, with v given only at masked samples: [R, N], [R, N], [M, C]."""
    full = values.new_zeros(*mask.shape, values.shape[-1])
    full[mask] = values
    return (weights[..., None] * full).sum(dim=1)


def render_rays(field: TensorVM, origins: Tensor, directions: Tensor, config: RenderConfig,
                n_samples: int, *, outputs: Collection[str] = ('rgb',), train: bool = False,
                white_background: bool = False, selection: torch.nn.Module | None = None,
                generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Render one batch of rays (no chunking; see :func:`render_chunked`).

    Args:
        field: The radiance field.
        origins, directions: float [R, 3] rays in the field's frame (NDC or world).
        config: Sampling and compositing settings.
        n_samples: Samples per ray.
        outputs: Any of :data:`OUTPUTS`.
        train: Jitter the samples.
        white_background: Add (1 - opacity) to ``rgb``.
        selection: The selection volume, needed for ``selection``.
        generator: RNG of the jitter.

    Returns:
        {name: tensor} for the requested outputs (shapes in the module docstring).
    """
    unknown = set(outputs) - set(OUTPUTS)
    if unknown:
        raise ValueError(f'render_rays: unknown outputs {sorted(unknown)}; known {OUTPUTS}')
    rays = origins.shape[0]
    t = sample_parameters(rays, n_samples, config.near_far, train, origins.device, generator)
    points = origins[:, None, :] + t[..., None] * directions[:, None, :]
    norm = directions.norm(dim=-1, keepdim=True)
    deltas = torch.cat([t[:, 1:] - t[:, :-1], torch.zeros_like(t[:, :1])], dim=-1) * norm
    inside = ((points >= field.aabb[0]) & (points <= field.aabb[1])).all(dim=-1)
    if field.alpha_mask is not None:
        inside[inside.clone()] = field.alpha_mask.contains(points[inside])
    sigma = points.new_zeros(t.shape)
    sigma[inside] = field.sigma(points[inside])
    weights = composite_weights(sigma, deltas, config.distance_scale)
    out = {'opacity': weights.sum(dim=1), 'depth': (weights * t).sum(dim=1)}
    if 'median' in outputs:
        index = (weights.cumsum(dim=1) < 0.5).sum(dim=1, keepdim=True).clamp(max=n_samples - 1)
        out['median'] = t.gather(1, index)[:, 0]
    live = weights > config.weight_threshold
    if {'rgb', 'appearance'} & set(outputs):
        appearance = field.appearance_feature(points[live])
        if 'appearance' in outputs:
            out['appearance'] = _weighted(weights, live, appearance)
        if 'rgb' in outputs:
            view = (directions / norm)[:, None, :].expand_as(points)[live]
            rgb = _weighted(weights, live, field.rgb(appearance, view))
            out['rgb'] = rgb + (1.0 - out['opacity'][:, None]) if white_background else rgb
    if 'selection' in outputs:
        if selection is None:
            raise ValueError("render_rays: output 'selection' needs the selection volume")
        out['selection'] = _weighted(weights, live, selection(field.normalize(points[live])))
    return {name: out[name] for name in outputs}


def render_chunked(field: TensorVM, origins: Tensor, directions: Tensor, config: RenderConfig,
                   n_samples: int, **kwargs: object) -> dict[str, Tensor]:
    """:func:`render_rays` over ``config.chunk`` rays at a time, outputs concatenated."""
    parts: dict[str, list[Tensor]] = {}
    for o, d in zip(origins.split(config.chunk), directions.split(config.chunk), strict=True):
        for name, value in render_rays(field, o, d, config, n_samples, **kwargs).items():
            parts.setdefault(name, []).append(value)
    return {name: torch.cat(values) for name, values in parts.items()}
