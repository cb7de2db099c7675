"""Timers, linted against the usual mistakes: a timer with no service to start, a service
started by a timer that has an [Install] section, a backup-like timer without
Persistent=true, a timer that is not enabled or not armed, and a timer whose last run
failed or was missed (the timers collector's own judgement, exporter.timer_health).

`TimerView` is what the checks read about one timer; `read_views` fills it from systemd
over D-Bus (through exporter.sources.systemd_dbus.SystemdBus) and from the timers
collector's `systemd_timer` point. The checks are pure functions of a view.
"""

import asyncio
import os
import re
from dataclasses import dataclass, field

from ..status import format_span, format_time
from ..timer_health import expects_armed, vendor_unit
from . import Finding

# Timer, service or command names that look like a backup: a missed run of these is the
# one that hurts, so they should catch up after the host was off (Persistent=true).
BACKUP_PATTERN = re.compile(
    r"backup|dump|snapshot|rsync|borg|restic|duplicity|duplicati|rclone|rdiff|bacula|bareos"
    r"|sanoid|syncoid|zfs-auto-snap|btrbk|timeshift|kopia|tarsnap", re.IGNORECASE)
# UnitFileStates of a unit file without an [Install] section (or one that cannot have one).
NO_INSTALL = ("static", "generated", "transient", "alias", "")
UNIT = "org.freedesktop.systemd1.Unit"
SERVICE = "org.freedesktop.systemd1.Service"
UNIT_KEYS = ("LoadState", "ActiveState", "SubState", "UnitFileState", "FragmentPath")


@dataclass(frozen=True)
class TimerView:
    name: str
    manager: str                    # "system" | "user"
    active_state: str
    sub_state: str
    unit_file_state: str            # enabled, disabled, static, ...
    fragment_path: str
    service: str                    # the unit it activates (Unit=, else NAME.service)
    service_load_state: str         # loaded, not-found, masked, error, ...
    service_unit_file_state: str
    service_fragment_path: str
    persistent: bool
    calendar: list[str] = field(default_factory=list)   # OnCalendar= specs
    commands: list[str] = field(default_factory=list)   # the service's ExecStart= argv words
    health: dict = field(default_factory=dict)          # the systemd_timer point's fields


def _systemctl(view: TimerView) -> str:
    return "systemctl --user" if view.manager == "user" else "systemctl"


def _vendor(path: str) -> bool:
    """A unit file the distribution ships (the admin's own live in /etc or ~/.config)."""
    return vendor_unit(path)


def _watched(view: TimerView) -> bool:
    """The collector's verdict (field `watched`) when there is one, else the same rule
    (exporter.timer_health.expects_armed) from the unit's own properties: so doctor
    reports a timer that is not armed exactly when the agent says `stopped`."""
    if "watched" in view.health:
        return bool(view.health["watched"])
    return expects_armed(view.unit_file_state, view.fragment_path, condition_skipped=False)


def _unit_dir(view: TimerView) -> str:
    """Where the admin's unit files (and drop-ins) for this manager go."""
    if view.fragment_path and not _vendor(view.fragment_path):
        return os.path.dirname(view.fragment_path)
    return "~/.config/systemd/user" if view.manager == "user" else "/etc/systemd/system"


def check_service_exists(view: TimerView) -> list[Finding]:
    """The unit the timer activates does not exist (LoadState not-found)."""
    if view.service_load_state in ("loaded", ""):
        return []
    own = view.name.removesuffix(".timer") + ".service"
    which = (f"{view.service} (the service of the same name; the timer sets no Unit=)"
             if view.service == own else f"{view.service} (its Unit=)")
    if view.service_load_state == "masked":
        return [Finding(
            "timer-no-service", "error", view.name,
            f"{view.name} activates {which}, which is masked",
            "a masked unit cannot be started: every elapse of the timer fails and the job never runs",
            f"{_systemctl(view)} unmask {view.service}")]
    sc, directory = _systemctl(view), _unit_dir(view)
    return [Finding(
        "timer-no-service", "error", view.name,
        f"{view.name} activates {which}, which does not exist (LoadState {view.service_load_state})",
        "systemd refuses to start a timer whose unit is not loaded (\"Refusing to start, unit "
        "to trigger not loaded\"): the job never runs, and nothing else says so",
        f"create {directory}/{view.service}:\n\n"
        f"  [Unit]\n  Description=<what the job does>\n\n"
        f"  [Service]\n  Type=oneshot\n  ExecStart=<the job's command>\n\n"
        f"(no [Install] section: the timer starts it), or point the timer at the right service "
        f"with Unit= in its [Timer] section; then:\n"
        f"  {sc} daemon-reload && {sc} enable --now {view.name}")]


def check_service_install(view: TimerView) -> list[Finding]:
    """The service the timer starts has an [Install] section: its UnitFileState is
    enabled or disabled rather than static."""
    state = view.service_unit_file_state
    if view.service_load_state != "loaded" or state in NO_INSTALL or state.startswith(("masked", "linked")):
        return []
    sc = _systemctl(view)
    path = view.service_fragment_path or f"{_unit_dir(view)}/{view.service}"
    if state.startswith("enabled"):
        problem = (f"{view.service}, started by {view.name}, has an [Install] section and is "
                   f"enabled" + ("" if state == "enabled" else f" ({state})"))
        why = ("it runs at every boot as well as on the timer's schedule (WantedBy= pulls it "
               "in), so the job runs at times nobody planned, e.g. a backup during boot")
        fix = (f"{sc} disable {view.service}\nthen delete the [Install] section from {path} "
               f"and run: {sc} daemon-reload\nThe timer alone starts it; enable the timer "
               f"instead: {sc} enable --now {view.name}")
    else:
        problem = (f"{view.service}, started by {view.name}, has an [Install] section "
                   f"(UnitFileState {state}, not static)")
        why = ("it should be driven by the timer only: `systemctl enable` on it (a common "
               "slip, meant for the timer) would also start it at every boot")
        fix = f"delete the [Install] section from {path}, then: {sc} daemon-reload"
    return [Finding("timer-service-installed", "warning", view.service, problem, why, fix)]


def backup_like(view: TimerView, pattern: re.Pattern = BACKUP_PATTERN) -> str:
    """The name that makes the timer look like a backup ("" when none does): the
    timer's, its service's, or a word of the service's command line."""
    # `sh -c "restic backup /srv"`: the words inside a shell command count too
    names = [view.name, view.service] + [os.path.basename(token) for word in view.commands
                                         for token in word.split()]
    return next((name for name in names if name and pattern.search(name)), "")


def check_persistent(view: TimerView, pattern: re.Pattern = BACKUP_PATTERN) -> list[Finding]:
    """A backup-like calendar timer without Persistent=true. Persistent= only applies
    to OnCalendar= triggers, so timers with monotonic triggers only are left alone."""
    if view.persistent or not view.calendar or view.service_load_state not in ("loaded", ""):
        return []
    because = backup_like(view, pattern)
    if not because:
        return []
    sc = _systemctl(view)
    dropin = f"{_unit_dir(view) if view.manager == 'user' else '/etc/systemd/system'}/{view.name}.d/persistent.conf"
    return [Finding(
        "timer-not-persistent", "warning", view.name,
        f"{view.name} looks like a backup ({because!r}) and runs on a calendar "
        f"({'; '.join(view.calendar)}) without Persistent=true",
        "a run that falls due while the host is off or asleep is never caught up: the "
        "backup is silently skipped until the next date comes round",
        f"add Persistent=true with a drop-in, {dropin}:\n\n  [Timer]\n  Persistent=true\n\n"
        f"(or: {sc} edit {view.name}), then: {sc} daemon-reload && {sc} restart {view.name}")]


def check_armed(view: TimerView) -> list[Finding]:
    """Loaded but not enabled (UnitFileState disabled: gone after the next reboot) or
    not armed (ActiveState inactive or failed: it will not elapse at all)."""
    if view.service_load_state not in ("loaded", ""):
        return []  # check_service_exists says why it cannot run
    sc = _systemctl(view)
    inactive = view.active_state in ("inactive", "failed")
    enabled = view.unit_file_state.startswith("enabled")
    if inactive and not _watched(view):
        return []  # the agent's `inactive`: nobody expects it armed (a Condition*= skipped it...)
    if inactive and enabled:
        return [Finding(
            "timer-inactive", "error", view.name,
            f"{view.name} is enabled but not armed (ActiveState {view.active_state})",
            f"it does not elapse: {view.service} does not run on schedule until the timer is "
            f"started again (or the host reboots)",
            f"{sc} start {view.name}\nif it stops again, see why: {sc} status {view.name}")]
    if inactive:
        # Watched (above): the admin's own, or one the agent saw enabled before. A vendor
        # timer left disabled is the distribution's (or the admin's) choice: not watched.
        on_purpose = (f"\nIf it is off on purpose, add it to the missed_backup task's `ignore` "
                      f"var (kapacitor/tasks/missed_backup.yaml): the agent reports it `stopped`")
        if view.unit_file_state == "disabled":
            return [Finding(
                "timer-inactive", "warning", view.name,
                f"{view.name} is neither enabled nor started (UnitFileState disabled, "
                f"ActiveState {view.active_state})",
                f"it never elapses: {view.service} does not run on schedule, now or after a reboot",
                f"{sc} enable --now {view.name}{on_purpose}")]
        if view.unit_file_state in NO_INSTALL:
            return [Finding(
                "timer-inactive", "warning", view.name,
                f"{view.name} is not started and has no [Install] section (UnitFileState "
                f"{view.unit_file_state or '-'}), so nothing starts it at boot either",
                f"it never elapses: {view.service} does not run on schedule",
                f"add\n\n  [Install]\n  WantedBy=timers.target\n\nto "
                f"{view.fragment_path or view.name}, then: {sc} daemon-reload && "
                f"{sc} enable --now {view.name}{on_purpose}")]
    if not inactive and view.unit_file_state == "disabled":
        return [Finding(
            "timer-disabled", "warning", view.name,
            f"{view.name} is running but not enabled (UnitFileState disabled)",
            "after the next reboot it is not started again, and the job silently stops running",
            f"{sc} enable {view.name}")]
    return []


def _outcome(fields: dict) -> str:
    """"result exit-code, exit code 3"; "result signal, signal 9"; "result
    start-limit-hit (nothing ran)"; "never ran"."""
    result, code = fields.get("last_result", "") or "-", fields.get("last_exit_code", 0)
    kind = fields.get("last_exit_kind", "none")
    if kind == "exited":
        return f"result {result}, exit code {code}"
    if kind in ("killed", "dumped"):
        return f"result {result}, signal {code}"
    return f"result {result} (nothing ran)" if result not in ("-", "success") else "never ran"


def check_health(view: TimerView) -> list[Finding]:
    """The timers collector's verdict (field `state`, exporter.timer_health): failed,
    missed or overrun, with the last result and exit code."""
    f = view.health
    state = f.get("state", "")
    sc = _systemctl(view)
    journal = f"journalctl{' --user' if view.manager == 'user' else ''} -u {view.service} -n 50 --no-pager"
    last_success = int(f.get("last_success", 0))
    success = format_time(last_success) if last_success else "never (that the agent saw)"
    if state == "failed":
        streak = int(f.get("consecutive_failures", 0))
        return [Finding(
            "timer-failed", "error", view.name,
            f"the last run of {view.service} (started by {view.name}) failed: {_outcome(f)}, at "
            f"{format_time(int(f.get('last_run_end', 0)) or int(f.get('last_run_start', 0)))}"
            + (f"; {streak} failures in a row" if streak > 1 else "") + f"; last success: {success}",
            "the timer keeps firing but the job's work (the backup, the dump) is not done",
            f"see why: {journal}\nfix the job, then run it once by hand and check it succeeds: "
            f"{sc} start {view.service} && {sc} status {view.service}")]
    if state == "missed":
        missed = int(f.get("missed_runs", 0))
        overdue = float(f.get("overdue_s", 0))
        persistent = "" if view.persistent or not view.calendar else (
            f"\nso a run missed while the host is off is caught up: Persistent=true in {view.name}")
        return [Finding(
            "timer-missed", "error", view.name,
            f"{view.name} missed {missed} run{'' if missed == 1 else 's'} of {view.service}"
            + (f", overdue by {format_span(overdue)}" if overdue > 0 else "")
            + f" (expected at {format_time(int(f.get('expected_at', 0)))}); last run: "
            f"{_outcome(f)}; last success: {success}",
            "a run that was due did not start (host off or asleep without Persistent=true, "
            "the timer stopped, a Condition*= not met): its work was not done",
            f"run it now: {sc} start {view.service}\ncheck the timer is armed: "
            f"{sc} list-timers {view.name}{persistent}")]
    if state == "overrun":
        return [Finding(
            "timer-overrun", "warning", view.name,
            f"{view.service} (started by {view.name}) has been running longer than "
            f"timers.max_runtime",
            "a job that hangs holds its lock: the next runs are skipped while it runs",
            f"look at what it is doing: {sc} status {view.service}; {journal}")]
    return []


def check_removed(points, manager: str) -> list[Finding]:
    """The collector's `removed` points: a watched timer the agent remembers whose unit
    systemd no longer loads (there is no view of it: systemd has nothing to show)."""
    sc = "systemctl --user" if manager == "user" else "systemctl"
    found = []
    for point in points:
        if point.measurement != "systemd_timer" or point.fields.get("state") != "removed":
            continue
        name = point.tags.get("timer", "")
        since = format_time(int(point.fields.get("removed_since", 0)))
        found.append(Finding(
            "timer-removed", "warning", name,
            f"{name} is gone: systemd no longer loads it (unit file deleted or masked), "
            f"since {since}; the agent still remembers it",
            "its job does not run any more, and its series would stop without a word: the "
            "agent reports it `removed` (the missed_backup alert warns once) for 7 days",
            f"if by mistake: restore its unit file, then {sc} daemon-reload && "
            f"{sc} enable --now {name}\nif on purpose: add it to the missed_backup task's "
            f"`ignore` var (docs/alerts.md); the agent forgets it after 7 days"))
    return found


def lint(view: TimerView, pattern: re.Pattern = BACKUP_PATTERN) -> list[Finding]:
    """Every check of one timer. A timer without its service gets that finding alone:
    the rest (not armed, no run) follows from it."""
    missing = check_service_exists(view)
    if missing:
        return missing
    return (check_service_install(view) + check_persistent(view, pattern) + check_armed(view)
            + check_health(view))


# --- reading: systemd over D-Bus ---------------------------------------------------------

async def _props(source, unit: str, interface: str, keys) -> dict:
    """The `keys` of one unit's interface properties ({} when it cannot be read)."""
    from ..sources.systemd_dbus import DBusCallError
    try:
        found = await source.get_all(unit, interface)
    except DBusCallError:
        return {}
    return {k: found[k] for k in keys if k in found}


def _argv_words(exec_start) -> list[str]:
    """ExecStart (D-Bus: a(sasbttttuii), path, argv, ...) as argv words."""
    words = []
    for entry in exec_start or []:
        if isinstance(entry, (list, tuple)) and len(entry) > 1:
            words += [str(w) for w in entry[1]]
    return words


async def read_views(source, snapshot, points, wants) -> list[TimerView]:
    """One TimerView per timer of `snapshot` (SystemdBus.read_timers()) that `wants`
    (TimersConfig.wants) keeps, with the Unit properties the snapshot lacks
    (UnitFileState, FragmentPath, the service's LoadState) and the collector's
    `systemd_timer` fields from `points`."""
    health = {p.tags.get("timer"): p.fields for p in points if p.measurement == "systemd_timer"}
    records = [r for r in snapshot.timers if wants(r.timer.name)]
    services = sorted({r.timer.properties.get("Unit", "") for r in records} - {""})
    timer_props, service_props, exec_props = await asyncio.gather(
        asyncio.gather(*(_props(source, r.timer.name, UNIT, UNIT_KEYS) for r in records)),
        asyncio.gather(*(_props(source, s, UNIT, UNIT_KEYS) for s in services)),
        asyncio.gather(*(_props(source, s, SERVICE, ("ExecStart",)) for s in services)))
    by_service = dict(zip(services, service_props))
    commands = {s: _argv_words(p.get("ExecStart")) for s, p in zip(services, exec_props)}
    views = []
    for record, unit in zip(records, timer_props):
        timer = record.timer.properties
        service = timer.get("Unit", "")
        svc = by_service.get(service, {})
        views.append(TimerView(
            name=record.timer.name, manager=snapshot.manager,
            active_state=unit.get("ActiveState", record.timer.active_state),
            sub_state=unit.get("SubState", record.timer.sub_state),
            unit_file_state=unit.get("UnitFileState", ""), fragment_path=unit.get("FragmentPath", ""),
            service=service,
            service_load_state=svc.get("LoadState", record.service.load_state if record.service else ""),
            service_unit_file_state=svc.get("UnitFileState", ""),
            service_fragment_path=svc.get("FragmentPath", ""),
            persistent=bool(timer.get("Persistent", False)),
            calendar=[spec for _base, spec, _next in timer.get("TimersCalendar", [])],
            commands=commands.get(service, []), health=health.get(record.timer.name, {})))
    return views
