"""The `vanilla-transformer` command line."""

import argparse
import os
import time
from pathlib import Path

DEFAULT_DATA = os.environ.get("VANILLA_TRANSFORMER_DATA", "../shared/data")


def tokenizer_train(args: argparse.Namespace) -> None:
    """Train the joint subword vocabulary on DATA/SPLIT.{lang} for every language, and save it."""
    from .tokenization import subwords_per_word, train_tokenizer
    from .corpus import read_lines

    files = [Path(args.data) / f"{args.split}.{lang}" for lang in args.langs]
    start = time.perf_counter()
    tokenizer = train_tokenizer(files, vocab_size=args.vocab_size, model=args.model, show_progress=True)
    seconds = time.perf_counter() - start
    tokenizer.save_pretrained(args.out)
    print(f"vocabulary: {len(tokenizer)} tokens ({args.model}), trained in {seconds:.1f} s, saved to {args.out}")
    for lang, path in zip(args.langs, files):
        lines = read_lines(path)
        tokens = sum(map(len, tokenizer(lines)["input_ids"]))
        print(f"  {lang}: {tokens / len(lines):.1f} tokens per sentence (with </s>), "
              f"{subwords_per_word(tokenizer, lines):.3f} subwords per word, {len(lines)} sentences")


def demo(args: argparse.Namespace) -> None:
    """Smoke run of the package: tokenizer on Multi30k, a preset model from it, one beam-search translation."""
    import torch

    from . import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration
    from .tokenization import train_tokenizer

    data = Path(args.data) / "multi30k"
    print(f"training a {args.vocab_size}-token joint BPE vocabulary on {data}/train.{{de,en}} ...")
    tokenizer = train_tokenizer([data / "train.de", data / "train.en"], vocab_size=args.vocab_size)
    torch.manual_seed(0)
    config = VanillaTransformerConfig.from_tokenizer(tokenizer, preset=args.preset)
    model = VanillaTransformerForConditionalGeneration(config).eval()
    print(f"model: preset {args.preset!r}, {sum(p.numel() for p in model.parameters()):,} parameters "
          f"(d_model {config.d_model}, {config.encoder_layers}+{config.decoder_layers} layers, "
          f"{config.num_attention_heads} heads)")
    source = "Ein Mann fährt mit dem Fahrrad durch die Stadt."
    batch = tokenizer([source], return_tensors="pt")
    start = time.perf_counter()
    output = model.generate(**batch, num_beams=4, max_new_tokens=20)
    seconds = time.perf_counter() - start
    print(f"source:      {source}")
    print(f"translation: {tokenizer.decode(output[0], skip_special_tokens=True)!r}")
    print(f"(untrained weights, so the translation is noise; beam 4 took {seconds * 1000:.0f} ms)")


def convert_marian(args: argparse.Namespace) -> None:
    """Convert a MarianMT (OPUS-MT) model folder or Hub repo into a model folder of ours."""
    from .convert.marian import convert_marian_checkpoint

    model = convert_marian_checkpoint(args.source, args.out)
    print(f"converted {args.source} -> {args.out}: {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"activation {model.config.activation_function}, tokenizer copied as it is")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vanilla-transformer", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("demo", help="smoke run: tokenizer, preset model, one beam-search translation")
    run.add_argument("--data", default=DEFAULT_DATA, help="folder holding multi30k/ (default: %(default)s)")
    run.add_argument("--preset", default="small", choices=["tiny", "small", "base", "big"])
    run.add_argument("--vocab-size", type=int, default=10000)
    run.set_defaults(func=demo)

    tokenizer = commands.add_parser("tokenizer", help="subword vocabulary")
    tokenizer_commands = tokenizer.add_subparsers(dest="tokenizer_command", required=True)
    train = tokenizer_commands.add_parser("train", help="train a joint vocabulary over several languages")
    train.add_argument("--data", required=True, help="folder with SPLIT.LANG files, one sentence per line")
    train.add_argument("--langs", nargs="+", required=True, help="languages, e.g. de en")
    train.add_argument("--split", default="train")
    train.add_argument("--vocab-size", type=int, default=37000)
    train.add_argument("--model", default="bpe", choices=["bpe", "unigram"])
    train.add_argument("--out", required=True, help="folder to save the tokenizer in")
    train.set_defaults(func=tokenizer_train)

    convert = commands.add_parser("convert-marian", help="load a MarianMT/OPUS-MT checkpoint into our model")
    convert.add_argument("source", help="a Marian model folder or Hub repo id, e.g. Helsinki-NLP/opus-mt-de-en")
    convert.add_argument("out", help="folder to write the converted model and tokenizer to")
    convert.set_defaults(func=convert_marian)

    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
