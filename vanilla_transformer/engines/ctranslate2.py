"""Serving with CTranslate2 (OpenNMT's inference engine): export a model folder, and translate with the engine.

The converter fills ctranslate2's own TransformerSpec from our weights, as the engine's converters for Marian and
BART do. Our positional table is passed in explicitly (the engine's built-in sinusoids use another layout), and
the engine is given our tokenizer's tokens in id order, since it translates token strings.

Needs the optional extra: `pip install vanilla-transformer[ctranslate2]`.
"""

import logging
import math
import os
from collections import Counter
from pathlib import Path

import ctranslate2
import torch
from ctranslate2.converters import Converter
from ctranslate2.specs import common_spec, transformer_spec
from transformers import AutoTokenizer, GenerationConfig

from ..evaluation import encode_to_fit
from ..model_folder import load_checked_model, load_tokenizer, model_source
from ..modeling import guard_settings
from ..pipeline import Recaser
from ..scoring import Hypothesis, PairScore, encode_pairs, hypothesis

logger = logging.getLogger(__name__)

# The engine has no logits processors: its repetition guard re-decodes a sentence whose output breaks ours
# (modeling.RepeatedNgramGuard) from the tokens before the break, with the n-grams that reached their limit
# suppressed (suppress_sequences applies to a whole call, so one sentence per call); at most this many times.
MAX_REPAIRS = 64

ACTIVATIONS = {"relu": common_spec.Activation.RELU, "gelu": common_spec.Activation.GELU,
               "swish": common_spec.Activation.SWISH, "silu": common_spec.Activation.SWISH}


class VanillaTransformerConverter(Converter):
    """A saved model folder of ours (trained, or converted from Marian) as a CTranslate2 TransformerSpec."""

    def __init__(self, model_dir: str | Path):
        source = model_source(model_dir)
        self.model = load_checked_model(source).float().eval()
        if self.model.config.model_type != "vanilla_transformer":
            raise ValueError(f"{model_dir}: a {self.model.config.model_type} model, not a vanilla_transformer one "
                             "(convert Marian models with `vanilla-transformer convert-marian` first)")
        self.tokenizer = load_tokenizer(source, "the engine needs its tokens")

    def _load(self):
        config, model = self.model.config, self.model
        if not config.share_embeddings and config.target_vocab_size != config.vocab_size:
            raise NotImplementedError("separate source and target vocabularies are not exported yet")
        spec = transformer_spec.TransformerSpec.from_config(
            (config.encoder_layers, config.decoder_layers), config.num_attention_heads,
            pre_norm=config.norm_first, activation=ACTIVATIONS[config.activation_function],
        )
        spec.config.layer_norm_epsilon = config.layer_norm_eps
        self.set_stack(spec.encoder, model.model.encoder)
        self.set_stack(spec.decoder, model.model.decoder)
        for layer_spec, layer in zip(spec.encoder.layer, model.model.encoder.layers):
            self.set_attention(layer_spec.self_attention, layer.self_attn, layer.self_attn_layer_norm)
            self.set_ffn(layer_spec.ffn, layer.ffn, layer.ffn_layer_norm)
        for layer_spec, layer in zip(spec.decoder.layer, model.model.decoder.layers):
            self.set_attention(layer_spec.self_attention, layer.self_attn, layer.self_attn_layer_norm)
            self.set_attention(layer_spec.attention, layer.cross_attn, layer.cross_attn_layer_norm)
            self.set_ffn(layer_spec.ffn, layer.ffn, layer.ffn_layer_norm)
        spec.decoder.projection.weight = model.lm_head.weight
        if model.final_logits_bias is not None:
            spec.decoder.projection.bias = model.final_logits_bias.squeeze(0)

        tokens = self.tokenizer.convert_ids_to_tokens(list(range(config.vocab_size)))
        spec.register_source_vocabulary(tokens)
        spec.register_target_vocabulary(tokens)
        token = self.tokenizer.convert_ids_to_tokens
        spec.config.bos_token = token(config.bos_token_id) if config.bos_token_id is not None else tokens[0]
        spec.config.eos_token = token(config.eos_token_id)
        spec.config.unk_token = self.tokenizer.unk_token or tokens[0]
        spec.config.decoder_start_token = token(config.decoder_start_token_id)
        return spec

    @staticmethod
    def set_stack(spec, stack) -> None:
        """Embeddings x sqrt(d_model) (or 1), our positional table row by row, and a pre-norm stack's final norm."""
        embeddings = spec.embeddings[0] if isinstance(spec.embeddings, list) else spec.embeddings
        embeddings.weight = stack.embed_tokens.weight
        spec.scale_embeddings = stack.embed_scale
        spec.position_encodings.encodings = stack.embed_positions.weight
        if stack.layer_norm is not None:
            set_layer_norm(spec.layer_norm, stack.layer_norm)

    @staticmethod
    def set_attention(spec, attention, layer_norm) -> None:
        """Our fused projections map onto the engine's: W^QKV for self-attention, W^Q and W^KV for cross-attention."""
        projections = [attention.qkv_proj] if hasattr(attention, "qkv_proj") else [attention.q_proj, attention.kv_proj]
        for linear_spec, linear in zip(spec.linear, [*projections, attention.out_proj]):
            set_linear(linear_spec, linear)
        set_layer_norm(spec.layer_norm, layer_norm)

    @staticmethod
    def set_ffn(spec, ffn, layer_norm) -> None:
        set_linear(spec.linear_0, ffn.fc1)
        set_linear(spec.linear_1, ffn.fc2)
        set_layer_norm(spec.layer_norm, layer_norm)


def set_linear(spec, linear) -> None:
    spec.weight = linear.weight
    if linear.bias is not None:
        spec.bias = linear.bias


def set_layer_norm(spec, norm) -> None:
    spec.gamma = norm.weight
    spec.beta = norm.bias


def first_repetition(source: list[str], tokens: list[str], n: int, most: int) -> int | None:
    """The first position where `tokens` put an n-gram in more than max(most, its count in `source`) times
    (modeling.RepeatedNgramGuard's rule), or None."""
    in_source = Counter(tuple(source[i: i + n]) for i in range(len(source) - n + 1))
    seen = Counter()
    for end in range(n - 1, len(tokens)):
        gram = tuple(tokens[end - n + 1: end + 1])
        seen[gram] += 1
        if seen[gram] > max(most, in_source[gram]):
            return end
    return None


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (Linux); empty where they cannot be read."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return set()
    return next((set(line.split(":", 1)[1].split()) for line in lines if line.startswith("flags")), set())


def cpu_lacks_vnni() -> bool:
    """True when the CPU's flags show AVX2 but no VNNI dot products; False when they cannot be read."""
    flags = cpu_flags()
    return "avx2" in flags and not {"avx512_vnni", "avx_vnni"} & flags


def export(model_dir: str | Path, out_dir: str | Path, quantization: str | None = None, force: bool = False) -> Path:
    """A CTranslate2 model folder from one of ours, with our tokenizer files beside it so that it stands alone.

    An existing out_dir is refused unless force (then replaced), before anything loads; the model's own folder, or
    one holding it, is refused even so.
    """
    out = Path(out_dir).resolve()
    if out.exists() and not force:
        raise FileExistsError(f"{out_dir}: already exists; export to a new folder, or pass --force to replace it")
    if Path(model_dir).exists() and out in (Path(model_dir).resolve(), *Path(model_dir).resolve().parents):
        raise ValueError(f"{out_dir}: holds the model {model_dir} itself, which --force would delete; export to "
                         "another folder")
    converter = VanillaTransformerConverter(model_dir)
    out = Path(converter.convert(str(out_dir), quantization=quantization, force=force))
    converter.tokenizer.save_pretrained(out)
    converter.model.generation_config.save_pretrained(out)  # the guards' settings (modeling.GUARDS) travel with it
    recaser = Recaser.load(str(model_dir))
    if recaser is not None:  # and the source casing, which translators.line_translator recases input with
        recaser.save(out)
    (out / "max_position_embeddings").write_text(str(converter.model.config.max_position_embeddings))
    return out


class Translator:
    """Translate lines with an exported folder: our tokenizer in, ctranslate2.Translator, our tokenizer out."""

    def __init__(self, path: str | Path, device: str = "cpu", compute_type: str = "default",
                 inter_threads: int | None = None, intra_threads: int = 1):
        """On a CPU, by default one worker per core, each on one thread: batches are translated in parallel, as
        CTranslate2's docs advise for throughput. Several threads per worker (intra_threads) can shorten a single
        sentence in float32, but int8 on 2 threads was 5-10x slower per token than on one (2-core AVX-512 EPYC,
        docs/performance.md)."""
        path = Path(path)
        if not (path / "model.bin").is_file():
            raise FileNotFoundError(f"{path}: no model.bin, so this is not an exported CTranslate2 folder")
        for name, value in (("inter_threads", inter_threads), ("intra_threads", intra_threads)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, not {value}")
        if inter_threads is None:
            inter_threads = max(1, (os.cpu_count() or 1) // intra_threads) if device == "cpu" else 1
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        torch_threads = torch.get_num_threads()
        self.translator = ctranslate2.Translator(str(path), device=device, compute_type=compute_type,
                                                 inter_threads=inter_threads, intra_threads=intra_threads)
        # The engine sets the OpenMP threads of the thread that creates it to intra_threads, and torch shares that
        # OpenMP runtime: left so, everything torch computes afterwards in this process runs on that many threads.
        torch.set_num_threads(torch_threads)
        self.max_positions = int((path / "max_position_embeddings").read_text())
        # An export made before the guards has no generation_config.json: the guards are off, as in its model.
        self.generation_config = (GenerationConfig.from_pretrained(path)
                                  if (path / "generation_config.json").is_file() else None)
        if device == "cpu" and self.translator.compute_type.startswith("int8") and cpu_lacks_vnni():
            logger.warning("%s: int8 on a CPU without VNNI, whose int8 products can saturate: on the demo model "
                           "it lost 0.52 BLEU against float32 there, 0.20 with VNNI (docs/performance.md); check "
                           "it on a test set, or use --compute-type float32", path)

    def source_tokens(self, lines: list[str], first_line: int = 1) -> list[list[str]]:
        """Each line as the engine's input tokens (with </s>), cut to the model's positions with a warning."""
        encoded = encode_to_fit(self.tokenizer, lines, self.max_positions, first_line)
        return [self.tokenizer.convert_ids_to_tokens(ids) for ids in encoded]

    def translate(self, lines: list[str], num_beams: int = 4, length_penalty: float = 0.6, max_length_offset: int = 50,
                  batch_size: int = 32, first_line: int = 1, max_new_tokens: int | None = None,
                  max_tokens: int | None = None, **options) -> list[str]:
        """Translations in input order; blank lines give empty ones. Output length: source + offset, as ours, or
        max_new_tokens, and each output within its own source-length bound where the guards have it (cut there:
        for greedy search what forcing </s> there gives; beam search's best hypothesis is cut, where generate()
        ends its hypotheses at the bound and picks among them). Batches of batch_size lines, or of about max_tokens
        source tokens where it is given (the engine's own token batches)."""
        sources = self.source_tokens(lines, first_line)
        settings = dict(num_beams=num_beams, length_penalty=length_penalty, max_length_offset=max_length_offset,
                        max_new_tokens=max_new_tokens, return_end_token=False, **options)
        results = self.search(sources, batch_size=batch_size, max_tokens=max_tokens, **settings)
        outputs = []
        for line, source, result, bound in zip(lines, sources, results, self.output_bounds(sources)):
            tokens = result.hypotheses[0][: bound - 1] if bound else result.hypotheses[0]
            outputs.append(self.detokenize(self.without_repetition(source, tokens, bound, settings))
                           if line.strip() else "")
        return outputs

    def without_repetition(self, source: list[str], tokens: list[str], bound: int | None, settings: dict) -> list[str]:
        """`tokens`, or where they break the repetition guard, the sentence decoded again from the tokens before the
        break with the n-grams that reached their limit suppressed, until nothing breaks it: for greedy search the
        tokens of generate() with the guard; with a beam, beam search from that prefix."""
        guards = self.guards()
        n, most = guards["repetition_guard_ngram_size"], guards["repetition_guard_max_occurrences"]
        if not n or most is None:
            return tokens
        suppressed = []
        for _ in range(MAX_REPAIRS):
            breaking = first_repetition(source, tokens, n, most)
            if breaking is None:
                break
            suppressed.append(tokens[breaking - n + 1: breaking + 1])
            (result,) = self.search([source], batch_size=1, target_prefix=[tokens[:breaking]],
                                    suppress_sequences=suppressed, **settings)
            tokens = result.hypotheses[0][: bound - 1] if bound else result.hypotheses[0]
        return tokens

    def n_best(self, lines: list[str], k: int, num_beams: int = 4, length_penalty: float = 0.6,
               batch_size: int = 32, first_line: int = 1, **options) -> list[list[Hypothesis]]:
        """The k best translations of each line, best first, with the engine's scores (log_prob / tokens **
        length_penalty, the tokens counting </s> where a hypothesis ended); none for a blank line. The length
        bound is the longest source's and the repetition guard is not applied: a hypothesis is not changed, so that
        its score stays the engine's."""
        if k > num_beams:
            raise ValueError(f"{k} hypotheses need a beam of at least {k}, not {num_beams}")
        results = self.search(self.source_tokens(lines, first_line), num_beams=num_beams,
                              length_penalty=length_penalty, batch_size=batch_size, num_hypotheses=k,
                              return_scores=True, return_end_token=True, **options)
        return [[hypothesis(self.detokenize(tokens), score, len(tokens), length_penalty)
                 for tokens, score in zip(result.hypotheses, result.scores)] if line.strip() else []
                for line, result in zip(lines, results)]

    def guards(self) -> dict:
        """The guards' settings (modeling.GUARDS' names): the exported generation_config's, or those of
        modeling.generation_guards() around the call."""
        return guard_settings(self.generation_config)

    def output_bounds(self, sources: list[list[str]]) -> list[int | None]:
        """Each source's output bound, int(a * source tokens + b) tokens with </s> (modeling.SourceLengthBound), or
        None where the guard is off."""
        guards = self.guards()
        if guards["max_length_a"] is None:
            return [None] * len(sources)
        return [max(1, math.floor(guards["max_length_a"] * len(source) + (guards["max_length_b"] or 0)))
                for source in sources]

    def search(self, sources: list[list[str]], num_beams: int, length_penalty: float, max_length_offset: int = 50,
               batch_size: int = 32, max_new_tokens: int | None = None, max_tokens: int | None = None, **options):
        """The engine's translation results of the source tokens, beam search or greedy (num_beams=1), batched as
        translate says, within the longest source's length bound where the guards have it."""
        longest = max((len(s) for s in sources), default=0)
        # generate()'s max_length = source + offset, capped at the positions, counts the start token; this does not.
        limit = max_new_tokens or min(longest + max_length_offset, self.max_positions) - 1
        bounds = [bound for bound in self.output_bounds(sources) if bound is not None]
        if bounds:
            limit = min(limit, max(bounds))
        return self.translator.translate_batch(
            sources, max_batch_size=max_tokens or batch_size, batch_type="tokens" if max_tokens else "examples",
            beam_size=num_beams, length_penalty=length_penalty, max_decoding_length=limit, **options)

    def detokenize(self, tokens: list[str]) -> str:
        return self.tokenizer.decode(self.tokenizer.convert_tokens_to_ids(tokens), skip_special_tokens=True)

    def score(self, sources: list[str], targets: list[str], batch_size: int = 32, first_line: int = 1,
              names: tuple[str, str] = ("source", "target")) -> list[PairScore]:
        """Each pair's forced-decoding score (the sum of the target's token log-probabilities, </s> included, as
        vanilla_transformer.scoring defines it), in input order; a pair longer than the model's positions gets an
        error naming its file (names) and line."""
        encoded = encode_pairs(self.tokenizer, sources, targets, self.max_positions, first_line, names)
        pairs = [pair for pair in encoded if not isinstance(pair, str)]
        tokens = self.tokenizer.convert_ids_to_tokens
        # The engine adds the target's </s> itself, and truncates nothing: encode_pairs refused what does not fit.
        results = iter(self.translator.score_batch([tokens(source) for source, _ in pairs],
                                                   [tokens(target[:-1]) for _, target in pairs],
                                                   max_batch_size=batch_size, max_input_length=0))
        scores = []
        for pair in encoded:
            if isinstance(pair, str):
                scores.append(PairScore(error=pair))
            else:
                log_probs = next(results).log_probs
                scores.append(PairScore(sum(log_probs), len(log_probs)))
        return scores
