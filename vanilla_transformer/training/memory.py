"""This process's memory: its peak and current resident set, and freed memory handed back to the system."""

import ctypes
import sys
from pathlib import Path

import pyarrow


def peak_rss_mb() -> int | None:
    """This process's peak resident memory so far (None where the platform does not say, e.g. Windows).

    Linux's VmHWM, which starts afresh when a process execs; its ru_maxrss does not: a child process started by
    subprocess reports at least its parent's peak.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        return round(int(status.read_text().split("VmHWM:")[1].split()[0]) / 1024)
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes; bytes on macOS
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10))


def return_freed_memory() -> None:
    """Give freed memory back to the system: glibc's heap (malloc_trim) and Arrow's memory pool, which both keep what
    was freed for reuse (after reading a parquet table, hundreds of MB of pool that nothing else can use)."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # not in every C library (musl)
    if trim is not None:
        trim(0)
    pyarrow.default_memory_pool().release_unused()


def current_rss_mb() -> tuple[int, int]:
    """This process's resident memory now, and the part of it that is pages of mapped files (Linux), in MB."""
    status = Path("/proc/self/status").read_text()
    return tuple(round(int(status.split(f"{key}:")[1].split()[0]) / 1024) for key in ("VmRSS", "RssFile"))
