"""`tick-exporter cron2timer [FILE|-] [--system] [--user-column [--allow-unknown-user]]
[--run-as USER] [--output-dir DIR] [--prefix P]`.

Prints every converted entry's NAME.service and NAME.timer (or writes them to DIR),
then the systemctl commands that install them. Lines that cannot be converted
faithfully are listed on stderr with their line numbers and stay in cron; the others
are still converted, and the exit status is 2 so a script notices. Exit 0: every entry
was converted.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .conversion import Conversion


EXIT_PROBLEMS = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="?", default="-", metavar="FILE|-",
                        help="the crontab (default: stdin), e.g. from `crontab -l`")
    parser.add_argument("--system", action="store_true",
                        help="units for the system manager (/etc/systemd/system), run as root "
                             "(or --run-as); default: the user's own manager (systemctl --user)")
    parser.add_argument("--user-column", action="store_true",
                        help="/etc/crontab and /etc/cron.d format: a user name after the time "
                             "fields, which becomes User= (implies --system)")
    parser.add_argument("--allow-unknown-user", action="store_true",
                        help="with --user-column: accept user names this machine does not know "
                             "(a crontab converted for another machine); default: refuse the line")
    parser.add_argument("--run-as", metavar="USER",
                        help="with --system and no user column: User= for every unit (default root)")
    parser.add_argument("--output-dir", metavar="DIR", help="write the unit files here instead of printing them")
    parser.add_argument("--prefix", default="", metavar="P", help="prepended to every unit name, e.g. cron-")


def run(args: argparse.Namespace) -> int:
    from .conversion import convert  # (see __init__: only for this command)
    from .units import NAME_OK
    system = args.system or args.user_column
    if args.run_as is not None and (not system or args.user_column):
        print("cron2timer: --run-as needs --system and no --user-column", file=sys.stderr)
        return EXIT_PROBLEMS
    if args.allow_unknown_user and not args.user_column:
        print("cron2timer: --allow-unknown-user needs --user-column", file=sys.stderr)
        return EXIT_PROBLEMS
    if args.prefix and not NAME_OK.match(args.prefix):
        print(f"cron2timer: --prefix {args.prefix!r}: use only letters, digits and ':_.-'", file=sys.stderr)
        return EXIT_PROBLEMS
    source = "<stdin>" if args.file == "-" else args.file
    try:
        data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
        text = data.decode("utf-8")
    except OSError as err:
        print(f"cron2timer: cannot read {source}: {err.strerror or err}", file=sys.stderr)
        return EXIT_PROBLEMS
    except UnicodeDecodeError as err:
        print(f"cron2timer: {source} is not UTF-8 text ({err.reason} at byte {err.start})", file=sys.stderr)
        return EXIT_PROBLEMS
    result = convert(text, source=source, user_column=args.user_column, system=system,
                     run_as=args.run_as, prefix=args.prefix,
                     allow_unknown_users=args.allow_unknown_user)
    written_problems: list[str] = []
    if args.output_dir:
        written_problems = write_units(result, Path(args.output_dir))
    else:
        print_units(result)
    print_commands(result, system, args.output_dir)
    for hint in result.hints:
        print(f"cron2timer: {source}:{hint.lineno}: hint: {hint.message}\n    {hint.line.strip()}",
              file=sys.stderr)
    for problem in result.problems:
        print(f"cron2timer: {source}:{problem.lineno}: {problem.message}\n    {problem.line.strip()}",
              file=sys.stderr)
    for message in written_problems:
        print(f"cron2timer: {message}", file=sys.stderr)
    if result.problems or written_problems:
        print(f"cron2timer: {len(result.units)} entries converted, {len(result.problems)} lines not "
              f"converted (they stay in cron)"
              + (f", {len(written_problems)} files not written" if written_problems else ""),
              file=sys.stderr)
        return EXIT_PROBLEMS
    return 0


def unit_files(result: Conversion) -> list[tuple[str, str]]:
    return [(f"{unit.name}.{kind}", text) for unit in result.units
            for kind, text in (("service", unit.service), ("timer", unit.timer))]


def print_units(result: Conversion) -> None:
    for filename, text in unit_files(result):
        print(f"# ===== {filename} =====")
        print(text)


def write_units(result: Conversion, directory: Path) -> list[str]:
    """Write each unit file; an existing file with other content is never overwritten
    (that unit is dropped from the result and reported)."""
    directory.mkdir(parents=True, exist_ok=True)
    problems, kept = [], []
    for unit in result.units:
        paths = {directory / f"{unit.name}.service": unit.service, directory / f"{unit.name}.timer": unit.timer}
        clashing = [str(p) for p, text in paths.items() if p.exists() and p.read_text() != text]
        if clashing:
            problems.append(f"{', '.join(clashing)} exists with other content; not overwritten "
                            f"(line {unit.entry.lineno} not converted; try --prefix)")
            continue
        for path, text in paths.items():
            if not path.exists():
                temporary = path.with_name(f".{path.name}.tmp")
                temporary.write_text(text)
                os.replace(temporary, path)
        kept.append(unit)
        print(f"# wrote {directory / unit.name}.service and .timer")
    result.units[:] = kept
    return problems


def unit_directory(system: bool) -> Path:
    if system:
        return Path("/etc/systemd/system")
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(config) / "systemd" / "user"


def print_commands(result: Conversion, system: bool, output_dir: str | None) -> None:
    if not result.units:
        print("# nothing to install")
        return
    systemctl = "systemctl" if system else "systemctl --user"
    target = unit_directory(system)
    lines = ["", f"# Install ({'as root' if system else 'as the crontab owner'}):"]
    if output_dir is None:
        lines.append(f"#   save each file above in {target}/ (or run again with --output-dir {target})")
    elif Path(output_dir).resolve() != target.resolve():
        files = " ".join(f"{Path(output_dir) / name}" for name, _ in unit_files(result))
        lines.append(f"cp {files} {target}/")
    lines.append(f"{systemctl} daemon-reload")
    for unit in result.units:
        if unit.reboot:
            lines.append(f"{systemctl} enable {unit.name}.timer"
                         f"   # @reboot: runs at the next boot (--now would run it right away)")
        else:
            lines.append(f"{systemctl} enable --now {unit.name}.timer")
    if not system:
        lines.append("# A user's timers run while the user's manager runs (from login); "
                     "`loginctl enable-linger $USER` starts it at boot, like cron.")
    lines.append(f"# Check: {systemctl} list-timers; then remove the converted lines from the crontab.")
    print("\n".join(lines))
