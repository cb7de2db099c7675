"""`tick-exporter doctor` as a user runs it, against the real systemd user manager (one
unit set per lint case) and the real Docker engine (a container on Docker's public DNS
fallback, whose servers are classified, never queried)."""

import json
import os
import subprocess
import sys

import pytest

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "cgroup")
PUBLIC = "8.8.8.8,8.8.4.4,2001:4860:4860::8888,2001:4860:4860::8844"


def doctor(*args, env):
    return subprocess.run([sys.executable, "-m", "exporter", "doctor", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def timers_env(user_manager, tmp_path, include):
    """Only the user manager's timers named `include`; Docker pointed at a socket that does
    not exist (containers and dns off: skipped, not a problem); a healthy /proc/cgroups."""
    return {**user_manager.env, "TICK_EXPORTER_TIMERS_BUS": user_manager.bus_address,
            "TICK_EXPORTER_TIMERS_INCLUDE": include,
            "TICK_EXPORTER_CONTAINERS_DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock",
            "TICK_EXPORTER_CONTAINERS_PROC_ROOT": os.path.join(FIXTURES, "proc-memory-enabled")}


def by_subject(findings):
    return {(f["id"], f["subject"]): f for f in findings}


@pytest.fixture(scope="module")
def lint_units(user_manager):
    """One timer per lint case, plus two healthy ones; removed afterwards."""
    m = user_manager
    units = {
        # a timer whose service does not exist
        "doctor-orphan.timer": "[Timer]\nOnCalendar=*-*-* 03:00:00\n[Install]\nWantedBy=timers.target\n",
        # a service with an [Install] section, started (and enabled) by a timer
        "doctor-installed.service": "[Service]\nType=oneshot\nExecStart=/bin/true\n"
                                    "[Install]\nWantedBy=default.target\n",
        "doctor-installed.timer": "[Timer]\nOnCalendar=*-*-* 05:00:00\n[Install]\nWantedBy=timers.target\n",
        # a backup without Persistent=true (its name says so)
        "doctor-backup.service": "[Service]\nType=oneshot\nExecStart=/bin/true\n",
        "doctor-backup.timer": "[Timer]\nOnCalendar=*-*-* 02:30:00\n[Install]\nWantedBy=timers.target\n",
        # a backup by its command (restic), with Persistent=true: healthy
        "doctor-nightly.service": "[Service]\nType=oneshot\nExecStart=/usr/bin/restic backup /srv\n",
        "doctor-nightly.timer": "[Timer]\nOnCalendar=*-*-* 01:00:00\nPersistent=true\n"
                                "[Install]\nWantedBy=timers.target\n",
        # a backup by its command only, without Persistent=true
        "doctor-job.service": "[Service]\nType=oneshot\nExecStart=/usr/bin/borg create ::x /srv\n",
        "doctor-job.timer": "[Timer]\nOnCalendar=*-*-* 01:30:00\n[Install]\nWantedBy=timers.target\n",
        # a timer that is loaded but neither enabled nor started
        "doctor-off.service": "[Service]\nType=oneshot\nExecStart=/bin/true\n",
        "doctor-off.timer": "[Timer]\nOnCalendar=*-*-* 06:00:00\n[Install]\nWantedBy=timers.target\n",
        # enabled, but not started
        "doctor-stopped.service": "[Service]\nType=oneshot\nExecStart=/bin/true\n",
        "doctor-stopped.timer": "[Timer]\nOnCalendar=*-*-* 06:30:00\n[Install]\nWantedBy=timers.target\n",
        # started but not enabled
        "doctor-transient.service": "[Service]\nType=oneshot\nExecStart=/bin/true\n",
        "doctor-transient.timer": "[Timer]\nOnCalendar=*-*-* 07:00:00\n[Install]\nWantedBy=timers.target\n",
        # a job that fails with exit code 3
        "doctor-fails.service": "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'exit 3'\n",
        "doctor-fails.timer": "[Timer]\nOnCalendar=*-*-* 08:00:00\n[Install]\nWantedBy=timers.target\n",
        # healthy: enabled, armed, static service, not a backup
        "doctor-ok.service": "[Service]\nType=oneshot\nExecStart=/bin/true\n",
        "doctor-ok.timer": "[Timer]\nOnCalendar=*-*-* 09:00:00\n[Install]\nWantedBy=timers.target\n",
    }
    for name, text in units.items():
        m.write_unit(name, text)
    m.daemon_reload()
    for timer in ("doctor-installed", "doctor-backup", "doctor-nightly", "doctor-job", "doctor-fails",
                  "doctor-ok"):
        m.systemctl("enable", "--now", f"{timer}.timer")
    m.systemctl("enable", "doctor-installed.service")
    m.systemctl("start", "doctor-transient.timer")
    m.systemctl("enable", "doctor-orphan.timer")  # starting it is refused: its unit is missing
    m.systemctl("enable", "doctor-stopped.timer")
    m.systemctl("start", "doctor-fails.service", check=False)
    m.wait_for_properties("doctor-fails.service", {"Result": "exit-code", "ActiveState": "failed"})
    yield m
    for timer in ("doctor-installed", "doctor-backup", "doctor-nightly", "doctor-job", "doctor-fails",
                  "doctor-ok", "doctor-orphan", "doctor-stopped"):
        m.systemctl("disable", "--now", f"{timer}.timer", check=False)
    m.systemctl("disable", "doctor-installed.service", check=False)
    m.systemctl("stop", "doctor-transient.timer", check=False)
    m.systemctl("reset-failed", check=False)
    for name in units:
        m.remove_unit(name)
    m.daemon_reload()


def test_each_timer_mistake_is_found_with_its_fix(lint_units, tmp_path):
    result = doctor("--json", env=timers_env(lint_units, tmp_path, "doctor-*"))
    assert result.returncode == 1, result.stderr
    findings = json.loads(result.stdout)
    assert all(set(f) == {"id", "severity", "subject", "problem", "why", "fix"} for f in findings)
    found = by_subject(findings)

    orphan = found[("timer-no-service", "doctor-orphan.timer")]
    assert orphan["severity"] == "error"
    assert "doctor-orphan.service (the service of the same name; the timer sets no Unit=)" in orphan["problem"]
    assert "does not exist (LoadState not-found)" in orphan["problem"]
    assert f"create {lint_units.unit_dir}/doctor-orphan.service" in orphan["fix"]
    assert "Type=oneshot" in orphan["fix"]
    assert "systemctl --user daemon-reload && systemctl --user enable --now doctor-orphan.timer" in orphan["fix"]

    installed = found[("timer-service-installed", "doctor-installed.service")]
    assert installed["severity"] == "warning" and installed["problem"].endswith("has an [Install] section and is enabled")
    assert "runs at every boot" in installed["why"]
    assert installed["fix"].startswith("systemctl --user disable doctor-installed.service\n")
    assert f"delete the [Install] section from {lint_units.unit_dir}/doctor-installed.service" in installed["fix"]

    backup = found[("timer-not-persistent", "doctor-backup.timer")]
    assert "looks like a backup ('doctor-backup.timer')" in backup["problem"]
    assert "never caught up" in backup["why"]
    assert f"{lint_units.unit_dir}/doctor-backup.timer.d/persistent.conf" in backup["fix"]
    assert "  [Timer]\n  Persistent=true\n" in backup["fix"]
    assert "systemctl --user daemon-reload && systemctl --user restart doctor-backup.timer" in backup["fix"]
    by_command = found[("timer-not-persistent", "doctor-job.timer")]
    assert "looks like a backup ('borg')" in by_command["problem"]

    off = found[("timer-inactive", "doctor-off.timer")]
    assert off["severity"] == "warning" and "UnitFileState disabled, ActiveState inactive" in off["problem"]
    assert off["fix"].startswith("systemctl --user enable --now doctor-off.timer\n")
    assert "the missed_backup task's `ignore` var" in off["fix"]
    stopped = found[("timer-inactive", "doctor-stopped.timer")]
    assert stopped["severity"] == "error" and "is enabled but not armed (ActiveState inactive)" in stopped["problem"]
    assert stopped["fix"].startswith("systemctl --user start doctor-stopped.timer\n")
    started = found[("timer-disabled", "doctor-transient.timer")]
    assert started["severity"] == "warning" and started["fix"] == "systemctl --user enable doctor-transient.timer"

    failed = found[("timer-failed", "doctor-fails.timer")]
    assert failed["severity"] == "error"
    assert "the last run of doctor-fails.service (started by doctor-fails.timer) failed: result exit-code, " \
        "exit code 3, at " in failed["problem"]
    assert "journalctl --user -u doctor-fails.service -n 50 --no-pager" in failed["fix"]
    assert "systemctl --user start doctor-fails.service" in failed["fix"]

    # Healthy units produce nothing; each broken one exactly what is wrong with it.
    subjects = {f["subject"] for f in findings}
    assert not subjects & {"doctor-ok.timer", "doctor-ok.service", "doctor-nightly.timer",
                           "doctor-nightly.service"}
    assert sorted((f["id"], f["subject"]) for f in findings) == sorted([
        ("timer-no-service", "doctor-orphan.timer"),
        ("timer-service-installed", "doctor-installed.service"),
        ("timer-not-persistent", "doctor-backup.timer"),
        ("timer-not-persistent", "doctor-job.timer"),
        ("timer-inactive", "doctor-off.timer"),
        ("timer-inactive", "doctor-stopped.timer"),
        ("timer-disabled", "doctor-transient.timer"),
        ("timer-failed", "doctor-fails.timer"),
    ])


def test_healthy_timers_exit_0_and_say_what_was_checked(lint_units, tmp_path):
    env = timers_env(lint_units, tmp_path, "doctor-ok.timer,doctor-nightly.timer")
    result = doctor(env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "no problems found"
    assert f"checked: timers: 2 timers of the user manager at {lint_units.bus_address}" in lines
    assert any(line.startswith("checked: memory cgroup: ") for line in lines)
    assert any(line.startswith("skipped: Docker: containers and dns are not enabled") for line in lines)
    as_json = doctor("--json", env=env)
    assert as_json.returncode == 0 and json.loads(as_json.stdout) == []


def test_text_output_prints_problem_why_and_fix(lint_units, tmp_path):
    result = doctor(env=timers_env(lint_units, tmp_path, "doctor-fails.timer,doctor-backup.timer"))
    assert result.returncode == 1
    out = result.stdout
    # errors before warnings, each a block of problem, why and fix
    assert out.index("ERROR timer-failed: doctor-fails.timer") < out.index(
        "WARNING timer-not-persistent: doctor-backup.timer")
    block = out.split("WARNING timer-not-persistent: doctor-backup.timer\n")[1].split("\n\n")[0]
    assert block.startswith("  problem: doctor-backup.timer looks like a backup")
    assert "\n  why:     a run that falls due while the host is off" in block
    assert "\n  fix:     add Persistent=true with a drop-in" in block
    assert "\n             [Timer]\n             Persistent=true" in out
    assert out.splitlines()[-1] == "needs attention: 1 error, 1 warning"


def test_fixing_a_timer_makes_its_finding_go_away(user_manager, tmp_path):
    m = user_manager
    m.write_unit("doctor-fixme.service", "[Service]\nType=oneshot\nExecStart=/bin/true\n")
    m.write_unit("doctor-fixme.timer", "[Timer]\nOnCalendar=*-*-* 10:00:00\n[Install]\nWantedBy=timers.target\n")
    m.daemon_reload()
    env = timers_env(m, tmp_path, "doctor-fixme.timer")
    try:
        before = doctor("--json", env=env)
        (finding,) = json.loads(before.stdout)
        # apply the printed fix, exactly as printed
        command = finding["fix"].splitlines()[0]
        subprocess.run(command.replace("systemctl", "systemctl --no-pager", 1).split(),
                       env=m.env, check=True, capture_output=True, timeout=30)
        after = doctor("--json", env=env)
    finally:
        m.systemctl("disable", "--now", "doctor-fixme.timer", check=False)
        m.remove_unit("doctor-fixme.timer")
        m.remove_unit("doctor-fixme.service")
        m.daemon_reload()
    assert before.returncode == 1 and finding["id"] == "timer-inactive"
    assert after.returncode == 0 and json.loads(after.stdout) == [], after.stdout


def test_missing_bus_socket_is_an_access_finding_with_the_compose_lines(tmp_path):
    missing = tmp_path / "run" / "dbus" / "system_bus_socket"
    env = {**os.environ, "TICK_EXPORTER_TIMERS_BUS": f"unix:path={missing}",
           "TICK_EXPORTER_CONTAINERS_DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock",
           "TICK_EXPORTER_CONTAINERS_PROC_ROOT": os.path.join(FIXTURES, "proc-memory-enabled")}
    result = doctor("--json", env=env)
    assert result.returncode == 1
    (finding,) = json.loads(result.stdout)
    assert finding["id"] == "access-dbus" and finding["severity"] == "error"
    assert finding["subject"] == f"unix:path={missing}"
    assert f"{missing} does not exist" in finding["problem"]
    assert f"      - {missing.parent}:{missing.parent}:ro" in finding["fix"]


def test_a_socket_that_refuses_is_an_access_finding(tmp_path):
    path = tmp_path / "bus"
    path.mkdir()
    sock = path / "socket"
    import socket
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock))
    server.close()  # a socket file nobody listens on: connection refused
    env = {**os.environ, "TICK_EXPORTER_TIMERS_BUS": f"unix:path={sock}",
           "TICK_EXPORTER_CONTAINERS_DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock",
           "TICK_EXPORTER_CONTAINERS_PROC_ROOT": os.path.join(FIXTURES, "proc-memory-enabled")}
    result = doctor("--json", env=env)
    (finding,) = json.loads(result.stdout)
    assert result.returncode == 1 and finding["id"] == "access-dbus"
    assert "Connection refused" in finding["problem"]


# --- the real Docker engine -------------------------------------------------------------

def docker_env(docker_engine, tmp_path, upstream, proc_root="/proc", queries=""):
    host = tmp_path / "host-resolv.conf"
    host.write_text("nameserver 127.0.0.53\noptions edns0 trust-ad\n")
    upstream_file = tmp_path / "upstream-resolv.conf"
    upstream_file.write_text(f"nameserver {upstream}\n")
    return {**os.environ, "TICK_EXPORTER_TIMERS_ENABLED": "false",
            "TICK_EXPORTER_CONTAINERS_DOCKER_HOST": docker_engine.host,
            "TICK_EXPORTER_CONTAINERS_PROC_ROOT": proc_root,
            "TICK_EXPORTER_DNS_QUERIES": queries, "TICK_EXPORTER_DNS_TIMEOUT": "1s",
            "TICK_EXPORTER_DNS_SKIP_SERVERS": PUBLIC,
            "TICK_EXPORTER_DNS_HOST_RESOLV_CONF": str(host),
            "TICK_EXPORTER_DNS_UPSTREAM_RESOLV_CONF": str(upstream_file)}


@pytest.fixture
def fallback_container(docker_engine):
    cid = docker_engine.run("--name", "doctor-fallback", docker_engine.image(), "sleep", "300")
    yield cid
    docker_engine.remove(cid)


def test_container_on_the_public_fallback(docker_engine, dnsmasq, fallback_container, tmp_path):
    env = docker_env(docker_engine, tmp_path, dnsmasq.address)
    result = doctor("--json", env=env)
    assert result.returncode == 1, result.stderr
    found = by_subject(json.loads(result.stdout))
    dns = found[("dns-public-fallback", "doctor-fallback")]
    assert dns["severity"] == "error"
    assert "doctor-fallback was given Docker's public DNS fallback (8.8.8.8, 8.8.4.4)" in dns["problem"]
    assert "127.0.0.53 (a loopback stub)" in dns["problem"]
    assert f"this host's real upstream servers: {dnsmasq.address}" in dns["problem"]
    assert "ExecStart=\n" in dns["fix"]
    assert f"ExecStart=/usr/bin/dockerd -H fd:// --dns {dnsmasq.address}" in dns["fix"]
    assert "systemctl daemon-reload && systemctl restart docker" in dns["fix"]
    assert f'{{ "dns": ["{dnsmasq.address}"] }}' in dns["fix"]
    assert "Both tie Docker to these servers" in dns["fix"]
    # the container's main process is visible here: no PID namespace finding
    assert not [f for f in found if f[0] == "access-pid-namespace"]


def test_doctor_dns_is_the_dns_subset(docker_engine, dnsmasq, fallback_container, tmp_path):
    env = docker_env(docker_engine, tmp_path, dnsmasq.address)
    env["TICK_EXPORTER_CONTAINERS_DOCKER_HOST"] = docker_engine.host
    result = doctor("dns", env=env)
    assert result.returncode == 1
    assert "host resolv.conf: 127.0.0.53 (a loopback stub)" in result.stdout
    assert f"host upstream servers: {dnsmasq.address}" in result.stdout
    assert "ERROR dns-public-fallback: doctor-fallback" in result.stdout
    assert "10-dns.conf" in result.stdout
    assert "timer" not in result.stdout and "memory cgroup" not in result.stdout
    as_json = doctor("dns", "--json", env=env)
    assert [f["id"] for f in json.loads(as_json.stdout)] == ["dns-public-fallback"]


def test_pinned_container_that_resolves_is_healthy(docker_engine, dnsmasq, tmp_path):
    cid = docker_engine.run("--name", "doctor-pinned", "--dns", dnsmasq.address,
                            docker_engine.image(), "sleep", "300")
    try:
        env = docker_env(docker_engine, tmp_path, dnsmasq.address, queries="ok.tick.test")
        env["TICK_EXPORTER_DNS_ENABLED"] = "true"
        result = doctor("dns", "--json", env=env)
        shown = doctor("dns", env=env)
    finally:
        docker_engine.remove(cid)
    assert result.returncode == 0, result.stdout
    assert json.loads(result.stdout) == []
    assert shown.returncode == 0 and shown.stdout.splitlines()[-1] == "no problems found"


def test_container_whose_server_does_not_answer(docker_engine, tmp_path):
    # an address on the engine's own bridge that nobody holds: the probe times out
    dead = str(docker_engine.bridge_network[254])
    cid = docker_engine.run("--name", "doctor-deaf", "--dns", dead, docker_engine.image(), "sleep", "300")
    try:
        env = docker_env(docker_engine, tmp_path, dead, queries="ok.tick.test")
        result = doctor("dns", "--json", env=env)
    finally:
        docker_engine.remove(cid)
    assert result.returncode == 1
    (finding,) = json.loads(result.stdout)
    assert finding["id"] == "dns-not-resolving" and finding["subject"] == "doctor-deaf"
    assert f"ok.tick.test @ {dead}:" in finding["problem"]
    assert "docker exec doctor-deaf nslookup" in finding["fix"]


def test_agent_without_the_host_pid_namespace(docker_engine, fallback_container, tmp_path):
    # The agent's /proc as a container without pid: host sees it: its own processes only.
    proc = tmp_path / "proc"
    (proc / "1").mkdir(parents=True)
    (proc / "1" / "comm").write_text("tick-exporter\n")
    (proc / "1" / "cgroup").write_text("0::/\n")
    (proc / "self" / "ns").mkdir(parents=True)
    os.symlink("pid:[4026532999]", proc / "self" / "ns" / "pid")
    (proc / "cgroups").write_text(open(os.path.join(FIXTURES, "proc-memory-enabled", "cgroups")).read())
    env = docker_env(docker_engine, tmp_path, "10.0.0.2", proc_root=str(proc))
    result = doctor("--json", env=env)
    pid = docker_engine.inspect(fallback_container)["State"]["Pid"]
    found = by_subject(json.loads(result.stdout))
    finding = found[("access-pid-namespace", "host PID namespace")]
    assert finding["severity"] == "error" and result.returncode == 1
    assert f"doctor-fallback (PID {pid})" in finding["problem"]
    assert "pid: host" in finding["fix"] and "- SYS_ADMIN" in finding["fix"] and "- SYS_PTRACE" in finding["fix"]


def test_unreachable_docker_is_an_error_when_containers_are_enabled(tmp_path):
    env = {**os.environ, "TICK_EXPORTER_TIMERS_ENABLED": "false",
           "TICK_EXPORTER_CONTAINERS_ENABLED": "true",
           "TICK_EXPORTER_CONTAINERS_DOCKER_HOST": f"unix://{tmp_path}/docker.sock",
           "TICK_EXPORTER_CONTAINERS_CGROUP_ROOT": str(tmp_path / "no-cgroup"),
           "TICK_EXPORTER_CONTAINERS_PROC_ROOT": os.path.join(FIXTURES, "proc-memory-enabled")}
    result = doctor("--json", env=env)
    assert result.returncode == 1
    found = by_subject(json.loads(result.stdout))
    docker = found[("access-docker", f"unix://{tmp_path}/docker.sock")]
    assert docker["severity"] == "error"
    assert "TICK_EXPORTER_CONTAINERS_DOCKER_HOST: tcp://docker-socket-proxy:2375" in docker["fix"]
    assert "- /var/run/docker.sock:/var/run/docker.sock:ro" in docker["fix"]
    cgroup = found[("access-cgroup", str(tmp_path / "no-cgroup"))]
    assert "does not exist" in cgroup["problem"]
    assert "- /sys/fs/cgroup:/sys/fs/cgroup:ro" in cgroup["fix"]
    assert set(found) == {("access-docker", f"unix://{tmp_path}/docker.sock"),
                          ("access-cgroup", str(tmp_path / "no-cgroup"))}


def test_disabled_memory_cgroup_from_a_fixture_proc(tmp_path):
    env = {**os.environ, "TICK_EXPORTER_TIMERS_ENABLED": "false",
           "TICK_EXPORTER_CONTAINERS_DOCKER_HOST": f"unix://{tmp_path}/docker.sock",
           "TICK_EXPORTER_CONTAINERS_PROC_ROOT": os.path.join(FIXTURES, "proc-memory-disabled")}
    result = doctor(env=env)
    assert result.returncode == 1
    assert "ERROR memory-cgroup-disabled: " + os.path.join(FIXTURES, "proc-memory-disabled", "cgroups") \
        in result.stdout
    assert "cgroup_enable=memory cgroup_memory=1" in result.stdout
    assert "/boot/firmware/cmdline.txt" in result.stdout and "/boot/cmdline.txt" in result.stdout
    assert "sudo reboot" in result.stdout


def test_config_file_pointing_at_nothing(tmp_path):
    """--config: every source the file names is missing; each gets its own finding and fix."""
    config = tmp_path / "doctor.toml"
    config.write_text(f"""
[timers]
bus = "unix:path={tmp_path}/dbus/system_bus_socket"
[containers]
enabled = true
docker_host = "unix://{tmp_path}/docker.sock"
cgroup_root = "{tmp_path}/cgroup"
proc_root = "{FIXTURES}/proc-memory-disabled"
""")
    env = dict(os.environ)  # (conftest's private state file and spool only)
    result = doctor("--json", "--config", str(config), env=env)
    assert result.returncode == 1, result.stderr
    findings = json.loads(result.stdout)
    assert [(f["id"], f["severity"]) for f in findings] == [
        ("access-dbus", "error"), ("access-cgroup", "error"), ("memory-cgroup-disabled", "error"),
        ("access-docker", "error")]
    text = doctor("--config", str(config), env=env)
    assert text.returncode == 1 and text.stdout.splitlines()[-1] == "needs attention: 4 errors"
    assert f"      - {tmp_path}/dbus:{tmp_path}/dbus:ro" in text.stdout


def test_doctor_dns_without_docker_still_shows_the_host(tmp_path):
    host = tmp_path / "host-resolv.conf"
    host.write_text("nameserver 127.0.0.53\n")
    upstream = tmp_path / "upstream-resolv.conf"
    upstream.write_text("nameserver 10.0.0.2\n")
    env = {**os.environ, "TICK_EXPORTER_CONTAINERS_DOCKER_HOST": f"unix://{tmp_path}/docker.sock",
           "TICK_EXPORTER_DNS_HOST_RESOLV_CONF": str(host),
           "TICK_EXPORTER_DNS_UPSTREAM_RESOLV_CONF": str(upstream)}
    result = doctor("dns", env=env)
    assert result.returncode == 1
    assert result.stdout.startswith("host resolv.conf: 127.0.0.53 (a loopback stub)\n"
                                    "host upstream servers: 10.0.0.2\n")
    assert f"ERROR access-docker: unix://{tmp_path}/docker.sock" in result.stdout
