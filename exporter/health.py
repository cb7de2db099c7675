"""The agent's own liveness, for Docker's HEALTHCHECK and for scripts: `run` rewrites a
small heartbeat file after every sample; `tick-exporter health` reads it.

Why a file and not a probe of the sources: a container's healthcheck runs in a fresh
process, and "the D-Bus answers" says nothing about whether the agent's loop is still
sampling. A stale heartbeat does. A source that fails is not an unhealthy agent: it is
already reported as data (`exporter` points with success=false), so it is listed here but
does not fail the check, or a host without Docker would restart the agent forever.
"""

import json
import logging
import os

from .storage.files import replace_atomically

log = logging.getLogger("tick_exporter.health")

# The one definition of "agent down" (docs/alerts.md, agent_down; the dashboards use it
# too): no sample for more than 2.5 intervals. One missed or late sample (a gap of two
# intervals plus a slow sample) is tolerated; at the 60 s default that is 150 s.
DOWN_AFTER_INTERVALS = 2.5


def heartbeat_path(state_path: str) -> str:
    """Beside the state file: the directory the agent already owns and persists."""
    return os.path.join(os.path.dirname(state_path) or ".", "heartbeat.json")


class Heartbeat:
    """`write(points, now_s)` after each sample records when it was taken and which
    collectors or outputs failed in it (their `exporter` points)."""

    def __init__(self, path: str, interval_s: float):
        self.path, self.interval_s = path, interval_s
        self._failing = ""  # the last error logged: said once, not every interval

    def write(self, points, now_s: float) -> None:
        try:
            self._write(points, now_s)
        except OSError as err:
            reason = f"cannot write the heartbeat {self.path} (beside agent.state_path): " \
                     f"{err.strerror or err}"
            if reason != self._failing:
                log.error("%s; `tick-exporter health` will call the agent unhealthy", reason)
            self._failing = reason
        else:
            self._failing = ""

    def _write(self, points, now_s: float) -> None:
        failed = sorted({p.tags["component"] for p in points
                         if p.measurement == "exporter" and p.fields.get("success") is False})
        body = json.dumps({"sampled_at": now_s, "interval_s": self.interval_s,
                           "pid": os.getpid(), "failed": failed})
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, exist_ok=True)
        replace_atomically(self.path, body, ".heartbeat-", durable=False)


def check(path: str, now_s: float) -> tuple[bool, str]:
    """(healthy, one line for a human)."""
    try:
        with open(path, encoding="utf-8") as handle:
            beat = json.load(handle)
        sampled_at, interval = float(beat["sampled_at"]), float(beat["interval_s"])
    except FileNotFoundError:
        return False, f"no heartbeat at {path}: the agent has not completed a sample yet"
    except PermissionError:
        return False, (f"cannot read the heartbeat {path} (beside agent.state_path): permission "
                       f"denied; run as root or as the service's user")
    except (OSError, ValueError, KeyError, TypeError) as err:
        return False, f"unreadable heartbeat {path}: {err}"
    age = now_s - sampled_at
    limit = DOWN_AFTER_INTERVALS * interval
    failed = beat.get("failed") or []
    note = f"; failing sources: {', '.join(failed)}" if failed else ""
    if age > limit:
        return False, f"last sample {age:.0f}s ago (limit {limit:.0f}s): the agent is stuck or stopped{note}"
    return True, f"last sample {max(age, 0):.0f}s ago{note}"
