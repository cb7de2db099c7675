"""Secrets stay secret (issue 23): credentials in the InfluxDB URL work (v1 basic auth
against a real InfluxDB 1.6.7 with auth on; the v2 `user:password` token against a
loopback server that checks the Authorization header), and no secret, nor its
percent-encoded or base64 (Basic header) form, appears in anything the agent prints:
log lines at debug level, error fields written as points, `status`/`doctor` text and
--json, `check-config`, a refused configuration. Every failure path a user meets is
driven for real: bad credentials (401), a user without write rights (403), a closed
port, a TLS handshake against a plain-HTTP server, and a server answering 500."""

import base64
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from exporter import redact
from exporter.config import ConfigError, load_config
from tests.lineproto import parse
from tests.services import InfluxDB1, free_port, wait_until

USER = "writer"
SECRET = "Hunter2-s3cr3t p@ss/w+rd"  # '@', '/', ' ', '+' : every encoding differs
DB = "tick"


def encoded_forms(secret: str, user: str = USER) -> set[str]:
    return {secret, quote(secret, safe=""), quote_plus(secret),
            base64.b64encode(f"{user}:{secret}".encode()).decode(),
            base64.b64encode(secret.encode()).decode()}


def assert_no_secret(text: str, secret: str = SECRET) -> None:
    for form in encoded_forms(secret):
        assert form not in text, f"{form!r} leaked in:\n{text[-3000:]}"


def url_with(secret: str, base: str, user: str = USER) -> str:
    scheme, rest = base.split("://", 1)
    return f"{scheme}://{user}:{quote(secret, safe='')}@{rest}"


def write_config(tmp_path: Path, url: str, extra: str = "", api: str = "v1") -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(f"""
[agent]
interval = "1s"
hostname = "secrets-host"
state_path = "{tmp_path / 'state.json'}"
[timers]
enabled = false
[output.stdout]
enabled = true
[output.influxdb]
enabled = true
api = "{api}"
url = "{url}"
database = "{DB}"
retry_initial = "0.2s"
retry_max = "0.5s"
{extra}
[spool]
path = "{tmp_path / 'spool'}"
""")
    path.chmod(0o600)
    return path


def clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith("TICK_EXPORTER_")}


def command(config: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporter", *args, "--config", str(config),
                           "--log-level", "debug"], capture_output=True, text=True,
                          env=clean_env(), timeout=timeout)


def run_until(config: Path, done, timeout: float = 40) -> tuple[str, str]:
    """`run --output stdout --output influxdb` at debug level until done(points) holds."""
    out_path, err_path = config.parent / "run.out", config.parent / "run.err"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "run", "--config", str(config), "--log-level",
             "debug", "--output", "stdout", "--output", "influxdb"],
            stdout=out, stderr=err, text=True, env=clean_env())
        try:
            wait_until(lambda: done(parse(out_path.read_text())), timeout=timeout, interval=0.3,
                       message=lambda: f"the run's points; stderr: {err_path.read_text()[-1500:]}")
        finally:
            proc.terminate()
            proc.wait(60)
    return out_path.read_text(), err_path.read_text()


def influx_failed(points) -> bool:
    return any(p.measurement == "exporter" and p.tags.get("component") == "influxdb"
               and p.fields.get("last_error") for p in points)


def last_error(points) -> str:
    return [p for p in points if p.tags.get("component") == "influxdb"
            and p.fields.get("last_error")][-1].fields["last_error"]


def every_command(config: Path) -> str:
    """What the diagnostic commands print with this configuration."""
    texts = []
    for args in (("check-config",), ("status", "--json"), ("status",), ("doctor", "--json"),
                 ("health",)):
        done = command(config, *args)
        texts += [done.stdout, done.stderr]
    return "\n".join(texts)


# -- the configuration ---------------------------------------------------------------

@pytest.fixture(autouse=True)
def fresh_redaction():
    redact.clear()
    yield
    redact.clear()


def test_url_credentials_become_username_and_password():
    config = load_config(None, {"TICK_EXPORTER_OUTPUT_INFLUXDB_URL":
                                url_with(SECRET, "http://127.0.0.1:8086")})
    assert config.influxdb.url == "http://127.0.0.1:8086"
    assert (config.influxdb.username, config.influxdb.password) == (USER, SECRET)
    assert config.influxdb.v2_token == f"{USER}:{SECRET}"  # InfluxDB 1.8+'s v2 token form


def test_url_credentials_beside_username_are_refused_naming_the_keys():
    for extra in ({"TICK_EXPORTER_OUTPUT_INFLUXDB_USERNAME": "other"},
                  {"TICK_EXPORTER_OUTPUT_INFLUXDB_TOKEN": "tok-123456"}):
        with pytest.raises(ConfigError) as caught:
            load_config(None, {"TICK_EXPORTER_OUTPUT_INFLUXDB_ENABLED": "true",
                               "TICK_EXPORTER_OUTPUT_INFLUXDB_URL":
                                   url_with(SECRET, "http://127.0.0.1:8086"), **extra})
        text = "\n".join(caught.value.problems)
        assert "output.influxdb.url" in text and "output.influxdb.password" in text
        assert_no_secret(text)


def test_a_bad_url_or_a_bad_secret_value_is_never_echoed():
    with pytest.raises(ConfigError) as caught:
        load_config(None, {"TICK_EXPORTER_OUTPUT_INFLUXDB_URL": url_with(SECRET, "ftp://h:1"),
                           "TICK_EXPORTER_OUTPUT_INFLUXDB_PASSWORD": SECRET})
    text = "\n".join(caught.value.problems)
    assert "output.influxdb.url" in text
    assert_no_secret(text)


def test_redact_masks_every_form_and_any_url_userinfo():
    redact.register(SECRET, basic_user=USER)
    text = " ".join(encoded_forms(SECRET)) + " see https://someone:other@h.example/x"
    masked = redact.redact(text)
    assert_no_secret(masked)
    assert "someone" not in masked and "other@" not in masked
    assert "https://***@h.example/x" in masked


def test_refused_configuration_from_the_command_line_exits_2_without_the_secret(tmp_path):
    config = write_config(tmp_path, url_with(SECRET, "http://127.0.0.1:1"), 'username = "x"')
    done = command(config, "check-config")
    assert done.returncode == 2 and "output.influxdb.url" in done.stderr
    assert_no_secret(done.stdout + done.stderr)


def test_a_config_file_with_a_secret_that_others_can_read_is_warned_about_once(tmp_path):
    config = write_config(tmp_path, url_with(SECRET, "http://127.0.0.1:1"))
    assert "chmod" not in command(config, "check-config").stderr  # 0600: quiet
    config.chmod(0o644)
    done = command(config, "check-config")
    assert done.returncode == 0
    assert done.stderr.count(f"chmod 600 {config}") == 1
    assert_no_secret(done.stdout + done.stderr)


# -- for real: v1 against InfluxDB 1.6.7 with auth -----------------------------------

@pytest.fixture(scope="module")
def influx_auth():
    with InfluxDB1(auth_enabled=True) as server:
        server.create_database(DB)
        server.create_user(USER, SECRET)
        server.grant("WRITE", DB, USER)
        server.create_user("reader", SECRET)
        server.grant("READ", DB, "reader")
        yield server


def test_v1_credentials_in_the_url_write(influx_auth, tmp_path):
    config = write_config(tmp_path, url_with(SECRET, influx_auth.url))

    def landed(_points) -> bool:
        return bool(influx_auth.rows("SELECT up FROM exporter WHERE host = 'secrets-host'", DB))
    out, err = run_until(config, landed)
    assert_no_secret(out + err)
    assert_no_secret(every_command(config))


@pytest.mark.parametrize("case", ["401", "403", "closed-port", "tls", "500"])
def test_no_failure_path_shows_the_secret(case, influx_auth, tmp_path):
    with FakeServer(500) as fake:
        base, user, secret = {
            "401": (influx_auth.url, USER, SECRET[::-1]),  # a wrong password
            "403": (influx_auth.url, "reader", SECRET),    # may read, may not write
            "closed-port": (f"http://127.0.0.1:{free_port()}", USER, SECRET),
            "tls": (influx_auth.url.replace("http://", "https://"), USER, SECRET),
            "500": (fake.url, USER, SECRET),
        }[case]
        config = write_config(tmp_path, url_with(secret, base, user))
        out, err = run_until(config, influx_failed)
        error = last_error(parse(out))
        expected = {"401": "401", "403": "403", "closed-port": "cannot reach",
                    "tls": "cannot reach", "500": "500"}[case]
        assert expected in error, error
        assert f"{user}:***@" not in error and "***@" not in error  # the URL is shown bare
        for text in (out, err, every_command(config)):
            assert_no_secret(text, secret)
            for form in encoded_forms(secret, user):
                assert form not in text


# -- v2: the token form, checked by a loopback server --------------------------------

class FakeServer:
    """A loopback HTTP server answering every POST with `status` (204 when the
    Authorization header equals `accept`), recording the headers it got."""

    def __init__(self, status: int, accept: str | None = None):
        self.status, self.accept, self.seen = status, accept, []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                auth = self.headers.get("Authorization", "")
                outer.seen.append(auth)
                ok = outer.accept is not None and auth == outer.accept
                code = 204 if ok else (401 if outer.accept is not None else outer.status)
                self.send_response(code)
                body = b"" if code == 204 else b'{"code":"unauthorized","message":"nope"}'
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("right", [True, False])
def test_v2_token_from_url_credentials(right, tmp_path):
    with FakeServer(401, accept=f"Token {USER}:{SECRET}") as fake:
        secret = SECRET if right else SECRET.upper()
        config = write_config(tmp_path, url_with(secret, fake.url), api="v2")

        def answered(points) -> bool:
            return any(p.tags.get("component") == "influxdb"
                       and (p.fields.get("written_points") if right else p.fields.get("last_error"))
                       for p in points)
        out, err = run_until(config, answered)
        assert fake.seen and all(a == f"Token {USER}:{secret}" for a in fake.seen)
        if not right:
            assert "401" in last_error(parse(out))
        assert_no_secret(out + err, secret)
        assert_no_secret(every_command(config), secret)


def test_v2_token_key_is_redacted_too(tmp_path):
    token = "tok/EN+value=="  # as an InfluxDB 2 token looks (base64 with padding)
    with FakeServer(403, accept="Token something-else") as fake:
        config = write_config(tmp_path, fake.url, f'token = "{token}"\nbucket = "b"', api="v2")
        out, err = run_until(config, influx_failed)
        texts = out + err + every_command(config)
        for form in (token, quote(token, safe=""), base64.b64encode(token.encode()).decode()):
            assert form not in texts


def test_alert_handler_secrets_are_given_to_kapacitor_alone():
    """Slack and SMTP settings live in the compose environment: only the kapacitor
    service gets them, so no agent or other service can log them."""
    import yaml
    compose = yaml.safe_load((Path(__file__).parents[1] / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        environment = service.get("environment") or {}
        keys = environment if isinstance(environment, dict) else [e.split("=")[0] for e in environment]
        handler_keys = [k for k in keys if "SLACK" in k or "SMTP" in k]
        assert not handler_keys or name == "kapacitor", (name, handler_keys)
        assert "env_file" not in service, name  # a whole .env would carry them too
