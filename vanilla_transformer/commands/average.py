"""`average`: average the weights of several checkpoints into one model folder."""

import argparse

from .argument_types import positive_int

NAME = "average"
HELP = "average checkpoints' weights (the paper's last-N averaging)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoints", nargs="+", help="checkpoint folders, or one run folder with --last N")
    parser.add_argument("--last", type=positive_int, help="average the last N checkpoint-* folders of the run folder")
    parser.add_argument("--out", required=True)


def run(args: argparse.Namespace) -> None:
    from ..training.average import average_checkpoints
    from ..training.checkpoints import last_checkpoints

    checkpoints = args.checkpoints
    if args.last:
        if len(checkpoints) != 1:
            raise SystemExit("--last N takes one run folder")
        checkpoints = last_checkpoints(checkpoints[0], args.last)
        if len(checkpoints) < args.last:
            raise SystemExit(f"--last {args.last}: {args.checkpoints[0]} holds only {len(checkpoints)} complete "
                             "checkpoint(s)")
    average_checkpoints(checkpoints, args.out)
    print(f"averaged {len(checkpoints)} checkpoints into {args.out}: {', '.join(str(c) for c in checkpoints)}")
