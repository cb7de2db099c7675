"""`tick-exporter cron2timer`: crontab entries -> systemd service + timer units.

    from exporter.cron2timer import convert
    result = convert(text, source="crontab")   # .units: [Unit], .problems: [Problem]

See docs/cron2timer.md for the rules (what is converted how, what is refused).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .calendar import NeverRuns
from .parse import Problem, parse_crontab
from .units import Names, Refused, Unit, render

__all__ = ["Conversion", "convert", "Problem", "Unit"]


@dataclass
class Conversion:
    units: list[Unit] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)  # lines not converted, by line number


def convert(text: str, *, source: str = "crontab", user_column: bool = False, system: bool = False,
            run_as: str | None = None, prefix: str = "") -> Conversion:
    """Every entry that can be converted faithfully, and a Problem for each line that
    cannot (those stay in cron). `user_column` implies `system` (User= needs the system
    manager); in `system` mode a crontab without a user column runs as `run_as` or root."""
    system = system or user_column
    if system and not user_column and run_as is None:
        run_as = "root"
    names = Names(prefix)
    crontab = parse_crontab(text, user_column=user_column)
    result = Conversion(problems=list(crontab.problems))
    for entry in crontab.entries:
        try:
            unit = render(entry, names.next(entry.command), system=system, run_as=run_as, source=source)
        except (Refused, NeverRuns) as err:
            result.problems.append(Problem(entry.lineno, entry.line, str(err)))
            continue
        names.take(unit.name)
        result.units.append(unit)
    result.problems.sort(key=lambda p: p.lineno)
    return result
