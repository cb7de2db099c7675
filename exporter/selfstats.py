"""The agent's own footprint for its `up` heartbeat, from /proc and os.times().

psutil would give the same two numbers (tests/test_selfstats.py compares them) but is
a compiled dependency with no armv7 wheel; these are two reads of the kernel's own files.
"""

import os

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """Resident set size now (proc(5): /proc/self/statm, second field, in pages)."""
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * _PAGE


def cpu_seconds() -> float:
    """User + system CPU time used by this process so far."""
    times = os.times()
    return times.user + times.system
