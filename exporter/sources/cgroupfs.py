"""Container memory straight from cgroupfs, v1 and v2, both Docker cgroup drivers.

Reading five small files costs ~0.1 ms per container; Docker's stats API costs over a
second per container on Docker < 20.10 (HypriotOS ships 19.03), so numbers never come
from it. File formats: the kernel's Documentation/admin-guide/cgroup-v1/memory.rst and
cgroup-v2.rst.
"""

import os
from dataclasses import dataclass


class MemoryCgroupUnavailable(Exception):
    """The kernel has no usable memory controller: report that, never zeros."""


@dataclass(frozen=True)
class MemoryReading:
    version: str            # "v1" | "v2"
    usage: int
    limit: int              # 0 = none
    rss: int
    cache: int
    inactive_file: int
    swap: int
    oom_kills: int | None   # the kernel's counter for this cgroup (None: too old a kernel)
    failcnt: int | None     # v1 only


def _read(path: str) -> str:
    # os.read rather than open(): no TextIOWrapper per file, a third of the cost of the
    # small files read here (benchmarks/memory.py). Read until EOF: seq_file hands out
    # a page at a time.
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks).decode("ascii")
    finally:
        os.close(fd)


def _flat_keyed(path: str) -> dict[str, int]:
    """memory.stat, memory.events, memory.oom_control: "key value" lines."""
    values = {}
    for line in _read(path).splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            values[key] = int(value)
    return values


class MemoryCgroups:
    def __init__(self, root: str = "/sys/fs/cgroup", proc: str = "/proc"):
        self.root, self.proc = root, proc
        self.version = "v1" if os.path.isdir(os.path.join(root, "memory")) else "v2"
        self._unlimited: int | None = None

    def check(self) -> None:
        """Raise MemoryCgroupUnavailable with the reason and the fix when the memory
        controller is off (Raspberry Pi OS kernels boot with cgroup_disable=memory)."""
        fix = ("add cgroup_enable=memory cgroup_memory=1 to /boot/cmdline.txt "
               "(/boot/firmware/cmdline.txt on newer Raspberry Pi OS) and reboot")
        # /proc/cgroups: "subsys_name hierarchy num_cgroups enabled", on v1 and v2 alike.
        for line in _read(os.path.join(self.proc, "cgroups")).splitlines():
            fields = line.split()
            if len(fields) == 4 and fields[0] == "memory" and fields[3] == "0":
                raise MemoryCgroupUnavailable(
                    f"the memory cgroup controller is disabled in the kernel ({self.proc}/cgroups "
                    f"says enabled=0): container memory cannot be measured; {fix}")
        if self.version == "v2":
            try:
                controllers = _read(os.path.join(self.root, "cgroup.controllers")).split()
            except OSError as err:
                raise MemoryCgroupUnavailable(f"no memory cgroup at {self.root}: {err}") from err
            if "memory" not in controllers:
                raise MemoryCgroupUnavailable(
                    f"the memory controller is not enabled in {self.root} (controllers: "
                    f"{' '.join(controllers) or 'none'}): container memory cannot be measured; {fix}")

    def container_dir(self, container_id: str, cgroup_parent: str = "", pid: int = 0) -> str | None:
        """The container's memory cgroup; None when it is gone.

        First from its main process (/proc/<pid>/cgroup, with the host's PID namespace):
        right whatever the driver and parent, including a daemon-wide --cgroup-parent
        that `docker inspect` does not show. Then the drivers' layouts: cgroupfs
        (<parent or docker>/<id>) and systemd (system.slice/docker-<id>.scope).
        """
        base = os.path.join(self.root, "memory") if self.version == "v1" else self.root
        candidates = [self._from_pid(base, pid)] if pid else []
        parent = cgroup_parent.strip("/") or "docker"
        candidates += [os.path.join(base, parent, container_id),
                       os.path.join(base, parent if parent.endswith(".slice") else "system.slice",
                                    f"docker-{container_id}.scope")]
        return next((path for path in candidates if path and os.path.isdir(path)), None)

    def _from_pid(self, base: str, pid: int) -> str | None:
        """proc(7) /proc/<pid>/cgroup: "id:controllers:path" (v1: the memory line;
        v2: the single "0::path" line)."""
        try:
            lines = _read(os.path.join(self.proc, str(pid), "cgroup")).splitlines()
        except OSError:  # not in our PID namespace, or exited
            return None
        for line in lines:
            _id, controllers, path = line.split(":", 2)
            if (self.version == "v1" and "memory" in controllers.split(",")) or (
                    self.version == "v2" and _id == "0" and not controllers):
                # In a private cgroup namespace (Docker's default on v2, for an agent in
                # a container) paths outside it read "/../..": useless, use the layouts.
                if path.startswith("/.."):
                    return None
                return os.path.join(base, path.lstrip("/"))
        return None

    def read(self, path: str) -> MemoryReading:
        """All numbers of one cgroup; OSError when it vanished mid-read (the caller drops
        the container rather than emit half a point)."""
        return self._read_v1(path) if self.version == "v1" else self._read_v2(path)

    def _unlimited_v1(self) -> int:
        # v1 reports "no limit" as PAGE_COUNTER_MAX pages: 9223372036854771712 on 64-bit
        # kernels, 2147479552 on 32-bit ones (a Raspberry Pi). The root cgroup is always
        # unlimited, so its value is the marker, whatever the kernel: read once.
        if self._unlimited is None:
            self._unlimited = int(_read(os.path.join(self.root, "memory", "memory.limit_in_bytes")))
        return self._unlimited

    def _read_v1(self, path: str) -> MemoryReading:
        stat = _flat_keyed(os.path.join(path, "memory.stat"))
        limit = int(_read(os.path.join(path, "memory.limit_in_bytes")))
        oom = _flat_keyed(os.path.join(path, "memory.oom_control")).get("oom_kill")  # >= 4.13
        return MemoryReading(
            "v1", int(_read(os.path.join(path, "memory.usage_in_bytes"))),
            0 if limit >= self._unlimited_v1() else limit,
            stat.get("total_rss", 0), stat.get("total_cache", 0),
            stat.get("total_inactive_file", 0), stat.get("total_swap", 0),  # swap accounting off: absent
            oom, int(_read(os.path.join(path, "memory.failcnt"))))

    def _read_v2(self, path: str) -> MemoryReading:
        stat = _flat_keyed(os.path.join(path, "memory.stat"))
        limit = _read(os.path.join(path, "memory.max")).strip()
        try:
            swap = int(_read(os.path.join(path, "memory.swap.current")))
        except FileNotFoundError:  # no swap accounting (CONFIG_MEMCG_SWAP off)
            swap = 0
        events = _flat_keyed(os.path.join(path, "memory.events"))
        return MemoryReading(
            "v2", int(_read(os.path.join(path, "memory.current"))),
            0 if limit == "max" else int(limit),
            stat.get("anon", 0), stat.get("file", 0), stat.get("inactive_file", 0), swap,
            events.get("oom_kill"), None)
