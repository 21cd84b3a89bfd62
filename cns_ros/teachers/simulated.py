"""SIMULATED teachers: stand-ins for MaskCLIP and SAM on the SYNTHETIC world only.

They degrade the ground truth that :mod:`cns_ros.data.synthetic` renders beside every keyframe
image (``synthetic_gt/``) with structured, seeded noise, so the pseudo-label pipeline can run and
be tested without CLIP or SAM weights. Never real teachers, never selected implicitly
(``pseudo_label --teacher simulated`` / ``--sam simulated``), and :class:`NotSyntheticError` on a
dataset without ``synthetic_gt/``.

This module gathers the public names of the modules that implement them:

- :mod:`~cns_ros.teachers.synthetic_truth`: the ground-truth reader and the seeding;
- :mod:`~cns_ros.teachers.simulated_clip` / :mod:`~cns_ros.teachers.simulated_sam`: the
  ``noise_free`` and ``clip_like`` stand-ins (errors drawn afresh per image, disjoint masks);
"""

from __future__ import annotations

from cns_ros.teachers.simulated_clip import (
    NUM_CLASSES,
    SimulatedClip,
    SimulatedClipConfig,
    clip_like_confusion,
    simulated_output_class,
)
from cns_ros.teachers.simulated_sam import SimulatedSam, SimulatedSamConfig, SimulatedSamStats
from cns_ros.teachers.synthetic_truth import (
    GT_FOLDER,
    GroundTruthImage,
    MissingRegionsError,
    NotSyntheticError,
    SyntheticGroundTruth,
    image_rng,
    regions,
    world_uniforms,
)

__all__ = ['GT_FOLDER', 'NUM_CLASSES', 'SIMULATED_PRESETS', 'GroundTruthImage',
           'MissingRegionsError', 'NotSyntheticError', 'SimulatedClip', 'SimulatedClipConfig',
           'SimulatedSam', 'SimulatedSamConfig', 'SimulatedSamStats', 'SyntheticGroundTruth',
           'clip_like_confusion', 'image_rng', 'regions', 'simulated_output_class',
           'simulated_preset', 'world_uniforms']

SIMULATED_PRESETS: tuple[str, ...] = ('noise_free', 'clip_like')


def simulated_preset(name: str, seed: int = 0) -> tuple[SimulatedClipConfig, SimulatedSamConfig]:
    """Configs of a preset: 'noise_free' (ground truth, confidence 1) or 'clip_like'.

    'clip_like' approximates MaskCLIP on driving scenes: 60 % pixel accuracy (calibrated), 3 px
    boundary bleeding, 20 % region swaps, 16 px patch confusions, confidence 0.65 right / 0.45
    wrong (+- 0.15); SAM-like masks with 15 % splits, 10 % merges, no mask under 16 px.
    """
    if name == 'noise_free':
        return SimulatedClipConfig(seed=seed), SimulatedSamConfig(seed=seed)
    if name == 'clip_like':
        return (SimulatedClipConfig(seed=seed, target_accuracy=0.60, boundary_radius=3,
                                    boundary_prob=0.5, region_swap_prob=0.2, patch_size=16,
                                    patch_confusion_prob=0.3, confidence_correct=0.65,
                                    confidence_wrong=0.45, confidence_spread=0.15),
                SimulatedSamConfig(seed=seed, split_prob=0.15, merge_prob=0.1, min_area=16))
    raise ValueError(f'unknown simulated preset {name!r}; expected one of {SIMULATED_PRESETS}')
