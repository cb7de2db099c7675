"""`once`, `status`, `doctor` and `health` look beside the `run` service and never change
what it delivers (docs/metrics.md, "Who writes the state file"). Real processes on the
same state path, a real user manager, a real InfluxDB 1.6.7 behind a loopback proxy that
keeps every write request: a duplicate with the same timestamp overwrites silently in
InfluxDB, so what is counted is the lines sent, not the rows stored."""

import gzip
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.lineproto import parse
from tests.services import free_port, wait_until

TIMER, SERVICE = "look-backup.timer", "look-backup.service"
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, no proxy


class WriteRecorder:
    """An HTTP proxy on 127.0.0.1 in front of the real InfluxDB: forwards every request
    and keeps the (decoded) body of each accepted POST /write."""

    def __init__(self, upstream: str):
        recorder = self
        self.upstream, self.bodies, self.lock = upstream, [], threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("content-type", "content-encoding", "authorization")}
                request = urllib.request.Request(recorder.upstream + self.path, data=body,
                                                 headers=headers, method="POST")
                try:
                    with _DIRECT.open(request, timeout=10) as answer:
                        status, reply = answer.status, answer.read()
                except urllib.error.HTTPError as err:
                    status, reply = err.code, err.read()
                if self.path.startswith("/write") and status == 204:
                    if self.headers.get("Content-Encoding") == "gzip":
                        body = gzip.decompress(body)
                    with recorder.lock:
                        recorder.bodies.append(body.decode())
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def lines(self, measurement: str) -> list:
        with self.lock:
            text = "".join(body if body.endswith("\n") else body + "\n" for body in self.bodies)
        return [p for p in parse(text) if p.measurement == measurement]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder(influxdb):
    proxy = WriteRecorder(influxdb.url)
    yield proxy
    proxy.close()


@pytest.fixture
def backup_ran(user_manager):
    """A backup timer whose service has just run once, by hand (its calendar is far away,
    so no second run replaces the first in systemd's ExecMain* properties)."""
    user_manager.write_unit(SERVICE, "[Service]\nType=oneshot\nExecStart=/bin/true\n")
    user_manager.write_unit(TIMER, "[Timer]\nOnCalendar=2099-01-01 04:00:00\n")
    user_manager.daemon_reload()
    user_manager.systemctl("start", TIMER)
    user_manager.systemctl("start", SERVICE)  # oneshot: returns when the run has ended
    exit_us = user_manager.bus_property(SERVICE, "Service", "ExecMainExitTimestamp")
    assert exit_us > 0
    yield exit_us
    user_manager.systemctl("stop", TIMER, check=False)


def environment(user_manager, **extra):
    """The agent's environment for every command; the state and spool paths are the
    test's own (conftest.private_state_file), shared by all the commands of a test."""
    return {**os.environ, "TICK_EXPORTER_TIMERS_BUS": user_manager.bus_address,
            "TICK_EXPORTER_TIMERS_INCLUDE": TIMER, "TICK_EXPORTER_AGENT_INTERVAL": "1s",
            "TICK_EXPORTER_AGENT_HOSTNAME": "look", **extra}


def influx_env(url: str, database: str) -> dict:
    return {"TICK_EXPORTER_OUTPUT_INFLUXDB_API": "v1", "TICK_EXPORTER_OUTPUT_INFLUXDB_URL": url,
            "TICK_EXPORTER_OUTPUT_INFLUXDB_DATABASE": database,
            "TICK_EXPORTER_OUTPUT_INFLUXDB_RETRY_INITIAL": "0.2s",
            "TICK_EXPORTER_OUTPUT_INFLUXDB_RETRY_MAX": "1s"}


def command(env, *args, **kwargs):
    return subprocess.run([sys.executable, "-m", "exporter", *args], env=env, capture_output=True,
                          text=True, timeout=60, **kwargs)


def start_run(env, *outputs):
    args = [arg for name in outputs for arg in ("--output", name)]
    return subprocess.Popen([sys.executable, "-m", "exporter", "run", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop_run(proc):
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return parse(out), err


def runs_at(points, exit_us):
    return [p for p in points if p.measurement == "systemd_timer_run"
            and p.tags["timer"] == TIMER and p.time_ns == exit_us * 1000]


def remembered(state_path: Path) -> dict:
    data = json.loads(state_path.read_text())
    (memory,) = [m for key, m in data["timers"].items() if key.endswith("/" + TIMER)]
    return memory


def fingerprint(*paths: Path) -> list:
    """Content and modification time: a file that was rewritten identically still shows."""
    return [(p.read_bytes(), p.stat().st_mtime_ns) if p.exists() else None for p in paths]


def until_delivered(proc, recorder, exit_us, writes_after=3):
    """Wait until the run point went through the proxy, then for `writes_after` more
    accepted writes (later samples that could have sent it again)."""
    def delivered():
        assert proc.poll() is None, proc.communicate()[1]
        return runs_at(recorder.lines("systemd_timer_run"), exit_us) and len(recorder.bodies)
    seen = wait_until(delivered, timeout=60, message="the run point written to InfluxDB")
    wait_until(lambda: len(recorder.bodies) >= seen + writes_after, timeout=60,
               message=f"{writes_after} more writes after the run point")


def test_run_delivers_once_exactly_the_run_once_printed(
        user_manager, influxdb, recorder, backup_ran, private_state_file):
    exit_us = backup_ran
    heartbeat = private_state_file.parent / "heartbeat.json"
    env = environment(user_manager, **influx_env(recorder.url, "look_once"))

    looked = command(env, "once")
    assert looked.returncode == 0, looked.stderr
    (printed,) = runs_at(parse(looked.stdout), exit_us)
    assert printed.tags["result"] == "success" and printed.fields["exit_code"] == 0
    for args in (("status", "--json"), ("doctor", "--json")):
        command(env, *args)
    # The lookers, before the service ever ran, created nothing (checked at the end).
    created = sorted(private_state_file.parent.iterdir()) if private_state_file.parent.exists() else []

    service = start_run(env, "influxdb", "stdout")
    until_delivered(service, recorder, exit_us)
    # Recorded once it is in the spool: the state file says the run was written.
    assert remembered(private_state_file)["recorded_exit_us"] == exit_us
    served, err = stop_run(service)
    assert " error " not in err, err
    assert runs_at(served, exit_us) == [printed]  # the same point, printed by the service once

    # A restarted service does not send it again: it is recorded.
    again = start_run(env, "influxdb")
    before = len(recorder.bodies)
    wait_until(lambda: len(recorder.bodies) >= before + 3, timeout=60,
               message="three writes of the restarted service")
    stop_run(again)

    sent = runs_at(recorder.lines("systemd_timer_run"), exit_us)
    assert len(sent) == 1, f"the run point was sent {len(sent)} times"
    assert (sent[0].tags, sent[0].fields) == (printed.tags, printed.fields)
    stored = influxdb.rows(f"SELECT exit_code, duration_s FROM systemd_timer_run WHERE timer = '{TIMER}'",
                           "look_once", epoch="ns")
    assert [row["time"] for row in stored] == [exit_us * 1000]
    # The output's own count: every point it wrote is one the proxy saw accepted.
    written = [p.fields["written_points"] for p in recorder.lines("exporter")
               if p.tags["component"] == "influxdb"]
    assert written and max(written) <= sum(len(b.splitlines()) for b in recorder.bodies)
    assert created == [], f"once/status/doctor wrote {created}"


def test_lookers_never_change_the_service_files(user_manager, backup_ran, private_state_file):
    """With the service's state file and heartbeat in place: `once`, `status`, `doctor`
    and `health` read them (status shows the service's memory) and leave them as they
    were, to the byte and the modification time."""
    exit_us = backup_ran
    heartbeat = private_state_file.parent / "heartbeat.json"
    env = environment(user_manager)
    service = start_run(env, "stdout")
    wait_until(lambda: private_state_file.exists() and heartbeat.exists()
               and remembered(private_state_file)["recorded_exit_us"] == exit_us,
               timeout=60, message="the service's state file and heartbeat")
    stop_run(service)
    # The service's memory, with one thing only it knows: a success systemd never saw.
    data = json.loads(private_state_file.read_text())
    (key,) = [k for k in data["timers"] if k.endswith("/" + TIMER)]
    data["timers"][key]["last_success_us"] = exit_us + 3_000_000
    # and what a look computes afresh, and must keep to itself
    data["timers"][key].update(armed_since_us=1, next_elapse_us=1)
    data["oom_kills"] = {"db": {"before": 2, "ids": {}}}
    private_state_file.write_text(json.dumps(data))
    before = fingerprint(private_state_file, heartbeat)

    looked = command(env, "once")
    assert looked.returncode == 0, looked.stderr
    assert runs_at(parse(looked.stdout), exit_us) == []  # the service already wrote it
    shown = command(env, "status", "--json")
    (timer,) = json.loads(shown.stdout)["timers"]
    assert timer["last_success"] == exit_us // 1_000_000 + 3  # read from the service's file
    doctor = command(env, "doctor", "--json")
    assert doctor.stdout.strip().startswith("["), doctor.stderr
    health = command(env, "health")
    assert health.stdout.startswith(("healthy", "unhealthy")), health.stderr
    for result in (looked, shown, doctor, health):
        assert "state file" not in result.stderr, result.stderr
    assert fingerprint(private_state_file, heartbeat) == before


def test_with_the_memory_queue_the_state_waits_for_influxdb(
        user_manager, recorder, backup_ran, private_state_file):
    """`[spool] enabled = false`: a sample is only in RAM until InfluxDB takes it, so a
    service stopped while InfluxDB is away has not marked the run written, and the next
    one delivers it."""
    exit_us = backup_ran
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    away = environment(user_manager, TICK_EXPORTER_SPOOL_ENABLED="false",
                       **influx_env(nowhere, "look_memory"))
    service = start_run(away, "influxdb", "stdout")
    heartbeat = private_state_file.parent / "heartbeat.json"
    first = wait_until(lambda: heartbeat.exists() and json.loads(heartbeat.read_text())["sampled_at"],
                       timeout=60, message="a sample taken with InfluxDB away")
    wait_until(lambda: json.loads(heartbeat.read_text())["sampled_at"] >= first + 2, timeout=60,
               message="two more samples")
    printed, err = stop_run(service)
    assert runs_at(printed, exit_us), "the service printed the run"
    assert "output influxdb" in err  # it did try, and failed
    assert not private_state_file.exists() or remembered(private_state_file)["recorded_exit_us"] == 0

    back = environment(user_manager, TICK_EXPORTER_SPOOL_ENABLED="false",
                       **influx_env(recorder.url, "look_memory"))
    service = start_run(back, "influxdb")
    until_delivered(service, recorder, exit_us)
    stop_run(service)
    assert len(runs_at(recorder.lines("systemd_timer_run"), exit_us)) == 1
    assert remembered(private_state_file)["recorded_exit_us"] == exit_us


@pytest.fixture
def root_only_state(backup_ran):
    """The service's state file as root leaves it: mode 0600 in a directory others may
    enter, so what refuses an unprivileged reader is the file itself."""
    directory = Path(tempfile.mkdtemp(prefix=f"tick-tests-{os.getpid()}-state-"))
    directory.chmod(0o755)
    path = directory / "state.json"
    path.write_text(json.dumps({"version": 1, "oom_kills": {}, "timers": {
        f"user/{TIMER}": {"last_success_us": backup_ran + 5_000_000, "recorded_exit_us": backup_ran}}}))
    path.chmod(0o600)
    yield path
    path.unlink(missing_ok=True)
    for leftover in directory.iterdir():
        leftover.unlink()
    directory.rmdir()


def as_nobody(env, *args):
    """The command as an unprivileged user: uid nobody, group nogroup, no supplementary
    groups (setpriv(1)), from a directory everyone may read."""
    return subprocess.run(["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
                           sys.executable, "-m", "exporter", *args], env=env, cwd="/",
                          capture_output=True, text=True, timeout=60)


def test_a_user_who_cannot_read_the_state_file_is_told_so(user_manager, backup_ran, root_only_state):
    keep = {k: v for k, v in os.environ.items() if not k.startswith("TICK_EXPORTER_")}
    env = {**keep, "HOME": "/", "TICK_EXPORTER_AGENT_STATE_PATH": str(root_only_state),
           "TICK_EXPORTER_TIMERS_BUS": user_manager.bus_address,
           "TICK_EXPORTER_TIMERS_INCLUDE": TIMER, "TICK_EXPORTER_SPOOL_PATH": "/nonexistent"}
    before = fingerprint(root_only_state)
    assert as_nobody(env, "check-config").returncode == 0  # the command itself runs as nobody

    for args in (("status",), ("status", "--json"), ("once",), ("doctor",)):
        result = as_nobody(env, *args)
        assert "Traceback" not in result.stderr, result.stderr
        if args[0] == "doctor":  # doctor reads the file but says nothing of the agent's memory
            assert "rebuild" not in result.stderr, result.stderr
            continue
        assert (f"cannot read the agent's state file {root_only_state} (Permission denied)"
                in result.stderr), result.stderr
        assert "rebuild" not in result.stderr
    assert fingerprint(root_only_state) == before

    # root reads the same file: the memory nobody could not see is there.
    shown = subprocess.run([sys.executable, "-m", "exporter", "status", "--json"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert "state file" not in shown.stderr, shown.stderr
    timers = json.loads(shown.stdout)["timers"]
    assert [t["last_success"] for t in timers if t["timer"] == TIMER] == [backup_ran // 1_000_000 + 5]
    assert fingerprint(root_only_state) == before


def test_a_sample_stdout_did_not_take_is_not_remembered(user_manager, backup_ran, tmp_path):
    """`run --output stdout` whose reader went away (Telegraf stopped: EPIPE): the run it
    could not print is not saved as written, so the next agent prints it."""
    import asyncio

    from exporter.agent import Agent
    from exporter.collectors.timers import TimersCollector
    from exporter.config import load_config
    from exporter.outputs.stdout import StdoutOutput
    from exporter.sources.systemd_dbus import SystemdBus
    from exporter.storage.state import StateFile

    path = tmp_path / "state.json"
    timers = load_config(None, {"TICK_EXPORTER_TIMERS_INCLUDE": TIMER}).timers

    def sample_into(stream):
        state = StateFile(str(path))
        collector = TimersCollector(SystemdBus(user_manager.bus_address), timers, "pipe", state)
        agent = Agent([collector], [StdoutOutput(stream)], "pipe", state=state)

        async def once():
            try:
                now = agent.clock()
                await agent.write(await agent.sample(now), now)
            finally:
                await collector.close()
        asyncio.run(once())

    reader, writer = os.pipe()
    os.close(reader)  # nobody reads: the write fails with EPIPE (Python ignores SIGPIPE)
    gone = os.fdopen(writer, "w")
    sample_into(gone)
    with pytest.raises(BrokenPipeError):  # what the agent could not print is still buffered
        gone.close()
    assert not path.exists()

    reader, writer = os.pipe()
    with os.fdopen(writer, "w") as pipe, os.fdopen(reader) as printed:
        sample_into(pipe)
        pipe.close()
        assert runs_at(parse(printed.read()), backup_ran)
    assert remembered(path)["recorded_exit_us"] == backup_ran


def test_once_keeps_the_oom_kills_it_reads(docker_engine, private_state_file):
    """The memory collector folds the OOM kills of containers that are gone into their
    name's total in the state file; `once` shows that total and writes nothing back."""
    container = docker_engine.run("--name", "look-oom", docker_engine.image(), "sleep", "300")
    try:
        private_state_file.parent.mkdir(parents=True, exist_ok=True)
        # 2 kills of earlier look-oom containers, and 1 of one that the service saw die
        # and has not folded in yet (it is not running any more).
        private_state_file.write_text(json.dumps({"version": 1, "timers": {}, "oom_kills": {
            "look-oom": {"before": 2, "ids": {"0" * 64: [1, 1]}}}}))
        before = fingerprint(private_state_file)
        env = {**os.environ, "TICK_EXPORTER_TIMERS_ENABLED": "false",
               "TICK_EXPORTER_CONTAINERS_ENABLED": "true",
               "TICK_EXPORTER_CONTAINERS_DOCKER_HOST": docker_engine.host}

        def shown():
            looked = command(env, "once")
            assert looked.returncode == 0, looked.stderr
            return [p for p in parse(looked.stdout) if p.measurement == "container_memory"
                    and p.tags["container"] == "look-oom"]
        (point,) = wait_until(shown, timeout=30, interval=0.5, message="look-oom in once's output")
        assert point.fields["oom_kills"] == 3
        assert fingerprint(private_state_file) == before
    finally:
        docker_engine.remove(container)


def test_run_never_replaces_a_state_file_it_cannot_read(user_manager, root_only_state):
    """`run` started as the wrong user, in a directory it may write: the service's file
    it cannot read is left as it is (replacing it would throw the memory away)."""
    root_only_state.parent.chmod(0o777)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICK_EXPORTER_")}
    env.update(HOME="/", TICK_EXPORTER_AGENT_STATE_PATH=str(root_only_state),
               TICK_EXPORTER_AGENT_INTERVAL="1s", TICK_EXPORTER_TIMERS_BUS=user_manager.bus_address,
               TICK_EXPORTER_TIMERS_INCLUDE=TIMER)
    before = fingerprint(root_only_state)
    proc = subprocess.Popen(["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
                             sys.executable, "-m", "exporter", "run", "--output", "stdout"],
                            env=env, cwd="/", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    heartbeat = root_only_state.parent / "heartbeat.json"
    try:
        first = wait_until(lambda: heartbeat.exists() and json.loads(heartbeat.read_text())["sampled_at"],
                           timeout=60, message="a sample of the agent run as nobody")
        wait_until(lambda: json.loads(heartbeat.read_text())["sampled_at"] >= first + 2, timeout=60,
                   message="two more samples")
    finally:
        _out, err = stop_run(proc)
    assert f"cannot read state file {root_only_state} (Permission denied)" in err, err
    assert "rebuild" not in err
    assert fingerprint(root_only_state) == before
    assert root_only_state.stat().st_uid == 0
