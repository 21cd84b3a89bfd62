"""launch/*.launch.py and cns_ros/launcher.py (``cns_launch``): the same nodes, the same way.

* Everywhere (no launch_ros needed): the launch files are parsed with ``ast``; every cns_ros
  executable they name is a console script of setup.py, every declared argument has a
  description, other launch files include the base one instead of copying it, and the launcher
  declares the same arguments and builds the same node set with the same parameters.
* Where launch_ros is importable (a ROS install): the real launch description is loaded and its
  arguments, nodes and conditions are checked.
* The launcher's process handling with stand-in processes (output prefixes, a failing required
  process, SIGINT forwarding and escalation), and a real start / stop of segment_node through
  ``python -m cns_ros.launcher`` with a tiny random-weight bundle (ROS wheels needed).
"""

from __future__ import annotations

import ast
import importlib.util
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cns_ros import launcher
from cns_ros.launcher import ARGUMENTS, Launcher, NodeSpec, command_line, plan

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / 'launch' / 'segment.launch.py'
#: Launch files of other nodes than the segmenter: bases of their own, not including BASE.
OTHER_BASES = (ROOT / 'launch' / 'ovs_map.launch.py',)
LAUNCH_FILES = sorted((ROOT / 'launch').glob('*.launch.py'))


# --- ast views of setup.py and the launch files --------------------------------------------------

def console_scripts() -> dict[str, str]:
    """name -> 'module:function' of setup.py's console_scripts (read with ast, not executed)."""
    tree = ast.parse((ROOT / 'setup.py').read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == 'console_scripts':
                    entries = [ast.literal_eval(e) for e in value.elts]
                    return {e.split('=')[0].strip(): e.split('=')[1].strip() for e in entries}
    raise AssertionError('setup.py has no console_scripts')


def calls(tree: ast.AST, name: str) -> list[ast.Call]:
    """Every call of ``name(...)`` (a plain name, as the launch files import them)."""
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Name) and n.func.id == name]


def keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def declared_arguments(path: Path) -> list[dict]:
    """name, default (source text, or the literal string) and description of each argument."""
    found = []
    for call in calls(ast.parse(path.read_text()), 'DeclareLaunchArgument'):
        default = keyword(call, 'default_value')
        description = keyword(call, 'description')
        found.append({
            'name': ast.literal_eval(call.args[0]),
            'default': None if default is None else (
                default.value if isinstance(default, ast.Constant) else ast.unparse(default)),
            'description': None if description is None else ast.literal_eval(description)})
    return found


def _dict_keys(node: ast.expr, assigned: dict[str, list[str]]) -> list[str]:
    if isinstance(node, ast.Dict):
        return [ast.literal_eval(k) for k in node.keys]
    if isinstance(node, ast.Name) and node.id in assigned:
        return assigned[node.id]
    return []


def launch_nodes(path: Path) -> dict[str, dict]:
    """executable -> package, name, whether it gets params_file, parameter names, condition.

    Follows the base file's two idioms: parameter dicts bound to a local name, and a helper
    function whose ``*overrides`` come from the dict lists its callers pass.
    """
    tree = ast.parse(path.read_text())
    assigned = {t.id: [ast.literal_eval(k) for k in a.value.keys] for a in ast.walk(tree)
                if isinstance(a, ast.Assign) and isinstance(a.value, ast.Dict)
                for t in a.targets if isinstance(t, ast.Name)}
    helpers = {f.name: f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)}
    nodes = {}
    for call in calls(tree, 'Node'):
        entry = {k: ast.literal_eval(keyword(call, k)) for k in ('package', 'executable', 'name')}
        entry.update(params_file=False, parameters=set(), conditions=[])
        for item in getattr(keyword(call, 'parameters'), 'elts', []):
            if isinstance(item, ast.Call) and "'params_file'" in ast.unparse(item):
                entry['params_file'] = True
            elif isinstance(item, ast.Starred):  # *overrides of a helper: its callers' dicts
                helper = next(f for f in helpers.values() if call in ast.walk(f))
                for use in calls(tree, helper.name):
                    for given in getattr(use.args[-1], 'elts', []):
                        entry['parameters'].update(_dict_keys(given, assigned))
                    entry['conditions'].append(ast.unparse(use.args[0]))
            else:
                entry['parameters'].update(_dict_keys(item, assigned))
        condition = keyword(call, 'condition')
        if condition is not None and not isinstance(condition, ast.Name):
            entry['conditions'].append(ast.unparse(condition))
        entry['arguments'] = ast.unparse(keyword(call, 'arguments') or ast.List(elts=[]))
        nodes[entry['executable']] = entry
    return nodes


# --- everywhere: the files themselves ------------------------------------------------------------

def test_every_cns_ros_executable_of_every_launch_file_is_a_console_script():
    scripts = console_scripts()
    named = []
    for path in LAUNCH_FILES:
        for call in calls(ast.parse(path.read_text()), 'Node'):
            executable, package = keyword(call, 'executable'), keyword(call, 'package')
            assert isinstance(executable, ast.Constant), f'{path.name}: executable not literal'
            if ast.literal_eval(package) == 'cns_ros':
                named.append(executable.value)
                assert executable.value in scripts, f'{path.name}: {executable.value}'
                module = scripts[executable.value].split(':')[0]
                assert importlib.util.find_spec(module) is not None, module
    assert sorted(set(named)) == ['ovs_map_node', 'replay_node', 'segment_node']


@pytest.mark.parametrize('path', LAUNCH_FILES, ids=lambda p: p.name)
def test_every_declared_argument_has_a_description(path):
    arguments = declared_arguments(path)
    assert arguments, path.name
    for arg in arguments:
        assert arg['description'] and len(arg['description']) > 15, (path.name, arg['name'])


def test_one_base_launch_file_others_include_it():
    assert [p.name for p in LAUNCH_FILES] == ['ovs_map.launch.py', 'replay.launch.py',
                                              'segment.launch.py', 'segment_rgbd.launch.py']
    for path in LAUNCH_FILES:
        if path == BASE or path in OTHER_BASES:
            continue
        tree = ast.parse(path.read_text())
        assert not calls(tree, 'Node'), f'{path.name} starts nodes itself instead of including'
        assert calls(tree, 'IncludeLaunchDescription'), path.name
        assert "'segment.launch.py'" in ast.unparse(tree), path.name


def test_base_launch_file_arguments_and_defaults():
    args = {a['name']: a for a in declared_arguments(BASE)}
    assert list(args) == ['model', 'params_file', 'bag', 'rate', 'loop', 'use_sim_time',
                          'rviz', 'dds_profile']
    assert args['params_file']['default'] == \
        "PathJoinSubstitution([share, 'config', 'segment.yaml'])"
    assert args['dds_profile']['default'] == \
        "PathJoinSubstitution([share, 'config', 'fastdds_shm.xml'])"
    assert (ROOT / 'config' / 'fastdds_shm.xml').is_file()
    assert "FindPackageShare('cns_ros')" in BASE.read_text()
    assert args['model']['default'] == '' and args['bag']['default'] == ''
    assert args['rate']['default'] == '1.0' and args['rviz']['default'] == 'false'
    assert args['use_sim_time']['default'] == "_is_set('bag')"


def test_base_launch_file_uses_no_api_newer_than_humble():
    text = BASE.read_text()
    for newer in ('EqualsSubstitution', 'NotEqualsSubstitution', 'LaunchConfigurationEquals',
                  'LaunchConfigurationNotEquals', 'ros_arguments', 'ComposableNode'):
        assert newer not in text, newer  # (the *Equals conditions are deprecated from Iron)


# --- everywhere: the launcher mirrors the launch file --------------------------------------------

def test_launcher_declares_the_launch_file_arguments():
    declared = declared_arguments(BASE)
    assert [a.name for a in ARGUMENTS] == [a['name'] for a in declared]
    for mine, theirs in zip(ARGUMENTS, declared, strict=True):
        if isinstance(theirs['default'], str) and not theirs['default'].startswith(
                ('PathJoin', '_is_set')):
            assert mine.default == theirs['default'], mine.name
        # the same text, except where the launcher says what its computed default is
        assert mine.description.split('; default: <')[0] == theirs['description'], mine.name


def test_launcher_builds_the_launch_file_node_set_and_parameters(tmp_path):
    nodes = launch_nodes(BASE)
    everything = plan({'model': str(tmp_path / 'bundle'), 'bag': str(tmp_path / 'bag'),
                       'rviz': 'true', 'params_file': str(tmp_path / 'p.yaml')})
    assert {n.executable for n in everything} == set(nodes)
    for spec in everything:
        theirs = nodes[spec.executable]
        assert (spec.package, spec.name) == (theirs['package'], theirs['name'])
        assert (spec.params_file is not None) == theirs['params_file'], spec.executable
        assert set(spec.parameters) == theirs['parameters'], spec.executable
        assert spec.required == (spec.executable == 'segment_node')
    assert "'-d'" in nodes['rviz2']['arguments'] and "'segment.rviz'" in nodes['rviz2'][
        'arguments']
    # conditions: replay on `bag`, rviz on `rviz`, the model override on `model`
    assert nodes['replay_node']['conditions'] == ["IfCondition(_is_set('bag'))"]
    assert nodes['rviz2']['conditions'] == ["IfCondition(LaunchConfiguration('rviz'))"]
    assert sorted(nodes['segment_node']['conditions']) == [
        "IfCondition(_is_set('model'))", "UnlessCondition(_is_set('model'))"]
    assert 'on_exit=Shutdown(' in BASE.read_text()  # the launcher's `required`


def test_launcher_plan_follows_the_arguments(tmp_path):
    params = str(tmp_path / 'p.yaml')
    only = plan({'params_file': params})
    assert [n.executable for n in only] == ['segment_node']
    assert only[0].parameters == {'use_sim_time': False} and only[0].params_file == params
    assert plan({})[0].params_file == launcher.default_params_file()
    assert launcher.default_params_file().endswith(os.path.join('config', 'segment.yaml'))

    replay = plan({'bag': '/data/b', 'rate': '2', 'model': '/m', 'params_file': params})
    assert replay[0].parameters == {'use_sim_time': True, 'model': '/m'}
    assert replay[1].parameters == {'bag': '/data/b', 'rate': 2.0, 'loop': False, 'clock': True,
                                    'use_sim_time': True}
    forced = plan({'bag': '/data/b', 'use_sim_time': 'false', 'loop': 'true'})
    assert all(n.parameters['use_sim_time'] is False for n in forced)
    assert forced[1].parameters['loop'] is True
    assert plan({'bag': '   '})[0].parameters['use_sim_time'] is False  # blank = not set
    rviz = plan({'rviz': 'True'})[-1]
    assert rviz.executable == 'rviz2' and rviz.arguments[0] == '-d'
    assert rviz.arguments[1].endswith(os.path.join('config', 'segment.rviz'))
    for bad, match in (({'rate': 'fast', 'bag': 'b'}, "'rate'"), ({'rviz': 'yes'}, "'rviz'"),
                       ({'bogus': '1'}, 'bogus')):
        with pytest.raises(ValueError, match=match):
            plan(bad)


def test_command_lines_and_argument_parsing():
    spec = NodeSpec('cns_ros', 'segment_node', 'cns_segmenter', '/p.yaml',
                    {'use_sim_time': True, 'model': '/b', 'rate': 2.0, 'n': 3, 'odd': 'true',
                     'spaced': ' x', 'quote': "it's: here"})
    assert command_line(spec, ['/bin/segment_node']) == [
        '/bin/segment_node', '--ros-args', '-r', '__node:=cns_segmenter',
        '--params-file', '/p.yaml', '-p', 'use_sim_time:=true', '-p', 'model:=/b',
        '-p', 'rate:=2.0', '-p', 'n:=3', '-p', "odd:='true'", '-p', "spaced:=' x'",
        '-p', "quote:='it''s: here'"]
    assert launcher.parse_launch_arguments(['model:=/a:=b', 'rate:=2']) == {
        'model': '/a:=b', 'rate': '2'}
    for bad in (['model=/a'], ['nope:=1'], [':=1']):
        with pytest.raises(ValueError):
            launcher.parse_launch_arguments(bad)


def test_find_executable_finds_the_console_scripts():
    for name in ('segment_node', 'replay_node'):
        found = launcher.find_executable('cns_ros', name)
        assert found is not None, name
    assert launcher.find_executable('no_such_package', 'no_such_executable_xyz') is None


def test_show_args_and_dry_run(capsys, tmp_path):
    assert launcher.main(['--show-args']) == 0
    out = capsys.readouterr().out
    assert all(f"'{a.name}'" in out for a in ARGUMENTS)
    assert launcher.main(['--dry-run', 'bag:=/b', f'params_file:={tmp_path}/p.yaml']) == 0
    out = capsys.readouterr().out
    assert 'cns_segmenter:' in out and '-p use_sim_time:=true' in out and 'bag:=/b' in out
    with pytest.raises(SystemExit) as exc:
        launcher.main(['rate:=1', f'params_file:={tmp_path}/missing.yaml'])
    assert exc.value.code == 2 and 'does not exist' in capsys.readouterr().err


# --- where launch_ros exists: the real description -----------------------------------------------

@pytest.mark.skipif(importlib.util.find_spec('launch_ros') is None,
                    reason='launch_ros is not importable (no ROS 2 install; the PyPI ROS wheels '
                           'do not carry it): the ast-based tests above cover the file')
@pytest.mark.parametrize('values', [
    {}, {'bag': '/data/b', 'rate': '2', 'model': '/m'},
    {'bag': '/data/b', 'use_sim_time': 'false', 'loop': 'true', 'rviz': 'true'},
    {'model': '/m', 'rviz': '1'}], ids=['defaults', 'bag+model', 'sim_time_off+rviz', 'model'])
def test_launch_description_starts_what_the_launcher_starts(values, tmp_path):
    """The real description, evaluated in a LaunchContext: its arguments, the nodes whose
    conditions hold, their params files and evaluated (typed) parameters = the launcher's plan.
    (Uses launch_ros's Node internals, checked against Humble's and Rolling's sources.)"""
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
    from launch.utilities import perform_substitutions
    from launch_ros.actions import Node
    from launch_ros.utilities import evaluate_parameters

    spec = importlib.util.spec_from_file_location('segment_launch', BASE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()  # fresh: launch_ros caches evaluations
    declared = [e for e in description.entities if isinstance(e, DeclareLaunchArgument)]
    assert [d.name for d in declared] == [a.name for a in ARGUMENTS]
    assert all(d.description for d in declared)
    values = {'params_file': str(tmp_path / 'p.yaml'),
              'dds_profile': str(ROOT / 'config' / 'fastdds_shm.xml'), **values}
    context = LaunchContext()
    context.launch_configurations.update(values)
    for arg in declared:
        arg.visit(context)  # sets the defaults of the arguments not given
    started = {}
    for node in (e for e in description.entities if isinstance(e, Node)):
        if node.condition is not None and not node.condition.evaluate(context):
            continue
        evaluated = evaluate_parameters(context, node._Node__parameters)
        node._perform_substitutions(context)
        parameters = {}
        for item in evaluated:
            if isinstance(item, dict):
                parameters.update(item)
        started[node.node_executable] = (
            node.node_package, node.node_name.split('/')[-1],
            [str(p) for p in evaluated if not isinstance(p, dict)], parameters)
    planned = {n.executable: (n.package, n.name, [n.params_file] if n.params_file else [],
                              n.parameters) for n in plan(values)}
    assert started == planned
    actions = [a for e in description.entities if isinstance(e, OpaqueFunction)
               for a in e.execute(context) or []]
    env = {perform_substitutions(context, a.name): perform_substitutions(context, a.value)
           for a in actions if isinstance(a, SetEnvironmentVariable)}
    assert env == plan(values)[0].env
    for executable, (*_, parameters) in started.items():
        for key, value in parameters.items():
            assert type(value) is type(planned[executable][3][key]), (executable, key)


# --- the launcher's process handling (stand-in processes, no ROS) --------------------------------

def _stand_in(monkeypatch, scripts: dict[str, str]) -> None:
    """Make find_executable return ``python -c <script>`` for these executables."""
    def find(_package: str, executable: str) -> list[str] | None:
        return [sys.executable, '-c', scripts[executable]] if executable in scripts else None
    monkeypatch.setattr(launcher, 'find_executable', find)


_LOOPER = ('import signal, sys, time\n'
           'signal.signal(signal.SIGINT, lambda *a: (print("got SIGINT", flush=True), '
           'sys.exit(0)))\n'
           'print("up", flush=True)\n'
           'while True: time.sleep(0.05)\n')
_STUBBORN = ('import signal, time\n'
             'signal.signal(signal.SIGINT, signal.SIG_IGN)\n'
             'print("up", flush=True)\n'
             'while True: time.sleep(0.05)\n')


def test_required_process_failure_stops_the_rest_and_sets_the_exit_code(monkeypatch):
    _stand_in(monkeypatch, {'segment_node': 'import time; time.sleep(0.5); print("bye"); '
                                            'raise SystemExit(3)',
                            'replay_node': _LOOPER})
    out = io.StringIO()
    nodes = [NodeSpec('cns_ros', 'segment_node', 'cns_segmenter', required=True),
             NodeSpec('cns_ros', 'replay_node', 'replay_node'),
             NodeSpec('rviz2', 'rviz2', 'rviz2')]
    start = time.monotonic()
    assert Launcher(nodes, out).run() == 3
    assert time.monotonic() - start < 10
    text = out.getvalue()
    assert "WARNING: executable 'rviz2' of package 'rviz2' not found" in text
    assert '[segment_node-1] bye' in text and '[replay_node-2] up' in text
    assert 'process segment_node-1 exited with code 3' in text
    assert '[replay_node-2] got SIGINT' in text
    assert 'process replay_node-2 exited with code 0' in text


def test_stop_forwards_sigint_and_escalates_for_stubborn_processes(monkeypatch):
    monkeypatch.setattr(launcher, 'SIGTERM_TIMEOUT_S', 0.5)
    _stand_in(monkeypatch, {'segment_node': _LOOPER, 'replay_node': _STUBBORN})
    out = io.StringIO()
    run = Launcher([NodeSpec('cns_ros', 'segment_node', 'cns_segmenter', required=True),
                    NodeSpec('cns_ros', 'replay_node', 'replay_node')], out)
    run.start()
    deadline = time.monotonic() + 20
    while out.getvalue().count(' up') < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    run.request_stop()  # what the SIGINT / SIGTERM handler does
    run.wait()
    run.shutdown()
    text = out.getvalue()
    assert '[segment_node-1] got SIGINT' in text
    assert 'sending SIGTERM to replay_node-2' in text
    assert 'process replay_node-2 exited with code -15' in text
    assert run.failure is None  # the required node stopped cleanly


def test_missing_required_executable_is_an_error(monkeypatch):
    _stand_in(monkeypatch, {})
    with pytest.raises(FileNotFoundError, match='segment_node'):
        Launcher([NodeSpec('cns_ros', 'segment_node', 'cns_segmenter', required=True)],
                 io.StringIO()).start()


# --- a real start / stop through DDS -------------------------------------------------------------

CAM_BACK = """\
  cam_back: {frame_id: cam_back, parent: base_link, translation: [-1.0, 0, 1.5],
             rotation: [0.5, 0.5, -0.5, -0.5]}
"""


@pytest.mark.ros
@pytest.mark.timeout(150)
@pytest.mark.skipif(importlib.util.find_spec('rclpy') is None
                    or importlib.util.find_spec('spconv') is None,
                    reason='needs rclpy (ROS 2 install or PyPI ROS wheels) and spconv')
def test_launcher_starts_and_stops_the_real_nodes(tmp_path):
    from test_segmenter import make_tiny_bundle

    bundle = make_tiny_bundle(tmp_path / 'bundle')
    params = tmp_path / 'segment.yaml'
    calibration = tmp_path / 'calibration.yaml'
    from test_segment_node import CALIBRATION

    calibration.write_text(CALIBRATION + CAM_BACK)
    params.write_text('cns_segmenter:\n  ros__parameters:\n    num_threads: 1\n'
                      '    warm_up_passes: 1\n    warm_up_points: 300\n'
                      '    cameras: [cam_front, cam_back]\n    camera_labels: projected\n'
                      f'    calibration: {calibration}\n    camera_offsets: [0.015, 0.04]\n'
                      '    camera_buffer_size: 5\n    max_pending: 3\n'
                      '    min_frame_interval: 0.06\n')
    log = tmp_path / 'launch.log'
    cmd = [sys.executable, '-m', 'cns_ros.launcher', f'model:={bundle}',
           f'params_file:={params}']
    with open(log, 'w') as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 90
        while 'ready' not in log.read_text() and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, log.read_text()
        assert '[segment_node-1]' in log.read_text() and 'ready' in log.read_text()
        assert ('sync nearest: offsets cam_front +15 ms, cam_back +40 ms, max_time_diff 25 ms, '
                'max_wait 100 ms, buffer 5, pending 3, min_frame_interval 60 ms'
                in log.read_text()), log.read_text()  # the params file reached the node
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert 'process segment_node-1 exited with code 0' in log.read_text()

    # a missing bundle: the node exits 1 and the launcher with it
    cmd[3] = f'model:={tmp_path / "missing"}'
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=90, cwd=ROOT)
    assert done.returncode == 1, done.stdout + done.stderr
    assert 'process segment_node-1 exited with code 1' in done.stdout


# --- config/segment.rviz -------------------------------------------------------------------------

def test_rviz_config_shows_the_labeled_cloud_by_class_color():
    import yaml

    config = yaml.safe_load((ROOT / 'config' / 'segment.rviz').read_text())
    manager = config['Visualization Manager']
    assert manager['Global Options']['Fixed Frame'] == 'lidar_top'
    clouds = [d for d in manager['Displays']
              if d['Class'] == 'rviz_default_plugins/PointCloud2']
    assert [d['Topic']['Value'] for d in clouds] == ['/cns/labeled_points'] * 2
    by_color, by_label = clouds
    assert by_color['Enabled'] is True and by_color['Color Transformer'] == 'RGB8'
    assert by_label['Enabled'] is False and by_label['Color Transformer'] == 'Intensity'
    assert by_label['Channel Name'] == 'label'
    assert by_label['Autocompute Intensity Bounds'] is False  # stable colors per class
    assert (by_label['Min Intensity'], by_label['Max Intensity']) == (0, 15)
    for display in clouds:  # best effort matches reliable and best-effort publishers
        assert display['Topic']['Reliability Policy'] == 'Best Effort'
        assert display['Style'] in ('Points', 'Flat Squares', 'Squares', 'Spheres', 'Boxes')
        assert 0 < display['Size (m)'] <= 0.5
    assert config['Panels'][0]['Class'] == 'rviz_common/Displays'
