"""Offline training of the label-free networks (CNS and CLIP2Scene) from the pseudo-label cache.

* :mod:`cns_ros.training.config`: typed training configs, YAML presets (``config/train/``),
  ``--set key=value`` overrides; unknown keys are errors.
* :mod:`cns_ros.training.data`: keyframes of the cache + nuScenes reader, 3D augmentation,
  multi-sweep input, collate into a :class:`~cns_ros.training.data.TrainBatch`.
* :mod:`cns_ros.training.cns`: CNS objective (SAM-refined CE, 2D-3D prediction-consistency
  co-training with target switching, latent-space consistency with SAM features).
* :mod:`cns_ros.training.clip2scene`: CLIP2Scene objective (semantic CE on paired points,
  spatial-temporal super-voxel fusion, switchable self-training).
* :mod:`cns_ros.training.loop`: the one training loop, ``fit()``, for every method
  (AMP, clipping, cosine schedule, DDP under torchrun, TensorBoard, exact resume).
* :mod:`cns_ros.training.checkpoint`: atomic checkpoints loadable with ``weights_only=True``.

Nothing here imports torch at package import time; the modules do when imported.
"""
