"""The arm/v7 (armhf, Raspberry Pi / HypriotOS) image, under QEMU user emulation.

* The exporter image is built for arm/v7 through the same Dockerfile as the compose file
  uses, FROM a debootstrapped Debian bookworm armhf root (a 32-bit time_t), with pip
  reading armv7-compatible wheels and dbus-fast's sdist from the build context.
* Inside it, every unit test (those not `live`, see conftest.py) passes, run against the
  package installed in the image.
* `tick-exporter once` in the arm/v7 image and in the amd64 image built the same way,
  against the same real systemd user manager and Docker engine, give the same
  measurements, tags and fields; values are equal too except where they measure time
  or a changing memory level.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests import images
from tests.lineproto import parse

ROOT = Path(__file__).resolve().parent.parent
ARM_IMAGE = "tick-exporter:armhf"


@pytest.fixture(scope="module")
def arm(docker_engine, tmp_path_factory):
    base = images.base_image(docker_engine, "local/debian-armhf:bookworm", arch="armhf")
    wheel_dir = tmp_path_factory.mktemp("arm-wheels")
    images.arm_wheels(wheel_dir)
    images.exporter_image(docker_engine, ARM_IMAGE, base, wheel_dir)
    libs = tmp_path_factory.mktemp("arm-test-libs")
    images.arm_test_libs(docker_engine, libs)
    return libs


def in_image(engine, image, *args, docker_args=(), timeout=1800):
    return engine.docker("run", "--rm", *docker_args, image, *args, check=False, timeout=timeout)


def test_the_image_is_32_bit_arm_with_a_32_bit_time_t(docker_engine, arm):
    probe = ("import platform, struct, time, datetime\n"
             "print(platform.machine(), struct.calcsize('P') * 8)\n"
             "try:\n"
             "    datetime.datetime.fromtimestamp(2**31, datetime.timezone.utc)\n"
             "    print('time_t: 64')\n"
             "except OverflowError:\n"
             "    print('time_t: 32')\n")
    done = in_image(docker_engine, ARM_IMAGE, "-c", probe,
                    docker_args=("--entrypoint", "/opt/tick-exporter/bin/python"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["armv7l 32", "time_t: 32"]
    version = in_image(docker_engine, ARM_IMAGE, "--version")
    assert version.stdout.startswith("tick-exporter ")


def unit_test_files() -> tuple[list[str], int]:
    """The test files with unit tests, and how many there are, as collected here."""
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "not live",
                           "-p", "no:cacheprovider"], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    ids = [line for line in done.stdout.splitlines() if "::" in line]
    return sorted({i.split("::")[0] for i in ids}), len(ids)


def test_unit_tests_pass_inside_the_arm_image(docker_engine, arm):
    files, expected = unit_test_files()
    assert expected > 300
    done = in_image(
        docker_engine, ARM_IMAGE,
        # the package installed in the image, not the checkout (--import-mode=append)
        "-m", "pytest", "-p", "no:cacheprovider", "--import-mode=append", "--rootdir", "/work",
        "-c", "/work/pyproject.toml", "-m", "not live", "-q", "-o", "addopts=-ra --strict-markers",
        *[f"/work/{f}" for f in files],
        docker_args=("--entrypoint", "/opt/tick-exporter/bin/python", "-w", "/tmp",
                     "-v", f"{ROOT}:/work:ro", "-v", f"{arm}:/testlibs:ro",
                     "-e", "PYTHONPATH=/testlibs", "-e", "PYTHONDONTWRITEBYTECODE=1",
                     "-e", "HYPOTHESIS_STORAGE_DIRECTORY=/tmp/hypothesis"))
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert re.fullmatch(rf"{expected} passed(, \d+ deselected)? in .*", summary.strip("= ")), summary


# ---------------------------------------------------------------------------
# `tick-exporter once`: arm/v7 and amd64, same sources

SCENARIO = "armcmp"
# Fields whose value measures time passing or a memory level that moves between two
# samples taken seconds apart; their names and types must still be identical.
VOLATILE = {
    "systemd_timer": {"since_last_s", "until_next_s"},
    "container_memory": {"usage_bytes", "working_set_bytes", "rss_bytes", "cache_bytes",
                         "swap_bytes", "usage_percent", "inactive_file_bytes", "active_file_bytes",
                         "mapped_file_bytes", "kernel_bytes", "anon_bytes", "file_bytes",
                         "max_usage_bytes", "peak_bytes"},
    "container_dns_probe": {"latency_ms"},
    "container_dns": {"latency_ms", "max_latency_ms"},
    "host_memory": "*",
    "exporter": {"duration_s", "rss_bytes", "cpu_s", "points"},
}


def once_in(engine, image, bus_socket, extra_env):
    env = {"TICK_EXPORTER_AGENT_HOSTNAME": "armcmp", "TICK_EXPORTER_AGENT_STATE_PATH": "/tmp/state.json",
           "TICK_EXPORTER_TIMERS_INCLUDE": f"{SCENARIO}-*",
           "TICK_EXPORTER_CONTAINERS_ENABLED": "true",
           "TICK_EXPORTER_CONTAINERS_DOCKER_HOST": "unix:///var/run/docker.sock",
           "TICK_EXPORTER_CONTAINERS_CGROUP_ROOT": "/host/sys/fs/cgroup",
           "TICK_EXPORTER_DNS_ENABLED": "true", "TICK_EXPORTER_DNS_QUERIES": "ok.tick.test",
           "TICK_EXPORTER_DNS_SKIP_SERVERS": "8.8.8.8,8.8.4.4",
           # One deadline for all of a sample's probes (default 2 s): under qemu's
           # emulation on a loaded CI machine a probe once answered after it ("timeout").
           "TICK_EXPORTER_DNS_TIMEOUT": "10s",
           "TICK_EXPORTER_DNS_HOST_RESOLV_CONF": "/host/etc/resolv.conf",
           "TICK_EXPORTER_HOST_MEMORY_ENABLED": "true",
           # The offline test images have no journalctl (tests/images.py).
           "TICK_EXPORTER_TIMERS_JOURNAL": "off", **extra_env}
    # The privileges docker-compose.yml gives the agent, and the same mounts.
    args = ["--pid", "host", "--cap-drop", "ALL", "--cap-add", "SYS_ADMIN", "--cap-add", "SYS_PTRACE",
            "-v", f"{bus_socket}:/run/dbus/system_bus_socket:ro",
            "-v", f"{engine.socket_path}:/var/run/docker.sock:ro",
            "-v", "/sys/fs/cgroup:/host/sys/fs/cgroup:ro",
            "-v", f"{engine.resolv_conf_path}:/host/etc/resolv.conf:ro"]
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    done = in_image(engine, image, "once", docker_args=tuple(args), timeout=600)
    assert done.returncode == 0, done.stderr
    # The docker CLI's own notice about this engine (it runs without IP forwarding).
    log = "".join(line for line in done.stderr.splitlines(keepends=True)
                  if not line.startswith("WARNING: IPv4 forwarding is disabled"))
    return parse(done.stdout), log


def comparable(points):
    """{(measurement, tags): fields} for the scenario's own objects and the host-wide
    measurements; other tests' containers (and the two agents' own) are left out."""
    out = {}
    for point in points:
        container = point.tags.get("container")
        if container is not None and not container.startswith(f"{SCENARIO}-"):
            continue
        out[(point.measurement, tuple(sorted(point.tags.items())))] = point.fields
    return out


def test_once_is_the_same_on_arm_and_amd64(docker_engine, user_manager, dnsmasq, arm,
                                           amd64_exporter_image):
    for name, command in (("ok", "/bin/true"), ("fail", "/bin/sh -c 'exit 3'"), ("idle", "/bin/true")):
        user_manager.write_unit(f"{SCENARIO}-{name}.service", f"[Service]\nType=oneshot\nExecStart={command}\n")
        user_manager.write_unit(f"{SCENARIO}-{name}.timer", "[Timer]\nOnCalendar=*-*-* 03:00:00\n")
    user_manager.daemon_reload()
    user_manager.systemctl("start", *(f"{SCENARIO}-{n}.timer" for n in ("ok", "fail", "idle")))
    user_manager.systemctl("start", f"{SCENARIO}-ok.service")
    user_manager.systemctl("start", f"{SCENARIO}-fail.service", check=False)
    containers = [
        docker_engine.run("--name", f"{SCENARIO}-pinned", "-m", "48m", "--dns", dnsmasq.address,
                          docker_engine.image(), "sleep", "600"),
        docker_engine.run("--name", f"{SCENARIO}-fallback", docker_engine.image(), "sleep", "600"),
    ]
    bus = user_manager.bus_address.removeprefix("unix:path=")
    try:
        # Two samples taken a minute apart on a busy test machine: a DNS probe may time
        # out in one and not the other (seen with other engines running beside this
        # one). That is the network, not the architecture: sample both again, up to
        # three times, until the two views have the same series.
        for _attempt in range(3):
            arm_points, arm_log = once_in(docker_engine, ARM_IMAGE, bus, {})
            x86_points, x86_log = once_in(docker_engine, amd64_exporter_image, bus, {})
            arm_view, x86_view = comparable(arm_points), comparable(x86_points)
            if sorted(arm_view) == sorted(x86_view):
                break
    finally:
        for cid in containers:
            docker_engine.remove(cid)
        user_manager.systemctl("stop", *(f"{SCENARIO}-{n}.timer" for n in ("ok", "fail", "idle")))
    assert arm_log == x86_log == ""
    assert sorted(arm_view) == sorted(x86_view)
    measurements = {m for m, _ in arm_view}
    assert measurements >= {"systemd_timer", "systemd_timer_run", "container_memory", "container_dns",
                            "container_dns_probe", "host_dns", "host_memory", "exporter"}
    for key, arm_fields in arm_view.items():
        x86_fields = x86_view[key]
        assert sorted(arm_fields) == sorted(x86_fields), key
        volatile = VOLATILE.get(key[0], set())
        for name, value in arm_fields.items():
            assert type(value) is type(x86_fields[name]), (key, name)
            if volatile != "*" and name not in volatile:
                assert value == x86_fields[name], (key, name, value, x86_fields[name])
    # and the scenario's verdicts are what they should be, on both
    states = {dict(k[1])["timer"]: f["state"] for k, f in arm_view.items() if k[0] == "systemd_timer"}
    assert states == {f"{SCENARIO}-ok.timer": "ok", f"{SCENARIO}-fail.timer": "failed",
                      f"{SCENARIO}-idle.timer": "ok"}
    success = {dict(k[1])["component"]: f.get("success") for k, f in arm_view.items() if k[0] == "exporter"}
    assert all(v is not False for v in success.values()), success
    # the arm agent entered the container's network namespace (setns under QEMU) to ask
    probes = [dict(k[1]) for k in arm_view if k[0] == "container_dns_probe"]
    assert {p["container"]: p["probe_from"] for p in probes} == {f"{SCENARIO}-pinned": "container"}
