"""Does each container resolve names? One A query per container x query x server, asked
from inside the container's network namespace, so no tool is needed in its image.

How a probe gets into the container: a short-lived helper thread opens
/proc/<pid>/ns/net, setns(2)s into it, creates the sockets there and setns's back to
the namespace it started in (captured first from /proc/thread-self/ns/net). A socket
keeps the namespace it was created in, so the queries themselves run on the agent's
event loop, all at once on non-blocking sockets under ONE deadline: fifty dead
resolvers cost one timeout, however many probes there are. Only the helper thread ever
changes namespace, and it is never reused (a thread that could not get back dies with
its error instead of serving the next call from the wrong namespace).

When the namespace cannot be entered (pid 0, /proc/<pid> not visible from the agent's
PID namespace, no CAP_SYS_ADMIN) the probe is asked from the agent's own namespace
(``probe_from="agent"``). Docker's embedded DNS (127.0.0.11) exists only inside the
container, so it is then reported as an error and never asked: 127.0.0.11 in the
agent's namespace is someone else (or nothing).

UDP sockets are connected to the server, so an ICMP port unreachable is an "error"
(connection refused) at once instead of a silent timeout. A truncated answer is asked
again over TCP (a socket made in the same namespace), under the same deadline.
Messages are built and parsed with dnspython; queries carry no EDNS (512-byte UDP).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import logging
import os
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Callable

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

log = logging.getLogger("tick_exporter.dns")

CLONE_NEWNET = 0x40000000
EMBEDDED = "127.0.0.11"  # Docker's embedded DNS: only inside a container's own namespace
PORT = 53
OWN_NETNS = "/proc/thread-self/ns/net"  # the calling thread's, whatever `proc` is

RESULTS = {
    dns.rcode.NOERROR: "ok",  # even with an empty answer
    dns.rcode.NXDOMAIN: "nxdomain",  # an answer: the resolver works, the name does not exist
    dns.rcode.SERVFAIL: "servfail",
    dns.rcode.REFUSED: "refused",
}


@dataclass(frozen=True)
class ProbeTarget:
    container: str          # name, for the results
    pid: int                # the container's main process on the host (docker inspect State.Pid); 0 = unknown
    servers: list[str]      # nameserver addresses from its resolv.conf (IPv4 or IPv6)
    queries: list[str]      # names to resolve


@dataclass(frozen=True)
class ProbeResult:
    container: str
    query: str
    server: str
    result: str             # "ok" | "nxdomain" | "servfail" | "refused" | "timeout" | "error"
    rcode: int              # DNS rcode of the answer; -1 when there was none (timeout, error)
    latency_ms: float       # time to the answer (or to giving up)
    error: str              # "" unless result is "error"/"timeout" (text of what happened)
    probe_from: str         # "container" (socket opened in its netns) | "agent" (fallback)


def result_of(rcode: int) -> str:
    """The result for an answer with ``rcode``: any rcode but the four named is "error"."""
    return RESULTS.get(rcode, "error")


# ---------------------------------------------------------------------------
# network namespaces

_libc = None


def _setns(fd: int) -> None:
    if hasattr(os, "setns"):  # Python 3.12+
        os.setns(fd, CLONE_NEWNET)
        return
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class StrandedError(RuntimeError):
    """The helper thread entered a container's namespace and could not get back."""


@contextlib.contextmanager
def _in_netns(path: str):
    """Run the block with the calling thread in the network namespace at ``path``.

    OSError if it cannot be entered (nothing changed then); StrandedError if the
    thread cannot return, after which the thread must not be used for anything."""
    own = os.open(OWN_NETNS, os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            try:
                _setns(own)
            except OSError as err:
                raise StrandedError(f"cannot return from {path} to the agent's network namespace: {err}") from err
    finally:
        os.close(own)


def _why(err: OSError) -> str:
    return err.strerror or str(err)


async def _on_fresh_thread(fn: Callable, orphan: Callable[[object], None]):
    """``fn()`` on a new thread (never a pooled one: it may change namespace); its
    result goes to ``orphan`` if the caller stopped waiting (cancelled)."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def deliver(ok: bool, value) -> None:
        if future.cancelled():
            if ok:
                orphan(value)
        elif ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def run() -> None:
        try:
            value = fn()
        except BaseException as err:  # noqa: BLE001 - handed to the awaiting task
            ok, value = False, err
        else:
            ok = True
        try:
            loop.call_soon_threadsafe(deliver, ok, value)
        except RuntimeError:  # the loop is closed: nobody will ever take them
            if ok:
                orphan(value)

    threading.Thread(target=run, name="dns-probe-netns", daemon=True).start()
    return await future


def _close_all(socks) -> None:
    for sock in socks or ():
        if sock is not None:
            sock.close()


# ---------------------------------------------------------------------------
# probes


@dataclass
class _Probe:
    target: ProbeTarget
    query: str
    server: str
    family: int = socket.AF_INET
    sockaddr: tuple = ()
    probe_from: str = "container"
    sock: socket.socket | None = None
    ready: ProbeResult | None = None  # decided without sending anything


@dataclass
class _TargetPlan:
    target: ProbeTarget
    probes: list[_Probe] = field(default_factory=list)


def _sockaddr(server: str) -> tuple[int, tuple]:
    address = ipaddress.ip_address(server)  # ValueError for anything but an address
    if address.version == 6:
        return socket.AF_INET6, (str(address), PORT, 0, 0)
    return socket.AF_INET, (str(address), PORT)


def _netns_path(proc: str, pid: int) -> str:
    return os.path.join(proc, str(pid), "ns", "net")


def _open_sockets(plans: list[_TargetPlan], proc: str) -> None:
    """On the helper thread: one UDP socket per probe, in its container's namespace
    where possible, else in the agent's (probe_from="agent"). Sets each probe's
    ``sock``/``probe_from``/``ready``; closes everything if it fails as a whole."""
    try:
        for plan in plans:
            probes = [p for p in plan.probes if p.ready is None]
            if not probes:
                continue
            pid = plan.target.pid
            if pid > 0:
                path = _netns_path(proc, pid)
                try:
                    with _in_netns(path):
                        _make_udp_sockets(probes)
                    continue
                except StrandedError:
                    raise
                except OSError as err:  # open/setns: the namespace could not be entered
                    why = f"cannot enter {path}: {_why(err)}"
            else:
                why = "pid unknown"
            log.debug("dns probe of %s from the agent's namespace: %s", plan.target.container, why)
            for p in probes:
                p.probe_from = "agent"
                if p.server == EMBEDDED:
                    p.ready = _embedded_unreachable(p, why)
            _make_udp_sockets([p for p in probes if p.ready is None])
    except BaseException:
        for plan in plans:
            _close_all(p.sock for p in plan.probes)
            for p in plan.probes:
                p.sock = None
        raise


def _make_udp_sockets(probes: list[_Probe]) -> None:
    """A UDP socket for each probe, in the calling thread's namespace; a probe whose
    socket cannot be made (EMFILE...) is an error, decided here."""
    for p in probes:
        try:
            p.sock = socket.socket(p.family, socket.SOCK_DGRAM)
        except OSError as err:
            p.ready = _result(p, "error", -1, 0.0, f"cannot open a socket: {_why(err)}")


def _embedded_unreachable(p: _Probe, why: str) -> ProbeResult:
    text = (f"{EMBEDDED} is Docker's embedded DNS, only reachable from inside the container's "
            f"network namespace, which the agent could not enter ({why}); not asked")
    return _result(p, "error", -1, 0.0, text)


def _result(p: _Probe, result: str, rcode: int, latency_ms: float, error: str = "") -> ProbeResult:
    return ProbeResult(p.target.container, p.query, p.server, result, rcode, latency_ms, error, p.probe_from)


def _tcp_socket(p: _Probe, proc: str) -> socket.socket:
    """On a helper thread: a TCP socket in the namespace the UDP one was made in."""
    if p.probe_from == "container":
        path = _netns_path(proc, p.target.pid)
        try:
            with _in_netns(path):
                return socket.socket(p.family, socket.SOCK_STREAM)
        except StrandedError:
            raise
        except OSError as err:
            raise OSError(err.errno, f"answer truncated; no TCP socket in {path}: {_why(err)}") from err
    return socket.socket(p.family, socket.SOCK_STREAM)


def _answers(query: dns.message.Message, wire: bytes) -> bool:
    """The header says this datagram is a response to ``query`` (checked before parsing,
    since a truncated answer may not parse as a whole)."""
    if len(wire) < 12:
        return False
    ident, flags = struct.unpack_from("!HH", wire)
    return ident == query.id and bool(flags & dns.flags.QR)


async def _recv_exactly(loop, sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = await loop.sock_recv(sock, n - len(data))
        if not chunk:
            raise ConnectionError("TCP connection closed before the whole answer")
        data += chunk
    return data


async def _ask_udp(loop, p: _Probe, query: dns.message.Message, wire: bytes):
    """The answer, or None when it came back truncated."""
    sock = p.sock
    sock.setblocking(False)
    await loop.sock_connect(sock, p.sockaddr)
    await loop.sock_sendall(sock, wire)
    while True:
        data = await loop.sock_recv(sock, 65535)
        if not _answers(query, data):
            continue  # a stray datagram: keep waiting for ours
        try:
            answer = dns.message.from_wire(data, raise_on_truncation=True)
        except dns.message.Truncated:
            return None
        if query.is_response(answer):
            return answer


async def _ask_tcp(loop, p: _Probe, query: dns.message.Message, wire: bytes, proc: str):
    sock = await _on_fresh_thread(lambda: _tcp_socket(p, proc), lambda s: s.close())
    try:
        sock.setblocking(False)
        await loop.sock_connect(sock, p.sockaddr)
        await loop.sock_sendall(sock, struct.pack("!H", len(wire)) + wire)
        while True:
            (size,) = struct.unpack("!H", await _recv_exactly(loop, sock, 2))
            answer = dns.message.from_wire(await _recv_exactly(loop, sock, size))
            if query.is_response(answer):
                return answer
    finally:
        sock.close()


async def _probe(p: _Probe, deadline: float, timeout: float, proc: str) -> ProbeResult:
    loop = asyncio.get_running_loop()
    started = loop.time()

    def ms() -> float:
        return (loop.time() - started) * 1000.0

    try:
        async with asyncio.timeout_at(deadline):
            query = dns.message.make_query(p.query, dns.rdatatype.A)
            wire = query.to_wire()
            answer = await _ask_udp(loop, p, query, wire)
            via = "UDP"
            if answer is None:
                via = "TCP"
                answer = await _ask_tcp(loop, p, query, wire, proc)
    except TimeoutError:
        return _result(p, "timeout", -1, ms(), f"no answer within {timeout:.1f} s")
    except ConnectionRefusedError:
        return _result(p, "error", -1, ms(), f"connection refused: nothing answers on {p.server} port {PORT}")
    except OSError as err:
        return _result(p, "error", -1, ms(), _why(err))
    except StrandedError as err:
        return _result(p, "error", -1, ms(), str(err))
    except dns.exception.DNSException as err:
        return _result(p, "error", -1, ms(), f"bad response: {err}")
    rcode = int(answer.rcode())
    result = result_of(rcode)
    error = "" if result != "error" else f"answered {dns.rcode.to_text(rcode)} over {via}"
    return _result(p, result, rcode, ms(), error)


async def probe_all(
    targets: list[ProbeTarget],
    timeout: float,
    skip_servers: set[str] = frozenset(),
    proc: str = "/proc",
) -> list[ProbeResult]:
    """One A query per target x query x server (servers in ``skip_servers`` are never
    asked and give no result), all at once; every probe is done by ``timeout`` seconds
    from now. Results in target, query, server order."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    skip = set(skip_servers)
    plans: list[_TargetPlan] = []
    for target in targets:
        plan = _TargetPlan(target)
        for query in target.queries:
            for server in target.servers:
                if server in skip:
                    continue
                p = _Probe(target, query, server)
                try:
                    p.family, p.sockaddr = _sockaddr(server)
                except ValueError:
                    p.ready = _result(p, "error", -1, 0.0, f"not an IP address: {server!r}")
                plan.probes.append(p)
        plans.append(plan)
    probes = [p for plan in plans for p in plan.probes]
    if not probes:
        return []

    def orphan(_value) -> None:  # cancelled while the helper ran
        _close_all(p.sock for p in probes)

    try:
        try:
            async with asyncio.timeout_at(deadline):
                await _on_fresh_thread(lambda: _open_sockets(plans, proc), orphan)
        except TimeoutError:
            return [p.ready or _result(p, "timeout", -1, timeout * 1000.0,
                                       f"no socket ready within {timeout:.1f} s")
                    for p in probes]
        except (OSError, StrandedError) as err:
            return [p.ready or _result(p, "error", -1, 0.0, f"cannot open a socket: {err}") for p in probes]

        async def one(p: _Probe) -> ProbeResult:
            if p.ready is not None:
                return p.ready
            try:
                return await _probe(p, deadline, timeout, proc)
            except Exception as err:  # noqa: BLE001 - one probe's bug must not lose the others
                log.exception("dns probe of %s via %s failed", p.target.container, p.server)
                return _result(p, "error", -1, 0.0, f"{type(err).__name__}: {err}")

        return list(await asyncio.gather(*(one(p) for p in probes)))
    finally:
        _close_all(p.sock for p in probes)
