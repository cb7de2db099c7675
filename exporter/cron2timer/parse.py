"""Crontab parsing with Debian cron's rules (Vixie cron 3.0 with Debian's patches).

What is read, in file order:

* blank lines and lines whose first non-blank character is `#`: ignored;
* environment lines `NAME = VALUE` (spaces around `=` allowed; a value wrapped in
  matching single or double quotes loses the quotes; nothing is expanded). Each entry
  gets the environment as defined by the lines *above* it, like cron;
* entries: five time fields (or an `@keyword`), the user column when asked for
  (/etc/crontab, /etc/cron.d), then the command. Cron's `%` rule is applied to the
  command: the first unescaped `%` ends it, the rest is the job's stdin with every `%`
  turned into a newline; `\\%` is a literal `%`.

Fields: `*`, numbers, `a-b` ranges, `/step` after `*` or a range, `,` lists, month
(`jan`..`dec`) and weekday (`sun`..`sat`) names in any case, 0 and 7 for Sunday.
A field that starts with `*` (`*`, `*/2`) counts as unrestricted for cron's
day-of-month / day-of-week rule, exactly as in cron's source.

Refused (a Problem naming the line), never guessed:

* `N/step` (a step after a single number): Debian's cron rejects it, cronie reads it
  as `N-MAX/step`; backwards ranges (`5-2`): implementations disagree;
* `L`, `W`, `#`, `?` (Quartz, croniter), `H` (Jenkins), `~` (random ranges): not cron;
* out-of-range numbers, a step of 0, unknown names or `@keywords`, a missing command
  or user, control characters, `@keyword`s other than cron's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Field", "Schedule", "Entry", "Problem", "Crontab", "parse_crontab", "SPECIALS"]

MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]

# name, low, high, names (value of names[i] is low + i)
FIELDS = (
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day-of-month", 1, 31, None),
    ("month", 1, 12, MONTHS),
    ("day-of-week", 0, 7, DAYS),
)

# What Debian's cron expands each keyword to (entry.c).
SPECIALS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
REBOOT = "@reboot"

DEFAULT_SHELL = "/bin/sh"
DEFAULT_PATH = "/usr/bin:/bin"  # cron's _PATH_DEFPATH when the crontab sets none

_ENV = re.compile(r"""^\s*(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<bare>[^\s="']+))\s*=(?P<value>.*)$""")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\$?$")
_ELEMENT = re.compile(r"^(?P<start>\*|[0-9A-Za-z]+)(?:-(?P<end>[0-9A-Za-z]+))?(?:/(?P<step>[0-9]+))?$")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class FieldError(ValueError):
    pass


@dataclass(frozen=True)
class Field:
    text: str
    values: frozenset[int]  # day-of-week: 0..6, Sunday = 0
    star: bool  # starts with `*`: unrestricted for cron's day-of-month/day-of-week rule


@dataclass(frozen=True)
class Schedule:
    """Five cron fields, or @reboot (fields None)."""
    text: str  # as written: "30 2 * * 1-5", "@daily"
    minute: Field | None = None
    hour: Field | None = None
    dom: Field | None = None
    month: Field | None = None
    dow: Field | None = None

    @property
    def reboot(self) -> bool:
        return self.text == REBOOT


@dataclass(frozen=True)
class Entry:
    lineno: int
    line: str
    schedule: Schedule
    command: str  # what the shell runs, after cron's % rule
    stdin: str | None  # the text after the first unescaped %, None without one
    env: tuple[tuple[str, str], ...]  # the crontab's variables above this entry, in order
    user: str | None = None

    def getenv(self, name: str, default: str | None = None) -> str | None:
        return dict(self.env).get(name, default)

    @property
    def shell(self) -> str:
        return self.getenv("SHELL") or DEFAULT_SHELL


@dataclass(frozen=True)
class Problem:
    lineno: int
    line: str
    message: str

    def __str__(self) -> str:
        return f"line {self.lineno}: {self.message}: {self.line.strip()}"


@dataclass
class Crontab:
    entries: list[Entry] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def parse_field(text: str, index: int) -> Field:
    name, low, high, names = FIELDS[index]
    values: set[int] = set()
    for element in text.split(","):
        values |= _parse_element(element, name, low, high, names)
    if index == 4:
        values = {0 if v == 7 else v for v in values}
    return Field(text, frozenset(values), text.startswith("*"))


def _number(token: str, name: str, low: int, high: int, names: list[str] | None) -> int:
    if token.isdigit():
        if len(token) > 4 or not low <= int(token) <= high:
            raise FieldError(f"{name} {token} is out of range {low}-{high}")
        return int(token)
    if names and token.lower() in names:
        return low + names.index(token.lower())
    if names:
        raise FieldError(f"unknown {name} name {token!r} (use {names[0]}..{names[-1]}, any case)")
    raise FieldError(f"{name} {token!r} is not a number")


def _parse_element(element: str, name: str, low: int, high: int, names) -> set[int]:
    if not element:
        raise FieldError(f"empty item in the {name} list")
    for char, what in (("L", "'L' (last)"), ("W", "'W' (nearest weekday)"), ("#", "'#' (nth weekday)"),
                       ("?", "'?'")):
        if char in element and not (char in "LW" and names and _only_names(element, names)):
            raise FieldError(f"{what} in the {name} field is a Quartz/croniter extension, not cron syntax")
    if element.upper().startswith("H") and not (names and _only_names(element, names)):
        raise FieldError(f"'H' in the {name} field is Jenkins syntax, not cron")
    if "~" in element:
        raise FieldError(f"'~' (random) in the {name} field is not Debian cron syntax")
    match = _ELEMENT.match(element)
    if not match:
        raise FieldError(f"cannot read {element!r} in the {name} field")
    start, end, step = match["start"], match["end"], match["step"]
    if start == "*":
        if end is not None:
            raise FieldError(f"cannot read {element!r} in the {name} field")
        first, last = low, high
    else:
        first = _number(start, name, low, high, names)
        if end is None:
            if step is not None:
                raise FieldError(
                    f"{element!r}: a step after a single number is rejected by Debian's cron and "
                    f"means {start}-{high}/{step} to cronie; write the range you mean "
                    f"({start}-{high}/{step})")
            return {first}
        last = _number(end, name, low, high, names)
        if first > last:
            raise FieldError(f"{element!r}: the range runs backwards; cron implementations disagree "
                             f"on what that means, so write it as ascending ranges "
                             f"({start}-{high},{low}-{end} if you mean a wrap-around)")
    stride = 1 if step is None else int(step)
    if stride == 0:
        raise FieldError(f"{element!r}: a step of 0")
    return set(range(first, last + 1, stride))


def _only_names(element: str, names: list[str]) -> bool:
    """True when every letter run in the element is a month/day name (so the 'W' of
    'wed' or the 'L' of 'jul' is not an extension)."""
    return all(word.lower() in names for word in re.findall(r"[A-Za-z]+", element))


def split_percent(raw: str) -> tuple[str, str | None]:
    """Cron's % rule (do_command.c): the first unescaped % ends the command, `\\%` in
    the command becomes `%`, other backslashes stay. The rest becomes stdin: `%` is a
    newline, `\\%` a `%`, any other backslash stays."""
    out: list[str] = []
    escaped = False
    for i, ch in enumerate(raw):
        if escaped:
            escaped = False
            if ch == "%":
                out[-1] = "%"
            else:
                out.append(ch)
            continue
        if ch == "\\":
            escaped = True
            out.append(ch)
            continue
        if ch == "%":
            return "".join(out), _stdin_text(raw[i + 1:])
        out.append(ch)
    return "".join(out), None


def _stdin_text(rest: str) -> str:
    out: list[str] = []
    escaped = False
    for ch in rest:
        if escaped:
            if ch != "%":
                out.append("\\")
        elif ch == "%":
            ch = "\n"
        escaped = ch == "\\"
        if not escaped:
            out.append(ch)
    if escaped:
        out.append("\\")
    return "".join(out)


def parse_env(line: str) -> tuple[str, str] | None:
    """`NAME=VALUE` as cron reads it, or None when the line is not an assignment."""
    match = _ENV.match(line)
    if not match:
        return None
    name = match["dq"] if match["dq"] is not None else match["sq"] if match["sq"] is not None else match["bare"]
    value = match["value"].strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return name, value


def parse_schedule(fields: list[str]) -> Schedule:
    return Schedule(" ".join(fields), *(parse_field(text, i) for i, text in enumerate(fields)))


def parse_crontab(text: str, *, user_column: bool = False) -> Crontab:
    result = Crontab()
    env: dict[str, str] = {}
    for lineno, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        assignment = parse_env(line)
        if assignment is not None:
            name, value = assignment
            if not name or _CONTROL.search(name + value):
                result.problems.append(Problem(lineno, line, "cannot read this environment line"))
                continue
            env[name] = value
            continue
        try:
            entry = _parse_entry(lineno, line, user_column, tuple(env.items()))
        except FieldError as err:
            result.problems.append(Problem(lineno, line, str(err)))
            continue
        result.entries.append(entry)
    return result


def _parse_entry(lineno: int, line: str, user_column: bool, env) -> Entry:
    if "\r" in line:
        raise FieldError("the line ends in a carriage return (a DOS line ending); cron would "
                         "pass it to the shell as part of the command")
    rest = line.lstrip(" \t")
    if rest.startswith("@"):
        keyword, _, rest = _word(rest)
        if keyword == REBOOT:
            schedule = Schedule(REBOOT)
        elif keyword in SPECIALS:
            schedule = parse_schedule(SPECIALS[keyword].split())
            schedule = Schedule(keyword, schedule.minute, schedule.hour, schedule.dom,
                                schedule.month, schedule.dow)
        else:
            raise FieldError(f"unknown keyword {keyword!r} (cron knows {', '.join([REBOOT, *SPECIALS])})")
    else:
        fields = []
        for _ in range(5):
            word, _, rest = _word(rest)
            if not word:
                raise FieldError(f"expected five time fields, found {len(fields)}"
                                 + (" and no command" if fields else ""))
            fields.append(word)
        schedule = parse_schedule(fields)
    user = None
    if user_column:
        user, _, rest = _word(rest)
        if not user:
            raise FieldError("no user column (this file is read in /etc/crontab format)")
        if not _USER.match(user):
            raise FieldError(f"{user!r} is not a user name (this file is read in /etc/crontab format)")
    if not rest.strip():
        raise FieldError("no command")
    command, stdin = split_percent(rest)
    if not command.strip():
        raise FieldError("the command is empty (the line starts with cron's % stdin marker)")
    if _CONTROL.search(command) or (stdin and _CONTROL.search(stdin.replace("\n", ""))):
        raise FieldError("a control character in the command")
    return Entry(lineno, line, schedule, command, stdin, env, user)


def _word(text: str) -> tuple[str, str, str]:
    """(first word, separator, the rest with its leading blanks removed)."""
    match = re.match(r"([^ \t]*)([ \t]*)(.*)$", text, re.S)
    return match[1], match[2], match[3]
