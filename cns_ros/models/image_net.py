"""2D network: DeepLabV3-ResNet50 with a D-dim head and the text embeddings as classifier.

Built from torchvision's components (reference B4): ``resnet50`` with
``replace_stride_with_dilation=[False, False, True]`` (output stride 16, the reference's
setting; torchvision's ``deeplabv3_resnet50`` builder fixes output stride 8, so it is not
used), torchvision's ``ASPP`` with rates (6, 12, 18) -> 256 channels (project dropout 0.1 as
in the reference, torchvision's default is 0.5), then the D-dim head (reference: 3x3 conv
256 -> D + BN + ReLU; or a plain 1x1 conv), bilinearly upsampled to the input size. Logits are
``classifier(features, dim=1)``: a dot product with the frozen (C, D) text embeddings.

ImageNet backbone weights come only from a local torchvision checkpoint
(``resnet50-0676ba61.pth`` V1 or ``resnet50-11ad3fa6.pth`` V2; ``.pth`` read with
``torch.load(weights_only=True)``, or ``.safetensors``). Without one, random weights need
``allow_random_weights=True`` and set ``random_weights = True`` with a warning.

In training mode the ASPP image-pooling branch normalises a 1x1 map, so batches need >= 2
images (BatchNorm needs more than one value per channel).
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cns_ros.models.heads import TextClassifier, TextClassifierConfig

__all__ = ['IMAGENET_MEAN', 'IMAGENET_STD', 'RESNET50_CHECKPOINT_FILES',
           'BackboneCheckpointError', 'DeepLabV3Config', 'DeepLabV3Text', 'ImageOutput',
           'MissingBackboneWeightsError', 'label_image', 'load_backbone_state_dict',
           'normalize_images']

logger = logging.getLogger(__name__)

RESNET50_CHECKPOINT_FILES = ('resnet50-0676ba61.pth', 'resnet50-11ad3fa6.pth')
_ASPP_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}
_DILATION = {16: [False, False, True], 8: [False, True, True]}
LATENT_CHANNELS = 256  # ASPP output width
#: ImageNet per-channel mean / std of RGB in [0, 1]: the 2D network's input normalisation (the
#: statistics its torchvision ResNet-50 backbone was trained with; recorded in bundles).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """(I, 3, H, W) float RGB in [0, 1] -> (I, 3, H, W) ImageNet-normalised network input:
    ``(x - IMAGENET_MEAN) / IMAGENET_STD`` per channel, on the images' device and dtype."""
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def label_image(logits: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Per-pixel labels of one image from its 2D network logits, at the requested size.

    The one logits -> label image step of both the live node
    (:meth:`cns_ros.segmenter.Segmenter.segment_image`, the camera labels) and offline 2D
    evaluation (``offline_training/evaluate.py``), so their labels and scores agree.

    Argmax over the classes at the network's resolution (first maximum on ties), then a
    nearest-neighbour resize of the labels (:func:`cns_ros.geometry.resize_nearest`,
    pixel-centre mapping). Chosen over upsampling the logits bilinearly and then taking the
    argmax, which is slightly more accurate at class boundaries but resizes C float channels
    instead of one uint8 channel (for nuScenes 16 classes at 224 x 416 -> 900 x 1600: 16 x
    1.4 M floats, tens of ms on a CPU, on the live node's path).

    Args:
        logits: (C, h, w) float class logits (any device).
        size: (H, W) output size in pixels.

    Returns:
        (H, W) uint8 class ids on the host; ids >= 255 become 255 (uint8's "unlabeled").
    """
    from cns_ros.geometry import resize_nearest

    if logits.dim() != 3:
        raise ValueError(f'logits: expected shape (C, h, w), found {tuple(logits.shape)}')
    labels = logits.argmax(dim=0).clamp_(max=255).to(torch.uint8).cpu().numpy()
    size = (int(size[0]), int(size[1]))
    return labels if labels.shape == size else resize_nearest(labels, size)


class MissingBackboneWeightsError(FileNotFoundError):
    """No ImageNet backbone checkpoint given (and random weights not allowed), or no file."""


class BackboneCheckpointError(ValueError):
    """The checkpoint is not a torchvision ResNet-50 state dict."""


def _weights_help() -> str:
    v1, v2 = RESNET50_CHECKPOINT_FILES
    return (f"Obtain torchvision's ImageNet ResNet-50 weights '{v1}' (IMAGENET1K_V1, "
            f'https://download.pytorch.org/models/{v1}) or \'{v2}\' (IMAGENET1K_V2) and pass '
            f"DeepLabV3Config(backbone_checkpoint='/path/to/{v1}') (training YAML: "
            f'model.options_2d.backbone_checkpoint), or set allow_random_weights=True for '
            f'tests and benchmarks.')


@dataclass(frozen=True)
class DeepLabV3Config:
    """DeepLabV3-ResNet50 text-space network.

    Attributes:
        out_dim: D, the CLIP text-embedding dimension of the head.
        output_stride: 16 (reference; ASPP rates 6, 12, 18) or 8 (rates 12, 24, 36).
        head: 'conv3x3_bn_relu' (reference: 3x3 conv 256 -> D, BN, ReLU) or 'conv1x1' (a 1x1
            conv 256 -> D with bias, unconstrained sign).
        aspp_dropout: Dropout after the ASPP projection (reference 0.1).
        backbone_checkpoint: Local torchvision ResNet-50 ImageNet checkpoint (.pth or
            .safetensors); None: random weights, only with `allow_random_weights`.
        allow_random_weights: Permit random backbone weights (flagged on the model).
        classifier: Text-classifier settings.
    """

    out_dim: int = 512
    output_stride: int = 16
    head: str = 'conv3x3_bn_relu'
    aspp_dropout: float = 0.1
    backbone_checkpoint: str | None = None
    allow_random_weights: bool = False
    classifier: TextClassifierConfig = dataclasses.field(default_factory=TextClassifierConfig)

    def __post_init__(self) -> None:
        if self.output_stride not in _ASPP_RATES:
            raise ValueError(f'DeepLabV3Config.output_stride must be 8 or 16, found '
                             f'{self.output_stride}')
        if self.head not in ('conv3x3_bn_relu', 'conv1x1'):
            raise ValueError(f"DeepLabV3Config.head must be 'conv3x3_bn_relu' or 'conv1x1', "
                             f'found {self.head!r}')
        if self.out_dim < 1 or not 0.0 <= self.aspp_dropout < 1.0:
            raise ValueError('DeepLabV3Config: out_dim must be >= 1, aspp_dropout in [0, 1)')


@dataclass(frozen=True, eq=False)
class ImageOutput:
    """Outputs of the 2D network.

    Attributes:
        features: (B, D, H, W) float text-space features at the input resolution.
        latent: (B, 256, h, w) float ASPP output (h, w = H/16, W/16 at output stride 16),
            the 2D latent of the SAM-projection head.
    """

    features: torch.Tensor
    latent: torch.Tensor


def load_backbone_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ResNet-50 state dict without unpickling arbitrary objects.

    Args:
        path: ``.safetensors`` or a torch file holding a state dict (optionally under
            'state_dict' or 'model'; a 'module.' prefix is removed).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingBackboneWeightsError(f'backbone checkpoint {str(path)!r} does not exist. '
                                          + _weights_help())
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


def _load_resnet(resnet: nn.Module, state: dict[str, torch.Tensor], path: str) -> None:
    """Load every ResNet-50 weight but the classifier (fc); anything else is an error."""
    state = {k: v for k, v in state.items() if not k.startswith('fc.')}
    try:
        result = resnet.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise BackboneCheckpointError(f'{path}: not a torchvision ResNet-50 state dict '
                                      f'({error}). ' + _weights_help()) from error
    missing = [k for k in result.missing_keys if not k.startswith('fc.')]
    if missing or result.unexpected_keys:
        raise BackboneCheckpointError(
            f'{path}: not a torchvision ResNet-50 state dict (missing {missing[:5]}'
            f'{"..." if len(missing) > 5 else ""}, unexpected {result.unexpected_keys[:5]}). '
            + _weights_help())


def _resnet50_backbone(config: DeepLabV3Config) -> tuple[nn.Module, bool]:
    """ResNet-50 (without avgpool / fc) and whether its weights are random."""
    from torchvision.models import resnet50
    from torchvision.models._utils import IntermediateLayerGetter

    resnet = resnet50(weights=None, replace_stride_with_dilation=_DILATION[config.output_stride])
    random_weights = config.backbone_checkpoint is None
    if random_weights and not config.allow_random_weights:
        raise MissingBackboneWeightsError('DeepLabV3 needs ImageNet ResNet-50 backbone '
                                          'weights. ' + _weights_help())
    if random_weights:
        warnings.warn('DeepLabV3: random backbone weights (allow_random_weights=True); '
                      'outputs are meaningless until trained', stacklevel=3)
    else:
        state = load_backbone_state_dict(config.backbone_checkpoint)
        _load_resnet(resnet, state, config.backbone_checkpoint)
        logger.info('DeepLabV3 backbone weights from %s', config.backbone_checkpoint)
    return IntermediateLayerGetter(resnet, return_layers={'layer4': 'out'}), random_weights


class DeepLabV3Text(nn.Module):
    """DeepLabV3-ResNet50 -> (B, D, H, W) text-space features (see the module docstring).

    Attributes:
        config: The :class:`DeepLabV3Config`.
        random_weights: True when the backbone was not loaded from a checkpoint.
        classifier: :class:`TextClassifier`; ``classifier(output.features, dim=1)`` gives
            (B, C, H, W) logits.
    """

    def __init__(self, config: DeepLabV3Config) -> None:
        super().__init__()
        from torchvision.models.segmentation.deeplabv3 import ASPP

        self.config = config
        self.backbone, self.random_weights = _resnet50_backbone(config)
        self.aspp = ASPP(2048, _ASPP_RATES[config.output_stride], LATENT_CHANNELS)
        self.aspp.project[-1].p = config.aspp_dropout
        if config.head == 'conv3x3_bn_relu':
            self.head: nn.Module = nn.Sequential(
                nn.Conv2d(LATENT_CHANNELS, config.out_dim, 3, padding=1, bias=False),
                nn.BatchNorm2d(config.out_dim), nn.ReLU())
        else:
            self.head = nn.Conv2d(LATENT_CHANNELS, config.out_dim, 1)
        self.classifier = TextClassifier(config.out_dim, config.classifier)

    def forward(self, images: torch.Tensor) -> ImageOutput:
        """Run the network.

        Args:
            images: (B, 3, H, W) float, RGB normalised with the ImageNet mean / std.

        Returns:
            :class:`ImageOutput` (features upsampled bilinearly to (H, W)).
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f'images: expected (B, 3, H, W), found {tuple(images.shape)}')
        latent = self.aspp(self.backbone(images)['out'])
        features = nn.functional.interpolate(self.head(latent), size=images.shape[-2:],
                                             mode='bilinear', align_corners=False)
        return ImageOutput(features=features, latent=latent)
