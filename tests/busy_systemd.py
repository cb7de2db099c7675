"""Keeps a systemd manager busy, as a host with many unit files or a slow CPU keeps PID 1:

    python -m tests.busy_systemd BUS_ADDRESS

calls ListUnitFilesByPatterns([], []) (systemd scans its unit directories and looks up
every file's enablement) on one connection until killed, two calls in flight, for 1.5
to 2.5 s (at random, so the load keeps no phase with 5-second timers), then pauses for
PAUSE_S. Prints "busy" once the first call was answered.

systemd handles one D-Bus message at a time, so with a second call queued behind the one
in progress, every other client's call waits for a whole listing, each round trip. The
pauses let systemd go idle: it starts queued jobs (the timers' services) only then, from
its run queue, an SD_EVENT_PRIORITY_IDLE event source (src/core/manager.c); a manager
never idle triggers timers but starts nothing. A process of its own, so the load does
not depend on who else holds the test's GIL.
"""

import asyncio
import random
import sys
import time

from dbus_fast import Message
from dbus_fast.aio import MessageBus

from exporter.sources.systemd_dbus import MANAGER, MANAGER_PATH, SYSTEMD

IN_FLIGHT, PAUSE_S = 2, 0.5


async def keep_busy(address: str) -> None:
    bus = await MessageBus(bus_address=address).connect()

    async def list_unit_files() -> None:
        await bus.call(Message(destination=SYSTEMD, path=MANAGER_PATH, interface=MANAGER,
                               member="ListUnitFilesByPatterns", signature="asas", body=[[], []]))

    async def caller(until: float) -> None:
        while time.monotonic() < until:
            await list_unit_files()

    await list_unit_files()
    print("busy", flush=True)
    while True:
        until = time.monotonic() + random.uniform(1.5, 2.5)
        await asyncio.gather(*(caller(until) for _ in range(IN_FLIGHT)))
        await asyncio.sleep(PAUSE_S)


if __name__ == "__main__":
    asyncio.run(keep_busy(sys.argv[1]))
