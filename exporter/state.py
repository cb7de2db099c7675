"""The agent's small memory between samples and across restarts: per timer, the last run
it saw, the last one it recorded as a `systemd_timer_run` point, the last success, the
failure streak, the last deadline systemd announced and the newest failed run's lines.

systemd forgets most of this: a stopped timer is garbage-collected with its
LastTriggerUSec, a service's ExecMain* timestamps vanish with the unit, and nothing
survives a reboot unless Persistent=true. Written atomically (temp file, fsync,
rename); a missing or corrupt file is logged and rebuilt, never fatal.
"""

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, fields

log = logging.getLogger("tick_exporter.state")
VERSION = 1


@dataclass
class TimerMemory:
    last_run_start_us: int = 0      # latest service start seen
    recorded_exit_us: int = 0       # exit time of the newest run written as a run point
    last_success_us: int = 0        # exit time of the newest successful run
    consecutive_failures: int = 0
    armed_since_us: int = 0         # when the timer was last seen becoming armed
    next_elapse_us: int = 0         # last deadline systemd announced while armed
    last_failure_log: str = ""      # the newest failed run's journal lines (issue 21)


class StateFile:
    """path None: memory only (tests, `once` without a state file)."""

    def __init__(self, path: str | None):
        self.path = path
        self.timers: dict[str, TimerMemory] = {}
        # per container name: {"before": OOM kills of containers since removed,
        #                      "ids": {container id: [kernel counter, oom events seen]}}
        self.oom_kills: dict[str, dict] = {}
        self._saved = ""
        if path:
            self.load()

    def key(self, manager: str, timer: str) -> str:
        return f"{manager}/{timer}"

    def timer(self, manager: str, timer: str) -> TimerMemory:
        return self.timers.setdefault(self.key(manager, timer), TimerMemory())

    def load(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as handle:
                data = json.load(handle)
            kinds = {f.name: type(f.default) for f in fields(TimerMemory)}
            self.timers = {name: TimerMemory(**{k: kinds[k](v) for k, v in entry.items() if k in kinds})
                           for name, entry in data["timers"].items()}
            self.oom_kills = {name: {"before": int(entry["before"]),
                                     "ids": {i: [int(a), int(b)] for i, (a, b) in entry["ids"].items()}}
                              for name, entry in data.get("oom_kills", {}).items()}
            self._saved = self._dump()
        except FileNotFoundError:
            log.debug("state file %s does not exist yet; starting fresh", self.path)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            log.error("state file %s is unreadable (%s); rebuilding it", self.path, err)
            self.timers, self.oom_kills = {}, {}

    def _dump(self) -> str:
        return json.dumps({"version": VERSION,
                           "timers": {k: asdict(v) for k, v in sorted(self.timers.items())},
                           "oom_kills": self.oom_kills}, indent=1, sort_keys=True)

    def save(self) -> None:
        """Write when something changed: temp file in the same directory, fsync, rename."""
        text = self._dump()
        if not self.path or text == self._saved:
            return
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, exist_ok=True)
            fd, temp = tempfile.mkstemp(prefix=".state-", dir=directory)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.path)
        except OSError as err:
            log.error("cannot write state file %s: %s", self.path, err)
            return
        self._saved = text
