"""Bad input through the command line: one error naming the option, file, key or line, a non-zero exit status, no
traceback, and nothing written or deleted (issue 28, points 10, 11, 12 and 15)."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
from conftest import REPO, tiny_model_folder, tiny_recipe
from hub_server import LocalHub
from safetensors.torch import load_file, save_file

from vanilla_transformer.cli import main
from vanilla_transformer.model_folder import make_portable
from vanilla_transformer.results import RunResults

TOKEN = "hf_localTestToken0123456789abcdefXYZ"
RECIPE = str(REPO / "configs/multi30k-de-en-small.yaml")
SENTENCE = "Ein Hund rennt über die Wiese."


@pytest.fixture(scope="module")
def model_dir(data_dir, tmp_path_factory):
    """A tiny de->en model folder as training leaves one: its config names the direction."""
    folder = tiny_model_folder(data_dir, tmp_path_factory.mktemp("model") / "model", positions=64)
    make_portable(folder, ("de", "en"))
    return folder


def copy_of(model_dir, tmp_path, name="copy"):
    return shutil.copytree(model_dir, tmp_path / name)


def cli_error(capsys, *argv) -> str:
    """What the command says on stderr as it fails; it must fail with SystemExit (no other exception: a traceback)
    and a non-zero status."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(arg) for arg in argv])
    code = exit_info.value.code
    assert code not in (0, None)
    message = capsys.readouterr().err + (code if isinstance(code, str) else "")
    assert "Traceback" not in message
    return message


# Point 10: out-of-range decoding values are refused at parsing, naming the option.
@pytest.mark.parametrize("command, option, value", [
    ("translate", "--batch-size", "-1"), ("translate", "--batch-size", "0"), ("translate", "--num-beams", "0"),
    ("translate", "--num-beams", "-3"), ("translate", "--intra-threads", "0"), ("evaluate", "--batch-size", "-1"),
    ("evaluate", "--num-beams", "0"), ("show-attention", "--num-beams", "0"),
])
def test_out_of_range_decoding_values_are_refused_naming_the_option(model_dir, data_dir, tmp_path, capsys, command,
                                                                    option, value):
    out = tmp_path / "eval"
    arguments = {"translate": [SENTENCE], "show-attention": [SENTENCE, "--out", out / "attention.png"],
                 "evaluate": ["--data", data_dir / "multi30k", "--out", out]}[command]
    message = cli_error(capsys, command, model_dir, *arguments, option, value)
    assert f"argument {option}: must be at least 1, not {value}" in message
    assert not out.exists()


# Point 11: evaluating a model in the other direction than its config names.
def test_evaluate_in_the_other_direction_is_refused_naming_the_models(model_dir, data_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    message = cli_error(capsys, "evaluate", model_dir, "--data", data_dir / "multi30k", "--src", "en", "--tgt", "de",
                        "--out", out)
    assert "--src en --tgt de" in message and "translates de to en" in message
    assert not out.exists()


# Point 12: tracebacks instead of errors.
def test_truncated_weights_are_named(model_dir, tmp_path, capsys):
    folder = copy_of(model_dir, tmp_path)
    weights = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    for command in (["translate", folder, SENTENCE], ["export-ctranslate2", folder, tmp_path / "ct2"]):
        message = cli_error(capsys, *command)
        assert f"{folder}: its safetensors weights cannot be read" in message
    assert not (tmp_path / "ct2").exists()


@pytest.mark.parametrize("change, expected", [
    ({"d_ff": 80}, "have other shapes in the weights than config.json gives them"),
    ({"encoder_layers": 3}, "are in config.json's model but missing from the weights"),
    ({"decoder_layers": 1}, "are in the weights but not in config.json's model"),
])
def test_a_config_that_disagrees_with_the_weights_is_refused(model_dir, tmp_path, capsys, change, expected):
    folder = copy_of(model_dir, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    message = cli_error(capsys, "translate", folder, SENTENCE)
    assert f"{folder}: config.json does not describe these weights" in message and expected in message


def test_export_ctranslate2_refuses_an_existing_folder_and_the_models_own(model_dir, tmp_path, capsys):
    pytest.importorskip("ctranslate2")
    out = tmp_path / "exported"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    message = cli_error(capsys, "export-ctranslate2", model_dir, out)
    assert f"{out}: already exists" in message and "--force" in message
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    folder = copy_of(model_dir, tmp_path)
    for target in (folder, tmp_path):
        message = cli_error(capsys, "export-ctranslate2", folder, target, "--force")
        assert f"{target}: holds the model {folder} itself" in message
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in model_dir.iterdir())


@pytest.mark.parametrize("option, value, expected", [
    ("--layer", "9", "--layer 9: the model has 2 decoder layers, numbered 0 to 1"),
    ("--head", "4", "--head 4: the model has 4 decoder heads, numbered 0 to 3"),
    ("--layer", "-1", "argument --layer: must be 0 or more, not -1"),
])
def test_show_attention_refuses_a_layer_or_head_the_model_lacks(model_dir, tmp_path, capsys, option, value, expected):
    out = tmp_path / "attention.png"
    message = cli_error(capsys, "show-attention", model_dir, SENTENCE, option, value, "--num-beams", "1", "--out", out)
    assert expected in message
    assert not out.exists()


def test_positional_encodings_of_a_small_d_model_are_drawn_and_an_odd_one_is_refused(tmp_path, capsys):
    main(["show-positional-encoding", "--d-model", "64", "--positions", "50", "--out", str(tmp_path / "pe.png")])
    assert (tmp_path / "pe.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for value, expected in (("63", "must be even, not 63"), ("0", "must be at least 1, not 0")):
        message = cli_error(capsys, "show-positional-encoding", "--d-model", value, "--out", tmp_path / "odd.png")
        assert f"argument --d-model: {expected}" in message
    assert not (tmp_path / "odd.png").exists()


@pytest.mark.parametrize("recipe_text, overrides, expected", [
    (None, ["training.max_steps=[1"], "--set training.max_steps=[1: the value is not valid YAML"),
    (None, ["model.preset.size=1"], "--set model.preset.size=1: model.preset is 'small', not a section with keys"),
    ("- data\n- model\n", [], "recipe.yaml: expected a mapping of sections (data, model, training...), got a list"),
    ("data: {source: [unclosed\n", [], "recipe.yaml: not valid YAML"),
])
def test_a_broken_recipe_or_set_is_named(tmp_path, capsys, recipe_text, overrides, expected):
    recipe = RECIPE
    if recipe_text is not None:
        recipe = tmp_path / "recipe.yaml"
        recipe.write_text(recipe_text)
    run = tmp_path / "run"
    sets = [argument for override in overrides for argument in ("--set", override)]
    for command in (["train", recipe, *sets, "--output-dir", run], ["prepare", recipe, *sets]):
        assert expected in cli_error(capsys, *command)
    assert not run.exists()
    if recipe_text and "unclosed" in recipe_text:
        assert "line 2, column 1" in cli_error(capsys, "prepare", recipe)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens there once the socket is closed


@pytest.fixture(scope="module")
def run_dir(model_dir, small_corpus, tmp_path_factory):
    """A run folder as push takes it (model/, recipe.json, results.json), made without training."""
    run = tmp_path_factory.mktemp("push") / "run"
    shutil.copytree(model_dir, run / "model")
    (run / "recipe.json").write_text(json.dumps(tiny_recipe(small_corpus, run).to_dict()))
    RunResults(recipe="multi30k-de-en-small", src="de", tgt="en", parameters=1, train_pairs=500, cleaning={},
               padding_fraction=0.1, steps=2, train_seconds=1.0, machine="test").save(run / "results.json")
    return run


def push(run_dir, home, endpoint: str, *options) -> subprocess.CompletedProcess:
    """The push command in a subprocess: huggingface_hub reads HF_ENDPOINT once, at import."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(home), HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1",
               NO_PROXY="127.0.0.1", HF_TOKEN=TOKEN)
    command = [sys.executable, "-m", "vanilla_transformer.cli", "push", str(run_dir), "tester/tiny", *options]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_push_to_an_unreachable_hub_names_the_endpoint(run_dir, tmp_path):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    result = push(run_dir, tmp_path / "home", endpoint)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert f"vanilla-transformer push: error: {endpoint}: cannot reach the Hub" in result.stderr
    assert TOKEN not in result.stdout + result.stderr


# Point 15: misleading messages.
def test_a_folder_without_tokenizer_files_says_so(model_dir, tmp_path, capsys):
    folder = copy_of(model_dir, tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    message = cli_error(capsys, "translate", folder, SENTENCE)
    assert f"{folder}: no tokenizer files" in message and "sentencepiece" not in message


def test_a_corrupt_tokenizer_file_is_named_with_its_line(model_dir, tmp_path, capsys):
    folder = copy_of(model_dir, tmp_path)
    (folder / "tokenizer.json").write_text('{"version": "1.0",\n "model": {"vocab": [tru')
    message = cli_error(capsys, "translate", folder, SENTENCE)
    assert f"{folder / 'tokenizer.json'}: not a valid JSON file" in message and "line 2" in message


def test_translate_takes_options_after_the_sentences_and_before(model_dir, capsys):
    main(["translate", str(model_dir), SENTENCE, "Zwei Hunde.", "--num-beams", "1"])
    after = capsys.readouterr().out.splitlines()
    main(["translate", str(model_dir), "--num-beams", "1", SENTENCE, "Zwei Hunde."])
    before = capsys.readouterr().out.splitlines()
    assert len(after) == 2 and before == after
    assert "unrecognized arguments: --bogus" in cli_error(capsys, "translate", model_dir, SENTENCE, "--bogus")
    assert "unrecognized arguments: --bogus" in cli_error(capsys, "tokenizer", "train", "--data", "d", "--langs", "de",
                                                          "--out", "t", "--bogus")


def test_a_push_without_ctranslate2_removes_the_earlier_export_from_the_repo(run_dir, tmp_path):
    pytest.importorskip("ctranslate2")
    hub = LocalHub(token=TOKEN)
    hub.serve_in_background()
    try:
        run = shutil.copytree(run_dir, tmp_path / "run")
        first = push(run, tmp_path / "home", hub.endpoint, "--ctranslate2", "int8")
        assert first.returncode == 0, first.stderr[-3000:]
        repo = hub.repos["tester/tiny"]
        files = repo.commits[repo.branches["main"]]
        assert "ctranslate2/model.bin" in files
        first_weights = files["model.safetensors"].lfs_sha256
        # New weights, pushed without --ctranslate2: the old export would translate as the old weights.
        weights = load_file(run / "model/model.safetensors")
        save_file({name: tensor * 0.5 for name, tensor in weights.items()}, run / "model/model.safetensors",
                  metadata={"format": "pt"})
        second = push(run, tmp_path / "home", hub.endpoint)
        assert second.returncode == 0, second.stderr[-3000:]
        files = repo.commits[repo.branches["main"]]
        assert not [name for name in files if name.startswith("ctranslate2/")]
        assert files["model.safetensors"].lfs_sha256 != first_weights
    finally:
        hub.shutdown()
        hub.server_close()
