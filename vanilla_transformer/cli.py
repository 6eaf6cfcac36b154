"""The `vanilla-transformer` command line."""

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path


def tokenizer_train_command(args: argparse.Namespace) -> None:
    """Train the joint subword vocabulary on DATA/SPLIT.{lang} for every language, and save it."""
    from .corpus import read_lines
    from .tokenization import subwords_per_word, train_tokenizer

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


QUICK = ["training.max_steps=120", "training.eval_steps=60", "training.save_steps=60", "data.validation_size=100",
         "data.test_size=200", "training.warmup_steps=300", "average_last=2"]


def demo_command(args: argparse.Namespace) -> None:
    """The main job: train the Multi30k de->en recipe, score test2016 with beam search, show some translations."""
    from .training.recipe import load_recipe
    from .training.run import train

    recipe = load_recipe(args.recipe, (QUICK if args.quick else []) + args.set)
    if args.quick:
        recipe.output_dir = str(recipe.run_dir) + "-quick"
    print(f"recipe {args.recipe}{' (--quick smoke run)' if args.quick else ''}, run folder {recipe.run_dir}")
    results = train(recipe, overwrite=True)  # the demo's own folder: a new demo replaces the last one
    test = results.test
    for example in test.examples:
        print(f"\n  source     {example['source']}\n  reference  {example['reference']}\n"
              f"  ours       {example['translation']}")
    print(f"\n{results.parameters:,} parameters, {results.steps} updates in {results.train_seconds / 60:.1f} min")
    print(f"{test.split} ({test.sentences} sentences) sacreBLEU {test.bleu:.2f}, chrF {test.chrf:.2f}")
    print(f"signature: {test.bleu_signature}")
    print(f"run folder: {recipe.run_dir} (model/, results.json, curves.png, log.csv)")


def convert_marian_command(args: argparse.Namespace) -> None:
    """Convert a MarianMT (OPUS-MT) model folder or Hub repo into a model folder of ours."""
    from .convert.marian import convert_marian_checkpoint

    model = convert_marian_checkpoint(args.source, args.out)
    print(f"converted {args.source} -> {args.out}: {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"activation {model.config.activation_function}, tokenizer copied as it is")


def export_marian_command(args: argparse.Namespace) -> None:
    """Write a model folder of ours as a MarianMTModel folder with the same outputs."""
    from .convert.marian import export_marian_checkpoint

    marian = export_marian_checkpoint(args.model, args.out)
    print(f"exported {args.model} -> {args.out}: MarianMTModel, {marian.num_parameters():,} parameters")


def train_command(args: argparse.Namespace) -> None:
    """Train from a recipe (configs/*.yaml), evaluate on its test split, and write the run folder."""
    import transformers

    from .training.recipe import load_recipe
    from .training.run import train

    transformers.logging.set_verbosity_info() if args.verbose else transformers.logging.set_verbosity_warning()
    recipe = load_recipe(args.recipe, args.set)
    if args.output_dir:
        recipe.output_dir = args.output_dir
    results = train(recipe, resume=args.resume, overwrite=args.overwrite)
    if results is None:
        return  # not the main process of a distributed run
    summary = {k: v for k, v in dataclasses.asdict(results).items() if k not in ("validation_bleu", "test")}
    print(json.dumps(summary, indent=2))
    if results.test:
        test = results.test
        print(f"{test.split} sacreBLEU {test.bleu:.2f}  chrF {test.chrf:.2f}  ({test.bleu_signature})")


def prepare_command(args: argparse.Namespace) -> None:
    """Run a recipe's data path alone (read, tokenizer, tokenize, clean, batches) and print each phase's time and size.

    What it makes is cached, so that `train` with the same recipe and data reuses it.
    """
    from .configuration import VanillaTransformerConfig
    from .training.batching import TokenBatchSampler
    from .training.data import token_lengths
    from .training.prepare import Phase, prepare_data
    from .training.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.set)
    recipe.check()
    config = VanillaTransformerConfig.from_preset(recipe.model.preset, **recipe.model.overrides)
    data = prepare_data(recipe, recipe.data_source(), max_length=config.max_position_embeddings)
    started = time.perf_counter()
    train_set, t = data.train_set, recipe.training
    sampler = TokenBatchSampler(token_lengths(train_set, "input_ids"), token_lengths(train_set, "labels"),
                                max_tokens=t.batch_tokens, shuffle=True, seed=t.seed)
    data.phases.append(Phase("batches", round(time.perf_counter() - started, 1), rows=len(sampler)))
    print(data.table())
    print(f"{len(sampler):,} batches of at most {t.batch_tokens:,} tokens "
          f"({t.micro_batches * t.gradient_accumulation_steps} per update), "
          f"{100 * sampler.padding_fraction():.1f}% padding")
    if args.json:
        Path(args.json).write_text(json.dumps([dataclasses.asdict(p) for p in data.phases], indent=2) + "\n")


def average_command(args: argparse.Namespace) -> None:
    """Average the weights of several checkpoints into one model folder."""
    from .training.average import average_checkpoints
    from .training.checkpoints import last_checkpoints

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


def load_model(folder: str):
    """A model folder written by this package (or any folder of a transformers seq2seq model) and its tokenizer."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from . import VanillaTransformerConfig  # noqa: F401  (registers the Auto classes)
    from .hub.source import model_source

    folder = model_source(folder)
    return AutoModelForSeq2SeqLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def evaluate_command(args: argparse.Namespace) -> None:
    """Translate a split and score it with sacreBLEU and chrF; write the hypotheses and a JSON report."""
    from .evaluation import evaluate_split
    from .training.data import load_parallel

    translate_lines = make_translator(args, progress=True)
    pairs = load_parallel(args.data, (args.src, args.tgt), splits=[args.split])[args.split]
    out = Path(args.out or Path(args.model) / f"eval-{args.split}.{args.src}-{args.tgt}")
    start = time.perf_counter()
    result = evaluate_split(translate_lines, pairs, args.split, (args.src, args.tgt), out, args.num_beams,
                            args.length_penalty)
    seconds = time.perf_counter() - start
    report = {"model": args.model, "engine": args.engine, "data": str(args.data),
              "direction": f"{args.src}-{args.tgt}", **dataclasses.asdict(result), "seconds": round(seconds, 1),
              "sentences_per_s": round(result.sentences / seconds, 1)}
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    print(f"{args.split} {args.src}->{args.tgt}: sacreBLEU {result.bleu:.2f}  chrF {result.chrf:.2f}  "
          f"({result.sentences} sentences, {report['sentences_per_s']} sentences/s)")
    print(f"BLEU signature: {result.bleu_signature}")
    print(f"chrF signature: {result.chrf_signature}")
    print(f"hypotheses and report.json in {out}")


def make_translator(args: argparse.Namespace, progress: bool):
    """translate_lines(lines, first_line) -> translations, with the engine and decoding settings of the command."""
    from .evaluation import decoding_settings, translate

    settings = dict(batch_size=args.batch_size, **decoding_settings(args.num_beams, args.length_penalty))
    if args.engine == "ctranslate2":
        from .engines.ctranslate2 import Translator

        engine = Translator(args.model, compute_type=args.compute_type, inter_threads=args.inter_threads,
                            intra_threads=args.intra_threads)
        settings.pop("early_stopping")  # the engine stops a beam at </s> always

        def translate_lines(lines: list[str], first_line: int = 1) -> list[str]:
            return engine.translate(lines, first_line=first_line, **settings)
    else:
        model, tokenizer = load_model(args.model)

        def translate_lines(lines: list[str], first_line: int = 1) -> list[str]:
            return translate(model, tokenizer, lines, progress=progress, first_line=first_line, **settings)

    return translate_lines


def translate_command(args: argparse.Namespace) -> None:
    """Translate the given sentences, or standard input line by line in batches: one output line per input line.

    A line that is not UTF-8 is reported on stderr with its number and gives an empty output line; the others are
    translated, and the command exits with status 1 at the end.
    """
    import sys

    from .corpus import CorpusError, decode_line

    translate_lines = make_translator(args, progress=False)
    if args.text:
        for line in translate_lines(args.text):
            print(line)
        return
    undecodable = []
    batch, first_line = [], 1
    for number, raw in enumerate(sys.stdin.buffer, start=1):
        try:
            batch.append(decode_line(raw, f"stdin line {number}"))
        except CorpusError as error:
            print(f"vanilla-transformer translate: error: {error}; its output line is empty", file=sys.stderr)
            undecodable.append(number)
            batch.append("")
        if len(batch) == args.batch_size:
            print("\n".join(translate_lines(batch, first_line)), flush=True)
            batch, first_line = [], number + 1
    if batch:
        print("\n".join(translate_lines(batch, first_line)), flush=True)
    if undecodable:
        raise SystemExit(f"vanilla-transformer translate: {len(undecodable)} line(s) not valid UTF-8 "
                         f"(line {', '.join(map(str, undecodable[:10]))}): left empty in the output")


def export_ctranslate2_command(args: argparse.Namespace) -> None:
    """Export a model folder for the CTranslate2 engine (the optional extra `vanilla-transformer[ctranslate2]`)."""
    from .engines.ctranslate2 import export

    out = export(args.model, args.out, quantization=args.quantization, force=args.force)
    print(f"exported {args.model} -> {out} ({args.quantization or 'float32'} weights, tokenizer beside them)")


def push_command(args: argparse.Namespace) -> None:
    """Upload a training run's model to a Hub repo: weights, configs, tokenizer, code, pipeline and model card."""
    from .hub.push import push

    info = push(args.run_dir, args.repo_id, private=args.private, revision=args.revision,
                ctranslate2=args.ctranslate2)
    print(f"pushed {Path(args.run_dir) / 'model'} to {args.repo_id} ({args.revision or 'main'}): {info.commit_url}")


def show_attention_command(args: argparse.Namespace) -> None:
    """A PNG heatmap of the encoder-decoder attention of one sentence's translation."""
    from .visualize import plot_attention

    model, tokenizer = load_model(args.model)
    translation = plot_attention(model, tokenizer, args.sentence, args.out, args.layer, args.head,
                                 num_beams=args.num_beams)
    print(f"translation: {translation}\nattention heatmap: {args.out}")


def show_positional_encoding_command(args: argparse.Namespace) -> None:
    """A PNG of the sinusoidal positional encodings (Section 3.5)."""
    from .visualize import plot_positional_encoding

    plot_positional_encoding(args.out, args.positions, args.d_model, args.layout)
    print(f"positional encodings: {args.out}")


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=["torch", "ctranslate2"], default="torch",
                        help="ctranslate2: MODEL is a folder made by export-ctranslate2")
    parser.add_argument("--compute-type", default="default", help="ctranslate2's, e.g. int8, float32")
    parser.add_argument("--inter-threads", type=int, default=None,
                        help="ctranslate2: workers translating batches side by side (default: the cores / intra)")
    parser.add_argument("--intra-threads", type=int, default=1, help="ctranslate2: threads per worker")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vanilla-transformer", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo_parser = commands.add_parser("demo", help="train Multi30k de->en here, score test2016, show translations")
    demo_parser.add_argument("--recipe", default="configs/multi30k-de-en-small.yaml")
    demo_parser.add_argument("--quick", action="store_true", help="a smoke run of a few minutes")
    demo_parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe value")
    demo_parser.set_defaults(func=demo_command)

    vocabulary_parser = commands.add_parser("tokenizer", help="subword vocabulary")
    tokenizer_commands = vocabulary_parser.add_subparsers(dest="tokenizer_command", required=True)
    vocabulary_train_parser = tokenizer_commands.add_parser("train", help="train a joint vocabulary over languages")
    vocabulary_train_parser.add_argument("--data", required=True, help="folder of SPLIT.LANG files, a sentence a line")
    vocabulary_train_parser.add_argument("--langs", nargs="+", required=True, help="languages, e.g. de en")
    vocabulary_train_parser.add_argument("--split", default="train")
    vocabulary_train_parser.add_argument("--vocab-size", type=int, default=37000)
    vocabulary_train_parser.add_argument("--model", default="bpe", choices=["bpe", "unigram"])
    vocabulary_train_parser.add_argument("--out", required=True, help="folder to save the tokenizer in")
    vocabulary_train_parser.set_defaults(func=tokenizer_train_command)

    convert_parser = commands.add_parser("convert-marian", help="load a MarianMT/OPUS-MT checkpoint into our model")
    convert_parser.add_argument("source", help="a Marian model folder or Hub repo id, e.g. Helsinki-NLP/opus-mt-de-en")
    convert_parser.add_argument("out", help="folder to write the converted model and tokenizer to")
    convert_parser.set_defaults(func=convert_marian_command)

    export_marian_parser = commands.add_parser("export-marian", help="our model as a MarianMTModel folder")
    export_marian_parser.add_argument("model", help="a model folder of ours")
    export_marian_parser.add_argument("out")
    export_marian_parser.set_defaults(func=export_marian_command)

    train_parser = commands.add_parser("train", help="train from a recipe YAML (see configs/)")
    train_parser.add_argument("recipe", help="a recipe file, e.g. configs/multi30k-de-en-small.yaml")
    train_parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                          help="override a recipe value, e.g. --set training.max_steps=100 (repeatable)")
    train_parser.add_argument("--output-dir", help="run folder (default runs/RECIPE_NAME)")
    train_parser.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    train_parser.add_argument("--overwrite", action="store_true", help="replace an earlier run in the folder")
    train_parser.add_argument("--verbose", action="store_true")
    train_parser.set_defaults(func=train_command)

    prepare_parser = commands.add_parser("prepare", help="run a recipe's data path alone and time its phases")
    prepare_parser.add_argument("recipe", help="a recipe file, e.g. configs/wmt14-en-de-base.yaml")
    prepare_parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                                help="override a recipe value (repeatable)")
    prepare_parser.add_argument("--json", metavar="FILE", help="also write the phases as JSON")
    prepare_parser.set_defaults(func=prepare_command)

    average_parser = commands.add_parser("average", help="average checkpoints' weights (the paper's last-N averaging)")
    average_parser.add_argument("checkpoints", nargs="+", help="checkpoint folders, or one run folder with --last N")
    average_parser.add_argument("--last", type=int, help="average the last N checkpoint-* folders of the run folder")
    average_parser.add_argument("--out", required=True)
    average_parser.set_defaults(func=average_command)

    evaluate_parser = commands.add_parser("evaluate", help="translate a test set and report sacreBLEU and chrF")
    evaluate_parser.add_argument("model", help="a model folder (with its tokenizer)")
    evaluate_parser.add_argument("--data", required=True,
                                 help="folder with SPLIT.SRC and SPLIT.TGT (or .jsonl/.parquet), or a Hub dataset")
    evaluate_parser.add_argument("--split", default="test2016")
    evaluate_parser.add_argument("--src", default="de")
    evaluate_parser.add_argument("--tgt", default="en")
    evaluate_parser.add_argument("--num-beams", type=int, default=4)
    evaluate_parser.add_argument("--length-penalty", type=float, default=0.6)
    evaluate_parser.add_argument("--batch-size", type=int, default=64)
    add_engine_arguments(evaluate_parser)
    evaluate_parser.add_argument("--out", help="folder for hypotheses and report.json (MODEL/eval-SPLIT.SRC-TGT)")
    evaluate_parser.set_defaults(func=evaluate_command)

    translate_parser = commands.add_parser("translate", help="translate sentences given as arguments or on stdin")
    translate_parser.add_argument("model")
    translate_parser.add_argument("text", nargs="*", help="sentences; none: read standard input line by line")
    translate_parser.add_argument("--num-beams", type=int, default=4)
    translate_parser.add_argument("--length-penalty", type=float, default=0.6)
    translate_parser.add_argument("--batch-size", type=int, default=32)
    add_engine_arguments(translate_parser)
    translate_parser.set_defaults(func=translate_command)

    ct2_parser = commands.add_parser("export-ctranslate2", help="export a model folder for the CTranslate2 engine")
    ct2_parser.add_argument("model", help="a saved or converted model folder (with its tokenizer), or a Hub id")
    ct2_parser.add_argument("out")
    ct2_parser.add_argument("--quantization", choices=["int8", "int8_float32", "float32", "bfloat16", "float16"])
    ct2_parser.add_argument("--force", action="store_true", help="replace OUT if it exists")
    ct2_parser.set_defaults(func=export_ctranslate2_command)

    push_parser = commands.add_parser("push", help="upload a run's model, tokenizer, code and model card to the Hub")
    push_parser.add_argument("run_dir", help="a training run folder (with model/ and results.json)")
    push_parser.add_argument("repo_id", help="e.g. your-name/transformer-multi30k-de-en")
    push_parser.add_argument("--private", action="store_true", help="create the repo as private")
    push_parser.add_argument("--revision", help="a branch to commit to (created from main if new); default main")
    push_parser.add_argument("--ctranslate2", metavar="QUANTIZATION",
                             choices=["int8", "int8_float32", "float32", "bfloat16"],
                         help="also export for CTranslate2 with these weights, into the repo's ctranslate2/ folder")
    push_parser.set_defaults(func=push_command)

    attention_parser = commands.add_parser("show-attention", help="PNG heatmap of a translation's cross-attention")
    attention_parser.add_argument("model")
    attention_parser.add_argument("sentence")
    attention_parser.add_argument("--out", default="attention.png")
    attention_parser.add_argument("--layer", type=int, help="one decoder layer (default: mean of all)")
    attention_parser.add_argument("--head", type=int, help="one head (default: mean of all)")
    attention_parser.add_argument("--num-beams", type=int, default=4)
    attention_parser.set_defaults(func=show_attention_command)

    positional_parser = commands.add_parser("show-positional-encoding", help="PNG of the sinusoidal positional table")
    positional_parser.add_argument("--out", default="positional_encoding.png")
    positional_parser.add_argument("--positions", type=int, default=100)
    positional_parser.add_argument("--d-model", type=int, default=512)
    positional_parser.add_argument("--layout", default="interleaved", choices=["interleaved", "split"])
    positional_parser.set_defaults(func=show_positional_encoding_command)

    args = parser.parse_args(argv)
    # The package's own progress messages (data cleaning counts, batching) go to stderr.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[vanilla-transformer] %(message)s"))
    package_logger = logging.getLogger("vanilla_transformer")
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)
    try:
        args.func(args)
    except (OSError, ValueError) as error:  # bad files, bad values, Hub errors: the message says which
        raise SystemExit(f"vanilla-transformer {args.command}: error: {error}") from error


if __name__ == "__main__":
    main()
