"""ament_python package definition for cns_ros (colcon on a ROS install, or pip without ROS)."""

import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'cns_ros'


def _tree_data_files(root: str) -> list[tuple[str, list[str]]]:
    """(install dir, files) pairs that reproduce the folder tree `root` under share/<pkg>/."""
    entries = []
    for folder, _dirs, files in sorted(os.walk(root)):
        paths = sorted(os.path.join(folder, name) for name in files)
        if paths:
            entries.append((os.path.join('share', PACKAGE, folder), paths))
    return entries


setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(include=[PACKAGE, PACKAGE + '.*']),
    package_data={PACKAGE: ['resources/*.yaml']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        ('share/' + PACKAGE + '/launch', sorted(glob('launch/*.py'))),
        *_tree_data_files('config'),
    ],
    install_requires=['setuptools', 'numpy', 'pyyaml'],
    zip_safe=False,
    maintainer='cns_ros maintainers',
    maintainer_email='maintainers@cns-ros.invalid',
    description='Label-free LiDAR/camera semantic segmentation from vision foundation models.',
    license='Apache-2.0',
    python_requires='>=3.10',
    extras_require={'test': ['pytest', 'pytest-timeout', 'hypothesis']},
    entry_points={'console_scripts': [
        'replay_node = cns_ros.ros.replay_node:main',
        'segment_node = cns_ros.ros.segment_node:main',
        'ovs_map_node = cns_ros.ros.ovs_map_node:main',
        'record_node = cns_ros.ros.record_node:main',
        'cns_launch = cns_ros.launcher:main',
    ]},
)
