"""Networks: every registered builder at a tiny size, per-point outputs, heads, weights.

All models here have RANDOM weights (no checkpoints exist on the test machines); the DeepLab
tests say so through ``allow_random_weights=True`` and check the flag.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip('torch')
pytest.importorskip('spconv')
pytest.importorskip('torchvision')

from cns_ros.models.build import (  # noqa: E402
    MODEL_BUILDERS,
    build_model,
    count_parameters,
    model_config,
)
from cns_ros.models.heads import (  # noqa: E402
    SamProjectionHeads,
    TextClassifier,
    TextClassifierConfig,
)
from cns_ros.models.image_net import (  # noqa: E402
    BackboneCheckpointError,
    DeepLabV3Config,
    MissingBackboneWeightsError,
    label_image,
    normalize_images,
)
from cns_ros.models.minkunet import assemble_point_features  # noqa: E402
from cns_ros.models.sparse import (  # noqa: E402
    load_neutral_state_dict,
    neutral_state_dict,
    voxelize_batch,
)

TINY_3D = {'channel_scale': 0.125, 'out_dim': 16, 'local_head': True,
           'input_features': ('intensity', 'xyz'), 'voxel_size': 0.25}
#: latent width of the 3D networks at TINY_3D: MinkUNet 96 / 8; SPVCNN (256 + 128 + 96) / 8
TINY_LATENT = {'minkunet14a': 12, 'minkunet18a': 12, 'minkunet34c': 12, 'spvcnn': 60}
HAS_TORCHSPARSE = importlib.util.find_spec('torchsparse') is not None


def _cloud_batch(seed: int = 0, sizes=(600, 400), voxel: float = 0.25):
    gen = torch.Generator().manual_seed(seed)
    points = [torch.rand((n, 3), generator=gen) * torch.tensor([8.0, 8.0, 2.0]) for n in sizes]
    feats = [assemble_point_features({'intensity': torch.rand(n, generator=gen) * 255,
                                      'xyz': p}, ('intensity', 'xyz'))
             for n, p in zip(sizes, points, strict=True)]
    points[0][1] = points[0][0] + 1e-3  # two points sharing a voxel
    return points, voxelize_batch(points, feats, voxel)


def _tiny_config(name: str):
    if name in TINY_LATENT:
        return model_config(name, **TINY_3D)
    return DeepLabV3Config(out_dim=16, allow_random_weights=True)


def _first_weight(name: str, net) -> torch.Tensor:
    if name == 'spvcnn':
        return net.stem[0][0].backend_kernel
    if name.startswith('minkunet'):
        return net.stem[0].backend_kernel
    return next(net.backbone.parameters())  # conv1 (ResNet) or features.0.0 (MobileNetV3)


@pytest.mark.parametrize('name', sorted(MODEL_BUILDERS))
def test_every_builder_forward_backward_tiny(name):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)  # DeepLab's random-weights warning
        net = build_model(name, _tiny_config(name))
    net.train()
    net.classifier.set_text_embeddings(torch.nn.functional.normalize(torch.randn(5, 16), dim=1))
    if name in TINY_LATENT:
        _, batch = _cloud_batch()
        out = net(batch)
        n = len(batch.inverse)
        assert out.features.shape == (n, 16) and out.local.shape == (n, 16)
        assert out.latent.shape == (n, net.config.feature_dim) == (n, TINY_LATENT[name])
        logits = net.classifier(out.features)
        assert logits.shape == (n, 5)
        loss = logits.logsumexp(1).mean() + out.local.square().mean()
    else:
        out = net(torch.randn(2, 3, 64, 96))
        assert out.features.shape == (2, 16, 64, 96)
        assert out.latent.shape == (2, 256, 4, 6)  # output stride 16
        logits = net.classifier(out.features, dim=1)
        assert logits.shape == (2, 5, 64, 96)
        loss = logits.logsumexp(1).mean()
    assert torch.isfinite(logits).all()
    loss.backward()
    grad = _first_weight(name, net).grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_build_model_errors_and_config_options():
    with pytest.raises(KeyError, match=r'valid names.*minkunet14a'):
        build_model('pointnet')
    with pytest.raises(TypeError, match='MinkUNetConfig'):
        build_model('minkunet14a', DeepLabV3Config())
    with pytest.raises(ValueError, match=r'unknown option.*widht'):
        model_config('minkunet34c', widht=3)
    config = model_config('minkunet34c', planes=[8] * 8, classifier={'logit_scale': 2.0},
                          input_features=['intensity', 'ring'])
    assert config.planes == (8,) * 8 and config.in_channels == 2
    assert config.classifier == TextClassifierConfig(logit_scale=2.0)
    assert config.with_preset('34C').layers == (2, 3, 4, 6, 2, 2, 2, 2)


def test_full_size_parameter_counts():
    """The counts quoted in cns_ros.models.build's docstring (random init, CPU)."""
    counts = {name: count_parameters(build_model(name)) for name in
              ('minkunet14a', 'minkunet18a', 'minkunet34c', 'spvcnn')}
    assert counts == {'minkunet14a': 8_061_088, 'minkunet18a': 15_529_760,
                      'minkunet34c': 37_892_640, 'spvcnn': 22_019_840}


def test_full_size_2d_parameter_counts():
    """The DeepLabV3 counts quoted in cns_ros.models.build's docstring (random init, CPU):
    the 3x3 head and, 1,049,088 (= 256 * 512 * 8) fewer, the 1x1 head."""
    counts = {}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)  # random-weights warning
        for name in ('deeplabv3_r50', 'deeplabv3_r18', 'deeplabv3_mbv3'):
            for head in ('conv3x3_bn_relu', 'conv1x1'):
                net = build_model(name, DeepLabV3Config(allow_random_weights=True, head=head))
                counts[name, head] = count_parameters(net)
    assert {k[0]: v for k, v in counts.items() if k[1] == 'conv3x3_bn_relu'} == {
        'deeplabv3_r50': 40_223_808, 'deeplabv3_r18': 16_489_024,
        'deeplabv3_mbv3': 11_610_416}
    assert {k[0]: v for k, v in counts.items() if k[1] == 'conv1x1'} == {
        'deeplabv3_r50': 39_174_720, 'deeplabv3_r18': 15_439_936,
        'deeplabv3_mbv3': 10_561_328}


def test_points_in_one_voxel_get_identical_outputs():
    torch.manual_seed(1)
    net = build_model('minkunet14a', _tiny_config('minkunet14a')).eval()
    points, batch = _cloud_batch()
    assert batch.inverse[0] == batch.inverse[1]
    again = net.voxelize(points, [batch.features.new_zeros((len(p), 4)) for p in points])
    assert torch.equal(again.inverse, batch.inverse)  # the network's own voxelization
    with torch.no_grad():
        out = net(batch)
    assert torch.equal(out.features[0], out.features[1])
    assert torch.equal(out.latent[0], out.latent[1])
    voxel_rows = torch.unique(batch.inverse)
    assert len(voxel_rows) == batch.num_voxels  # every voxel reached by some point
    # batch order: cloud 1's points follow cloud 0's
    assert out.features.shape[0] == sum(len(p) for p in points)


def test_network_checks_input_width_and_shape_multiple():
    net = build_model('minkunet14a', _tiny_config('minkunet14a'))
    points = [torch.rand(50, 3)]
    with pytest.raises(ValueError, match='input channels'):
        net(voxelize_batch(points, [torch.rand(50, 1)], 0.2))
    with pytest.raises(ValueError, match='multiple of 16'):
        net(voxelize_batch(points, [torch.rand(50, 4)], 0.2, shape_multiple=3))


def test_assemble_point_features_scaling():
    cols = {'intensity': np.array([0.0, 255.0]), 'ring': np.array([0, 31]),
            'x': np.array([50.0, 0.0]), 'y': np.zeros(2), 'z': np.zeros(2),
            'rgb': np.array([[0, 255, 127.5]] * 2)}
    feats = assemble_point_features(cols, ('intensity', 'ring', 'xyz', 'rgb'))
    assert feats.dtype == torch.float32 and feats.shape == (2, 8)
    assert feats[:, 0].tolist() == [0.0, 1.0] and feats[:, 1].tolist() == [0.0, 1.0]
    assert feats[0, 2] == 1.0 and feats[0, 5:].tolist() == [-1.0, 1.0, 0.0]
    with pytest.raises(KeyError, match='ring'):
        assemble_point_features({'intensity': np.zeros(2)}, ('ring',))


def test_neutral_state_dict_round_trip_reproduces_outputs():
    torch.manual_seed(2)
    source = build_model('minkunet14a', _tiny_config('minkunet14a')).eval()
    torch.manual_seed(3)
    target = build_model('minkunet14a', _tiny_config('minkunet14a')).eval()
    state = neutral_state_dict(source)
    kernel = state['stem.0.kernel']
    assert kernel.shape == (3, 3, 3, 4, 4)  # (K, K, K, C_in, C_out)
    assert not any(key.endswith('.conv.weight') for key in state)
    assert 'classifier.text_embeddings' not in state  # the vocabulary is not a weight
    load_neutral_state_dict(target, state)
    _, batch = _cloud_batch(seed=4)
    with torch.no_grad():
        torch.testing.assert_close(target(batch).features, source(batch).features)
    with pytest.raises(RuntimeError, match='Missing key'):
        target.load_state_dict(state)  # a neutral dict is not a backend dict


@pytest.mark.skipif(not HAS_TORCHSPARSE, reason='torchsparse is not installed (source build '
                    'with CUDA only; not on PyPI), so the cross-backend check cannot run')
def test_spconv_and_torchsparse_agree_on_the_same_weights():
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    torch.manual_seed(5)
    nets = {b: build_model('minkunet14a', model_config('minkunet14a', backend=b, **TINY_3D))
            for b in ('spconv', 'torchsparse')}
    load_neutral_state_dict(nets['torchsparse'], neutral_state_dict(nets['spconv']))
    _, batch = _cloud_batch(seed=6)
    outs = {}
    for backend, net in nets.items():
        with torch.no_grad():
            outs[backend] = net.to(device).eval()(batch.to(device)).features
    torch.testing.assert_close(outs['torchsparse'], outs['spconv'], rtol=1e-3, atol=1e-4)


def test_text_classifier_is_data_not_a_layer():
    clf = TextClassifier(4)
    with pytest.raises(RuntimeError, match='set_text_embeddings'):
        clf(torch.zeros(2, 4))
    text = torch.eye(4)[:3]
    clf.set_text_embeddings(text)
    feats = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 3.0, 1.0]])
    assert clf(feats).tolist() == [[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]]  # raw dot product
    assert list(clf.parameters()) == [] and clf.state_dict() == {}
    scaled = TextClassifier(4, TextClassifierConfig(normalize_features=True, logit_scale=10.0))
    scaled.set_text_embeddings(text)
    torch.testing.assert_close(scaled(feats)[1, 2], torch.tensor(30.0 / 10.0**0.5))
    image = torch.randn(2, 4, 5, 6)
    assert clf(image, dim=1).shape == (2, 3, 5, 6)
    with pytest.raises(ValueError, match=r'\(C >= 1, 4\)'):
        clf.set_text_embeddings(torch.zeros(3, 5))


def test_normalize_images_uses_the_imagenet_statistics():
    """torchvision's ImageNet statistics (RGB mean 0.485, 0.456, 0.406; std 0.229, 0.224,
    0.225): the mean maps to 0, mean + std to 1, black to -mean / std."""
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    images = torch.tensor([[mean, [m + s for m, s in zip(mean, std, strict=True)],
                            [0.0, 0.0, 0.0]]], dtype=torch.float64).permute(0, 2, 1)[..., None]
    out = normalize_images(images)  # (1, 3, 3 pixels, 1)
    assert out.shape == (1, 3, 3, 1) and out.dtype == torch.float64
    expected = [[0.0, 1.0, -0.485 / 0.229], [0.0, 1.0, -0.456 / 0.224],
                [0.0, 1.0, -0.406 / 0.225]]
    np.testing.assert_allclose(out[0, :, :, 0].numpy(), expected, atol=1e-12)


def test_label_image_takes_the_argmax_then_resizes_the_labels():
    """(C, h, w) logits -> uint8 labels: argmax per pixel (first maximum on ties), ids >= 255
    -> 255, then each output pixel takes the label of the input pixel under its centre."""
    logits = torch.zeros(3, 2, 2)
    logits[1, 0, 0] = 1.0                        # label 1
    logits[2, 0, 1] = 2.0                        # label 2
    logits[:, 1, 0] = torch.tensor([5.0, 5.0, 0.0])  # tie of 0 and 1 -> 0
    logits[0, 1, 1] = -1.0                       # 1 and 2 tie at 0 -> 1
    same = label_image(logits, (2, 2))
    assert same.dtype == np.uint8 and same.tolist() == [[1, 2], [0, 1]]
    assert label_image(logits, (4, 2)).tolist() == [[1, 2], [1, 2], [0, 1], [0, 1]]
    assert label_image(logits, (1, 1)).tolist() == [[1]]  # centre (1, 1) of a 2 x 2 map
    many = torch.zeros(300, 1, 2)
    many[299, 0, 0], many[7, 0, 1] = 1.0, 1.0
    assert label_image(many, (1, 2)).tolist() == [[255, 7]]
    with pytest.raises(ValueError, match='shape'):
        label_image(logits[None], (2, 2))


def test_sam_projection_heads_shapes():
    heads = SamProjectionHeads()
    assert heads.point(torch.zeros(7, 96)).shape == (7, 64)
    assert heads.image(torch.zeros(2, 256, 6, 8)).shape == (2, 64, 6, 8)
    assert heads.sam(torch.zeros(1, 256, 36, 64)).shape == (1, 64, 36, 64)


#: (builder, torchvision ImageNet V1 file, torchvision constructor name, title in messages)
DEEPLABS = [('deeplabv3_r50', 'resnet50-0676ba61.pth', 'resnet50', 'ResNet-50'),
            ('deeplabv3_r18', 'resnet18-f37072fd.pth', 'resnet18', 'ResNet-18'),
            ('deeplabv3_mbv3', 'mobilenet_v3_large-8738ca79.pth', 'mobilenet_v3_large',
             'MobileNetV3-Large')]


@pytest.mark.parametrize(('name', 'file', 'arch', 'title'), DEEPLABS)
def test_deeplab_random_weights_are_flagged_and_missing_weights_explained(
        tmp_path, name, file, arch, title):
    with pytest.raises(MissingBackboneWeightsError, match=rf'{title}.*{file}'):
        build_model(name, DeepLabV3Config())
    with pytest.raises(MissingBackboneWeightsError, match=rf'does not exist.*{file}'):
        build_model(name, DeepLabV3Config(backbone_checkpoint=str(tmp_path / 'x')))
    with pytest.warns(UserWarning, match='random backbone weights'):
        net = build_model(name, DeepLabV3Config(allow_random_weights=True))
    assert net.random_weights is True


@pytest.mark.parametrize(('name', 'file', 'arch', 'title'), DEEPLABS)
def test_deeplab_loads_a_local_backbone_checkpoint(tmp_path, name, file, arch, title):
    """Every backbone tensor equals the torchvision ImageNet-format file's (classifier
    dropped); a file of another architecture is refused, naming the expected file."""
    import torchvision

    reference = getattr(torchvision.models, arch)(weights=None)
    path = tmp_path / file
    torch.save(reference.state_dict(), path)
    net = build_model(name, DeepLabV3Config(backbone_checkpoint=str(path)))
    assert net.random_weights is False and net.config.backbone == arch
    expected = reference.state_dict()
    prefix = 'features.' if arch.startswith('mobilenet') else ''
    loaded = net.backbone.state_dict()
    assert len(loaded) > 100
    for key, value in loaded.items():
        assert torch.equal(value, expected[prefix + key]), key
    bad = tmp_path / 'bad.pth'
    torch.save({'conv1.weight': torch.zeros(1)}, bad)
    with pytest.raises(BackboneCheckpointError, match=rf'(?s)not a torchvision {title}.*{file}'):
        build_model(name, DeepLabV3Config(backbone_checkpoint=str(bad)))


def test_deeplab_checkpoint_of_another_backbone_is_refused(tmp_path):
    from torchvision.models import resnet18

    path = tmp_path / 'resnet18-f37072fd.pth'
    torch.save(resnet18(weights=None).state_dict(), path)
    with pytest.raises(BackboneCheckpointError, match='not a torchvision ResNet-50'):
        build_model('deeplabv3_r50', DeepLabV3Config(backbone_checkpoint=str(path)))
    with pytest.raises(ValueError, match="makes a 'resnet18' network"):
        build_model('deeplabv3_r18', DeepLabV3Config(backbone='resnet50'))
    with pytest.raises(ValueError, match='output stride'):
        model_config('deeplabv3_mbv3', backbone='mobilenet_v3_large', output_stride=8)
    with pytest.raises(ValueError, match='output stride'):
        build_model('deeplabv3_mbv3', DeepLabV3Config(output_stride=8))


@pytest.mark.parametrize('output_stride', [16, 8])
def test_resnet18_dilation_is_the_strided_network_densified(output_stride):
    """A trous: with the same weights (eval mode), the dilated ResNet-18's layer4 map sampled
    every s / 32 pixels equals the plain stride-32 ResNet-18's layer4 map."""
    from torchvision.models import resnet18
    from torchvision.models._utils import IntermediateLayerGetter

    torch.manual_seed(0)
    with pytest.warns(UserWarning, match='random backbone weights'):
        net = build_model('deeplabv3_r18', DeepLabV3Config(
            allow_random_weights=True, output_stride=output_stride)).eval()
    for module in net.backbone.modules():  # non-trivial BatchNorm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    plain = resnet18(weights=None).eval()
    plain.load_state_dict(net.backbone.state_dict(), strict=False)
    plain = IntermediateLayerGetter(plain, {'layer4': 'out'})
    images = torch.randn(1, 3, 65, 97)
    with torch.no_grad():
        dense, coarse = net.backbone(images)['out'], plain(images)['out']
    step = 32 // output_stride
    assert coarse.shape == (1, 512, 3, 4)
    assert dense.shape == {16: (1, 512, 5, 7), 8: (1, 512, 9, 13)}[output_stride]
    torch.testing.assert_close(dense[..., ::step, ::step], coarse, atol=1e-4, rtol=1e-4)


def test_import_cns_ros_models_is_cheap():
    code = ('import sys, cns_ros.models; '
            'print(",".join(m for m in ("torch", "spconv", "torchvision") if m in sys.modules))')
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True, timeout=120, cwd=root)
    assert out.stdout.strip().splitlines()[-1:] in ([], [''])


@pytest.mark.parametrize('normalize', [False, True])
def test_deeplab_logits_equal_the_classified_upsampled_features(normalize):
    """``logits`` classifies at the latent's resolution and upsamples C channels (linear
    classifier) or classifies the upsampled features (normalised): either way the same
    logits as classifying ``forward``'s D-channel features at the input resolution."""
    torch.manual_seed(0)
    config = DeepLabV3Config(allow_random_weights=True, out_dim=32,
                             classifier=TextClassifierConfig(normalize_features=normalize,
                                                             logit_scale=3.0))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)
        net = build_model('deeplabv3_mbv3', config).eval()
    net.classifier.set_text_embeddings(torch.randn(5, 32))
    images = torch.randn(2, 3, 48, 80)
    with torch.no_grad():
        expected = net.classifier(net(images).features, dim=1)
        logits, latent = net.logits(images)
    assert logits.shape == (2, 5, 48, 80) and latent.shape == (2, 256, 3, 5)
    assert torch.allclose(logits, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('name', ['deeplabv3_r18', 'deeplabv3_mbv3'])
def test_deeplab_batchnorm_running_statistics_follow_within_tens_of_steps(name):
    """Every BatchNorm of the light 2D networks has torch's momentum 0.1 (torchvision builds
    MobileNetV3 with 0.01, whose running statistics trail a short training by ~100 steps)."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)
        net = build_model(name, DeepLabV3Config(allow_random_weights=True))
    momenta = {m.momentum for m in net.modules()
               if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    assert momenta == {0.1}
