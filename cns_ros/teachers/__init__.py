"""Label-free teachers: foundation models that produce the pseudo-labels and target features.

Modules (each imports its heavy dependencies itself; importing this package is cheap):

- ``clip_dense``: MaskCLIP dense CLIP features, per-pixel labels and confidences from an
  open_clip ViT and a class vocabulary (torch, open_clip).
- ``sam``: SAM automatic masks, label-map refinement and SAM image embeddings
  (torch, segment_anything; ``SamMasks`` and the helpers import without them).
- ``refine``: SAM-mask refinement of any label map (mode of the original labels per mask;
  numpy, or torch tensors on their device).
- ``lifting``: 2D -> 3D transfer of pixel labels to LiDAR points (pairs, multi-camera vote,
  optional occlusion check).
- ``simulated``: stand-in teachers for the synthetic worlds (no weights needed), selected only
  explicitly; it gathers ``synthetic_truth`` (ground-truth reader, seeding), ``class_space``
  (nuScenes-16 driving or scannet20 indoor world), ``simulated_clip`` / ``simulated_sam``
  (presets noise_free, clip_like), ``realistic_clip``, ``realistic_sam`` + ``sam_atoms`` and
  ``sam_embedding`` (presets realistic, realistic_indoor), ``teacher_noise`` (the YAML noise
  files of config/teacher_noise/) and ``teacher_calibration`` + ``calibration_targets``
  (section-7 measurements and targets).
- ``cache``: the on-disk pseudo-label cache written by ``offline_training/pseudo_label.py``.
"""
