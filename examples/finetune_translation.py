"""Fine-tune a saved or pushed vanilla-transformer model on new parallel data, the transformers way.

This follows transformers' examples/pytorch/translation/run_translation.py: Auto classes, the model's own code run
only with --trust_remote_code True, tokenizer(inputs, text_target=targets), DataCollatorForSeq2Seq, Seq2SeqTrainer
with predict_with_generate. Nothing in it is specific to this package, so it works the same on a model from the Hub.
A vanilla-transformer folder carries its model code (config.json's auto_map), so it needs --trust_remote_code True:

    python examples/finetune_translation.py --model_name_or_path runs/multi30k-de-en-small/model \
        --trust_remote_code True --train_file train.jsonl --validation_file val.jsonl \
        --source_lang de --target_lang en --output_dir finetuned --max_steps 200 --predict_with_generate \
        --generation_num_beams 4

Data: JSON lines, one {"translation": {"de": "...", "en": "..."}} per line.
"""

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import evaluate
import numpy as np
from datasets import load_dataset
from transformers import (
    CONFIG_MAPPING,
    AutoConfig,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    HfArgumentParser,
    PretrainedConfig,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    set_seed,
)

logger = logging.getLogger(__name__)
# sacreBLEU as a local `evaluate` module (evaluate.load("sacrebleu") would download its script from the Hub).
DEFAULT_METRIC = Path(__file__).resolve().parents[1] / "vanilla_transformer" / "sacrebleu_metric"


@dataclass
class ModelArguments:
    model_name_or_path: str = field(metadata={"help": "A model folder or Hub repo id"})
    trust_remote_code: bool = field(default=False, metadata={
        "help": "Run the Python files that come with the model (config.json's auto_map), as you: read them first"})


@dataclass
class DataTrainingArguments:
    train_file: str = field(metadata={"help": "JSON lines with a 'translation' field"})
    validation_file: str | None = field(default=None)
    source_lang: str = field(default="de")
    target_lang: str = field(default="en")
    max_source_length: int = field(default=128)
    max_target_length: int = field(default=128)
    metric_path: str = field(default=str(DEFAULT_METRIC), metadata={"help": "An evaluate module computing BLEU"})


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, Seq2SeqTrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    if not model_args.trust_remote_code:
        refuse_remote_code(model_args.model_name_or_path)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout)
    set_seed(training_args.seed)

    data_files = {"train": data_args.train_file}
    if data_args.validation_file:
        data_files["validation"] = data_args.validation_file
    raw = load_dataset("json", data_files=data_files)

    remote = model_args.trust_remote_code
    config = AutoConfig.from_pretrained(model_args.model_name_or_path, trust_remote_code=remote)
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, trust_remote_code=remote)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_args.model_name_or_path, config=config,
                                                  trust_remote_code=remote)
    model.resize_token_embeddings(len(tokenizer))
    if model.config.decoder_start_token_id is None:
        raise ValueError("Make sure that `config.decoder_start_token_id` is correctly defined")

    src, tgt = data_args.source_lang, data_args.target_lang

    def preprocess(examples):
        inputs = [ex[src] for ex in examples["translation"]]
        targets = [ex[tgt] for ex in examples["translation"]]
        return tokenizer(inputs, text_target=targets, max_length=data_args.max_source_length, truncation=True)

    columns = raw["train"].column_names
    train_dataset = raw["train"].map(preprocess, batched=True, remove_columns=columns)
    eval_dataset = None
    if "validation" in raw:
        eval_dataset = raw["validation"].map(preprocess, batched=True, remove_columns=columns)

    metric = evaluate.load(data_args.metric_path)

    def compute_metrics(eval_preds):
        preds, labels = eval_preds
        preds = np.where(preds != -100, preds, tokenizer.pad_token_id)
        labels = np.where(labels != -100, labels, tokenizer.pad_token_id)
        hypotheses = [h.strip() for h in tokenizer.batch_decode(preds, skip_special_tokens=True)]
        references = [r.strip() for r in tokenizer.batch_decode(labels, skip_special_tokens=True)]
        result = metric.compute(predictions=hypotheses, references=references)
        return {"bleu": result["score"], "chrf": result["chrf"]}

    trainer = Seq2SeqTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
        compute_metrics=compute_metrics if training_args.predict_with_generate else None,
    )
    train_result = trainer.train()
    trainer.save_model()
    metrics = dict(train_result.metrics)
    if eval_dataset is not None:
        metrics.update(trainer.evaluate(max_length=data_args.max_target_length, metric_key_prefix="eval"))
    trainer.save_metrics("all", metrics)
    print(json.dumps(metrics, indent=2))
    return metrics


def refuse_remote_code(model_name_or_path: str) -> None:
    """SystemExit naming the model and the option if its config maps it to code of its own that transformers does not
    already have (a model type registered by an imported package loads with that package's classes instead)."""
    config, _ = PretrainedConfig.get_config_dict(model_name_or_path)
    if "auto_map" in config and config.get("model_type") not in CONFIG_MAPPING:
        raise SystemExit(
            f"{model_name_or_path}: its config.json (model_type {config.get('model_type')!r}) loads the model with "
            f"Python files that come with it (auto_map: {config['auto_map']}), which would run as you. Read them, "
            "then pass --trust_remote_code True to run them."
        )


if __name__ == "__main__":
    main()
