"""3D-OVS teachers: the CLIP crop pyramid and relevancy, the open_clip / timm DINO wrappers, the
stand-in teachers' calibration on rendered lexicon patches, and the on-disk teacher cache."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from cns_ros.ovs3d.clip_pyramid import feature_pyramid, pyramid_boxes, relevancy_maps
from cns_ros.ovs3d.lexicon import COLOURS, PATTERNS
from cns_ros.ovs3d.standin import (
    StandinClip,
    StandinDino,
    block_descriptors,
    crop_descriptor,
    render_patch,
)
from cns_ros.ovs3d.teacher_cache import TeacherCache, extract_teachers, view_file
from cns_ros.ovs3d.teachers import MissingDinoWeightsError, OpenClipImageText, TimmDino
from cns_ros.teachers.cache import CacheMismatchError
from cns_ros.teachers.clip_dense import MissingClipWeightsError

pytestmark = pytest.mark.usefixtures('one_torch_thread')


class MeanColourEncoder:
    """Toy ImageEncoder: [mean R, G, B, crop height, crop width, 1] (raw, not normalised)."""

    dim = 6
    random_weights = False

    def __init__(self) -> None:
        self.calls = 0

    def encode_crops(self, crops):
        self.calls += 1
        rows = [[*c.reshape(-1, 3).mean(0), c.shape[0], c.shape[1], 1.0] for c in crops]
        return torch.tensor(rows, dtype=torch.float32)


def _random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# --- crop pyramid --------------------------------------------------------------------------

@pytest.mark.parametrize('size', [(13, 17), (31, 23), (45, 61), (50, 50), (135, 180)])
def test_pyramid_boxes_cover_every_pixel_and_stay_inside(size):
    height, width = size
    for scale, boxes in enumerate(pyramid_boxes(height, width, rng=np.random.default_rng(3))):
        x0, y0, x1, y1 = boxes.T
        assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= width).all() and (y1 <= height).all()
        assert (x1 > x0).all() and (y1 > y0).all()
        coverage = np.zeros((height, width), int)
        for a, b, c, d in boxes:
            coverage[b:d, a:c] += 1
        assert coverage.min() > 0, (size, scale)


def test_pyramid_boxes_counts_and_jitter():
    boxes = pyramid_boxes(135, 180, rng=np.random.default_rng(0))
    assert [len(b) for b in boxes] == [513, 1260, 2394]  # reference/ovs3d.md section 4
    for patch, scale in zip((27, 19, 13), boxes, strict=True):
        sides = scale[:, 2:] - scale[:, :2]
        assert sides.min() >= min(patch, 1) and sides.max() <= patch + 2 * (patch // 4)
    # scale 0's first window starts at (0, 0): jitter is clipped on the left/top only
    assert tuple(boxes[0][0, :2]) == (0, 0) and 27 <= boxes[0][0, 2] <= 27 + 6


def test_feature_pyramid_equals_brute_force_average():
    image = _random_image(12, 15, seed=1)
    encoder = MeanColourEncoder()
    features = feature_pyramid(image, encoder, divisors=(3, 5), rng=np.random.default_rng(7),
                               batch_size=4)
    assert features.shape == (2, 6, 12, 15) and features.dtype == torch.float32
    boxes = pyramid_boxes(12, 15, (3, 5), rng=np.random.default_rng(7))
    for scale, scale_boxes in enumerate(boxes):
        embeddings = encoder.encode_crops([image[b:d, a:c] for a, b, c, d in scale_boxes])
        for y in range(12):
            for x in range(15):
                hits = [k for k, (a, b, c, d) in enumerate(scale_boxes)
                        if a <= x < c and b <= y < d]
                mean = embeddings[hits].double().mean(0)
                expected = (mean / mean.norm()).float()
                torch.testing.assert_close(features[scale, :, y, x], expected)


def test_relevancy_in_unit_range_with_extremes_attained():
    gen = torch.Generator().manual_seed(0)
    features = torch.nn.functional.normalize(torch.randn(3, 8, 5, 7, generator=gen), dim=1)
    text = torch.nn.functional.normalize(torch.randn(4, 8, generator=gen), dim=1)
    rel = relevancy_maps(features, text)
    assert rel.shape == (3, 4, 5, 7)
    flat = rel.flatten(2)
    assert (flat.amin(2) == 0).all() and (flat.amax(2) == 1).all()
    cosine = torch.einsum('sdhw,cd->schw', features, text)[1, 2]
    expected = (cosine - cosine.min()) / (cosine.max() - cosine.min())
    torch.testing.assert_close(rel[1, 2], expected)
    flat_features = torch.nn.functional.normalize(torch.ones(1, 8, 2, 2), dim=1)
    assert (relevancy_maps(flat_features, text) == 0).all()  # max == min: 0, no NaN


# --- real-model wrappers -------------------------------------------------------------------

def _official_dino_shapes() -> dict[str, tuple[int, ...]]:
    """The 150 tensors of dino_vitbase8_pretrain.pth (reference/ovs3d_addendum.md 1.1)."""
    shapes = {'cls_token': (1, 1, 768), 'pos_embed': (1, 785, 768),
              'patch_embed.proj.weight': (768, 3, 8, 8), 'patch_embed.proj.bias': (768,),
              'norm.weight': (768,), 'norm.bias': (768,)}
    per_block = {'norm1.weight': (768,), 'norm1.bias': (768,), 'norm2.weight': (768,),
                 'norm2.bias': (768,), 'attn.qkv.weight': (2304, 768), 'attn.qkv.bias': (2304,),
                 'attn.proj.weight': (768, 768), 'attn.proj.bias': (768,),
                 'mlp.fc1.weight': (3072, 768), 'mlp.fc1.bias': (3072,),
                 'mlp.fc2.weight': (768, 3072), 'mlp.fc2.bias': (768,)}
    for block in range(12):
        shapes.update({f'blocks.{block}.{k}': v for k, v in per_block.items()})
    return shapes


def test_timm_dino_b8_has_exactly_the_official_keys():
    import timm

    with torch.device('meta'):
        model = timm.create_model('vit_base_patch8_224.dino', pretrained=False)
    found = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert len(found) == 150 and found == _official_dino_shapes()


_TINY_VIT = {'embed_dim': 64, 'depth': 2, 'num_heads': 2}


def test_timm_dino_loads_a_flat_checkpoint_and_returns_prenorm_patch_tokens(tmp_path):
    import timm

    torch.manual_seed(0)
    reference = timm.create_model('vit_small_patch8_224.dino', pretrained=False,
                                  dynamic_img_size=True, **_TINY_VIT).eval()
    path = tmp_path / 'dino_tiny.pth'
    torch.save(reference.state_dict(), path)  # flat state dict, as the official file
    dino = TimmDino(path, model_name='vit_small_patch8_224.dino', model_kwargs=_TINY_VIT)
    assert not dino.random_weights and (dino.patch, dino.dim) == (8, 64)
    image = _random_image(40, 56, seed=2)
    tokens = dino.tokens(image)
    assert tokens.shape == (5, 7, 64) and tokens.dtype == torch.float32
    captured = {}
    reference.blocks[-1].register_forward_hook(lambda m, i, o: captured.setdefault('x', o))
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) \
        / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        reference(x)
    expected = captured['x'][0, 1:].reshape(5, 7, 64)  # CLS dropped, before the final norm
    torch.testing.assert_close(tokens, expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(tokens, reference.norm(expected), atol=1e-2)
    with pytest.raises(ValueError, match='multiple of the patch'):
        dino.tokens(image[:36])


def test_random_weights_need_the_flag(tmp_path):
    with pytest.raises(MissingDinoWeightsError, match=r'dino_vitbase8_pretrain\.pth'):
        TimmDino(None)
    with pytest.raises(MissingDinoWeightsError, match='not found'):
        TimmDino(tmp_path / 'absent.pth')
    with pytest.raises(MissingClipWeightsError):
        OpenClipImageText(None)
    random = TimmDino(None, model_name='vit_small_patch8_224.dino', random_weights=True,
                      model_kwargs=_TINY_VIT)
    assert random.random_weights and random.tokens(_random_image(16, 24)).shape == (2, 3, 64)


@pytest.fixture(scope='module')
def tiny_clip_config(tmp_path_factory) -> Path:
    """A tiny open_clip ViT config (QuickGELU, as OpenAI's), 224 input, 32-d embeddings."""
    path = tmp_path_factory.mktemp('clip') / 'TinyClip.json'
    path.write_text(json.dumps({
        'embed_dim': 32, 'quick_gelu': True,
        'vision_cfg': {'image_size': 224, 'layers': 1, 'width': 64, 'patch_size': 32},
        'text_cfg': {'context_length': 77, 'vocab_size': 49408, 'width': 64, 'heads': 1,
                     'layers': 1}}))
    return path


def test_open_clip_file_round_trip_quickgelu_and_outputs(tmp_path, tiny_clip_config):
    from open_clip.transformer import QuickGELU
    from safetensors.torch import save_file

    random = OpenClipImageText(None, model_name=str(tiny_clip_config), random_weights=True)
    assert random.random_weights and random.dim == 32
    mlp = random.clip.model.visual.transformer.resblocks[0].mlp
    assert isinstance(mlp.gelu, QuickGELU)
    path = tmp_path / 'tiny.safetensors'
    save_file({k: v.contiguous() for k, v in random.clip.model.state_dict().items()}, path)
    loaded = OpenClipImageText(path, model_name=str(tiny_clip_config))
    assert not loaded.random_weights
    crops = [_random_image(13, 20, 1), _random_image(31, 9, 2), _random_image(5, 5, 3)]
    embeddings = loaded.encode_crops(crops)
    assert embeddings.shape == (3, 32)
    torch.testing.assert_close(embeddings, random.encode_crops(crops))
    text = loaded.encode_text(['red striped box', 'white plain wall'])
    torch.testing.assert_close(text.norm(dim=1), torch.ones(2))


def test_open_clip_preprocess_is_shortest_side_then_centre_crop(tiny_clip_config):
    clip = OpenClipImageText(None, model_name=str(tiny_clip_config), random_weights=True)
    crop = np.zeros((10, 20, 3), np.uint8)
    crop[:, 5:15] = 255  # the centre 10 x 10 square is what a 224 centre crop keeps
    batch = clip.preprocess([crop])
    assert batch.shape == (1, 3, 224, 224)
    white = (1 - torch.tensor(clip.clip.image_mean)) / torch.tensor(clip.clip.image_std)
    torch.testing.assert_close(batch[0, :, :, 16:208].mean((1, 2)), white, atol=0.02, rtol=0)


def test_open_clip_openai_weights_need_quickgelu_and_torchscript_needs_the_flag(tmp_path):
    from cns_ros.ovs3d.teachers import _quickgelu_name

    assert _quickgelu_name('ViT-B-16') == 'ViT-B-16-quickgelu'
    gelu = tmp_path / 'GeluClip.json'
    gelu.write_text(json.dumps({'embed_dim': 32, 'vision_cfg': {'image_size': 224,
                                'layers': 1, 'width': 64, 'patch_size': 32}, 'text_cfg': {
                                'context_length': 77, 'vocab_size': 49408, 'width': 64,
                                'heads': 1, 'layers': 1}}))
    with pytest.raises(ValueError, match='QuickGELU'):
        OpenClipImageText(None, model_name=str(gelu), random_weights=True)
    archive = tmp_path / 'ViT-B-16.pt'
    with zipfile.ZipFile(archive, 'w') as handle:
        handle.writestr('ViT-B-16/constants.pkl', b'')
        handle.writestr('ViT-B-16/code/__torch__.py', b'')
    with pytest.raises(ValueError, match='allow_torchscript'):
        OpenClipImageText(archive)


# --- stand-ins -----------------------------------------------------------------------------

def test_standin_gradient_calibration_on_lexicon_patterns():
    for colour in ('red', 'grey', 'blue'):
        for pattern, (ex, ey) in PATTERNS.items():
            descriptor = crop_descriptor(render_patch(colour, pattern, 40, 40))
            assert descriptor[3] == pytest.approx(ex, abs=0.1)
            assert descriptor[4] == pytest.approx(ey, abs=0.1)
            blocks = block_descriptors(render_patch(colour, pattern, 40, 40))[:4, :4]
            np.testing.assert_allclose(blocks[..., 3:], np.broadcast_to([ex, ey], (4, 4, 2)),
                                       atol=0.1)


def _interior_tokens(dino: StandinDino, colour: str, pattern: str, shift: int) -> torch.Tensor:
    image = render_patch(colour, pattern, 48, 48 + shift)[:, shift:]  # any pattern phase
    tokens = dino.tokens(image)[:-1, :-1]  # the last row/column see part of the pattern only
    return torch.nn.functional.normalize(tokens.reshape(-1, dino.dim), dim=-1)


def test_standin_dino_same_object_similar_same_colour_other_pattern_dissimilar():
    dino = StandinDino()
    names = [(c, p) for c in COLOURS for p in PATTERNS]
    tokens = {n: _interior_tokens(dino, *n, shift=0) for n in names}
    shifted = {n: _interior_tokens(dino, *n, shift=3) for n in names}
    same = min(float((tokens[n] @ shifted[n].T).min()) for n in names)
    other_pattern = max(float(tokens[a][0] @ tokens[b][0]) for a in names for b in names
                        if a[0] == b[0] and a != b)
    other_colour = max(float(tokens[a][0] @ tokens[b][0]) for a in names for b in names
                       if a[0] != b[0])
    assert same > 0.99  # FDA shift 0.7
    assert other_pattern < 0.55 and other_colour < 0.62  # measured 0.52 and 0.58


def test_standin_clip_tells_colours_apart_strongly_and_patterns_weakly():
    clip = StandinClip()
    names = [(c, p) for c in COLOURS for p in PATTERNS]
    text = clip.encode_text([f'{c} {p} box' for c, p in names])
    crops = clip.encode_crops([render_patch(c, p, 24, 24) for c, p in names])
    cosine = torch.nn.functional.normalize(crops, dim=-1) @ text.T
    assert (cosine.argmax(1) == torch.arange(len(names))).all()
    own = cosine.diag()
    same_colour = torch.tensor([[a[0] == b[0] and a != b for b in names] for a in names])
    margin_pattern = (own[:, None] - cosine).masked_fill(~same_colour, float('inf')).amin(1)
    margin_colour = (own[:, None] - cosine).masked_fill(same_colour | torch.eye(
        len(names), dtype=torch.bool), float('inf')).amin(1)
    assert 0 < margin_pattern.min() and margin_pattern.max() < 0.2  # weak
    assert (margin_colour > margin_pattern).float().mean() > 0.9


def test_standin_clip_relevancy_argmax_picks_the_colour():
    image = np.concatenate([
        np.concatenate([render_patch('red', 'striped', 30, 40),
                        render_patch('blue', 'plain', 30, 40)], axis=1),
        np.concatenate([render_patch('green', 'banded', 30, 40),
                        render_patch('white', 'plain', 30, 40)], axis=1)])
    classes = ['red striped box', 'blue plain ball', 'green banded table', 'white plain wall']
    clip = StandinClip()
    features = feature_pyramid(image, clip, rng=np.random.default_rng(0))
    relevancy = relevancy_maps(features, clip.encode_text(classes))
    truth = np.zeros((60, 80), int)
    truth[:30, 40:], truth[30:, :40], truth[30:, 40:] = 1, 2, 3
    for scale in range(3):
        label = relevancy[scale].argmax(0).numpy()
        interior = np.zeros_like(truth, bool)
        for y0, x0 in ((0, 0), (0, 40), (30, 0), (30, 40)):
            interior[y0 + 8:y0 + 22, x0 + 8:x0 + 32] = True
        assert (label[interior] == truth[interior]).mean() > 0.95, scale


# --- teacher cache -------------------------------------------------------------------------

class FakeScene:
    """The scene interface extraction uses: image(view, ds) and image_paths."""

    def __init__(self, views: int = 3, height: int = 100, width: int = 140) -> None:
        self.image_paths = tuple(Path(f'images/{i:03d}.png') for i in range(views))
        self.size = (height, width)

    def image(self, view: int, downsample: float) -> np.ndarray:
        h, w = int(self.size[0] / downsample), int(self.size[1] / downsample)
        return _random_image(h, w, seed=view)


class CountingDino(StandinDino):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def tokens(self, image):
        self.calls += 1
        return super().tokens(image)


def test_cache_round_trip_fp16_on_disk(tmp_path):
    from safetensors import safe_open

    scene, clip, dino = FakeScene(), StandinClip(dim=16), StandinDino(dim=8)
    cache = extract_teachers(scene, tmp_path / 'c', clip, dino, seed=5, progress=False)
    assert cache.views == (0, 1, 2) and (cache.clip_downsample, cache.dino_downsample) == (8, 5)
    features = cache.clip_features(1)
    assert features.dtype == torch.float32 and features.shape == (3, 16, 12, 17)
    expected = feature_pyramid(scene.image(1, 8.0), clip, rng=np.random.default_rng([5, 1]))
    torch.testing.assert_close(features, expected, atol=2e-3, rtol=0)
    tokens = cache.dino_tokens(2)
    assert tokens.shape == (2, 3, 8)  # x5 image 20 x 28 cropped to 16 x 24
    torch.testing.assert_close(tokens, dino.tokens(scene.image(2, 5.0)[:16, :24]),
                               atol=2e-3, rtol=0)
    for kind, name in (('clip', 'features'), ('dino', 'tokens')):
        with safe_open(str(view_file(tmp_path / 'c', kind, 0)), framework='pt') as handle:
            assert handle.get_tensor(name).dtype == torch.float16
    settings = json.loads((tmp_path / 'c' / 'teachers.json').read_text())
    assert settings['divisors'] == [5, 7, 10] and settings['clip_random_weights'] is False
    assert not cache.random_weights


def test_cache_resume_skips_finished_views_and_rejects_other_settings(tmp_path):
    scene, out = FakeScene(), tmp_path / 'c'
    clip, dino = MeanColourEncoder(), CountingDino()
    extract_teachers(scene, out, clip, dino, progress=False)
    first = (clip.calls, dino.calls)
    assert dino.calls == 3 and clip.calls > 0
    before = TeacherCache(out).clip_features(2)
    view_file(out, 'clip', 2).unlink()
    clip.calls = dino.calls = 0
    extract_teachers(scene, out, clip, dino, progress=False)
    assert dino.calls == 0 and 0 < clip.calls < first[0]  # only view 2's pyramid again
    torch.testing.assert_close(TeacherCache(out).clip_features(2), before)  # seeded per view
    with pytest.raises(CacheMismatchError, match='seed'):
        extract_teachers(scene, out, clip, dino, seed=1, progress=False)
    with pytest.raises(FileNotFoundError, match='view 7'):
        TeacherCache(out).clip_features(7)
