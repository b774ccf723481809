"""train.py: multi-process, resume, bf16, every baseline flag, bad input."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from accelerate import Accelerator
from transformers import AutoTokenizer

from hf_bnvae.objectives import cyclical_kl_weight, free_bits_kl, linear_kl_weight, training_loss
from tests.training_helpers import FIXTURE, ROOT, tiny_args, train_script
from text_data import length_bucketed_batches, read_text_file, shard  # noqa: E402  (training/ on sys.path)
from checkpoints import list_checkpoints, resolve_checkpoint, save_checkpoint  # noqa: E402


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Each in-process run builds its own Accelerator (precision, accumulation): reset the singletons."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


def run(tmp_path, *extra, name="run"):
    return train_script.main(tiny_args(tmp_path / name, *extra))


# -- a real 2-process run -------------------------------------------------------------------------


def test_two_cpu_processes_train_in_sync(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests'}:{ROOT}"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               str(ROOT / "tests" / "ddp_probe.py"), str(tmp_path),
               *tiny_args(tmp_path / "out", "--max_train_samples", "96", "--max_train_steps", "6", "--sync_bn")]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["num_processes"] for r in ranks] == [2, 2]
    assert [r["steps"] for r in ranks] == [6, 6]  # 96 sentences / (2 processes x 8) = one epoch
    # the validation set (40 sentences) was split over the processes and gathered: none lost or counted twice
    assert [r["history"][-1]["valid_num_sentences"] for r in ranks] == [40, 40]
    valid = [{k: v for k, v in r["history"][-1].items() if k.startswith("valid_")} for r in ranks]
    assert valid[0] == valid[1]  # every rank computed the metrics on the same gathered set
    for key, value in ranks[0]["state"].items():
        torch.testing.assert_close(ranks[1]["state"][key], value, rtol=0, atol=0)
    # initialised in U(-0.01, 0.01): a larger weight shows that training did move the parameters
    assert ranks[0]["state"]["decoder.lm_head.weight"].abs().max() > 0.01


# -- resuming mid-epoch ---------------------------------------------------------------------------


def test_resume_reaches_the_same_losses(tmp_path):
    _, straight = run(tmp_path, "--max_train_steps", "8", name="straight")
    _, first = run(tmp_path, "--max_train_steps", "4", "--checkpointing_steps", "2", name="parts")
    assert [p.name for p in list_checkpoints(tmp_path / "parts" / "checkpoints")] == ["step_2", "step_4"]
    _, second = run(tmp_path, "--max_train_steps", "8", "--resume_from_checkpoint", "latest", name="parts")
    losses = first["train_step_losses"] + second["train_step_losses"]
    assert len(losses) == 8 and second["optimizer_steps"] == 8
    for a, b in zip(losses, straight["train_step_losses"]):
        assert a == pytest.approx(b, abs=1e-6)


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
        save_checkpoint(FailingAccelerator(), tmp_path, 6)
    assert resolve_checkpoint("latest", tmp_path) == good
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        resolve_checkpoint("latest", tmp_path / "nothing")


# -- mixed precision ------------------------------------------------------------------------------


def test_bf16_run_is_finite_with_fp32_kl_and_bn(tmp_path, model, batch):
    _, results = run(tmp_path, "--mixed_precision", "bf16", "--max_train_steps", "4")
    assert all(math.isfinite(x) for x in results["train_step_losses"])
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**batch, labels=batch["input_ids"])
    assert out.logits.dtype == torch.bfloat16  # the matmuls did run in bf16
    assert out.mu.dtype == out.kl.dtype == out.reconstruction_loss.dtype == out.loss.dtype == torch.float32
    assert model.latent_head.bn.running_mean.dtype == torch.float32
    torch.testing.assert_close(out.mu.std(0, unbiased=False), torch.full((8,), 0.6), atol=2e-3, rtol=0)


# -- the plateau rule ----------------------------------------------------------------------------


def test_plateau_rule_decays_after_patience_and_stops_after_max_decays():
    from plateau import PlateauRule

    rule = PlateauRule(start_epoch=2, patience=2, factor=0.5, max_decays=2)
    losses = [10, 11, 12, 9, 9.5, 9.5, 10, 10]
    actions = [rule.update(epoch, loss) for epoch, loss in enumerate(losses)]
    assert actions == ["improved", "wait", "decay", "improved", "wait", "decay", "wait", "stop"]
    assert (rule.best_epoch, rule.best_loss, rule.decays) == (3, 9, 3)
    early = PlateauRule(start_epoch=5, patience=1)
    assert [early.update(e, loss) for e, loss in enumerate([10, 11, 12, 13, 14, 15])] == ["improved"] + ["wait"] * 4 + ["decay"]
    restored = PlateauRule()
    restored.load_state_dict(rule.state_dict())
    assert restored == rule


def test_plateau_rule_in_training_halves_lr_reloads_best_and_stops(tmp_path):
    from hf_bnvae import BNVAEForLanguageModeling
    from text_data import encode_corpus

    flags = ("--num_train_epochs", "8", "--decay_start_epoch", "0", "--decay_patience", "1", "--max_decay", "2",
             "--learning_rate", "3", "--kl_warmup_epochs", "0")
    _, metrics = run(tmp_path, *flags)
    args = train_script.parse_args(tiny_args(tmp_path / "run", *flags))
    history = metrics["history"]
    actions = [h["plateau_action"] for h in history]
    assert "decay" in actions and actions.count("decay") <= 2
    assert "stop" not in actions[:-1]
    for before, after in zip(history, history[1:]):
        assert after["lr"] == pytest.approx(before["lr"] * (0.5 if before["plateau_action"] == "decay" else 1.0))
    best = min(range(len(history)), key=lambda i: history[i]["valid_nelbo"])
    assert metrics["best_epoch"] == best
    # the saved model is the best epoch's: its validation -ELBO is that epoch's
    model = BNVAEForLanguageModeling.from_pretrained(tmp_path / "run")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "run")
    valid = encode_corpus(tokenizer, read_text_file(FIXTURE).texts[: args.max_eval_samples], args.max_seq_length)
    saved = train_script.evaluate(model, valid, Accelerator(cpu=True), args.per_device_eval_batch_size,
                                  tokenizer.pad_token_id, seed=args.seed)
    assert saved["nelbo"] == pytest.approx(history[best]["valid_nelbo"], abs=1e-4)


def test_divergence_is_reported_not_saved(tmp_path):
    with pytest.raises(RuntimeError, match="training diverged: the validation -ELBO is nan after epoch 1"):
        run(tmp_path, "--learning_rate", "30", "--kl_warmup_epochs", "0")
    assert not (tmp_path / "run" / "model.safetensors").exists()


# -- the baselines do what they say ---------------------------------------------------------------


def test_kl_annealing_schedule():
    assert [linear_kl_weight(s, 10) for s in (0, 5, 10, 20)] == [0.0, 0.5, 1.0, 1.0]
    assert linear_kl_weight(5, 10, final_weight=0.4) == pytest.approx(0.2)
    assert linear_kl_weight(0, 0) == 1.0


def test_cyclical_schedule():
    weights = [cyclical_kl_weight(s, 10) for s in range(22)]
    assert weights[:6] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert weights[6:10] == [1.0] * 4 and weights[10] == 0.0 and weights[12] == pytest.approx(0.4)
    assert weights[20] == 0.0


def test_free_bits_clamp():
    kl = torch.tensor([[0.5, 3.0], [1.5, 1.0]], requires_grad=True)  # batch means 1.0, 2.0; sum 3.0
    per_sentence = free_bits_kl(kl, 4.0)
    assert per_sentence.item() == 4.0
    per_sentence.backward()
    assert kl.grad.abs().sum() == 0  # below the target: no pressure on the KL
    assert free_bits_kl(kl, 2.0).item() == 3.0
    assert free_bits_kl(kl, 1.5, per_dimension=True).item() == pytest.approx(1.5 + 2.0)


def method_of(*argv):
    return train_script.parse_args(["--method", *argv]).method_spec


def test_method_flags_set_the_right_quantities(model, batch):
    assert method_of("bnvae").model_overrides == {"gamma": 0.6}
    assert method_of("bnvae", "--gamma", "0.7").model_overrides == {"gamma": 0.7}
    vae = method_of("vae")
    assert vae.model_overrides == {"gamma": 0.0} and vae.kl_weight(50, 100, 1) == 0.5
    ae = method_of("ae")
    assert all(ae.kl_weight(s, 100, 1) == 0.0 for s in (0, 50, 100, 10**6))
    assert ae.selection_metric == "reconstruction" and vae.selection_metric == "nelbo"
    beta = method_of("beta_vae", "--beta", "0.4")
    assert beta.kl_weight(10**6, 100, 1) == pytest.approx(0.4) and beta.kl_weight(50, 100, 1) == pytest.approx(0.2)
    cyclical = method_of("cyclical", "--cycle_epochs", "1")
    assert cyclical.schedule == "cyclical" and cyclical.kl_weight(100, 0, 100) == 0.0
    fb = method_of("free_bits", "--free_bits", "3", "--free_bits_per_dimension")
    assert fb.free_bits == 3.0 and fb.free_bits_per_dimension
    assert method_of("delta_vae", "--delta_rate", "0.2").model_overrides == {"gamma": 0.0, "delta_rate": 0.2}
    lm = method_of("lm")
    assert lm.model_overrides["use_latent"] is False

    model.train()
    out = model(**batch, labels=batch["input_ids"])
    torch.testing.assert_close(training_loss(out, 0.4), out.reconstruction_loss.mean() + 0.4 * out.kl.mean())
    torch.testing.assert_close(training_loss(out, 0.0), out.reconstruction_loss.mean())


@pytest.mark.parametrize("method", ["lm", "ae", "vae", "beta_vae", "cyclical", "free_bits", "delta_vae", "bnvae"])
def test_every_method_trains(tmp_path, method):
    model, results = run(tmp_path, "--method", method, "--max_train_samples", "64")
    history = results["history"][-1]
    assert math.isfinite(history["valid_nelbo"]) and results["optimizer_steps"] == 8
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["method"] == method and (tmp_path / "run" / "training_curves.png").stat().st_size > 0
    if method == "lm":
        assert model.encoder is None and history["valid_kl"] == 0.0
    if method == "bnvae":
        assert model.config.gamma == 0.6
    if method == "delta_vae":
        assert history["valid_kl"] >= 8 * 0.15 - 1e-4


@pytest.mark.parametrize("method, best", [("ae", 1), ("vae", 0)])
def test_model_selection_metric(tmp_path, monkeypatch, method, best):
    """The AE is selected by validation reconstruction (its KL grows freely, so its -ELBO would pick
    an early epoch); every other method by the -ELBO. Validation results are scripted to disagree."""
    scripted = iter([dict(reconstruction=50.0, kl=1.0), dict(reconstruction=40.0, kl=30.0), dict(reconstruction=45.0, kl=30.0)])
    real_evaluate = train_script.evaluate

    def fake_evaluate(*args, **kwargs):
        metrics = real_evaluate(*args, **kwargs)
        if kwargs.get("iw_samples"):
            return metrics
        metrics.update(next(scripted))
        metrics["nelbo"] = metrics["reconstruction"] + metrics["kl"]
        return metrics

    monkeypatch.setattr(train_script, "evaluate", fake_evaluate)
    _, results = run(tmp_path, "--method", method, "--num_train_epochs", "3", "--max_train_samples", "64")
    assert results["best_epoch"] == best


def test_pretrained_encoder_initialisation(tmp_path):
    ae, _ = run(tmp_path, "--method", "ae", "--max_train_samples", "64", name="ae")
    args = train_script.parse_args(tiny_args(tmp_path / "fb", "--method", "free_bits", "--init_encoder_from", str(tmp_path / "ae")))
    tokenizer = train_script.load_tokenizer(args, ["unused: the AE's tokenizer is loaded"])
    assert tokenizer.get_vocab() == ae_tokenizer_vocab(tmp_path / "ae")
    model = train_script.build_model(args, tokenizer)
    for key, value in ae.encoder.state_dict().items():
        torch.testing.assert_close(model.encoder.state_dict()[key], value, rtol=0, atol=0)
    fresh = train_script.build_model(train_script.parse_args(tiny_args(tmp_path / "x", "--method", "free_bits")), tokenizer)
    assert not torch.equal(model.encoder.to_posterior.weight, fresh.encoder.to_posterior.weight)


def ae_tokenizer_vocab(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path).get_vocab()


# -- batching -------------------------------------------------------------------------------------


def test_batches_group_lengths_and_never_hold_one_sentence():
    lengths = [5, 9, 5, 7, 12, 3, 8, 8, 4, 6, 11]
    for epoch in range(5):
        batches = length_bucketed_batches(lengths, 2, seed=0, epoch=epoch)
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        assert min(len(b) for b in batches) >= 2
    assert length_bucketed_batches(lengths, 4, seed=1, epoch=0) != length_bucketed_batches(lengths, 4, seed=1, epoch=1)
    assert length_bucketed_batches(lengths, 4, seed=1, epoch=2) == length_bucketed_batches(lengths, 4, seed=1, epoch=2)
    ordered = length_bucketed_batches(lengths, 4)
    assert [lengths[i] for b in ordered for i in b] == sorted(lengths)
    parts = [shard(ordered, r, 2) for r in (0, 1)]
    assert len(parts[0]) == len(parts[1])


# -- bad input ------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="data file not found: .*nope.txt"):
        run(tmp_path, "--train_file", str(tmp_path / "nope.txt"))


def test_empty_file(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(ValueError, match="data file is empty: .*empty.txt"):
        run(tmp_path, "--validation_file", str(tmp_path / "empty.txt"))


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
        (["--preset", "wiki"], "unknown --preset 'wiki'"),
        (["--method", "vampprior"], "unknown --method 'vampprior'"),
        (["--method", "vae", "--gamma", "0.6"], "--gamma only applies to --method bnvae"),
        (["--method", "bnvae", "--free_bits", "4"], "--free_bits only applies to --method free_bits"),
        (["--method", "lm", "--init_encoder_from", "x"], "--init_encoder_from needs a VAE-type method"),
        (["--per_device_train_batch_size", "1"], "batch of one sentence"),
        (["--push_to_hub"], "--push_to_hub needs --hub_model_id"),
        (["--tokenizer_name", "x", "--vocab_size", "500"], "cannot be combined with --tokenizer_name"),
    ],
)
def test_bad_flags(argv, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        train_script.parse_args(argv)


def test_datasets_dataset_by_name(tmp_path):
    """--dataset_name goes through datasets.load_dataset (a local data folder here; a hub id works alike)."""
    data = tmp_path / "my_corpus"
    data.mkdir()
    lines = FIXTURE.read_text().splitlines()
    for split, part in (("train", lines[:80]), ("validation", lines[80:120])):
        rows = [{"sentence": text} for text in part] + [{"sentence": "  "}]  # one blank row per split
        (data / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    model, results = run(tmp_path, "--dataset_name", str(data), "--text_column", "sentence")
    assert results["optimizer_steps"] == 10  # 80 sentences / batch 8: the blank row was dropped
    with pytest.raises(ValueError, match="has no column 'text'"):
        run(tmp_path, "--dataset_name", str(data), name="no_column")


def test_tracking_writes_tensorboard_events(tmp_path):
    run(tmp_path, "--with_tracking", "--report_to", "tensorboard", "--max_train_samples", "64", "--logging_steps", "2")
    events = list((tmp_path / "run").rglob("events.out.tfevents.*"))
    assert events and max(e.stat().st_size for e in events) > 0


def test_blank_lines_are_counted_in_the_log(tmp_path, caplog):
    import logging

    lines = FIXTURE.read_text().splitlines()[:40]
    (tmp_path / "with_blanks.txt").write_text("\n".join(lines[:20] + ["", "   "] + lines[20:]) + "\n")
    with caplog.at_level(logging.INFO):
        run(tmp_path, "--train_file", str(tmp_path / "with_blanks.txt"))
    assert "with_blanks.txt: dropped 2 blank lines" in caplog.text
