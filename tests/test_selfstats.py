"""The heartbeat's footprint numbers equal what psutil reports for the same process."""

import psutil

from exporter import selfstats


def test_rss_matches_psutil():
    ballast = bytearray(32 * 1024 * 1024)  # move RSS so a stale value would show
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    ours, theirs = selfstats.rss_bytes(), psutil.Process().memory_info().rss
    assert abs(ours - theirs) <= 256 * 1024  # both read /proc/self/statm; allocator noise
    assert ours > len(ballast)


def test_cpu_matches_psutil():
    deadline = selfstats.cpu_seconds() + 0.3
    while selfstats.cpu_seconds() < deadline:  # burn some CPU
        sum(range(10000))
    times = psutil.Process().cpu_times()
    assert abs(selfstats.cpu_seconds() - (times.user + times.system)) < 0.05
