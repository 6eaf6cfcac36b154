"""The source language's usual casing of its words, learned from the training sources, which the translation
pipeline's Recaser uses to recase input typed all in capitals or all in lower case (truecasing, as the Moses
truecaser learns it: sentence-initial words are not counted, their capital says nothing about the word)."""

from collections import Counter
from collections.abc import Iterable

from ..pipeline import WORD, Recaser

MOST_WORDS = 100_000  # the table keeps the most frequent words whose usual form is not lower case (a few MB at most)


def learn_recaser(sources: Iterable[str], most_words: int = MOST_WORDS) -> Recaser:
    """Each word's most frequent form in these sentences, kept where it is not the lower-case one (the default)."""
    forms = Counter()
    for sentence in sources:
        forms.update(WORD.findall(sentence)[1:])
    usual: dict[str, tuple[int, str]] = {}
    totals = Counter()
    for form, count in forms.items():
        lower = form.lower()
        totals[lower] += count
        if lower not in usual or (count, form) > usual[lower]:  # ties to the same form on every run
            usual[lower] = (count, form)
    kept = [lower for lower, (_, form) in usual.items() if form != lower]
    kept.sort(key=lambda lower: (-totals[lower], lower))
    return Recaser({lower: usual[lower][1] for lower in kept[:most_words]})
