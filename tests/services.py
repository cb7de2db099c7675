"""Real services for the test suite: a systemd user manager, InfluxDB 1.x, VictoriaMetrics and a Docker engine.

Every class here starts the real Debian binary on loopback only, with its state
in a private temporary directory and on free ports, so test runs never collide
with each other or with anything installed system-wide.  Use them as context
managers::

    with InfluxDB1() as influx:
        influx.create_database("db")
        ...

Each class raises RuntimeError (with the tail of the service's own log) when
the service does not come up within START_TIMEOUT seconds.  Cleanup is layered:
``stop()``/``close()`` in the normal path, an ``atexit`` hook as a safety net,
the direct child is started with a parent-death signal (``setpriv
--pdeathsig KILL``) so it dies even if pytest itself is killed, and what such
a killed run leaves behind (a user manager's dbus-daemon and services, temp
dirs) is removed by the next run (``_reap_stale``).  Temp dirs and cgroups are
named ``tick-tests-<pid of the owning Python process>-...``.

Nothing here uses anything but the standard library.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import http.client
import io
import ipaddress
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
TMP_PREFIX = "tick-tests-"

INFLUXD = "/usr/bin/influxd"
VICTORIA_METRICS = "/usr/bin/victoria-metrics"

# Loopback only, and never through a proxy from the environment.
# The helpers talk to servers the tests made, over TLS too (certificates of a test CA):
# they do not verify; verifying is what the agent under test must do.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                      urllib.request.HTTPSHandler(context=ssl._create_unverified_context()))


# ---------------------------------------------------------------------------
# small helpers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports on 127.0.0.1 (all sockets held open while picking)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    interval: float = 0.1,
    message: str | Callable[[], str] = "condition",
) -> Any:
    """Poll ``predicate`` until it returns something truthy and return that.

    Raises TimeoutError after ``timeout`` seconds; ``message`` (or its result,
    if callable) says what was being waited for.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {text}")
        time.sleep(interval)


def http_request(
    method: str,
    url: str,
    *,
    params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
    data: bytes | str | None = None,
    headers: Mapping[str, str] | None = None,
    auth: tuple[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    """One HTTP request with urllib; returns (status, body) and never raises on HTTP status."""
    if params:
        url = url + ("&" if "?" in url else "?") + urllib.parse.urlencode(params, doseq=True)
    if isinstance(data, str):
        data = data.encode()
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class HTTPStatusError(RuntimeError):
    """A helper call got an unexpected HTTP status."""

    def __init__(self, what: str, status: int, body: bytes):
        self.status = status
        self.body = body
        super().__init__(f"{what}: HTTP {status}: {body.decode(errors='replace')[:2000]}")


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return f"(no log: {e})"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else "(log is empty)"


def _lines(lines: str | bytes | Iterable[str]) -> bytes:
    if isinstance(lines, bytes):
        return lines
    if isinstance(lines, str):
        return lines.encode()
    return "\n".join(lines).encode()


# ---------------------------------------------------------------------------
# process handling shared by all services

_LIVE: set["_Service"] = set()


def _cleanup_all_at_exit() -> None:
    for svc in list(_LIVE):
        try:
            svc._emergency_cleanup()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass


atexit.register(_cleanup_all_at_exit)


def _spawn(argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """Start ``argv`` in its own session (so its process group can be killed),
    output appended to ``log_path``, dying with this Python process."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            ["setpriv", "--pdeathsig", "KILL", "--", *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=True,
            close_fds=True,
        )


def _kill_group(proc: subprocess.Popen | None, sig: int = signal.SIGKILL) -> None:
    if proc is None:
        return
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stop_process(proc: subprocess.Popen | None, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the process group, SIGKILL it if it is still alive after ``timeout``."""
    if proc is None:
        return
    if proc.poll() is None:
        _kill_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    # Whatever else is left in the group goes too.
    _kill_group(proc, signal.SIGKILL)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


class _Service:
    """Common lifecycle: a temp dir (``root``) that outlives start/stop cycles."""

    name = "service"

    def __init__(self, start_timeout: float = START_TIMEOUT):
        self.start_timeout = start_timeout
        _reap_stale()
        self.root = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-{self.name}-"))
        self.log_path = self.root / f"{self.name}.log"
        self.proc: subprocess.Popen | None = None
        self.start_seconds: float | None = None  # how long the last start() took
        _LIVE.add(self)

    # context manager
    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return _log_tail(self.log_path, lines)

    def _wait_ready(self, ready: Callable[[], bool], started: float) -> None:
        deadline = started + self.start_timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                code = self.proc.returncode
                self._kill()
                raise RuntimeError(
                    f"{self.name} exited with status {code} while starting; log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                if ready():
                    self.start_seconds = time.monotonic() - started
                    return
            except (OSError, subprocess.SubprocessError):
                pass
            if time.monotonic() >= deadline:
                self._kill()
                raise RuntimeError(
                    f"{self.name} did not come up within {self.start_timeout:.0f}s; log {self.log_path}:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.05)

    def _kill(self) -> None:
        _kill_group(self.proc)
        if self.proc is not None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass

    def start(self):  # pragma: no cover - overridden
        raise NotImplementedError

    def stop(self) -> None:
        _stop_process(self.proc)
        self.proc = None

    def close(self) -> None:
        """Stop the service and remove all of its state."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            _LIVE.discard(self)

    def _emergency_cleanup(self) -> None:
        self._kill()
        shutil.rmtree(self.root, ignore_errors=True)
        _LIVE.discard(self)


# ---------------------------------------------------------------------------
# InfluxDB 1.x


class InfluxDB1(_Service):
    """Debian's influxd 1.6.7 on 127.0.0.1:<port>, data in a temp dir.

    ``stop()`` and ``start()`` may be repeated: the data dir and both ports are
    kept, so a test can take the server away (an outage) and bring it back with
    its data.  ``close()`` (or leaving the ``with`` block) removes everything.

    Note: influxd 1.6 has no ``/api/v2/write`` (that arrived in 1.8); it answers
    404 there.  Writes go to ``/write?db=...``.

    With ``auth_enabled=True`` an admin user (``admin_user``/``admin_password``)
    is created on first start (unless ``create_admin=False``: no user at all, as
    a fresh deployment), and the helpers below authenticate as that user
    unless given ``auth=``.
    """

    name = "influxd"

    def __init__(
        self,
        *,
        auth_enabled: bool = False,
        admin_user: str = "admin",
        admin_password: str = "admin-secret",
        tls: tuple[str, str] | None = None,
        start_timeout: float = START_TIMEOUT,
        create_admin: bool = True,
    ):
        super().__init__(start_timeout)
        self.auth_enabled = auth_enabled
        self.tls = tls  # (certificate file, key file): HTTPS only
        self.admin_user = admin_user
        self.admin_password = admin_password
        self.port, self.rpc_port = free_ports(2)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.config_path = self.root / "influxdb.conf"
        self._admin_created = not create_admin  # False: a fresh server without any user
        self._write_config()

    @property
    def credentials(self) -> tuple[str, str] | None:
        """What the helpers authenticate with by default."""
        return (self.admin_user, self.admin_password) if self.auth_enabled else None

    def _write_config(self) -> None:
        r = self.root
        # Debian's build renamed upstream's "reporting-disabled" to
        # "reporting-enabled" (default false); unknown keys are ignored.
        self.config_path.write_text(
            f"""\
reporting-enabled = false
reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"

[meta]
  dir = "{r}/meta"

[data]
  dir = "{r}/data"
  wal-dir = "{r}/wal"

[http]
  enabled = true
  bind-address = "127.0.0.1:{self.port}"
  auth-enabled = {"true" if self.auth_enabled else "false"}
  log-enabled = false
  unix-socket-enabled = false
  https-enabled = {"true" if self.tls else "false"}
  https-certificate = "{self.tls[0] if self.tls else ""}"
  https-private-key = "{self.tls[1] if self.tls else ""}"

[monitor]
  store-enabled = false

[continuous_queries]
  enabled = false

[logging]
  suppress-logo = true
"""
        )

    def ping(self) -> bool:
        try:
            status, _ = http_request("GET", self.url + "/ping", timeout=2)
        except OSError:
            return False
        return status == 204

    def start(self) -> "InfluxDB1":
        if self.running:
            return self
        started = time.monotonic()
        self.proc = _spawn([INFLUXD, "-config", str(self.config_path)], self.log_path)
        self._wait_ready(self.ping, started)
        if self.auth_enabled and not self._admin_created:
            self.query(
                f"CREATE USER \"{self.admin_user}\" WITH PASSWORD '{self.admin_password}' WITH ALL PRIVILEGES",
                auth=None,
            )
            self._admin_created = True
        return self

    _DEFAULT = object()

    def _auth(self, auth):
        return self.credentials if auth is self._DEFAULT else auth

    def query(
        self,
        q: str,
        db: str | None = None,
        *,
        method: str | None = None,
        epoch: str | None = None,
        auth: Any = _DEFAULT,
    ) -> dict:
        """Run InfluxQL through /query and return the parsed JSON.

        SELECT and SHOW go as GET; anything else (CREATE, DROP, GRANT...) as
        POST, which influxd 1.x requires.  Raises HTTPStatusError on non-2xx.
        """
        if method is None:
            method = "GET" if q.lstrip().upper().startswith(("SELECT", "SHOW")) else "POST"
        params = {"q": q}
        if db is not None:
            params["db"] = db
        if epoch is not None:
            params["epoch"] = epoch
        status, body = http_request(method, self.url + "/query", params=params, auth=self._auth(auth))
        if not 200 <= status < 300:
            raise HTTPStatusError(f"influxdb query {q!r}", status, body)
        return json.loads(body)

    def rows(self, q: str, db: str, *, epoch: str | None = None, auth: Any = _DEFAULT) -> list[dict]:
        """The result of one SELECT as a list of {column: value} dicts (tags of
        GROUP BY series merged in).  Raises RuntimeError if InfluxDB reports an error."""
        result = self.query(q, db, epoch=epoch, auth=auth)["results"][0]
        if "error" in result:
            raise RuntimeError(f"influxdb query {q!r}: {result['error']}")
        out = []
        for series in result.get("series", []):
            for values in series.get("values", []):
                row = dict(series.get("tags", {}))
                row.update(zip(series["columns"], values))
                row.setdefault("_measurement", series.get("name"))
                out.append(row)
        return out

    def create_database(self, name: str) -> None:
        self.query(f'CREATE DATABASE "{name}"')

    def drop_database(self, name: str) -> None:
        self.query(f'DROP DATABASE "{name}"')

    def create_user(self, name: str, password: str, *, admin: bool = False) -> None:
        extra = " WITH ALL PRIVILEGES" if admin else ""
        self.query(f"CREATE USER \"{name}\" WITH PASSWORD '{password}'{extra}")

    def grant(self, privilege: str, db: str, user: str) -> None:
        """privilege: READ, WRITE or ALL."""
        self.query(f'GRANT {privilege} ON "{db}" TO "{user}"')

    def write(
        self,
        lines: str | bytes | Iterable[str],
        db: str,
        precision: str = "ns",
        *,
        rp: str | None = None,
        auth: Any = _DEFAULT,
    ) -> tuple[int, str]:
        """POST line protocol to /write; returns (status, body) without raising."""
        params = {"db": db, "precision": precision}
        if rp is not None:
            params["rp"] = rp
        status, body = http_request("POST", self.url + "/write", params=params, data=_lines(lines), auth=self._auth(auth))
        return status, body.decode(errors="replace")


# ---------------------------------------------------------------------------
# VictoriaMetrics


class VictoriaMetrics(_Service):
    """Debian's victoria-metrics (1.79) on 127.0.0.1:<port>, data in a temp dir.

    How InfluxDB line protocol lands in VictoriaMetrics 1.79 (checked against
    the real binary, see tests/test_services.py::test_victoria_line_protocol_mapping):

    * metric name = ``<measurement>_<field>``: ``cpu,host=a usage=1.5`` gives
      ``cpu_usage{host="a"}``.  Even a single field keeps the suffix
      (``m value=1`` -> ``m_value``).  Names and labels are not sanitised:
      escaped spaces stay (``esc\\ m fi\\ eld=1`` -> ``"esc m_fi eld"``) and case
      is kept.
    * tags -> labels, unchanged.  A tag called ``__name__`` is dropped.
    * ``/api/v2/write?org=..&bucket=B`` (what influxdb-client's write API
      posts): the bucket is NOT recorded; no ``db`` label is added.
    * ``/write?db=D`` (and ``/api/v2/write?db=D``): adds label ``db="D"``,
      unless the line already has a tag ``db``, which wins.
    * values are float64: integers (``7i``) become 7, booleans become 1/0
      (``true``/``t`` -> 1, ``false`` -> 0), string fields are parsed as numbers
      when they look like one (``"12.5"`` -> 12.5) and are stored as 0 otherwise.
    * timestamps are stored in milliseconds (ns input is truncated).  The
      ``precision`` query arg is honoured (ns, us, ms, s): seconds sent with
      precision=ns land in 1970.  Without the arg the unit is guessed from the
      magnitude.  A line without a timestamp gets the server's time.
    * export returns ``{"metric": {"__name__": ..., labels...}, "values": [...],
      "timestamps": [ms...]}`` per series, one JSON object per line.

    Visibility: a sample for an existing series shows up in /api/v1/export after
    ~1 s, but a NEW series only after the index is flushed, which takes 5-10 s by
    itself.  Calling /internal/force_flush while polling (``wait_export``) brings
    that to ~0.5-1 s.  One flush straight after the write is not enough (rows
    sit in a ~1 s in-memory buffer first), hence the polling.
    """

    name = "victoria-metrics"

    def __init__(self, *, extra_args: Sequence[str] = (), start_timeout: float = START_TIMEOUT):
        super().__init__(start_timeout)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = self.root / "data"
        self.extra_args = list(extra_args)

    def health(self) -> bool:
        try:
            status, _ = http_request("GET", self.url + "/health", timeout=2)
        except OSError:
            return False
        return status == 200

    def start(self) -> "VictoriaMetrics":
        if self.running:
            return self
        started = time.monotonic()
        argv = [
            VICTORIA_METRICS,
            f"-storageDataPath={self.data_dir}",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            "-retentionPeriod=100y",
            # serve the newest samples in queries at once instead of after 30 s
            "-search.latencyOffset=0s",
            "-search.disableCache",
            *self.extra_args,
        ]
        self.proc = _spawn(argv, self.log_path)
        self._wait_ready(self.health, started)
        return self

    def write_v2(
        self,
        lines: str | bytes | Iterable[str],
        bucket: str = "tests",
        *,
        org: str = "tests",
        precision: str | None = "ns",
    ) -> tuple[int, str]:
        """POST to /api/v2/write like influxdb-client does (it always sends a
        precision); ``precision=None`` leaves it out.  Returns (status, body)."""
        params = {"org": org, "bucket": bucket}
        if precision is not None:
            params["precision"] = precision
        status, body = http_request("POST", self.url + "/api/v2/write", params=params, data=_lines(lines))
        return status, body.decode(errors="replace")

    def write_v1(
        self, lines: str | bytes | Iterable[str], db: str | None = None, *, precision: str | None = None
    ) -> tuple[int, str]:
        """POST to /write (InfluxDB 1.x style); returns (status, body)."""
        params = {}
        if db is not None:
            params["db"] = db
        if precision is not None:
            params["precision"] = precision
        status, body = http_request("POST", self.url + "/write", params=params, data=_lines(lines))
        return status, body.decode(errors="replace")

    def flush(self) -> None:
        """Make buffered rows and new series searchable (/internal/force_flush)."""
        status, body = http_request("GET", self.url + "/internal/force_flush")
        if status != 200:
            raise HTTPStatusError("victoria-metrics force_flush", status, body)

    def export(
        self,
        match: str | Sequence[str] = '{__name__!=""}',
        *,
        start: str | float | None = None,
        end: str | float | None = None,
        flush: bool = True,
    ) -> list[dict]:
        """GET /api/v1/export for ``match`` (a series selector or a list of them).

        Only what is already searchable is returned: see the class docstring,
        and use ``wait_export`` right after a write.
        """
        if flush:
            self.flush()
        matches = [match] if isinstance(match, str) else list(match)
        params: list[tuple[str, Any]] = [("match[]", m) for m in matches]
        if start is not None:
            params.append(("start", start))
        if end is not None:
            params.append(("end", end))
        status, body = http_request("GET", self.url + "/api/v1/export", params=params)
        if status != 200:
            raise HTTPStatusError(f"victoria-metrics export {matches}", status, body)
        return [json.loads(line) for line in body.decode().splitlines() if line.strip()]

    def wait_export(
        self,
        match: str | Sequence[str] = '{__name__!=""}',
        predicate: Callable[[list[dict]], bool] | None = None,
        *,
        timeout: float = 15.0,
    ) -> list[dict]:
        """Poll flush + export until ``predicate(series)`` holds (default: any
        series at all) and return the series; TimeoutError otherwise."""
        check = predicate or bool
        last: list[dict] = []

        def poll():
            nonlocal last
            last = self.export(match)
            return check(last)

        wait_until(poll, timeout, 0.2, lambda: f"victoria-metrics export {match!r}; last: {last!r}")
        return last


# ---------------------------------------------------------------------------
# systemd user manager


def _cgroup_mounts() -> list[Path]:
    """Mount points of all cgroup hierarchies (v1 and v2)."""
    with open("/proc/self/mounts") as f:
        return [Path(line.split()[1]) for line in f if line.split()[2] in ("cgroup", "cgroup2")]


def _cgroup_pids(path: Path) -> set[int]:
    pids: set[int] = set()
    for procs in path.rglob("cgroup.procs"):
        try:
            pids.update(int(p) for p in procs.read_text().split())
        except OSError:
            pass
    return pids


def _remove_cgroup(name: str, timeout: float = 5.0) -> bool:
    """SIGKILL every process in cgroup ``name`` (all hierarchies) and remove it."""
    dirs = [mnt / name for mnt in _cgroup_mounts() if (mnt / name).is_dir()]
    deadline = time.monotonic() + timeout
    while True:
        pids = set().union(*(_cgroup_pids(d) for d in dirs)) if dirs else set()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for d in dirs:
            for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
                try:
                    sub.rmdir()
                except OSError:
                    pass
            try:
                d.rmdir()
            except OSError:
                pass
        dirs = [d for d in dirs if d.exists()]
        if not dirs:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _stale_owner(name: str) -> bool:
    """True for ``tick-tests-<pid>-...`` names whose owning process is gone."""
    try:
        owner = int(name[len(TMP_PREFIX) :].split("-")[0])
    except ValueError:
        return False
    return owner != os.getpid() and not Path(f"/proc/{owner}").exists()


def _reap_stale() -> None:
    """Clean up after test runs that died without cleaning up (e.g. SIGKILLed
    pytest): the processes left in their cgroups (a user manager's dbus-daemon
    and services; influxd and victoria-metrics die with pytest by themselves)
    and their temp dirs.  Only our own prefix with a dead owner pid is touched."""
    names = set()
    for mnt in _cgroup_mounts():
        try:
            names.update(p.name for p in mnt.iterdir() if p.is_dir() and p.name.startswith(TMP_PREFIX))
        except OSError:
            pass
    for name in names:
        if _stale_owner(name):
            _remove_cgroup(name, timeout=2.0)
    tmp = Path(tempfile.gettempdir())
    for d in tmp.glob(f"{TMP_PREFIX}*"):
        if d.is_dir() and _stale_owner(d.name):
            shutil.rmtree(d, ignore_errors=True)


# Runs inside the new cgroup + mount namespaces, just before systemd.  Args:
# pairs of (our cgroup dir, hierarchy mount point): our cgroup is bind-mounted
# over the hierarchy's mount point, so that /sys/fs/cgroup/... shows the same
# root as /proc/self/cgroup does inside the cgroup namespace.  (Mounting the
# hierarchy afresh over its own mount point fails with EBUSY.)
_INNER_SH = r"""
set -eu
journal_dir=$1
shift
mount -t tmpfs tick-tests-run-systemd /run/systemd
mkdir /run/systemd/system
# What PID 1 systemd makes at boot (mount-setup.c, make_inaccessible_nodes): the nodes
# InaccessiblePaths=, ProtectHome=, ProtectKernelTunables= and ProtectKernelLogs= mount
# over what they hide. Without them such a unit fails with 226/NAMESPACE.
mkdir -m 0755 /run/systemd/inaccessible
(cd /run/systemd/inaccessible && mkdir -m 0 dir && : > reg && chmod 0 reg &&
 mknod -m 0 chr c 0 0 && mknod -m 0 blk b 0 0 && mkfifo -m 0 fifo &&
 python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind("sock")' && chmod 0 sock)
while [ "$#" -ge 2 ]; do
    mount --bind "$1" "$2"
    shift 2
done
if [ "$journal_dir" != - ]; then
    # A real journald for the services' stdout/stderr (real-services.md, "journald"):
    # its sockets in the private /run/systemd, its files in our temp dir, and the
    # machine's persistent journal hidden so nothing is written there.
    mkdir -p /run/systemd/journal /run/log/journal
    mount --bind "$journal_dir" /run/log/journal
    if [ -d /var/log/journal ]; then mount -t tmpfs tick-tests-var-log-journal /var/log/journal; fi
    /lib/systemd/systemd-journald &
    tries=0
    until [ -S /run/systemd/journal/stdout ]; do
        tries=$((tries + 1)); [ "$tries" -lt 200 ] || { echo "journald did not start" >&2; exit 1; }
        sleep 0.05
    done
fi
exec /lib/systemd/systemd --user --log-target=console
"""

# Runs first: joins our fresh cgroups ($1: space separated cgroup.procs files),
# then enters new cgroup and mount namespaces.
_OUTER_SH = r"""
set -eu
for f in $1; do echo $$ > "$f"; done
shift
exec unshare --cgroup --mount --propagation private sh -c "$@"
"""


class UserManager(_Service):
    """A real ``systemd --user`` manager with its own D-Bus session bus.

    State lives in a private temp dir (never /run/user/0).  The manager runs
    in private mount and cgroup namespaces:

    * /run/systemd is a private tmpfs holding ``/run/systemd/system``, so
      systemd believes it runs on a systemd machine (PID 1 here is not
      systemd).  ``is-system-running`` says "offline" from outside; harmless.
    * it gets a fresh cgroup ``<hierarchy>/tick-tests-<pid>-<rand>`` in every
      cgroup hierarchy, seen as its root.  Without this, every user manager on
      the machine uses the same absolute cgroup paths (e.g.
      ``/session.slice/dbus.service``) and stopping one kills the other's
      dbus-daemon and same-named services.  It also lets ``stop()`` find and
      kill everything the manager started, whatever session they are in.

    Clients use ``env`` (``os.environ`` + XDG_* + DBUS_SESSION_BUS_ADDRESS) or
    just ``bus_address``.

    ``journal=True``: a real systemd-journald runs in the same namespace first, so the
    services' stdout and stderr reach a journal; its files are in ``journal_dir``
    (read them with ``journalctl --directory``). It cannot attribute entries to units
    here (no systemd PID 1 cgroup tree): ``_PID`` and the time are what identify a run.
    """

    name = "systemd-user"

    def __init__(self, *, start_timeout: float = START_TIMEOUT,
                 environment: Mapping[str, str] | None = None, journal: bool = False):
        """``environment``: added to the manager's own (e.g. TZ: the zone systemd
        evaluates OnCalendar in; ``systemctl --user set-environment`` does not change it)."""
        super().__init__(start_timeout)
        r = self.root
        self.journal_dir = r / "journal" if journal else None
        if self.journal_dir:
            self.journal_dir.mkdir()
        self.runtime_dir = r / "run"
        self.config_dir = r / "config"
        self.data_dir = r / "data"
        self.home = r / "home"
        self.unit_dir = self.config_dir / "systemd" / "user"
        self.runtime_dir.mkdir(mode=0o700)
        self.unit_dir.mkdir(parents=True)
        self.home.mkdir()
        self.data_dir.mkdir()
        (r / "state").mkdir()
        (r / "cache").mkdir()
        self.bus_address = f"unix:path={self.runtime_dir}/bus"
        xdg = {
            "HOME": str(self.home),
            "XDG_RUNTIME_DIR": str(self.runtime_dir),
            "XDG_CONFIG_HOME": str(self.config_dir),
            "XDG_DATA_HOME": str(self.data_dir),
            "XDG_STATE_HOME": str(r / "state"),
            "XDG_CACHE_HOME": str(r / "cache"),
        }
        # What the manager itself (and so every unit) sees: kept minimal.
        self._manager_env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"),
            "LANG": "C.UTF-8",
            "USER": "root",
            "LOGNAME": "root",
            "SHELL": "/bin/sh",
            **xdg,
            **(environment or {}),
        }
        self.env: dict[str, str] = {**os.environ, **xdg, "DBUS_SESSION_BUS_ADDRESS": self.bus_address}
        self.env.pop("SYSTEMD_LOG_TARGET", None)
        self.cgroup_name = f"{TMP_PREFIX}{os.getpid()}-{r.name.rsplit('-', 1)[-1]}"

    # -- lifecycle

    def _make_cgroups(self) -> tuple[list[str], list[str]]:
        procs_files: list[str] = []
        mount_args: list[str] = []
        for mnt in _cgroup_mounts():
            d = mnt / self.cgroup_name
            d.mkdir(exist_ok=True)
            # cgroup v1 cpuset: a new group has no CPUs/memory nodes until told.
            for knob in ("cpuset.cpus", "cpuset.mems"):
                if (mnt / knob).exists() and not (d / knob).read_text().strip():
                    (d / knob).write_text((mnt / knob).read_text())
            procs_files.append(str(d / "cgroup.procs"))
            mount_args += [str(d), str(mnt)]
        if not procs_files:
            raise RuntimeError("no cgroup hierarchy is mounted; systemd --user cannot run")
        return procs_files, mount_args

    def ready(self) -> bool:
        """True when the bus socket exists, systemctl answers and systemd answers on the bus."""
        if not (self.runtime_dir / "bus").is_socket():
            return False
        if self.systemctl("list-units", "--no-legend", check=False, timeout=5).returncode != 0:
            return False
        # Through the bus itself (what the exporter uses), not systemd's private socket.
        ping = subprocess.run(
            ["busctl", "--user", "call", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
             "org.freedesktop.DBus.Peer", "Ping"],
            env=self.env, capture_output=True, text=True, timeout=5,
        )
        return ping.returncode == 0

    def start(self) -> "UserManager":
        if self.running:
            return self
        started = time.monotonic()
        procs_files, mount_args = self._make_cgroups()
        self.proc = _spawn(
            ["sh", "-c", _OUTER_SH, "outer", " ".join(procs_files), _INNER_SH, "inner",
             str(self.journal_dir or "-"), *mount_args],
            self.log_path,
            self._manager_env,
        )
        self._wait_ready(self.ready, started)
        return self

    def stop(self) -> None:
        """``systemctl --user exit``, SIGKILL the group if still alive after 5 s,
        kill whatever is left in the manager's cgroups, remove the temp dir."""
        try:
            if self.running:
                try:
                    self.systemctl("exit", check=False, timeout=10)
                except subprocess.TimeoutExpired:
                    pass
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass
            self._kill()
            self.proc = None
            _remove_cgroup(self.cgroup_name)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            _LIVE.discard(self)

    close = stop

    def _emergency_cleanup(self) -> None:
        self._kill()
        _remove_cgroup(self.cgroup_name, timeout=2.0)
        shutil.rmtree(self.root, ignore_errors=True)
        _LIVE.discard(self)

    # -- systemctl helpers

    def systemctl(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run ``systemctl --user --no-pager ARGS`` against this manager (text output)."""
        cp = subprocess.run(
            ["systemctl", "--user", "--no-pager", *args],
            env=self.env, capture_output=True, text=True, timeout=timeout,
        )
        if check and cp.returncode != 0:
            raise RuntimeError(
                f"systemctl --user {' '.join(args)} failed with {cp.returncode}:\n{cp.stdout}{cp.stderr}"
            )
        return cp

    def write_unit(self, name: str, text: str) -> Path:
        """Write a unit file into ``unit_dir`` (call ``daemon_reload()`` after)."""
        path = self.unit_dir / name
        path.write_text(text)
        return path

    def remove_unit(self, name: str) -> None:
        (self.unit_dir / name).unlink(missing_ok=True)

    def daemon_reload(self) -> None:
        self.systemctl("daemon-reload")

    def show(self, unit: str, props: Iterable[str] | None = None, timestamp: str | None = None) -> dict[str, str]:
        """``systemctl --user show UNIT [-p P...] [--timestamp=T]`` as a dict.

        ``timestamp="unix"`` prints most timestamps as ``@SECONDS`` (systemd 252),
        but NOT the timer properties NextElapseUSecRealtime / LastTriggerUSec,
        which stay human-readable; use ``bus_property`` for those.
        """
        args = ["show", unit]
        for p in props or ():
            args += ["-p", p]
        if timestamp is not None:
            args.append(f"--timestamp={timestamp}")
        out = self.systemctl(*args).stdout
        result: dict[str, str] = {}
        for line in out.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                result[key] = value
        return result

    def bus_property(self, unit: str, interface: str, prop: str) -> Any:
        """One raw D-Bus property of a unit via busctl, e.g.
        ``bus_property("x.timer", "Timer", "LastTriggerUSec")`` -> int µs.
        ``interface`` may be short ("Unit", "Service", "Timer")."""
        if "." not in interface:
            interface = f"org.freedesktop.systemd1.{interface}"
        base = ["busctl", "--user", "--json=short"]
        cp = subprocess.run(
            [*base, "call", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
             "org.freedesktop.systemd1.Manager", "LoadUnit", "s", unit],
            env=self.env, capture_output=True, text=True, timeout=10, check=True,
        )
        path = json.loads(cp.stdout)["data"][0]
        cp = subprocess.run(
            [*base, "get-property", "org.freedesktop.systemd1", path, interface, prop],
            env=self.env, capture_output=True, text=True, timeout=10, check=True,
        )
        return json.loads(cp.stdout)["data"]

    def wait_for_properties(
        self, unit: str, expected: Mapping[str, str], timeout: float = 12.0, interval: float = 0.2
    ) -> dict[str, str]:
        """Poll ``show(unit)`` until every ``expected`` property has its value;
        returns the last ``show`` dict, TimeoutError (with the values seen) otherwise."""
        last: dict[str, str] = {}

        def poll():
            nonlocal last
            last = self.show(unit, list(expected))
            return all(last.get(k) == v for k, v in expected.items())

        wait_until(poll, timeout, interval, lambda: f"{unit} to have {dict(expected)}; last: {last}")
        return last


# ---------------------------------------------------------------------------
# Docker engine
#
# How a test engine is kept apart from the machine and from any other dockerd
# (the system one on /var/run/docker.sock, or another test run's):
#
# * dockerd runs in a private mount namespace that has a fresh tmpfs on /run
#   (hiding /run/containerd/containerd.sock, so dockerd starts its own
#   containerd instead of sharing the system one; shim sockets and runc state
#   land in that tmpfs), the stub resolv.conf bound over /etc/resolv.conf and
#   placed at /run/systemd/resolve/resolv.conf (where dockerd 20.10 looks when
#   /etc/resolv.conf names only 127.0.0.53), and a temp dir bound over
#   /etc/docker.  Its overlay and netns mounts never show on the host and go
#   away with the namespace.
# * its own config file (nothing from /etc/docker/daemon.json, and
#   "deprecated-key-path" so dockerd 20.10 does not write /etc/docker/key.json),
#   --data-root, --exec-root, --pidfile and API socket in the temp dir.
# * networking: --bridge to a bridge we create (tick-br<rand>, 10.213.X.1/24)
#   and --default-address-pool 10.214.X.0/24 (/28 networks) for user-defined
#   networks, X picked so that neither /24 overlaps a route or address on the
#   machine (under a lock shared by all engines).  --iptables=false,
#   --ip-masq=false and --ip-forward=false: dockerd changes neither the
#   machine's firewall (dockerd 20.10 flushes and re-creates the DOCKER chains
#   at start, which would wreck another dockerd's rules) nor its ip_forward
#   sysctl.  The embedded DNS (127.0.0.11) still works: its DNAT rules live in
#   each container's own netns.
# * nothing leaves the machine: policy routing rules send every packet that
#   comes FROM the two subnets (except the host's own, iif lo) to a table that
#   only holds "prohibit default", so even with ip_forward=1 a container (or
#   the embedded DNS forwarding to the 8.8.8.8 fallback) cannot reach beyond
#   the host; packets to the host's own addresses and between containers on a
#   bridge are unaffected.  dockerd itself gets HTTP(S)_PROXY=127.0.0.1:9, so a
#   pull fails at once instead of resolving a registry.
# * cgroups: the daemon (and so containerd and the shims, which outlive a
#   killed dockerd) runs in cgroup tick-tests-<pid>-docker-<rand>-daemon of
#   every hierarchy; containers use --cgroup-parent=/tick-tests-<pid>-docker-<rand>
#   with the cgroupfs driver.  Both names are reaped by _reap_stale; the bridge
#   carries an alias naming its owner, so bridges and rules of a killed run are
#   removed by the next DockerEngine (_reap_stale_docker).
# * the host's firewall: a host that runs Docker itself has the iptables filter
#   FORWARD policy DROP (dockerd sets it) and br_netfilter on
#   (net.bridge.bridge-nf-call-iptables=1), so even packets bridged between two
#   containers of our bridge traverse FORWARD and are dropped: our dockerd runs
#   with --iptables=false and adds nothing.  An ACCEPT in another table or at
#   another priority cannot help (nftables: every base chain on the hook must
#   accept a packet), so each engine inserts its own ACCEPT rules at the top of
#   filter FORWARD itself, tagged "tick-exporter-tests:<bridge>" (comment
#   match): traffic in and out of its bridge, and between addresses of its
#   address pool (the br-<id> bridges dockerd makes for user networks; routed
#   between them only if the host forwards).  Nothing else is accepted and no
#   policy is changed; stop() deletes exactly the tagged rules, and
#   _reap_stale_docker those of bridges whose owner is gone or that no longer
#   exist.  With no filter FORWARD chain at all nothing there can drop, and
#   none is created: iptables-nft cannot delete a table it created, so the host
#   would be left with one.

DOCKERD = "/usr/sbin/dockerd"
# Debian's CLI, the same version as dockerd.  PATH may find another one first
# (this machine has a static docker 28 CLI in /usr/local/bin).
DOCKER_CLI = "/usr/bin/docker"
BUSYBOX = "/bin/busybox"
DOCKER_START_TIMEOUT = 30.0

# What dockerd sees as the machine's resolv.conf: only a loopback nameserver,
# so Docker replaces it with its public fallback (8.8.8.8, 8.8.4.4) for
# default-bridge containers.  Those addresses are only ever classified by the
# tests, never queried.
DOCKER_STUB_RESOLV_CONF = "nameserver 127.0.0.53\nsearch corp.example\n"

_DOCKER_BRIDGE_NET = "10.213.{x}.0/24"
_DOCKER_POOL_NET = "10.214.{x}.0/24"
_DOCKER_POOL_SIZE = 28
_DOCKER_RULE_PREF = 21300  # "from <ours> iif lo lookup main"; +1: "from <ours> lookup <table>"
_DOCKER_TABLE_BASE = 21300  # + X: holds only "prohibit default"
_DOCKER_NET_LOCK = "\0tick-tests-docker-net-lock"  # abstract socket: nothing to clean up
_DOCKER_NO_PROXY_ENV = ("DOCKER_CONTEXT", "DOCKER_TLS", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_API_VERSION")

# Args: the cgroup.procs files to join (space separated), then the inner
# script and its args.  No cgroup namespace: runc must see the real hierarchy.
_DOCKER_OUTER_SH = r"""
set -eu
for f in $1; do echo $$ > "$f"; done
shift
exec unshare --mount --propagation private sh -c "$@"
"""

# Runs inside the private mount namespace.  $1: the engine's temp dir; the
# rest: dockerd's argv.
_DOCKER_INNER_SH = r"""
set -eu
root=$1
shift
mount -t tmpfs -o mode=0755 tick-tests-docker-run /run
mkdir -p /run/lock /run/systemd/resolve
chmod 1777 /run/lock
cp "$root/resolv.conf" /run/systemd/resolve/resolv.conf
# /etc/resolv.conf may be a symlink into /run (systemd-resolved, resolvconf):
# its target must exist (in our tmpfs) for the bind mount.
target=$(readlink -m /etc/resolv.conf)
case "$target" in
    /run/*) mkdir -p "$(dirname "$target")"; [ -e "$target" ] || : > "$target" ;;
esac
mount --bind "$root/resolv.conf" /etc/resolv.conf
if [ -d /etc/docker ]; then mount --bind "$root/etc-docker" /etc/docker; fi
exec "$@"
"""


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _run_ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    cp = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and cp.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed with {cp.returncode}: {cp.stderr.strip()}")
    return cp


def _ip_json(*args: str) -> list[dict]:
    out = _run_ip("-j", *args).stdout.strip()
    return json.loads(out) if out else []


@contextlib.contextmanager
def _docker_net_lock(timeout: float = 30.0):
    """Serialise choosing/creating/reaping test bridges among all processes."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                sock.bind(_DOCKER_NET_LOCK)
                break
            except OSError:
                if time.monotonic() >= deadline:
                    raise RuntimeError("timed out waiting for the docker test network lock") from None
                time.sleep(0.05)
        yield
    finally:
        sock.close()


def _docker_nets(x: int) -> tuple[ipaddress.IPv4Network, ipaddress.IPv4Network]:
    return (ipaddress.IPv4Network(_DOCKER_BRIDGE_NET.format(x=x)), ipaddress.IPv4Network(_DOCKER_POOL_NET.format(x=x)))


def _docker_rule_specs(x: int) -> list[list[str]]:
    specs = []
    for net in _docker_nets(x):
        specs.append(["pref", str(_DOCKER_RULE_PREF), "from", str(net), "iif", "lo", "lookup", "main"])
        specs.append(["pref", str(_DOCKER_RULE_PREF + 1), "from", str(net), "lookup", str(_DOCKER_TABLE_BASE + x)])
    return specs


# What tags the engines' rules in the host's filter FORWARD chain (see above).
FORWARD_RULE_TAG = "tick-exporter-tests:"


def iptables_save() -> str | None:
    """``iptables-save`` (all tables), or None without iptables.  Only a read:
    unlike ``iptables -S`` it never creates a table (legacy iptables would
    load iptable_filter to list it)."""
    if shutil.which("iptables-save") is None:
        return None
    cp = subprocess.run(["iptables-save"], capture_output=True, text=True, timeout=30)
    if cp.returncode != 0:
        raise RuntimeError(f"iptables-save failed with {cp.returncode}: {cp.stderr.strip()}")
    return cp.stdout


def filter_table_lines(saved: str) -> list[str]:
    """The lines of iptables-save's ``*filter`` section (without the header and COMMIT)."""
    lines, inside = [], False
    for line in saved.splitlines():
        if line.startswith("*"):
            inside = line == "*filter"
        elif inside and line != "COMMIT":
            lines.append(line)
    return lines


def has_forward_chain(saved: str) -> bool:
    return any(line.startswith(":FORWARD ") for line in filter_table_lines(saved))


def forward_rule_bridge(line: str) -> str | None:
    """The bridge an iptables-save rule line is tagged with; None for any other rule."""
    if FORWARD_RULE_TAG not in line:
        return None
    args = shlex.split(line)
    for i, arg in enumerate(args[:-1]):
        if arg == "--comment" and args[i + 1].startswith(FORWARD_RULE_TAG):
            return args[i + 1][len(FORWARD_RULE_TAG):]
    return None


def tagged_forward_rules(saved: str) -> list[tuple[str, list[str]]]:
    """(bridge, iptables-save args) of every FORWARD rule tagged as an engine's."""
    found = []
    for line in filter_table_lines(saved):
        bridge = forward_rule_bridge(line) if line.startswith("-A FORWARD ") else None
        if bridge is not None:
            found.append((bridge, shlex.split(line)))
    return found


def _forward_rule_specs(bridge: str, x: int) -> list[list[str]]:
    pool = str(_docker_nets(x)[1])
    tag = ["-m", "comment", "--comment", f"{FORWARD_RULE_TAG}{bridge}", "-j", "ACCEPT"]
    return [["-i", bridge, "-o", bridge, *tag], ["-s", pool, "-d", pool, *tag]]


def _iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    # -w: wait for the xtables lock another iptables (a host dockerd) may hold
    cp = subprocess.run(["iptables", "-w", "30", *args], capture_output=True, text=True, timeout=60)
    if check and cp.returncode != 0:
        raise RuntimeError(f"iptables {' '.join(args)} failed with {cp.returncode}: {cp.stderr.strip()}")
    return cp


def _add_forward_rules(bridge: str, x: int) -> None:
    saved = iptables_save()
    if saved is None:
        raise RuntimeError("iptables-save is missing (apt-get install iptables)")
    if not has_forward_chain(saved):
        return  # nothing there can drop, and adding a rule would create the table for good
    for spec in _forward_rule_specs(bridge, x):
        _iptables("-I", "FORWARD", "1", *spec)  # before anything of the host's that drops


def _delete_forward_rules(doomed: Callable[[str], bool]) -> None:
    """Delete the tagged FORWARD rules whose bridge is ``doomed``, exactly as
    iptables-save shows them (so rules of an older harness go too)."""
    saved = iptables_save()
    if saved is None:
        return
    for bridge, args in tagged_forward_rules(saved):
        if doomed(bridge):
            _iptables("-D", *args[1:], check=False)  # args[0] is "-A"


def _pick_docker_x(prefer: int | None = None) -> int:
    """An X for which 10.213.X.0/24 and 10.214.X.0/24 overlap nothing on the
    machine: ``prefer`` if it still qualifies, else a random one."""
    used: list[ipaddress.IPv4Network] = []
    for route in _ip_json("-4", "route", "show", "table", "all"):
        dst = route.get("dst")
        if dst and dst != "default":
            try:
                used.append(ipaddress.IPv4Network(dst, strict=False))
            except ValueError:
                pass
    for link in _ip_json("-4", "addr"):
        for a in link.get("addr_info", []):
            try:
                used.append(ipaddress.IPv4Network(f"{a['local']}/{a['prefixlen']}", strict=False))
            except (KeyError, ValueError):
                pass
    tables = {str(r.get("table")) for r in _ip_json("rule")}
    candidates = list(range(256))
    random.shuffle(candidates)
    if prefer is not None:
        candidates.insert(0, prefer)
    for x in candidates:
        if str(_DOCKER_TABLE_BASE + x) in tables:
            continue
        if not any(n.overlaps(u) for n in _docker_nets(x) for u in used):
            return x
    raise RuntimeError("no free 10.213.X.0/24 + 10.214.X.0/24 pair for a test docker bridge")


def _teardown_docker_net(bridge: str | None, x: int) -> None:
    """Delete the rules and table of X, every bridge with an address in X's
    subnets (dockerd's br-<id> for user-defined networks) and ``bridge``, and
    ``bridge``'s FORWARD rules."""
    if bridge:
        _delete_forward_rules(lambda tagged: tagged == bridge)
    for spec in _docker_rule_specs(x):
        while _run_ip("rule", "del", *spec, check=False).returncode == 0:
            pass
    _run_ip("route", "flush", "table", str(_DOCKER_TABLE_BASE + x), check=False)
    nets = _docker_nets(x)
    for link in _ip_json("-4", "addr"):
        for a in link.get("addr_info", []):
            try:
                ip = ipaddress.IPv4Address(a["local"])
            except (KeyError, ValueError):
                continue
            if any(ip in n for n in nets) and link.get("ifname") != bridge:
                _run_ip("link", "del", "dev", link["ifname"], check=False)
                break
    if bridge:
        _run_ip("link", "del", "dev", bridge, check=False)


def _parse_bridge_alias(alias: str) -> tuple[str, int] | None:
    """``tick-tests-<pid>-<rand> x=<X>`` -> (owner name, X)."""
    parts = alias.split()
    if len(parts) != 2 or not parts[0].startswith(TMP_PREFIX) or not parts[1].startswith("x="):
        return None
    try:
        return parts[0], int(parts[1][2:])
    except ValueError:
        return None


def _reap_stale_docker() -> None:
    """Remove the bridges, user-network bridges, routing rules and FORWARD
    rules of test engines whose owning process is gone (SIGKILLed pytest).
    Their processes and cgroups are _reap_stale's job, their temp dirs too."""
    if shutil.which("ip") is None:
        return
    with _docker_net_lock():
        live: set[int] = set()
        live_bridges: set[str] = set()
        for link in _ip_json("-d", "link", "show"):
            parsed = _parse_bridge_alias(link.get("ifalias") or "")
            if parsed is None:
                continue
            owner, x = parsed
            if _stale_owner(owner):
                _teardown_docker_net(link.get("ifname"), x)
            else:
                live.add(x)
                live_bridges.add(link.get("ifname"))
        # FORWARD rules whose bridge is gone (killed between the two deletions).
        _delete_forward_rules(lambda tagged: tagged not in live_bridges)
        # Rules left without their bridge (killed half-way through a teardown).
        for rule in _ip_json("rule"):
            try:
                prio = int(rule.get("priority", -1))
                table = int(rule.get("table", -1))
            except ValueError:
                continue
            if prio == _DOCKER_RULE_PREF + 1 and 0 <= table - _DOCKER_TABLE_BASE < 256:
                x = table - _DOCKER_TABLE_BASE
                if x not in live:
                    _teardown_docker_net(None, x)


def _make_cgroup_everywhere(name: str) -> list[str]:
    """Create cgroup ``name`` in every hierarchy; returns its cgroup.procs files."""
    procs_files = []
    for mnt in _cgroup_mounts():
        d = mnt / name
        d.mkdir(exist_ok=True)
        for knob in ("cpuset.cpus", "cpuset.mems"):
            if (mnt / knob).exists() and not (d / knob).read_text().strip():
                (d / knob).write_text((mnt / knob).read_text())
        procs_files.append(str(d / "cgroup.procs"))
    return procs_files


def cgroup_mount(controller: str = "memory") -> Path:
    """Mount point of the hierarchy holding ``controller`` (v1 controller
    name, ``name=systemd``, or ``unified``/``""`` for the v2 hierarchy)."""
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if controller in ("", "unified"):
                if fields[2] == "cgroup2":
                    return Path(fields[1])
            elif fields[2] == "cgroup" and controller in fields[3].split(","):
                return Path(fields[1])
    raise RuntimeError(f"no cgroup hierarchy with controller {controller!r} is mounted")


def cgroup_dir_of(pid: int, controller: str = "memory") -> Path:
    """The cgroup directory of process ``pid`` for ``controller``, from
    /proc/<pid>/cgroup (as seen from our cgroup namespace)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        hid, ctrls, path = line.split(":", 2)
        if controller in ("", "unified"):
            match = hid == "0" and ctrls == ""
        else:
            match = controller in ctrls.split(",")
        if match:
            return cgroup_mount(controller) / path.lstrip("/")
    raise RuntimeError(f"process {pid} is in no {controller!r} cgroup")


def _is_static_elf(path: str) -> bool:
    """True when the ELF file at ``path`` has no PT_INTERP (no dynamic loader)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF":
            return False
        little = head[5] == 1
        if head[4] == 2:  # 64-bit
            fmt = "<" if little else ">"
            phoff, = struct.unpack_from(fmt + "Q", head, 0x20)
            phentsize, phnum = struct.unpack_from(fmt + "HH", head, 0x36)
        else:
            fmt = "<" if little else ">"
            phoff, = struct.unpack_from(fmt + "I", head, 0x1C)
            phentsize, phnum = struct.unpack_from(fmt + "HH", head, 0x2A)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from(fmt + "I", table, i * phentsize)[0] != 3 for i in range(phnum))


def busybox_rootfs_tar(busybox: str = BUSYBOX) -> bytes:
    """A root file system as a tar: the static busybox with every applet
    symlinked in /bin, a minimal /etc/passwd and /etc/group, /tmp and /root."""
    if not os.path.exists(busybox):
        raise RuntimeError(f"{busybox} is missing (apt-get install busybox-static)")
    if not _is_static_elf(busybox):
        raise RuntimeError(f"{busybox} is dynamically linked; install busybox-static")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    buf = io.BytesIO()
    now = time.time()

    def add(name: str, *, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, data: bytes = b"", link: str = "") -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime, info.uid, info.gid = kind, mode, now, 0, 0
        info.linkname = link
        info.size = len(data) if kind == tarfile.REGTYPE else 0
        tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for d, mode in (("bin", 0o755), ("etc", 0o755), ("tmp", 0o1777), ("root", 0o700)):
            add(d, kind=tarfile.DIRTYPE, mode=mode)
        add("bin/busybox", mode=0o755, data=Path(busybox).read_bytes())
        for applet in applets:
            if applet != "busybox" and "/" not in applet:
                add(f"bin/{applet}", kind=tarfile.SYMTYPE, mode=0o777, link="busybox")
        add("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
        add("etc/group", data=b"root:x:0:\nnogroup:x:65534:\n")
    return buf.getvalue()


class DockerEngine(_Service):
    """A real dockerd (Debian's docker.io 20.10) with its own containerd, all
    state in a temp dir, isolated as described above this class.

    * ``host`` (``unix://<tmp>/docker.sock``), ``socket_path``; ``env`` is
      os.environ with DOCKER_HOST set to this engine (and a private
      DOCKER_CONFIG), for the docker CLI, the docker SDK or the exporter.
    * ``docker(*args)`` runs Debian's docker CLI against it; ``api(method, path)``
      talks to the Engine API over the socket directly.
    * ``image()`` imports the busybox-static image (once); ``run(*args)`` is
      ``docker run -d --pull=never ARGS`` and returns the full container id;
      ``inspect(id)``, ``remove(id)``, ``cgroup_dir(id, controller)``.
    * ``cgroup_parent`` (``/tick-tests-<pid>-docker-<rand>``): a running
      container's v1 memory cgroup is ``cgroup_mount("memory") / cgroup_parent / id``.
    * ``bridge``, ``bridge_ip`` and ``bridge_network`` (the default bridge,
      10.213.X.0/24), ``address_pool`` (10.214.X.0/24, /28 per user network).

    Containers are created with the cgroupfs driver and the host cgroup
    namespace (Docker's default on cgroup v1).  ``stop()`` removes every
    container and user-defined network first (a stopping dockerd would
    otherwise wait 10 s for each container that ignores SIGTERM), then stops
    dockerd (which stops its containerd), kills whatever is left in the
    daemon's and the containers' cgroups and removes the bridges and rules
    (routing, and its own in the host's FORWARD chain).
    ``start()`` again reuses the data root (images survive); ``close()``
    removes everything.
    """

    name = "dockerd"

    def __init__(self, *, start_timeout: float = DOCKER_START_TIMEOUT, log_level: str = "info"):
        super().__init__(start_timeout)
        _reap_stale_docker()
        r = self.root
        rand = r.name.rsplit("-", 1)[-1]
        self.log_level = log_level
        self.socket_path = str(r / "docker.sock")
        self.host = f"unix://{self.socket_path}"
        self.data_root = r / "data"
        self.exec_root = r / "exec"
        self.pidfile = r / "docker.pid"
        self.config_path = r / "daemon.json"
        self.resolv_conf_path = r / "resolv.conf"
        self.cgroup_name = f"{TMP_PREFIX}{os.getpid()}-docker-{rand}"
        self.cgroup_parent = f"/{self.cgroup_name}"
        self.daemon_cgroup = f"{self.cgroup_name}-daemon"
        self.bridge = f"tick-br{rand}"[:15]
        self.x: int | None = None
        self.bridge_network: ipaddress.IPv4Network | None = None
        self.bridge_ip: str | None = None
        self.address_pool: ipaddress.IPv4Network | None = None
        self.image_seconds: float | None = None  # how long the last image import took
        self._images: set[str] = set()
        (r / "etc-docker").mkdir()
        (r / "cli").mkdir()
        self.resolv_conf_path.write_text(DOCKER_STUB_RESOLV_CONF)
        self.config_path.write_text(json.dumps({"deprecated-key-path": str(r / "key.json")}))
        self.env: dict[str, str] = {
            **{k: v for k, v in os.environ.items() if k not in _DOCKER_NO_PROXY_ENV},
            "DOCKER_HOST": self.host,
            "DOCKER_CONFIG": str(r / "cli"),
        }
        self._daemon_env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "HOME": str(r),
            # registry traffic goes nowhere (no resolver, no public address)
            "HTTP_PROXY": "http://127.0.0.1:9",
            "HTTPS_PROXY": "http://127.0.0.1:9",
            "http_proxy": "http://127.0.0.1:9",
            "https_proxy": "http://127.0.0.1:9",
        }

    # -- lifecycle

    def _setup_network(self) -> None:
        with _docker_net_lock():
            x = _pick_docker_x(prefer=self.x)  # the same X again on a restart, if still free
            bridge_net, pool = _docker_nets(x)
            try:
                _run_ip("link", "add", "name", self.bridge, "type", "bridge")
                _run_ip("link", "set", "dev", self.bridge, "alias", f"{self.cgroup_name} x={x}")
                self.x = x
                _run_ip("addr", "add", f"{bridge_net[1]}/{bridge_net.prefixlen}", "dev", self.bridge)
                _run_ip("link", "set", "dev", self.bridge, "up")
                for spec in _docker_rule_specs(x):
                    _run_ip("rule", "add", *spec)
                _run_ip("route", "add", "prohibit", "default", "table", str(_DOCKER_TABLE_BASE + x))
                _add_forward_rules(self.bridge, x)
            except BaseException:
                _teardown_docker_net(self.bridge, x)
                raise
        self.bridge_network, self.address_pool, self.bridge_ip = bridge_net, pool, str(bridge_net[1])

    def _teardown_network(self) -> None:
        if self.x is None:
            return
        with _docker_net_lock():
            _teardown_docker_net(self.bridge, self.x)

    def dockerd_argv(self) -> list[str]:
        return [
            DOCKERD,
            f"--config-file={self.config_path}",
            f"--data-root={self.data_root}",
            f"--exec-root={self.exec_root}",
            f"--pidfile={self.pidfile}",
            f"--host={self.host}",
            f"--bridge={self.bridge}",
            "--iptables=false",
            "--ip-masq=false",
            "--ip-forward=false",
            "--exec-opt=native.cgroupdriver=cgroupfs",
            f"--cgroup-parent={self.cgroup_parent}",
            f"--default-address-pool=base={self.address_pool},size={_DOCKER_POOL_SIZE}",
            f"--log-level={self.log_level}",
        ]

    def ping(self) -> bool:
        if not os.path.exists(self.socket_path):
            return False
        try:
            status, body = self.api("GET", "/_ping", timeout=2)
        except (OSError, http.client.HTTPException):
            return False
        return status == 200 and body == b"OK"

    def start(self) -> "DockerEngine":
        if self.running:
            return self
        for path in (DOCKERD, DOCKER_CLI):
            if not os.path.exists(path):
                raise RuntimeError(f"{path} is missing (apt-get install docker.io)")
        started = time.monotonic()
        self._setup_network()
        procs_files = _make_cgroup_everywhere(self.daemon_cgroup)
        self.proc = _spawn(
            ["sh", "-c", _DOCKER_OUTER_SH, "outer", " ".join(procs_files),
             _DOCKER_INNER_SH, "inner", str(self.root), *self.dockerd_argv()],
            self.log_path,
            self._daemon_env,
        )
        self._wait_ready(self.ping, started)
        return self

    def remove_all(self) -> None:
        """Remove every container (with its volumes) and user-defined network."""
        ids = self.docker("ps", "-aq", "--no-trunc", timeout=30).stdout.split()
        if ids:
            self.docker("rm", "-f", "-v", *ids, check=False, timeout=60)
        self.docker("network", "prune", "-f", check=False, timeout=30)

    def stop(self) -> None:
        try:
            if self.running:
                try:
                    self.remove_all()
                except (RuntimeError, OSError, subprocess.SubprocessError):
                    pass  # dockerd is going anyway; its cgroups are emptied below
            _stop_process(self.proc)
        finally:
            self.proc = None
            _remove_cgroup(self.daemon_cgroup)
            _remove_cgroup(self.cgroup_name)
            self._teardown_network()

    def _emergency_cleanup(self) -> None:
        self._kill()
        _remove_cgroup(self.daemon_cgroup, timeout=2.0)
        _remove_cgroup(self.cgroup_name, timeout=2.0)
        try:
            self._teardown_network()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            _LIVE.discard(self)

    @property
    def daemon_pid(self) -> int | None:
        return self.proc.pid if self.running else None

    # -- clients

    def docker(
        self, *args: str, check: bool = True, timeout: float = 60, input: str | None = None
    ) -> subprocess.CompletedProcess:
        """Run Debian's docker CLI against this engine (text output)."""
        cp = subprocess.run(
            [DOCKER_CLI, *args], env=self.env, capture_output=True, text=True, timeout=timeout, input=input
        )
        if check and cp.returncode != 0:
            raise RuntimeError(
                f"docker {' '.join(args)} failed with {cp.returncode}:\n{cp.stdout}{cp.stderr}"
            )
        return cp

    def api(self, method: str, path: str, body: Any = None, *, timeout: float = 30) -> tuple[int, Any]:
        """One Engine API request over the unix socket; returns (status, body):
        parsed JSON when the answer is JSON, bytes otherwise."""
        conn = _UnixHTTPConnection(self.socket_path, timeout)
        try:
            headers = {}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            if resp.getheader("Content-Type", "").startswith("application/json"):
                return resp.status, json.loads(raw)
            return resp.status, raw
        finally:
            conn.close()

    def image(self, name: str = "local/busybox:test") -> str:
        """The busybox-static image, imported on first use (``docker import``);
        returns ``name``."""
        if name in self._images:
            return name
        if self.docker("image", "inspect", name, check=False).returncode != 0:
            started = time.monotonic()
            data = busybox_rootfs_tar()
            cp = subprocess.run(
                [DOCKER_CLI, "import", "--change", 'CMD ["sh"]', "-", name],
                env=self.env, input=data, capture_output=True, timeout=120,
            )
            if cp.returncode != 0:
                raise RuntimeError(f"docker import {name} failed with {cp.returncode}: {cp.stderr.decode(errors='replace')}")
            self.image_seconds = time.monotonic() - started
        self._images.add(name)
        return name

    def run(self, *args: str, timeout: float = 60) -> str:
        """``docker run -d --pull=never ARGS``; returns the full container id."""
        out = self.docker("run", "-d", "--pull=never", *args, timeout=timeout).stdout.split()
        cid = out[-1] if out else ""
        if not re.fullmatch(r"[0-9a-f]{64}", cid):
            raise RuntimeError(f"docker run {' '.join(args)}: no container id in {out!r}")
        return cid

    def inspect(self, container: str) -> dict:
        return json.loads(self.docker("inspect", "--type", "container", container).stdout)[0]

    def remove(self, container: str) -> None:
        """``docker rm -f -v``; a container that is already gone is fine."""
        cp = self.docker("rm", "-f", "-v", container, check=False)
        if cp.returncode != 0 and "No such container" not in cp.stderr:
            raise RuntimeError(f"docker rm -f {container} failed with {cp.returncode}: {cp.stderr}")

    def cgroup_dir(self, container: str, controller: str = "memory") -> Path:
        """The running container's cgroup directory for ``controller`` (v1
        name, or ``unified`` for v2), from its State.Pid's /proc/<pid>/cgroup."""
        pid = self.inspect(container)["State"]["Pid"]
        if not pid:
            raise RuntimeError(f"container {container[:12]} is not running (State.Pid is 0)")
        return cgroup_dir_of(pid, controller)


# ---------------------------------------------------------------------------
# dnsmasq: the tests' own DNS server

DNSMASQ = "/usr/sbin/dnsmasq"

# dns(5) numbers the helpers below need (stdlib only, like the rest of this file).
DNS_NOERROR, DNS_SERVFAIL, DNS_NXDOMAIN, DNS_REFUSED = 0, 2, 3, 5


def dns_query(server: str, name: str, *, port: int = 53, timeout: float = 2.0) -> tuple[int, list[str], bool]:
    """One A query over UDP (no EDNS) from this process's namespace: (rcode, the IPv4
    addresses answered, truncated).  socket.timeout when nothing answers."""
    ident = random.randrange(1 << 16)
    question = b"".join(bytes([len(label)]) + label.encode() for label in name.rstrip(".").split(".")) + b"\0"
    packet = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + question + struct.pack("!HH", 1, 1)
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((server, port))
        sock.send(packet)
        while True:
            data = sock.recv(65535)
            if len(data) >= 12 and struct.unpack_from("!H", data)[0] == ident:
                break
    _, flags, qdcount, ancount, _, _ = struct.unpack_from("!HHHHHH", data)
    pos = 12

    def skip_name(pos: int) -> int:
        while True:
            length = data[pos]
            if length == 0:
                return pos + 1
            if length & 0xC0 == 0xC0:  # compression pointer
                return pos + 2
            pos += 1 + length

    for _ in range(qdcount):
        pos = skip_name(pos) + 4
    addresses = []
    truncated = bool(flags & 0x0200)
    for _ in range(ancount):
        if pos >= len(data):
            break
        pos = skip_name(pos)
        rtype, _rclass, _ttl, rdlength = struct.unpack_from("!HHIH", data, pos)
        pos += 10
        if rtype == 1 and rdlength == 4:
            addresses.append(socket.inet_ntoa(data[pos:pos + 4]))
        pos += rdlength
    return flags & 0x000F, addresses, truncated


class Dnsmasq(_Service):
    """Debian's dnsmasq as the tests' own DNS server on ``address``:``port``
    (default 53: what resolv.conf and a DNS probe can name), answering only
    from its command line: nothing is ever forwarded (``--no-resolv``, no
    ``--server``), neither /etc/hosts nor /etc/dnsmasq.conf is read.

    * ``hosts``: name -> address or list of addresses (``--host-record``; many
      addresses for one name make an answer too big for 512-byte UDP, so a
      client has to ask again over TCP);
    * ``local``: domains answered from those records only: NXDOMAIN for any
      other name in them (``--local=/domain/``); names outside them get
      REFUSED ("no upstream servers");
    * ``--log-queries``: ``queries()`` lists the names asked, from the log, so a
      test can check what reached the server.

    ``address`` must be an address of this machine that a test created (a test
    bridge's, e.g. ``DockerEngine.bridge_ip``) or a loopback one:
    ``--bind-interfaces`` binds exactly there.  ``.address`` and ``.port``.
    """

    name = "dnsmasq"

    def __init__(
        self,
        address: str,
        *,
        hosts: Mapping[str, str | Sequence[str]] | None = None,
        local: Sequence[str] = (),
        port: int = 53,
        start_timeout: float = START_TIMEOUT,
    ):
        super().__init__(start_timeout)
        self.address = address
        self.port = port
        self.hosts = {name: [a] if isinstance(a, str) else list(a) for name, a in (hosts or {}).items()}
        self.local = list(local)

    def argv(self) -> list[str]:
        args = [
            DNSMASQ,
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--conf-file=/dev/null",
            "--bind-interfaces",
            f"--listen-address={self.address}",
            f"--port={self.port}",
            "--pid-file",  # no argument: no pid file
            "--log-facility=-",
            "--log-queries",
        ]
        args += [f"--local=/{domain}/" for domain in self.local]
        args += [f"--host-record={name},{a}" for name, addresses in self.hosts.items() for a in addresses]
        return args

    def ping(self) -> bool:
        try:
            dns_query(self.address, "ready.invalid", port=self.port, timeout=0.5)
        except OSError:
            return False
        return True

    def start(self) -> "Dnsmasq":
        if self.running:
            return self
        if not os.path.exists(DNSMASQ):
            raise RuntimeError(f"{DNSMASQ} is missing (apt-get install dnsmasq-base)")
        started = time.monotonic()
        self.proc = _spawn(self.argv(), self.log_path)
        self._wait_ready(self.ping, started)
        return self

    def query(self, name: str, timeout: float = 2.0) -> tuple[int, list[str], bool]:
        """``dns_query`` against this server, from this process's namespace."""
        return dns_query(self.address, name, port=self.port, timeout=timeout)

    def queries(self) -> list[tuple[str, str]]:
        """(name, client address) of every query logged so far, oldest first."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return re.findall(r"query\[\w+\] (\S+) from (\S+)", text)
