"""A central InfluxDB across the network (issue 22): https with a CA of the user's own
(`output.influxdb.ca_file`), checked against real servers on loopback with a CA this test
makes (openssl): InfluxDB 1.6.7 (v1) and VictoriaMetrics (v2) over TLS; a certificate the
agent cannot trust is a clear error that keeps the spool; and the URL of a server behind
a path prefix (VictoriaMetrics' -http.pathPrefix, as behind a reverse proxy or a
VictoriaMetrics cluster's /insert/0/influx) works for both APIs."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lineproto import parse
from tests.services import InfluxDB1, VictoriaMetrics, wait_until

DB = "tick"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory) -> dict[str, str]:
    """A CA and a server certificate for 127.0.0.1 signed by it (and a second CA that
    signed nothing, to stand for "the wrong CA")."""
    d = tmp_path_factory.mktemp("ca")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=tick-exporter test CA", "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=another CA", "-keyout", "other.key", "-out", "other.pem", cwd=d)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "server.key", "-out", "server.csr", cwd=d)
    (d / "san.ext").write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.pem", cwd=d)
    return {name: str(d / f"{name}") for name in
            ("ca.pem", "other.pem", "server.pem", "server.key")}


def agent(tmp_path: Path, url: str, api: str, ca_file: str = "", **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICK_EXPORTER_")}
    env.update(TICK_EXPORTER_AGENT_INTERVAL="1s", TICK_EXPORTER_AGENT_HOSTNAME="edge-1",
               TICK_EXPORTER_AGENT_STATE_PATH=str(tmp_path / "state.json"),
               TICK_EXPORTER_SPOOL_PATH=str(tmp_path / "spool"),
               TICK_EXPORTER_TIMERS_ENABLED="false",
               TICK_EXPORTER_OUTPUT_INFLUXDB_URL=url, TICK_EXPORTER_OUTPUT_INFLUXDB_API=api,
               TICK_EXPORTER_OUTPUT_INFLUXDB_DATABASE=DB,
               TICK_EXPORTER_OUTPUT_INFLUXDB_RETRY_INITIAL="0.2s",
               TICK_EXPORTER_OUTPUT_INFLUXDB_RETRY_MAX="0.5s", **extra)
    if ca_file:
        env["TICK_EXPORTER_OUTPUT_INFLUXDB_CA_FILE"] = ca_file
    return env


def run_until(env: dict, tmp_path: Path, done, timeout: float = 40) -> str:
    """`run --output stdout --output influxdb` until done() holds; its stdout."""
    out_path = tmp_path / "run.out"
    with open(out_path, "w") as out, open(tmp_path / "run.err", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "exporter", "run", "--output", "stdout",
                                 "--output", "influxdb"], stdout=out, stderr=err, env=env)
        try:
            wait_until(done, timeout=timeout, interval=0.3,
                       message=lambda: f"the agent; stderr: {(tmp_path / 'run.err').read_text()[-1500:]}")
        finally:
            proc.terminate()
            proc.wait(60)
    return out_path.read_text()


def influx_output_points(tmp_path: Path):
    return [p for p in parse((tmp_path / "run.out").read_text())
            if p.measurement == "exporter" and p.tags.get("component") == "influxdb"]


def test_v1_https_with_the_users_ca(test_ca, tmp_path):
    with InfluxDB1(tls=(test_ca["server.pem"], test_ca["server.key"])) as influx:
        assert influx.url.startswith("https://")
        env = agent(tmp_path, influx.url, "v1", test_ca["ca.pem"])
        run_until(env, tmp_path, lambda: influx.rows(
            "SELECT up FROM exporter WHERE host = 'edge-1'", DB) if _has_db(influx) else False)


def _has_db(influx) -> bool:
    names = influx.query("SHOW DATABASES")["results"][0]["series"][0].get("values") or []
    return [DB] in names


@pytest.mark.parametrize("ca", ["none", "other"])
def test_an_untrusted_certificate_is_a_clear_error_and_keeps_the_spool(ca, test_ca, tmp_path):
    with InfluxDB1(tls=(test_ca["server.pem"], test_ca["server.key"])) as influx:
        env = agent(tmp_path, influx.url, "v1", test_ca["other.pem"] if ca == "other" else "")
        run_until(env, tmp_path, lambda: len([p for p in influx_output_points(tmp_path)
                                              if p.fields.get("last_error")]) >= 2)
        failed = [p for p in influx_output_points(tmp_path) if p.fields.get("last_error")][-1]
        assert "not trusted" in failed.fields["last_error"]
        assert "output.influxdb.ca_file" in failed.fields["last_error"]
        assert failed.fields["spool_points"] > 0
        assert not _has_db(influx)  # nothing was sent past the handshake


def test_v2_https_with_the_users_ca(test_ca, tmp_path):
    vm = VictoriaMetrics(extra_args=["-tls", f"-tlsCertFile={test_ca['server.pem']}",
                                     f"-tlsKeyFile={test_ca['server.key']}"])
    vm.url = vm.url.replace("http://", "https://")
    with vm:
        env = agent(tmp_path, vm.url, "v2", test_ca["ca.pem"],
                    TICK_EXPORTER_OUTPUT_INFLUXDB_BUCKET="b", TICK_EXPORTER_OUTPUT_INFLUXDB_ORG="o")
        run_until(env, tmp_path, lambda: vm.export('{__name__="exporter_up",host="edge-1"}'))


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_a_server_behind_a_path_prefix(api, tmp_path):
    vm = VictoriaMetrics(extra_args=["-http.pathPrefix=/central"])
    vm.url += "/central"
    with vm:
        env = agent(tmp_path, vm.url, api, TICK_EXPORTER_OUTPUT_INFLUXDB_BUCKET="b",
                    TICK_EXPORTER_OUTPUT_INFLUXDB_ORG="o")
        # Landed under the prefix, and the agent counts it as written (not as an error).
        run_until(env, tmp_path, lambda: vm.export('{__name__="exporter_up",host="edge-1"}')
                  and any(p.fields.get("written_points") for p in influx_output_points(tmp_path)))
        assert not any(p.fields.get("last_error") for p in influx_output_points(tmp_path))


def test_a_missing_ca_file_is_a_configuration_error(tmp_path):
    env = agent(tmp_path, "https://127.0.0.1:1", "v1", str(tmp_path / "nope.pem"))
    done = subprocess.run([sys.executable, "-m", "exporter", "check-config"], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 2 and "output.influxdb.ca_file" in done.stderr


OPENSSL = ("libssl", "libcrypto", "_ssl.", "_hashlib.")
# What shutil imports (bz2, lzma), which argparse's help formatter and tempfile import:
# a `run` needs neither (exporter/cli.py _Help, exporter/storage/files.py).
COMPRESSION = ("_bz2.", "_lzma.", "libbz2", "liblzma")


def _mapped(pid: int, names: tuple[str, ...]) -> set[str]:
    """The shared objects of these names mapped into a process."""
    with open(f"/proc/{pid}/maps") as maps:
        paths = {line.split()[-1] for line in maps if "/" in line}
    return {os.path.basename(p) for p in paths
            if any(name in os.path.basename(p) for name in names)}


@pytest.mark.parametrize("tls", [False, True])
def test_openssl_is_mapped_only_into_an_agent_that_speaks_tls(tls, test_ca, user_manager, tmp_path):
    """A `run` that reads timers (dbus-fast imports hashlib) and delivers to InfluxDB over
    http never maps libcrypto (~3.4 MiB of RSS, issue 18); over https it does, and
    delivers. The hashes it uses (D-Bus's DBUS_COOKIE_SHA1) have built-in fallbacks.
    Neither maps bz2 or lzma (0.8 MiB; shutil's, which nothing in `run` needs)."""
    with InfluxDB1(tls=(test_ca["server.pem"], test_ca["server.key"]) if tls else None) as influx:
        env = {**agent(tmp_path, influx.url, "v1", test_ca["ca.pem"] if tls else ""),
               "TICK_EXPORTER_TIMERS_ENABLED": "true",
               "TICK_EXPORTER_TIMERS_BUS": user_manager.bus_address}
        out_path = tmp_path / "run.out"
        with open(out_path, "w") as out, open(tmp_path / "run.err", "w") as err:
            proc = subprocess.Popen([sys.executable, "-m", "exporter", "run", "--output", "stdout",
                                     "--output", "influxdb"], stdout=out, stderr=err, env=env)
            try:
                # The timers collector sampled the bus (dbus-fast imported), and the
                # sample reached InfluxDB.
                wait_until(lambda: _has_db(influx) and influx.rows(
                    "SELECT success FROM exporter WHERE host = 'edge-1' AND component = 'timers' "
                    "AND success = true", DB),
                    timeout=60, interval=0.3,
                    message=lambda: f"the timers' sample in InfluxDB; stderr: {(tmp_path / 'run.err').read_text()[-1500:]}")
                mapped, compression = _mapped(proc.pid, OPENSSL), _mapped(proc.pid, COMPRESSION)
            finally:
                proc.terminate()
                proc.wait(60)
    assert " ERROR " not in (tmp_path / "run.err").read_text()
    assert compression == set()
    if tls:
        assert any(name.startswith(("libssl", "_ssl.")) for name in mapped), mapped
    else:
        assert mapped == set()
