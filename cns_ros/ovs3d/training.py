"""The two 3D-OVS training stages and the one loop that runs them.

* **Stage A** (:class:`StageA`): RGB reconstruction of the TensoRF-VM field: MSE on random pixel
  rays (a white background composited into half of the batches) plus TV on the density and
  appearance planes, the grid upsampled on a log-linear voxel schedule (over the current box)
  and the alpha mask rebuilt at set iterations, the first time shrinking the box to it.
* **Stage B** (:class:`StageB`): density frozen; a CLIP feature head and a selection volume are
  trained with cosine distillation to the selected mix of CLIP scales, RDA (JS between the
  rendered class distribution and the selected relevancy) and FDA (DINO-affinity-weighted
  pairwise divergences in patches); from ``joint_start`` the appearance (grids, basis, colour
  MLP) is unfrozen and an RGB term added.

:func:`run_stage` is the loop (nanoGPT-style, top to bottom per iteration): stage events (grid
upsampling, alpha mask, unfreezing; each rebuilds Adam(0.9, 0.99) at the groups' initial
rates, as the reference does) -> learning rates (initial x decay^(1/iterations) per iteration
since the last rebuild) -> loss -> backward -> step -> log -> checkpoint. It resumes exactly
from the latest checkpoint of its folder (model, optimizer, RNG, iteration). The nuScenes
methods' :func:`cns_ros.training.loop.fit` does not fit this schedule (several parameter groups
with their own rates, optimisers rebuilt mid-run when grids change size, ray batches instead of
keyframes); the two loops share the run log (TensorBoard, history, tqdm) and the checkpoint
files.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from cns_ros.ovs3d import losses
from cns_ros.ovs3d.field import FieldConfig, grid_resolution, upsample_schedule
from cns_ros.ovs3d.model import Ovs3dModel, model_from_state, model_state
from cns_ros.ovs3d.ray_data import ClipRays, PatchSource, RayTable
from cns_ros.ovs3d.render import RenderConfig, render_rays, samples_per_ray
from cns_ros.ovs3d.semantic import selection_weights
from cns_ros.training import checkpoint as ckpt
from cns_ros.training.loop import LossOutput, RunLog


@dataclass(frozen=True)
class StageAConfig:
    """Stage A (RGB reconstruction). Defaults: 3D-OVS ``configs/reconstruction.txt``.

    Attributes:
        iterations: Optimiser steps.
        batch_rays: Rays per step.
        downsample: Image downsampling of the training rays.
        lr_grid, lr_network: Initial Adam rates of the planes/lines and of basis + colour MLP.
        lr_decay: Rate at the last iteration / initial rate (per-step factor decay^(1/iters)).
        tv_density, tv_appearance: TV weights (times 1e-2, decayed like the rates).
        upsample_at: Iterations before which the grids are upsampled.
        alpha_mask_at: Iterations before which the alpha mask is rebuilt (the first one also
            shrinks the box and grids to the occupied region).
        alpha_threshold: Dilated alpha above this is occupied.
        white_background: Probability that a batch composites a white background.
        seed: Seed of the ray draws and jitter.
    """

    iterations: int = 30000
    batch_rays: int = 4096
    downsample: float = 2.0
    lr_grid: float = 0.02
    lr_network: float = 1e-4
    lr_decay: float = 0.1
    tv_density: float = 1.0
    tv_appearance: float = 1.0
    upsample_at: tuple[int, ...] = (2000, 3000, 4000, 5500)
    alpha_mask_at: tuple[int, ...] = (2500,)
    alpha_threshold: float = 1e-4
    white_background: float = 0.5
    seed: int = 20211202


@dataclass(frozen=True)
class StageBConfig:
    """Stage B (semantic distillation). Defaults: the 3D-OVS scene configs (bench, lawn, ...).

    Attributes:
        iterations, joint_start: Steps, and the step from which appearance trains with RGB.
        batch_rays: CLIP rays per step.
        clip_fraction: Fraction of the views that supervise with CLIP (a seeded draw).
        patch_num, patch_size: FDA patches per step and their side at the patch resolution (px,
            a multiple of 8; clamped to the image).
        fda: Use the FDA term (off = the ablation).
        fda_divergence: 'js' (the pairwise Jensen-Shannon divergence the paper names) or
            'kl' (what the released code computes: KL(P_i || P_j)). Default 'js': on the
            synthetic scenes it gave the better field (see README, 3D-OVS); the reference
            preset sets 'kl'.
        temperature, dino_shift: FDA's softmax temperature and affinity shift.
        dino_pos_weight, dino_neg_weight, relevancy_weight: Loss weights.
        lr_*: Initial Adam rates of each parameter group.
        lr_decay: As in stage A.
        seed: Seed of the view subset, ray and patch draws, jitter.
    """

    iterations: int = 15000
    joint_start: int = 5000
    batch_rays: int = 4096
    clip_fraction: float = 0.5
    patch_num: int = 8
    patch_size: int = 256
    fda: bool = True
    fda_divergence: Literal['kl', 'js'] = 'js'
    temperature: float = 0.2
    dino_shift: float = 0.7
    dino_pos_weight: float = 200.0
    dino_neg_weight: float = 0.2
    relevancy_weight: float = 1.0
    lr_head: float = 1e-4
    lr_selection_grid: float = 0.02
    lr_selection_basis: float = 1e-4
    lr_basis: float = 5e-5
    lr_colour: float = 5e-5
    lr_appearance_grid: float = 5e-3
    lr_decay: float = 0.1
    seed: int = 20230417


@dataclass(frozen=True)
class Ovs3dConfig:
    """Everything a 3D-OVS run uses. Defaults are the reference's values except the FDA
    divergence ('js'; config/ovs3d/reference.yaml sets the released code's 'kl'); presets in
    ``config/ovs3d/`` override what differs (e.g. a tiny CPU configuration).

    Attributes:
        field, render: The field and its rendering.
        stage_a, stage_b: The two stages.
        clip_downsample, dino_downsample: Teacher resolutions (x8 CLIP pyramid and rays, x5
            DINO tokens and FDA patches).
        eval_downsample: Resolution of rendered evaluation views.
        text_templates: Prompt-template set of :func:`cns_ros.vocabulary.prompt_templates`
            ('raw' = the class text itself, as the reference; 'single', 'maskclip85').
        checkpoint_every, log_every, progress: Bookkeeping.
    """

    field: FieldConfig = dataclasses.field(default_factory=FieldConfig)
    render: RenderConfig = dataclasses.field(default_factory=RenderConfig)
    stage_a: StageAConfig = dataclasses.field(default_factory=StageAConfig)
    stage_b: StageBConfig = dataclasses.field(default_factory=StageBConfig)
    clip_downsample: float = 8.0
    dino_downsample: float = 5.0
    eval_downsample: float = 8.0
    text_templates: str = 'raw'
    checkpoint_every: int = 1000
    log_every: int = 10
    progress: bool = True


class Stage(Protocol):
    """What :func:`run_stage` needs from a stage."""

    model: Ovs3dModel
    iterations: int
    lr_decay: float
    seed: int

    def configure(self, iteration: int) -> None:
        """Set what depends on the iteration (trainable parts) without any event."""

    def events(self, iteration: int) -> bool:
        """Apply the events due before ``iteration``; True when the optimiser must be rebuilt."""

    def param_groups(self) -> list[dict[str, Any]]:
        """Adam parameter groups with their initial ``lr``."""

    def loss(self, iteration: int, generator: torch.Generator) -> LossOutput:
        """The loss of one step."""


def _voxel_step(model: Ovs3dModel, step_ratio: float) -> float:
    aabb, res = model.field.aabb, torch.tensor(model.field.resolution, dtype=torch.float32)
    return float(((aabb[1] - aabb[0]).cpu() / (res - 1)).mean()) * step_ratio


class StageA:
    """RGB reconstruction of ``rays`` (see the module docstring)."""

    def __init__(self, model: Ovs3dModel, rays: RayTable, config: Ovs3dConfig) -> None:
        self.model, self.rays, self.config, self.stage = model, rays, config, config.stage_a
        self.iterations, self.lr_decay, self.seed = (self.stage.iterations, self.stage.lr_decay,
                                                     self.stage.seed)
        self.voxels = dict(zip(self.stage.upsample_at,
                               upsample_schedule(config.field, len(self.stage.upsample_at)),
                               strict=True))

    def configure(self, iteration: int) -> None:
        """Nothing depends on the iteration in stage A."""

    def events(self, iteration: int) -> bool:
        """Upsample the grids and rebuild the alpha mask when due."""
        field_ = self.model.field
        rebuild = iteration == 0
        if iteration in self.voxels:
            field_.upsample(grid_resolution(self.voxels[iteration], field_.aabb.cpu()))
            rebuild = True
        if iteration in self.stage.alpha_mask_at:
            field_.update_alpha_mask(_voxel_step(self.model, self.config.render.step_ratio),
                                     self.config.render.distance_scale,
                                     self.stage.alpha_threshold)
            if iteration == min(self.stage.alpha_mask_at) and field_.alpha_mask is not None:
                rebuild = field_.shrink(field_.alpha_mask.occupied) or rebuild
        return rebuild

    def param_groups(self) -> list[dict[str, Any]]:
        f = self.model.field
        grids = [*f.density.parameters(), *f.appearance.parameters()]
        return [{'params': grids, 'lr': self.stage.lr_grid, 'name': 'grids'},
                {'params': [*f.basis.parameters(), *f.colour.parameters()],
                 'lr': self.stage.lr_network, 'name': 'networks'}]

    def loss(self, iteration: int, generator: torch.Generator) -> LossOutput:
        device = self.model.field.aabb.device
        index = self.rays.draw(self.stage.batch_rays, generator)
        n = samples_per_ray(self.model.field.resolution, self.config.render)
        white = bool(torch.rand((), generator=generator) < self.stage.white_background)
        out = render_rays(self.model.field, self.rays.origins[index].to(device),
                          self.rays.directions[index].to(device), self.config.render, n,
                          outputs=('rgb',), train=True, white_background=white,
                          generator=generator if device.type == 'cpu' else None)
        mse = F.mse_loss(out['rgb'].clamp(0.0, 1.0), self.rays.rgb[index].to(device))
        decay = self.lr_decay ** (iteration / self.iterations)
        field_ = self.model.field
        tv = (self.stage.tv_density * losses.tv_loss(list(field_.density.planes))
              + self.stage.tv_appearance * losses.tv_loss(list(field_.appearance.planes)))
        total = mse + 1e-2 * decay * tv
        psnr = -10.0 * math.log10(max(float(mse.detach()), 1e-10))
        return LossOutput(total, {'rgb': mse, 'tv': tv}, {'psnr': f'{psnr:.2f}'})


class StageB:
    """Semantic distillation (see the module docstring).

    Args:
        model: The stage-A model with its semantic heads added.
        clip: CLIP-supervised rays of the selected views.
        patches: DINO patches (None when ``fda`` is off).
        text: float [C, D] unit text embeddings of the sorted class names.
        config: The run's config.
    """

    def __init__(self, model: Ovs3dModel, clip: ClipRays, patches: PatchSource | None,
                 text: Tensor, config: Ovs3dConfig) -> None:
        self.model, self.clip, self.patches, self.config = model, clip, patches, config
        self.stage = config.stage_b
        self.text = text.to(model.field.aabb.device)
        self.iterations, self.lr_decay, self.seed = (self.stage.iterations, self.stage.lr_decay,
                                                     self.stage.seed)
        # the reference's count: the initial voxel budget over the scene's full box
        res = grid_resolution(config.field.voxels_init, model.projection.aabb_tensor())
        self.samples = samples_per_ray(res, config.render)
        self.joint_now = False

    def _joint(self, iteration: int) -> bool:
        return iteration >= self.stage.joint_start

    def configure(self, iteration: int) -> None:
        """Freeze the field; from ``joint_start`` the appearance trains again."""
        f = self.model.field
        for module in (f.density, f.appearance, f.basis, f.colour):
            module.requires_grad_(False)
        self.joint_now = self._joint(iteration)
        if self.joint_now:
            for module in (f.appearance, f.basis, f.colour):
                module.requires_grad_(True)

    def events(self, iteration: int) -> bool:
        """:meth:`configure`; a new optimiser at the start and at ``joint_start``."""
        self.configure(iteration)
        return iteration in (0, self.stage.joint_start)

    def param_groups(self) -> list[dict[str, Any]]:
        s, m = self.stage, self.model
        groups = [{'params': list(m.head.parameters()), 'lr': s.lr_head, 'name': 'head'},
                  {'params': list(m.selection.grid.parameters()), 'lr': s.lr_selection_grid,
                   'name': 'selection_grid'},
                  {'params': list(m.selection.basis.parameters()), 'lr': s.lr_selection_basis,
                   'name': 'selection_basis'}]
        if self.joint_now:
            f = m.field
            groups += [{'params': list(f.basis.parameters()), 'lr': s.lr_basis, 'name': 'basis'},
                       {'params': list(f.colour.parameters()), 'lr': s.lr_colour,
                        'name': 'colour'},
                       {'params': list(f.appearance.parameters()), 'lr': s.lr_appearance_grid,
                        'name': 'appearance_grid'}]
        return groups

    def _render(self, origins: Tensor, directions: Tensor, outputs: tuple[str, ...],
                generator: torch.Generator) -> dict[str, Tensor]:
        device = self.model.field.aabb.device
        return render_rays(self.model.field, origins.to(device), directions.to(device),
                           self.config.render, self.samples, outputs=outputs, train=True,
                           selection=self.model.selection,
                           generator=generator if device.type == 'cpu' else None)

    def loss(self, iteration: int, generator: torch.Generator) -> LossOutput:
        s, device = self.stage, self.model.field.aabb.device
        index = self.clip.rays.draw(s.batch_rays, generator)
        joint = self._joint(iteration)
        outputs = ('appearance', 'opacity', 'selection') + (('rgb',) if joint else ())
        out = self._render(self.clip.rays.origins[index], self.clip.rays.directions[index],
                           outputs, generator)
        feature = self.model.rendered_features(out)
        select = selection_weights(out['selection'])
        target = losses.selected_target(self.clip.features[index].to(device).float(), select)
        terms = {'feature': losses.distillation_loss(feature, target),
                 'rda': losses.rda_loss(feature, self.text, self.clip.relevancy[index].to(device),
                                        select)}
        total = terms['feature'] + s.relevancy_weight * terms['rda']
        if joint:
            terms['rgb'] = F.mse_loss(out['rgb'], self.clip.rays.rgb[index].to(device))
            total = total + terms['rgb']
        if s.fda and self.patches is not None:
            pos, neg = self._fda(generator)
            terms['fda_pos'], terms['fda_neg'] = pos, neg
            total = total + s.dino_pos_weight * pos + s.dino_neg_weight * neg
        return LossOutput(total, terms)

    def _fda(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        s = self.stage
        side = self.patches.side(s.patch_size)
        origins, directions, tokens = self.patches.draw(s.patch_num, side, generator)
        out = self._render(origins, directions, ('appearance', 'opacity'), generator)
        feature = self.model.rendered_features(out).view(s.patch_num, side * side, -1)
        return losses.fda_loss(feature, self.text, tokens.to(feature.device),
                               temperature=s.temperature, shift=s.dino_shift,
                               divergence=s.fda_divergence)


@dataclass
class StageResult:
    """What :func:`run_stage` did: iterations run in total, the last checkpoint, this run's
    per-step history rows."""

    iterations: int
    checkpoint: Path
    history: list[dict[str, Any]]


def _restore(stage: Stage, out_dir: Path) -> tuple[int, int, dict[str, Any] | None,
                                                   Tensor | None]:
    """Load the latest checkpoint of ``out_dir`` into the stage's model.

    Returns:
        (iteration, iteration of the last optimiser rebuild, optimiser state, generator state);
        (0, 0, None, None) without a checkpoint.
    """
    path = ckpt.latest_checkpoint(out_dir)
    if path is None:
        return 0, 0, None, None
    device = stage.model.field.aabb.device
    state = ckpt.load_checkpoint(path, map_location=device)
    source = model_from_state(state['model'], device)
    target = stage.model
    target.field.upsample(source.field.resolution)
    if target.selection is not None and source.selection is not None:
        target.selection.grid.resize(source.selection.grid.resolution)
    target.load_state_dict(source.state_dict(), strict=True)
    target.field.alpha_mask = source.field.alpha_mask
    return state['iteration'], state['rebuilt_at'], state['optimizer'], state['generator']


def build_adam(groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """Adam(0.9, 0.99) whose groups remember their initial rate."""
    for group in groups:
        group['initial_lr'] = group['lr']
    return torch.optim.Adam(groups, betas=(0.9, 0.99))


def _save(stage: Stage, out_dir: Path, iteration: int, rebuilt_at: int,
          optimizer: torch.optim.Optimizer, generator: torch.Generator,
          extra: dict[str, Any]) -> Path:
    path = ckpt.checkpoint_path(out_dir, iteration)
    ckpt.save_checkpoint(path, {'config': extra['config_yaml'], 'iteration': iteration,
                                'rebuilt_at': rebuilt_at, 'model': model_state(stage.model),
                                'optimizer': optimizer.state_dict(),
                                'generator': generator.get_state(), **extra['state']})
    ckpt.prune_checkpoints(out_dir, keep=2)
    return path


def run_stage(stage: Stage, out_dir: str | Path, config: Ovs3dConfig, *, name: str,
              extra_state: dict[str, Any] | None = None) -> StageResult:
    """Run ``stage`` to its last iteration, resuming from ``out_dir``'s latest checkpoint.

    Args:
        stage: :class:`StageA` or :class:`StageB` (their model already on its device).
        out_dir: The stage's run folder (checkpoints/, tensorboard/, losses.jsonl).
        config: The run's config (saved with every checkpoint).
        name: The progress bar's label.
        extra_state: weights_only-safe entries stored in every checkpoint.
    """
    from cns_ros.training.config import dump_config

    out_dir = Path(out_dir)
    generator = torch.Generator().manual_seed(stage.seed)
    iteration, rebuilt_at, optim_state, gen_state = _restore(stage, out_dir)
    if gen_state is not None:
        generator.set_state(gen_state)
    extra = {'config_yaml': dump_config(config), 'state': dict(extra_state or {})}
    optimizer, path = None, ckpt.latest_checkpoint(out_dir)
    factor = stage.lr_decay ** (1.0 / stage.iterations)
    with RunLog(out_dir, start=iteration, total=stage.iterations, enabled=True,
                log_every=config.log_every, progress=config.progress, desc=name) as log:
        if optim_state is not None:  # the optimiser as it was after the saved step
            stage.configure(iteration - 1)
            optimizer = build_adam(stage.param_groups())
            optimizer.load_state_dict(optim_state)
        while iteration < stage.iterations:
            if stage.events(iteration) or optimizer is None:
                optimizer = build_adam(stage.param_groups())
                rebuilt_at = iteration
            scale = factor ** (iteration - rebuilt_at)
            for group in optimizer.param_groups:
                group['lr'] = group['initial_lr'] * scale
            out = stage.loss(iteration, generator)
            optimizer.zero_grad(set_to_none=True)
            out.total.backward()
            optimizer.step()
            log.step({'step': iteration, 'loss': float(out.total.detach()),
                      **{f'loss/{k}': float(v.detach()) for k, v in out.terms.items()},
                      'lr': optimizer.param_groups[0]['lr'], **out.info})
            iteration += 1
            if iteration % config.checkpoint_every == 0 or iteration == stage.iterations:
                path = _save(stage, out_dir, iteration, rebuilt_at, optimizer, generator, extra)
    return StageResult(iteration, path, log.rows)
