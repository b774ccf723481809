"""Train BN-VAE (or a baseline of the method table) with transformers' Trainer, in the style of run_clm.py.

    python training/train_with_trainer.py --output_dir outputs/bnvae-trainer --do_train --do_eval

The arguments are three dataclasses read by HfArgumentParser, as in transformers' examples: the model
(`ModelArguments`: preset sizes, method and its settings, vocabulary), the data (`DataTrainingArguments`)
and transformers' own `TrainingArguments`, whose defaults here are the paper's recipe (SGD without
momentum, lr 1.0, gradient norm clipped at 5, a constant schedule, batches drawn at random: transformers'
length grouping orders each mega-batch from its longest sentences to its shortest, which SGD at lr 1.0
follows to a validation -ELBO about 40 nats worse, measured) on the shipped Brown data. A training set that would end in a batch of one sentence, which BN cannot normalise,
loses its last sentence (logged); `dataloader_drop_last` would also drop the evaluation's last batch. The KL weight comes from
`hf_bnvae.KLAnnealingCallback` (the method's schedule over --kl_warmup_epochs), the evaluation figures
(-ELBO, KL, MI, AU) from `hf_bnvae.compute_vae_metrics`, and with an evaluation strategy (every epoch
by default) the paper's plateau rule from `hf_bnvae.PlateauCallback` on the method's validation loss,
which also leaves the model at its best epoch when training ends, as train.py saves it. `training/train.py` is the reference loop (fused
output layer, mid-epoch resume, the IW-NLL at the end); this script is for those who want the Trainer's
ecosystem (its checkpoints, reporters, `--push_to_hub`). docs/trainer.md has the details.
"""

import functools
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser, Trainer, TrainingArguments, set_seed

from hf_bnvae import (
    PRESETS,
    BNVAEConfig,
    BNVAEForLanguageModeling,
    DataCollatorForSentenceVAE,
    KLAnnealingCallback,
    PlateauCallback,
    build_word_tokenizer,
    compute_vae_metrics,
)
from hf_bnvae.data import BROWN_DIR, read_text_file, tokenize_texts
from hf_bnvae.methods import methods_of, resolve_method
from hf_bnvae.trainer_callbacks import ends_in_batch_of_one
from hf_bnvae.trainer_utils import parse_config_overrides

logger = logging.getLogger(__name__)

# TrainingArguments defaults of this script: the paper's recipe (train.py's) instead of the Trainer's AdamW
RECIPE_DEFAULTS = {
    "optim": "sgd",
    "learning_rate": 1.0,
    "max_grad_norm": 5.0,
    "lr_scheduler_type": "constant",
    "warmup_steps": 0,
    "weight_decay": 0.0,
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 64,
    "num_train_epochs": 4,
    # not "group_by_length": transformers' LengthGroupedSampler serves each mega-batch's batches from the
    # longest sentences to the shortest, and plain SGD at lr 1.0 ends that sawtooth far worse (docs/trainer.md)
    "train_sampling_strategy": "random",
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "save_total_limit": 2,
    "logging_steps": 50,
    "report_to": "none",
}


@dataclass
class ModelArguments:
    preset: str = field(default="brown", metadata={"help": f"model sizes: {sorted(PRESETS)}"})
    method: str = field(
        default="bnvae",
        metadata={
            "help": f"a method of hf_bnvae.methods (its other settings: the table's defaults): {methods_of('bnvae')}"
        },
    )
    gamma: float | None = field(default=None, metadata={"help": "bnvae: BN's fixed scale (default 0.6)"})
    vocab_size: int = field(default=10000, metadata={"help": "words kept when building the vocabulary"})
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "config fields over the preset, as in run_clm.py: embedding_size=64,latent_size=16"},
    )


@dataclass
class DataTrainingArguments:
    train_file: str = field(default=str(BROWN_DIR / "train.txt"), metadata={"help": "one sentence per line"})
    validation_file: str = field(default=str(BROWN_DIR / "valid.txt"))
    max_train_samples: int | None = field(default=30000, metadata={"help": "the first n training sentences"})
    max_eval_samples: int | None = field(default=None)
    max_seq_length: int | None = field(default=None, metadata={"help": "tokens with <s> and </s>"})
    kl_warmup_epochs: float = field(default=2.0, metadata={"help": "KL weight 0 -> 1 over this many epochs"})


def parse_args(argv=None):
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, TrainingArguments))
    parser.set_defaults(**RECIPE_DEFAULTS)
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    if training_args.per_device_train_batch_size < 2:
        parser.error("--per_device_train_batch_size must be >= 2 (BN cannot normalise a batch of one sentence)")
    for flag in ("train_file", "validation_file"):
        if not Path(getattr(data_args, flag)).is_file():
            parser.error(f"--{flag} {getattr(data_args, flag)}: data file not found")
    if model_args.method == "aggressive":
        parser.error("--method aggressive needs train.py's inner encoder loop, which the Trainer does not run")
    try:
        recipe = resolve_method(model_args.method, gamma=model_args.gamma)
        model_args.overrides = parse_config_overrides(model_args.config_overrides, BNVAEConfig)
    except ValueError as error:
        parser.error(str(error))
    return model_args, data_args, training_args, recipe


def first_texts(path, limit):
    """The first `limit` sentences of a text file (all of them for None)."""
    texts = read_text_file(path).texts
    return texts[:limit] if limit else texts


def sentences(texts, tokenizer, max_seq_length):
    """The Trainer's dataset of texts: an "input_ids" column of `<s> w_1 ... w_m </s>` ids."""
    return tokenize_texts(tokenizer, texts, max_seq_length).remove_columns(["index", "attention_mask"])


def main(argv=None):
    """Train and/or evaluate; returns the Trainer."""
    model_args, data_args, training_args, recipe = parse_args(argv)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    set_seed(training_args.seed)
    train_texts = first_texts(data_args.train_file, data_args.max_train_samples)  # read once: vocabulary and data
    tokenizer = build_word_tokenizer(train_texts, vocab_size=model_args.vocab_size)
    train_set = sentences(train_texts, tokenizer, data_args.max_seq_length)
    eval_texts = first_texts(data_args.validation_file, data_args.max_eval_samples)
    eval_set = sentences(eval_texts, tokenizer, data_args.max_seq_length)
    special = {f"{name}_token_id": getattr(tokenizer, f"{name}_token_id") for name in ("pad", "bos", "eos", "unk")}
    config = BNVAEConfig.from_preset(
        model_args.preset, vocab_size=len(tokenizer), **recipe.config, **special, **model_args.overrides
    )
    model = BNVAEForLanguageModeling(config)
    per_device, processes = training_args.per_device_train_batch_size, max(1, training_args.world_size)
    kept = len(train_set)
    while not training_args.dataloader_drop_last and ends_in_batch_of_one(kept, per_device, processes):
        kept -= 1  # BN cannot normalise a batch of one sentence
    if kept < len(train_set):
        logger.warning("%d training sentences left out: the epoch would end in a batch of one", len(train_set) - kept)
        train_set = train_set.select(range(kept))
    steps_per_epoch = max(1, math.ceil(kept / processes / per_device / training_args.gradient_accumulation_steps))
    warmup_steps = round(data_args.kl_warmup_epochs * steps_per_epoch)
    callbacks = [KLAnnealingCallback(warmup_steps, method=recipe.name, gamma=model_args.gamma)]
    if training_args.eval_strategy != "no":  # the rule on the method's validation loss, as train.py
        callbacks.append(PlateauCallback(metric="eval_selection_loss", **recipe.plateau))
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_set if training_args.do_train else None,
        eval_dataset=eval_set if training_args.do_eval else None,
        processing_class=tokenizer,
        data_collator=DataCollatorForSentenceVAE(tokenizer.pad_token_id),
        compute_metrics=functools.partial(compute_vae_metrics, final_kl_weight=recipe.final_kl_weight),
        callbacks=callbacks,
    )
    if training_args.do_train:
        result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.save_model()  # the model, its remote code and the tokenizer
        metrics = {**result.metrics, "train_samples": len(train_set)}
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
    if training_args.do_eval:
        metrics = {**trainer.evaluate(), "eval_samples": len(eval_set)}
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    if training_args.push_to_hub:
        trainer.push_to_hub(finetuned_from=None, tags=["bn-vae", "text-vae"])
    return trainer


if __name__ == "__main__":
    main(sys.argv[1:])
