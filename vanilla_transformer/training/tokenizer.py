"""Learning the joint subword vocabulary of source and target with the `tokenizers` library (Section 5.1): byte-level
BPE or unigram, as the VanillaTransformerTokenizer that a model ships."""

import logging
from collections.abc import Iterable, Iterator, Sized
from itertools import chain
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from ..corpus import iter_lines
from ..tokenization import BOS, EOS, PAD, SPECIAL_TOKENS, UNK, VanillaTransformerTokenizer

BYTE_ALPHABET = pre_tokenizers.ByteLevel.alphabet()
# Lines longer than this are left out of the learning: BPE learns in time quadratic in a word's length (a 1 MB line of
# one character took more than 300 s), and no sentence this long is trained on: it is more than the 1,024 positions of
# the largest preset hold (about 4 characters a subword in natural text), so cleaning drops it.
MAX_LINE_CHARS = 10_000

logger = logging.getLogger(__name__)


def train_tokenizer(
    sources: Iterable[str | Path] | None = None,
    texts: Iterable[str] | None = None,
    vocab_size: int = 37000,
    model: str = "bpe",
    min_frequency: int = 2,
    show_progress: bool = True,
    max_line_chars: int = MAX_LINE_CHARS,
    length: int | None = None,
) -> VanillaTransformerTokenizer:
    """Learn one subword vocabulary over all the given files and/or texts (both languages together), read as they
    are learned from (an iterator of texts is never held as a list).

    model is "bpe" (the paper's byte-pair encoding) or "unigram". Files are read as UTF-8, one sentence per line;
    a file that is empty or not UTF-8 raises an error naming the file and line. Lines longer than max_line_chars
    are left out of the learning (and counted in the log); the tokenizer still encodes them. length: how many lines
    there are, for the progress bar (a list's length is used when not given).
    """
    if length is None and isinstance(texts, Sized) and not sources:
        length = len(texts)
    smallest = len(BYTE_ALPHABET) + len(SPECIAL_TOKENS)
    if vocab_size < smallest:
        raise ValueError(
            f"vocab_size={vocab_size} is smaller than the byte alphabet plus special tokens ({smallest})"
        )
    lines = chain(chain.from_iterable(iter_lines(source) for source in sources or ()), texts or ())
    seen = LineCount()
    corpus = seen.learnable(lines, max_line_chars)  # streamed: no list of the text, whatever its size
    first = next(corpus, None)
    if first is None:
        if not seen.lines:
            raise ValueError("no training text: pass files in sources or strings in texts")
        raise ValueError(f"no training text: all {seen.lines} lines are longer than max_line_chars={max_line_chars}")
    corpus = chain([first], corpus)

    if model == "bpe":
        backend = Tokenizer(models.BPE(unk_token=UNK))
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
            initial_alphabet=BYTE_ALPHABET, show_progress=show_progress,
        )
    elif model == "unigram":
        backend = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, unk_token=UNK, initial_alphabet=BYTE_ALPHABET,
            show_progress=show_progress,
        )
    else:
        raise ValueError(f"model must be 'bpe' or 'unigram', got {model!r}")
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(corpus, trainer, length=length)
    if seen.too_long:
        logger.info("tokenizer: %d line(s) longer than %d characters (the longest: %d) left out of its training",
                    seen.too_long, max_line_chars, seen.longest)
    eos_id = backend.token_to_id(EOS)
    backend.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, eos_id)]
    )
    return VanillaTransformerTokenizer(
        tokenizer_object=backend, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK,
        # Byte-level decoding already restores every space; the default clean-up would remove real ones.
        clean_up_tokenization_spaces=False,
        # "<s>" in a sentence (an HTML tag in web-crawled text) is text, not the control token: special tokens are
        # added by id only, so decode(encode(text)) == text for every text.
        split_special_tokens=True,
    )


class LineCount:
    """The lines a tokenizer's training was given, and those left out for their length."""

    def __init__(self):
        self.lines = self.too_long = self.longest = 0

    def learnable(self, lines: Iterable[str], max_line_chars: int) -> Iterator[str]:
        """The lines no longer than max_line_chars, counting all of them and the others as they pass."""
        for line in lines:
            self.lines += 1
            if len(line) > max_line_chars:
                self.too_long += 1
                self.longest = max(self.longest, len(line))
                continue
            yield line


def subwords_per_word(tokenizer: PreTrainedTokenizerFast, lines: list[str]) -> float:
    """Fertility: subword tokens (without specials) per whitespace-separated word."""
    encoded = tokenizer(lines, add_special_tokens=False)["input_ids"]
    return sum(map(len, encoded)) / max(1, sum(len(line.split()) for line in lines))
