"""systemd timers: one `systemd_timer` point per timer per sample, and one
`systemd_timer_run` point per finished run (schema: docs/metrics.md).

The source (exporter.sources.systemd_dbus.SystemdBus, or a recording in tests) returns
raw D-Bus properties; everything here is a function of them, the agent's memory
(exporter.storage.state) and the reference time: the collector's clock read after the read
(docs/metrics.md, "The sample's time").
"""

from dataclasses import dataclass, replace
from dataclasses import fields as dataclass_fields
from operator import attrgetter

from ..clock import Now, read_after
from ..config import TimersConfig
from ..durations import format_timespan_usec
from ..point import Point
from ..schedule import FOREVER_US, ScheduleError
from ..schedule_zone import Check, Verdict, ZoneFinder, names_zone
from ..sources.systemd_dbus import RUNNING_STATES, RunRecord, is_running, run_from  # noqa: F401
from ..sources.zones import own_candidates
from ..storage.state import StateFile, TimerMemory
from ..timer_health import HEALTHY, TimerFacts, evaluate, expects_armed
from . import run_logs

# systemd's "no timestamp" values: 0 = never happened, 2^64-1 (USEC_INFINITY) = never will.
USEC_INFINITY = 2**64 - 1

# A watched timer whose unit file is gone is reported `removed` this long, then forgotten:
# a week of samples, so the alert fires (once) even across a Kapacitor restart and the
# dashboards show it, without the state file keeping every timer ever seen.
REMOVED_REPORTED_FOR_US = 7 * 86400 * 1_000_000

# ExecMainCode is a siginfo si_code (waitid(2)): how the main process ended.
EXIT_KINDS = {1: "exited", 2: "killed", 3: "dumped"}  # CLD_EXITED, CLD_KILLED, CLD_DUMPED


def is_set(usec: int) -> bool:
    return 0 < usec < USEC_INFINITY


def to_unix_s(usec: int) -> int:
    """Whole seconds, 0 for never/infinity. Integer arithmetic: safe with a 32-bit time_t."""
    return usec // 1_000_000 if is_set(usec) else 0


def next_elapse_us(timer: dict, now: Now) -> int:
    """NEXT as `systemctl list-timers` computes it (calc_next_elapse in systemctl-list-units.c):
    the monotonic deadline moved onto the wall clock, and the earlier of it and the
    realtime deadline. 0 when there is none."""
    realtime = timer.get("NextElapseUSecRealtime", 0)
    monotonic = timer.get("NextElapseUSecMonotonic", 0)
    if not is_set(monotonic):
        return realtime if is_set(realtime) else 0
    converted = now.realtime_us + (monotonic - now.monotonic_us)
    return min(converted, realtime) if is_set(realtime) else converted


def schedule(timer: dict) -> str:
    """The timer's triggers as written in its unit file, e.g. "OnCalendar=*-*-* 04:00:00"."""
    entries = [f"{base}={spec}" for base, spec, _next in timer.get("TimersCalendar", [])]
    # D-Bus names monotonic triggers after their property (OnBootUSec); the unit file
    # setting is OnBootSec.
    entries += [f"{base.replace('USec', 'Sec')}={format_timespan_usec(usec)}"
                for base, usec, _next in timer.get("TimersMonotonic", [])]
    return "; ".join(entries)


def possible_checks(record) -> list[Check]:
    """systemd's per-spec next elapses of an armed timer, to check a zone against; the
    sample leaves out those already due (TimersCollector._calendar_checks): systemd moves
    a passed elapse to the manager's start (timer_enter_waiting() in src/core/timer.c,
    for RandomizedDelaySec= at boot), so it need not be an occurrence of the spec. A spec
    naming its own zone proves nothing. A function of the record alone."""
    if record.timer.active_state != "active" or record.timer.sub_state != "waiting":
        return []
    return [Check(record.timer.name, spec, next_us)
            for _base, spec, next_us in record.timer.properties.get("TimersCalendar", [])
            if is_set(next_us) and not names_zone(spec)]


def zone_fields(verdict: Verdict) -> dict:
    if verdict.candidate is None:
        return {}
    return {"schedule_zone": verdict.candidate.name,
            "schedule_zone_source": verdict.candidate.source,
            "schedule_zone_checked": verdict.checked}


def usec_or_zero(usec: int) -> int:
    return usec if is_set(usec) else 0


def record_timer_fields(record) -> dict:
    """The timer's fields that are a function of its record alone."""
    timer = record.timer.properties
    return {
        "last_trigger": to_unix_s(timer.get("LastTriggerUSec", 0)),
        "schedule": schedule(timer),
        "persistent": bool(timer.get("Persistent", False)),
        "active_state": record.timer.active_state,
        "unit_file_state": timer.get("UnitFileState", ""),
    }


def clock_timer_fields(last_trigger_us: int, next_us: int, now: Now) -> dict:
    """The timer's fields that move with the clock (a monotonic deadline's wall-clock
    time too: next_elapse_us)."""
    return {"next_elapse": to_unix_s(next_us), **clock_ages(last_trigger_us, next_us, now)}


def clock_ages(last_trigger_us: int, next_us: int, now: Now) -> dict:
    """The fields that change every sample, even when nothing else does."""
    ages = {}
    if last_trigger_us:
        ages["since_last_s"] = (now.realtime_us - last_trigger_us) / 1e6
    if next_us:
        ages["until_next_s"] = (next_us - now.realtime_us) / 1e6
    return ages


def new_runs(memory: TimerMemory, runs: list[RunRecord]) -> list[RunRecord]:
    """The runs not written before, oldest first. Runs are keyed by exit time, so a run
    seen twice (in a signal and in the properties, or again after a restart) is one; the
    later in `runs` wins."""
    return sorted({r.exit_us: r for r in runs if r.exit_us > memory.recorded_exit_us}.values(),
                  key=lambda r: r.exit_us)


def record_runs(memory: TimerMemory, runs: list[RunRecord]) -> list[RunRecord]:
    """new_runs(), and updates the memory's success and failure streak."""
    new = new_runs(memory, runs)
    for run in new:
        memory.recorded_exit_us = run.exit_us
        if run.result == "success":
            memory.last_success_us = run.exit_us
            memory.consecutive_failures = 0
        else:
            memory.consecutive_failures += 1
    return new


def run_point(run: RunRecord, tags: dict, log: str | None = None) -> Point:
    fields = {"exit_code": int(run.status), "success": run.result == "success",
              "started": to_unix_s(run.start_us)}
    if is_set(run.start_us) and run.exit_us >= run.start_us:
        fields["duration_s"] = (run.exit_us - run.start_us) / 1e6
    if log is not None:  # the journal was asked (exporter.collectors.run_logs)
        fields["log"] = log
    # Stamped with the exit time: re-reading the same run writes the identical point.
    return Point("systemd_timer_run", {**tags, "result": run.result}, fields, run.exit_us * 1000)


def service_fields(service) -> dict:
    props = service.properties
    start, end = props.get("ExecMainStartTimestamp", 0), props.get("ExecMainExitTimestamp", 0)
    fields = {
        "service_state": service.active_state,
        "last_result": props.get("Result", ""),
        "last_exit_code": int(props.get("ExecMainStatus", 0)),
        "last_exit_kind": EXIT_KINDS.get(props.get("ExecMainCode", 0), "none"),
        "last_run_start": to_unix_s(start),
        "last_run_end": to_unix_s(end),
    }
    # While a run is in progress systemd has reset ExecMainExitTimestamp to 0
    # (exec_status_start), so a duration exists only for a finished run.
    if is_set(start) and is_set(end) and end >= start:
        fields["last_duration_s"] = (end - start) / 1e6
    # Memory of the job (backups that grow are a classic). systemd reports 2^64-1 when it
    # does not know (not running, no memory accounting); MemoryPeak exists from v254 on.
    if is_running(service.active_state, service.sub_state) and is_set(props.get("MemoryCurrent", 0)):
        fields["memory_bytes"] = props["MemoryCurrent"]
    if is_set(props.get("MemoryPeak", 0)):
        fields["memory_peak_bytes"] = props["MemoryPeak"]
    return fields


def may_have_new_runs(service, snapshot, memory: TimerMemory) -> bool:
    """False when new_runs(memory, runs_seen(service, snapshot)) is surely empty: no run
    signalled, and the properties' run (if any) ended no later than the newest recorded.
    The steady sample's question for every timer, asked without building a RunRecord."""
    return (service.name in snapshot.runs
            or service.properties.get("ExecMainExitTimestamp", 0) > memory.recorded_exit_us)


def runs_seen(service, snapshot) -> list[RunRecord]:
    """The finished runs of a service in a snapshot: its properties' run, then the ones
    its signals announced (those win a tie: their InvocationID was caught during the run,
    see SystemdBus._invocations)."""
    current = run_from(service.properties)
    return ([current] if current else []) + snapshot.runs.get(service.name, [])


@dataclass(frozen=True)
class RecordParts:
    """What a timer's point takes from its records alone, worked out once per record:
    SystemdBus hands over the same record objects sample after sample until it reads a
    unit again (then a new object), except a running service's memory (MemoryCurrent,
    MemoryPeak), read into its record in place: that service's fields are made every
    sample. A function of (record, config) only, so a sample with nothing new only adds
    what moves with the clock and the agent's memory."""
    timer: object            # the records they were made from, compared by identity
    service: object
    service_error: str
    manager: str
    config: object
    tags: dict
    fields: dict             # the timer's record fields, the service's unless running
    checks: list             # possible_checks(record)
    calendar: list
    monotonic: list
    last_trigger_us: int
    armed: bool
    running: bool
    start_queued: bool
    skipped: bool            # its own Condition*= skipped it
    start_failed: bool       # the service could not even start: a failure with no run
    grace_us: int
    max_runtime_us: int

    def made_from(self, record, manager: str, config) -> bool:
        return (self.timer is record.timer and self.service is record.service
                and self.service_error == record.service_error and self.manager == manager
                and self.config is config)

    @classmethod
    def of(cls, record, manager: str, host: str, config, settings) -> "RecordParts":
        timer, service = record.timer.properties, record.service
        tags = {"host": host, "manager": manager, "timer": record.timer.name,
                "service": timer.get("Unit", "")}
        running = service is not None and is_running(service.active_state, service.sub_state)
        fields = record_timer_fields(record)
        if service is not None and not running:
            fields.update(service_fields(service))
        if record.service_error:
            # The activated unit could not be read (missing, not a service, vanished):
            # reported as data, the rest of the point still holds.
            fields["read_error"] = record.service_error
        # ConditionResult is false on a unit never checked too: only a checked one was skipped.
        skipped = is_set(timer.get("ConditionTimestamp", 0)) and not timer.get("ConditionResult", True)
        _wanted, grace_us, max_runtime_us = settings
        return cls(
            record.timer, service, record.service_error, manager, config, tags, fields,
            possible_checks(record),
            calendar=[spec for _base, spec, _next in timer.get("TimersCalendar", [])],
            monotonic=timer.get("TimersMonotonic", []),
            last_trigger_us=usec_or_zero(timer.get("LastTriggerUSec", 0)),
            # Armed: the timer will elapse again. While its unit runs (or waits to start)
            # a timer is in sub-state "running" with no next elapse; "elapsed" means done
            # for good (e.g. OnBootSec= already passed).
            armed=record.timer.active_state == "active" and record.timer.sub_state in (
                "waiting", "running"),
            running=running, start_queued=bool(service and service.job_id and not running),
            skipped=skipped,
            # Result start-limit-hit or resources, with no exec and so no run.
            start_failed=(service is not None and not running and run_from(service.properties) is None
                          and service.properties.get("Result", "success") != "success"),
            # systemd itself may start a run up to AccuracySec + RandomizedDelaySec late.
            grace_us=grace_us + timer.get("AccuracyUSec", 0) + timer.get("RandomizedDelayUSec", 0),
            max_runtime_us=max_runtime_us)


# Everything the agent remembers of a timer, as one tuple (a C-level read of each field).
_MEMORY_VALUES = attrgetter(*(f.name for f in dataclass_fields(TimerMemory)))


@dataclass(frozen=True)
class SteadyPoint:
    """A timer's last point, but for the fields that move with the clock, and what it was
    made from. Another sample makes the same point (clock fields aside) while the record
    objects (RecordParts), the agent's memory of the timer, the zone verdict and systemd's
    next elapse stay the same, no run is new, and the health stands (before
    Health.steady_until_us: no grace runs out, no elapse comes). The steady sample of an
    idle timer is then a comparison and a dict copy: judging and building a point again
    cost about two thirds of a 1000-timer sample (issue 18)."""
    inputs: tuple
    from_us: int   # the health stands from this moment (a clock stepped back: judged again)
    until_us: int
    fields: dict

    @staticmethod
    def _inputs(record, parts, memory, verdict, next_us) -> tuple:
        # A verdict is made anew whenever the zone is decided again: its values are
        # compared, not the object.
        return (parts, _MEMORY_VALUES(memory), verdict.candidate, verdict.checked,
                verdict.error, next_us, record.armed_since_us)

    @classmethod
    def of(cls, record, parts, memory, verdict, next_us, now: Now, until_us, fields) -> "SteadyPoint":
        # Taken after the sample updated the memory: the updates a sample makes are the
        # same again for the same inputs, so a sample that reuses this point skips them.
        return cls(cls._inputs(record, parts, memory, verdict, next_us), now.realtime_us,
                   until_us, fields)

    def stands(self, record, parts, memory, verdict, next_us, snapshot, now: Now) -> bool:
        return (self.from_us <= now.realtime_us < self.until_us
                and (record.service is None or record.service.name not in snapshot.runs)
                and self.inputs == self._inputs(record, parts, memory, verdict, next_us))


class TimersCollector:
    """Reads every timer from a systemd manager (source: a SystemdBus)."""

    name = "timers"

    def __init__(self, source, config: TimersConfig, host: str, state: StateFile | None = None,
                 zone_sources=None, clock=Now.read, journal=None):
        """`zone_sources`: an exporter.sources.zones.ZoneSources; without one, only the
        configured zone and the agent's own are candidates (still checked). `clock`: read
        after the timers are read, for the reference time (see collect)."""
        self.source, self.config, self.host, self.clock = source, config, host, clock
        self.state = state or StateFile(None)
        self.zone_sources = zone_sources
        self.zones = ZoneFinder(own_candidates(config.timezone))
        self._zone_sources_read = False
        self._zone_checked_for: dict | None = None  # the checks find_zone last looked at
        self._runs_recorded_for: tuple | None = None  # (records, config) points() went through
        self._unexplained_seen: frozenset = frozenset()
        # A JournalReader (exporter.sources.journal), or None: no run lines at all.
        self.journal = journal if config.journal != "off" else None
        self._parts_memo: dict[str, RecordParts] = {}  # per timer, see RecordParts
        self._steady_memo: dict[str, SteadyPoint] = {}  # per timer, see SteadyPoint

    async def collect(self, now: Now) -> list[Point]:
        # Records kept between samples, updated from systemd's signals; a full read every
        # resync_interval (exporter.sources.systemd_dbus).
        snapshot = await self.source.read_timers(self.config.resync_interval)
        await self.find_zone(snapshot, now)
        # Only when a finished run is to be looked up does the journal get read.
        logs, journal_points = await run_logs.read(self, snapshot, now)
        # The reference time is read only now, after every property (cached ones too:
        # read_timers brought them up to date) and the journal: a busy systemd may take
        # seconds to answer, and a trigger or a run end read during that time must not lie
        # in the future of the time the ages and the state are computed against (issue 16).
        return self.points(snapshot, read_after(now, self.clock), logs) + journal_points

    async def find_zone(self, snapshot, now: Now) -> None:
        """Read the zone candidates at the first sample, and again when systemd's next
        elapses agree with none of them (the host's zone changed, say): once per new set
        of such elapses, not every sample."""
        if self.zone_sources is None:
            return
        by_timer = self._calendar_checks(snapshot, now)
        if self._zone_sources_read and by_timer is self._zone_checked_for:
            return  # the very checks of the last sample: nothing new to explain
        self._zone_checked_for = by_timer
        checks = [c for found in by_timer.values() for c in found]
        unexplained = frozenset(c for c in checks if self.zones.unexplained([c]))
        if self._zone_sources_read and unexplained <= self._unexplained_seen:
            return
        self._zone_sources_read, self._unexplained_seen = True, unexplained
        self.zones.set_candidates(await self.zone_sources.read())

    def _calendar_checks(self, snapshot, now: Now) -> dict[str, list[Check]]:
        """{timer: its checks still to come}, worked out again only for other records (a
        source hands over the same list while it read nothing new) or once a check kept
        comes due: a check left out has come and stays so. The list itself is kept to
        tell records apart (an id() could be reused)."""
        known = getattr(self, "_checks_of", None)
        if (known is None or known[0] is not snapshot.timers or known[1] != snapshot.manager
                or known[2] is not self.config or not known[3] <= now.realtime_us < known[4]):
            checks = {record.timer.name: [c for c in self._parts(record, snapshot.manager).checks
                                          if c.next_us > now.realtime_us]
                      for record in snapshot.timers}
            until = min((c.next_us for found in checks.values() for c in found), default=FOREVER_US)
            self._checks_of = known = (snapshot.timers, snapshot.manager, self.config,
                                       now.realtime_us, until, checks)
        return known[5]

    def _parts(self, record, manager: str) -> "RecordParts":
        """The record's RecordParts, made again only for another record (or config)."""
        parts = self._parts_memo.get(record.timer.name)
        if parts is None or not parts.made_from(record, manager, self.config):
            parts = self._parts_memo[record.timer.name] = RecordParts.of(
                record, manager, self.host, self.config, self._settings(record.timer.name))
        return parts

    def _forget_parts_except(self, names: set[str]) -> None:
        for memo in (self._parts_memo, self._steady_memo):
            for name in [n for n in memo if n not in names]:
                del memo[name]

    def points(self, snapshot, now: Now, logs: dict | None = None) -> list[Point]:
        """`now`: the reference time, read after `snapshot` was (see collect); logs:
        {(service, exit_us): lines} of the new runs the journal was asked about."""
        checks = self._calendar_checks(snapshot, now)
        # Every armed timer of the manager is evidence for its zone, watched or not.
        self.zones.manager = snapshot.manager
        self.zones.decide_for(checks)
        points = []
        for record in snapshot.timers:
            if self._settings(record.timer.name)[0]:
                verdict = self.zones.verdict(record.timer.name, checks[record.timer.name])
                points += self.timer_points(record, snapshot, now, verdict, logs or {})
        self._forget_parts_except(set(checks))
        self._runs_recorded_for = (snapshot.timers, self.config)  # see unwritten_runs
        return points + self.removed_points(snapshot, now)

    def removed_points(self, snapshot, now: Now) -> list[Point]:
        """A `removed` point for each watched timer the agent remembers whose unit is gone
        (unit file deleted or masked: systemd no longer loads it), for
        REMOVED_REPORTED_FOR_US; then it is forgotten. Without these its series would just
        stop, which no alert on the state can see."""
        present = {record.timer.name for record in snapshot.timers}
        points = []
        for name, memory in self.state.remembered_except(snapshot.manager, present):
            if not memory.watched or not self._settings(name)[0]:
                continue
            memory.removed_since_us = memory.removed_since_us or now.realtime_us
            if now.realtime_us - memory.removed_since_us > REMOVED_REPORTED_FOR_US:
                self.state.forget(snapshot.manager, name)
                continue
            tags = {"host": self.host, "manager": snapshot.manager, "timer": name,
                    "service": memory.service}
            fields = {"state": "removed", "healthy": False, "watched": True,
                      "unit_file_state": "", "expected_at": 0, "overdue_s": 0.0,
                      "missed_runs": 0, "last_success": to_unix_s(memory.last_success_us),
                      "consecutive_failures": memory.consecutive_failures,
                      "removed_since": to_unix_s(memory.removed_since_us)}
            points.append(Point("systemd_timer", tags, fields, now.time_ns))
        return points

    def unwritten_runs(self, snapshot):
        """(timer, service, run, later run's start or 0) of every run the next points()
        writes, without recording them."""
        recorded = self._runs_recorded_for
        if (not snapshot.runs and recorded is not None and recorded[0] is snapshot.timers
                and recorded[1] is self.config):
            # The very records the last points() went through, every run in them recorded
            # since, and no run signalled: none is new (asked every sample, 1000 timers).
            return
        for record in snapshot.timers:
            if record.service is None or not self._settings(record.timer.name)[0]:
                continue
            memory = self.state.timer(snapshot.manager, record.timer.name)
            if not may_have_new_runs(record.service, snapshot, memory):
                continue
            runs = runs_seen(record.service, snapshot)
            starts = sorted({r.start_us for r in runs} | {usec_or_zero(
                record.service.properties.get("ExecMainStartTimestamp", 0))})
            for run in new_runs(memory, runs):
                later = [s for s in starts if s > run.exit_us]
                yield record.timer.name, record.service.name, run, later[0] if later else 0

    def journal_mode(self, timer: str) -> str:
        """"failed", "all" or "off" for this timer's runs."""
        return self.config.journal_for(timer) if self.journal is not None else "off"

    def _settings(self, name: str) -> tuple[bool, int, int]:
        """(wanted, grace_us, max_runtime_us) of a timer from the configuration,
        worked out once per timer (the globs and overrides are looked up every sample)."""
        if getattr(self, "_settings_of", None) is not self.config:
            self._settings_of, self._settings_memo = self.config, {}
        found = self._settings_memo.get(name)
        if found is None:
            found = self._settings_memo[name] = (
                self.config.wants(name), int(self.config.grace_for(name) * 1e6),
                int(self.config.max_runtime_for(name) * 1e6))
        return found

    def timer_points(self, record, snapshot, now: Now, verdict: Verdict, logs: dict) -> list[Point]:
        name, parts = record.timer.name, self._parts(record, snapshot.manager)
        memory = self.state.timer(snapshot.manager, name)
        next_us = next_elapse_us(record.timer.properties, now)
        steady = self._steady_memo.get(name)
        if steady is not None and steady.stands(record, parts, memory, verdict, next_us, snapshot, now):
            # next_us is one of its inputs: only the ages moved (and the serialiser is
            # told so: Point.reused).
            ages = clock_ages(parts.last_trigger_us, next_us, now)
            return [Point("systemd_timer", parts.tags, {**steady.fields, **ages}, now.time_ns,
                          (steady.fields, ages))]
        if next_us:
            memory.next_elapse_us = next_us
        watched = self._watched(record, parts, memory)
        memory.service, memory.removed_since_us = parts.tags["service"], 0  # for removed_points
        if parts.armed and record.armed_since_us:
            memory.armed_since_us = record.armed_since_us
        fields = {**parts.fields, **clock_timer_fields(parts.last_trigger_us, next_us, now)}
        run_started, runs = 0, []
        service = record.service
        if service is not None:
            if parts.running:  # its memory is read into the same record every sample
                fields.update(service_fields(service))
            run_started, runs = self._follow_runs(service, snapshot, memory, parts.running)
        facts = TimerFacts(
            calendar=parts.calendar, monotonic=parts.monotonic, armed=parts.armed,
            next_elapse_us=next_us, remembered_next_us=memory.next_elapse_us,
            last_trigger_us=parts.last_trigger_us, last_run_start_us=memory.last_run_start_us,
            service_known=service is not None, start_queued=parts.start_queued,
            armed_since_us=memory.armed_since_us, running=parts.running,
            # The newest recorded run failed, or the service could not even start.
            last_failed=bool(memory.consecutive_failures) or parts.start_failed, watched=watched)
        zone = verdict.candidate.zone if verdict.candidate else None
        if facts.calendar:
            fields.update(zone_fields(verdict))
        try:
            if zone is None and facts.calendar:
                # No zone gives systemd's own next elapses: a late/missed computed in
                # one would contradict systemd (exporter/schedule_zone.py).
                raise ScheduleError(verdict.error)
            health = evaluate(facts, now.realtime_us, parts.grace_us, parts.max_runtime_us,
                              run_started, zone)
        except ScheduleError as err:
            # A spec oncalendar cannot evaluate (systemd accepts a few it does not, see
            # tests/test_schedule_systemd.py), or no zone agrees with systemd: judge by
            # systemd's own next elapse instead.
            fields["schedule_error"] = str(err)
            health = evaluate(replace(facts, calendar=[]), now.realtime_us, parts.grace_us,
                              parts.max_runtime_us, run_started, zone)
        fields.update(
            state=health.state, healthy=health.state in HEALTHY,
            expected_at=to_unix_s(health.expected_at_us), overdue_s=health.overdue_s,
            missed_runs=health.missed_runs, last_success=to_unix_s(memory.last_success_us),
            consecutive_failures=memory.consecutive_failures, watched=watched)
        run_points = []
        for run in runs:
            log = logs.get((service.name, run.exit_us))
            if log is not None and run.result != "success":
                memory.last_failure_log = log
            run_points.append(run_point(run, parts.tags, log))
        if self.journal_mode(name) != "off":
            # For the missed_backup alert, which streams systemd_timer: the newest
            # failed run's lines while the timer's last run failed.
            fields["last_failure_log"] = memory.last_failure_log if memory.consecutive_failures else ""
        if not runs and health.steady_until_us > now.realtime_us:
            self._steady_memo[name] = SteadyPoint.of(record, parts, memory, verdict, next_us, now,
                                                     health.steady_until_us, fields)
        else:
            self._steady_memo.pop(name, None)
        return [Point("systemd_timer", parts.tags, fields, now.time_ns)] + run_points

    @staticmethod
    def _watched(record, parts: "RecordParts", memory: TimerMemory) -> bool:
        """Expected to be armed now (timer_health.expects_armed), remembered for later.
        An elapsed timer (sub-state `elapsed`: an OnBootSec= that fired this boot) is done,
        not stopped."""
        timer = record.timer.properties
        users = expects_armed(timer.get("UnitFileState", ""), timer.get("FragmentPath", ""),
                              parts.skipped, bool(memory.watched))
        memory.watched = int(users)
        return users and record.timer.sub_state != "elapsed"

    @staticmethod
    def _follow_runs(service, snapshot, memory: TimerMemory, running: bool):
        """(start of the run in progress or 0, runs to write as points)."""
        props = service.properties
        start = usec_or_zero(props.get("ExecMainStartTimestamp", 0))
        memory.last_run_start_us = max(memory.last_run_start_us, start)
        if not may_have_new_runs(service, snapshot, memory):
            return (start if running else 0), []
        return (start if running else 0), record_runs(memory, runs_seen(service, snapshot))

    def save(self) -> None:
        self.state.save()

    async def close(self) -> None:
        await self.source.close()
