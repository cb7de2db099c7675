"""systemd_dbus.each: the bounded fan-out of a full read (one coroutine per worker, not
per unit), in order, at most `workers` at a time, and stopped by the first failure."""

import asyncio

import pytest

from exporter.sources.systemd_dbus import each


def test_results_come_in_the_items_order_with_at_most_workers_at_a_time():
    in_flight, most = 0, 0

    async def slow_square(n):
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.001 * (n % 3))  # finishing out of order
        in_flight -= 1
        return n * n

    assert asyncio.run(each(slow_square, list(range(50)), workers=4)) == [n * n for n in range(50)]
    assert most == 4


def test_no_items_no_workers():
    async def never(_item):
        raise AssertionError("called")

    assert asyncio.run(each(never, [])) == []


def test_the_first_failure_is_raised_and_nothing_more_is_asked():
    asked = []

    async def fails_at_3(n):
        asked.append(n)
        if n == 3:
            raise ConnectionError("the bus went away")
        await asyncio.sleep(0.01)
        return n

    async def main():
        with pytest.raises(ConnectionError, match="went away"):
            await each(fails_at_3, list(range(100)), workers=4)
        await asyncio.sleep(0.05)  # a worker left running would go on asking

    asyncio.run(main())
    assert max(asked) < 8, asked  # the 4 workers' first items, and at most one more each
