"""A run's checkpoint-N folders: which are complete, in step order, so that resume and averaging never read a
half-written one (a run killed while saving, a full disk)."""

import json
import logging
import re
import zipfile
from pathlib import Path

from safetensors import SafetensorError, safe_open

logger = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
TRAINER_STATE = "trainer_state.json"  # the Trainer writes it last


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be used; the message names the folder and the file."""


def step_of(folder: Path) -> int | None:
    """N of a checkpoint-N folder, or None for any other name."""
    match = re.fullmatch(r"checkpoint-(\d+)", folder.name)
    return int(match.group(1)) if match else None


def problem(folder: str | Path, for_resume: bool = False) -> str | None:
    """Why the checkpoint cannot be used (naming the file), or None when it is complete.

    Weights: the safetensors header must parse and cover the file. For resuming, also the trainer state (whole
    JSON) and the optimizer and scheduler states (whole zip archives, as torch.save writes them).
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        return f"{folder / 'config.json'}: missing"
    weights = folder / WEIGHTS
    if not weights.is_file():
        return f"{weights}: missing"
    try:
        with safe_open(weights, "pt"):
            pass
    except SafetensorError as error:
        return f"{weights}: unreadable ({error})"
    if not for_resume:
        return None
    state = folder / TRAINER_STATE
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"{state}: missing"
    except (ValueError, UnicodeDecodeError) as error:
        return f"{state}: not a whole JSON document ({error})"
    for name in ("optimizer.pt", "scheduler.pt"):
        try:
            zipfile.ZipFile(folder / name).close()
        except FileNotFoundError:
            return f"{folder / name}: missing"
        except zipfile.BadZipFile:
            return f"{folder / name}: truncated or corrupt"
    return None


def complete_checkpoints(run_dir: str | Path, for_resume: bool = False) -> list[Path]:
    """The run's complete checkpoint-N folders, oldest step first; each incomplete one is skipped with a warning."""
    found = sorted((p for p in Path(run_dir).glob("checkpoint-*") if p.is_dir() and step_of(p) is not None),
                   key=step_of)
    complete = []
    for folder in found:
        reason = problem(folder, for_resume)
        if reason:
            logger.warning("skipping incomplete checkpoint %s: %s", folder, reason)
        else:
            complete.append(folder)
    return complete


def last_checkpoints(run_dir: str | Path, count: int) -> list[Path]:
    """The `count` complete checkpoints with the highest steps, oldest first."""
    return complete_checkpoints(run_dir)[-count:]


def resume_checkpoint(run_dir: str | Path) -> Path:
    """The newest checkpoint a run can resume from; a CheckpointError when there is none."""
    complete = complete_checkpoints(run_dir, for_resume=True)
    if not complete:
        raise CheckpointError(f"{run_dir}: no complete checkpoint-N folder to resume from")
    return complete[-1]
