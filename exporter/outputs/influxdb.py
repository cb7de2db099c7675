"""InfluxDB: api = "v2" through influxdb-client's write API (InfluxDB 2.x, 1.8+, and
servers that speak /api/v2/write such as VictoriaMetrics); api = "v1" through the classic
POST /write?db=&rp= with basic auth, for InfluxDB 1.x older than 1.8 (Debian's 1.6).

Both send the same line-protocol bytes, timestamps in nanoseconds.
"""

import base64
import gzip
import http.client
import json
import os
import urllib.parse

from .. import __version__
from ..config import InfluxDBConfig
from . import OutputError, parse_retry_after


def _direct(url: str, body: bytes, headers: dict, timeout: float, tls) -> tuple[int, str | None, bytes]:
    """POST over one http.client connection: (status, Retry-After, body). http.client, not
    urllib.request, which would bring in 35 more modules (tempfile and shutil among them:
    1.2 MiB of RSS) to do the same for a URL no proxy stands in front of."""
    split = urllib.parse.urlsplit(url)
    target = split.path + (f"?{split.query}" if split.query else "")
    if split.scheme == "https":
        connection = http.client.HTTPSConnection(split.hostname, split.port, timeout=timeout,
                                                 context=tls)
    else:
        connection = http.client.HTTPConnection(split.hostname, split.port, timeout=timeout)
    try:
        connection.request("POST", target or "/", body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.getheader("Retry-After"), response.read()
    finally:
        connection.close()


def _through_proxy(tls):
    """The same POST through urllib.request, which sends it by way of the proxy the
    environment names (http_proxy, https_proxy, no_proxy: urllib.request.getproxies()),
    read when this output is made (not urlopen()'s opener, made once per process)."""
    import urllib.error
    import urllib.request
    opener = urllib.request.build_opener(*([urllib.request.HTTPSHandler(context=tls)] if tls else []))

    def send(url: str, body: bytes, headers: dict, timeout: float, tls) -> tuple[int, str | None, bytes]:
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with opener.open(request, timeout=timeout) as response:
                return response.status, response.headers.get("Retry-After"), response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.headers.get("Retry-After"), err.read()
    return send


def _proxied(url: str) -> bool:
    """Whether the environment names a proxy for `url`'s scheme (or all_proxy), as
    urllib.request.getproxies_environment() reads it: any case; only then is urllib.request
    loaded, which decides with no_proxy whether this host really goes through it."""
    scheme = url.split(":", 1)[0].lower()
    names = {f"{scheme}_proxy", "all_proxy"}
    return any(name.lower() in names and value for name, value in os.environ.items())


def _v1_writer(config: InfluxDBConfig):
    query = {"db": config.database, "precision": "ns"}
    if config.retention_policy:
        query["rp"] = config.retention_policy
    url = f"{config.url}/write?{urllib.parse.urlencode(query)}"
    query_url = f"{config.url}/query"
    headers = {"User-Agent": f"tick-exporter/{__version__}"}
    write_headers = {"Content-Type": "text/plain; charset=utf-8"}
    if config.gzip:
        write_headers["Content-Encoding"] = "gzip"
    if config.username:
        credentials = f"{config.username}:{config.password}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode()
    # Verified always; against ca_file when given, else the system's trust store. Made
    # for https only: loading the system's store costs ~2 MiB, for nothing over http.
    tls, untrusted = None, ()
    if config.url.lower().startswith("https:"):
        import ssl  # only here: a `run` that speaks no TLS never loads OpenSSL (cli.py)
        tls = ssl.create_default_context(cafile=config.ca_file or None)
        untrusted = ssl.SSLCertVerificationError

    send = _through_proxy(tls) if _proxied(config.url) else _direct

    def post(target: str, body: bytes, content_headers: dict) -> bytes:
        try:
            status, retry_after, answer = send(target, body, {**headers, **content_headers},
                                               config.timeout, tls)
        except (OSError, http.client.HTTPException) as err:
            reason = getattr(err, "reason", None)  # urllib's URLError wraps the OSError
            if not isinstance(reason, BaseException):  # (an SSLError's is a str)
                reason = err
            if isinstance(reason, untrusted):
                raise OutputError(f"cannot reach {config.url}: its TLS certificate is not trusted "
                                  f"({reason.verify_message}); set output.influxdb.ca_file to the "
                                  "CA that signed it") from err
            raise OutputError(f"cannot reach {config.url}: {str(reason) or type(reason).__name__}") from err
        if not 200 <= status < 300:
            text = answer.decode(errors="replace").strip()
            path = target[len(config.url):].split("?")[0]
            raise OutputError(f"HTTP {status} from {config.url}{path}: {text}", status,
                              parse_retry_after(retry_after))
        return answer

    def create_database() -> None:
        # InfluxQL identifiers in double quotes; \ and " escaped inside them.
        name = config.database.replace("\\", "\\\\").replace('"', '\\"')
        form = urllib.parse.urlencode({"q": f'CREATE DATABASE "{name}"'}).encode()
        try:
            answer = post(query_url, form, {"Content-Type": "application/x-www-form-urlencoded"})
        except OutputError as err:
            # A user without the right to create databases (403) must not stop the
            # output: the samples wait in the spool until someone creates it.
            raise OutputError(f"database {config.database!r} not found and CREATE DATABASE "
                              f"failed: {err}", 404) from err
        # Statement errors come back as 200 with {"results":[{"error": ...}]}.
        try:
            error = json.loads(answer)["results"][0].get("error")
        except (ValueError, KeyError, IndexError, TypeError):
            error = f"unexpected answer {answer[:200]!r}"
        if error:
            raise OutputError(f"database {config.database!r} not found and CREATE DATABASE "
                              f"failed: {error}", 404)

    def write(data: bytes) -> None:
        body = gzip.compress(data) if config.gzip else data
        try:
            post(url, body, write_headers)
        except OutputError as err:
            # InfluxDB 1.x answers 404 {"error":"database not found: \"x\""} to a write
            # into a database nobody created (a fresh server, a wiped volume).
            if err.status != 404 or "database not found" not in str(err) or config.skip_database_creation:
                raise
            create_database()
            post(url, body, write_headers)

    return write, lambda: None


def _v2_writer(config: InfluxDBConfig):
    # Imported only when this output is enabled: influxdb-client is the agent's
    # heaviest dependency (~30 MB RSS).
    from influxdb_client import InfluxDBClient, WritePrecision
    from influxdb_client.client.write_api import SYNCHRONOUS
    from influxdb_client.rest import ApiException

    # Retries are the DeliveryWorker's (the spool makes them survive restarts), so the
    # client makes one attempt per write.
    client = InfluxDBClient(url=config.url, token=config.v2_token, org=config.org or "-",
                            timeout=int(config.timeout * 1000), enable_gzip=config.gzip,
                            retries=False, ssl_ca_cert=config.ca_file or None)
    api = client.write_api(write_options=SYNCHRONOUS)

    def write(data: bytes) -> None:
        try:  # bytes are sent as they are (influxdb-client's WriteApi._serialize)
            api.write(bucket=config.v2_bucket, org=config.org or "-", record=data,
                      write_precision=WritePrecision.NS)
        except ApiException as err:
            body = err.body.decode(errors="replace") if isinstance(err.body, bytes) else err.body
            headers = err.headers or {}
            raise OutputError(f"HTTP {err.status} from {config.url}/api/v2/write: "
                              f"{(body or err.reason or '').strip()}", err.status,
                              parse_retry_after(headers.get("Retry-After"))) from err
        except Exception as err:  # urllib3 raises its own connection errors
            raise OutputError(f"cannot reach {config.url}: {err}") from err

    return write, client.close


class InfluxDBOutput:
    name = "influxdb"

    def __init__(self, config: InfluxDBConfig):
        maker = _v2_writer if config.api == "v2" else _v1_writer
        self._write, self._close = maker(config)

    def write(self, data: bytes) -> None:
        """Send UTF-8 line protocol, as the spool holds it."""
        if data:
            self._write(data)

    def close(self) -> None:
        self._close()
