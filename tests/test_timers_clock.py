"""The reference time of a timer sample is read after the read (issue 16): a source whose
read advances a fake clock, as a busy systemd does, must not make a trigger or a run end
that happened during the read lie in the future of the point's time."""

import asyncio

from exporter.agent import Agent
from exporter.clock import Now, read_after
from exporter.collectors.timers import TimersCollector
from exporter.config import load_config
from exporter.sources.systemd_dbus import TimerRecord, TimersSnapshot, UnitRecord
from exporter.status import read_time_s, render_table

S = 1_000_000  # microseconds per second
# The sample starts just before a 5 s boundary (1795636800 = 2026-11-25 17:20:00 UTC);
# the read takes 3 s, during which both timers elapse (AccuracySec puts it 0.3 s late).
SAMPLE = Now(1795636799 * S, 600 * S)
READ_US = 3 * S
ELAPSED = 1795636800 * S + 300_000
EVERY_5S = [("OnCalendar", "*-*-* *:*:00/5", 0)]


class FakeClock:
    """Returns `current`; the fake source moves it on, as time passes during a read."""

    def __init__(self, start: Now):
        self.current, self.calls = start, []

    def advance(self, usec: int) -> None:
        self.current = Now(self.current.realtime_us + usec, self.current.monotonic_us + usec)

    def __call__(self) -> Now:
        self.calls.append(self.current)
        return self.current


class SlowSource:
    """A systemd that takes READ_US to answer: reading moves the clock on."""

    def __init__(self, clock: FakeClock, snapshot: TimersSnapshot, read_us: int = READ_US):
        self.clock, self.snapshot, self.read_us, self.reads = clock, snapshot, read_us, 0

    async def read_timers(self, resync_interval: float = 0) -> TimersSnapshot:
        self.clock.advance(self.read_us)
        self.reads += 1
        return self.snapshot

    async def close(self) -> None:
        pass


def record(name: str, service_state: tuple[str, str], service: dict, **timer) -> TimerRecord:
    properties = {"Unit": f"{name}.service", "TimersCalendar": EVERY_5S, "TimersMonotonic": [],
                  "LastTriggerUSec": ELAPSED, "NextElapseUSecRealtime": ELAPSED + 5 * S,
                  "NextElapseUSecMonotonic": 0, "AccuracyUSec": S, "RandomizedDelayUSec": 0,
                  "Persistent": False, **timer}
    props = {"Result": "success", "ExecMainCode": 0, "ExecMainStatus": 0,
             "ExecMainStartTimestamp": ELAPSED, "ExecMainExitTimestamp": 0, **service}
    return TimerRecord(UnitRecord(f"{name}.timer", "loaded", "active", "waiting", properties),
                       UnitRecord(f"{name}.service", "loaded", *service_state, props),
                       armed_since_us=SAMPLE.realtime_us - 3600 * S)


def snapshot() -> TimersSnapshot:
    """sleeper: started when the timer elapsed, still running at the end of the read.
    quick: started then too, and ended 1.6 s later, during the read."""
    return TimersSnapshot("user", [
        record("sleeper", ("activating", "start"), {}),
        record("quick", ("inactive", "dead"), {"ExecMainCode": 1,
                                               "ExecMainExitTimestamp": ELAPSED + 1_600_000}),
    ])


def collector(clock: FakeClock, snap: TimersSnapshot | None = None):
    config = load_config(None, {"TICK_EXPORTER_TIMERS_TIMEZONE": "UTC"}).timers
    source = SlowSource(clock, snap or snapshot())
    return TimersCollector(source, config, "h", clock=clock), source


def timer_points(points):
    return {p.tags["timer"]: p for p in points if p.measurement == "systemd_timer"}


def test_the_reference_time_is_read_after_the_read():
    clock = FakeClock(SAMPLE)
    timers, source = collector(clock)
    points = timer_points(asyncio.run(timers.collect(SAMPLE)))
    after = Now(SAMPLE.realtime_us + READ_US, SAMPLE.monotonic_us + READ_US)
    assert source.reads == 1 and clock.calls == [after]  # read once, after the read
    for point in points.values():
        assert point.time_ns == after.time_ns  # stamped with the time it was computed against
        # the trigger at :00.3 is 1.7 s before the end of the read, not 1.3 s in the future
        assert point.fields["since_last_s"] == 1.7
        assert point.fields["until_next_s"] == 3.3  # next at :05.3, 3.3 s after the read
        assert point.fields["expected_at"] == ELAPSED // S
        assert point.fields["overdue_s"] == 0 and point.fields["missed_runs"] == 0
    assert points["sleeper.timer"].fields["state"] == "running"
    quick = points["quick.timer"].fields
    assert quick["state"] == "ok" and quick["last_success"] == (ELAPSED + 1_600_000) // S


def test_a_clock_stepped_back_during_the_read_never_goes_before_the_sample():
    clock = FakeClock(SAMPLE)
    timers, source = collector(clock)
    source.read_us = -10 * S  # NTP stepped the wall clock back 10 s while systemd answered
    points = timer_points(asyncio.run(timers.collect(SAMPLE)))
    assert {p.time_ns for p in points.values()} == {SAMPLE.time_ns}
    assert read_after(SAMPLE, lambda: Now(SAMPLE.realtime_us - 1, 0)) == SAMPLE


def test_a_monotonic_deadline_is_moved_onto_the_wall_clock_with_the_reference_time():
    clock = FakeClock(SAMPLE)
    after_mono = SAMPLE.monotonic_us + READ_US
    boot = record("boot", ("inactive", "dead"),
                  {"ExecMainCode": 1, "ExecMainExitTimestamp": ELAPSED + S},
                  TimersCalendar=[], TimersMonotonic=[("OnUnitActiveUSec", 10 * S, 0)],
                  NextElapseUSecRealtime=0, NextElapseUSecMonotonic=after_mono + 4 * S)
    timers, _source = collector(clock, TimersSnapshot("user", [boot]))
    (point,) = timer_points(asyncio.run(timers.collect(SAMPLE))).values()
    # 4 s after the end of the read on CLOCK_MONOTONIC, so 4 s after it on the wall clock
    assert point.fields["until_next_s"] == 4.0
    assert point.fields["next_elapse"] == (SAMPLE.realtime_us + READ_US + 4 * S) // S


def test_the_agent_stamps_its_own_points_with_the_sample_time():
    clock = FakeClock(SAMPLE)
    timers, _source = collector(clock)
    points = asyncio.run(Agent([timers], [], "h", clock=clock).sample(SAMPLE))
    own = [p for p in points if p.measurement == "exporter"]
    assert {p.tags["component"] for p in own} == {"timers", "agent"}
    assert {p.time_ns for p in own} == {SAMPLE.time_ns}  # the sample's time, on its grid
    assert {p.time_ns for p in timer_points(points).values()} == {SAMPLE.time_ns + READ_US * 1000}


def test_status_renders_ages_against_the_moment_of_the_read():
    clock = FakeClock(SAMPLE)
    timers, _source = collector(clock)
    points = asyncio.run(Agent([timers], [], "h", clock=clock).sample(SAMPLE))
    shown = read_time_s(points, SAMPLE.realtime_us / S)
    assert shown == (SAMPLE.realtime_us + READ_US) / S
    lines = render_table(points, shown, color=False).splitlines()
    rows = {name: next(line for line in lines if f" {name} " in line)
            for name in ("quick.timer", "sleeper.timer")}
    # Triggered at :00.3, quick ended at :01.9 and the read at :02: PASSED "2s ago",
    # LAST SUCCESS "1s ago"; nothing "left" in the future.
    assert "left" not in rows["quick.timer"] and "left" not in rows["sleeper.timer"]
    assert "2s ago" in rows["quick.timer"] and "1s ago" in rows["quick.timer"]
    assert " running " in rows["sleeper.timer"]
    # Rendered against the start of the sample it would claim the run ends in the future.
    assert "left" in render_table(points, SAMPLE.realtime_us / S, color=False)


def test_the_read_time_falls_back_to_the_sample_without_timer_points():
    assert read_time_s([], 12.5) == 12.5
