"""The evaluate, translate and picture commands, and BLEU through `evaluate` against sacrebleu itself."""

import json
import subprocess
import sys

import pytest
import sacrebleu
from conftest import tiny_model_folder

from vanilla_transformer.cli import main
from vanilla_transformer.evaluation import score


@pytest.fixture(scope="module")
def model_dir(data_dir, tmp_path_factory):
    return tiny_model_folder(data_dir, tmp_path_factory.mktemp("model"), positions=128)


def test_bleu_through_evaluate_equals_sacrebleu(data_dir):
    references = (data_dir / "multi30k/test2016.en").read_text(encoding="utf-8").splitlines()
    # Real but imperfect hypotheses: the references of the neighbouring sentence for every third line.
    hypotheses = [references[i + 1] if i % 3 == 0 and i + 1 < len(references) else ref
                  for i, ref in enumerate(references)]
    ours = score(hypotheses, references)
    expected = sacrebleu.corpus_bleu(hypotheses, [references])
    assert ours["bleu"] == pytest.approx(expected.score, abs=1e-9)
    assert ours["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hypotheses, [references]).score, abs=1e-9)
    assert 40 < ours["bleu"] < 90
    assert ours["bleu_signature"] == f"nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:{sacrebleu.__version__}"


def test_evaluate_command_writes_hypotheses_and_report(model_dir, data_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    main(["evaluate", str(model_dir), "--data", str(data_dir / "multi30k"), "--split", "test2017_mscoco",
          "--src", "de", "--tgt", "en", "--num-beams", "2", "--batch-size", "128", "--out", str(out)])
    report = json.loads((out / "report.json").read_text())
    # The lines as written, split at \n alone: an untrained model's output may hold \x0c, which splitlines() splits at.
    hypotheses = (out / "test2017_mscoco.hyp.en").read_bytes().decode("utf-8").split("\n")[:-1]
    references = (data_dir / "multi30k/test2017_mscoco.en").read_text(encoding="utf-8").splitlines()
    assert len(hypotheses) == report["sentences"] == 461
    assert report["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references]).score)
    printed = capsys.readouterr().out
    assert "sacreBLEU" in printed and "nrefs:1|case:mixed|eff:no|tok:13a" in printed


def test_translate_from_arguments_and_stdin(model_dir):
    sentences = ["Ein Hund rennt über die Wiese.", "Zwei Kinder spielen."]
    command = [sys.executable, "-m", "vanilla_transformer.cli", "translate", str(model_dir)]
    options = ["--num-beams", "1", "--batch-size", "1"]
    from_args = subprocess.run(command + sentences + options, capture_output=True, text=True, check=True)
    from_stdin = subprocess.run(command + options, input="\n".join(sentences) + "\n", capture_output=True, text=True,
                                check=True)
    from_args, from_stdin = from_args.stdout.splitlines(), from_stdin.stdout.splitlines()
    assert len(from_args) == 2 and from_args == from_stdin


def test_pictures_are_written(model_dir, tmp_path):
    main(["show-attention", str(model_dir), "Ein Mann liest ein Buch.", "--out", str(tmp_path / "attention.png"),
          "--layer", "1", "--num-beams", "1"])
    main(["show-positional-encoding", "--out", str(tmp_path / "pe.png")])
    for name in ("attention.png", "pe.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / name).stat().st_size > 10_000
