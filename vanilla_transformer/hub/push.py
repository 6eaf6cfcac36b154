"""`vanilla-transformer push`: a training run's model, tokenizer, code and card to a Hub repo, in one commit."""

from pathlib import Path

from huggingface_hub import CommitInfo, HfApi, constants
from huggingface_hub.errors import HfHubHTTPError

from ..results import RunResults
from .card import render_card

# What a model repo needs and nothing else: safetensors weights (never pickles), configs, tokenizer, code, card.
UPLOADED = ["*.safetensors", "*.safetensors.index.json", "config.json", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json", "special_tokens_map.json", "*.spm", "vocab.json", "*.py", "README.md",
            "casing.json"]
CTRANSLATE2_FOLDER = "ctranslate2"
# The base class of the errors of huggingface_hub's HTTP client, which an unreachable endpoint raises: httpx's
# HTTPError (huggingface_hub 1 and later) or requests' RequestException (before), HfHubHTTPError's first ancestor
# that is not a builtin.
HTTP_CLIENT_ERROR = next(cls for cls in reversed(HfHubHTTPError.__mro__) if cls.__module__ != "builtins")


def model_folder(run_dir: Path) -> Path:
    """The run's model/ folder (made portable by the run itself), refused unless it holds safetensors weights."""
    model_dir = run_dir / "model"
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no model/ folder; push takes the folder of a finished training run")
    if not list(model_dir.glob("*.safetensors")):
        pickled = sorted(p.name for p in model_dir.glob("pytorch_model*.bin"))
        found = f"only {', '.join(pickled)}, and push uploads safetensors only" if pickled else "no weights"
        raise FileNotFoundError(f"{model_dir}: {found} (expected model.safetensors)")
    if not (run_dir / "results.json").is_file():
        raise FileNotFoundError(f"{run_dir}: no results.json, which the model card is made from")
    return model_dir


def commit_message(run_dir: Path) -> str:
    results = RunResults.load(run_dir / "results.json")
    message = f"Upload {results.recipe} ({results.direction}, {results.steps} updates"
    if results.test:
        message += f", {results.test.split} sacreBLEU {results.test.bleu:.2f}"
    return message + ")"


def push(run_dir: str | Path, repo_id: str, private: bool = False, revision: str | None = None,
         token: str | None = None, ctranslate2: str | None = None) -> CommitInfo:
    """Create the repo (and branch) if needed and upload the run's model folder with its rendered card.

    The token comes from huggingface_hub's usual sources (HF_TOKEN, `hf auth login`) unless given; it is never
    printed. Files already on the Hub with the same content are not sent again. With `ctranslate2` (a quantization,
    e.g. "int8"), the model is also exported for CTranslate2 into the repo's ctranslate2/ folder; without it, an
    export an earlier push left there is deleted in the same commit, as it no longer matches the weights. An
    unreachable Hub is a ConnectionError naming the endpoint.
    """
    run_dir = Path(run_dir)
    model_dir = model_folder(run_dir)
    render_card(run_dir, repo_id)
    patterns = list(UPLOADED)
    if ctranslate2:
        from ..engines.ctranslate2 import export

        export(model_dir, model_dir / CTRANSLATE2_FOLDER, quantization=ctranslate2, force=True)
        patterns.append(f"{CTRANSLATE2_FOLDER}/*")
    try:
        return upload(model_dir, repo_id, patterns, private, revision, token, commit_message(run_dir))
    except HTTP_CLIENT_ERROR as error:
        if isinstance(error, HfHubHTTPError):  # the Hub's answers (401, 404...), which name what was refused
            raise
        raise ConnectionError(f"{constants.ENDPOINT}: cannot reach the Hub ({type(error).__name__}: {error}); "
                              "nothing was pushed: check the network, or HF_ENDPOINT") from None


def upload(model_dir: Path, repo_id: str, patterns: list[str], private: bool, revision: str | None,
           token: str | None, message: str) -> CommitInfo:
    """Create the repo (and branch) if needed and commit the files of model_dir that match patterns; the repo's
    ctranslate2/ folder holds what this commit uploads there, or nothing."""
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    if private and not api.model_info(repo_id).private:
        # create_repo(exist_ok=True) leaves an existing repo's visibility as it is: refuse rather than publish.
        raise PermissionError(f"{repo_id} already exists and is public, so --private would not keep this upload "
                              "private: make the repo private on the Hub first, or push without --private")
    if revision and revision != "main":
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    return api.upload_folder(repo_id=repo_id, folder_path=model_dir, revision=revision, allow_patterns=patterns,
                             delete_patterns=[f"{CTRANSLATE2_FOLDER}/*"], commit_message=message)
