"""Input typed all in capitals or all in lower case (issue 31): recased by the source casing that training writes beside
the model (casing.json), translated, and put back in capitals where it came in capitals; through the pipeline, the
translate command and the CTranslate2 export alike, and off on request."""

import json

import pytest
from transformers import pipeline

from vanilla_transformer.cli import main
from vanilla_transformer.pipeline import CASING_FILE, Recaser
from vanilla_transformer.training.casing import learn_recaser


def test_the_usual_form_of_each_word_is_learned_without_the_sentence_initial_ones():
    recaser = learn_recaser(["Der Hund sieht den Mann.", "Ein Mann und der Hund.", "Der Mann sieht die USA.",
                             "Hund und Mann", "Ein hund"], most_words=10)
    # "Der" and "Ein" open their sentences only: not counted, so lower case (the default) is their usual form.
    assert recaser.forms == {"hund": "Hund", "mann": "Mann", "usa": "USA"}
    assert learn_recaser(["A b C", "A b C D", "A d"], most_words=1).forms == {"c": "C"}  # the most frequent first


def test_only_text_all_in_one_case_is_recased_and_capitals_come_back_in_capitals():
    recaser = Recaser({"hund": "Hund", "mann": "Mann", "usa": "USA"})
    assert recaser.recase("DER MANN SIEHT DEN HUND, 3 MAL!") == ("Der Mann sieht den Hund, 3 mal!", True)
    assert recaser.recase("der mann sieht die usa") == ("Der Mann sieht die USA", False)
    assert recaser.recase("Der mann sieht den HUND.") == ("Der mann sieht den HUND.", False)  # both cases: as it is
    assert recaser.recase("A 123") == ("A 123", False) and recaser.recase("123") == ("123", False)
    assert Recaser.restore("The man sees the dog.", True) == "THE MAN SEES THE DOG."
    assert Recaser.restore("The man.", False) == "The man."


def test_a_broken_casing_file_is_named(tmp_path):
    assert Recaser.load(str(tmp_path)) is None  # no casing.json: no recasing
    for text in ("{not json", '{"words": {}}', '{"forms": 3}'):
        (tmp_path / CASING_FILE).write_text(text, encoding="utf-8")
        with pytest.raises(ValueError, match=f"{tmp_path / CASING_FILE}: not a casing file"):
            Recaser.load(str(tmp_path))


@pytest.fixture(scope="module")
def recased_model(memorized):
    """The memorised model, and the test2016 lines whose capitals and lower case its casing.json recases exactly."""
    model_dir, _, de, en = memorized
    recaser = Recaser.load(str(model_dir))
    exact = [i for i, line in enumerate(de) if recaser.recase(line.upper())[0] == line == recaser.recase(line.lower())[0]]
    assert len(exact) >= 6, "the casing learned from the training sources recases most of them exactly"
    return model_dir, [de[i] for i in exact], [en[i] for i in exact]


def test_training_writes_the_source_casing_beside_the_model(memorized):
    model_dir, _, de, _ = memorized
    forms = json.loads((model_dir / CASING_FILE).read_text(encoding="utf-8"))["forms"]
    assert forms == learn_recaser(de).forms and forms  # the memorised model's training sources are these lines


def test_the_pipeline_translates_capitals_and_lower_case_as_the_cased_text(recased_model):
    model_dir, de, _ = recased_model
    translator = pipeline("translation", model=str(model_dir), trust_remote_code=True)
    cased = [t["translation_text"] for t in translator(de)]
    assert [t["translation_text"] for t in translator([line.upper() for line in de], batch_size=3)] == \
        [line.upper() for line in cased]
    assert [t["translation_text"] for t in translator([line.lower() for line in de])] == cased
    as_typed = [t["translation_text"]
                for t in translator([line.upper() for line in de], recase=False, truncation=True)]
    assert as_typed != [line.upper() for line in cased]


def test_translate_recases_with_both_engines_unless_told_not_to(recased_model, tmp_path):
    model_dir, de, _ = recased_model

    def translate(model, lines, *options) -> list[str]:
        source = tmp_path / "source.de"
        source.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        main(["translate", str(model), "--input", str(source), "--output", str(tmp_path / "out.en"), "--overwrite",
              *options])
        return (tmp_path / "out.en").read_text(encoding="utf-8").split("\n")[:-1]

    capitals = [line.upper() for line in de]
    cased = translate(model_dir, de)
    assert translate(model_dir, capitals) == [line.upper() for line in cased]
    assert translate(model_dir, capitals, "--no-recase") != [line.upper() for line in cased]
    pytest.importorskip("ctranslate2")
    main(["export-ctranslate2", str(model_dir), str(tmp_path / "ct2")])
    assert (tmp_path / "ct2" / CASING_FILE).is_file()
    engine = ("--engine", "ctranslate2", "--compute-type", "float32")
    cased = translate(tmp_path / "ct2", de, *engine)
    assert translate(tmp_path / "ct2", capitals, *engine) == [line.upper() for line in cased]
