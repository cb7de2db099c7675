"""Why the system bus did not answer, when the reason is the host itself: PID 1 is not
systemd (a container, WSL, a minimal init), so there is no system manager to ask about
timers. When a user manager answers on the user's bus, that is where the timers are:
`timers.bus = "user"`.

systemd's manager registers org.freedesktop.systemd1 on the bus it connects to; a user
manager (`systemd --user`) does so on $DBUS_SESSION_BUS_ADDRESS, else
$XDG_RUNTIME_DIR/bus (sd_bus_open_user, as bus_address("user") resolves it).
"""

import asyncio
import os

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

ANSWER_TIMEOUT_S = 2.0


def pid1_name(proc_root: str = "/proc") -> str:
    """The command name of PID 1 in this PID namespace ("" when unreadable)."""
    try:
        with open(os.path.join(proc_root, "1", "comm"), encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return ""


async def manager_answers(address: str) -> bool:
    """True when a systemd manager answers a property read at this D-Bus address."""
    bus = None
    try:
        bus = await asyncio.wait_for(MessageBus(bus_address=address).connect(), ANSWER_TIMEOUT_S)
        reply = await asyncio.wait_for(bus.call(Message(
            destination="org.freedesktop.systemd1", path="/org/freedesktop/systemd1",
            interface="org.freedesktop.DBus.Properties", member="Get", signature="ss",
            body=["org.freedesktop.systemd1.Manager", "Version"])), ANSWER_TIMEOUT_S)
        return reply.message_type == MessageType.METHOD_RETURN
    except Exception:  # refused, no such socket, auth rejected, timeout, an error reply: "no"
        return False
    finally:
        if bus is not None:
            bus.disconnect()


async def system_bus_hint(environ=os.environ, proc_root: str = "/proc") -> str:
    """"" on a systemd host; else what to do instead, for an error message or a finding."""
    init = pid1_name(proc_root)
    if not init or init == "systemd":
        return ""
    from .systemd_dbus import bus_address
    hint = (f'PID 1 here is "{init}", not systemd: no system manager runs in this PID '
            f'namespace (timers.bus = "system" needs the host\'s bus socket mounted in)')
    user = bus_address("user", environ)
    if await manager_answers(user):
        hint += f'; a user manager answers at {user}: set timers.bus = "user" (TICK_EXPORTER_TIMERS_BUS=user)'
    return hint
