"""Training BN-VAE with transformers' Trainer: the paper's KL annealing as a callback, and a data collator.

    trainer = Trainer(
        model=BNVAEForLanguageModeling(config),
        args=TrainingArguments(output_dir, optim="sgd", learning_rate=1.0, lr_scheduler_type="constant"),
        train_dataset=tokenized,  # an "input_ids" column of `<s> w_1 ... w_m </s>` token ids
        data_collator=DataCollatorForSentenceVAE(tokenizer.pad_token_id),
        callbacks=[KLAnnealingCallback(warmup_steps=1000)],
    )

The callback sets the model's `kl_weight` before every optimizer step from a method of the table
(`hf_bnvae.methods`: linear warm-up for the VAE-type methods, cyclical, constant beta) and writes it into
the Trainer's log history as `kl_weight` at every logging step.
"""

import math

import torch
from transformers import TrainerCallback

from .methods import resolve_method


class KLAnnealingCallback(TrainerCallback):
    """Set `model.kl_weight` at every optimizer step from `method`'s schedule (a name of
    `hf_bnvae.methods.METHODS` with its settings, e.g. `method="beta_vae", beta=0.4`; default "bnvae":
    linear 0 -> 1 over warmup_steps), as train.py does. The weight is logged as `kl_weight`
    in `trainer.state.log_history` (it is added after the Trainer's reporters have run, so they do not
    see it).

    A BN-VAE training batch needs two sentences: if the training set would end in a batch of one, training
    stops before its first step with a message (pass `dataloader_drop_last=True`)."""

    def __init__(self, warmup_steps, method="bnvae", **method_settings):
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.method = resolve_method(method, **method_settings)  # ValueError for a name or setting not in the table
        self.warmup_steps, self.steps_per_epoch, self.current = warmup_steps, 1, 0.0

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        if train_dataloader is not None:
            batches = len(train_dataloader)
            self.steps_per_epoch = max(1, math.ceil(batches / args.gradient_accumulation_steps))
            check_no_batch_of_one(args, train_dataloader)

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self.current = self.method.kl_weight(state.global_step, self.warmup_steps, self.steps_per_epoch)
        model.kl_weight = self.current

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.log_history and "loss" in state.log_history[-1]:
            state.log_history[-1]["kl_weight"] = self.current
        if logs is not None:
            logs["kl_weight"] = self.current


def ends_in_batch_of_one(num_examples, per_device_batch_size, world_size=1):
    """Whether an epoch of num_examples split over world_size processes (each gets ceil(N / P), the last
    ones padded by repetition) ends in a batch of one example on a process."""
    return math.ceil(num_examples / max(1, world_size)) % per_device_batch_size == 1


def check_no_batch_of_one(args, train_dataloader):
    """ValueError when the training set's last batch would hold one sentence (BN needs two in training)."""
    dataset = getattr(train_dataloader, "dataset", None)
    if dataset is None or args.dataloader_drop_last:
        return
    if ends_in_batch_of_one(len(dataset), args.per_device_train_batch_size, args.world_size):
        raise ValueError(
            f"{len(dataset)} training sentences in batches of {args.per_device_train_batch_size} per process"
            f" ({max(1, args.world_size)} processes) end in a batch of one, which BN cannot"
            " normalise: leave one sentence out, or pass TrainingArguments(dataloader_drop_last=True) (which"
            " also drops the evaluation's last batch)"
        )


class DataCollatorForSentenceVAE:
    """Pads features with "input_ids" (`<s> w_1 ... w_m </s>` token-id lists) on the right, as
    hf_bnvae.data.collate does: input_ids with pad_token_id, attention_mask 1 on tokens, labels the
    input_ids with -100 on padding (the model shifts them): (B, T) long tensors. It also asks the model for
    the loss without the (B, T, V) logits (`return_logits=False`, as train.py: faster, and an evaluation
    keeps only per-sentence figures) and for a sampled z in evaluation too (`sample_latent=True`, so the
    evaluation loss is the -ELBO's one-sample estimate, as train.py's validation): what
    `compute_vae_metrics` reads."""

    def __init__(self, pad_token_id):
        self.pad_token_id = pad_token_id

    def __call__(self, features):
        if not features:
            raise ValueError("DataCollatorForSentenceVAE: an empty batch")
        sequences = [list(feature["input_ids"]) for feature in features]
        if any(len(s) == 0 for s in sequences):
            raise ValueError("DataCollatorForSentenceVAE: a sentence without tokens")
        length = max(len(s) for s in sequences)
        input_ids = torch.full((len(sequences), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
        for i, sequence in enumerate(sequences):
            input_ids[i, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
            attention_mask[i, : len(sequence)] = 1
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "return_logits": False,
            "sample_latent": True,
        }


# The per-sentence outputs the Trainer collects in evaluation from BNVAEForLanguageModeling batches of
# DataCollatorForSentenceVAE (every field of BNVAELanguageModelingOutput that is not None, the loss apart)
VAE_PREDICTIONS = ("reconstruction_loss", "kl", "kl_per_dimension", "mu", "logvar", "latent", "num_tokens")
LM_PREDICTIONS = ("reconstruction_loss", "num_tokens")


def compute_vae_metrics(eval_pred, mi_seed=0, final_kl_weight=1.0):
    """`compute_metrics` for `Trainer`: dataset-level figures of BNVAEForLanguageModeling on the evaluation
    set, from the per-sentence outputs the Trainer gathers across processes (batches from
    DataCollatorForSentenceVAE). Returns nelbo, reconstruction and kl (nats per sentence, one z sample per
    sentence, KL weight 1), selection_loss (reconstruction + final_kl_weight x KL: train.py's validation
    loss of the method, e.g. 0 for the autoencoder, beta for beta-VAE; for PlateauCallback), ppl_elbo (the
    ELBO's perplexity bound, words + `</s>`), and for a latent model mi (He et al.'s estimator, draws
    seeded by mi_seed) and au (active units); the Trainer adds `eval_`."""
    from .evaluation import active_units, mutual_information, perplexity

    predictions = eval_pred.predictions
    predictions = predictions if isinstance(predictions, tuple) else (predictions,)
    names = {len(VAE_PREDICTIONS): VAE_PREDICTIONS, len(LM_PREDICTIONS): LM_PREDICTIONS}.get(len(predictions))
    if names is None or predictions[0].ndim != 1:
        raise ValueError(
            f"compute_vae_metrics: the evaluation collected {len(predictions)} outputs per batch, not the"
            f" per-sentence figures {VAE_PREDICTIONS} (or the LM's {LM_PREDICTIONS}): batch with"
            " DataCollatorForSentenceVAE, which asks the model for return_logits=False"
        )
    values = {name: torch.as_tensor(value).double() for name, value in zip(names, predictions)}
    reconstruction = values["reconstruction_loss"]
    kl = values.get("kl", torch.zeros_like(reconstruction))
    metrics = {
        "nelbo": float((reconstruction + kl).mean()),
        "reconstruction": float(reconstruction.mean()),
        "kl": float(kl.mean()),
        "selection_loss": float((reconstruction + final_kl_weight * kl).mean()),
        "ppl_elbo": perplexity(float((reconstruction + kl).sum()), int(values["num_tokens"].sum())),
    }
    if "mu" in values:
        metrics["mi"] = mutual_information(
            values["mu"], values["logvar"], generator=torch.Generator().manual_seed(mi_seed)
        )[0]
        metrics["au"] = active_units(values["mu"])[0]
    return metrics


class PlateauCallback(TrainerCallback):
    """The paper's learning-rate rule (`hf_bnvae.trainer_utils.PlateauRule`: reference loss, patience,
    x factor, back to the best model, stop at the max_decays-th decay) on the Trainer's evaluations (one
    per epoch with `eval_strategy="epoch"`): counted from 0, `metric` (default the evaluation loss) of each
    evaluation updates the rule; on a decay the model goes back to the best weights kept in memory and the
    optimizer's learning rate (and the scheduler's base rate, so a constant schedule keeps it) is
    multiplied by factor; on the last decay (or a diverged, non-finite loss) training stops
    (`control.should_training_stop`, never cleared: another callback's stop stands). When training ends
    the model goes back to the best weights, as train.py saves its best epoch. Evaluations outside
    training (a final `trainer.evaluate()`) do not count. Each evaluation's action is logged as
    `plateau_action`. The official VAE rule by default; the LM's: `PlateauCallback(start_epoch=0,
    patience=2)`. `eval_loss` moves with the KL weight while it is annealed: with `compute_vae_metrics`,
    pass `metric="eval_selection_loss"` (reconstruction + the method's final KL weight x KL, train.py's)."""

    def __init__(self, start_epoch=15, patience=5, factor=0.5, max_decays=5, metric="eval_loss"):
        from .trainer_utils import BestWeightsKeeper, PlateauRule

        self.keeper = BestWeightsKeeper(PlateauRule(start_epoch, patience, factor, max_decays))
        self.metric, self.evaluations, self.training = metric, 0, False

    @property
    def rule(self):
        return self.keeper.rule

    def on_train_begin(self, args, state, control, **kwargs):
        self.training = True

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.training = False
        if model is not None:
            self.keeper.restore_best(model)

    def on_evaluate(self, args, state, control, metrics=None, model=None, optimizer=None, lr_scheduler=None, **kwargs):
        if not self.training:  # e.g. the final trainer.evaluate(): not an epoch of the rule
            return control
        if metrics is None or self.metric not in metrics:
            raise ValueError(
                f"PlateauCallback needs {self.metric!r} in the evaluation metrics, got {sorted(metrics or {})}"
            )
        action = self.keeper.update(model, optimizer, self.evaluations, metrics[self.metric])
        self.evaluations += 1
        if action in ("decay", "stop"):  # the keeper went back to the best weights and decayed the optimizer's lr
            if lr_scheduler is not None and hasattr(lr_scheduler, "base_lrs"):
                lr_scheduler.base_lrs = [lr * self.rule.factor for lr in lr_scheduler.base_lrs]
        if action == "diverged":
            self.keeper.restore_best(model)
        if action in ("stop", "diverged"):
            control.should_training_stop = True
        metrics["plateau_action"] = action
        if state.log_history and self.metric in state.log_history[-1]:
            state.log_history[-1]["plateau_action"] = action
        return control


__all__ = [
    "DataCollatorForSentenceVAE",
    "KLAnnealingCallback",
    "PlateauCallback",
    "compute_vae_metrics",
    "ends_in_batch_of_one",
]
