"""Training: data loading errors, token batches, the schedule, averaging, runs, resume, and two processes."""

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, accelerate_launch, launch_env, tiny_overrides, tiny_recipe, write_pairs
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from vanilla_transformer.corpus import CorpusError
from vanilla_transformer.hub.card import render_card
from vanilla_transformer.training.average import average_checkpoints
from vanilla_transformer.training.batching import TokenBatchSampler
from vanilla_transformer.training.data import load_parallel
from vanilla_transformer.training.recipe import load_recipe
from vanilla_transformer.training.run import train
from vanilla_transformer.training.schedule import noam_lr, noam_scheduler


def train_args(corpus: Path, out: Path, *extra: str) -> list[str]:
    """Arguments of `vanilla-transformer train` for the tiny recipe, logging every batch."""
    args = ["train", str(REPO / "configs/multi30k-de-en-small.yaml"), "--output-dir", str(out)]
    for override in tiny_overrides(corpus) + ["training.eval_steps=1000", "training.log_batches=true",
                                              "data.test=null", *extra]:
        args += ["--set", override]
    return args


def test_tiny_run_learns_and_writes_the_run_folder(small_corpus, tmp_path):
    results = train(tiny_recipe(small_corpus, tmp_path / "run", "average_last=2"))
    lines = (tmp_path / "run/log.csv").read_text().splitlines()
    header = lines[0].split(",")
    losses = [float(row.split(",")[header.index("loss")]) for row in lines[1:] if row.split(",")[header.index("loss")]]
    assert losses[-1] < losses[0] - 1.0, losses
    assert (tmp_path / "run/checkpoint-40").is_dir() and (tmp_path / "run/model/model.safetensors").is_file()
    assert (tmp_path / "run/curves.png").stat().st_size > 10_000
    assert results.averaged_checkpoints == ["checkpoint-20", "checkpoint-40"]
    assert 0 <= results.test.bleu <= 100 and results.test.bleu_signature.startswith("nrefs:1|case:mixed")
    assert [e["step"] for e in results.validation_bleu] == [20, 40]
    saved = json.loads((tmp_path / "run/results.json").read_text())
    assert saved["test"] == dataclasses.asdict(results.test)
    hypotheses = (tmp_path / "run/test2016.hyp.en").read_text().splitlines()
    assert len(hypotheses) == results.test.sentences == 40
    assert results.test.examples[0]["translation"] == hypotheses[0]
    assert results.test.examples[0]["source"] == (small_corpus / "test2016.de").read_text().splitlines()[0]
    # The model card, rendered as the train command does after train(): Hub metadata whose model-index holds this
    # run's measured scores, and the run's figures in the text.
    render_card(tmp_path / "run")
    card = ModelCard.load(tmp_path / "run/model/README.md")
    assert card.data.pipeline_tag == "translation" and card.data.language == ["de", "en"]
    bleu = next(r for r in card.data.eval_results if r.metric_type == "bleu")
    assert bleu.metric_value == round(results.test.bleu, 2) and bleu.dataset_split == "test2016"
    assert f"| {round(results.test.bleu, 2)} |" in card.text
    assert "label smoothing 0.1" in card.text and "`modeling.py`" in card.text and "`corpus.py`" not in card.text


def train_command(corpus: Path, out: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "vanilla_transformer.cli", *train_args(corpus, out, *overrides)]


def test_a_new_run_does_not_mix_with_an_earlier_one_in_its_folder(small_corpus, tmp_path):
    (tmp_path / "run/checkpoint-500").mkdir(parents=True)
    with pytest.raises(FileExistsError, match=r"run holds an earlier run \(checkpoint-500, ...\): pass --resume"):
        train(tiny_recipe(small_corpus, tmp_path / "run"))
    results = train(tiny_recipe(small_corpus, tmp_path / "run", "training.max_steps=4", "training.save_steps=2",
                                "average_last=5", "data.test=null"), overwrite=True)
    assert results.averaged_checkpoints == ["checkpoint-2", "checkpoint-4"]


def complete_json(path: Path) -> bool:
    """Whether the file exists and holds a whole JSON document (not one still being written)."""
    try:
        json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return False
    return True


def test_killed_and_resumed_run_equals_an_uninterrupted_one(small_corpus, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(train_command(small_corpus, tmp_path / "straight", "training.max_steps=40"), env=env, check=True,
                   capture_output=True, timeout=600)

    # The same run, killed (SIGKILL) once its checkpoint at update 20 is complete, then resumed.
    killed = subprocess.Popen(train_command(small_corpus, tmp_path / "resumed", "training.max_steps=40"), env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / "resumed/checkpoint-20/trainer_state.json"  # written last in a checkpoint
    deadline = time.monotonic() + 600
    while not complete_json(state) and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    killed.kill()
    killed.wait()
    assert state.is_file() and not (tmp_path / "resumed/checkpoint-40").exists()
    lines_before = len((tmp_path / "resumed/batches-rank0.jsonl").read_text().splitlines())
    subprocess.run(train_command(small_corpus, tmp_path / "resumed", "training.max_steps=40") + ["--resume"],
                   env=env, check=True, capture_output=True, timeout=600)

    straight = load_file(tmp_path / "straight/checkpoint-40/model.safetensors")
    resumed = load_file(tmp_path / "resumed/checkpoint-40/model.safetensors")
    assert straight.keys() == resumed.keys()
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], atol=1e-6, rtol=0)

    # The data order continues where it stopped rather than starting the epoch again. (The logs hold every
    # collated batch, including one the loader fetched ahead of the kill, so compare the batches trained on.)
    straight_batches = (tmp_path / "straight/batches-rank0.jsonl").read_text().splitlines()
    resumed_batches = (tmp_path / "resumed/batches-rank0.jsonl").read_text().splitlines()
    after_resume = resumed_batches[lines_before:]
    assert resumed_batches[:20] + after_resume[:20] == straight_batches[:40]


def test_time_budget_ends_training_before_the_update_that_would_pass_it(monkeypatch):
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from vanilla_transformer.training import trainer as trainer_module

    clock = [100.0]
    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: clock[0])
    args = TrainingArguments(output_dir="unused", use_cpu=True, report_to=[])

    def steps_until_stopped(seconds_before=0.0, seconds_per_update=2.0):
        callback = trainer_module.TimeBudget(max_minutes=1.0)
        state, control = TrainerState(max_steps=1000), TrainerControl()
        # What a checkpoint's trainer_state.json brings back on resume.
        state.stateful_callbacks = {"TimeBudget": {"args": {}, "attributes": {"seconds_before": seconds_before}}}
        callback.on_train_begin(args, state, control)
        while not control.should_training_stop:
            clock[0] += seconds_per_update
            state.global_step += 1
            control = callback.on_step_end(args, state, control)
        assert control.should_save and control.should_evaluate  # a checkpoint and a validation score at the end
        return state.global_step, callback.state()

    # 2 s per update in 60 s: the 30th update ends at 60 s, the 31st would pass the budget.
    steps, saved = steps_until_stopped()
    assert steps == 30 and saved == {"args": {"max_minutes": 1.0}, "attributes": {"seconds_before": 60.0}}
    # Resumed after 40 s of training (recorded in the checkpoint): 20 s are left.
    steps, saved = steps_until_stopped(seconds_before=40.0)
    assert steps == 10 and saved["attributes"]["seconds_before"] == 60.0


def test_time_budget_run_stops_with_a_checkpoint_and_an_evaluation(small_corpus, tmp_path):
    results = train(tiny_recipe(small_corpus, tmp_path / "run", "training.max_minutes=0.0001", "data.test=null"))
    assert results.steps == 1 and (tmp_path / "run/checkpoint-1").is_dir()
    assert [e["step"] for e in results.validation_bleu] == [1]
    state = json.loads((tmp_path / "run/checkpoint-1/trainer_state.json").read_text())
    assert state["stateful_callbacks"]["TimeBudget"]["attributes"]["seconds_before"] > 0


def test_two_processes_see_disjoint_batches(small_corpus, tmp_path):
    command = accelerate_launch("-m", "vanilla_transformer.cli",
                                *train_args(small_corpus, tmp_path / "ddp", "training.max_steps=12",
                                            "training.save_steps=12"))
    result = subprocess.run(command, env=launch_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [[json.loads(line) for line in (tmp_path / f"ddp/batches-rank{r}.jsonl").read_text().splitlines()]
             for r in (0, 1)]
    # Each rank trained on 12 batches (its log may hold one more, fetched ahead by the loader).
    assert len(ranks[0]) == len(ranks[1]) >= 12
    seen = [{i for batch in rank[:12] for i in batch} for rank in ranks]
    assert not seen[0] & seen[1]
    assert (tmp_path / "ddp/model/model.safetensors").is_file()
    # The main process prepared the data first; the other one found the tokenizer and the token ids in the caches.
    rank1 = {phase["name"]: phase for phase in json.loads((tmp_path / "ddp/data-rank1.json").read_text())}
    assert rank1["tokenizer"]["cached"] and rank1["tokenize train"]["cached"]


def test_schedule_is_the_papers_formula():
    d_model, warmup = 512, 4000
    for step in (1, warmup, 10 * warmup):
        expected = d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)
        assert noam_lr(step, d_model, warmup) == pytest.approx(expected)
    assert noam_lr(warmup, d_model, warmup) == pytest.approx(512**-0.5 * 4000**-0.5)  # the peak
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([parameter], lr=d_model**-0.5)
    scheduler = noam_scheduler(optimizer, warmup)
    for step in range(1, 10 * warmup + 1):
        if step in (1, warmup, 10 * warmup):
            assert optimizer.param_groups[0]["lr"] == pytest.approx(noam_lr(step, d_model, warmup))
        optimizer.step()
        scheduler.step()


def test_token_batches_respect_the_budget_and_cover_every_example_once():
    generator = torch.Generator().manual_seed(0)
    src = torch.randint(1, 60, (1000,), generator=generator).tolist()
    tgt = torch.randint(1, 60, (1000,), generator=generator).tolist()
    sampler = TokenBatchSampler(src, tgt, max_tokens=300, seed=3)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert sorted(i for b in batches for i in b) == list(range(1000))
        for batch in batches:
            assert len(batch) * max(max(src[i], tgt[i]) for i in batch) <= 300
    sampler.set_epoch(0)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0)
    assert list(sampler) == first, "an epoch's order must be reproducible"
    assert list(TokenBatchSampler(src, tgt, max_tokens=300, seed=3)) == first
    assert 0 < sampler.padding_fraction() < 0.5
    with pytest.raises(ValueError, match="example 0 has 500 tokens, more than max_tokens=300"):
        TokenBatchSampler([500, 3], [4, 3], max_tokens=300)


def test_averaging_two_checkpoints_is_the_elementwise_mean(tmp_path):
    from conftest import tiny_model

    first, second = tiny_model(seed=1), tiny_model(seed=2)
    first.save_pretrained(tmp_path / "a")
    second.save_pretrained(tmp_path / "b")
    averaged = average_checkpoints([tmp_path / "a", tmp_path / "b"], tmp_path / "mean")
    for (name, a), b, m in zip(first.state_dict().items(), second.state_dict().values(),
                               averaged.state_dict().values()):
        torch.testing.assert_close(m, (a + b) / 2, msg=name)
    reloaded = load_file(tmp_path / "mean/model.safetensors")
    torch.testing.assert_close(reloaded["lm_head.weight"] if "lm_head.weight" in reloaded else
                               reloaded["model.shared.weight"],
                               (first.model.shared.weight + second.model.shared.weight) / 2)


def test_loss_is_label_smoothed_and_normalised_by_the_tokens_of_the_whole_update():
    from conftest import random_batch, tiny_model

    from vanilla_transformer.training.trainer import LabelSmoothedLoss

    model = tiny_model()
    src, labels = random_batch(2, 5), random_batch(2, 4, seed=1)
    labels[1, 2:] = -100
    outputs = model(input_ids=src, decoder_input_ids=model.prepare_decoder_input_ids_from_labels(labels))
    loss = LabelSmoothedLoss(0.2)
    mean = loss(outputs, labels)
    expected = F.cross_entropy(outputs.logits.flatten(0, 1), labels.flatten(), label_smoothing=0.2)
    torch.testing.assert_close(mean, expected)
    torch.testing.assert_close(loss(outputs, labels, num_items_in_batch=torch.tensor(12)), mean * 6 / 12)


def test_the_trainer_takes_the_recipes_label_smoothing_and_the_updates_tokens(small_corpus, tmp_path):
    import datasets
    from conftest import random_batch, tiny_model

    from vanilla_transformer.training.run import training_arguments
    from vanilla_transformer.training.trainer import TranslationTrainer

    recipe = tiny_recipe(small_corpus, tmp_path / "run", "training.label_smoothing=0.3")
    model = tiny_model()
    src, labels = random_batch(4, 5), random_batch(4, 4, seed=1)
    labels[1, 3:] = -100
    pairs = datasets.Dataset.from_dict({"input_ids": src.tolist(), "labels": labels.tolist()})
    trainer = TranslationTrainer(model=model, args=training_arguments(recipe, model.config.d_model),
                                 train_dataset=pairs, eval_dataset=pairs, micro_batch_tokens=600, warmup_steps=20)
    batches = [{"input_ids": src[rows], "attention_mask": torch.ones_like(src[rows]), "labels": labels[rows],
                "decoder_input_ids": model.prepare_decoder_input_ids_from_labels(labels[rows])}
               for rows in (slice(0, 2), slice(2, 4))]
    # The two batches of one update: each one's loss is its share of the update's target tokens.
    _, num_items_in_batch = trainer.get_batch_samples(iter(batches), 2, torch.device("cpu"))
    assert int(num_items_in_batch) == int((labels != -100).sum()) == 15
    loss = trainer.compute_loss(model, dict(batches[0]), num_items_in_batch=num_items_in_batch)
    logits = model(input_ids=src[:2], decoder_input_ids=batches[0]["decoder_input_ids"]).logits
    summed = F.cross_entropy(logits.flatten(0, 1), labels[:2].flatten(), label_smoothing=0.3, reduction="sum")
    torch.testing.assert_close(loss, summed / 15)


def test_old_recipes_label_smoothing_moves_to_training(caplog):
    recipe = load_recipe(REPO / "configs/multi30k-de-en-small.yaml", ["model.overrides={label_smoothing: 0.2}"])
    assert recipe.training.label_smoothing == 0.2 and "label_smoothing" not in recipe.model.overrides
    assert "model.overrides.label_smoothing=0.2 is a training setting now" in caplog.text
    assert load_recipe(REPO / "configs/multi30k-de-en-small.yaml").training.label_smoothing == 0.1
    with pytest.raises(ValueError, match="training.label_smoothing are both set"):
        load_recipe(REPO / "configs/multi30k-de-en-small.yaml",
                    ["model.overrides={label_smoothing: 0.2}", "training.label_smoothing=0.1"])
    with pytest.raises(ValueError, match=r"training.label_smoothing=1.0: must be in \[0, 1\)"):
        load_recipe(REPO / "configs/multi30k-de-en-small.yaml", ["training.label_smoothing=1.0"])


@pytest.mark.parametrize(
    "files, message",
    [
        ({"train.de": "a\nb\nc\n", "train.en": "a\nb\n"}, r"train.de has 3 lines but .*train.en has 2"),
        ({"train.de": "a\n\nc\n", "train.en": "a\nb\nc\n"}, r"train.de:2: empty line"),
        ({"train.de": b"a\nb\xfc\n", "train.en": "a\nb\n"}, r"train.de:2: not valid UTF-8"),
        ({"train.de": "a\n", "train.fr": "a\n"}, r"train.en: no such file \(language 'en' is missing"),
        ({"notes.txt": "a\n"}, r"no SPLIT.de/SPLIT.en"),
        ({"train.jsonl": '{"translation": {"de": "a", "en": "b"}}\n{"translation": {"de": "c"}}\n'},
         r"train.jsonl:2: no 'en' in the translation"),
        ({"train.jsonl": '{"translation": {"de": "a", "en": "b"}}\n' * 2 + '{"translation": null}\n'},
         r"train.jsonl:3: no 'de' in the translation"),
        ({"train.jsonl": '{"translation": {"de": 1, "en": "b"}}\n'}, r"train.jsonl:1: the 'de' .* is int64, not text"),
    ],
)
def test_data_errors_name_the_file_and_line(tmp_path, files, message):
    for name, content in files.items():
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    with pytest.raises(CorpusError, match=message):
        load_parallel(tmp_path, ("de", "en"), splits=None)


def test_missing_language_file_is_named(tmp_path):
    write_pairs(tmp_path, "train", ["a"], ["b"])
    (tmp_path / "train.en").unlink()
    with pytest.raises(CorpusError, match=r"train.en: no such file \(language 'en' is missing"):
        load_parallel(tmp_path, ("de", "en"), splits=["train"])


def test_local_parquet_in_the_hub_schema_loads_like_a_hub_dataset(tmp_path):
    import datasets

    rows = {"translation": [{"de": "Ein Hund.", "en": "A dog."}, {"de": "Zwei Katzen.", "en": "Two cats."}]}
    datasets.Dataset.from_dict(rows).to_parquet(str(tmp_path / "train.parquet"))
    loaded = load_parallel(tmp_path, ("de", "en"))
    assert loaded["train"]["translation"] == rows["translation"]
    # The Hub path: datasets.load_dataset on a folder laid out like a Hub dataset repo (wmt/wmt14 has this schema).
    hub_repo = tmp_path / "hub" / "data"
    hub_repo.mkdir(parents=True)
    datasets.Dataset.from_dict(rows).to_parquet(str(hub_repo / "train-00000-of-00001.parquet"))
    datasets.Dataset.from_dict(rows).to_parquet(str(hub_repo / "validation-00000-of-00001.parquet"))
    from_hub = load_parallel(str(tmp_path / "hub"), ("de", "en"), splits=["train", "validation"])
    assert from_hub["validation"]["translation"] == rows["translation"]
    with pytest.raises(CorpusError, match="no split 'test'"):
        load_parallel(str(tmp_path / "hub"), ("de", "en"), splits=["test"])
    with pytest.raises(CorpusError, match=r"hub\[train\]:1: no 'fr' in the translation"):
        load_parallel(str(tmp_path / "hub"), ("de", "fr"), splits=["train"])


def test_json_lines_whose_rows_differ_in_their_keys_load_and_tokenise_as_pairs(tmp_path):
    # datasets stores such a column as JSON text, which the tokenising (Arrow struct fields) could not read.
    from vanilla_transformer import train_tokenizer
    from vanilla_transformer.training.data import tokenize

    rows = [{"de": "Ein Hund.", "en": "A dog."}, {"de": "Zwei Katzen.", "en": "Two cats.", "fr": "Deux chats."}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"translation": row}) + "\n" for row in rows))
    loaded = load_parallel(tmp_path, ("de", "en"))["train"]
    assert loaded["translation"] == [{"de": row["de"], "en": row["en"]} for row in rows]
    tokenizer = train_tokenizer(texts=[text for row in rows for text in row.values()], vocab_size=300,
                                show_progress=False)
    tokenized = tokenize(loaded, tokenizer, ("de", "en"))
    assert tokenized["labels"] == tokenizer([row["en"] for row in rows])["input_ids"]


def test_empty_pairs_are_dropped_when_asked(tmp_path):
    write_pairs(tmp_path, "train", ["a", "", "c"], ["x", "y", "z"])
    loaded = load_parallel(tmp_path, ("de", "en"), drop_empty=True)
    assert [p["de"] for p in loaded["train"]["translation"]] == ["a", "c"]


def test_recipe_overrides_and_unknown_keys(tmp_path):
    recipe = load_recipe(REPO / "configs/multi30k-de-en-small.yaml", ["training.max_steps=7", "model.preset=tiny"])
    assert recipe.training.max_steps == 7 and recipe.model.preset == "tiny" and recipe.data.src == "de"
    with pytest.raises(ValueError, match=r"recipe.training: unknown key\(s\) \['max_stepz'\]"):
        load_recipe(REPO / "configs/multi30k-de-en-small.yaml", ["training.max_stepz=7"])
    for path in sorted((REPO / "configs").glob("*.yaml")):
        assert load_recipe(path).name == path.stem
    assert load_recipe(REPO / "configs/wmt14-en-de-base.yaml").training.update_tokens == 25000


def test_finetune_example_continues_training_through_remote_code(small_corpus, tmp_path):
    from conftest import tiny_model

    from vanilla_transformer import train_tokenizer

    tokenizer = train_tokenizer([small_corpus / "train.de", small_corpus / "train.en"], vocab_size=400,
                                show_progress=False)
    model = tiny_model(vocab_size=len(tokenizer), max_position_embeddings=256)
    model.save_pretrained(tmp_path / "saved")
    tokenizer.save_pretrained(tmp_path / "saved")
    for split, source in (("train", "train"), ("val", "val")):
        de = (small_corpus / f"{source}.de").read_text(encoding="utf-8").splitlines()[:64]
        en = (small_corpus / f"{source}.en").read_text(encoding="utf-8").splitlines()[:64]
        rows = [json.dumps({"translation": {"de": d, "en": e}}, ensure_ascii=False) for d, e in zip(de, en)]
        (tmp_path / f"{split}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")

    args = [
        "--model_name_or_path", str(tmp_path / "saved"), "--train_file", str(tmp_path / "train.jsonl"),
        "--validation_file", str(tmp_path / "val.jsonl"), "--output_dir", str(tmp_path / "finetuned"),
        "--max_steps", "6", "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "32",
        "--learning_rate", "1e-3", "--predict_with_generate", "--generation_num_beams", "2",
        "--generation_max_length", "40", "--report_to", "none", "--use_cpu", "--save_strategy", "no",
        "--trust_remote_code", "True",  # the model's code runs only when asked
    ]
    script = (
        "import runpy, sys\n"
        f"sys.argv = ['finetune_translation.py'] + {args!r}\n"
        f"runpy.run_path({str(REPO / 'examples/finetune_translation.py')!r}, run_name='__main__')\n"
        "assert 'vanilla_transformer' not in sys.modules, 'the example must not need the package'\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "finetuned/all_results.json").read_text())
    assert 0 <= metrics["eval_bleu"] <= 100 and metrics["train_loss"] > 0
    before = load_file(tmp_path / "saved/model.safetensors")
    after = load_file(tmp_path / "finetuned/model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_tokenised_data_is_cached_across_runs(small_corpus, tmp_path):
    from transformers import AutoTokenizer

    from vanilla_transformer import train_tokenizer
    from vanilla_transformer.training.data import tokenize

    train_tokenizer([small_corpus / "train.de", small_corpus / "train.en"], vocab_size=400,
                    show_progress=False).save_pretrained(tmp_path / "tok")
    files = []
    for _ in range(2):  # two runs: the data and the tokenizer loaded anew each time
        pairs = load_parallel(small_corpus, ("de", "en"), splits=["val"])["val"]
        tokenized = tokenize(pairs, AutoTokenizer.from_pretrained(tmp_path / "tok"), ("de", "en"))
        files.append(tokenized.cache_files[0]["filename"])
    assert files[0] == files[1] and Path(files[0]).is_file()


def test_results_written_by_earlier_versions_still_load(tmp_path):
    from vanilla_transformer.results import RunResults

    old = {"recipe": "r", "direction": "de-en", "parameters": 10, "train_pairs": 5, "cleaning": {"kept": 5},
           "padding_fraction": 0.1, "steps": 3, "train_seconds": 1.0, "averaged_checkpoints": [],
           "best_checkpoint": "runs/r/checkpoint-2", "best_validation_bleu": 1.0, "validation_bleu": [],
           "machine": "m", "test": {"split": "t", "sentences": 1, "num_beams": 4, "length_penalty": 0.6, "bleu": 1.0,
                                    "chrf": 2.0, "bleu_signature": "b", "chrf_signature": "c", "examples": []}}
    (tmp_path / "results.json").write_text(json.dumps(old))
    results = RunResults.load(tmp_path / "results.json")
    assert (results.src, results.tgt, results.direction, results.test.chrf) == ("de", "en", "de-en", 2.0)
    (tmp_path / "results.json").write_text('{"recipe": ')
    with pytest.raises(ValueError, match=r"results.json: not valid JSON"):
        RunResults.load(tmp_path / "results.json")


def test_time_budget_progress_bar_counts_the_budget_not_the_updates(monkeypatch, capsys):
    # A 38-minute run of the demo recipe planned 7,500 updates and its bar showed a 1-hour ETA: the bar of a run on
    # a budget fills with the budget's seconds, the update count beside it.
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from vanilla_transformer.training import trainer as trainer_module

    clock = [0.0]
    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: clock[0])
    args = TrainingArguments(output_dir="unused", use_cpu=True, report_to=[])
    budget = trainer_module.TimeBudget(max_minutes=1.0)
    bar = trainer_module.BudgetProgress(budget)
    state, control = TrainerState(max_steps=7500), TrainerControl()
    state.stateful_callbacks = {"TimeBudget": {"args": {}, "attributes": {"seconds_before": 15.0}}}  # resumed
    for callback in (budget, bar):
        callback.on_train_begin(args, state, control)
    for _ in range(10):  # 3 s per update from 15 s on
        clock[0] += 3
        state.global_step += 1
        for callback in (budget, bar):
            control = callback.on_step_end(args, state, control) or control
    assert bar.training_bar.total == 60 and bar.training_bar.n == pytest.approx(45)
    assert bar.training_bar.postfix == "update 10"
    bar.training_bar.refresh()
    assert "45/60 s of training.max_minutes" in capsys.readouterr().err


def test_trainer_on_a_budget_shows_the_budget_bar(tmp_path):
    from conftest import tiny_model
    from transformers import Seq2SeqTrainingArguments
    from transformers.trainer_callback import ProgressCallback

    from vanilla_transformer.training.trainer import BudgetProgress, TranslationTrainer

    def progress_bars(max_minutes):
        args = Seq2SeqTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], disable_tqdm=False)
        trainer = TranslationTrainer(model=tiny_model(), args=args, micro_batch_tokens=100, warmup_steps=10,
                                     max_minutes=max_minutes)
        return [type(cb) for cb in trainer.callback_handler.callbacks if isinstance(cb, ProgressCallback)]

    assert progress_bars(38) == [BudgetProgress] and progress_bars(None) == [ProgressCallback]


def test_token_batches_are_greedy_packing_of_the_seeded_length_order():
    # An independent statement of the sampler: examples sorted by (target, source) length with ties in the seed's
    # random order, then taken greedily while count x largest size fits max_tokens.
    generator = torch.Generator().manual_seed(1)
    for max_tokens in (60, 300, 1000):
        src = torch.randint(1, 60, (2000,), generator=generator).tolist()
        tgt = torch.randint(1, 60, (2000,), generator=generator).tolist()
        rank = torch.randperm(2000, generator=torch.Generator().manual_seed(5)).argsort().tolist()
        order = sorted(range(2000), key=lambda i: (tgt[i], src[i], rank[i]))
        expected, batch = [], []
        for i in order:
            if batch and (len(batch) + 1) * max(max(src[j], tgt[j]) for j in batch + [i]) > max_tokens:
                expected.append(batch)
                batch = []
            batch.append(i)
        expected.append(batch)
        sampler = TokenBatchSampler(src, tgt, max_tokens=max_tokens, seed=5, shuffle=False)
        assert list(sampler) == expected


def test_token_batches_hold_a_few_bytes_per_example():
    import tracemalloc

    import numpy as np

    lengths = np.random.default_rng(0).integers(1, 100, 200_000)
    tracemalloc.start()
    sampler = TokenBatchSampler(lengths, lengths[::-1].copy(), max_tokens=4000, seed=0)
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    # Two int32 lengths and an int32 position per example, and the batch starts: lists of Python ints took ~40.
    assert held / len(lengths) < 16, held / len(lengths)
    assert len(sampler) > 1000


def test_budget_schedule_warms_up_as_noam_then_declines_to_its_floor_at_the_end(monkeypatch):
    from conftest import tiny_model
    from transformers import Seq2SeqTrainingArguments, TrainerControl, TrainerState

    from vanilla_transformer.training import trainer as trainer_module
    from vanilla_transformer.training.schedule import budget_factor, noam_factor
    from vanilla_transformer.training.trainer import TranslationTrainer

    # The formula: Noam's ramp, then a straight line from its peak to final_fraction x peak over the progress.
    warmup, peak = 100, 100**-0.5
    assert budget_factor(50, warmup, 0.01, 0.1) == noam_factor(50, warmup)
    assert budget_factor(100, warmup, 0.5, 0.1) == pytest.approx(peak * 0.55)
    assert budget_factor(5000, warmup, 1.0, 0.1) == budget_factor(5000, warmup, 3.0, 0.1) == pytest.approx(peak * 0.1)

    # Through the trainer, on a 1-minute budget at 0.5 s per update (mocked clock): the rate is read at each update.
    clock = [0.0]
    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: clock[0])
    args = Seq2SeqTrainingArguments(output_dir="unused", use_cpu=True, report_to=[], learning_rate=1.0)
    trainer = TranslationTrainer(model=tiny_model(), args=args, micro_batch_tokens=100, warmup_steps=10,
                                 max_minutes=1.0, schedule="budget", final_lr_fraction=0.1)
    trainer.create_optimizer_and_scheduler(num_training_steps=10_000)
    budget, state = trainer.time_budget, TrainerState(max_steps=10_000)
    budget.on_train_begin(args, state, TrainerControl())
    rates = []
    for step in range(1, 121):
        clock[0] += 0.5
        trainer.optimizer.step()  # no gradients: nothing changes but the order torch expects
        trainer.lr_scheduler.step()
        rates.append(trainer.lr_scheduler.get_last_lr()[0])
    assert rates[:5] == pytest.approx([noam_factor(s + 1, 10) for s in range(1, 6)])  # the warmup
    assert rates[59] == pytest.approx(10**-0.5 * (1 - 0.9 * 0.5))  # half the minute spent
    assert rates[119] == pytest.approx(10**-0.5 * 0.1)  # the floor at the budget's end
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))  # declining after the warmup


def test_budget_schedule_is_a_recipe_choice(small_corpus, tmp_path):
    with pytest.raises(ValueError, match="training.schedule"):
        tiny_recipe(small_corpus, tmp_path / "a", "training.schedule=cosine")
    with pytest.raises(ValueError, match="training.final_lr_fraction"):
        tiny_recipe(small_corpus, tmp_path / "b", "training.final_lr_fraction=1.5")
    recipe = tiny_recipe(small_corpus, tmp_path / "c", "training.schedule=budget")
    assert recipe.training.schedule == "budget" and recipe.training.final_lr_fraction == 0.05
