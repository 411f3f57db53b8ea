"""Small OS helpers shared by the CLI and the library."""

from __future__ import annotations

import os


def cpu_count() -> int:
    """Cores this process may run on (respects CPU affinity and container limits)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
