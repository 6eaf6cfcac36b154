"""`translate --input FILE --output FILE`: the output is the engine's translations line for line in input order; a
run killed with SIGKILL at any point and rerun gives the unbroken run's file; a line that is not UTF-8 is named and
left empty; a changed input or changed settings are refused on resuming; two processes of a launch write the file
one process writes; the CTranslate2 engine too."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import accelerate_launch, launch_env, tiny_model_folder
from transformers import AutoTokenizer

from vanilla_transformer import VanillaTransformerForConditionalGeneration
from vanilla_transformer.cli import main
from vanilla_transformer.evaluation import decoding_settings, length_batches, translate
from vanilla_transformer.file_translation import translate_file
from vanilla_transformer.streaming import one_line

WINDOW = 20
OPTIONS = ["--num-beams", "2", "--batch-size", "8", "--window", str(WINDOW)]
BAD_LINE = 131  # not UTF-8


@pytest.fixture(scope="module")
def model_dir(data_dir, tmp_path_factory):
    return tiny_model_folder(data_dir, tmp_path_factory.mktemp("model"), positions=64)


@pytest.fixture(scope="module")
def source(data_dir, tmp_path_factory):
    """300 lines of Multi30k val (German), a blank line, a line that is not UTF-8, and no newline at the end."""
    lines = (data_dir / "multi30k/val.de").read_bytes().split(b"\n")[:300]
    lines[99] = b""
    lines[BAD_LINE - 1] = b"Ein Hund \xff rennt."
    path = tmp_path_factory.mktemp("input") / "source.de"
    path.write_bytes(b"\n".join(lines))
    return path


def command(model_dir, source, output, *extra) -> list[str]:
    return [sys.executable, "-m", "vanilla_transformer.cli", "translate", str(model_dir), "--input", str(source),
            "--output", str(output), *OPTIONS, *extra]


def run(argv: list[str], **env) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, env={**os.environ, **env})


@pytest.fixture(scope="module")
def unbroken(model_dir, source, tmp_path_factory):
    """The output of a run that nothing stopped, and its stderr."""
    output = tmp_path_factory.mktemp("unbroken") / "out.en"
    result = run(command(model_dir, source, output))
    assert result.returncode == 1, result.stderr[-3000:]  # the line that is not UTF-8
    return output.read_bytes(), result.stderr


def test_the_output_is_the_engines_translations_window_by_window_in_input_order(unbroken, model_dir, source):
    output, stderr = unbroken
    model = VanillaTransformerForConditionalGeneration.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    lines = [raw.decode("utf-8", errors="replace") for raw in source.read_bytes().split(b"\n")]
    lines[BAD_LINE - 1] = ""
    expected = []
    for start in range(0, len(lines), WINDOW):
        expected += translate(model, tokenizer, lines[start : start + WINDOW], batch_size=8, progress=False,
                              **decoding_settings(2, 0.6))
    assert output.endswith(b"\n") and output.count(b"\n") == len(lines) == 300
    written = output.decode("utf-8").split("\n")[:-1]
    assert written == [one_line(text) for text in expected]
    assert written[99] == "" and written[BAD_LINE - 1] == ""
    assert f"{source} line {BAD_LINE}: not valid UTF-8 (byte 0xff at column 10)" in stderr
    assert f"1 line(s) not valid UTF-8 (line {BAD_LINE})" in stderr
    assert not (source.parent / "out.en.progress").exists()


def kill_when_done(argv: list[str], record, lines: int) -> None:
    """Start the command and SIGKILL it as soon as its progress record counts at least `lines` lines done."""
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while process.poll() is None:
            try:
                if json.loads(record.read_text())["lines_done"] >= lines:
                    break
            except (OSError, ValueError):  # not written yet
                pass
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it was killed: give it more to do"


def test_a_run_killed_at_several_points_resumes_into_the_unbroken_output(unbroken, model_dir, source, tmp_path):
    output = tmp_path / "out.en"
    record = tmp_path / "out.en.progress"
    argv = command(model_dir, source, output)
    for lines in (0, 60, 140, 240):  # 0: killed as soon as the record exists, maybe before the output does
        kill_when_done(argv, record, lines)
        assert record.exists() and (not output.exists() or output.stat().st_size < len(unbroken[0]))
    # What a kill after writing a window and before recording it leaves: bytes beyond the record, a half record.
    with output.open("ab") as file:
        file.write(b"half a window\nof lines")
    (tmp_path / "out.en.progress.tmp").write_text('{"lines_do')
    result = run(argv)
    assert result.returncode == 1, result.stderr[-3000:]
    assert output.read_bytes() == unbroken[0]
    assert f"1 line(s) not valid UTF-8 (line {BAD_LINE})" in result.stderr  # named in an earlier, killed run
    assert not record.exists()


def test_two_processes_of_a_launch_write_the_file_one_process_writes(model_dir, source, tmp_path):
    one, two = tmp_path / "one.en", tmp_path / "two.en"
    options = ["--window", "40"]  # 8 windows: the last round gives the second process none
    single = run(command(model_dir, source, one, *options), **launch_env())
    assert single.returncode == 1, single.stderr[-3000:]
    launch = accelerate_launch("-m", "vanilla_transformer.cli", "translate", str(model_dir), "--input", str(source),
                               "--output", str(two), *OPTIONS, *options)
    launched = subprocess.run(launch, env=launch_env(), capture_output=True, text=True, timeout=300)
    assert launched.returncode != 0 and f"line(s) not valid UTF-8 (line {BAD_LINE})" in launched.stderr
    assert two.read_bytes() == one.read_bytes()
    assert one.read_bytes().count(b"\n") == 300


def reverse_words(lines: list[str], first_line: int) -> list[str]:
    return [" ".join(reversed(line.split())) for line in lines]


def crash_after(windows: int):
    """A translate_lines that stops the run (as a kill would) when asked for window number `windows` + 1."""
    calls = []

    def translate_lines(lines: list[str], first_line: int) -> list[str]:
        calls.append(first_line)
        if len(calls) > windows:
            raise KeyboardInterrupt
        return reverse_words(lines, first_line)

    return translate_lines


def test_a_changed_input_or_changed_settings_are_refused_on_resuming(tmp_path, capsys):
    source, output = tmp_path / "in.txt", tmp_path / "out.txt"
    lines = [f"line {number} of the input" for number in range(1, 26)]
    source.write_text("\n".join(lines) + "\n")
    settings = {"model": "m", "num_beams": 4}
    with pytest.raises(KeyboardInterrupt):
        translate_file(crash_after(2), source, output, settings, window=10, progress=False)
    source.write_text("\n".join(lines[:-1] + ["another last line"]) + "\n")
    with pytest.raises(ValueError, match=f"{source} is not the input that .*out.txt.progress was started from"):
        translate_file(reverse_words, source, output, settings, window=10, progress=False)
    source.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="started with num_beams=4, not num_beams=1: rerun with the same options"):
        translate_file(reverse_words, source, output, {**settings, "num_beams": 1}, window=10, progress=False)
    assert output.read_text().splitlines() == reverse_words(lines[:20], 1)  # untouched by the refusals
    translate_file(reverse_words, source, output, settings, window=10, progress=False)
    assert output.read_text().splitlines() == reverse_words(lines, 1)
    with pytest.raises(FileExistsError, match="out.txt: already exists, .*pass --overwrite"):
        translate_file(reverse_words, source, output, settings, window=10, progress=False)
    translate_file(lambda lines, first: [line.upper() for line in lines], source, output, settings, window=10,
                   overwrite=True, progress=False)
    assert output.read_text().splitlines() == [line.upper() for line in lines]


def test_a_kill_between_the_first_record_and_the_outputs_creation_resumes(tmp_path):
    source, output = tmp_path / "in.txt", tmp_path / "out.txt"
    lines = [f"line {number}" for number in range(1, 16)]
    source.write_text("\n".join(lines) + "\n")
    with pytest.raises(KeyboardInterrupt):
        translate_file(crash_after(0), source, output, {}, window=10, progress=False)
    output.unlink()  # what a kill after the record's first save and before the output's creation leaves
    translate_file(reverse_words, source, output, {}, window=10, progress=False)
    assert output.read_text().splitlines() == reverse_words(lines, 1)


def test_windows_translated_at_the_same_time_are_written_in_order(tmp_path):
    source, output = tmp_path / "in.txt", tmp_path / "out.txt"
    lines = [f"line {number} of the input" for number in range(1, 60)]
    source.write_text("\n".join(lines) + "\n")
    finished = []

    def slow_first_windows(lines: list[str], first_line: int) -> list[str]:
        time.sleep(0.2 if first_line % 20 == 1 else 0)  # every other window ends after the one that follows it
        finished.append(first_line)
        return reverse_words(lines, first_line)

    translate_file(slow_first_windows, source, output, {}, window=10, progress=False, windows_at_once=2)
    assert finished != sorted(finished)
    assert output.read_text().splitlines() == reverse_words(lines, 1)


def test_the_command_refuses_a_finished_output_and_an_output_without_input(model_dir, source, tmp_path, capsys):
    output = tmp_path / "out.en"
    output.write_text("an earlier translation\n")
    argv = ["translate", model_dir, "--input", source, "--output", output]
    with pytest.raises(SystemExit) as exit_info:
        main([str(arg) for arg in argv])
    assert "out.en: already exists, with no out.en.progress beside it" in str(exit_info.value.code)
    with pytest.raises(SystemExit) as exit_info:
        main(["translate", str(model_dir), "--output", str(output), "Ein Satz."])
    assert "--input and --output go together" in str(exit_info.value.code)


def test_a_line_break_in_a_translation_is_written_as_a_space(tmp_path):
    source, output = tmp_path / "in.txt", tmp_path / "out.txt"
    source.write_text("a\nb\n")
    translate_file(lambda lines, first: [f"{line}\nx\u2028y" for line in lines], source, output, {}, window=10,
                   progress=False)
    assert output.read_text() == "a x y\nb x y\n"


@pytest.mark.parametrize("max_tokens", [1, 7, 30, 1000])
def test_token_batches_hold_at_most_max_tokens_with_padding(max_tokens):
    lengths = [3, 9, 1, 4, 4, 12, 2, 7, 7, 5]
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches = length_batches(order, lengths, batch_size=2, max_tokens=max_tokens)
    assert [i for batch in batches for i in batch] == order
    for batch in batches:
        padded = len(batch) * max(lengths[i] for i in batch)
        assert padded <= max_tokens or len(batch) == 1
    # Greedy: the next sentence would not have fitted.
    for batch, following in zip(batches, batches[1:]):
        assert (len(batch) + 1) * lengths[batch[0]] > max_tokens


def test_the_ctranslate2_engine_translates_the_file_as_it_translates_each_window(model_dir, source, tmp_path):
    pytest.importorskip("ctranslate2")
    from vanilla_transformer.engines import ctranslate2 as engine

    exported = engine.export(model_dir, tmp_path / "ct2")
    output = tmp_path / "out.en"
    options = ["--engine", "ctranslate2", "--max-tokens", "60", "--num-beams", "2", "--window", "50"]
    result = run([sys.executable, "-m", "vanilla_transformer.cli", "translate", str(exported), "--input",
                  str(source), "--output", str(output), *options])
    assert result.returncode == 1, result.stderr[-3000:]
    translator = engine.Translator(exported)
    lines = [raw.decode("utf-8", errors="replace") for raw in source.read_bytes().split(b"\n")]
    lines[BAD_LINE - 1] = ""
    expected = []
    for start in range(0, len(lines), 50):
        expected += translator.translate(lines[start : start + 50], num_beams=2, max_tokens=60, first_line=start + 1)
    assert output.read_text(encoding="utf-8").split("\n")[:-1] == [one_line(text) for text in expected]
