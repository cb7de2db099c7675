"""A crontab's entries converted into units, and what could not be:

    from exporter.cron2timer.conversion import convert
    result = convert(text, source="crontab")   # .units: [Unit], .problems: [Problem]

See docs/cron2timer.md for the rules (what is converted how, what is refused).
"""

from __future__ import annotations

import pwd
import shutil
from dataclasses import dataclass, field

from .calendar import NeverRuns
from .parse import Entry, Problem, parse_crontab
from .units import Names, Refused, Unit, render

__all__ = ["Conversion", "convert", "Problem", "Unit"]


@dataclass
class Conversion:
    units: list[Unit] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)  # lines not converted, by line number
    hints: list[Problem] = field(default_factory=list)  # converted, but possibly not as meant


def user_exists(name: str) -> bool:
    """A passwd lookup (NSS: /etc/passwd, LDAP, ...), as systemd resolves User= at start."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def unknown_user(entry: Entry) -> str:
    return (f"user {entry.user!r} does not exist on this machine: this file looks like a user "
            f"crontab, whose sixth field is already the command (convert it without "
            f"--user-column); for a crontab from another machine pass --allow-unknown-user")


def hints(entry: Entry, user_column: bool) -> list[str]:
    """What is converted as cron would run it but is probably not what was meant."""
    found = []
    first = entry.command.split(maxsplit=1)[0]
    if not user_column and user_exists(first) and not shutil.which(first):
        found.append(f"the sixth field {first!r} is a user name here, not a command: if this is "
                     f"/etc/crontab format (a user column), convert with --user-column; as read, "
                     f"the unit runs the command {first!r}")
    if entry.stdin is not None:
        found.append(f"an unescaped % ends the command at {entry.command.strip()!r}: cron passes "
                     f"the rest to it as standard input (so does the unit); write \\% for a "
                     f"literal %, as in date +\\%F")
    return found


def convert(text: str, *, source: str = "crontab", user_column: bool = False, system: bool = False,
            run_as: str | None = None, prefix: str = "", allow_unknown_users: bool = False) -> Conversion:
    """Every entry that can be converted faithfully, and a Problem for each line that
    cannot (those stay in cron). `user_column` implies `system` (User= needs the system
    manager); in `system` mode a crontab without a user column runs as `run_as` or root.
    A user column naming a user this machine does not know is refused unless
    `allow_unknown_users` (a crontab converted for another machine)."""
    system = system or user_column
    if system and not user_column and run_as is None:
        run_as = "root"
    names = Names(prefix)
    crontab = parse_crontab(text, user_column=user_column)
    result = Conversion(problems=list(crontab.problems))
    for entry in crontab.entries:
        if entry.user is not None and not allow_unknown_users and not user_exists(entry.user):
            result.problems.append(Problem(entry.lineno, entry.line, unknown_user(entry)))
            continue
        result.hints += [Problem(entry.lineno, entry.line, text) for text in hints(entry, user_column)]
        try:
            unit = render(entry, names.next(entry.command), system=system, run_as=run_as, source=source)
        except (Refused, NeverRuns) as err:
            result.problems.append(Problem(entry.lineno, entry.line, str(err)))
            continue
        names.take(unit.name)
        result.units.append(unit)
    result.problems.sort(key=lambda p: p.lineno)
    return result
