"""The command line's parts: every command module registered, standard input translated a batch at a time, the
engine switch, and the evaluate command's report."""

import importlib
import json
import pkgutil
from types import SimpleNamespace

import pytest
from huggingface_hub import ModelCard

from vanilla_transformer import commands
from vanilla_transformer.cli import COMMANDS, main
from vanilla_transformer.streaming import translate_stream
from vanilla_transformer.translators import line_translator


def test_every_command_module_is_a_registered_command(capsys):
    modules = [importlib.import_module(f"{commands.__name__}.{info.name}")
               for info in pkgutil.iter_modules(commands.__path__)]
    command_modules = {module for module in modules if hasattr(module, "run")}
    assert command_modules == set(COMMANDS)
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    listed = capsys.readouterr().out
    assert listed[listed.index("{") + 1 : listed.index("}")] == ",".join(command.NAME for command in COMMANDS)
    words = " ".join(listed.split())  # argparse wraps the help to the terminal
    assert all(f"{command.NAME} {command.HELP}" in words for command in COMMANDS)


def test_a_stream_is_translated_a_batch_at_a_time_and_an_undecodable_line_is_left_empty():
    read, calls, errors = [], [], []

    def raw_lines():
        for line in [b"ein\n", b"zwei \xff\n", b"drei\r\n", b"vier\n", b"fuenf"]:
            read.append(line)
            yield line

    def translate_lines(lines: list[str], first_line: int = 1) -> list[str]:
        calls.append((lines, first_line))
        return [line.upper() for line in lines]

    batches = translate_stream(translate_lines, raw_lines(), 2, "stdin", lambda number, error:
                               errors.append((number, str(error))))
    assert next(batches) == ["EIN", ""]
    assert len(read) == 2  # the first batch is out before the third line is read
    assert list(batches) == [["DREI", "VIER"], ["FUENF"]]
    assert [first_line for _, first_line in calls] == [1, 3, 5]
    assert errors == [(2, "stdin line 2: not valid UTF-8 (byte 0xff at column 6)")]


def test_an_unknown_engine_is_refused_by_name():
    with pytest.raises(ValueError, match="engine 'onnx': choose one of torch, ctranslate2"):
        line_translator("some/model", "onnx", num_beams=1, length_penalty=1.0, batch_size=8)


def test_the_evaluate_report_says_what_was_evaluated_and_how_fast(tmp_path, monkeypatch):
    from vanilla_transformer import evaluation_report

    clock = iter([10.0, 12.0])
    monkeypatch.setattr(evaluation_report, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    pairs = {"translation": [{"de": f"satz {i}", "en": f"the sentence number {i} here"} for i in range(3)]}
    report = evaluation_report.evaluate_and_report(
        lambda lines: ["the sentence number 0 here", "a sentence", "the sentence number 2 here"], pairs, "test",
        ("de", "en"), tmp_path, 4, 0.6, model="runs/x/model", engine="torch", data="data/multi30k")
    assert json.loads((tmp_path / "report.json").read_text(encoding="utf-8")) == report
    assert list(report)[:4] == ["model", "engine", "data", "direction"]
    assert report["direction"] == "de-en" and report["model"] == "runs/x/model"
    assert report["sentences"] == 3 and 0 < report["bleu"] < 100
    assert report["seconds"] == 2.0 and report["sentences_per_s"] == 1.5
    assert (tmp_path / "test.hyp.en").read_text(encoding="utf-8").splitlines()[1] == "a sentence"


def test_the_train_command_prints_the_summary_and_renders_the_model_card(small_corpus, tmp_path, capsys):
    from test_training import train_args

    main(train_args(small_corpus, tmp_path / "run", "training.max_steps=2", "training.save_steps=2"))
    printed = capsys.readouterr().out  # the trainer's log lines, then the summary
    summary = json.loads(printed[printed.rindex("\n{\n") :])
    assert summary["steps"] == 2 and "validation_bleu" not in summary
    card = ModelCard.load(tmp_path / "run/model/README.md")
    assert card.data.pipeline_tag == "translation" and f"{summary['parameters']:,}" in card.text
