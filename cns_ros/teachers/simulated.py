"""SIMULATED teachers: stand-ins for MaskCLIP and SAM on the SYNTHETIC world only.

They degrade the ground truth that :mod:`cns_ros.data.synthetic` renders beside every keyframe
image (``synthetic_gt/``) with structured, seeded noise, so the pseudo-label pipeline can run and
be tested without CLIP or SAM weights. Never real teachers, never selected implicitly
(``pseudo_label --teacher simulated`` / ``--sam simulated``), and :class:`NotSyntheticError` on a
dataset without ``synthetic_gt/``.

This module gathers the public names of the modules that implement them:

- :mod:`~cns_ros.teachers.synthetic_truth`: the ground-truth reader and the seeding;
- :mod:`~cns_ros.teachers.class_space`: the world's classes (nuScenes-16 driving, scannet20
  indoor), named by ``synthetic_gt/index.json``;
- :mod:`~cns_ros.teachers.simulated_clip` / :mod:`~cns_ros.teachers.simulated_sam`: the
  ``noise_free`` and ``clip_like`` stand-ins (errors drawn afresh per image, disjoint masks);
- :mod:`~cns_ros.teachers.realistic_clip`, :mod:`~cns_ros.teachers.realistic_sam` (with
  :mod:`~cns_ros.teachers.sam_atoms`) and :mod:`~cns_ros.teachers.sam_embedding`: the
  ``realistic`` stand-ins (persistent per-object errors, overlapping masks, an embedding that
  never reads the labels), calibrated to reference/teacher_noise.md section 7;
- :mod:`~cns_ros.teachers.teacher_noise`: the noise files (``config/teacher_noise/*.yaml``);
- :mod:`~cns_ros.teachers.teacher_calibration`: measurements against section 7's targets.
"""

from __future__ import annotations

from typing import Any

from cns_ros.teachers.class_space import (
    CLASS_SPACES,
    ClassSpace,
    ClassSpaceError,
    class_space,
)
from cns_ros.teachers.simulated_clip import (
    SimulatedClip,
    SimulatedClipConfig,
    clip_like_confusion,
    simulated_output_class,
)
from cns_ros.teachers.simulated_sam import SimulatedSam, SimulatedSamConfig, SimulatedSamStats
from cns_ros.teachers.synthetic_truth import (
    GT_FOLDER,
    NUM_CLASSES,
    GroundTruthImage,
    MissingRegionsError,
    NotSyntheticError,
    SyntheticGroundTruth,
    image_rng,
    regions,
    world_uniforms,
)
from cns_ros.teachers.teacher_noise import NoiseFileError, TeacherNoise, load_noise

__all__ = [
    'CLASS_SPACES',
    'GT_FOLDER',
    'NUM_CLASSES',
    'SIMULATED_PRESETS',
    'ClassSpace',
    'ClassSpaceError',
    'GroundTruthImage',
    'MissingRegionsError',
    'NoiseFileError',
    'NotSyntheticError',
    'SimulatedClip',
    'SimulatedClipConfig',
    'SimulatedSam',
    'SimulatedSamConfig',
    'SimulatedSamStats',
    'SyntheticGroundTruth',
    'TeacherNoise',
    'class_space',
    'clip_like_confusion',
    'image_rng',
    'load_noise',
    'regions',
    'simulated_output_class',
    'simulated_preset',
    'world_uniforms',
]

#: Preset names of ``pseudo_label --simulated-noise`` (files in config/teacher_noise/):
#: noise_free and clip_like fit every world, realistic the nuScenes-16 driving world,
#: realistic_indoor the scannet20 indoor world.
SIMULATED_PRESETS: tuple[str, ...] = ('noise_free', 'clip_like', 'realistic', 'realistic_indoor')


def simulated_preset(name: str, seed: int = 0) -> tuple[Any, Any]:
    """(clip config, sam config) of a preset or noise file (see :func:`load_noise`)."""
    noise = load_noise(name, seed)
    return noise.clip, noise.sam
