"""evaluate --metrics (sacreBLEU's BLEU, chrF and TER through the local `evaluate` module, against sacrebleu itself),
and the model card's cleaning figures, scores, limitations and citation."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import sacrebleu
from conftest import REPO, tiny_model_folder, tiny_recipe
from huggingface_hub import ModelCard

from vanilla_transformer.cli import main
from vanilla_transformer.evaluation import score
from vanilla_transformer.hub.card import render_card
from vanilla_transformer.results import RunResults, SplitScore

TER_SIGNATURE = f"nrefs:1|case:lc|tok:tercom|norm:no|punct:yes|asian:no|version:{sacrebleu.__version__}"


@pytest.fixture(scope="module")
def model_dir(data_dir, tmp_path_factory):
    return tiny_model_folder(data_dir, tmp_path_factory.mktemp("model"), positions=128)


def imperfect_hypotheses(references: list[str]) -> list[str]:
    """Real but imperfect hypotheses: the neighbouring sentence's reference for every third line."""
    return [references[i + 1] if i % 3 == 0 and i + 1 < len(references) else reference
            for i, reference in enumerate(references)]


def test_ter_through_evaluate_equals_sacrebleu(data_dir):
    references = (data_dir / "multi30k/test2016.en").read_text(encoding="utf-8").splitlines()
    hypotheses = imperfect_hypotheses(references)
    ours = score(hypotheses, references, ("bleu", "chrf", "ter"))
    assert ours["ter"] == pytest.approx(sacrebleu.corpus_ter(hypotheses, [references]).score, abs=1e-9)
    assert ours["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references]).score, abs=1e-9)
    assert 10 < ours["ter"] < 80 and ours["ter_signature"] == TER_SIGNATURE
    assert set(score(hypotheses, references, ("ter",))) == {"ter", "ter_signature"}


def test_the_metric_module_loads_and_computes_offline(tmp_path):
    # Offline, with a Hub that cannot be reached: a download of the module (or of anything) would fail.
    program = ("from vanilla_transformer.evaluation import score; "
               "print(score(['a dog runs .'], ['a dog is running .'], ('ter',))['ter'])")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "home")}
    result = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    expected = sacrebleu.corpus_ter(["a dog runs ."], [["a dog is running ."]]).score
    assert float(result.stdout.split()[-1]) == pytest.approx(expected)


def evaluate_args(model_dir, data_dir, out, *extra: str) -> list[str]:
    return ["evaluate", str(model_dir), "--data", str(data_dir / "multi30k"), "--split", "test2017_mscoco",
            "--num-beams", "1", "--batch-size", "128", "--out", str(out), *extra]


def test_evaluate_metrics_ter_is_sacrebleus_and_recorded_with_its_signature(model_dir, data_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    main(evaluate_args(model_dir, data_dir, out, "--metrics", "bleu,chrf,ter"))
    report = json.loads((out / "report.json").read_text())
    # The lines as written, split at \n alone: an untrained model's output may hold \x0c, which splitlines() splits at.
    hypotheses = (out / "test2017_mscoco.hyp.en").read_bytes().decode("utf-8").split("\n")[:-1]
    references = (data_dir / "multi30k/test2017_mscoco.en").read_text(encoding="utf-8").splitlines()
    assert report["metrics"] == ["bleu", "chrf", "ter"]
    assert report["ter"] == pytest.approx(sacrebleu.corpus_ter(hypotheses, [references]).score, abs=1e-9)
    assert report["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hypotheses, [references]).score, abs=1e-9)
    assert report["ter_signature"] == TER_SIGNATURE and report["bleu_signature"].startswith("nrefs:1|case:mixed")
    printed = capsys.readouterr().out
    assert f"TER {report['ter']:.2f}" in printed and f"TER signature: {TER_SIGNATURE}" in printed


def test_evaluate_computes_bleu_and_chrf_by_default_and_only_the_metrics_named(model_dir, data_dir, tmp_path):
    main(evaluate_args(model_dir, data_dir, tmp_path / "default"))
    report = json.loads((tmp_path / "default/report.json").read_text())
    assert report["metrics"] == ["bleu", "chrf"] and "ter" not in report and "chrf_signature" in report
    main(evaluate_args(model_dir, data_dir, tmp_path / "ter", "--metrics", "TER"))
    report = json.loads((tmp_path / "ter/report.json").read_text())
    assert report["metrics"] == ["ter"] and "bleu" not in report and "chrf" not in report and report["ter"] > 0


@pytest.mark.parametrize("metrics", ["bleu,bleurt", "", "bleu,,chrf"])
def test_an_unknown_metric_is_refused_naming_the_option(metrics, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "some/model", "--data", "some/data", "--metrics", metrics])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "argument --metrics:" in error and "choose from bleu, chrf, ter" in error and "Traceback" not in error


CLEANING = {"kept": 28998, "too_long": 0, "bad_ratio": 2}


def run_folder(model_dir, small_corpus, folder, test: SplitScore | None, cleaning: dict = CLEANING):
    """A run folder as the card takes it (model/, recipe.json, results.json), made without training."""
    shutil.copytree(model_dir, folder / "model")
    (folder / "recipe.json").write_text(json.dumps(tiny_recipe(small_corpus, folder).to_dict()))
    RunResults(recipe="multi30k-de-en-small", src="de", tgt="en", parameters=46_000,
               train_pairs=cleaning.get("kept", 0), cleaning=cleaning, padding_fraction=0.1, steps=40,
               train_seconds=60.0, machine="test", test=test).save(folder / "results.json")
    return folder


def scored(**metrics) -> SplitScore:
    return SplitScore(split="test2016", sentences=1000, num_beams=4, length_penalty=0.6, **metrics)


ALL_THREE = scored(bleu=39.321, chrf=59.254, ter=41.067, bleu_signature="nrefs:1|case:mixed|tok:13a",
                   chrf_signature="nrefs:1|case:mixed|nc:6", ter_signature=TER_SIGNATURE)


def test_the_card_states_the_cleaning_figures_in_words(model_dir, small_corpus, tmp_path):
    card = render_card(run_folder(model_dir, small_corpus, tmp_path / "run", ALL_THREE))
    # The recipe's data.max_length (64) is below the model's 128 positions, and its data.max_ratio is 3.
    assert ("28,998 sentence pairs after cleaning (28,998 pairs kept; 0 removed as longer than 64 tokens on a side; "
            "2 removed for a length ratio above 3)") in " ".join(card.text.split())
    assert "{'kept'" not in card.text and "too_long" not in card.text
    # A run that recorded no figures (results.json written by hand) gets no parentheses.
    bare = render_card(run_folder(model_dir, small_corpus, tmp_path / "bare", None, cleaning={}))
    assert "0 sentence pairs after cleaning, validated on" in " ".join(bare.text.split())


def test_the_card_lists_every_metric_the_run_computed_with_its_signature(model_dir, small_corpus, tmp_path):
    render_card(run_folder(model_dir, small_corpus, tmp_path / "run", ALL_THREE))
    card = ModelCard.load(tmp_path / "run/model/README.md")  # as the Hub reads it back
    rows = re.findall(r"^\| test2016 \(de→en\) \| (\S+) \| ([\d.]+) \| `(.+)` \|$", card.text, re.MULTILINE)
    assert rows == [("sacreBLEU", "39.32", "nrefs:1|case:mixed|tok:13a"), ("chrF", "59.25", "nrefs:1|case:mixed|nc:6"),
                    ("TER", "41.07", TER_SIGNATURE)]
    index = {(r.metric_type, r.metric_name): (r.metric_value, r.metric_config) for r in card.data.eval_results}
    assert index == {("bleu", "sacreBLEU"): (39.32, "nrefs:1|case:mixed|tok:13a"),
                     ("chrf", "chrF"): (59.25, "nrefs:1|case:mixed|nc:6"), ("ter", "TER"): (41.07, TER_SIGNATURE)}
    assert card.data.metrics == ["bleu", "chrf", "ter"]
    # results.json of a run from before TER: its two metrics only.
    older = scored(bleu=39.321, chrf=59.254, bleu_signature="b", chrf_signature="c")
    render_card(run_folder(model_dir, small_corpus, tmp_path / "older", older))
    card = ModelCard.load(tmp_path / "older/model/README.md")
    assert [r.metric_type for r in card.data.eval_results] == ["bleu", "chrf"] and "| TER |" not in card.text


def section(text: str, title: str) -> str:
    """The body of a card's `## title` section, up to the next one."""
    return re.search(rf"^## {title}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL).group(1)


def test_the_card_has_limitations_with_the_measured_figures(model_dir, small_corpus, tmp_path):
    card = render_card(run_folder(model_dir, small_corpus, tmp_path / "run", ALL_THREE))
    limitations = " ".join(section(card.text, "Limitations").split())
    assert "Multi30k: image captions" in limitations and "not a translator for general text" in limitations
    # Issue 31's robustness table of the demo model (test2016, sacreBLEU against the original references).
    for row in ("| as written | 40.59 |", "| ALL CAPS (output in capitals) | 38.06 | 0.94x |",
                "| lowercased, final period removed | 40.18 | 0.99x |",
                "| about one typo per 15 characters | 26.73 | 0.66x |"):
        assert row in limitations, row
    assert "the figures are that model's, not this one's" not in limitations
    # A model of other data is told that the figures are the demo model's.
    other = tmp_path / "other"
    run_folder(model_dir, small_corpus, other, ALL_THREE)
    recipe = json.loads((other / "recipe.json").read_text())
    recipe["data"]["source"] = "wmt/wmt14"
    (other / "recipe.json").write_text(json.dumps(recipe))
    limitations = " ".join(section(render_card(other).text, "Limitations").split())
    assert "`wmt/wmt14`" in limitations and "the figures are that model's, not this one's" in limitations
    assert "image captions" not in limitations


def test_the_card_cites_the_paper_in_bibtex(model_dir, small_corpus, tmp_path):
    card = render_card(run_folder(model_dir, small_corpus, tmp_path / "run", ALL_THREE))
    bibtex = re.search(r"```bibtex\n(.*?)```", section(card.text, "Citation"), re.DOTALL).group(1)
    entry = re.fullmatch(r"@inproceedings\{(\w+),\n(.*)\}\n", bibtex, re.DOTALL)
    assert entry, bibtex
    fields = dict(re.findall(r"^\s+(\w+)\s+= \{(.*?)\},?$", entry.group(2), re.MULTILINE | re.DOTALL))
    assert fields["title"] == "Attention Is All You Need" and fields["year"] == "2017"
    assert fields["author"].startswith("Vaswani, Ashish and Shazeer, Noam") and "Polosukhin, Illia" in fields["author"]
    assert "Neural Information Processing Systems" in fields["booktitle"] and fields["pages"] == "5998--6008"
    assert bibtex.count("{") == bibtex.count("}")


def test_the_template_the_package_renders_is_the_repository_root_one():
    from vanilla_transformer.hub.card import TEMPLATE

    assert TEMPLATE.resolve() == (REPO / "hub_card.md").resolve()
