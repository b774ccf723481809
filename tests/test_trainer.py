"""transformers' Trainer with hf_bnvae's KL-annealing callback and data collator."""

import pytest
import torch
from transformers import Trainer, TrainingArguments

from hf_bnvae import BNVAEForLanguageModeling, DataCollatorForSentenceVAE, KLAnnealingCallback
from hf_bnvae.data import collate, column, tokenize_texts


def sentences(tokenizer, corpus, n):
    texts = [corpus[i % len(corpus)] for i in range(n)]
    return tokenize_texts(tokenizer, texts).remove_columns(["index", "attention_mask"])


def trainer_for(model, dataset, tokenizer, tmp_path, callback, **overrides):
    args = dict(
        output_dir=str(tmp_path / "trainer"), per_device_train_batch_size=4, learning_rate=1e-3, max_steps=8,
        logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, dataloader_drop_last=False, seed=0,
    )  # fmt: skip
    return Trainer(
        model=model,
        args=TrainingArguments(**{**args, **overrides}),
        train_dataset=dataset,
        data_collator=DataCollatorForSentenceVAE(tokenizer.pad_token_id),
        callbacks=[callback],
    )


def test_the_callback_anneals_the_kl_weight_and_logs_it(tiny_config, tokenizer, corpus, tmp_path):
    torch.manual_seed(0)
    model = BNVAEForLanguageModeling(tiny_config())
    trainer = trainer_for(model, sentences(tokenizer, corpus, 32), tokenizer, tmp_path, KLAnnealingCallback(4))
    trainer.train()
    logged = [(entry["step"], entry["kl_weight"]) for entry in trainer.state.log_history if "loss" in entry]
    # step s (1-based) was taken with the weight of global step s - 1: linear 0 -> 1 over 4 steps
    assert logged == [(s, min(1.0, (s - 1) / 4)) for s in range(1, 9)]
    assert model.kl_weight == 1.0


def test_a_constant_beta_method_from_the_table(tiny_config, tokenizer, corpus, tmp_path):
    model = BNVAEForLanguageModeling(tiny_config(gamma=0.0))
    callback = KLAnnealingCallback(4, method="beta_vae", beta=0.4)
    trainer = trainer_for(model, sentences(tokenizer, corpus, 16), tokenizer, tmp_path, callback, max_steps=3)
    trainer.train()
    assert {entry["kl_weight"] for entry in trainer.state.log_history if "loss" in entry} == {0.4}


def test_a_training_set_ending_in_a_batch_of_one_is_refused(tiny_config, tokenizer, corpus, tmp_path):
    model = BNVAEForLanguageModeling(tiny_config())
    trainer = trainer_for(model, sentences(tokenizer, corpus, 9), tokenizer, tmp_path, KLAnnealingCallback(4))
    with pytest.raises(ValueError, match="end in a batch of one.*dataloader_drop_last=True"):
        trainer.train()
    dropped = trainer_for(
        model, sentences(tokenizer, corpus, 9), tokenizer, tmp_path, KLAnnealingCallback(4), dataloader_drop_last=True
    )
    dropped.train()  # the batch of one is dropped


def test_the_collator_pads_as_train_py_and_gives_the_same_objective(tiny_config, tokenizer, corpus):
    dataset = sentences(tokenizer, corpus, 6)
    ids = column(dataset)
    ours = collate(ids, list(range(6)), tokenizer.pad_token_id)
    theirs = DataCollatorForSentenceVAE(tokenizer.pad_token_id)([{"input_ids": s} for s in ids])
    assert torch.equal(theirs["input_ids"], ours["input_ids"])
    assert torch.equal(theirs["attention_mask"], ours["attention_mask"])
    assert torch.equal(theirs["labels"], ours["input_ids"].masked_fill(ours["attention_mask"] == 0, -100))
    torch.manual_seed(0)
    model = BNVAEForLanguageModeling(tiny_config()).train()
    model.kl_weight = 0.3  # what the callback sets; train.py passes it
    torch.manual_seed(1)
    trainer_loss = model(**theirs).loss
    torch.manual_seed(1)
    batch = {k: ours[k] for k in ("input_ids", "attention_mask")}
    train_py_loss = model(**batch, labels=batch["input_ids"], kl_weight=0.3, return_logits=False).loss
    # the same z and objective; the fused output layer of train.py sums in another order: fp32 rounding only
    assert trainer_loss.item() == pytest.approx(train_py_loss.item(), rel=5e-5)
    with pytest.raises(ValueError, match="an empty batch"):
        DataCollatorForSentenceVAE(0)([])
