"""The spool's in-memory stand-in for `[spool] enabled = false`: same API as
exporter.storage.spool.Spool, same drop-oldest cap, nothing survives a restart."""

from collections import deque

from ..point import count_lines
from .spool import Batch


class MemorySpool:
    durable = False  # lost on restart: the state file waits for delivery (exporter.agent)

    def __init__(self, max_bytes: int, consumers: list[str]):
        self.max_bytes = max_bytes
        self.records: deque = deque()  # (sequence, sample_time_ns, points, UTF-8 bytes)
        self.next_sequence = 0
        self.size = 0
        self.cursors = {name: 0 for name in consumers}
        self.dropped = {name: 0 for name in consumers}

    def append(self, lines: str, sample_time_ns: int) -> None:
        if not lines:
            return
        points = count_lines(lines)
        data = lines.encode("utf-8", "replace")  # as the on-disk spool keeps it
        self.records.append((self.next_sequence, sample_time_ns, points, data))
        self.next_sequence += 1
        self.size += len(data)
        while self.size > self.max_bytes and len(self.records) > 1:
            sequence, _time, dropped, text = self.records.popleft()
            self.size -= len(text)
            for name, cursor in self.cursors.items():
                if cursor <= sequence:
                    self.dropped[name] += dropped
                    self.cursors[name] = sequence + 1

    @property
    def appended(self) -> int:
        """Records appended so far."""
        return self.next_sequence

    @property
    def delivered(self) -> int:
        """Records every consumer is done with (acknowledged, or dropped by the cap)."""
        return min(self.cursors.values(), default=self.next_sequence)

    def _pending(self, consumer: str):
        first = self.records[0][0] if self.records else self.next_sequence
        start = max(self.cursors[consumer], first) - first
        return (self.records[i] for i in range(start, len(self.records)))

    def read(self, consumer: str, max_points: int) -> Batch | None:
        chosen = []
        points = 0
        for record in self._pending(consumer):
            if chosen and points + record[2] > max_points:
                break
            chosen.append(record)
            points += record[2]
        if not chosen:
            return None
        # position: (0, sequence number after the last record), the spool's shape
        return Batch(b"".join(r[3] for r in chosen), points, len(chosen), chosen[0][1],
                     (0, chosen[-1][0] + 1))

    def ack(self, consumer: str, batch: Batch) -> None:
        self.cursors[consumer] = max(self.cursors[consumer], batch.position[1])
        slowest = min(self.cursors.values())
        while self.records and self.records[0][0] < slowest:
            self.size -= len(self.records.popleft()[3])

    def stats(self, consumer: str, now_ns: int) -> dict:
        pending = list(self._pending(consumer))
        return {"spool_points": sum(r[2] for r in pending),
                "spool_bytes": sum(len(r[3]) for r in pending),
                "oldest_unsent_s": (now_ns - pending[0][1]) / 1e9 if pending else 0.0,
                "dropped_points": self.dropped[consumer]}

    def close(self) -> None:
        pass
