"""Host memory from /proc/meminfo, measurement `host_memory`, for deployments that run
the agent without Telegraf. The numbers equal psutil.virtual_memory() and swap_memory()
(tests/test_host_memory.py) without its compiled extension (no armv7 wheel)."""

import os

from ..clock import Now
from ..point import Point


def read_meminfo(path: str) -> dict[str, int]:
    """proc(5) /proc/meminfo: "Name:   value kB" lines, returned in bytes."""
    values = {}
    with open(path, encoding="ascii") as handle:
        for line in handle:
            name, _, rest = line.partition(":")
            number, *unit = rest.split()
            values[name] = int(number) * (1024 if unit == ["kB"] else 1)
    return values


def host_memory_fields(info: dict[str, int]) -> dict:
    total = info["MemTotal"]
    # MemAvailable (Linux 3.14+) is the kernel's own estimate; psutil falls back the same way.
    available = info.get("MemAvailable", info["MemFree"] + info.get("Cached", 0))
    swap_total = info.get("SwapTotal", 0)
    return {"total_bytes": total, "available_bytes": available,
            "used_percent": 100.0 * (total - available) / total if total else 0.0,
            "swap_total_bytes": swap_total,
            "swap_used_bytes": swap_total - info.get("SwapFree", 0)}


class HostMemoryCollector:
    name = "host_memory"

    def __init__(self, host: str, proc: str = "/proc"):
        self.host, self.path = host, os.path.join(proc, "meminfo")

    async def collect(self, now: Now) -> list[Point]:
        fields = host_memory_fields(read_meminfo(self.path))
        return [Point("host_memory", {"host": self.host}, fields, now.time_ns)]

    async def close(self) -> None:
        pass
