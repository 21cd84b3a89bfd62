"""Tests for cns_ros.vocabulary: built-ins, label maps, prompt templates, custom YAML files."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from cns_ros.vocabulary import (
    IGNORE_INDEX,
    LIDARSEG32_NAMES,
    Vocabulary,
    VocabularyClass,
    VocabularyError,
    class_prompts,
    lidarseg16_to_train,
    lidarseg32_to_16,
    load_vocabulary,
    nuscenes16,
    palette,
    prompt_templates,
    save_vocabulary,
    scannet20,
    train_to_lidarseg16,
    vocabulary_from_dict,
    vocabulary_to_dict,
)

ROOT = Path(__file__).resolve().parents[1]
NUSCENES16 = ('barrier', 'bicycle', 'bus', 'car', 'construction_vehicle', 'motorcycle',
              'pedestrian', 'traffic_cone', 'trailer', 'truck', 'driveable_surface', 'other_flat',
              'sidewalk', 'terrain', 'manmade', 'vegetation')
SCANNET20 = ('wall', 'floor', 'cabinet', 'bed', 'chair', 'sofa', 'table', 'door', 'window',
             'bookshelf', 'picture', 'counter', 'desk', 'curtain', 'refrigerator',
             'shower curtain', 'toilet', 'sink', 'bathtub', 'other furniture')
SCENE_TEMPLATES = ('there is a {} in the scene.', 'there is the {} in the scene.',
                   'this is a {} in the scene.', 'this is the {} in the scene.',
                   'this is one {} in the scene.')


def test_nuscenes16_builtin() -> None:
    vocab = nuscenes16()
    assert vocab.name == 'nuscenes16'
    assert vocab.names == NUSCENES16 and vocab.num_classes == 16
    assert vocab.colors.shape == (16, 3) and vocab.colors.dtype == np.uint8
    assert len({tuple(c) for c in vocab.colors}) == 16
    assert vocab.index('driveable_surface') == 10 and vocab.index('Driveable Surface') == 10
    assert vocab.prompt_names(10) == ('driveable surface', 'road', 'street')
    assert vocab.prompt_names(vocab.index('traffic_cone'))[0] == 'traffic cone'
    assert {'building', 'wall', 'pole', 'traffic sign'} <= set(vocab.classes[14].synonyms)
    assert {'tree', 'bush'} <= set(vocab.classes[15].synonyms)
    assert 'person' in vocab.classes[6].synonyms
    assert nuscenes16() is vocab  # cached, immutable


def test_scannet20_builtin() -> None:
    vocab = scannet20()
    assert vocab.names == SCANNET20 and vocab.num_classes == 20
    assert vocab.colors.shape == (20, 3)
    assert vocab.prompt_names(vocab.index('shower curtain'))[0] == 'shower curtain'


def test_lidarseg32_to_16_table() -> None:
    table = lidarseg32_to_16()
    assert table.shape == (32,) and table.dtype == np.uint8
    assert len(LIDARSEG32_NAMES) == 32 and LIDARSEG32_NAMES[0] == 'noise'
    assert LIDARSEG32_NAMES[31] == 'vehicle.ego'
    expected = {
        'movable_object.barrier': 'barrier', 'vehicle.bicycle': 'bicycle',
        'vehicle.bus.bendy': 'bus', 'vehicle.bus.rigid': 'bus', 'vehicle.car': 'car',
        'vehicle.construction': 'construction_vehicle', 'vehicle.motorcycle': 'motorcycle',
        'human.pedestrian.adult': 'pedestrian', 'human.pedestrian.child': 'pedestrian',
        'human.pedestrian.construction_worker': 'pedestrian',
        'human.pedestrian.police_officer': 'pedestrian',
        'movable_object.trafficcone': 'traffic_cone', 'vehicle.trailer': 'trailer',
        'vehicle.truck': 'truck', 'flat.driveable_surface': 'driveable_surface',
        'flat.other': 'other_flat', 'flat.sidewalk': 'sidewalk', 'flat.terrain': 'terrain',
        'static.manmade': 'manmade', 'static.vegetation': 'vegetation',
    }
    for fine_index, fine in enumerate(LIDARSEG32_NAMES):
        coarse = expected.get(fine)
        want = 0 if coarse is None else NUSCENES16.index(coarse) + 1
        assert table[fine_index] == want, fine
    spot = {0: 0, 1: 0, 2: 7, 5: 0, 7: 0, 9: 1, 12: 8, 13: 0, 17: 4, 19: 0, 24: 11, 29: 0,
            30: 16, 31: 0}
    assert {i: int(table[i]) for i in spot} == spot
    table[:] = 99  # a copy: the packaged table is unchanged
    assert lidarseg32_to_16()[17] == 4


def test_lidarseg_mapping_matches_devkit() -> None:
    utils = pytest.importorskip('nuscenes.eval.lidarseg.utils')
    color_map = pytest.importorskip('nuscenes.utils.color_map')
    # The devkit's fine colormap lists the 32 categories in label-index order.
    assert tuple(color_map.get_colormap()) == LIDARSEG32_NAMES
    # LidarsegClassMapper only reads `lidarseg_name2idx_mapping` from its NuScenes object.
    fake_nusc = SimpleNamespace(
        lidarseg_name2idx_mapping={name: i for i, name in enumerate(LIDARSEG32_NAMES)})
    mapper = utils.LidarsegClassMapper(fake_nusc)
    devkit_table = [mapper.fine_idx_2_coarse_idx_mapping[i] for i in range(32)]
    assert lidarseg32_to_16().tolist() == devkit_table
    coarse = sorted(mapper.coarse_name_2_coarse_idx_mapping.items(), key=lambda kv: kv[1])
    assert tuple(name for name, _ in coarse) == ('ignore', *NUSCENES16)
    colors = [mapper.coarse_colormap[name] for name in NUSCENES16]
    assert nuscenes16().colors.tolist() == [list(c) for c in colors]


def test_lidarseg16_train_maps() -> None:
    ids = np.arange(17)
    train = lidarseg16_to_train(ids)
    assert train.dtype == np.uint8
    assert train.tolist() == [IGNORE_INDEX, *range(16)]
    assert train_to_lidarseg16(train).tolist() == ids.tolist()
    grid = np.array([[0, 16], [3, 0]], dtype=np.uint8)
    assert lidarseg16_to_train(grid).shape == (2, 2)
    for bad in ([17], [-1]):
        with pytest.raises(VocabularyError, match=r'expected ids in 0\.\.16'):
            lidarseg16_to_train(bad)
    with pytest.raises(VocabularyError, match='integer label ids'):
        lidarseg16_to_train(np.array([1.0]))
    with pytest.raises(VocabularyError, match=r'found \[16, 254\]'):
        train_to_lidarseg16([0, 16, 254, 255])


@given(st.lists(st.integers(min_value=0, max_value=16), max_size=64))
def test_lidarseg16_train_round_trip(ids: list[int]) -> None:
    array = np.array(ids, dtype=np.int64)
    assert train_to_lidarseg16(lidarseg16_to_train(array)).tolist() == ids


def test_prompt_templates() -> None:
    templates = prompt_templates()
    assert len(templates) == 85 and len(set(templates)) == 85
    assert all(t.count('{}') == 1 for t in templates)
    assert templates[0] == 'a bad photo of a {}.' and templates[79] == 'a tattoo of the {}.'
    assert templates[80:] == SCENE_TEMPLATES
    assert prompt_templates('maskclip85') == templates
    assert prompt_templates('single') == ('a photo of a {}.',)
    with pytest.raises(VocabularyError, match="found 'imagenet'"):
        prompt_templates('imagenet')


def test_templates_match_open_clip() -> None:
    spec = importlib.util.find_spec('open_clip')
    if spec is None or spec.origin is None:
        pytest.skip('open_clip is not installed')
    # Load the metadata module by path: importing the open_clip package would import torch.
    path = Path(spec.origin).parent / 'zero_shot_metadata.py'
    module_spec = importlib.util.spec_from_file_location('_open_clip_zero_shot', path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    theirs = {template('{}') for template in module.OPENAI_IMAGENET_TEMPLATES}
    assert len(theirs) == 80
    assert set(prompt_templates()[:80]) == theirs


def test_class_prompts() -> None:
    vocab = nuscenes16()
    prompts = class_prompts(vocab, 10, prompt_templates('single'))
    assert prompts == ['a photo of a driveable surface.', 'a photo of a road.',
                       'a photo of a street.']
    assert len(class_prompts(vocab, 10)) == 3 * 85
    assert class_prompts(vocab, 2)[-1] == 'this is one bus in the scene.'


def test_palette() -> None:
    colors = palette(300)
    assert colors.shape == (300, 3) and colors.dtype == np.uint8
    assert len({tuple(c) for c in colors}) == 300
    np.testing.assert_array_equal(palette(25), colors[:25])
    assert palette(0).shape == (0, 3)
    with pytest.raises(VocabularyError):
        palette(-1)


def test_to_json_list() -> None:
    items = nuscenes16().to_json_list()
    assert items[0] == {'id': 0, 'name': 'barrier', 'color': [112, 128, 144]}
    assert [item['id'] for item in items] == list(range(16))
    assert json.loads(json.dumps(items)) == items


def test_with_names_keeps_known_classes() -> None:
    base = nuscenes16()
    custom = base.with_names(['car', 'road', 'Vegetation', 'traffic light', 'bench'])
    assert custom.names == ('car', 'road', 'Vegetation', 'traffic light', 'bench')
    assert custom.classes[0] == base.classes[base.index('car')]
    assert custom.classes[2].color == base.classes[15].color
    assert custom.classes[2].synonyms == base.classes[15].synonyms
    new_colors = {custom.classes[3].color, custom.classes[4].color}
    assert len(new_colors) == 2
    assert not new_colors & {custom.classes[0].color, custom.classes[2].color}
    # 'road' is a driveable_surface synonym: a separate class now, so it is dropped there.
    both = base.with_names(['driveable_surface', 'road'])
    assert both.classes[0].synonyms == ('street',)
    assert both.classes[0].color == base.classes[10].color


def _custom() -> dict[str, Any]:
    return {'name': 'robot', 'classes': [
        'road', {'name': 'car', 'synonyms': ['automobile'], 'color': [255, 0, 0]},
        {'name': 'traffic_light'}, 'tree']}


def test_custom_vocabulary_round_trip(tmp_path: Path) -> None:
    vocab = vocabulary_from_dict(_custom())
    assert vocab.names == ('road', 'car', 'traffic_light', 'tree')
    assert vocab.classes[1].color == (255, 0, 0)
    assert len({c.color for c in vocab.classes}) == 4
    path = tmp_path / 'vocab.yaml'
    save_vocabulary(vocab, path)
    assert path.read_text().startswith('# cns_ros class vocabulary')
    assert load_vocabulary(path) == vocab
    assert vocabulary_from_dict(vocabulary_to_dict(vocab)) == vocab
    assert [p.name for p in tmp_path.iterdir()] == ['vocab.yaml']
    assert vocabulary_from_dict({'classes': ['a']}).name == 'custom'


def test_builtin_round_trip(tmp_path: Path) -> None:
    for vocab in (nuscenes16(), scannet20()):
        save_vocabulary(vocab, tmp_path / f'{vocab.name}.yaml')
        assert load_vocabulary(tmp_path / f'{vocab.name}.yaml') == vocab


def test_example_config_loads() -> None:
    vocab = load_vocabulary(ROOT / 'config' / 'vocabularies' / 'example_custom.yaml')
    assert vocab.name == 'example_custom'
    assert vocab.num_classes >= 5 and vocab.index('car') >= 0


INVALID = [
    ('empty', {'classes': []}, 'classes: ', 'expected a non-empty list of classes, found 0'),
    ('missing_classes', {'name': 'x'}, 'classes: ', 'found None'),
    ('blank_name', {'classes': ['road', '  ']}, 'classes[1]: ', 'expected a non-blank string'),
    ('null_name', {'classes': ['road', None]}, 'classes[1]: ', 'found null'),
    ('blank_mapping_name', {'classes': [{'name': ''}]}, 'classes[0].name: ', 'non-blank'),
    ('missing_name', {'classes': [{'color': [1, 2, 3]}]}, 'classes[0].name: ',
     'required key missing'),
    ('duplicate', {'classes': ['car', 'road', 'Car']}, 'classes[2].name: ',
     "found 'Car', already used by classes[0] 'car'"),
    ('duplicate_underscore', {'classes': ['traffic cone', 'traffic_cone']}, 'classes[1].name: ',
     'unique across classes'),
    ('name_is_synonym', {'classes': [{'name': 'road', 'synonyms': ['street']}, 'Street']},
     'classes[1].name: ', "found 'Street', already used by classes[0] 'road'"),
    ('shared_synonym', {'classes': [{'name': 'a', 'synonyms': ['x']},
                                    {'name': 'b', 'synonyms': ['x']}]},
     'classes[1].synonyms: ', "found 'x'"),
    ('color_length', {'classes': [{'name': 'a', 'color': [1, 2]}]}, 'classes[0].color: ',
     'expected 3 integers in 0..255, found [1, 2]'),
    ('color_range', {'classes': [{'name': 'a', 'color': [0, 0, 256]}]}, 'classes[0].color: ',
     'found [0, 0, 256]'),
    ('color_float', {'classes': [{'name': 'a', 'color': [0.5, 0, 0]}]}, 'classes[0].color: ',
     'expected 3 integers'),
    ('color_bool', {'classes': [{'name': 'a', 'color': [True, 0, 0]}]}, 'classes[0].color: ',
     'expected 3 integers'),
    ('color_string', {'classes': [{'name': 'a', 'color': 'red'}]}, 'classes[0].color: ',
     "found 'red'"),
    ('unknown_class_key', {'classes': [{'name': 'a', 'colour': [1, 2, 3]}]}, 'classes[0]: ',
     'expected only the keys name, synonyms, color; found unknown key(s) colour'),
    ('unknown_top_key', {'classes': ['a'], 'prompts': []}, 'expected only the keys name, '
     'classes', 'found unknown key(s) prompts'),
    ('synonyms_string', {'classes': [{'name': 'a', 'synonyms': 'b'}]}, 'classes[0].synonyms: ',
     "expected a list of strings, found 'b'"),
    ('blank_synonym', {'classes': [{'name': 'a', 'synonyms': ['b', '']}]},
     'classes[0].synonyms[1]: ', 'non-blank'),
    ('class_int', {'classes': [3]}, 'classes[0]: ', 'expected a class name or a mapping'),
    ('top_list', ['a', 'b'], 'expected a mapping with keys name, classes', 'found list'),
]


@pytest.mark.parametrize(('data', 'path', 'message'), [c[1:] for c in INVALID],
                         ids=[c[0] for c in INVALID])
def test_invalid_vocabulary_file(tmp_path: Path, data: object, path: str, message: str) -> None:
    file = tmp_path / 'vocab.yaml'
    file.write_text(yaml.safe_dump(data))
    with pytest.raises(VocabularyError) as info:
        load_vocabulary(file)
    text = str(info.value)
    assert text.startswith(f'{file}: '), text
    assert path in text and message in text, text


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(VocabularyError, match=r'nope\.yaml: vocabulary file not found'):
        load_vocabulary(tmp_path / 'nope.yaml')
    bad = tmp_path / 'bad.yaml'
    bad.write_text('classes: [unclosed\n')
    with pytest.raises(VocabularyError, match=r'bad\.yaml: not valid YAML'):
        load_vocabulary(bad)


def test_constructors_validate() -> None:
    with pytest.raises(VocabularyError, match='color: expected 3 integers'):
        VocabularyClass('a', (), (0, 0, 300))  # type: ignore[arg-type]
    with pytest.raises(VocabularyError, match='classes: expected a non-empty list'):
        Vocabulary('v', ())
    cls = VocabularyClass('a', ['b'], [1, 2, 3])  # type: ignore[arg-type]
    assert cls.synonyms == ('b',) and cls.color == (1, 2, 3)
    with pytest.raises(VocabularyError, match=r"classes\[1\]\.name: .*'A'"):
        Vocabulary('v', (cls, VocabularyClass('A', (), (4, 5, 6))))
    with pytest.raises(VocabularyError, match="found 'boat'"):
        nuscenes16().index('boat')
