"""Host checks: the memory cgroup controller, and the agent's access to what it reads
(the D-Bus socket, the Docker API, the cgroup tree, /proc and the host's PID namespace),
each with the docker-compose lines that grant it when the agent runs in a container.

Every function takes the paths it reads (a proc root, a cgroup root) so tests can point
them at fixture trees.
"""

import os

from . import Finding

# The kernel's initial PID namespace always has this inode (include/linux/proc_ns.h,
# PROC_PID_INIT_INO, Linux >= 3.8): an agent in it sees every process of the machine.
PROC_PID_INIT_INO = 4026531836
HOST_INITS = ("systemd", "init")

CMDLINE_FIX = """Raspberry Pi OS (and other Pi kernels) boot with the memory controller off. Add
  cgroup_enable=memory cgroup_memory=1
to the end of the single line in /boot/firmware/cmdline.txt (Raspberry Pi OS bookworm
and later) or /boot/cmdline.txt (older releases, HypriotOS), for example:

  sudo sed -i '1 s/$/ cgroup_enable=memory cgroup_memory=1/' /boot/firmware/cmdline.txt

then reboot: sudo reboot
Check afterwards: grep memory /proc/cgroups  (the last column, enabled, must be 1)."""

COMPOSE_DBUS = """services:
  tick-exporter:
    volumes:
      - {dir}:{dir}:ro"""

COMPOSE_CGROUP = """services:
  tick-exporter:
    volumes:
      - /sys/fs/cgroup:/sys/fs/cgroup:ro"""

COMPOSE_DOCKER = """services:
  tick-exporter:
    environment:
      TICK_EXPORTER_CONTAINERS_DOCKER_HOST: tcp://docker-socket-proxy:2375
  docker-socket-proxy:
    image: tecnativa/docker-socket-proxy
    environment:
      CONTAINERS: 1      # container list and inspect (read only); events are on by default
    volumes:
      - /var/run/docker.sock:/var/run/docker.sock:ro"""

COMPOSE_PID = """services:
  tick-exporter:
    pid: host
    cap_add:
      - SYS_ADMIN     # setns(2) into a container's network namespace for DNS probes
      - SYS_PTRACE    # open /proc/<pid>/ns/* of processes the agent does not own"""


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.read()


def check_memory_cgroup(proc_root: str, cgroup_root: str) -> list[Finding]:
    """/proc/cgroups ("subsys_name hierarchy num_cgroups enabled"): the memory line
    with enabled 0 (cgroup_disable=memory, Raspberry Pi OS kernels), or no memory line
    at all (a kernel built without CONFIG_MEMCG). On cgroup v2, also the root's
    cgroup.controllers. An unreadable /proc/cgroups is an access finding."""
    path = os.path.join(proc_root, "cgroups")
    try:
        text = _read(path)
    except OSError as err:
        return [Finding(
            "access-proc", "error", proc_root,
            f"{path} cannot be read: {err.strerror or err}",
            "without the host's /proc the agent cannot tell whether the memory cgroup is on, "
            "nor find a container's cgroup or network namespace from its PID",
            f"point containers.proc_root (TICK_EXPORTER_CONTAINERS_PROC_ROOT) at the host's "
            f"/proc; in a container that is /proc itself with:\n{COMPOSE_PID}")]
    why = ("container memory cannot be measured (the agent reports the collector as failed, "
           "never zeros) and `docker run --memory` limits are not enforced: Docker warns "
           "\"Your kernel does not support memory limit capabilities\"")
    memory = [line.split() for line in text.splitlines() if line.split()[:1] == ["memory"]]
    if not memory:
        return [Finding("memory-cgroup-disabled", "error", path,
                        f"{path} has no memory line: this kernel has no memory cgroup controller "
                        "(built without CONFIG_MEMCG)", why,
                        "install a kernel built with CONFIG_MEMCG=y (every distribution kernel "
                        "is), then reboot")]
    fields = memory[0]
    if len(fields) == 4 and fields[3] == "0":
        return [Finding("memory-cgroup-disabled", "error", path,
                        f"the memory cgroup controller is disabled in the kernel: {path} says "
                        f"\"{' '.join(fields)}\" (enabled = 0)", why, CMDLINE_FIX)]
    controllers = os.path.join(cgroup_root, "cgroup.controllers")
    if not os.path.isdir(os.path.join(cgroup_root, "memory")) and os.path.exists(controllers):
        try:
            enabled = _read(controllers).split()
        except OSError:
            return []
        if "memory" not in enabled:
            return [Finding("memory-cgroup-disabled", "error", controllers,
                            f"the memory controller is not available in the cgroup v2 tree "
                            f"({controllers}: {' '.join(enabled) or 'none'})", why, CMDLINE_FIX)]
    return []


def check_cgroup_tree(cgroup_root: str) -> list[Finding]:
    """The cgroup tree the memory collector reads: v1 (a memory/ hierarchy) or v2
    (cgroup.controllers at the root)."""
    if os.path.isdir(os.path.join(cgroup_root, "memory")) or os.path.exists(
            os.path.join(cgroup_root, "cgroup.controllers")):
        return []
    seen = "does not exist" if not os.path.exists(cgroup_root) else \
        "is not a cgroup tree (no memory/ hierarchy, no cgroup.controllers)"
    return [Finding(
        "access-cgroup", "error", cgroup_root,
        f"the cgroup tree {cgroup_root} {seen}",
        "container memory is read from the host's cgroup files; without them the "
        "containers collector fails every sample",
        f"mount the host's cgroup tree read-only into the agent's container:\n{COMPOSE_CGROUP}\n"
        f"(or set containers.cgroup_root / TICK_EXPORTER_CONTAINERS_CGROUP_ROOT to where it is "
        f"mounted)")]


def dbus_socket_path(address: str) -> str:
    """The socket path of a "unix:path=..." D-Bus address; "" for other transports."""
    for part in address.split(";")[0].removeprefix("unix:").split(","):
        if part.startswith("path="):
            return part[len("path="):]
    return ""


SYSTEM_BUS_SOCKETS = ("/run/dbus/system_bus_socket", "/var/run/dbus/system_bus_socket")


def dbus_access_finding(address: str, error: str, hint: str = "") -> Finding:
    """The agent could not talk to systemd at `address` (error: the reason; hint: what
    exporter.sources.bus_hint says about this host, e.g. PID 1 is not systemd)."""
    path = dbus_socket_path(address)
    directory = os.path.dirname(path) if path else "/run/dbus"
    system = path in ("", *SYSTEM_BUS_SOCKETS)
    host = ("On the host: is the bus running? systemctl status dbus.socket dbus.service\n"
            if system and not hint else "")
    # The default needs no setting: only a socket mounted elsewhere does.
    setting = ("" if path in SYSTEM_BUS_SOCKETS else
               f"\nand set timers.bus (TICK_EXPORTER_TIMERS_BUS) to unix:path={path or SYSTEM_BUS_SOCKETS[0]}")
    return Finding(
        "access-dbus", "error", address,
        f"cannot talk to systemd over D-Bus at {address}: {error}",
        "every timer is read from systemd over D-Bus: without it nothing says whether last "
        "night's backup ran",
        (f"{hint[0].upper()}{hint[1:]}.\n" if hint else "")
        + f"{host}In a container, mount the bus socket's directory read-only:\n"
        f"{COMPOSE_DBUS.format(dir=directory)}{setting}")


def check_dbus_socket(address: str, hint: str = "") -> list[Finding]:
    """A unix-socket D-Bus address whose socket does not exist (or is not a socket)."""
    path = dbus_socket_path(address)
    if not path or os.path.exists(path) and not os.path.isdir(path):
        return []
    return [dbus_access_finding(address, f"{path} does not exist", hint)]


def docker_access_finding(docker_host: str, error: str, wanted: bool) -> Finding:
    """The Docker API at `docker_host` did not answer. Only an error when the config
    enables the containers or dns collector."""
    socket = docker_host.removeprefix("unix://") if docker_host.startswith("unix://") else ""
    host = (f"On the host: is Docker running? systemctl status docker\nThe agent's user "
            f"needs access to {socket} (root, or the docker group).\n" if socket else "")
    return Finding(
        "access-docker", "error" if wanted else "info", docker_host,
        f"cannot reach the Docker API at {docker_host}: {error}",
        "containers and their DNS are read from the Docker API: without it no container "
        "memory, OOM kills or DNS health is reported",
        f"{host}In a container, reach Docker through a socket proxy that allows only "
        f"container reads and events:\n{COMPOSE_DOCKER}")


def _pid_namespace_inode(proc_root: str) -> int | None:
    """The inode of the agent's own PID namespace: readlink {proc}/self/ns/pid
    ("pid:[4026531836]"); None when it cannot be read."""
    try:
        link = os.readlink(os.path.join(proc_root, "self", "ns", "pid"))
    except OSError:
        return None
    digits = link.partition("[")[2].rstrip("]")
    return int(digits) if digits.isdigit() else None


def _process_of(proc_root: str, pid: int, container_id: str) -> bool:
    """PID `pid` is visible and is the container's: its /proc/<pid>/cgroup names the
    container id (true for both cgroup drivers, any --cgroup-parent, v1 and v2)."""
    try:
        return container_id in _read(os.path.join(proc_root, str(pid), "cgroup"))
    except OSError:
        return False


def check_pid_namespace(proc_root: str, containers: list) -> list[Finding]:
    """Does the agent see the host's processes? Docker reports each container's main
    process (State.Pid) as a PID of the host's namespace; the agent opens
    /proc/<pid>/cgroup and /proc/<pid>/ns/net by it.

    With running containers the answer is direct: any one of them visible under its
    Docker PID (and its cgroup naming its id) means yes, none means no. Without
    containers: the agent is in the kernel's initial PID namespace (inode 4026531836),
    or else PID 1 is the host's init (a host that is itself a container, LXC); when
    neither holds it is most likely in a container without `pid: host`."""
    running = [c for c in containers if getattr(c, "pid", 0)]
    if running:
        if any(_process_of(proc_root, c.pid, c.id) for c in running):
            return []
        shown = ", ".join(f"{c.name} (PID {c.pid})" for c in running[:3]) + (
            f" and {len(running) - 3} more" if len(running) > 3 else "")
        return [_pid_finding("error", f"the agent does not see the host's processes: Docker "
                             f"reports {shown}, but {proc_root}/<pid> is missing or is another "
                             f"process")]
    inode = _pid_namespace_inode(proc_root)
    if inode is None or inode == PROC_PID_INIT_INO:
        return []
    try:
        init = _read(os.path.join(proc_root, "1", "comm")).strip()
    except OSError:
        init = ""
    if init in HOST_INITS:
        return []
    return [_pid_finding("warning", f"the agent runs in its own PID namespace (pid:[{inode}], "
                         f"not the host's) and PID 1 is {init or 'unknown'!r}, not the host's "
                         f"init: it most likely runs in a container without pid: host")]


def _pid_finding(severity: str, problem: str) -> Finding:
    return Finding(
        "access-pid-namespace", severity, "host PID namespace", problem,
        "the agent finds a container's memory cgroup from its main process and asks its DNS "
        "servers from inside its network namespace, both by the PID Docker reports, which "
        "exists only in the host's PID namespace. Without it memory falls back to guessing "
        "the cgroup layout and DNS probes are sent from the agent's own network instead "
        "(Docker's embedded DNS, 127.0.0.11, cannot be probed at all)",
        f"run the agent in the host's PID namespace, with the capabilities to enter other "
        f"containers' namespaces:\n{COMPOSE_PID}\n(without DNS probes, dns.queries = [], "
        f"pid: host alone is enough)")
