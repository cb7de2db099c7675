"""What the agent keeps on disk between samples and across restarts.

spool.py: the crash-safe on-disk spool every durable output is fed from (memspool.py:
its in-memory stand-in for `[spool] enabled = false`); state.py: the state file, the
agent's memory of runs and OOM kills; files.py: a file replaced whole or not at all.
"""
