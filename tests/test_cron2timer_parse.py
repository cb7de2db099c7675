"""cron2timer's parsing, translation and rendering rules, one table row per case.
(The schedules are proven against systemd and croniter in test_cron2timer.py.)"""

import base64

import pytest

from exporter.cron2timer.conversion import convert
from exporter.cron2timer.parse import parse_crontab, parse_env, split_percent
from exporter.cron2timer.units import Names, derive_name, exec_word, quoted


def calendar(line, **kwargs):
    result = convert(line + "\n", **kwargs)
    assert result.problems == [], result.problems
    (unit,) = result.units
    return list(unit.oncalendar)


@pytest.mark.parametrize("line, expected", [
    ("30 2 * * * x", ["*-*-* 02:30:00"]),
    ("* * * * * x", ["*-*-* *:*:00"]),
    ("*/15 * * * * x", ["*-*-* *:00/15:00"]),
    ("*/7 * * * * x", ["*-*-* *:00,07,14,21,28,35,42,49,56:00"]),  # systemd 252's 00/7 skips 00:00
    ("3-59/15 * * * * x", ["*-*-* *:03/15:00"]),
    ("5-55/10 * * * * x", ["*-*-* *:05/10:00"]),
    ("10-50/20 * * * * x", ["*-*-* *:10/20:00"]),
    ("10-40/20 * * * * x", ["*-*-* *:10,30:00"]),
    ("0 1-23/2 * * * x", ["*-*-* 01/2:00:00"]),
    ("0 */5 * * * x", ["*-*-* 00,05,10,15,20:00:00"]),
    ("0 0 */2 * * x", ["*-*-01,03,05,07,09,11,13,15,17,19,21,23,25,27,29,31 00:00:00"]),
    ("0 0 1 */3 * x", ["*-01/3-01 00:00:00"]),
    ("0 0 1 */5 * x", ["*-01,06,11-01 00:00:00"]),
    ("0-10 * * * * x", ["*-*-* *:00..10:00"]),
    ("0,10-12,30,45-47 * * * * x", ["*-*-* *:00,10..12,30,45..47:00"]),
    ("58-59 0 * * * x", ["*-*-* 00:58,59:00"]),
    ("0 9-17 * * 1-5 x", ["Mon..Fri *-*-* 09..17:00:00"]),
    ("0 0 * * mon-FRI x", ["Mon..Fri *-*-* 00:00:00"]),
    ("0 0 * * sat,SUN x", ["Sat,Sun *-*-* 00:00:00"]),
    ("0 0 * * 0 x", ["Sun *-*-* 00:00:00"]),
    ("0 0 * * 7 x", ["Sun *-*-* 00:00:00"]),
    ("0 0 * * 0,7 x", ["Sun *-*-* 00:00:00"]),
    ("0 0 * * 5-7 x", ["Fri..Sun *-*-* 00:00:00"]),
    ("0 0 * * 0-6 x", ["*-*-* 00:00:00"]),
    ("0 0 * * */2 x", ["Tue,Thu,Sat,Sun *-*-* 00:00:00"]),  # 0,2,4,6
    ("0 0 * * */7 x", ["Sun *-*-* 00:00:00"]),  # 0,7
    ("0 0 * jan-mar * x", ["*-01..03-* 00:00:00"]),
    ("0 0 1 JUL,Dec * x", ["*-07,12-01 00:00:00"]),
    ("00 05 01 01 * x", ["*-01-01 05:00:00"]),
    # cron's day rule: both restricted -> either matches -> two lines
    ("0 0 1 * 1 x", ["Mon *-*-* 00:00:00", "*-*-01 00:00:00"]),
    ("0 0 13 * 5 x", ["Fri *-*-* 00:00:00", "*-*-13 00:00:00"]),
    ("0 12 1,15 6 sat x", ["Sat *-06-* 12:00:00", "*-06-01,15 12:00:00"]),
    ("0 0 30 2 1 x", ["Mon *-02-* 00:00:00"]),  # Feb 30 never: only the Mondays side
    ("0 0 1-31 * 1 x", ["*-*-* 00:00:00"]),  # 1-31 is not `*`: OR with every day
    ("0 0 15 * 0-7 x", ["*-*-* 00:00:00"]),
    # a field starting with `*` makes it an AND (cron's source: DOM_STAR/DOW_STAR)
    ("0 0 */2 * 1 x", ["Mon *-*-01,03,05,07,09,11,13,15,17,19,21,23,25,27,29,31 00:00:00"]),
    ("0 0 1 * */2 x", ["Tue,Thu,Sat,Sun *-*-01 00:00:00"]),
    ("0 0 */1 * 5 x", ["Fri *-*-* 00:00:00"]),
    ("0 0 29 2 */1 x", ["*-02-29 00:00:00"]),
    # specials, as Debian's cron expands them
    ("@hourly x", ["*-*-* *:00:00"]),
    ("@daily x", ["*-*-* 00:00:00"]),
    ("@midnight x", ["*-*-* 00:00:00"]),
    ("@weekly x", ["Sun *-*-* 00:00:00"]),
    ("@monthly x", ["*-*-01 00:00:00"]),
    ("@yearly x", ["*-01-01 00:00:00"]),
    ("@annually x", ["*-01-01 00:00:00"]),
    ("@reboot x", []),
    ("5\t4\t*\t*\t*\tx", ["*-*-* 04:05:00"]),
    ("   7 3 * * *   x", ["*-*-* 03:07:00"]),
])
def test_schedules(line, expected):
    assert calendar(line) == expected


def test_cron_tz_puts_the_zone_on_every_line():
    assert calendar("CRON_TZ=America/New_York\n0 9 1 * 1-5 x") == [
        "Mon..Fri *-*-* 09:00:00 America/New_York", "*-*-01 09:00:00 America/New_York"]


@pytest.mark.parametrize("line, message", [
    ("5/10 * * * * x", "'5/10': a step after a single number is rejected by Debian's cron"),
    ("0 0 * * 5-2 x", "'5-2': the range runs backwards"),
    ("*/0 * * * * x", "'*/0': a step of 0"),
    ("1-5/0 * * * * x", "'1-5/0': a step of 0"),
    ("60 * * * * x", "minute 60 is out of range 0-59"),
    ("0 24 * * * x", "hour 24 is out of range 0-23"),
    ("0 0 0 * * x", "day-of-month 0 is out of range 1-31"),
    ("0 0 32 * * x", "day-of-month 32 is out of range 1-31"),
    ("0 0 * 13 * x", "month 13 is out of range 1-12"),
    ("0 0 * * 8 x", "day-of-week 8 is out of range 0-7"),
    ("0-60 * * * * x", "minute 60 is out of range 0-59"),
    ("0 0 L * * x", "'L' (last) in the day-of-month field is a Quartz/croniter extension"),
    ("0 0 15W * * x", "'W' (nearest weekday) in the day-of-month field"),
    ("0 0 * * 1#2 x", "'#' (nth weekday) in the day-of-week field"),
    ("0 0 ? * * x", "'?' in the day-of-month field"),
    ("H * * * * x", "'H' in the minute field is Jenkins syntax"),
    ("0~30 * * * * x", "'~' (random) in the minute field"),
    ("0 0 * foo * x", "unknown month name 'foo'"),
    ("0 0 * * monday x", "unknown day-of-week name 'monday'"),
    ("0 0 1,,2 * * x", "empty item in the day-of-month list"),
    ("0 0 * * 1-fri/x x", "cannot read '1-fri/x' in the day-of-week field"),
    ("@Daily x", "unknown keyword '@Daily'"),
    ("@every x", "unknown keyword '@every'"),
    ("0 0 * * * ", "no command"),
    ("0 0 * *", "expected five time fields, found 4"),
    ("* * * * * %only stdin", "the command is empty"),
    ("0 0 30 2 * x", "day-of-month 30 never occurs in month 2, so cron never runs this entry"),
    ("0 0 31 4,6 * x", "day-of-month 31 never occurs in month 4,6"),
    ("0 0 * * * x\r", "carriage return"),
    ("0 0 * * * x\x01", "a control character in the command"),
    ("SHELL=bash\n0 0 * * * x", "SHELL='bash': cron executes it as a path"),
    ("HOME=srv\n0 0 * * * x", "HOME='srv' is not an absolute path"),
    ("CRON_TZ=Mars/Olympus\n0 0 * * * x", "CRON_TZ='Mars/Olympus' is not a time zone"),
])
def test_refusals_name_the_line(line, message):
    text = "# header\n@daily fine\n" + line + "\n"
    result = convert(text)
    (problem,) = result.problems
    assert message in problem.message
    assert problem.lineno == 3 + line.count("\n")
    assert str(problem).startswith(f"line {problem.lineno}: ")
    assert [unit.entry.command for unit in result.units] == ["fine"]  # the rest is still converted


@pytest.mark.parametrize("line, message", [
    ("0 0 * * *", "no user column"),
    ("0 0 * * * root", "no command"),
    ("@daily", "no user column"),
    ("0 0 * * * bad/user x", "'bad/user' is not a user name"),
])
def test_user_column_refusals(line, message):
    (problem,) = convert(line + "\n", user_column=True).problems
    assert message in problem.message


def test_user_column_becomes_user_and_system_mode():
    (unit,) = convert("0 1 * * * www-data php -f /var/www/cron.php\n", user_column=True).units
    assert "User=www-data\n" in unit.service
    assert "After=remote-fs.target nss-user-lookup.target\n" in unit.service
    assert unit.entry.user == "www-data" and unit.entry.command == "php -f /var/www/cron.php"
    (root,) = convert("0 1 * * * id\n", system=True).units
    assert "User=root\n" in root.service
    (pi,) = convert("0 1 * * * id\n", system=True, run_as="pi").units
    assert "User=pi\n" in pi.service
    (own,) = convert("0 1 * * * id\n").units
    assert "User=" not in own.service and "After=" not in own.service


@pytest.mark.parametrize("raw, command, stdin", [
    ("echo hi", "echo hi", None),
    ("date +\\%F", "date +%F", None),
    ("date +%F", "date +", "F"),
    ("mail -s x root%line 1%line 2%", "mail -s x root", "line 1\nline 2\n"),
    ("cat%a\\%b%", "cat", "a%b\n"),
    ("cat%back\\slash", "cat", "back\\slash"),
    ("echo \\\\%x", "echo \\\\", "x"),  # `\\` is not an escaped %: the % ends the command
    ("echo a\\b", "echo a\\b", None),
    ("cat%%", "cat", "\n"),
    ("cat%ends with \\", "cat", "ends with \\"),
])
def test_percent_rule(raw, command, stdin):
    assert split_percent(raw) == (command, stdin)


def test_stdin_becomes_standard_input_data():
    (unit,) = convert("0 0 * * * mail -s hi root%Dear root,%all fine.%\n").units
    data = next(line.split("=", 1)[1] for line in unit.service.splitlines()
                if line.startswith("StandardInputData="))
    assert base64.b64decode(data) == b"Dear root,\nall fine.\n"
    assert "StandardInput=data\n" in unit.service
    assert "ExecStart=/bin/sh -c 'mail -s hi root'\n" in unit.service


@pytest.mark.parametrize("line, expected", [
    ("MAILTO=admin@example.com", ("MAILTO", "admin@example.com")),
    ("PATH = /usr/local/bin:/usr/bin", ("PATH", "/usr/local/bin:/usr/bin")),
    ('MAILTO=""', ("MAILTO", "")),
    ("GREETING='  keep the blanks  '", ("GREETING", "  keep the blanks  ")),
    ('A="mismatched\'', ("A", '"mismatched\'')),
    ("X=$HOME/bin", ("X", "$HOME/bin")),  # cron expands nothing
    ('"QUOTED NAME"=1', ("QUOTED NAME", "1")),
    ("  INDENTED=yes  ", ("INDENTED", "yes")),
    ("0 * * * * A=b cmd", None),
    ("*/5 * * * * x", None),
    ("@daily FOO=bar x", None),
])
def test_environment_lines(line, expected):
    assert parse_env(line) == expected


def test_environment_applies_to_the_entries_below_it():
    crontab = parse_crontab("A=1\n0 0 * * * first\nA=2\nB=x\n0 0 * * * second\n")
    first, second = crontab.entries
    assert first.env == (("A", "1"),)
    assert second.env == (("A", "2"), ("B", "x"))


def test_environment_lines_become_environment_and_mailto_a_comment():
    crontab = ('MAILTO=ops@example.com\nSHELL=/bin/bash\nNOTE="50% of $HOME \\"q\\""\n'
               "HOME=/srv/jobs\n0 0 * * * run\n")
    (unit,) = convert(crontab).units
    service = unit.service
    assert "# MAILTO=ops@example.com: systemd sends no mail" in service
    assert 'Environment="PATH=/usr/bin:/bin"\n' in service  # cron's default PATH
    assert 'Environment="SHELL=/bin/bash"\n' in service
    assert 'Environment="NOTE=50%% of $HOME \\\\\\"q\\\\\\""\n' in service
    assert "WorkingDirectory=-/srv/jobs\n" in service
    assert "ExecStart=/bin/bash -c 'run'\n" in service
    (default,) = convert("0 0 * * * run\n").units
    assert "WorkingDirectory=-~\n" in default.service and "MAILTO" not in default.service


@pytest.mark.parametrize("text, word", [
    ("echo hi", "'echo hi'"),
    ("date +%F", "'date +%%F'"),
    ("echo $HOME ${X} $$", "'echo $$HOME $${X} $$$$'"),
    ("echo 'a' \"b\"", "'echo \\'a\\' \"b\"'"),
    ("echo a\\b", "'echo a\\\\b'"),
])
def test_exec_start_escaping(text, word):
    assert exec_word(text) == word


def test_environment_quoting():
    assert quoted('A=x"y\\z%', '"') == '"A=x\\"y\\\\z%%"'


def test_units_have_the_promised_shape():
    (unit,) = convert("30 2 * * * /usr/local/bin/backup.sh >> /var/log/backup.log 2>&1\n",
                      source="crontab").units
    assert unit.name == "backup"
    service, timer = unit.service, unit.timer
    assert "[Install]" not in service
    assert service.count("ExecStart=") == 1
    for line in ("Type=oneshot", "StandardError=journal", "KillMode=process",
                 "ExecStart=/bin/sh -c '/usr/local/bin/backup.sh >> /var/log/backup.log 2>&1'",
                 "Description=/usr/local/bin/backup.sh >> /var/log/backup.log 2>&1",
                 "# Converted by tick-exporter cron2timer from crontab:1:"):
        assert line in service.splitlines(), line
    assert timer.splitlines()[-5:] == ["AccuracySec=1s", "Persistent=true", "", "[Install]",
                                       "WantedBy=timers.target"]
    assert "OnCalendar=*-*-* 02:30:00" in timer.splitlines()
    assert "Description=30 2 * * *: backup.service" in timer.splitlines()
    (reboot,) = convert("@reboot /opt/start.sh\n").units
    assert "OnBootSec=0" in reboot.timer.splitlines() and "Persistent" not in reboot.timer


def test_comments_and_descriptions_cannot_run_into_the_next_line():
    (unit,) = convert("0 0 * * * echo a trailing backslash \\\n").units
    comment = unit.service.splitlines()[1]
    assert comment.endswith("\\ ")
    description = next(line for line in unit.service.splitlines() if line.startswith("Description="))
    assert not description.endswith("\\")
    (long,) = convert("0 0 * * * " + "x" * 200 + "\n").units
    assert len(next(l for l in long.service.splitlines() if l.startswith("Description="))) <= 92


@pytest.mark.parametrize("command, name", [
    ("/usr/local/bin/backup.sh --full >> /var/log/backup.log 2>&1", "backup"),
    ("certbot renew --quiet", "certbot-renew"),
    ("cd /home/pi && python3 bot.py &", "bot"),
    ("/usr/bin/python3 /home/pi/sensors/read_dht22.py", "read_dht22"),
    ("python3 -m app.tasks.nightly", "app.tasks.nightly"),
    ("php /var/www/app/artisan schedule:run >> /dev/null 2>&1", "artisan-schedule-run"),
    ("test -x /usr/sbin/anacron || ( cd / && run-parts --report /etc/cron.daily )", "run-parts-cron.daily"),
    ("[ -x /usr/lib/php/sessionclean ] && if [ ! -d /run/systemd/system ]; then /usr/lib/php/sessionclean; fi",
     "sessionclean"),
    ("perl -e 'sleep int(rand(43200))' && certbot -q renew", "certbot"),
    ("nice -n 19 ionice -c3 /usr/local/bin/dedup-photos.sh", "dedup-photos"),
    ("flock -n /var/lock/mirror.lock /usr/local/bin/mirror-sync.sh", "mirror-sync"),
    ("sudo -u www-data /usr/bin/php /srv/cron.php", "cron"),
    ("DISPLAY=:0 npm start > /dev/null 2>&1 &", "npm-start"),
    ("timeout 2h /usr/local/bin/long-job.sh", "long-job"),
    ("echo $(date) >> /tmp/x", "echo"),
    (">/dev/null", "cron-job"),
    ("/opt/Weird Name!/RUN.SH", "weird"),
    ("'unbalanced", "unbalanced"),
])
def test_unit_names(command, name):
    assert derive_name(command) == name


def test_name_clashes_get_suffixes_and_the_prefix_comes_first():
    names = Names("cron-")
    taken = []
    for command in ["backup.sh", "backup.sh --full", "/usr/bin/backup.sh", "rsync -a x y"]:
        name = names.next(command)
        names.take(name)
        taken.append(name)
    assert taken == ["cron-backup", "cron-backup-2", "cron-backup-3", "cron-rsync"]
    with pytest.raises(ValueError):
        Names("bad prefix/")


def test_a_refused_line_does_not_use_up_a_name():
    result = convert("0 0 30 2 * backup.sh\n0 0 * * * backup.sh\n")
    assert [u.name for u in result.units] == ["backup"]


# --- issue 20: user names checked, hints for lines read in the other format --------------

def test_a_user_column_naming_no_user_here_is_refused():
    text = "0 1 * * * pg_dump -U app app > /backup/app.sql\n0 2 * * * root /usr/bin/backup\n"
    result = convert(text, user_column=True)
    (problem,) = result.problems
    assert problem.lineno == 1
    assert "user 'pg_dump' does not exist on this machine" in problem.message
    assert "looks like a user crontab" in problem.message and "--allow-unknown-user" in problem.message
    (root,) = result.units
    assert "User=root\n" in root.service
    other_machine = convert(text, user_column=True, allow_unknown_users=True)
    assert other_machine.problems == [] and "User=pg_dump\n" in other_machine.units[0].service


def test_user_mode_hints_at_a_user_column():
    result = convert("0 2 * * * root /usr/bin/backup --full\n0 3 * * * /usr/bin/backup\n")
    assert len(result.units) == 2 and result.problems == []  # converted as cron would read them
    (hint,) = result.hints
    assert hint.lineno == 1 and "the sixth field 'root' is a user name here" in hint.message
    assert "--user-column" in hint.message
    # a user name that is also a command on PATH is a command ("sync" is both on Debian)
    assert convert("0 4 * * * sync\n").hints == []


def test_a_percent_that_cuts_the_command_gets_a_hint():
    result = convert("0 5 * * * tar czf /backup/home-$(date +%F).tgz /home\n")
    (hint,) = result.hints
    assert "an unescaped % ends the command at 'tar czf /backup/home-$(date +'" in hint.message
    assert r"write \% for a literal %" in hint.message
    assert convert("0 5 * * * tar czf /backup/home-$(date +\\%F).tgz /home\n").hints == []
