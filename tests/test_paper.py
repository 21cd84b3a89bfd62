"""The ``paper`` setting (cns_ros/paper.py): each of its three switches changes exactly what it
says and nothing else.

1. prompt names: the reference code's literal strings (reference/cns_clip2scene.md A2.3);
2. CLIP input: RGB / 255 instead of CLIP's mean / std (A2.2);
3. target switching: the code's rule (B5.2, A5.2), with each DDP rank drawing its own source.

CLIP is a real open_clip architecture at a tiny size with random weights (no weights can be
downloaded here), as in test_clip_dense.
"""

from __future__ import annotations

import dataclasses
import json
import types
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip('torch')
open_clip = pytest.importorskip('open_clip')

from cns_ros.paper import DEFAULT_CHOICES, PAPER_CHOICES, paper_choices  # noqa: E402
from cns_ros.teachers import clip_dense as cd  # noqa: E402
from cns_ros.training.clip2scene import Clip2SceneMethod  # noqa: E402
from cns_ros.training.cns import CoTraining  # noqa: E402
from cns_ros.training.config import (  # noqa: E402
    Clip2SceneConfig,
    CNSConfig,
    ConfigError,
    ModelConfig,
    TextConfig,
    TrainConfig,
    load_config,
)
from cns_ros.training.loop import Progress  # noqa: E402
from cns_ros.vocabulary import class_prompts, nuscenes16, paper_class_name  # noqa: E402
from offline_training import pseudo_label, train  # noqa: E402

#: CLIP2Scene's utils/prompt_engineering.py nuScenes class strings (reference A2.3), typed here.
REFERENCE_NUSCENES = ['barrier', 'bicycle', 'bus', 'car', 'construction vehicle', 'motorcycle',
                      'pedestrian', 'traffic_cone', 'trailer', 'truck', 'driveable surface',
                      'other_flat', 'sidewalk', 'terrain', 'manmade', 'vegetation']
SIZE = (32, 48)
CLIP_CFG = {'embed_dim': 32, 'quick_gelu': True,
            'vision_cfg': {'image_size': 32, 'layers': 1, 'width': 64, 'head_width': 32,
                           'patch_size': 16},
            'text_cfg': {'context_length': 77, 'vocab_size': 49408, 'width': 32, 'heads': 1,
                         'layers': 1}}


@pytest.fixture(scope='module')
def clip_files(tmp_path_factory) -> tuple[str, str]:
    """(model-config JSON, checkpoint of its seeded random weights)."""
    folder = tmp_path_factory.mktemp('paper_clip')
    config = folder / 'cnspaper-vit.json'
    config.write_text(json.dumps(CLIP_CFG))
    clip = cd.load_clip(cd.ClipDenseConfig(model_name=str(config), allow_random_weights=True,
                                           random_seed=5))
    checkpoint = folder / 'weights.pt'
    torch.save(clip.model.state_dict(), checkpoint)
    return str(config), str(checkpoint)


# --- 1. prompt names ------------------------------------------------------------------------

def test_paper_prompts_are_the_reference_strings_one_per_class():
    vocab = nuscenes16()
    assert [vocab.prompt_names(i, 'paper') for i in range(16)] == \
        [(name,) for name in REFERENCE_NUSCENES]
    cone = vocab.index('traffic_cone')
    assert class_prompts(vocab, cone, ('a photo of a {}.',), style='paper') == \
        ['a photo of a traffic_cone.']
    assert class_prompts(vocab, cone, ('a photo of a {}.',)) == \
        ['a photo of a traffic cone.', 'a photo of a cone.']  # default: readable + synonyms
    assert vocab.prompt_names(vocab.index('manmade'), 'paper') == ('manmade',)
    assert vocab.prompt_names(vocab.index('manmade'))[0] == 'manmade'
    assert len(vocab.prompt_names(vocab.index('manmade'))) > 1
    # any spelling of a reference class maps to its string; other classes stay verbatim
    assert paper_class_name('Traffic Cone') == 'traffic_cone'
    assert paper_class_name('driveable_surface') == 'driveable surface'
    assert paper_class_name('robot_arm') == 'robot_arm'
    custom = vocab.with_names(['other flat', 'robot_arm'])
    assert [custom.prompt_names(i, 'paper') for i in range(2)] == [('other_flat',),
                                                                    ('robot_arm',)]
    with pytest.raises(ValueError, match='prompt style'):
        vocab.prompt_names(0, 'fancy')


# --- 1 + 2 in the teacher: pseudo_label --paper -------------------------------------------

def _teacher(clip_files, paper: bool) -> cd.MaskClipTeacher:
    config = pseudo_label.PseudoLabelConfig(
        teacher='maskclip', clip_model=clip_files[0], clip_checkpoint=clip_files[1],
        image_size=SIZE, clip_templates='single', paper=paper)
    return pseudo_label._Teachers(config, Path('unused'), 'cpu', 2).clip


def test_pseudo_label_paper_flips_normalisation_and_prompts_only(clip_files):
    default, paper = _teacher(clip_files, False), _teacher(clip_files, True)
    a, b = dataclasses.asdict(default.config), dataclasses.asdict(paper.config)
    assert {k for k in a if a[k] != b[k]} == {'normalize_input', 'prompt_style'}
    assert (a['normalize_input'], a['prompt_style']) == (True, 'default')
    assert (b['normalize_input'], b['prompt_style']) == (False, 'paper')
    # prompts: one literal string per class (with the 'single' template)
    clip = paper.clip
    expected = cd.text_embeddings_from_names(clip, REFERENCE_NUSCENES, ('a photo of a {}.',))
    torch.testing.assert_close(paper.text, expected)
    cone = nuscenes16().index('traffic_cone')
    readable = cd.text_embeddings_from_names(clip, [('traffic cone', 'cone')],
                                             ('a photo of a {}.',))
    torch.testing.assert_close(default.text[cone], readable[0])
    assert not torch.allclose(default.text[cone], paper.text[cone], atol=1e-4)
    # normalisation: the paper teacher sees the [0, 1] image itself, the default CLIP's input
    images = torch.rand(1, 3, *SIZE, generator=torch.Generator().manual_seed(3))
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    visual = clip.model.visual
    with torch.no_grad():
        raw = torch.nn.functional.normalize(cd.dense_clip_features(visual, images), dim=1)
        normed = torch.nn.functional.normalize(
            cd.dense_clip_features(visual, (images - mean) / std), dim=1)
    torch.testing.assert_close(paper(images).features, raw, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(default(images).features, normed, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(raw, normed, atol=1e-3)


def test_training_text_embeddings_use_the_paper_names(clip_files):
    text = TextConfig(clip_checkpoint=clip_files[1], clip_model=clip_files[0],
                      templates='single', dim=32)
    names = list(nuscenes16().names)
    paper = train.text_embeddings(TrainConfig(text=text, paper=True), names)
    default = train.text_embeddings(TrainConfig(text=text), names)
    clip = cd.load_clip(cd.ClipDenseConfig(model_name=clip_files[0],
                                           checkpoint=clip_files[1]))
    template = ('a photo of a {}.',)
    torch.testing.assert_close(paper, cd.text_embeddings_from_names(clip, REFERENCE_NUSCENES,
                                                                    template))
    torch.testing.assert_close(default, cd.text_embeddings(clip, nuscenes16(), template))
    same = [n == r for n, r in zip(names, REFERENCE_NUSCENES, strict=True)]
    synonyms = [not nuscenes16().classes[i].synonyms for i in range(16)]
    rows_equal = [bool(torch.allclose(paper[i], default[i], atol=1e-6)) for i in range(16)]
    # only classes whose name has no synonyms and reads the same in both styles keep their row
    assert rows_equal == [s and n for s, n in zip(same, synonyms, strict=True)]


# --- 3. target switching ---------------------------------------------------------------------

def _u(seed: int, salt: int, step: int, rank: int | None = None) -> float:
    key = [seed, salt, step] + ([] if rank is None else [rank])
    return float(np.random.default_rng(key).random())


def _code_rule(u: float, own: str, other: str) -> str:
    """The code's rd = randint(1, 10): 1-2 refined teacher, 3-6 own, 7-10 other (B5.2)."""
    rd = int(u * 10) + 1
    return 'teacher_pixel' if rd <= 2 else own if rd <= 6 else other


def test_cns_switching_decisions_follow_the_code_rule_per_rank():
    seed, steps = 7, range(40)
    shared = CoTraining(CNSConfig(), seed, 16, per_rank_switching=False)
    paper = CoTraining(CNSConfig(), seed, 16, per_rank_switching=True)
    for step in steps:  # warm-up: epochs 0..9 are the teacher's, on every rank
        for co in (shared, paper):
            assert co.sources(Progress(step, 9, rank=1), True) == ('teacher_pixel',) * 2
    for rank in (0, 1, 3):
        key_rank = rank if rank > 0 else None
        expected = [(_code_rule(_u(seed, 3, s, key_rank), 'pred_3d', 'pred_2d'),
                     _code_rule(_u(seed, 2, s, key_rank), 'pred_2d', 'pred_3d'))
                    for s in steps]
        assert [paper.sources(Progress(s, 10, rank), True) for s in steps] == expected
    rank0 = [shared.sources(Progress(s, 10, 0), True) for s in steps]
    assert [shared.sources(Progress(s, 10, 1), True) for s in steps] == rank0  # one draw
    assert [paper.sources(Progress(s, 10, 0), True) for s in steps] == rank0  # 1 process: same
    assert [paper.sources(Progress(s, 10, 1), True) for s in steps] != rank0
    assert {s for pair in rank0 for s in pair} == {'teacher_pixel', 'pred_2d', 'pred_3d'}


def test_clip2scene_self_training_follows_the_code_rule_per_rank():
    net = types.SimpleNamespace(classifier=types.SimpleNamespace(num_classes=16))
    seed, steps = 2, range(40)
    shared = Clip2SceneMethod(net, Clip2SceneConfig(), ModelConfig(), seed)
    paper = Clip2SceneMethod(net, Clip2SceneConfig(), ModelConfig(), seed,
                             per_rank_switching=True)
    for method in (shared, paper):  # the code: self-training only when epoch > 10
        assert {method.source(Progress(s, 10, 2)) for s in steps} == {'teacher'}
    for rank in (0, 2):
        key_rank = rank if rank > 0 else None
        expected = ['self' if _u(seed, 5, s, key_rank) >= 0.5 else 'teacher' for s in steps]
        assert [paper.source(Progress(s, 11, rank)) for s in steps] == expected
    rank0 = [shared.source(Progress(s, 11, 0)) for s in steps]
    assert [shared.source(Progress(s, 11, 2)) for s in steps] == rank0
    assert [paper.source(Progress(s, 11, 2)) for s in steps] != rank0


def test_paper_config_pins_the_code_switching_rule():
    assert paper_choices(False) is DEFAULT_CHOICES and paper_choices(True) is PAPER_CHOICES
    config = load_config(None, ['paper=true'])
    assert config.paper and config.cns.switching == 'code' and not config.cns.refines_3d()
    for override, key in (('cns.switching=paper', r'cns\.switching'),
                          ('cns.refine_3d_predictions=true', r'cns\.refine_3d_predictions'),
                          ('clip2scene.self_training_prob=0.3',
                           r'clip2scene\.self_training_prob')):
        load_config(None, [override])  # allowed without paper
        with pytest.raises(ConfigError, match=key + ".*reference code's switching rule"):
            load_config(None, ['paper=true', override])


def test_train_builds_per_rank_switching_only_under_paper():
    overrides = ['method=clip2scene', 'model.name_3d=minkunet14a', 'text.dim=16',
                 'model.options_3d={channel_scale: 0.125, out_dim: 16}']
    text = torch.nn.functional.normalize(torch.randn(16, 16), dim=1)
    for paper in (False, True):
        config = load_config(None, [*overrides, f'paper={str(paper).lower()}'])
        assert train.build_method(config, text).self_training.per_rank is paper
