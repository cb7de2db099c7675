"""Thin adapter over systemd's D-Bus API (org.freedesktop.systemd1), using dbus-fast.

It only fetches: one record per timer with the raw properties systemd returns, joined to
the unit the timer activates. Interpreting them is the collector's job.

API reference: systemd's org.freedesktop.systemd1(5). Calls are low-level messages
(no introspection), and the number in flight is bounded: with ~200+ pipelined calls
dbus-fast's socket writer raised BlockingIOError on this project's test machine.
"""

import asyncio
import os
from dataclasses import dataclass, field
from typing import Any

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
TIMER = "org.freedesktop.systemd1.Timer"
SERVICE = "org.freedesktop.systemd1.Service"
UNIT = "org.freedesktop.systemd1.Unit"
PROPERTIES = "org.freedesktop.DBus.Properties"
MAX_IN_FLIGHT = 32

# The properties the collector reads (org.freedesktop.systemd1(5)); the rest of a
# Service's ~200 properties are dropped right after GetAll so records stay small.
TIMER_PROPERTIES = (
    "Unit", "TimersMonotonic", "TimersCalendar", "NextElapseUSecRealtime",
    "NextElapseUSecMonotonic", "LastTriggerUSec", "LastTriggerUSecMonotonic", "Result",
    "Persistent", "AccuracyUSec", "RandomizedDelayUSec",
)
SERVICE_PROPERTIES = (
    "Type", "Result", "ExecMainCode", "ExecMainStatus", "ExecMainStartTimestamp",
    "ExecMainExitTimestamp", "ExecMainPID", "MemoryCurrent", "MemoryPeak",
)
_WANTED = {TIMER: TIMER_PROPERTIES, SERVICE: SERVICE_PROPERTIES}


class DBusCallError(Exception):
    def __init__(self, name: str, text: str):
        super().__init__(f"{name}: {text}" if text else name)
        self.name = name


@dataclass
class UnitRecord:
    """A unit's load/active/sub state (from ListUnits*) and one interface's properties."""
    name: str
    load_state: str
    active_state: str
    sub_state: str
    properties: dict[str, Any] = field(default_factory=dict)
    job_id: int = 0  # a queued or running job (e.g. a start waiting for After= units)


@dataclass
class TimerRecord:
    timer: UnitRecord
    service: UnitRecord | None  # None when the activated unit could not be read
    service_error: str = ""
    armed_since_us: int = 0     # the timer's ActiveEnterTimestamp


@dataclass(frozen=True)
class RunRecord:
    """One finished run of a service, as systemd announced it (ExecMain* properties)."""
    start_us: int
    exit_us: int
    code: int       # ExecMainCode
    status: int     # ExecMainStatus
    result: str     # Service Result


@dataclass
class TimersSnapshot:
    manager: str  # "system" or "user"
    timers: list[TimerRecord]
    # Runs that finished since the previous snapshot, per service, oldest first: a run
    # that starts and ends between two samples is only visible in these signals.
    runs: dict[str, list[RunRecord]] = field(default_factory=dict)


def bus_address(bus: str, environ=os.environ) -> str:
    """The D-Bus address for config `timers.bus`, resolved as sd_bus does."""
    if bus == "system":
        return environ.get("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/run/dbus/system_bus_socket")
    if bus == "user":
        if environ.get("DBUS_SESSION_BUS_ADDRESS"):
            return environ["DBUS_SESSION_BUS_ADDRESS"]
        runtime = environ.get("XDG_RUNTIME_DIR", f"/run/user/{os.getuid()}")
        return f"unix:path={runtime}/bus"
    return bus


def unit_path(name: str) -> str:
    """Object path of a unit, escaped as systemd's unit_dbus_path_from_name() does:
    every byte outside [A-Za-z0-9] (and a leading digit) becomes _xx in hex."""
    escaped = "".join(
        chr(b) if (chr(b).isascii() and chr(b).isalnum() and (i or not chr(b).isdigit()))
        else f"_{b:02x}"
        for i, b in enumerate(name.encode()))
    return f"{MANAGER_PATH}/unit/{escaped}"


def unit_name(path: str) -> str:
    """The inverse of unit_path()."""
    escaped, out, i = path.rsplit("/", 1)[-1], bytearray(), 0
    while i < len(escaped):
        if escaped[i] == "_" and i + 2 < len(escaped):
            out.append(int(escaped[i + 1:i + 3], 16))
            i += 3
        else:
            out.append(ord(escaped[i]))
            i += 1
    return out.decode(errors="replace")


def run_from(properties: dict[str, Any]) -> RunRecord | None:
    """The finished run in a Service's properties; None while running or never run."""
    exit_us = properties.get("ExecMainExitTimestamp", 0)
    if not exit_us or exit_us == 2**64 - 1 or "Result" not in properties:
        return None
    return RunRecord(properties.get("ExecMainStartTimestamp", 0), exit_us,
                     properties.get("ExecMainCode", 0), properties.get("ExecMainStatus", 0),
                     properties["Result"])


def _unwrap(value: Any) -> Any:
    if isinstance(value, Variant):
        return _unwrap(value.value)
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    return value


class SystemdBus:
    """A connection to one systemd manager. `kind` is "system" or "user"."""

    def __init__(self, bus: str, environ=os.environ):
        self.address = bus_address(bus, environ)
        self._configured = bus
        self._bus: MessageBus | None = None
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.kind = bus if bus in ("system", "user") else ""
        self._runs: dict[str, dict[int, RunRecord]] = {}
        self._watched: set[str] = set()  # services activated by timers

    async def _connection(self) -> MessageBus:
        if self._bus is None or not self._bus.connected:
            try:
                self._bus = await MessageBus(bus_address=self.address).connect()
            except (OSError, EOFError) as err:
                self._bus = None
                raise ConnectionError(f"cannot connect to D-Bus at {self.address}: {err}") from err
            if not self.kind:
                self.kind = await self._manager_kind(self._bus)
            await self._subscribe(self._bus)
        return self._bus

    async def _subscribe(self, bus: MessageBus) -> None:
        """Follow PropertiesChanged of units, on every (re)connect.

        systemd only emits unit signals to clients that called Manager.Subscribe();
        the match rule asks the bus daemon to route them to us. A Service's ExecMain*
        and Result properties are EMITS_CHANGE, so each finished run arrives with them.
        """
        bus.add_message_handler(self._on_message)
        await self._send(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                         "org.freedesktop.DBus", "AddMatch", "s",
                         [f"type='signal',sender='{SYSTEMD}',interface='{PROPERTIES}',"
                          f"member='PropertiesChanged',arg0='{SERVICE}'"])
        await self._send(bus, SYSTEMD, MANAGER_PATH, MANAGER, "Subscribe")

    def _on_message(self, message: Message) -> None:
        if (message.message_type != MessageType.SIGNAL or message.member != "PropertiesChanged"
                or not message.body or message.body[0] != SERVICE):
            return None
        name = unit_name(message.path)
        run = run_from(_unwrap(message.body[1]))
        if run and name in self._watched:
            self._runs.setdefault(name, {})[run.exit_us] = run
        return None

    async def _manager_kind(self, bus: MessageBus) -> str:
        # On a bus given by address, the manager is the system one exactly when
        # org.freedesktop.systemd1 is PID 1 (in the bus daemon's PID namespace).
        try:
            pid = await self._send(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                   "org.freedesktop.DBus", "GetConnectionUnixProcessID",
                                   "s", [SYSTEMD])
        except DBusCallError:
            return "user"
        return "system" if pid == 1 else "user"

    async def close(self) -> None:
        if self._bus is not None:
            self._bus.disconnect()
            self._bus = None

    async def _call(self, *args):
        return await self._send(await self._connection(), *args)

    async def _send(self, bus, destination, path, interface, member, signature="", body=()):
        async with self._slots:
            reply = await bus.call(Message(destination=destination, path=path,
                                           interface=interface, member=member,
                                           signature=signature, body=list(body)))
        if reply is None or reply.message_type == MessageType.ERROR:
            name = reply.error_name if reply else "NoReply"
            raise DBusCallError(name, str(reply.body[0]) if reply and reply.body else "")
        return _unwrap(reply.body[0]) if len(reply.body) == 1 else _unwrap(reply.body)

    async def _manager(self, member, signature="", body=()):
        return await self._call(SYSTEMD, MANAGER_PATH, MANAGER, member, signature, body)

    async def get_all(self, unit: str, interface: str) -> dict[str, Any]:
        return await self._call(SYSTEMD, unit_path(unit), PROPERTIES, "GetAll", "s", [interface])

    async def timer_names(self) -> list[str]:
        """Loaded timers plus installed timer unit files.

        ListUnitsByPatterns only returns units in memory; systemd garbage-collects a
        stopped timer that nothing references, so unit files are listed too, or a
        stopped backup timer would simply vanish from the data. Templates (x@.timer)
        are not units and are skipped.
        """
        loaded = await self._manager("ListUnitsByPatterns", "asas", [[], ["*.timer"]])
        files = await self._manager("ListUnitFilesByPatterns", "asas", [[], ["*.timer"]])
        names = {row[0] for row in loaded}
        names.update(os.path.basename(path) for path, _state in files)
        return sorted(name for name in names if not name.endswith("@.timer"))

    async def units_by_name(self, names: list[str]) -> dict[str, UnitRecord]:
        # ListUnitsByNames loads units that are not in memory, so a stopped timer or a
        # never-run service still gets its real load/active/sub state.
        rows = await self._manager("ListUnitsByNames", "as", [names]) if names else []
        return {row[0]: UnitRecord(row[0], row[2], row[3], row[4], job_id=row[7]) for row in rows}

    async def read_timers(self) -> TimersSnapshot:
        await self._connection()
        units = await self.units_by_name(await self.timer_names())
        timers = [u for u in units.values() if u.load_state == "loaded"]
        await asyncio.gather(*(self._fill(u, TIMER) for u in timers))
        timers = [u for u in timers if u.properties]  # vanished while we read
        armed = await asyncio.gather(*(self._armed_since(t.name) for t in timers))
        services = await self.units_by_name(sorted({t.properties["Unit"] for t in timers}))
        self._watched = set(services)
        errors = await asyncio.gather(*(self._fill(s, SERVICE) for s in services.values()))
        error_of = dict(zip(services, errors))
        records = []
        for timer, armed_since in zip(timers, armed):
            name = timer.properties["Unit"]
            service = services.get(name)
            error = error_of.get(name) or ("" if service else f"{name}: not found")
            records.append(TimerRecord(timer, None if error else service, error, armed_since))
        runs = {name: [by_exit[k] for k in sorted(by_exit)] for name, by_exit in self._runs.items()}
        self._runs = {}
        return TimersSnapshot(self.kind, records, runs)

    async def _armed_since(self, timer: str) -> int:
        try:
            return await self._call(SYSTEMD, unit_path(timer), PROPERTIES, "Get", "ss",
                                    [UNIT, "ActiveEnterTimestamp"])
        except DBusCallError:
            return 0

    async def _fill(self, unit: UnitRecord, interface: str) -> str:
        """Read `interface`'s properties into unit; the error text when that fails."""
        try:
            found = await self.get_all(unit.name, interface)
            unit.properties = {k: found[k] for k in _WANTED[interface] if k in found}
        except DBusCallError as err:
            return str(err)
        return ""
