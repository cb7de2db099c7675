"""The heartbeat's footprint numbers equal what psutil reports for the same process."""

import platform
import resource

import psutil

from exporter import selfstats


def test_rss_matches_psutil():
    ballast = bytearray(32 * 1024 * 1024)  # move RSS so a stale value would show
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    ours, theirs = selfstats.rss_bytes(), psutil.Process().memory_info().rss
    assert abs(ours - theirs) <= 256 * 1024  # both read /proc/self/statm; allocator noise
    assert ours > len(ballast)


def test_cpu_matches_the_kernel_and_psutil():
    deadline = selfstats.cpu_seconds() + 0.3
    while selfstats.cpu_seconds() < deadline:  # burn some CPU
        sum(range(10000))
    usage = resource.getrusage(resource.RUSAGE_SELF)  # another system call, same accounting
    assert abs(selfstats.cpu_seconds() - (usage.ru_utime + usage.ru_stime)) < 0.05
    times = psutil.Process().cpu_times()
    if times.user + times.system == 0.0:
        # psutil reads /proc/self/stat, which QEMU user emulation (the arm/v7 tests,
        # tests/test_armhf.py) fakes with zero CPU times after 0.3 s of burning. The
        # system calls above are the real numbers there.
        assert "arm" in platform.machine()
        return
    assert abs(selfstats.cpu_seconds() - (times.user + times.system)) < 0.05
