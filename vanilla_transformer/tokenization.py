"""The tokenizer of a model: one joint subword vocabulary for source and target (Section 5.1), in tokenizer.json.

The subwords are learned over bytes (byte-level BPE, training/tokenizer.py), so encoding is lossless with no
normalisation at all: decode(encode(s)) == s for any string, special-token strings such as "<s>" included, and a
character never seen in training is spelled with byte tokens rather than lost to <unk>. This file travels with a saved
model; like modeling.py it imports nothing but transformers.
"""

from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]  # ids 0, 1, 2, 3, as VanillaTransformerConfig expects


class VanillaTransformerTokenizer(PreTrainedTokenizerFast):
    """The joint BPE tokenizer: every sequence ends with </s>, and text_target gives the labels."""

    vocab_files_names = {"tokenizer_file": "tokenizer.json"}
    model_input_names = ["input_ids", "attention_mask"]
    padding_side = "right"
    # No __init__ here: with one, transformers 5 rebuilds the backend from the vocabulary alone and drops the merges.


__all__ = ["VanillaTransformerTokenizer", "SPECIAL_TOKENS"]
