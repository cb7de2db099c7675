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
import re
import time
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Any, Callable, Iterable

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
# As sd-bus's default method call timeout (SD_BUS_DEFAULT_TIMEOUT, 25 s).
CALL_TIMEOUT_S = 25.0

# The properties the collector reads (org.freedesktop.systemd1(5)); the rest of a
# Service's ~200 properties are dropped right after GetAll so records stay small.
TIMER_PROPERTIES = (
    "Unit", "TimersMonotonic", "TimersCalendar", "NextElapseUSecRealtime",
    "NextElapseUSecMonotonic", "LastTriggerUSec", "LastTriggerUSecMonotonic", "Result",
    "Persistent", "AccuracyUSec", "RandomizedDelayUSec",
)
# The timer's Unit properties that say whether a stopped timer is a problem
# (exporter.timer_health.expects_armed): enabled by someone, whose unit file, skipped by
# its own Condition*=. UnitFileState changes arrive as UnitFilesChanged.
TIMER_UNIT_PROPERTIES = ("UnitFileState", "FragmentPath", "ConditionResult", "ConditionTimestamp")
# Of those, what an active timer is asked: it was not skipped. unit_start() (src/core/
# unit.c) returns -EALREADY for an active unit before unit_test_condition(), so the last
# test of an active timer's conditions passed: two messages fewer per timer, which is
# what a full read costs systemd (~10 us of its CPU a message, whatever it asks).
ACTIVE_TIMER_UNIT_PROPERTIES = ("UnitFileState", "FragmentPath")
# A Service's properties are read one Get each: GetAll marshals all ~200 of them (the
# cgroup ones read cgroupfs), twice the cost of these few Gets for systemd and for us.
SERVICE_PROPERTIES = (
    "Result", "ExecMainCode", "ExecMainStatus", "ExecMainStartTimestamp",
    "ExecMainExitTimestamp", "ExecMainPID", "MemoryPeak",
)
# What a service not started since systemd loaded it has as 0 (exec_status_start() sets
# them at a run's start; see _fill_service).
ZERO_UNTIL_STARTED = ("ExecMainCode", "ExecMainStatus", "ExecMainStartTimestamp",
                      "ExecMainExitTimestamp", "ExecMainPID")
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

# What unit_name_is_valid() accepts for a timer (systemd's unit-name.c: letters, digits
# and ":-_.\\", "@" before an instance, at most 255 bytes): a file in a unit directory
# with another name is not a unit and is skipped, as systemd skips it.
TIMER_NAME = re.compile(r"[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]*)?\.timer")
TIMER_SUFFIX = ".timer"

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


@lru_cache(maxsize=4096)  # a running service's path is asked for every sample
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


def never_ran(service: UnitRecord) -> bool:
    """The service's record is the one systemd gives it when it loads it from its file:
    inactive, no job, no run (ExecMain* unset), Result "success"."""
    props = service.properties
    return (service.active_state == "inactive" and not service.job_id
            and props.get("Result") == "success" and not any(props.get(p) for p in (
                "ExecMainCode", "ExecMainStatus", "ExecMainStartTimestamp", "ExecMainExitTimestamp")))


def _glob_tokens(glob: str) -> list[str]:
    """A glob split as Python's fnmatch.translate() splits it: "*", "?", a bracket
    expression "[...]" (an unclosed "[" is a literal), or one literal character."""
    tokens, i = [], 0
    while i < len(glob):
        char = glob[i]
        if char == "[":
            j = i + 1
            if j < len(glob) and glob[j] == "!":
                j += 1
            if j < len(glob) and glob[j] == "]":
                j += 1
            while j < len(glob) and glob[j] != "]":
                j += 1
            if j < len(glob):
                tokens.append(glob[i:j + 1])
                i = j + 1
                continue
        tokens.append(char)
        i += 1
    return tokens


# A bracket systemd's fnmatch() reads as Python's fnmatchcase() does: "[" "!"? then
# letters, digits and "_.:@" with ranges inside one of a-z, A-Z, 0-9 (glibc orders other
# ranges by the locale's collation; "[^" negates there but not in Python).
_SAME_BRACKET = re.compile(r"\[!?(?:[a-z]-[a-z]|[A-Z]-[A-Z]|[0-9]-[0-9]|[A-Za-z0-9_.:@])+\]")


def _systemd_token(token: str) -> str:
    """The token as a pattern for systemd's fnmatch(3), matching at least what
    fnmatchcase matches: a bracket systemd could read differently, and a backslash (a
    literal for Python; for systemd too, FNM_NOESCAPE, but not worth trusting), become "?"."""
    if len(token) > 1:
        valid = _SAME_BRACKET.fullmatch(token) and all(
            a <= b for a, b in re.findall(r"(.)-(.)", token.lstrip("[!")))
        return token if valid else "?"
    return "?" if token in ("\\", "[") else token


def timer_patterns(include: Iterable[str]) -> list[str]:
    """Patterns for ListUnitsByPatterns / ListUnitFilesByPatterns (systemd matches them
    with fnmatch(3)) that match every timer an `include` glob matches (fnmatchcase), and
    as few other units as a glob can say: "backup*" becomes "backup*.timer". Whatever
    they let through is filtered again by name (exactly) before any per-unit call."""
    patterns = []
    for glob in include:
        tokens = _glob_tokens(glob)
        stem = tokens
        while stem and stem[-1] == "*":
            stem = stem[:-1]
        # "<stem>*" matches the same timers as "<stem>*.timer" unless the stem's match
        # can end inside the ".timer" itself, i.e. its last token matches one of
        # ".timer"'s characters ("a.t*" matches "a.timer"); then it is sent as it is.
        if len(stem) < len(tokens) and not (stem and any(fnmatchcase(c, stem[-1]) for c in TIMER_SUFFIX)):
            tokens = stem + ["*", *TIMER_SUFFIX]
        pattern = "".join(_systemd_token(t) for t in tokens)
        if pattern not in patterns:
            patterns.append(pattern)
    return patterns


async def each(fn, items: list, workers: int = MAX_IN_FLIGHT) -> list:
    """[await fn(item) for item in items], `workers` units at a time, in order. Gathering
    every unit at once made a coroutine and a task per unit and per call (~7000 at 1000
    timers: the peak of a full read's memory), while only MAX_IN_FLIGHT calls are ever on
    the wire. The first exception is raised, and the other workers are cancelled: a
    sample that failed half way reads nothing more (the next one reads afresh)."""
    results: list = [None] * len(items)
    todo = iter(enumerate(items))

    async def worker():
        for i, item in todo:
            results[i] = await fn(item)

    tasks = [asyncio.ensure_future(worker()) for _ in range(min(workers, len(items)))]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        raise
    return results


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

    def __init__(self, bus: str, environ=os.environ, include: Iterable[str] = ("*",),
                 wants: Callable[[str], bool] = lambda name: True, proc_root: str = "/proc"):
        """include: globs on timer names, sent to systemd as patterns (timer_patterns);
        wants(name): the exact filter (TimersConfig.wants, exclude globs included),
        applied to every name before any call about that unit, so a timer the agent does
        not report, and the service it starts, are never loaded or read. proc_root: where
        the manager's process is visible, to read its unit directories (_unit_files)."""
        self._include = list(include)
        self._patterns = timer_patterns(self._include)
        self._wants = wants
        self._proc_root = proc_root
        self._manager_root: str | None = None  # "<proc_root>/<manager PID>/root" or ""
        self.address = bus_address(bus, environ)
        self._configured = bus
        self._environ = environ
        self._system_hint: str | None = None  # see _connection
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
        self._records_made: list[TimerRecord] | None = None  # see _records()
        self._kept: dict[str, Any] = {}  # see _derived()
        self._services: dict[str, UnitRecord] = {}
        self._service_errors: dict[str, str] = {}
        self._dirty: set[str] = set()   # units a signal said changed since they were read
        self._freed: set[str] = set()   # ... of which systemd garbage-collected
        self._settled: set[str] = set()  # see _loaded_or_freed()
        self._signalled: set[str] = set()  # units with a PropertiesChanged during a full read
        self._relist = False            # unit files changed: list the timers again
        self._appeared: set[str] = set()  # timers systemd loaded that were not listed
        self._synced_at: float | None = None  # time.monotonic() of the last full read
        self.stats = ReadStats()
        self._unsupported: set[str] = set()  # optional properties this systemd lacks

    async def _connection(self) -> MessageBus:
        if self._bus is None or not self._bus.connected:
            _quiet_orphaned_write_errors(asyncio.get_running_loop())
            try:
                self._bus = await asyncio.wait_for(
                    MessageBus(bus_address=self.address).connect(), CALL_TIMEOUT_S)
            except (OSError, EOFError) as err:
                self._bus = None
                hint = ""
                if self._configured == "system":
                    # Worked out at the first failure only: it asks the user's bus, which
                    # must not cost every later sample up to its timeout again.
                    if self._system_hint is None:
                        from .bus_hint import system_bus_hint
                        self._system_hint = await system_bus_hint(self._environ)
                    hint = self._system_hint
                raise ConnectionError(f"cannot connect to D-Bus at {self.address}: {err}"
                                      + (f"; {hint}" if hint else "")) from err
            if not self.kind:
                self.kind = await self._manager_kind(self._bus)
            self._manager_root = None  # (the manager may have been restarted)
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
        self._signalled.add(name)
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
        elif member == "UnitNew" and self._reported(name):
            self._appeared.add(name)  # a timer loaded for the first time, or transient

    async def _manager_pid(self, bus: MessageBus) -> int:
        """The manager's PID in the bus daemon's PID namespace; 0 when not told."""
        try:
            return await self._send(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                    "org.freedesktop.DBus", "GetConnectionUnixProcessID",
                                    "s", [SYSTEMD])
        except DBusCallError:
            return 0

    async def _manager_kind(self, bus: MessageBus) -> str:
        # On a bus given by address, the manager is the system one exactly when
        # org.freedesktop.systemd1 is PID 1 (in the bus daemon's PID namespace).
        return "system" if await self._manager_pid(bus) == 1 else "user"

    async def close(self) -> None:
        if self._bus is not None:
            self._bus.disconnect()
            self._bus = None

    async def _call(self, *args):
        return await self._send(await self._connection(), *args)

    async def _send(self, bus, destination, path, interface, member, signature="", body=()):
        async with self._slots:
            try:
                # asyncio.timeout, not wait_for: wait_for wraps the call in a task of its
                # own, thousands of them in a full read.
                async with asyncio.timeout(CALL_TIMEOUT_S):
                    reply = await bus.call(Message(
                        destination=destination, path=path, interface=interface, member=member,
                        signature=signature, body=list(body)))
            except TimeoutError:
                # A call whose reply never comes (a bus daemon restarted under it) must not
                # hold the sample, nor SIGTERM, forever: the next sample connects again.
                bus.disconnect()
                raise ConnectionError(f"no answer from {destination} to {member} within "
                                      f"{CALL_TIMEOUT_S:g} s") from None
        if reply is None or reply.message_type == MessageType.ERROR:
            name = reply.error_name if reply else "NoReply"
            raise DBusCallError(name, str(reply.body[0]) if reply and reply.body else "")
        return _unwrap(reply.body[0]) if len(reply.body) == 1 else _unwrap(reply.body)

    async def _manager(self, member, signature="", body=()):
        return await self._call(SYSTEMD, MANAGER_PATH, MANAGER, member, signature, body)

    async def manager_environment(self) -> list[str]:
        """The manager's `Environment` (KEY=VALUE): for a user manager, the environment
        it started with (plus set-environment); where a TZ there comes from."""
        return await self._call(SYSTEMD, MANAGER_PATH, PROPERTIES, "Get", "ss",
                                [MANAGER, "Environment"])

    async def manager_pid(self) -> int:
        """The PID owning org.freedesktop.systemd1 on this bus (in the bus daemon's PID
        namespace: the agent's own with compose's `pid: host`). 0 when unknown."""
        try:
            return await self._call("org.freedesktop.DBus", "/org/freedesktop/DBus",
                                    "org.freedesktop.DBus", "GetConnectionUnixProcessID",
                                    "s", [SYSTEMD])
        except DBusCallError:
            return 0

    async def get_all(self, unit: str, interface: str) -> dict[str, Any]:
        return await self._call(SYSTEMD, unit_path(unit), PROPERTIES, "GetAll", "s", [interface])

    def _reported(self, name: str) -> bool:
        """A timer the agent reports: a valid timer name (no template) that `wants`."""
        return (name.endswith(TIMER_SUFFIX) and not name.endswith("@" + TIMER_SUFFIX)
                and len(name) <= 255 and bool(TIMER_NAME.fullmatch(name))
                and any(fnmatchcase(name, glob) for glob in self._include) and self._wants(name))

    async def timer_names(self) -> list[str]:
        """The reported timers: loaded ones plus installed timer unit files.

        ListUnitsByPatterns only returns units in memory; systemd garbage-collects a
        stopped timer that nothing references, so unit files are listed too, or a
        stopped backup timer would simply vanish from the data. Both listings take the
        include patterns, so systemd never even matches other units' files. Templates
        (x@.timer) are not units and are skipped.
        """
        names, _in_memory = await self._list_timers()
        return names

    async def _list_timers(self) -> tuple[list[str], set[str]]:
        """(timer_names(), the ones of them systemd had in memory when listed)."""
        loaded = await self._manager("ListUnitsByPatterns", "asas", [[], self._patterns])
        in_memory = {row[0] for row in loaded if self._reported(row[0])}
        # A loaded unit systemd read from a file (loaded, masked...); not-found and
        # merged ones have none.
        from_files = {row[0] for row in loaded if row[2] not in ("not-found", "merged")}
        names = in_memory | await self._unit_files(from_files & in_memory)
        return sorted(name for name in names if self._reported(name)), in_memory

    async def _unit_files(self, loaded: set[str]) -> set[str]:
        """The timer unit files systemd can load. Read from the manager's UnitPath
        directories directly where the agent sees them; else ListUnitFilesByPatterns,
        the dearest call there is: systemd looks up each listed file's enablement
        (unit_file_lookup_state() in its install.c, after matching the patterns)."""
        found = await self._read_unit_dirs(loaded)
        if found is not None:
            return found
        files = await self._manager("ListUnitFilesByPatterns", "asas", [[], self._patterns])
        return {os.path.basename(path) for path, _state in files}

    async def _read_unit_dirs(self, loaded: set[str]) -> set[str] | None:
        """The timer files in the manager's UnitPath (its unit search path, the one
        ListUnitFilesByPatterns walks), read through /proc/<its PID>/root, so through the
        manager's own mounts; None when they cannot be seen: the manager runs in another
        PID namespace (a container), we may not look (not root, not its user), or what we
        see lacks a timer systemd loaded from a file."""
        root = await self._root_of_manager()
        if not root:
            return None
        found = set()
        for directory in await self._manager_property("UnitPath"):
            try:
                with os.scandir(root + directory) as entries:
                    # systemd takes regular files and symlinks (masked = link to /dev/null)
                    found.update(e.name for e in entries if self._reported(e.name)
                                 and (e.is_symlink() or e.is_file(follow_symlinks=False)))
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError:
                return None
        return found if loaded <= found else None

    async def _root_of_manager(self) -> str:
        """"<proc_root>/<PID>/root" of the manager when that process is systemd as we
        see it; "" when not (worked out once per connection)."""
        if self._manager_root is None:
            self._manager_root = ""
            pid = await self._manager_pid(await self._connection())
            try:
                # A PID from another PID namespace names another process here, or none.
                # ("init": PID 1 exec'ed as /sbin/init, a link to systemd, may be named so.)
                with open(f"{self._proc_root}/{pid}/comm") as comm:
                    is_systemd = pid > 0 and comm.read().strip() in ("systemd", "init")
                if is_systemd and os.path.isdir(f"{self._proc_root}/{pid}/root/"):
                    self._manager_root = f"{self._proc_root}/{pid}/root"
            except OSError:
                pass
        return self._manager_root

    async def _manager_property(self, name: str):
        return await self._call(SYSTEMD, MANAGER_PATH, PROPERTIES, "Get", "ss", [MANAGER, name])

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
        """The records, as a list made again only after a unit was (re-)read or dropped:
        a steady sample hands over the very list of the last one (the collector keys
        what it works out per sample on it)."""
        if self._records_made is None:
            self._records_made = self._make_records()
        return self._records_made

    def _changing(self) -> None:
        """Called before the cached records change: _records() makes them again, and
        _derived() what it keeps."""
        self._records_made, self._kept = None, {}

    def _derived(self, name: str, make: Callable[[], Any]):
        """make(), a function of the cached records, made again only after they changed
        (a steady sample with 1000 timers would otherwise go through them all, again)."""
        if name not in self._kept:
            self._kept[name] = make()
        return self._kept[name]

    def _running_services(self) -> list[UnitRecord]:
        return [s for name, s in self._services.items() if not self._service_errors.get(name)
                and is_running(s.active_state, s.sub_state)]

    def _make_records(self) -> list[TimerRecord]:
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
        self._signalled = set()
        names, in_memory = await self._list_timers()
        self._listed = set(names)
        self._changing()
        self._timers, self._armed = {}, {}
        await self._read_timer_units(names)
        self._services, self._service_errors = {}, {}
        await self._read_services(sorted({t.properties["Unit"] for t in self._timers.values()}),
                                  unloaded={t.properties["Unit"] for t in self._timers.values()
                                            if t.name not in in_memory})
        self._watched = set(self._services)
        # A timer systemd did not have in memory was read as a load from its file gives
        # it, and so was a service with no run and no error; our read loaded them, and
        # systemd frees them again (UnitNew, UnitRemoved): a new load gives the same
        # record, so they are settled from the start (see _loaded_or_freed) and not read
        # again after every full read, unless a PropertiesChanged came meanwhile.
        fresh = {name for name in names if name not in in_memory} | {
            name for name, service in self._services.items()
            if name not in self._service_errors and never_ran(service)}
        fresh -= self._signalled
        self._settled, self._dirty, self._freed = fresh, self._dirty - fresh, self._freed - fresh
        self._signalled = set()

    async def _refresh(self) -> None:
        """Re-read what signals said changed, and the running services' unsignaled
        properties. Ends with the same records a full read would give."""
        self.stats.refreshes += 1
        self._signalled = set()  # (only a full read looks at it)
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
            dirty |= self._listed  # enable/disable changed some timer's UnitFileState
            names = set(await self.timer_names())
            new |= names - self._listed
            for gone in self._listed - names - new:
                self._changing()
                self._timers.pop(gone, None)
                self._armed.pop(gone, None)
            self._listed = names
        self._listed |= new
        await self._read_timer_units(sorted(self._listed & (dirty | new)))
        wanted = self._derived("wanted", lambda: {t.properties["Unit"] for t in self._timers.values()})
        for gone in self._services.keys() - wanted:
            self._changing()
            del self._services[gone]
            self._service_errors.pop(gone, None)
        # A service not read yet (or not found last time: tried again) and the signalled.
        stale = sorted((wanted & dirty) | (wanted - self._services.keys()))
        await self._read_services(stale, unloaded=freed)
        self._watched = self._derived("watched", lambda: set(self._services))
        fresh = set(stale)
        running = [s for s in self._derived("running", self._running_services) if s.name not in fresh]
        await each(self._read_unsignaled, running)
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
        if names:
            self._changing()
        units = await self.units_by_name(names)
        for name in names:
            self._timers.pop(name, None)
            self._armed.pop(name, None)
        timers = [u for u in units.values() if u.load_state == "loaded"]
        await each(lambda u: self._fill(u, TIMER) if u.active_state == "active"
                   else self._fill_inactive_timer(u), timers)
        timers = [u for u in timers if u.properties]  # vanished while we read
        armed = await each(self._armed_since, timers)
        for timer, armed_since in zip(timers, armed):
            self._timers[timer.name] = timer
            self._armed[timer.name] = armed_since

    async def _read_services(self, names: list[str], unloaded: set[str] = frozenset()) -> None:
        """unloaded: services likely not in memory (their timer was not, or systemd freed
        them), read with one GetAll (see _fill_service)."""
        self.stats.units_read += len(names)
        if names:
            self._changing()
        services = await self.units_by_name(names)
        for name in names:
            self._services.pop(name, None)
            self._service_errors.pop(name, None)
        errors = await each(lambda s: self._fill_service(s, s.name in unloaded),
                            list(services.values()))
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

    async def _armed_since(self, timer: UnitRecord) -> int:
        """The timer's ActiveEnterTimestamp (0 for one not active) and its
        ACTIVE_TIMER_UNIT_PROPERTIES, put into its properties. An active timer: one Get each (a
        Unit's GetAll is ~100 properties). One not active: no call here, see
        _fill_inactive_timer."""
        path = unit_path(timer.name)
        if timer.active_state != "active":
            return 0  # its TIMER_UNIT_PROPERTIES came with _fill_inactive_timer's one call
        values = await asyncio.gather(*(self._get(path, UNIT, p) for p in (
            "ActiveEnterTimestamp",) + ACTIVE_TIMER_UNIT_PROPERTIES), return_exceptions=True)
        for prop, value in zip(ACTIVE_TIMER_UNIT_PROPERTIES, values[1:]):
            if isinstance(value, BaseException) and not isinstance(value, DBusCallError):
                raise value
            if not isinstance(value, BaseException):
                timer.properties[prop] = value
        if isinstance(values[0], BaseException):
            if not isinstance(values[0], DBusCallError):
                raise values[0]
            return 0
        return values[0]

    async def _fill(self, unit: UnitRecord, interface: str) -> str:
        """Read the Timer `interface`'s properties into unit; the error text when that fails."""
        try:
            found = await self.get_all(unit.name, interface)
            unit.properties = {k: found[k] for k in TIMER_PROPERTIES if k in found}
        except DBusCallError as err:
            return str(err)
        return ""

    async def _fill_inactive_timer(self, unit: UnitRecord) -> str:
        """A timer not active is likely one systemd frees between two calls and loads anew
        for each (see _fill_service): its Timer and Unit properties in one call, a GetAll
        with the empty interface name, which sd-bus answers with every interface's."""
        try:
            found = await self.get_all(unit.name, "")
        except DBusCallError as err:
            return str(err)
        unit.properties = {k: found[k] for k in TIMER_PROPERTIES + TIMER_UNIT_PROPERTIES if k in found}
        return ""

    def service_properties(self, unit: UnitRecord) -> list[str]:
        """The Service properties a record of `unit` holds (this systemd's, MemoryCurrent
        while it runs), besides the Unit's InvocationID."""
        wanted = [p for p in SERVICE_PROPERTIES if p not in self._unsupported]
        if is_running(unit.active_state, unit.sub_state):
            wanted.append("MemoryCurrent")
        return wanted

    async def _fill_service(self, unit: UnitRecord, unloaded: bool = False) -> str:
        """A few Gets; or, for a unit systemd is likely to have freed (unloaded), one
        GetAll: systemd frees an unneeded unit between two calls and loads it from its
        files again for each (manager_dispatch_gc_unit_queue() runs between messages),
        so six Gets would load it six times. Both give the same properties."""
        wanted = self.service_properties(unit)
        if unloaded:
            try:  # every interface's: the Unit's InvocationID comes with the Service's
                found = await self.get_all(unit.name, "")
            except DBusCallError:
                found = {}  # the Gets say why, in the words they always do
            if all(p in found or p in OPTIONAL_SERVICE_PROPERTIES for p in wanted):
                self._unsupported.update(p for p in wanted if p not in found)
                unit.properties = {p: found[p] for p in wanted if p in found}
                if INVOCATION_ID in found:
                    unit.properties[INVOCATION_ID] = invocation_hex(found[INVOCATION_ID])
                return ""
        path = unit_path(unit.name)
        if unit.active_state == "inactive" and not unit.job_id:
            # Not started since systemd loaded it, when it has no InvocationID (set anew at
            # each start, unit_acquire_invocation_id(); kept over daemon-reload): then its
            # ExecMain* are all 0 and need no asking (three Gets instead of eight).
            first = [p for p in wanted if p not in ZERO_UNTIL_STARTED]
            properties, error = await self._service_gets(path, first, with_invocation=True)
            if error:
                return error
            if properties.get(INVOCATION_ID) == "" and properties.get("Result") == "success":
                unit.properties = {**properties, **{p: 0 for p in wanted if p in ZERO_UNTIL_STARTED}}
                return ""
            rest, error = await self._service_gets(path, [p for p in wanted if p not in first])
            unit.properties = {**properties, **rest}
            return error
        unit.properties, error = await self._service_gets(path, wanted, with_invocation=True)
        return error

    async def _service_gets(self, path: str, wanted: list[str], with_invocation: bool = False
                            ) -> tuple[dict[str, Any], str]:
        """(wanted Service properties, and the Unit's InvocationID if asked; the error
        text if one could not be read). An optional property this systemd does not know
        is left out and never asked again."""
        values = await asyncio.gather(*(self._get(path, SERVICE, p) for p in wanted),
                                      *([self._get(path, UNIT, INVOCATION_ID)] if with_invocation else []),
                                      return_exceptions=True)
        invocation = values.pop() if with_invocation else None
        properties, missing = {}, []
        for prop, value in zip(wanted, values):
            if isinstance(value, DBusCallError):
                if prop in OPTIONAL_SERVICE_PROPERTIES and value.name == UNKNOWN_PROPERTY:
                    missing.append(prop)
                    continue
                return {}, str(value)
            if isinstance(value, BaseException):
                raise value
            properties[prop] = value
        self._unsupported.update(missing)  # this systemd is older: never ask again
        if isinstance(invocation, BaseException) and not isinstance(invocation, DBusCallError):
            raise invocation
        if with_invocation and not isinstance(invocation, BaseException):
            properties[INVOCATION_ID] = invocation_hex(invocation)
        return properties, ""

    async def _get(self, path: str, interface: str, prop: str):
        return await self._call(SYSTEMD, path, PROPERTIES, "Get", "ss", [interface, prop])
