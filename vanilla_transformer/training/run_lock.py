"""A run folder's owner: one run at a time writes in a folder, and another is refused with the owner's process and
host. The lock is the kernel's (flock) on run.lock, so a run that dies, even by kill -9, leaves no lock that blocks;
the file only says who holds it."""

import fcntl
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = "run.lock"


class RunFolderInUse(FileExistsError):
    """The run folder is held by another run; the message names its process and host."""


@contextmanager
def run_folder_owned(run_dir: str | Path):
    """Hold run_dir's lock for the block (the folder is made if it is new, and removed again if it is still empty
    at the end); a RunFolderInUse if another process holds it."""
    run_dir = Path(run_dir)
    made = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    descriptor = take(path)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # while still holding it: whoever opened this file next sees it is gone
        os.close(descriptor)
        if made and not any(run_dir.iterdir()):
            run_dir.rmdir()


def take(path: Path) -> int:
    """The open, locked lock file, with this process written in it."""
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise RunFolderInUse(f"{path.parent} is in use by another run ({owner(path)}): wait for it to end, or "
                                 "choose another --output-dir") from None
        if still_the_lock_file(path, descriptor):
            break
        os.close(descriptor)  # its owner removed it as we opened it: take the next one
    record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
              "command": " ".join(sys.argv)}
    os.ftruncate(descriptor, 0)
    os.write(descriptor, json.dumps(record).encode())
    return descriptor


def still_the_lock_file(path: Path, descriptor: int) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(descriptor).st_ino
    except FileNotFoundError:
        return False


def owner(path: Path) -> str:
    """Who holds the lock, as its file says."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return f"process {record['pid']} on {record['host']}, since {record['since']}: {record['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that is just starting"  # it holds the lock and has not written its name yet
