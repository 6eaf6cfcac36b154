"""sacreBLEU and chrF as an `evaluate` metric that loads from this folder, with no download.

`evaluate.load("sacrebleu")` fetches its script from the Hub; this module is the same computation, shipped.
"""

import datasets
import evaluate
import sacrebleu

_DESCRIPTION = "Corpus BLEU and chrF from sacrebleu (detokenized, cased, 13a tokenization), with their signatures."
_KWARGS = """
predictions: list of hypothesis strings; references: list of reference strings (one per hypothesis).
Returns: score (BLEU), chrf, the BLEU and chrF signatures, counts, precisions, brevity penalty, lengths.
"""


class SacreBleu(evaluate.Metric):
    """Corpus-level sacreBLEU (13a, cased) and chrF."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Post, 2018. A Call for Clarity in Reporting BLEU Scores.",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, tokenize="13a", lowercase=False):
        bleu = sacrebleu.metrics.BLEU(tokenize=tokenize, lowercase=lowercase)
        chrf = sacrebleu.metrics.CHRF()
        bleu_score = bleu.corpus_score(predictions, [references])
        chrf_score = chrf.corpus_score(predictions, [references])
        return {
            "score": bleu_score.score,
            "chrf": chrf_score.score,
            "signature": str(bleu.get_signature()),
            "chrf_signature": str(chrf.get_signature()),
            "counts": bleu_score.counts,
            "totals": bleu_score.totals,
            "precisions": bleu_score.precisions,
            "bp": bleu_score.bp,
            "sys_len": bleu_score.sys_len,
            "ref_len": bleu_score.ref_len,
        }
