"""Noise files of the simulated teachers (config/teacher_noise/*.yaml): presets, resolution,
and the errors of bad files (no data needed)."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from cns_ros.teachers.realistic_clip import RealisticClip, RealisticClipConfig
from cns_ros.teachers.realistic_sam import RealisticSam
from cns_ros.teachers.simulated import SIMULATED_PRESETS, simulated_preset
from cns_ros.teachers.simulated_clip import SimulatedClip, SimulatedClipConfig
from cns_ros.teachers.simulated_sam import SimulatedSam, SimulatedSamConfig
from cns_ros.teachers.teacher_noise import (
    PRESETS,
    NoiseFileError,
    load_noise,
    resolve_noise_file,
)
from cns_ros.vocabulary import nuscenes16


def test_every_preset_has_a_file_and_loads(tmp_path):
    assert set(SIMULATED_PRESETS) <= set(PRESETS)
    for name in PRESETS:
        noise = load_noise(name, seed=7)
        assert resolve_noise_file(name).name == f'{name}.yaml' and noise.name == name
        assert noise.clip.seed == noise.sam.seed == 7
        assert noise.as_dict()['clip']['seed'] == 7


def test_the_old_presets_are_unchanged():
    clip, sam = simulated_preset('clip_like', seed=3)
    assert clip == SimulatedClipConfig(
        seed=3, target_accuracy=0.60, boundary_radius=3, boundary_prob=0.5,
        region_swap_prob=0.2, patch_size=16, patch_confusion_prob=0.3, confidence_correct=0.65,
        confidence_wrong=0.45, confidence_spread=0.15)
    assert sam == SimulatedSamConfig(seed=3, split_prob=0.15, merge_prob=0.1, min_area=16)
    assert simulated_preset('noise_free') == (SimulatedClipConfig(), SimulatedSamConfig())
    clip_teacher, sam_teacher = load_noise('clip_like').build()
    assert isinstance(clip_teacher, SimulatedClip) and isinstance(sam_teacher, SimulatedSam)


def test_realistic_preset_maps_class_names_and_records_every_parameter():
    noise = load_noise('realistic')
    assert noise.generators() == {'clip': 'realistic', 'sam': 'realistic',
                                  'embedding': 'realistic'}
    clip, sam = noise.build()
    assert isinstance(clip, RealisticClip) and isinstance(sam, RealisticSam)
    names = nuscenes16().names
    other_flat, driveable = names.index('other_flat'), names.index('driveable_surface')
    assert noise.clip.persistent_wrong[other_flat] > 0.9  # near zero IoU: name not understood
    matrix = noise.clip.confusion_matrix()
    assert np.argmax(matrix[names.index('trailer')]) == names.index('truck')
    assert matrix[other_flat, driveable] > 0.3
    recorded = noise.as_dict()
    for section, config in (('clip', noise.clip), ('sam', noise.sam),
                            ('embedding', noise.embedding)):
        assert set(recorded[section]) == {'generator'} | set(vars(config))


def _write(tmp_path, text: str):
    path = tmp_path / 'noise.yaml'
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize(('text', 'message'), [
    ('clip:\n  generator: realistic\n  persistant_wrong: {default: 0.1}\n',
     r'clip\.persistant_wrong: unknown key'),
    ('clop:\n  generator: realistic\n', "unknown section 'clop'"),
    ('sam:\n  generator: perfect\n', r"sam\.generator: unknown 'perfect'"),
    ('clip:\n  generator: realistic\n  view_wrong: {default: 0.1, lorry: 0.3}\n',
     r"clip\.view_wrong\.lorry: unknown class 'lorry'"),
    ('clip:\n  generator: realistic\n  view_wrong: {car: 0.1}\n',
     r'clip\.view_wrong: no value for barrier'),
    ('clip:\n  generator: realistic\n  confusion: {car: {truck: -1}}\n',
     r'clip\.confusion\.car\.truck: expected a weight'),
    ('clip:\n  generator: realistic\n  context_classes: 2.5\n',
     r'clip\.context_classes: expected an integer'),
    ('clip:\n  generator: realistic\n  flip_prob: 1.5\n', r'clip: .*flip_prob'),
    ('clip:\n  generator: realistic\n  seed: 3\n', r'clip\.seed: unknown key'),
    ('embedding:\n  generator: label_projection\n  noise_weight: 1\n',
     'has no parameters'),
    ('clip: [1, 2\n', 'not valid YAML'),
])
def test_bad_noise_files_name_the_file_and_the_key(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(NoiseFileError, match=message) as info:
        load_noise(path)
    assert str(path) in str(info.value)


def test_missing_files_and_partial_files(tmp_path):
    with pytest.raises(NoiseFileError, match='does not exist'):
        load_noise(tmp_path / 'nope.yaml')
    with pytest.raises(NoiseFileError, match='presets'):
        load_noise('perfect')
    noise = load_noise(_write(tmp_path, '''
        clip:
          generator: realistic
          patch_grid: [7, 13]
          persistent_wrong: {default: 0.2, car: 0.5}
    '''))
    assert isinstance(noise.clip, RealisticClipConfig) and noise.clip.patch_grid == (7, 13)
    assert noise.clip.persistent_wrong[nuscenes16().names.index('car')] == 0.5
    assert noise.sam == SimulatedSamConfig() and noise.embedding is None  # noise-free rest
    assert noise.name == 'noise'
