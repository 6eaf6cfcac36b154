"""The `vanilla-transformer` command line."""

import argparse
import json
import logging
import time
from pathlib import Path


def tokenizer_train(args: argparse.Namespace) -> None:
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


def demo(args: argparse.Namespace) -> None:
    """The main job: train the Multi30k de->en recipe, score test2016 with beam search, show some translations."""
    from .training.recipe import load_recipe
    from .training.run import train as run

    recipe = load_recipe(args.recipe, (QUICK if args.quick else []) + args.set)
    if args.quick:
        recipe.output_dir = str(recipe.run_dir) + "-quick"
    print(f"recipe {args.recipe}{' (--quick smoke run)' if args.quick else ''}, run folder {recipe.run_dir}")
    results = run(recipe, overwrite=True)  # the demo's own folder: a new demo replaces the last one
    test = results["test"]
    for example in test["examples"]:
        print(f"\n  source     {example['source']}\n  reference  {example['reference']}\n"
              f"  ours       {example['translation']}")
    print(f"\n{results['parameters']:,} parameters, {results['steps']} updates in {results['train_seconds'] / 60:.1f} min")
    print(f"{test['split']} ({test['sentences']} sentences) sacreBLEU {test['bleu']:.2f}, chrF {test['chrf']:.2f}")
    print(f"signature: {test['bleu_signature']}")
    print(f"run folder: {recipe.run_dir} (model/, results.json, curves.png, log.csv)")


def convert_marian(args: argparse.Namespace) -> None:
    """Convert a MarianMT (OPUS-MT) model folder or Hub repo into a model folder of ours."""
    from .convert.marian import convert_marian_checkpoint

    model = convert_marian_checkpoint(args.source, args.out)
    print(f"converted {args.source} -> {args.out}: {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"activation {model.config.activation_function}, tokenizer copied as it is")


def export_marian(args: argparse.Namespace) -> None:
    """Write a model folder of ours as a MarianMTModel folder with the same outputs."""
    from .convert.marian import export_marian_checkpoint

    marian = export_marian_checkpoint(args.model, args.out)
    print(f"exported {args.model} -> {args.out}: MarianMTModel, {marian.num_parameters():,} parameters")


def train(args: argparse.Namespace) -> None:
    """Train from a recipe (configs/*.yaml), evaluate on its test split, and write the run folder."""
    import transformers

    from .training.recipe import load_recipe
    from .training.run import train as run

    transformers.logging.set_verbosity_info() if args.verbose else transformers.logging.set_verbosity_warning()
    recipe = load_recipe(args.recipe, args.set)
    if args.output_dir:
        recipe.output_dir = args.output_dir
    results = run(recipe, resume=args.resume, overwrite=args.overwrite)
    if not results:
        return  # not the main process of a distributed run
    test = results.get("test")
    print(json.dumps({k: v for k, v in results.items() if k != "validation_bleu"}, indent=2))
    if test:
        print(f"{test['split']} sacreBLEU {test['bleu']:.2f}  chrF {test['chrf']:.2f}  ({test['bleu_signature']})")


def average(args: argparse.Namespace) -> None:
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
    """Translate a test set and score it with sacreBLEU and chrF; write the hypotheses and a JSON report."""
    from .corpus import read_lines
    from .evaluation import score

    translate_lines = make_translator(args, progress=True)
    data = Path(args.data)
    sources = read_lines(data / f"{args.split}.{args.src}")
    references = read_lines(data / f"{args.split}.{args.tgt}")
    if len(sources) != len(references):
        raise SystemExit(f"{args.split}.{args.src} has {len(sources)} lines, {args.split}.{args.tgt} {len(references)}")
    start = time.perf_counter()
    hypotheses = translate_lines(sources)
    seconds = time.perf_counter() - start
    report = {"model": args.model, "engine": args.engine, "data": str(data), "split": args.split,
              "direction": f"{args.src}-{args.tgt}",
              "sentences": len(sources), "num_beams": args.num_beams, "length_penalty": args.length_penalty,
              **score(hypotheses, references), "seconds": round(seconds, 1),
              "sentences_per_s": round(len(sources) / seconds, 1)}
    out = Path(args.out or Path(args.model) / f"eval-{args.split}.{args.src}-{args.tgt}")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.split}.hyp.{args.tgt}").write_text("\n".join(hypotheses) + "\n", encoding="utf-8")
    (out / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"{args.split} {args.src}->{args.tgt}: sacreBLEU {report['bleu']:.2f}  chrF {report['chrf']:.2f}  "
          f"({len(sources)} sentences, {report['sentences_per_s']} sentences/s)")
    print(f"BLEU signature: {report['bleu_signature']}")
    print(f"chrF signature: {report['chrf_signature']}")
    print(f"hypotheses and report.json in {out}")


def make_translator(args: argparse.Namespace, progress: bool):
    """translate_lines(lines, first_line) -> translations, with the engine and decoding settings of the command."""
    from .evaluation import decoding_settings, translate

    settings = dict(batch_size=args.batch_size, **decoding_settings(args.num_beams, args.length_penalty))
    if args.engine == "ctranslate2":
        from .engines.ctranslate2 import Translator

        engine = Translator(args.model, compute_type=args.compute_type)
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


def export_ctranslate2(args: argparse.Namespace) -> None:
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


def show_attention(args: argparse.Namespace) -> None:
    """A PNG heatmap of the encoder-decoder attention of one sentence's translation."""
    from .visualize import plot_attention

    model, tokenizer = load_model(args.model)
    translation = plot_attention(model, tokenizer, args.sentence, args.out, args.layer, args.head,
                                 num_beams=args.num_beams)
    print(f"translation: {translation}\nattention heatmap: {args.out}")


def show_positional_encoding(args: argparse.Namespace) -> None:
    """A PNG of the sinusoidal positional encodings (Section 3.5)."""
    from .visualize import plot_positional_encoding

    plot_positional_encoding(args.out, args.positions, args.d_model, args.layout)
    print(f"positional encodings: {args.out}")


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=["torch", "ctranslate2"], default="torch",
                        help="ctranslate2: MODEL is a folder made by export-ctranslate2")
    parser.add_argument("--compute-type", default="default", help="ctranslate2's, e.g. int8, float32")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vanilla-transformer", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("demo", help="train Multi30k de->en on this machine, score test2016, show translations")
    run.add_argument("--recipe", default="configs/multi30k-de-en-small.yaml")
    run.add_argument("--quick", action="store_true", help="a smoke run of a few minutes")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe value")
    run.set_defaults(func=demo)

    tokenizer = commands.add_parser("tokenizer", help="subword vocabulary")
    tokenizer_commands = tokenizer.add_subparsers(dest="tokenizer_command", required=True)
    tokenizer_train_parser = tokenizer_commands.add_parser("train", help="train a joint vocabulary over several languages")
    tokenizer_train_parser.add_argument("--data", required=True, help="folder with SPLIT.LANG files, one sentence per line")
    tokenizer_train_parser.add_argument("--langs", nargs="+", required=True, help="languages, e.g. de en")
    tokenizer_train_parser.add_argument("--split", default="train")
    tokenizer_train_parser.add_argument("--vocab-size", type=int, default=37000)
    tokenizer_train_parser.add_argument("--model", default="bpe", choices=["bpe", "unigram"])
    tokenizer_train_parser.add_argument("--out", required=True, help="folder to save the tokenizer in")
    tokenizer_train_parser.set_defaults(func=tokenizer_train)

    convert = commands.add_parser("convert-marian", help="load a MarianMT/OPUS-MT checkpoint into our model")
    convert.add_argument("source", help="a Marian model folder or Hub repo id, e.g. Helsinki-NLP/opus-mt-de-en")
    convert.add_argument("out", help="folder to write the converted model and tokenizer to")
    convert.set_defaults(func=convert_marian)

    unconvert = commands.add_parser("export-marian", help="write our model as a MarianMTModel folder (same outputs)")
    unconvert.add_argument("model", help="a model folder of ours")
    unconvert.add_argument("out")
    unconvert.set_defaults(func=export_marian)

    training = commands.add_parser("train", help="train from a recipe YAML (see configs/)")
    training.add_argument("recipe", help="a recipe file, e.g. configs/multi30k-de-en-small.yaml")
    training.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                          help="override a recipe value, e.g. --set training.max_steps=100 (repeatable)")
    training.add_argument("--output-dir", help="run folder (default runs/RECIPE_NAME)")
    training.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    training.add_argument("--overwrite", action="store_true", help="replace an earlier run's checkpoints in the folder")
    training.add_argument("--verbose", action="store_true")
    training.set_defaults(func=train)

    averaging = commands.add_parser("average", help="average checkpoints' weights (the paper's last-N averaging)")
    averaging.add_argument("checkpoints", nargs="+", help="checkpoint folders, or one run folder with --last N")
    averaging.add_argument("--last", type=int, help="average the last N checkpoint-* folders of the run folder")
    averaging.add_argument("--out", required=True)
    averaging.set_defaults(func=average)

    evaluating = commands.add_parser("evaluate", help="translate a test set and report sacreBLEU and chrF")
    evaluating.add_argument("model", help="a model folder (with its tokenizer)")
    evaluating.add_argument("--data", required=True, help="folder with SPLIT.SRC and SPLIT.TGT")
    evaluating.add_argument("--split", default="test2016")
    evaluating.add_argument("--src", default="de")
    evaluating.add_argument("--tgt", default="en")
    evaluating.add_argument("--num-beams", type=int, default=4)
    evaluating.add_argument("--length-penalty", type=float, default=0.6)
    evaluating.add_argument("--batch-size", type=int, default=64)
    add_engine_arguments(evaluating)
    evaluating.add_argument("--out", help="folder for hypotheses and report.json (default MODEL/eval-SPLIT.SRC-TGT)")
    evaluating.set_defaults(func=evaluate_command)

    translating = commands.add_parser("translate", help="translate sentences given as arguments or on stdin")
    translating.add_argument("model")
    translating.add_argument("text", nargs="*", help="sentences; none: read standard input line by line")
    translating.add_argument("--num-beams", type=int, default=4)
    translating.add_argument("--length-penalty", type=float, default=0.6)
    translating.add_argument("--batch-size", type=int, default=32)
    add_engine_arguments(translating)
    translating.set_defaults(func=translate_command)

    exporting = commands.add_parser("export-ctranslate2", help="export a model folder for the CTranslate2 engine")
    exporting.add_argument("model", help="a saved or converted model folder (with its tokenizer), or a Hub id")
    exporting.add_argument("out")
    exporting.add_argument("--quantization", choices=["int8", "int8_float32", "float32", "bfloat16", "float16"])
    exporting.add_argument("--force", action="store_true", help="replace OUT if it exists")
    exporting.set_defaults(func=export_ctranslate2)

    pushing = commands.add_parser("push", help="upload a run's model, tokenizer, code and model card to the Hub")
    pushing.add_argument("run_dir", help="a training run folder (with model/ and results.json)")
    pushing.add_argument("repo_id", help="e.g. your-name/transformer-multi30k-de-en")
    pushing.add_argument("--private", action="store_true", help="create the repo as private")
    pushing.add_argument("--revision", help="a branch to commit to (created from main if new); default main")
    pushing.add_argument("--ctranslate2", metavar="QUANTIZATION", choices=["int8", "int8_float32", "float32", "bfloat16"],
                         help="also export for CTranslate2 with these weights, into the repo's ctranslate2/ folder")
    pushing.set_defaults(func=push_command)

    attention = commands.add_parser("show-attention", help="PNG heatmap of a translation's cross-attention")
    attention.add_argument("model")
    attention.add_argument("sentence")
    attention.add_argument("--out", default="attention.png")
    attention.add_argument("--layer", type=int, help="one decoder layer (default: mean of all)")
    attention.add_argument("--head", type=int, help="one head (default: mean of all)")
    attention.add_argument("--num-beams", type=int, default=4)
    attention.set_defaults(func=show_attention)

    positional = commands.add_parser("show-positional-encoding", help="PNG of the sinusoidal positional table")
    positional.add_argument("--out", default="positional_encoding.png")
    positional.add_argument("--positions", type=int, default=100)
    positional.add_argument("--d-model", type=int, default=512)
    positional.add_argument("--layout", default="interleaved", choices=["interleaved", "split"])
    positional.set_defaults(func=show_positional_encoding)

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
