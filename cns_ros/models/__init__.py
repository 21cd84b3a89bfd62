"""Networks: sparse 3D U-Nets, the 2D DeepLabV3, text-space and SAM-projection heads.

Modules (each imports torch itself; importing this package is cheap):

- ``sparse``: the package's one voxelization (:func:`~cns_ros.models.sparse.voxelize_cloud`,
  batched by :func:`~cns_ros.models.sparse.voxelize_batch`), devoxelization,
  backend selection ('spconv' default, 'torchsparse' when importable) and the
  backend-neutral sparse convolution and state-dict conversion.
- ``backends``: the spconv and torchsparse adapters (and spconv's CPU fixes).
- ``layout``: the backend-neutral kernel layout of checkpoints and bundles.
- ``sparse_blocks``: the sparse conv / BatchNorm / residual blocks both U-Nets are made of.
- ``minkunet``: MinkUNet14A / 18A / Res16UNet34C with per-point text-space outputs.
- ``spvcnn``: SPVCNN (point and voxel branches, 480-d per-point latents) with the same outputs;
  ``point_voxel``: its points -> voxels (mean) and voxels -> points (trilinear) maps.
- ``image_net``: DeepLabV3 with a text-space head, its ImageNet input normalisation and the
  logits -> label image step shared by the live node and offline evaluation.
- ``image_backbones``: the 2D network's ImageNet backbones (ResNet-50, and the light ResNet-18
  and MobileNetV3-Large) and their local-checkpoint loading.
- ``heads``: the text classifier (vocabulary as data) and the SAM projections (K_f = 64).
- ``build``: ``MODEL_BUILDERS`` (name -> builder taking a typed config) and ``build_model``.
"""
