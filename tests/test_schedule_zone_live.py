"""The agent judges OnCalendar in the zone systemd uses, against real user managers, run
as a user runs it (`tick-exporter once`, a subprocess): with a TZ other than the
manager's (half an hour off, and west of UTC), in its own mount namespace with another
/etc/localtime bind-mounted over (exactly the container case), against a manager whose
own TZ is Europe/Paris, and across a DST change a few seconds ahead (a zone compiled
with zic), checked against `systemd-analyze calendar`.

Each daily timer is set to the wall time, in the agent's (wrong) zone, of a moment a few
seconds after it is armed: evaluated there, that occurrence comes after the timer was
armed and its grace passes with no run, a false `missed`. In the manager's zone the same
wall time passed hours ago."""

import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from exporter.schedule import occurrences, to_datetime
from exporter.sources.zones import zone_from_tz
from tests.lineproto import parse
from tests.services import UserManager, wait_until
from tests.test_schedule_systemd import systemd_elapses

SECOND = 1_000_000
ZONEINFO = "/usr/share/zoneinfo"
COMPARED = ("expected_at", "next_elapse", "state", "missed_runs")
AHEAD_S = 12  # the wrong zone's occurrence, after arming


def wall_time_in(zone, unix_s: float) -> str:
    return to_datetime(int(unix_s) * SECOND, zone).strftime("%H:%M:%S")


def install_daily(manager, name: str, wall: str) -> int:
    """A daily timer at `wall` (manager's zone), armed now: its ActiveEnterTimestamp."""
    manager.write_unit(f"{name}.service", "[Service]\nType=oneshot\nExecStart=/bin/true\n")
    manager.write_unit(f"{name}.timer", f"[Timer]\nOnCalendar=*-*-* {wall}\nAccuracySec=1s\n")
    manager.daemon_reload()
    manager.systemctl("start", f"{name}.timer")
    return manager.bus_property(f"{name}.timer", "Unit", "ActiveEnterTimestamp")


def agent_once(manager, tmp_path, include: str, *, tz: str | None = None, localtime: str = ""):
    """`tick-exporter once`: {timer: fields}, and its stderr. `localtime`: run it in its
    own mount namespace with that zone file bind-mounted over /etc/localtime (no TZ)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICK_EXPORTER_") and k != "TZ"}
    env.update(TICK_EXPORTER_TIMERS_BUS=manager.bus_address, TICK_EXPORTER_TIMERS_INCLUDE=include,
               TICK_EXPORTER_TIMERS_GRACE="1s",
               TICK_EXPORTER_AGENT_STATE_PATH=str(tmp_path / f"state-{time.monotonic_ns()}.json"))
    if tz is not None:
        env["TZ"] = tz
    command = [sys.executable, "-m", "exporter", "once"]
    if localtime:
        command = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                   'mount --bind "$0" /etc/localtime && exec "$@"', localtime, *command]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return ({p.tags["timer"]: p.fields for p in parse(done.stdout)
             if p.measurement == "systemd_timer"}, done.stderr)


def falsely_missed_in(zone, spec_wall: str, armed_us: int, now_us: int) -> bool:
    """Evaluated in `zone`, the spec had an occurrence after arming whose grace (1 s +
    AccuracySec 1 s) has passed: what the agent reported before it checked its zone."""
    return bool(occurrences([f"*-*-* {spec_wall}"], armed_us, now_us - 2 * SECOND, zone))


def test_other_tz_and_own_mount_namespace_judge_as_systemd(user_manager, tmp_path):
    """The session's manager evaluates in UTC (its /etc/localtime, no TZ)."""
    walls, armed, due = {}, {}, 0.0
    for name, zone in (("kolkata", "Asia/Kolkata"), ("newyork", "America/New_York")):
        due = time.time() + AHEAD_S
        walls[name] = wall_time_in(ZoneInfo(zone), due)
        armed[name] = install_daily(user_manager, f"zone-{name}", walls[name])
        assert armed[name] < due * SECOND, "armed after its wrong-zone time: machine too slow?"
    wait_until(lambda: time.time() > due + 3, 30, 0.2, "the wrong zone's grace")
    runs = {
        "agreeing": agent_once(user_manager, tmp_path, "zone-*", tz="UTC"),
        "Asia/Kolkata": agent_once(user_manager, tmp_path, "zone-*", tz="Asia/Kolkata"),
        "America/New_York": agent_once(user_manager, tmp_path, "zone-*", tz="America/New_York"),
        "namespace": agent_once(user_manager, tmp_path, "zone-*",
                                localtime=f"{ZONEINFO}/Asia/Kolkata"),
    }
    now_us = int(time.time() * SECOND)
    assert falsely_missed_in(ZoneInfo("Asia/Kolkata"), walls["kolkata"], armed["kolkata"], now_us)
    assert falsely_missed_in(ZoneInfo("America/New_York"), walls["newyork"], armed["newyork"], now_us)
    reference = runs["agreeing"][0]
    for name in walls:
        timer = f"zone-{name}.timer"
        fields = reference[timer]
        calendar = user_manager.bus_property(timer, "Timer", "TimersCalendar")
        assert fields["state"] == "ok" and fields["next_elapse"] == calendar[0][2] // SECOND
        # The occurrence systemd used: a day before its next one (UTC has no DST).
        assert fields["expected_at"] == fields["next_elapse"] - 86400
        for how, (points, stderr) in runs.items():
            got = points[timer]
            assert {k: got[k] for k in COMPARED} == {k: fields[k] for k in COMPARED}, (how, got)
            assert (got["schedule_zone"], got["schedule_zone_source"], got["schedule_zone_checked"]) \
                == ("Etc/UTC", "host", True), (how, got)
            assert "schedule_error" not in got
    # The disagreeing agents said so once, naming the zone they tried and the one that matched.
    for how in ("Asia/Kolkata", "America/New_York"):
        (line,) = [line for line in runs[how][1].splitlines() if "OnCalendar" in line]
        assert f"{how} (agent) 0/" in line and "evaluated in Etc/UTC (host)" in line, line
    (line,) = [line for line in runs["namespace"][1].splitlines() if "OnCalendar" in line]
    assert "/etc/localtime (IST-5:30) (agent) 0/" in line, line
    assert runs["agreeing"][1] == ""
    user_manager.systemctl("stop", "zone-kolkata.timer", "zone-newyork.timer")


def test_a_manager_in_paris_and_an_agent_in_utc(tmp_path):
    """The README's Pi: the manager's zone is Europe/Paris, the agent's container UTC."""
    with UserManager(environment={"TZ": "Europe/Paris"}) as manager:
        arm_at = time.time()
        wall = wall_time_in(timezone.utc, arm_at + AHEAD_S)
        armed = install_daily(manager, "zone-paris", wall)
        # `set-environment` changes the Environment property (what units get), not the
        # zone the manager itself evaluates in: the next elapse stays a Paris one.
        manager.systemctl("set-environment", "TZ=Asia/Kolkata")
        manager.systemctl("restart", "zone-paris.timer")
        rearmed = manager.bus_property("zone-paris.timer", "Unit", "ActiveEnterTimestamp")
        assert rearmed < (arm_at + AHEAD_S) * SECOND, "re-armed after its UTC time: machine too slow?"
        (_base, spec, next_us), = manager.bus_property("zone-paris.timer", "Timer", "TimersCalendar")
        paris_next = datetime.now(ZoneInfo("Europe/Paris")).replace(
            hour=int(wall[:2]), minute=int(wall[3:5]), second=int(wall[6:]), microsecond=0)
        if paris_next.timestamp() <= time.time():
            paris_next += timedelta(days=1)
        assert next_us // SECOND == int(paris_next.timestamp())
        wait_until(lambda: time.time() > arm_at + AHEAD_S + 3, 30, 0.2, "the wrong zone's grace")
        in_utc, stderr = agent_once(manager, tmp_path, "zone-*", tz="UTC")
        in_paris, _ = agent_once(manager, tmp_path, "zone-*", tz="Europe/Paris")
        assert falsely_missed_in(timezone.utc, wall, armed, int(time.time() * SECOND))
        got, agreeing = in_utc["zone-paris.timer"], in_paris["zone-paris.timer"]
        assert {k: got[k] for k in COMPARED} == {k: agreeing[k] for k in COMPARED}
        assert got["state"] == "ok" and got["next_elapse"] == next_us // SECOND
        assert got["expected_at"] == int((paris_next - timedelta(days=1)).timestamp())
        # From the manager process's own environment, not the Environment property.
        assert (got["schedule_zone"], got["schedule_zone_source"]) == ("Europe/Paris", "manager")
        (line,) = [line for line in stderr.splitlines() if "OnCalendar" in line]
        assert "Asia/Kolkata (manager) 0/1" in line and "UTC (agent) 0/1" in line, line


ZIC_SOURCE = """\
# Standard time +01 until {at} UTC, then daylight saving time +02 (a spring-forward).
Rule\tShift\t{year}\tonly\t-\t{month}\t{day}\t{time}u\t1:00\t-
Zone\tTest/Shift\t1:00\tShift\t+01/+02
"""


def compile_zone(tmp_path, at: datetime) -> str:
    source = tmp_path / "shift.zi"
    source.write_text(ZIC_SOURCE.format(at=at.isoformat(), year=at.year, month=at.strftime("%b"),
                                        day=at.day, time=at.strftime("%H:%M:%S")))
    subprocess.run(["zic", "-d", str(tmp_path / "zones"), str(source)], check=True, timeout=30)
    return str(tmp_path / "zones" / "Test" / "Shift")


def test_a_dst_change_seconds_ahead(tmp_path):
    """Manager and agent with TZ pointing at a zone whose clocks go forward by an hour
    in a few seconds; one timer after the change, one in the skipped hour."""
    shift = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=30)
    path = compile_zone(tmp_path, shift)
    zone = zone_from_tz(path, "test").zone
    after = wall_time_in(zone, shift.timestamp() + 10)          # +02, 10 s after the change
    skipped = wall_time_in(timezone(timedelta(hours=1)), shift.timestamp() + 1800)  # never today
    specs = {"dst-after": f"*-*-* {after}", "dst-skipped": f"*-*-* {skipped}"}
    with UserManager(environment={"TZ": path}) as manager:
        for name, spec in specs.items():
            install_daily(manager, name, spec.split()[-1])
        base = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        expected = systemd_elapses(tuple(specs.values()), base, path, 2)
        for name, spec in specs.items():
            (_b, _s, next_us), = manager.bus_property(f"{name}.timer", "Timer", "TimersCalendar")
            assert next_us == expected[spec]["elapses"][0], name
        # In the new offset (in the old one, that wall time would come an hour later);
        # the skipped hour's wall time does not come today at all.
        assert expected[specs["dst-after"]]["elapses"][0] // SECOND == int(shift.timestamp()) + 10
        skipped_next = expected[specs["dst-skipped"]]["elapses"][0] // SECOND
        assert skipped_next != int(shift.timestamp()) + 1800
        assert shift.timestamp() < skipped_next < shift.timestamp() + 86400 + 3600
        for tz in (path, "UTC"):
            points, _ = agent_once(manager, tmp_path, "dst-*", tz=tz)
            for name, spec in specs.items():
                got = points[f"{name}.timer"]
                assert got["next_elapse"] == expected[spec]["elapses"][0] // SECOND
                assert (got["schedule_zone"], got["schedule_zone_checked"]) == (path, True), got
                assert got["state"] == "ok" and "schedule_error" not in got
        # The change passes and the timer after it fires, on time in the new offset.
        wait_until(lambda: manager.bus_property("dst-after.service", "Service",
                                                "ExecMainExitTimestamp") > 0, 60, 0.5,
                   "dst-after.service to run")
        points, _ = agent_once(manager, tmp_path, "dst-*", tz="UTC")
        got = points["dst-after.timer"]
        assert got["state"] == "ok" and got["expected_at"] == int(shift.timestamp()) + 10
        assert got["next_elapse"] == expected[specs["dst-after"]]["elapses"][1] // SECOND
