"""The Hub: push a trained run to a local Hub emulator, then load it where the package is not installed.

Clients run in subprocesses, since huggingface_hub reads HF_ENDPOINT once, at import.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
import transformers
from conftest import tiny_recipe
from hub_server import LocalHub
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, GenerationConfig, pipeline

from vanilla_transformer.training.run import train

TOKEN = "hf_localTestToken0123456789abcdefXYZ"
REPO_ID = "tester/transformer-tiny-de-en"
SENTENCES = ["Ein Mann fährt mit dem Fahrrad.", "Zwei Hunde spielen im Schnee.", "Eine Frau liest ein Buch."]
DECODER_INPUT_IDS = [[1, 20, 30, 40], [1, 50, 60, 70], [1, 80, 90, 100]]

LOADER = textwrap.dedent(r"""
    import json, re, sys
    import torch
    from huggingface_hub import HfApi, ModelCard
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, pipeline

    repo, sentences, decoder_input_ids = sys.argv[1], json.loads(sys.argv[2]), torch.tensor(json.loads(sys.argv[3]))
    model = AutoModelForSeq2SeqLM.from_pretrained(repo, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(repo, trust_remote_code=True)
    # Without the flag: transformers asks about the config's custom code (stdin is empty: no), then still gives a
    # tokenizer, its own fast class over our tokenizer.json.
    plain_tokenizer = AutoTokenizer.from_pretrained(repo)
    batch = tokenizer(sentences, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch, decoder_input_ids=decoder_input_ids).logits
    generated = model.generate(**batch, num_beams=4, max_new_tokens=20)
    translator = pipeline("translation", model=repo, trust_remote_code=True)
    card = ModelCard.load(repo)
    bleu = next(r for r in card.data.eval_results if r.metric_type == "bleu")
    exec(re.search(r"```python\n(.*?)```", card.text, re.DOTALL).group(1))  # the card's own usage snippet
    tree = {entry.path: entry for entry in HfApi().list_repo_tree(repo)}
    siblings = sorted(sibling.rfilename for sibling in HfApi().model_info(repo).siblings)
    errors = {}
    for name, load in (("repo", lambda: AutoModelForSeq2SeqLM.from_pretrained("tester/no-such-model")),
                       ("revision", lambda: AutoModelForSeq2SeqLM.from_pretrained(repo, revision="no-such-branch",
                                                                                  trust_remote_code=True))):
        try:
            load()
        except Exception as error:
            errors[name] = f"{type(error).__name__}: {error}"
    print("RESULT", json.dumps({
        "model_class": type(model).__name__,
        "tokenizer_class": type(tokenizer).__name__,
        "plain_tokenizer_class": type(plain_tokenizer).__name__,
        "plain_tokenizer_same_ids": plain_tokenizer(sentences, text_target=sentences).data
                                    == tokenizer(sentences, text_target=sentences).data,
        "logits": logits.tolist(),
        "beam_translations": tokenizer.batch_decode(generated, skip_special_tokens=True),
        "pipeline_list": translator(sentences, num_beams=4, max_new_tokens=20, batch_size=len(sentences)),
        "pipeline_one": translator(sentences[0], num_beams=4, max_new_tokens=20),
        "pipeline_batches_of_two": translator(sentences, num_beams=4, max_new_tokens=20, batch_size=2),
        "weights_in_lfs": tree["model.safetensors"].lfs is not None,
        "listing_agrees": sorted(tree) == siblings,
        "card_bleu": bleu.metric_value,
        "card_split": bleu.dataset_split,
        "errors": errors,
        "imported_package": "vanilla_transformer" in sys.modules,
    }))
""")


@pytest.fixture(scope="module")
def run_dir(small_corpus, tmp_path_factory):
    """A finished tiny training run: model/, results.json with a test BLEU, recipe.json."""
    out = tmp_path_factory.mktemp("hub") / "run"
    train(tiny_recipe(small_corpus, out, "training.max_steps=300", "training.eval_steps=300", "training.save_steps=300",
                      "training.lr_scale=1.0", "training.warmup_steps=100"))
    return out


@pytest.fixture()
def hub():
    server = LocalHub(token=TOKEN)
    server.serve_in_background()
    yield server
    server.shutdown()
    server.server_close()


def client_env(hub: LocalHub, home, token: str | None = TOKEN) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(HF_ENDPOINT=hub.endpoint, HF_HOME=str(home), HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1",
               NO_PROXY="127.0.0.1", PYTHONPATH="")
    if token:
        env["HF_TOKEN"] = token
    return env


def push(hub, tmp_path, run_dir, *args, token=TOKEN) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "vanilla_transformer.cli", "push", str(run_dir), REPO_ID, *args]
    return subprocess.run(command, env=client_env(hub, tmp_path / "pusher-home", token), capture_output=True,
                          text=True, timeout=300)


def branch_files(hub: LocalHub, branch: str) -> dict:
    repo = hub.repos[REPO_ID]
    return repo.commits[repo.branches[branch]]


def test_pushed_run_loads_without_the_package_and_translates_the_same(hub, run_dir, tmp_path):
    pushed = push(hub, tmp_path, run_dir)
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    assert REPO_ID in pushed.stdout and TOKEN not in pushed.stdout + pushed.stderr
    files = branch_files(hub, "main")
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "README.md",
                 "configuration.py", "modeling.py", "tokenization.py", "pipeline.py"):
        assert name in files, f"{name} was not pushed"
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in files), "only safetensors weights"
    assert "corpus.py" not in files, "training-only code was pushed"
    assert files["model.safetensors"].lfs_sha256, "weights go through LFS"
    config = json.loads(files["config.json"].content)
    assert config["custom_pipelines"]["translation"]["impl"] == "pipeline.TranslationPipeline"
    assert config["auto_map"]["AutoModelForSeq2SeqLM"] == "modeling.VanillaTransformerForConditionalGeneration"
    repo = hub.repos[REPO_ID]
    assert repo.messages[repo.branches["main"]].startswith("Upload multi30k-de-en-small (de-en, 300 updates")
    assert ("POST", "/api/validate-yaml") in hub.requests

    loader = subprocess.run(
        [sys.executable, "-c", LOADER, REPO_ID, json.dumps(SENTENCES), json.dumps(DECODER_INPUT_IDS)],
        env=client_env(hub, tmp_path / "fresh-home", token=None), capture_output=True, text=True, timeout=300,
        cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert loader.returncode == 0, loader.stderr[-3000:]
    remote = json.loads(loader.stdout.split("RESULT ", 1)[1])
    assert not remote["imported_package"]
    assert remote["model_class"] == "VanillaTransformerForConditionalGeneration"
    assert remote["weights_in_lfs"] and remote["listing_agrees"]
    assert remote["tokenizer_class"] == "VanillaTransformerTokenizer"
    assert remote["plain_tokenizer_class"] in ("PreTrainedTokenizerFast", "TokenizersBackend")
    assert remote["plain_tokenizer_same_ids"]

    # The same numbers from the run folder, loaded here with the package.
    model = AutoModelForSeq2SeqLM.from_pretrained(run_dir / "model").eval()
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "model")
    batch = tokenizer(SENTENCES, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch, decoder_input_ids=torch.tensor(DECODER_INPUT_IDS)).logits
    assert torch.allclose(torch.tensor(remote["logits"]), logits, atol=1e-6)
    local_beams = tokenizer.batch_decode(model.generate(**batch, num_beams=4, max_new_tokens=20),
                                         skip_special_tokens=True)
    assert remote["beam_translations"] == local_beams
    assert all(len(text.split()) >= 3 for text in local_beams), f"too little output to compare: {local_beams}"

    # pipeline("translation"): the same as generate + batch_decode, for a list and for one string.
    assert remote["pipeline_list"] == [{"translation_text": text} for text in local_beams]
    assert remote["pipeline_one"] == [{"translation_text": local_beams[0]}]
    assert remote["pipeline_batches_of_two"] == remote["pipeline_list"]

    # The model page's model-index holds the run's measured BLEU.
    results = json.loads((run_dir / "results.json").read_text())
    assert remote["card_bleu"] == round(results["test"]["bleu"], 2)
    assert remote["card_split"] == results["test"]["split"]

    # Clear errors for a repo and a revision that do not exist.
    assert "tester/no-such-model" in remote["errors"]["repo"]
    assert "no-such-branch" in remote["errors"]["revision"]
    assert "valid git identifier" in remote["errors"]["revision"]


def test_a_second_push_sends_no_unchanged_weights_and_a_branch_leaves_main_alone(hub, run_dir, tmp_path):
    assert push(hub, tmp_path, run_dir).returncode == 0
    weights = branch_files(hub, "main")["model.safetensors"].lfs_sha256
    assert hub.lfs_uploads() == [weights]
    main_commit = hub.repos[REPO_ID].branches["main"]

    again = push(hub, tmp_path, run_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert hub.lfs_uploads() == [weights], "unchanged weights were sent again"
    assert hub.repos[REPO_ID].branches["main"] == main_commit

    # A branch with other decoding settings: committed there, main keeps its files and its head.
    branch_run = tmp_path / "branch-run"
    shutil.copytree(run_dir, branch_run)
    generation = GenerationConfig.from_pretrained(branch_run / "model")
    generation.num_beams = 5
    generation.save_pretrained(branch_run / "model")
    branched = push(hub, tmp_path, branch_run, "--revision", "beam-5")
    assert branched.returncode == 0, branched.stderr[-3000:]
    assert hub.repos[REPO_ID].branches["main"] == main_commit
    assert hub.repos[REPO_ID].branches["beam-5"] != main_commit
    assert json.loads(branch_files(hub, "beam-5")["generation_config.json"].content)["num_beams"] == 5
    assert json.loads(branch_files(hub, "main")["generation_config.json"].content)["num_beams"] == 2
    assert hub.lfs_uploads() == [weights], "the branch reuses the stored weights"
    for result in (again, branched):
        assert TOKEN not in result.stdout + result.stderr


def test_push_errors_are_clear_and_never_show_the_token(hub, run_dir, tmp_path):
    no_weights = tmp_path / "no-weights"
    shutil.copytree(run_dir, no_weights)
    (no_weights / "model/model.safetensors").unlink()
    result = push(hub, tmp_path, no_weights)
    assert result.returncode != 0
    assert "no weights (expected model.safetensors)" in result.stderr and str(no_weights) in result.stderr

    (no_weights / "model/pytorch_model.bin").write_bytes(b"pickle")
    result = push(hub, tmp_path, no_weights)
    assert "only pytorch_model.bin, and push uploads safetensors only" in result.stderr

    wrong = "hf_wrongSecretToken9876543210zyxwv"
    result = push(hub, tmp_path, run_dir, token=wrong)
    assert result.returncode != 0
    assert "401" in result.stderr and "Traceback" not in result.stderr
    assert wrong not in result.stdout + result.stderr and TOKEN not in result.stdout + result.stderr
    assert REPO_ID not in hub.repos

    private = push(hub, tmp_path, run_dir, "--private")
    assert private.returncode == 0 and hub.repos[REPO_ID].private


def local_translations(model_dir, **settings) -> list[str]:
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=True)
    batch = tokenizer(SENTENCES, return_tensors="pt", padding=True)
    return tokenizer.batch_decode(model.generate(**batch, **settings), skip_special_tokens=True)


def test_translation_pipeline_on_a_run_folder(run_dir):
    translator = pipeline("translation", model=str(run_dir / "model"), trust_remote_code=True)
    expected = local_translations(run_dir / "model", num_beams=3, max_new_tokens=15)
    assert translator(SENTENCES, num_beams=3, max_new_tokens=15, batch_size=8) == [
        {"translation_text": text} for text in expected]
    short = local_translations(run_dir / "model", num_beams=3, max_length=6)
    assert translator(SENTENCES, num_beams=3, max_length=6, batch_size=8) == [
        {"translation_text": text} for text in short]
    assert short != expected, "max_length=6 should cut these translations"
    with pytest.raises(TypeError, match="a string or a list of strings"):
        translator(42)


@pytest.mark.skipif(not hasattr(transformers, "TranslationPipeline"),
                    reason=f"transformers {transformers.__version__} has no built-in translation pipeline")
def test_the_built_in_translation_pipeline_of_transformers_4_works_too(run_dir):
    model = AutoModelForSeq2SeqLM.from_pretrained(run_dir / "model").eval()
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "model", trust_remote_code=True)
    builtin = transformers.TranslationPipeline(model=model, tokenizer=tokenizer)
    expected = local_translations(run_dir / "model", num_beams=4, max_new_tokens=20)
    assert builtin(SENTENCES, num_beams=4, max_new_tokens=20) == [{"translation_text": text} for text in expected]


def test_push_private_to_an_existing_public_repo_is_refused(hub, run_dir, tmp_path):
    # Defect 6: create_repo(exist_ok=True) kept the repo public, and the upload went out with exit status 0.
    assert push(hub, tmp_path, run_dir).returncode == 0
    head = hub.repos[REPO_ID].branches["main"]
    private = push(hub, tmp_path, run_dir, "--private")
    assert private.returncode != 0 and "already exists and is public" in private.stderr
    assert "Traceback" not in private.stderr
    assert not hub.repos[REPO_ID].private and hub.repos[REPO_ID].branches["main"] == head


def test_translation_pipeline_takes_what_transformers_users_pass(run_dir):
    # Defect 8: num_return_sequences lost results, truncation did nothing, src_lang/tgt_lang raised, [] raised
    # IndexError, and the task name translation_de_to_en raised KeyError.
    translator = pipeline("translation_de_to_en", model=str(run_dir / "model"), trust_remote_code=True)
    two = translator(SENTENCES[:2], num_beams=3, num_return_sequences=2, max_new_tokens=10)
    assert [len(options) for options in two] == [2, 2]
    assert all(set(option) == {"translation_text"} for options in two for option in options)
    assert translator(SENTENCES[0], num_beams=3, num_return_sequences=2, max_new_tokens=10) == two[0]
    assert translator([]) == []
    assert translator(SENTENCES[:1], src_lang="de", tgt_lang="en", max_new_tokens=5) == translator(
        SENTENCES[:1], max_new_tokens=5)
    with pytest.raises(ValueError, match="src_lang='fr', but this model translates de to en"):
        translator(SENTENCES[:1], src_lang="fr")
    positions = AutoModelForSeq2SeqLM.from_pretrained(run_dir / "model").config.max_position_embeddings
    too_long = " ".join(["Hund"] * positions)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        translator(too_long, max_new_tokens=5)
    assert translator(too_long, truncation=True, max_new_tokens=5)[0]["translation_text"]


def test_model_card_takes_language_codes_with_hyphens(run_dir, tmp_path):
    # Defect 10: "pt-BR" broke the card at the end of training, before log.csv and curves.png were written.
    from vanilla_transformer.hub.card import render_card

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    for name, section in (("recipe.json", "data"), ("results.json", None)):
        values = json.loads((run / name).read_text())
        (values[section] if section else values)["src"] = "pt-BR"
        (run / name).write_text(json.dumps(values))
    card = render_card(run)
    assert card.data.language == ["pt-BR", "en"] and "pt-BR→en" in card.text


def test_push_can_add_a_ctranslate2_export(hub, run_dir, tmp_path):
    pytest.importorskip("ctranslate2")
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    pushed = push(hub, tmp_path, run, "--ctranslate2", "int8")
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    files = branch_files(hub, "main")
    assert {"ctranslate2/model.bin", "ctranslate2/config.json", "ctranslate2/tokenizer.json"} <= set(files)
    assert "model.safetensors" in files and "config.json" in files
