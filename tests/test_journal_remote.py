"""Matching a run's journal entries on a journal with the fields a real host writes
(issue 21). This test machine's journald cannot attribute entries to units, so the
journal is built: entries in the journal export format (systemd's journal-export-formats
doc) with `_SYSTEMD_INVOCATION_ID`, `_SYSTEMD_UNIT`, `_SYSTEMD_USER_UNIT`, `_PID` and
`_BOOT_ID` as journald sets them, imported by Debian's systemd-journal-remote
(`-o FILE.journal -`), read back by the agent's reader through real journalctl.
"""

import asyncio
import struct
import subprocess

import pytest

from exporter.sources.journal import JournalError, JournalReader, RunLogQuery

BOOT = "0123456789abcdef0123456789abcdef"
OTHER_BOOT = "fedcba9876543210fedcba9876543210"
RUN_A, RUN_B = "a" * 32, "b" * 32
USER_AT = "c" * 32          # user@1000.service's invocation: on every user service's entries
SYNC_INVOCATION = "d" * 32  # sync.service's own InvocationID (the user manager's)
T0 = 1_700_000_000_000_000  # µs; long past, so the reader never waits


def entry(t_s: float, message, **fields) -> bytes:
    fields = {"__REALTIME_TIMESTAMP": str(T0 + int(t_s * 1e6)),
              "__MONOTONIC_TIMESTAMP": str(1_000_000 + int(t_s * 1e6)),
              "_BOOT_ID": BOOT, "_TRANSPORT": "stdout", **fields}
    out = b"".join(f"{k}={v}\n".encode() for k, v in fields.items())
    if isinstance(message, bytes):  # binary-safe form: name, newline, le64 size, data
        out += b"MESSAGE\n" + struct.pack("<Q", len(message)) + message + b"\n"
    else:
        out += f"MESSAGE={message}\n".encode()
    return out + b"\n"


def system(unit, invocation, pid):
    return {"_SYSTEMD_UNIT": unit, "_SYSTEMD_INVOCATION_ID": invocation, "_PID": str(pid)}


ENTRIES = [
    # PID 1 about the unit: UNIT= (not _SYSTEMD_UNIT), never a run's own line.
    entry(0.0, "Starting backup.service...", _SYSTEMD_UNIT="init.scope", UNIT="backup.service",
          INVOCATION_ID=RUN_A, _PID="1"),
    entry(0.1, "A: dumping", **system("backup.service", RUN_A, 100)),
    entry(0.2, "other: tick", **system("other.service", "e" * 32, 100)),  # same PID, other unit
    entry(0.3, "A: child says no space", **system("backup.service", RUN_A, 101)),
    entry(1.0, "backup.service: Main process exited, code=exited, status=3/NOTIMPLEMENTED",
          _SYSTEMD_UNIT="init.scope", UNIT="backup.service", _PID="1"),
    entry(1.1, "B: dumping", **system("backup.service", RUN_B, 200)),   # restarted at 1.05
    entry(1.2, "A: late line, read by journald after the exit", **system("backup.service", RUN_A, 100)),
    entry(1.5, "B: done", **system("backup.service", RUN_B, 200)),
    # A user service: _SYSTEMD_INVOCATION_ID is the user@.service's (journald-context.c).
    entry(2.0, "sync: starting", _SYSTEMD_UNIT="user@1000.service", _SYSTEMD_INVOCATION_ID=USER_AT,
          _SYSTEMD_USER_UNIT="sync.service", _PID="400"),
    entry(2.1, "other user unit", _SYSTEMD_UNIT="user@1000.service", _SYSTEMD_INVOCATION_ID=USER_AT,
          _SYSTEMD_USER_UNIT="mail.service", _PID="401"),
    entry(2.2, "sync: remote refused", _SYSTEMD_UNIT="user@1000.service",
          _SYSTEMD_INVOCATION_ID=USER_AT, _SYSTEMD_USER_UNIT="sync.service", _PID="400"),
    # No unit fields (journald without cgroup information): only _PID tells them apart.
    entry(3.0, "pid 300: one", _PID="300"),
    entry(3.1, "pid 301: not mine", _PID="301"),
    entry(3.2, b"pid 300: bytes \xff\xfe", _PID="300"),
    entry(3.3, "pid 300 from another boot", _PID="300", _BOOT_ID=OTHER_BOOT),
    entry(3.4, "pid 300: three", _PID="300"),
    # Older systemd / no invocation: unit fields only.
    entry(4.0, "legacy: one", _SYSTEMD_UNIT="legacy.service", _PID="500"),
    entry(4.5, "legacy next run", _SYSTEMD_UNIT="legacy.service", _PID="501"),
]


@pytest.fixture(scope="module")
def journal_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("remote-journal")
    subprocess.run(["/lib/systemd/systemd-journal-remote", "-o", str(directory / "host.journal"), "-"],
                   input=b"".join(ENTRIES), check=True, capture_output=True, timeout=60)
    return directory


def read(journal_dir, query, **reader_args):
    reader = JournalReader([str(journal_dir)], boot_id=BOOT, **reader_args)
    return asyncio.run(reader.run_log(query))


def query(unit="backup.service", manager="system", invocation="", pid=0, since=0.0, until=2.0):
    return RunLogQuery(unit, manager, invocation, pid, T0 + int(since * 1e6), T0 + int(until * 1e6))


def test_invocation_id_picks_the_run_even_when_runs_interleave(journal_dir):
    assert read(journal_dir, query(invocation=RUN_A, pid=100)) == (
        "A: dumping\nA: child says no space\nA: late line, read by journald after the exit")
    assert read(journal_dir, query(invocation=RUN_B, pid=200, since=1.05)) == "B: dumping\nB: done"


def test_unit_without_invocation_fields_in_its_window(journal_dir):
    assert read(journal_dir, query("legacy.service", pid=500, since=3.9, until=4.4)) == "legacy: one"


def test_user_service_matches_by_user_unit_not_the_user_managers_invocation(journal_dir):
    got = read(journal_dir, query("sync.service", "user", SYNC_INVOCATION, 400, since=1.9, until=3.0))
    assert got == "sync: starting\nsync: remote refused"


def test_main_pid_in_the_window_and_this_boot_where_no_unit_is_known(journal_dir):
    got = read(journal_dir, query("job.service", pid=300, since=2.9, until=4.0))
    assert got == "pid 300: one\npid 300: bytes \ufffd\ufffd\npid 300: three"


def test_caps_keep_the_last_lines(journal_dir):
    q, last = query(invocation=RUN_A, pid=100), "A: late line, read by journald after the exit"
    assert read(journal_dir, q, max_lines=1) == last
    assert read(journal_dir, q, max_lines=2) == "A: child says no space\n" + last
    assert read(journal_dir, q, max_bytes=len(last) + 10) == last  # two lines would not fit
    assert read(journal_dir, q, max_bytes=30) == last[-30:]       # nor does the last one whole
    assert read(journal_dir, query(invocation="f" * 32, pid=999)) == ""


def test_a_broken_journalctl_is_a_journal_error(journal_dir):
    reader = JournalReader([str(journal_dir)], journalctl="/nonexistent/journalctl", boot_id=BOOT)
    with pytest.raises(JournalError, match="cannot run /nonexistent/journalctl"):
        asyncio.run(reader.run_log(query(invocation=RUN_A)))
