"""The agent's own identity: a random id made once and kept beside the state file
(`agent-id`), sent as `agent_id` on every heartbeat.

Host names are the user's (`[agent] hostname`, TICK_HOSTNAME) and can collide: two Pis
both called raspberrypi write into one series. The id tells them apart, so a query
(grafana/fleet.influxql, "duplicate_hostname") can count distinct ids per host.
Random rather than derived from /etc/machine-id: a container does not see the host's
machine-id unless it is mounted, and two agents on one machine (a second state
directory) are two agents. Kept in the state directory, so it survives restarts and
upgrades (the Docker volume) and is gone with that directory; an SD card cloned after
the first start carries it: delete `agent-id` on the clone (docs/deploy.md).
"""

import logging
import os

log = logging.getLogger("tick_exporter")


def id_path(state_path: str) -> str:
    return os.path.join(os.path.dirname(state_path) or ".", "agent-id")


def agent_id(state_path: str, writer: bool) -> str:
    """The kept id; `run` (writer) makes it on first start. The read-only commands
    (`once`, `status`) never create one and report "" when there is none yet."""
    path = id_path(state_path)
    try:
        with open(path, encoding="ascii") as handle:
            kept = handle.read().strip()
        if kept:
            return kept
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError) as err:
        if not writer:  # a look as another user: no id on its heartbeat
            return ""
        log.warning("cannot read the agent id %s (%s): a new one for this run, it changes at every restart",
                    path, err)
        return _new_id()
    if not writer:
        return ""
    new = _new_id()
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        # O_EXCL: two starts racing keep one id (the loser reads the winner's).
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return agent_id(state_path, writer=False) or new
    except OSError as err:
        log.warning("cannot keep the agent id in %s (%s): it changes at every restart", path, err)
        return new
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(new + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return new


def _new_id() -> str:
    """16 hex digits from the kernel's CSPRNG: what secrets.token_hex(8) returns, without
    importing secrets (hmac, hashlib: OpenSSL's libcrypto, ~3 MiB of the agent's RSS)."""
    return os.urandom(8).hex()
