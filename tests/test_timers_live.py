"""The timer collector against a real systemd user manager on a real D-Bus.

Each scenario is reached honestly (the timer really fires, the service really exits 3,
is really killed...), then every field is compared with what `systemctl --user show`
reports for the same units.
"""

import asyncio
import datetime
import time

import pytest

from exporter.clock import Now
from exporter.collectors.timers import TimersCollector
from exporter.config import load_config
from exporter.sources.systemd_dbus import SystemdBus

from tests.services import wait_until

EVERY_5S = "OnCalendar=*:*:0/5\nAccuracySec=1s\n"
SCENARIOS = {
    # timer name: (service ExecStart, [Timer] settings)
    "live-ok.timer": ("/bin/true", EVERY_5S + "Persistent=true\n"),
    "live-fail.timer": ("/bin/sh -c 'exit 3'", EVERY_5S),
    "live-killed.timer": ("/bin/sh -c 'kill -TERM $$$$'", EVERY_5S),
    "live-never.timer": ("/bin/true", "OnCalendar=2030-01-01 00:00:00\n"),
    "live-stopped.timer": ("/bin/true", EVERY_5S),
    "live-backup@home.timer": ("/bin/echo %i", EVERY_5S),
    "live-my\\x2dbackup.timer": ("/bin/true", EVERY_5S),
    "live-running.timer": ("/bin/sleep 600", EVERY_5S),
}


def service_of(timer: str) -> str:
    return timer.removesuffix(".timer") + ".service"


@pytest.fixture(scope="module")
def scenarios(user_manager):
    for timer, (exec_start, timer_settings) in SCENARIOS.items():
        unit = timer.replace("@home", "@")  # template units are written once, as name@.x
        user_manager.write_unit(unit, f"[Timer]\n{timer_settings}")
        user_manager.write_unit(service_of(unit), f"[Service]\nType=oneshot\nExecStart={exec_start}\n")
    user_manager.daemon_reload()
    user_manager.systemctl("start", *SCENARIOS)

    def has_run(timer):
        return lambda: user_manager.show(service_of(timer), ["ExecMainStartTimestampMonotonic"])[
            "ExecMainStartTimestampMonotonic"] != "0"

    for timer in SCENARIOS:
        if timer != "live-never.timer":
            wait_until(has_run(timer), timeout=20, message=f"{timer} to fire")
    wait_until(lambda: user_manager.show(service_of("live-fail.timer"), ["Result"])["Result"]
               == "exit-code", timeout=20, message="live-fail to fail")
    wait_until(lambda: user_manager.show(service_of("live-killed.timer"), ["Result"])["Result"]
               == "signal", timeout=20, message="live-killed to be killed")
    user_manager.systemctl("stop", "live-stopped.timer")
    yield user_manager
    user_manager.systemctl("stop", *SCENARIOS, check=False)
    user_manager.systemctl("stop", *(service_of(t) for t in SCENARIOS), check=False)


def collect(bus_address):
    async def go():
        source = SystemdBus(bus_address)
        try:
            config = load_config(None, {"TICK_EXPORTER_TIMERS_INCLUDE": "live-*"}).timers
            return await TimersCollector(source, config, "testhost").collect(Now.read())
        finally:
            await source.close()
    return {p.tags["timer"]: p for p in asyncio.run(go()) if p.measurement == "systemd_timer"}


TIMER_PROPS = ["ActiveState", "LastTriggerUSec", "NextElapseUSecRealtime", "Persistent", "Unit"]
SERVICE_PROPS = ["ActiveState", "Result", "ExecMainCode", "ExecMainStatus",
                 "ExecMainStartTimestamp", "ExecMainExitTimestamp"]


def systemctl_view(manager, timer):
    shown = manager.show(timer, TIMER_PROPS, timestamp="unix")
    shown.update({"service." + k: v for k, v in
                  manager.show(service_of(timer), SERVICE_PROPS, timestamp="unix").items()})
    return shown


def stable_sample(manager):
    """Collect between two identical `systemctl show` readings, so a 5 s timer firing in
    between cannot make the comparison flaky."""
    for _ in range(10):
        before = {t: systemctl_view(manager, t) for t in SCENARIOS}
        points = collect(manager.bus_address)
        if before == {t: systemctl_view(manager, t) for t in SCENARIOS}:
            return before, points
    raise AssertionError("timers kept changing during 10 samples")


def unix(shown_value):
    """A timestamp as `systemctl show` prints it: "@1795636430" (--timestamp=unix, honoured
    for ExecMain* only in systemd 252), "Wed 2026-11-25 19:48:40 UTC", or "" / "n/a"."""
    if shown_value.startswith("@"):
        return int(shown_value[1:])
    if not shown_value or shown_value == "n/a":
        return 0
    parsed = datetime.datetime.strptime(shown_value, "%a %Y-%m-%d %H:%M:%S %Z")
    return int(parsed.replace(tzinfo=datetime.timezone.utc).timestamp())


def test_every_field_matches_systemctl_show(scenarios):
    shown, points = stable_sample(scenarios)
    assert sorted(points) == sorted(SCENARIOS)
    for timer, point in points.items():
        view, fields = shown[timer], point.fields
        assert point.tags == {"host": "testhost", "manager": "user", "timer": timer,
                              "service": service_of(timer)}, timer
        assert view["Unit"] == service_of(timer)
        assert fields["active_state"] == view["ActiveState"], timer
        assert fields["last_trigger"] == unix(view["LastTriggerUSec"]), timer
        assert fields["persistent"] == (view["Persistent"] == "yes"), timer
        assert fields["last_result"] == view["service.Result"], timer
        assert fields["service_state"] == view["service.ActiveState"], timer
        assert fields["last_exit_code"] == int(view["service.ExecMainStatus"]), timer
        assert fields["last_exit_kind"] == {"0": "none", "1": "exited", "2": "killed", "3": "dumped"}[
            view["service.ExecMainCode"]], timer
        assert fields["last_run_start"] == unix(view["service.ExecMainStartTimestamp"]), timer
        assert fields["last_run_end"] == unix(view["service.ExecMainExitTimestamp"]), timer
        # Calendar timers have no monotonic deadline, so NEXT is the realtime one.
        assert fields["next_elapse"] == unix(view["NextElapseUSecRealtime"]), timer


def test_each_scenario_has_its_state(scenarios):
    _, points = stable_sample(scenarios)
    fields = {timer: point.fields for timer, point in points.items()}
    assert fields["live-ok.timer"]["state"] == "ok" and fields["live-ok.timer"]["healthy"] is True
    assert fields["live-ok.timer"]["persistent"] is True
    assert fields["live-ok.timer"]["last_duration_s"] >= 0

    failed = fields["live-fail.timer"]
    assert (failed["state"], failed["last_result"], failed["last_exit_code"],
            failed["last_exit_kind"], failed["healthy"]) == ("failed", "exit-code", 3, "exited", False)

    killed = fields["live-killed.timer"]
    assert (killed["state"], killed["last_result"], killed["last_exit_code"],
            killed["last_exit_kind"]) == ("failed", "signal", 15, "killed")

    never = fields["live-never.timer"]
    assert (never["last_trigger"], never["last_run_start"], never["last_exit_kind"]) == (0, 0, "none")
    assert never["next_elapse"] == 1893456000  # 2030-01-01 00:00:00 UTC
    assert "since_last_s" not in never and "last_duration_s" not in never
    assert never["schedule"] == "OnCalendar=2030-01-01 00:00:00"

    stopped = fields["live-stopped.timer"]
    assert (stopped["state"], stopped["active_state"], stopped["next_elapse"]) == ("stopped", "inactive", 0)

    running = fields["live-running.timer"]
    assert (running["state"], running["service_state"], running["healthy"]) == ("running", "activating", True)
    assert running["last_run_start"] > 0 and "last_duration_s" not in running

    for name in ("live-backup@home.timer", "live-my\\x2dbackup.timer"):
        assert fields[name]["state"] == "ok" and fields[name]["last_exit_kind"] == "exited", name
        assert fields[name]["schedule"] == "OnCalendar=*-*-* *:*:00/5"


def test_times_are_consistent_with_the_clock(scenarios):
    _, points = stable_sample(scenarios)
    ok = points["live-ok.timer"].fields
    now = time.time()
    assert 0 <= ok["since_last_s"] < 30 and 0 <= ok["until_next_s"] <= 5.5
    assert abs(ok["last_trigger"] + ok["since_last_s"] - now) < 5
    assert ok["next_elapse"] % 5 == 0  # *:*:0/5
