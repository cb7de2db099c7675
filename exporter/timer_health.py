"""Was a scheduled run late, missed or failed? Judged from the schedule itself, without
touching the job (docs/metrics.md, "state").

Pure functions of what systemd reports, what the agent remembers and the clock.
All times are integer microseconds since the epoch.
"""

from dataclasses import dataclass, field

from .schedule import FOREVER_US, latest_steady, occurrences_steady

# Most urgent first: the first state that applies is the timer's state. `removed` is
# the collector's (a remembered watched timer whose unit is gone): evaluate() needs a unit.
PRECEDENCE = ("removed", "overrun", "running", "missed", "failed", "late", "stopped",
              "inactive", "ok")
# `inactive` is a timer nobody expects to elapse (see expects_armed): not a problem.
HEALTHY = ("ok", "running", "inactive")
# UnitFileStates that mean someone ran `systemctl enable` (or `link`) on the timer.
ENABLED_STATES = ("enabled", "enabled-runtime", "linked", "linked-runtime")
# Monotonic triggers that repeat: after one elapse the next is this far after the run.
REPEATING = ("OnUnitActiveUSec", "OnUnitInactiveUSec")


@dataclass(frozen=True)
class TimerFacts:
    calendar: list[str]             # OnCalendar specs (normalised by systemd)
    monotonic: list[tuple]          # (base, usec, next) from TimersMonotonic
    armed: bool                     # timer active and systemd has a next elapse
    next_elapse_us: int             # systemd's next elapse on the wall clock, 0 = none
    remembered_next_us: int         # the last one seen while armed (a stopped timer has none)
    last_trigger_us: int
    last_run_start_us: int          # newest known start of the service (systemd or memory)
    service_known: bool             # the activated unit was read (so no start = never ran)
    start_queued: bool              # the service has a job waiting (After= ordering, ...)
    armed_since_us: int             # when the timer was last armed (as the agent saw), 0 = never
    running: bool
    last_failed: bool               # the last run (or start attempt) did not succeed
    # Expected to be armed (expects_armed): a stopped one is `stopped`, not `inactive`.
    watched: bool = True


@dataclass(frozen=True)
class Health:
    state: str
    expected_at_us: int = 0
    overdue_s: float = 0.0
    missed_runs: int = 0
    # evaluate() of the same facts at any time from now until before this gives this very
    # Health (0: it moves with the clock, as an overdue_s does): what lets the collector
    # reuse a timer's point while nothing about it changes (TimersCollector.timer_points).
    steady_until_us: int = field(default=0, compare=False)


def vendor_unit(fragment_path: str) -> bool:
    """A unit file the distribution ships: systemd's vendor directories (/usr/lib/systemd,
    /lib/systemd, /usr/share/systemd/user). The admin's own live in /etc/systemd,
    ~/.config/systemd/user or /usr/local/lib/systemd (systemd.unit(5), "Unit File Load
    Path")."""
    return fragment_path.startswith(("/usr/", "/lib/")) and not fragment_path.startswith("/usr/local/")


def expects_armed(unit_file_state: str, fragment_path: str, condition_skipped: bool,
                  remembered: bool = False) -> bool:
    """The watched set: timers that are a problem when not armed. The user's timers: enabled
    (UnitFileState), or a unit file the admin wrote (not the distribution's), or one the agent
    saw as such before (a backup timer disabled and stopped stays watched). Never a timer its
    own Condition*= skipped (fstrim.timer's ConditionVirtualization=!container in a
    container): systemd declined to start it, as designed. A stock host's disabled distro
    timers are vendor files, not enabled: not watched."""
    if condition_skipped:
        return False
    return remembered or unit_file_state in ENABLED_STATES or (
        bool(fragment_path) and not vendor_unit(fragment_path))


def _base(facts: TimerFacts) -> int:
    """Runs are looked for after the last known start of the service. A trigger is not a
    run (a Condition*= or ExecCondition= can skip the service), so the timer's last
    trigger stands in only when the service could not be read. A timer that never ran
    is judged from when it was last armed (its first run may be missed, even if it was
    stopped since), never from 1970; one never seen armed has no schedule to miss."""
    if facts.last_run_start_us:
        return facts.last_run_start_us
    if not facts.service_known and facts.last_trigger_us:
        return facts.last_trigger_us
    return facts.armed_since_us


def _calendar(facts: TimerFacts, now_us: int, grace_us: int, zone) -> Health:
    base = _base(facts)
    # Each answer comes with how long it stands (exporter.schedule): until the next
    # elapse, at the latest.
    expected, steady_until = latest_steady(facts.calendar, now_us, zone)
    if not base:
        return Health("ok", expected, steady_until_us=steady_until)
    due, due_until = occurrences_steady(facts.calendar, base, now_us, zone)
    steady_until = min(steady_until, due_until)
    # Every occurrence followed by a later one that has also come passed without a run.
    missed = max(len(due) - 1, 0)
    late = False
    if due and now_us >= due[-1] + grace_us:
        # systemd may still start the newest one: its start job waits (After= ordering),
        # or systemd still holds it as the next elapse. Otherwise it was skipped too
        # (timer stopped, host off without Persistent=true, a condition failed).
        pending = facts.start_queued or (facts.armed and 0 < facts.next_elapse_us <= due[-1])
        late, missed = pending, missed + (0 if pending else 1)
    if not (missed or late):
        if due:  # due, still within its grace: late or missed once the grace is over
            steady_until = min(steady_until, due[-1] + grace_us)
        return Health("ok", expected, steady_until_us=steady_until)
    return Health("missed" if missed else "late", expected, (now_us - due[0]) / 1e6, missed)


def _monotonic(facts: TimerFacts, now_us: int, grace_us: int) -> Health:
    deadline = facts.next_elapse_us if facts.armed else facts.remembered_next_us
    if not deadline or _base(facts) >= deadline:
        return Health("ok", facts.last_trigger_us, steady_until_us=FOREVER_US)
    if deadline > now_us:
        return Health("ok", facts.last_trigger_us, steady_until_us=deadline)
    if now_us < deadline + grace_us:
        return Health("ok", deadline, steady_until_us=deadline + grace_us)
    if facts.armed or facts.start_queued:
        return Health("late", deadline, (now_us - deadline) / 1e6)
    periods = [usec for base, usec, _next in facts.monotonic if base in REPEATING and usec > 0]
    missed = 1 + ((now_us - deadline) // min(periods) if periods else 0)
    return Health("missed", deadline, (now_us - deadline) / 1e6, missed)


def evaluate(facts: TimerFacts, now_us: int, grace_us: int, max_runtime_us: int,
             run_started_us: int, zone) -> Health:
    if facts.calendar:
        health = _calendar(facts, now_us, grace_us, zone)
    else:
        health = _monotonic(facts, now_us, grace_us)
    candidates = {health.state}
    if facts.running:
        overrun = max_runtime_us and run_started_us and now_us - run_started_us > max_runtime_us
        candidates.add("overrun" if overrun else "running")
    if facts.last_failed:
        candidates.add("failed")
    if not facts.armed:
        # A watched timer that will not elapse is a problem; one nobody expects to run
        # (a disabled distro timer, elapsed for good) is neither late nor missed.
        if facts.watched:
            candidates.add("stopped")
        else:
            candidates = {"inactive"} | (candidates - {"missed", "late", "ok"})
            health = Health("inactive", health.expected_at_us,
                            steady_until_us=health.steady_until_us)
    state = next(s for s in PRECEDENCE if s in candidates)
    # A run in progress becomes an overrun with time: judged afresh every sample.
    steady_until = 0 if facts.running else health.steady_until_us
    return Health(state, health.expected_at_us, health.overdue_s, health.missed_runs, steady_until)
