"""Checkpoint averaging: "we used a single model obtained by averaging the last 5 checkpoints" (Section 6.1)."""

from pathlib import Path

from transformers import AutoTokenizer

from ..modeling import VanillaTransformerForConditionalGeneration
from .checkpoints import CheckpointError, problem


def average_checkpoints(checkpoints: list[str | Path], out_dir: str | Path) -> VanillaTransformerForConditionalGeneration:
    """Save, in out_dir, a model whose every weight is the mean of the checkpoints' (config etc. from the last).

    Every checkpoint is checked before anything is read or written: an incomplete one is a CheckpointError naming it.
    """
    if not checkpoints:
        raise CheckpointError("no checkpoints to average")
    for path in checkpoints:
        reason = problem(path)
        if reason:
            raise CheckpointError(f"cannot average {path}: {reason}")
    total, model = None, None
    for path in checkpoints:
        model = VanillaTransformerForConditionalGeneration.from_pretrained(path)
        state = model.state_dict()
        if total is None:
            total = {k: v.double().clone() for k, v in state.items()}
        else:
            if state.keys() != total.keys():
                raise CheckpointError(f"{path}: its weights do not match those of {checkpoints[0]}")
            for k, v in state.items():
                total[k] += v.double()
    model.load_state_dict({k: (v / len(checkpoints)).to(model.state_dict()[k].dtype) for k, v in total.items()})
    model.save_pretrained(out_dir)
    last = Path(checkpoints[-1])
    if (last / "tokenizer.json").is_file():
        AutoTokenizer.from_pretrained(last).save_pretrained(out_dir)
    return model
