"""train.py: multi-process, resume, bf16, the method table and every baseline flag, the data path, bad input."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
import train
from accelerate import Accelerator
from transformers import AutoTokenizer

from hf_bnvae import BNVAEConfig, BNVAEForLanguageModeling
from hf_bnvae.checkpoints import list_checkpoints, resolve_checkpoint, save_checkpoint
from hf_bnvae.data import collate, length_grouped_batches, read_text_file, sentence_loader, tokenize_texts
from hf_bnvae.evaluation import evaluate_language_model
from hf_bnvae.methods import METHODS, cyclical_kl_weight, linear_kl_weight, methods_of, resolve_method
from hf_bnvae.trainer_utils import (
    BestWeightsKeeper,
    PlateauRule,
    aggressive_encoder_updates,
    default_num_threads,
    make_accelerator,
)

# -- a real 2-process run -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "sync_bn", [(), ("--sync_bn",), ("--method", "aggressive")], ids=["per-process-bn", "sync-bn", "aggressive"]
)
def test_two_cpu_processes_train_in_sync(tmp_path, root, tiny_args, sync_bn):
    """Also with aggressive training, whose inner loop must stop at the same step on every process."""
    env = {**os.environ, "PYTHONPATH": f"{root / 'training'}:{root / 'tests'}"}
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(root / "tests" / "ddp_probe.py"),
        str(tmp_path),
        *tiny_args(tmp_path / "out", "--max_train_samples", "96", "--max_train_steps", "6", *sync_bn),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["num_processes"] for r in ranks] == [2, 2]
    assert [r["steps"] for r in ranks] == [6, 6]  # 96 sentences / (2 processes x 8) = one epoch
    # the validation set (40 sentences) was split over the processes and gathered: none lost or counted twice
    assert [r["history"][-1]["valid_num_sentences"] for r in ranks] == [40, 40]
    valid = [{k: v for k, v in r["history"][-1].items() if k.startswith("valid_")} for r in ranks]
    assert valid[0] == valid[1]  # every rank computed the metrics on the same gathered set
    for key, value in ranks[0]["state"].items():  # parameters and BN running statistics alike
        torch.testing.assert_close(ranks[1]["state"][key], value, rtol=0, atol=0)
    # initialised in U(-0.01, 0.01): a larger weight shows that training did move the parameters
    assert ranks[0]["state"]["decoder.lm_head.weight"].abs().max() > 0.01
    # the 96 sentences / batch 8 = 12 batches were shared out: 6 each, none twice (accelerate's shards)
    assert sorted(ranks[0]["seen"] + ranks[1]["seen"]) == list(range(96))


# -- resuming mid-epoch ---------------------------------------------------------------------------


def test_threads_follow_omp_num_threads_except_under_accelerate_launch():
    cores = os.cpu_count() or 1
    assert default_num_threads(1, environ={"OMP_NUM_THREADS": "1"}) == 1  # two jobs sharing the cores
    assert default_num_threads(1, environ={}) == cores
    # accelerate launch sets OMP_NUM_THREADS=1 for one process too: the cores are shared among its processes
    launched = {"OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "True", "LOCAL_WORLD_SIZE": "1"}
    assert default_num_threads(1, environ=launched) == cores
    assert default_num_threads(2, environ={**launched, "LOCAL_WORLD_SIZE": "2"}) == max(1, cores // 2)


def test_resume_reaches_the_same_losses(tmp_path, train_run):
    _, straight = train_run("--max_train_steps", "8", name="straight")
    _, first = train_run("--max_train_steps", "4", "--checkpointing_steps", "2", name="parts")
    assert [p.name for p in list_checkpoints(tmp_path / "parts" / "checkpoints")] == ["step_2", "step_4"]
    _, second = train_run("--max_train_steps", "8", "--resume_from_checkpoint", "latest", name="parts")
    # skip_first_batches resumes mid-epoch on the same batches; the step losses span the whole run
    assert second["optimizer_steps"] == 8 and second["train_step_losses"][:4] == first["train_step_losses"]
    assert second["train_step_losses"] == pytest.approx(straight["train_step_losses"], abs=1e-6)


def test_resume_across_an_epoch_boundary_keeps_the_epoch_order(tmp_path, train_run):
    """The batch order of each epoch depends on the epoch: a resumed run must not replay epoch 0's."""
    flags = ("--max_train_samples", "64", "--num_train_epochs", "3")  # 8 steps per epoch
    _, straight = train_run(*flags, name="straight")
    # stopped in epoch 2 (step 12), and at the last batch of epoch 1 (step 8: the epoch's end is still to do)
    for stop, every in (("12", "4"), ("8", "8")):
        _, part = train_run(*flags, "--max_train_steps", stop, "--checkpointing_steps", every, name=f"parts{stop}")
        _, resumed = train_run(*flags, "--resume_from_checkpoint", "latest", name=f"parts{stop}")
        assert resumed["train_step_losses"] == pytest.approx(straight["train_step_losses"], abs=1e-6)
        for key in ("valid_nelbo", "valid_kl", "train_reconstruction", "train_kl"):  # the epoch's sums survive
            assert [h[key] for h in resumed["history"]] == pytest.approx([h[key] for h in straight["history"]]), key
        # the time before the checkpoint (taken at the part's last step) is kept, whatever the machine's load
        assert resumed["train_seconds"] > part["train_seconds"] > 0
        assert resumed["train_cpu_seconds"] > part["train_cpu_seconds"] > 0


def test_cpu_seconds_are_unknown_when_resumed_from_a_checkpoint_that_did_not_count_them(tmp_path, train_run):
    """A run paused by SIGSTOP spends wall time but no CPU time, so train_cpu_seconds is what a run cost;
    a checkpoint written before it was counted (0.3) cannot say how much its part cost: None, not a part."""
    from hf_bnvae.checkpoints import STATE_FILE

    flags = ("--max_train_samples", "64", "--num_train_epochs", "2")
    train_run(*flags, "--max_train_steps", "4", "--checkpointing_steps", "4", name="old")
    state_file = list_checkpoints(tmp_path / "old" / "checkpoints")[-1] / STATE_FILE
    state = json.loads(state_file.read_text())
    del state["train_cpu_seconds"]
    state_file.write_text(json.dumps(state))
    _, resumed = train_run(*flags, "--resume_from_checkpoint", "latest", name="old")
    assert resumed["train_cpu_seconds"] is None and resumed["train_seconds"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["after-checkpoint", "during-checkpoint-write"])
def test_sigkilled_run_resumes_to_the_uninterrupted_result(tmp_path, root, tiny_args, train_run, moment):
    """A real training process is SIGKILLed once a checkpoint exists (or as soon as one is being
    written), resumed from the latest complete checkpoint, and ends with the same metrics and weights
    as a run that was never interrupted."""
    import signal
    import time

    from safetensors.torch import load_file

    flags = ("--checkpointing_steps", "10")  # 1 epoch of 50 steps
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, str(root / "training" / "train.py"), *tiny_args(killed, *flags)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # killed while the second checkpoint is being written, the first one must serve
    pattern = ".tmp-step_20" if moment == "during-checkpoint-write" else "step_*"
    deadline = time.monotonic() + 300
    while not list((killed / "checkpoints").glob(pattern)) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "model.safetensors").exists() and list_checkpoints(killed / "checkpoints")
    if moment == "during-checkpoint-write":
        # step_20 only if its write finished in the millisecond between seeing it and the kill
        assert [p.name for p in list_checkpoints(killed / "checkpoints")][-1] in ("step_10", "step_20")

    _, resumed = train_run(*flags, "--resume_from_checkpoint", "latest", name="killed")
    _, straight = train_run(*flags, name="straight")
    for key in ("valid_nelbo", "valid_kl", "valid_mi", "train_reconstruction", "train_kl"):
        assert [h[key] for h in resumed["history"]] == pytest.approx([h[key] for h in straight["history"]]), key
    assert resumed["train_step_losses"] == pytest.approx(straight["train_step_losses"], abs=1e-6)
    weights = [load_file(tmp_path / name / "model.safetensors") for name in ("killed", "straight")]
    for key, value in weights[1].items():
        torch.testing.assert_close(weights[0][key], value, rtol=0, atol=0)


def test_interrupted_checkpoint_never_replaces_the_last_good_one(tmp_path):
    class FailingAccelerator:
        is_main_process = True

        def wait_for_everyone(self):
            pass

        def save_state(self, path):
            os.makedirs(path)
            open(os.path.join(path, "model.safetensors"), "w").write("half")
            raise KeyboardInterrupt

    good = tmp_path / "step_4"
    good.mkdir()
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(FailingAccelerator(), tmp_path, 6, {"epoch": 1}, {})
    assert resolve_checkpoint("latest", tmp_path) == good
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        resolve_checkpoint("latest", tmp_path / "nothing")


# -- mixed precision ------------------------------------------------------------------------------


def test_bf16_run_is_finite_with_fp32_kl_and_bn(train_run, model, batch):
    _, results = train_run("--mixed_precision", "bf16", "--max_train_steps", "4")
    assert all(math.isfinite(x) for x in results["train_step_losses"])
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**batch, labels=batch["input_ids"])
    assert out.logits.dtype == torch.bfloat16  # the matmuls did run in bf16
    assert out.mu.dtype == out.kl.dtype == out.reconstruction_loss.dtype == out.loss.dtype == torch.float32
    assert model.bnvae.latent_head.bn.running_mean.dtype == torch.float32
    torch.testing.assert_close(out.mu.std(0, unbiased=False), torch.full((8,), 0.6), atol=0, rtol=0.01)


# -- the plateau rule ----------------------------------------------------------------------------


def test_plateau_rule_follows_the_official_reference_loss_and_stops_at_the_last_decay():
    rule = PlateauRule(start_epoch=2, patience=2, factor=0.5, max_decays=2)
    losses = [10, 11, 12, 9, 9.5, 9.2]  # epochs 0-5
    actions = [rule.update(epoch, loss) for epoch, loss in enumerate(losses)]
    # epoch 2: 2nd epoch above the reference 10 -> decay, the reference becomes 12; epoch 3: a new best;
    # epoch 5: 9.2 is above the reference 9 (the best) -> counts; 4 and 5 -> decay 2 = the last: stop.
    # (Ours before: a new best was needed to reset the count, and one more phase ran after the 2nd decay.)
    assert actions == ["improved", "wait", "decay", "improved", "wait", "stop"]
    assert (rule.best_epoch, rule.best_loss, rule.decays, rule.reference_loss) == (3, 9, 2, 9.2)
    # after a decay the reference is that epoch's loss: an epoch below it (not below the best) resets the count
    rule = PlateauRule(start_epoch=0, patience=2, max_decays=5)
    actions = [rule.update(e, loss) for e, loss in enumerate([10, 12, 13, 11, 12, 11.5, 12, 12.5])]
    # epoch 3 (11 < reference 13, above the best 10) resets the count: the decays come at 5 and 7, not 4
    assert actions == ["improved", "wait", "decay", "wait", "wait", "decay", "wait", "decay"]
    assert rule.reference_loss == 12.5 and rule.decays == 3
    early = PlateauRule(start_epoch=5, patience=1)  # not before start_epoch, however long the wait
    actions = [early.update(e, loss) for e, loss in enumerate([10, 11, 12, 13, 14, 15])]
    assert actions == ["improved"] + ["wait"] * 4 + ["decay"]
    off = PlateauRule(start_epoch=0, patience=1, max_decays=0)
    assert [off.update(e, loss) for e, loss in enumerate([10, 11, 12])] == ["improved", "wait", "wait"]
    restored = PlateauRule(start_epoch=2, patience=2, factor=0.5, max_decays=2)  # settings come from the run
    restored.load_state_dict(rule.state_dict())
    assert restored.state_dict() == rule.state_dict() and set(rule.state_dict()) == {
        "best_loss",
        "best_epoch",
        "reference_loss",
        "epochs_without_improvement",
        "decays",
    }


def test_the_lm_uses_the_official_lm_plateau_settings():
    lm = train.parse_args(["--method", "lm"])
    assert (lm.plateau_start_epoch, lm.plateau_patience, lm.plateau_max_decays) == (0, 2, 5)
    vae = train.parse_args(["--method", "vae"])
    assert (vae.plateau_start_epoch, vae.plateau_patience, vae.plateau_factor) == (15, 5, 0.5)
    assert train.parse_args(["--method", "lm", "--plateau_patience", "3"]).plateau_patience == 3


def test_plateau_rule_in_training_halves_lr_reloads_best_and_stops(tmp_path, train_run, tiny_args, sentences_file):
    flags = ("--num_train_epochs", "8", "--plateau_start_epoch", "0", "--plateau_patience", "1")
    flags += ("--plateau_max_decays", "2", "--learning_rate", "3", "--kl_warmup_epochs", "0")
    _, metrics = train_run(*flags)
    args = train.parse_args(tiny_args(tmp_path / "run", *flags))
    history = metrics["history"]
    actions = [h["plateau_action"] for h in history]
    assert "decay" in actions and actions.count("decay") + actions.count("stop") <= 2
    assert "stop" not in actions[:-1]
    for before, after in zip(history, history[1:]):
        assert after["lr"] == pytest.approx(before["lr"] * (0.5 if before["plateau_action"] == "decay" else 1.0))
    best = min(range(len(history)), key=lambda i: history[i]["valid_nelbo"])
    assert all(
        h["valid_selection_loss"] == pytest.approx(h["valid_nelbo"]) for h in history
    )  # the VAE's loss is the -ELBO
    assert metrics["best_epoch"] == best
    # the saved model is the best epoch's: its validation -ELBO is that epoch's
    model = BNVAEForLanguageModeling.from_pretrained(tmp_path / "run")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "run")
    valid = tokenize_texts(tokenizer, read_text_file(sentences_file).texts[: args.max_eval_samples])
    loader = sentence_loader(valid, tokenizer, args.per_device_eval_batch_size)
    saved = evaluate_language_model(model, loader, Accelerator(cpu=True), seed=args.seed)
    assert saved["nelbo"] == pytest.approx(history[best]["valid_nelbo"], abs=1e-4)


def test_divergence_is_reported_not_saved(tmp_path, train_run):
    with pytest.raises(RuntimeError, match="training diverged: the validation loss is (nan|inf) after epoch 1"):
        train_run("--learning_rate", "1e12", "--kl_warmup_epochs", "0")
    assert not (tmp_path / "run" / "model.safetensors").exists()


# -- the method table: each baseline does what it says --------------------------------------------


def test_kl_annealing_schedule():
    assert [linear_kl_weight(s, 10) for s in (0, 5, 10, 20)] == [0.0, 0.5, 1.0, 1.0]
    assert linear_kl_weight(5, 10, final_weight=0.4) == pytest.approx(0.2)
    assert linear_kl_weight(0, 0) == 1.0


def test_cyclical_schedule_restarts_like_the_official_code():
    """10 steps per epoch, cycle 3 epochs, warm-up 15 steps: resets at the start of epochs 1, 4, 7
    (the official `(epoch - 1) % cycle == 0`), rising 1/15 per step in between."""
    w = [cyclical_kl_weight(s, steps_per_epoch=10, cycle_epochs=3, warmup_steps=15) for s in range(80)]
    assert w[0] == 0.0 and w[9] == pytest.approx(9 / 15)  # epoch 0: the first (one-epoch) cycle
    assert w[10] == 0.0 and w[11] == pytest.approx(1 / 15) and w[25] == 1.0 and w[39] == 1.0  # epochs 1-3
    assert w[40] == 0.0 and w[47] == pytest.approx(7 / 15)  # epoch 4: reset
    assert w[70] == 0.0 and w[79] == pytest.approx(9 / 15)  # epoch 7: reset
    assert cyclical_kl_weight(55, 10, 3, 15, final_weight=0.5) == pytest.approx(0.5)


def recipe_of(*argv):
    return train.parse_args(["--method", *argv]).recipe


def test_method_flags_set_the_right_quantities():
    assert recipe_of("bnvae").config == {"gamma": 0.6} and recipe_of("bnvae").label == "BN-VAE (0.6)"
    assert recipe_of("bnvae", "--gamma", "0.7").config == {"gamma": 0.7}
    vae = recipe_of("vae")
    assert vae.config == {"gamma": 0.0} and vae.kl_weight(50, 100, 1) == 0.5
    ae = recipe_of("ae")
    assert all(ae.kl_weight(s, 100, 1) == 0.0 for s in (0, 50, 100, 10**6))
    assert ae.selection_loss(40.0, 30.0) == 40.0 and vae.selection_loss(40.0, 30.0) == 70.0
    beta = recipe_of("beta_vae", "--beta", "0.3")  # constant beta, no annealing (the official text_beta.py)
    assert all(beta.kl_weight(s, 100, 10) == pytest.approx(0.3) for s in (0, 1, 50, 10**6))
    assert beta.selection_loss(40.0, 30.0) == pytest.approx(49.0)  # selected on the beta-weighted loss
    assert beta.label == "beta-VAE (0.3)"
    cyclical = recipe_of("cyclical", "--cycle_epochs", "2")
    assert cyclical.kl_weight(100, 50, 100) == 0.0 and cyclical.kl_weight(150, 50, 100) == 1.0
    assert cyclical.kl_weight(300, 50, 100) == 0.0 and cyclical.kl_weight(325, 50, 100) == 0.5
    fb = recipe_of("free_bits", "--free_bits", "3", "--free_bits_per_dimension")
    assert fb.config == {"gamma": 0.0, "free_bits": 3.0, "free_bits_per_dimension": True}
    delta = recipe_of("delta_vae", "--delta_rate", "0.2").config
    assert delta == {"gamma": 0.0, "delta_rate": 0.2, "encoder_init_range": 0.01}
    assert recipe_of("aggressive").aggressive and not recipe_of("vae").aggressive
    assert recipe_of("lm").config["use_latent"] is False


def test_every_method_has_defaults_help_and_a_label():
    """One table: argparse's help, the labels in tables and cards and the defaults all come from it."""
    help_text = train.build_parser().format_help()
    labels = [resolve_method(name).label for name in METHODS]
    assert len(set(labels)) == len(METHODS) and "{" not in "".join(labels)  # distinct, flag values filled in
    assert resolve_method("free_bits", free_bits=2.5).label == "free bits (2.5)"
    for method in (METHODS[name] for name in methods_of("bnvae")):  # train.py's (the dialogue ones: train_dialogue.py)
        for flag, spec in method.flags.items():
            assert f"--{flag}" in help_text
            if not isinstance(spec.default, bool):
                assert f"(default {spec.default})" in " ".join(help_text.split())


@pytest.mark.parametrize("method", methods_of("bnvae"))  # the dialogue methods train in test_dialogue_data.py
def test_every_method_trains(tmp_path, train_run, method):
    model, results = train_run("--method", method, "--max_train_samples", "64")
    history = results["history"][-1]
    assert math.isfinite(history["valid_nelbo"]) and results["optimizer_steps"] == 8
    saved = json.loads((tmp_path / "run" / "all_results.json").read_text())
    assert saved["method"] == method and saved["method_label"] == resolve_method(method).label
    assert (tmp_path / "run" / "training_curves.png").stat().st_size > 0
    if method == "lm":
        assert model.bnvae is None and history["valid_kl"] == 0.0
    if method == "bnvae":
        assert model.config.gamma == 0.6
    if method == "free_bits":
        assert model.config.free_bits == 4.0
    if method == "delta_vae":
        assert history["valid_kl"] >= 8 * 0.15 - 1e-4
    if method == "aggressive":  # the encoder had extra steps in epoch 1 (at least one block of 15)
        assert results["history"][0]["encoder_steps"] >= 15 * 8


def test_aggressive_inner_loop_stops_when_the_block_loss_rises():
    """He et al.: every 15 encoder steps compare the per-token loss of the block with the previous block."""
    losses = [5.0] * 15 + [4.0] * 15 + [4.5] * 15 + [1.0] * 60  # block means 5, 4, 4.5: worse at step 45
    calls = []

    def step(i):
        calls.append(i)
        return losses[i - 1] * 10, 10  # summed loss over 10 tokens

    assert aggressive_encoder_updates(step) == 45 and calls == list(range(1, 46))
    assert aggressive_encoder_updates(lambda i: (100.0 / i, 1)) == 99  # always improving: the cap, 99 steps
    assert aggressive_encoder_updates(lambda i: (1.0, 1), max_steps=40, check_every=10) == 39  # equal is not worse


@pytest.mark.parametrize("method, best", [("ae", 1), ("vae", 0), ("beta_vae", 1)])
def test_model_selection_metric(train_run, monkeypatch, method, best):
    """Selection on reconstruction + final KL weight x KL, as the official scripts: the AE by its
    reconstruction, beta-VAE (0.1) by the beta-weighted loss, the VAE by the -ELBO. Validation results
    are scripted so that the three disagree."""
    scripted = iter(
        [dict(reconstruction=50.0, kl=1.0), dict(reconstruction=40.0, kl=30.0), dict(reconstruction=45.0, kl=30.0)]
    )
    real_evaluate = train.evaluate_language_model

    def fake_evaluate(*args, **kwargs):
        metrics = real_evaluate(*args, **kwargs)
        metrics.update(next(scripted))
        metrics["nelbo"] = metrics["reconstruction"] + metrics["kl"]
        return metrics

    monkeypatch.setattr(train, "evaluate_language_model", fake_evaluate)
    extra = ("--beta", "0.1") if method == "beta_vae" else ()
    _, results = train_run("--method", method, *extra, "--num_train_epochs", "3", "--max_train_samples", "64")
    assert results["best_epoch"] == best


def test_pretrained_encoder_initialisation(tmp_path, train_run, tiny_args):
    ae, _ = train_run("--method", "ae", "--max_train_samples", "64", name="ae")
    args = train.parse_args(
        tiny_args(tmp_path / "fb", "--method", "free_bits", "--init_encoder_from", str(tmp_path / "ae"))
    )
    tokenizer = train.load_tokenizer(args, ["unused: the AE's tokenizer is loaded"])
    assert tokenizer.get_vocab() == AutoTokenizer.from_pretrained(tmp_path / "ae").get_vocab()
    model = train.build_model(args, tokenizer)
    for key, value in ae.bnvae.encoder.state_dict().items():
        torch.testing.assert_close(model.bnvae.encoder.state_dict()[key], value, rtol=0, atol=0)
    fresh = train.build_model(train.parse_args(tiny_args(tmp_path / "x", "--method", "free_bits")), tokenizer)
    assert not torch.equal(model.bnvae.encoder.to_posterior.weight, fresh.bnvae.encoder.to_posterior.weight)


# -- the data path --------------------------------------------------------------------------------


def test_batches_group_lengths_and_never_hold_one_sentence():
    lengths = [5, 9, 5, 7, 12, 3, 8, 8, 4, 6, 11]
    for epoch in range(5):
        batches = length_grouped_batches(lengths, 2, seed=0, epoch=epoch)
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        assert min(len(b) for b in batches) >= 2
    assert length_grouped_batches(lengths, 4, seed=1, epoch=0) != length_grouped_batches(lengths, 4, seed=1, epoch=1)
    assert length_grouped_batches(lengths, 4, seed=1, epoch=2) == length_grouped_batches(lengths, 4, seed=1, epoch=2)
    ordered = length_grouped_batches(lengths, 4)
    assert [lengths[i] for b in ordered for i in b] == sorted(lengths)


def test_loader_pads_groups_and_keeps_the_global_rng(tokenizer, corpus):
    dataset = tokenize_texts(tokenizer, corpus * 2 + ["the"])  # 17 sentences: a last batch of one is merged
    loader = sentence_loader(dataset, tokenizer, batch_size=4, seed=3)
    loader.batch_sampler.set_epoch(1)
    state = torch.random.get_rng_state()
    batches = list(loader)
    assert torch.equal(torch.random.get_rng_state(), state)  # batching does not move dropout / z noise
    assert len(batches) == len(loader) == 4 and min(len(b["index"]) for b in batches) >= 2
    assert sorted(i for b in batches for i in b["index"].tolist()) == list(range(17))
    for b in batches:
        lengths = b["attention_mask"].sum(-1)
        assert b["input_ids"].shape[1] == lengths.max()  # padded to the longest of its own batch
        assert (b["input_ids"][b["attention_mask"] == 0] == tokenizer.pad_token_id).all()
    again = list(sentence_loader(dataset, tokenizer, batch_size=4, seed=3))  # epoch 0
    assert [b["index"].tolist() for b in again] != [b["index"].tolist() for b in batches]


def test_collate_pads_right_and_gathers_columns():
    sequences = [[1, 5, 2], [1, 6, 7, 8, 2], [1, 9, 2]]
    batch = collate(sequences, [1, 2], pad_token_id=0, columns={"labels": [3, 4, 5]})
    assert batch["input_ids"].tolist() == [[1, 6, 7, 8, 2], [1, 9, 2, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert batch["index"].tolist() == [1, 2] and batch["labels"].tolist() == [4, 5]


def test_loader_keeps_the_dataset_index_of_a_selection(tokenizer, corpus):
    subset = tokenize_texts(tokenizer, corpus).select([6, 1, 3])
    batches = list(sentence_loader(subset, tokenizer, batch_size=3))
    assert sorted(i for b in batches for i in b["index"].tolist()) == [1, 3, 6]
    for b in batches:  # each row is the sentence its index names
        for row, i in enumerate(b["index"].tolist()):
            length = int(b["attention_mask"][row].sum())
            assert b["input_ids"][row, :length].tolist() == tokenizer(corpus[i])["input_ids"]


def test_every_training_step_starts_with_one_collate_call(train_run, monkeypatch):
    """The hook ../shared/official_bench times steps by: train.collate(token-id lists, indices, pad id)."""
    calls = []

    def counting(sequences, indices, pad_token_id):
        calls.append(sum(len(sequences[i]) - 1 for i in indices))  # words + </s>, the official token count
        return collate(sequences, indices, pad_token_id)

    monkeypatch.setattr(train, "collate", counting)
    _, results = train_run("--num_train_epochs", "1", "--iw_samples", "0")
    assert len(calls) == results["optimizer_steps"] > 0 and min(calls) > 0


def test_max_seq_length_keeps_the_end_token(tokenizer):
    dataset = tokenize_texts(tokenizer, ["the cat sat on the mat", "a dog"], max_length=4)
    assert dataset["input_ids"] == [tokenizer("the cat")["input_ids"], tokenizer("a dog")["input_ids"]]


# -- bad input ------------------------------------------------------------------------------------


def test_missing_files_and_folders_are_named_before_anything_loads(tmp_path, tiny_args, capsys):
    for flag, name in (("--train_file", "nope.txt"), ("--test_file", "nope.txt"), ("--resume_from_checkpoint", "nope")):
        with pytest.raises(SystemExit):
            train.parse_args(tiny_args(tmp_path / "run", flag, str(tmp_path / name)))
        assert f"{flag} {tmp_path / name}: " in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="data file not found: .*nope.txt"):
        read_text_file(tmp_path / "nope.txt")


def test_empty_file(tmp_path, train_run):
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(ValueError, match="data file is empty: .*empty.txt"):
        train_run("--validation_file", str(tmp_path / "empty.txt"))


def test_non_utf8_bytes_name_file_and_line(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"a fine line\nanother one\nbad \xff\xfe byte\n")
    with pytest.raises(ValueError, match=r"bad.txt, line 3: bytes that are not UTF-8"):
        read_text_file(tmp_path / "bad.txt")


def test_blank_lines_are_dropped_and_counted(tmp_path):
    (tmp_path / "blank.txt").write_text("one line\n\n   \nanother line\n\n")
    corpus = read_text_file(tmp_path / "blank.txt")
    assert corpus.texts == ["one line", "another line"] and corpus.blank_lines == 3
    (tmp_path / "only_blank.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="no sentences, only 2 blank lines"):
        read_text_file(tmp_path / "only_blank.txt")


def test_labelled_lines(tmp_path):
    (tmp_path / "labelled.txt").write_text("1\tgood food\n0\tbad service\n")
    corpus = read_text_file(tmp_path / "labelled.txt")
    assert corpus.texts == ["good food", "bad service"] and corpus.labels == ["1", "0"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--preset", "wiki"], "argument --preset: invalid choice: 'wiki'"),
        (["--method", "vampprior"], "argument --method: invalid choice: 'vampprior'"),
        (["--method", "vae", "--gamma", "0.6"], "--gamma only applies to --method bnvae"),
        (["--method", "bnvae", "--free_bits", "4"], "--free_bits only applies to --method free_bits"),
        (
            ["--method", "vae", "--free_bits_per_dimension"],
            "--free_bits_per_dimension only applies to --method free_bits",
        ),
        (["--method", "bnvae", "--gamma", "0"], "--gamma 0.0 leaves BN-VAE without its bound"),
        (["--method", "lm", "--init_encoder_from", "x"], "--init_encoder_from needs a VAE-type method"),
        (
            ["--per_device_train_batch_size", "1"],
            "--per_device_train_batch_size 1: must be >= 2 (BN cannot normalise a batch of one)",
        ),
        (["--push_to_hub"], "--push_to_hub needs --hub_model_id"),
        (["--tokenizer_name", "x", "--vocab_size", "500"], "cannot be combined with --tokenizer_name"),
        (
            ["--method", "vae", "--init_encoder_from", "x", "--vocab_size", "500"],
            "cannot be combined with --init_encoder_from",
        ),
        (["--push_to_hub", "--hub_model_id", "o/n", "--iw_samples", "0"], "needs a measured NLL"),
        (["--checkpointing_steps", "10steps"], "'10steps' is neither a positive integer (every n steps) nor 'epoch'"),
        (["--num_train_epochs", "0"], "--num_train_epochs 0: must be >= 1"),
        (["--gradient_accumulation_steps", "0"], "--gradient_accumulation_steps 0: must be >= 1"),
        (["--max_seq_length", "1"], "--max_seq_length 1: must be >= 3"),
        (["--learning_rate", "0"], "--learning_rate 0.0: must be > 0"),
        (["--max_eval_samples", "1"], "--max_eval_samples 1: must be >= 2"),
        (["--plateau_factor", "2"], "--plateau_factor 2.0: must be <= 1"),
        (["--method", "free_bits", "--free_bits", "-1"], "--free_bits -1.0: must be > 0"),
        (["--seed", "-1"], "--seed -1: must be >= 0"),
        (["--method", "vae", "--init_encoder_from", "./missing"], "--init_encoder_from ./missing: no such folder"),
        (["--tokenizer_name", "a/b/c"], "--tokenizer_name a/b/c: no such folder (and not a hub id 'org/name')"),
    ],
)
def test_bad_flags(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_a_validation_file_of_one_sentence_fails_before_training(tmp_path, train_run, sentences_file):
    (tmp_path / "one.txt").write_text(sentences_file.read_text().splitlines()[0] + "\n")
    with pytest.raises(ValueError, match="one.txt has 1 sentence\\(s\\); the validation metrics"):
        train_run("--validation_file", str(tmp_path / "one.txt"))
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


def test_preset_defaults_come_from_one_table():
    default = train.parse_args([])
    assert (default.num_train_epochs, default.vocab_size, default.max_train_samples) == (4, 10000, 30000)
    yahoo = train.parse_args(["--preset", "yahoo"])
    assert (yahoo.num_train_epochs, yahoo.kl_warmup_epochs, yahoo.vocab_size) == (100, 10.0, None)
    assert train.parse_args(["--preset", "yahoo", "--num_train_epochs", "3"]).num_train_epochs == 3
    assert train.parse_args(["--optimizer", "adam"]).learning_rate == 1e-3


def test_the_demo_preset_trains_a_larger_code_on_all_of_brown():
    demo = train.parse_args(["--preset", "demo"])
    assert (demo.output_dir, demo.max_train_samples, demo.method) == ("outputs/bnvae-demo", None, "bnvae")
    config = BNVAEConfig.from_preset("demo", vocab_size=10000, **demo.recipe.config)
    main_job = BNVAEConfig.from_preset("brown", vocab_size=10000, **train.parse_args([]).recipe.config)
    assert config.kl_lower_bound > 5 * main_job.kl_lower_bound  # the point of the preset: a larger code
    assert train.parse_args(["--preset", "demo", "--gamma", "0.6"]).recipe.config == {"gamma": 0.6}


def test_datasets_dataset_by_name(tmp_path, train_run, sentences_file):
    """--dataset_name goes through datasets.load_dataset (a local data folder here; a hub id works alike)."""
    data = tmp_path / "my_corpus"
    data.mkdir()
    lines = sentences_file.read_text().splitlines()
    for split, part in (("train", lines[:80]), ("validation", lines[80:120])):
        rows = [{"sentence": text} for text in part] + [{"sentence": "  "}]  # one blank row per split
        (data / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    model, results = train_run("--dataset_name", str(data), "--text_column", "sentence")
    assert results["optimizer_steps"] == 10  # 80 sentences / batch 8: the blank row was dropped
    with pytest.raises(ValueError, match="has no column 'text'"):
        train_run("--dataset_name", str(data), name="no_column")


def test_tracking_writes_tensorboard_events(tmp_path, train_run):
    train_run("--with_tracking", "--report_to", "tensorboard", "--max_train_samples", "64", "--logging_steps", "2")
    events = list((tmp_path / "run").rglob("events.out.tfevents.*"))
    assert events and max(e.stat().st_size for e in events) > 0


def test_blank_lines_are_counted_in_the_log(tmp_path, train_run, sentences_file, caplog):
    import logging

    lines = sentences_file.read_text().splitlines()[:40]
    (tmp_path / "with_blanks.txt").write_text("\n".join(lines[:20] + ["", "   "] + lines[20:]) + "\n")
    with caplog.at_level(logging.INFO):
        train_run("--train_file", str(tmp_path / "with_blanks.txt"))
    assert "with_blanks.txt: dropped 2 blank lines" in caplog.text


def test_prepare_brown_keeps_each_test_sentence_genre(tmp_path):
    import prepare_brown

    source = tmp_path / "package"
    source.mkdir()
    (source / "ca01").write_text("The/at jury/nn said/vbd ./.\nIt/pps rained/vbd ./.\n")
    (source / "cr02").write_text("A/at joke/nn ./.\n\nWe/ppss laughed/vbd ./.\n")
    (source / "README.md").write_text("not a corpus file")
    prepare_brown.main(
        ["--source_dir", str(source), "--output_dir", str(tmp_path / "out"), "--valid_size", "1", "--test_size", "2"]
    )
    test = (tmp_path / "out" / "test.txt").read_text().splitlines()
    labelled = [line.split("\t") for line in (tmp_path / "out" / "test_genres.txt").read_text().splitlines()]
    assert [text for _, text in labelled] == test and len(test) == 2
    genre_of = {
        "the jury said .": "press: reportage",
        "it rained .": "press: reportage",
        "a joke .": "humor",
        "we laughed .": "humor",
    }
    assert all(genre == genre_of[text] for genre, text in labelled)
    kept = (
        test
        + (tmp_path / "out" / "valid.txt").read_text().splitlines()
        + (tmp_path / "out" / "train.txt").read_text().splitlines()
    )
    assert sorted(kept) == sorted(genre_of)


def test_prepare_brown_documents_are_windows_of_whole_sentences_and_samples_stay_in_one_split(tmp_path, refused):
    import prepare_brown

    source = tmp_path / "package"
    source.mkdir()
    sentence = " ".join(["w/nn"] * 9) + " ./."  # 10 words
    for name in ("ca01", "cb02", "cc03", "cd04", "ce05"):
        marked = [sentence.replace("w/nn", f"{name}s{i}/nn", 1) for i in range(17)]  # 170 words, in order
        (source / name).write_text("\n\n".join(marked) + "\n")
    out = tmp_path / "docs"
    argv = ["--source_dir", str(source), "--output_dir", str(out), "--documents", "--document_words", "40"]
    prepare_brown.main([*argv, "--valid_samples", "1", "--test_samples", "1"])
    record = json.loads((out / "samples.json").read_text())["splits"]
    assert [len(record[s]["samples"]) for s in ("test", "valid", "train")] == [1, 1, 3]
    for split in ("test", "valid", "train"):
        documents = (out / f"{split}.txt").read_text().splitlines()
        # 17 sentences of 10 words: 4 windows of 40 words, the 10-word tail (< 20) dropped
        assert len(documents) == 4 * len(record[split]["samples"]) == record[split]["documents"]
        assert all(len(d.split()) == 40 for d in documents)
        assert record[split]["short_tails_dropped"] == len(record[split]["samples"])
        samples = {w[:4] for d in documents for w in d.split() if len(w) > 4}  # the marked words name their file
        assert samples == set(record[split]["samples"])
        first = documents[0].split()
        assert first[0].endswith("s0") and first[10].endswith("s1")  # sentences in corpus order
    refused(lambda: prepare_brown.parse_args(["--documents", "--document_words", "0"]), "--document_words 0: must be")


def test_bn_eps_is_a_flag_of_the_config(train_run):
    """--bn_eps reaches the saved config (and BN); an invalid one fails as the config's validation says."""
    model, results = train_run("--bn_eps", "1e-3", "--max_train_steps", "2")
    assert model.config.bn_eps == 1e-3 and model.bnvae.latent_head.bn.eps == 1e-3
    # the official 1e-5 with SGD; under Adam 1e-12, with which Adam no longer escaped the bound
    assert train.parse_args([]).bn_eps is None and BNVAEConfig().bn_eps == 1e-5
    assert train.parse_args(["--optimizer", "adam"]).bn_eps == train.ADAM_BN_EPS == 1e-12
    with pytest.raises(ValueError, match="bn_eps"):
        train_run("--bn_eps", "0", "--max_train_steps", "2", name="zero")


def test_tracking_to_tensorboard_without_tensorboard_is_refused(monkeypatch, refused):
    real = train.importlib.util.find_spec
    monkeypatch.setattr(train.importlib.util, "find_spec", lambda name: None if name == "tensorboard" else real(name))
    refused(lambda: train.parse_args(["--with_tracking"]), "--with_tracking --report_to tensorboard needs tensorboard")
    assert train.parse_args(["--with_tracking", "--report_to", "wandb"]).with_tracking


def test_the_logged_kl_guarantee_is_what_bn_guarantees_on_the_batches(train_run, capsys):
    """The summary printed "guaranteed >= n gamma^2 / 2" beside a training KL that could be below it (the
    bound holds up to v / (v + eps)): it now prints the exact guarantee of the epoch's batches."""
    _, results = train_run()
    entry = results["history"][-1]
    bound = results["kl_lower_bound"]
    assert 0 < entry["train_kl_guarantee"] <= bound and entry["train_kl_guarantee"] <= entry["train_kl"]
    assert f"BN guaranteed >= {entry['train_kl_guarantee']:.4f} on these batches" in capsys.readouterr().out
    assert train.guarantee_note({"train_kl_guarantee": 0.7}, 0.72).startswith(
        " (BN guaranteed >= 0.7000 on these batches: n gamma^2 / 2 = 0.7200 times"
    )
    assert train.guarantee_note({"train_kl_guarantee": 0.0}, 0.0) == ""  # no BN, nothing guaranteed


def test_an_escaped_bound_is_warned_about(train_run, monkeypatch, caplog):
    """Under Adam the encoder can shrink the raw means' batch variance below eps and escape the bound (the
    latent-64, gamma-1.5 run in RESULTS.md kept 0.026 of 72 nats): the epoch's log says so."""
    warning = train.escape_warning({"epoch": 1, "train_kl_guarantee": 0.026}, 72.0, "adam")
    assert "epoch 2: BN guaranteed only 0.0260 nats" in warning and "against the 72.0000 its scales" in warning
    assert "--bn_eps 1e-12 (Adam's default) or --optimizer sgd kept the bound" in warning
    assert "--bn_eps" not in train.escape_warning({"epoch": 1, "train_kl_guarantee": 0.026}, 72.0, "sgd")
    assert train.escape_warning({"epoch": 1, "train_kl_guarantee": 5.757}, 5.76, "adam") is None  # the bound held
    assert (
        train.escape_warning({"epoch": 1, "train_kl_guarantee": 0.0}, 0.0, "adam") is None
    )  # no BN: nothing to escape
    assert train.escape_warning({"epoch": 1, "train_kl_guarantee": float("nan")}, 5.76, "adam") is None  # diverged
    # learned scales (floor 0.3, bound 1.44) at 0.6: judged against what they promise, 32 * 0.36 / 2 = 5.76
    learned = {"epoch": 0, "train_kl_guarantee": 2.0, "gammas": [0.6] * 32}
    assert "against the 5.7600 its scales promise" in train.escape_warning(learned, 1.44, "adam")
    monkeypatch.setattr(train, "ESCAPE_FRACTION", 2.0)  # every guarantee (<= the bound) counts as escaped
    with caplog.at_level("WARNING"):
        train_run()
    assert "epoch 1: BN guaranteed only" in caplog.text and "The SGD runs measured so far kept it" in caplog.text


def test_late_failures_come_first(tmp_path, capsys):
    """An --output_dir that is a file failed only after training; fp16 on a CPU trained in fp32 silently."""
    existing = tmp_path / "a_file"
    existing.write_text("not a folder")
    with pytest.raises(SystemExit):
        train.parse_args(["--output_dir", str(existing)])
    assert f"--output_dir {existing}: is a file, not a folder" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--mixed_precision fp16 needs a GPU"):
            make_accelerator(train.parse_args(["--mixed_precision", "fp16", "--output_dir", str(tmp_path)]))


def test_a_kl_warmup_longer_than_the_run_is_warned_about(train_run, capsys):
    train_run("--kl_warmup_epochs", "4")  # a run of one epoch
    assert "warning: the KL weight never reaches 1 (warm-up 200 > 50 steps)" in capsys.readouterr().out


def test_two_processes_without_multi_gpu_are_refused(tmp_path, root, tiny_args):
    """accelerate launch --num_processes 2 without --multi_gpu ran one process without a word."""
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", str(root / "training" / "train.py"),
        *tiny_args(tmp_path / "out"),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "--num_processes N without --multi_gpu starts a single process" in result.stderr
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_the_three_training_scripts_share_the_accelerator_set_up(tmp_path, capsys):
    """train_classifier.py and train_dialogue.py built a bare Accelerator: no --num_threads, no
    --mixed_precision, no world-size guard. All three take make_accelerator's flags and bounds now."""
    import argparse

    import train_classifier
    import train_dialogue

    for module in (train, train_classifier, train_dialogue):
        parser = module.build_parser()
        assert {"--num_threads", "--mixed_precision", "--seed"} <= set(parser._option_string_actions), module
    with pytest.raises(SystemExit):
        train_dialogue.parse_args(["--output_dir", str(tmp_path), "--num_threads", "0"])
    assert "--num_threads 0: must be >= 1" in capsys.readouterr().err
    threads = torch.get_num_threads()
    try:
        make_accelerator(argparse.Namespace(num_threads=1, mixed_precision="no"))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


def test_the_classifier_accumulates_gradients_like_train(tmp_path, saved, labelled_files):
    """With --gradient_accumulation_steps 2 a run takes half the optimizer steps (each on two batches)."""
    import train_classifier

    common = [
        "--model_name_or_path", str(saved), "--train_file", str(labelled_files["train"]),
        "--validation_file", str(labelled_files["valid"]), "--test_file", str(labelled_files["test"]),
        "--num_train_epochs", "1", "--per_device_train_batch_size", "4", "--max_train_samples", "16",
        "--plateau_max_decays", "0",
    ]  # fmt: skip
    _, one = train_classifier.main([*common, "--output_dir", str(tmp_path / "one")])
    _, two = train_classifier.main(
        [*common, "--output_dir", str(tmp_path / "two"), "--gradient_accumulation_steps", "2"]
    )
    assert one["optimizer_steps"] == 4 and two["optimizer_steps"] == 2


def test_the_training_curves_show_every_batch_on_whole_epochs_with_legends_off_the_points(tmp_path):
    from hf_bnvae.trainer_utils import plot_training_curves

    history = [
        {"epoch": e, "train_reconstruction": 90 - e, "train_kl": 3.0, "valid_reconstruction": 91 - e, "valid_kl": 3.0,
         "valid_au": 30, "valid_mi": 2.0, "lr": 1.0 if e < 3 else 0.5}
        for e in range(5)
    ]  # fmt: skip
    steps = [100.0 - i / 10 for i in range(5 * 12)]
    fig = plot_training_curves(history, 5.76, tmp_path / "curves.png", "t", step_losses=steps)
    assert (tmp_path / "curves.png").stat().st_size > 0
    per_batch = [line for line in fig.axes[0].lines if len(line.get_xdata()) == len(steps)]
    assert len(per_batch) == 1 and per_batch[0].get_xdata()[11] == pytest.approx(1.0)  # batch 12 ends epoch 1
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # the figure was closed: draw it again to measure where things are
    canvas.draw()
    renderer = canvas.get_renderer()
    for ax in fig.axes:
        assert all(float(t).is_integer() for t in ax.get_xticks()), ax.get_title()
        if ax.get_legend() is not None:  # below its panel: it covers none of the plotted points
            assert not ax.get_legend().get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))


def test_the_best_weights_keeper_keeps_the_best_decays_and_goes_back_to_it():
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    keeper = BestWeightsKeeper(PlateauRule(start_epoch=0, patience=1, factor=0.5, max_decays=2))
    assert keeper.update(model, optimizer, 0, 1.0) == "improved"
    best = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)  # the next epoch's (worse) weights
    assert keeper.update(model, optimizer, 1, 2.0) == "decay"
    torch.testing.assert_close(model.weight, best["weight"])  # back to the best model
    assert optimizer.param_groups[0]["lr"] == 0.5
    restored = BestWeightsKeeper(PlateauRule(start_epoch=0, patience=1, factor=0.5, max_decays=2))
    restored.load_state_dict(keeper.state_dict())
    assert restored.update(model, optimizer, 2, 3.0) == "stop" and optimizer.param_groups[0]["lr"] == 0.25
    assert keeper.update(model, optimizer, 2, float("nan")) == "diverged"
    with pytest.raises(RuntimeError, match="diverged.*nothing was saved"):
        BestWeightsKeeper(PlateauRule()).update(model, optimizer, 0, float("inf"))
