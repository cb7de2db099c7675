"""The shipped systemd unit (systemd/tick-exporter.service and its drop-ins): verified by
`systemd-analyze verify`, then started for real in the test user manager, where it must
sample.

What a user manager cannot do as the system manager does is adapted by one test-time
drop-in (`zz-test.conf`, written by `adaptation_drop_in`), and nothing else:
  * ExecStart= points at a venv made in the test's temp dir instead of /opt/tick-exporter
    (tests write nothing to /opt);
  * DynamicUser=no: the test manager's D-Bus is a session bus, which accepts only its
    owner (root here); the system bus the real unit reads accepts every uid;
  * BindPaths= of the manager's directory and BindReadOnlyPaths= of the venv: both live
    in /tmp, which PrivateTmp=yes replaces;
  * StandardOutput=/StandardError= to files: this machine has no journal for the
    manager.
Every hardening line of the unit (ProtectSystem=strict, ProtectHome=, PrivateTmp=,
NoNewPrivileges=, the empty capability set, ...) stays and is checked on the process.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.lineproto import parse
from tests.native_install import DROP_INS, UNIT, make_venv, proc_environ, proc_status
from tests.services import wait_until
from tests.test_cli import cli

CAP_SYS_PTRACE, CAP_SYS_ADMIN = 19, 21


def verify_root(tmp_path: Path, drop_ins) -> Path:
    """A root for `systemd-analyze verify --root`: the host's own units (the targets the
    unit refers to), the unit as installed, and an executable at its ExecStart path."""
    root = tmp_path / "root"
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree("/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    units = root / "etc/systemd/system"
    (units / "tick-exporter.service.d").mkdir(parents=True)
    shutil.copy(UNIT, units)
    for drop_in in drop_ins:
        shutil.copy(drop_in, units / "tick-exporter.service.d")
    program = root / "opt/tick-exporter/bin/tick-exporter"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    return root


@pytest.mark.parametrize("with_drop_ins", [False, True], ids=["unit", "unit+docker+dns"])
def test_systemd_analyze_verify_passes(tmp_path, with_drop_ins):
    root = verify_root(tmp_path, DROP_INS if with_drop_ins else [])
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={root}",
                             "tick-exporter.service"], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (0, "")


def test_verify_would_catch_a_mistake(tmp_path):
    """The check above is not vacuous: a misspelt directive fails the same command."""
    root = verify_root(tmp_path, [])
    unit = root / "etc/systemd/system/tick-exporter.service"
    unit.write_text(unit.read_text().replace("ProtectHome=yes", "ProtectHomes=yes"))
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={root}",
                             "tick-exporter.service"], capture_output=True, text=True, timeout=60)
    assert "ProtectHomes" in result.stderr


def test_unit_says_what_it_promises():
    text = UNIT.read_text()
    for line in ("StateDirectory=tick-exporter", "Restart=on-failure", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "DynamicUser=yes",
                 "CapabilityBoundingSet=\n",
                 "ExecStart=/opt/tick-exporter/bin/tick-exporter run "):
        assert line in text, line
    dns = (UNIT.parent / "tick-exporter.service.d" / "dns.conf").read_text()
    assert "AmbientCapabilities=CAP_SYS_ADMIN CAP_SYS_PTRACE" in dns
    assert "CAP_SYS" not in text.split("[Service]")[1].replace("# No capabilities", "")


def adaptation_drop_in(manager, venv_program: Path) -> str:
    return (f"# Test-time adaptation for a user manager (see tests/test_native_service.py)\n"
            f"[Service]\nExecStart=\n"
            f"ExecStart={venv_program} run --config %E/tick-exporter/tick-exporter.toml\n"
            f"DynamicUser=no\n"
            f"BindPaths={manager.root}\nBindReadOnlyPaths={venv_program.parent.parent}\n"
            f"StandardOutput=file:{manager.root}/service-out.lp\n"
            f"StandardError=file:{manager.root}/service-err.log\n")


def install(manager, tmp_path: Path, drop_ins) -> None:
    program = make_venv(tmp_path / "opt-tick-exporter")
    manager.write_unit("tick-exporter.service", UNIT.read_text())
    directory = manager.unit_dir / "tick-exporter.service.d"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    for drop_in in drop_ins:
        shutil.copy(drop_in, directory)
    (directory / "zz-test.conf").write_text(adaptation_drop_in(manager, program))
    config = manager.config_dir / "tick-exporter"  # %E/tick-exporter in a user manager
    config.mkdir(exist_ok=True)
    (config / "tick-exporter.toml").write_text(
        '[agent]\ninterval = "1s"\nhostname = "native"\n[timers]\nbus = "user"\n'
        '[host_memory]\nenabled = true\n[output.stdout]\nenabled = true\n')
    for leftover in ("service-out.lp", "service-err.log"):
        (manager.root / leftover).unlink(missing_ok=True)
    manager.daemon_reload()


def main_pid(manager) -> int:
    return int(manager.show("tick-exporter.service", ["MainPID"])["MainPID"])


@pytest.fixture
def service(user_manager, tmp_path):
    user_manager.write_unit("native-probe.service", "[Service]\nType=oneshot\nExecStart=/bin/true\n")
    user_manager.write_unit("native-probe.timer", "[Timer]\nOnCalendar=*-*-* 03:00:00\n")
    yield user_manager
    user_manager.systemctl("stop", "tick-exporter.service", "native-probe.timer", check=False)
    for name in ("tick-exporter.service", "native-probe.service", "native-probe.timer"):
        user_manager.remove_unit(name)
    shutil.rmtree(user_manager.unit_dir / "tick-exporter.service.d", ignore_errors=True)
    user_manager.daemon_reload()


def test_the_unit_runs_and_samples_in_the_user_manager(service, tmp_path):
    install(service, tmp_path, drop_ins=[])
    service.systemctl("start", "native-probe.timer")
    service.systemctl("start", "tick-exporter.service")
    pid = wait_until(lambda: main_pid(service), timeout=30, message="a main PID")
    state_dir = Path(proc_environ(pid)["STATE_DIRECTORY"])  # StateDirectory=, as systemd set it
    heartbeat = state_dir / "heartbeat.json"

    def sampled_at():
        return heartbeat.exists() and json.loads(heartbeat.read_text())["sampled_at"]
    first = wait_until(sampled_at, timeout=60, message=lambda: f"a heartbeat in {state_dir}: "
                       + (service.root / "service-err.log").read_text())
    wait_until(lambda: sampled_at() > first, timeout=60, message="a second sample")
    assert (state_dir / "state.json").exists()  # the timers' memory, in the state directory

    points = parse((service.root / "service-out.lp").read_text())
    timers = {p.tags["timer"] for p in points if p.measurement == "systemd_timer"}
    assert "native-probe.timer" in timers
    assert {p.tags["manager"] for p in points if p.measurement == "systemd_timer"} == {"user"}
    assert any(p.measurement == "host_memory" for p in points)
    errors = (service.root / "service-err.log").read_text()
    assert " error " not in errors and " warning " not in errors, errors
    assert f"(agent.state_path)" in errors and str(state_dir) in errors  # said once which paths

    # The hardening is in force on the running process.
    status = proc_status(pid)
    assert status["NoNewPrivs"].strip() == "1"
    assert int(status["CapBnd"], 16) == 0 and int(status["CapEff"], 16) == 0
    assert os.listdir("/root") and os.listdir(f"/proc/{pid}/root/root") == []  # ProtectHome=
    tmp_seen = set(os.listdir(f"/proc/{pid}/root/tmp"))  # PrivateTmp=: a /tmp of its own
    assert service.root.name in tmp_seen and tmp_path.name not in tmp_seen
    probe = subprocess.run(["nsenter", "-t", str(pid), "-m", "touch", "/usr/probe-written"],
                           capture_output=True, text=True)
    assert probe.returncode != 0 and "Read-only file system" in probe.stderr  # ProtectSystem=strict

    healthy = cli("health", env={"TICK_EXPORTER_AGENT_STATE_PATH": str(state_dir / "state.json")})
    assert healthy.returncode == 0 and healthy.stdout.startswith("healthy: "), healthy.stdout

    # Restart=on-failure: killed, it comes back with a new PID and samples on.
    os.kill(pid, 9)
    wait_until(lambda: main_pid(service) not in (0, pid), timeout=60, message="a restart")
    restarted = sampled_at()
    wait_until(lambda: sampled_at() > restarted, timeout=60, message="sampling after the restart")
    assert int(service.show("tick-exporter.service", ["NRestarts"])["NRestarts"]) >= 1


def test_the_dns_drop_in_grants_exactly_its_two_capabilities(service, tmp_path):
    install(service, tmp_path, drop_ins=DROP_INS)
    service.systemctl("start", "tick-exporter.service")
    pid = wait_until(lambda: main_pid(service), timeout=30, message="a main PID")
    wanted = (1 << CAP_SYS_ADMIN) | (1 << CAP_SYS_PTRACE)
    status = wait_until(lambda: proc_status(pid), timeout=10)
    assert int(status["CapBnd"], 16) == wanted and int(status["CapAmb"], 16) == wanted
    assert status["NoNewPrivs"].strip() == "1"
    import grp
    assert str(grp.getgrnam("docker").gr_gid) in status["Groups"].split()  # docker.conf
    state_dir = Path(proc_environ(pid)["STATE_DIRECTORY"])
    wait_until(lambda: (state_dir / "heartbeat.json").exists(), timeout=60,
               message=lambda: (service.root / "service-err.log").read_text())
