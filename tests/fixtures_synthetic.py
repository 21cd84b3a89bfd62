"""A small synthetic nuScenes dataset shared by the test modules of one pytest session.

Usage in a test module (this folder is on ``sys.path`` under pytest's default import mode)::

    from fixtures_synthetic import SMALL_CONFIG, small_synthetic_nuscenes

    @pytest.fixture(scope='module')
    def dataroot(tmp_path_factory):
        return small_synthetic_nuscenes(tmp_path_factory)

The dataset is generated once per session (about 3 s on 2 cores, 4 MB) and must be treated as
read-only: tests that need a broken dataset copy it first.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cns_ros.data.synthetic import SyntheticConfig, generate_synthetic_nuscenes

#: Two scenes (scene-0061 in mini_train, scene-0103 in mini_val) of 3 keyframes (1 s) each:
#: 21 LiDAR sweeps and 13 frames per camera per scene, 160 x 90 images, 180 azimuth steps.
SMALL_CONFIG = SyntheticConfig(scene_duration_s=1.0, image_width=160, image_height=90,
                               lidar_azimuth_steps=180)

_DATASETS: dict[Path, Path] = {}


def small_synthetic_nuscenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dataroot of :data:`SMALL_CONFIG`, generated on the first call of the session."""
    key = tmp_path_factory.getbasetemp()
    if key not in _DATASETS:
        root = tmp_path_factory.mktemp('synthetic_nuscenes') / 'nuscenes'
        generate_synthetic_nuscenes(root, SMALL_CONFIG)
        _DATASETS[key] = root
    return _DATASETS[key]
