"""A run's checkpoint-N folders: which are complete, in step order, so that resume and averaging never read a
half-written one (a run killed while saving, a full disk), whichever backend wrote them: DDP (or one process), FSDP
with a full or a sharded state dict, DeepSpeed ZeRO 1-3."""

import dataclasses
import json
import logging
import re
import zipfile
from pathlib import Path

import torch
from accelerate.utils import broadcast_object_list, gather_object
from safetensors import SafetensorError, safe_open

logger = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
TRAINER_STATE = "trainer_state.json"  # the Trainer writes it last
FSDP_WEIGHTS = "pytorch_model_fsdp.bin", "pytorch_model_fsdp_0"  # accelerate's save_fsdp_model: full, sharded (DCP)
FSDP_OPTIMIZER = "optimizer.bin", "optimizer_0"  # accelerate's save_fsdp_optimizer: full, sharded (DCP)
DEEPSPEED_TAG = "latest"  # DeepSpeed's save_checkpoint: names the global_stepN folder that holds the states
BATCHES_RECORD = "TokenBatchesRecord"  # trainer.py's callback: in trainer_state.json, the batches trained on


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be used; the message names the folder and the file."""


def step_of(folder: Path) -> int | None:
    """N of a checkpoint-N folder, or None for any other name."""
    match = re.fullmatch(r"checkpoint-(\d+)", folder.name)
    return int(match.group(1)) if match else None


def backend(folder: Path) -> str:
    """Which layout the folder holds: "deepspeed", "fsdp" or "ddp" (one process or DDP)."""
    if (folder / DEEPSPEED_TAG).exists() or any(folder.glob("global_step*")):
        return "deepspeed"
    if any((folder / name).exists() for name in FSDP_WEIGHTS + FSDP_OPTIMIZER):
        return "fsdp"
    return "ddp"


def problem(folder: str | Path, for_resume: bool = False) -> str | None:
    """Why the checkpoint cannot be used (naming the file), or None when it is complete.

    Averaging (and from_pretrained) needs the whole weights: config.json and a model.safetensors whose header
    parses and covers the file. Resuming needs what the Trainer loads for the folder's backend, then the trainer
    state (whole JSON) and the scheduler (a whole zip archive, as torch.save writes it).
    """
    folder = Path(folder)
    if not for_resume:
        return weights_problem(folder)
    kind = backend(folder)
    reason = {"deepspeed": deepspeed_problem, "fsdp": fsdp_problem, "ddp": ddp_problem}[kind](folder)
    if reason:
        return reason
    state = folder / TRAINER_STATE
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"{state}: missing"
    except (ValueError, UnicodeDecodeError) as error:
        return f"{state}: not a whole JSON document ({error})"
    # DeepSpeed keeps the scheduler in its own states when its config names one; the Trainer saves any other.
    if kind == "deepspeed" and not (folder / "scheduler.pt").exists():
        return None
    return zip_problem(folder / "scheduler.pt")


def weights_problem(folder: Path) -> str | None:
    """Why the folder holds no whole, consolidated weights, or None."""
    weights = folder / WEIGHTS
    sharded = [name for name in (FSDP_WEIGHTS[1], "global_step*") if any(folder.glob(name))]
    if not weights.is_file() and sharded:
        return f"{weights}: missing: the weights are only in shards ({sharded[0]}), which cannot be averaged"
    if not (folder / "config.json").is_file():
        return f"{folder / 'config.json'}: missing"
    if not weights.is_file():
        return f"{weights}: missing"
    try:
        with safe_open(weights, "pt"):
            pass
    except SafetensorError as error:
        return f"{weights}: unreadable ({error})"
    return None


def zip_problem(path: Path) -> str | None:
    """Why a torch.save file is not whole (missing, truncated), or None."""
    try:
        zipfile.ZipFile(path).close()
    except FileNotFoundError:
        return f"{path}: missing"
    except (zipfile.BadZipFile, IsADirectoryError):
        return f"{path}: truncated or corrupt"
    return None


def dcp_problem(path: Path) -> str | None:
    """Why a torch.distributed.checkpoint folder is not whole, or None: its .metadata (written last, once every
    process has written its shard) must name shard files that exist and are as long as it says."""
    from torch.distributed.checkpoint import FileSystemReader

    try:
        metadata = FileSystemReader(str(path)).read_metadata()
    except FileNotFoundError:
        return f"{path / '.metadata'}: missing"
    except Exception as error:  # an unpickling error of a truncated file: any kind
        return f"{path / '.metadata'}: unreadable ({error})"
    ends: dict[str, int] = {}
    for item in metadata.storage_data.values():
        ends[item.relative_path] = max(ends.get(item.relative_path, 0), item.offset + item.length)
    for name, end in sorted(ends.items()):
        size = (path / name).stat().st_size if (path / name).is_file() else None
        if size is None or size < end:
            return f"{path / name}: {'missing' if size is None else 'truncated'}"
    return None


def ddp_problem(folder: Path) -> str | None:
    return weights_problem(folder) or zip_problem(folder / "optimizer.pt")


def fsdp_problem(folder: Path) -> str | None:
    """The model and optimizer states of accelerate's FSDP save: a full one (.bin) or a sharded one (DCP folder)."""
    for full, sharded in (FSDP_WEIGHTS, FSDP_OPTIMIZER):
        reason = dcp_problem(folder / sharded) if (folder / sharded).is_dir() else zip_problem(folder / full)
        if reason:
            return reason
    return None


def deepspeed_problem(folder: Path) -> str | None:
    """The states DeepSpeed's save_checkpoint writes in the folder `latest` names: the model states, and under ZeRO
    the optimizer states of each of the N processes that saved it (each also saved its rng_state_R.pth)."""
    try:
        tag = (folder / DEEPSPEED_TAG).read_text(encoding="utf-8").strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return f"{folder / DEEPSPEED_TAG}: missing or unreadable"
    states = folder / tag
    models = sorted(states.glob("*model_states.pt"))
    if not models:
        return f"{states}: holds no *model_states.pt"
    optimizers = sorted(states.glob("*zero_pp_rank_*_optim_states.pt"))
    ranks = sorted(int(re.search(r"zero_pp_rank_(\d+)_", p.name).group(1)) for p in optimizers)
    processes = len(list(folder.glob("rng_state_*.pth"))) or 1  # rng_state.pth alone for one process
    if ranks != list(range(processes)):
        return (f"{states}: the optimizer states of some of the {processes} processes are missing (found those of "
                f"ranks {ranks})")
    for path in models + optimizers:
        reason = zip_problem(path)
        if reason:
            return reason
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


def resume_checkpoint(run_dir: str | Path, state=None) -> Path:
    """The newest checkpoint a run can resume from; a CheckpointError when there is none.

    In a launch of several processes (state: its PartialState), the newest one complete for every process: each
    reads its own machine's copy of the run folder, and all of them get the same answer or the same error, so that
    none waits at a barrier for one that has failed.
    """
    complete = {step_of(p): p for p in complete_checkpoints(run_dir, for_resume=True)}
    if state is None or state.num_processes == 1:
        everyone = [sorted(complete)]
    else:
        everyone = gather_object([sorted(complete)])
    common = set.intersection(*(set(steps) for steps in everyone))
    if common:
        if max(common) != max(complete):
            logger.warning("resuming from checkpoint-%d, the newest complete on every process (this one has up to "
                           "checkpoint-%d)", max(common), max(complete))
        return complete[max(common)]
    if not any(everyone):
        raise CheckpointError(f"{run_dir}: no complete checkpoint-N folder to resume from")
    held = "; ".join(f"process {rank}: {', '.join(f'checkpoint-{s}' for s in steps) or 'none'}"
                     for rank, steps in enumerate(everyone))
    raise CheckpointError(
        f"{run_dir}: no checkpoint-N folder is complete on every process of the launch ({held}). Each process reads "
        "its own machine's run folder, and only the main process writes checkpoints: put output_dir on a disk that "
        "every machine shares, or copy the newest checkpoint-N folder into the run folder of each machine")


def batches_problem(checkpoint: Path, key) -> str | None:
    """Why the checkpoint may not be resumed on this run's batches (key: their batching.BatchesKey): it was trained
    on others, made of other data or settings. None when they are the same; a checkpoint from before the batches
    were recorded is resumed with a warning."""
    state = json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))
    recorded = (state.get("stateful_callbacks", {}).get(BATCHES_RECORD) or {}).get("attributes") or {}
    if not recorded.get("fingerprint"):
        logger.warning("%s records no fingerprint of the batches it was trained on (a checkpoint from before they "
                       "were recorded): resuming without checking that this run's are the same", checkpoint)
        return None
    fingerprint, now, before = key.fingerprint(), dataclasses.asdict(key), recorded.get("made_of") or {}
    if recorded["fingerprint"] == fingerprint:
        return None
    try:
        was = str(type(key)(**before))
    except TypeError:  # recorded in another format
        was = json.dumps(before)
    changed = ", ".join(name for name, value in now.items() if before.get(name) != value)
    return (f"--resume: {checkpoint} was trained on other batches than this run's: batches {recorded['fingerprint']} "
            f"made of {was}; this run's are {fingerprint}, made of {key} (changed: {changed}; a train set's "
            "fingerprint is that of its tokenised, cleaned pairs). The training data or what makes its batches "
            "changed since the checkpoint: the corpus files, the tokenizer or the cleaning (train_set, pairs); the "
            "tokens of a micro-batch, which follow training.update_tokens, training.micro_batch_tokens and the "
            "number of processes of the launch (max_tokens); the seed. Resume with what the run was trained on, on "
            "as many processes, or start a new run (--overwrite, or another --output-dir)")


def whole_weights_problem(state, average_last: int) -> str | None:
    """Why the backend (state: the trainer's AcceleratorState) would leave no whole weights for the final model or
    for averaging the last checkpoints, naming the setting that gives them; None when it does."""
    deepspeed, fsdp = getattr(state, "deepspeed_plugin", None), getattr(state, "fsdp_plugin", None)
    if deepspeed is not None:
        zero = deepspeed.deepspeed_config.get("zero_optimization", {})
        if zero.get("stage") == 3 and zero.get("stage3_gather_16bit_weights_on_model_save") is not True:
            return ("DeepSpeed ZeRO-3 keeps no whole copy of the weights, so neither the final model nor the average "
                    "of checkpoints can be saved: set zero_optimization.stage3_gather_16bit_weights_on_model_save: "
                    "true in the DeepSpeed config (accelerate config: zero3_save_16bit_model: true, or "
                    "`accelerate launch --zero3_save_16bit_model true`)")
    if fsdp is not None and average_last > 1 and "FULL_STATE_DICT" not in str(fsdp.state_dict_type):
        return (f"average_last={average_last}: FSDP with {str(fsdp.state_dict_type).split('.')[-1]} saves each "
                "checkpoint's weights in shards, which cannot be averaged: set fsdp_state_dict_type: "
                "FULL_STATE_DICT in the accelerate config's fsdp_config (or `accelerate launch "
                "--fsdp_state_dict_type FULL_STATE_DICT`), or average_last: 0")
    return None


def is_fsdp2_full_state_dict(state) -> bool:
    """Whether the backend (state: the trainer's AcceleratorState) is FSDP2 saving full state dicts."""
    fsdp = getattr(state, "fsdp_plugin", None)
    return fsdp is not None and fsdp.fsdp_version == 2 and "FULL_STATE_DICT" in str(fsdp.state_dict_type)


def load_fsdp2_full_weights(state, model: torch.nn.Module, checkpoint: str | Path) -> None:
    """Load the full state dict of an FSDP2 checkpoint (pytorch_model_fsdp.bin) into the sharded model: read by the
    main process and broadcast to the others, as accelerate's load_fsdp_model does.

    accelerate hands torch every name of a tied weight (the shared embedding is also model.encoder.embed_tokens,
    model.decoder.embed_tokens and lm_head), and torch 2.13's set_model_state_dict knows only the first, raising
    KeyError on the others. The aliases are left out here, so the load cannot be strict: the names are checked
    against the model's instead, and a checkpoint missing a weight is a CheckpointError on every process.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    path = Path(checkpoint) / FSDP_WEIGHTS[0]
    names = set(model.state_dict())  # every name, the aliases of tied weights included
    own = {name for name, _ in model.named_parameters()} | {name for name, _ in model.named_buffers() if name in names}
    weights, reason = {}, None
    if state.is_main_process:
        weights = torch.load(path, map_location="cpu", weights_only=True)
        missing, unexpected = sorted(own - weights.keys()), sorted(weights.keys() - names)
        if missing or unexpected:
            reason = (f"{path}: not this model's weights (missing: {', '.join(missing[:5]) or 'none'}; unexpected: "
                      f"{', '.join(unexpected[:5]) or 'none'})")
        weights = {name: value for name, value in weights.items() if name in own}
    if state.num_processes > 1:
        reason = broadcast_object_list([reason])[0]
    if reason:
        raise CheckpointError(reason)
    several = state.num_processes > 1
    loaded = set_model_state_dict(model, weights, options=StateDictOptions(
        full_state_dict=True, broadcast_from_rank0=several, cpu_offload=several, strict=False))
    if set(loaded.missing_keys) - (names - own) or loaded.unexpected_keys:
        raise CheckpointError(f"{path}: the weights did not load (missing: {loaded.missing_keys}; unexpected: "
                              f"{loaded.unexpected_keys})")
