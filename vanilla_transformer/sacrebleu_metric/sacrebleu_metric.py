"""sacreBLEU's BLEU, chrF and TER as an `evaluate` metric that loads from this folder, with no download.

`evaluate.load("sacrebleu")` fetches its script from the Hub; this module is the same computation, shipped.
"""

import datasets
import evaluate
import sacrebleu

METRICS = ("bleu", "chrf", "ter")  # what `metrics` may name
_DESCRIPTION = ("Corpus BLEU (detokenized, cased, 13a tokenization), chrF and TER from sacrebleu, each with its "
                "signature.")
_KWARGS = """
predictions: list of hypothesis strings; references: list of reference strings (one per hypothesis).
metrics: which of "bleu", "chrf", "ter" to compute (default bleu and chrf).
Returns, for BLEU: score, signature, counts, totals, precisions, brevity penalty (bp), sys_len, ref_len; for chrF:
chrf, chrf_signature; for TER: ter, ter_signature.
"""


class SacreBleu(evaluate.Metric):
    """Corpus-level sacreBLEU (13a, cased), chrF and TER, with sacreBLEU's default settings."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Post, 2018. A Call for Clarity in Reporting BLEU Scores.",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, tokenize="13a", lowercase=False, metrics=("bleu", "chrf")):
        unknown = sorted(set(metrics) - set(METRICS))
        if unknown:
            raise ValueError(f"metrics: unknown {unknown}; known: {list(METRICS)}")
        result = {}
        if "bleu" in metrics:
            bleu = sacrebleu.metrics.BLEU(tokenize=tokenize, lowercase=lowercase)
            bleu_score = bleu.corpus_score(predictions, [references])
            result.update(score=bleu_score.score, signature=str(bleu.get_signature()), counts=bleu_score.counts,
                          totals=bleu_score.totals, precisions=bleu_score.precisions, bp=bleu_score.bp,
                          sys_len=bleu_score.sys_len, ref_len=bleu_score.ref_len)
        for name, kind in (("chrf", sacrebleu.metrics.CHRF), ("ter", sacrebleu.metrics.TER)):
            if name in metrics:
                metric = kind()
                result[name] = metric.corpus_score(predictions, [references]).score
                result[f"{name}_signature"] = str(metric.get_signature())
        return result
