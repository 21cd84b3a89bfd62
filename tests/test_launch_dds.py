"""The ``dds_profile`` launch argument: launch/segment.launch.py and ``cns_launch`` give every
node they start the Fast DDS profile (default config/fastdds_shm.xml, the 32 MB shared-memory
segment full-size clouds need) through FASTDDS_DEFAULT_PROFILES_FILE (Fast DDS 3) and
FASTRTPS_DEFAULT_PROFILES_FILE (Fast DDS 2), unless the user's environment sets one; blank:
the environment is left alone. Everywhere (no launch_ros needed): the launch file's function is
compiled from its source with stand-ins and compared with the launcher's; the launcher's
processes get the variables; ``--dds-profile`` and ``dds_profile:=`` are one argument.
(tests/test_launch.py evaluates the real description where launch_ros exists.)
"""

from __future__ import annotations

import ast
import io
import os
import re

import pytest
from test_launch import BASE, ROOT, _stand_in, calls

from cns_ros import launcher
from cns_ros.launcher import DDS_PROFILE_VARIABLES, Launcher, dds_profile_environment, plan


@pytest.fixture
def no_user_profile(monkeypatch):
    """The test's environment names no DDS profile (as a user's might)."""
    for variable in DDS_PROFILE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


def _launch_file_dds_profile():
    """The base launch file's ``_dds_profile`` (with its DDS_PROFILE_VARIABLES), compiled from
    its source with stand-ins for LaunchConfiguration and SetEnvironmentVariable: a function
    (dds_profile value, environment) -> {variable: value} it would set."""
    tree = ast.parse(BASE.read_text())
    keep = [n for n in tree.body if (isinstance(n, ast.FunctionDef) and n.name == '_dds_profile')
            or (isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) ==
                'DDS_PROFILE_VARIABLES')]
    assert len(keep) == 2, 'segment.launch.py: _dds_profile or DDS_PROFILE_VARIABLES missing'

    class Configuration:  # LaunchConfiguration(name).perform(context) -> the value
        def __init__(self, name):
            self.name = name

        def perform(self, context):
            return context.values[self.name]

    namespace = {'os': os, 'LaunchConfiguration': Configuration,
                 'SetEnvironmentVariable': lambda name, value: (name, value)}
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(BASE), 'exec'), namespace)

    def evaluate(profile: str, environment: dict[str, str]) -> dict[str, str]:
        context = type('Context', (), {'values': {'dds_profile': profile},
                                        'environment': environment})()
        return dict(namespace['_dds_profile'](context))
    return evaluate, namespace['DDS_PROFILE_VARIABLES']


def test_dds_profile_is_applied_as_the_launcher_applies_it(tmp_path):
    """dds_profile: both Fast DDS variables (3 and 2) for every node, nothing when blank or when
    the user's environment sets either one; the launch file and the launcher agree."""
    evaluate, variables = _launch_file_dds_profile()
    assert variables == DDS_PROFILE_VARIABLES == ('FASTDDS_DEFAULT_PROFILES_FILE',
                                                  'FASTRTPS_DEFAULT_PROFILES_FILE')
    profile = str(ROOT / 'config' / 'fastdds_shm.xml')
    cases = [(profile, {}), (f' {profile} ', {'OTHER': '1'}), ('', {}), ('  ', {}),
             (profile, {'FASTDDS_DEFAULT_PROFILES_FILE': '/mine.xml'}),
             (profile, {'FASTRTPS_DEFAULT_PROFILES_FILE': '/mine.xml'}),
             (profile, {'FASTDDS_DEFAULT_PROFILES_FILE': ''})]  # empty: not set
    for value, environment in cases:
        expected = dds_profile_environment(value, environment)
        assert evaluate(value, environment) == expected, (value, environment)
        for node in plan({'dds_profile': value, 'bag': '/b', 'rviz': 'true'}, environment):
            assert node.env == expected, (value, environment, node.executable)
    assert dds_profile_environment(profile, {}) == dict.fromkeys(DDS_PROFILE_VARIABLES, profile)
    with pytest.raises(FileNotFoundError, match='dds_profile'):
        evaluate(str(tmp_path / 'missing.xml'), {})
    # the default is the installed config/fastdds_shm.xml, applied before any node starts
    assert plan({}, {})[0].env == dict.fromkeys(DDS_PROFILE_VARIABLES,
                                                launcher.default_dds_profile())
    assert launcher.default_dds_profile().endswith(os.path.join('config', 'fastdds_shm.xml'))
    tree = ast.parse(BASE.read_text())
    description = calls(tree, 'LaunchDescription')[0].args[0].elts
    order = [ast.unparse(e) for e in description if not isinstance(e, ast.Starred)]
    assert order[0] == 'OpaqueFunction(function=_dds_profile)', order


def test_nodes_get_the_dds_profile_environment(monkeypatch, tmp_path, no_user_profile):
    """The environment of a NodeSpec reaches its process (on top of the launcher's own)."""
    script = ('import os; print("profile", os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE"), '
              'os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE"), os.environ.get("KEEP_ME"))')
    _stand_in(monkeypatch, {'segment_node': script})
    monkeypatch.setenv('KEEP_ME', 'kept')
    nodes = plan({'dds_profile': str(tmp_path / 'p.xml'), 'params_file': str(tmp_path / 'x')})
    out = io.StringIO()
    assert Launcher(nodes, out).run() == 0
    assert f'profile {tmp_path}/p.xml {tmp_path}/p.xml kept' in out.getvalue()
    assert f'FASTDDS_DEFAULT_PROFILES_FILE={tmp_path}/p.xml' in out.getvalue()  # logged


def test_dds_profile_option_and_argument(capsys, tmp_path, monkeypatch, no_user_profile):
    profile = tmp_path / 'dds.xml'
    for flag in (['--dds-profile', str(profile)], [f'dds_profile:={profile}'],
                 ['--dds-profile', str(profile), f'dds_profile:={profile}']):
        assert launcher.main(['--dry-run', *flag]) == 0
        assert f'cns_segmenter: FASTDDS_DEFAULT_PROFILES_FILE={profile} ' \
               f'FASTRTPS_DEFAULT_PROFILES_FILE={profile} ' in capsys.readouterr().out
    assert launcher.main(['--dry-run', '--dds-profile', '']) == 0
    assert 'PROFILES_FILE' not in capsys.readouterr().out
    monkeypatch.setenv('FASTRTPS_DEFAULT_PROFILES_FILE', '/mine.xml')  # the user's stays
    assert launcher.main(['--dry-run', '--dds-profile', str(profile)]) == 0
    assert 'PROFILES_FILE' not in capsys.readouterr().out
    monkeypatch.delenv('FASTRTPS_DEFAULT_PROFILES_FILE')
    for bad, match in ((['--dds-profile', '/a', 'dds_profile:=/b'], 'once'),
                       ([f'--dds-profile={profile}'], 'dds_profile .* does not exist')):
        with pytest.raises(SystemExit) as exc:
            launcher.main(bad)
        assert exc.value.code == 2
        assert re.search(match, capsys.readouterr().err), bad
    assert launcher.main(['--show-args']) == 0
    assert "'dds_profile'" in capsys.readouterr().out
