"""systemd timers: one `systemd_timer` point per timer (schema: docs/metrics.md).

The source (exporter.sources.systemd_dbus.SystemdBus, or a recording in tests) returns
raw D-Bus properties; everything here is a pure function of them and the sample clock.
"""

from ..clock import Now
from ..config import TimersConfig
from ..durations import format_timespan_usec
from ..point import Point

# systemd's "no timestamp" values: 0 = never happened, 2^64-1 (USEC_INFINITY) = never will.
USEC_INFINITY = 2**64 - 1

# ExecMainCode is a siginfo si_code (waitid(2)): how the main process ended.
EXIT_KINDS = {1: "exited", 2: "killed", 3: "dumped"}  # CLD_EXITED, CLD_KILLED, CLD_DUMPED

# Service ActiveStates that mean the job is in progress. A oneshot service is
# "activating" for its whole run; a simple service is "active"/"running".
RUNNING_STATES = {"activating", "deactivating", "reloading"}


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


def is_running(service_active_state: str, service_sub_state: str) -> bool:
    return service_active_state in RUNNING_STATES or (
        service_active_state == "active" and service_sub_state == "running")


def timer_state(timer_active: str, running: bool, last_result: str) -> str:
    """Precedence (docs/metrics.md): running > failed > inactive > ok."""
    if running:
        return "running"
    if last_result not in ("success", ""):
        return "failed"
    if timer_active != "active":
        return "inactive"
    return "ok"


def timer_fields(record, now: Now) -> dict:
    timer, service = record.timer.properties, record.service
    fields = {
        "last_trigger": to_unix_s(timer.get("LastTriggerUSec", 0)),
        "next_elapse": to_unix_s(next_elapse_us(timer, now)),
        "schedule": schedule(timer),
        "persistent": bool(timer.get("Persistent", False)),
        "active_state": record.timer.active_state,
    }
    if is_set(timer.get("LastTriggerUSec", 0)):
        fields["since_last_s"] = (now.realtime_us - timer["LastTriggerUSec"]) / 1e6
    if fields["next_elapse"]:
        fields["until_next_s"] = (next_elapse_us(timer, now) - now.realtime_us) / 1e6
    running, last_result = False, ""
    if service is not None:
        props = service.properties
        running = is_running(service.active_state, service.sub_state)
        last_result = props.get("Result", "")
        start, end = props.get("ExecMainStartTimestamp", 0), props.get("ExecMainExitTimestamp", 0)
        fields.update(
            service_state=service.active_state,
            last_result=last_result,
            last_exit_code=int(props.get("ExecMainStatus", 0)),
            last_exit_kind=EXIT_KINDS.get(props.get("ExecMainCode", 0), "none"),
            last_run_start=to_unix_s(start),
            last_run_end=to_unix_s(end),
        )
        # While a run is in progress systemd has reset ExecMainExitTimestamp to 0
        # (exec_status_start), so a duration exists only for a finished run.
        if is_set(start) and is_set(end) and end >= start:
            fields["last_duration_s"] = (end - start) / 1e6
    if record.service_error:
        # The activated unit could not be read (missing, not a service, vanished):
        # reported as data, the rest of the point still holds.
        fields["read_error"] = record.service_error
    fields["state"] = timer_state(record.timer.active_state, running, last_result)
    fields["healthy"] = fields["state"] in ("ok", "running")
    return fields


def timer_points(snapshot, now: Now, host: str, config: TimersConfig) -> list[Point]:
    points = []
    for record in snapshot.timers:
        if not config.wants(record.timer.name):
            continue
        tags = {"host": host, "manager": snapshot.manager, "timer": record.timer.name,
                "service": record.timer.properties.get("Unit", "")}
        points.append(Point("systemd_timer", tags, timer_fields(record, now), now.time_ns))
    return points


class TimersCollector:
    """Reads every timer from a systemd manager (source: a SystemdBus)."""

    name = "timers"

    def __init__(self, source, config: TimersConfig, host: str):
        self.source, self.config, self.host = source, config, host

    async def collect(self, now: Now) -> list[Point]:
        snapshot = await self.source.read_timers()
        return timer_points(snapshot, now, self.host, self.config)

    async def close(self) -> None:
        await self.source.close()
