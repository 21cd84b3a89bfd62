"""3D-OVS from a scene folder to a trained model: the steps :mod:`offline_training.train_ovs3d`
runs, usable from Python.

:func:`scene_projection` -> :func:`train_stage_a` -> :func:`train_stage_b` (both resumable
from their run folders) -> :func:`load_stage_model`. Text embeddings of class lists come from
:func:`text_embeddings` (raw class text by default, a named template set averaged otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cns_ros.ovs3d.model import Ovs3dModel, model_from_state
from cns_ros.ovs3d.projection import Projection
from cns_ros.ovs3d.ray_data import clip_ray_table, image_ray_table, patch_source
from cns_ros.ovs3d.training import Ovs3dConfig, StageA, StageB, StageResult, run_stage
from cns_ros.training import checkpoint as ckpt

STAGE_A_DIR = 'stage_a'
STAGE_B_DIR = 'stage_b'


def scene_projection(scene: Any) -> Projection:
    """The scene's own projection when it has one (a posed capture: bounded, world metres),
    else the NDC projection of a forward-facing (LLFF) scene, from its stored hwf."""
    projection = getattr(scene, 'projection', None)
    if projection is not None:
        return projection
    height, width, focal = scene.hwf
    return Projection('ndc', int(height), int(width), float(focal))


def text_embeddings(encoder: Any, names: Sequence[str], templates: str = 'raw') -> Tensor:
    """Unit text embeddings [C, D] of class names.

    Args:
        encoder: A text encoder (``encode_text(texts) -> [N, D]``).
        names: The class texts.
        templates: A set of :func:`cns_ros.vocabulary.prompt_templates` ('raw': the text
            itself); with several templates a class's embedding is their normalised mean.
    """
    from cns_ros.vocabulary import prompt_templates

    forms = prompt_templates(templates)
    rows = []
    for name in names:
        emb = encoder.encode_text([t.replace('{}', name) for t in forms]).float()
        rows.append(torch.nn.functional.normalize(emb.mean(0), dim=-1))
    return torch.stack(rows)


def train_stage_a(scene: Any, out: Path, config: Ovs3dConfig, device: torch.device
                  ) -> StageResult:
    """Stage A on every view of ``scene`` (resumes from ``out/stage_a``)."""
    torch.manual_seed(config.stage_a.seed)
    model = Ovs3dModel(config.field, scene_projection(scene)).to(device)
    rays = image_ray_table(scene, model.projection, range(len(scene.image_paths)),
                           config.stage_a.downsample)
    return run_stage(StageA(model, rays, config), out / STAGE_A_DIR, config, name='stage A')


def load_stage_model(out: Path, stage: str, device: torch.device | str = 'cpu'
                     ) -> tuple[Ovs3dModel, dict[str, Any]]:
    """The model of a finished stage's latest checkpoint, and that checkpoint's state."""
    path = ckpt.latest_checkpoint(out / stage)
    if path is None:
        raise FileNotFoundError(f'{out / stage}: no checkpoint (run that stage first)')
    state = ckpt.load_checkpoint(path, map_location=device)
    return model_from_state(state['model'], device), state


def clip_views(count: int, fraction: float, seed: int) -> list[int]:
    """The seeded subset of views that supervise with CLIP (at least one)."""
    chosen = max(1, round(count * fraction))
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(count, size=chosen, replace=False).tolist())


def train_stage_b(scene: Any, cache: Any, text: Tensor, out: Path, config: Ovs3dConfig,
                  device: torch.device) -> StageResult:
    """Stage B from stage A's final model (resumes from ``out/stage_b``)."""
    model, _ = load_stage_model(out, STAGE_A_DIR, device)
    torch.manual_seed(config.stage_b.seed)
    first = cache.clip_features(cache.views[0])
    model.add_semantic_heads(int(first.shape[1]), int(first.shape[0]))
    model.to(device)
    views = clip_views(len(scene.image_paths), config.stage_b.clip_fraction,
                       config.stage_b.seed)
    clip = clip_ray_table(scene, model.projection, cache, views, text)
    patches = (patch_source(scene, model.projection, cache, range(len(scene.image_paths)))
               if config.stage_b.fda else None)
    stage = StageB(model, clip, patches, text, config)
    return run_stage(stage, out / STAGE_B_DIR, config, name='stage B',
                     extra_state={'class_names': list(scene.class_names),
                                  'text_embeddings': text.cpu(), 'clip_views': views})
