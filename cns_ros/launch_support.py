"""Where cns_ros's installed files and executables are, for ``cns_launch``
(:mod:`cns_ros.launcher`), and the Fast DDS profile environment of its nodes.

The share folder (``config/``, ``launch/``) and executables are found in a colcon install (the
ament index), a pip install (``<sys.prefix>/share/cns_ros``, console scripts) or the source
tree (editable install). The DDS profile: full-size clouds (a nuScenes sweep is ~700 KB, the
labeled cloud ~1 MB) exceed Fast DDS's default 512 KB shared-memory segment and fall back to
fragmented UDP, where best-effort readers lose sweeps; ``config/fastdds_shm.xml`` gives a 32 MB
segment. Fast DDS 3 (Kilted and newer) reads ``FASTDDS_DEFAULT_PROFILES_FILE``, Fast DDS 2
(Humble, Jazzy) ``FASTRTPS_DEFAULT_PROFILES_FILE``; both are set, each version ignores the
other's.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

__all__ = ['DDS_PROFILE_VARIABLES', 'PACKAGE', 'ament_share', 'dds_profile_environment',
           'default_dds_profile', 'default_params_file', 'find_executable', 'package_share',
           'rviz_config']

PACKAGE = 'cns_ros'
#: Environment variables naming Fast DDS's default XML profile file (Fast DDS 3, Fast DDS 2).
DDS_PROFILE_VARIABLES = ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE')


def ament_share(package: str) -> Path | None:
    """``package``'s share directory from the ament index, or None (no index, not found)."""
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(package))
    except Exception:  # not importable, AMENT_PREFIX_PATH unset, package not found
        return None


def package_share() -> Path:
    """The folder holding cns_ros's ``config/`` and ``launch/``.

    The ament index's share directory when cns_ros is found there (colcon install), else
    ``<sys.prefix>/share/cns_ros`` (pip install), else the source tree (editable install).
    """
    candidates = [ament_share(PACKAGE), Path(sys.prefix) / 'share' / PACKAGE,
                  Path(__file__).resolve().parents[1]]
    for folder in candidates:
        if folder is not None and (folder / 'config').is_dir():
            return folder
    return Path(__file__).resolve().parents[1]


def default_params_file() -> str:
    """``<share>/config/segment.yaml`` (see :func:`package_share`)."""
    return str(package_share() / 'config' / 'segment.yaml')


def rviz_config() -> str:
    """``<share>/config/segment.rviz``."""
    return str(package_share() / 'config' / 'segment.rviz')


def default_dds_profile() -> str:
    """``<share>/config/fastdds_shm.xml``: Fast DDS with a 32 MB shared-memory segment."""
    return str(package_share() / 'config' / 'fastdds_shm.xml')


def dds_profile_environment(profile: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment variables that make Fast DDS load the XML ``profile`` in the started
    nodes: :data:`DDS_PROFILE_VARIABLES` set to it, or nothing when ``profile`` is blank or
    ``environ`` (the user's environment) already sets one of them (the user's choice stays)."""
    profile = profile.strip()
    if not profile or any(environ.get(name) for name in DDS_PROFILE_VARIABLES):
        return {}
    return dict.fromkeys(DDS_PROFILE_VARIABLES, profile)


def find_executable(package: str, executable: str) -> list[str] | None:
    """The command that starts ``executable`` of ``package``, or None when it is not installed.

    Looks in the ament install (``<prefix>/lib/<package>/``), beside this Python interpreter
    (a virtual environment's ``bin/``) and on PATH; a cns_ros console script that is not
    installed as a file runs from its entry point with this interpreter.
    """
    try:
        from ament_index_python.packages import get_package_prefix

        candidate = Path(get_package_prefix(package)) / 'lib' / package / executable
        if os.access(candidate, os.X_OK):
            return [str(candidate)]
    except Exception:  # not importable, AMENT_PREFIX_PATH unset, package not found
        pass
    beside = Path(sys.executable).parent / executable
    if os.access(beside, os.X_OK) and beside.is_file():
        return [str(beside)]
    found = shutil.which(executable)
    if found:
        return [found]
    if package == PACKAGE:
        from importlib.metadata import entry_points

        for entry in entry_points(group='console_scripts', name=executable):
            if entry.value.startswith(f'{PACKAGE}.'):
                module, func = entry.value.split(':')
                return [sys.executable, '-c',
                        f'import sys; from {module} import {func}; sys.exit({func}())']
    return None
