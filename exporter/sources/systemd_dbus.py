"""Thin adapter over systemd's D-Bus API (org.freedesktop.systemd1), using dbus-fast.

It only fetches: one record per timer with the raw properties systemd returns, joined to
the unit the timer activates. Interpreting them is the collector's job.

Reads are event-driven (issue 9). The first read is a full one (every timer and the
service it starts); after it the records are kept, and systemd's signals (we call
Manager.Subscribe()) say which units changed: PropertiesChanged of a unit, UnitNew /
UnitRemoved, UnitFilesChanged (list the timers again), Reloading (daemon-reload: read
everything again). A sample re-reads only those units, plus the properties systemd
never signals (MemoryCurrent, MemoryPeak) of the services that are running. A full
read is done again on every (re)connect and every `resync_interval` seconds, to heal
what no signal announces (a unit file written without a daemon-reload).

API reference: systemd's org.freedesktop.systemd1(5). Calls are low-level messages
(no introspection), and the number in flight is bounded: with ~200+ pipelined calls
dbus-fast's socket writer raised BlockingIOError on this project's test machine.
"""

import asyncio
import logging
import os
import time
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
# A Service's properties are read one Get each: GetAll marshals all ~200 of them (the
# cgroup ones read cgroupfs), twice the cost of these few Gets for systemd and for us.
SERVICE_PROPERTIES = (
    "Result", "ExecMainCode", "ExecMainStatus", "ExecMainStartTimestamp",
    "ExecMainExitTimestamp", "ExecMainPID", "MemoryPeak",
)
# Which journal entries are a run's (exporter.sources.journal): the Unit's InvocationID,
# EMITS_CHANGE like ExecMainPID, so each run's arrives in the signals too.
INVOCATION_ID = "InvocationID"
# Service properties systemd never announces in PropertiesChanged (no EMITS_CHANGE flag
# in its dbus-cgroup.c vtable): read again on every sample while the service runs.
# MemoryCurrent only matters then, so it is only read then (in a full read too).
UNSIGNALED_SERVICE_PROPERTIES = ("MemoryCurrent", "MemoryPeak")
OPTIONAL_SERVICE_PROPERTIES = {"MemoryPeak"}  # systemd >= 254
UNKNOWN_PROPERTY = "org.freedesktop.DBus.Error.UnknownProperty"
UNIT_PATH_PREFIX = MANAGER_PATH + "/unit/"
log = logging.getLogger("tick_exporter.systemd")

# Service ActiveStates that mean the job is in progress. A oneshot service is
# "activating" for its whole run; a simple service is "active"/"running".
RUNNING_STATES = {"activating", "deactivating", "reloading"}


def is_running(service_active_state: str, service_sub_state: str) -> bool:
    return service_active_state in RUNNING_STATES or (
        service_active_state == "active" and service_sub_state == "running")


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
    main_pid: int = 0        # ExecMainPID (kept by systemd after the exit)
    invocation_id: str = ""  # the Unit's InvocationID during the run, hex; "" unknown


@dataclass
class ReadStats:
    """What SystemdBus.read_timers did so far (for tests and benchmarks)."""
    full_reads: int = 0
    refreshes: int = 0
    units_read: int = 0        # timers and services read whole (GetAll)
    unsignaled_reads: int = 0  # running services whose MemoryCurrent/MemoryPeak were read


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


def run_from(properties: dict[str, Any], invocation_id: str = "") -> RunRecord | None:
    """The finished run in a Service's properties; None while running or never run."""
    exit_us = properties.get("ExecMainExitTimestamp", 0)
    if not exit_us or exit_us == 2**64 - 1 or "Result" not in properties:
        return None
    return RunRecord(properties.get("ExecMainStartTimestamp", 0), exit_us,
                     properties.get("ExecMainCode", 0), properties.get("ExecMainStatus", 0),
                     properties["Result"], properties.get("ExecMainPID", 0),
                     invocation_id or properties.get(INVOCATION_ID, ""))


def invocation_hex(value: Any) -> str:
    """InvocationID ("ay", 16 bytes; empty when the unit never started) as journald
    writes _SYSTEMD_INVOCATION_ID: 32 lowercase hex digits."""
    return bytes(value).hex() if value else ""


# What a socket write fails with once the daemon is gone or dbus-fast has closed the
# socket (EPIPE, ECONNRESET, EBADF): all OSError.
_ORPHANED_WRITE_ERRORS = (OSError,)


def _quiet_orphaned_write_errors(loop: asyncio.AbstractEventLoop) -> None:
    """When the bus daemon goes away with calls in flight, dbus-fast (5.x) sets the
    socket error on the future of each message it was writing, a future its own
    BaseMessageBus._call() discards (it keeps only the reply handler). asyncio then
    logs "Future exception was never retrieved" with a traceback per call. Every call's
    own reply fails with the same error through _finalize(), and that one is reported
    (the collector's one line per failed sample), so these orphans carry nothing new:
    logged at debug level. Any other unretrieved exception keeps the loop's handler."""
    previous = loop.get_exception_handler()
    if getattr(previous, "quiets_orphaned_writes", False):
        return

    def handler(loop, context):
        if (context.get("message", "").startswith("Future exception was never retrieved")
                and isinstance(context.get("exception"), _ORPHANED_WRITE_ERRORS)):
            log.debug("D-Bus write failed on a connection being torn down: %s",
                      context["exception"])
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    handler.quiets_orphaned_writes = True
    loop.set_exception_handler(handler)


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
        # A service's InvocationID as last signalled: systemd sends the Service's
        # PropertiesChanged before the Unit's (bus_unit_send_change_signal), so when a
        # run's exit arrives this is still that run's ID; the next start replaces it.
        self._invocations: dict[str, str] = {}
        self._watched: set[str] = set()  # services activated by timers
        # The cache (see the module docstring): the timers listed, the loaded ones with
        # their properties, and the services they start (or why one could not be read).
        self._listed: set[str] = set()
        self._timers: dict[str, UnitRecord] = {}
        self._armed: dict[str, int] = {}
        self._services: dict[str, UnitRecord] = {}
        self._service_errors: dict[str, str] = {}
        self._dirty: set[str] = set()   # units a signal said changed since they were read
        self._freed: set[str] = set()   # ... of which systemd garbage-collected
        self._settled: set[str] = set()  # see _loaded_or_freed()
        self._relist = False            # unit files changed: list the timers again
        self._appeared: set[str] = set()  # timers systemd loaded that were not listed
        self._synced_at: float | None = None  # time.monotonic() of the last full read
        self.stats = ReadStats()
        self._unsupported: set[str] = set()  # optional properties this systemd lacks

    async def _connection(self) -> MessageBus:
        if self._bus is None or not self._bus.connected:
            _quiet_orphaned_write_errors(asyncio.get_running_loop())
            try:
                self._bus = await MessageBus(bus_address=self.address).connect()
            except (OSError, EOFError) as err:
                self._bus = None
                raise ConnectionError(f"cannot connect to D-Bus at {self.address}: {err}") from err
            if not self.kind:
                self.kind = await self._manager_kind(self._bus)
            self._synced_at = None  # signals may have been missed while disconnected
            self._invocations = {}
            await self._subscribe(self._bus)
        return self._bus

    async def _subscribe(self, bus: MessageBus) -> None:
        """Follow systemd's unit and manager signals, on every (re)connect.

        systemd only emits unit signals to clients that called Manager.Subscribe();
        the match rules ask the bus daemon to route them to us. A Service's ExecMain*
        and Result properties are EMITS_CHANGE, so each finished run arrives with them.
        """
        bus.add_message_handler(self._on_message)
        for rule in (f"type='signal',sender='{SYSTEMD}',interface='{PROPERTIES}',"
                     f"member='PropertiesChanged',path_namespace='{MANAGER_PATH}/unit'",
                     f"type='signal',sender='{SYSTEMD}',interface='{MANAGER}',"
                     f"path='{MANAGER_PATH}'"):
            await self._send(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                             "org.freedesktop.DBus", "AddMatch", "s", [rule])
        await self._send(bus, SYSTEMD, MANAGER_PATH, MANAGER, "Subscribe")

    def _on_message(self, message: Message) -> None:
        if message.message_type != MessageType.SIGNAL or not message.body:
            return None
        member = message.member
        if member == "PropertiesChanged" and message.path.startswith(UNIT_PATH_PREFIX):
            name = unit_name(message.path)
            self._changed(name)
            if message.body[0] == SERVICE and name in self._watched:
                run = run_from(_unwrap(message.body[1]), self._invocation_of(name))
                if run:
                    self._runs.setdefault(name, {})[run.exit_us] = run
            elif (message.body[0] == UNIT and name in self._watched
                  and INVOCATION_ID in message.body[1]):
                self._invocations[name] = invocation_hex(_unwrap(message.body[1][INVOCATION_ID]))
        elif message.interface != MANAGER:
            return None
        elif member in ("UnitNew", "UnitRemoved"):
            self._loaded_or_freed(member, message.body[0])
        elif member == "UnitFilesChanged":  # enable, disable, link, mask...
            # Listing unit files is the dearest call there is (systemd looks up every
            # file's enablement: timers x files), so only when they changed.
            self._relist = True
        elif member == "Reloading":  # daemon-reload: any property may have changed
            self._synced_at = None
        return None

    def _invocation_of(self, name: str) -> str:
        if name in self._invocations:
            return self._invocations[name]
        service = self._services.get(name)
        return service.properties.get(INVOCATION_ID, "") if service else ""

    def _changed(self, name: str) -> None:
        self._settled.discard(name)
        if name in self._listed or name in self._services:
            self._dirty.add(name)

    def _loaded_or_freed(self, member: str, name: str) -> None:
        """UnitNew / UnitRemoved. systemd frees (garbage-collects) an inactive unit that
        nothing needs, and it forgets the unit's runtime state (a non-persistent timer's
        LastTriggerUSec, a service's last ExecMain*): such a unit is read again. But our
        own read loads it back, and it is freed again: a unit whose record came out the
        same after being freed is "settled", and its load/free cycle is ignored until a
        PropertiesChanged says it did something."""
        if name in self._settled:
            return
        tracked = name in self._listed or name in self._services
        if tracked:
            self._dirty.add(name)
            if member == "UnitRemoved":
                self._freed.add(name)
        elif name.endswith(".timer") and member == "UnitNew":
            self._appeared.add(name)  # a timer loaded for the first time, or transient

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

    async def read_timers(self, resync_interval: float = 0) -> TimersSnapshot:
        """Every timer and the service it starts. With resync_interval > 0 the records
        of the previous read are kept and only what changed since is read again; a full
        read happens at least every resync_interval seconds (and after a reconnect or a
        daemon-reload). 0: a full read each time."""
        await self._connection()
        try:
            if (resync_interval <= 0 or self._synced_at is None
                    or time.monotonic() - self._synced_at >= resync_interval):
                await self._full_read()
            else:
                await self._refresh()
        except (OSError, EOFError) as err:
            # The bus daemon or the manager went away with calls in flight (dbus-fast
            # fails them with the socket's error): one clear reason, and the next
            # sample connects again.
            self._synced_at = None
            reason = getattr(err, "strerror", None) or str(err) or "the bus closed the connection"
            raise ConnectionError(f"lost the D-Bus connection to {self.address} ({reason}); "
                                  "reconnecting at the next sample") from err
        except BaseException:
            self._synced_at = None  # what changed may be half read: start afresh
            raise
        runs = {name: [by_exit[k] for k in sorted(by_exit)] for name, by_exit in self._runs.items()}
        self._runs = {}
        return TimersSnapshot(self.kind, self._records(), runs)

    def _records(self) -> list[TimerRecord]:
        records = []
        for name in sorted(self._timers):
            timer = self._timers[name]
            unit = timer.properties["Unit"]
            service = self._services.get(unit)
            error = self._service_errors.get(unit) or ("" if service else f"{unit}: not found")
            records.append(TimerRecord(timer, None if error else service, error,
                                       self._armed.get(name, 0)))
        return records

    async def _full_read(self) -> None:
        self.stats.full_reads += 1
        # Cleared before reading: a signal that arrives during the read marks its unit
        # for the next sample, so nothing is lost to the race.
        self._dirty, self._relist, self._synced_at = set(), False, time.monotonic()
        self._freed, self._settled, self._appeared = set(), set(), set()
        names = await self.timer_names()
        self._listed = set(names)
        self._timers, self._armed = {}, {}
        await self._read_timer_units(names)
        self._services, self._service_errors = {}, {}
        await self._read_services(sorted({t.properties["Unit"] for t in self._timers.values()}))
        self._watched = set(self._services)

    async def _refresh(self) -> None:
        """Re-read what signals said changed, and the running services' unsignaled
        properties. Ends with the same records a full read would give."""
        self.stats.refreshes += 1
        # A round trip to systemd first: it flushes its signal queue before it answers
        # any call, so every signal for a change made before now has been handled.
        await self._call(SYSTEMD, MANAGER_PATH, "org.freedesktop.DBus.Peer", "Ping")
        dirty, self._dirty = self._dirty, set()
        freed, self._freed = self._freed, set()
        relist, self._relist = self._relist, False
        appeared, self._appeared = self._appeared, set()
        before = {name: self._record_of(name) for name in freed}
        new = {name for name in appeared if not name.endswith("@.timer")} - self._listed
        if relist:
            names = set(await self.timer_names())
            new |= names - self._listed
            for gone in self._listed - names - new:
                self._timers.pop(gone, None)
                self._armed.pop(gone, None)
            self._listed = names
        self._listed |= new
        await self._read_timer_units(sorted(n for n in self._listed if n in dirty or n in new))
        wanted = {t.properties["Unit"] for t in self._timers.values()}
        for gone in set(self._services) - wanted:
            del self._services[gone]
            self._service_errors.pop(gone, None)
        stale = sorted(n for n in wanted if n in dirty or n not in self._services)
        await self._read_services(stale)
        self._watched = set(self._services)
        fresh = set(stale)
        running = [s for name, s in self._services.items() if name not in fresh
                   and not self._service_errors.get(name)
                   and is_running(s.active_state, s.sub_state)]
        await asyncio.gather(*(self._read_unsignaled(s) for s in running))
        self._settled.update(name for name, record in before.items()
                             if record is not None and record == self._record_of(name))

    def _record_of(self, name: str):
        """What the cache holds for a unit, for comparing before and after a re-read."""
        if name in self._timers:
            timer = self._timers[name]
            return ("timer", timer.load_state, timer.active_state, timer.sub_state, timer.job_id,
                    dict(timer.properties), self._armed.get(name, 0))
        if name in self._services:
            service = self._services[name]
            properties = {k: v for k, v in service.properties.items()
                          if k not in UNSIGNALED_SERVICE_PROPERTIES}
            return ("service", service.load_state, service.active_state, service.sub_state,
                    service.job_id, properties, self._service_errors.get(name, ""))
        return ("absent",)  # listed, but not loaded: not-found, masked...

    async def _read_timer_units(self, names: list[str]) -> None:
        """(Re-)read these timers into the cache; one not loaded (any more) leaves it."""
        self.stats.units_read += len(names)
        units = await self.units_by_name(names)
        for name in names:
            self._timers.pop(name, None)
            self._armed.pop(name, None)
        timers = [u for u in units.values() if u.load_state == "loaded"]
        await asyncio.gather(*(self._fill(u, TIMER) for u in timers))
        timers = [u for u in timers if u.properties]  # vanished while we read
        armed = await asyncio.gather(*(self._armed_since(t.name) for t in timers))
        for timer, armed_since in zip(timers, armed):
            self._timers[timer.name] = timer
            self._armed[timer.name] = armed_since

    async def _read_services(self, names: list[str]) -> None:
        self.stats.units_read += len(names)
        services = await self.units_by_name(names)
        for name in names:
            self._services.pop(name, None)
            self._service_errors.pop(name, None)
        errors = await asyncio.gather(*(self._fill(s, SERVICE) for s in services.values()))
        self._services.update(services)
        self._service_errors.update((n, e) for n, e in zip(services, errors) if e)

    async def _read_unsignaled(self, service: UnitRecord) -> None:
        self.stats.unsignaled_reads += 1
        path = unit_path(service.name)
        for prop in UNSIGNALED_SERVICE_PROPERTIES:
            if prop in self._unsupported:
                continue
            try:
                service.properties[prop] = await self._get(path, SERVICE, prop)
            except DBusCallError:
                self._dirty.add(service.name)  # read it whole next time
                return

    async def _armed_since(self, timer: str) -> int:
        try:
            return await self._call(SYSTEMD, unit_path(timer), PROPERTIES, "Get", "ss",
                                    [UNIT, "ActiveEnterTimestamp"])
        except DBusCallError:
            return 0

    async def _fill(self, unit: UnitRecord, interface: str) -> str:
        """Read `interface`'s properties into unit; the error text when that fails."""
        if interface == SERVICE:
            return await self._fill_service(unit)
        try:
            found = await self.get_all(unit.name, interface)
            unit.properties = {k: found[k] for k in TIMER_PROPERTIES if k in found}
        except DBusCallError as err:
            return str(err)
        return ""

    async def _fill_service(self, unit: UnitRecord) -> str:
        wanted = [p for p in SERVICE_PROPERTIES if p not in self._unsupported]
        if is_running(unit.active_state, unit.sub_state):
            wanted.append("MemoryCurrent")
        path = unit_path(unit.name)
        values = await asyncio.gather(*(self._get(path, SERVICE, p) for p in wanted),
                                      self._get(path, UNIT, INVOCATION_ID),
                                      return_exceptions=True)
        invocation = values.pop()
        properties, missing = {}, []
        for prop, value in zip(wanted, values):
            if isinstance(value, DBusCallError):
                if prop in OPTIONAL_SERVICE_PROPERTIES and value.name == UNKNOWN_PROPERTY:
                    missing.append(prop)
                    continue
                return str(value)
            if isinstance(value, BaseException):
                raise value
            properties[prop] = value
        self._unsupported.update(missing)  # this systemd is older: never ask again
        if not isinstance(invocation, BaseException):
            properties[INVOCATION_ID] = invocation_hex(invocation)
        unit.properties = properties
        return ""

    async def _get(self, path: str, interface: str, prop: str):
        return await self._call(SYSTEMD, path, PROPERTIES, "Get", "ss", [interface, prop])
