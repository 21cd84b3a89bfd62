"""Calibration targets of the simulated teachers: teacher_noise.md section 7, per class space.

The driving targets (nuScenes-16 worlds) and the indoor targets (scannet20 worlds) are the two
columns of sections 7.1-7.3 (all [I]: inferred from published facts, not measured there). Where
the indoor column only says "same", the driving range is used; where it gives no number (the
wall and floor masks), the range is this project's reading of its words and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from cns_ros.teachers.class_space import NUSCENES16, SCANNET20, class_space


@dataclass(frozen=True)
class Target:
    """A calibration target: the range [lo, hi] and where it comes from."""

    lo: float
    hi: float
    section: str
    meaning: str

    def check(self, value: float) -> str:
        """'inside', or by how much it misses ('+0.03 above' / '-2.1 below')."""
        if self.lo <= value <= self.hi:
            return 'inside'
        if value > self.hi:
            return f'{value - self.hi:+.3g} above'
        return f'{value - self.lo:+.3g} below'


#: Driving-world targets (teacher_noise.md 7.1-7.3). IoU and accuracy in percent.
TARGETS: dict[str, Target] = {
    'clip_miou': Target(15, 20, '7.1', 'teacher 2D mIoU vs ground truth, %'),
    'clip_accuracy': Target(35, 50, '7.1', 'teacher pixel accuracy, %'),
    'persistent_share': Target(0.60, 0.75, '7.1', 'share of wrong pixels in the persistent '
                               'component'),
    'boundary_band_patches': Target(0.5, 1.0, '7.1', 'the resolution step alone on the '
                                    'ground truth: 90th percentile distance of its errors to '
                                    'a class boundary, patches'),
    'sam_masks_per_image': Target(40, 120, '7.2', 'masks per image (median)'),
    'sam_coverage': Target(0.80, 0.95, '7.2', 'share of pixels in >= 1 mask'),
    'sam_overlap': Target(0.15, 0.40, '7.2', 'share of covered pixels in >= 2 masks'),
    'sam_purity': Target(0.85, 0.95, '7.2', 'area-weighted majority-class share per mask'),
    'sam_crossing': Target(0.05, 0.10, '7.2', 'share of masks with purity < 0.9'),
    'sam_islands': Target(0.02, 0.05, '7.2', 'share of masks with > 1 connected component'),
    'sam_nesting': Target(0.30, 0.50, '7.2', 'share of objects with a whole and a part mask'),
    'sam_small_share': Target(0.5, 1.0, '7.2', 'share of masks under 0.5 % of the image'),
    'sam_road_masks': Target(2, 8, '7.2', 'masks per image whose majority is driveable '
                             'surface (median over images with road)'),
    'sam_building_masks': Target(3, 15, '7.2', 'masks per image whose majority is manmade '
                                 '(median over images with manmade)'),
    'sam_voting_gain': Target(1.0, 3.0, '7.2 / 3.4', 'mIoU gain of majority voting in the '
                              'masks on a 50-70 mIoU labeler (SSA order), points'),
    'probe_ratio': Target(0.6, 0.8, '7.3', 'linear-probe mIoU, SAM stand-in / CLIP stand-in'),
}

#: Per-class IoU targets (percent), 7.1: high / mid / near zero.
CLASS_TARGETS: dict[str, tuple[float, float]] = {
    **{name: (35.0, 70.0) for name in ('driveable_surface', 'vegetation', 'car', 'manmade')},
    **{name: (10.0, 35.0) for name in ('sidewalk', 'terrain', 'bus', 'truck', 'pedestrian')},
    **{name: (0.0, 10.0) for name in ('other_flat', 'barrier', 'traffic_cone', 'bicycle',
                                      'motorcycle', 'trailer', 'construction_vehicle')},
}


#: Indoor targets (teacher_noise.md 7.1-7.3, indoor columns; SAM at CNS's 320 x 240 frames).
INDOOR_TARGETS: dict[str, Target] = {
    **{name: target for name, target in TARGETS.items()
       if name not in ('sam_road_masks', 'sam_building_masks')},
    'clip_miou': Target(18, 24, '7.1', 'teacher 2D mIoU vs ground truth, %'),
    'clip_accuracy': Target(40, 55, '7.1', 'teacher pixel accuracy, %'),
    'sam_masks_per_image': Target(15, 50, '7.2', 'masks per 320 x 240 image (median)'),
    'sam_coverage': Target(0.85, 0.95, '7.2', 'share of pixels in >= 1 mask'),
    'sam_wall_masks': Target(2, 10, '7.2', "masks per image whose majority is wall (median over "
                             "images with wall); the range is this project's reading of 'walls "
                             "split at corners, pictures, doors'"),
    'sam_floor_masks': Target(1, 5, '7.2', "masks per image whose majority is floor (median "
                              "over images with floor); the range is this project's reading of "
                              "'floor split by rugs and shadows'"),
}

#: Per-class IoU targets (percent), 7.1 indoor: high / mid / low (bathtub is in no list).
INDOOR_CLASS_TARGETS: dict[str, tuple[float, float]] = {
    **{name: (35.0, 70.0) for name in ('floor', 'wall', 'bed')},
    **{name: (10.0, 35.0) for name in ('chair', 'sofa', 'table', 'door', 'window', 'bookshelf',
                                       'curtain', 'toilet')},
    **{name: (0.0, 10.0) for name in ('picture', 'counter', 'desk', 'shower curtain', 'sink',
                                      'cabinet', 'refrigerator', 'other furniture')},
}

#: Class space -> the classes whose SAM masks are counted per image (result key -> class).
STUFF_MASK_CLASSES: dict[str, dict[str, str]] = {
    NUSCENES16: {'road': 'driveable_surface', 'building': 'manmade'},
    SCANNET20: {'wall': 'wall', 'floor': 'floor'},
}


def targets(space: str = NUSCENES16) -> tuple[dict[str, Target], dict[str, tuple[float, float]]]:
    """(statistic targets, per-class IoU targets) of class space ``space``."""
    class_space(space)  # an unknown name fails here
    if space == SCANNET20:
        return INDOOR_TARGETS, INDOOR_CLASS_TARGETS
    return TARGETS, CLASS_TARGETS
