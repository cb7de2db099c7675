"""Record a live systemd manager's timer properties as JSON, and load such recordings.

Golden tests feed recordings to the pure collector functions with the recorded clock:
    python -m tests.timers_recording unix:path=/run/user/0/bus > tests/golden/timers/NAME.json
"""

import asyncio
import json
import sys
from dataclasses import asdict

from exporter.clock import Now
from exporter.sources.systemd_dbus import SystemdBus, TimerRecord, TimersSnapshot, UnitRecord


def dumps(snapshot: TimersSnapshot, now: Now) -> str:
    return json.dumps({"now": asdict(now), "manager": snapshot.manager,
                       "timers": [asdict(t) for t in snapshot.timers]}, indent=1, sort_keys=True)


def loads(text: str) -> tuple[TimersSnapshot, Now]:
    data = json.loads(text)
    timers = [TimerRecord(UnitRecord(**t["timer"]),
                          UnitRecord(**t["service"]) if t["service"] else None,
                          t.get("service_error", ""))
              for t in data["timers"]]
    return TimersSnapshot(data["manager"], timers), Now(**data["now"])


async def record(bus: str) -> str:
    source = SystemdBus(bus)
    try:
        snapshot = await source.read_timers()
        return dumps(snapshot, Now.read())
    finally:
        await source.close()


if __name__ == "__main__":
    print(asyncio.run(record(sys.argv[1])))
