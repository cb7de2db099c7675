"""The ways SystemdBus reads a service against a real systemd user manager give one and
the same record: the Gets, the one GetAll of a unit systemd is likely to have freed, and
the three Gets that suffice for a service not started since systemd loaded it (no
InvocationID: its ExecMain* are 0 without asking). And the shortcut is taken only there.
"""

import asyncio
import copy

import pytest

from exporter.sources.systemd_dbus import SystemdBus, UnitRecord, unit_path

SERVICES = {
    "reads-never": "ExecStart=/bin/true",                # loaded by its timer, never started
    "reads-ok": "ExecStart=/bin/true",
    "reads-fail": "ExecStart=/bin/sh -c 'exit 3'",
    "reads-killed": "ExecStart=/bin/sh -c 'kill -TERM $$$$'",
    "reads-running": "ExecStart=/bin/sleep 600",
}
MOVING = ("MemoryCurrent", "MemoryPeak")  # a running service's memory moves between reads


def install(manager):
    for name, body in SERVICES.items():
        manager.write_unit(f"{name}.service", f"[Service]\nType=oneshot\n{body}\n")
        # A timer far in the future keeps its service loaded (Triggers=) without starting it.
        manager.write_unit(f"{name}.timer", "[Timer]\nOnCalendar=2030-01-01 00:00:00\n")
    manager.daemon_reload()
    manager.systemctl("start", *(f"{n}.timer" for n in SERVICES))
    manager.systemctl("start", "reads-ok.service")
    for name in ("reads-fail", "reads-killed"):
        manager.systemctl("start", f"{name}.service", check=False)
    manager.systemctl("start", "--no-block", "reads-running.service")
    manager.wait_for_properties("reads-running.service", {"ActiveState": "activating"})


async def read_each_way(address):
    """{service: (record by _fill_service, by its GetAll, by every Get), calls to it}."""
    source = SystemdBus(address)
    calls = {}
    send = source._send

    async def counting(bus, destination, path, *rest):
        calls[path] = calls.get(path, 0) + 1
        return await send(bus, destination, path, *rest)

    source._send = counting
    try:
        await source._connection()
        units = await source.units_by_name([f"{n}.service" for n in SERVICES])
        out = {}
        for name, unit in units.items():
            calls.clear()
            plain, freed, every = (copy.deepcopy(unit) for _ in range(3))
            assert await source._fill_service(plain) == ""
            used = calls.get(unit_path(name), 0)
            assert await source._fill_service(freed, unloaded=True) == ""
            every.properties, error = await source._service_gets(
                unit_path(name), source.service_properties(unit), with_invocation=True)
            assert error == ""
            out[name] = (plain, freed, every, used)
        return out
    finally:
        await source.close()


def without_moving(record: UnitRecord) -> dict:
    return {k: v for k, v in record.properties.items() if k not in MOVING}


@pytest.fixture(scope="module")
def reads(user_manager):
    """read_each_way() of the installed services, once for the module's tests."""
    install(user_manager)
    try:
        yield asyncio.run(read_each_way(user_manager.bus_address))
    finally:
        user_manager.systemctl("stop", *(f"{n}.timer" for n in SERVICES), "reads-running.service", check=False)


def test_every_way_of_reading_a_service_gives_the_same_record(reads):
    assert set(reads) == {f"{n}.service" for n in SERVICES}
    for name, (plain, freed, every, _calls) in reads.items():
        assert without_moving(plain) == without_moving(every), name
        assert without_moving(freed) == without_moving(every), name
        assert set(plain.properties) == set(every.properties), name
    never = reads["reads-never.service"][0].properties
    assert never["InvocationID"] == "" and never["ExecMainStartTimestamp"] == 0
    assert reads["reads-fail.service"][0].properties["ExecMainStatus"] == 3
    assert reads["reads-running.service"][0].properties["InvocationID"] != ""


def test_only_a_service_never_started_is_read_with_the_three_gets(reads):
    calls = {name: used for name, (*_records, used) in reads.items()}
    # Result, InvocationID (and MemoryPeak where systemd >= 254 has it).
    assert calls["reads-never.service"] <= 3
    # A service that ran is asked each property: its ExecMain* are its last run's.
    for name in ("reads-ok.service", "reads-fail.service", "reads-killed.service"):
        assert calls[name] >= 7, (name, calls)
