"""The journal lines of the runs a timers sample is about to write (issue 21).

For each finished run not written yet whose timer wants it (`[timers] journal`: failed
runs, or all; an override `journal = false` opts a timer out), the journal source is
asked for the run's last lines before the run point is made, so the point is written
once and complete. A sample with no such run does not touch the journal.

Journal trouble is data on its own `exporter` point (component `journal`), never a
failure of the timers collector: the run points are still written, with an empty
`log`.
"""

import logging
import time

from ..clock import Now
from ..point import Point
from ..redact import redact
from ..sources.journal import JournalError, RunLogQuery

COMPONENT = "journal"
log = logging.getLogger("tick_exporter.journal")


def query_for(manager: str, service: str, run, later_start_us: int, wait_s: float) -> RunLogQuery:
    """The run's window: its start to its exit plus the wait for journald. Without an
    InvocationID to tell runs apart (a user manager's, see exporter.sources.journal) it
    is cut at the next run's start: a service restarted right away writes its own lines
    then."""
    until_us = run.exit_us + int(wait_s * 1e6)
    if later_start_us and (manager == "user" or not run.invocation_id):
        until_us = min(until_us, later_start_us)
    return RunLogQuery(unit=service, manager=manager, invocation_id=run.invocation_id,
                       main_pid=run.main_pid, since_us=run.start_us or run.exit_us,
                       until_us=max(until_us, run.exit_us))


def wanted(mode: str, run) -> bool:
    return mode == "all" or (mode == "failed" and run.result != "success")


async def read(collector, snapshot, now: Now) -> tuple[dict, list[Point]]:
    """({(service, exit_us): lines}, [the journal's exporter point] or [])."""
    journal = collector.journal
    if journal is None:
        return {}, []
    logs, errors, started = {}, [], time.perf_counter()
    for timer, service, run, later in collector.unwritten_runs(snapshot):
        if not wanted(collector.journal_mode(timer), run):
            continue
        query = query_for(snapshot.manager, service, run, later, collector.config.journal_wait)
        try:
            logs[(service, run.exit_us)] = await journal.run_log(query)
        except JournalError as err:
            logs[(service, run.exit_us)] = ""
            errors.append(str(err))
    if not logs:
        return logs, []
    fields = {"success": not errors, "duration_s": time.perf_counter() - started,
              "points": len(logs), "errors": len(errors)}
    if errors:
        fields["last_error"] = redact(errors[-1])
        # A host without a journal (not mounted, volatile and gone) is said by the
        # `exporter` point (component=journal); a real read failure is logged too.
        (log.debug if "no journal files" in errors[-1] else log.warning)(
            "journal: %s", fields["last_error"])
    return logs, [Point("exporter", {"host": collector.host, "component": COMPONENT},
                        fields, now.time_ns)]
