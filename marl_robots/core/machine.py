"""Description of the machine a benchmark ran on (written next to every figure)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine_description() -> dict:
    """CPU model, core count, OS and Python version of this machine."""
    cpu = platform.processor() or platform.machine() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
    }
