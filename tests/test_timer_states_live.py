"""Each timer state reached honestly on the live user manager, in seconds: 5-second
timers, a grace of 1 s (plus AccuracySec=1s, so 2 s in all), real services that succeed,
fail, hang, wait for another unit or are skipped by a condition."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from exporter.clock import Now
from exporter.collectors.timers import TimersCollector
from exporter.config import load_config
from exporter.sources.systemd_dbus import SystemdBus
from exporter.storage.state import StateFile
from tests.lineproto import parse

EVERY_5S = "[Timer]\nOnCalendar=*:*:0/5\nAccuracySec=1s\n"


def install(manager, name, service_body, timer_body=EVERY_5S, start=True):
    manager.write_unit(f"{name}.service", f"[Service]\nType=oneshot\n{service_body}\n")
    manager.write_unit(f"{name}.timer", timer_body)
    manager.daemon_reload()
    if start:
        manager.systemctl("start", f"{name}.timer")


class Sampler:
    """The timer collector as the agent runs it: one D-Bus connection kept open (so
    PropertiesChanged signals arrive between samples) and a state file."""

    def __init__(self, manager, state_path, include, **env):
        environ = {"TICK_EXPORTER_TIMERS_GRACE": "1s", "TICK_EXPORTER_TIMERS_INCLUDE": include,
                   **env}
        self.config = load_config(None, environ).timers
        self.source = SystemdBus(manager.bus_address)
        self.state = StateFile(str(state_path))
        self.collector = TimersCollector(self.source, self.config, "live", self.state)
        self.runs = []

    async def sample(self):
        points = await self.collector.collect(Now.read())
        self.collector.save()
        self.runs += [p for p in points if p.measurement == "systemd_timer_run"]
        return {p.tags["timer"]: p.fields for p in points if p.measurement == "systemd_timer"}

    async def until(self, timer, predicate, timeout=25.0, every=0.5):
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            fields = (await self.sample()).get(timer)
            seen.append(fields and (fields["state"], fields["missed_runs"], fields.get("active_state"),
                                    fields.get("service_state")))
            if fields and predicate(fields):
                return fields
            await asyncio.sleep(every)
        raise AssertionError(f"{timer}: condition not reached; states seen {seen}")

    async def close(self):
        await self.source.close()


def live(test):
    """Run an async scenario with a Sampler on the session's user manager."""
    def wrapper(user_manager, tmp_path):
        async def scenario():
            sampler = Sampler(user_manager, tmp_path / "state.json", test.__name__.split("_", 1)[1] + "*")
            try:
                await test(user_manager, sampler)
            finally:
                await sampler.close()
        asyncio.run(scenario())
    wrapper.__name__ = test.__name__
    return wrapper


@live
async def test_okay(manager, sampler):
    install(manager, "okay", "ExecStart=/bin/true")
    # (a sample may catch the job mid-run: "running"; wait for one between runs)
    fields = await sampler.until("okay.timer", lambda f: f["last_success"] > 0 and f["state"] != "running")
    assert (fields["state"], fields["healthy"], fields["consecutive_failures"]) == ("ok", True, 0)
    assert fields["missed_runs"] == 0 and fields["overdue_s"] == 0
    assert fields["expected_at"] % 5 == 0 and time.time() - fields["expected_at"] < 6
    manager.systemctl("stop", "okay.timer")


@live
async def test_failing(manager, sampler):
    install(manager, "failing", "ExecStart=/bin/sh -c 'exit 3'")
    fields = await sampler.until("failing.timer", lambda f: f["consecutive_failures"] >= 2
                                 and f["state"] != "running")
    manager.systemctl("stop", "failing.timer")
    assert (fields["state"], fields["healthy"], fields["consecutive_failures"]) == ("failed", False, 2)
    assert fields["last_success"] == 0
    runs = [r for r in sampler.runs if r.tags["timer"] == "failing.timer"]
    assert len(runs) == 2
    for run in runs:
        assert run.tags["result"] == "exit-code" and run.tags["service"] == "failing.service"
        assert run.fields["exit_code"] == 3 and run.fields["success"] is False
        assert 0 <= run.fields["duration_s"] < 2 and run.fields["started"] <= run.time_ns // 10**9
    assert runs[1].time_ns - runs[0].time_ns == pytest.approx(5e9, abs=1.5e9)


@live
async def test_hanging(manager, sampler):
    sampler.config = load_config(None, {
        "TICK_EXPORTER_TIMERS_INCLUDE": "hanging*",
        "TICK_EXPORTER_TIMERS_OVERRIDES": '{"hanging.timer" = {max_runtime = "3s"}}'}).timers
    sampler.collector.config = sampler.config
    install(manager, "hanging", "ExecStart=/bin/sleep 600")
    running = await sampler.until("hanging.timer", lambda f: f["service_state"] == "activating")
    assert running["state"] == "running" and running["healthy"] is True
    overrun = await sampler.until("hanging.timer", lambda f: f["state"] == "overrun")
    assert overrun["healthy"] is False and time.time() - overrun["last_run_start"] > 3
    manager.systemctl("stop", "hanging.timer", "hanging.service")


@live
async def test_stopped(manager, sampler):
    install(manager, "stopped", "ExecStart=/bin/true")
    fired = await sampler.until("stopped.timer", lambda f: f["last_run_start"] > 0)
    manager.systemctl("stop", "stopped.timer")
    # systemd unloads the stopped timer (garbage collection) and forgets its last
    # trigger; the agent still knows the last run from its own memory.
    now = await sampler.sample()
    assert (now["stopped.timer"]["state"], now["stopped.timer"]["healthy"]) == ("stopped", False)
    assert now["stopped.timer"]["watched"] is True
    next_due = (fired["last_run_start"] // 5 + 1) * 5
    missed = await sampler.until("stopped.timer", lambda f: f["state"] == "missed")
    assert time.time() >= next_due + 2 and missed["missed_runs"] == 1
    assert missed["overdue_s"] >= 2 and missed["healthy"] is False
    more = await sampler.until("stopped.timer", lambda f: f["missed_runs"] >= 2)
    assert more["state"] == "missed" and more["overdue_s"] >= 7


@live
async def test_unarmed(manager, sampler):
    """The watched set on a real manager: the user's timers that are not armed are
    `stopped` (a problem) from the first sample, even if the agent never saw them run;
    those nobody expects to elapse are `inactive` (healthy)."""
    sampler.collector.config = sampler.config = load_config(None, {
        "TICK_EXPORTER_TIMERS_GRACE": "1s",
        "TICK_EXPORTER_TIMERS_INCLUDE": "unarmed*,systemd-tmpfiles-clean.timer"}).timers
    install = "[Install]\nWantedBy=timers.target\n"
    body = "[Service]\nType=oneshot\nExecStart=/bin/true\n"
    for name in ("unarmed-enabled", "unarmed-disabled", "unarmed-static", "unarmed-skipped",
                 "unarmed-once"):
        manager.write_unit(f"{name}.service", body)
    manager.write_unit("unarmed-enabled.timer", EVERY_5S + install)
    manager.write_unit("unarmed-disabled.timer", EVERY_5S + install)
    manager.write_unit("unarmed-static.timer", EVERY_5S)  # no [Install]: never enabled
    manager.write_unit("unarmed-skipped.timer", "[Unit]\nConditionPathExists=/nonexistent/tick\n"
                       + EVERY_5S + install)
    manager.write_unit("unarmed-once.timer", "[Timer]\nOnActiveSec=1s\nAccuracySec=1s\n")
    # As timers.target at boot: an active target that wants the timer keeps it loaded,
    # with its ConditionResult (an inactive unit nothing references is garbage-collected
    # and forgets it).
    manager.write_unit("unarmed.target", "[Unit]\nWants=unarmed-skipped.timer\n")
    manager.daemon_reload()
    manager.systemctl("enable", "unarmed-enabled.timer", "unarmed-skipped.timer")
    manager.systemctl("start", "unarmed.target", "unarmed-once.timer")  # skipped; fires once
    try:
        done = await sampler.until("unarmed-once.timer", lambda f: f["last_run_start"] > 0
                                   and f["state"] != "running")
        now = await sampler.sample()
    finally:
        manager.systemctl("disable", "unarmed-enabled.timer", "unarmed-skipped.timer")
        manager.systemctl("stop", "unarmed.target")
    seen = {name: (f["state"], f["healthy"], f["watched"], f["unit_file_state"])
            for name, f in now.items()}
    assert seen["unarmed-enabled.timer"] == ("stopped", False, True, "enabled")
    assert seen["unarmed-disabled.timer"] == ("stopped", False, True, "disabled")
    assert seen["unarmed-static.timer"] == ("stopped", False, True, "static")
    # Its own Condition*= skipped it (as fstrim.timer's in a container): not a problem.
    assert seen["unarmed-skipped.timer"] == ("inactive", True, False, "enabled")
    # An OnActiveSec= that fired: elapsed for good, done.
    assert done["active_state"] == "active"
    assert seen["unarmed-once.timer"] == ("inactive", True, False, "static")
    # The distribution's timer, not started in this manager: a vendor file, static.
    assert seen["systemd-tmpfiles-clean.timer"][:3] == ("inactive", True, False)
    for name in ("unarmed-enabled", "unarmed-disabled", "unarmed-static"):
        assert now[f"{name}.timer"]["missed_runs"] == 0  # never armed: nothing to miss


@live
async def test_removed(manager, sampler):
    """A watched timer whose unit file is deleted keeps a series: `removed`, from the
    agent's memory, also after the agent restarts."""
    install(manager, "removed", "ExecStart=/bin/true")
    ran = await sampler.until("removed.timer", lambda f: f["last_success"] > 0 and f["state"] != "running")
    manager.systemctl("stop", "removed.timer")
    manager.remove_unit("removed.timer")
    manager.daemon_reload()
    gone = await sampler.until("removed.timer", lambda f: f["state"] == "removed")
    assert gone["healthy"] is False and gone["watched"] is True
    assert gone["last_success"] == ran["last_success"] and 0 < time.time() - gone["removed_since"] < 30
    restarted = Sampler(manager, sampler.state.path, "removed*")
    try:
        points = await restarted.collector.collect(Now.read())
    finally:
        await restarted.close()
    (point,) = [p for p in points if p.tags["timer"] == "removed.timer"]
    assert point.tags["service"] == "removed.service"
    assert (point.fields["state"], point.fields["removed_since"]) == ("removed", gone["removed_since"])


@live
async def test_skipped(manager, sampler):
    # The timer fires but the service never runs: its condition fails every time.
    install(manager, "skipped", "ExecStart=/bin/true")
    manager.write_unit("skipped.service", "[Unit]\nConditionPathExists=/nonexistent/tick-exporter\n"
                       "[Service]\nType=oneshot\nExecStart=/bin/true\n")
    manager.daemon_reload()
    fields = await sampler.until("skipped.timer", lambda f: f["state"] == "missed")
    manager.systemctl("stop", "skipped.timer")
    assert fields["last_run_start"] == 0 and fields["last_trigger"] > 0
    assert fields["missed_runs"] >= 1 and fields["last_success"] == 0


@live
async def test_neverfired(manager, sampler):
    # Armed, then stopped before it ever elapsed: once its first due time + grace has
    # passed it is missed, not silently "new".
    while time.time() % 5 > 1:  # start just after an elapse, so it cannot fire first
        await asyncio.sleep(0.1)
    install(manager, "neverfired", "ExecStart=/bin/true")
    armed = await sampler.sample()
    manager.systemctl("stop", "neverfired.timer")
    assert armed["neverfired.timer"]["state"] == "ok"
    assert armed["neverfired.timer"]["last_trigger"] == 0
    assert (await sampler.sample())["neverfired.timer"]["state"] == "stopped"
    fields = await sampler.until("neverfired.timer", lambda f: f["state"] == "missed")
    assert fields["last_trigger"] == 0 and fields["last_run_start"] == 0
    assert fields["missed_runs"] == 1 and fields["overdue_s"] >= 2


@live
async def test_blocked(manager, sampler):
    # The service's start job waits behind another unit (After=): due, not started: late.
    manager.write_unit("blocker.service", "[Service]\nType=oneshot\nExecStart=/bin/sleep 600\n")
    install(manager, "blocked", "After=blocker.service\nExecStart=/bin/true", start=False)
    manager.write_unit("blocked.service", "[Unit]\nAfter=blocker.service\n"
                       "[Service]\nType=oneshot\nExecStart=/bin/true\n")
    manager.daemon_reload()
    manager.systemctl("start", "--no-block", "blocker.service")
    manager.systemctl("start", "blocked.timer")
    late = await sampler.until("blocked.timer", lambda f: f["state"] == "late")
    assert late["overdue_s"] >= 2 and late["missed_runs"] == 0 and late["healthy"] is False
    missed = await sampler.until("blocked.timer", lambda f: f["state"] == "missed")
    assert missed["missed_runs"] >= 1
    manager.systemctl("stop", "blocker.service")  # unblocked: the waiting start job runs
    ran = await sampler.until("blocked.timer", lambda f: f["last_success"] > 0)
    manager.systemctl("stop", "blocked.timer")
    assert ran["last_run_start"] > 0


@live
async def test_between(manager, sampler):
    # Two runs finish between two samples: both are recorded (the first one is only
    # visible in PropertiesChanged signals), each once.
    install(manager, "between", "ExecStart=/bin/true")
    await sampler.until("between.timer", lambda f: f["last_run_start"] > 0)
    before = len(sampler.runs)
    await asyncio.sleep(11)
    await sampler.sample()
    await sampler.sample()
    manager.systemctl("stop", "between.timer")
    new = sampler.runs[before:]
    assert len(new) >= 2
    assert len({r.time_ns for r in new}) == len(new)
    gaps = [round((b.time_ns - a.time_ns) / 1e9) for a, b in zip(new, new[1:])]
    assert set(gaps) == {5}


def test_agent_killed_and_restarted(user_manager, tmp_path):
    install(user_manager, "restart", "ExecStart=/bin/true")
    config = tmp_path / "agent.toml"
    config.write_text(f"""
[agent]
interval = "1s"
state_path = "{tmp_path / 'state.json'}"
[timers]
bus = "{user_manager.bus_address}"
include = ["restart.timer"]
grace = "1s"
[output.stdout]
enabled = true
""")
    env = {k: v for k, v in os.environ.items() if k != "TICK_EXPORTER_AGENT_STATE_PATH"}

    def agent(seconds, kill):
        proc = subprocess.Popen([sys.executable, "-m", "exporter", "run", "--config", str(config)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        time.sleep(seconds)
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        return parse(out)

    first = agent(8, kill=True)
    second = agent(8, kill=False)
    user_manager.systemctl("stop", "restart.timer")
    runs = [p for p in first + second if p.measurement == "systemd_timer_run"]
    assert len(runs) >= 2
    assert len({p.time_ns for p in runs}) == len(runs), "a run was written twice"
    last_success_before = max(p.fields["last_success"] for p in first if p.measurement == "systemd_timer")
    first_after = next(p for p in second if p.measurement == "systemd_timer")
    assert first_after.fields["last_success"] >= last_success_before > 0


def test_status_shows_a_stopped_backup_as_missed_within_one_sample(user_manager, tmp_path):
    install(user_manager, "states-nightly-backup", "ExecStart=/bin/true")
    env = {**os.environ, "TICK_EXPORTER_TIMERS_BUS": user_manager.bus_address,
           "TICK_EXPORTER_TIMERS_INCLUDE": "states-nightly-backup.timer",
           "TICK_EXPORTER_TIMERS_GRACE": "1s", "TICK_EXPORTER_AGENT_STATE_PATH": str(tmp_path / "s.json"),
           "TICK_EXPORTER_AGENT_INTERVAL": "1s"}

    def status(*args):
        return subprocess.run([sys.executable, "-m", "exporter", "status", *args], env=env,
                              capture_output=True, text=True, timeout=60)

    # The agent runs as a service does, keeping the state file; status reads it.
    agent = subprocess.Popen([sys.executable, "-m", "exporter", "run", "--output", "stdout"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while True:  # the agent has seen it run
            first = status("--json")
            timer = json.loads(first.stdout)["timers"][0]
            if timer["last_run_start"] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        # ok, or running if the sample caught the 5 s job mid-run: both healthy
        assert first.returncode == 0 and timer["state"] in ("ok", "running"), first.stdout
        user_manager.systemctl("stop", "states-nightly-backup.timer")
        due = (timer["last_run_start"] // 5 + 1) * 5 + 2  # next run + grace (1s + AccuracySec=1s)
        time.sleep(max(0.0, due - time.time()) + 1.2)      # and one sample of the agent
        shown = status()
    finally:
        agent.terminate()
        agent.communicate(timeout=30)
    assert shown.returncode == 1
    (row,) = [line for line in shown.stdout.splitlines() if "states-nightly-backup.timer" in line]
    assert " missed " in row and "\x1b[" not in shown.stdout  # not a terminal: no colour
    as_json = json.loads(status("--json").stdout)
    assert as_json["healthy"] is False and as_json["timers"][0]["state"] == "missed"
    assert as_json["timers"][0]["missed_runs"] >= 1


def test_removed_is_reported_for_a_week_then_forgotten():
    """Pure: the collector's memory of a removed watched timer, on a clock it is given."""
    from exporter.collectors.timers import REMOVED_REPORTED_FOR_US
    from exporter.sources.systemd_dbus import TimersSnapshot
    state = StateFile(None)
    state.timer("user", "backup.timer").__dict__.update(watched=1, service="backup.service",
                                                        last_success_us=1_700_000_000_000_000)
    state.timer("user", "apt-daily.timer")  # never watched: its removal is no news
    state.timer("system", "backup.timer").watched = 1  # another manager's
    collector = TimersCollector(None, load_config(None, {}).timers, "h", state)
    start = 1_800_000_000_000_000
    (first,) = collector.points(TimersSnapshot("user", []), Now(start, 1))
    assert first.tags == {"host": "h", "manager": "user", "timer": "backup.timer", "service": "backup.service"}
    assert (first.fields["state"], first.fields["healthy"], first.fields["last_success"],
            first.fields["removed_since"]) == ("removed", False, 1_700_000_000, 1_800_000_000)
    from tests.metrics_schema import schema
    documented = schema()["systemd_timer"]
    kinds = {bool: "bool", int: "int", float: "float", str: "string"}
    assert {f: kinds[type(v)] for f, v in first.fields.items()} == {
        f: documented["fields"][f] for f in first.fields}
    (later,) = collector.points(TimersSnapshot("user", []), Now(start + REMOVED_REPORTED_FOR_US, 2))
    assert later.fields["removed_since"] == 1_800_000_000
    assert collector.points(TimersSnapshot("user", []), Now(start + REMOVED_REPORTED_FOR_US + 1, 3)) == []
    assert set(state.timers) == {"user/apt-daily.timer", "system/backup.timer"}


def test_status_shows_a_backup_stopped_before_the_agent_started(user_manager, tmp_path):
    """The deployment's case: the backup timer was never started (or was stopped before
    the agent ever ran). `status` says stopped and exits 1, from its first sample."""
    install(user_manager, "weekly-backup", "ExecStart=/bin/true",
            "[Timer]\nOnCalendar=Sun *-*-* 03:00:00\n[Install]\nWantedBy=timers.target\n", start=False)
    env = {**os.environ, "TICK_EXPORTER_TIMERS_BUS": user_manager.bus_address,
           "TICK_EXPORTER_TIMERS_INCLUDE": "weekly-backup.timer",
           "TICK_EXPORTER_AGENT_STATE_PATH": str(tmp_path / "never-written.json")}
    shown = subprocess.run([sys.executable, "-m", "exporter", "status", "--json"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 1, shown.stderr
    (timer,) = json.loads(shown.stdout)["timers"]
    assert (timer["state"], timer["healthy"], timer["watched"], timer["unit_file_state"]) == (
        "stopped", False, True, "disabled")
