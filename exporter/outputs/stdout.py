import os
import sys

# A closed pipe on the process's stdout (`tick-exporter once | head -1`, Telegraf gone):
# end the process quietly with the shell's status for SIGPIPE, 128 + 13. SystemExit, not
# an Exception, so the agent does not log it as a failed output and sample on into a pipe
# nobody reads; the sample is not remembered as written (Agent.write never gets to
# _remember), so the next agent prints its runs again.
EXIT_BROKEN_PIPE = 141


class StdoutOutput:
    """Line protocol on standard output: one flushed block per sample (Telegraf execd reads it)."""

    name = "stdout"

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout

    def write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except BrokenPipeError:
            if self.stream is not sys.stdout:
                raise  # someone else's stream: its owner decides (a failed output)
            reader_gone(self.stream)

    def close(self) -> None:
        try:
            self.stream.flush()
        except BrokenPipeError:
            if self.stream is not sys.stdout:
                raise
            reader_gone(self.stream)


def reader_gone(stream) -> None:
    """Point the stream's descriptor at /dev/null (Python's flush at exit must not fail a
    second time: "Exception ignored ... BrokenPipeError") and exit 141."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
    except (OSError, ValueError):
        pass
    raise SystemExit(EXIT_BROKEN_PIPE)
