"""n-best lists and forced-decoding scores (issue 33, point 3): the torch engine's scores against a plain forward
pass, both engines' against each other (1e-3 per token), the n-best list against the plain translation, the score
and translate --n-best commands, and bad input named."""

import json
import re

import pytest
import torch
from test_cli_errors import cli_error
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from vanilla_transformer.cli import main
from vanilla_transformer.modeling import GUARDS, generation_guards
from vanilla_transformer.scoring import Hypothesis, hypothesis_rows
from vanilla_transformer.translators import line_translator

PER_TOKEN = 1e-3  # the tolerance between the engines, per scored token


def pairs_of(memorized):
    """The learned pairs, mismatched ones (a poor score), an empty target and a source alone."""
    _, _, de, en = memorized
    return de + de[:4] + ["Ein Hund."], en + en[4:8] + [""]


def torch_engine(model_dir, num_beams=4, length_penalty=0.6, batch_size=5):
    return line_translator(str(model_dir), "torch", num_beams=num_beams, length_penalty=length_penalty,
                           batch_size=batch_size, device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def ct2_folder(memorized, tmp_path_factory):
    pytest.importorskip("ctranslate2")
    from vanilla_transformer.engines.ctranslate2 import export

    return export(memorized[0], tmp_path_factory.mktemp("ct2") / "model")


def ct2_engine(folder, num_beams=4, length_penalty=0.6, batch_size=5):
    return line_translator(str(folder), "ctranslate2", num_beams=num_beams, length_penalty=length_penalty,
                           batch_size=batch_size, device="cpu", compute_type="float32")


def plain_forward_scores(model_dir, sources, targets) -> list[tuple[float, int]]:
    """Each pair's summed log-probability and token count from a forward pass with labels, one pair at a time."""
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    scores = []
    for source, target in zip(sources, targets):
        labels = tokenizer(text_target=[target], return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = model(**tokenizer([source], return_tensors="pt"), labels=labels).logits
        scores.append((logits.log_softmax(-1).gather(-1, labels.unsqueeze(-1)).sum().item(), labels.shape[1]))
    return scores


def test_torch_scores_are_a_plain_forward_pass_with_labels(memorized):
    sources, targets = pairs_of(memorized)
    scores = torch_engine(memorized[0]).score(sources, targets)
    expected = plain_forward_scores(memorized[0], sources, targets)
    assert [s.tokens for s in scores] == [tokens for _, tokens in expected]
    for score, (log_prob, tokens) in zip(scores, expected):
        assert score.log_prob == pytest.approx(log_prob, rel=1e-6, abs=1e-4)  # float32 sums of up to -900
        assert score.per_token == pytest.approx(log_prob / tokens, abs=1e-5)
    learned, mismatched = [s.per_token for s in scores[:12]], [s.per_token for s in scores[12:16]]
    assert sum(learned) / 12 > sum(mismatched) / 4 + 1, "the learned pairs should score better than mismatched ones"
    assert scores[-1].tokens == 1  # the empty target: </s> alone


def test_the_engines_give_the_same_scores(memorized, ct2_folder):
    sources, targets = pairs_of(memorized)
    ours, theirs = torch_engine(memorized[0]).score(sources, targets), ct2_engine(ct2_folder).score(sources, targets)
    assert [s.tokens for s in ours] == [s.tokens for s in theirs]
    assert max(abs(a.log_prob - b.log_prob) / a.tokens for a, b in zip(ours, theirs)) < PER_TOKEN


@pytest.mark.parametrize("num_beams, k", [(4, 4), (1, 1)])
def test_n_best_is_ordered_and_led_by_the_translation(memorized, num_beams, k):
    model_dir, _, de, _ = memorized
    length_penalty = 0.6 if num_beams > 1 else 1.0
    engine = torch_engine(model_dir, num_beams, length_penalty)
    lines = de[:6] + ["", *de[6:]]
    n_best = engine.n_best(lines, k)
    assert n_best[6] == [] and all(len(hypotheses) == k for i, hypotheses in enumerate(n_best) if i != 6)
    assert [h[0].text if h else "" for h in n_best] == engine(lines)
    for hypotheses in n_best:
        scores = [h.score for h in hypotheses]
        assert scores == sorted(scores, reverse=True)
        for h in hypotheses:
            assert h.log_prob == pytest.approx(h.score * h.tokens**length_penalty, rel=1e-6)
    # Each best hypothesis's log-probability is its forced-decoding score (the same tokens, with </s>).
    best = [hypotheses[0] for hypotheses in n_best if hypotheses]
    forced = engine.score([line for line in lines if line.strip()], [h.text for h in best])
    assert sum(h.text != "" and h.tokens < 40 for h in best) >= 10, "the translations should end"
    for h, score in zip(best, forced):
        assert score.tokens == h.tokens
        assert abs(score.log_prob - h.log_prob) / h.tokens < PER_TOKEN


@pytest.mark.parametrize("num_beams, k", [(4, 3), (1, 1)])
def test_the_engines_give_the_same_n_best_lists(memorized, ct2_folder, num_beams, k):
    model_dir, _, de, _ = memorized
    length_penalty = 0.6 if num_beams > 1 else 1.0
    # The engine's n-best lists have no repetition guard (its hypotheses and scores stay its own): compared without.
    with generation_guards(**dict.fromkeys(GUARDS)):
        ours = torch_engine(model_dir, num_beams, length_penalty).n_best(de, k)
        theirs = ct2_engine(ct2_folder, num_beams, length_penalty).n_best(de, k)
    for our_list, their_list in zip(ours, theirs):
        assert [h.text for h in our_list] == [h.text for h in their_list]
        for a, b in zip(our_list, their_list):
            assert a.tokens == b.tokens
            assert abs(a.score - b.score) < PER_TOKEN
            assert abs(a.log_prob - b.log_prob) / a.tokens < PER_TOKEN


def test_n_best_wider_than_the_beam_is_refused(memorized, ct2_folder):
    for engine in (torch_engine(memorized[0], num_beams=2), ct2_engine(ct2_folder, num_beams=2)):
        with pytest.raises(ValueError, match="3 hypotheses need a beam of at least 3, not 2"):
            engine.n_best(["Ein Hund."], 3)


def write(path, lines):
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


@pytest.mark.parametrize("engine", ["torch", "ctranslate2"])
def test_score_command_writes_json_lines_and_tsv(memorized, ct2_folder, tmp_path, capsys, engine):
    sources, targets = pairs_of(memorized)
    source, target = write(tmp_path / "src.de", sources), write(tmp_path / "tgt.en", targets)
    folder = {"torch": memorized[0], "ctranslate2": ct2_folder}[engine]
    expected = plain_forward_scores(memorized[0], sources, targets)
    main(["score", str(folder), "--source", str(source), "--target", str(target), "--engine", engine,
          "--device", "cpu", "--batch-size", "4", "--output", str(tmp_path / "scores.jsonl")])
    rows = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [row["line"] for row in rows] == list(range(1, len(sources) + 1))
    for row, (log_prob, tokens) in zip(rows, expected):
        assert row["tokens"] == tokens and abs(row["log_prob"] - log_prob) / tokens < PER_TOKEN
        assert row["score"] == pytest.approx(row["log_prob"] / tokens)
    main(["score", str(folder), "--source", str(source), "--target", str(target), "--engine", engine,
          "--device", "cpu", "--format", "tsv"])
    tsv = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [[int(f[0]), float(f[1]), int(f[2]), float(f[3])] for f in tsv] == [
        [row["line"], pytest.approx(row["log_prob"], abs=1e-4), row["tokens"], pytest.approx(row["score"], abs=1e-4)]
        for row in rows]


@pytest.mark.parametrize("engine", ["torch", "ctranslate2"])
def test_translate_n_best_rows(memorized, ct2_folder, capsys, engine):
    model_dir, _, de, _ = memorized
    folder = {"torch": model_dir, "ctranslate2": ct2_folder}[engine]
    options = ["--engine", engine, "--device", "cpu", "--num-beams", "3"]
    main(["translate", str(folder), *de[:3], "", *options])
    translations = capsys.readouterr().out.splitlines()
    main(["translate", str(folder), *de[:3], "", *options, "--n-best", "2"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(row["line"], row["rank"]) for row in rows] == [(1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2), (4, 1)]
    assert [row["translation"] for row in rows if row["rank"] == 1] == translations
    assert rows[-1] == {"line": 4, "rank": 1, "translation": "", "score": None, "log_prob": None}
    main(["translate", str(folder), *de[:3], "", *options, "--n-best", "2", "--format", "tsv"])
    tsv = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [[int(f[0]), int(f[1]), f[4]] for f in tsv] == [[r["line"], r["rank"], r["translation"]] for r in rows]
    assert [float(f[2]) for f in tsv[:-1]] == [pytest.approx(r["score"]) for r in rows[:-1]]


def test_translate_n_best_on_stdin_names_an_undecodable_line(memorized, monkeypatch, capsys):
    import io
    import sys

    model_dir, _, de, _ = memorized
    stdin = io.TextIOWrapper(io.BytesIO(f"{de[0]}\n".encode() + b"\xff\n" + f"{de[1]}\n".encode()))
    monkeypatch.setattr(sys, "stdin", stdin)
    with pytest.raises(SystemExit) as exit_info:
        main(["translate", str(model_dir), "--device", "cpu", "--num-beams", "2", "--n-best", "2"])
    assert "1 line(s) not valid UTF-8 (line 2)" in str(exit_info.value.code)
    captured = capsys.readouterr()
    assert "stdin line 2: not valid UTF-8" in captured.err
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert [(row["line"], row["rank"], row["score"] is None) for row in rows] == [
        (1, 1, False), (1, 2, False), (2, 1, True), (3, 1, False), (3, 2, False)]


def test_a_pair_the_model_cannot_take_is_named_and_gets_a_row_without_a_score(memorized, tmp_path, capsys):  # noqa
    model_dir, _, de, en = memorized
    source = tmp_path / "src.de"
    source.write_bytes(f"{de[0]}\n".encode() + b"Ein \xff Hund.\n" + f"{de[2]}\n{de[3]}\n".encode())
    target = write(tmp_path / "tgt.en", [en[0], en[1], " ".join(["dog"] * 200), en[3]])
    message = cli_error(capsys, "score", model_dir, "--source", source, "--target", target, "--device", "cpu",
                        "--output", tmp_path / "scores.jsonl")
    assert f"{source}:2: not valid UTF-8 (byte 0xff at column 5)" in message
    assert re.search(rf"{re.escape(str(target))}:3: \d+ tokens with </s>, more than the model's 128 positions",
                     message)
    assert "2 of 4 pairs not scored (line 2, 3)" in message
    rows = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [row["score"] is None for row in rows] == [False, True, True, False]
    assert f"{target}:3" in rows[2]["error"]


def test_score_refuses_files_of_different_lengths_naming_both(memorized, tmp_path, capsys):
    model_dir, _, de, en = memorized
    source, target = write(tmp_path / "src.de", de[:5]), write(tmp_path / "tgt.en", en[:4])
    message = cli_error(capsys, "score", model_dir, "--source", source, "--target", target,
                        "--output", tmp_path / "scores.jsonl")
    assert f"{source} has 5 lines but {target} has 4" in message
    assert not (tmp_path / "scores.jsonl").exists()
    message = cli_error(capsys, "score", model_dir, "--source", tmp_path / "missing.de", "--target", target)
    assert f"{tmp_path / 'missing.de'}: no such file" in message
    target = write(tmp_path / "tgt.en", en[:5])
    message = cli_error(capsys, "score", model_dir, "--source", source, "--target", target, "--output", source)
    assert f"--output {source} is an input file" in message


@pytest.mark.parametrize("options, expected", [
    (["--n-best", "5"], "--n-best 5 needs --num-beams 5 or more, not 4"),
    (["--n-best", "0"], "argument --n-best: must be at least 1, not 0"),
    (["--format", "tsv"], "--format is the output of --n-best, which was not given"),
    (["--n-best", "2", "--input", "in.txt", "--output", "out.txt"], "--n-best writes to standard output"),
])
def test_translate_refuses_n_best_options_it_cannot_honour(tmp_path, capsys, options, expected):
    assert expected in cli_error(capsys, "translate", tmp_path / "no-model", "Ein Hund.", *options)


def test_tsv_rows_keep_one_row_of_five_fields_whatever_the_text():
    rows = hypothesis_rows(7, [Hypothesis("a\tb\nc", -1.5, -3.0, 4)], "tsv")
    assert rows == ["7\t1\t-1.5\t-3.0\ta b c"]
