"""ThrottledReporter (cns_ros.ros.reporting) under concurrent use: every report counted, log
lines throttled per reason, the suppressed count exact."""

from __future__ import annotations

import re
import threading
import time
from collections import UserDict

from cns_ros.ros.diagnostics import NodeStats
from cns_ros.ros.reporting import ThrottledReporter


class ListLogger:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def warning(self, text: str) -> None:
        self.lines.append(('warning', text))

    def error(self, text: str) -> None:
        self.lines.append(('error', text))


class YieldingSettings(UserDict):
    """Settings whose reads yield the GIL: a thread switch in the middle of the reporter's
    read-check-write of its throttle state, where a preemption can always happen, becomes
    likely instead of rare."""

    def __getitem__(self, key: str):
        time.sleep(0)
        return super().__getitem__(key)


def test_two_threads_hammering_count_everything_and_log_once_per_period():
    stats, logger = NodeStats(), ListLogger()
    settings = YieldingSettings(throttle_duration_sec=3600.0)
    report = ThrottledReporter(stats, logger, settings)
    per_thread, start = 5_000, threading.Barrier(2)

    def hammer(drop: bool) -> None:
        start.wait()
        for _ in range(per_thread):
            report('busy', 'x', drop=drop)
            report('shared', 'y', drop=False)

    threads = [threading.Thread(target=hammer, args=(d,)) for d in (True, False)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert stats.drops == {'busy': per_thread}
    assert stats.events == {'busy': per_thread, 'shared': 2 * per_thread}
    logged = sorted(re.search(r'\[(\w+)\]', text).group(1) for _, text in logger.lines)
    assert logged == ['busy', 'shared']  # one line per reason in the period, not one per thread
    settings['throttle_duration_sec'] = 0.0  # the next report logs, with what it suppressed
    report('shared', 'z', drop=False, error=True)
    level, text = logger.lines[-1]
    assert level == 'error' and text.endswith(f'({2 * per_thread - 1} more since the last '
                                              'message)')
    assert report.logged('shared') and not report.logged('never')
