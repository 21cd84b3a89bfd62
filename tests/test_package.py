"""Packaging contract: cheap import, ament_python metadata, installable data files."""

from __future__ import annotations

import ast
import configparser
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ('torch', 'rclpy', 'open_clip', 'segment_anything', 'spconv', 'nuscenes', 'cv2')
CORE_MODULES = ('cns_ros', 'cns_ros.pointcloud', 'cns_ros.geometry', 'cns_ros.calibration',
                'cns_ros.vocabulary')


@pytest.mark.parametrize('module', CORE_MODULES)
def test_import_is_cheap(module):
    """Importing the package or its ROS-free core pulls in no heavy dependency."""
    code = (f'import sys, {module}; '
            f'print(",".join(m for m in {HEAVY!r} if m in sys.modules))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         cwd=ROOT, check=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1:] in ([], ['']), \
        f'import {module} imported heavy modules: {out.stdout.strip()}'


ROS_PYTHON = ('rclpy', 'rcl_interfaces', 'builtin_interfaces', 'sensor_msgs', 'std_msgs',
              'nav_msgs', 'diagnostic_msgs', 'rosgraph_msgs', 'message_filters', 'tf2_ros')


def _ros_imports(path: Path) -> list[str]:
    """'file:line module' of every import (top level or inside a function) of a ROS package."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or '']
        else:
            continue
        found += [f'{path.relative_to(ROOT)}:{node.lineno} {name}' for name in names
                  if name.split('.')[0] in ROS_PYTHON]
    return found


def test_only_cns_ros_ros_imports_rclpy():
    """DESIGN.md: everything outside cns_ros/ros/ is ROS-free (the package and the CLIs)."""
    files = [p for p in sorted((ROOT / 'cns_ros').rglob('*.py'))
             if 'ros' not in p.relative_to(ROOT / 'cns_ros').parts[:-1]]
    files += sorted((ROOT / 'offline_training').glob('*.py'))
    assert len(files) > 20 and ROOT / 'offline_training' / 'demo_live.py' in files
    assert [hit for path in files for hit in _ros_imports(path)] == []
    assert _ros_imports(ROOT / 'cns_ros' / 'ros' / 'recorder.py')  # the scan sees imports


def test_package_xml_format_3_ros_deps_only():
    root = ET.parse(ROOT / 'package.xml').getroot()
    assert root.tag == 'package' and root.get('format') == '3'
    assert root.findtext('name') == 'cns_ros'
    exec_deps = {e.text for e in root.iter('exec_depend')}
    assert exec_deps == {'rclpy', 'sensor_msgs', 'std_msgs', 'nav_msgs', 'diagnostic_msgs',
                         'rosgraph_msgs', 'message_filters', 'launch', 'launch_ros',
                         'python3-numpy', 'python3-yaml'}
    assert {e.text for e in root.iter('test_depend')} == {'python3-pytest'}
    assert root.find('export/build_type').text == 'ament_python'
    setup_version = ast.literal_eval(_setup_keywords()['version'])
    assert root.findtext('version') == setup_version


def _setup_keywords() -> dict[str, ast.expr]:
    """Keyword arguments of the setup() call in setup.py, as AST nodes."""
    tree = ast.parse((ROOT / 'setup.py').read_text())
    call = next(node for node in ast.walk(tree)
                if isinstance(node, ast.Call) and getattr(node.func, 'id', '') == 'setup')
    return {kw.arg: kw.value for kw in call.keywords}


def test_setup_py_ament_conventions():
    keywords = _setup_keywords()
    assert 'tests_require' not in keywords, 'tests_require makes colcon test run zero tests'
    assert 'extras_require' in keywords
    source = (ROOT / 'setup.py').read_text()
    assert "find_packages(include=[PACKAGE, PACKAGE + '.*'])" in source
    assert (ROOT / 'resource' / 'cns_ros').is_file()


def test_setup_cfg_installs_scripts_under_lib_pkg():
    config = configparser.ConfigParser()
    config.read(ROOT / 'setup.cfg')
    assert config['develop']['script_dir'] == '$base/lib/cns_ros'
    assert config['install']['install_scripts'] == '$base/lib/cns_ros'


def test_data_files_cover_config_tree(tmp_path):
    """Every file under config/ is installed under share/cns_ros/config/ with its subfolder."""
    code = ('import setuptools, json, sys\n'
            'captured = {}\n'
            'setuptools.setup = lambda **kw: captured.update(kw)\n'
            "exec(open('setup.py').read())\n"
            "print(json.dumps(captured['data_files']))\n")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         cwd=ROOT, check=True, timeout=120)
    installed = {Path(dest) / Path(src).name
                 for dest, sources in json.loads(out.stdout.strip().splitlines()[-1])
                 for src in sources}
    expected = {Path('share/cns_ros') / path.relative_to(ROOT)
                for path in (ROOT / 'config').rglob('*') if path.is_file()}
    assert expected <= installed
    assert Path('share/cns_ros/package.xml') in installed
    assert Path('share/ament_index/resource_index/packages/cns_ros') in installed


def test_resources_are_package_data():
    """Built-in vocabularies ship inside the Python package (found without a ROS share dir)."""
    resources = ROOT / 'cns_ros' / 'resources'
    assert sorted(p.name for p in resources.glob('*.yaml')), 'no resource YAML files'
    assert "package_data={PACKAGE: ['resources/*.yaml']}" in (ROOT / 'setup.py').read_text()


def test_colcon_style_install_layout(tmp_path):
    """The install colcon's ament_python build performs puts every file where ROS looks for it.

    colcon runs ``setup.py egg_info build install --prefix ... --single-version-externally-
    managed`` with the settings of setup.cfg; console scripts must land in ``lib/cns_ros`` for
    ``ros2 run`` and launch files, data files under ``share/``.
    """
    prefix = tmp_path / 'install'
    subprocess.run([sys.executable, 'setup.py', '-q', 'egg_info', '--egg-base', str(tmp_path),
                    'build', '--build-base', str(tmp_path / 'build'), 'install', '--prefix',
                    str(prefix), '--record', str(tmp_path / 'record.txt'),
                    '--single-version-externally-managed'],
                   cwd=ROOT, check=True, capture_output=True, timeout=300)
    site = next(prefix.glob('lib/python3*/site-packages'))
    for path in (prefix / 'share/ament_index/resource_index/packages/cns_ros',
                 prefix / 'share/cns_ros/package.xml',
                 prefix / 'share/cns_ros/config/vocabularies/example_custom.yaml',
                 site / 'cns_ros/resources/nuscenes16.yaml',
                 site / 'cns_ros/pointcloud.py'):
        assert path.is_file(), f'{path.relative_to(prefix)} not installed'
    scripts = ast.literal_eval(_setup_keywords()['entry_points'])['console_scripts']
    for script in scripts:
        name = script.split('=')[0].strip()
        assert (prefix / 'lib' / 'cns_ros' / name).is_file(), f'{name} not in lib/cns_ros'
