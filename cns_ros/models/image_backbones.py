"""ImageNet backbones of the 2D network (torchvision): ResNet-50, ResNet-18, MobileNetV3-Large.

Each backbone maps (B, 3, H, W) ImageNet-normalised RGB to ``{'out': (B, C, H/s, W/s)}`` at
output stride ``s`` (16 or 8), ready for DeepLabV3's ASPP:

- ``resnet50``: torchvision ``resnet50`` with ``replace_stride_with_dilation`` (layer4 at OS 16;
  layer3 and layer4 at OS 8); C = 2048.
- ``resnet18``: torchvision ``resnet18``. Its ``BasicBlock`` takes no dilation argument, so the
  strides are removed here (algorithme a trous): in each dilated stage the first block's
  strided 3x3 conv and its 1x1 shortcut get stride 1 (the 3x3 keeps the previous dilation), and
  every later 3x3 conv of the stage gets dilation = previous x 2 (padding = dilation). In eval
  mode the dilated stage's output subsampled by 2 equals the strided stage's output exactly.
  C = 512.
- ``mobilenet_v3_large``: torchvision ``mobilenet_v3_large(dilated=True).features`` (the
  backbone of torchvision's ``deeplabv3_mobilenet_v3_large``: the last stage dilated, OS 16
  only); C = 960.

ImageNet weights come only from a local torchvision checkpoint file (``BACKBONES[name]
.checkpoint_files``: the ``.pth`` files torchvision downloads, read with
``torch.load(weights_only=True)``, or ``.safetensors``). The classifier (``fc`` /
``classifier``) is dropped; any other missing or unexpected key is an error. Without a
checkpoint, random weights need ``allow_random_weights`` and come with a warning.
"""

from __future__ import annotations

import logging
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

__all__ = ['BACKBONES', 'BACKBONE_NAMES', 'BackboneCheckpointError', 'BackboneName',
           'BackboneSpec', 'MissingBackboneWeightsError', 'build_backbone', 'dilate_basic_stage',
           'load_backbone_state_dict', 'set_batchnorm_momentum', 'weights_help']

logger = logging.getLogger(__name__)

BackboneName = Literal['resnet50', 'resnet18', 'mobilenet_v3_large']
BACKBONE_NAMES: tuple[str, ...] = typing.get_args(BackboneName)


#: BatchNorm running-statistics momentum of every backbone: torch's default, which ResNets use.
#: torchvision builds MobileNetV3 with 0.01 (for long ImageNet training); then the running
#: statistics trail the weights by about 100 steps, and after a short training (a CPU study:
#: 250 steps from random weights) the network in eval mode labelled almost every pixel 'truck'
#: while the same weights with batch statistics gave sensible labels.
BATCHNORM_MOMENTUM = 0.1


def set_batchnorm_momentum(module: nn.Module, momentum: float) -> None:
    """Set the running-statistics momentum of every BatchNorm layer in ``module``."""
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.momentum = momentum


class MissingBackboneWeightsError(FileNotFoundError):
    """No ImageNet backbone checkpoint given (and random weights not allowed), or no file."""


class BackboneCheckpointError(ValueError):
    """The checkpoint is not a state dict of the expected torchvision backbone."""


@dataclass(frozen=True)
class BackboneSpec:
    """Facts about one torchvision ImageNet backbone.

    Attributes:
        title: Human name in messages ('ResNet-50').
        checkpoint_files: torchvision's ImageNet checkpoint file names, IMAGENET1K_V1 first.
        channels: C, channels of the output feature map.
        output_strides: Supported output strides.
        classifier_prefix: State-dict prefix of the ImageNet classifier (dropped on load).
    """

    title: str
    checkpoint_files: tuple[str, ...]
    channels: int
    output_strides: tuple[int, ...]
    classifier_prefix: str


BACKBONES: dict[str, BackboneSpec] = {
    'resnet50': BackboneSpec('ResNet-50', ('resnet50-0676ba61.pth', 'resnet50-11ad3fa6.pth'),
                             2048, (16, 8), 'fc.'),
    'resnet18': BackboneSpec('ResNet-18', ('resnet18-f37072fd.pth',), 512, (16, 8), 'fc.'),
    'mobilenet_v3_large': BackboneSpec(
        'MobileNetV3-Large', ('mobilenet_v3_large-8738ca79.pth',
                              'mobilenet_v3_large-5c1a4163.pth'), 960, (16,), 'classifier.'),
}


def weights_help(name: str) -> str:
    """How to obtain and pass the ImageNet checkpoint of backbone ``name``."""
    spec = BACKBONES[name]
    files = spec.checkpoint_files
    others = ''.join(f" or '{f}' (IMAGENET1K_V{i + 2})" for i, f in enumerate(files[1:]))
    return (f"Obtain torchvision's ImageNet {spec.title} weights '{files[0]}' (IMAGENET1K_V1, "
            f'https://download.pytorch.org/models/{files[0]}){others} and pass '
            f"DeepLabV3Config(backbone_checkpoint='/path/to/{files[0]}') (training YAML: "
            f'model.options_2d.backbone_checkpoint), or set allow_random_weights=True for '
            f'tests and benchmarks.')


def load_backbone_state_dict(path: str | Path, name: str = 'resnet50'
                             ) -> dict[str, torch.Tensor]:
    """Read a backbone state dict without unpickling arbitrary objects.

    Args:
        path: ``.safetensors`` or a torch file holding a state dict (optionally under
            'state_dict' or 'model'; a 'module.' prefix is removed).
        name: The backbone it is meant for (names the expected file in errors).

    Raises:
        MissingBackboneWeightsError: No such file. BackboneCheckpointError: Not a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingBackboneWeightsError(f'backbone checkpoint {str(path)!r} does not exist. '
                                          + weights_help(name))
    if path.suffix == '.safetensors':
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location='cpu', weights_only=True)
    for key in ('state_dict', 'model'):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise BackboneCheckpointError(f'{path}: expected a state dict, found {type(state)}')
    return {k.removeprefix('module.'): v for k, v in state.items()}


def _load_weights(model: nn.Module, state: dict[str, torch.Tensor], path: str,
                  name: str) -> None:
    """Load every weight of ``model`` but its ImageNet classifier; anything else is an error."""
    spec = BACKBONES[name]
    skip = spec.classifier_prefix
    state = {k: v for k, v in state.items() if not k.startswith(skip)}
    what = f'{path}: not a torchvision {spec.title} state dict'
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise BackboneCheckpointError(f'{what} ({error}). ' + weights_help(name)) from error
    missing = [k for k in result.missing_keys if not k.startswith(skip)]
    if missing or result.unexpected_keys:
        raise BackboneCheckpointError(
            f'{what} (missing {missing[:5]}{"..." if len(missing) > 5 else ""}, unexpected '
            f'{result.unexpected_keys[:5]}). ' + weights_help(name))


def dilate_basic_stage(stage: nn.Sequential, previous: int) -> int:
    """Replace the stride 2 of a torchvision ``BasicBlock`` stage by dilation (in place).

    Args:
        stage: ``resnet.layerK``; its first block has the stride-2 3x3 ``conv1`` and a
            ``downsample`` (1x1 conv stride 2, BatchNorm).
        previous: Dilation of the stage input (1 unless an earlier stage was dilated).

    Returns:
        The new dilation, ``2 * previous``, for the next stage.
    """
    dilation = 2 * previous
    first = stage[0]
    first.conv1.stride, first.conv1.dilation = (1, 1), (previous, previous)
    first.conv1.padding = (previous, previous)
    first.downsample[0].stride = (1, 1)
    convs = [first.conv2] + [conv for block in stage[1:] for conv in (block.conv1, block.conv2)]
    for conv in convs:
        conv.dilation, conv.padding = (dilation, dilation), (dilation, dilation)
    return dilation


def _classifier_free_net(name: str, output_stride: int) -> nn.Module:
    """The full torchvision network (random init), strides replaced for ``output_stride``."""
    from torchvision import models

    if name == 'resnet50':
        dilate = [False, output_stride == 8, True]
        return models.resnet50(weights=None, replace_stride_with_dilation=dilate)
    if name == 'resnet18':
        net = models.resnet18(weights=None)
        dilation = dilate_basic_stage(net.layer3, 1) if output_stride == 8 else 1
        dilate_basic_stage(net.layer4, dilation)
        return net
    return models.mobilenet_v3_large(weights=None, dilated=True)


def build_backbone(name: str, output_stride: int, checkpoint: str | None,
                   allow_random_weights: bool) -> tuple[nn.Module, bool]:
    """A backbone returning ``{'out': (B, C, H/s, W/s)}`` and whether its weights are random.

    Args:
        name: One of ``BACKBONE_NAMES``.
        output_stride: s, one of ``BACKBONES[name].output_strides``.
        checkpoint: Local ImageNet checkpoint file, or None for random weights.
        allow_random_weights: Permit ``checkpoint = None`` (a warning is given).

    Raises:
        MissingBackboneWeightsError: No checkpoint and random weights not allowed, or no such
            file (the message names the expected file). BackboneCheckpointError: wrong file.
    """
    from torchvision.models._utils import IntermediateLayerGetter

    spec = BACKBONES[name]
    if output_stride not in spec.output_strides:
        raise ValueError(f'{spec.title} backbone: output stride {output_stride} not supported '
                         f'(supported: {list(spec.output_strides)})')
    random_weights = checkpoint is None
    if random_weights and not allow_random_weights:
        raise MissingBackboneWeightsError(f'DeepLabV3 needs ImageNet {spec.title} backbone '
                                          'weights. ' + weights_help(name))
    net = _classifier_free_net(name, output_stride)
    if random_weights:
        warnings.warn(f'DeepLabV3: random backbone weights ({spec.title}, '
                      'allow_random_weights=True); outputs are meaningless until trained',
                      stacklevel=4)
    else:
        _load_weights(net, load_backbone_state_dict(checkpoint, name), checkpoint, name)
        logger.info('DeepLabV3 %s backbone weights from %s', spec.title, checkpoint)
    if name == 'mobilenet_v3_large':
        features = net.features
        set_batchnorm_momentum(features, BATCHNORM_MOMENTUM)
        return IntermediateLayerGetter(features, {str(len(features) - 1): 'out'}), random_weights
    return IntermediateLayerGetter(net, return_layers={'layer4': 'out'}), random_weights
