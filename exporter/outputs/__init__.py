"""Outputs take a block of line protocol (what one sample produced) and deliver it.

Each has a `name`, a blocking `write(text)` that raises OutputError on failure, and
`close()`. The agent runs them off the event loop, one at a time each, all in parallel.
"""


class OutputError(Exception):
    pass
