"""Event-driven timer reads (issue 9) against a real systemd user manager: the records
SystemdBus keeps between samples, updated only from systemd's signals, must equal a
fresh full read, field by field, after a storm of starts, stops, failures, kills,
daemon-reloads, a unit file added and one removed. What no signal announces is healed
by the periodic full read and by a reconnect.
"""

import asyncio
import copy
import subprocess
import time
from dataclasses import asdict

from exporter.clock import Now
from exporter.collectors.timers import TimersCollector
from exporter.config import load_config
from exporter.point import to_line_protocol
from exporter.sources.systemd_dbus import (UNSIGNALED_SERVICE_PROPERTIES, DBusCallError, SystemdBus,
                                           is_running)

HOUR = 3600.0  # resync_interval: no periodic full read during the test
EVERY_S = "OnCalendar=*:*:*\nAccuracySec=1ms\n"
UNITS = {
    # name: (service body, timer body)
    "cache-ok": ("ExecStart=/bin/true", EVERY_S),
    "cache-fail": ("ExecStart=/bin/sh -c 'exit 3'", EVERY_S),
    "cache-killed": ("ExecStart=/bin/sh -c 'kill -TERM $$$$'", "OnCalendar=*:*:0/2\nAccuracySec=1ms\n"),
    "cache-slow": ("ExecStart=/bin/sleep 600", EVERY_S),
    "cache-mono": ("ExecStart=/bin/true", "OnActiveSec=1s\nOnUnitActiveSec=2s\nAccuracySec=1ms\n"),
    "cache-manual": ("ExecStart=/bin/sh -c 'exit $$(( $$(date +%%s) %% 2 ))'",
                     "OnCalendar=2030-01-01 00:00:00\n"),
    "cache-doomed": ("ExecStart=/bin/true", EVERY_S),
}
LATE = ("ExecStart=/bin/sh -c 'exit 7'", EVERY_S)


def install(manager, name, service, timer):
    manager.write_unit(f"{name}.service", f"[Service]\nType=oneshot\n{service}\n")
    manager.write_unit(f"{name}.timer", f"[Timer]\n{timer}")


async def systemctl(manager, *args):
    # In a thread: the event loop keeps taking signals in meanwhile, as in the agent.
    await asyncio.to_thread(manager.systemctl, *args, check=False)


async def full_read(address):
    source = SystemdBus(address)
    try:
        return await source.read_timers()
    finally:
        await source.close()


async def settle(source, timeout=15.0):
    """Sample until a sample reads no unit whole (the units a full read loaded have been
    freed again and found unchanged; other tests' timers may still be firing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        read = source.stats.units_read
        snapshot = await source.read_timers(HOUR)
        if source.stats.units_read == read:
            return snapshot
        await asyncio.sleep(0.2)
    raise AssertionError("every sample kept reading units again")


def view(snapshot, prefix):
    """The records of our timers as plain data. The properties systemd never signals
    are live gauges (two reads a millisecond apart differ): only whether each read has
    them is compared, and they are set to one value for the collector's output."""
    records, gauges = {}, {}
    for record in snapshot.timers:
        if not record.timer.name.startswith(prefix):
            continue
        record = copy.deepcopy(record)
        service = record.service
        if service is not None and is_running(service.active_state, service.sub_state):
            for prop in UNSIGNALED_SERVICE_PROPERTIES:
                if prop in service.properties:
                    gauges[(service.name, prop)] = service.properties[prop]
                    service.properties[prop] = 1 << 20
        records[record.timer.name] = record
    return records, gauges


def output(records, manager_kind, now):
    config = load_config(None, {"TICK_EXPORTER_TIMERS_TIMEZONE": "UTC"}).timers
    from exporter.sources.systemd_dbus import TimersSnapshot
    snapshot = TimersSnapshot(manager_kind, [records[name] for name in sorted(records)])
    return to_line_protocol(TimersCollector(None, config, "cachehost").points(snapshot, now))


async def settled_comparison(source, address, prefix):
    """(cached records, full-read records, their outputs), taken while nothing changed:
    a full read before and after the cached one must agree, else try again."""
    for _ in range(20):
        before, _ = view(await full_read(address), prefix)
        cached_snapshot = await source.read_timers(HOUR)
        after, after_gauges = view(await full_read(address), prefix)
        cached, cached_gauges = view(cached_snapshot, prefix)
        if asdict_all(before) == asdict_all(after):
            assert cached_gauges.keys() == after_gauges.keys()
            now = Now.read()
            return cached, after, output(cached, cached_snapshot.manager, now), output(
                after, cached_snapshot.manager, now)
        await asyncio.sleep(0.3)
    raise AssertionError("the units kept changing; no settled moment to compare")


def asdict_all(records):
    return {name: asdict(record) for name, record in records.items()}


def assert_same(cached, full):
    assert sorted(cached) == sorted(full)
    for name in full:
        want, got = asdict(full[name]), asdict(cached[name])
        for key in ("armed_since_us", "service_error"):
            assert got[key] == want[key], (name, key)
        for side in ("timer", "service"):
            if want[side] is None:
                assert got[side] is None, (name, side)
                continue
            for key in ("name", "load_state", "active_state", "sub_state", "job_id"):
                assert got[side][key] == want[side][key], (name, side, key)
            assert got[side]["properties"].keys() == want[side]["properties"].keys(), (name, side)
            for prop, value in want[side]["properties"].items():
                assert got[side]["properties"][prop] == value, (name, side, prop)


def test_cached_view_equals_a_full_read_after_a_storm(user_manager):
    manager = user_manager
    for name, (service, timer) in UNITS.items():
        install(manager, name, service, timer)
    manager.daemon_reload()
    timers = [f"{name}.timer" for name in UNITS]

    async def storm():
        source = SystemdBus(manager.bus_address)
        try:
            await source.read_timers(HOUR)
            for round_ in range(3):
                await systemctl(manager, "start", *timers)
                await source.read_timers(HOUR)
                await systemctl(manager, "start", "--no-block", "cache-manual.service")
                await asyncio.sleep(1.2)  # every timer fires at least once
                await source.read_timers(HOUR)
                await systemctl(manager, "stop", "cache-slow.service")
                await systemctl(manager, "restart", "cache-mono.timer")
                if round_ == 0:  # a unit file added
                    install(manager, "cache-late", *LATE)
                    await systemctl(manager, "daemon-reload")
                    await systemctl(manager, "start", "cache-late.timer")
                if round_ == 1:  # one removed (still running when its file goes)
                    manager.remove_unit("cache-doomed.timer")
                    manager.remove_unit("cache-doomed.service")
                    await systemctl(manager, "daemon-reload")
                await source.read_timers(HOUR)
                await systemctl(manager, "stop", "cache-ok.timer", "cache-fail.timer")
                await systemctl(manager, "kill", "cache-slow.service")
                await asyncio.sleep(0.5)
            # From here on no daemon-reload: only signals keep the records right.
            full_reads, read_before = source.stats.full_reads, source.stats.units_read
            # A transient timer (no unit file): only UnitNew announces it.
            await asyncio.to_thread(subprocess.run, [
                "systemd-run", "--user", "--unit=cache-transient", "--on-active=1h",
                "--timer-property=AccuracySec=1s", "/bin/true"], env=manager.env, check=True,
                capture_output=True)
            for _ in range(3):
                await systemctl(manager, "start", "cache-ok.timer", "cache-fail.timer",
                                "cache-late.timer")
                await systemctl(manager, "start", "--no-block", "cache-manual.service")
                await asyncio.sleep(1.1)
                await source.read_timers(HOUR)
                await systemctl(manager, "stop", "cache-fail.timer", "cache-mono.timer")
                await systemctl(manager, "reset-failed", "cache-killed.service")
                await source.read_timers(HOUR)
            # Quiet down: no timer left that fires, one service left running (its
            # memory is read on every sample), the others in their final states.
            await systemctl(manager, "stop", *timers, "cache-late.timer")
            await systemctl(manager, "start", "--no-block", "cache-slow.service")
            await systemctl(manager, "start", "cache-manual.service")
            cached, full, cached_out, full_out = await settled_comparison(
                source, manager.bus_address, "cache-")
            assert source.stats.full_reads == full_reads, "the cache was not what was compared"
            assert source.stats.refreshes >= 7
            # Only what changed was read: far fewer unit reads than a full read per sample.
            assert source.stats.units_read - read_before < 7 * 2 * len(full)
            assert source.stats.unsignaled_reads >= 1
            return cached, full, cached_out, full_out
        finally:
            await source.close()
            await systemctl(manager, "stop", *timers, "cache-late.timer", "cache-transient.timer")
            await systemctl(manager, "stop", *(f"{n}.service" for n in UNITS), "cache-late.service")

    try:
        cached, full, cached_out, full_out = asyncio.run(storm())
    finally:
        for name in [*UNITS, "cache-late"]:
            manager.remove_unit(f"{name}.timer")
            manager.remove_unit(f"{name}.service")
        manager.daemon_reload()
    assert_same(cached, full)
    assert cached_out == full_out
    assert "cache-late.timer" in full and "cache-doomed.timer" not in full
    assert full["cache-slow.timer"].service.active_state == "activating"
    assert full["cache-fail.timer"].service.properties["Result"] == "exit-code"
    assert full["cache-late.timer"].service.properties["ExecMainStatus"] == 7
    timer_lines = [line for line in cached_out.splitlines() if line.startswith("systemd_timer,")]
    assert full["cache-transient.timer"].timer.active_state == "active"
    assert len(timer_lines) == len(full) == len(UNITS) + 1  # doomed gone, late and transient added


def test_a_change_no_signal_announces_is_healed_by_the_periodic_resync(user_manager):
    manager = user_manager

    async def scenario():
        source = SystemdBus(manager.bus_address)
        try:
            await settle(source)
            # A unit file written without daemon-reload: systemd announces nothing, but
            # a full read lists it (ListUnitFilesByPatterns reads the disk).
            install(manager, "quiet-new", "ExecStart=/bin/true", "OnCalendar=2030-01-01\n")
            await asyncio.sleep(0.3)
            stale = {t.timer.name for t in (await source.read_timers(HOUR)).timers}
            synced = source.stats.full_reads
            await asyncio.sleep(1.1)
            healed = await source.read_timers(1.0)
            fresh = {t.timer.name for t in (await full_read(manager.bus_address)).timers}
            return fresh, stale, synced, source.stats.full_reads, healed
        finally:
            await source.close()

    try:
        fresh, stale, synced, after, healed = asyncio.run(scenario())
    finally:
        manager.remove_unit("quiet-new.timer")
        manager.remove_unit("quiet-new.service")
        manager.daemon_reload()
    assert "quiet-new.timer" in fresh
    assert "quiet-new.timer" not in stale  # the cache missed it: nothing said so
    assert after == synced + 1
    record = next(t for t in healed.timers if t.timer.name == "quiet-new.timer")
    assert record.service.name == "quiet-new.service" and record.timer.active_state == "inactive"
    assert record.timer.properties["TimersCalendar"][0][1] == "2030-01-01 00:00:00"


def test_a_reconnect_reads_everything_again(user_manager):
    manager = user_manager

    async def scenario():
        source = SystemdBus(manager.bus_address)
        try:
            await settle(source)
            install(manager, "quiet-reconnect", "ExecStart=/bin/true", "OnCalendar=2030-01-01\n")
            stale = {t.timer.name for t in (await source.read_timers(HOUR)).timers}
            bus = source._bus
            bus.disconnect()  # the connection is lost (bus daemon restarted, ...)
            await bus.wait_for_disconnect()
            before = source.stats.full_reads
            healed = {t.timer.name for t in (await source.read_timers(HOUR)).timers}
            return stale, before, source.stats.full_reads, healed, source._bus is not bus
        finally:
            await source.close()

    try:
        stale, before, after, healed, reconnected = asyncio.run(scenario())
    finally:
        manager.remove_unit("quiet-reconnect.timer")
        manager.remove_unit("quiet-reconnect.service")
        manager.daemon_reload()
    assert "quiet-reconnect.timer" not in stale
    assert reconnected and after == before + 1
    assert "quiet-reconnect.timer" in healed


def test_between_signals_a_sample_reads_nothing_whole(user_manager):
    """Steady state: no unit changed, so no unit is read (only the round trip that
    makes sure every pending signal was handled). An inactive timer nobody needs is
    freed by systemd after every read that loads it: that must not cost a read of it
    on every sample."""
    manager = user_manager
    install(manager, "idle-a", "ExecStart=/bin/true", "OnCalendar=2030-01-01\n")
    manager.daemon_reload()

    async def scenario():
        source = SystemdBus(manager.bus_address)
        try:
            first = await source.read_timers(HOUR)
            again = await settle(source)  # fails when units are read again forever
            relists = source._relist
            return first, again, relists, await full_read(manager.bus_address)
        finally:
            await source.close()

    try:
        first, again, relist_pending, full = asyncio.run(scenario())
    finally:
        manager.remove_unit("idle-a.timer")
        manager.remove_unit("idle-a.service")
        manager.daemon_reload()
    assert not relist_pending
    assert [t.timer.name for t in full.timers] == [t.timer.name for t in again.timers]
    names = [t.timer.name for t in again.timers]
    assert "idle-a.timer" in names and names == [t.timer.name for t in first.timers]


def test_a_sample_that_fails_half_way_is_followed_by_a_full_read(user_manager):
    manager = user_manager
    install(manager, "half-way", "ExecStart=/bin/true", "OnCalendar=2030-01-01\n")
    manager.daemon_reload()
    manager.systemctl("start", "half-way.timer")  # (keeps its service from being freed)

    async def scenario():
        source = SystemdBus(manager.bus_address)
        real = source.units_by_name

        async def failing(names):
            raise DBusCallError("org.freedesktop.DBus.Error.NoReply", "simulated")
        try:
            await settle(source)
            await systemctl(manager, "start", "half-way.service")  # dirties it
            await asyncio.sleep(0.3)
            source.units_by_name = failing
            try:
                await source.read_timers(HOUR)
            except DBusCallError as err:
                failed = str(err)
            source.units_by_name = real
            before = source.stats.full_reads
            after = await source.read_timers(HOUR)
            return failed, source.stats.full_reads - before, after, await full_read(manager.bus_address)
        finally:
            await source.close()

    try:
        failed, full_reads, after, full = asyncio.run(scenario())
    finally:
        manager.systemctl("stop", "half-way.timer")
        manager.remove_unit("half-way.timer")
        manager.remove_unit("half-way.service")
        manager.daemon_reload()
    assert failed.endswith("simulated")
    assert full_reads == 1
    ours = next(t for t in after.timers if t.timer.name == "half-way.timer")
    theirs = next(t for t in full.timers if t.timer.name == "half-way.timer")
    assert ours.service.properties == theirs.service.properties
    assert ours.service.properties["ExecMainStartTimestamp"] > 0
