"""host_memory equals psutil's numbers for this machine, read at the same moment."""

import asyncio

import psutil
import pytest

from exporter.clock import Now
from exporter.collectors.host_memory import HostMemoryCollector


def test_host_memory_matches_psutil():
    (point,) = asyncio.run(HostMemoryCollector("h").collect(Now.read()))
    memory, swap = psutil.virtual_memory(), psutil.swap_memory()
    fields = point.fields
    assert fields["total_bytes"] == memory.total
    assert fields["swap_total_bytes"] == swap.total
    tolerance = 64 * 1024 * 1024  # the machine keeps running between the two reads
    assert abs(fields["available_bytes"] - memory.available) < tolerance
    assert abs(fields["swap_used_bytes"] - swap.used) < tolerance
    assert fields["used_percent"] == pytest.approx(
        100.0 * (memory.total - memory.available) / memory.total, abs=0.5)
    assert point.tags == {"host": "h"} and point.measurement == "host_memory"


def test_meminfo_without_memavailable(tmp_path):
    (tmp_path / "meminfo").write_text(
        "MemTotal:        1000 kB\nMemFree:          200 kB\nCached:           300 kB\n"
        "SwapTotal:        100 kB\nSwapFree:          40 kB\n")
    (point,) = asyncio.run(HostMemoryCollector("pi", str(tmp_path)).collect(Now(0, 0)))
    assert point.fields == {"total_bytes": 1024000, "available_bytes": 512000, "used_percent": 50.0,
                            "swap_total_bytes": 102400, "swap_used_bytes": 61440}
