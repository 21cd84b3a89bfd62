"""MaskCLIP on open_clip: checked against open_clip's own modules with random weights.

Every model here is a real open_clip architecture built at a small size from a model-config
JSON (2 ViT blocks, width 128, 16 px patches, 64 px trained images; a 1-block text tower) with
random weights, as DESIGN.md asks: no CLIP weights can be downloaded here.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip('torch')
open_clip = pytest.importorskip('open_clip')

from torch import nn  # noqa: E402

from cns_ros.teachers import clip_dense as cd  # noqa: E402
from cns_ros.vocabulary import (  # noqa: E402
    Vocabulary,
    VocabularyClass,
    class_prompts,
    nuscenes16,
    prompt_templates,
)

ROOT = Path(__file__).resolve().parents[1]
TEXT_CFG = {'context_length': 77, 'vocab_size': 49408, 'width': 64, 'heads': 1, 'layers': 1}
VISION_CFG = {'image_size': 64, 'layers': 2, 'width': 128, 'head_width': 64, 'patch_size': 16}
VARIANTS = {  # quick_gelu + 64-wide heads also make the OpenAI TorchScript layout possible
    'cnstest-vit': {},
    'cnstest-vit-layerscale': {'ls_init_value': 0.5},
    'cnstest-vit-custom': {'scale_heads': True, 'scale_attn_inner': True, 'scale_attn': True,
                           'scale_fc': True},
    'cnstest-resnet': {'layers': [1, 1, 1, 1], 'width': 16, 'head_width': 16},
    'cnstest-vit-attnpool': {'attentional_pool': True, 'attn_pooler_queries': 4,
                             'attn_pooler_heads': 1},
}
SIZE = (64, 96)  # a 4 x 6 token grid; the trained grid is 4 x 4


@pytest.fixture(scope='module')
def configs(tmp_path_factory) -> dict[str, str]:
    """Model-config JSON path per variant name."""
    folder = tmp_path_factory.mktemp('open_clip_configs')
    paths = {}
    for name, vision in VARIANTS.items():
        cfg = {'embed_dim': 32, 'quick_gelu': True, 'vision_cfg': {**VISION_CFG, **vision},
               'text_cfg': TEXT_CFG}
        paths[name] = str(folder / f'{name}.json')
        Path(paths[name]).write_text(json.dumps(cfg))
    return paths


def _config(configs, variant='cnstest-vit', **kwargs) -> cd.ClipDenseConfig:
    defaults = {'model_name': configs[variant], 'allow_random_weights': True,
                'image_size': SIZE, 'templates': 'single'}
    return cd.ClipDenseConfig(**{**defaults, **kwargs})


def _jitter(model: nn.Module, seed: int = 1) -> nn.Module:
    """Perturb every parameter (LayerNorm gains, head scales, ... are not left at 1 / 0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
    return model


def _images(b=2, h=SIZE[0], w=SIZE[1], seed=0) -> torch.Tensor:
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _diagonal_mask(length: int) -> torch.Tensor:
    """Additive mask letting each token attend only to itself: softmax over one key is 1."""
    mask = torch.full((length, length), float('-inf'))
    return mask.fill_diagonal_(0.0)


def _reference_tokens(visual: nn.Module, images: torch.Tensor, seq_first=False) -> torch.Tensor:
    """(B, h*w, D) from open_clip's stock modules: embeds, blocks, last block self-only, head."""
    x = visual._embeds(images)
    *early, last = visual.transformer.resblocks
    if seq_first:
        x = x.transpose(0, 1)
    for block in early:
        x = block(x)
    x = last(x, attn_mask=_diagonal_mask(x.shape[0] if seq_first else x.shape[1]))
    if seq_first:
        x = x.transpose(0, 1)
    return visual.ln_post(x[:, 1:]) @ visual.proj


def _ours(visual, images) -> torch.Tensor:
    dense = cd.dense_clip_features(visual, images)
    return dense.flatten(2).transpose(1, 2)  # (B, D, h, w) -> (B, h*w, D), row-major


@pytest.mark.parametrize('variant', ['cnstest-vit', 'cnstest-vit-layerscale',
                                     'cnstest-vit-custom'])
@torch.no_grad()
def test_dense_path_matches_open_clip_blocks_with_self_only_attention(configs, variant):
    visual = _jitter(cd.load_clip(_config(configs, variant)).model).visual
    images = _images(h=64, w=64)  # the trained grid: the stock embedding applies as is
    torch.testing.assert_close(_ours(visual, images), _reference_tokens(visual, images),
                               atol=1e-5, rtol=1e-5)
    # A 4 x 6 grid: the stock path given our resized positional embedding (checks token order).
    wide = copy.deepcopy(visual)
    wide.positional_embedding = nn.Parameter(cd.interpolate_positional_embedding(
        visual.positional_embedding, visual.grid_size, (4, 6)))
    images = _images()
    torch.testing.assert_close(_ours(visual, images), _reference_tokens(wide, images),
                               atol=1e-5, rtol=1e-5)
    assert cd.dense_clip_features(visual, images).shape == (2, 32, 4, 6)
    assert cd.dense_clip_features(visual, images, projected=False).shape == (2, 128, 4, 6)


@torch.no_grad()
def test_sequence_first_transformer_layout(configs):
    """Older open_clip runs blocks on (L, B, width); the result must not change."""
    visual = _jitter(cd.load_clip(_config(configs)).model).visual
    images = _images(h=64, w=64)
    expected = _ours(visual, images)
    pooled = visual(images)
    visual.transformer.batch_first = False
    for block in visual.transformer.resblocks:
        block.attn.batch_first = False
    torch.testing.assert_close(visual(images), pooled, atol=1e-5, rtol=1e-5)  # a real layout
    torch.testing.assert_close(_ours(visual, images), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(_reference_tokens(visual, images, seq_first=True), expected,
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('variant', ['cnstest-vit-layerscale', 'cnstest-vit-custom'])
@torch.no_grad()
def test_last_block_token_ignores_other_tokens(configs, variant):
    block = _jitter(cd.load_clip(_config(configs, variant)).model).visual.transformer.resblocks[-1]
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 25, 128, generator=gen)
    others = x.clone()
    others[:, torch.arange(25) != 7] += torch.randn(2, 24, 128, generator=gen)
    torch.testing.assert_close(cd.value_path(block, others)[:, 7], cd.value_path(block, x)[:, 7],
                               atol=1e-6, rtol=0)
    # The stock block (full attention) does mix tokens: the check above can fail.
    assert not torch.allclose(block(others)[:, 7], block(x)[:, 7], atol=1e-3)


def test_positional_embedding_interpolation():
    pos = torch.randn(1 + 14 * 14, 768)
    assert cd.interpolate_positional_embedding(pos, (14, 14), (14, 14)) is pos
    wide = cd.interpolate_positional_embedding(pos, (14, 14), (14, 26))
    assert wide.shape == (1 + 14 * 26, 768) and wide.dtype == pos.dtype
    torch.testing.assert_close(wide[0], pos[0])
    # Rows stay rows: an embedding equal to its row index is constant along each output row.
    rows = torch.arange(14.0).repeat_interleave(14)[:, None].expand(-1, 8)
    rows = torch.cat([torch.zeros(1, 8), rows])
    out = cd.interpolate_positional_embedding(rows, (14, 14), (15, 20))[1:].reshape(15, 20, 8)
    torch.testing.assert_close(out, out[:, :1].expand(-1, 20, -1))
    assert torch.all(out[1:, 0, 0] > out[:-1, 0, 0])
    with pytest.raises(ValueError, match='rows'):
        cd.interpolate_positional_embedding(pos, (14, 13), (14, 26))


@torch.no_grad()
def test_text_embeddings_are_normalized_template_averages(configs):
    clip = cd.load_clip(_config(configs))
    colors = (1, 2, 3)
    vocab = Vocabulary('t', (VocabularyClass('traffic_cone', ('cone',), colors),
                             VocabularyClass('car', (), colors)))
    templates = ('a photo of a {}.', 'there is a {} in the scene.', 'a {}')
    text = cd.text_embeddings(clip, vocab, templates)
    assert text.shape == (2, 32) and text.dtype == torch.float32
    torch.testing.assert_close(text.norm(dim=1), torch.ones(2))
    for i in range(2):
        prompts = class_prompts(vocab, i, templates)
        assert prompts[0] == f"a photo of a {('traffic cone', 'car')[i]}."
        assert len(prompts) == (6, 3)[i]
        each = nn.functional.normalize(clip.model.encode_text(clip.tokenizer(prompts)), dim=-1)
        manual = nn.functional.normalize(each.mean(0), dim=0)
        torch.testing.assert_close(text[i], manual, atol=1e-6, rtol=1e-5)
    by_name = cd.text_embeddings_from_names(clip, [('traffic cone', 'cone'), 'car'], templates,
                                            batch_size=4)
    torch.testing.assert_close(by_name, text, atol=1e-6, rtol=1e-5)
    two = nuscenes16().with_names(['car', 'truck'])
    full = cd.text_embeddings(clip, two, 'maskclip85')
    assert full.shape == (2, 32) and len(prompt_templates('maskclip85')) == 85
    each = nn.functional.normalize(
        clip.model.encode_text(clip.tokenizer(class_prompts(two, 1))), dim=-1)
    torch.testing.assert_close(full[1], nn.functional.normalize(each.mean(0), dim=0),
                               atol=1e-6, rtol=1e-5)


def test_teacher_vocabulary_switch_reuses_cache(configs):
    teacher = cd.MaskClipTeacher(_config(configs))
    assert teacher.text.shape == (16, 32) and teacher.vocabulary.name == 'nuscenes16'
    small = nuscenes16().with_names(['car', 'vegetation', 'robot'])
    teacher.set_vocabulary(small)
    torch.testing.assert_close(teacher.text, cd.text_embeddings(teacher.clip, small, 'single'))
    assert len(teacher._cache) == 17
    out = teacher(np.zeros((1, 32, 48, 3), np.uint8))
    assert out.logits.shape == (1, 3, 4, 6) and out.class_names == ('car', 'vegetation', 'robot')


def test_missing_weights_errors_say_what_to_do(tmp_path):
    with pytest.raises(cd.MissingClipWeightsError) as info:
        cd.load_clip(cd.ClipDenseConfig())
    message = str(info.value)
    for needle in ('ViT-B-16.pt', 'open_clip_pytorch_model.bin', 'checkpoint=',
                   '--clip-checkpoint'):
        assert needle in message
    missing = tmp_path / 'nowhere' / 'ViT-B-16.pt'
    with pytest.raises(cd.MissingClipWeightsError, match=str(missing)):
        cd.MaskClipTeacher(cd.ClipDenseConfig(checkpoint=str(missing)))


@pytest.mark.filterwarnings('ignore:`torch.jit:FutureWarning')
@pytest.mark.parametrize('fmt', ['torch', 'safetensors', 'torchscript'])
def test_checkpoint_round_trip(configs, tmp_path, fmt):
    random = cd.MaskClipTeacher(_config(configs, random_seed=7))
    assert random.random_weights and random.clip.source == 'random(seed=7)'
    model = random.clip.model
    path = tmp_path / f'weights.{fmt}'
    if fmt == 'torch':
        torch.save({'state_dict': model.state_dict()}, path)
    elif fmt == 'safetensors':
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    else:  # the OpenAI ViT-B-16.pt layout: a TorchScript archive of the whole CLIP
        torch.jit.save(torch.jit.script(copy.deepcopy(model)), str(path))
    loaded = cd.MaskClipTeacher(_config(configs, checkpoint=str(path), allow_random_weights=False))
    assert not loaded.random_weights and loaded.clip.source == str(path.resolve())
    images = np.random.default_rng(0).integers(0, 256, (2, 40, 70, 3), dtype=np.uint8)
    a, b = random(images), loaded(images)
    assert a.random_weights and not b.random_weights
    torch.testing.assert_close(b.logits, a.logits, atol=1e-6, rtol=1e-5)
    assert torch.equal(b.labels, a.labels)


def test_teacher_outputs_and_input_formats(configs):
    teacher = cd.MaskClipTeacher(_config(configs))
    images = np.random.default_rng(1).integers(0, 256, (3, 90, 160, 3), dtype=np.uint8)
    out = teacher(images)
    assert out.random_weights and out.labels.dtype == torch.int64
    assert out.labels.shape == out.confidence.shape == (3, *SIZE)
    assert out.confidence.dtype == out.features.dtype == out.logits.dtype == torch.float32
    assert out.features.shape == (3, 32, 4, 6) and out.logits.shape == (3, 16, 4, 6)
    torch.testing.assert_close(out.features.norm(dim=1), torch.ones(3, 4, 6))
    assert float(out.logits.abs().max()) <= 1.0 + 1e-6
    assert float(out.confidence.min()) >= 1 / 16 - 1e-6 and float(out.confidence.max()) <= 1
    upsampled = nn.functional.interpolate(out.logits, size=SIZE, mode='bilinear')
    assert torch.equal(out.labels, upsampled.argmax(1))
    as_float = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(teacher(as_float).logits, out.logits)
    batched = cd.MaskClipTeacher(_config(configs, batch_size=2), clip=teacher.clip)
    torch.testing.assert_close(batched(images).logits, out.logits, atol=1e-6, rtol=1e-5)
    assert teacher(images[0]).labels.shape == (1, *SIZE)
    assert teacher(images, output_size=(90, 160)).labels.shape == (3, 90, 160)
    with pytest.raises(ValueError, match='uint8'):
        teacher(images.astype(np.float32))


def test_normalize_input_default_and_effect(configs):
    assert cd.ClipDenseConfig().normalize_input is True
    teacher = cd.MaskClipTeacher(_config(configs))
    raw = cd.MaskClipTeacher(_config(configs, normalize_input=False), clip=teacher.clip)
    images = torch.rand(1, 3, *SIZE, generator=torch.Generator().manual_seed(2))
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    visual = teacher.clip.model.visual
    with torch.no_grad():
        for model, inputs in ((teacher, (images - mean) / std), (raw, images)):
            expected = nn.functional.normalize(cd.dense_clip_features(visual, inputs), dim=1)
            torch.testing.assert_close(model(images).features, expected, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(teacher(images).logits, raw(images).logits, atol=1e-4)


def test_unsupported_towers_and_bad_config(configs):
    for variant, needle in (('cnstest-resnet', 'VisionTransformer'),
                            ('cnstest-vit-attnpool', 'attentional pooler')):
        with pytest.raises(ValueError, match=needle):
            cd.load_clip(_config(configs, variant))
    with pytest.raises(ValueError, match='patch'):
        cd.MaskClipTeacher(_config(configs, image_size=(64, 100)))
    with pytest.raises(ValueError, match='temperature'):
        cd.ClipDenseConfig(temperature=0.0)
    with pytest.raises(ValueError, match='schema'):
        cd.load_clip(cd.ClipDenseConfig(model_name='hf-hub:laion/x', allow_random_weights=True))


def test_random_weights_are_seeded(configs):
    a = cd.load_clip(_config(configs, random_seed=3)).model.visual.proj
    b = cd.load_clip(_config(configs, random_seed=3)).model.visual.proj
    c = cd.load_clip(_config(configs, random_seed=4)).model.visual.proj
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_teachers_package_import_is_cheap():
    code = ('import sys, cns_ros.teachers; '
            'print("torch" in sys.modules, "open_clip" in sys.modules)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT,
                         check=True, timeout=120)
    assert out.stdout.split()[-2:] == ['False', 'False']


def test_outputs_usable_as_training_targets(configs):
    """Teacher outputs are plain tensors: a student loss against them back-propagates."""
    teacher = cd.MaskClipTeacher(_config(configs))
    target = teacher(np.zeros((1, *SIZE, 3), np.uint8)).features
    student = torch.zeros_like(target, requires_grad=True)
    (student * target).sum().backward()
    torch.testing.assert_close(student.grad, target)
