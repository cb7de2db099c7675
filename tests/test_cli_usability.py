"""The command line's rough edges (issue 20): log options anywhere, complete --help, no
option a command ignores, a closed pipe, and `bus = "system"` where PID 1 is not systemd."""

import asyncio
import json
import os
import subprocess
import sys

import pytest

from exporter.cli import COMMANDS, parser
from exporter.sources.bus_hint import pid1_name, system_bus_hint
from tests.test_cli import cli

QUIET = {"TICK_EXPORTER_TIMERS_ENABLED": "false", "TICK_EXPORTER_HOST_MEMORY_ENABLED": "true"}


@pytest.mark.parametrize("args", [
    ["--log-level", "debug", "--log-format", "json", "once"],
    ["once", "--log-level", "debug", "--log-format", "json"],
    ["--log-format", "json", "once", "--log-level", "debug"],
])
def test_log_options_before_and_after_the_command(args):
    result = cli(*args, env=QUIET)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines()]
    assert events and {e["level"] for e in events} == {"debug"}  # json format, debug level


def test_a_log_option_after_the_command_wins_over_one_before():
    args = parser().parse_args(["--log-level", "error", "once", "--log-level", "debug"])
    assert (args.log_level, args.log_format) == ("debug", "plain")


def test_top_level_help_lists_every_command_with_its_line():
    text = cli("--help").stdout
    subcommands = parser()._subparsers._group_actions[0].choices
    assert set(subcommands) == set(COMMANDS)
    for name in subcommands:
        assert f"    {name}" in text, name
    assert "cron2timer" in text


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_help_has_its_one_line_description(name):
    result = cli(name, "--help")
    assert result.returncode == 0
    description = result.stdout.split("\n\n")[1].replace("\n", " ")
    assert " ".join(COMMANDS[name].split()) in " ".join(description.split())


@pytest.mark.parametrize("option", ["--config", "--log-level", "--log-format"])
def test_cron2timer_offers_no_option_it_would_ignore(option):
    """It reads no configuration and logs nothing."""
    assert option not in cli("cron2timer", "--help").stdout
    result = cli("cron2timer", "-", option, "json", input="")
    assert result.returncode == 2 and f"unrecognized arguments: {option}" in result.stderr
    assert option in cli("once", "--help").stdout


@pytest.mark.parametrize("args, stdin", [
    (["once"], None), (["--help"], None), (["check-config"], None),
    (["cron2timer", "-"], "0 1 * * * /usr/bin/backup\n0 2 * * * /usr/bin/other\n"),
])
def test_a_closed_pipe_ends_quietly(args, stdin):
    """`tick-exporter ... | head -0`: the reader is gone before the first write."""
    result = into_closed_pipe(args, stdin, QUIET)
    assert result.stderr == ""
    assert result.returncode in (0, 141)  # 141: as a process killed by SIGPIPE
    if args != ["--help"]:
        assert result.returncode == 141


def test_status_into_a_closed_pipe(user_manager):
    result = into_closed_pipe(["status"], None, {"TICK_EXPORTER_TIMERS_BUS": user_manager.bus_address})
    assert (result.returncode, result.stderr) == (141, "")


def into_closed_pipe(args, stdin, env):
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run([sys.executable, "-m", "exporter", *args], stdout=write_end,
                                stderr=subprocess.PIPE, input=stdin, text=True, timeout=60,
                                env={**os.environ, **env})
    finally:
        os.close(write_end)
    return result


def test_status_into_head_is_quiet(user_manager):
    """The shell's own pipe: head exits after one line, status has more to write."""
    for i in range(60):
        user_manager.write_unit(f"pipe-{i}.timer", "[Timer]\nOnCalendar=*-*-* 04:00:00\n")
        user_manager.write_unit(f"pipe-{i}.service", "[Service]\nType=oneshot\nExecStart=/bin/true\n")
    user_manager.daemon_reload()
    try:
        user_manager.systemctl("start", *[f"pipe-{i}.timer" for i in range(60)])
        result = subprocess.run(
            f"{sys.executable} -m exporter status | head -1; echo \"status=${{PIPESTATUS[0]}}\"",
            shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=60,
            env={**os.environ, "TICK_EXPORTER_TIMERS_BUS": user_manager.bus_address})
    finally:
        user_manager.systemctl("stop", *[f"pipe-{i}.timer" for i in range(60)], check=False)
        for i in range(60):
            user_manager.remove_unit(f"pipe-{i}.timer")
            user_manager.remove_unit(f"pipe-{i}.service")
        user_manager.daemon_reload()
    assert result.stderr == ""
    first, status = result.stdout.splitlines()
    assert "UNIT" in first and "ACTIVATES" in first
    assert status in ("status=141", "status=0", "status=1")  # 0/1: it all fit in the pipe first


# --- bus = "system" where PID 1 is not systemd ----------------------------------------------

def test_pid1_is_not_systemd_on_this_test_machine():
    """What the live tests below rely on (tests/services.py: PID 1 here is not systemd)."""
    assert pid1_name() not in ("", "systemd")


def write_pid1(tmp_path, name):
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "comm").write_text(name + "\n")
    return str(tmp_path)


def test_no_hint_on_a_systemd_host(tmp_path):
    assert asyncio.run(system_bus_hint({}, write_pid1(tmp_path, "systemd"))) == ""


def test_hint_without_a_user_manager(tmp_path):
    hint = asyncio.run(system_bus_hint({"DBUS_SESSION_BUS_ADDRESS": f"unix:path={tmp_path}/none"},
                                       write_pid1(tmp_path, "tini")))
    assert hint.startswith('PID 1 here is "tini", not systemd')
    assert 'timers.bus = "user"' not in hint


def test_once_on_the_system_bus_names_pid1_and_points_to_the_user_manager(user_manager, monkeypatch):
    monkeypatch.delenv("DBUS_SYSTEM_BUS_ADDRESS", raising=False)
    result = cli("once", env={"DBUS_SESSION_BUS_ADDRESS": user_manager.bus_address})
    assert result.returncode == 0
    (line,) = result.stderr.splitlines()
    assert f'PID 1 here is "{pid1_name()}", not systemd' in line
    assert f'a user manager answers at {user_manager.bus_address}: set timers.bus = "user"' in line
    # and without one answering, no such advice
    lone = cli("once", env={"DBUS_SESSION_BUS_ADDRESS": "unix:path=/nonexistent/bus"})
    assert "not systemd" in lone.stderr and 'timers.bus = "user"' not in lone.stderr


def test_doctor_on_the_system_bus_says_the_same_and_not_the_default(user_manager, monkeypatch):
    monkeypatch.delenv("DBUS_SYSTEM_BUS_ADDRESS", raising=False)
    result = cli("doctor", "--json", env={"DBUS_SESSION_BUS_ADDRESS": user_manager.bus_address})
    (finding,) = [f for f in json.loads(result.stdout) if f["id"] == "access-dbus"]
    assert f'PID 1 here is "{pid1_name()}", not systemd' in finding["fix"]
    assert 'set timers.bus = "user"' in finding["fix"]
    # the default is never offered as the fix for itself
    assert "to unix:path=/run/dbus/system_bus_socket" not in finding["fix"]


# --- cron2timer: users and hints from the command line ----------------------------------------

def test_cron2timer_user_column_refuses_unknown_users_unless_allowed():
    crontab = "0 1 * * * curl -s https://example.invalid/ping\n"
    refused = cli("cron2timer", "--user-column", "-", input=crontab)
    assert refused.returncode == 2
    assert "<stdin>:1: user 'curl' does not exist on this machine" in refused.stderr
    assert "User=curl" not in refused.stdout
    allowed = cli("cron2timer", "--user-column", "--allow-unknown-user", "-", input=crontab)
    assert allowed.returncode == 0 and "User=curl\n" in allowed.stdout
    alone = cli("cron2timer", "--allow-unknown-user", "-", input=crontab)
    assert alone.returncode == 2 and "--allow-unknown-user needs --user-column" in alone.stderr


def test_cron2timer_hints_go_to_stderr_and_keep_exit_0():
    result = cli("cron2timer", "-", input="17 * * * * root cd / && run-parts --report /etc/cron.hourly\n"
                                          "0 1 * * * date +%s > /tmp/stamp\n")
    assert result.returncode == 0, result.stderr
    hints = [line for line in result.stderr.splitlines() if ": hint: " in line]
    assert [h.split(":")[2] for h in hints] == ["1", "2"]
    assert "'root' is a user name here" in hints[0] and "unescaped %" in hints[1]
