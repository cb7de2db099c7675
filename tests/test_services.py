"""The test harness itself, against the real services (tests/services.py)."""

import asyncio
import socket
import time
import uuid
from pathlib import Path

import pytest
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from tests.services import HTTPStatusError, InfluxDB1, UserManager, free_port, http_request


def _uid() -> str:
    return uuid.uuid4().hex[:10]


def _gone(pid: int) -> bool:
    """True if ``pid`` no longer runs (absent, or a zombie nobody reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_free_port_is_bindable_on_loopback():
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


# ---------------------------------------------------------------- systemd --user


def test_timer_runs_failing_service(user_manager):
    name = f"harness-fail-{_uid()}"
    user_manager.write_unit(f"{name}.service", "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'exit 3'\n")
    user_manager.write_unit(f"{name}.timer", "[Timer]\nOnCalendar=*:*:0/5\nAccuracySec=1s\n")
    user_manager.daemon_reload()
    try:
        user_manager.systemctl("start", f"{name}.timer")
        assert user_manager.show(f"{name}.timer", ["ActiveState"]) == {"ActiveState": "active"}

        seen = user_manager.wait_for_properties(
            f"{name}.service",
            {"Result": "exit-code", "ExecMainCode": "1", "ExecMainStatus": "3"},
            timeout=12,
        )
        assert seen == {"Result": "exit-code", "ExecMainCode": "1", "ExecMainStatus": "3"}

        started = user_manager.show(f"{name}.service", ["ExecMainStartTimestamp"], timestamp="unix")
        assert started["ExecMainStartTimestamp"].startswith("@")
        assert abs(int(started["ExecMainStartTimestamp"][1:]) - time.time()) < 20

        last_trigger_us = user_manager.bus_property(f"{name}.timer", "Timer", "LastTriggerUSec")
        assert abs(last_trigger_us / 1e6 - time.time()) < 20
        next_us = user_manager.bus_property(f"{name}.timer", "Timer", "NextElapseUSecRealtime")
        assert 0 < next_us / 1e6 - time.time() <= 6
    finally:
        user_manager.systemctl("stop", f"{name}.timer", f"{name}.service", check=False)
        user_manager.remove_unit(f"{name}.service")
        user_manager.remove_unit(f"{name}.timer")
        user_manager.daemon_reload()


def test_bus_address_serves_systemd_to_a_dbus_client(user_manager):
    async def list_unit_names():
        bus = await MessageBus(bus_address=user_manager.bus_address).connect()
        try:
            reply = await bus.call(
                Message(
                    destination="org.freedesktop.systemd1",
                    path="/org/freedesktop/systemd1",
                    interface="org.freedesktop.systemd1.Manager",
                    member="ListUnits",
                )
            )
        finally:
            bus.disconnect()
        assert reply.message_type == MessageType.METHOD_RETURN, reply.body
        return {unit[0] for unit in reply.body[0]}

    names = asyncio.run(list_unit_names())
    assert {"dbus.socket", "timers.target"} <= names


def test_user_managers_are_isolated_from_each_other(user_manager):
    # Same unit name in two managers: stopping one must leave the other's
    # service and dbus-daemon alone, and must leave nothing of its own behind.
    unit = f"harness-sleep-{_uid()}.service"
    text = "[Service]\nExecStart=/bin/sleep 300\n"
    user_manager.write_unit(unit, text)
    user_manager.daemon_reload()
    try:
        user_manager.systemctl("start", unit)
        ours = int(user_manager.show(unit, ["MainPID"])["MainPID"])
        assert ours > 0

        with UserManager() as other:
            assert other.bus_address != user_manager.bus_address
            other.write_unit(unit, text)
            other.daemon_reload()
            other.systemctl("start", unit)
            theirs = int(other.show(unit, ["MainPID"])["MainPID"])
            assert theirs > 0 and theirs != ours
            other_root, other_cgroup = other.root, other.cgroup_name

        assert _gone(theirs)
        assert not other_root.exists()
        cgroup_root = Path("/sys/fs/cgroup")
        assert not (cgroup_root / other_cgroup).exists()
        assert not list(cgroup_root.glob(f"*/{other_cgroup}"))

        assert not _gone(ours)
        assert user_manager.show(unit, ["ActiveState"]) == {"ActiveState": "active"}
        assert user_manager.ready(), "our bus stopped answering when the other manager exited"
    finally:
        user_manager.systemctl("stop", unit, check=False)
        user_manager.remove_unit(unit)
        user_manager.daemon_reload()


# ---------------------------------------------------------------- InfluxDB 1.x


def test_influxdb_round_trips_a_point(influxdb):
    db = f"harness_{_uid()}"
    influxdb.create_database(db)
    try:
        ts = 1_700_000_000_123_456_789
        status, body = influxdb.write(f'cpu,host=a usage=1.5,count=3i,ok=true,msg="hi" {ts}', db)
        assert (status, body) == (204, "")
        rows = influxdb.rows("SELECT * FROM cpu", db, epoch="ns")
        assert rows == [
            {"_measurement": "cpu", "time": ts, "count": 3, "host": "a", "msg": "hi", "ok": True, "usage": 1.5}
        ]
        assert db in str(influxdb.query("SHOW DATABASES"))
    finally:
        influxdb.drop_database(db)
    assert db not in str(influxdb.query("SHOW DATABASES"))
    status, body = influxdb.write("cpu usage=1", db)
    assert status == 404 and "database not found" in body


def test_influxdb_1_6_has_no_v2_write_endpoint(influxdb):
    # influxdb-client's write API posts here; influxd 1.6 only has /write.
    status, _ = http_request("POST", influxdb.url + "/api/v2/write", params={"bucket": "x", "org": "x"}, data="m f=1")
    assert status == 404


def test_influxdb_stop_start_keeps_data_and_port():
    with InfluxDB1() as server:
        port, root = server.port, server.root
        server.create_database("keep")
        assert server.write("m,t=x v=42i 1000000000", "keep")[0] == 204
        server.stop()
        assert not server.running and not server.ping()
        with pytest.raises(OSError):
            http_request("GET", server.url + "/ping", timeout=2)

        server.start()
        assert server.port == port and server.url == f"http://127.0.0.1:{port}"
        assert server.rows("SELECT v FROM m", "keep", epoch="s") == [{"_measurement": "m", "time": 1, "v": 42}]
        pid = server.proc.pid
    assert not root.exists()
    assert _gone(pid)


def test_influxdb_with_auth():
    with InfluxDB1(auth_enabled=True) as server:
        with pytest.raises(HTTPStatusError) as e:
            server.query("SHOW DATABASES", auth=None)
        assert e.value.status == 401
        server.create_database("secure")
        server.create_user("writer", "pw")
        server.grant("WRITE", "secure", "writer")
        assert server.write("m v=1 1", "secure", auth=("writer", "pw"))[0] == 204
        assert server.write("m v=1 1", "secure", auth=("writer", "wrong"))[0] == 401
        assert server.rows("SELECT v FROM m", "secure", epoch="ns") == [{"_measurement": "m", "time": 1, "v": 1}]


# ---------------------------------------------------------------- VictoriaMetrics


def test_victoria_round_trips_a_v2_write(victoria):
    m = f"harness_{_uid()}"
    ts = time.time_ns()
    assert victoria.write_v2(f"{m},host=a f=1.5 {ts}", bucket="mydb") == (204, "")
    series = victoria.wait_export(f'{{__name__="{m}_f"}}')
    assert series == [{"metric": {"__name__": f"{m}_f", "host": "a"}, "values": [1.5], "timestamps": [ts // 1_000_000]}]


def test_victoria_line_protocol_mapping(victoria):
    """Keeps the mapping documented in VictoriaMetrics' docstring honest."""
    p = f"map_{_uid()}"
    ts = time.time_ns()
    ms = ts // 1_000_000
    assert victoria.write_v2(
        [
            f'{p}_a,host=h1 f=1.5,i=7i,b=true,bf=false,num="12.5",s="str" {ts}',
            f"{p}_single,__name__=zz value=2 {ts}",
            f"{p}\\ sp,tag\\ k=v\\ 1 fi\\ eld=1 {ts}",
            f"{p}_sec x=1 {ts // 1_000_000_000}",
        ],
        bucket="mydb",
    )[0] == 204
    # no precision arg: VictoriaMetrics guesses the unit from the magnitude
    assert victoria.write_v2(f"{p}_guess_s x=1 {ts // 1_000_000_000}", bucket="b", precision=None)[0] == 204
    assert victoria.write_v2(f"{p}_guess_ms x=1 {ms}", bucket="b", precision=None)[0] == 204
    assert victoria.write_v1(f"{p}_v1,host=h2 f=4 {ts}", db="otherdb")[0] == 204
    assert victoria.write_v1(f"{p}_v1tag,db=tagdb f=5 {ts}", db="otherdb")[0] == 204
    assert victoria.write_v2(f"{p}_prec x=1 {ts // 1_000_000_000}", bucket="b", precision="s")[0] == 204

    expected = {
        f"{p}_a_f": ({"host": "h1"}, 1.5, ms),
        f"{p}_a_i": ({"host": "h1"}, 7, ms),
        f"{p}_a_b": ({"host": "h1"}, 1, ms),
        f"{p}_a_bf": ({"host": "h1"}, 0, ms),
        f"{p}_a_num": ({"host": "h1"}, 12.5, ms),
        f"{p}_a_s": ({"host": "h1"}, 0, ms),
        f"{p}_single_value": ({}, 2, ms),
        f"{p} sp_fi eld": ({"tag k": "v 1"}, 1, ms),
        f"{p}_sec_x": ({}, 1, ts // 1_000_000_000_000_000),  # seconds taken as ns: 1970
        f"{p}_guess_s_x": ({}, 1, ms // 1000 * 1000),
        f"{p}_guess_ms_x": ({}, 1, ms),
        f"{p}_v1_f": ({"db": "otherdb", "host": "h2"}, 4, ms),
        f"{p}_v1tag_f": ({"db": "tagdb"}, 5, ms),
        f"{p}_prec_x": ({}, 1, ms // 1000 * 1000),
    }
    series = victoria.wait_export(
        f'{{__name__=~"{p}.*"}}', lambda s: len(s) >= len(expected), timeout=20
    )
    got = {s["metric"]["__name__"]: s for s in series}
    assert set(got) == set(expected)
    for name, (labels, value, t) in expected.items():
        assert got[name]["metric"] == {"__name__": name, **labels}, name
        assert got[name]["values"] == [value], name
        assert got[name]["timestamps"] == [t], name
