"""LiDAR-anchored synchronizer (cns_ros.ros.sync): pairing, waiting, bounds, jumps, policies.

Streams are simulated with explicit time: 20 Hz LiDAR and six 12 Hz cameras with nuScenes-like
offsets (7-49 ms after the LiDAR stamp), stamp jitter and random transport latency. Results are
compared with a brute-force nearest-frame search over every frame of the stream.
"""

from __future__ import annotations

import random
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cns_ros.ros import sync
from cns_ros.ros.sync import (
    RELEASE_REASONS,
    LidarAnchoredSynchronizer,
    SyncConfig,
    SyncPolicyError,
    make_synchronizer,
)

ROOT = Path(__file__).resolve().parents[1]
NS = 1_000_000_000
MS = 1_000_000
T0 = 1_700_000_000 * NS  # stamps look like real epoch times
OFFSETS_S = {'cam_front_left': 0.007, 'cam_front': 0.015, 'cam_front_right': 0.022,
             'cam_back_right': 0.031, 'cam_back': 0.040, 'cam_back_left': 0.049}
CAMERAS = tuple(OFFSETS_S)
OFFSETS_S_SUBSET = {'cam_front': OFFSETS_S['cam_front'], 'cam_back': OFFSETS_S['cam_back']}
TICK_S = 0.005  # the node's poll timer in these simulations


@dataclass(frozen=True)
class Event:
    """One message arriving: receipt time (s), source ('lidar' or a camera name), stamp (ns)."""

    arrival_s: float
    source: str
    stamp_ns: int

    @property
    def msg(self) -> tuple[str, int]:
        return (self.source, self.stamp_ns)


def nuscenes_like(duration_s: float, seed: int, cameras=CAMERAS, t0_ns: int = T0,
                  arrival0_s: float = 0.0) -> list[Event]:
    """20 Hz LiDAR and 12 Hz cameras (random phase, offset, +-2 ms jitter), in arrival order.

    Latency: LiDAR 10-30 ms, cameras 15-40 ms (below both periods, so each topic stays in
    stamp order, as DDS delivers it). Cameras run 0.2 s longer, so the last sweeps have a
    frame after them too.
    """
    rng = random.Random(seed)
    events = []
    for k in range(int(duration_s * 20)):
        stamp = t0_ns + k * 50 * MS + rng.randint(-2 * MS, 2 * MS)
        events.append(Event(arrival0_s + (stamp - t0_ns) / NS + rng.uniform(0.010, 0.030),
                            'lidar', stamp))
    for cam in cameras:
        phase = round(OFFSETS_S[cam] * NS) + rng.randint(0, NS // 12)
        for k in range(int((duration_s + 0.2) * 12)):
            stamp = t0_ns + phase + k * NS // 12 + rng.randint(-2 * MS, 2 * MS)
            events.append(Event(arrival0_s + (stamp - t0_ns) / NS + rng.uniform(0.015, 0.040),
                                cam, stamp))
    return sorted(events, key=lambda e: e.arrival_s)


def replay(synchronizer, events: list[Event], bounds: SyncConfig | None = None,
           tail_s: float = 1.0) -> list[sync.SyncedSet]:
    """Feeds events in arrival order, polling every TICK_S and after every message.

    With ``bounds``, checks after every step that no buffer exceeds the configured sizes.
    """
    out: list[sync.SyncedSet] = []
    now = events[0].arrival_s if events else 0.0
    end = (events[-1].arrival_s if events else 0.0) + tail_s
    queue = list(events)
    while now <= end:
        while queue and queue[0].arrival_s <= now:
            e = queue.pop(0)
            out += synchronizer.poll(e.arrival_s)
            if e.source == 'lidar':
                synchronizer.add_lidar(e.stamp_ns, e.msg, e.arrival_s)
            else:
                synchronizer.add_camera(e.source, e.stamp_ns, e.msg, e.arrival_s)
            out += synchronizer.poll(e.arrival_s)
            if bounds is not None:
                check_bounds(synchronizer, bounds)
        out += synchronizer.poll(now)
        now = round(now + TICK_S, 9)
    return out


def check_bounds(synchronizer: LidarAnchoredSynchronizer, config: SyncConfig) -> None:
    sizes = synchronizer.buffer_sizes()
    assert sizes['pending'] <= config.max_pending
    assert sizes['ready'] <= config.max_pending
    for cam in config.cameras:
        assert sizes[f'camera.{cam}'] <= config.camera_buffer_size


def brute_force(events: list[Event], config: SyncConfig) -> dict[int, dict[str, int]]:
    """Per LiDAR stamp: camera -> stamp of the frame nearest to t_L + offset, within the window."""
    window = round(config.max_time_diff * NS)
    frames = {cam: [e.stamp_ns for e in events if e.source == cam] for cam in config.cameras}
    expected = {}
    for lidar in (e for e in events if e.source == 'lidar'):
        expected[lidar.stamp_ns] = {}
        for cam, stamps in frames.items():
            target = lidar.stamp_ns + round(config.offsets.get(cam, 0.0) * NS)
            near = [s for s in stamps if abs(s - target) <= window]
            if near:
                expected[lidar.stamp_ns][cam] = min(near, key=lambda s, t=target: (abs(s - t), s))
    return expected


def pairs(sets: list[sync.SyncedSet]) -> dict[int, dict[str, int]]:
    return {s.lidar_stamp_ns: {c: m.stamp_ns for c, m in s.cameras.items()} for s in sets}


def nuscenes_config(**overrides) -> SyncConfig:
    return SyncConfig(**{'cameras': CAMERAS, 'offsets': OFFSETS_S, **overrides})


@pytest.mark.parametrize(('min_frame_interval', 'max_wait'), [(0.0, 0.25), (0.06, 0.1)])
def test_nuscenes_rates_pair_every_sweep_with_the_nearest_frame(min_frame_interval, max_wait):
    config = nuscenes_config(max_wait=max_wait, min_frame_interval=min_frame_interval)
    events = nuscenes_like(4.0, seed=1)
    synchronizer = LidarAnchoredSynchronizer(config)
    out = replay(synchronizer, events, bounds=config)

    lidar = [e.stamp_ns for e in events if e.source == 'lidar']
    assert [s.lidar_stamp_ns for s in out] == lidar  # each sweep once, in order
    assert pairs(out) == brute_force(events, config)
    for s in out:
        assert set(s.cameras) | set(s.missing) == set(CAMERAS)
        assert all(abs(m.dt) <= config.max_time_diff for m in s.cameras.values())
        assert all(m.msg == (c, m.stamp_ns) for c, m in s.cameras.items())
        assert s.waited_s <= max_wait + TICK_S + 1e-9
    # About 12 of 20 sweeps per second get each 12 Hz camera, and every frame is used once.
    matched = sum(len(s.cameras) for s in out)
    assert 0.5 < matched / (len(out) * len(CAMERAS)) < 0.7
    counters = synchronizer.counters
    assert counters['camera_stale'] == counters['camera_out_of_order'] == 0
    assert counters['time_jump'] == counters['released_overflow'] == 0
    if max_wait == 0.25:  # long enough for the frame after every target: never times out
        assert counters['released_complete'] == len(out)


def test_min_frame_interval_shortens_waits_without_changing_pairs():
    events = nuscenes_like(3.0, seed=6)
    results = {}
    for interval in (0.0, 0.06):
        config = nuscenes_config(max_wait=0.25, min_frame_interval=interval)
        out = replay(LidarAnchoredSynchronizer(config), events)
        assert pairs(out) == brute_force(events, config)
        results[interval] = sum(s.waited_s for s in out) / len(out)
    # An in-window frame (or one just before the window) decides without the next frame.
    assert results[0.06] < 0.8 * results[0.0]


def test_late_camera_within_max_wait_is_paired():
    config = SyncConfig(cameras=('cam',), max_wait=0.1)
    s = LidarAnchoredSynchronizer(config)
    s.add_lidar(T0, 'L', now_s=10.0)
    assert s.poll(10.05) == []  # still waiting for the camera
    s.add_camera('cam', T0 + 5 * MS, 'C', now_s=10.09)  # stamp >= target: decides at once
    (out,) = s.poll(10.09)
    assert out.reason == 'complete' and out.missing == ()
    assert out.cameras['cam'] == (T0 + 5 * MS, 'C', pytest.approx(0.005))
    assert out.waited_s == pytest.approx(0.09)


def test_camera_after_max_wait_is_left_out_and_counted():
    config = SyncConfig(cameras=('cam', 'cam2'), max_wait=0.1)
    s = LidarAnchoredSynchronizer(config)
    s.add_lidar(T0, 'L0', now_s=10.0)
    s.add_camera('cam2', T0 + 1 * MS, 'D0', now_s=10.01)
    (out,) = s.poll(10.1)
    assert out.reason == 'timeout' and out.missing == ('cam',) and set(out.cameras) == {'cam2'}
    assert out.waited_s == pytest.approx(0.1)
    s.add_camera('cam', T0 + 5 * MS, 'C0', now_s=10.12)  # too late for the released sweep
    s.add_lidar(T0 + 50 * MS, 'L1', now_s=10.13)  # the late frame is out of its window
    s.add_camera('cam', T0 + 8 * MS, 'C1', now_s=10.14)  # arrives when it can match nothing
    counters = s.counters
    assert counters['missing.cam'] == 1 and counters['released_timeout'] == 1
    assert counters['camera_unused'] == 1 and counters['camera_stale'] == 1


def test_missing_camera_never_blocks_the_lidar():
    config = SyncConfig(cameras=('cam_front', 'cam_back'), offsets=OFFSETS_S_SUBSET,
                        max_wait=0.1)
    events = nuscenes_like(3.0, seed=2, cameras=('cam_front',))  # cam_back never publishes
    synchronizer = LidarAnchoredSynchronizer(config)
    out = replay(synchronizer, events, bounds=config)
    lidar = [e for e in events if e.source == 'lidar']
    assert [s.lidar_stamp_ns for s in out] == [e.stamp_ns for e in lidar]
    assert all(s.reason == 'timeout' and 'cam_back' in s.missing for s in out)
    # Released on time: max_wait after receipt, within one poll tick.
    for s, e in zip(out, lidar, strict=True):
        assert config.max_wait <= s.waited_s <= config.max_wait + TICK_S + 1e-9
        assert s.lidar_msg == e.msg
    assert pairs(out) == brute_force(events, config)  # cam_front still paired correctly
    counters = synchronizer.counters
    assert counters['missing.cam_back'] == len(lidar) == counters['released_timeout']


def test_out_of_order_camera_frame_is_accepted_and_re_evaluated():
    s = LidarAnchoredSynchronizer(SyncConfig(cameras=('cam',)))
    s.add_lidar(T0, 'L0', now_s=0.0)
    s.add_camera('cam', T0 + 20 * MS, 'far', now_s=0.02)  # newer frame first (decides)
    s.add_camera('cam', T0 + 3 * MS, 'near', now_s=0.021)  # the older, nearer frame after it
    (out,) = s.poll(0.021)
    assert out.reason == 'complete' and out.cameras['cam'].msg == 'near'
    assert s.counters['camera_out_of_order'] == 1
    # Arriving after the sweep was released, an older frame cannot change it.
    s.add_lidar(T0 + 50 * MS, 'L1', now_s=0.05)
    s.add_camera('cam', T0 + 60 * MS, 'C1', now_s=0.06)
    (out,) = s.poll(0.06)
    s.add_camera('cam', T0 + 52 * MS, 'late', now_s=0.07)
    assert out.cameras['cam'].msg == 'C1' and s.poll(0.07) == []
    assert s.counters['camera_out_of_order'] == 2


def test_out_of_order_lidar_is_counted_and_still_released():
    s = LidarAnchoredSynchronizer(SyncConfig(cameras=('cam',), max_wait=0.1))
    s.add_lidar(T0 + 50 * MS, 'L1', now_s=0.0)
    s.add_lidar(T0, 'L0', now_s=0.01)
    s.add_camera('cam', T0 + 55 * MS, 'C', now_s=0.02)
    out = s.poll(0.2)
    assert [o.lidar_msg for o in out] == ['L1', 'L0']  # arrival order
    assert out[0].cameras['cam'].msg == 'C' and out[1].missing == ('cam',)
    assert s.counters['lidar_out_of_order'] == 1


def test_time_jump_backwards_resets_and_pairing_continues():
    config = nuscenes_config(max_wait=0.25)
    first = nuscenes_like(2.0, seed=3)
    second = nuscenes_like(2.0, seed=4, arrival0_s=first[-1].arrival_s + 0.02)  # bag loops
    synchronizer = LidarAnchoredSynchronizer(config)
    out = replay(synchronizer, first + second, bounds=config)
    n_first = sum(e.source == 'lidar' for e in first)
    assert len(out) == n_first + sum(e.source == 'lidar' for e in second)
    assert pairs(out[:n_first]) == brute_force(first, config)
    assert pairs(out[n_first:]) == brute_force(second, config)
    counters = synchronizer.counters
    assert counters['time_jump'] == 1
    assert counters['camera_stale'] == 0  # the looped cameras' frames were not refused
    assert {o.reason for o in out[n_first:]} == {'complete'}


def test_camera_looping_alone_is_counted_and_recovers():
    s = LidarAnchoredSynchronizer(SyncConfig(cameras=('cam',), max_wait=0.1))
    s.add_camera('cam', T0 + 10 * NS, 'old', now_s=0.0)
    s.add_camera('cam', T0, 'new', now_s=0.01)  # 10 s back
    s.add_lidar(T0, 'L', now_s=0.02)
    (out,) = s.poll(0.02)
    assert out.cameras['cam'].msg == 'new'
    assert s.counters['camera_time_jump'] == 1 and s.counters['camera_unused'] == 1


def test_pending_overflow_releases_the_oldest_sweep():
    config = SyncConfig(cameras=('cam',), max_pending=2, max_wait=10.0)
    s = LidarAnchoredSynchronizer(config)
    for k in range(3):
        s.add_lidar(T0 + k * 50 * MS, f'L{k}', now_s=k * 0.05)
    assert s.buffer_sizes()['pending'] == 2
    (out,) = s.poll(0.1)
    assert out.lidar_msg == 'L0' and out.reason == 'overflow' and out.missing == ('cam',)
    assert s.counters['released_overflow'] == 1


def test_lidar_only_sweeps_come_out_at_the_next_poll():
    s = make_synchronizer('nearest', SyncConfig())
    s.add_lidar(T0, 'L', now_s=1.0)
    (out,) = s.poll(1.0)
    assert out.reason == 'complete' and out.cameras == {} and out.missing == ()


def test_never_polled_output_is_bounded_and_counted():
    config = SyncConfig(max_pending=3)
    s = LidarAnchoredSynchronizer(config)
    for k in range(5):
        s.add_lidar(T0 + k * 50 * MS, k, now_s=0.0)
    # 5 sweeps, 3 pending at most: sweeps 0 and 1 released ('overflow') into ready; the jump
    # releases 2, 3, 4 ('reset'): 5 ready > 4 (max_pending + 1), sweep 0 discarded; the poll
    # releases 'loop': sweep 1 discarded. Kept: 2, 3, 4, 'loop'.
    s.add_lidar(T0 - 5 * NS, 'loop', now_s=0.0)
    assert s.buffer_sizes()['ready'] == 4 and s.held_sweeps() == 5
    released = s.poll(0.0)
    assert [o.lidar_msg for o in released] == [2, 3, 4, 'loop']
    assert s.counters['output_overflow'] == 2 and s.held_sweeps() == 0


def test_time_jump_with_one_pending_sweep_loses_nothing():
    # Found by Hypothesis (issue 10): with max_pending 1 the jump released sweep 0 and the
    # poll released the new sweep 1 at once, so a ready buffer of max_pending dropped sweep 0
    # although the caller polled after every call.
    config = SyncConfig(cameras=('cam_a', 'cam_b'), offsets={'cam_b': 0.04}, max_wait=0.1,
                        camera_buffer_size=1, max_pending=1)
    s = LidarAnchoredSynchronizer(config)
    s.add_lidar(T0, 0, 0.0)
    assert s.poll(0.0) == []  # waits for its cameras
    s.add_camera('cam_a', T0 - 219 * MS, 'a0', 0.0)  # too old for sweep 0: stale
    s.add_camera('cam_a', T0 - 1026 * MS, 'a1', 0.0)  # > 1 s older: kept for a LiDAR jump
    s.add_camera('cam_b', T0 - 986 * MS, 'b0', 0.0)  # sweep 1's target (offset 40 ms)
    s.add_lidar(T0 - 1026 * MS, 1, 0.0)  # 1.026 s back: a time jump
    out = s.poll(0.0)
    assert [(o.lidar_msg, o.reason) for o in out] == [(0, 'reset'), (1, 'complete')]
    assert out[0].missing == ('cam_a', 'cam_b')
    assert {c: m.msg for c, m in out[1].cameras.items()} == {'cam_a': 'a1', 'cam_b': 'b0'}
    counters = s.counters
    assert counters['output_overflow'] == 0 and counters['time_jump'] == 1
    assert counters['camera_stale'] == 1


SOURCES = ('lidar', 'cam_a', 'cam_b', 'poll')


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(ops=[('lidar', 0, 0.0), ('cam_a', -219, 0.0), ('cam_a', -807, 0.0),
              ('cam_b', -986, 0.0), ('lidar', -1026, 0.0)],
         buffer_size=1, max_pending=1, min_frame_interval=0.0)  # issue 10: sweep 0 was lost
@given(ops=st.lists(st.tuples(st.sampled_from(SOURCES),
                              st.one_of(st.integers(-30, 120), st.integers(-3000, 3000)),
                              st.floats(0.0, 0.08)), min_size=1, max_size=300),
       buffer_size=st.integers(1, 4), max_pending=st.integers(1, 4),
       min_frame_interval=st.sampled_from([0.0, 0.06]))
def test_random_streams_keep_buffers_bounded_and_lose_no_sweep(ops, buffer_size, max_pending,
                                                               min_frame_interval):
    config = SyncConfig(cameras=('cam_a', 'cam_b'), offsets={'cam_b': 0.04}, max_wait=0.1,
                        camera_buffer_size=buffer_size, max_pending=max_pending,
                        min_frame_interval=min_frame_interval)
    s = LidarAnchoredSynchronizer(config)
    cursor = dict.fromkeys(SOURCES, T0)
    now, n_lidar, out = 0.0, 0, []
    for source, delta_ms, advance_s in ops:  # deltas: steps, out-of-order, jumps both ways
        now += advance_s
        cursor[source] += delta_ms * MS
        if source == 'lidar':
            s.add_lidar(cursor[source], n_lidar, now)
            n_lidar += 1
        elif source != 'poll':
            s.add_camera(source, cursor[source], (source, cursor[source]), now)
        out += s.poll(now)
        check_bounds(s, config)
    out += s.poll(now + 1.0)
    assert [o.lidar_msg for o in out] == list(range(n_lidar))  # every sweep once, in order
    counters = s.counters
    assert counters['output_overflow'] == 0
    assert sum(counters[f'released_{r}'] for r in RELEASE_REASONS) == n_lidar
    for o in out:
        assert o.reason in RELEASE_REASONS and set(o.cameras).isdisjoint(o.missing)
        for cam, match in o.cameras.items():
            assert match.msg == (cam, match.stamp_ns) and abs(match.dt) <= 0.025 + 1e-9


def test_long_stream_with_drops_stays_bounded():
    config = nuscenes_config(camera_buffer_size=4, max_pending=3)
    rng = random.Random(5)
    events = [e for e in nuscenes_like(20.0, seed=5) if rng.random() > 0.1]  # 10 % lost
    synchronizer = LidarAnchoredSynchronizer(config)
    out = replay(synchronizer, events, bounds=config)
    assert len(out) == sum(e.source == 'lidar' for e in events)
    counters = synchronizer.counters
    assert counters['output_overflow'] == 0 and synchronizer.held_sweeps() == 0
    assert sum(counters[f'released_{r}'] for r in RELEASE_REASONS) == len(out)
    for cam in config.cameras:  # the counters tally what the released sets say
        assert counters[f'missing.{cam}'] == sum(cam in o.missing for o in out), cam
        assert counters[f'missing.{cam}'] > 0  # 10 % of the frames were lost


def test_config_validation():
    with pytest.raises(ValueError, match='not configured'):
        SyncConfig(cameras=('a',), offsets={'b': 0.01})
    with pytest.raises(ValueError, match='unique'):
        SyncConfig(cameras=('a', 'a'))
    for bad in ({'max_time_diff': 0.0}, {'max_wait': -1.0}, {'jump_threshold': float('nan')},
                {'camera_buffer_size': 0}, {'max_pending': 1.5}):
        with pytest.raises(ValueError):
            SyncConfig(cameras=('a',), **bad)
    with pytest.raises(ValueError, match='unknown sync option'):
        SyncConfig.from_dict({'cameras': ['a'], 'slop': 0.1})
    config = SyncConfig.from_dict({'cameras': ['a'], 'offsets': {'a': 0.01}})
    assert config.cameras == ('a',) and config.offsets['a'] == 0.01
    assert hash(config) == hash(SyncConfig(cameras=('a',), offsets={'a': 0.01}))
    with pytest.raises(ValueError, match='unknown camera'):
        LidarAnchoredSynchronizer(config).add_camera('b', T0, None, 0.0)
    with pytest.raises(SyncPolicyError, match='nearest'):
        make_synchronizer('exact', config)


def test_core_imports_no_ros():
    code = ('import sys, cns_ros.ros.sync; '
            "bad = [m for m in ('rclpy', 'message_filters') if m in sys.modules]; "
            'assert not bad, bad')
    subprocess.run([sys.executable, '-c', code], cwd=ROOT, check=True, timeout=60)


def test_approximate_time_without_message_filters_fails_clearly(monkeypatch):
    monkeypatch.setitem(sys.modules, 'message_filters', None)  # not importable, on any host
    with pytest.raises(SyncPolicyError) as err:
        make_synchronizer('approximate_time', SyncConfig(cameras=('cam',)))
    text = str(err.value)
    assert 'approximate_time' in text and 'message_filters' in text and "'nearest'" in text


def fake_message_filters(calls: list) -> types.ModuleType:
    """A stand-in whose synchronizer accepts keyword arguments only and pairs equal stamps."""

    class SimpleFilter:
        def __init__(self):
            self.callbacks = []

        def registerCallback(self, cb, *args):  # noqa: N802 - message_filters' name
            self.callbacks.append((cb, args))

        def signalMessage(self, *msg):  # noqa: N802 - message_filters' name
            for cb, args in self.callbacks:
                cb(*(msg + args))

    class ApproximateTimeSynchronizer(SimpleFilter):
        def __init__(self, *, fs, queue_size, slop, allow_headerless=False):
            super().__init__()
            calls.append({'fs': fs, 'queue_size': queue_size, 'slop': slop,
                          'allow_headerless': allow_headerless})
            self.queues = [{} for _ in fs]
            for i, f in enumerate(fs):
                f.registerCallback(self.add, i)

        def add(self, msg, i):
            stamp = sync.header_stamp_ns(msg)
            self.queues[i][stamp] = msg
            if all(stamp in q for q in self.queues):
                self.signalMessage(*(q.pop(stamp) for q in self.queues))

    return types.SimpleNamespace(SimpleFilter=SimpleFilter,
                                 ApproximateTimeSynchronizer=ApproximateTimeSynchronizer)


def stamped(stamp_ns: int, name: str):
    stamp = types.SimpleNamespace(sec=stamp_ns // NS, nanosec=stamp_ns % NS)
    return types.SimpleNamespace(header=types.SimpleNamespace(stamp=stamp), name=name)


def test_approximate_time_adapter_passes_keywords_only(monkeypatch):
    calls: list = []
    monkeypatch.setitem(sys.modules, 'message_filters', fake_message_filters(calls))
    s = make_synchronizer('approximate_time', SyncConfig(cameras=('cam',), max_time_diff=0.02))
    assert calls[0]['slop'] == 0.02 and calls[0]['allow_headerless'] is False
    assert calls[0]['queue_size'] >= 3 and len(calls[0]['fs']) == 2
    s.add_lidar(T0, stamped(T0, 'L'), now_s=1.0)
    s.add_camera('cam', T0, stamped(T0, 'C'), now_s=1.03)
    (out,) = s.poll(1.03)
    assert out.lidar_msg.name == 'L' and out.cameras['cam'].msg.name == 'C'
    assert out.waited_s == pytest.approx(0.03) and out.reason == 'complete'


def test_approximate_time_pairs_a_simple_stream_with_message_filters():
    pytest.importorskip('message_filters', reason='message_filters is not installed here '
                        '(a ROS 2 distro package; not on PyPI)')
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    def msg(stamp_ns: int, name: str):
        header = Header(stamp=Time(sec=stamp_ns // NS, nanosec=stamp_ns % NS))
        return types.SimpleNamespace(header=header, name=name)

    s = make_synchronizer('approximate_time', SyncConfig(cameras=('cam',)))
    out = []
    for k in range(10):  # camera 10 ms after each sweep, well within the 25 ms slop
        t = T0 + k * 50 * MS
        s.add_lidar(t, msg(t, f'L{k}'), now_s=k * 0.05)
        s.add_camera('cam', t + 10 * MS, msg(t + 10 * MS, f'C{k}'), now_s=k * 0.05 + 0.01)
        out += s.poll(k * 0.05 + 0.01)
    assert [(o.lidar_msg.name, o.cameras['cam'].msg.name) for o in out] == [
        (f'L{k}', f'C{k}') for k in range(10)]
    assert all(o.cameras['cam'].dt == pytest.approx(0.01) for o in out)
