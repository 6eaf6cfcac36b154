"""The evaluate command's report.json: what was evaluated, the split's scores (results.SplitScore: the metrics asked
for, each with its sacreBLEU signature) and the speed."""

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

from .evaluation import evaluate_split
from .results import DEFAULT_METRICS


def evaluate_and_report(translate_lines: Callable[[list[str]], list[str]], pairs, split: str, langs: tuple[str, str],
                        out_dir: Path, num_beams: int, length_penalty: float, *, model: str, engine: str,
                        data: str, device: str | None = None, dtype: str | None = None,
                        metrics: tuple[str, ...] = DEFAULT_METRICS) -> dict:
    """Translate and score the split with the named metrics as evaluate_split does, timed, and write
    out_dir/report.json; returns the report.

    model, engine and data say what was evaluated; they open the report. device and dtype say where it ran (the
    evaluate command's LineTranslator knows; None where the caller does not say). The report holds the metrics
    computed (and their signatures), not the others.
    """
    start = time.perf_counter()
    result = evaluate_split(translate_lines, pairs, split, langs, out_dir, num_beams, length_penalty, metrics)
    seconds = time.perf_counter() - start
    scores = {key: value for key, value in dataclasses.asdict(result).items() if value is not None}
    report = {"model": model, "engine": engine, "data": data, "direction": "-".join(langs), "device": device,
              "dtype": dtype, "metrics": list(metrics), **scores, "seconds": round(seconds, 1),
              "sentences_per_s": round(result.sentences / seconds, 1)}
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    return report
