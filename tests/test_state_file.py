"""The state file costs nothing per sample when nothing changed (issue 18): the memory is
compared as plain tuples, never serialised again, and the file is not rewritten; any
change (a timer field, an OOM counter deep inside its dict) is written."""

import json
import os

from exporter.storage import state as state_module
from exporter.storage.state import StateFile


def counting_dumps(monkeypatch) -> list[int]:
    calls = [0]
    real = json.dumps

    def dumps(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)
    monkeypatch.setattr(state_module.json, "dumps", dumps)
    return calls


def identity(path) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_ino, info.st_mtime_ns  # os.replace of a new file changes the inode


def filled(path, timers: int = 1000) -> StateFile:
    state = StateFile(str(path))
    for i in range(timers):
        memory = state.timer("system", f"t{i}.timer")
        memory.last_run_start_us, memory.next_elapse_us = 1_700_000_000_000_000 + i, 2 * i
    state.oom_kills["web"] = {"before": 0, "ids": {"abc": [1, 0]}}
    state.save()
    return state


def test_unchanged_memory_is_neither_serialised_nor_rewritten(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    state = filled(path)
    before = identity(path)
    state.snapshot()  # the in-memory spool's path: its first snapshot is serialised once
    calls = counting_dumps(monkeypatch)
    for _ in range(20):
        # what a steady sample does: the same values set again
        for i in range(1000):
            state.timer("system", f"t{i}.timer").next_elapse_us = 2 * i
        state.save()
        state.snapshot()
    assert calls[0] == 0
    assert identity(path) == before


def test_every_change_is_written(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    state = filled(path)
    calls = counting_dumps(monkeypatch)
    state.timer("system", "t7.timer").consecutive_failures = 2
    state.save()
    assert calls[0] == 1
    assert json.loads(path.read_text())["timers"]["system/t7.timer"]["consecutive_failures"] == 2
    state.oom_kills["web"]["ids"]["abc"][0] = 2  # mutated in place, as the ledger does
    state.save()
    assert json.loads(path.read_text())["oom_kills"]["web"]["ids"]["abc"] == [2, 0]
    again = StateFile(str(path))
    assert again.timers == state.timers and again.oom_kills == state.oom_kills
