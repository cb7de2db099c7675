"""Where the zone systemd evaluates OnCalendar in can be read: thin adapters, each giving a
exporter.schedule_zone.Candidate or nothing. Which one is right is decided by comparing
with systemd's own next elapses (exporter.schedule_zone), never by trusting one.

In order (the first that agrees with systemd wins):
- config: `[timers] timezone`, an explicit override, checked like the rest;
- manager: TZ in the manager process's own environment (/proc/<manager pid>/environ,
  what its C library reads), then TZ in the manager's `Environment` property
  (org.freedesktop.systemd1.Manager): a user manager copies its whole environment there
  at start; a system manager rarely has TZ. `systemctl set-environment TZ=...` changes
  the property, not the manager's own zone: that is why every candidate is checked;
- timedated: `Timezone` of org.freedesktop.timedate1 on the system bus (the host's
  /etc/localtime symlink), where timedated answers;
- host: /etc/localtime of the manager's own root, through /proc/<manager pid>/root
  (in a container that shares the host's PID namespace: compose's `pid: host`);
- agent: the agent's own $TZ, else its /etc/localtime.
"""

import asyncio
import io
import os
from datetime import timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..schedule_zone import Candidate
from .systemd_dbus import bus_address

TIMEDATED = "org.freedesktop.timedate1"
_FILE_ZONES: dict[bytes, ZoneInfo] = {}


def _zone_from_bytes(data: bytes) -> ZoneInfo:
    """One ZoneInfo per distinct zone file, so the evaluators' caches (keyed by zone)
    keep working when the same file is read again."""
    zone = _FILE_ZONES.get(data)
    if zone is None:
        zone = _FILE_ZONES[data] = ZoneInfo.from_file(io.BytesIO(data))
    return zone


def _footer(data: bytes) -> str:
    """The POSIX TZ string at the end of a TZif v2+ file (e.g. CET-1CEST,M3.5.0,M10.5.0/3)."""
    lines = data.rstrip(b"\n").rsplit(b"\n", 1)
    return lines[-1].decode("ascii", "replace") if len(lines) == 2 and data.startswith(b"TZif") else ""


def zone_from_tz(value: str, source: str, root: str = "", tzdir: str = "") -> Candidate | None:
    """A TZ value as glibc reads it: an optional ':', then a zone name under TZDIR (or
    the zoneinfo directory) or an absolute path to a zone file. POSIX rule strings
    (`CET-1CEST,M3.5.0,M10.5.0/3`) are not read: None, like a name with no file."""
    name = value[1:] if value.startswith(":") else value
    if not name:
        return None
    if name.startswith("/") or tzdir:
        path = name if name.startswith("/") else os.path.join(tzdir, name)
        try:
            with open(root + path, "rb") as handle:
                return Candidate(name, source, _zone_from_bytes(handle.read()))
        except (OSError, ValueError):
            return None
    try:
        return Candidate(name, source, ZoneInfo(name))
    except (ZoneInfoNotFoundError, ValueError):
        return None


def zone_from_localtime(path: str, source: str, root: str = "") -> Candidate | None:
    """/etc/localtime as glibc reads it: the file's contents (a bind-mounted file has no
    symlink to name it). Symlinks are followed here under `root`: the kernel would resolve
    an absolute target against the agent's own root, not the manager's."""
    target, name = path, ""
    for _hop in range(8):
        try:
            link = os.readlink(root + target)
        except OSError:
            break
        target = os.path.normpath(
            link if link.startswith("/") else os.path.join(os.path.dirname(target), link))
        if "zoneinfo/" in target:
            name = target.split("zoneinfo/", 1)[1]
    try:
        with open(root + target, "rb") as handle:
            data = handle.read()
        zone = _zone_from_bytes(data)
    except (OSError, ValueError):
        return None
    if name and target in _mount_points(root):
        # A zone file bind-mounted over the link's target (Docker resolves the
        # container's /etc/localtime symlink and mounts the host's file on the target):
        # the link's name is not the zone's.
        name = ""
    if not name:
        footer = _footer(data)
        name = f"{path} ({footer})" if footer else path
    return Candidate(name, source, zone)


def _mount_points(root: str) -> set[str]:
    """Mount points as the process whose root `root` is sees them (its mountinfo)."""
    mountinfo = root[:-len("/root")] + "/mountinfo" if root.endswith("/root") else "/proc/self/mountinfo"
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as handle:
            return {line.split(" ", 5)[4].replace("\\040", " ") for line in handle if line.count(" ") >= 5}
    except OSError:
        return set()


def agent_candidate(environ=os.environ, localtime: str = "/etc/localtime") -> Candidate:
    """The agent's own zone: $TZ, else /etc/localtime, else UTC (glibc's default)."""
    tz = environ.get("TZ", "")
    found = tz and zone_from_tz(tz, "agent", tzdir=environ.get("TZDIR", ""))
    return found or zone_from_localtime(localtime, "agent") or Candidate("UTC", "agent", timezone.utc)


def configured_candidate(name: str) -> Candidate | None:
    return zone_from_tz(name, "config") if name else None


def own_candidates(configured: str, environ=os.environ, localtime: str = "/etc/localtime"):
    """What is known without asking anyone: the override, then the agent's own zone."""
    first = configured_candidate(configured)
    return ([first] if first else []) + [agent_candidate(environ, localtime)]


def tz_of(environment: list[str]) -> tuple[str, str]:
    """(TZ, TZDIR) from a KEY=VALUE list; "" when unset."""
    found = dict(entry.split("=", 1) for entry in environment if "=" in entry)
    return found.get("TZ", ""), found.get("TZDIR", "")


class ZoneSources:
    """Reads every candidate. `manager`: the SystemdBus the timers come from (its
    Environment property and the PID that owns its bus name)."""

    def __init__(self, manager, configured: str = "", system_bus: str | None = None,
                 proc_root: str = "/proc", environ=os.environ,
                 localtime: str = "/etc/localtime", timeout: float = 3.0):
        self.manager, self.configured = manager, configured
        # timedated lives on the system bus (where the system manager's timers come from).
        self.system_bus = system_bus or bus_address("system", environ)
        self.proc_root, self.environ, self.localtime = proc_root, environ, localtime
        self.timeout = timeout

    async def read(self) -> list[Candidate]:
        found = [configured_candidate(self.configured)]
        pid = 0
        try:
            tz, tzdir = tz_of(await self.manager.manager_environment())
            pid = await self.manager.manager_pid()
        except Exception:  # noqa: BLE001 - the timers read reports bus errors itself
            tz, tzdir = "", ""
        root = f"{self.proc_root}/{pid}/root" if pid else ""
        own_tz, own_tzdir = self._process_tz(pid)
        if own_tz:
            found.append(zone_from_tz(own_tz, "manager", root, own_tzdir))
        if tz and (tz, tzdir) != (own_tz, own_tzdir):
            found.append(zone_from_tz(tz, "manager", root, tzdir))
        found.append(await self._timedated())
        if root:
            found.append(zone_from_localtime("/etc/localtime", "host", root))
        found.append(agent_candidate(self.environ, self.localtime))
        return [c for c in found if c]

    def _process_tz(self, pid: int) -> tuple[str, str]:
        """(TZ, TZDIR) the manager process started with; ("", "") when unreadable
        (another PID namespace, no CAP_SYS_PTRACE) or unset."""
        if not pid:
            return "", ""
        try:
            with open(f"{self.proc_root}/{pid}/environ", "rb") as handle:
                entries = handle.read().decode(errors="replace").split("\0")
        except OSError:
            return "", ""
        return tz_of(entries)

    async def _timedated(self) -> Candidate | None:
        path = self.system_bus.removeprefix("unix:path=")
        if path == self.system_bus or not os.path.exists(path):
            return None  # no system bus here (a user manager's test, a bare container)
        try:
            name = await asyncio.wait_for(self._timedated_name(), self.timeout)
        except Exception:  # noqa: BLE001 - not answering is the common case; others remain
            return None
        return zone_from_tz(name, "timedated") if name else None

    async def _timedated_name(self) -> str:
        from dbus_fast import Message, MessageType
        from dbus_fast.aio import MessageBus
        bus = await MessageBus(bus_address=self.system_bus).connect()
        try:
            reply = await bus.call(Message(
                destination=TIMEDATED, path="/org/freedesktop/timedate1",
                interface="org.freedesktop.DBus.Properties", member="Get", signature="ss",
                body=[TIMEDATED, "Timezone"]))
        finally:
            bus.disconnect()
        if reply is None or reply.message_type == MessageType.ERROR:
            return ""
        return reply.body[0].value
