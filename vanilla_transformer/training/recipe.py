"""Training recipes: YAML files in configs/, overridable from the command line with --set section.key=value."""

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml


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


@dataclass
class TokenizerRecipe:
    path: str | None = None  # an existing tokenizer; otherwise one is trained on the training split
    vocab_size: int = 10000
    model: str = "bpe"


@dataclass
class ModelRecipe:
    preset: str = "small"
    overrides: dict = field(default_factory=dict)  # any VanillaTransformerConfig field


@dataclass
class TrainingRecipe:
    max_tokens: int = 4096  # padded tokens per batch (fairseq --max-tokens)
    gradient_accumulation_steps: int = 1  # batches per update; the paper's ~25k+25k tokens per update
    lr_scale: float = 1.0  # lr = lr_scale * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)
    warmup_steps: int = 4000
    adam_beta2: float = 0.98
    adam_epsilon: float = 1e-9
    max_grad_norm: float = 0.0  # 0 disables clipping (the paper does not clip)
    epochs: float = 10
    max_steps: int = -1
    seed: int = 1
    precision: str = "auto"  # "auto": bf16 where the hardware has it, else fp32; or "fp32", "bf16", "fp16"
    logging_steps: int = 50
    eval_steps: int = 1000
    save_steps: int = 1000
    save_total_limit: int = 5
    log_batches: bool = False  # write each process's batch indices to batches-rank*.jsonl (for auditing)


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
        """The data folder, resolved against VANILLA_TRANSFORMER_DATA; a Hub id is returned as it is."""
        root = Path(os.environ.get("VANILLA_TRANSFORMER_DATA", "../shared/data"))
        for candidate in (Path(self.data.source), root / self.data.source):
            if candidate.is_dir():
                return str(candidate)
        return self.data.source

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """A recipe from YAML, with `section.key=value` overrides (values parsed as YAML)."""
    path = Path(path)
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    raw.setdefault("name", path.stem)
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep:
            raise ValueError(f"--set {override!r}: expected section.key=value")
        *sections, last = key.split(".")
        target = raw
        for section in sections:
            target = target.setdefault(section, {})
        target[last] = yaml.safe_load(value)
    return build(Recipe, raw, "recipe")


def build(cls, values: dict, where: str):
    """A dataclass from a dict, refusing unknown keys with the path of the key."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    kwargs = {}
    for name, value in values.items():
        default = known[name].default_factory() if known[name].default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            value = build(type(default), value, f"{where}.{name}")
        kwargs[name] = value
    return cls(**kwargs)
