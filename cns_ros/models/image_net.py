"""2D network: DeepLabV3 with a D-dim head and the text embeddings as classifier.

Built from torchvision's components (reference B4): an ImageNet backbone
(:mod:`cns_ros.models.image_backbones`; ``DeepLabV3Config.backbone``): ResNet-50 (the CNS
reference) or, for CPU studies and embedded targets, ResNet-18 or MobileNetV3-Large, at output
stride 16 (the reference's setting; torchvision's ``deeplabv3_resnet50`` builder fixes output
stride 8, so it is not used) or 8; torchvision's ``ASPP`` on the backbone's last feature map
with rates (6, 12, 18) at OS 16, (12, 24, 36) at OS 8 -> 256 channels (project dropout 0.1 as
in the reference, torchvision's default is 0.5; torchvision's MobileNetV3 DeepLabV3 uses rates
(12, 24, 36) at OS 16, here the rates follow the output stride for every backbone), then the
D-dim head (reference: 3x3 conv 256 -> D + BN + ReLU; or a plain 1x1 conv), bilinearly
upsampled to the input size. Logits are ``classifier(features, dim=1)``: a dot product with
the frozen (C, D) text embeddings.

ImageNet backbone weights come only from a local torchvision checkpoint (for ResNet-50
``resnet50-0676ba61.pth`` V1 or ``resnet50-11ad3fa6.pth`` V2; the other backbones'
files: ``image_backbones.BACKBONES``; ``.pth`` read with ``torch.load(weights_only=True)``, or
``.safetensors``). Without one, random weights need ``allow_random_weights=True`` and set
``random_weights = True`` with a warning.

In training mode the ASPP image-pooling branch normalises a 1x1 map, so batches need >= 2
images (BatchNorm needs more than one value per channel).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cns_ros.models.heads import TextClassifier, TextClassifierConfig
from cns_ros.models.image_backbones import (
    BACKBONE_NAMES,
    BACKBONES,
    BackboneCheckpointError,
    BackboneName,
    MissingBackboneWeightsError,
    build_backbone,
    load_backbone_state_dict,
)

__all__ = ['IMAGENET_MEAN', 'IMAGENET_STD', 'RESNET50_CHECKPOINT_FILES',
           'BackboneCheckpointError', 'DeepLabV3Config', 'DeepLabV3Text', 'ImageOutput',
           'MissingBackboneWeightsError', 'label_image', 'load_backbone_state_dict',
           'normalize_images']

RESNET50_CHECKPOINT_FILES = BACKBONES['resnet50'].checkpoint_files
_ASPP_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}
LATENT_CHANNELS = 256  # ASPP output width
#: ImageNet per-channel mean / std of RGB in [0, 1]: the 2D network's input normalisation (the
#: statistics its torchvision ImageNet backbones were trained with; recorded in bundles).
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


@dataclass(frozen=True)
class DeepLabV3Config:
    """DeepLabV3 text-space network.

    Attributes:
        backbone: 'resnet50' (CNS reference), 'resnet18' or 'mobilenet_v3_large' (light, OS 16
            only); None: the builder's (``deeplabv3_r50`` / ``deeplabv3_r18`` /
            ``deeplabv3_mbv3`` in ``cns_ros.models.build``).
        out_dim: D, the CLIP text-embedding dimension of the head.
        output_stride: 16 (reference; ASPP rates 6, 12, 18) or 8 (rates 12, 24, 36).
        head: 'conv3x3_bn_relu' (reference: 3x3 conv 256 -> D, BN, ReLU) or 'conv1x1' (a 1x1
            conv 256 -> D with bias, unconstrained sign).
        aspp_dropout: Dropout after the ASPP projection (reference 0.1).
        backbone_checkpoint: Local torchvision ImageNet checkpoint of the backbone (.pth or
            .safetensors, e.g. ``resnet50-0676ba61.pth``, ``resnet18-f37072fd.pth``,
            ``mobilenet_v3_large-8738ca79.pth``); None: random weights, only with
            `allow_random_weights`.
        allow_random_weights: Permit random backbone weights (flagged on the model).
        classifier: Text-classifier settings.
    """

    backbone: BackboneName | None = None
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
        if self.backbone is not None:
            if self.backbone not in BACKBONE_NAMES:
                raise ValueError(f'DeepLabV3Config.backbone must be one of {BACKBONE_NAMES} '
                                 f'(or None), found {self.backbone!r}')
            spec = BACKBONES[self.backbone]
            if self.output_stride not in spec.output_strides:
                raise ValueError(f'DeepLabV3Config: the {spec.title} backbone supports output '
                                 f'stride {list(spec.output_strides)}, found '
                                 f'{self.output_stride}')
        if self.head not in ('conv3x3_bn_relu', 'conv1x1'):
            raise ValueError(f"DeepLabV3Config.head must be 'conv3x3_bn_relu' or 'conv1x1', "
                             f'found {self.head!r}')
        if self.out_dim < 1 or not 0.0 <= self.aspp_dropout < 1.0:
            raise ValueError('DeepLabV3Config: out_dim must be >= 1, aspp_dropout in [0, 1)')

    def with_backbone(self, backbone: BackboneName) -> DeepLabV3Config:
        """This config with ``backbone`` set; a different backbone already set is an error."""
        if self.backbone not in (None, backbone):
            raise ValueError(f'DeepLabV3Config.backbone = {self.backbone!r}, but this builder '
                             f'makes a {backbone!r} network')
        return dataclasses.replace(self, backbone=backbone)


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


class DeepLabV3Text(nn.Module):
    """DeepLabV3 -> (B, D, H, W) text-space features (see the module docstring).

    Attributes:
        config: The :class:`DeepLabV3Config` (``backbone`` set: build through
            ``cns_ros.models.build`` or call ``config.with_backbone(...)``).
        random_weights: True when the backbone was not loaded from a checkpoint.
        classifier: :class:`TextClassifier`; ``classifier(output.features, dim=1)`` gives
            (B, C, H, W) logits.
    """

    def __init__(self, config: DeepLabV3Config) -> None:
        super().__init__()
        from torchvision.models.segmentation.deeplabv3 import ASPP

        if config.backbone is None:
            raise ValueError('DeepLabV3Config.backbone is unset: build through '
                             'cns_ros.models.build or call config.with_backbone(...)')
        self.config = config
        self.backbone, self.random_weights = build_backbone(
            config.backbone, config.output_stride, config.backbone_checkpoint,
            config.allow_random_weights)
        self.aspp = ASPP(BACKBONES[config.backbone].channels, _ASPP_RATES[config.output_stride],
                         LATENT_CHANNELS)
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
        latent = self._latent(images)
        features = nn.functional.interpolate(self.head(latent), size=images.shape[-2:],
                                             mode='bilinear', align_corners=False)
        return ImageOutput(features=features, latent=latent)

    def logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits at the input resolution and the latent, for training.

        Equal to ``classifier(forward(images).features, dim=1)``, but when the classifier is
        linear (``normalize_features`` off, the reference) the C logits are computed at the
        latent's resolution and upsampled instead of the D = 512 features: bilinear
        interpolation and a linear map commute, and resizing C = 16 channels instead of 512
        halved a CPU training step (CNS with DeepLabV3-MobileNetV3 on 12 images of 112 x 200,
        one thread: 2.4 -> 1.25 s).

        Args:
            images: (B, 3, H, W) float, RGB normalised with the ImageNet mean / std.

        Returns:
            (B, C, H, W) float logits and the (B, 256, h, w) float latent.
        """
        if self.classifier.config.normalize_features:  # not linear: classify the features
            output = self.forward(images)
            return self.classifier(output.features, dim=1), output.latent
        latent = self._latent(images)
        logits = self.classifier(self.head(latent), dim=1)
        return nn.functional.interpolate(logits, size=images.shape[-2:], mode='bilinear',
                                         align_corners=False), latent

    def _latent(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f'images: expected (B, 3, H, W), found {tuple(images.shape)}')
        return self.aspp(self.backbone(images)['out'])
