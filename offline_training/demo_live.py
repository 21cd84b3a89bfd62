"""The live step of the demos (``offline_training/demo.py``, ``demo_indoor.py``): replay_node
and segment_node started as separate processes (``ros2 launch`` or cns_ros/launcher.py), the
bag looping until every keyframe was labeled and the node's /diagnostics came after that, while
cns_ros.ros.recorder records /cns/labeled_points, the node's input, /cns/class_names and
/diagnostics into a bag in this process (:func:`run_live`). No partial result: a keyframe the
node never labels (it drops a sweep that arrives while it is busy) is a DemoError.

What is replayed, launched and recorded is a :class:`LiveSetup`: :data:`OUTDOOR` (the LiDAR
demo: keyframes = the bag's /lidar_top/labels_gt stamps, segment.launch.py, config/segment.yaml)
unless the caller passes another (the indoor demo's RGB-D camera).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from offline_training.demo_common import (
    CLASS_NAMES,
    DIAGNOSTICS,
    GT,
    LABELED,
    LIDAR,
    DemoError,
    Paths,
    say,
)

if TYPE_CHECKING:
    from cns_ros.ros.recorder import InProcessRecorder

__all__ = ['OUTDOOR', 'LiveRun', 'LiveSetup', 'Progress', 'bag_keyframes', 'launch_command',
           'run_live', 'segmenter_diagnostics']


@dataclass(frozen=True)
class LiveSetup:
    """What the live step replays, launches and records.

    Attributes:
        keyframe_topic: Topic of the replayed bag whose every message (bag time = header stamp)
            must be labeled live.
        recorded: Topics recorded besides /cns/labeled_points, /cns/class_names and
            /diagnostics (the node's input, for the latency at the recorder).
        launch_file: Launch file of cns_ros that ``ros2 launch`` runs (cns_ros/launcher.py
            runs the nodes of segment.launch.py, which every launch file includes).
        params_file: The node's parameter file under the package's ``config/``, copied with
            ``stats_file`` and ``params`` set.
        params: Node parameters set over the file's (name, value) pairs.
    """

    keyframe_topic: str = GT
    recorded: tuple[str, ...] = (LIDAR,)
    launch_file: str = 'segment.launch.py'
    params_file: str = 'segment.yaml'
    params: tuple[tuple[str, Any], ...] = ()


#: The LiDAR demo's live step.
OUTDOOR = LiveSetup()


class ReplaySettings(Protocol):
    """What the live step reads of a demo's settings."""

    rate: float
    """Replay speed factor of the bag."""


def launch_command(arguments: list[str], launch_file: str = 'segment.launch.py'
                   ) -> tuple[list[str], str]:
    """(command, how): ``ros2 launch cns_ros <launch_file>`` when it can find an installed
    cns_ros, else the package's Python launcher with the same arguments."""
    from cns_ros.launcher import ament_share

    share = ament_share('cns_ros')
    if (shutil.which('ros2') and importlib.util.find_spec('launch_ros') is not None
            and share is not None and (share / 'launch' / launch_file).is_file()):
        return ['ros2', 'launch', 'cns_ros', launch_file, *arguments], 'ros2 launch'
    return [sys.executable, '-m', 'cns_ros.launcher', *arguments], \
        'cns_ros/launcher.py (launch_ros is not installed here)'


def bag_keyframes(bag: Path, topic: str = GT) -> tuple[set[int], float]:
    """Header stamps (ns) of the keyframes (the messages on ``topic``, default the
    ground-truth keyframes) in the bag, and the bag's length (s)."""
    from cns_ros.data import bags

    with bags.open_bag(bag) as reader:
        stamps = {m.timestamp_ns for m in reader.messages([topic])}
        return stamps, reader.info.duration_s


@dataclass
class LiveRun:
    """What the live step saw."""

    how: str
    command: list[str]
    keyframes: int
    labeled_keyframes: int = 0
    labeled_clouds: int = 0
    wall_s: float = 0.0
    launch_exit: int | None = None
    node: dict[str, Any] | None = None  # the node's inputs, outputs and drops at exit


def _stop(proc: subprocess.Popen, timeout: float = 30.0) -> int:
    """Ctrl-C for the launch: SIGINT to its process group, as a terminal sends it (`ros2 launch`
    expects its nodes to get it from there; cns_launch forwards it to its nodes itself); kill
    the group if it hangs."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    return proc.returncode


def _tail(path: Path, lines: int = 25) -> str:
    text = path.read_text(errors='replace').splitlines() if path.is_file() else []
    return '\n'.join(text[-lines:])


def run_live(paths: Paths, s: ReplaySettings, startup_timeout_s: float = 240.0,
             max_passes: int = 20, setup: LiveSetup = OUTDOOR) -> LiveRun:
    """Launch replay + segmenter and record until every keyframe was labeled and the node's
    /diagnostics came after that (``s.rate``: the replay speed factor).

    Raises:
        DemoError: The launch ended early, no labeled cloud within ``startup_timeout_s``, or
            not every keyframe labeled within ``max_passes`` passes of the bag after the first
            labeled cloud (the node dropped them as busy every time: replay slower, --rate).
    """
    from cns_ros.ros.recorder import InProcessRecorder

    keyframes, bag_s = bag_keyframes(paths.bag, setup.keyframe_topic)
    command, how = launch_command(_launch_arguments(paths, s.rate, setup), setup.launch_file)
    live, progress = LiveRun(how, command, len(keyframes)), Progress(keyframes)
    _prepare_recording(paths, command, how)
    limits = (startup_timeout_s, max_passes * bag_s / s.rate + 10.0)
    topics = [LABELED, CLASS_NAMES, DIAGNOSTICS, *setup.recorded]
    with InProcessRecorder(paths.recorded, topics, progress.on_message) as recorder, \
            open(paths.live_log, 'w') as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        start = time.monotonic()
        try:
            _record_until_done(recorder, proc, progress, start, limits, paths)
        finally:
            live.launch_exit = _stop(proc)
            live.wall_s = round(time.monotonic() - start, 1)
            recorder.spin(0.3)
    live.node = _node_accounting(paths.node_stats)
    live.labeled_keyframes = len(keyframes & progress.labeled)
    live.labeled_clouds = progress.labeled_clouds
    say(f'    {live.labeled_clouds} labeled clouds recorded, {live.labeled_keyframes}/'
        f'{live.keyframes} keyframes labeled, launch exited with {live.launch_exit}')
    return live


def _launch_arguments(paths: Paths, rate: float, setup: LiveSetup) -> list[str]:
    """The launch arguments: the bundle, the bag looping at ``rate``, a parameters file (the
    installed config/<setup.params_file> with ``setup.params`` and ``stats_file`` =
    ``paths.node_stats`` set)."""
    import yaml

    from cns_ros.launcher import package_share

    default = package_share() / 'config' / setup.params_file
    params = yaml.safe_load(default.read_text()) if default.is_file() else {}
    node = params.setdefault('/**', {}).setdefault('ros__parameters', {})
    node.update(dict(setup.params), stats_file=str(paths.node_stats))
    paths.live_params.write_text(yaml.safe_dump(params, sort_keys=False))
    paths.node_stats.unlink(missing_ok=True)
    return [f'model:={paths.bundle}', f'bag:={paths.bag}', f'rate:={rate}', 'loop:=true',
            f'params_file:={paths.live_params}']


def _node_accounting(path: Path) -> dict[str, Any] | None:
    """Inputs, outputs and drops of the node's stats file (written at its exit), or None."""
    if not path.is_file():
        return None
    stats = json.loads(path.read_text())
    return {'inputs': stats['inputs'], 'outputs': stats['outputs'], 'drops': stats['drops']}


def _prepare_recording(paths: Paths, command: list[str], how: str) -> None:
    """Remove the previous recording, keep DDS on this host, say what starts."""
    if paths.recorded.exists():
        shutil.rmtree(paths.recorded)
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')  # keep DDS local
    os.environ.setdefault('ROS_LOCALHOST_ONLY', '1')  # the same for Humble
    say(f'    started through {how}: {" ".join(command)}')
    say(f'    node output: {paths.live_log}')


def segmenter_diagnostics(cdr: bytes) -> dict[str, str]:
    """The cns_segmenter status values of a serialized DiagnosticArray ({} without one)."""
    from rosbags.typesys import Stores, get_typestore

    array = get_typestore(Stores.ROS2_HUMBLE).deserialize_cdr(
        cdr, 'diagnostic_msgs/msg/DiagnosticArray')
    for status in array.status:
        if 'cns_segmenter' in status.name:
            return {kv.key: kv.value for kv in status.values}
    return {}


@dataclass
class Progress:
    """What the recorder has seen: the keyframes labeled, and whether the node's /diagnostics
    (with its latency) arrived after the last of them, so the summary's numbers cover them."""

    keyframes: set[int]
    labeled: set[int] = field(default_factory=set)
    labeled_clouds: int = 0
    diagnosed: bool = False

    @property
    def all_labeled(self) -> bool:
        return self.keyframes <= self.labeled

    @property
    def done(self) -> bool:
        return self.all_labeled and self.diagnosed

    def on_message(self, topic: str, _received_ns: int, data: bytes) -> None:
        """The recorder's callback (CDR bytes of every recorded message)."""
        from cns_ros.ros.record_node import header_stamp_ns

        if topic == LABELED:
            self.labeled.add(header_stamp_ns(data))
            self.labeled_clouds += 1
        elif topic == DIAGNOSTICS and self.all_labeled and not self.diagnosed:
            self.diagnosed = _positive(segmenter_diagnostics(data).get('latency_p50_ms'))


def _positive(text: str | None) -> bool:
    """A diagnostics value that is a number > 0 (the latency is 'nan' before any output)."""
    try:
        return float(text) > 0 if text is not None else False
    except ValueError:
        return False


def _record_until_done(recorder: InProcessRecorder, proc: subprocess.Popen, progress: Progress,
                       start: float, limits: tuple[float, float], paths: Paths) -> None:
    """Spin the recorder until ``progress.done``; a DemoError when the launch ends or a limit
    (s: until the first labeled cloud, then until done) passes."""
    startup_s, labeling_s = limits
    first_output: float | None = None
    while not progress.done:
        recorder.spin(0.1)
        now = time.monotonic()
        if proc.poll() is not None:
            raise DemoError(f'the launch exited early (status {proc.returncode}); see '
                            f'{paths.live_log}:\n' + _tail(paths.live_log))
        if first_output is None and progress.labeled_clouds:
            first_output = now
            say(f'    first labeled cloud after {now - start:.1f} s')
        if first_output is None and now - start > startup_s:
            raise DemoError(f'no labeled cloud within {startup_s:.0f} s; see '
                            f'{paths.live_log}:\n' + _tail(paths.live_log))
        if first_output is not None and now - first_output > labeling_s:
            raise DemoError(
                f'{len(progress.keyframes & progress.labeled)}/{len(progress.keyframes)} '
                f'keyframes labeled (node /diagnostics after them: {progress.diagnosed}) '
                f'{labeling_s:.0f} s after the first labeled cloud; the node drops sweeps that '
                f'arrive while it is busy: replay slower (--rate); see {paths.live_log}:\n'
                + _tail(paths.live_log))
