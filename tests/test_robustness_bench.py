"""benchmarks/bench_robustness.py (issue 31): the variant makers, the degeneration detectors, and the script end to
end on a tiny model."""

import json
import subprocess
import sys

import pytest
import sacrebleu
from conftest import REPO, tiny_model_folder

sys.path.insert(0, str(REPO / "benchmarks"))
import bench_robustness as bench  # noqa: E402

LINES = ["Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt.",
         "Eine glückliche Frau bereitet in einem Coffee-Shop eine Erfrischung zu.",
         "Zwei Hunde spielen im Schnee."] * 40


def test_variants_are_seeded_and_do_what_they_say():
    for name in bench.VARIANTS:
        assert bench.make_variant(name, LINES, 3) == bench.make_variant(name, LINES, 3)
    assert bench.make_variant("all_caps", LINES, 3) == [line.upper() for line in LINES]
    assert bench.make_variant("lower_unpunctuated", LINES[:2], 3) == [
        "ein mann mit einem orangefarbenen hut, der etwas anstarrt",
        "eine glückliche frau bereitet in einem coffee-shop eine erfrischung zu"]
    assert bench.make_variant("typos", LINES, 3) != bench.make_variant("typos", LINES, 4)


def test_typos_come_at_about_one_per_15_characters():
    varied = bench.make_variant("typos", LINES, 1)
    # The character edit distance (a swap counts 2) per character: independent of how the typos were made.
    distance = sum(levenshtein(a, b) for a, b in zip(LINES, varied))
    characters = sum(len(line.replace(" ", "")) for line in LINES)
    assert 0.6 / 15 < distance / characters < 1.5 / 15


def levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i]
        for j, y in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def test_degeneration_detectors_on_hand_made_outputs():
    source = "EIN MANN MIT EINEM ORANGEFARBENEN HUT, DER ETWAS ANSTARRT."
    assert bench.degenerate_repetition(source, "A MOINNNNNOOOOOOOOOOITOTITOTOTOITOTOT")
    assert bench.degenerate_repetition("Ein Hund.", "a dog a dog a dog runs")
    assert not bench.degenerate_repetition("Ein Hund.", "A man in a blue shirt and a hat.")  # "a" 3x is normal
    assert not bench.degenerate_repetition("ein Hund ein Hund ein Hund", "a dog a dog a dog")  # as in the source
    assert bench.too_long("Hallo", "He is laying down on it.")  # 6 words > 2 x 1 + 3
    assert not bench.too_long("Hallo", "Hello there, my friend")


def test_scores_are_sacrebleus():
    outputs, references = ["a dog runs in the snow", "two men"], ["a dog runs through the snow", "two men"]
    got = bench.scores(outputs, references)
    assert got["bleu"] == round(sacrebleu.corpus_bleu(outputs, [references]).score, 2)
    assert got["chrf"] == round(sacrebleu.corpus_chrf(outputs, [references]).score, 2)


def test_short_inputs_file_has_at_least_100_short_pairs():
    rows = bench.read_short_inputs(bench.SHORT_INPUTS)
    assert len(rows) >= 100 and all(1 <= len(row["source"].split()) <= 3 for row in rows)
    assert {row["kind"] for row in rows} == {"word", "number", "name"}


def test_short_inputs_report_counts_kept_numbers_and_names():
    rows = [{"source": "123", "reference": "123", "kind": "number"},
            {"source": "Anna", "reference": "Anna", "kind": "name"},
            {"source": "Hallo", "reference": "Hello", "kind": "word"}]
    report = bench.short_inputs(lambda lines: ["3 men are performing.", "Anna", "Hello."], rows)
    assert report["numbers_kept"] == "0/1" and report["names_kept"] == "1/1"
    assert report["exact_match_rate"] == round(1 / 3, 3) and report["loose_match_rate"] == round(2 / 3, 3)
    assert [f["source"] for f in report["failures"]] == ["123", "Hallo"]
    assert report["invented_rate"] == round(1 / 3, 3)  # "3 men are performing." for "123"


def test_a_number_is_kept_only_as_a_whole_word():
    rows = [{"source": s, "reference": s, "kind": "number"} for s in ("2", "3", "1", "3,5")]
    outputs = ["222 skaters.", "13 dogs", "1 soccer players are running in the", "3,55 m"]
    report = bench.short_inputs(lambda lines: outputs, rows)
    assert report["numbers_kept"] == "1/4"  # the "1" of an invented sentence, which invented_rate counts
    assert report["invented_rate"] == 0.25


@pytest.fixture(scope="module")
def tiny_folder(data_dir, tmp_path_factory):
    return tiny_model_folder(data_dir, tmp_path_factory.mktemp("tiny-robust"), positions=64)


def test_the_script_runs_end_to_end_on_a_tiny_model(tiny_folder, tmp_path):
    (tmp_path / "src").write_text("\n".join(LINES[:3]) + "\n", encoding="utf-8")
    (tmp_path / "ref").write_text("A man.\nA woman.\nTwo dogs.\n", encoding="utf-8")
    short = tmp_path / "short.tsv"
    short.write_text("source\treference\tkind\nHallo\tHello\tword\n123\t123\tnumber\nAnna\tAnna\tname\n",
                     encoding="utf-8")
    done = subprocess.run([sys.executable, str(REPO / "benchmarks/bench_robustness.py"), "--model", str(tiny_folder),
                           "--source", str(tmp_path / "src"), "--reference", str(tmp_path / "ref"),
                           "--short-inputs", str(short), "--num-beams", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert set(report) >= {"clean", "all_caps", "lower_unpunctuated", "typos", "short_inputs"}
    assert "against_uppercased_references" in report["all_caps"] and report["short_inputs"]["inputs"] == 3
    assert 0 <= report["typos"]["repetition_rate"] <= 1
