"""Training recipes: YAML files in configs/, overridable from the command line with --set section.key=value."""

import dataclasses
import json
import logging
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from accelerate.utils import get_int_from_env

from ..configuration import VanillaTransformerConfig

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
TOKENIZER_MODELS = ("bpe", "unigram")
SCHEDULES = ("noam", "budget")
HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")  # owner/name: what a Hub dataset id looks like


class RecipeError(ValueError):
    """A recipe value that cannot be used; the message names the key (e.g. training.update_tokens)."""


@dataclass
class AugmentRecipe:
    # Robustness augmentation of the training pairs (issue 31; training/augment.py), drawn per pair from (seed, epoch,
    # pair), so a resume sees the same. Off (all 0) by default. Worth trying on val for the demo: upper 0.05,
    # title 0.05, lower 0.05, drop_final_punctuation 0.1, bpe_dropout 0.1 (the paper's value).
    upper: float = 0.0  # share of pairs upper-cased on both sides
    title: float = 0.0  # share of pairs title-cased on both sides
    lower: float = 0.0  # share of pairs lower-cased on both sides
    drop_final_punctuation: float = 0.0  # share of pairs whose final punctuation is dropped on both sides
    # Share of pairs whose source gets about one typo per 15 characters (swapped, dropped, doubled, the key beside),
    # the target left as it is: training on synthetic noise (Karpukhin et al. 2019).
    typos: float = 0.0
    bpe_dropout: float = 0.0  # BPE-dropout p (Provilkov et al. 2020) on every pair; BPE tokenizers only
    # While augmenting, batches are packed to micro_batch_tokens / (1 + headroom), leaving room for the longer
    # augmented pairs (upper case and dropout split words into more subwords); a batch that still passes the cap
    # falls back to the plain ids of its longest augmented pairs.
    headroom: float = 0.25

    def active(self) -> bool:
        """Whether the augmentation changes any pair."""
        return any(value > 0 for value in (self.upper, self.title, self.lower, self.drop_final_punctuation,
                                           self.typos, self.bpe_dropout))

    def rules(self) -> list[tuple[str, bool, str]]:
        """(key, holds, expected) for Recipe.check."""
        shares = [("upper", self.upper), ("title", self.title), ("lower", self.lower),
                  ("drop_final_punctuation", self.drop_final_punctuation), ("typos", self.typos)]
        return [*((f"data.augment.{key}", 0 <= value <= 1, "a share in [0, 1]") for key, value in shares),
                ("data.augment.upper", self.upper + self.title + self.lower <= 1,
                 "such that upper + title + lower <= 1 (a pair gets one casing)"),
                ("data.augment.bpe_dropout", 0 <= self.bpe_dropout < 1, "in [0, 1)"),
                ("data.augment.headroom", self.headroom >= 0, "0 or more")]


@dataclass
class DataRecipe:
    source: str = "multi30k"  # a folder (relative to VANILLA_TRANSFORMER_DATA unless absolute) or a Hub dataset id
    hub_config: str | None = None  # the Hub dataset's config, e.g. "de-en" for wmt/wmt14
    src: str = "de"
    tgt: str = "en"
    train: str = "train"
    validation: str = "val"
    test: str | None = "test2016"
    max_length: int | None = 128  # drop training pairs longer than this many subwords on either side
    max_ratio: float | None = 3.0  # drop training pairs whose length ratio exceeds this
    drop_empty: bool = True  # drop pairs with an empty side instead of failing
    validation_size: int | None = None  # use only the first N validation pairs during training
    test_size: int | None = None  # score only the first N test pairs (smoke runs)
    num_proc: int | None = None  # processes for tokenisation
    augment: AugmentRecipe = field(default_factory=AugmentRecipe)  # training-time augmentation, off by default


@dataclass
class TokenizerRecipe:
    path: str | None = None  # an existing tokenizer; otherwise one is trained on the training split
    vocab_size: int = 10000
    model: str = "bpe"
    # Learn the subwords from this many random training pairs (all when null, or when the corpus has fewer): a few
    # million lines give the vocabulary of the whole (SentencePiece and Marian learn from such a sample), and the
    # learning's time and memory stay those of the sample at any corpus size.
    sample: int | None = 2_000_000


@dataclass
class ModelRecipe:
    preset: str = "small"
    overrides: dict = field(default_factory=dict)  # any VanillaTransformerConfig field

    def config(self) -> VanillaTransformerConfig:
        """The model's config: the preset with the overrides (the vocabulary is the tokenizer's, once there is one)."""
        return VanillaTransformerConfig.from_preset(self.preset, **self.overrides)


def launch_processes() -> int:
    """The processes of this launch, all machines together, as the launcher tells them (1 outside a launch)."""
    return get_int_from_env(["WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"], 1)


@dataclass(frozen=True)
class BatchPlan:
    """How the processes of a launch make one update: each sums the gradients of `micro_batches` forward passes of
    at most `micro_batch_tokens` padded tokens, and the processes' gradients are averaged."""

    processes: int
    micro_batches: int
    micro_batch_tokens: int

    @property
    def update_tokens(self) -> int:
        """The padded tokens of one update, all processes together (at most: batches are packed up to the cap)."""
        return self.processes * self.micro_batches * self.micro_batch_tokens

    def __str__(self) -> str:
        return (f"batch plan: {self.processes:,} process{'es' if self.processes > 1 else ''} x "
                f"{self.micro_batches:,} micro-batch{'es' if self.micro_batches > 1 else ''} of <= "
                f"{self.micro_batch_tokens:,} tokens = {self.update_tokens:,} tokens per update")


@dataclass
class TrainingRecipe:
    # The batch is stated per update, not per process (issue 29): the paper's learning rate, warmup and steps go with
    # its ~25k+25k-token update, so the processes of a launch share update_tokens, each in as few micro-batches of at
    # most micro_batch_tokens as it takes, all of one size, their gradients accumulated (plan()). 1, 2 or 8 GPUs, or 2
    # machines of 8, thus train on the same update, less a rounding of under one token per micro-batch. Tokens are
    # counted as fairseq's --max-tokens counts them: a batch of n pairs costs n x its longest side, so 25000 is about
    # 25k source and 25k target tokens. Recipes from before, with max_tokens per process times
    # gradient_accumulation_steps, are read as the update they made on one process, with a warning (move_batch_keys).
    update_tokens: int = 4096  # padded tokens per update, all processes together
    micro_batch_tokens: int | None = None  # padded tokens of one forward pass at most (memory); null: no cap
    dataloader_workers: int = 0  # processes collating the training batches beside each training process
    pin_memory: bool = True  # batches in pinned host memory, for faster copies to a GPU (ignored without one)
    lr_scale: float = 1.0  # lr = lr_scale * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)
    warmup_steps: int = 4000
    # "noam": Section 5.3's schedule (the WMT recipes'). "budget": the same warmup, then the peak declines in a
    # straight line to final_lr_fraction of it, reached where the run ends (max_minutes, or the last update of
    # max_steps/epochs, whichever comes first), so that a run cut by the clock ends on a low rate and its averaged
    # checkpoints come from a flat stretch rather than from a climb (budgeted training, Li et al. 2020).
    schedule: str = "noam"
    final_lr_fraction: float = 0.05
    adam_beta2: float = 0.98
    adam_epsilon: float = 1e-9
    max_grad_norm: float = 0.0  # 0 disables clipping (the paper does not clip)
    label_smoothing: float = 0.1  # epsilon_ls of the training loss (Section 5.4); 0 for plain cross-entropy
    epochs: float = 10
    max_steps: int = -1
    max_minutes: float | None = None  # end training after this many minutes (resumes included), checkpoint saved
    seed: int = 1
    precision: str = "auto"  # "auto": bf16 where the hardware computes it natively, else fp32; or fp32, bf16, fp16
    logging_steps: int = 50
    eval_steps: int = 1000
    save_steps: int = 1000
    save_total_limit: int = 5
    # Write each process's batch indices to batches-rank*.jsonl (for auditing), as they are collated: with several
    # dataloader_workers, not always in the order they are trained on.
    log_batches: bool = False
    # Seconds a process of a multi-process launch waits for the others in a collective; transformers' ddp_timeout.
    # torch's own default is 10 min under NCCL. The data path's waits follow the preparing process's heartbeat instead.
    ddp_timeout: int = 1800
    # The Trainer's experiment trackers, as TrainingArguments.report_to takes them: "none", "all" (those installed), a
    # name ("tensorboard", "trackio", "wandb", "mlflow", ...) or a list of names. They receive what the Trainer logs:
    # loss, learning rate, tokens/s and the validation BLEU and chrF. TensorBoard writes under the run folder
    # (runs/DATE_HOST, a new one per start or resume); the others where their own settings say.
    report_to: str | list = "none"

    def plan(self, processes: int | None = None) -> BatchPlan:
        """The micro-batches of each of `processes` (default: this launch's) that make an update of update_tokens:
        as few as the cap allows, all of the same size, so that the update is update_tokens less its rounding."""
        processes = processes or launch_processes()
        cap = self.micro_batch_tokens or self.update_tokens
        micro_batches = math.ceil(self.update_tokens / (processes * cap))
        tokens = self.update_tokens // (processes * micro_batches)
        if tokens < 1:
            raise RecipeError(f"training.update_tokens={self.update_tokens}: too few for {processes} processes "
                              f"in micro-batches of at most training.micro_batch_tokens={self.micro_batch_tokens}")
        return BatchPlan(processes, micro_batches, tokens)

    def trackers(self) -> list[str]:
        """The integrations report_to names, for TrainingArguments; a RecipeError naming one that transformers does
        not find installed here (the Trainer would fail on it only once the data is ready)."""
        from transformers.integrations.integration_utils import get_available_reporting_integrations

        installed = get_available_reporting_integrations()
        names = tracker_names(self.report_to)
        if "all" in names:
            return installed
        missing = [name for name in names if name != "none" and name not in installed]
        if missing:
            raise RecipeError(f"training.report_to={self.report_to!r}: {', '.join(missing)} not installed here "
                              f"(pip install it); installed: {', '.join(installed) or 'none'}")
        return [name for name in names if name != "none"]

    @property
    def micro_batches(self) -> int:
        """Micro-batches per process per update in this launch: their gradients add up before the update."""
        return self.plan().micro_batches

    @property
    def batch_tokens(self) -> int:
        """The padded tokens of one forward pass in this launch: what the token-batch sampler packs."""
        return self.plan().micro_batch_tokens


@dataclass
class GenerationRecipe:
    num_beams: int = 4
    length_penalty: float = 0.6
    max_length_offset: int = 50
    eval_batch_size: int = 64


@dataclass
class Recipe:
    name: str = "run"
    output_dir: str | None = None  # default runs/NAME
    data: DataRecipe = field(default_factory=DataRecipe)
    tokenizer: TokenizerRecipe = field(default_factory=TokenizerRecipe)
    model: ModelRecipe = field(default_factory=ModelRecipe)
    training: TrainingRecipe = field(default_factory=TrainingRecipe)
    generation: GenerationRecipe = field(default_factory=GenerationRecipe)
    average_last: int = 0  # average the last N checkpoints at the end (the paper: 5 for base, 20 for big)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir or Path("runs") / self.name)

    def data_source(self) -> str:
        """The data folder, resolved against VANILLA_TRANSFORMER_DATA; a Hub id (owner/name) is returned as it is.

        Anything else that is not a folder is an error here, rather than a Hub look-up that fails after a while.
        """
        root = Path(os.environ.get("VANILLA_TRANSFORMER_DATA", "../shared/data"))
        candidates = (Path(self.data.source), root / self.data.source)
        for candidate in candidates:
            if candidate.is_dir():
                return str(candidate)
        if HUB_ID.fullmatch(self.data.source) and not self.data.source.startswith("."):
            return self.data.source
        raise RecipeError(f"data.source={self.data.source!r}: no such folder (looked for {candidates[0]} and "
                          f"{candidates[1]}; set VANILLA_TRANSFORMER_DATA), and not a Hub dataset id (owner/name)")

    def check(self) -> None:
        """Raise a RecipeError naming the first key whose value cannot work, before a run starts."""
        t, g, d = self.training, self.generation, self.data
        try:
            positions = self.model.config().max_position_embeddings
        except (TypeError, ValueError) as error:  # an unknown preset, or overrides the config refuses
            raise RecipeError(f"model.preset={self.model.preset!r} with model.overrides={self.model.overrides}: "
                              f"{error}") from None
        rules = [
            ("training.precision", t.precision in PRECISIONS, f"one of {PRECISIONS}"),
            ("tokenizer.model", self.tokenizer.model in TOKENIZER_MODELS, f"one of {TOKENIZER_MODELS}"),
            ("tokenizer.vocab_size", self.tokenizer.vocab_size > 0, "a positive number"),
            ("training.update_tokens", t.update_tokens > 0, "a positive number of tokens"),
            ("training.micro_batch_tokens", t.micro_batch_tokens is None or t.micro_batch_tokens > 0,
             "a positive number of tokens, or null"),
            ("training.dataloader_workers", t.dataloader_workers >= 0, "0 or more"),
            ("tokenizer.sample", self.tokenizer.sample is None or self.tokenizer.sample > 0, "positive, or null"),
            ("training.warmup_steps", t.warmup_steps >= 1, "at least 1"),
            ("training.schedule", t.schedule in SCHEDULES, f"one of {SCHEDULES}"),
            ("training.final_lr_fraction", 0 <= t.final_lr_fraction < 1, "in [0, 1)"),
            ("training.lr_scale", t.lr_scale > 0, "positive"),
            ("training.label_smoothing", 0 <= t.label_smoothing < 1, "in [0, 1)"),
            ("training.epochs", t.epochs > 0, "positive"),
            ("training.max_steps", t.max_steps == -1 or t.max_steps > 0, "positive, or -1 for epochs"),
            ("training.max_minutes", t.max_minutes is None or t.max_minutes > 0, "positive, or null"),
            ("training.logging_steps", t.logging_steps > 0, "positive"),
            ("training.eval_steps", t.eval_steps > 0, "positive"),
            ("training.save_steps", t.save_steps > 0, "positive"),
            ("training.save_total_limit", t.save_total_limit >= 1, "at least 1"),
            ("training.ddp_timeout", t.ddp_timeout > 0, "a positive number of seconds"),
            ("training.report_to", all(name in tracker_choices() for name in tracker_names(t.report_to)),
             f"one of {tracker_choices()} or a list of them"),
            ("average_last", 0 <= self.average_last <= t.save_total_limit,
             f"between 0 and training.save_total_limit ({t.save_total_limit}), the checkpoints kept"),
            ("generation.num_beams", g.num_beams >= 1, "at least 1"),
            ("generation.eval_batch_size", g.eval_batch_size >= 1, "at least 1"),
            ("generation.max_length_offset", g.max_length_offset >= 0, "0 or more"),
            ("data.max_length", d.max_length is None or d.max_length > 0, "positive, or null"),
            ("data.max_length", d.max_length is None or d.max_length <= positions,
             f"at most the model's max_position_embeddings ({positions}), the longest pair it can take, or null"),
            ("data.max_ratio", d.max_ratio is None or d.max_ratio >= 1, "at least 1, or null"),
            ("data.validation_size", d.validation_size is None or d.validation_size > 0, "positive, or null for all"),
            ("data.test_size", d.test_size is None or d.test_size > 0, "positive, or null for all"),
        ]
        rules += d.augment.rules()
        if d.augment.bpe_dropout > 0:
            rules.append(("data.augment.bpe_dropout", self.tokenizer.model == "bpe",
                          "0 with tokenizer.model=unigram (BPE-dropout drops BPE merges)"))
        for key, holds, expected in rules:
            if not holds:
                raise RecipeError(f"{key}={self.value(key)!r}: must be {expected}")
        self.batch_plan()

    def batch_plan(self, processes: int | None = None) -> BatchPlan:
        """The training's batch plan on `processes` (default: this launch's), refused when its micro-batches cannot
        hold the longest pair that data.max_length lets through."""
        plan = self.training.plan(processes)
        if self.data.max_length is not None and self.data.max_length > plan.micro_batch_tokens:
            raise RecipeError(f"data.max_length={self.data.max_length}: must be at most the tokens of a micro-batch "
                              f"({plan}), or null; raise training.update_tokens or training.micro_batch_tokens, or "
                              "lower data.max_length")
        return plan

    def value(self, key: str):
        target = self
        for part in key.split("."):
            target = getattr(target, part)
        return target

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def changes_refused_on_resume(self, earlier: "Recipe") -> list[str]:
        """`key: earlier -> now` for each key whose value differs from the earlier recipe of the run being resumed
        and made its checkpoints: every key but RESUMABLE's."""
        now, before = flat(self.to_dict()), flat(earlier.to_dict())

        def shown(values: dict, key: str) -> str:
            return repr(values[key]) if key in values else "unset"

        return [f"{key}: {shown(before, key)} -> {shown(now, key)}" for key in sorted(now.keys() | before.keys())
                if (key not in now or key not in before or now[key] != before[key]) and not resumable(key)]


# What a resumed run may change: its name and folder, how long it trains, how often it logs, evaluates and saves, what
# it evaluates on and how it decodes, how its batches are loaded (not which they are), and what is done after
# training. The rest made the checkpoints (the data and its cleaning, the tokenizer, the model, the batches, the loss
# and the optimiser, whose state is restored from the checkpoint with its own learning rates and betas) and must stay
# as the run's recipe.json records it.
RESUMABLE = (
    "name", "output_dir", "average_last", "data.validation_size", "data.test", "data.test_size", "data.num_proc",
    "training.epochs", "training.max_steps", "training.max_minutes", "training.logging_steps", "training.eval_steps",
    "training.save_steps", "training.save_total_limit", "training.log_batches", "training.ddp_timeout",
    "training.dataloader_workers", "training.pin_memory", "training.report_to", "generation.",
)


def tracker_choices() -> list[str]:
    """What training.report_to may name: transformers' reporting integrations, "all" and "none"."""
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    return ["none", "all", *INTEGRATION_TO_CALLBACK]


def tracker_names(report_to: str | list) -> list:
    """training.report_to as a list of names."""
    return [report_to] if isinstance(report_to, str) else list(report_to)


def resumable(key: str) -> bool:
    return any(key == name or (name.endswith(".") and key.startswith(name)) for name in RESUMABLE)


def flat(values: dict, prefix: str = "") -> dict:
    """A nested dict as one level of dotted keys (model.overrides.activation)."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """A recipe from YAML (configs/) or JSON (a run folder's recipe.json), with `section.key=value` overrides (values
    parsed as YAML)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        # JSON is read as JSON: YAML 1.1 would take the 1e-09 that json.dumps writes for a float for a string.
        raw = (json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)) or {}
    except (ValueError, yaml.YAMLError) as error:  # the error says where: line and column
        raise RecipeError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {error}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: expected a mapping of sections (data, model, training...), got a "
                          f"{type(raw).__name__}")
    raw.setdefault("name", path.stem)
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep:
            raise ValueError(f"--set {override!r}: expected section.key=value")
        *sections, last = key.split(".")
        target = raw
        for depth, section in enumerate(sections, start=1):
            target = target.setdefault(section, {})
            if not isinstance(target, dict):
                raise RecipeError(f"--set {override}: {'.'.join(sections[:depth])} is {target!r}, not a section "
                                  "with keys")
        try:
            target[last] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise RecipeError(f"--set {override}: the value is not valid YAML: {error}") from None
    move_label_smoothing(raw)
    move_batch_keys(raw)
    recipe = build(Recipe, raw, "recipe")
    recipe.check()
    return recipe


def move_label_smoothing(raw: dict) -> None:
    """model.overrides.label_smoothing, from recipes written while the model computed the training loss, becomes
    training.label_smoothing, with a warning: label smoothing is a setting of the training loss, which the trainer
    computes."""
    model = raw.get("model")
    overrides = model.get("overrides") if isinstance(model, dict) else None
    if not isinstance(overrides, dict) or "label_smoothing" not in overrides:
        return
    training = raw.setdefault("training", {})
    if not isinstance(training, dict):
        return  # build() names the key that is not a mapping
    if "label_smoothing" in training:
        raise RecipeError("model.overrides.label_smoothing and training.label_smoothing are both set: label "
                          "smoothing is a training setting now, keep training.label_smoothing only")
    training["label_smoothing"] = overrides.pop("label_smoothing")
    logger.warning("model.overrides.label_smoothing=%r is a training setting now: read as training.label_smoothing; "
                   "move it there in the recipe", training["label_smoothing"])


def move_batch_keys(raw: dict) -> None:
    """training.max_tokens and gradient_accumulation_steps, the batch per process of recipes before issue 29, become
    the training.update_tokens (and micro_batch_tokens) that give the same batches on one process, with a warning
    that says what changed: the update is now shared by the processes of a launch rather than taken by each."""
    training = raw.get("training")
    old = sorted({"max_tokens", "gradient_accumulation_steps"} & training.keys()) if isinstance(training, dict) else []
    if not old:
        return
    if "update_tokens" in training:
        raise RecipeError(f"training.{' and training.'.join(old)} and training.update_tokens are both set: "
                          "update_tokens, the tokens of an update of all processes together, replaces max_tokens x "
                          "gradient_accumulation_steps, the batch of each process; keep update_tokens only")
    max_tokens, accumulation = training.pop("max_tokens", 4096), training.pop("gradient_accumulation_steps", 1)
    cap = training.get("micro_batch_tokens")
    for key, value in (("max_tokens", max_tokens), ("gradient_accumulation_steps", accumulation),
                       ("micro_batch_tokens", cap)):
        if value is not None and checked(value, int, f"training.{key}") < 1:
            raise RecipeError(f"training.{key}={value!r}: must be positive")
    # Each batch of max_tokens was cut into micro-batches of the cap: the same micro-batches, as many per update.
    micro = cap or max_tokens
    training["update_tokens"] = accumulation * math.ceil(max_tokens / micro) * micro
    if accumulation > 1 and cap is None:
        training["micro_batch_tokens"] = max_tokens
    logger.warning(
        "training.max_tokens=%d and gradient_accumulation_steps=%d stated the batch of each process; the recipe states "
        "the update now, shared by the processes of a launch: read as training.update_tokens=%d, "
        "micro_batch_tokens=%s (the same batches on 1 process; on N processes each takes 1/N of the update, where it "
        "took all of it before); write these in the recipe in place of the old keys", max_tokens, accumulation,
        training["update_tokens"], training.get("micro_batch_tokens"))


def build(cls, values: dict, where: str):
    """A dataclass from a dict, refusing unknown keys and values of the wrong type with the path of the key."""
    if not isinstance(values, dict):
        raise RecipeError(f"{where}: expected a mapping of keys to values, got {values!r}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    kwargs = {}
    for name, value in values.items():
        default = known[name].default_factory() if known[name].default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            kwargs[name] = build(type(default), value, f"{where}.{name}")
        else:
            kwargs[name] = checked(value, known[name].type, f"{where}.{name}")
    return cls(**kwargs)


def checked(value, annotation, where: str):
    """value if it has the annotated type (an int is a float too; a bool is not an int), else a RecipeError."""
    kinds = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    for kind in kinds:
        if kind is type(None) and value is None:
            return value
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if kind in (int, float) and isinstance(value, bool):
            continue
        if kind is not type(None) and isinstance(value, kind):
            return value
    names = " or ".join("null" if kind is type(None) else kind.__name__ for kind in kinds)
    raise RecipeError(f"{where.removeprefix('recipe.')}={value!r}: expected {names}")
