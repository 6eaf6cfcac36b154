"""This process's memory: its peak and current resident set, and glibc's freed heap handed back."""

import ctypes
import sys
from pathlib import Path


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
    """glibc's malloc_trim: give the freed parts of the heap back to the system (glibc keeps them otherwise)."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # not in every C library (musl)
    if trim is not None:
        trim(0)


def current_rss_mb() -> tuple[int, int]:
    """This process's resident memory now, and the part of it that is pages of mapped files (Linux), in MB."""
    status = Path("/proc/self/status").read_text()
    return tuple(round(int(status.split(f"{key}:")[1].split()[0]) / 1024) for key in ("VmRSS", "RssFile"))
