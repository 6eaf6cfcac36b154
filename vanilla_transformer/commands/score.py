"""`score`: the forced-decoding score of given translations, a source file and a target file line for line: each
pair's log-probability (the sum over the target's tokens and </s>), its token count and the mean per token, as JSON
lines or TSV, in input order. For filtering a crawled corpus or reranking n-best lists, as fairseq's
--score-reference, CTranslate2's score_batch and marian-scorer.

A pair the model cannot take (a line that is not UTF-8, a side longer than the model's positions) is named on stderr
and gets a row without a score; the others are scored, and the command exits with status 1 at the end.
"""

import argparse
import sys
from contextlib import nullcontext
from itertools import islice
from pathlib import Path

from ..corpus import CorpusError, decode_line
from .argument_types import positive_int
from .translation_options import add_engine_arguments

NAME = "score"
HELP = "score given translations (forced decoding): each line's log-probability, as JSON lines or TSV"
WINDOW = 2048  # pairs read at a time: the engine sorts them by length into batches, and runs its workers on them


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model")
    parser.add_argument("--source", required=True, help="the source sentences, one a line")
    parser.add_argument("--target", required=True, help="their translations to score, line for line")
    parser.add_argument("--output", help="the file of the scores, a row a pair (default: standard output)")
    parser.add_argument("--format", choices=("jsonl", "tsv"), default="jsonl",
                        help='jsonl: {"line", "log_prob", "tokens", "score"} (score: per token); tsv: line, log_prob, '
                             "tokens, score")
    parser.add_argument("--batch-size", type=positive_int, default=32)
    add_engine_arguments(parser)


def run(args: argparse.Namespace) -> None:
    from ..scoring import PairScore, score_row
    from ..translators import line_translator

    source, target = Path(args.source), Path(args.target)
    lines = parallel_line_count(source, target)
    if args.output and Path(args.output).resolve() in (source.resolve(), target.resolve()):
        raise ValueError(f"--output {args.output} is an input file, which it would overwrite")
    scorer = line_translator(args.model, args.engine, num_beams=1, length_penalty=1.0, batch_size=args.batch_size,
                             device=args.device, dtype=args.dtype, compute_type=args.compute_type,
                             inter_threads=args.inter_threads, intra_threads=args.intra_threads)
    errors = []
    with (open(args.output, "w", encoding="utf-8") if args.output else nullcontext(sys.stdout)) as output, \
            source.open("rb") as sources, target.open("rb") as targets:
        pairs, first_line = zip(sources, targets), 1
        while batch := list(islice(pairs, WINDOW)):
            texts, undecodable = decode_pairs(batch, first_line, (source, target))
            scores = scorer.score([s for s, _ in texts], [t for _, t in texts], first_line, (str(source), str(target)))
            for number, score in enumerate(scores, start=first_line):
                score = PairScore(error=undecodable[number]) if number in undecodable else score
                if score.error:
                    print(f"vanilla-transformer score: error: {score.error}; its row has no score", file=sys.stderr)
                    errors.append(number)
                output.write(score_row(number, score, args.format) + "\n")
            output.flush()
            first_line += len(batch)
    if errors:
        raise SystemExit(f"vanilla-transformer score: {len(errors)} of {lines} pairs not scored (line "
                         f"{', '.join(map(str, errors[:10]))}): their rows have no score")


def parallel_line_count(source: Path, target: Path) -> int:
    """The lines of the two files, which must have as many; a CorpusError naming the files otherwise."""
    counts = []
    for path in (source, target):
        if not path.is_file():
            raise CorpusError(f"{path}: no such file")
        with path.open("rb") as file:
            counts.append(sum(1 for _ in file))
    if counts[0] != counts[1]:
        raise CorpusError(f"{source} has {counts[0]} lines but {target} has {counts[1]}: score needs one target line "
                          "per source line")
    return counts[0]


def decode_pairs(batch: list[tuple[bytes, bytes]], first_line: int,
                 paths: tuple[Path, Path]) -> tuple[list[tuple[str, str]], dict[int, str]]:
    """The pairs as text, and {line: error} for those with a side that is not UTF-8 (given as empty lines)."""
    texts, undecodable = [], {}
    for number, raw_pair in enumerate(batch, start=first_line):
        pair = []
        for path, raw in zip(paths, raw_pair):
            try:
                pair.append(decode_line(raw, f"{path}:{number}"))
            except CorpusError as error:
                undecodable[number] = "; ".join(filter(None, [undecodable.get(number), str(error)]))
                pair.append("")
        texts.append(tuple(pair))
    return texts, undecodable
