"""SweepIntake (cns_ros.ros.intake): every sweep handed to the node is taken by the worker or
counted as a drop, with cameras (LiDAR-anchored synchronizer) or without, through bursts and
time jumps. ROS-free: explicit clocks, a worker simulated by taking from the mailbox."""

from __future__ import annotations

import random

from cns_ros.ros.diagnostics import NodeStats
from cns_ros.ros.intake import SweepIntake
from cns_ros.ros.mailbox import LatestMailbox
from cns_ros.ros.reporting import ThrottledReporter
from cns_ros.ros.sync import LidarAnchoredSynchronizer, SyncConfig

NS = 1_000_000_000
MS = 1_000_000
T0 = 1_700_000_000 * NS


class QuietLogger:
    def warning(self, text: str) -> None:
        pass

    error = warning


def make_intake(config: SyncConfig | None) -> tuple[SweepIntake, NodeStats]:
    stats = NodeStats()
    report = ThrottledReporter(stats, QuietLogger(), {'throttle_duration_sec': 0.0})
    sync = LidarAnchoredSynchronizer(config) if config is not None else None
    return SweepIntake(sync, LatestMailbox(), report), stats


def stream(n: int, seed: int) -> list[tuple[str, int, float]]:
    """(source, stamp ns, receipt s): 20 Hz sweeps and one camera 40 ms after each, a burst
    (sweeps 2 ms apart in receipt time) in the middle and a 30 s jump back at sweep n // 2."""
    rng, events, now = random.Random(seed), [], 0.0
    for k in range(n):
        stamp = T0 + k * 50 * MS - (30 * NS if k >= n // 2 else 0)
        now += 0.002 if n // 3 <= k < n // 3 + 10 else 0.05
        events.append(('lidar', stamp, now))
        if rng.random() < 0.8:  # some frames lost
            events.append(('cam', stamp + 40 * MS, now + 0.01))
    return sorted(events, key=lambda e: e[2])


def run(intake: SweepIntake, stats: NodeStats, events, take_every: int) -> tuple[int, int]:
    """Feed ``events`` (recording inputs as the node does), poll every 5 ms of receipt time,
    and let a slow worker take (and publish) one sweep every ``take_every`` events; returns
    the sweeps taken and the largest ``in_flight`` seen."""
    taken, last_poll, most = 0, 0.0, 0
    for i, (source, stamp, now) in enumerate(events):
        while last_poll + 0.005 <= now:
            last_poll += 0.005
            intake.poll(last_poll)
        if source == 'lidar':
            stats.record_input(now)
            intake.lidar(('sweep', stamp), stamp, now)
        else:
            intake.camera(source, ('image', stamp), stamp, now)
        if i % take_every == 0 and intake.mailbox.take(timeout=0.0) is not None:
            taken += 1
            stats.record_output(now, 1.0, {}, {})
        most = max(most, stats.snapshot(now)['in_flight'])
    return taken, most


def test_with_cameras_every_sweep_is_taken_or_counted():
    config = SyncConfig(cameras=('cam',), offsets={'cam': 0.04}, max_wait=0.1,
                        camera_buffer_size=2)
    intake, stats = make_intake(config)
    events = stream(60, seed=1)
    taken, most_in_flight = run(intake, stats, events, take_every=3)
    intake.close()
    drops = stats.drops
    assert taken + sum(drops.values()) == 60  # 60 sweeps were fed
    # held meanwhile: at most max_pending (8) in the synchronizer and 1 in the mailbox
    assert 1 <= most_in_flight <= 8 + 1 and stats.snapshot(0.0)['in_flight'] == 0
    assert drops['busy'] > 0 and taken > 0  # the worker was slower than the input
    assert set(drops) <= {'busy', 'shutdown'}
    counters = intake.synchronizer.counters
    assert counters['time_jump'] == 1
    # every frame comes 10 ms after its sweep, before the next one, and 8 sweeps may wait:
    # paired at +40 ms, the camera is missing exactly for the sweeps whose frame was lost
    lost = 60 - sum(source == 'cam' for source, _, _ in events)
    assert counters['missing.cam'] == lost


def test_lidar_only_and_after_close():
    intake, stats = make_intake(None)
    for k in range(5):
        intake.lidar(k, T0 + k, float(k))
    assert intake.mailbox.take(timeout=0.0).msg == 4  # the newest; 0..3 were replaced
    intake.lidar(5, T0 + 5, 5.0)
    intake.close()  # sweep 5 still waited
    intake.lidar(6, T0 + 6, 6.0)  # arrives while stopping
    assert stats.drops == {'busy': 4, 'shutdown': 2}


def test_close_counts_the_sweeps_the_synchronizer_still_holds():
    intake, stats = make_intake(SyncConfig(cameras=('cam',), max_wait=10.0))
    for k in range(3):  # no camera frame: all three wait (max_wait 10 s)
        intake.lidar(k, T0 + k * 50 * MS, k * 0.05)
    assert intake.mailbox.take(timeout=0.0) is None
    intake.close()
    assert stats.drops == {'shutdown': 3}
    intake.close()  # idempotent
    assert stats.drops == {'shutdown': 3}
