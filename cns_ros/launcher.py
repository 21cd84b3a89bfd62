"""``cns_launch``: run what ``launch/segment.launch.py`` runs, on hosts without launch_ros.

The PyPI ROS 2 wheels carry rclpy but not launch / launch_ros, so ``ros2 launch`` does not
exist there. This launcher takes the same arguments in the same ``name:=value`` form, builds
the same node set with the same parameters (``--ros-args --params-file ... -p ...``) and runs
each node as its own process::

    cns_launch model:=/path/to/bundle bag:=/path/to/bag rate:=1.0
    cns_launch --show-args          # the arguments, their defaults and descriptions
    cns_launch --dry-run bag:=...   # print the command lines and exit
    cns_launch --dds-profile '' ... # = dds_profile:='': keep the environment's DDS settings

Behaviour matches the launch file: ``cns_segmenter`` always runs and the launch ends when it
exits; ``replay_node`` runs when ``bag`` is set (publishing /clock, ``use_sim_time`` defaults to
true); ``rviz2`` runs when ``rviz`` is true and rviz2 is installed (else a warning). Every node
runs with the Fast DDS profile ``dds_profile`` (default ``config/fastdds_shm.xml``: the 32 MB
shared-memory segment full-size clouds need) unless the environment already names one
(:func:`cns_ros.launch_support.dds_profile_environment`). Every line
a node prints is prefixed with ``[<executable>-<n>]``. SIGINT / SIGTERM are forwarded as SIGINT
to every node, escalating to SIGTERM and SIGKILL after 5 s each, as ``ros2 launch`` does.

Exit status: 0 after a clean shutdown; the exit code of ``cns_segmenter`` when it fails
(128 + signal number when a signal killed it); 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from cns_ros.launch_support import (  # re-exported: tests and tools use them from here
    DDS_PROFILE_VARIABLES,
    PACKAGE,
    ament_share,
    dds_profile_environment,
    default_dds_profile,
    default_params_file,
    find_executable,
    package_share,
    rviz_config,
)

__all__ = ['ARGUMENTS', 'DDS_PROFILE_VARIABLES', 'LaunchArgument', 'Launcher', 'NodeSpec',
           'ament_share', 'command_line', 'dds_profile_environment', 'default_dds_profile',
           'default_params_file', 'find_executable', 'main', 'package_share', 'plan',
           'rviz_config']

SIGTERM_TIMEOUT_S = 5.0
SIGKILL_TIMEOUT_S = 5.0
_POLL_S = 0.1


@dataclass(frozen=True)
class LaunchArgument:
    """One launch argument: name, default (None: computed, see :func:`resolve_arguments`)."""

    name: str
    default: str | None
    description: str


#: The arguments of launch/segment.launch.py, in its order, with its descriptions.
ARGUMENTS: tuple[LaunchArgument, ...] = (
    LaunchArgument('model', '', 'Model bundle directory (from offline_training/export.py); '
                   "empty: the 'model' parameter of params_file"),
    LaunchArgument('params_file', None, 'Parameter YAML of the cns_segmenter node (topics, '
                   'device, vocabulary, ...); default: <cns_ros share>/config/segment.yaml'),
    LaunchArgument('bag', '', 'Bag to replay into the live topics (rosbag2 folder, .mcap, .db3 '
                   'or ROS 1 .bag); empty: no replay, the node listens to live sensors'),
    LaunchArgument('rate', '1.0', 'Replay speed factor when bag is set (2.0 plays twice as '
                   'fast)'),
    LaunchArgument('loop', 'false', 'Replay the bag in a loop (true/false) when bag is set'),
    LaunchArgument('use_sim_time', None, 'Use /clock time in every node (true/false); '
                   'default: true when bag is set, else false'),
    LaunchArgument('rviz', 'false', 'Start rviz2 with config/segment.rviz (true/false)'),
    LaunchArgument('dds_profile', None, 'Fast DDS XML profile of every started node (sets '
                   'FASTDDS_DEFAULT_PROFILES_FILE and, for Humble/Jazzy, '
                   'FASTRTPS_DEFAULT_PROFILES_FILE, unless the environment already sets one); '
                   'the default config/fastdds_shm.xml has the 32 MB shared-memory segment that '
                   'full-size clouds need; empty: leave the environment alone; default: '
                   '<cns_ros share>/config/fastdds_shm.xml'),
)


@dataclass(frozen=True)
class NodeSpec:
    """One node process of the launch.

    Attributes:
        package: ROS package of the executable.
        executable: Executable name (a console script of cns_ros, or rviz2).
        name: Node name (``-r __node:=name``).
        params_file: Parameter file applied first, or None.
        parameters: Parameters applied after the file, in order (``-p name:=value``).
        arguments: Command-line arguments before ``--ros-args``.
        required: The launch ends when this process exits (``on_exit=Shutdown()``).
        env: Environment variables set for the process on top of the launcher's own (the
            DDS profile, :func:`cns_ros.launch_support.dds_profile_environment`).
    """

    package: str
    executable: str
    name: str
    params_file: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    arguments: tuple[str, ...] = ()
    required: bool = False
    env: dict[str, str] = field(default_factory=dict)


# --- arguments -> nodes ------------------------------------------------------------------------

def parse_launch_arguments(tokens: Sequence[str]) -> dict[str, str]:
    """``['name:=value', ...]`` -> ``{name: value}``.

    Raises:
        ValueError: A token is not ``name:=value`` or names an unknown argument.
    """
    known = {arg.name for arg in ARGUMENTS}
    values = {}
    for token in tokens:
        name, sep, value = token.partition(':=')
        if not sep or not name:
            raise ValueError(f"expected launch arguments as name:=value, found {token!r}")
        if name not in known:
            raise ValueError(f'unknown launch argument {name!r}; known: '
                             f'{", ".join(sorted(known))}')
        values[name] = value
    return values


def resolve_arguments(values: Mapping[str, str]) -> dict[str, str]:
    """Every argument's value: given, else its default, as the launch file computes them."""
    resolved = {}
    for arg in ARGUMENTS:
        if arg.name in values:
            resolved[arg.name] = values[arg.name]
        elif arg.name == 'params_file':
            resolved[arg.name] = default_params_file()
        elif arg.name == 'dds_profile':
            resolved[arg.name] = default_dds_profile()
        elif arg.name == 'use_sim_time':
            resolved[arg.name] = str(is_set(resolved['bag']))
        else:
            resolved[arg.name] = arg.default or ''
    return resolved


def is_set(text: str) -> bool:
    """The launch file's ``_is_set``: the value is not blank."""
    return len(text.strip()) > 0


def condition(text: str, name: str) -> bool:
    """launch's ``IfCondition``: 'true' / '1' or 'false' / '0', any case.

    Raises:
        ValueError: Any other value.
    """
    if text.strip().lower() in ('true', '1'):
        return True
    if text.strip().lower() in ('false', '0'):
        return False
    raise ValueError(f"launch argument {name!r}: expected true or false, found {text!r}")


def parameter_value(text: str) -> Any:
    """A parameter value from a launch-argument string, as launch_ros converts it (YAML)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if type(value) in (bool, int, float, str) else text


def plan(values: Mapping[str, str], environ: Mapping[str, str] | None = None
         ) -> list[NodeSpec]:
    """The nodes that launch/segment.launch.py starts for these launch arguments.

    Args:
        values: Launch arguments by name (missing ones take their defaults).
        environ: The user's environment (default ``os.environ``): a DDS profile variable set
            there keeps ``dds_profile`` from being applied.

    Raises:
        ValueError: An unknown argument or a bad value (rate not a number, rviz not a bool).
    """
    unknown = set(values) - {arg.name for arg in ARGUMENTS}
    if unknown:
        raise ValueError(f'unknown launch argument(s): {", ".join(sorted(unknown))}')
    args = resolve_arguments(values)
    sim = {'use_sim_time': parameter_value(args['use_sim_time'])}
    segment = {**sim, **({'model': parameter_value(args['model'])} if is_set(args['model'])
                         else {})}
    env = dds_profile_environment(args['dds_profile'],
                                  os.environ if environ is None else environ)
    nodes = [NodeSpec(PACKAGE, 'segment_node', 'cns_segmenter', args['params_file'], segment,
                      required=True, env=env)]
    if is_set(args['bag']):
        try:
            rate = float(args['rate'])
        except ValueError:
            raise ValueError(f"launch argument 'rate': expected a number, found "
                             f"{args['rate']!r}") from None
        nodes.append(NodeSpec(PACKAGE, 'replay_node', 'replay_node', None, {
            'bag': parameter_value(args['bag']), 'rate': rate,
            'loop': parameter_value(args['loop']), 'clock': True, **sim}, env=env))
    if condition(args['rviz'], 'rviz'):
        nodes.append(NodeSpec('rviz2', 'rviz2', 'rviz2', None, dict(sim),
                              arguments=('-d', rviz_config()), env=env))
    return nodes


def format_parameter(value: Any) -> str:
    """A ``-p name:=value`` value as YAML that rcl parses back to the same type."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    text = str(value)
    try:
        plain = yaml.safe_load(text) == text and not text[0].isspace()
    except (yaml.YAMLError, IndexError):
        plain = False
    return text if plain else "'" + text.replace("'", "''") + "'"  # quoted: read as a string


def command_line(spec: NodeSpec, program: Sequence[str]) -> list[str]:
    """``program args --ros-args -r __node:=name [--params-file f] -p k:=v ...``."""
    cmd = [*program, *spec.arguments, '--ros-args', '-r', f'__node:={spec.name}']
    if spec.params_file:
        cmd += ['--params-file', spec.params_file]
    for key, value in spec.parameters.items():
        cmd += ['-p', f'{key}:={format_parameter(value)}']
    return cmd


# --- processes ---------------------------------------------------------------------------------

class _Process:
    """One started node: its process and the thread that prefixes and copies its output."""

    def __init__(self, spec: NodeSpec, label: str, cmd: list[str], out: TextIO,
                 lock: threading.Lock) -> None:
        self.spec, self.label, self.cmd = spec, label, cmd
        env = dict(os.environ, **spec.env, PYTHONUNBUFFERED='1')
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                     text=True, errors='replace', bufsize=1)
        self.reader = threading.Thread(target=self._copy, args=(out, lock), daemon=True)
        self.reader.start()

    def _copy(self, out: TextIO, lock: threading.Lock) -> None:
        for line in self.proc.stdout:
            with lock:
                out.write(f'[{self.label}] {line}')
                out.flush()

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signum)
            except ProcessLookupError:
                pass


class Launcher:
    """Starts the nodes of a plan, streams their output and shuts them down together.

    Args:
        nodes: From :func:`plan`.
        out: Where the prefixed output of the nodes and the launcher's messages go.
    """

    def __init__(self, nodes: Sequence[NodeSpec], out: TextIO | None = None) -> None:
        self.nodes = list(nodes)
        self.out = out if out is not None else sys.stdout
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.processes: list[_Process] = []
        self.failure: int | None = None

    def log(self, message: str) -> None:
        with self._lock:
            self.out.write(f'[cns_launch] {message}\n')
            self.out.flush()

    def commands(self) -> list[tuple[NodeSpec, list[str] | None]]:
        """Each node with its command line (None: executable not found)."""
        found = []
        for spec in self.nodes:
            program = find_executable(spec.package, spec.executable)
            found.append((spec, None if program is None else command_line(spec, program)))
        return found

    def request_stop(self, *_: object) -> None:
        """Ask :meth:`run` to shut everything down (safe from a signal handler)."""
        self._stop.set()

    def start(self) -> None:
        """Start every node whose executable exists.

        Raises:
            FileNotFoundError: A required node's executable is not installed.
        """
        for index, (spec, cmd) in enumerate(self.commands(), start=1):
            if cmd is None:
                message = (f'executable {spec.executable!r} of package {spec.package!r} not '
                           'found')
                if spec.required:
                    raise FileNotFoundError(message)
                self.log(f'WARNING: {message}; {spec.name} not started')
                continue
            process = _Process(spec, f'{spec.executable}-{index}', cmd, self.out, self._lock)
            self.processes.append(process)
            self.log(f'started {process.label} (pid {process.proc.pid}): '
                     f'{shell_line(spec, cmd)}')

    def wait(self, timeout: float | None = None) -> None:
        """Return when a stop was requested, a required node exited, all nodes exited, or
        ``timeout`` seconds passed; report every exit."""
        deadline = None if timeout is None else time.monotonic() + timeout
        reported: set[int] = set()
        while not self._stop.is_set():
            for process in self.processes:
                code = process.proc.poll()
                if code is None or id(process) in reported:
                    continue
                reported.add(id(process))
                self.log(f'process {process.label} exited with code {code}')
                if process.spec.required:
                    if code != 0:
                        self.failure = 128 - code if code < 0 else code
                    return
            if all(p.proc.poll() is not None for p in self.processes):
                return
            if deadline is not None and time.monotonic() >= deadline:
                return
            self._stop.wait(_POLL_S)

    def shutdown(self) -> None:
        """SIGINT every running node; SIGTERM, then SIGKILL, those that do not exit in time."""
        stopping = [p.label for p in self.processes if p.proc.poll() is None]
        if stopping:
            self.log('shutting down: ' + ', '.join(stopping))
        steps = ((signal.SIGINT, SIGTERM_TIMEOUT_S), (signal.SIGTERM, SIGKILL_TIMEOUT_S),
                 (signal.SIGKILL, 5.0))
        for signum, grace in steps:
            running = [p for p in self.processes if p.proc.poll() is None]
            if not running:
                break
            if signum != signal.SIGINT:
                self.log(f'sending {signal.Signals(signum).name} to '
                         + ', '.join(p.label for p in running))
            for process in running:
                process.signal(signum)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and any(p.proc.poll() is None for p in running):
                time.sleep(0.05)
        for process in self.processes:
            process.reader.join(timeout=2.0)
            code = process.proc.returncode
            if process.label in stopping:
                self.log(f'process {process.label} exited with code {code}')
            if process.spec.required and code not in (0, -signal.SIGINT) and not self.failure:
                self.failure = 128 - code if code < 0 else code

    def run(self) -> int:
        """Start, wait, shut down; the exit status (see the module docstring)."""
        try:
            self.start()
            self.wait()
        finally:
            self.shutdown()
        return self.failure or 0


# --- command line ------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='cns_launch',
        description='Run the nodes of launch/segment.launch.py as separate processes, with the '
                    'same arguments, on hosts without launch_ros.',
        epilog='launch arguments (name:=value):\n' + '\n'.join(
            f'  {a.name}: {a.description}' for a in ARGUMENTS),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('launch_arguments', nargs='*', metavar='name:=value')
    parser.add_argument('-s', '--show-args', action='store_true',
                        help='show the launch arguments with their defaults and exit')
    parser.add_argument('--dry-run', action='store_true',
                        help='print the command line of every node and exit')
    parser.add_argument('--dds-profile', metavar='FILE', default=None,
                        help='the dds_profile launch argument (dds_profile:=FILE): Fast DDS XML '
                             'profile of the nodes, unless FASTDDS_DEFAULT_PROFILES_FILE or '
                             'FASTRTPS_DEFAULT_PROFILES_FILE is set already; empty: leave the '
                             'environment alone (default: config/fastdds_shm.xml)')
    return parser


def shell_line(spec: NodeSpec, cmd: Sequence[str]) -> str:
    """``cmd`` as one shell line, after the process's own environment variables (``A=b``)."""
    return shlex.join([*(f'{k}={v}' for k, v in spec.env.items()), *cmd])


def _show_args(out: TextIO) -> None:
    defaults = resolve_arguments({})
    out.write('Arguments (pass arguments as \'<name>:=<value>\'):\n\n')
    for arg in ARGUMENTS:
        out.write(f"    '{arg.name}':\n        {arg.description}\n"
                  f"        (default: '{defaults[arg.name]}')\n\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cns_launch``; returns the exit status."""
    parser = build_parser()
    options = parser.parse_args(argv)
    if options.show_args:
        _show_args(sys.stdout)
        return 0
    try:
        values = parse_launch_arguments(options.launch_arguments)
        if options.dds_profile is not None:
            if values.setdefault('dds_profile', options.dds_profile) != options.dds_profile:
                raise ValueError('give the DDS profile once: --dds-profile or dds_profile:=')
        nodes = plan(values)
    except ValueError as err:
        parser.error(str(err))
    launcher = Launcher(nodes)
    if options.dry_run:
        for spec, cmd in launcher.commands():
            print(f'{spec.name}: ' + (shell_line(spec, cmd) if cmd else 'NOT FOUND'))
        return 0
    if not Path(nodes[0].params_file or '').is_file():
        parser.error(f'params_file {nodes[0].params_file} does not exist')
    profile = nodes[0].env.get(DDS_PROFILE_VARIABLES[0])
    if profile is not None and not Path(profile).is_file():
        parser.error(f'dds_profile {profile} does not exist')
    previous = {signum: signal.signal(signum, launcher.request_stop)
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        return launcher.run()
    except FileNotFoundError as err:
        launcher.log(f'ERROR: {err}')
        return 1
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


if __name__ == '__main__':
    sys.exit(main())
