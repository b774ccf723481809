"""transformers' Trainer with hf_bnvae's KL-annealing callback and data collator."""

import pytest
import torch
from transformers import Trainer, TrainingArguments

from hf_bnvae import BNVAEForLanguageModeling, DataCollatorForSentenceVAE, KLAnnealingCallback
from hf_bnvae.data import collate, column, tokenize_texts


def sentences(tokenizer, corpus, n):
    texts = [corpus[i % len(corpus)] for i in range(n)]
    return tokenize_texts(tokenizer, texts).remove_columns(["index", "attention_mask"])


def trainer_for(model, dataset, tokenizer, tmp_path, callback, eval_dataset=None, **overrides):
    args = dict(
        output_dir=str(tmp_path / "trainer"), per_device_train_batch_size=4, learning_rate=1e-3, max_steps=8,
        logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, dataloader_drop_last=False, seed=0,
    )  # fmt: skip
    return Trainer(
        model=model,
        args=TrainingArguments(**{**args, **overrides}),
        train_dataset=dataset,
        eval_dataset=eval_dataset,
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
    assert theirs["return_logits"] is False and theirs["sample_latent"] is True  # train.py's loss path, z drawn
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


def test_the_plateau_callback_decays_reloads_the_best_and_stops(tiny_config, tokenizer, corpus, tmp_path):
    """The rule on the Trainer's own optimizer and constant scheduler, evaluation by evaluation."""
    from transformers.trainer_callback import TrainerControl

    from hf_bnvae import PlateauCallback

    torch.manual_seed(0)
    model = BNVAEForLanguageModeling(tiny_config())
    trainer = trainer_for(model, sentences(tokenizer, corpus, 16), tokenizer, tmp_path, KLAnnealingCallback(0),
                          lr_scheduler_type="constant", max_steps=4)  # fmt: skip
    trainer.create_optimizer_and_scheduler(num_training_steps=4)
    optimizer, scheduler = trainer.optimizer, trainer.lr_scheduler
    callback = PlateauCallback(start_epoch=0, patience=1, factor=0.5, max_decays=2)
    control = TrainerControl()
    outside = {"eval_loss": 10.0}
    callback.on_evaluate(trainer.args, trainer.state, control, metrics=outside, model=model, optimizer=optimizer)
    assert "plateau_action" not in outside and callback.evaluations == 0  # not training: not an epoch
    callback.on_train_begin(trainer.args, trainer.state, control)

    def evaluate(loss):
        metrics = {"eval_loss": loss}
        callback.on_evaluate(trainer.args, trainer.state, control, metrics=metrics, model=model,
                             optimizer=optimizer, lr_scheduler=scheduler)  # fmt: skip
        return metrics["plateau_action"]

    assert evaluate(10.0) == "improved"
    best = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.decoder.lm_head.weight.add_(1.0)  # training moved on
    control.should_training_stop = True  # another callback's stop (e.g. max_steps reached)
    assert evaluate(11.0) == "decay"  # one evaluation without improvement: lr x 0.5, back to the best model
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5e-3) and control.should_training_stop  # kept
    control.should_training_stop = False
    torch.testing.assert_close(model.decoder.lm_head.weight, best["decoder.lm_head.weight"])
    optimizer.step()  # (no gradients: nothing moves)
    scheduler.step()  # a constant schedule keeps the decayed rate
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5e-3)
    assert evaluate(12.0) == "stop" and control.should_training_stop
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.25e-3)
    with torch.no_grad():
        model.decoder.lm_head.weight.add_(1.0)
    callback.on_train_end(trainer.args, trainer.state, control, model=model)  # ends at the best weights
    torch.testing.assert_close(model.decoder.lm_head.weight, best["decoder.lm_head.weight"])


def test_the_plateau_callback_in_a_real_trainer_run(tiny_config, tokenizer, corpus, tmp_path):
    from hf_bnvae import PlateauCallback

    torch.manual_seed(0)
    data = sentences(tokenizer, corpus, 16)
    trainer = trainer_for(BNVAEForLanguageModeling(tiny_config()), data, tokenizer, tmp_path, KLAnnealingCallback(2),
                          eval_dataset=data, max_steps=-1, num_train_epochs=3, eval_strategy="epoch",
                          lr_scheduler_type="constant")  # fmt: skip
    trainer.add_callback(PlateauCallback(start_epoch=0, patience=1, max_decays=5))
    trainer.train()
    actions = [entry["plateau_action"] for entry in trainer.state.log_history if "eval_loss" in entry]
    assert len(actions) == 3 and actions[0] == "improved"
    assert set(actions) <= {"improved", "wait", "decay", "stop"}


@pytest.mark.parametrize("use_latent", [True, False], ids=["BN-VAE", "LSTM LM"])
def test_compute_vae_metrics_agree_with_the_evaluation_of_train_py(
    tiny_config, tokenizer, corpus, tmp_path, use_latent
):
    """The Trainer's evaluation with compute_vae_metrics gives evaluate_language_model's KL, MI and AU (which
    depend on the posteriors only), and for the LM, whose reconstruction has no z, its reconstruction."""
    import functools

    from hf_bnvae import compute_vae_metrics
    from hf_bnvae.data import sentence_loader
    from hf_bnvae.evaluation import evaluate_language_model

    torch.manual_seed(0)
    model = BNVAEForLanguageModeling(tiny_config(use_latent=use_latent))
    data = sentences(tokenizer, corpus, 24)
    trainer = trainer_for(model, data, tokenizer, tmp_path, KLAnnealingCallback(2), eval_dataset=data,
                          per_device_eval_batch_size=5, max_steps=3)  # fmt: skip
    trainer.compute_metrics = functools.partial(compute_vae_metrics, mi_seed=2)  # evaluate_language_model's draws
    trainer.train()
    metrics = trainer.evaluate()
    texts = [corpus[i % len(corpus)] for i in range(24)]
    reference = evaluate_language_model(model, sentence_loader(tokenize_texts(tokenizer, texts), tokenizer, 7))
    assert metrics["eval_nelbo"] == pytest.approx(metrics["eval_reconstruction"] + metrics["eval_kl"])
    assert metrics["eval_loss"] == pytest.approx(metrics["eval_nelbo"], rel=1e-5)  # KL weight 1 after warm-up
    if use_latent:
        for key in ("kl", "mi"):
            assert metrics[f"eval_{key}"] == pytest.approx(reference[key], rel=1e-5), key
        assert metrics["eval_au"] == reference["au"] and reference["kl"] > 0
    else:
        assert "eval_mi" not in metrics and metrics["eval_kl"] == 0
        assert metrics["eval_reconstruction"] == pytest.approx(reference["reconstruction"], rel=1e-5)
        assert metrics["eval_ppl_elbo"] == pytest.approx(reference["ppl_elbo"], rel=1e-5)


def test_compute_vae_metrics_names_a_collator_that_kept_the_logits():
    from transformers import EvalPrediction

    from hf_bnvae import compute_vae_metrics

    logits_and_more = (torch.zeros(4, 6, 10).numpy(), torch.zeros(4).numpy(), torch.zeros(4, 3).numpy())
    with pytest.raises(ValueError, match="DataCollatorForSentenceVAE"):
        compute_vae_metrics(EvalPrediction(predictions=logits_and_more, label_ids=None))


def trainer_script_args(output, *extra):
    """train_with_trainer.py on the fixture sentences with a tiny model: 40 training, 20 validation sentences."""
    from conftest import SENTENCES

    return [
        "--train_file", str(SENTENCES), "--validation_file", str(SENTENCES), "--max_train_samples", "41",
        "--max_eval_samples", "20", "--vocab_size", "200", "--per_device_train_batch_size", "8",
        "--config_overrides", "embedding_size=16,encoder_hidden_size=16,decoder_hidden_size=16,latent_size=4",
        "--num_train_epochs", "2", "--logging_steps", "1", "--use_cpu", "--output_dir", str(output), *extra,
    ]  # fmt: skip


def test_the_trainer_script_trains_evaluates_and_resumes_to_the_same_run(tmp_path):
    """run_clm.py-style: the paper's recipe as TrainingArguments defaults, the KL weight annealed and logged,
    compute_vae_metrics at every evaluation; a run resumed from the Trainer's epoch-1 checkpoint logs the
    losses of an uninterrupted one; the saved folder loads with the Auto classes."""
    import json

    import train_with_trainer
    from transformers import AutoModelForCausalLM

    straight = train_with_trainer.main(trainer_script_args(tmp_path / "straight", "--do_train", "--do_eval"))
    args = straight.args
    assert (args.optim, args.learning_rate, args.lr_scheduler_type, args.max_grad_norm) == ("sgd", 1.0, "constant", 5.0)
    logged = [e for e in straight.state.log_history if "loss" in e]
    assert len(logged) == 10 and logged[0]["kl_weight"] == 0.0  # 40 sentences (the 41st, a batch of one, left out)
    assert [e["kl_weight"] for e in logged] == sorted(e["kl_weight"] for e in logged)  # the warm-up rises
    evaluations = [e for e in straight.state.log_history if "eval_nelbo" in e]
    assert len(evaluations) == 3 and {"eval_kl", "eval_mi", "eval_au", "plateau_action"} <= set(evaluations[0])
    eval_results = json.loads((tmp_path / "straight" / "eval_results.json").read_text())
    assert eval_results["eval_samples"] == 20 and eval_results["eval_kl"] > 0
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "straight")
    assert loaded.config.latent_size == 4 and loaded.config.gamma == 0.6
    first = train_with_trainer.main(trainer_script_args(tmp_path / "parts", "--do_train", "--num_train_epochs", "1"))
    assert first.state.global_step == 5
    resumed = train_with_trainer.main(
        trainer_script_args(
            tmp_path / "parts", "--do_train", "--resume_from_checkpoint", str(tmp_path / "parts" / "checkpoint-5")
        )
    )
    resumed_losses = [e["loss"] for e in resumed.state.log_history if "loss" in e]
    assert resumed_losses == pytest.approx([e["loss"] for e in logged], rel=1e-5)


def test_the_trainer_script_pushes_a_folder_that_loads_with_remote_code(tmp_path, fake_hub):
    import os
    import subprocess
    import sys

    import train_with_trainer

    train_with_trainer.main(
        trainer_script_args(
            tmp_path / "out",
            "--do_train",
            "--num_train_epochs",
            "1",
            "--save_strategy",
            "no",
            "--push_to_hub",
            "--hub_model_id",
            "org/bnvae-trainer",
        )  # fmt: skip
    )
    script = (
        "import sys; sys.modules['hf_bnvae'] = None\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "m = AutoModelForCausalLM.from_pretrained('org/bnvae-trainer', trust_remote_code=True).eval()\n"
        "t = AutoTokenizer.from_pretrained('org/bnvae-trainer', trust_remote_code=True)\n"
        "print(type(m).__name__, m.config.latent_size, len(t))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(fake_hub.cache), "HF_HOME": str(tmp_path / "home")}
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[:2] == ["BNVAEForLanguageModeling", "4"]


def test_the_classifier_fine_tunes_with_a_plain_trainer(tiny_config, tokenizer, corpus, tmp_path):
    """BNVAEForSequenceClassification needs nothing of ours: the Trainer's default collator pads, its
    loss is the classifier's cross-entropy, and a few epochs fit the labelled fixture sentences."""
    from transformers import DataCollatorWithPadding

    from hf_bnvae import BNVAEForSequenceClassification

    labels = [i % 2 for i in range(len(corpus))]  # arbitrary labels, to be fitted
    data = tokenize_texts(tokenizer, corpus).remove_columns(["index"]).add_column("labels", labels)
    torch.manual_seed(0)
    model = BNVAEForSequenceClassification(tiny_config(num_labels=2))
    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            str(tmp_path / "clf"),
            per_device_train_batch_size=8,
            learning_rate=1e-2,
            num_train_epochs=30,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            logging_steps=2,
            seed=0,
        ),  # fmt: skip
        train_dataset=data,
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    before = trainer.evaluate(eval_dataset=data)["eval_loss"]
    trainer.train()
    after = trainer.evaluate(eval_dataset=data)["eval_loss"]
    assert after < 0.5 * before
