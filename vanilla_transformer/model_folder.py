"""A saved model folder: where one comes from (checked before anything loads), its tokenizer, and making it load and
translate in a Python where this package is not installed."""

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer, PretrainedConfig
from transformers.dynamic_module_utils import custom_object_save

from .pipeline import CUSTOM_PIPELINE, LANGUAGE_TASK, TASK, TranslationPipeline, language_task

# The files a tokenizer is saved as: a folder with none of them has no tokenizer (transformers then says to install
# sentencepiece or tiktoken, which would not help).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "*.spm", "*.model")
# The tokenizer files that are JSON, read first so that a broken one is named (transformers' error names none).
TOKENIZER_JSON_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
from .tokenization import VanillaTransformerTokenizer

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def model_source(source: str | Path, needs: tuple[str, ...] = ("config.json",)) -> str:
    """source as given, once a local folder is known to hold the files in `needs`; a Hub id (owner/name) as it is.

    Raises FileNotFoundError naming the folder and the missing file, instead of transformers' errors about a config
    without a model_type or a repo id that is not valid.
    """
    text = str(source)
    path = Path(text).expanduser()
    looks_like_path = text.startswith((".", "/", "~")) or text.count("/") > 1 or path.exists()
    if not looks_like_path:
        return text
    if not path.is_dir():
        raise FileNotFoundError(f"{text}: no such model folder")
    for name in needs:
        if not (path / name).is_file():
            raise FileNotFoundError(f"{text}: no {name} here, so this is not a saved model folder")
    return text


def accelerator() -> torch.device:
    """The device a model runs on unless told otherwise: CUDA, else MPS or XPU where torch reports one, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    if torch.xpu.is_available():
        return torch.device("xpu")
    return torch.device("cpu")


def native_dtype(device: torch.device) -> str:
    """The dtype a model runs in on `device` unless told otherwise: bf16 on a CUDA card of compute capability 8.0 or
    more (Ampere on), fp16 on 7.x (Volta, Turing: fp16 tensor cores, bf16 only emulated), fp32 elsewhere: the CPU
    (bf16 pays only with AVX-512 BF16 or AMX, and is asked for), older cards, and MPS and XPU, unchecked here."""
    if device.type != "cuda":
        return "fp32"
    major, _ = torch.cuda.get_device_capability(device)
    return "bf16" if major >= 8 else "fp16" if major == 7 else "fp32"


def load_checked_model(source: str, device: torch.device | str = "cpu", dtype: torch.dtype | None = None):
    """The model saved in a folder (or Hub repo) on `device`, in `dtype` (None: as transformers loads it), refused with
    the folder named when its weights cannot be read or do not fit its config.json (transformers would give a
    traceback, or newly initialised weights with a warning)."""
    try:
        model, loading = AutoModelForSeq2SeqLM.from_pretrained(source, ignore_mismatched_sizes=True,
                                                               output_loading_info=True, dtype=dtype)
    except SafetensorError as error:
        raise ValueError(f"{source}: its safetensors weights cannot be read ({error}): the file is cut short or not "
                         "safetensors; copy or download it again") from None
    # transformers 5 gives (key, shape in the file, shape in the model) for a mismatch, transformers 4 the key only.
    mismatched = [key[0] if isinstance(key, tuple) else key for key in loading["mismatched_keys"]]
    for what, keys in (("have other shapes in the weights than config.json gives them", mismatched),
                       ("are in config.json's model but missing from the weights", loading["missing_keys"]),
                       ("are in the weights but not in config.json's model", loading["unexpected_keys"])):
        if keys:
            listed = ", ".join(sorted(keys)[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
            raise ValueError(f"{source}: config.json does not describe these weights: {listed} {what}")
    return model.to(device)


def model_direction(source: str) -> tuple[str, str] | None:
    """The (source, target) languages a saved model translates where its config names them (custom_pipelines'
    translation_XX_to_YY, as training writes it), else None."""
    pipelines = PretrainedConfig.get_config_dict(source)[0].get("custom_pipelines") or {}
    directions = {match.groups() for name in pipelines if (match := LANGUAGE_TASK.fullmatch(name))}
    return directions.pop() if len(directions) == 1 else None


def load_tokenizer(source: str, needed_for: str):
    """The tokenizer saved with a model, or a FileNotFoundError naming the folder (a Marian folder without its
    .spm files makes transformers raise TypeError or ImportError, or return None), or a ValueError naming a broken
    JSON file."""
    folder = Path(source)
    if folder.is_dir():
        if not any(next(folder.glob(pattern), None) for pattern in TOKENIZER_FILES):
            raise FileNotFoundError(f"{source}: no tokenizer files ({', '.join(TOKENIZER_FILES)}); {needed_for}")
        for name in TOKENIZER_JSON_FILES:
            if (folder / name).is_file():
                try:
                    json.loads((folder / name).read_text(encoding="utf-8"))
                except ValueError as error:  # invalid JSON or UTF-8
                    raise ValueError(f"{folder / name}: not a valid JSON file ({error}); {needed_for}") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, TypeError, ImportError) as error:
        raise FileNotFoundError(f"{source}: no usable tokenizer ({type(error).__name__}: {error}); "
                                f"{needed_for}") from None
    if tokenizer is None or not callable(tokenizer):
        raise FileNotFoundError(f"{source}: no tokenizer files; {needed_for}")
    return tokenizer


def make_portable(model_dir: str | Path, langs: tuple[str, str] | None = None) -> None:
    """Ship the translation pipeline with the folder, and let its tokenizer load without remote code.

    - pipeline.py is copied beside modeling.py and named in config.custom_pipelines, as Pipeline.save_pretrained
      does, so `pipeline("translation", model=..., trust_remote_code=True)` works on transformers 5, which has no
      built-in translation task; with the model's languages, also under "translation_de_to_en" (say).
    - tokenizer_config.json names PreTrainedTokenizerFast, which every transformers knows, with our class's settings:
      our class adds nothing else, and tokenizer.json holds the whole tokenizer. `auto_map` still gives our class to
      callers that pass trust_remote_code=True.
    """
    model_dir = Path(model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    config.custom_pipelines = {TASK: CUSTOM_PIPELINE}
    if langs:
        config.custom_pipelines[language_task(*langs)] = CUSTOM_PIPELINE
    config.save_pretrained(model_dir)
    custom_object_save(TranslationPipeline, model_dir)

    tokenizer_config = model_dir / "tokenizer_config.json"
    if tokenizer_config.is_file():
        settings = json.loads(tokenizer_config.read_text(encoding="utf-8"))
        if settings.get("tokenizer_class") == VanillaTransformerTokenizer.__name__:
            settings["tokenizer_class"] = "PreTrainedTokenizerFast"
            settings["model_input_names"] = VanillaTransformerTokenizer.model_input_names
            settings["padding_side"] = VanillaTransformerTokenizer.padding_side
            tokenizer_config.write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
