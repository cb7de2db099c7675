import sys


class StdoutOutput:
    """Line protocol on standard output: one flushed block per sample (Telegraf execd reads it)."""

    name = "stdout"

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout

    def write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()
