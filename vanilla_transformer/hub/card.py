"""The model card of a run, rendered from hub_card.md with the run's own figures: its results, recipe and config."""

from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..configuration import VanillaTransformerConfig
from ..results import METRIC_NAMES, RunResults
from ..training.recipe import Recipe, load_recipe

TEMPLATE = Path(__file__).with_name("hub_card.md")  # a link to the repo root's hub_card.md
LANGUAGE_NAMES = {"de": "German", "en": "English", "fr": "French", "cs": "Czech", "ru": "Russian"}
EXAMPLES = {"de": "Ein Mann fährt mit dem Fahrrad durch die Stadt.", "en": "A man rides his bike through the city."}


def render_card(run_dir: str | Path, repo_id: str = "your-name/your-model") -> ModelCard:
    """Write run_dir/model/README.md: YAML metadata with a model-index of the measured scores, and the card body."""
    run_dir = Path(run_dir)
    if not TEMPLATE.is_file():
        raise FileNotFoundError(f"model card template not found at {TEMPLATE}")
    model_dir = run_dir / "model"
    results = RunResults.load(run_dir / "results.json")
    recipe = load_recipe(run_dir / "recipe.json")
    config = VanillaTransformerConfig.from_pretrained(model_dir)
    src, tgt = results.src, results.tgt  # language codes may hold hyphens (pt-BR)
    dataset = recipe.data.source
    test = results.test
    scores = {metric: (round(value, 2), signature) for metric, (value, signature) in
              (test.scores() if test else {}).items()}  # as computed: runs from before TER have BLEU and chrF
    eval_results = [EvalResult(
        task_type="translation", task_name=f"Translation {src}-{tgt}", dataset_type=dataset,
        dataset_name=f"{dataset} {test.split}", dataset_split=test.split, metric_type=metric,
        metric_name=METRIC_NAMES[metric], metric_value=value, metric_config=signature,
    ) for metric, (value, signature) in scores.items()]
    model_name = Path(repo_id).name
    card_data = ModelCardData(
        language=[src, tgt], license="apache-2.0", library_name="transformers", pipeline_tag="translation",
        tags=["translation", "transformer", "vanilla-transformer", "attention-is-all-you-need"],
        datasets=[dataset], metrics=list(scores) or ["bleu", "chrf"], model_name=model_name,
        eval_results=eval_results or None,
    )
    training, generation = recipe.training, recipe.generation
    # What save_pretrained and make_portable copied beside the weights: the model's code, then the pipeline.
    model_code = ", ".join(f"`{path.name}`" for path in sorted(model_dir.glob("*.py")) if path.name != "pipeline.py")
    card = ModelCard.from_template(
        card_data, template_path=str(TEMPLATE), model_name=model_name, repo_id=repo_id,
        src_name=LANGUAGE_NAMES.get(src, src), tgt_name=LANGUAGE_NAMES.get(tgt, tgt), preset=recipe.model.preset,
        d_model=config.d_model, encoder_layers=config.encoder_layers, decoder_layers=config.decoder_layers,
        heads=config.num_attention_heads, d_ff=config.d_ff, position_embedding=config.position_embedding,
        norm_first=config.norm_first, parameters=f"{results.parameters:,}", vocab_size=config.vocab_size,
        example=EXAMPLES.get(src, "..."), model_code=model_code, num_beams=generation.num_beams,
        length_penalty=generation.length_penalty, max_length_offset=generation.max_length_offset,
        dataset=dataset, multi30k="multi30k" in Path(dataset).name.lower(), train_pairs=f"{results.train_pairs:,}",
        cleaning=cleaning_in_words(results.cleaning, recipe, config.max_position_embeddings),
        validation=recipe.data.validation, recipe_name=recipe.name, steps=results.steps,
        update_tokens=training.update_tokens, adam_beta2=training.adam_beta2, adam_epsilon=training.adam_epsilon,
        lr_scale=training.lr_scale, warmup_steps=training.warmup_steps, dropout=config.dropout,
        label_smoothing=training.label_smoothing, averaged=", ".join(results.averaged_checkpoints),
        train_minutes=round(results.train_seconds / 60, 1), machine=results.machine,
        test_split=test.split if test else "(none)", direction=f"{src}→{tgt}",
        scores=[(METRIC_NAMES[metric], value, signature) for metric, (value, signature) in scores.items()],
    )
    card.save(model_dir / "README.md")
    return card


def cleaning_in_words(cleaning: dict, recipe: Recipe, positions: int) -> str:
    """What cleaning kept and removed of the training pairs, as a sentence with the limits that removed them (empty
    where the run recorded no figures)."""
    if not cleaning:
        return ""
    d = recipe.data
    longest = min(limit for limit in (d.max_length, positions) if limit is not None)  # as training/data.py's clean()
    ratio = f"above {d.max_ratio:g}" if d.max_ratio is not None else "(no limit set)"
    return (f"{cleaning['kept']:,} pairs kept; {cleaning['too_long']:,} removed as longer than {longest} tokens on a "
            f"side; {cleaning['bad_ratio']:,} removed for a length ratio {ratio}")
