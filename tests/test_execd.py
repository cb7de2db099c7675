"""Run the agent exactly as Telegraf's inputs.execd does with signal = "STDIN": a child
process with pipes, a newline on stdin per interval, stdin closed on shutdown."""

import os
import selectors
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from tests.lineproto import parse


def read_block(proc, timeout=15.0):
    """Everything the child prints until it has been quiet for a moment."""
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not selector.select(timeout=0.5 if chunks else 1.0):
            if chunks:
                break
            continue
        data = os.read(proc.stdout.fileno(), 65536)
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode()


def test_execd_samples_once_per_stdin_line_and_exits_at_eof(user_manager, tmp_path):
    stanza = tomllib.loads((Path(__file__).parent.parent / "telegraf" /
                            "tick-exporter-execd.conf").read_text())["inputs"]["execd"][0]
    assert stanza["signal"] == "STDIN" and stanza["data_format"] == "influx"
    command = stanza["command"]
    assert command[:2] == ["tick-exporter", "run"]
    args = [a for a in command[2:] if not a.startswith("/etc/")][:-1]  # drop --config FILE
    env = {**os.environ, "TICK_EXPORTER_TIMERS_BUS": user_manager.bus_address,
           "TICK_EXPORTER_AGENT_INTERVAL": "1h"}  # only stdin may trigger a sample
    proc = subprocess.Popen([sys.executable, "-m", "exporter", "run", *args], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(1.5)
        assert read_block(proc, timeout=1) == ""  # nothing until Telegraf asks
        blocks = []
        for _ in range(3):
            proc.stdin.write(b"\n")
            proc.stdin.flush()
            blocks.append(parse(read_block(proc)))
        proc.stdin.close()  # Telegraf stopping
        started = time.monotonic()
        assert proc.wait(timeout=15) == 0
        assert time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
    stamps = []
    for points in blocks:
        heartbeat = [p for p in points if p.measurement == "exporter" and p.tags["component"] == "agent"]
        assert len(heartbeat) == 1  # one whole sample per line
        stamps.append(heartbeat[0].time_ns)
        assert any(p.measurement == "exporter" and p.tags["component"] == "timers" for p in points)
    assert stamps == sorted(set(stamps))
    assert "stopped" in proc.stderr.read().decode()

