"""The journal lines of a run (issue 21): the pure parts. Matching against real journals
is in tests/test_journal_remote.py (host-like fields) and tests/test_journal_live.py
(a real journald beside a real user manager)."""

import pytest

from exporter.collectors.run_logs import query_for, wanted
from exporter.config import ConfigError, load_config
from exporter.point import Point
from exporter.sources.journal import RunLogQuery, belongs, matches, message_text, tail_text
from exporter.sources.systemd_dbus import RunRecord, invocation_hex, run_from
from exporter.storage.state import StateFile
from exporter.status import render_why


def q(manager="system", invocation="ab" * 16, pid=42):
    return RunLogQuery("backup.service", manager, invocation, pid, 1, 2)


def test_matches_or_the_three_keys_each_with_the_boot():
    assert matches(q(), "b00t") == [
        "_BOOT_ID=b00t", "_SYSTEMD_UNIT=backup.service", "+",
        "_BOOT_ID=b00t", "_SYSTEMD_INVOCATION_ID=" + "ab" * 16, "+",
        "_BOOT_ID=b00t", "_PID=42"]
    # A user service: its own unit field, and never the (user@.service's) invocation.
    assert matches(q("user"), "") == ["_SYSTEMD_USER_UNIT=backup.service", "+", "_PID=42"]


@pytest.mark.parametrize("entry, mine", [
    ({"_SYSTEMD_INVOCATION_ID": "ab" * 16, "_SYSTEMD_UNIT": "backup.service", "_PID": "7"}, True),
    ({"_SYSTEMD_INVOCATION_ID": "cd" * 16, "_SYSTEMD_UNIT": "backup.service", "_PID": "42"}, False),
    ({"_SYSTEMD_UNIT": "backup.service", "_PID": "7"}, True),
    ({"_SYSTEMD_UNIT": "init.scope", "UNIT": "backup.service", "_PID": "42"}, False),
    ({"_PID": "42"}, True),
    ({"_PID": "43"}, False),
])
def test_belongs_by_the_most_exact_field(entry, mine):
    assert belongs(entry, q()) is mine


def test_belongs_user_service_ignores_the_user_managers_invocation():
    entry = {"_SYSTEMD_INVOCATION_ID": "ff" * 16, "_SYSTEMD_USER_UNIT": "backup.service", "_PID": "9"}
    assert belongs(entry, q("user"))
    assert not belongs({**entry, "_SYSTEMD_USER_UNIT": "mail.service"}, q("user"))
    assert not belongs({"_PID": "42"}, q(pid=0))  # no main PID known: no PID match


def test_message_text_forms():
    assert message_text({"MESSAGE": "plain"}) == "plain"
    assert message_text({"MESSAGE": [104, 105, 255]}) == "hi\ufffd"
    assert message_text({"MESSAGE": None}) == "" and message_text({}) == ""


def test_tail_text_caps_lines_then_bytes_on_characters():
    assert tail_text(["a", "b\nc", "d"], 3, 100) == "b\nc\nd"
    assert tail_text(["aaaa", "bb"], 10, 5) == "bb"
    assert tail_text(["ééé"], 10, 3) == "é"  # 3 bytes of UTF-8 end: one whole character
    assert tail_text([], 10, 10) == ""


def run(result="exit-code", start=1_000_000, exit_=3_000_000, invocation="ab" * 16):
    return RunRecord(start, exit_, 1, 3, result, 42, invocation)


def test_query_window_waits_and_is_cut_at_the_next_start_only_without_an_invocation():
    assert query_for("system", "backup.service", run(), 0, 2.0) == RunLogQuery(
        "backup.service", "system", "ab" * 16, 42, 1_000_000, 5_000_000)
    assert query_for("system", "b.service", run(), 3_500_000, 2.0).until_us == 5_000_000
    assert query_for("system", "b.service", run(invocation=""), 3_500_000, 2.0).until_us == 3_500_000
    assert query_for("user", "b.service", run(), 3_500_000, 2.0).until_us == 3_500_000


def test_wanted_by_mode():
    assert wanted("failed", run()) and not wanted("failed", run("success"))
    assert wanted("all", run("success")) and not wanted("off", run())


def test_run_from_carries_main_pid_and_invocation():
    props = {"ExecMainStartTimestamp": 1, "ExecMainExitTimestamp": 2, "ExecMainCode": 1,
             "ExecMainStatus": 3, "Result": "exit-code", "ExecMainPID": 42,
             "InvocationID": invocation_hex(bytes(range(16)))}
    assert run_from(props) == RunRecord(1, 2, 1, 3, "exit-code", 42, "000102030405060708090a0b0c0d0e0f")
    assert run_from(props, "ff" * 16).invocation_id == "ff" * 16  # from the signals: wins
    assert invocation_hex(b"") == ""


def test_config_journal_keys_and_opt_out(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[timers]\njournal = "all"\njournal_lines = 3\njournal_max_bytes = "1KiB"\n'
                    '[timers.overrides."secret.timer"]\njournal = false\n')
    timers = load_config(str(path), {}).timers
    assert (timers.journal, timers.journal_lines, timers.journal_max_bytes) == ("all", 3, 1024)
    assert timers.journal_for("secret.timer") == "off" and timers.journal_for("x.timer") == "all"
    assert load_config(None, {}).timers.journal == "failed"
    path.write_text('[timers]\njournal = "sometimes"\n[timers.overrides."x.timer"]\njournal = "nah"\n')
    with pytest.raises(ConfigError) as err:
        load_config(str(path), {})
    assert 'timers.journal: "sometimes" is not one of failed, all, off' in err.value.problems
    assert any('"x.timer".journal: "nah" is not a boolean' in p for p in err.value.problems)


def test_state_keeps_the_last_failure_log(tmp_path):
    state = StateFile(str(tmp_path / "s.json"))
    state.timer("system", "b.timer").last_failure_log = 'line "one"\nline two'
    state.timer("system", "b.timer").consecutive_failures = 2
    state.save()
    again = StateFile(str(tmp_path / "s.json")).timer("system", "b.timer")
    assert again.last_failure_log == 'line "one"\nline two' and again.consecutive_failures == 2


def timer_point(name, **fields):
    return Point("systemd_timer", {"timer": name, "service": name.replace(".timer", ".service"),
                                   "host": "h", "manager": "system"},
                 {"state": "failed", "last_result": "exit-code", "last_exit_code": 3,
                  "last_exit_kind": "exited", "last_run_end": 1_700_000_000, **fields})


def test_render_why():
    points = [timer_point("backup.timer", last_failure_log="dumping\ndisk \x1b[31mfull"),
              timer_point("quiet.timer", last_failure_log=""), timer_point("off.timer")]
    assert render_why(points, "backup") == (
        "backup.timer -> backup.service: failed, last run exit-code (3), "
        "ended Tue 2023-11-14 22:13:20 UTC\n  dumping\n  disk \\x1b[31mfull")
    assert render_why(points, "quiet.timer").endswith("(no journal lines: the last run did not fail, or wrote nothing)")
    assert render_why(points, "off.timer").endswith("(the journal is not read for this timer: [timers] journal)")
    assert render_why(points, "nope") == "nope: no such timer (`tick-exporter status` lists them)"


def test_collector_puts_the_lines_on_the_run_and_the_timer_until_a_success():
    from exporter.clock import Now
    from exporter.collectors.timers import TimersCollector
    from exporter.sources.journal import JournalReader
    from exporter.sources.systemd_dbus import TimerRecord, TimersSnapshot, UnitRecord

    def snapshot(exit_us, result):
        timer = UnitRecord("x.timer", "loaded", "active", "waiting", {"Unit": "x.service"})
        service = UnitRecord("x.service", "loaded", "inactive", "dead", {
            "ExecMainStartTimestamp": exit_us - 500_000, "ExecMainExitTimestamp": exit_us,
            "ExecMainCode": 1, "ExecMainStatus": 0 if result == "success" else 3,
            "Result": result, "ExecMainPID": 77, "InvocationID": "ab" * 16})
        return TimersSnapshot("system", [TimerRecord(timer, service)])

    collector = TimersCollector(None, load_config(None, {}).timers, "h", journal=JournalReader([]))
    now = Now(10_000_000, 1)
    failed = snapshot(2_000_000, "exit-code")
    (pending,) = collector.unwritten_runs(failed)
    assert pending[:2] == ("x.timer", "x.service") and pending[2].main_pid == 77
    timer, run = collector.points(failed, now, {("x.service", 2_000_000): "boom"})
    assert run.fields["log"] == "boom" and timer.fields["last_failure_log"] == "boom"
    assert list(collector.unwritten_runs(failed)) == []  # written once
    timer, run = collector.points(snapshot(3_000_000, "success"), now, {})
    assert "log" not in run.fields and timer.fields["last_failure_log"] == ""
