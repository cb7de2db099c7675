"""Timer samples from a busy systemd (issue 16), on the live user manager.

A client (tests/busy_systemd.py) keeps the manager busy listing a few hundred unit files
written for this test only (ListUnitFilesByPatterns makes systemd look up every file's
enablement, and systemd answers one call at a time), so the agent's reads take seconds,
as on a Pi or a host with many units; the test asserts that they did. What the agent
derives from a read must hold against the time of that read: no trigger in the future,
no next elapse further away than systemd said, a run in progress reported as running,
and `tick-exporter status` rendering no finished run as still to come.
"""

import asyncio
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from exporter.agent import Agent
from exporter.collectors.timers import TimersCollector
from exporter.config import load_config
from exporter.sources.systemd_dbus import SystemdBus
from tests.services import wait_until

LOAD_UNITS = 200       # unit files the manager lists on every load call, to start with
LOAD_UNITS_STEP = 100
MAX_LOAD_UNITS = 1400
PERIOD_S, ACCURACY_S = 5, 1
EVERY_5S = f"[Timer]\nOnCalendar=*:*:0/{PERIOD_S}\nAccuracySec={ACCURACY_S}s\n"
TIMERS = {  # timer: the service's ExecStart
    "busy-quick.timer": "/bin/true",        # triggers and ends during the agent's reads
    "busy-sleeper.timer": "/bin/sleep 600",  # runs through every read
}
CALIBRATION_S = 15
SAMPLING_S = 30        # the test as a whole stays well under 90 s
BUSY_READ_S = 1.0
CALIBRATED_READ_S = 1.5
HOUR = 3600.0
SAMPLE_PAUSE_S = 0.2
BUSY_SAMPLES = 5


def service_of(timer: str) -> str:
    return timer.removesuffix(".timer") + ".service"


class Load:
    """tests/busy_systemd.py keeping the manager busy, and the unit files its calls make
    the manager list."""

    def __init__(self, manager):
        self.manager, self.files = manager, []
        self.add_files(LOAD_UNITS)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.loop = subprocess.Popen(
            [sys.executable, "-m", "tests.busy_systemd", manager.bus_address], cwd=root,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready = self.loop.stdout.readline()  # "busy" once systemd answered its first call
        if ready != "busy\n":
            problem = self.error() or f"it printed {ready!r}"
            self.stop()
            raise RuntimeError(f"tests.busy_systemd did not start: {problem}")

    def add_files(self, count: int):
        """More unit files to list; no daemon-reload needed, the listing reads the disk."""
        for number in range(len(self.files), len(self.files) + count):
            name = f"busy-load-{number:05d}.service"
            self.manager.write_unit(name, f"[Unit]\nDescription=load {number}\n[Service]\n"
                                    "ExecStart=/bin/true\n[Install]\nWantedBy=default.target\n")
            self.files.append(name)

    def error(self) -> str:
        """"" while the loop still runs; else why it stopped."""
        return "" if self.loop.poll() is None else f"the load loop died: {self.loop.stderr.read()}"

    def stop(self):
        if self.loop.poll() is None:
            self.loop.kill()
        self.loop.wait(timeout=30)
        self.loop.stdout.close()
        self.loop.stderr.close()
        for name in self.files:
            self.manager.remove_unit(name)


async def calibrate(manager, load: Load) -> list:
    """Add unit files (LOAD_UNITS_STEP at a time) until two of three refreshes of the
    kept records (the agent's usual read) take CALIBRATED_READ_S: how many that needs
    depends on what else this machine is doing. Small steps: a listing's cost grows
    with the square of the files (each file's enablement lookup scans them all; 400
    files took 0.3 s here, 1600 took 4.7 s). Returns [(unit files, durations)] as tried."""
    source, tried = SystemdBus(manager.bus_address), []
    deadline = time.monotonic() + CALIBRATION_S
    try:
        await source.read_timers(HOUR)  # the full read; the next ones are refreshes
        while True:
            durations = []
            for _ in range(3):
                await asyncio.sleep(SAMPLE_PAUSE_S)
                started = time.monotonic()
                await source.read_timers(HOUR)
                durations.append(round(time.monotonic() - started, 2))
            tried.append((len(load.files), durations))
            if (sorted(durations)[1] >= CALIBRATED_READ_S or len(load.files) >= MAX_LOAD_UNITS
                    or time.monotonic() > deadline):
                return tried
            load.add_files(LOAD_UNITS_STEP)
    finally:
        await source.close()


@pytest.fixture
def busy_manager(user_manager):
    """The user manager with this test's timers, kept busy; every unit file written here
    is removed afterwards."""
    for timer, exec_start in TIMERS.items():
        user_manager.write_unit(timer, EVERY_5S)
        user_manager.write_unit(service_of(timer), f"[Service]\nType=oneshot\nExecStart={exec_start}\n")
    user_manager.daemon_reload()
    load = None
    try:
        user_manager.systemctl("start", *TIMERS)
        load = Load(user_manager)
        yield user_manager, load
    finally:
        if load is not None:
            load.stop()
        user_manager.systemctl("stop", *TIMERS, *(service_of(t) for t in TIMERS), check=False)
        for timer in TIMERS:
            user_manager.remove_unit(timer)
            user_manager.remove_unit(service_of(timer))
        user_manager.daemon_reload()


class TimedSource:
    """The real SystemdBus, with the wall-clock time (µs) before and after each read."""

    def __init__(self, source: SystemdBus):
        self.source, self.reads = source, []

    async def read_timers(self, resync_interval: float = 0):
        started_us, started = time.time_ns() // 1000, time.monotonic()
        snapshot = await self.source.read_timers(resync_interval)
        self.reads.append((started_us, time.time_ns() // 1000, time.monotonic() - started))
        return snapshot

    async def close(self):
        await self.source.close()


def sleeper_run(manager) -> tuple[str, int]:
    """(ActiveState, ExecMainStartTimestamp µs) of the sleeper's service."""
    service = service_of("busy-sleeper.timer")
    return (manager.show(service, ["ActiveState"])["ActiveState"],
            manager.bus_property(service, "Service", "ExecMainStartTimestamp"))


def status_command(manager, state_path):
    env = {**os.environ, "TICK_EXPORTER_TIMERS_BUS": manager.bus_address,
           "TICK_EXPORTER_TIMERS_INCLUDE": "busy-*", "TICK_EXPORTER_AGENT_STATE_PATH": state_path}

    def status(*args):
        started = time.time()
        done = subprocess.run([sys.executable, "-m", "exporter", "status", *args], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode in (0, 1), done.stderr
        return started, time.time(), done.stdout
    return status


class StatusRunner(threading.Thread):
    """`tick-exporter status`, table and --json in turn, until stopped."""

    def __init__(self, status):
        super().__init__(daemon=True)
        self.status, self.tables, self.documents, self.error = status, [], [], None
        self._stop_event = threading.Event()

    def run(self):
        try:
            while not self._stop_event.is_set():
                self.tables.append(self.status())
                self.documents.append(self.status("--json"))
        except Exception as err:
            self.error = err

    def stop(self):
        self._stop_event.set()
        self.join(timeout=120)


async def sample_while_busy(manager, status_runner):
    config = load_config(None, {"TICK_EXPORTER_TIMERS_INCLUDE": "busy-*"}).timers
    source = TimedSource(SystemdBus(manager.bus_address))
    # As `run` keeps it: one connection, records kept between samples and refreshed
    # from systemd's signals (resync_interval 10 min), so most reads are refreshes.
    agent = Agent([TimersCollector(source, config, "busy")], [], "busy")
    samples = []
    deadline = time.monotonic() + SAMPLING_S
    try:
        while time.monotonic() < deadline:
            samples.append(await agent.sample())
            await asyncio.sleep(SAMPLE_PAUSE_S)  # as between the agent's samples
            busy = sum(1 for *_, took in source.reads if took >= BUSY_READ_S)
            if busy >= BUSY_SAMPLES and len(status_runner.documents) >= 2 and just_finished(
                    status_runner.tables + status_runner.documents, quick_exits(samples)):
                break  # all that is asserted has happened: the test stays short
    finally:
        await agent.close()
    return samples, source


def quick_exits(samples) -> set[float]:
    """When the quick timer's runs ended (unix s), from the agent's run points."""
    return {p.time_ns / 1e9 for points in samples for p in points
            if p.measurement == "systemd_timer_run" and p.tags["timer"] == "busy-quick.timer"}


def just_finished(tables, exits) -> list:
    """The status tables during which (so maybe during whose read) a quick run ended."""
    return [table for started, ended, table in list(tables)
            if any(started <= exit_s <= ended for exit_s in exits)]


def check_sample(points, read):
    """The invariants of one sample against the wall-clock window of its read."""
    read_start_us, read_end_us, _took = read
    own = {p.tags["component"]: p for p in points if p.measurement == "exporter"}
    assert own["timers"].fields["success"] is True, own["timers"].fields
    sample_us = own["agent"].time_ns // 1000
    assert own["timers"].time_ns // 1000 == sample_us <= read_start_us  # the sample's time
    timers = {p.tags["timer"]: p for p in points if p.measurement == "systemd_timer"}
    assert sorted(timers) == sorted(TIMERS)
    for name, point in timers.items():
        fields, reference_us = point.fields, point.time_ns // 1000
        assert reference_us >= read_end_us, (name, "reference time taken before the read ended")
        if "since_last_s" in fields:
            assert fields["since_last_s"] >= 0, (name, fields)
            # the precise trigger lies within the second last_trigger truncates to
            trigger_s = reference_us / 1e6 - fields["since_last_s"]
            assert -1e-3 < trigger_s - fields["last_trigger"] < 1, (name, fields)
        if "until_next_s" in fields:
            assert fields["until_next_s"] <= PERIOD_S + ACCURACY_S, (name, fields)
            # no more than systemd's next elapse (under a second past next_elapse, which
            # is truncated) minus the end of the read
            assert fields["until_next_s"] < fields["next_elapse"] + 1 - read_end_us / 1e6, (name, fields)
    return timers


def test_a_busy_systemd_yields_ages_against_the_time_of_the_read(busy_manager, tmp_path):
    manager, load = busy_manager
    wait_until(lambda: sleeper_run(manager)[0] == "activating", timeout=20,
               message="the sleeper's first run to start")
    calibration = asyncio.run(calibrate(manager, load))
    before = sleeper_run(manager)
    status = StatusRunner(status_command(manager, str(tmp_path / "state.json")))
    status.start()
    try:
        samples, source = asyncio.run(sample_while_busy(manager, status))
    finally:
        status.stop()
    after = sleeper_run(manager)
    assert not load.error() and status.error is None, (load.error(), status.error)

    # systemd was busy: the reads took seconds (refreshes of the kept records included).
    durations = [round(took, 2) for *_, took in source.reads]
    assert sum(1 for took in durations if took >= BUSY_READ_S) >= BUSY_SAMPLES, (durations, calibration)
    assert source.source.stats.refreshes >= 1 and len(samples) == len(source.reads)

    for points, read in zip(samples, source.reads):
        timers = check_sample(points, read)
        # The same run of the sleeper was in progress before the first read and after
        # the last one: it ran through every read and each sample says so.
        sleeper = timers["busy-sleeper.timer"].fields
        assert (sleeper["state"], sleeper["service_state"]) == ("running", "activating"), sleeper
        assert sleeper["last_run_start"] == before[1] // 1_000_000
    assert before[0] == after[0] == "activating" and before[1] == after[1]

    # status, run while the agent's reads were slow, renders against the moment of its
    # read: a trigger or a run end read then is shown as past ("ago"), never as "left",
    # in particular for a run that ended while the command ran (maybe while it read).
    for _started, _ended, table in status.tables:
        rows = [line for line in table.splitlines() if ".timer" in line]
        assert len(rows) == len(TIMERS), table
        for row in rows:
            assert " left" not in row, table
    # Tables and --json take turns, each run a fraction of a second: either rendering
    # counts (both are checked for every run), so a run end falls in one nearly always.
    exits = quick_exits(samples)
    windows = status.tables + status.documents
    assert just_finished(windows, exits), ("no status run saw a run end while it ran",
                                           sorted(exits), sorted(w[:2] for w in windows))
    for _started, _ended, text in status.documents:
        document = {t["timer"]: t for t in json.loads(text)["timers"]}
        quick = document["busy-quick.timer"]
        assert quick.get("since_last_s", 0) >= 0, quick
        assert quick.get("until_next_s", 0) <= PERIOD_S + ACCURACY_S, quick
        assert document["busy-sleeper.timer"]["state"] == "running"
