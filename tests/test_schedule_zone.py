"""The zone OnCalendar is judged in: candidates checked against systemd's per-spec next
elapse (exporter/schedule_zone.py), the adapters that read them (exporter/sources/zones.py)
on fixture files and fake bus answers, and the collector's verdicts. The real manager:
tests/test_schedule_zone_live.py."""

import asyncio
import importlib.resources
import logging
import os
import zoneinfo
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from exporter.clock import Now
from exporter.collectors.timers import TimersCollector
from exporter.config import load_config
from exporter.schedule import occurrences, to_usec
from exporter.schedule_zone import Candidate, Check, ZoneFinder, agrees, names_zone
from exporter.sources.systemd_dbus import TimerRecord, TimersSnapshot, UnitRecord
from exporter.sources.zones import (ZoneSources, agent_candidate, zone_from_localtime,
                                    zone_from_tz)

PARIS, UTC, KOLKATA = ZoneInfo("Europe/Paris"), ZoneInfo("UTC"), ZoneInfo("Asia/Kolkata")


def zone_bytes(key: str) -> bytes:
    """A zone's TZif file, from the system's zoneinfo or the tzdata package (where
    zoneinfo finds it: the armhf test image)."""
    for directory in zoneinfo.TZPATH:
        if os.path.isfile(os.path.join(directory, key)):
            with open(os.path.join(directory, key), "rb") as handle:
                return handle.read()
    return importlib.resources.files("tzdata.zoneinfo").joinpath(key).read_bytes()


def us(text: str, zone=timezone.utc) -> int:
    return to_usec(datetime.fromisoformat(text).replace(tzinfo=zone))


def candidates(*pairs):
    return [Candidate(str(zone), source, zone) for zone, source in pairs]


# --- the check ---------------------------------------------------------------------------

def test_a_next_elapse_agrees_only_with_the_zone_it_was_computed_in():
    paris_4am = Check("backup.timer", "*-*-* 04:00:00", us("2026-12-03 04:00", PARIS))
    assert agrees(paris_4am, PARIS)
    assert not agrees(paris_4am, UTC) and not agrees(paris_4am, KOLKATA)
    # Half-hour offsets are told apart too.
    kolkata = Check("t", "*-*-* 04:00:00", us("2026-12-03 04:00", KOLKATA))
    assert agrees(kolkata, KOLKATA) and not agrees(kolkata, UTC)
    # A spec with its own zone agrees whatever the manager's is.
    own = Check("t", "*-*-* 04:00:00 UTC", us("2026-12-03 04:00"))
    assert agrees(own, PARIS) and agrees(own, UTC)
    # ... so it is not used as evidence.
    assert names_zone("*-*-* 04:00:00 UTC") and names_zone("Mon *-*-* 04:00:00 Europe/Paris")
    assert not names_zone("*-*-* 04:00:00") and not names_zone("daily")


def test_the_first_agreeing_candidate_wins_and_later_ones_do_not_matter():
    finder = ZoneFinder(candidates((UTC, "agent"), (PARIS, "host"), (PARIS, "agent")))
    check = Check("backup.timer", "*-*-* 04:00:00", us("2026-12-03 04:00", PARIS))
    finder.decide([check])
    verdict = finder.verdict("backup.timer", [check])
    assert (verdict.candidate.source, verdict.candidate.zone, verdict.checked) == ("host", PARIS, True)
    # A stopped timer (no next elapse of its own) is judged in the zone found.
    stopped = finder.verdict("stopped.timer", [])
    assert stopped.candidate.zone is PARIS and stopped.checked is True


def test_no_agreeing_zone_means_no_zone_and_says_why():
    finder = ZoneFinder(candidates((UTC, "agent")))
    check = Check("backup.timer", "*-*-* 04:00:00", us("2026-12-03 04:00", PARIS))
    finder.decide([check])
    for verdict in (finder.verdict("backup.timer", [check]), finder.verdict("stopped.timer", [])):
        assert verdict.candidate is None and verdict.checked is False
        assert "'*-*-* 04:00:00'" in verdict.error and "UTC (agent)" in verdict.error


def test_with_nothing_to_check_the_best_source_is_used_unchecked_and_a_found_zone_stays():
    finder = ZoneFinder(candidates((KOLKATA, "config"), (PARIS, "host")))
    finder.decide([])
    verdict = finder.verdict("stopped.timer", [])
    assert verdict.candidate.zone is KOLKATA and verdict.checked is False
    check = Check("backup.timer", "*-*-* 04:00:00", us("2026-12-03 04:00", PARIS))
    finder.decide([check])
    # The only armed timer now runs (no next elapse): the zone found stays, checked.
    finder.decide([])
    verdict = finder.verdict("stopped.timer", [])
    assert verdict.candidate.zone is PARIS and verdict.checked is True


def test_a_timer_the_winner_disagrees_with_is_judged_by_systemd():
    finder = ZoneFinder(candidates((PARIS, "host"), (UTC, "agent")))
    good = [Check(f"t{i}.timer", "*-*-* 04:00:00", us("2026-12-03 04:00", PARIS)) for i in range(2)]
    odd = Check("odd.timer", "*-*-* 04:00:00", us("2026-12-03 04:17", PARIS))
    finder.decide(good + [odd])
    assert finder.verdict("t0.timer", good[:1]).candidate.zone is PARIS
    assert finder.verdict("odd.timer", [odd]).candidate is None


def test_each_check_is_computed_once_per_zone(monkeypatch):
    calls = []
    import exporter.schedule_zone as module
    real = module.agrees
    monkeypatch.setattr(module, "agrees", lambda check, zone: calls.append(zone) or real(check, zone))
    finder = ZoneFinder(candidates((UTC, "agent"), (PARIS, "host")))
    check = Check("backup.timer", "*-*-* 04:00:00", us("2026-12-03 04:00", PARIS))
    for _sample in range(5):
        finder.decide([check])
        finder.verdict("backup.timer", [check])
    assert len(calls) == 2
    moved = Check("backup.timer", "*-*-* 04:00:00", us("2026-12-04 04:00", PARIS))
    finder.decide([moved])  # the timer elapsed: its new next elapse is checked
    assert len(calls) == 4


def test_one_log_line_for_a_disagreement_not_one_per_sample(caplog):
    finder = ZoneFinder(candidates((UTC, "agent"), (PARIS, "host")), manager="system")
    check = Check("backup.timer", "*-*-* 04:00:00", us("2026-12-03 04:00", PARIS))
    with caplog.at_level(logging.DEBUG, logger="tick_exporter.timers"):
        for day in range(3, 6):  # three elapses, one decision
            for _sample in range(3):
                finder.decide([Check(check.timer, check.spec, us(f"2026-12-0{day} 04:00", PARIS))])
            finder.decide([])  # running between elapses
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and len(caplog.records) == 1
    message = warnings[0].getMessage()
    assert "Europe/Paris (host)" in message and "UTC (agent) 0/1" in message


# --- the adapters -------------------------------------------------------------------------

def test_tz_values_as_glibc_reads_them(tmp_path):
    assert zone_from_tz(":Europe/Paris", "manager").zone is PARIS
    assert zone_from_tz("Asia/Kolkata", "agent").zone is KOLKATA
    path = str(tmp_path / "New_York")
    (tmp_path / "New_York").write_bytes(zone_bytes("America/New_York"))
    by_path = zone_from_tz(path, "manager")
    assert by_path.name == path
    assert by_path.zone.utcoffset(datetime(2026, 7, 1)) == ZoneInfo("America/New_York").utcoffset(
        datetime(2026, 7, 1))
    tzdir = tmp_path / "zones"
    tzdir.mkdir()
    (tzdir / "Mine").write_bytes(zone_bytes("Asia/Kolkata"))
    assert zone_from_tz("Mine", "manager", tzdir=str(tzdir)).zone.utcoffset(
        datetime(2026, 1, 1)).total_seconds() == 5.5 * 3600
    # POSIX rule strings and unknown names are not read (the check would fail anyway).
    assert zone_from_tz("CET-1CEST,M3.5.0,M10.5.0/3", "manager") is None
    assert zone_from_tz("Nowhere/Atlantis", "manager") is None


def fake_root(tmp_path, link_target: str, zone_name: str, mounted=()):
    """A manager's root: etc/localtime -> link_target, which holds zone_name's file."""
    root = tmp_path / "42" / "root"
    (root / "etc").mkdir(parents=True)
    target = root / link_target.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(zone_bytes(zone_name))
    os.symlink(link_target, root / "etc" / "localtime")
    (tmp_path / "42" / "mountinfo").write_text("".join(
        f"{i} 1 0:1 / {point} rw - tmpfs none rw\n" for i, point in enumerate(("/",) + mounted)))
    return str(root)


def test_localtime_symlinks_are_followed_under_the_managers_root(tmp_path):
    # An absolute link is the manager's path, not the agent's: the agent's own
    # /usr/share/zoneinfo/Europe/Paris is never read.
    root = fake_root(tmp_path, "/usr/share/zoneinfo/Europe/Paris", "Asia/Kolkata")
    found = zone_from_localtime("/etc/localtime", "host", root)
    assert found.name == "Europe/Paris"  # the name the manager's link gives
    assert found.zone.utcoffset(datetime(2026, 1, 1)).total_seconds() == 5.5 * 3600  # its contents


def test_a_relative_localtime_link(tmp_path):
    fake_root(tmp_path, "/usr/share/zoneinfo/Europe/Paris", "Europe/Paris")
    root = tmp_path / "42" / "root"
    (root / "etc" / "localtime").unlink()
    os.symlink("../usr/share/zoneinfo/Europe/Paris", root / "etc" / "localtime")
    found = zone_from_localtime("/etc/localtime", "host", str(root))
    assert found.name == "Europe/Paris" and found.zone.utcoffset(datetime(2026, 1, 1)).total_seconds() == 3600


def test_a_zone_file_mounted_over_the_link_target_is_named_by_its_contents(tmp_path):
    root = fake_root(tmp_path, "/usr/share/zoneinfo/Etc/UTC", "Europe/Paris",
                     mounted=("/usr/share/zoneinfo/Etc/UTC",))
    found = zone_from_localtime("/etc/localtime", "host", root)
    assert found.name == "/etc/localtime (CET-1CEST,M3.5.0,M10.5.0/3)"


def test_the_agents_own_zone(tmp_path):
    assert agent_candidate({"TZ": "Asia/Kolkata"}).zone is KOLKATA
    (tmp_path / "zoneinfo" / "Europe").mkdir(parents=True)
    (tmp_path / "zoneinfo" / "Europe" / "Paris").write_bytes(zone_bytes("Europe/Paris"))
    localtime = tmp_path / "localtime"
    os.symlink(tmp_path / "zoneinfo" / "Europe" / "Paris", localtime)
    assert agent_candidate({}, str(localtime)).name == "Europe/Paris"
    missing = agent_candidate({}, str(tmp_path / "none"))
    assert (missing.name, missing.zone) == ("UTC", timezone.utc)


class FakeManager:
    """What ZoneSources asks the SystemdBus: the Environment property and the PID."""

    def __init__(self, environment, pid):
        self.environment, self.pid = environment, pid

    async def manager_environment(self):
        return self.environment

    async def manager_pid(self):
        return self.pid


def test_sources_in_order(tmp_path):
    root = fake_root(tmp_path, "/usr/share/zoneinfo/Europe/Paris", "Europe/Paris")
    (tmp_path / "42" / "environ").write_bytes(b"HOME=/root\0TZ=America/New_York\0")
    manager = FakeManager(["HOME=/root", "TZ=Asia/Kolkata"], 42)  # set-environment TZ=...
    sources = ZoneSources(manager, "Europe/Berlin", system_bus=f"unix:path={tmp_path}/none",
                          proc_root=str(tmp_path), environ={"TZ": "UTC"})
    found = asyncio.run(sources.read())
    assert [(c.name, c.source) for c in found] == [
        ("Europe/Berlin", "config"), ("America/New_York", "manager"), ("Asia/Kolkata", "manager"),
        ("Europe/Paris", "host"), ("UTC", "agent")]
    assert root.endswith("42/root")


def test_sources_when_the_bus_fails(tmp_path):
    class Broken:
        async def manager_environment(self):
            raise ConnectionError("no bus")

    found = asyncio.run(ZoneSources(Broken(), system_bus=f"unix:path={tmp_path}/none",
                                    proc_root=str(tmp_path), environ={"TZ": "UTC"}).read())
    assert [(c.name, c.source) for c in found] == [("UTC", "agent")]


# --- the collector ------------------------------------------------------------------------

class Sources:
    def __init__(self, *found):
        self.found, self.reads = list(found), 0

    async def read(self):
        self.reads += 1
        return self.found


def timer(name, spec, next_us, last_run_us, active=True):
    props = {"Unit": name.replace(".timer", ".service"), "AccuracyUSec": 60_000_000,
             "RandomizedDelayUSec": 0, "LastTriggerUSec": last_run_us, "Persistent": False,
             "NextElapseUSecRealtime": next_us if active else 0, "NextElapseUSecMonotonic": 0,
             "TimersCalendar": [["OnCalendar", spec, next_us if active else 0]], "TimersMonotonic": []}
    service = UnitRecord(name.replace(".timer", ".service"), "loaded", "inactive", "dead", {
        "Result": "success", "ExecMainCode": 1, "ExecMainStatus": 0,
        "ExecMainStartTimestamp": last_run_us, "ExecMainExitTimestamp": last_run_us + 1_000_000})
    return TimerRecord(UnitRecord(name, "loaded", *(("active", "waiting") if active else ("inactive", "dead")),
                                  props), service, "", last_run_us)


def now_at(realtime_us):
    return Now(realtime_us=realtime_us, monotonic_us=10**12)


def sample(sources, timers, now_us):
    config = load_config(None, {}).timers
    collector = TimersCollector(None, config, "h", zone_sources=sources)
    snapshot = TimersSnapshot("system", timers)
    asyncio.run(collector.find_zone(snapshot, now_at(now_us)))
    points = collector.points(snapshot, now_at(now_us))
    return {p.tags["timer"]: p.fields for p in points if p.measurement == "systemd_timer"}, collector


def paris_backup_at_4_10_utc():
    """A Pi in Paris: the 04:00 backup ran at 04:00 CET (03:00 UTC); it is 04:10 UTC, past
    a UTC-evaluated 04:00 plus grace (5 min + AccuracySec 1 min)."""
    ran = us("2026-12-02 04:00", PARIS)
    armed = timer("backup.timer", "*-*-* 04:00:00", us("2026-12-03 04:00", PARIS), ran)
    stopped = timer("stopped.timer", "*-*-* 04:00:00", 0, us("2026-12-01 04:00", PARIS), active=False)
    return [armed, stopped], us("2026-12-02 04:10")


def test_the_false_missed_of_a_container_in_utc_is_gone():
    timers, now = paris_backup_at_4_10_utc()
    # Evaluated in the container's UTC, 04:00 UTC came after the run and its grace passed.
    ran = us("2026-12-02 04:00", PARIS)
    assert occurrences(["*-*-* 04:00:00"], ran, now - 6 * 60 * 10**6, UTC) == [us("2026-12-02 04:00")]
    utc = Candidate("Etc/UTC", "agent", UTC)
    fields, _ = sample(Sources(Candidate("Europe/Paris", "host", PARIS), utc), timers, now)
    backup = fields["backup.timer"]
    assert backup["state"] == "ok" and backup["missed_runs"] == 0
    assert backup["expected_at"] == us("2026-12-02 04:00", PARIS) // 10**6
    assert (backup["schedule_zone"], backup["schedule_zone_source"], backup["schedule_zone_checked"]) == (
        "Europe/Paris", "host", True)
    assert "schedule_error" not in backup
    # The stopped timer is judged in the zone the armed one proved: due at 04:00 CET.
    stopped = fields["stopped.timer"]
    assert stopped["state"] == "missed" and stopped["schedule_zone"] == "Europe/Paris"
    assert stopped["overdue_s"] == (now - us("2026-12-02 04:00", PARIS)) / 1e6


def test_without_an_agreeing_zone_systemd_wins():
    timers, now = paris_backup_at_4_10_utc()
    fields, _ = sample(Sources(Candidate("Etc/UTC", "agent", UTC)), timers, now)
    backup = fields["backup.timer"]
    assert backup["state"] == "ok" and backup["missed_runs"] == 0  # not the false missed
    assert "matches no zone tried (Etc/UTC (agent))" in backup["schedule_error"]
    assert "schedule_zone" not in backup


def test_candidates_are_read_once_while_systemd_agrees():
    timers, now = paris_backup_at_4_10_utc()
    sources = Sources(Candidate("Europe/Paris", "host", PARIS))
    _fields, collector = sample(sources, timers, now)
    snapshot = TimersSnapshot("system", timers)
    for step in range(3):
        asyncio.run(collector.find_zone(snapshot, now_at(now + step)))
    assert sources.reads == 1
