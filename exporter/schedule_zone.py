"""Which time zone systemd evaluates OnCalendar specs in, found by asking systemd.

A spec without its own zone is evaluated by systemd in the manager's zone: its $TZ, or
/etc/localtime as the manager sees it (calendar_spec_next_usec() uses localtime_r();
systemd re-reads the zone when /etc/localtime changes and re-arms its timers). The agent
may run elsewhere (a container with UTC, another $TZ), so its own zone proves nothing.

The truth is systemd's: for every calendar spec of an armed timer it publishes the
next elapse it computed (TimersCalendar: (base, spec, next_elapse_usec); that value has
no RandomizedDelaySec, unlike NextElapseUSecRealtime). A candidate zone is right when
the agent's own next occurrence of each spec, in that zone, is systemd's, to the second.

Candidates come from exporter.sources.zones (config, manager environment, timedate1, the
manager's /etc/localtime, the agent's own); this module only judges them. No I/O.
"""

import logging
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

from oncalendar import parse_tz

from .schedule import ScheduleError, _normalise, next_after

log = logging.getLogger("tick_exporter.timers")
SECOND = 1_000_000


@dataclass(frozen=True)
class Candidate:
    name: str    # how the zone is shown: "Europe/Paris", "/path/to/zonefile", ...
    source: str  # config, manager, timedated, host, agent (docs/metrics.md)
    zone: object = field(compare=False)  # ZoneInfo or datetime.timezone

    def describe(self) -> str:
        return f"{self.name} ({self.source})"


class Check(NamedTuple):
    """systemd's next elapse of one calendar spec of an armed timer (a tuple: made and
    hashed for every armed timer on every sample)."""
    timer: str
    spec: str
    next_us: int


@dataclass(frozen=True)
class Verdict:
    """How one timer's calendar specs are judged."""
    candidate: Candidate | None  # None: no zone agrees with systemd, judge by systemd's elapse
    checked: bool                # the zone gave systemd's own next elapses on this manager
    error: str = ""              # why no zone is used (None candidate)


@lru_cache(maxsize=4096)
def names_zone(spec: str) -> bool:
    """The spec carries its own zone (`... UTC`, `... Europe/Paris`): it says nothing
    about the manager's."""
    words = _normalise(spec)[0].split()
    return len(words) > 1 and parse_tz(words[-1]) is not None


def agrees(check: Check, zone) -> bool:
    """The spec's first occurrence in `zone` from just before systemd's next elapse is
    systemd's next elapse, to the second."""
    try:
        mine = next_after([check.spec], check.next_us - SECOND, zone)
    except ScheduleError:
        return True  # not evaluable at all: the timer reports schedule_error on its own
    return mine // SECOND == check.next_us // SECOND


class ZoneFinder:
    """The zone decision for one manager, kept between samples.

    A next elapse is checked once against every candidate: systemd's value changes only
    when the timer elapses or is re-armed, so a sample whose next elapses are all known
    costs a dictionary lookup per spec."""

    def __init__(self, candidates: list[Candidate], manager: str = ""):
        self.candidates = list(candidates)
        self.manager = manager
        self._rows: dict[Check, tuple[bool, ...]] = {}  # per check: agrees, per candidate
        self._decided_for: frozenset | None = None
        self._winner: Candidate | None = None
        self._index = -1          # the winner's place in candidates
        self._checked = False     # the winner agreed with systemd (now or last time it could)
        self._disagreed: frozenset = frozenset()  # checks no candidate agrees with
        self._logged: tuple | None = None
        # Per timer, (the checks list it was judged on, its Verdict), while the decision
        # stands: a steady sample hands over the same lists (TimersCollector._calendar_checks).
        self._verdicts: dict[str, tuple[list, Verdict]] = {}
        self._decided_dict: dict | None = None  # what decide_for() last decided on

    def set_candidates(self, candidates: list[Candidate]) -> None:
        if candidates != self.candidates:
            self.candidates, self._decided_for, self._rows = list(candidates), None, {}
            self._verdicts = {}
            if self._winner in self.candidates:
                self._index = self.candidates.index(self._winner)
            else:
                self._winner, self._index, self._checked = None, -1, False

    def _row(self, check: Check) -> tuple[bool, ...]:
        found = self._rows.get(check)
        if found is None:
            if len(self._rows) > 8192:
                self._rows.clear()
            found = self._rows[check] = tuple(agrees(check, z.zone) for z in self.candidates)
        return found

    def unexplained(self, checks: list[Check]) -> bool:
        """Some check agrees with no candidate known now (the zone may have changed
        since the candidates were read: read them again)."""
        return any(not any(self._row(c)) for c in checks)

    def decide_for(self, by_timer: dict[str, list[Check]]) -> None:
        """decide() on every timer's checks; again only for another dict (the collector
        hands over the same one while no check changed) or other candidates."""
        if by_timer is self._decided_dict and self._decided_for is not None:
            return
        self.decide([c for found in by_timer.values() for c in found])
        self._decided_dict = by_timer

    def decide(self, checks: list[Check]) -> None:
        """Pick the zone: the first candidate that agrees with every check, else the one
        that agrees with most (a timer it disagrees with is judged by systemd). With no
        armed calendar timer to check (say the only one is running), the zone found
        before stays; never checked, the first candidate (the best source there is)."""
        key = frozenset(checks)
        if key == self._decided_for:
            return
        self._decided_for, self._verdicts = key, {}
        rows = [self._row(c) for c in checks]
        scores = [sum(column) for column in zip(*rows)] if rows else [0] * len(self.candidates)
        if checks:
            best = max(scores, default=0)
            self._index = scores.index(best) if best else -1
            self._checked = bool(best)
            self._disagreed = frozenset(c for c, row in zip(checks, rows) if not any(row))
        elif not self._checked:
            self._index = 0 if self.candidates else -1
        self._winner = self.candidates[self._index] if self._index >= 0 else None
        self._log(checks, scores)

    def verdict(self, timer: str, checks: list[Check]) -> Verdict:
        """`checks`: this timer's own; a timer without any (stopped, due right now) is
        judged in the zone found for the armed ones."""
        known = self._verdicts.get(timer)
        if known is not None and known[0] is checks:
            return known[1]
        found = self._verdict(checks)
        self._verdicts[timer] = (checks, found)
        return found

    def _verdict(self, checks: list[Check]) -> Verdict:
        if self._winner is None:
            if self._disagreed:
                return Verdict(None, False, self._mismatch(checks or list(self._disagreed)))
            return Verdict(None, False, "no time zone could be read")
        wrong = [c for c in checks if not self._row(c)[self._index]]
        if wrong:
            return Verdict(None, False, self._mismatch(wrong))
        return Verdict(self._winner, self._checked)

    def _mismatch(self, checks: list[Check]) -> str:
        check = min(checks, key=lambda c: (c.timer, c.spec))
        tried = ", ".join(z.describe() for z in self.candidates)
        return (f"systemd's next elapse of {check.spec!r} ({check.next_us // SECOND} unix s)"
                f" matches no zone tried ({tried}): judged by systemd's next elapse")

    def _surprising(self, failing: tuple) -> bool:
        """A zone the agent would have used on its own (the override, its own zone) or
        one ranked before the winner disagrees with systemd: worth a warning."""
        names = {z.describe() for z in self.candidates[:self.candidates.index(self._winner)]}
        names |= {z.describe() for z in self.candidates if z.source in ("config", "agent")}
        return any(entry.rsplit(" ", 1)[0] in names for entry in failing)

    def _log(self, checks: list[Check], scores: list[int]) -> None:
        """One line when the decision changes (not every sample, nor every elapse): a
        warning when a zone tried disagrees with systemd, else a debug line."""
        if checks:
            failing = tuple(f"{z.describe()} {n}/{len(checks)}"
                            for z, n in zip(self.candidates, scores) if n < len(checks))
        else:
            failing = self._logged[2] if self._logged else ()
        winner = self._winner.describe() if self._winner else ""
        key = (winner, self._checked, failing)
        if key == self._logged:
            return
        self._logged = key
        where = f"the {self.manager} manager" if self.manager else "systemd"
        tried = ", ".join(z.describe() for z in self.candidates) or "none"
        wrong = ", ".join(failing) or "none"
        if not self._checked:
            if checks:
                log.warning("OnCalendar of %s: no zone tried gives systemd's next elapses "
                            "(tried %s); timers are judged by systemd's own next elapse",
                            where, tried)
            else:
                log.debug("OnCalendar of %s: no armed calendar timer to check a zone against; "
                         "using %s, unchecked (tried %s)", where, winner or "none", tried)
        elif self._surprising(failing):
            log.warning("OnCalendar of %s is evaluated in %s, the zone that matches "
                        "systemd's next elapses (tried %s; agreeing with only some: %s)",
                        where, winner, tried, wrong)
        else:
            log.debug("OnCalendar of %s is evaluated in %s, which matches systemd's next "
                     "elapses (tried %s)", where, winner, tried)
