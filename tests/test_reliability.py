"""What a careless user types must not lose a run, a checkpoint or a line: each test reproduces a defect once found."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import transformers
from conftest import REPO, accelerate_launch, launch_env, tiny_model_folder, tiny_recipe, write_pairs
from safetensors.torch import load_file
from test_training import complete_json, train_args
from transformers import AutoTokenizer, GenerationConfig

from vanilla_transformer.cli import main
from vanilla_transformer.training.average import average_checkpoints
from vanilla_transformer.training.checkpoints import CheckpointError, last_checkpoints, problem, resume_checkpoint
from vanilla_transformer.training.recipe import RecipeError, load_recipe
from vanilla_transformer.training.run import train

RECIPE = REPO / "configs/multi30k-de-en-small.yaml"


@pytest.fixture(scope="module")
def greedy_run(small_corpus, tmp_path_factory):
    """A tiny run validated with greedy decoding (num_beams=1), checkpoints at 2 and 4, the last two averaged."""
    out = tmp_path_factory.mktemp("greedy") / "run"
    results = train(tiny_recipe(small_corpus, out, "generation.num_beams=1", "training.max_steps=4",
                                "training.save_steps=2", "training.eval_steps=2", "average_last=2",
                                "data.test_size=8"))
    return out, results


def test_greedy_validation_saves_checkpoints(greedy_run):
    # Defect 1: the paper's beam settings stayed beside num_beams=1 and GenerationConfig refused to save them.
    out, results = greedy_run
    for step in (2, 4):
        assert problem(out / f"checkpoint-{step}", for_resume=True) is None
    assert GenerationConfig.from_pretrained(out / "model").num_beams == 1
    assert results.averaged_checkpoints == ["checkpoint-2", "checkpoint-4"]
    assert results.test.num_beams == 1


@pytest.mark.parametrize("override, message", [
    ("training.update_tokens=4k", r"training.update_tokens='4k': expected int"),
    ("training.seed=[1]", r"training.seed=\[1\]: expected int"),
    ("data=3", r"recipe.data: expected a mapping"),
    ("training.precision=bf32", r"training.precision='bf32': must be one of"),
    ("training.epochs=abc", r"training.epochs='abc': expected float"),
    ("generation.num_beams=0", r"generation.num_beams=0: must be at least 1"),
    ("average_last=9", r"average_last=9: must be between 0 and training.save_total_limit \(5\)"),
    ("training.micro_batch_tokens=0", r"training.micro_batch_tokens=0: must be a positive number of tokens"),
    ("training.micro_batch_tokens=32", r"data.max_length=64: must be at most the tokens of a micro-batch \(batch plan: "
                                       r"1 process x 64 micro-batches of <= 32 tokens"),
    ("tokenizer.sample=0", r"tokenizer.sample=0: must be positive"),
    ("training.ddp_timeout=0", r"training.ddp_timeout=0: must be a positive number of seconds"),
    ("data.max_length=300", r"data.max_length=300: must be at most the model's max_position_embeddings \(256\)"),
    ("model.preset=huge", r"model.preset='huge' with model.overrides=.*: unknown preset 'huge'"),
])
def test_recipe_values_are_checked_when_loaded(override, message):
    # Defect 3: these were accepted, and failed (or silently trained fp32) later.
    with pytest.raises(RecipeError, match=message):
        load_recipe(RECIPE, [override])


def test_pairs_longer_than_the_models_positions_are_dropped_whatever_max_length_says(data_dir, tmp_path):
    # Issue 28, defect 5: with data.max_length null (or above the positions) a long pair stopped the run at the step
    # that drew it ("sequence of 105 tokens exceeds max_position_embeddings=64"), and every resume at that step.
    de = (data_dir / "multi30k/train.de").read_text(encoding="utf-8").splitlines()[:60]
    en = (data_dir / "multi30k/train.en").read_text(encoding="utf-8").splitlines()[:60]
    long_de, long_en = ([" ".join(side[i : i + 3]) for i in range(0, 9, 3)] for side in (de, en))
    write_pairs(tmp_path / "corpus", "train", de + long_de, en + long_en)
    write_pairs(tmp_path / "corpus", "val", de[:8], en[:8])
    results = train(tiny_recipe(tmp_path / "corpus", tmp_path / "run", "data.max_length=null", "data.max_ratio=null",
                                "model.overrides={dropout: 0.1, max_position_embeddings: 64}", "training.max_steps=-1",
                                "training.epochs=1", "data.test=null"))
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "run/tokenizer")
    lengths = [max(len(tokenizer(s)["input_ids"]), len(tokenizer(t)["input_ids"]))
               for s, t in zip(de + long_de, en + long_en)]
    beyond = sum(length > 64 for length in lengths)
    assert beyond >= len(long_de) and results.cleaning == {"kept": len(lengths) - beyond, "too_long": beyond,
                                                            "bad_ratio": 0}
    assert results.train_pairs == len(lengths) - beyond


def test_overwrite_deletes_nothing_until_the_new_run_can_start(greedy_run, tmp_path, small_corpus):
    # Defect 3: --overwrite deleted the checkpoints first, then failed on a missing folder or a bad value.
    # Defect 10: a mistyped local folder was looked up on the Hub for half a minute.
    run = tmp_path / "run"
    shutil.copytree(greedy_run[0], run)
    before = sorted(p.name for p in run.iterdir())
    start = time.monotonic()
    with pytest.raises(RecipeError, match=r"data.source='multi30kk': no such folder"):
        train(tiny_recipe(small_corpus, run, "data.source=multi30kk"), overwrite=True)
    assert time.monotonic() - start < 5
    with pytest.raises(SystemExit, match="training.epochs='abc': expected float"):
        main(["train", str(RECIPE), "--output-dir", str(run), "--overwrite", "--set", "training.epochs=abc"])
    write_pairs(tmp_path / "broken", "train", ["a", "b"], ["x"])
    with pytest.raises(ValueError, match="train.de has 2 lines but"):
        train(tiny_recipe(small_corpus, run, f"data.source={tmp_path / 'broken'}"), overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == before

    # A run that starts replaces the whole earlier run: nothing of the old model or results stays beside it.
    train(tiny_recipe(small_corpus, run, "training.max_steps=2", "training.save_steps=2", "data.test=null"),
          overwrite=True)
    assert not (run / "checkpoint-4").exists() and (run / "checkpoint-2").is_dir()
    assert not list(run.glob("*.hyp.*")), "the old run's test hypotheses stayed"
    assert json.loads((run / "results.json").read_text())["steps"] == 2


def test_averaging_takes_the_last_n_checkpoints_by_step(small_corpus, tmp_path):
    # Defect 4: the Trainer kept the best-BLEU checkpoint past save_total_limit, and it was averaged as "last".
    results = train(tiny_recipe(small_corpus, tmp_path / "run", "training.max_steps=20", "training.save_steps=5",
                                "training.eval_steps=5", "training.save_total_limit=2", "average_last=2",
                                "data.test=null", "data.validation_size=8"))
    assert results.averaged_checkpoints == ["checkpoint-15", "checkpoint-20"]
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*")) == ["checkpoint-15", "checkpoint-20"]
    assert results.best_validation_step in (5, 10, 15, 20)


def truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def test_incomplete_checkpoints_are_skipped_with_a_warning(greedy_run, tmp_path, caplog):
    # Defect 5: a half-written checkpoint gave SafetensorError tracebacks and stopped resume and averaging.
    run = tmp_path / "run"
    shutil.copytree(greedy_run[0], run, ignore=shutil.ignore_patterns("model"))
    truncate(run / "checkpoint-4/model.safetensors", 1000)
    with caplog.at_level(logging.WARNING):
        assert resume_checkpoint(run) == run / "checkpoint-2"
        assert last_checkpoints(run, 2) == [run / "checkpoint-2"]
    assert "skipping incomplete checkpoint" in caplog.text and "checkpoint-4/model.safetensors" in caplog.text
    with pytest.raises(CheckpointError, match=r"cannot average .*checkpoint-4: .*model.safetensors: unreadable"):
        average_checkpoints([run / "checkpoint-2", run / "checkpoint-4"], tmp_path / "averaged")
    assert not (tmp_path / "averaged").exists()
    with pytest.raises(SystemExit, match="holds only 1 complete checkpoint"):
        main(["average", str(run), "--last", "2", "--out", str(tmp_path / "averaged")])

    truncate(run / "checkpoint-2/trainer_state.json", 50)
    assert "checkpoint-2/trainer_state.json: not a whole JSON document" in problem(run / "checkpoint-2", True)
    with pytest.raises(CheckpointError, match="no complete checkpoint-N folder to resume from"):
        resume_checkpoint(run)
    (run / "checkpoint-6").mkdir()  # an empty folder left by a kill
    assert "checkpoint-6/config.json: missing" in problem(run / "checkpoint-6")


def test_resume_falls_back_to_the_last_complete_checkpoint(greedy_run, small_corpus, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(greedy_run[0], run)
    truncate(run / "checkpoint-4/optimizer.pt", 100)
    results = train(tiny_recipe(small_corpus, run, "generation.num_beams=1", "training.max_steps=6",
                                "training.save_steps=2", "training.eval_steps=2", "data.test=null"), resume=True)
    assert results.steps == 6
    state = json.loads((run / "checkpoint-6/trainer_state.json").read_text())
    assert [e["step"] for e in state["log_history"] if "eval_bleu" in e] == [2, 4, 6]


def launch_two_processes(corpus: Path, out: Path, *extra: str, resume: bool = False) -> subprocess.Popen:
    command = accelerate_launch("-m", "vanilla_transformer.cli", *train_args(corpus, out, *extra),
                                *(["--resume"] if resume else []))
    return subprocess.Popen(command, env=launch_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_all(marker: str) -> None:
    """SIGKILL every process whose command line holds marker (torchrun's workers live in their own sessions)."""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                os.kill(int(proc.name), signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass


def finish(process: subprocess.Popen) -> None:
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]


@pytest.mark.skipif(transformers.__version__.startswith("4."), reason="transformers 4.57 cannot resume a multi-process "
                    "CPU run at all: rank 1 fails to load the checkpoint (\"don't know how to restore data location "
                    "... cpu:0\")")
def test_two_process_run_killed_in_its_second_epoch_resumes_like_an_unbroken_one(data_dir, tmp_path):
    # Defect 2: after a resume inside epoch >= 1, the sampler under accelerate's wrappers replayed epoch 0's order.
    corpus = tmp_path / "corpus"
    de = (data_dir / "multi30k/train.de").read_text(encoding="utf-8").splitlines()[:120]
    en = (data_dir / "multi30k/train.en").read_text(encoding="utf-8").splitlines()[:120]
    write_pairs(corpus, "train", de, en)
    write_pairs(corpus, "val", de[:8], en[:8])
    # A model wide enough that the 40 updates after the checkpoint take seconds, not the instant a kill needs.
    # 600 tokens per process per update, so that epochs are short (120 pairs in about 7 updates).
    settings = ["training.update_tokens=1200", "training.max_steps=48", "training.save_steps=8",
                "model.overrides={dropout: 0.1, max_position_embeddings: 256, d_model: 128, d_ff: 512}"]
    finish(launch_two_processes(corpus, tmp_path / "straight", *settings))

    killed = launch_two_processes(corpus, tmp_path / "resumed", *settings)
    deadline = time.monotonic() + 600
    while not complete_json(tmp_path / "resumed/checkpoint-8/trainer_state.json") and time.monotonic() < deadline:
        assert killed.poll() is None, killed.communicate()[1][-3000:]
        time.sleep(0.01)
    kill_all(str(tmp_path / "resumed"))  # the launcher and both workers, as kill -9 of the job would
    killed.communicate()
    resumed_from = resume_checkpoint(tmp_path / "resumed")
    step = int(resumed_from.name.split("-")[1])
    epoch = json.loads((resumed_from / "trainer_state.json").read_text())["epoch"]
    assert step < 48 and 1 < epoch != int(epoch), f"the kill must fall inside a later epoch, not at {epoch}"
    lines_before = [len((tmp_path / f"resumed/batches-rank{r}.jsonl").read_text().splitlines()) for r in (0, 1)]
    finish(launch_two_processes(corpus, tmp_path / "resumed", *settings, resume=True))

    for rank in (0, 1):
        straight = (tmp_path / f"straight/batches-rank{rank}.jsonl").read_text().splitlines()
        resumed = (tmp_path / f"resumed/batches-rank{rank}.jsonl").read_text().splitlines()
        # The logs hold every collated batch, some fetched ahead of the kill among them.
        assert resumed[:step] + resumed[lines_before[rank]:][: 48 - step] == straight[:48], f"rank {rank}"
    straight = load_file(tmp_path / "straight/checkpoint-48/model.safetensors")
    resumed = load_file(tmp_path / "resumed/checkpoint-48/model.safetensors")
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], atol=1e-6, rtol=0, msg=name)


@pytest.fixture(scope="module")
def model_dir(data_dir, tmp_path_factory):
    return tiny_model_folder(data_dir, tmp_path_factory.mktemp("model"), positions=48)


def translate_stdin(model_dir: Path, data: bytes) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "vanilla_transformer.cli", "translate", str(model_dir), "--num-beams", "2",
               "--batch-size", "3"]
    return subprocess.run(command, input=data, capture_output=True, timeout=300)


def test_translate_keeps_one_output_line_per_input_line(model_dir):
    # Defect 7: bad UTF-8 crashed the batch and lost the lines before it; blank lines came back as invented
    # sentences; long lines were cut silently; a trailing \r reached the model.
    long_line = " ".join(["Hund"] * 80)
    lines = [b"Ein Hund rennt.", b"Zwei \xff Katzen.", b"", b"  ", b"Eine Frau liest.\r", long_line.encode()]
    result = translate_stdin(model_dir, b"\n".join(lines) + b"\n")
    out = result.stdout.decode("utf-8").split("\n")[:-1]
    stderr = result.stderr.decode("utf-8")
    assert len(out) == len(lines), out
    assert out[1] == out[2] == out[3] == ""
    assert result.returncode == 1 and "stdin line 2: not valid UTF-8 (byte 0xff at column 6)" in stderr
    assert "line 6: " in stderr and "more than the model's 48 positions" in stderr
    alone = translate_stdin(model_dir, b"Ein Hund rennt.\nEine Frau liest.\n")
    assert alone.returncode == 0 and alone.stdout.decode().split("\n")[:2] == [out[0], out[4]]


def test_commands_name_a_folder_that_is_not_a_model(tmp_path):
    # Defect 10: a folder without config.json said "Should have a `model_type` key".
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match=r"empty: no config.json here, so this is not a saved model folder"):
        main(["translate", str(tmp_path / "empty"), "Ein Hund."])
    with pytest.raises(SystemExit, match=r"no-such-folder: no such model folder"):
        main(["evaluate", str(tmp_path / "no-such-folder"), "--data", str(tmp_path)])


def test_convert_marian_without_a_tokenizer_writes_nothing(tmp_path):
    # Defect 10: the weights were written, then a TypeError traceback left a half-made folder.
    from test_parity import opus_mt_like

    from vanilla_transformer.convert.marian import convert_marian_checkpoint

    opus_mt_like().save_pretrained(tmp_path / "marian")
    with pytest.raises(FileNotFoundError, match=r"marian: no usable tokenizer|marian: no tokenizer files"):
        convert_marian_checkpoint(tmp_path / "marian", tmp_path / "ours")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["marian"]


@pytest.mark.parametrize("layout", ["text", "jsonl", "parquet"])
def test_an_edit_that_keeps_the_size_and_time_is_read_anew(layout, tmp_path):
    # Issue 28, defect 13: the text was cached by the files' size and modification time (a table's by its time
    # alone), so an edit that kept both (touch -r, a restore from a backup) trained on the old text.
    from vanilla_transformer import train_tokenizer
    from vanilla_transformer.training.data import load_parallel, tokenize

    corpus = tmp_path / "corpus"

    def write(de: list[str], en: list[str]) -> list[Path]:
        if layout == "text":
            write_pairs(corpus, "train", de, en)
            return [corpus / "train.de", corpus / "train.en"]
        rows = [{"translation": {"de": d, "en": e}} for d, e in zip(de, en)]
        corpus.mkdir(exist_ok=True)
        if layout == "jsonl":
            (corpus / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(rows), corpus / "train.parquet")
        return [corpus / f"train.{layout}"]

    de, en = ["Ein Hund rennt.", "Zwei Katzen schlafen."], ["A dog runs.", "Two cats sleep."]
    tokenizer = train_tokenizer(texts=de + en + ["Ein Hund lacht.", "A dog laughs."], vocab_size=300,
                                show_progress=False)
    files = write(de, en)
    for file in files:
        shutil.copy2(file, tmp_path / f"{file.name}.before")  # its size and times, for touch -r
    first = tokenize(load_parallel(corpus, ("de", "en"))["train"], tokenizer, ("de", "en"))

    edited = write(["Ein Hund lacht.", de[1]], ["A dog eats.", en[1]])  # the same number of bytes
    for file in edited:
        subprocess.run(["touch", "-r", str(tmp_path / f"{file.name}.before"), str(file)], check=True)
        before = (tmp_path / f"{file.name}.before").stat()
        assert file.stat().st_mtime_ns == before.st_mtime_ns
        assert layout != "text" or file.stat().st_size == before.st_size
    pairs = load_parallel(corpus, ("de", "en"))["train"]
    assert pairs["translation"] == [{"de": "Ein Hund lacht.", "en": "A dog eats."}, {"de": de[1], "en": en[1]}]
    again = tokenize(pairs, tokenizer, ("de", "en"))
    assert again["input_ids"][0] == tokenizer("Ein Hund lacht.")["input_ids"] != first["input_ids"][0]


def run_finetune_example(tmp_path: Path, model: Path, *extra: str) -> subprocess.CompletedProcess:
    """examples/finetune_translation.py for one update on four pairs, in a Python that has not imported the package."""
    rows = [{"translation": {"de": "Ein Hund rennt.", "en": "A dog runs."}}] * 4
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    args = ["--model_name_or_path", str(model), "--train_file", str(tmp_path / "train.jsonl"), "--output_dir",
            str(tmp_path / "finetuned"), "--max_steps", "1", "--report_to", "none", "--use_cpu", "--save_strategy",
            "no", *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    return subprocess.run([sys.executable, str(REPO / "examples/finetune_translation.py"), *args], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)


def test_finetune_example_runs_no_code_of_the_model_unless_asked(data_dir, tmp_path):
    # Issue 28, defect 6: the example defaulted to trust_remote_code=True, so a folder whose config.json maps the
    # model to its own .py ran that file as the user, unasked.
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    auto_map = {"AutoConfig": "hostile.Config", "AutoModelForSeq2SeqLM": "hostile.Model"}
    (hostile / "config.json").write_text(json.dumps({"model_type": "hostile_seq2seq", "auto_map": auto_map}))
    (hostile / "hostile.py").write_text(f"open({str(tmp_path / 'it-ran')!r}, 'w').close()\n")
    result = run_finetune_example(tmp_path, hostile)
    assert not (tmp_path / "it-ran").exists(), "the model's code ran"
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert (f"{hostile}: its config.json (model_type 'hostile_seq2seq') loads the model with Python files that come "
            "with it") in result.stderr and "pass --trust_remote_code True" in result.stderr

    # A folder of ours needs it too where the package is not imported; it says so before reading the data.
    ours = tiny_model_folder(data_dir, tmp_path / "ours", positions=48)
    result = run_finetune_example(tmp_path, ours)
    assert result.returncode == 1 and "model_type 'vanilla_transformer'" in result.stderr, result.stderr[-3000:]
    assert "pass --trust_remote_code True" in result.stderr and not (tmp_path / "finetuned").exists()
    result = run_finetune_example(tmp_path, ours, "--trust_remote_code", "True")  # as the example's docstring says
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "finetuned/model.safetensors").is_file()
