"""`[timers] include` / `exclude` pushed down to systemd (issue 18), on a real user manager
with 200 other timers installed, half of them started: every D-Bus call the source makes
is recorded (member, object path, arguments), and no call may name or address a unit the
agent does not report: no ListUnitsByNames with it, no Get/GetAll on its path, no unfiltered
ListUnitFilesByPatterns ["*.timer"]; and none of them is loaded (systemd's UnitNew says
when a unit is loaded). A stopped timer systemd has unloaded is still reported, and costs
no more D-Bus calls per steady sample than an armed one.
"""

import asyncio
import collections
import subprocess
import time
from fnmatch import fnmatchcase

import pytest

from exporter.clock import Now
from exporter.collectors.timers import TimersCollector
from exporter.config import load_config
from exporter.sources.systemd_dbus import SystemdBus, timer_patterns, unit_path

HOUR = 3600.0
OTHERS = [f"other-{i:03d}" for i in range(200)]
STARTED_OTHERS = OTHERS[::2]
ARMED, STOPPED = "keep-armed", "keep-stopped"          # included
SKIPPED_ARMED, SKIPPED_STOPPED = "keep-skip-armed", "keep-skip-stopped"  # excluded
ENV = {"TICK_EXPORTER_TIMERS_INCLUDE": "keep-*", "TICK_EXPORTER_TIMERS_EXCLUDE": "keep-skip*",
       "TICK_EXPORTER_TIMERS_RESYNC_INTERVAL": "1h", "TICK_EXPORTER_TIMERS_TIMEZONE": "UTC"}


def install(manager, name, timer="OnCalendar=2030-01-01\n"):
    manager.write_unit(f"{name}.service", "[Service]\nType=oneshot\nExecStart=/bin/true\n")
    manager.write_unit(f"{name}.timer", f"[Timer]\n{timer}")


@pytest.fixture(scope="module")
def many_timers(user_manager):
    manager = user_manager
    for name in [*OTHERS, ARMED, STOPPED, SKIPPED_ARMED, SKIPPED_STOPPED]:
        install(manager, name)
    manager.daemon_reload()
    manager.systemctl("start", *(f"{n}.timer" for n in [*STARTED_OTHERS, ARMED, SKIPPED_ARMED]),
                      timeout=120)
    # the stopped ones' services ran once (they have a last run), then are left alone
    manager.systemctl("start", f"{STOPPED}.service", f"{SKIPPED_STOPPED}.service", "other-001.service")
    yield manager
    manager.systemctl("stop", *(f"{n}.timer" for n in [*STARTED_OTHERS, ARMED, SKIPPED_ARMED]),
                      check=False, timeout=120)
    for name in [*OTHERS, ARMED, STOPPED, SKIPPED_ARMED, SKIPPED_STOPPED]:
        manager.remove_unit(f"{name}.timer")
        manager.remove_unit(f"{name}.service")
    manager.daemon_reload()


class Recorder:
    """Every method call the source sends (member, path, flattened arguments) and every
    UnitNew it receives (a unit systemd loaded), while `recording`."""

    def __init__(self, source: SystemdBus):
        self.calls, self.loaded, self.recording = [], collections.Counter(), True
        send, on_message = source._send, source._on_message

        async def recorded(bus, destination, path, interface, member, signature="", body=()):
            if self.recording:
                self.calls.append((member, path, flatten(body)))
            return await send(bus, destination, path, interface, member, signature, body)

        def received(message):
            if self.recording and message.member == "UnitNew" and message.body:
                self.loaded[message.body[0]] += 1
            return on_message(message)
        source._send, source._on_message = recorded, received

    def members(self):
        return collections.Counter(member for member, _path, _args in self.calls)


def flatten(value) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [text for item in value for text in flatten(item)]
    return [str(value)]


def unread(names):
    """Unit names (and their object paths) a call must never carry."""
    units = [f"{n}.{kind}" for n in names for kind in ("timer", "service")]
    return set(units), {unit_path(u) for u in units}


def assert_never_touched(recorder, names):
    units, paths = unread(names)
    for member, path, args in recorder.calls:
        assert path not in paths, (member, path)
        assert not units & set(args), (member, args)
        assert not any(arg.endswith(".service") and arg not in (
            f"{ARMED}.service", f"{STOPPED}.service") for arg in args), (member, args)


def source_for(manager, env=ENV, **kwargs):
    config = load_config(None, env).timers
    source = SystemdBus(manager.bus_address, include=config.include, wants=config.wants, **kwargs)
    return source, TimersCollector(source, config, "filterhost"), config


async def sample_until_settled(source, collector, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        read = source.stats.units_read
        points = await collector.collect(Now.read())
        if source.stats.units_read == read:
            return points
        await asyncio.sleep(0.2)
    raise AssertionError("every sample kept reading units again")


def reported(points):
    return sorted(p.tags["timer"] for p in points if p.measurement == "systemd_timer")


@pytest.mark.parametrize("unit_dirs", ["read directly", "listed by systemd"])
def test_a_unit_outside_include_or_inside_exclude_is_never_read(many_timers, unit_dirs):
    manager = many_timers
    # "/nonexistent": the manager's process is not visible (a container without pid: host),
    # so its unit directories cannot be read and systemd lists the unit files.
    proc_root = "/proc" if unit_dirs == "read directly" else "/nonexistent"

    async def scenario():
        source, collector, _config = source_for(manager, proc_root=proc_root)
        recorder = Recorder(source)
        try:
            cold = await collector.collect(Now.read())
            await sample_until_settled(source, collector)
            loaded_by_us = dict(recorder.loaded)  # (from here on systemctl loads units too)
            # Signals about units the agent does not report: an excluded timer started,
            # stopped, run; another timer started; a unit file change and a daemon-reload.
            for name in (SKIPPED_STOPPED, "other-003"):
                await asyncio.to_thread(manager.systemctl, "start", f"{name}.timer", f"{name}.service")
            await collector.collect(Now.read())
            await asyncio.to_thread(manager.systemctl, "stop", f"{SKIPPED_STOPPED}.timer",
                                    "other-003.timer")
            await asyncio.to_thread(manager.systemctl, "enable", "other-005.timer")
            await asyncio.to_thread(manager.systemctl, "disable", "other-005.timer")
            await asyncio.sleep(0.3)
            await collector.collect(Now.read())
            await asyncio.to_thread(manager.daemon_reload)  # the next sample reads all again
            steady = await sample_until_settled(source, collector)
            return cold, steady, recorder, source.stats.full_reads, loaded_by_us
        finally:
            await source.close()

    cold, steady, recorder, full_reads, loaded_by_us = asyncio.run(scenario())
    assert reported(cold) == reported(steady) == [f"{ARMED}.timer", f"{STOPPED}.timer"]
    stopped = next(p for p in steady if p.tags.get("timer") == f"{STOPPED}.timer")
    assert stopped.fields["active_state"] == "inactive"
    assert stopped.fields["schedule"] == "OnCalendar=2030-01-01 00:00:00"
    assert full_reads >= 2  # the daemon-reload was followed by a full read
    assert_never_touched(recorder, [*OTHERS, SKIPPED_ARMED, SKIPPED_STOPPED])
    assert set(loaded_by_us) <= {f"{STOPPED}.timer", f"{STOPPED}.service"}, loaded_by_us
    members = recorder.members()
    listings = [args for member, _path, args in recorder.calls if member.startswith("ListUnit")
                and "ByNames" not in member]
    assert all(args == ["keep-*.timer"] for args in listings), listings
    if unit_dirs == "read directly":
        assert members["ListUnitFilesByPatterns"] == 0
    else:
        assert members["ListUnitFilesByPatterns"] >= full_reads
    # ListUnitsByNames only ever asked for the two reported timers and their services.
    by_names = {arg for member, _path, args in recorder.calls if member == "ListUnitsByNames"
                for arg in args}
    assert by_names <= {f"{n}.{k}" for n in (ARMED, STOPPED) for k in ("timer", "service")}


def test_the_unit_directories_read_directly_list_what_systemd_lists(many_timers):
    """With include = ["*"]: the timer files found in the manager's UnitPath (through
    /proc/<PID>/root) are exactly what ListUnitFilesByPatterns ["*.timer"] returns."""
    manager = many_timers
    env = {"TICK_EXPORTER_TIMERS_TIMEZONE": "UTC"}

    async def names(proc_root):
        source, _collector, _config = source_for(manager, env, proc_root=proc_root)
        recorder = Recorder(source)
        try:
            return await source.timer_names(), recorder.members()
        finally:
            await source.close()

    direct, direct_calls = asyncio.run(names("/proc"))
    listed, listed_calls = asyncio.run(names("/nonexistent"))
    assert direct_calls["ListUnitFilesByPatterns"] == 0 and listed_calls["ListUnitFilesByPatterns"] == 1
    assert direct == listed
    assert {f"{n}.timer" for n in [*OTHERS, STOPPED, SKIPPED_STOPPED]} <= set(direct)


def test_a_stopped_unloaded_timer_costs_no_more_per_steady_sample_than_an_armed_one(many_timers):
    manager = many_timers

    async def steady_calls(name, samples=8):
        env = {**ENV, "TICK_EXPORTER_TIMERS_INCLUDE": f"{name}.timer",
               "TICK_EXPORTER_TIMERS_EXCLUDE": ""}
        source, collector, _config = source_for(manager, env)
        try:
            # From the sample after the first (a full read) on: no settling needed, the
            # stopped timer and its service were read as systemd loads them afresh.
            recorder = Recorder(source)
            await collector.collect(Now.read())
            await asyncio.sleep(0.3)
            cold_loads = dict(recorder.loaded)
            recorder.calls.clear()
            recorder.loaded.clear()
            for _ in range(samples):
                points = await collector.collect(Now.read())
                await asyncio.sleep(0.3)
            recorder.recording = False
            # systemd still has it unloaded (ListUnitsByPatterns lists units in memory only)
            in_memory = await source._manager("ListUnitsByPatterns", "asas", [[], [f"{name}.timer"]])
            return len(recorder.calls) / samples, recorder, points, in_memory, cold_loads
        finally:
            await source.close()

    armed, armed_recorder, armed_points, armed_loaded, _ = asyncio.run(steady_calls(ARMED))
    stopped, stopped_recorder, stopped_points, stopped_loaded, cold_loads = asyncio.run(
        steady_calls(STOPPED))
    assert armed_loaded and not stopped_loaded
    assert reported(stopped_points) == [f"{STOPPED}.timer"]
    assert reported(armed_points) == [f"{ARMED}.timer"]
    assert stopped <= armed, (stopped_recorder.members(), armed_recorder.members())
    # Not loaded again either: nothing per sample but the round trip (Ping).
    assert not stopped_recorder.loaded, stopped_recorder.loaded
    assert set(stopped_recorder.members()) <= {"Ping"}
    # The full read loads it once per call about it (systemd frees it between two calls):
    # the timer by ListUnitsByNames and GetAll (no ActiveEnterTimestamp for a timer not
    # active), its service by those two and by each load of the timer (Unit= refers to
    # it). Six Gets of the service and a second read to settle loaded them 25 times.
    assert cold_loads.get(f"{STOPPED}.timer", 0) <= 2, cold_loads
    assert cold_loads.get(f"{STOPPED}.service", 0) <= 4, cold_loads


@pytest.mark.parametrize("include, timers", [
    (["*"], ["pq-all"]),
    (["pqb*"], ["pqb", "pqb-db"]),        # sent as "pqb*.timer"
    (["pqa.t*"], ["pqa"]),                # sent as it is: its stem can end inside ".timer"
    (["[!0-9]qx*"], ["pqx"]),             # "[!...]" means the same to both
    (["pqm\\x2d*"], ["pqm\\x2dbackup"]),  # an escaped "-" in a unit name (systemd-escape)
    (["[^p]q-c*"], ["pq-caret"]),         # Python: "^" or "p"; glibc: not "p"
    (["pqz[a-c-]*"], ["pqz-"]),
])
def test_patterns_let_systemd_list_every_included_timer(user_manager, include, timers):
    """What the patterns let through is judged by systemd itself: transient timers with
    such names are created (each with its service), and ListUnitsByPatterns with the
    patterns must return every one fnmatchcase includes, and no service."""
    patterns = timer_patterns(include)
    names = [f"{t}.timer" for t in timers]
    assert all(any(fnmatchcase(n, g) for g in include) for n in names)

    async def listed():
        source = SystemdBus(user_manager.bus_address)
        try:
            return {row[0] for row in await source._manager("ListUnitsByPatterns", "asas",
                                                               [[], patterns])}
        finally:
            await source.close()

    try:
        for unit in timers:
            subprocess.run(["systemd-run", "--user", f"--unit={unit}", "--on-active=1h", "/bin/true"],
                           env=user_manager.env, check=True, capture_output=True)
        found = asyncio.run(listed())
    finally:
        user_manager.systemctl("stop", *names, check=False)
    assert set(names) <= found, (patterns, set(names) - found)
    assert not {f"{t}.service" for t in timers} & found, patterns
