"""A failed run's own journal lines on its systemd_timer_run point (issue 21), with a real
systemd user manager whose services write to a real systemd-journald (UserManager with
journal=True: journald runs in the manager's private mount namespace).

The agent here runs in the tests' mount namespace, not the manager's: journald's sockets
(/run/systemd/journal, in the manager's private tmpfs) are not even visible from here, so
this also proves the agent reads the journal *files* from a directory, as it does in its
container. This journald cannot attribute entries to units (real-services.md): the runs
are told apart by their main PID and their time window (ExecMainPID -> _PID); the unit
and invocation paths are tested on a host-like journal in tests/test_journal_remote.py.
"""

import asyncio
import os
import subprocess
import sys

import pytest

from exporter.agent import Agent
from exporter.clock import Now
from exporter.collectors.timers import TimersCollector
from exporter.config import load_config
from exporter.point import to_line_protocol
from exporter.sources.journal import JournalReader
from exporter.sources.systemd_dbus import SystemdBus
from exporter.storage.state import StateFile

from tests.services import wait_until

NEVER = "[Timer]\nOnCalendar=2099-01-01 00:00:00\n"
# Each run prints its number: two runs in a row must each carry their own.
COUNTED = ("/bin/sh -c 'n=$(cat %S/jl-count 2>/dev/null || echo 0); n=$((n+1)); "
           "echo $n > %S/jl-count; echo \"run $n: starting\"; echo \"run $n: disk full\" >&2; exit 3'")
SERVICES = {
    "jl-fail": COUNTED,
    "jl-silent": "/bin/sh -c 'exit 4'",
    "jl-optout": "/bin/sh -c 'echo secret token; exit 3'",
    "jl-ok": "/bin/sh -c 'echo all good'",
}
WAIT_S = 5.0  # generous for a loaded test machine; the default is 2 s


@pytest.fixture(scope="module")
def manager(journaled_user_manager):
    m = journaled_user_manager
    for name, exec_start in SERVICES.items():
        m.write_unit(f"{name}.timer", NEVER)
        m.write_unit(f"{name}.service", f"[Service]\nType=oneshot\nExecStart={exec_start}\n")
    m.daemon_reload()
    m.systemctl("start", *(f"{name}.timer" for name in SERVICES))
    return m


def config(tmp_path, mode="failed"):
    path = tmp_path / "agent.toml"
    path.write_text(f'[timers]\nbus = "user"\njournal = "{mode}"\ninclude = ["jl-*"]\n'
                    f'journal_wait = "{WAIT_S}s"\n'
                    '[timers.overrides."jl-optout.timer"]\njournal = false\n')
    return load_config(str(path), {}).timers


class Agentish:
    """A timers collector on the manager's bus with a journal reader, sampled by a test."""

    def __init__(self, manager, timers_config, directories, state=None):
        self.loop = asyncio.new_event_loop()
        self.source = SystemdBus(manager.bus_address)
        journal = JournalReader(directories, timers_config.journal_lines,
                                timers_config.journal_max_bytes, timers_config.journal_wait)
        self.collector = TimersCollector(self.source, timers_config, "jhost",
                                         state or StateFile(None), journal=journal)
        self.agent = Agent([self.collector], [], "jhost")

    def sample(self):
        return self.loop.run_until_complete(self.agent.sample(Now.read()))

    def close(self):
        self.loop.run_until_complete(self.source.close())
        self.loop.close()


@pytest.fixture
def agent(manager, tmp_path):
    made = []

    def make(mode="failed", directories=None, state=None):
        made.append(Agentish(manager, config(tmp_path, mode),
                             directories or [str(manager.journal_dir)], state))
        return made[-1]

    yield make
    for a in made:
        a.close()


def runs_of(points, service):
    return sorted((p for p in points if p.measurement == "systemd_timer_run"
                   and p.tags["service"] == service), key=lambda p: p.time_ns)


def timer_point(points, timer):
    return next(p for p in points if p.measurement == "systemd_timer" and p.tags["timer"] == timer)


def exporter_point(points, component):
    found = [p for p in points if p.measurement == "exporter" and p.tags["component"] == component]
    return found[0] if found else None


def run_service(manager, name, result):
    """Start one run of the service and wait until it has finished with `result`."""
    props = ["ExecMainStartTimestampMonotonic", "ActiveState", "Result"]
    before = manager.show(f"{name}.service", props)["ExecMainStartTimestampMonotonic"]
    manager.systemctl("start", "--no-block", f"{name}.service")

    def finished():
        now = manager.show(f"{name}.service", props)
        return (now["ExecMainStartTimestampMonotonic"] != before
                and now["ActiveState"] != "activating" and now["Result"] == result)

    wait_until(finished, timeout=30, message=f"{name} to finish with {result}")


def sample_until_run(a, service, count=1):
    """Samples until `count` run points of `service` arrived; all points of all samples."""
    seen = []

    def arrived():
        seen.extend(a.sample())
        return len(runs_of(seen, service)) >= count

    wait_until(arrived, timeout=60, interval=0.5, message=f"{count} run point(s) of {service}")
    return seen


def test_failed_run_carries_its_stderr_line_and_two_runs_their_own(manager, agent):
    # The agent's mount namespace has no journald socket: it reads the files.
    assert not os.path.exists("/run/systemd/journal/stdout")
    a = agent()
    a.sample()  # the first, full read: nothing has run yet
    run_service(manager, "jl-fail", "exit-code")
    points = sample_until_run(a, "jl-fail.service")
    (first,) = runs_of(points, "jl-fail.service")
    number = int(first.fields["log"].split(":")[0].split()[1])
    assert first.fields["log"] == f"run {number}: starting\nrun {number}: disk full"
    assert first.fields["exit_code"] == 3
    timer = timer_point(points, "jl-fail.timer")
    assert timer.fields["last_failure_log"] == first.fields["log"]
    journal = exporter_point(points, "journal")
    assert journal.fields["success"] is True and journal.fields["points"] == 1
    assert exporter_point(points, "timers").fields["success"] is True

    # Two failed runs in a row, both between two samples: each its own lines.
    run_service(manager, "jl-fail", "exit-code")
    run_service(manager, "jl-fail", "exit-code")
    points = sample_until_run(a, "jl-fail.service", 2)
    logs = [p.fields["log"] for p in runs_of(points, "jl-fail.service")]
    assert logs == [f"run {n}: starting\nrun {n}: disk full" for n in (number + 1, number + 2)]
    assert timer_point(points, "jl-fail.timer").fields["last_failure_log"] == logs[-1]


def test_rereading_a_run_gives_the_identical_point(manager, agent):
    run_service(manager, "jl-fail", "exit-code")
    first = runs_of(sample_until_run(agent(), "jl-fail.service"), "jl-fail.service")[-1]
    # A second agent with no memory (a lost state file) reads the same run afresh.
    again = runs_of(sample_until_run(agent(), "jl-fail.service"), "jl-fail.service")[-1]
    assert to_line_protocol([again]) == to_line_protocol([first])
    assert "disk full" in first.fields["log"]


def test_silent_service_gives_an_empty_field(manager, agent):
    a = agent()
    a.sample()
    run_service(manager, "jl-silent", "exit-code")
    (run,) = runs_of(sample_until_run(a, "jl-silent.service"), "jl-silent.service")
    assert run.fields["log"] == "" and run.fields["exit_code"] == 4


def test_opted_out_timer_ships_nothing_and_successes_only_with_all(manager, agent):
    a = agent()
    a.sample()
    run_service(manager, "jl-optout", "exit-code")
    run_service(manager, "jl-ok", "success")
    points = sample_until_run(a, "jl-optout.service")
    points += sample_until_run(a, "jl-ok.service") if not runs_of(points, "jl-ok.service") else []
    (optout,) = runs_of(points, "jl-optout.service")
    assert "log" not in optout.fields
    assert "last_failure_log" not in timer_point(points, "jl-optout.timer").fields
    assert "log" not in runs_of(points, "jl-ok.service")[0].fields  # "failed" mode
    everything = agent(mode="all")
    everything.sample()
    run_service(manager, "jl-ok", "success")
    (ok,) = runs_of(sample_until_run(everything, "jl-ok.service"), "jl-ok.service")
    assert ok.fields["log"] == "all good"


def test_no_journal_gives_an_empty_field_and_one_journal_error(manager, agent, tmp_path):
    missing = tmp_path / "no-journal-here"
    a = agent(directories=[str(missing)])
    a.sample()
    run_service(manager, "jl-fail", "exit-code")
    points = sample_until_run(a, "jl-fail.service")
    (run,) = runs_of(points, "jl-fail.service")
    assert run.fields["log"] == ""
    journal = exporter_point(points, "journal")
    assert journal.fields["success"] is False and journal.fields["errors"] == 1
    assert "no journal files in " + str(missing) in journal.fields["last_error"]
    assert exporter_point(points, "timers").fields["success"] is True
    assert os.path.isdir(manager.journal_dir)


def test_status_why_shows_the_failed_runs_lines(manager, tmp_path):
    """`tick-exporter status --why TIMER` as a person runs it, in its own process (read-only:
    the state file is left alone)."""
    run_service(manager, "jl-fail", "exit-code")
    path = tmp_path / "status.toml"
    path.write_text(f'[timers]\nbus = "user"\ninclude = ["jl-*"]\njournal_wait = "{WAIT_S}s"\n'
                    f'journal_directories = ["{manager.journal_dir}"]\n')
    done = subprocess.run([sys.executable, "-m", "exporter", "status", "--config", str(path),
                           "--why", "jl-fail"], env=manager.env, capture_output=True, text=True,
                          timeout=60)
    head, *lines = done.stdout.strip().splitlines()
    assert head.startswith("jl-fail.timer -> jl-fail.service: failed, last run exit-code (3), ended ")
    number = lines[0].split(":")[0].split()[-1]
    assert lines == [f"  run {number}: starting", f"  run {number}: disk full"], done.stderr
    assert done.returncode == 1  # a failed timer is not "all healthy"
    assert not os.path.exists(os.environ["TICK_EXPORTER_AGENT_STATE_PATH"])


def test_a_signalled_run_carries_its_invocation_id_and_main_pid(manager):
    """What the journal is matched by, as systemd announced it for the run (signals), and
    the same as `systemctl show` says after it."""
    loop = asyncio.new_event_loop()
    source = SystemdBus(manager.bus_address)
    try:
        loop.run_until_complete(source.read_timers(600))  # subscribed, records kept
        run_service(manager, "jl-silent", "exit-code")
        shown = manager.show("jl-silent.service", ["InvocationID", "ExecMainPID"])
        runs = []
        wait_until(lambda: runs.extend(loop.run_until_complete(source.read_timers(600))
                                       .runs.get("jl-silent.service", [])) or runs,
                   timeout=30, message="the run's signal")
        assert runs[-1].invocation_id == shown["InvocationID"] and len(shown["InvocationID"]) == 32
        assert runs[-1].main_pid == int(shown["ExecMainPID"]) > 0
    finally:
        loop.run_until_complete(source.close())
        loop.close()
