"""The agent's small memory between samples and across restarts: per timer, the last run
it saw, the last one it recorded as a `systemd_timer_run` point, the last success, the
failure streak, the last deadline systemd announced and the newest failed run's lines.

systemd forgets most of this: a stopped timer is garbage-collected with its
LastTriggerUSec, a service's ExecMain* timestamps vanish with the unit, and nothing
survives a reboot unless Persistent=true. Written atomically (temp file, fsync,
rename); a missing or corrupt file is logged and rebuilt, never fatal.

It is also the service's delivery bookkeeping (`recorded_exit_us`: runs already handed
on), so only `run` writes it. `once`, `status` and `doctor` open it read-only: what they
sample is theirs alone and the service still delivers every run (docs/metrics.md).
"""

import json
import logging
import os
from dataclasses import asdict, dataclass, fields

from .files import replace_atomically

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
    watched: int = 0                # 1 once seen as the user's (timer_health.expects_armed)
    service: str = ""               # the unit it activates, for its `removed` points
    removed_since_us: int = 0       # a watched timer's unit gone since (0: it is there)
    last_failure_log: str = ""      # the newest failed run's journal lines (issue 21)


class StateFile:
    """path None: memory only (tests). read_only: loaded, never written (the commands
    that look beside the service: `once`, `status`, `doctor`)."""

    def __init__(self, path: str | None, read_only: bool = False):
        self.path, self.read_only = path, read_only
        # False when the file exists but could not be read: it is never overwritten.
        self.writable = not read_only
        self.timers: dict[str, TimerMemory] = {}
        # per container name: {"before": OOM kills of containers since removed,
        #                      "ids": {container id: [kernel counter, oom events seen]}}
        self.oom_kills: dict[str, dict] = {}
        # What the file holds, as the shape of the memory written (save() of the memory
        # now) or as the text given (save(text), the in-memory spool's confirmed state):
        # the shape alone is kept, not its ~360 KB of JSON at 1000 timers.
        self._saved: tuple | str | None = None
        self._dumped: tuple | None = None  # (shape, text) of the last snapshot()
        if path:
            self.load()

    def key(self, manager: str, timer: str) -> str:
        return f"{manager}/{timer}"

    def timer(self, manager: str, timer: str) -> TimerMemory:
        key = self.key(manager, timer)
        memory = self.timers.get(key)  # (asked for every timer every sample: no new
        if memory is None:             # TimerMemory made just to be thrown away)
            memory = self.timers[key] = TimerMemory()
        return memory

    def remembered_except(self, manager: str, present: set[str]) -> list[tuple[str, TimerMemory]]:
        """[(timer, memory)], sorted, of the timers of this manager the agent remembers
        that are not in `present`: asked every sample, mostly of none, so nothing is
        built or sorted for the timers that are there."""
        prefix = self.key(manager, "")
        cut = len(prefix)
        return sorted((key[cut:], memory) for key, memory in self.timers.items()
                      if key.startswith(prefix) and key[cut:] not in present)

    def forget(self, manager: str, timer: str) -> None:
        self.timers.pop(self.key(manager, timer), None)

    def load(self) -> None:
        try:
            with open(self.path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            log.debug("state file %s does not exist yet; starting fresh", self.path)
            return
        except OSError as err:  # EACCES for a user who is not the service's, EIO, ...
            self._unreadable(err.strerror or str(err))
            return
        try:
            self._apply(json.loads(data))  # bad UTF-8 is a ValueError too
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            self.timers, self.oom_kills = {}, {}
            if self.read_only:
                log.error("state file %s is corrupt (%s); shown without the agent's memory "
                          "(the running agent rebuilds it)", self.path, err)
            else:
                log.error("state file %s is corrupt (%s); rebuilding it", self.path, err)
            return
        self._saved = self._shape()

    def _unreadable(self, reason: str) -> None:
        """A file that exists but cannot be read holds memory we cannot see: never
        replace it, and say what is missing without it."""
        self.writable = False
        if self.read_only:
            log.warning("cannot read the agent's state file %s (%s): shown without its memory "
                        "(last success, failure streak, runs systemd forgot); run as the agent's "
                        "user to see them (agent.state_path)", self.path, reason)
        else:
            log.error("cannot read state file %s (%s); it is left untouched and this agent "
                      "keeps its memory in RAM only until restarted with access "
                      "(agent.state_path)", self.path, reason)

    def _apply(self, data: dict) -> None:
        known = {f.name: f.type for f in fields(TimerMemory)}  # int or str
        self.timers = {name: TimerMemory(**{k: known[k](v) for k, v in entry.items() if k in known})
                       for name, entry in data["timers"].items()}
        self.oom_kills = {name: {"before": int(entry["before"]),
                                 "ids": {i: [int(a), int(b)] for i, (a, b) in entry["ids"].items()}}
                          for name, entry in data.get("oom_kills", {}).items()}

    def _shape(self) -> tuple:
        """The memory's content as plain tuples: compared every sample, so that an
        unchanged memory (the steady state) is never serialised again (issue 18)."""
        return (tuple((name, tuple(memory.__dict__.values())) for name, memory in self.timers.items()),
                repr(self.oom_kills))

    def _text(self) -> str:
        return json.dumps({"version": VERSION,
                           "timers": {k: asdict(v) for k, v in sorted(self.timers.items())},
                           "oom_kills": self.oom_kills}, indent=1, sort_keys=True)

    def _dump(self) -> str:
        shape = self._shape()
        if self._dumped is None or self._dumped[0] != shape:
            self._dumped = (shape, self._text())
        return self._dumped[1]

    def snapshot(self) -> str:
        """The memory as it would be written now, to `save` later (exporter.agent)."""
        return self._dump()

    def save(self, text: str | None = None) -> None:
        """Write `text` (default: the memory now) when it changed: temp file in the same
        directory, fsync, rename. Never for a read-only or unreadable file."""
        if not self.path or not self.writable:
            return
        if text is None:
            shape = self._shape()
            if shape == self._saved:
                return
            saved, text = shape, self._text()
        elif text == self._saved:
            return
        else:
            saved = text
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            replace_atomically(self.path, text, ".state-")
        except OSError as err:
            log.error("cannot write state file %s (agent.state_path): %s", self.path, err)
            return
        self._saved = saved
