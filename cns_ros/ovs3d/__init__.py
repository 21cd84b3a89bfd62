"""3D-OVS: open-vocabulary 3D segmentation of one captured static scene (Liu et al., NeurIPS 2023).

A radiance field (TensoRF-VM) is fitted to posed images (stage A), then CLIP and DINO are
distilled into it with only the scene's object names (stage B); any text list can then label
any rendered view or the field's surface. Plain PyTorch, CPU or CUDA.

Floors, as elsewhere in cns_ros: data (:mod:`.llff`, :mod:`.dataset`, :mod:`.synthetic`) ->
teachers (:mod:`.clip_pyramid`, :mod:`.teachers`, :mod:`.standin`, :mod:`.teacher_cache`) ->
field and training (:mod:`.rays`, :mod:`.field`, :mod:`.render`, :mod:`.semantic`,
:mod:`.losses`, :mod:`.training`) -> evaluation (:mod:`.metrics`) -> the labeled map handed to
ROS (:mod:`.labeled_map`). Nothing here imports rclpy; importing this package imports nothing.
"""
