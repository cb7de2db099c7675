"""The doctor's checks as functions of their inputs: fixture trees for /proc and the cgroup
tree, DNS points, timer views; and the renderers. The same checks run end to end on the
real user manager and engine in tests/test_doctor_live.py."""

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from exporter.doctor import Finding, Report, exit_code, render_json, render_text
from exporter.doctor.dns import check_dns
from exporter.doctor.host import (PROC_PID_INIT_INO, check_cgroup_tree, check_dbus_socket,
                                  check_memory_cgroup, check_pid_namespace, dbus_access_finding,
                                  dbus_socket_path)
from exporter.doctor.timers import TimerView, backup_like, check_removed, lint
from exporter.point import Point
from exporter.sources.docker_api import ContainerInfo

FIXTURES = Path(__file__).parent / "fixtures" / "cgroup"
CONTAINER_ID = "4f1c0a5e2b7d9c3e8a6b1d0f2e4c6a8b9d7e5f3a1c2b4d6e8f0a1b3c5d7e9f1a"


# --- memory cgroup and the cgroup tree ------------------------------------------------------

def test_memory_cgroup_disabled_names_the_cmdline_fix():
    proc = FIXTURES / "proc-memory-disabled"
    (finding,) = check_memory_cgroup(str(proc), str(FIXTURES / "v1-no-memory"))
    assert finding.id == "memory-cgroup-disabled" and finding.severity == "error"
    assert finding.subject == f"{proc}/cgroups"
    assert '"memory 0 70 0" (enabled = 0)' in finding.problem
    assert "cgroup_enable=memory cgroup_memory=1" in finding.fix
    assert "/boot/firmware/cmdline.txt" in finding.fix and "/boot/cmdline.txt" in finding.fix
    assert "sudo reboot" in finding.fix and "Your kernel does not support memory limit" in finding.why


@pytest.mark.parametrize("tree", ["v1-armhf", "v2-cgroupfs", "v2-systemd"])
def test_memory_cgroup_enabled_is_no_finding(tree):
    assert check_memory_cgroup(str(FIXTURES / "proc-memory-enabled"), str(FIXTURES / tree)) == []


def test_memory_controller_missing_from_the_v2_root():
    (finding,) = check_memory_cgroup(str(FIXTURES / "proc-memory-enabled"), str(FIXTURES / "v2-no-memory"))
    assert finding.id == "memory-cgroup-disabled"
    assert finding.subject == str(FIXTURES / "v2-no-memory" / "cgroup.controllers")
    assert "cgroup_enable=memory" in finding.fix


def test_kernel_without_a_memory_controller(tmp_path):
    (tmp_path / "cgroups").write_text("#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t1\t2\t1\n")
    (finding,) = check_memory_cgroup(str(tmp_path), str(tmp_path))
    assert finding.id == "memory-cgroup-disabled" and "has no memory line" in finding.problem
    assert "CONFIG_MEMCG" in finding.fix


def test_unreadable_proc_is_an_access_finding(tmp_path):
    (finding,) = check_memory_cgroup(str(tmp_path / "no-proc"), str(tmp_path))
    assert finding.id == "access-proc" and finding.severity == "error"
    assert "pid: host" in finding.fix


@pytest.mark.parametrize("tree", ["v1-armhf", "v2-cgroupfs"])
def test_cgroup_tree_present(tree):
    assert check_cgroup_tree(str(FIXTURES / tree)) == []


def test_cgroup_tree_missing_or_empty(tmp_path):
    (missing,) = check_cgroup_tree(str(tmp_path / "cgroup"))
    assert missing.id == "access-cgroup" and "does not exist" in missing.problem
    assert "      - /sys/fs/cgroup:/sys/fs/cgroup:ro" in missing.fix
    (empty,) = check_cgroup_tree(str(tmp_path))
    assert "is not a cgroup tree" in empty.problem


# --- D-Bus ---------------------------------------------------------------------------------

def test_dbus_socket_path_of_addresses():
    assert dbus_socket_path("unix:path=/run/dbus/system_bus_socket") == "/run/dbus/system_bus_socket"
    assert dbus_socket_path("unix:path=/run/user/0/bus,guid=abc;tcp:host=x") == "/run/user/0/bus"
    assert dbus_socket_path("unix:abstract=/tmp/dbus-x") == ""


def test_dbus_socket_missing(tmp_path):
    (finding,) = check_dbus_socket("unix:path=/nonexistent/run/dbus/system_bus_socket")
    assert finding.id == "access-dbus"
    assert "      - /nonexistent/run/dbus:/nonexistent/run/dbus:ro" in finding.fix
    assert check_dbus_socket("unix:abstract=/tmp/x") == []  # nothing to look at on disk
    (as_dir,) = check_dbus_socket(f"unix:path={tmp_path}")
    assert as_dir.id == "access-dbus"


def test_system_bus_fix_is_the_run_dbus_mount():
    finding = dbus_access_finding("unix:path=/run/dbus/system_bus_socket", "Permission denied")
    assert finding.problem.endswith(": Permission denied")
    assert "      - /run/dbus:/run/dbus:ro" in finding.fix
    assert "systemctl status dbus.socket dbus.service" in finding.fix


# --- host PID namespace ---------------------------------------------------------------------

def proc_tree(root: Path, inode: int, init: str, processes: dict[int, str] = None) -> Path:
    (root / "self" / "ns").mkdir(parents=True)
    os.symlink(f"pid:[{inode}]", root / "self" / "ns" / "pid")
    (root / "1").mkdir()
    (root / "1" / "comm").write_text(init + "\n")
    for pid, cgroup in (processes or {}).items():
        (root / str(pid)).mkdir(exist_ok=True)
        (root / str(pid) / "cgroup").write_text(cgroup)
    return root


def container(pid: int) -> ContainerInfo:
    return ContainerInfo(CONTAINER_ID, "web", "nginx", pid=pid)


def test_pid_namespace_of_the_host(tmp_path):
    proc = proc_tree(tmp_path, PROC_PID_INIT_INO, "systemd",
                     {4242: f"0::/system.slice/docker-{CONTAINER_ID}.scope\n"})
    assert check_pid_namespace(str(proc), []) == []
    assert check_pid_namespace(str(proc), [container(4242)]) == []


def test_pid_namespace_of_a_host_that_is_itself_a_container(tmp_path):
    proc = proc_tree(tmp_path, 4026532500, "systemd")
    assert check_pid_namespace(str(proc), []) == []


def test_pid_namespace_of_a_container_without_pid_host(tmp_path):
    proc = proc_tree(tmp_path, 4026532999, "tick-exporter")
    (guess,) = check_pid_namespace(str(proc), [])
    assert guess.id == "access-pid-namespace" and guess.severity == "warning"
    assert "pid:[4026532999]" in guess.problem and "'tick-exporter'" in guess.problem
    assert "    pid: host\n" in guess.fix and "      - SYS_ADMIN" in guess.fix and "      - SYS_PTRACE" in guess.fix
    # With a container, the answer is certain: its PID is not here (or is someone else).
    (sure,) = check_pid_namespace(str(proc), [container(4242)])
    assert sure.severity == "error" and "web (PID 4242)" in sure.problem
    proc_tree(tmp_path / "other", 4026532999, "tick-exporter", {4242: "0::/\n"})
    (other,) = check_pid_namespace(str(tmp_path / "other"), [container(4242)])
    assert other.severity == "error"


def test_stopped_containers_say_nothing_about_the_namespace(tmp_path):
    proc = proc_tree(tmp_path, PROC_PID_INIT_INO, "systemd")
    assert check_pid_namespace(str(proc), [container(0)]) == []


# --- DNS -----------------------------------------------------------------------------------

def dns_points(containers, probes=(), upstreams="10.0.0.2,10.0.0.3"):
    points = [Point("host_dns", {"host": "h"}, {"loopback_stub": True, "nameservers": "127.0.0.53",
                                                "upstreams": upstreams}, 0)]
    for name, kind, nameservers, ok, fallback, probed, failed in containers:
        points.append(Point("container_dns", {"host": "h", "container": name, "network_mode": "default",
                                              "resolver_kind": kind},
                            {"ok": ok, "nameservers": nameservers, "public_fallback": fallback,
                             "probes": probed, "probes_failed": failed}, 0))
    for name, query, server, result, error in probes:
        fields = {"ok": result in ("ok", "nxdomain"), "rcode": 0, "latency_ms": 1.0}
        if error:
            fields["error"] = error
        points.append(Point("container_dns_probe", {"host": "h", "container": name, "query": query,
                                                    "server": server, "result": result,
                                                    "probe_from": "container"}, fields, 0))
    return points


def test_public_fallback_with_the_fix_filled_in():
    points = dns_points([("web", "public_fallback", "8.8.8.8,8.8.4.4", False, True, 2, 2),
                         ("db", "public_fallback", "8.8.8.8,8.8.4.4", False, True, 2, 2),
                         ("api", "embedded", "127.0.0.11", True, False, 1, 0)],
                        [("web", "example.org", "8.8.8.8", "timeout", ""),
                         ("web", "example.org", "8.8.4.4", "timeout", "")])
    (finding,) = check_dns(points)
    assert finding.id == "dns-public-fallback" and finding.subject == "db, web"
    assert "db, web were given Docker's public DNS fallback (8.8.8.8, 8.8.4.4) and do not resolve" \
        in finding.problem
    assert "ExecStart=\n" in finding.fix
    assert "ExecStart=/usr/bin/dockerd -H fd:// --dns 10.0.0.2 --dns 10.0.0.3" in finding.fix
    assert "systemctl daemon-reload && systemctl restart docker" in finding.fix
    assert '{ "dns": ["10.0.0.2", "10.0.0.3"] }' in finding.fix
    assert "Both tie Docker to these servers" in finding.fix


def test_public_fallback_without_known_upstreams():
    points = dns_points([("web", "public_fallback", "8.8.8.8,8.8.4.4", False, True, 0, 0)], upstreams="")
    (finding,) = check_dns(points)
    assert "cannot be shown to resolve" in finding.problem and "resolvectl status" in finding.problem
    assert "--dns <your DNS server>" in finding.fix


def test_resolving_containers_are_no_finding():
    points = dns_points([("web", "public_fallback", "8.8.8.8", True, True, 1, 0),
                         ("api", "custom", "10.0.0.2", True, False, 1, 0)])
    assert check_dns(points) == []


def test_container_whose_probes_fail():
    points = dns_points([("api", "custom", "10.9.9.9", False, False, 1, 1)],
                        [("api", "db.internal", "10.9.9.9", "error", "connection refused")])
    (finding,) = check_dns(points)
    assert finding.id == "dns-not-resolving" and finding.subject == "api"
    assert "failed 1 of 1 DNS probes: db.internal @ 10.9.9.9: error (connection refused)" in finding.problem


# --- timers --------------------------------------------------------------------------------

HEALTHY = TimerView(name="backup.timer", manager="system", active_state="active", sub_state="waiting",
                    unit_file_state="enabled", fragment_path="/etc/systemd/system/backup.timer",
                    service="backup.service", service_load_state="loaded",
                    service_unit_file_state="static",
                    service_fragment_path="/etc/systemd/system/backup.service", persistent=True,
                    calendar=["*-*-* 02:30:00"], commands=["/usr/local/bin/run-backup"],
                    health={"state": "ok"})


def ids(findings):
    return [f.id for f in findings]


def test_a_healthy_timer_has_no_finding():
    assert lint(HEALTHY) == []


def test_missed_timer_with_its_last_result():
    view = replace(HEALTHY, health={"state": "missed", "missed_runs": 2, "overdue_s": 93600.0,
                                    "expected_at": 1795660200, "last_result": "exit-code",
                                    "last_exit_code": 1, "last_exit_kind": "exited",
                                    "last_success": 1795400000})
    (finding,) = lint(view)
    assert finding.id == "timer-missed" and finding.severity == "error"
    assert "backup.timer missed 2 runs of backup.service, overdue by 1d 2h" in finding.problem
    assert "last run: result exit-code, exit code 1" in finding.problem
    assert "systemctl start backup.service" in finding.fix and "--user" not in finding.fix
    not_persistent = lint(replace(view, persistent=False))
    assert "Persistent=true in backup.timer" in not_persistent[-1].fix


def test_failed_by_signal_and_start_limit():
    killed = lint(replace(HEALTHY, health={"state": "failed", "last_result": "signal",
                                           "last_exit_code": 9, "last_exit_kind": "killed"}))
    assert "failed: result signal, signal 9" in killed[0].problem
    refused = lint(replace(HEALTHY, health={"state": "failed", "last_result": "start-limit-hit",
                                            "last_exit_kind": "none"}))
    assert "failed: result start-limit-hit (nothing ran)" in refused[0].problem
    assert "journalctl -u backup.service -n 50 --no-pager" in refused[0].fix


def test_overrun_is_a_warning():
    (finding,) = lint(replace(HEALTHY, health={"state": "overrun"}))
    assert finding.id == "timer-overrun" and finding.severity == "warning"


def test_explicit_unit_and_masked_service():
    (missing,) = lint(replace(HEALTHY, service="nightly-job.service", service_load_state="not-found"))
    assert "activates nightly-job.service (its Unit=)" in missing.problem
    assert "create /etc/systemd/system/nightly-job.service" in missing.fix
    (masked,) = lint(replace(HEALTHY, service_load_state="masked"))
    assert masked.id == "timer-no-service" and masked.fix == "systemctl unmask backup.service"


def test_vendor_timer_fix_goes_to_etc():
    vendor = replace(HEALTHY, fragment_path="/usr/lib/systemd/system/backup.timer", persistent=False)
    (finding,) = lint(vendor)
    assert "/etc/systemd/system/backup.timer.d/persistent.conf" in finding.fix


def test_persistent_only_matters_for_calendar_timers():
    monotonic = replace(HEALTHY, persistent=False, calendar=[])
    assert lint(monotonic) == []
    assert ids(lint(replace(HEALTHY, persistent=False))) == ["timer-not-persistent"]


@pytest.mark.parametrize("name, service, commands, expected", [
    ("db-dump.timer", "db-dump.service", [], "db-dump.timer"),
    ("nightly.timer", "nightly.service", ["/usr/bin/pg_dump", "-Fc", "app"], "pg_dump"),
    ("nightly.timer", "nightly.service", ["/bin/sh", "-c", "restic backup /srv"], "restic"),
    ("logrotate.timer", "logrotate.service", ["/usr/sbin/logrotate", "/etc/logrotate.conf"], ""),
])
def test_backup_like(name, service, commands, expected):
    assert backup_like(replace(HEALTHY, name=name, service=service, commands=commands)) == expected


def test_enablement_cases():
    off = lint(replace(HEALTHY, active_state="inactive", sub_state="dead", unit_file_state="disabled"))
    assert [(f.id, f.severity) for f in off] == [("timer-inactive", "warning")]
    assert off[0].fix.startswith("systemctl enable --now backup.timer\n")
    stopped = lint(replace(HEALTHY, active_state="inactive", sub_state="dead"))
    assert [(f.id, f.severity) for f in stopped] == [("timer-inactive", "error")]
    static = lint(replace(HEALTHY, active_state="inactive", unit_file_state="static"))
    assert "  [Install]\n  WantedBy=timers.target" in static[0].fix
    running = lint(replace(HEALTHY, unit_file_state="disabled"))
    assert [(f.id, f.fix) for f in running] == [("timer-disabled", "systemctl enable backup.timer")]
    # a vendor timer the distribution ships disabled is not the admin's mistake
    assert lint(replace(HEALTHY, active_state="inactive", unit_file_state="disabled",
                        fragment_path="/usr/lib/systemd/system/backup.timer")) == []
    # an elapsed one-shot timer (OnBootSec= passed) is fine
    assert lint(replace(HEALTHY, sub_state="elapsed")) == []


def test_doctor_agrees_with_the_agents_watched_verdict():
    """doctor reports a timer that is not armed exactly when the agent says `stopped`."""
    # Skipped by its own Condition*= (fstrim.timer in a container): enabled, but the
    # agent says not watched (inactive), and so does doctor.
    skipped = replace(HEALTHY, active_state="inactive", sub_state="dead",
                      fragment_path="/lib/systemd/system/fstrim.timer",
                      health={"state": "inactive", "watched": False})
    assert lint(skipped) == []
    # A packaged backup the agent saw enabled, then disabled and stopped: still watched.
    remembered = replace(HEALTHY, active_state="inactive", sub_state="dead", unit_file_state="disabled",
                         fragment_path="/usr/lib/systemd/system/backup.timer",
                         health={"state": "stopped", "watched": True})
    assert [(f.id, f.severity) for f in lint(remembered)] == [("timer-inactive", "warning")]


def test_a_removed_timer_is_a_finding():
    removed = Point("systemd_timer", {"host": "h", "manager": "user", "timer": "backup.timer",
                                      "service": "backup.service"},
                    {"state": "removed", "healthy": False, "removed_since": 1795567680}, 0)
    ok = Point("systemd_timer", {"timer": "other.timer"}, {"state": "ok"}, 0)
    (finding,) = check_removed([removed, ok], "user")
    assert (finding.id, finding.severity, finding.subject) == ("timer-removed", "warning", "backup.timer")
    assert "systemctl --user daemon-reload" in finding.fix and "`ignore`" in finding.fix
    assert "2026-11-" in finding.problem


def test_service_with_install_section():
    (enabled,) = lint(replace(HEALTHY, service_unit_file_state="enabled"))
    assert enabled.id == "timer-service-installed" and enabled.subject == "backup.service"
    assert enabled.fix.startswith("systemctl disable backup.service\n")
    (disabled,) = lint(replace(HEALTHY, service_unit_file_state="disabled"))
    assert disabled.fix == ("delete the [Install] section from /etc/systemd/system/backup.service, "
                            "then: systemctl daemon-reload")


# --- rendering -----------------------------------------------------------------------------

FINDINGS = [Finding("timer-not-persistent", "warning", "backup.timer", "p1", "w1", "line 1\n  line 2"),
            Finding("access-dbus", "error", "unix:path=/x", "p2", "w2", "f2"),
            Finding("note", "info", "x", "p3", "w3", "f3")]


def test_json_is_a_list_of_findings_errors_first():
    data = json.loads(render_json(FINDINGS))
    assert [f["id"] for f in data] == ["access-dbus", "timer-not-persistent", "note"]
    assert data[0] == {"id": "access-dbus", "severity": "error", "subject": "unix:path=/x",
                       "problem": "p2", "why": "w2", "fix": "f2"}
    assert json.loads(render_json([])) == []


def test_text_blocks_and_verdict():
    text = render_text(Report(FINDINGS, ["timers: 3"], ["Docker: off"]))
    assert text.startswith("ERROR access-dbus: unix:path=/x\n  problem: p2\n  why:     w2\n  fix:     f2\n")
    assert "WARNING timer-not-persistent: backup.timer\n" in text
    assert "  fix:     line 1\n             line 2\n" in text
    assert "checked: timers: 3\nskipped: Docker: off\n\nneeds attention: 1 error, 1 warning" in text
    assert render_text(Report([FINDINGS[2]], ["timers: 3"])).endswith("\n\nno problems found")


def test_exit_code_counts_errors_and_warnings_not_info():
    assert exit_code([]) == 0 and exit_code([FINDINGS[2]]) == 0
    assert exit_code(FINDINGS[:1]) == 1 and exit_code(FINDINGS[1:2]) == 1
