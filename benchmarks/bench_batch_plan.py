"""The token batches of a WMT-size train set: built (as every process of a launch did on every run and resume before
they were cached) against read back from the cache, and the memory each process of a launch holds for them.

On synthetic lengths of --pairs pairs (default 4.5 million, WMT14 en-de's size; no text, no training): the seconds
to build the batches from the lengths, read a chunk at a time with scratch files beside the cache as token_batches
builds them (and the RSS and the anonymous memory the building process added at their peaks: the RSS counts the
pages of the memory-mapped scratch files, anonymous memory does not), to write them to the cache, and, in
--processes fresh processes at once (the ranks of a launch), to read and check them (size and checksum of each array)
from the cache; for each of those processes, while all of them hold the batches, the
anonymous memory the batches added (its own copy: ~0 when mapped) and the RSS and PSS of the mapped cache files (PSS
shares a page among the processes that map it). Prints one JSON.
Usage: python benchmarks/bench_batch_plan.py [--pairs 4500000] [--max-tokens 6250] [--processes 2]
"""

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from common import machine

from vanilla_transformer.training.batching import PACK_CHUNK_ROWS, BatchesKey, cached_batches, pack_length_chunks

# One rank: reads the batches from the cache (argv: folder, key as JSON), says so, and holds them until told to end.
RANK = """
import json, sys, time
from pathlib import Path
from vanilla_transformer.training.batching import BatchesKey, cached_batches

def anonymous_kb():
    for line in open("/proc/self/smaps_rollup"):
        if line.startswith("Anonymous:"):
            return int(line.split()[1])

def refuse_to_build():
    raise SystemExit("the batches were not found in the cache")

before = anonymous_kb()
started = time.perf_counter()
batches = cached_batches(Path(sys.argv[1]), BatchesKey(**json.loads(sys.argv[2])), refuse_to_build)
seconds = time.perf_counter() - started
print(json.dumps({"read_seconds": round(seconds, 3), "anonymous_added_mb": round((anonymous_kb() - before) / 1024, 1),
                  "batches": len(batches.starts) - 1}), flush=True)
sys.stdin.readline()
"""


def mapped_mb(pid: int, folder: Path) -> dict[str, float]:
    """RSS and PSS of the process's mappings of files in the folder (Linux smaps), in MB."""
    totals, inside = {"Rss:": 0, "Pss:": 0}, False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if not fields[0].endswith(":"):  # a mapping's header line: address range, ..., and the path of a file's
            inside = len(fields) >= 6 and fields[5].startswith(str(folder))
        elif inside and fields[0] in totals:
            totals[fields[0]] += int(fields[1])
    return {"cache_files_rss_mb": round(totals["Rss:"] / 1024, 1),
            "cache_files_pss_mb": round(totals["Pss:"] / 1024, 1)}


def status_mb(field: str) -> float:
    """A size from /proc/self/status (VmRSS, VmHWM), in MB."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def anonymous_mb() -> float:
    """This process's anonymous memory now (Linux smaps_rollup), in MB."""
    line = next(line for line in Path("/proc/self/smaps_rollup").read_text().splitlines()
                if line.startswith("Anonymous:"))
    return int(line.split()[1]) / 1024


def peak_anonymous_mb(work):
    """What work() returns, and the largest anonymous memory of this process while it ran (sampled every 10 ms)."""
    peak, done = [anonymous_mb()], threading.Event()

    def sample():
        while not done.wait(0.01):
            peak[0] = max(peak[0], anonymous_mb())

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        return work(), max(peak[0], anonymous_mb())
    finally:
        done.set()
        sampler.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=4_500_000)
    parser.add_argument("--max-tokens", type=int, default=6250, help="tokens of a micro-batch (the base recipe's)")
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    # Subword lengths of WMT-like pairs: mostly 10-40, a long tail to the cleaning's 250.
    src = np.clip(rng.lognormal(3.2, 0.6, args.pairs), 1, 250).astype(np.int32)
    tgt = np.clip(src * rng.normal(1.05, 0.15, args.pairs), 1, 250).astype(np.int32)
    key = BatchesKey(args.pairs, f"synthetic-{args.pairs}", args.max_tokens, 0)
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work) / key.fingerprint()
        Path("/proc/self/clear_refs").write_text("5")  # the peak RSS (VmHWM) starts again from the RSS now
        rss_before, anonymous_before = status_mb("VmRSS"), anonymous_mb()

        def chunks():
            rows = range(0, args.pairs, PACK_CHUNK_ROWS)
            return ((src[i:i + PACK_CHUNK_ROWS], tgt[i:i + PACK_CHUNK_ROWS]) for i in rows)

        started = time.perf_counter()
        built, anonymous_peak = peak_anonymous_mb(
            lambda: pack_length_chunks(chunks, args.pairs, args.max_tokens, key.seed, key, scratch=Path(work)))
        build_seconds = time.perf_counter() - started
        build_peak_mb = status_mb("VmHWM") - rss_before
        started = time.perf_counter()
        cached_batches(folder, key, lambda: built)
        write_seconds = time.perf_counter() - started
        command = [sys.executable, "-c", RANK, str(folder), json.dumps(dataclasses.asdict(key))]
        ranks = [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                 for _ in range(args.processes)]
        processes = []
        for rank in ranks:  # all of them hold the batches now
            processes.append(json.loads(rank.stdout.readline()))
        for rank, figures in zip(ranks, processes):
            figures.update(mapped_mb(rank.pid, folder))
        for rank in ranks:
            rank.communicate("\n")
        cache_mb = round(sum(f.stat().st_size for f in folder.iterdir()) / 2**20, 1)
    print(json.dumps({
        "machine": machine(), "pairs": args.pairs, "max_tokens": args.max_tokens, "batches": len(built.starts) - 1,
        "build_seconds": round(build_seconds, 2), "write_seconds": round(write_seconds, 2), "cache_mb": cache_mb,
        "built_arrays_mb": round((built.order.nbytes + built.starts.nbytes) / 2**20, 1),
        "build_peak_rss_added_mb": round(build_peak_mb),  # the building process's temporaries at their largest
        "build_peak_anonymous_added_mb": round(anonymous_peak - anonymous_before),  # of them, not the scratch files'
        "processes_reading_the_cache": processes,
        "build_over_read_ratio": round(build_seconds / max(p["read_seconds"] for p in processes), 1),
    }, indent=2))


if __name__ == "__main__":
    main()
