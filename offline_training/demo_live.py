"""The live step of the demo (``offline_training/demo.py``): replay_node and segment_node
started as separate processes (``ros2 launch`` or cns_ros/launcher.py), the bag looping until
every ground-truth keyframe was labeled, while cns_ros.ros.recorder records /cns/labeled_points,
/lidar_top, /cns/class_names and /diagnostics into a bag in this process (:func:`run_live`).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from offline_training.demo_common import (
    CLASS_NAMES,
    DIAGNOSTICS,
    GT,
    LABELED,
    LIDAR,
    DemoError,
    Paths,
    Settings,
    say,
)

if TYPE_CHECKING:
    from cns_ros.ros.recorder import InProcessRecorder

__all__ = ['LiveRun', 'bag_keyframes', 'launch_command', 'run_live']


def launch_command(arguments: list[str]) -> tuple[list[str], str]:
    """(command, how): ``ros2 launch`` when it can find an installed cns_ros, else the
    package's Python launcher with the same arguments."""
    from cns_ros.launcher import ament_share

    share = ament_share('cns_ros')
    if (shutil.which('ros2') and importlib.util.find_spec('launch_ros') is not None
            and share is not None and (share / 'launch' / 'segment.launch.py').is_file()):
        return ['ros2', 'launch', 'cns_ros', 'segment.launch.py', *arguments], 'ros2 launch'
    return [sys.executable, '-m', 'cns_ros.launcher', *arguments], \
        'cns_ros/launcher.py (launch_ros is not installed here)'


def bag_keyframes(bag: Path) -> tuple[set[int], float]:
    """Header stamps (ns) of the ground-truth keyframes in the bag, and the bag's length (s)."""
    from cns_ros.data import bags

    with bags.open_bag(bag) as reader:
        stamps = {m.timestamp_ns for m in reader.messages([GT])}
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


def run_live(paths: Paths, s: Settings, startup_timeout_s: float = 240.0) -> LiveRun:
    """Launch replay + segmenter, record until every keyframe was labeled (or 4 passes)."""
    from cns_ros.launcher import default_params_file
    from cns_ros.ros.recorder import InProcessRecorder

    keyframes, bag_s = bag_keyframes(paths.bag)
    arguments = [f'model:={paths.bundle}', f'bag:={paths.bag}', f'rate:={s.rate}', 'loop:=true']
    if Path(default_params_file()).is_file():
        arguments.append(f'params_file:={default_params_file()}')
    command, how = launch_command(arguments)
    live = LiveRun(how, command, len(keyframes))
    if paths.recorded.exists():
        shutil.rmtree(paths.recorded)
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')  # keep DDS local
    os.environ.setdefault('ROS_LOCALHOST_ONLY', '1')  # the same for Humble
    say(f'    started through {how}: {" ".join(command)}')
    say(f'    node output: {paths.live_log}')
    labeled = _Labeled()
    with InProcessRecorder(paths.recorded, [LABELED, CLASS_NAMES, DIAGNOSTICS, LIDAR],
                           labeled.on_message) as recorder, open(paths.live_log, 'w') as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        start = time.monotonic()
        try:
            _record_until_done(recorder, proc, keyframes, labeled, start,
                               startup_timeout_s, 4 * bag_s / s.rate + 10.0, paths)
        finally:
            live.launch_exit = _stop(proc)
            live.wall_s = round(time.monotonic() - start, 1)
            recorder.spin(0.3)
    live.labeled_keyframes = len(keyframes & labeled.stamps)
    live.labeled_clouds = labeled.count
    say(f'    {live.labeled_clouds} labeled clouds recorded, {live.labeled_keyframes}/'
        f'{live.keyframes} keyframes labeled, launch exited with {live.launch_exit}')
    if live.labeled_clouds == 0:
        raise DemoError(f'no labeled cloud was recorded; see {paths.live_log}:\n'
                        + _tail(paths.live_log))
    return live


class _Labeled:
    """The labeled clouds the recorder has seen: their header stamps and how many."""

    def __init__(self) -> None:
        self.stamps: set[int] = set()
        self.count = 0

    def on_message(self, topic: str, _received_ns: int, data: bytes) -> None:
        from cns_ros.ros.record_node import header_stamp_ns

        if topic == LABELED:
            self.stamps.add(header_stamp_ns(data))
            self.count += 1


def _record_until_done(recorder: InProcessRecorder, proc: subprocess.Popen,
                       keyframes: set[int], labeled: _Labeled, start: float,
                       startup_timeout_s: float, passes_s: float, paths: Paths) -> None:
    first_output: float | None = None
    while not keyframes <= labeled.stamps:
        recorder.spin(0.1)
        now = time.monotonic()
        if proc.poll() is not None:
            raise DemoError(f'the launch exited early (status {proc.returncode}); see '
                            f'{paths.live_log}:\n' + _tail(paths.live_log))
        if first_output is None and labeled.count:
            first_output = now
            say(f'    first labeled cloud after {now - start:.1f} s')
        if first_output is None and now - start > startup_timeout_s:
            raise DemoError(f'no labeled cloud within {startup_timeout_s:.0f} s; see '
                            f'{paths.live_log}:\n' + _tail(paths.live_log))
        if first_output is not None and now - first_output > passes_s:
            say(f'    stopping after {passes_s:.0f} s of output with '
                f'{len(keyframes & labeled.stamps)}/{len(keyframes)} keyframes labeled')
            return
