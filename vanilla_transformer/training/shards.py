"""The train set tokenised in shards across the machines of a launch, joined in order.

Machine k's main process encodes the k-th contiguous 1/N of the pairs (tokenize_child.tokenize_train, under a key
derived from the whole set's), and every machine joins the N shards in order: the tokenised train set, under the
whole set's key, and so the batches, are those of one process. Machines that share the datasets cache (machine 0's
marker file is seen by the others) write each shard once and read each other's; a machine with a disk of its own
receives the shards it lacks over the process group and keeps them in its cache under the same names, so that a
later launch finds them there. A shard is held when its manifest (written after its files) lists files all present.
"""

import json
import logging
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets

from .coordination import Launch
from .tokenize_child import ChildRun, already_tokenized, shard_fingerprint, tokenize_train

logger = logging.getLogger(__name__)


@dataclass
class ShardWork:
    """Which shards of the train set this process encoded, found in its cache, read from a shared disk, received
    from another machine or sent to one."""

    machines: int
    encoded: list[int] = field(default_factory=list)
    held: list[int] = field(default_factory=list)
    read: list[int] = field(default_factory=list)
    received: list[int] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)
    received_mb: float = 0.0
    transfer_seconds: float = 0.0  # sending and receiving, not waiting for the other machines' shards

    def describe(self) -> str:
        said = [f"{what} {', '.join(map(str, shards))}" for what, shards in (
            ("encoded", self.encoded), ("cached", self.held), ("read from the shared disk", self.read),
            ("received", self.received), ("sent", self.sent)) if shards]
        received = (f", {self.received_mb:,.0f} MB received" if self.received else "") + (
            f", {self.transfer_seconds:.1f} s transferring" if self.received or self.sent else "")
        return f"shards of {self.machines} machines: {'; '.join(said)}{received}"


def shares_disk_with_main(launch: Launch) -> bool:
    """Whether this machine's datasets cache is machine 0's: machine 0's main process writes a marker named by a
    random token there, and the other machines' main processes look for it in theirs."""
    if launch.store is None or not launch.is_local_main:
        return launch.rank == 0
    markers = Path(datasets.config.HF_DATASETS_CACHE).resolve() / "vanilla_transformer" / "launches"
    if launch.rank == 0:
        token = secrets.token_hex(16)
        markers.mkdir(parents=True, exist_ok=True)
        (markers / token).write_text(token, encoding="utf-8")
        launch.marker = markers / token  # removed when the launch has prepared its data
        launch.done("marker", token)
        return True
    token = launch.wait_for(0, "marker", "write its marker in the datasets cache")
    return (markers / token).is_file() and (markers / token).read_text(encoding="utf-8") == token


def cache_folder(pairs: datasets.Dataset) -> Path | None:
    """Where the pairs' tokenised shards go (the folder of their Arrow files), or None when they have none."""
    if not pairs.cache_files or pairs._indices is not None or not datasets.is_caching_enabled():
        return None
    return Path(pairs.cache_files[0]["filename"]).resolve().parent


def held_shard(folder: Path | None, fingerprint: str) -> list[str] | None:
    """The files of a shard this machine holds whole, or None."""
    manifest = folder / f"vanilla-shard-{fingerprint}.json" if folder else None
    if manifest is None or not manifest.is_file():
        return None
    files = [str(folder / name) for name in json.loads(manifest.read_text(encoding="utf-8"))["files"]]
    return files if all(Path(file).is_file() for file in files) else None


def write_manifest(folder: Path, fingerprint: str, files: list[str]) -> None:
    """The shard's manifest, written after its files, whole or not at all."""
    manifest = folder / f"vanilla-shard-{fingerprint}.json"
    partial = manifest.with_name(f"{manifest.name}.partial-{secrets.token_hex(4)}")
    partial.write_text(json.dumps({"files": [Path(file).name for file in files]}), encoding="utf-8")
    partial.replace(manifest)


def joined(files: list[str], fingerprint: str, rows: int) -> datasets.Dataset:
    """The tokenised shards' Arrow files, memory-mapped and joined in order, under the whole set's key."""
    parts = datasets.concatenate_datasets([datasets.Dataset.from_file(file) for file in files])
    if len(parts) != rows:
        raise ValueError(f"the tokenised shards ({', '.join(files)}) hold {len(parts)} pairs, the train set {rows}: "
                         "delete them and launch again")
    # Keyed as data.encode_pairs' result is (its map's key, then with_format(None)): the same fingerprint as one
    # process's tokenised set, so the batch plan's cache and a resume's check see the same data.
    return datasets.Dataset(parts.data, info=parts.info, split=parts.split, fingerprint=fingerprint).with_format(None)


def tokenize_across_machines(launch: Launch, pairs: datasets.Dataset, tokenizer, langs: tuple[str, str],
                             num_proc: int | None, fingerprint: str, shares_disk: bool
                             ) -> tuple[datasets.Dataset, ChildRun | None, ShardWork | None]:
    """The train set tokenised, its shards encoded by the machines' main processes and joined in order.

    fingerprint: the whole set's key (machine 0's). shares_disk: whether this machine sees machine 0's cache.
    Returns the tokenised pairs, how a child process encoded this machine's shard, and what this process did.
    """
    if not launch.is_local_main:  # the shards are on this machine's disk now: read the files its main process names
        files = launch.wait_for(launch.local_main, "tokenize train", "tokenize the train set on this machine")
        return (joined(files, fingerprint, len(pairs)) if files else tokenize_train(
            pairs, tokenizer, langs, num_proc, fingerprint=fingerprint)[0]), None, None
    count, machine = len(launch.machines), launch.machine
    if count == 1:  # one machine: the whole set, as one process tokenises it
        tokenized, child = tokenize_train(pairs, tokenizer, langs, num_proc, fingerprint=fingerprint)
        launch.done("tokenize train", None)
        return tokenized, child, None
    folder = cache_folder(pairs)
    shards = [shard_fingerprint(fingerprint, index, count) for index in range(count)]
    held = {index for index, key in enumerate(shards) if held_shard(folder, key)}
    launch.done("shards held", {"whole": bool(folder) and already_tokenized(pairs, fingerprint), "held": sorted(held),
                                "folder": folder is not None, "shares": shares_disk})
    machines = [launch.wait_for(rank, "shards held", "list the shards it holds") or {
        "whole": False, "held": sorted(held), "folder": folder is not None, "shares": shares_disk}
        for rank in launch.machines]
    if all(m["whole"] for m in machines) or not all(m["folder"] for m in machines):
        # Every machine holds the whole set already (from one process's run), or one keeps no files to hand over:
        # each machine tokenises the whole set itself, as one process does.
        tokenized, child = tokenize_train(pairs, tokenizer, langs, num_proc, fingerprint=fingerprint)
        launch.done("tokenize train", None)
        return tokenized, child, None

    work, child = ShardWork(count), None
    own = held_shard(folder, shards[machine])
    if own is None:
        tokenized, child = tokenize_train(pairs, tokenizer, langs, num_proc, fingerprint=fingerprint,
                                          shard=(machine, count))
        own = [file["filename"] for file in tokenized.cache_files]
        write_manifest(folder, shards[machine], own)
        work.encoded.append(machine)
    else:
        work.held.append(machine)
    launch.done(f"shard {machine}", [(file, Path(file).stat().st_size) for file in own])

    def receivers(index: int) -> list[int]:  # the machines that get shard `index` over the process group
        return [m for m in range(count) if m != index and index not in machines[m]["held"]
                and not (machines[m]["shares"] and machines[index]["shares"])]

    files = []
    for index in range(count):  # in the same order on every machine: each transfer's two ends meet
        owner = launch.machines[index]
        if index == machine:
            for receiver in receivers(index):
                started = time.perf_counter()
                launch.send_files(own, launch.machines[receiver])
                work.transfer_seconds += time.perf_counter() - started
                work.sent.append(receiver)
            files += own
        elif index in held:
            files += held_shard(folder, shards[index])
            work.held.append(index)
        else:
            made = launch.wait_for(owner, f"shard {index}", f"encode shard {index} of the train set")
            if machine in receivers(index):
                started = time.perf_counter()
                files += launch.receive_files([(Path(file).name, size) for file, size in made], owner, folder)
                work.transfer_seconds += time.perf_counter() - started
                write_manifest(folder, shards[index], files[-len(made):])
                work.received.append(index)
                work.received_mb += round(sum(size for _, size in made) / 2**20, 1)
            else:  # written by its owner on the disk this machine shares
                files += [file for file, _ in made]
                work.read.append(index)
    work.transfer_seconds = round(work.transfer_seconds, 2)
    launch.done("tokenize train", files)
    logger.info("tokenize train: %s", work.describe())
    return joined(files, fingerprint, len(pairs)), child, work


def work_record(work: ShardWork | None) -> dict | None:
    return asdict(work) if work else None
