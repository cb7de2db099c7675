"""Thin adapter over `journalctl --output=json`: the last lines one service run wrote.

Why journalctl and not a library: the Pi image is 32-bit ARM with nothing compiled
(systemd-python and cysystemd need libsystemd headers and a compiler; the pure-Python
packages on PyPI parse the *export* format or wrap journalctl, none reads journal files
as systemd 252 writes them: compact, zstd-compressed). journalctl reads the
journal files themselves (`--file`, never journald's socket), so it works in the
agent's own mount namespace and in a container that mounts the host's journal
directories read-only. It runs only when a finished run is to be looked up (a failed
one by default), never on a steady sample. Cost: docs/performance.md.

Which entries belong to the run (issue 21), per entry, the most exact field it has:
1. `_SYSTEMD_INVOCATION_ID` equal to the unit's `InvocationID` (system manager only:
   journald fills it from PID 1's /run/systemd/units/invocation:<unit> of the *system*
   unit, journald-context.c, so a user service's entries carry its user@.service's ID);
2. else `_SYSTEMD_UNIT` (system) / `_SYSTEMD_USER_UNIT` (user) equal to the unit;
3. else `_PID` equal to the run's main PID (`ExecMainPID`): a service's stdout/stderr
   stream is connected by its main process before exec, and journald stamps every line
   of the stream with that peer's PID, children's output included. This is what works
   where journald could not attribute the unit (no cgroup information).
All inside the run's window: from its start to its exit plus the wait below (cut at the
next run's start), and `_BOOT_ID` of this boot (systemd's ExecMain timestamps are).

journald reads a service's output asynchronously, so lines written just before the exit
may be stamped after it: a run is read once `wait_s` after its exit has passed, and not
before (the caller sleeps at most that long), so the window is closed and reading the
run again gives the same lines.
"""

import asyncio
import glob
import json
import os
import time
from dataclasses import dataclass

DEFAULT_DIRECTORIES = ("/var/log/journal", "/run/log/journal")
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


class JournalError(Exception):
    """The journal could not be read (none there, journalctl missing or failing)."""


@dataclass(frozen=True)
class RunLogQuery:
    unit: str           # the service, e.g. backup.service
    manager: str        # "system" or "user"
    invocation_id: str  # the unit's InvocationID of the run, hex; "" when unknown
    main_pid: int       # ExecMainPID of the run; 0 when unknown
    since_us: int       # the run's start (realtime µs)
    until_us: int       # its exit plus the wait, or the next run's start if earlier


def matches(query: RunLogQuery, boot_id: str) -> list[str]:
    """journalctl match arguments: the boot, AND any of invocation / unit / PID.
    journalctl ORs the groups separated by "+", each ANDed with the boot match."""
    unit_field = "_SYSTEMD_USER_UNIT" if query.manager == "user" else "_SYSTEMD_UNIT"
    terms = [f"{unit_field}={query.unit}"]
    if query.invocation_id and query.manager != "user":
        terms.append(f"_SYSTEMD_INVOCATION_ID={query.invocation_id}")
    if query.main_pid:
        terms.append(f"_PID={query.main_pid}")
    args = []
    for term in terms:
        args += ([f"_BOOT_ID={boot_id}"] if boot_id else []) + [term, "+"]
    return args[:-1]


def belongs(entry: dict, query: RunLogQuery) -> bool:
    """The entry is this run's, judged by the most exact field it carries."""
    invocation = entry.get("_SYSTEMD_INVOCATION_ID")
    if query.manager != "user" and invocation and query.invocation_id:
        return invocation == query.invocation_id
    unit = entry.get("_SYSTEMD_USER_UNIT" if query.manager == "user" else "_SYSTEMD_UNIT")
    if unit:
        return unit == query.unit
    return bool(query.main_pid) and entry.get("_PID") == str(query.main_pid)


def message_text(entry: dict) -> str:
    """MESSAGE as text: journalctl writes non-UTF-8 (or binary) ones as a byte array and
    those over its size limit as null."""
    message = entry.get("MESSAGE")
    if isinstance(message, list):
        return bytes(b & 0xFF for b in message if isinstance(b, int)).decode("utf-8", "replace")
    return message if isinstance(message, str) else ""


def tail_text(messages: list[str], max_lines: int, max_bytes: int) -> str:
    """The last max_lines lines, newline-joined, within max_bytes of UTF-8: the oldest
    lines go first; a last line longer than that alone keeps its end."""
    lines = [line for message in messages for line in message.splitlines()][-max_lines:]
    while lines and len("\n".join(lines).encode()) > max_bytes:
        if len(lines) == 1:
            return lines[0].encode()[-max_bytes:].decode("utf-8", "ignore")
        lines.pop(0)
    return "\n".join(lines)


def journal_files(directories) -> list[str]:
    """--file patterns for the directories that hold journal files (journald keeps them
    in <dir>/<machine-id>/; a missing pattern would make journalctl fail them all)."""
    patterns = []
    for directory in directories:
        for pattern in (os.path.join(directory, "*", "*.journal"), os.path.join(directory, "*.journal")):
            if glob.glob(pattern):
                patterns.append(pattern)
    return patterns


def read_boot_id(path: str = BOOT_ID_PATH) -> str:
    """This boot's ID as journald writes it (_BOOT_ID: 32 hex digits, no dashes). The
    kernel's, so the same in a container."""
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip().replace("-", "")
    except OSError:
        return ""


class JournalReader:
    """Reads runs' lines with journalctl from the journal files in `directories`."""

    name = "journal"

    def __init__(self, directories=DEFAULT_DIRECTORIES, max_lines: int = 10,
                 max_bytes: int = 2048, wait_s: float = 2.0, journalctl: str = "journalctl",
                 timeout_s: float = 10.0, boot_id: str | None = None, clock=time.time):
        self.directories, self.journalctl = list(directories), journalctl
        self.max_lines, self.max_bytes, self.wait_s = max_lines, max_bytes, wait_s
        self.timeout_s, self.clock = timeout_s, clock
        self.boot_id = read_boot_id() if boot_id is None else boot_id

    async def run_log(self, query: RunLogQuery) -> str:
        """The run's last lines (capped), "" when it wrote none; JournalError when the
        journal cannot be read."""
        # Sleep until the window has closed (at most wait_s: the run just ended).
        delay = query.until_us / 1e6 - self.clock()
        if delay > 0:
            await asyncio.sleep(min(delay, self.wait_s))
        entries = await self.entries(query)
        return tail_text([message_text(e) for e in entries if belongs(e, query)],
                         self.max_lines, self.max_bytes)

    def argv(self, query: RunLogQuery, files: list[str]) -> list[str]:
        # -n: the newest entries only (a chatty job can write megabytes). Twice the line
        # cap: a few matched entries may be another run's and are dropped by belongs().
        # --reverse: journalctl 252 with --since and -n shows the *first* n entries after
        # --since; reversed, it starts at --until and walks back (journalctl.c).
        return [self.journalctl, "--output=json", "--no-pager", "--quiet", "--reverse",
                *(f"--file={pattern}" for pattern in files),
                f"--since=@{query.since_us / 1e6:.6f}", f"--until=@{query.until_us / 1e6:.6f}",
                f"--lines={2 * self.max_lines}", *matches(query, self.boot_id)]

    async def entries(self, query: RunLogQuery) -> list[dict]:
        files = journal_files(self.directories)
        if not files:
            raise JournalError(f"no journal files in {', '.join(self.directories)} "
                               "(journal not mounted, or volatile and gone)")
        try:
            process = await asyncio.create_subprocess_exec(
                *self.argv(query, files), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        except OSError as err:
            raise JournalError(f"cannot run {self.journalctl}: {err.strerror or err}") from err
        try:
            out, err = await asyncio.wait_for(process.communicate(), self.timeout_s)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
            raise JournalError(f"{self.journalctl} took longer than {self.timeout_s:g} s") from None
        # journalctl exits 1 with "-- No entries --" only when not --quiet; with --quiet
        # and nothing matched it prints nothing and exits 0.
        if process.returncode != 0:
            text = err.decode(errors="replace").strip().splitlines()
            raise JournalError(f"{self.journalctl} exited {process.returncode}: "
                               f"{text[-1] if text else 'no message'}")
        return [json.loads(line) for line in reversed(out.splitlines()) if line.strip()]
