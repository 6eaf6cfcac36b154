"""One benchmark, two versions of the code, one run: the ratios a change must keep (e.g. a refactor's before/after).

Checks out REV in a temporary git worktree and runs the benchmark script from each version with its own package
(`PYTHONPATH`), alternating old, new, old, new, ... so that both see the same machine state. Prints one JSON object:
every number named `ratio`, `ratio_*` or `*_ratio` in each run's output (the benchmarks' ours / Marian), per version,
with the means, and with --keep FILE every run's whole output.
Usage: python benchmarks/bench_versions.py --base 8b5de4e --runs 2 -- bench_train.py --shapes small --steps 5
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import mean

REPO = Path(__file__).resolve().parent.parent


def ratios(result, prefix: str = "") -> dict[str, float]:
    """Every `ratio` in a benchmark's JSON, named by its path."""
    found = {}
    if isinstance(result, dict):
        for key, value in result.items():
            path = f"{prefix}.{key}" if prefix else key
            if key == "ratio" or key.startswith("ratio_") or key.endswith("_ratio"):
                found[path] = value
            else:
                found.update(ratios(value, path))
    return found


def run(tree: Path, benchmark: list[str]) -> dict:
    environment = {**os.environ, "PYTHONPATH": str(tree)}
    completed = subprocess.run([sys.executable, str(tree / "benchmarks" / benchmark[0]), *benchmark[1:]],
                               cwd=tree, env=environment, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        sys.exit(f"{benchmark[0]} failed in {tree}:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", required=True, help="the earlier commit")
    parser.add_argument("--runs", type=int, default=2, help="runs per version")
    parser.add_argument("--keep", metavar="FILE", help="write every run's whole JSON output there")
    parser.add_argument("benchmark", nargs=argparse.REMAINDER, help="-- SCRIPT [ARGS]: a script in benchmarks/")
    args = parser.parse_args()
    benchmark = args.benchmark[1:] if args.benchmark[:1] == ["--"] else args.benchmark
    commit = subprocess.check_output(["git", "rev-parse", "--short", args.base], cwd=REPO, text=True).strip()
    head = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True).strip()
    dirty = bool(subprocess.check_output(["git", "status", "--porcelain"], cwd=REPO, text=True).strip())
    with tempfile.TemporaryDirectory() as temporary:
        old = Path(temporary) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(old), commit], cwd=REPO, check=True)
        try:
            outputs = {"base": [], "current": []}
            for index in range(args.runs):
                for version, tree in (("base", old), ("current", REPO)):
                    print(f"run {index + 1}/{args.runs}: {version}", file=sys.stderr, flush=True)
                    outputs[version].append(run(tree, benchmark))
                    if args.keep:
                        Path(args.keep).write_text(json.dumps(outputs, indent=2) + "\n")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=REPO, check=False)
    runs = {version: [ratios(output) for output in outputs[version]] for version in outputs}
    names = sorted(set().union(*runs["base"], *runs["current"]))
    summary = {
        name: {
            "base": [r.get(name) for r in runs["base"]],
            "current": [r.get(name) for r in runs["current"]],
            "base_mean": round(mean(r[name] for r in runs["base"] if name in r), 3),
            "current_mean": round(mean(r[name] for r in runs["current"] if name in r), 3),
        }
        for name in names
    }
    print(json.dumps({"benchmark": benchmark, "base": commit, "current": head + ("+changes" if dirty else ""),
                      "ratios": summary}, indent=2))


if __name__ == "__main__":
    main()
