"""Checkpoint averaging: "we used a single model obtained by averaging the last 5 checkpoints" (Section 6.1)."""

from pathlib import Path

import torch
from transformers import AutoTokenizer

from ..modeling import VanillaTransformerForConditionalGeneration
from .checkpoints import CheckpointError, problem
from ..staging import replaced_whole


def averaged_model(checkpoints: list[str | Path]) -> VanillaTransformerForConditionalGeneration:
    """A model whose every weight is the mean of the checkpoints' (config etc. from the last).

    Every checkpoint is checked before anything is read: an incomplete one, one of another model (other weights,
    shapes or tokenizer) or one whose weights are not finite (a run that diverged) is a CheckpointError naming it.
    """
    if not checkpoints:
        raise CheckpointError("no checkpoints to average")
    for path in checkpoints:
        reason = problem(path)
        if reason:
            raise CheckpointError(f"cannot average {path}: {reason}")
    first = Path(checkpoints[0])
    total, model = None, None
    for path in checkpoints:
        check_same_tokenizer(Path(path), first)
        model = VanillaTransformerForConditionalGeneration.from_pretrained(path)
        state = model.state_dict()
        for name, weight in state.items():
            if not torch.isfinite(weight).all():
                raise CheckpointError(f"cannot average {path}: its weight {name} holds NaN or infinite values (the "
                                      "run diverged before this checkpoint)")
        if total is None:
            total = {k: v.double().clone() for k, v in state.items()}
            continue
        if state.keys() != total.keys():
            raise CheckpointError(f"{path}: its weights do not match those of {first}")
        for name, weight in state.items():
            if weight.shape != total[name].shape:
                raise CheckpointError(f"cannot average {path} with {first}: its weight {name} is "
                                      f"{list(weight.shape)} there, {list(total[name].shape)} in {first}: "
                                      "checkpoints of different models (another vocabulary or shape)")
            total[name] += weight.double()
    model.load_state_dict({k: (v / len(checkpoints)).to(model.state_dict()[k].dtype) for k, v in total.items()})
    return model


def check_same_tokenizer(path: Path, first: Path) -> None:
    """A CheckpointError unless the two folders hold the same tokenizer.json, or one of them holds none: the same
    token ids must mean the same subwords in the weights averaged."""
    files = path / "tokenizer.json", first / "tokenizer.json"
    if all(f.is_file() for f in files) and files[0].read_bytes() != files[1].read_bytes():
        raise CheckpointError(f"cannot average {path} with {first}: their tokenizer.json files differ, so the same "
                              "token ids stand for different subwords (checkpoints of different runs)")


def average_checkpoints(checkpoints: list[str | Path], out_dir: str | Path) -> VanillaTransformerForConditionalGeneration:
    """Save in out_dir, a new or empty folder, the averaged_model of the checkpoints, with the last one's tokenizer.

    out_dir is written whole or not at all: a failure (a full disk) leaves no out_dir and an OSError naming it.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir}: exists and is not an empty folder; name a new folder for the average")
    model = averaged_model(checkpoints)
    last = Path(checkpoints[-1])
    tokenizer = AutoTokenizer.from_pretrained(last) if (last / "tokenizer.json").is_file() else None
    with replaced_whole(out_dir) as staging:
        model.save_pretrained(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
    return model
