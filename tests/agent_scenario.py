"""The agent itself filling a fresh database of the session InfluxDB 1.6.7 from real
timers on the live systemd user manager and real containers on the real Docker engine:
what tests/test_grafana.py (the dashboards) and tests/test_kapacitor.py (the alerts'
InfluxQL) query.

A Scenario installs timers and runs containers, writes agent configurations (the same
keys a user writes), runs agents (`python -m exporter run`, interval 1 s) and removes
everything at the end. DNS: the host's resolv.conf is a loopback stub, so containers on
the default bridge get Docker's public fallback; its servers are in skip_servers, so no
probe ever leaves for a public address. Containers pinned to the tests' dnsmasq resolve."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.services import wait_until

EVERY_5S = "[Timer]\nOnCalendar=*:*:0/5\nAccuracySec=1s\n"
# A shell that fills a 32 MiB container (no swap) and is OOM-killed; PID 1 lives on. Its
# oom_score_adj 1000 (raising one's own needs no privilege) makes it the OOM killer's
# victim for sure (oom_badness adds adj * totalpages / 1000): once in a few runs on a
# loaded machine the kernel killed the container's PID 1 too, and a dead container's
# oom_kills increase is never sampled.
HOG = "echo 1000 > /proc/self/oom_score_adj; x=$(head -c 200000000 /dev/zero | tr '\\000' a)"
PUBLIC_FALLBACK = ["8.8.8.8", "8.8.4.4", "2001:4860:4860::8888", "2001:4860:4860::8844"]


class Scenario:
    def __init__(self, user_manager, influxdb, docker_engine, dnsmasq, tmp: Path, db: str):
        self.manager, self.influxdb, self.engine, self.dnsmasq = user_manager, influxdb, docker_engine, dnsmasq
        self.tmp, self.db = tmp, db
        self.timers: list[str] = []
        self.containers: list[str] = []
        self.agents: dict[str, subprocess.Popen] = {}
        self.errors: dict[str, str] = {}
        influxdb.drop_database(db)
        influxdb.create_database(db)
        self.host_resolv = tmp / "host-resolv.conf"
        self.host_resolv.write_text("nameserver 127.0.0.53\n")
        self.upstream_resolv = tmp / "upstream-resolv.conf"
        self.upstream_resolv.write_text(f"nameserver {dnsmasq.address}\n")

    # -- objects ----------------------------------------------------------------

    def timer(self, name: str, command: str, timer_body: str = EVERY_5S, unit: str = "") -> None:
        """A oneshot service NAME.service running `command`, and NAME.timer (not started)."""
        self.manager.write_unit(f"{name}.service", f"{unit}[Service]\nType=oneshot\nExecStart={command}\n")
        self.manager.write_unit(f"{name}.timer", timer_body)
        self.timers.append(name)

    def container(self, name: str, *args: str, command: tuple[str, ...] = ("sleep", "300")) -> str:
        cid = self.engine.run("--name", name, *args, self.engine.image(), *command)
        self.containers.append(cid)
        return cid

    def start_timers(self) -> None:
        self.manager.daemon_reload()
        self.manager.systemctl("start", *(f"{name}.timer" for name in self.timers))

    def wait_ran(self, service: str, timeout: float = 12) -> None:
        """Until `service` has started at least once."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ran = self.manager.show(service, ["ExecMainStartTimestampMonotonic"])
            if ran.get("ExecMainStartTimestampMonotonic", "0") not in ("", "0"):
                return
            time.sleep(0.2)
        raise AssertionError(f"{service} never ran")

    def _between_runs(self) -> tuple[dict[str, str], bool]:
        """(LastTriggerUSec of each active timer of the scenario, whether any of their
        services runs). A oneshot service is `activating` while its ExecStart= runs."""
        triggers, running = {}, False
        for name in self.timers:
            timer = self.manager.show(f"{name}.timer", ["ActiveState", "LastTriggerUSec"])
            if timer.get("ActiveState") != "active":
                continue  # stopped by the test: it will not run again
            triggers[name] = timer.get("LastTriggerUSec", "")
            state = self.manager.show(f"{name}.service", ["ActiveState"]).get("ActiveState")
            running = running or state in ("activating", "active", "deactivating", "reloading")
        return triggers, running

    def last_look(self, look=lambda: None, samples_after_s: float = 1.2, attempts: int = 4, timeout: float = 12):
        """look() (e.g. `status`), then time for the agents (interval 1 s) to sample once
        more, all in one gap between two runs of the scenario's timers, so that what look()
        saw and the agents' last sample both see every run finished: a sample taken while
        a run is in progress says `running` (its last result is the run before). Starts
        right after a round of runs ended; taken again at the next gap when a timer fired
        meanwhile (the 5 s timers leave a gap of about 4 s). Returns what look() returned."""
        for _ in range(attempts):
            before, _running = self._between_runs()
            deadline = time.monotonic() + timeout
            while True:  # until a new round fired and ended
                triggers, running = self._between_runs()
                if triggers != before and not running:
                    break
                assert time.monotonic() < deadline, f"the timers did not run again: {triggers}"
                time.sleep(0.1)
            result = look()
            time.sleep(samples_after_s)
            if self._between_runs() == (triggers, False):
                return result
        raise AssertionError(f"no gap between the timers' runs held a last look ({attempts} tries)")

    def wait_rows(self, query: str, what: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not self.influxdb.rows(query, self.db):
            assert time.monotonic() < deadline, f"the agent wrote no {what}"
            time.sleep(0.2)

    def oom_kills(self, container: str) -> list[int]:
        """The oom_kills the agent wrote for `container`, oldest first."""
        q = f'SELECT "oom_kills" FROM "container_memory" WHERE "container" = \'{container}\''
        return [row["oom_kills"] for row in self.influxdb.rows(q, self.db)]

    def oom_kill(self, container: str, timeout: float = 10) -> None:
        """OOM-kill a shell in `container` after the agent has sampled it, and wait until
        the agent has written the increase of oom_kills: the dashboards and alerts look
        for an increase between two samples, so neither side of it may be missing."""
        before = wait_until(lambda: self.oom_kills(container), timeout, 0.2,
                            f"the agent's container_memory for {container}")[-1]
        tries = []
        for _ in range(3):
            cp = self.engine.docker("exec", container, "sh", "-c", HOG, check=False)
            tries.append(f"exit {cp.returncode} {cp.stderr.strip()}")
            try:
                wait_until(lambda: self.oom_kills(container)[-1] > before, timeout, 0.2)
                return
            except TimeoutError:
                continue
        state = self.engine.docker("inspect", "-f", "{{json .State}}", container, check=False).stdout.strip()
        raise AssertionError(f"{container}: oom_kills stayed {self.oom_kills(container)} after {tries}; "
                             f"container state {state}")

    # -- agents -----------------------------------------------------------------

    def config(self, name: str, hostname: str, *, timers: str | None = None, containers: bool = False,
               dns: bool = False, host_memory: bool = False, docker_host: str | None = None) -> Path:
        """An agent configuration: `timers` is the include glob (None: timers off)."""
        tmp = self.tmp
        text = f"""
[agent]
interval = "1s"
hostname = "{hostname}"
state_path = "{tmp / f'{name}-state.json'}"
[timers]
"""
        if timers is None:
            text += "enabled = false\n"
        else:
            text += f'bus = "{self.manager.bus_address}"\ninclude = ["{timers}"]\ngrace = "1s"\n'
        if containers:
            text += f'[containers]\nenabled = true\ndocker_host = "{docker_host or self.engine.host}"\n'
        if host_memory:
            text += "[host_memory]\nenabled = true\n"
        if dns:
            text += f"""[dns]
enabled = true
queries = ["ok.tick.test"]
timeout = "1s"
skip_servers = {PUBLIC_FALLBACK!r}
host_resolv_conf = "{self.host_resolv}"
upstream_resolv_conf = "{self.upstream_resolv}"
""".replace("'", '"')
        text += f"""[spool]
path = "{tmp / f'{name}-spool'}"
[output.influxdb]
enabled = true
api = "v1"
url = "{self.influxdb.url}"
database = "{self.db}"
"""
        path = tmp / f"{name}.toml"
        path.write_text(text)
        return path

    def start_agent(self, name: str, config: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TICK_EXPORTER_")}
        self.agents[name] = subprocess.Popen([sys.executable, "-m", "exporter", "run", "--config", str(config)],
                                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def stop_agent(self, name: str) -> int:
        agent = self.agents.pop(name)
        agent.send_signal(signal.SIGTERM)
        self.errors[name] = agent.communicate(timeout=30)[1]
        return agent.returncode

    def close(self) -> dict[str, int]:
        """Stop the agents still running (their exit codes), the timers and the containers."""
        codes = {}
        try:
            for name in list(self.agents):
                codes[name] = self.stop_agent(name)
        finally:
            self.manager.systemctl("stop", *(f"{name}.timer" for name in self.timers), check=False)
            for cid in self.containers:
                self.engine.remove(cid)
        return codes
