"""record_node as a process through real DDS: it records what this test publishes, and ends
cleanly (exit code 0, bag finalized with every recorded message) on SIGINT, on SIGTERM and at
the end of ``duration``; a bad parameter ends it with exit code 1 and one error line. Discovery
stays on this host in a per-session domain (tests/conftest.py).
"""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.ros, pytest.mark.timeout(120),
    pytest.mark.skipif(importlib.util.find_spec('rclpy') is None
                       or importlib.util.find_spec('rosbags') is None,
                       reason='needs rclpy (ROS 2 install or PyPI ROS wheels) and rosbags')]

ROOT = Path(__file__).resolve().parents[1]
TOPIC = '/record_test/chatter'


class Talker:
    """Publishes std_msgs/String on TOPIC from this process (its own rclpy context)."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.signals import SignalHandlerOptions
        from std_msgs.msg import String

        self._rclpy, self._string = rclpy, String
        self.context = rclpy.Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node('record_test_talker', context=self.context)
        self.publisher = self.node.create_publisher(String, TOPIC, 10)
        self.sent = 0

    def publish_until(self, done, timeout: float, period: float = 0.02) -> bool:
        """Publish every ``period`` s until ``done()`` (True) or ``timeout`` s (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done():
                return True
            self.publisher.publish(self._string(data=f'message {self.sent}'))
            self.sent += 1
            time.sleep(period)
        return done()

    def close(self) -> None:
        self.node.destroy_node()
        self._rclpy.try_shutdown(context=self.context)


@pytest.fixture
def talker():
    talker = Talker()
    yield talker
    talker.close()


def start(out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, '-m', 'cns_ros.ros.record_node', '--ros-args', '-p', f'out:={out}',
           '-p', f'topics:=[{TOPIC}]', *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT)


def recorded(out: Path) -> list[str]:
    """The String messages of the finalized bag ``out`` (metadata.yaml written at close)."""
    from rosbags.highlevel import AnyReader

    assert (out / 'metadata.yaml').is_file(), f'{out}: bag not finalized'
    with AnyReader([out]) as reader:
        return [reader.deserialize(raw, conn.msgtype).data
                for conn, _, raw in reader.messages()]


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM], ids=['SIGINT', 'SIGTERM'])
def test_signal_ends_the_recording_cleanly(tmp_path, talker, signum):
    out = tmp_path / 'bag'
    proc = start(out)
    try:
        subscribed = talker.publish_until(
            lambda: talker.publisher.get_subscription_count() > 0 or proc.poll() is not None,
            60.0)
        assert subscribed and proc.poll() is None, proc.communicate()[0]
        first = talker.sent
        talker.publish_until(lambda: talker.sent >= first + 25, 10.0)
        time.sleep(0.5)  # the last messages arrive
        proc.send_signal(signum)
        log = proc.communicate(timeout=30)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, log
    messages = recorded(out)
    assert len(messages) >= 20, log  # all but the ones sent before the subscription matched
    numbers = [int(m.split()[-1]) for m in messages]
    assert numbers == sorted(set(numbers)) and numbers[-1] < talker.sent, numbers  # in order
    assert f'wrote {out}: {len(messages)} messages ({TOPIC} {len(messages)})' in log
    assert 'Traceback' not in log and 'context is invalid' not in log, log


def test_duration_ends_the_recording(tmp_path, talker):
    out = tmp_path / 'bag'
    proc = start(out, '-p', 'duration:=3.0')
    try:
        talker.publish_until(lambda: proc.poll() is not None, 60.0)
        log = proc.communicate(timeout=30)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, log
    assert recorded(out), log  # finalized, with what arrived while it ran


def test_bad_parameters_exit_with_one_error_line(tmp_path):
    existing = tmp_path / 'exists'
    existing.mkdir()
    for extra, message in (([], f"parameter 'out': {existing} exists"),
                           (['-p', 'storage:=zip'], "'storage' must be mcap or sqlite3")):
        proc = start(existing if not extra else tmp_path / 'new', *extra)
        log = proc.communicate(timeout=60)[0]
        assert proc.returncode == 1, log
        assert message in log and 'Traceback' not in log, log


def test_in_process_recorder_hands_over_what_it_writes(tmp_path, talker):
    """InProcessRecorder (the demo's recorder): the callback gets exactly the messages of the
    finalized bag, as CDR bytes; an existing ``out`` is refused when the block starts."""
    from rosbags.typesys import Stores, get_typestore

    from cns_ros.ros.recorder import InProcessRecorder

    seen: list[tuple[str, bytes]] = []
    out = tmp_path / 'bag'
    with InProcessRecorder(out, [TOPIC], lambda topic, _t, data: seen.append((topic, data))) \
            as recorder:
        def ten_seen() -> bool:
            recorder.spin(0.02)
            return len(seen) >= 10
        assert talker.publish_until(ten_seen, 60.0)
    store = get_typestore(Stores.ROS2_HUMBLE)
    assert {topic for topic, _ in seen} == {TOPIC}
    assert [store.deserialize_cdr(data, 'std_msgs/msg/String').data
            for _, data in seen] == recorded(out)
    with pytest.raises(ValueError, match='exists'), InProcessRecorder(out, [TOPIC]):
        pass
