"""The processes of a launch waiting on each other's work rather than on a fixed timeout, through the launch's store.

While a process prepares, a thread of it adds to its heartbeat counter every HEARTBEAT_SECONDS; each step it finishes
is a key with a value (what the others need of it), and an error it fails with is a key holding the message. A
waiting process polls those keys: it waits as long as the heartbeat advances, raises at once with the message when
the process it waits for failed, and within SILENCE seconds when it died (kill -9: the heartbeat stops; or its
launcher ended and took the store with it). Files go between machines over the process group (gloo, in chunks).
"""

import json
import logging
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0
POLL_SECONDS = 0.2
SILENCE_VARIABLE = "VANILLA_TRANSFORMER_SILENCE_SECONDS"  # how long without a heartbeat means a process is gone
SILENCE_SECONDS = 60.0
CHUNK_BYTES = 4 << 20  # a file crosses to another machine in tensors of this size


class PeerFailed(ConnectionError):
    """A process this one waited on failed or stopped answering, or the launch's store went away."""


class Launch:
    """This process's place in a launch (its machine's main process, all machines' main processes) and its channel
    to the others. A process alone is a launch of one, whose waits return at once."""

    calls = 0  # data paths prepared by this process so far: each gets keys of its own

    def __init__(self, rank: int, local_rank: int, world: int):
        self.rank, self.world = rank, world
        self.is_local_main = local_rank == 0
        self.local_main = rank - local_rank  # torchrun numbers the processes of one machine in a row
        self.store = dist.distributed_c10d._get_default_store() if world > 1 else None
        Launch.calls += 1
        self.prefix = f"vanilla-transformer/prepare{Launch.calls}"
        self.step = "starting"
        self.silence = float(os.environ.get(SILENCE_VARIABLE, SILENCE_SECONDS))
        self.stop_beating = threading.Event()
        self.machines = [0]  # the ranks of every machine's main process, machine 0's first
        self.marker: Path | None = None  # a file that shows which machines share machine 0's disk
        if self.store is None:
            return
        # A gloo group for files, where the launch's own group is NCCL's: every process makes it, now, together.
        self.file_group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
        threading.Thread(target=self.beat, args=(self.store.clone(),), daemon=True, name="heartbeat").start()
        self.set(f"local-main/{rank}", self.local_main)
        if self.is_local_main:
            self.machines = sorted({self.wait_key(f"local-main/{r}", r, "join the launch") for r in range(world)})

    @classmethod
    def of(cls, state) -> "Launch":
        """The launch of an accelerate PartialState."""
        return cls(state.process_index, state.local_process_index, state.num_processes)

    @property
    def machine(self) -> int:
        return self.machines.index(self.rank)

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    def set(self, name: str, value) -> None:
        if self.store is not None:
            self.store.set(self.key(name), json.dumps(value))

    def beat(self, store) -> None:
        """The heartbeat, from a thread with a store connection of its own, until the data path ends."""
        key = self.key(f"heartbeat/{self.rank}")
        while True:
            try:
                store.add(key, 1)
            except RuntimeError:  # the store is gone; the waits say so
                return
            if self.stop_beating.wait(HEARTBEAT_SECONDS):
                return

    @contextmanager
    def running(self):
        """The data path of this process: its failure published for the processes waiting on it."""
        try:
            yield self
        except BaseException as error:
            if self.store is not None:
                try:
                    self.set(f"failed/{self.rank}", f"in {self.step!r}: {type(error).__name__}: {error}")
                except RuntimeError:
                    pass  # the store is gone too: the others learn it from the store
            raise
        finally:
            self.stop_beating.set()

    def done(self, step: str, value=None) -> None:
        """This process has done `step`; `value` is what the others need of it."""
        self.set(f"done/{step}/{self.rank}", value)

    def wait_for(self, rank: int | None, step: str, doing: str):
        """The value process `rank` gave when it did `step` (None for no process, or this one alone).

        doing: what the step does, for the messages ("read the text").
        """
        if rank is None or self.store is None or rank == self.rank:
            return None
        return self.wait_key(f"done/{step}/{rank}", rank, doing)

    def wait_key(self, name: str, rank: int, doing: str):
        return wait_on(self.store, self.key(name), rank, doing, self.rank, self.silence, self.key(f"failed/{rank}"),
                       self.key(f"heartbeat/{rank}"))

    def finish(self) -> None:
        """This process has prepared its data; wait until every machine's main process has (their work is the long
        part), so that the launch's next collective does not wait on it with the process group's timeout."""
        self.step = "waiting for the other machines"
        if self.store is None:
            return
        if self.is_local_main:
            self.done("prepared")
            for rank in self.machines:
                self.wait_for(rank, "prepared", "finish preparing the data")
            self.done("all prepared")
            if self.marker is not None:
                self.marker.unlink(missing_ok=True)
        else:
            self.wait_for(self.local_main, "all prepared", "see every machine finish preparing the data")

    def send_files(self, paths: list[str], rank: int) -> None:
        """The files' bytes to process `rank`, which receives them with receive_files."""
        buffer = torch.empty(CHUNK_BYTES, dtype=torch.uint8)
        view = buffer.numpy()
        try:
            for path in paths:
                with open(path, "rb") as file:
                    while size := file.readinto(view):
                        dist.send(buffer[:size], dst=rank, group=self.file_group)
        except RuntimeError as error:
            raise PeerFailed(f"process {self.rank} could not send {path} to process {rank} ({first_line(error)}); see "
                             f"the log of process {rank}") from None

    def receive_files(self, files: list[tuple[str, int]], rank: int, folder: Path) -> list[str]:
        """Files (name, bytes) from process `rank` into `folder`, each written whole under its name or not at all."""
        buffer = torch.empty(CHUNK_BYTES, dtype=torch.uint8)
        view = buffer.numpy()
        written = []
        for name, size in files:
            partial = folder / f"{name}.receiving-{os.getpid()}"
            try:
                with open(partial, "wb") as file:
                    for start in range(0, size, CHUNK_BYTES):
                        chunk = min(CHUNK_BYTES, size - start)
                        dist.recv(buffer[:chunk], src=rank, group=self.file_group)
                        file.write(view[:chunk])
            except RuntimeError as error:
                partial.unlink(missing_ok=True)
                raise PeerFailed(f"process {self.rank} could not receive {name} from process {rank} "
                                 f"({first_line(error)}); see the log of process {rank}") from None
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
            partial.replace(folder / name)
            written.append(str(folder / name))
        return written


def wait_on(store, key: str, rank: int, doing: str, waiter: int, silence: float, failed: str, heartbeat: str):
    """The value at `key` in the store once process `rank` has set it; PeerFailed at once when that process has set
    `failed` (its error), or when its `heartbeat` counter has not moved for `silence` seconds, or the store is gone.

    doing: what the process waited for does ("read the text"), and waiter: the waiting process, for the messages.
    """
    started = last_change = last_report = time.monotonic()
    last_beat = None
    while True:
        try:
            if store.check([key]):
                return json.loads(store.get(key))
            if store.check([failed]):
                message = json.loads(store.get(failed))
                raise PeerFailed(f"process {rank} failed {message} (process {waiter} waited for it to {doing}); see "
                                 f"process {rank}'s log above or on its machine")
            beat = store.add(heartbeat, 0)
        except RuntimeError as error:  # the store's connection: its host, machine 0's launcher, has ended
            raise PeerFailed(
                f"process {waiter} lost the launch's store while waiting for process {rank} to {doing} "
                f"({first_line(error)}): the launcher on machine 0 has ended, most likely because a process "
                "failed; see the log of every machine") from None
        now = time.monotonic()
        if beat != last_beat:
            last_beat, last_change = beat, now
        elif now - last_change > silence:
            raise PeerFailed(
                f"process {rank} stopped answering while process {waiter} waited for it to {doing}: no heartbeat for "
                f"{now - last_change:.0f} s (it was killed, or its machine went away); see the launcher's log on its "
                "machine")
        if now - last_report > 60:
            logger.info("process %d: waiting for process %d to %s (%.0f min so far; it is working)", waiter, rank,
                        doing, (now - started) / 60)
            last_report = now
        time.sleep(POLL_SECONDS)


def first_line(error: Exception) -> str:
    """The error's message without the C++ stack trace that torch's distributed errors append."""
    return (str(error).splitlines() or [type(error).__name__])[0]
