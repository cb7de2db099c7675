"""api = "v1" creates a missing database on the real InfluxDB 1.6.7, as Telegraf's
outputs.influxdb does, so a fresh stack (or a wiped volume) needs no manual step."""

import json
import urllib.parse
import urllib.request

import pytest

from exporter.config import load_config
from exporter.outputs import OutputError
from exporter.outputs.influxdb import InfluxDBOutput


def output(influxdb, database, **extra):
    env = {"TICK_EXPORTER_OUTPUT_INFLUXDB_URL": influxdb.url,
           "TICK_EXPORTER_OUTPUT_INFLUXDB_API": "v1",
           "TICK_EXPORTER_OUTPUT_INFLUXDB_DATABASE": database,
           **{f"TICK_EXPORTER_OUTPUT_INFLUXDB_{k.upper()}": v for k, v in extra.items()}}
    return InfluxDBOutput(load_config(None, env).influxdb)


def select(influxdb, database, q):
    url = f"{influxdb.url}/query?" + urllib.parse.urlencode({"db": database, "q": q})
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)["results"][0]


def databases(influxdb):
    series = select(influxdb, "", "SHOW DATABASES").get("series", [{}])[0]
    return {row[0] for row in series.get("values", [])}


@pytest.mark.parametrize("gzip", ["false", "true"])
def test_missing_database_is_created_and_the_write_kept(influxdb, gzip):
    database = f'fresh "db" {gzip}'  # quotes in the name
    assert database not in databases(influxdb)
    output(influxdb, database, gzip=gzip).write(b"m,host=a value=1i 1700000000000000000\n")
    assert database in databases(influxdb)
    assert select(influxdb, database, "SELECT value FROM m")["series"][0]["values"] == [
        ["2023-11-14T22:13:20Z", 1]]


def test_skip_database_creation_reports_the_404(influxdb):
    with pytest.raises(OutputError) as caught:
        output(influxdb, "never-created", skip_database_creation="true").write(b"m value=1i\n")
    assert caught.value.status == 404 and caught.value.kind == "retry"
    assert 'database not found: \\"never-created\\"' in str(caught.value)
    assert str(caught.value).startswith(f"HTTP 404 from {influxdb.url}/write: ")
    assert "never-created" not in databases(influxdb)


def test_a_database_that_cannot_be_created_says_why(influxdb):
    with pytest.raises(OutputError) as caught:
        output(influxdb, "back\\slash").write(b"m value=1i\n")
    assert caught.value.status == 404 and caught.value.kind == "retry"  # kept in the spool
    assert str(caught.value) == ("database 'back\\\\slash' not found and CREATE DATABASE failed: "
                                 "invalid name")


def test_a_user_who_may_not_create_databases_keeps_the_output_retrying():
    """With auth on, a non-admin user's CREATE DATABASE is refused with 403. That must
    not read as refused credentials (which stop the output): it stays a retry."""
    from tests.services import InfluxDB1
    with InfluxDB1(auth_enabled=True) as server:
        server.query("CREATE USER \"writer\" WITH PASSWORD 'pw'")
        with pytest.raises(OutputError) as caught:
            output(server, "not-yet", username="writer", password="pw").write(b"m value=1i\n")
    assert caught.value.status == 404 and caught.value.kind == "retry"
    assert str(caught.value).startswith("database 'not-yet' not found and CREATE DATABASE failed: HTTP 403")
