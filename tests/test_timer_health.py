"""Timer health with an injected clock: long schedules (daily, weekly, monthly, DST days)
judged in microseconds without waiting for them."""

from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from exporter.schedule import to_usec
from exporter.timer_health import HEALTHY, PRECEDENCE, TimerFacts, evaluate, expects_armed

BERLIN = ZoneInfo("Europe/Berlin")
UTC = ZoneInfo("UTC")
MIN = 60_000_000
HOUR = 60 * MIN
DAY = 24 * HOUR
GRACE = 5 * MIN


def at(text, zone=UTC):
    return to_usec(datetime.fromisoformat(text).replace(tzinfo=zone))


def facts(calendar=("*-*-* 04:00:00",), **overrides):
    values = dict(calendar=list(calendar), monotonic=[], armed=True, next_elapse_us=0,
                  remembered_next_us=0, last_trigger_us=0, last_run_start_us=0,
                  service_known=True, start_queued=False, armed_since_us=0, running=False,
                  last_failed=False)
    values.update(overrides)
    return TimerFacts(**values)


def judge(f, now, zone=UTC, max_runtime=0, run_started=0, grace=GRACE):
    return evaluate(f, now, grace, max_runtime, run_started, zone)


def test_daily_backup_that_ran_is_ok():
    ran = at("2026-11-25 04:00:03")
    health = judge(facts(last_run_start_us=ran, last_trigger_us=ran,
                         next_elapse_us=at("2026-11-26 04:00:00")), at("2026-11-25 09:00:00"))
    assert (health.state, health.expected_at_us, health.overdue_s, health.missed_runs) == (
        "ok", at("2026-11-25 04:00:00"), 0.0, 0)


def test_within_grace_is_not_late_yet():
    ran = at("2026-11-24 04:00:01")
    f = facts(last_run_start_us=ran, next_elapse_us=at("2026-11-25 04:00:00"))
    assert judge(f, at("2026-11-25 04:04:59")).state == "ok"


def test_host_off_at_run_time_without_persistent_is_missed():
    # Last run yesterday; the host was off at 04:00 and booted at 08:00. systemd (no
    # Persistent=true) moved on to tomorrow: today's run will never happen.
    f = facts(last_run_start_us=at("2026-11-24 04:00:02"), next_elapse_us=at("2026-11-26 04:00:00"),
              armed_since_us=at("2026-11-25 08:00:00"))
    health = judge(f, at("2026-11-25 09:00:00"))
    assert (health.state, health.missed_runs) == ("missed", 1)
    assert health.overdue_s == 5 * 3600
    assert health.expected_at_us == at("2026-11-25 04:00:00")


def test_persistent_catch_up_run_clears_missed():
    catch_up = at("2026-11-25 08:00:30")
    f = facts(last_run_start_us=catch_up, next_elapse_us=at("2026-11-26 04:00:00"))
    assert judge(f, at("2026-11-25 09:00:00")).state == "ok"


def test_start_job_waiting_is_late_then_missed_when_the_next_run_comes():
    f = facts(last_run_start_us=at("2026-11-24 04:00:02"), last_trigger_us=at("2026-11-25 04:00:00"),
              next_elapse_us=at("2026-11-26 04:00:00"), start_queued=True)
    late = judge(f, at("2026-11-25 04:30:00"))
    assert (late.state, late.missed_runs, late.overdue_s) == ("late", 0, 1800.0)
    later = judge(f, at("2026-11-26 05:00:00"))  # the whole next day passed as well
    assert (later.state, later.missed_runs) == ("missed", 1)


def test_stopped_timer_is_stopped_until_its_next_due_time_then_missed_counting_up():
    ran = at("2026-11-25 04:00:02")
    stopped = facts(armed=False, last_run_start_us=ran)
    assert judge(stopped, at("2026-11-25 12:00:00")).state == "stopped"
    assert judge(stopped, at("2026-11-26 04:04:00")).state == "stopped"  # within grace
    one = judge(stopped, at("2026-11-26 04:06:00"))
    assert (one.state, one.missed_runs) == ("missed", 1)
    three = judge(stopped, at("2026-11-28 04:06:00"))
    assert (three.state, three.missed_runs, three.overdue_s) == ("missed", 3, 2 * 86400 + 360)


def test_watched_timer_stopped_before_it_ever_ran_is_stopped_not_healthy():
    health = judge(facts(armed=False), at("2026-11-25 12:00:00"))
    assert health.state == "stopped" and health.state not in HEALTHY


def test_unwatched_timer_that_is_not_armed_is_inactive_and_never_missed():
    # A distro timer left disabled: it ran once, long ago; nobody expects it to run again.
    f = facts(armed=False, watched=False, last_run_start_us=at("2026-11-01 04:00:02"))
    health = judge(f, at("2026-11-25 12:00:00"))
    assert (health.state, health.missed_runs) == ("inactive", 0) and "inactive" in HEALTHY
    # ... but a failed last run is still a failure, and a run in progress still runs.
    assert judge(replace(f, last_failed=True), at("2026-11-25 12:00:00")).state == "failed"
    assert judge(replace(f, running=True), at("2026-11-25 12:00:00")).state == "running"


def test_timer_stopped_before_its_first_run_is_missed_after_it():
    f = facts(armed=False, armed_since_us=at("2026-11-24 20:00:00"))
    assert judge(f, at("2026-11-25 04:04:00")).state == "stopped"
    health = judge(f, at("2026-11-25 04:06:00"))
    assert (health.state, health.missed_runs, health.overdue_s) == ("missed", 1, 360.0)


@pytest.mark.parametrize("unit_file_state, path, skipped, remembered, watched", [
    ("enabled", "/usr/lib/systemd/system/apt-daily.timer", False, False, True),
    ("disabled", "/lib/systemd/system/e2scrub_all.timer", False, False, False),
    ("static", "/usr/lib/systemd/system/systemd-tmpfiles-clean.timer", False, False, False),
    ("enabled", "/lib/systemd/system/fstrim.timer", True, False, False),   # in a container
    ("enabled", "/lib/systemd/system/fstrim.timer", True, True, False),
    ("disabled", "/etc/systemd/system/backup.timer", False, False, True),
    ("static", "/home/pi/.config/systemd/user/backup.timer", False, False, True),
    ("disabled", "/usr/local/lib/systemd/system/restic.timer", False, False, True),
    ("disabled", "/lib/systemd/system/borgmatic.timer", False, True, True),  # was enabled
    ("linked", "/opt/backup/backup.timer", False, False, True),
    ("", "", False, False, False),
])
def test_the_watched_set(unit_file_state, path, skipped, remembered, watched):
    assert expects_armed(unit_file_state, path, skipped, remembered) is watched


def test_armed_timer_that_never_ran_past_its_first_due_time_is_missed():
    # e.g. a Condition*= skipped the service: the timer fired, nothing ran, no job waits
    f = facts(armed_since_us=at("2026-11-24 20:00:00"), last_trigger_us=at("2026-11-25 04:00:00"),
              next_elapse_us=at("2026-11-26 04:00:00"))
    assert judge(f, at("2026-11-25 03:00:00")).state == "ok"
    health = judge(f, at("2026-11-25 04:06:00"))
    assert (health.state, health.missed_runs) == ("missed", 1)


def test_weekly_and_monthly():
    weekly = facts(["Sun *-*-* 03:00:00"], last_run_start_us=at("2026-11-15 03:00:05"),
                   next_elapse_us=at("2026-11-29 03:00:00"))
    health = judge(weekly, at("2026-11-25 12:00:00"))  # Sunday the 22nd passed without a run
    assert (health.state, health.missed_runs, health.expected_at_us) == (
        "missed", 1, at("2026-11-22 03:00:00"))
    monthly = facts(["monthly"], last_run_start_us=at("2026-08-01 00:00:01"), armed=False)
    health = judge(monthly, at("2026-11-25 12:00:00"))  # Sep, Oct, Nov passed
    assert (health.state, health.missed_runs) == ("missed", 3)


def test_dst_spring_forward_day_in_berlin():
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST. 02:30 does not exist that day and
    # systemd skips it, so a 02:30 job that last ran on the 28th missed nothing on the 29th.
    f = facts(["*-*-* 02:30:00"], last_run_start_us=at("2026-03-28 02:30:01", BERLIN),
              next_elapse_us=at("2026-03-30 02:30:00", BERLIN))
    assert judge(f, at("2026-03-29 12:00:00", BERLIN), BERLIN).state == "ok"
    # but 03:30 exists, one hour after 02:30 the day before in wall-clock terms
    g = facts(["*-*-* 03:30:00"], last_run_start_us=at("2026-03-28 03:30:01", BERLIN),
              next_elapse_us=at("2026-03-30 03:30:00", BERLIN))
    health = judge(g, at("2026-03-29 12:00:00", BERLIN), BERLIN)
    assert (health.state, health.expected_at_us) == ("missed", at("2026-03-29 01:30:00"))


def test_dst_fall_back_day_counts_the_repeated_hour_once():
    # 2026-10-25: 03:00 CEST goes back to 02:00 CET, so 02:30 happens twice on the wall
    # clock; `systemd-analyze calendar` elapses only at the first (00:30 UTC). A job that
    # last ran the day before missed one run that night, due at 02:30 CEST.
    f = facts(["*-*-* 02:30:00"], armed=False, last_run_start_us=at("2026-10-24 02:30:01", BERLIN))
    health = judge(f, at("2026-10-25 12:00:00", BERLIN), BERLIN)
    assert (health.state, health.missed_runs) == ("missed", 1)
    assert health.expected_at_us == at("2026-10-25 00:30:00")


def test_running_and_overrun():
    start = at("2026-11-25 04:00:01")
    f = facts(running=True, last_run_start_us=start, next_elapse_us=at("2026-11-26 04:00:00"))
    assert judge(f, start + HOUR, max_runtime=2 * HOUR, run_started=start).state == "running"
    assert judge(f, start + 3 * HOUR, max_runtime=2 * HOUR, run_started=start).state == "overrun"
    assert judge(f, start + 30 * HOUR, run_started=start).state == "running"  # no max_runtime


def test_failed_and_precedence():
    ran = at("2026-11-25 04:00:01")
    failed = facts(last_failed=True, last_run_start_us=ran, next_elapse_us=at("2026-11-26 04:00:00"))
    assert judge(failed, at("2026-11-25 09:00:00")).state == "failed"
    # stopped after failing: failed until the next run is missed, then missed wins
    stopped = facts(last_failed=True, armed=False, last_run_start_us=ran)
    assert judge(stopped, at("2026-11-25 09:00:00")).state == "failed"
    assert judge(stopped, at("2026-11-26 09:00:00")).state == "missed"
    assert PRECEDENCE == ("removed", "overrun", "running", "missed", "failed", "late", "stopped",
                          "inactive", "ok")


@pytest.mark.parametrize("period_s, now_offset_s, missed", [(3600, 3600 * 5 + 600, 6), (900, 100, 1)])
def test_monotonic_stopped_timer_uses_the_remembered_deadline(period_s, now_offset_s, missed):
    deadline = at("2026-11-25 10:00:00")
    f = facts([], monotonic=[("OnUnitActiveUSec", period_s * 1_000_000, 0)], armed=False,
              remembered_next_us=deadline, last_run_start_us=deadline - period_s * 1_000_000)
    assert judge(f, deadline + 60_000_000, grace=120_000_000).state == "stopped"
    health = judge(f, deadline + now_offset_s * 1_000_000, grace=60_000_000)
    assert (health.state, health.missed_runs) == ("missed", missed)


def test_far_future_schedule_is_safe():
    f = facts(["2100-01-01 00:00:00"], next_elapse_us=at("2100-01-01 00:00:00"),
              armed_since_us=at("2026-11-25 00:00:00"))
    health = judge(f, at("2026-11-25 12:00:00"))
    assert (health.state, health.expected_at_us) == ("ok", 0)


def steady_cases(day: int) -> dict:
    """Timers in every kind of state, on the days around 2026-10-`day` 12:00 UTC."""
    def t(offset_h: float) -> int:
        return at(f"2026-10-{day:02d} 12:00:00") + int(offset_h * HOUR)
    hourly = [("OnUnitActiveUSec", HOUR, 0)]
    return {
        "daily ran": facts(last_run_start_us=t(-8), next_elapse_us=t(16)),
        "never ran": facts(armed_since_us=t(-4)),
        "not seen armed": facts(),
        "failed": facts(last_run_start_us=t(-8), last_failed=True),
        "stopped": facts(armed=False, last_run_start_us=t(-8)),
        "inactive": facts(armed=False, watched=False, last_run_start_us=t(-8)),
        "queued": facts(last_run_start_us=t(-32), start_queued=True),
        "every 20 min": facts(calendar=["*:0/20"], last_run_start_us=t(0)),
        "monotonic": facts(calendar=(), monotonic=hourly, next_elapse_us=t(3),
                           last_run_start_us=t(2)),
        "monotonic stopped": facts(calendar=(), armed=False, monotonic=hourly,
                                   remembered_next_us=t(3), last_run_start_us=t(2)),
    }


@pytest.mark.parametrize("zone", [UTC, BERLIN], ids=str)
@pytest.mark.parametrize("day", [24, 28], ids=["dst-change", "quiet"])  # EU fall-back: the 25th
@pytest.mark.parametrize("case", sorted(steady_cases(24)))
def test_a_health_stands_until_its_steady_horizon(case, day, zone):
    """evaluate() says until when its answer stands (steady_until_us): judged afresh at
    any moment before that, the same facts give the same Health, across a DST change too
    (where the horizon is allowed to be cautious, not wrong)."""
    f = steady_cases(day)[case]
    step = 7 * MIN + 13_000_000
    moments = list(range(at(f"2026-10-{day:02d} 12:00:00"), at(f"2026-10-{day + 2:02d} 12:00:00"), step))
    steady = 0
    for i, now in enumerate(moments):
        health = judge(f, now, zone)
        assert health.steady_until_us == 0 or health.overdue_s == 0.0
        for later in moments[i + 1:]:
            if later >= health.steady_until_us:
                break
            steady += 1
            assert judge(f, later, zone) == health, (case, now, later)
    if case == "queued":  # late from the start: overdue_s moves, nothing stands
        assert steady == 0
    elif day == 28 or zone is UTC:
        assert steady > 0
