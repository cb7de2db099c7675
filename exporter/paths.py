"""Where the agent keeps its state file and spool when it is not the system service.

The defaults (/var/lib/tick-exporter) are the system service's `StateDirectory=`. A
normal user who runs `once` or `run` cannot write there; rather than failing every
interval, the commands that write fall back to the user's state directory, as the XDG
Base Directory spec says ($XDG_STATE_HOME/tick-exporter, else
~/.local/state/tick-exporter), and say once which paths they use. Under systemd,
`StateDirectory=tick-exporter` exports $STATE_DIRECTORY (systemd.exec(5)): the system
manager's is /var/lib/tick-exporter, a user manager's is $XDG_STATE_HOME/tick-exporter,
so the same unit file works in both.

The commands that read the service's files (`status`, `health`, `doctor`) never fall
back: they keep the configured paths and say when they cannot read them.
A path the user configured is never replaced; when it is not writable, `run` refuses to
start with the config key named.
"""

import dataclasses
import logging
import os

from .config import SCHEMA, Config

log = logging.getLogger("tick_exporter.paths")
APP = "tick-exporter"
DEFAULT_STATE_PATH = SCHEMA["agent"]["state_path"][1]
DEFAULT_SPOOL_PATH = SCHEMA["spool"]["path"][1]


def user_state_dir(environ=os.environ) -> str:
    """$XDG_STATE_HOME/tick-exporter, else ~/.local/state/tick-exporter (XDG Base Directory)."""
    base = environ.get("XDG_STATE_HOME") or os.path.join(
        environ.get("HOME") or os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, APP)


def writable_dir(directory: str) -> str | None:
    """None when this process could create files in `directory`: it is writable, or does
    not exist yet and its nearest existing parent is (the writer creates it). Else the
    reason. Creates nothing: a check must not leave directories behind."""
    path = os.path.abspath(directory)
    while not os.path.isdir(path):
        if os.path.lexists(path):
            return f"{path} exists and is not a directory"
        path = os.path.dirname(path)
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{path} is not writable by uid {os.geteuid()}"
    return None


def for_writing(config: Config, environ=os.environ) -> Config:
    """The config `once`/`run` use: default paths moved to a directory this process may
    write ($STATE_DIRECTORY under systemd, the default when writable, else the user's)."""
    state, spool = config.agent.state_path, config.spool.path
    defaults = state == DEFAULT_STATE_PATH, spool == DEFAULT_SPOOL_PATH
    if not any(defaults):
        return config
    default_dir = os.path.dirname(DEFAULT_STATE_PATH)
    systemd_dir = (environ.get("STATE_DIRECTORY") or "").split(":")[0]
    directory, reason = systemd_dir or default_dir, None
    if not systemd_dir:
        reason = writable_dir(default_dir)
        if reason:
            directory = user_state_dir(environ)
    if directory == default_dir:
        return config
    if defaults[0]:
        state = os.path.join(directory, os.path.basename(DEFAULT_STATE_PATH))
    if defaults[1]:
        spool = os.path.join(directory, os.path.basename(DEFAULT_SPOOL_PATH))
    why = (f"the default {default_dir} is not usable ({reason}); using the user's state directory"
           if reason else "systemd's $STATE_DIRECTORY")
    log.info("state file %s (agent.state_path), spool %s (spool.path): %s", state, spool, why)
    return dataclasses.replace(
        config, agent=dataclasses.replace(config.agent, state_path=state),
        spool=dataclasses.replace(config.spool, path=spool))


def unwritable(config: Config, spool_used: bool) -> list[str]:
    """`run`'s check before it starts: every configured directory it cannot write, each
    named by its config key."""
    problems = []
    reason = writable_dir(os.path.dirname(os.path.abspath(config.agent.state_path)))
    if reason:
        problems.append(f"agent.state_path: {config.agent.state_path}: {reason}")
    if spool_used and config.spool.enabled:
        reason = writable_dir(config.spool.path)
        if reason:
            problems.append(f"spool.path: {config.spool.path}: {reason}")
    return problems
