"""influxdb/tick-users.sh, the central stack's InfluxDB users (issue 22), run as it is
shipped against a real InfluxDB 1.6.7 with authentication on, through Debian's `influx`
CLI (the same CLI the influxdb image has): each user can do what it is for and nothing
more, a second run changes nothing but passwords, and a placeholder or missing password
is refused before anything is created."""

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.services import HTTPStatusError, InfluxDB1

SCRIPT = Path(__file__).resolve().parent.parent / "influxdb" / "tick-users.sh"
# Quotes and backslashes in the others' passwords are escaped by the script.
PASSWORDS = {"INFLUXDB_ADMIN_PASSWORD": "admin-pass-1", "INFLUXDB_AGENT_PASSWORD": "agent-pw-1",
             "INFLUXDB_GRAFANA_PASSWORD": "graf'ana\\pw 1", "INFLUXDB_KAPACITOR_PASSWORD": "kapacitor-pw-1"}
ADMIN = ("admin", PASSWORDS["INFLUXDB_ADMIN_PASSWORD"])
AGENT = ("tick-agent", PASSWORDS["INFLUXDB_AGENT_PASSWORD"])
GRAFANA = ("grafana", PASSWORDS["INFLUXDB_GRAFANA_PASSWORD"])
KAPACITOR = ("kapacitor", PASSWORDS["INFLUXDB_KAPACITOR_PASSWORD"])


def script(server, *args, source=False, **env):
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("INFLUX", "TICK_"))}
    environment.update(PASSWORDS, TICK_INFLUX_PORT=str(server.port), **env)
    command = (["bash", "-c", f'set -e; . "{SCRIPT}"; echo sourced-and-returned'] if source
               else ["bash", str(SCRIPT), *args])
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=60)


def ok(query_result):
    result = query_result["results"][0]
    assert "error" not in result, result
    return result


@pytest.fixture
def fresh():
    """A first start: authentication on, no user at all."""
    with InfluxDB1(auth_enabled=True, create_admin=False) as server:
        yield server


def test_each_user_has_exactly_its_rights(fresh):
    done = script(fresh)
    assert done.returncode == 0, done.stderr
    assert "created the admin admin" in done.stderr
    assert ADMIN[1] not in done.stdout + done.stderr          # no password in its output
    users = {u: admin for u, admin in ok(fresh.query("SHOW USERS", auth=ADMIN))["series"][0]["values"]}
    assert users == {"admin": True, "tick-agent": False, "grafana": False, "kapacitor": True}

    # the agent (and Telegraf) writes, and cannot read, not even what it wrote
    assert fresh.write("probe,host=pi1 v=1", "tick", auth=AGENT) == (204, "")
    with pytest.raises(HTTPStatusError, match="403"):
        fresh.query("SELECT * FROM probe", "tick", auth=AGENT)
    with pytest.raises(HTTPStatusError, match="403"):
        fresh.query("CREATE DATABASE other", auth=AGENT)
    # Grafana reads, and cannot write
    rows = ok(fresh.query("SELECT v FROM probe", "tick", auth=GRAFANA))["series"][0]["values"]
    assert [v for _, v in rows] == [1]
    status, body = fresh.write("probe,host=pi1 v=2", "tick", auth=GRAFANA)
    assert status == 403 and "not authorized" in body
    # Kapacitor can create (and drop) its subscription: admin only in InfluxDB 1.x
    sub = f"kapacitor-{uuid.uuid4().hex[:8]}"
    ok(fresh.query(f'CREATE SUBSCRIPTION "{sub}" ON "tick"."autogen" DESTINATIONS ANY '
                   "'http://kapacitor:9092'", auth=KAPACITOR))
    listed = ok(fresh.query("SHOW SUBSCRIPTIONS", auth=KAPACITOR))["series"]
    assert [s for s in listed if s["name"] == "tick" and any(v[1] == sub for v in s["values"])]
    ok(fresh.query(f'DROP SUBSCRIPTION "{sub}" ON "tick"."autogen"', auth=KAPACITOR))
    # and the agent cannot
    with pytest.raises(HTTPStatusError, match="403"):
        fresh.query(f'CREATE SUBSCRIPTION "x" ON "tick"."autogen" DESTINATIONS ANY '
                    "'http://kapacitor:9092'", auth=AGENT)
    assert script(fresh, "--check").returncode == 0


def test_a_second_run_is_idempotent_and_resets_rights_and_passwords(fresh):
    assert script(fresh).returncode == 0
    fresh.query('GRANT ALL ON "tick" TO "tick-agent"', auth=ADMIN)   # someone widened it
    again = script(fresh, INFLUXDB_GRAFANA_PASSWORD="grafana-pw-2")  # .env changed
    assert again.returncode == 0, again.stderr
    assert "created" not in again.stderr
    users = ok(fresh.query("SHOW USERS", auth=ADMIN))["series"][0]["values"]
    assert sorted(u for u, _ in users) == ["admin", "grafana", "kapacitor", "tick-agent"]
    grants = ok(fresh.query('SHOW GRANTS FOR "tick-agent"', auth=ADMIN))["series"][0]["values"]
    assert grants == [["tick", "WRITE"]]
    with pytest.raises(HTTPStatusError, match="401"):
        fresh.query("SHOW DATABASES", auth=GRAFANA)                 # the old password
    ok(fresh.query("SHOW DATABASES", auth=("grafana", "grafana-pw-2")))


def test_run_by_the_images_init_after_it_made_the_admin():
    """The influxdb image creates INFLUXDB_ADMIN_USER, then sources the script."""
    with InfluxDB1(auth_enabled=True, admin_user="root", admin_password="root-pw-1") as server:
        done = script(server, source=True, INFLUXDB_ADMIN_USER="root",
                      INFLUXDB_ADMIN_PASSWORD="root-pw-1")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "sourced-and-returned" and "created the admin" not in done.stderr
        assert server.write("probe v=1", "tick", auth=AGENT) == (204, "")
        # sourced under set -e, a refusal fails the image's init (the first start)
        refused = script(server, source=True, INFLUXDB_ADMIN_USER="root",
                         INFLUXDB_ADMIN_PASSWORD="root-pw-1", INFLUXDB_AGENT_PASSWORD="change-me")
        assert refused.returncode != 0 and "sourced-and-returned" not in refused.stdout


@pytest.mark.parametrize("variable", sorted(PASSWORDS))
@pytest.mark.parametrize("value", ["change-me", ""])
def test_a_placeholder_or_empty_password_is_refused_before_anything_changes(fresh, variable, value):
    done = script(fresh, **{variable: value})
    assert done.returncode == 1
    assert variable in done.stderr and ("placeholder" in done.stderr if value else "not set" in done.stderr)
    # nothing was created: the server still has no user at all
    with pytest.raises(HTTPStatusError, match="create admin user first"):
        fresh.query("SHOW USERS", auth=None)
    assert script(fresh, "--check", **{variable: value}).returncode == 1


@pytest.mark.parametrize("password", ["it's", "back\\slash", "two words"])
def test_an_admin_password_the_images_init_cannot_quote_is_refused(fresh, password):
    done = script(fresh, INFLUXDB_ADMIN_PASSWORD=password)
    assert done.returncode == 1 and "may not hold" in done.stderr
    with pytest.raises(HTTPStatusError, match="create admin user first"):
        fresh.query("SHOW USERS", auth=None)


def test_a_wrong_admin_password_is_said_and_changes_nothing(fresh):
    assert script(fresh).returncode == 0
    done = script(fresh, INFLUXDB_ADMIN_PASSWORD="not-the-password")
    assert done.returncode == 1 and "cannot log in with INFLUXDB_ADMIN_PASSWORD" in done.stderr
    assert script(fresh, "--check").returncode == 0
