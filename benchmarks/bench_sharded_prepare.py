"""The data path of a launch of two machines (on this one, over loopback, gloo, one process each) against one process.

Builds bench_data.py's corpus of `--pairs` pairs, then runs `vanilla-transformer prepare` on the wmt14 recipe: once
in one process with an empty datasets cache, and once as a launch of two machines, each with an empty cache of its own
(no shared disk: each encodes its half of the train set and receives the other's over the process group) or, with
--shared-disk, both on one. The tokenizer is learned beforehand into each cache (the one process's run), so that the
launch times the tokenising and the exchange. Prints one JSON object: each run's wall-clock seconds and the phases
of each process (seconds, cached, the shards encoded, read, received and sent, MB received), and the launch's
tokenize-train seconds as a ratio of the one process's. On one machine the two "machines" share its cores: the ratio
shows the exchange's cost, not the speed-up of two real machines.
Usage: python benchmarks/bench_sharded_prepare.py [--pairs 300000] [--work /tmp/bench-sharded] [--shared-disk]
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench_data import build_corpus
from common import machine

REPO = Path(__file__).resolve().parent.parent


def prepare_command(corpus: Path, phases: Path, launch: list[str]) -> list[str]:
    overrides = [f"data.source={corpus}", "data.test=null", "data.validation_size=8"]
    program = ["-m", "vanilla_transformer.cli", "prepare", str(REPO / "configs/wmt14-en-de-base.yaml"),
               "--json", str(phases)]
    for override in overrides:
        program += ["--set", override]
    return [sys.executable, *launch, *program] if launch else [sys.executable, *program]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=300_000)
    parser.add_argument("--data", default=os.environ.get("VANILLA_TRANSFORMER_DATA", "../shared/data"))
    parser.add_argument("--work", default="/tmp/bench-sharded", help="a folder for the corpus, caches and phases")
    parser.add_argument("--shared-disk", action="store_true", help="both machines on one datasets cache")
    args = parser.parse_args()
    work = Path(args.work)
    if work.exists():
        sys.exit(f"{work} exists: pass a new --work folder (the runs must find empty caches)")
    corpus = build_corpus(Path(args.data), work / "corpus", args.pairs)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}

    started = time.perf_counter()
    subprocess.run(prepare_command(work / "corpus", work / "one.json", []), check=True, cwd=REPO,
                   env={**env, "HF_DATASETS_CACHE": str(work / "one")}, stdout=subprocess.DEVNULL)
    one = {"seconds": round(time.perf_counter() - started, 1), "phases": json.loads((work / "one.json").read_text())}

    # Each machine's cache starts with the tokenizer learned (machine 0 hands its own over in any case).
    disks = [work / "shared"] if args.shared_disk else [work / "machine0", work / "machine1"]
    for disk in disks:
        shutil.copytree(work / "one/vanilla_transformer/tokenizers", disk / "vanilla_transformer/tokenizers")
    port, launches = free_port(), []
    started = time.perf_counter()
    for rank in (0, 1):
        disk = disks[0] if args.shared_disk else disks[rank]
        launch = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "2",
                  "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
                  "--mixed_precision", "no", "--dynamo_backend", "no"]
        launches.append(subprocess.Popen(prepare_command(work / "corpus", work / f"machine{rank}.json", launch),
                                         cwd=REPO, env={**env, "HF_DATASETS_CACHE": str(disk)},
                                         stdout=subprocess.DEVNULL))
    if any(launch.wait() for launch in launches):
        sys.exit("the launch failed")
    two = {"seconds": round(time.perf_counter() - started, 1),
           "phases": {f"machine{rank}": json.loads((work / f"machine{rank}.json").read_text()) for rank in (0, 1)}}

    def tokenize_seconds(phases: list[dict]) -> float:
        return next(p["seconds"] for p in phases if p["name"] == "tokenize train")

    print(json.dumps({
        "machine": machine(), "corpus": corpus, "shared_disk": args.shared_disk, "one_process": one,
        "two_machines": two,
        "tokenize_train_ratio": round(max(tokenize_seconds(p) for p in two["phases"].values())
                                      / tokenize_seconds(one["phases"]), 2),
    }, indent=2))


if __name__ == "__main__":
    main()
