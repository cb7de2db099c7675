"""Crontab entries -> NAME.service + NAME.timer texts.

The service runs the command the way cron does: `SHELL -c COMMAND` (SHELL from the
crontab, else /bin/sh), in the user's home directory, with cron's environment (PATH
from the crontab or cron's default /usr/bin:/bin, SHELL, and every other crontab
variable above the entry, MAILTO included), the `%` stdin text as StandardInputData=.
Because the command goes through the shell, redirections (`>> /var/log/x.log 2>&1`),
pipes and `&&` keep working.

systemd reads unit files with its own rules, so every value is escaped for them:
`%` -> `%%` (specifiers, everywhere), `$` -> `$$` (ExecStart= expands $VAR), and
inside quotes `\\` -> `\\\\` and the quote character -> `\\'` / `\\"` (C-style escapes).
"""

from __future__ import annotations

import base64
import re
import shlex
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .calendar import oncalendar
from .parse import DEFAULT_PATH, DEFAULT_SHELL, Entry

MAX_NAME = 40
NAME_OK = re.compile(r"^[A-Za-z0-9:_.\-]+$")  # systemd-escape's unescaped set (no '\', no '@')
# Skipped when looking for the program that names a unit, with their options that take a value.
WRAPPERS = {"sudo": {"-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U"}, "nice": {"-n"},
            "ionice": {"-c", "-n", "-p"}, "nohup": set(), "chronic": set(), "cronic": set(),
            "flock": {"-w", "-E"}, "timeout": {"-s", "-k"}, "env": {"-u", "-C", "-S"}, "exec": {"-a"},
            "time": set(), "setlock": set(), "lckdo": {"-w"}, "run-one": set(), "systemd-cat": {"-t", "-p"},
            "command": set(), "stdbuf": set(), "chrt": set(), "taskset": set(), "unbuffer": set()}
WRAPPER_ARGS = {"flock": 1, "timeout": 1, "setlock": 1, "lckdo": 1, "chrt": 1, "taskset": 1}
PREAMBLE = {"cd", "test", "[", "[[", "sleep", "export", "source", ".", ":", "true", "false", "set",
            "umask", "ulimit", "fi", "done", "esac", "}", "]", "]]"}
KEYWORDS = {"then", "else", "do", "!", "{"}  # dropped from the front of a command
CONDITIONS = {"if", "elif", "while", "until"}  # the command after them is a test
INTERPRETERS = {"sh", "bash", "dash", "zsh", "ksh", "python", "python2", "python3", "perl", "php",
                "ruby", "node", "nodejs", "lua", "tclsh", "Rscript", "java"}
INLINE_CODE = {"-c", "-e", "-r"}  # sh -c, perl -e, php -r: no script to name the unit after
EXTENSIONS = (".sh", ".bash", ".py", ".pl", ".php", ".rb", ".js", ".lua", ".jar")
SEPARATORS = {"&&", "||", ";", "|", "&", "(", ")", ";;", "|&"}
REDIRECT = re.compile(r"^[0-9]*(>>?|<|>&|<&|&>>?)[0-9-]*$")
SUBCOMMAND = re.compile(r"^[a-z][a-z0-9_:-]{1,24}$")


class Refused(ValueError):
    pass


@dataclass(frozen=True)
class Unit:
    entry: Entry
    name: str
    service: str
    timer: str
    oncalendar: tuple[str, ...]  # empty for @reboot

    @property
    def reboot(self) -> bool:
        return self.entry.schedule.reboot


# -- escaping -------------------------------------------------------------------------

def specifiers(text: str) -> str:
    return text.replace("%", "%%")


def quoted(text: str, quote: str = "'") -> str:
    """One word for ExecStart=/Environment=: quoted, C-escaped, specifiers escaped."""
    return quote + specifiers(text.replace("\\", "\\\\").replace(quote, "\\" + quote)) + quote


def exec_word(text: str) -> str:
    """A quoted ExecStart= argument: also `$` -> `$$` (systemd expands $VAR there)."""
    return quoted(text).replace("$", "$$")


def comment_safe(text: str) -> str:
    """One unit-file comment line's text; a trailing backslash would continue it."""
    return text + " " if text.endswith("\\") else text


def description(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return specifiers(text).rstrip("\\")


# -- names --------------------------------------------------------------------------

def _words(command: str) -> list[str]:
    command = re.sub(r"\$\([^()]*\)|`[^`]*`|\$\[[^\]]*\]", " x ", command)  # substitutions
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        return list(lexer)
    except ValueError:  # unbalanced quotes: cron's shell would fail, the name need not
        return command.split()


def _base(word: str) -> str:
    base = word.rstrip("/").rsplit("/", 1)[-1]
    for ext in EXTENSIONS:
        if base.endswith(ext) and len(base) > len(ext):
            return base[: -len(ext)]
    return base


def _program(segment: list[str]) -> list[str]:
    """The words of a simple command from its program on ([] for a test, `cd`...)."""
    segment = _drop_redirects(segment)
    while segment and segment[0] in KEYWORDS:
        segment = segment[1:]
    if not segment or segment[0] in CONDITIONS:
        return []
    while segment and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", segment[0]):
        segment = segment[1:]
    while segment and _base(segment[0]) in WRAPPERS:
        wrapper, segment = _base(segment[0]), segment[1:]
        while segment and (segment[0].startswith("-") or re.match(r"^[A-Za-z_]\w*=", segment[0])):
            option, segment = segment[0], segment[1:]
            if option in WRAPPERS[wrapper] and segment:
                segment = segment[1:]
        segment = segment[WRAPPER_ARGS.get(wrapper, 0):]
    if not segment or _base(segment[0]) in PREAMBLE or segment[0].startswith("$"):
        return []
    return segment


def derive_name(command: str) -> str:
    """A short name from the command: the program (past `cd x &&`, `if [...]; then`,
    `nice`, `sudo -u x`, `VAR=x`), for an interpreter its script, and a subcommand
    (`certbot renew`, `manage.py clearsessions`)."""
    words, i, found, fallback = _words(command), 0, [], None
    while i < len(words):
        segment = []
        while i < len(words) and words[i] not in SEPARATORS:
            segment.append(words[i])
            i += 1
        i += 1
        program = _program(segment)
        if not program:
            continue
        base, rest = _base(program[0]), program[1:]
        if base in INTERPRETERS or re.match(r"^python[0-9.]*$", base):
            options = []
            while rest and rest[0].startswith("-"):
                options.append(rest.pop(0))
                if options[-1] == "-m" and rest:  # python -m module
                    break
            if INLINE_CODE & set(options) or not rest:
                fallback = fallback or base
                continue
            base, rest = _base(rest[0]), rest[1:]
        found = [base, *rest]
        break
    if not found:
        return _clean(fallback or "") or "cron-job"
    base, rest = found[0], found[1:]
    if base == "run-parts":
        targets = [w for w in rest if not w.startswith("-")]
        return _clean(f"run-parts-{_base(targets[-1])}" if targets else base) or "cron-job"
    sub = rest[0] if rest and SUBCOMMAND.match(rest[0]) else None
    return _clean(f"{base}-{sub}" if sub else base) or "cron-job"


def _drop_redirects(words: list[str]) -> list[str]:
    kept, skip = [], False
    for word in words:
        if skip:
            skip = False
            continue
        if REDIRECT.match(word):
            skip = not re.search(r"&[0-9-]+$", word)  # `2>&1` has its target built in
            continue
        kept.append(word)
    return kept


def _clean(name: str) -> str:
    name = re.sub(r"[^a-z0-9_.-]+", "-", name.lower())
    name = re.sub(r"-{2,}", "-", name).strip("-.")
    return name[:MAX_NAME].rstrip("-.")


class Names:
    """Unique unit names: a clash gets -2, -3..."""

    def __init__(self, prefix: str = ""):
        if prefix and not NAME_OK.match(prefix):
            raise ValueError(f"--prefix {prefix!r}: use only letters, digits and ':_.-'")
        self.prefix, self.used = prefix, set()

    def next(self, command: str) -> str:
        """The name the command gets; `take` it once its units are made."""
        base = self.prefix + derive_name(command)
        name, n = base, 1
        while name in self.used:
            n += 1
            name = f"{base}-{n}"
        return name

    def take(self, name: str) -> None:
        self.used.add(name)


# -- the units ------------------------------------------------------------------------

def environment(entry: Entry) -> list[tuple[str, str]]:
    """Cron's job environment: PATH and SHELL (the crontab's or cron's defaults), then
    the crontab's other variables. HOME/LOGNAME/USER come from User= (or the user
    manager), as cron takes them from the password database."""
    env = dict(entry.env)
    first = [("PATH", env.pop("PATH", DEFAULT_PATH)), ("SHELL", env.pop("SHELL", DEFAULT_SHELL))]
    return first + list(env.items())


def render(entry: Entry, name: str, *, system: bool, run_as: str | None, source: str) -> Unit:
    """NAME.service and NAME.timer for one entry; Refused when they cannot be faithful."""
    shell = entry.shell
    if not shell.startswith("/") or any(c.isspace() for c in shell):
        raise Refused(f"SHELL={shell!r}: cron executes it as a path, systemd needs an absolute one")
    home = entry.getenv("HOME")
    if home is not None and not home.startswith("/"):
        raise Refused(f"HOME={home!r} is not an absolute path (cron changes into it before the job)")
    zone = entry.getenv("CRON_TZ")
    if zone is not None:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise Refused(f"CRON_TZ={zone!r} is not a time zone this host knows") from None
    user = entry.user or run_as
    schedule = entry.schedule
    calendar = () if schedule.reboot else tuple(oncalendar(schedule, zone))
    origin = f"{source}:{entry.lineno}"
    head = ["# Converted by tick-exporter cron2timer from " + comment_safe(origin) + ":",
            "#   " + comment_safe(entry.line.strip())]

    service = head[:]
    mailto = entry.getenv("MAILTO")
    if mailto is not None:
        service.append(f"# MAILTO={comment_safe(mailto)}: systemd sends no mail; the job's output "
                       f"is in the journal: journalctl {'' if system else '--user '}-u {name}.service")
    service += ["[Unit]", f"Description={description(entry.command)}"]
    if system:  # cron.service itself starts after these
        service.append("After=remote-fs.target nss-user-lookup.target")
    service += ["", "[Service]", "Type=oneshot"]
    if user:
        service.append(f"User={user}")
    service.append(f"WorkingDirectory=-{home}" if home else "WorkingDirectory=-~")
    for key, value in environment(entry):
        service.append("Environment=" + quoted(f"{key}={value}", '"'))
    service.append(f"ExecStart={shell} -c {exec_word(entry.command)}")
    if entry.stdin is not None:
        service.append("# stdin from cron's % rule: " + comment_safe(repr(entry.stdin)))
        service.append("StandardInput=data")
        service.append("StandardInputData=" + base64.b64encode(entry.stdin.encode()).decode())
    service.append("StandardOutput=journal")
    service.append("StandardError=journal")
    service.append("# cron never kills what a job leaves running in the background (`cmd &`)")
    service.append("KillMode=process")

    timer = head + ["[Unit]", f"Description={description(schedule.text)}: {name}.service", "", "[Timer]"]
    if schedule.reboot:
        timer.append("OnBootSec=0")  # cron runs @reboot jobs when it starts at boot
    else:
        timer += [f"OnCalendar={line}" for line in calendar]
        timer += ["AccuracySec=1s", "Persistent=true"]
    timer += ["", "[Install]", "WantedBy=timers.target"]
    return Unit(entry, name, "\n".join(service) + "\n", "\n".join(timer) + "\n", calendar)
