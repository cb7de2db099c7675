"""exporter.identity: the agent_id kept beside the state file (issue 22). `run` makes it
once and keeps it; `once` shows the kept one and never makes one (a look beside the
service changes nothing the service owns)."""

import json
import logging
import os
import re
import subprocess
import sys

from exporter.identity import agent_id, id_path
from tests.lineproto import parse


def test_run_makes_it_once_and_keeps_it(tmp_path):
    state = str(tmp_path / "lib" / "state.json")
    first = agent_id(state, writer=True)
    assert re.fullmatch(r"[0-9a-f]{16}", first)
    assert (tmp_path / "lib" / "agent-id").read_text() == first + "\n"
    assert agent_id(state, writer=True) == first == agent_id(state, writer=False)
    # another state directory is another agent
    assert agent_id(str(tmp_path / "other" / "state.json"), writer=True) != first


def test_a_look_never_makes_one(tmp_path):
    state = str(tmp_path / "state.json")
    assert agent_id(state, writer=False) == ""
    assert not os.path.exists(id_path(state))


def test_a_directory_it_cannot_write_gives_an_id_for_this_run_and_says_so(tmp_path, caplog):
    (tmp_path / "file").write_text("")
    state = str(tmp_path / "file" / "state.json")   # its directory is a file: unwritable
    with caplog.at_level(logging.WARNING, logger="tick_exporter"):
        made = agent_id(state, writer=True)
    assert re.fullmatch(r"[0-9a-f]{16}", made)
    assert "changes at every restart" in caplog.text


def test_once_prints_the_kept_id_and_never_makes_one(tmp_path, user_manager):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICK_EXPORTER_")}
    env.update(TICK_EXPORTER_AGENT_STATE_PATH=str(tmp_path / "state.json"),
               TICK_EXPORTER_TIMERS_BUS=user_manager.bus_address, TICK_EXPORTER_TIMERS_INCLUDE=json.dumps(["none-*"]))

    def heartbeat():
        done = subprocess.run([sys.executable, "-m", "exporter", "once"], env=env, capture_output=True,
                              text=True, timeout=60, check=True)
        (beat,) = [p for p in parse(done.stdout) if p.measurement == "exporter" and p.tags["component"] == "agent"]
        return beat.fields

    assert "agent_id" not in heartbeat()
    assert not (tmp_path / "agent-id").exists()
    kept = agent_id(str(tmp_path / "state.json"), writer=True)
    assert heartbeat()["agent_id"] == kept
