"""The wmt14 recipe's data path on a WMT-size corpus: time to the first update, per phase, first run and rerun.

Builds a corpus of `--pairs` lines (default 4.5 million, WMT14 en-de's size) by repeating the real en-de pairs in
the shared data (Multi30k train and the WMT news sets other than newstest2013/2014), with newstest2013 as validation
and newstest2014 as test, then runs `vanilla-transformer train` on it twice with one update each: first with an
empty datasets cache, then in a new run folder (everything cached), then `--resume` of the first run for one more
update. Each run's stderr is timestamped as it arrives: the first update starts when the Trainer's batch line is
logged. Prints one JSON object: per run the wall-clock seconds to the first update, the update's seconds, the data
path's phases (data-rank0.json: seconds, rows, MB, cached, the process's peak RSS at the end of each; for the train
set's tokenising in a child process, the child's peak and this process's RSS meanwhile), the whole run's peak RSS (its
largest process), and, sampled every 0.5 s until the first update, the RSS, PSS and anonymous memory summed over the
run's processes and the peaks of each process (by pid, with its role): anonymous memory is the process's own, not the
page cache of files it maps, which PSS shares out among the processes that map them.
Usage: python benchmarks/bench_data.py [--pairs 4500000] [--data ../shared/data] [--work /tmp/bench-data]
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import machine

REPO = Path(__file__).resolve().parent.parent
TRAIN_SETS = ["multi30k/train"] + [f"wmt_news_extra/{name}" for name in (
    "newstest2008", "newssyscomb2009", "newstest2009", "newstest2010", "newstest2011", "newstest2012",
    "newstest2015", "newstest2016", "newstest2017", "newstest2018", "newstest2019-deen", "newstest2019-ende")]


def build_corpus(data: Path, folder: Path, pairs: int) -> dict:
    """train.{en,de} of `pairs` lines repeated from the shared sets; validation/test from newstest2013/2014."""
    started = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    sides = {lang: [line for name in TRAIN_SETS for line in (data / f"{name}.{lang}").read_text("utf-8").splitlines()]
             for lang in ("en", "de")}
    distinct = len(sides["en"])
    for lang, lines in sides.items():
        with open(folder / f"train.{lang}", "w", encoding="utf-8") as out:
            for start in range(0, pairs, distinct):
                out.write("\n".join(lines[: min(distinct, pairs - start)]) + "\n")
        for split, name in (("validation", "newstest2013"), ("test", "newstest2014")):
            (folder / f"{split}.{lang}").write_bytes((data / f"wmt14/{name}.{lang}").read_bytes())
    return {"pairs": pairs, "distinct_pairs": distinct, "seconds": round(time.perf_counter() - started, 1),
            "megabytes": round(sum(f.stat().st_size for f in folder.glob("train.*")) / 2**20, 1)}


def run_train(corpus: Path, out: Path, cache: Path, recipe: str, resume: bool = False) -> dict:
    """One `train` with one update (a resume: one more); the seconds to its first update and from it to the exit, from
    timestamped stderr."""
    # One update; the Trainer then validates (here on 8 sentences, greedy, to keep it short) and saves.
    overrides = [f"data.source={corpus}", f"training.max_steps={2 if resume else 1}", "data.test=null",
                 "average_last=0", "data.validation_size=8", "generation.num_beams=1", "generation.max_length_offset=0"]
    # Through a parent of its own, which reports the run's peak RSS (the children's, when they have all ended).
    report_rss = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
                  "print('peak_rss_kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
                  "sys.exit(code)")
    command = [sys.executable, "-c", report_rss, sys.executable, "-m", "vanilla_transformer.cli", "train", recipe,
               "--output-dir", str(out), *(["--resume"] if resume else [])]
    for override in overrides:
        command += ["--set", override]
    env = {**os.environ, "HF_DATASETS_CACHE": str(cache)}
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                               cwd=REPO)
    first_update = peak_rss_kb = None
    log = []

    def read_stderr():
        nonlocal first_update, peak_rss_kb
        for line in process.stderr:
            if line.startswith("peak_rss_kb "):
                peak_rss_kb = int(line.split()[1])
                continue
            log.append(line)
            print(line, end="", file=sys.stderr, flush=True)
            if first_update is None and "training pairs in" in line:
                first_update = time.perf_counter() - started

    samples = []  # (seconds, the run's processes' summed RSS, PSS and anonymous memory, MB)
    peaks = {}  # pid: the process's role and its largest RSS, PSS and anonymous memory until the first update, MB

    def sample_memory():
        while process.poll() is None:
            processes = tree_memory_mb(process.pid)
            seconds = time.perf_counter() - started
            kinds = ("rss", "pss", "anonymous")
            samples.append((seconds, *(sum(figures[kind] for figures in processes.values()) for kind in kinds)))
            if first_update is None or seconds <= first_update:
                for pid, figures in processes.items():
                    peak = peaks.setdefault(pid, {"role": figures["role"]})
                    for kind in kinds:
                        peak[f"{kind}_mb"] = max(peak.get(f"{kind}_mb", 0), figures[kind])
            time.sleep(0.5)

    reader, sampler = threading.Thread(target=read_stderr), threading.Thread(target=sample_memory)
    reader.start()
    sampler.start()
    process.wait()
    reader.join()
    sampler.join()
    total = time.perf_counter() - started
    if process.returncode != 0:
        sys.exit("".join(log[-40:]))
    phases = json.loads((out / "data-rank0.json").read_text())
    return {
        "seconds_to_first_update": round(first_update, 1),
        "seconds_from_first_update_to_exit": round(total - first_update, 1),
        "data_path_seconds": round(sum(p["seconds"] for p in phases), 1),
        # The phases' own peaks, or for one that a child process ran, this process's RSS then plus the child's peak.
        "data_path_peak_rss_mb": max(p.get("peak_rss_with_child_mb") or p["peak_rss_mb"] for p in phases),
        "phases": phases,
        "peak_rss_mb": round(peak_rss_kb / 1024),
        # Sampled every 0.5 s over all the run's processes until its first update (the data path, then the model):
        # RSS summed counts the pages of an Arrow file that two processes map twice; PSS shares them out.
        "to_first_update_peak_tree_mb": {kind: max(sample[column] for sample in samples if sample[0] <= first_update)
                                         for column, kind in ((1, "rss"), (2, "pss"), (3, "anonymous"))},
        # Each process's own peaks over the same samples (a process that lived less than 0.5 s may be missing).
        "to_first_update_peak_per_process_mb": {str(pid): peak for pid, peak in sorted(peaks.items())},
        "to_first_update_peak_anonymous_of_a_process_mb": max((peak["anonymous_mb"] for peak in peaks.values()),
                                                              default=None),
    }


def tree_memory_mb(root: int) -> dict[int, dict]:
    """The RSS, PSS and anonymous memory (Linux smaps_rollup, MB) and the role of a process and of each of its
    descendants, by pid."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        parents[int(stat.parent.name)] = int(fields[1])
    tree, grew = {root}, True
    while grew:
        grown = tree | {pid for pid, parent in parents.items() if parent in tree}
        grew, tree = grown != tree, grown
    memory = {}
    for pid in tree:
        try:
            kilobytes = {}
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                key, value = line.split()[:2]
                if key in ("Rss:", "Pss:", "Anonymous:"):
                    kilobytes[key[:-1].lower()] = int(value)
            role = process_role(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"))
        except (OSError, ValueError):
            continue  # ended meanwhile
        if len(kilobytes) < 3:
            continue  # a zombie: its memory is gone
        memory[pid] = {"role": role, **{kind: round(kb / 1024) for kind, kb in kilobytes.items()}}
    return memory


def process_role(argv: list[bytes]) -> str:
    """What a process of the run is, from its command line."""
    line = b" ".join(argv).decode(errors="replace")
    if "RUSAGE_CHILDREN" in line:  # its arguments are the train command's
        return "peak-RSS reporter (the parent)"
    if "tokenize_child" in line:
        return "tokenize child"
    if "vanilla_transformer.cli" in line:
        return "train"
    if "multiprocessing" in line:
        return "worker (multiprocessing)"
    return line[:80]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=4_500_000)
    parser.add_argument("--data", default=os.environ.get("VANILLA_TRANSFORMER_DATA", "../shared/data"))
    parser.add_argument("--work", default="/tmp/bench-data", help="a folder for the corpus, cache and runs")
    parser.add_argument("--recipe", default=str(REPO / "configs/wmt14-en-de-base.yaml"))
    args = parser.parse_args()
    work = Path(args.work)
    if work.exists():
        sys.exit(f"{work} exists: pass a new --work folder (the first run must find an empty cache)")
    corpus = build_corpus(Path(args.data), work / "corpus", args.pairs)
    first = run_train(work / "corpus", work / "first", work / "cache", args.recipe)
    rerun = run_train(work / "corpus", work / "rerun", work / "cache", args.recipe)
    resumed = run_train(work / "corpus", work / "first", work / "cache", args.recipe, resume=True)
    print(json.dumps({"machine": machine(), "recipe": args.recipe, "corpus": corpus, "first_run": first,
                      "rerun": rerun, "resume": resumed}, indent=2))


if __name__ == "__main__":
    main()
