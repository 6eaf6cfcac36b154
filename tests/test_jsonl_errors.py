"""A broken JSON-lines corpus through the command line: one error naming the file, the line and the field, before
anything in the run folder is written or deleted (issue 28, points 12 and 15)."""

import json
import logging
import sys

import pytest
from conftest import REPO, tiny_overrides
from test_cli_errors import cli_error

RECIPE = str(REPO / "configs/multi30k-de-en-small.yaml")


@pytest.fixture(autouse=True)
def datasets_logs_to_this_tests_stderr():
    """datasets' log handler keeps the stderr it first saw: an earlier test's capture, closed since."""
    for handler in logging.getLogger("datasets").handlers:
        handler.stream = sys.stderr


def rows(count: int) -> list[str]:
    return [json.dumps({"translation": {"de": f"Ein Hund rennt {i}.", "en": f"A dog runs {i}."}}) for i in range(count)]


def truncated(lines: list[str], number: int) -> list[str]:
    """The lines with line `number` cut mid-object, as a copy or a write that was interrupted leaves it."""
    lines[number - 1] = lines[number - 1][:30]
    return lines


def wrong_type(lines: list[str], number: int) -> list[str]:
    lines[number - 1] = json.dumps({"translation": {"de": 12345, "en": "A dog runs."}})
    return lines


def missing_side(lines: list[str], number: int) -> list[str]:
    lines[number - 1] = json.dumps({"translation": {"de": "Ein Hund rennt."}})
    return lines


@pytest.mark.parametrize("broken, number, expected", [
    (truncated, 151, "train.jsonl:151: not a complete JSON object (Unterminated string"),  # point 12, a middle line
    (truncated, 300, "train.jsonl:300: not a complete JSON object (Unterminated string"),  # point 12, the last line
    (wrong_type, 201, "train.jsonl:201: the 'de' of the translation is not text (12345)"),  # point 15: was ":1:"
    (missing_side, 201, "train.jsonl:201: no 'en' in the translation"),  # the row number was not the line's
])
def test_a_broken_jsonl_line_is_named_by_its_line(tmp_path, capsys, broken, number, expected):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    lines = broken(rows(300), number)
    lines.insert(10, "")  # a blank line: the readers skip it, so their row numbers are not the file's line numbers
    (corpus / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for split in ("val", "test2016"):
        (corpus / f"{split}.jsonl").write_text("\n".join(rows(5)) + "\n", encoding="utf-8")
    expected = expected.replace(f":{number}:", f":{number + 1}:")
    run = tmp_path / "run"  # an earlier run that --overwrite would replace once the data has loaded
    (run / "model").mkdir(parents=True)
    (run / "results.json").write_text("{}")
    before = sorted(path.relative_to(run) for path in run.rglob("*"))
    sets = [argument for override in tiny_overrides(corpus) for argument in ("--set", override)]
    for command in (["train", RECIPE, *sets, "--output-dir", run, "--overwrite"], ["prepare", RECIPE, *sets]):
        message = cli_error(capsys, *command)
        assert f"{corpus / 'train.jsonl'}:" in message and expected in message, message
    assert sorted(path.relative_to(run) for path in run.rglob("*")) == before
