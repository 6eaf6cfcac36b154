"""What a model measured: the score of a split, and what a training run measured as results.json holds it (written
once by the run, read by the CLI, the model card and push)."""

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

# sacreBLEU's metrics that the package computes (sacrebleu_metric/), as reports and the model card name them.
METRIC_NAMES = {"bleu": "sacreBLEU", "chrf": "chrF", "ter": "TER"}
DEFAULT_METRICS = ("bleu", "chrf")  # the evaluate command's; a training run's test split is scored with all of them


@dataclass
class SplitScore:
    """How a model translated one split: its corpus scores (sacreBLEU's BLEU, chrF, TER: those computed) with their
    signatures, and a few examples."""

    split: str
    sentences: int
    num_beams: int
    length_penalty: float
    bleu: float | None = None
    chrf: float | None = None
    bleu_signature: str | None = None
    chrf_signature: str | None = None
    ter: float | None = None  # results.json files from before TER was computed have none
    ter_signature: str | None = None
    examples: list[dict] = field(default_factory=list)  # source, reference, translation

    def scores(self) -> dict[str, tuple[float, str]]:
        """{metric: (score, signature)} of the metrics computed, in the order bleu, chrf, ter."""
        computed = {"bleu": (self.bleu, self.bleu_signature), "chrf": (self.chrf, self.chrf_signature),
                    "ter": (self.ter, self.ter_signature)}
        return {metric: pair for metric, pair in computed.items() if pair[0] is not None}


@dataclass
class RunResults:
    """What a training run measured: its data, its updates and time, its validation scores and its test score."""

    recipe: str
    src: str
    tgt: str
    parameters: int
    train_pairs: int
    cleaning: dict  # kept / too_long / bad_ratio
    padding_fraction: float
    steps: int
    train_seconds: float
    machine: str
    averaged_checkpoints: list[str] = field(default_factory=list)
    validation_bleu: list[dict] = field(default_factory=list)  # {"step", "bleu"} at each evaluation
    best_validation_step: int | None = None
    best_validation_bleu: float | None = None
    test: SplitScore | None = None

    @property
    def direction(self) -> str:
        return f"{self.src}-{self.tgt}"

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({**dataclasses.asdict(self), "direction": self.direction}, indent=2),
                        encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> "RunResults":
        """results.json of a run; files written before src/tgt were fields name the direction as "de-en"."""
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: missing; it is written at the end of a training run") from None
        except ValueError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from None
        direction = values.pop("direction", "")
        if "src" not in values:
            values["src"], _, values["tgt"] = direction.partition("-")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if k in known}  # e.g. best_checkpoint, no longer written
        if values.get("test"):
            values["test"] = SplitScore(**values["test"])
        try:
            return cls(**values)
        except TypeError as error:
            raise ValueError(f"{path}: {error}") from None
