"""The sample clock. Collectors get a `Now` instead of reading clocks, so tests can fix it."""

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Now:
    """Wall-clock and CLOCK_MONOTONIC time of one sample, in microseconds (systemd's unit).

    Both are needed: systemd reports some timer deadlines on the monotonic clock only.
    Integers, never datetime: Python on 32-bit armhf raises OverflowError converting
    timestamps past 2038, and systemd uses 2^64-1 for "never".
    """
    realtime_us: int
    monotonic_us: int

    @classmethod
    def read(cls) -> "Now":
        return cls(time.time_ns() // 1000, time.monotonic_ns() // 1000)

    @property
    def time_ns(self) -> int:
        return self.realtime_us * 1000


def read_after(earliest: Now, clock=Now.read) -> Now:
    """`clock()` once the data has been read, as the reference time of what is derived from
    that data (issue 16): no data read before it can be in its future. Never earlier
    than `earliest`, the sample's time, even if the wall clock was stepped back (NTP) in
    between; then `earliest` is kept whole, so its wall and monotonic times still agree."""
    current = clock()
    return current if current.realtime_us >= earliest.realtime_us else earliest
