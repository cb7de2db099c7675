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
