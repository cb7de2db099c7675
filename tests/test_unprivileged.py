"""The agent run by a real unprivileged user (`nobody`, via setpriv), with the collectors
that need no privilege (timers, host memory) and the defaults untouched: /var/lib/
tick-exporter is not writable, so `once` and `run` use ~/.local/state/tick-exporter (or
$XDG_STATE_HOME/tick-exporter) and say so; `status`, `health` and `doctor` keep reading
the service's paths and say when they cannot.

Timers come from a user manager of the test's own whose session bus `nobody` may use:
a session bus accepts only its owner's uid (dbus-daemon(1): without <allow user=...>
only the bus's own user may connect), and this manager runs as root, so its dbus.service
gets a config that includes the stock session.conf and adds <allow user="nobody"/>; its
runtime directory is made traversable. systemd itself lets any peer read unit properties
and list units (the methods are marked unprivileged), as on the system bus.
"""

import json
import os
import pwd
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.lineproto import parse
from tests.native_install import make_venv
from tests.services import UserManager, wait_until

NOBODY = pwd.getpwnam("nobody")
SETPRIV = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <include>/usr/share/dbus-1/session.conf</include>
  <policy context="default">
    <allow user="root"/>
    <allow user="nobody"/>
  </policy>
</busconfig>
"""


@pytest.fixture(scope="module")
def shared_manager():
    manager = UserManager()
    config = manager.root / "session-nobody.conf"
    config.write_text(BUS_CONFIG)
    drop_in = manager.unit_dir / "dbus.service.d"
    drop_in.mkdir(parents=True)
    (drop_in / "allow-nobody.conf").write_text(
        "[Service]\nExecStart=\nExecStart=/usr/bin/dbus-daemon --config-file=" + str(config)
        + " --address=systemd: --nofork --nopidfile --systemd-activation --syslog-only\n")
    for directory in (manager.root, manager.runtime_dir):
        directory.chmod(0o711)  # reach the bus socket (mode 0666); nothing else is readable
    with manager:
        manager.write_unit("nightly-backup.service", "[Service]\nType=oneshot\nExecStart=/bin/true\n")
        manager.write_unit("nightly-backup.timer", "[Timer]\nOnCalendar=*-*-* 02:30:00\n")
        manager.daemon_reload()
        manager.systemctl("start", "nightly-backup.timer")
        yield manager


@pytest.fixture(scope="module")
def program():
    """bin/tick-exporter of a venv nobody can read (the test venv's interpreter lives
    under /root)."""
    directory = Path(tempfile.mkdtemp(prefix="tick-tests-nobody-venv-"))
    directory.chmod(0o755)
    try:
        yield make_venv(directory / "venv")
    finally:
        subprocess.run(["rm", "-rf", str(directory)], check=False)


@pytest.fixture
def home():
    """A home directory nobody owns, outside /tmp/pytest-of-root (which is 0700)."""
    directory = Path(tempfile.mkdtemp(prefix="tick-tests-nobody-home-"))
    os.chown(directory, NOBODY.pw_uid, NOBODY.pw_gid)
    try:
        yield directory
    finally:
        subprocess.run(["rm", "-rf", str(directory)], check=False)


def nobody_env(home: Path, manager, **extra) -> dict[str, str]:
    """A clean environment: no TICK_EXPORTER_* from the test session (the autouse
    private_state_file fixture's paths would hide the defaults under test)."""
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
            "DBUS_SESSION_BUS_ADDRESS": manager.bus_address,
            "TICK_EXPORTER_TIMERS_BUS": "user", "TICK_EXPORTER_HOST_MEMORY_ENABLED": "true",
            "TICK_EXPORTER_AGENT_HOSTNAME": "unprivileged", **extra}


def as_nobody(program: Path, *args, env, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*SETPRIV, str(program), *args], env=env, capture_output=True,
                          text=True, timeout=60, **kwargs)


def test_it_really_runs_as_nobody_who_cannot_write_the_default(program, home, shared_manager):
    ids = subprocess.run([*SETPRIV, "sh", "-c", "id -u; test -w /var/lib || echo no-var-lib"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert ids == [str(NOBODY.pw_uid), "no-var-lib"]


def test_once_falls_back_to_the_users_state_directory(program, home, shared_manager):
    result = as_nobody(program, "once", env=nobody_env(home, shared_manager))
    assert result.returncode == 0, result.stderr
    state = home / ".local/state/tick-exporter"
    (line,) = result.stderr.splitlines()  # said once, and nothing else
    assert " info " in line
    assert f"state file {state}/state.json (agent.state_path)" in line
    assert f"spool {state}/spool (spool.path)" in line
    assert "/var/lib/tick-exporter" in line  # why: the default is not writable
    points = parse(result.stdout)
    assert "nightly-backup.timer" in {p.tags.get("timer") for p in points}
    timers = next(p for p in points if p.measurement == "exporter" and p.tags["component"] == "timers")
    assert timers.fields["success"] is True
    assert any(p.measurement == "host_memory" for p in points)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_run_with_a_spool_writes_under_xdg_state_home(program, home, shared_manager):
    xdg = home / "xdg-state"
    env = nobody_env(home, shared_manager, XDG_STATE_HOME=str(xdg), TICK_EXPORTER_AGENT_INTERVAL="1s",
                     TICK_EXPORTER_OUTPUT_INFLUXDB_URL=f"http://127.0.0.1:{free_port()}")  # nobody listens
    agent = subprocess.Popen([*SETPRIV, str(program), "run", "--output", "stdout", "--output", "influxdb"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    directory = xdg / "tick-exporter"
    try:
        def sampled_at():
            beat = directory / "heartbeat.json"
            return beat.exists() and json.loads(beat.read_text())["sampled_at"]
        first = wait_until(sampled_at, timeout=60, message="a heartbeat under $XDG_STATE_HOME")
        wait_until(lambda: sampled_at() > first, timeout=60, message="a second sample")
    finally:
        agent.send_signal(signal.SIGTERM)
        out, err = agent.communicate(timeout=60)
    assert agent.returncode == 0, err
    assert (directory / "state.json").stat().st_uid == NOBODY.pw_uid
    assert (directory / "spool").is_dir() and any((directory / "spool").iterdir())
    lines = err.splitlines()
    assert sum("(agent.state_path)" in line for line in lines) == 1  # once, not every interval
    for word in ("cannot write", "hook", "state file", "heartbeat"):
        assert not [line for line in lines if word in line and "(agent.state_path)" not in line], err
    assert any(p.measurement == "systemd_timer" for p in parse(out))

    # health reads the service's heartbeat, and says where this user's `run` wrote.
    health = as_nobody(program, "health", env=env)
    assert health.returncode == 1
    assert health.stdout.startswith("unhealthy: no heartbeat at /var/lib/tick-exporter/heartbeat.json")
    assert f"{directory}/heartbeat.json" in health.stdout
    mine = as_nobody(program, "health", env={**env, "TICK_EXPORTER_AGENT_STATE_PATH": str(directory / "state.json")})
    assert mine.returncode == 0 and mine.stdout.startswith("healthy: "), mine.stdout


def test_a_configured_path_it_cannot_write_is_refused_with_its_key(program, home, shared_manager):
    env = nobody_env(home, shared_manager, TICK_EXPORTER_AGENT_STATE_PATH="/var/lib/tick-tests-no/state.json",
                     TICK_EXPORTER_SPOOL_PATH="/var/lib/tick-tests-no/spool")
    result = as_nobody(program, "run", "--output", "influxdb", env=env)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"config error: agent.state_path: /var/lib/tick-tests-no/state.json: /var/lib is not "
        f"writable by uid {NOBODY.pw_uid}",
        f"config error: spool.path: /var/lib/tick-tests-no/spool: /var/lib is not writable by uid "
        f"{NOBODY.pw_uid}"]
    assert not os.path.exists("/var/lib/tick-tests-no")


def test_status_health_and_doctor_keep_reading_the_services_paths(program, home, shared_manager):
    service_dir = Path(tempfile.mkdtemp(prefix="tick-tests-service-state-"))  # root's, mode 0700
    try:
        (service_dir / "state.json").write_text('{"version": 1, "timers": {}}')
        env = nobody_env(home, shared_manager, TICK_EXPORTER_AGENT_STATE_PATH=str(service_dir / "state.json"))
        status = as_nobody(program, "status", env=env)
        (warning,) = [line for line in status.stderr.splitlines() if " warning " in line]
        assert (f"cannot read the agent's state file {service_dir}/state.json (Permission denied)"
                in warning) and "(agent.state_path)" in warning
        assert "rebuild" not in status.stderr and "nightly-backup.timer" in status.stdout
        (service_dir / "heartbeat.json").write_text('{"sampled_at": 0, "interval_s": 60}')
        health = as_nobody(program, "health", env=env)
        assert health.returncode == 1
        assert health.stdout.startswith(f"unhealthy: cannot read the heartbeat {service_dir}/heartbeat.json "
                                        f"(beside agent.state_path): permission denied")
        doctor = as_nobody(program, "doctor", "--json", env=env)
        assert f"cannot read the agent's state file {service_dir}/state.json (Permission denied)" in doctor.stderr
        assert "access-dbus" not in {f["id"] for f in json.loads(doctor.stdout)}  # the bus worked
    finally:
        subprocess.run(["rm", "-rf", str(service_dir)], check=False)
