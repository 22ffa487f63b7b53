"""Wall time and peak resident memory of each pipeline stage on this rank."""

from __future__ import annotations

import resource
import sys
import time
from contextlib import contextmanager

#: ``ru_maxrss`` is in KiB on Linux and in bytes on macOS
_MAXRSS_BYTES = 1 if sys.platform == "darwin" else 1024


def peak_memory_bytes() -> int:
    """Largest resident set size this process has had so far."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * _MAXRSS_BYTES


class StageLog:
    """Records ``(stage, seconds, peak bytes so far)`` in the order stages run.

    Example:
        >>> log = StageLog()
        >>> with log.stage("partition"):
        ...     pass
        >>> log.names
        ['partition']
    """

    def __init__(self) -> None:
        self.names: list[str] = []
        self.seconds: list[float] = []
        self.peak_bytes: list[int] = []

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        yield
        self.record(name, time.perf_counter() - start)

    def record(self, name: str, seconds: float) -> None:
        self.names.append(name)
        self.seconds.append(float(seconds))
        self.peak_bytes.append(peak_memory_bytes())

    def as_dict(self) -> dict[str, dict[str, float]]:
        rows = zip(self.names, self.seconds, self.peak_bytes)
        return {n: {"seconds": s, "peak_bytes": m} for n, s, m in rows}
