"""`tick-exporter status` rendering (exporter/status.py): golden table, colours, JSON,
exit status, when to colour, and dates past 2038."""

import io
import json
import re
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from exporter.timer_health import HEALTHY
from exporter.point import Point
from exporter.status import (exit_code, format_span, format_time, render_json,
                             render_table, should_color)

HOST = "nas"
NS = 10**9


def at(text: str) -> int:
    """Unix seconds of a UTC wall-clock time, e.g. at("2026-11-24 04:00:00")."""
    when = datetime.fromisoformat(text).replace(tzinfo=timezone.utc)
    return (when - datetime(1970, 1, 1, tzinfo=timezone.utc)) // (datetime.resolution * 10**6)


NOW = at("2026-11-25 00:48:00")  # a Wednesday, 00:48 UTC


def timer(name: str, state: str, *, service: str | None = None, manager: str = "system",
          last_trigger: int = 0, next_elapse: int = 0, last_result: str = "success",
          last_exit_code: int = 0, last_exit_kind: str = "exited", active_state: str = "active",
          schedule: str = "OnCalendar=*-*-* 04:00:00", newer: bool = True, **extra) -> Point:
    """A systemd_timer point as the collector writes it (docs/metrics.md)."""
    fields = {"last_trigger": last_trigger, "next_elapse": next_elapse, "schedule": schedule,
              "persistent": True, "active_state": active_state}
    if last_trigger:
        fields["since_last_s"] = float(NOW - last_trigger)
    if next_elapse:
        fields["until_next_s"] = float(next_elapse - NOW)
    fields.update(service_state="activating" if state == "running" else "inactive",
                  last_result=last_result, last_exit_code=last_exit_code,
                  last_exit_kind=last_exit_kind,
                  last_run_start=extra.pop("last_run_start", last_trigger),
                  last_run_end=extra.pop("last_run_end", 0))
    if "last_duration_s" in extra:
        fields["last_duration_s"] = extra.pop("last_duration_s")
    fields.update(state=state, healthy=state in HEALTHY)
    if newer:
        fields.update(expected_at=extra.pop("expected_at", last_trigger),
                      overdue_s=extra.pop("overdue_s", 0.0),
                      missed_runs=extra.pop("missed_runs", 0),
                      last_success=extra.pop("last_success", 0),
                      consecutive_failures=extra.pop("consecutive_failures", 0))
    assert not extra, extra
    service = service if service is not None else name.removesuffix(".timer") + ".service"
    tags = {"host": HOST, "manager": manager, "timer": name, "service": service}
    return Point("systemd_timer", tags, fields, NOW * NS)


def realistic() -> list[Point]:
    return [
        # The nightly backup ran at 04:00 and succeeded after 12 minutes.
        timer("backup.timer", "ok", last_trigger=at("2026-11-24 04:00:00"),
              next_elapse=at("2026-11-25 04:00:00"), last_run_end=at("2026-11-24 04:12:31"),
              last_duration_s=751.0, last_success=at("2026-11-24 04:12:31")),
        # The home backup exits 3 (rsync: errors selecting input/output files) every night.
        timer("backup@home.timer", "failed", last_trigger=at("2026-11-24 03:30:00"),
              next_elapse=at("2026-11-25 03:30:00"), schedule="OnCalendar=*-*-* 03:30:00",
              last_result="exit-code", last_exit_code=3, last_run_end=at("2026-11-24 03:31:07"),
              last_duration_s=67.0, last_success=at("2026-11-21 03:41:10"),
              consecutive_failures=3),
        # Off-site sync: the host was off for two nights, Persistent=false.
        timer("offsite-sync.timer", "missed", last_trigger=at("2026-11-22 02:00:00"),
              next_elapse=at("2026-11-25 02:00:00"), schedule="OnCalendar=*-*-* 02:00:00",
              last_run_end=at("2026-11-22 02:20:00"), last_duration_s=1200.0,
              last_success=at("2026-11-22 02:20:00"), expected_at=at("2026-11-24 02:00:00"),
              overdue_s=86400.0 + 2 * 3600 + 48 * 60, missed_runs=2),
        # A database dump is running right now, started 5 minutes ago.
        timer("db-dump.timer", "running", last_trigger=NOW - 300,
              next_elapse=at("2026-11-25 12:43:00"), schedule="OnUnitActiveSec=12h",
              last_result="success", last_exit_kind="none",
              last_success=at("2026-11-24 12:51:30")),
        # A distribution's timer, disabled by hand last month: no next elapse, not watched.
        timer("old-report.timer", "inactive", active_state="inactive",
              last_trigger=at("2026-10-02 06:00:00"), last_run_end=at("2026-10-02 06:00:04"),
              last_duration_s=4.0, last_success=at("2026-10-02 06:00:04")),
        # The user's NAS backup, stopped before it ever ran: systemd will not start it.
        timer("nas-backup.timer", "stopped", active_state="inactive", last_exit_kind="none"),
        # A watched timer whose unit file was deleted yesterday: the agent's memory.
        Point("systemd_timer", {"host": HOST, "manager": "system", "timer": "usb-backup.timer",
                                "service": "usb-backup.service"},
              {"state": "removed", "healthy": False, "watched": True, "unit_file_state": "",
               "expected_at": 0, "overdue_s": 0.0, "missed_runs": 0,
               "last_success": at("2026-11-20 03:00:40"), "consecutive_failures": 0,
               "removed_since": at("2026-11-24 09:00:00")}, NOW * NS),
        # Installed yesterday, never elapsed yet.
        timer("scrub.timer", "ok", next_elapse=at("2026-11-29 01:00:00"),
              schedule="OnCalendar=Sun *-*-* 01:00:00", last_exit_kind="none"),
        # Killed by SIGTERM (a TimeoutStopSec hit, or someone's kill).
        timer("photos-index.timer", "failed", last_trigger=at("2026-11-24 23:00:00"),
              next_elapse=at("2026-11-25 23:00:00"), last_result="signal",
              last_exit_code=15, last_exit_kind="killed", last_run_end=at("2026-11-24 23:40:00"),
              last_success=at("2026-11-20 23:52:00"), consecutive_failures=4),
        # Sample from an older agent: none of the newer health fields.
        timer('db dump "nightly".timer', "ok", service='db dump "nightly".service',
              manager="user", last_trigger=at("2026-11-24 22:15:00"),
              next_elapse=at("2026-11-25 22:15:00"), last_run_end=at("2026-11-24 22:15:41"),
              newer=False),
        # The hourly mirror sync should have started 5 minutes ago; the start job waits.
        timer("mirror.timer", "late", last_trigger=at("2026-11-24 23:45:00"),
              next_elapse=at("2026-11-25 00:45:00"), schedule="OnCalendar=hourly",
              last_success=at("2026-11-24 23:46:10"), expected_at=at("2026-11-25 00:45:00"),
              overdue_s=180.0),
        # The weekly backup verification has been running for 26 hours.
        timer("verify.timer", "overrun", last_trigger=at("2026-11-23 22:48:00"),
              next_elapse=at("2026-11-30 22:48:00"), last_exit_kind="none",
              last_success=at("2026-11-16 23:50:00")),
        # Other measurements are not timers.
        Point("exporter", {"host": HOST, "component": "timers"},
              {"success": True, "duration_s": 0.02, "points": 10}, NOW * NS),
        Point("systemd_timer_run", {"host": HOST, "manager": "system", "timer": "backup.timer",
                                    "service": "backup.service", "result": "success"},
              {"exit_code": 0, "success": True}, at("2026-11-24 04:12:31") * NS),
    ]


GOLDEN = """\
NEXT                         LEFT       LAST                         PASSED         UNIT                     ACTIVATES                  STATE     RESULT         LAST SUCCESS   OVERDUE  MISSED
Wed 2026-11-25 04:00:00 UTC  3h 12min   Tue 2026-11-24 04:00:00 UTC  20h 48min ago  backup.timer             backup.service             ok        success        20h 35min ago  -        -
Wed 2026-11-25 03:30:00 UTC  2h 42min   Tue 2026-11-24 03:30:00 UTC  21h 18min ago  backup@home.timer        backup@home.service        failed    exit-code (3)  3d 21h ago     -        -
Wed 2026-11-25 22:15:00 UTC  21h 27min  Tue 2026-11-24 22:15:00 UTC  2h 33min ago   db dump "nightly".timer  db dump "nightly".service  ok        success        never          -        -
Wed 2026-11-25 12:43:00 UTC  11h 55min  Wed 2026-11-25 00:43:00 UTC  5min ago       db-dump.timer            db-dump.service            running   -              11h 56min ago  -        -
Wed 2026-11-25 00:45:00 UTC  3min ago   Tue 2026-11-24 23:45:00 UTC  1h 3min ago    mirror.timer             mirror.service             late      success        1h 1min ago    3min     -
-                            -          -                            -              nas-backup.timer         nas-backup.service         stopped   -              never          -        -
Wed 2026-11-25 02:00:00 UTC  1h 12min   Sun 2026-11-22 02:00:00 UTC  2d 22h ago     offsite-sync.timer       offsite-sync.service       missed    success        2d 22h ago     1d 2h    2
-                            -          Fri 2026-10-02 06:00:00 UTC  1month 3w ago  old-report.timer         old-report.service         inactive  success        1month 3w ago  -        -
Wed 2026-11-25 23:00:00 UTC  22h 12min  Tue 2026-11-24 23:00:00 UTC  1h 48min ago   photos-index.timer       photos-index.service       failed    signal (15)    4d ago         -        -
Sun 2026-11-29 01:00:00 UTC  4d         -                            -              scrub.timer              scrub.service              ok        -              never          -        -
-                            -          -                            -              usb-backup.timer         usb-backup.service         removed   -              4d 21h ago     -        -
Mon 2026-11-30 22:48:00 UTC  5d 22h     Mon 2026-11-23 22:48:00 UTC  1d 2h ago      verify.timer             verify.service             overrun   -              1w 1d ago      -        -

12 timers listed: 5 healthy, 2 failed, 1 missed, 1 overrun, 1 late, 1 stopped, 1 removed."""

ANSI = re.compile(r"\x1b\[[0-9;]*m")
GREEN, CYAN, YELLOW, RED, GREY, RESET = (
    "\x1b[32m", "\x1b[36m", "\x1b[33m", "\x1b[31m", "\x1b[90m", "\x1b[0m")


def test_table_golden():
    # A fraction of a second into the minute changes nothing: whole seconds, truncated.
    assert render_table(realistic(), NOW + 0.9, color=False) == GOLDEN
    assert render_table(realistic(), NOW, color=False, zone=timezone.utc) == GOLDEN


def test_table_input_order_does_not_matter():
    assert render_table(list(reversed(realistic())), NOW, color=False) == GOLDEN


def test_table_colour_marks_state_and_unit_and_keeps_alignment():
    coloured = render_table(realistic(), NOW, color=True)
    assert ANSI.sub("", coloured) == GOLDEN
    assert "\x1b" not in render_table(realistic(), NOW, color=False)
    lines = coloured.split("\n")
    assert "\x1b" not in lines[0] and "\x1b" not in lines[-1]  # header and footer plain
    expected = {
        "backup.timer": (GREEN, "ok"), "backup@home.timer": (RED, "failed"),
        'db dump "nightly".timer': (GREEN, "ok"), "db-dump.timer": (CYAN, "running"),
        "mirror.timer": (YELLOW, "late"), "nas-backup.timer": (YELLOW, "stopped"),
        "offsite-sync.timer": (RED, "missed"),
        "old-report.timer": (GREY, "inactive"), "photos-index.timer": (RED, "failed"),
        "scrub.timer": (GREEN, "ok"), "usb-backup.timer": (YELLOW, "removed"),
        "verify.timer": (YELLOW, "overrun"),
    }
    rows = lines[1:13]
    assert len(rows) == len(expected)
    for row, (unit, (colour, state)) in zip(rows, expected.items()):
        # Exactly two coloured cells per row: the unit and its state, each reset at once.
        assert re.findall(r"\x1b\[[0-9;]*m[^\x1b]*\x1b\[0m", row) == [
            f"{colour}{unit}{RESET}", f"{colour}{state}{RESET}"]
        # Padding stays outside the escape codes.
        assert f"{colour}{state}{RESET}{' ' * (len('inactive') - len(state) + 2)}" in row


def test_table_columns_start_at_the_same_visible_offset():
    coloured = render_table(realistic(), NOW, color=True)
    plain_lines = ANSI.sub("", coloured).split("\n")[:13]
    header = plain_lines[0]
    for title in ("LEFT", "LAST ", "PASSED", "UNIT", "ACTIVATES", "STATE", "RESULT",
                  "LAST SUCCESS", "OVERDUE", "MISSED"):
        start = header.index(title)
        for line in plain_lines[1:]:
            assert line[start - 2:start] == "  " and line[start] != " ", (title, line)


def test_table_no_timers():
    assert render_table([], NOW, color=True) == "0 timers listed."
    only_agent = [p for p in realistic() if p.measurement == "exporter"]
    assert render_table(only_agent, NOW, color=False) == "0 timers listed."


def test_table_one_healthy_timer():
    table = render_table([realistic()[0]], NOW, color=False)
    assert table.split("\n")[-1] == "1 timer listed: 1 healthy."
    assert table.split("\n")[-2] == ""


def test_table_wide_characters_keep_alignment():
    points = [timer("バックアップ.timer", "ok", next_elapse=NOW + 60, last_exit_kind="none"),
              timer("b.timer", "failed", next_elapse=NOW + 60, last_result="exit-code",
                    last_exit_code=1, last_trigger=NOW - 60)]
    lines = render_table(points, NOW, color=False).split("\n")
    # Each katakana takes two terminal columns: STATE starts at the same screen column.
    def screen_column(line: str, text: str) -> int:
        prefix = line[:line.index(text)]
        return len(prefix) + sum(1 for ch in prefix if "\u30a0" <= ch <= "\u30ff")
    assert screen_column(lines[0], "STATE") == screen_column(lines[1], "failed") == \
        screen_column(lines[2], "ok  ")


def test_table_escapes_control_characters_in_names():
    evil = timer("evil\x1b[2J\n.timer", "ok", service="x\x07.service", next_elapse=NOW + 60)
    table = render_table([evil], NOW, color=False)
    assert "\x1b" not in table and "\x07" not in table
    assert "evil\\x1b[2J\\x0a.timer" in table and "x\\x07.service" in table
    assert len(table.split("\n")) == 4  # header, row, blank, footer


def test_table_in_a_time_zone():
    table = render_table([realistic()[0]], NOW, color=False, zone=ZoneInfo("Europe/Berlin"))
    row = table.split("\n")[1]
    assert row.startswith("Wed 2026-11-25 05:00:00 CET  3h 12min  Tue 2026-11-24 05:00:00 CET  ")


def test_timestamps_past_2038(monkeypatch):
    import time
    # On armhf these overflow past 2038: the renderer must not need them.
    for name in ("localtime", "gmtime", "mktime"):
        monkeypatch.setattr(time, name, lambda *a: (_ for _ in ()).throw(OverflowError(name)))
    new_year = at("2100-01-01 00:00:00")
    assert new_year > 2**31 - 1  # past a signed 32-bit time_t
    far = timer("century.timer", "ok", next_elapse=new_year,
                schedule="OnCalendar=2100-01-01", last_exit_kind="none")
    table = render_table([far], NOW, color=False)
    row = table.split("\n")[1]
    assert row.startswith("Fri 2100-01-01 00:00:00 UTC  73y 1month  -  ")
    berlin = render_table([far], NOW, color=False, zone=ZoneInfo("Europe/Berlin"))
    assert berlin.split("\n")[1].startswith("Fri 2100-01-01 01:00:00 CET  ")
    assert format_time(at("2100-07-01 12:00:00"), ZoneInfo("Europe/Berlin")) == \
        "Thu 2100-07-01 14:00:00 CEST"
    assert format_time(at("2038-01-19 03:14:08")) == "Tue 2038-01-19 03:14:08 UTC"
    # Past the last date datetime can hold: raw seconds, as `date -d @...` takes them.
    assert format_time(2**40) == "@1099511627776"
    assert json.loads(render_json([far], NOW))["timers"][0]["next_elapse"] == new_year


def test_source_avoids_overflowing_time_functions():
    import exporter.status
    source = open(exporter.status.__file__, encoding="utf-8").read()
    assert not re.search(r"fromtimestamp\(|localtime\(|gmtime\(|mktime\(", source)


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (0.7, "0s"), (45, "45s"), (59.9, "59s"), (60, "1min"), (65, "1min 5s"),
    (300, "5min"), (3900, "1h 5min"), (11520, "3h 12min"), (86400, "1d"),
    (86400 + 300, "1d"), (2 * 86400 + 3 * 3600, "2d 3h"), (15 * 86400, "2w 1d"),
    (31557600 + 2629800 * 2, "1y 2month"), (-5, "0s"),
])
def test_format_span(seconds, text):
    assert format_span(seconds) == text


def test_relative_edge_cases():
    point = timer("skew.timer", "ok", last_trigger=NOW + 120, next_elapse=NOW,
                  last_success=NOW + 120)
    row = render_table([point], NOW, color=False).split("\n")[1]
    # NEXT is this very second; a LAST in the future (clock stepped back) says so.
    assert "UTC  now  " in row
    assert "2min left" in row


@pytest.mark.parametrize("fields, text", [
    ({"last_result": "success", "last_exit_code": 0, "last_exit_kind": "exited"}, "success"),
    ({"last_result": "exit-code", "last_exit_code": 3, "last_exit_kind": "exited"},
     "exit-code (3)"),
    ({"last_result": "signal", "last_exit_code": 15, "last_exit_kind": "killed"}, "signal (15)"),
    ({"last_result": "core-dump", "last_exit_code": 11, "last_exit_kind": "dumped"},
     "core-dump (11)"),
    ({"last_result": "success", "last_exit_code": 0, "last_exit_kind": "none"}, "-"),
    # Refused to start: no process, no exit status, but the reason matters.
    ({"last_result": "start-limit-hit", "last_exit_code": 0, "last_exit_kind": "none"},
     "start-limit-hit"),
    ({}, "-"),  # the service could not be read (read_error): no service fields
])
def test_result_column(fields, text):
    point = Point("systemd_timer", {"timer": "t.timer", "service": "t.service"},
                  {"state": "ok", "healthy": True, **fields})
    row = render_table([point], NOW, color=False).split("\n")[1]
    assert re.split(r"\s{2,}", row)[7] == text


def test_json_has_every_field_sorted_by_timer():
    points = realistic()
    document = json.loads(render_json(points, NOW))
    assert list(document) == ["timers", "containers", "problems", "healthy"]
    assert document["healthy"] is False
    timers = document["timers"]
    names = [t["timer"] for t in timers]
    assert names == sorted(names) and len(names) == 12
    by_name = {p.tags["timer"]: p for p in points if p.measurement == "systemd_timer"}
    newer = ["consecutive_failures", "expected_at", "last_success", "missed_runs", "overdue_s"]
    for entry in timers:
        point = by_name[entry["timer"]]
        assert list(entry)[:4] == ["timer", "service", "host", "manager"]
        assert {k: entry[k] for k in ("service", "host", "manager")} == {
            k: point.tags[k] for k in ("service", "host", "manager")}
        for name, value in point.fields.items():
            assert entry[name] == value and type(entry[name]) is type(value), name
        assert list(entry)[4:] == sorted(set(point.fields) | set(newer))
    old = timers[names.index('db dump "nightly".timer')]
    assert {k: old[k] for k in newer} == dict.fromkeys(newer, 0)
    assert old["manager"] == "user" and old["service"] == 'db dump "nightly".service'
    # Stable: the same points in another order give the same bytes.
    assert render_json(list(reversed(points)), NOW) == render_json(points, NOW)


def test_json_healthy_and_empty():
    healthy = [p for p in realistic() if p.fields.get("healthy") is not False]
    document = json.loads(render_json(healthy, NOW))
    assert document["healthy"] is True
    assert [t["state"] for t in document["timers"]] == ["ok", "ok", "running", "inactive", "ok"]
    assert json.loads(render_json([], NOW)) == {"timers": [], "containers": [], "problems": [],
                                                "healthy": True}


def test_json_is_strict():
    point = timer("nan.timer", "ok", next_elapse=NOW + 60, overdue_s=float("nan"))
    text = render_json([point], NOW)
    assert "NaN" not in text
    assert json.loads(text)["timers"][0]["overdue_s"] is None


def test_exit_code():
    points = realistic()
    assert exit_code(points) == 1
    assert exit_code([p for p in points if p.fields.get("healthy") is not False]) == 0
    assert exit_code([]) == 0
    assert exit_code([p for p in points if p.measurement != "systemd_timer"]) == 0
    # One unhealthy timer is enough: a stopped backup is one, a timer nobody expects
    # to run (inactive) is not.
    by_name = {p.tags.get("timer"): p for p in points}
    assert exit_code([by_name["backup.timer"], by_name["offsite-sync.timer"]]) == 1
    assert exit_code([by_name["backup.timer"], by_name["nas-backup.timer"]]) == 1
    assert exit_code([by_name["backup.timer"], by_name["usb-backup.timer"]]) == 1
    assert exit_code([by_name["backup.timer"], by_name["old-report.timer"]]) == 0
    # A point without a verdict is not a healthy one.
    assert exit_code([Point("systemd_timer", {"timer": "x.timer"}, {"state": "ok"})]) == 1


class FakeStream:
    def __init__(self, tty: bool):
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_should_color(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    assert should_color(FakeStream(True)) is True
    assert should_color(FakeStream(False)) is False
    assert should_color(io.StringIO()) is False
    assert should_color(object()) is False  # no isatty at all
    closed = io.StringIO()
    closed.close()
    assert should_color(closed) is False  # isatty raises ValueError

    monkeypatch.setenv("NO_COLOR", "1")
    assert should_color(FakeStream(True)) is False
    # no-color.org: set "and not an empty string" disables colour.
    monkeypatch.setenv("NO_COLOR", "")
    assert should_color(FakeStream(True)) is True

    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setenv("TERM", "dumb")
    assert should_color(FakeStream(True)) is False
    monkeypatch.delenv("TERM")
    assert should_color(FakeStream(True)) is True


def test_containers_table_and_problems():
    from exporter.status import exit_code, problems, render_containers
    memory = [
        Point("container_memory", {"container": "db", "image": "postgres:15", "cgroup": "v2"},
              {"usage_bytes": 52428800, "limit_bytes": 67108864, "usage_percent": 78.125,
               "working_set_bytes": 48234496, "oom_kills": 2}, 0),
        Point("container_memory", {"container": "web", "image": "nginx"},
              {"usage_bytes": 8388608, "limit_bytes": 0, "working_set_bytes": 7340032,
               "oom_kills": 0}, 0),
    ]
    assert render_containers(memory) == (
        "CONTAINER  IMAGE        MEMORY / LIMIT           WORKING SET  OOM KILLS\n"
        "db         postgres:15  50.0MiB / 64.0MiB (78%)  46.0MiB      2\n"
        "web        nginx        8.0MiB / -               7.0MiB       -")
    assert render_containers([]) == ""
    disabled = Point("exporter", {"component": "memory"}, {
        "success": False, "last_error": "the memory cgroup controller is disabled; add "
        "cgroup_enable=memory cgroup_memory=1 to /boot/cmdline.txt and reboot"}, 0)
    heartbeat = Point("exporter", {"component": "agent"}, {"up": True}, 0)
    assert problems(memory + [disabled, heartbeat]) == [
        "memory: the memory cgroup controller is disabled; add cgroup_enable=memory "
        "cgroup_memory=1 to /boot/cmdline.txt and reboot"]
    assert exit_code(memory + [heartbeat]) == 0 and exit_code([disabled]) == 1
