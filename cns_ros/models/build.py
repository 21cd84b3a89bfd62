"""Model registry: a plain dict of builder functions, each taking its typed config.

==================  ===============  ==========  =============================================
name                config           parameters  notes
==================  ===============  ==========  =============================================
``minkunet14a``     MinkUNetConfig    8,061,088  MinkUNet14A (CLIP2Scene, ScanNet)
``minkunet18a``     MinkUNetConfig   15,529,760  MinkUNet18A (OpenScene)
``minkunet34c``     MinkUNetConfig   37,892,640  Res16UNet34C (CNS)
``spvcnn``          SPVCNNConfig     22,019,840  SPVCNN (CLIP2Scene, nuScenes), per point
``deeplabv3_r50``   DeepLabV3Config  40,223,808  DeepLabV3-ResNet50, OS 16 (CNS 2D)
``deeplabv3_r18``   DeepLabV3Config  16,489,024  DeepLabV3-ResNet18, OS 16 (light 2D)
``deeplabv3_mbv3``  DeepLabV3Config  11,610,416  DeepLabV3-MobileNetV3-Large, OS 16 (light 2D)
==================  ===============  ==========  =============================================

Parameter counts are for the default configs (1 input channel (intensity), D = 512, no local
head (+49,664 with it; SPVCNN +246,272); DeepLab with the 3x3 conv head, 1,049,088 fewer with
the 1x1 head: 39,174,720 / 15,439,936 / 10,561,328); the text embeddings are a buffer, not
parameters. ``tests/test_models.py`` checks every count of the table. The three DeepLabV3
builders differ only in ``DeepLabV3Config.backbone`` (set by the builder; a config naming
another backbone is an error).

Example::

    config = model_config('minkunet34c', input_features=['intensity'], channel_scale=0.25)
    net = build_model('minkunet34c', config)
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from cns_ros.models.heads import TextClassifierConfig
from cns_ros.models.image_net import DeepLabV3Config, DeepLabV3Text
from cns_ros.models.minkunet import MinkUNet, MinkUNetConfig
from cns_ros.models.spvcnn import SPVCNN, SPVCNNConfig

__all__ = ['MODEL_BUILDERS', 'MODEL_CONFIGS', 'build_deeplabv3_mbv3', 'build_deeplabv3_r18',
           'build_deeplabv3_r50', 'build_minkunet14a', 'build_minkunet18a', 'build_minkunet34c',
           'build_model', 'build_spvcnn', 'count_parameters', 'model_config']


def build_minkunet14a(config: MinkUNetConfig | None = None) -> MinkUNet:
    """MinkUNet14A; `config.planes` / `layers` override the preset where set."""
    return MinkUNet((config or MinkUNetConfig()).with_preset('14A'))


def build_minkunet18a(config: MinkUNetConfig | None = None) -> MinkUNet:
    """MinkUNet18A; `config.planes` / `layers` override the preset where set."""
    return MinkUNet((config or MinkUNetConfig()).with_preset('18A'))


def build_minkunet34c(config: MinkUNetConfig | None = None) -> MinkUNet:
    """Res16UNet34C; `config.planes` / `layers` override the preset where set."""
    return MinkUNet((config or MinkUNetConfig()).with_preset('34C'))


def build_spvcnn(config: SPVCNNConfig | None = None) -> SPVCNN:
    """SPVCNN (reference A4.1 widths and block counts unless `config` changes them)."""
    return SPVCNN(config or SPVCNNConfig())


def build_deeplabv3_r50(config: DeepLabV3Config | None = None) -> DeepLabV3Text:
    """DeepLabV3-ResNet50 with a D-dim head (needs backbone weights or the random flag)."""
    return DeepLabV3Text((config or DeepLabV3Config()).with_backbone('resnet50'))


def build_deeplabv3_r18(config: DeepLabV3Config | None = None) -> DeepLabV3Text:
    """DeepLabV3-ResNet18 (dilated layer4 at OS 16) with a D-dim head: a light 2D network."""
    return DeepLabV3Text((config or DeepLabV3Config()).with_backbone('resnet18'))


def build_deeplabv3_mbv3(config: DeepLabV3Config | None = None) -> DeepLabV3Text:
    """DeepLabV3-MobileNetV3-Large (OS 16) with a D-dim head: the lightest 2D network."""
    return DeepLabV3Text((config or DeepLabV3Config()).with_backbone('mobilenet_v3_large'))


MODEL_BUILDERS: dict[str, Callable[[Any], nn.Module]] = {
    'minkunet14a': build_minkunet14a,
    'minkunet18a': build_minkunet18a,
    'minkunet34c': build_minkunet34c,
    'spvcnn': build_spvcnn,
    'deeplabv3_r50': build_deeplabv3_r50,
    'deeplabv3_r18': build_deeplabv3_r18,
    'deeplabv3_mbv3': build_deeplabv3_mbv3,
}
MODEL_CONFIGS: dict[str, type] = {
    'minkunet14a': MinkUNetConfig,
    'minkunet18a': MinkUNetConfig,
    'minkunet34c': MinkUNetConfig,
    'spvcnn': SPVCNNConfig,
    'deeplabv3_r50': DeepLabV3Config,
    'deeplabv3_r18': DeepLabV3Config,
    'deeplabv3_mbv3': DeepLabV3Config,
}


def _check_name(name: str) -> None:
    if name not in MODEL_BUILDERS:
        raise KeyError(f'unknown model {name!r}; valid names: {sorted(MODEL_BUILDERS)}')


def build_model(name: str, config: Any = None) -> nn.Module:
    """Build a registered model.

    Args:
        name: A key of ``MODEL_BUILDERS``.
        config: Instance of ``MODEL_CONFIGS[name]``; None: its defaults.

    Raises:
        KeyError: unknown name (the message lists the valid names). TypeError: wrong config.
    """
    _check_name(name)
    expected = MODEL_CONFIGS[name]
    if config is not None and not isinstance(config, expected):
        raise TypeError(f'{name} takes a {expected.__name__}, found {type(config).__name__}')
    return MODEL_BUILDERS[name](config)


def model_config(name: str, **options: Any) -> Any:
    """The typed config of model `name` from keyword options (e.g. parsed YAML).

    Lists become tuples, a ``classifier`` mapping becomes a :class:`TextClassifierConfig`;
    unknown keys raise ``ValueError`` naming the valid ones.
    """
    _check_name(name)
    cls = MODEL_CONFIGS[name]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise ValueError(f'{cls.__name__}: unknown option(s) {unknown}; valid: {sorted(fields)}')
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in options.items():
        if key == 'classifier' and isinstance(value, Mapping):
            value = TextClassifierConfig(**value)
        elif isinstance(value, list) and 'tuple' in str(hints[key]):
            value = tuple(value)
        values[key] = value
    return cls(**values)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not) of `model`."""
    return sum(p.numel() for p in model.parameters())
