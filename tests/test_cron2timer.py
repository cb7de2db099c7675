"""cron2timer proven against the real tools.

* Schedules: for every entry of the corpus (tests/fixtures/crontab/), the next 100
  elapses that `systemd-analyze calendar` computes for the generated OnCalendar= lines
  (all lines of a timer merged) equal the next 100 run times croniter computes for the
  original cron expression (croniter with implement_cron_bug=True: Debian cron's rule
  that a day field starting with `*` makes day-of-month and day-of-week an AND).
  From three base times, in UTC and in Europe/Berlin. In UTC the lists are compared
  whole. In Berlin (and the CRON_TZ zones) the instants within an hour of a DST change
  are set aside on both sides first: there cron, croniter and systemd each do
  something different (pinned in test_dst_differences_are_only_at_the_changes).
  systemd computes calendar elapses only up to the year 2199; both sides stop there.
* Every generated unit passes `systemd-analyze verify` without a single message.
* Converted entries installed in the real user manager run: the command, its
  redirect, the % stdin text and the escaped $, %, \\ and quotes reach the shell
  exactly as cron would hand them over.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from exporter.cron2timer.conversion import convert
from exporter.cron2timer.command import unit_files

from tests.services import wait_until

CORPUS = Path(__file__).parent / "fixtures" / "crontab"
USER_COLUMN = {"etc-crontab"}
BASES = [datetime(2026, 11, 26, 0, 13, tzinfo=timezone.utc),
         datetime(2027, 3, 27, 12, 0, tzinfo=timezone.utc),  # 13 h before Berlin's spring change
         datetime(2027, 10, 30, 12, 0, tzinfo=timezone.utc),  # 13 h before its autumn change
         datetime(2028, 2, 27, 23, 59, 30, tzinfo=timezone.utc)]  # a leap February, mid-minute
ZONES = ["UTC", "Europe/Berlin"]
ITERATIONS = 100
HORIZON = datetime(2200, 1, 1, tzinfo=timezone.utc)  # systemd's calendar stops at 2199


def corpus():
    """(file name, Conversion) for every corpus file."""
    return [(path.name, convert(path.read_text(), source=path.name, user_column=path.name in USER_COLUMN,
                               allow_unknown_users=True))  # users of the machine it came from
            for path in sorted(CORPUS.iterdir())]


CONVERTED = corpus()
ENTRIES = [(name, unit) for name, result in CONVERTED for unit in result.units]


def test_the_corpus_converts_without_a_problem():
    assert len(ENTRIES) >= 280
    for name, result in CONVERTED:
        assert result.problems == [], name
    schedules = [unit.entry.schedule for _, unit in ENTRIES]
    assert sum(s.reboot for s in schedules) >= 5
    calendar = [unit for _, unit in ENTRIES if not unit.reboot]
    # the cases the proof must cover are really in the corpus
    assert sum(len(unit.oncalendar) == 2 for unit in calendar) >= 10  # cron's day OR
    assert {s.text for s in schedules} >= {"@hourly", "@daily", "@midnight", "@weekly", "@monthly",
                                            "@yearly", "@annually", "@reboot"}
    assert any(unit.entry.stdin for _, unit in ENTRIES)
    assert any(unit.entry.getenv("CRON_TZ") for _, unit in ENTRIES)


# -- systemd-analyze calendar ----------------------------------------------------------

_ELAPSE_LINE = re.compile(r"^\s*(?:Next elapse|Iter\. #\d+):\s+(.*)$")
_UTC_LINE = re.compile(r"^\s*\(in UTC\):\s+(.*)$")


def systemd_elapses(expressions: list[str], base: datetime, zone: str) -> dict[str, list[datetime]]:
    """Every expression's next ITERATIONS elapses after `base`, from one
    `systemd-analyze calendar` run with TZ=zone, as UTC datetimes."""
    out = subprocess.run(
        ["systemd-analyze", "calendar", f"--iterations={ITERATIONS}",
         f"--base-time={base:%Y-%m-%d %H:%M:%S} UTC", *expressions],
        env={**os.environ, "TZ": zone, "SYSTEMD_COLORS": "0"}, capture_output=True, text=True,
        timeout=300, check=True).stdout
    result: dict[str, list[datetime]] = {}
    # One block per expression. With TZ=UTC each elapse line is in UTC; otherwise it is
    # in local time and followed by "(in UTC): ...".
    stamp = _UTC_LINE if zone != "UTC" else _ELAPSE_LINE
    # one block per expression, in order ("Original form:" only when it differs from the
    # normalized one)
    blocks = out.strip("\n").split("\n\n")
    assert len(blocks) == len(expressions)
    for expression, block in zip(expressions, blocks):
        lines = block.splitlines()
        assert lines[0].split(" form: ", 1)[1] == expression or lines[1].startswith("Normalized form: ")
        result[expression] = [_utc(m[1]) for line in lines if (m := stamp.match(line)) and m[1] != "never"]
    return result


def _utc(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%a %Y-%m-%d %H:%M:%S UTC").replace(tzinfo=timezone.utc)


def cron_times(expression: str, base: datetime, zone: str) -> list[datetime]:
    """croniter's next ITERATIONS run times (before HORIZON) of a cron expression
    evaluated in `zone`, as UTC datetimes."""
    it = croniter(expression, base.astimezone(ZoneInfo(zone)), implement_cron_bug=True,
                  max_years_between_matches=500)
    times = []
    while len(times) < ITERATIONS:
        t = it.get_next(datetime).astimezone(timezone.utc)
        if t >= HORIZON:
            break
        times.append(t)
    return times


def near_dst_change(t: datetime, zone: str) -> bool:
    """Within an hour of a UTC-offset change of `zone` (the gap and the repeated hour)."""
    tz = ZoneInfo(zone)
    return (t - timedelta(hours=1, seconds=1)).astimezone(tz).utcoffset() != \
        (t + timedelta(hours=1, seconds=1)).astimezone(tz).utcoffset()


def calendar_units():
    return [(name, unit) for name, unit in ENTRIES if not unit.reboot]


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("base", BASES, ids=lambda b: f"{b:%Y%m%dT%H%M%S}")
def test_systemd_elapses_equal_croniter_run_times(base, zone):
    units = calendar_units()
    expressions = sorted({line for _, unit in units for line in unit.oncalendar})
    elapses = systemd_elapses(expressions, base, zone)
    compared = set_aside = 0
    for name, unit in units:
        effective = unit.entry.getenv("CRON_TZ") or zone
        where = f"{name}:{unit.entry.lineno} {unit.entry.schedule.text} -> {list(unit.oncalendar)}"
        systemd = sorted({t for line in unit.oncalendar for t in elapses[line] if t < HORIZON})[:ITERATIONS]
        cron = cron_times(unit.entry.schedule.text, base, effective)
        assert cron, where
        if effective == "UTC":
            assert systemd == cron, where
            compared += len(cron)
            continue
        # DST zone: both lists without the instants next to an offset change, compared
        # up to where both computed.
        until = min(systemd[-1], cron[-1]) if len(systemd) == len(cron) == ITERATIONS else HORIZON
        kept_systemd = [t for t in systemd if t <= until and not near_dst_change(t, effective)]
        kept_cron = [t for t in cron if t <= until and not near_dst_change(t, effective)]
        assert kept_systemd == kept_cron, where
        assert len(kept_cron) >= ITERATIONS // 2 or len(cron) < ITERATIONS, where  # not vacuous
        compared += len(kept_cron)
        set_aside += len(cron) - len([t for t in cron if t <= until]) + \
            len([t for t in cron if t <= until and near_dst_change(t, effective)])
    assert compared >= 0.9 * ITERATIONS * len(units)
    if zone == "UTC":
        assert set_aside == 0
    print(f"{zone} from {base}: {len(units)} timers, {compared} run times equal, {set_aside} set aside")


def test_a_feb_29_monday_is_compared_up_to_systemds_horizon():
    """`0 0 29 2 1` is Feb 29 OR any Monday in February; the day-of-month side alone
    (`0 0 29 2 */1`, an AND) elapses rarely, and systemd stops computing in 2199."""
    (unit,) = [u for _, u in ENTRIES if u.entry.command.endswith("leap-day-star-dow")]
    assert unit.oncalendar == ("*-02-29 00:00:00",)
    systemd = systemd_elapses(list(unit.oncalendar), BASES[0], "UTC")[unit.oncalendar[0]]
    cron = cron_times(unit.entry.schedule.text, BASES[0], "UTC")
    assert systemd == cron
    assert len(cron) == (2196 - 2028) // 4 + 1 - 1  # leap years 2028..2196, without 2100
    assert cron[-1].year == 2196


def test_dst_differences_are_only_at_the_changes():
    """What each side does around Berlin's 2026 changes (spring: 02:00 CET -> 03:00 CEST
    on 29 March; autumn: 03:00 CEST -> 02:00 CET on 25 October); docs/cron2timer.md
    quotes this. systemd skips a wall time that does not exist and runs a repeated one
    once; croniter (like Debian's cron for fixed times) runs a skipped job at 03:00 and,
    unlike Debian's cron, a fixed-time job twice in the repeated hour; both run
    wildcard-hour jobs through the repeated hour... except systemd."""
    zone = "Europe/Berlin"

    def both(expression, line, base):
        systemd = systemd_elapses([line], base, zone)[line][:6]
        cron = cron_times(expression, base, zone)[:6]
        return [f"{t:%m-%d %H:%M}" for t in systemd], [f"{t:%m-%d %H:%M}" for t in cron]

    spring = datetime(2026, 3, 27, 11, 0, tzinfo=timezone.utc)
    systemd, cron = both("30 2 * * *", "*-*-* 02:30:00", spring)  # UTC times below
    assert systemd[:3] == ["03-28 01:30", "03-30 00:30", "03-31 00:30"]  # 29 March skipped
    assert cron[:3] == ["03-28 01:30", "03-29 01:00", "03-30 00:30"]  # 29 March at 03:00 CEST

    autumn = datetime(2026, 10, 24, 10, 0, tzinfo=timezone.utc)
    systemd, cron = both("30 2 * * *", "*-*-* 02:30:00", autumn)
    assert systemd[:2] == ["10-25 00:30", "10-26 01:30"]  # once, at 02:30 CEST
    assert cron[:3] == ["10-25 00:30", "10-25 01:30", "10-26 01:30"]  # CEST and CET

    night = datetime(2026, 10, 24, 23, 30, tzinfo=timezone.utc)
    systemd, cron = both("*/20 * * * *", "*-*-* *:00/20:00", night)
    assert systemd == ["10-24 23:40", "10-25 00:00", "10-25 00:20", "10-25 00:40",
                       "10-25 02:00", "10-25 02:20"]  # 02:00-02:59 CET (01:00-01:59 UTC) skipped
    assert cron == ["10-24 23:40", "10-25 00:00", "10-25 00:20", "10-25 00:40",
                    "10-25 01:00", "10-25 01:20"]
    # every difference lies within an hour of the change, which the comparison sets aside
    change = datetime(2026, 10, 25, 1, 0, tzinfo=timezone.utc)
    for t in (change - timedelta(minutes=30), change + timedelta(minutes=59)):
        assert near_dst_change(t, zone)
    assert not near_dst_change(change + timedelta(hours=1, minutes=1), zone)


def test_systemd_repetitions_that_do_not_divide_their_range_go_wrong():
    """Why `*/7` minutes becomes a list: systemd 252 elapses `*:00/7` at 23:56 and then
    at 00:07, never at 00:00 (cron: 00:00). The list form is right."""
    base = datetime(2026, 11, 26, 23, 50, tzinfo=timezone.utc)
    step, listed = "*-*-* *:00/7:00", "*-*-* *:00,07,14,21,28,35,42,49,56:00"
    elapses = systemd_elapses([step, listed], base, "UTC")
    assert [f"{t:%H:%M}" for t in elapses[step][:2]] == ["23:56", "00:07"]
    assert [f"{t:%H:%M}" for t in elapses[listed][:2]] == ["23:56", "00:00"]
    assert calendar_of("*/7 * * * *") == [listed]


def calendar_of(schedule: str) -> list[str]:
    (unit,) = convert(f"{schedule} /bin/true\n").units
    return list(unit.oncalendar)


def test_every_repetition_cron2timer_writes_equals_its_list():
    """The `start/step` forms component() emits (a step dividing 60 minutes, 24 hours or
    12 months, from a start below the step) elapse exactly like the explicit lists,
    across rollovers of hour, day, month and year."""
    cases = []  # (cron schedule, the OnCalendar= it becomes, the same as a list)
    for step in (2, 3, 4, 5, 6, 10, 12, 15, 20):  # (two values, such as */30, stay a list)
        for start in range(step):
            values = ",".join(f"{v:02d}" for v in range(start, 60, step))
            cases.append((f"{start}-59/{step} * * * *", f"*-*-* *:{start:02d}/{step}:00", f"*-*-* *:{values}:00"))
    for step in (2, 3, 4, 6, 8):
        for start in range(step):
            values = ",".join(f"{v:02d}" for v in range(start, 24, step))
            cases.append((f"0 {start}-23/{step} * * *", f"*-*-* {start:02d}/{step}:00:00", f"*-*-* {values}:00:00"))
    for step in (2, 3, 4):
        for start in range(1, step + 1):
            values = ",".join(f"{v:02d}" for v in range(start, 13, step))
            cases.append((f"0 0 1 {start}-12/{step} *", f"*-{start:02d}/{step}-01 00:00:00", f"*-{values}-01 00:00:00"))
    for schedule, step_form, _ in cases:
        assert calendar_of(schedule) == [step_form], schedule
    expressions = [form for _, step_form, list_form in cases for form in (step_form, list_form)]
    for base in (datetime(2026, 12, 31, 20, 0, tzinfo=timezone.utc),
                 datetime(2027, 2, 28, 21, 0, tzinfo=timezone.utc)):
        elapses = systemd_elapses(expressions, base, "UTC")
        for schedule, step_form, list_form in cases:
            assert elapses[step_form] == elapses[list_form], (schedule, base)
            assert len(elapses[step_form]) == ITERATIONS


# -- systemd-analyze verify ------------------------------------------------------------

def test_every_generated_unit_passes_systemd_analyze_verify(tmp_path):
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    for name, result in CONVERTED:
        directory = tmp_path / name
        directory.mkdir()
        for filename, text in unit_files(result):
            (directory / filename).write_text(text)
        files = sorted(str(p) for p in directory.iterdir())
        mode = [] if name in USER_COLUMN else ["--user"]  # User= needs the system manager
        # every unit of the file in one run; verify exits 0 on warnings, so none may be printed
        verified = subprocess.run(["systemd-analyze", "verify", *mode, *files], cwd=directory,
                                  env={**os.environ, "XDG_RUNTIME_DIR": str(runtime),
                                       "SYSTEMD_LOG_LEVEL": "notice"},
                                  capture_output=True, text=True, timeout=300)
        assert (verified.returncode, verified.stdout, verified.stderr) == (0, "", ""), name
        assert len(files) == 2 * len(result.units)


def test_verify_does_complain_about_a_broken_unit(tmp_path):
    """The check above can fail: the same call reports a unit systemd cannot run."""
    (tmp_path / "broken.service").write_text("[Service]\nType=oneshot\nExecStart=/no/such/shell -c 'x'\n"
                                             "Environment=\"A=\\q\"\n")
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    verified = subprocess.run(["systemd-analyze", "verify", "--user", str(tmp_path / "broken.service")],
                              env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
                              capture_output=True, text=True, timeout=60)
    assert verified.returncode != 0
    assert "/no/such/shell" in verified.stderr


# -- the real user manager ---------------------------------------------------------------

def cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "exporter", "cron2timer", *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


def install(user_manager, output_dir: Path) -> list[str]:
    names = sorted(p.name for p in output_dir.iterdir())
    for name in names:
        user_manager.write_unit(name, (output_dir / name).read_text())
    user_manager.daemon_reload()
    return names


def test_a_converted_minutely_entry_runs_in_the_user_manager(user_manager, tmp_path):
    out = tmp_path / "hi.txt"
    crontab = f"* * * * * echo hi >> {out} 2>&1\n"
    result = cli("-", "--output-dir", str(tmp_path / "units"), "--prefix", "c2t-live-", stdin=crontab)
    assert result.returncode == 0, result.stderr
    assert "systemctl --user enable --now c2t-live-echo-hi.timer" in result.stdout
    assert install(user_manager, tmp_path / "units") == ["c2t-live-echo-hi.service", "c2t-live-echo-hi.timer"]
    user_manager.systemctl("start", "c2t-live-echo-hi.timer")
    try:
        # armed for the next full minute, as cron would run it
        next_us = user_manager.bus_property("c2t-live-echo-hi.timer", "Timer", "NextElapseUSecRealtime")
        now = time.time()
        assert now < next_us / 1e6 <= now + 61
        assert (next_us // 1_000_000) % 60 == 0 and next_us % 1_000_000 == 0
        # and it runs: the service by hand now, the timer at the minute
        user_manager.systemctl("start", "c2t-live-echo-hi.service")
        assert out.read_text() == "hi\n"
        wait_until(lambda: out.read_text().count("hi") >= 2, timeout=75, message="the timer to fire")
        assert out.read_text() == "hi\nhi\n"
        shown = user_manager.show("c2t-live-echo-hi.service", ["Result", "ExecMainStatus"])
        assert shown == {"Result": "success", "ExecMainStatus": "0"}
    finally:
        user_manager.systemctl("stop", "c2t-live-echo-hi.timer", check=False)


def test_the_shell_gets_exactly_what_cron_would_give_it(user_manager, tmp_path):
    """Quotes, backslashes, `$`, `%` (escaped and as stdin), an env line with spaces and
    quotes, the crontab's HOME as working directory, a background job left running."""
    out, bg = tmp_path / "args.txt", tmp_path / "background.txt"
    home = tmp_path / "home"
    home.mkdir()
    # cron's rule: the % of printf's format must be written \%, or it would end the command
    command = (f"printf '[\\%s]\\n' \"$GREETING\" 'it'\"'\"'s' 'back\\\\slash \\q' '$HOME ${{PATH}} $$' "
               f"\"$(pwd)\" '100\\% sure' \"$SHELL\" > {out}; cat >> {out}; "
               f"(sleep 1; echo survived > {bg}) &")
    crontab = (f"GREETING = \"  two  spaces and a \\\" quote %d \"\nHOME={home}\n"
               f"* * * * * {command}%first line%second \\% line%\n")
    result = cli("-", "--output-dir", str(tmp_path / "units"), "--prefix", "c2t-shell-", stdin=crontab)
    assert result.returncode == 0, result.stderr
    (service,) = [n for n in install(user_manager, tmp_path / "units") if n.endswith(".service")]
    user_manager.systemctl("start", service)

    # what cron does: `/bin/sh -c COMMAND` in HOME with the crontab's variables, stdin the % text
    from exporter.cron2timer.parse import parse_crontab
    (entry,) = parse_crontab(crontab).entries
    systemd_output = out.read_text()
    wait_until(bg.exists, timeout=10, message="the background job (cron never kills it)")
    out.unlink()
    bg.unlink()
    env = {"PATH": "/usr/bin:/bin", "SHELL": "/bin/sh", **dict(entry.env)}
    subprocess.run(["/bin/sh", "-c", entry.command], input=entry.stdin, text=True, cwd=home, env=env,
                   timeout=30, check=True)
    assert systemd_output == out.read_text()
    assert systemd_output == (
        "[  two  spaces and a \\\" quote %d ]\n[it's]\n[back\\\\slash \\q]\n[$HOME ${PATH} $$]\n"
        f"[{home}]\n[100% sure]\n[/bin/sh]\nfirst line\nsecond % line\n")


def test_reboot_and_day_or_timers_in_the_manager(user_manager, tmp_path):
    """The two OnCalendar= lines of cron's day-of-month OR day-of-week arm the timer for
    the earlier of their elapses; @reboot (OnBootSec=0) elapses as soon as its timer
    starts after boot, which is why the printed command for it has no --now."""
    booted = tmp_path / "booted.txt"
    crontab = f"@reboot echo booted >> {booted}\n0 4 1 * 1 echo first-or-monday\n"
    result = cli("-", "--output-dir", str(tmp_path / "units"), "--prefix", "c2t-load-", stdin=crontab)
    assert result.returncode == 0, result.stderr
    assert "systemctl --user enable c2t-load-echo-booted.timer   # @reboot" in result.stdout
    assert "systemctl --user enable --now c2t-load-echo-first-or-monday.timer" in result.stdout
    install(user_manager, tmp_path / "units")
    day_or = "c2t-load-echo-first-or-monday.timer"
    user_manager.systemctl("start", day_or)
    try:
        calendars = user_manager.bus_property(day_or, "Timer", "TimersCalendar")
        assert sorted((base, spec) for base, spec, _ in calendars) == [
            ("OnCalendar", "*-*-01 04:00:00"), ("OnCalendar", "Mon *-*-* 04:00:00")]
        shown = user_manager.show(day_or, ["Persistent", "AccuracyUSec"])
        assert (shown["Persistent"], shown["AccuracyUSec"]) == ("yes", "1s")
        next_us = user_manager.bus_property(day_or, "Timer", "NextElapseUSecRealtime")
        now = datetime.now(timezone.utc).replace(microsecond=0)
        zone = os.environ.get("TZ") or "UTC"
        expected = min(t for line in ("Mon *-*-* 04:00:00", "*-*-01 04:00:00")
                       for t in systemd_elapses([line], now, zone)[line][:1])
        assert next_us == int(expected.timestamp()) * 1_000_000
    finally:
        user_manager.systemctl("stop", day_or, check=False)

    boot = "c2t-load-echo-booted.timer"
    assert user_manager.show(boot, ["TimersMonotonic"])["TimersMonotonic"].startswith("{ OnBootUSec=0 ;")
    user_manager.systemctl("start", boot)
    try:
        wait_until(booted.exists, timeout=15, message="the @reboot job")
        assert booted.read_text() == "booted\n"
    finally:
        user_manager.systemctl("stop", boot, check=False)


# -- the command line -------------------------------------------------------------------

def test_cli_prints_units_and_commands_and_lists_every_refused_line():
    crontab = ("MAILTO=me@example.com\n"
               "30 2 * * * /usr/local/bin/backup.sh >> /var/log/backup.log 2>&1\n"
               "5/10 * * * * echo cronie-only\n"
               "0 0 30 2 * echo never\n"
               "0 0 L * * echo quartz\n")
    result = cli("-", "--system", stdin=crontab)
    assert result.returncode == 2
    assert "# ===== backup.service =====" in result.stdout
    assert "# ===== backup.timer =====" in result.stdout
    assert "User=root\n" in result.stdout and "OnCalendar=*-*-* 02:30:00\n" in result.stdout
    assert "\nsystemctl daemon-reload\nsystemctl enable --now backup.timer\n" in result.stdout
    problems = [line for line in result.stderr.splitlines() if line.startswith("cron2timer: <stdin>:")]
    assert [p.split(":")[2] for p in problems] == ["3", "4", "5"]
    assert "1 entries converted, 3 lines not converted (they stay in cron)" in result.stderr


def test_cli_writes_files_and_never_overwrites_a_different_one(tmp_path):
    crontab = tmp_path / "crontab"
    crontab.write_text("0 1 * * * root /usr/sbin/logrotate /etc/logrotate.conf\n")
    first = cli(str(crontab), "--user-column", "--output-dir", str(tmp_path / "out"))
    assert first.returncode == 0, first.stderr
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["logrotate.service", "logrotate.timer"]
    assert "User=root\n" in (tmp_path / "out" / "logrotate.service").read_text()
    assert "\nsystemctl enable --now logrotate.timer\n" in first.stdout
    again = cli(str(crontab), "--user-column", "--output-dir", str(tmp_path / "out"))
    assert again.returncode == 0, again.stderr  # same content: fine
    (tmp_path / "out" / "logrotate.timer").write_text("# someone else's\n")
    clash = cli(str(crontab), "--user-column", "--output-dir", str(tmp_path / "out"))
    assert clash.returncode == 2
    assert "logrotate.timer exists with other content; not overwritten" in clash.stderr
    assert (tmp_path / "out" / "logrotate.timer").read_text() == "# someone else's\n"


def test_cli_usage_errors():
    assert cli("/no/such/crontab").returncode == 2
    assert "--run-as needs --system" in cli("-", "--run-as", "pi", stdin="").stderr
    assert "--prefix" in cli("-", "--prefix", "a b", stdin="").stderr
    empty = cli("-", stdin="# nothing\nMAILTO=x\n")
    assert (empty.returncode, empty.stdout.strip()) == (0, "# nothing to install")
