"""BNVAEForSequenceClassification: the loss, what trains, loading a language-model checkpoint, the Auto
classes, remote code and the text-classification pipeline."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
import train_classifier
from huggingface_hub import ModelCard
from transformers import AutoModelForSequenceClassification, pipeline

from hf_bnvae import BNVAEForSequenceClassification, hub


@pytest.fixture
def classifier(tiny_config):
    torch.manual_seed(0)
    config = tiny_config(num_labels=3, id2label={0: "negative", 1: "neutral", 2: "positive"})
    return BNVAEForSequenceClassification(config)


def test_loss_is_the_cross_entropy_of_the_logits(classifier, batch):
    classifier.eval()  # no dropout: the logits are a function of the input
    labels = torch.tensor([0, 2, 1, 2, 0, 1, 1, 0])[: len(batch["input_ids"])]
    out = classifier(**batch, labels=labels)
    assert out.logits.shape == (len(labels), 3)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))
    mu = classifier.bnvae(**batch).mu
    torch.testing.assert_close(out.logits, classifier.classifier(mu))  # a linear layer on the BN'd mean
    assert classifier.config.problem_type == "single_label_classification"
    assert classifier(**batch, return_dict=False)[0].shape == (len(labels), 3)


def test_gradients_reach_the_encoder_unless_frozen_and_never_gamma(classifier, batch):
    labels = torch.zeros(len(batch["input_ids"]), dtype=torch.long)
    classifier.train()
    classifier(**batch, labels=labels).loss.backward()
    assert classifier.bnvae.encoder.lstm.weight_hh_l0.grad.abs().sum() > 0
    assert classifier.bnvae.latent_head.bn.weight.grad is None
    classifier.zero_grad(set_to_none=True)
    classifier.freeze_encoder()
    classifier(**batch, labels=labels).loss.backward()
    assert all(p.grad is None for p in classifier.bnvae.parameters())
    assert classifier.classifier.weight.grad.abs().sum() > 0


def test_bad_labels_and_a_training_batch_of_one_fail_clearly(classifier, batch):
    with pytest.raises(ValueError, match="label 3 is outside \\[0, num_labels=3\\)"):
        classifier(**batch, labels=torch.full((len(batch["input_ids"]),), 3))
    one = {k: v[:1] for k, v in batch.items()}
    with pytest.raises(ValueError, match="batch of one sentence"):
        classifier.train()(**one)
    assert classifier.eval()(**one).logits.shape == (1, 3)  # eval mode: BN's running statistics


def test_regression_and_multi_label_follow_problem_type(tiny_config, batch):
    n = len(batch["input_ids"])
    regression = BNVAEForSequenceClassification(tiny_config(num_labels=1)).eval()
    targets = torch.linspace(0, 1, n)
    out = regression(**batch, labels=targets)
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(out.logits.squeeze(-1), targets))
    multi = BNVAEForSequenceClassification(tiny_config(num_labels=2)).eval()
    hot = torch.tensor([[1.0, 0.0], [1.0, 1.0]]).repeat(n, 1)[:n]
    out = multi(**batch, labels=hot)
    torch.testing.assert_close(out.loss, torch.nn.functional.binary_cross_entropy_with_logits(out.logits, hot))
    assert multi.config.problem_type == "multi_label_classification"


def test_a_language_model_checkpoint_gives_the_encoder_and_bn_head(trained, saved):
    classifier, info = BNVAEForSequenceClassification.from_pretrained(saved, num_labels=2, output_loading_info=True)
    for key, value in trained.bnvae.state_dict().items():  # gamma and BN statistics included
        torch.testing.assert_close(classifier.bnvae.state_dict()[key], value, rtol=0, atol=0)
    assert float(classifier.bnvae.latent_head.bn.weight[0]) == pytest.approx(trained.config.gamma)
    assert not classifier.bnvae.latent_head.bn.weight.requires_grad
    # transformers' load report: the decoder is unused, the classifier newly initialised
    assert info["unexpected_keys"] and all(key.startswith("decoder.") for key in info["unexpected_keys"])
    assert sorted(info["missing_keys"]) == ["classifier.bias", "classifier.weight"]
    auto = AutoModelForSequenceClassification.from_pretrained(saved, num_labels=2)
    assert isinstance(auto, BNVAEForSequenceClassification)


def test_save_load_round_trip_and_the_pipeline(classifier, tokenizer, corpus, tmp_path):
    classifier.eval()
    classifier.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    batch = tokenizer(corpus[:4], padding=True, return_tensors="pt")
    loaded = BNVAEForSequenceClassification.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded(**batch).logits, classifier(**batch).logits, rtol=0, atol=0)
    assert loaded.config.id2label[2] == "positive"
    classify = pipeline("text-classification", model=str(tmp_path))
    results = classify(corpus[:2])
    assert [r["label"] for r in results] == [
        classifier.config.id2label[int(i)]
        for i in classifier(**tokenizer(corpus[:2], padding=True, return_tensors="pt")).logits.argmax(-1)
    ]
    assert all(0 < r["score"] <= 1 for r in results)


def test_remote_code_classifies_without_the_package(classifier, tokenizer, corpus, tmp_path):
    classifier.eval().save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    expected = classifier(**tokenizer(corpus[:3], padding=True, return_tensors="pt")).logits.argmax(-1).tolist()
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["hf_bnvae"] = None  # the package cannot be imported in this process
        from transformers import pipeline
        classify = pipeline("text-classification", model={str(tmp_path)!r}, trust_remote_code=True)
        assert type(classify.model).__module__.startswith("transformers_modules"), type(classify.model).__module__
        print([r["label"] for r in classify({corpus[:3]!r})])
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == str([classifier.config.id2label[i] for i in expected])


# -- training/train_classifier.py ------------------------------------------------------------------


def test_label_subsets_are_stratified_deterministic_and_independent_of_the_model():
    labels = [0] * 60 + [1] * 30 + [2] * 10
    subset = train_classifier.stratified_subset(labels, 20, seed=3)
    assert len(subset) == 20 and len(set(subset)) == 20
    assert [sum(labels[i] == c for i in subset) for c in (0, 1, 2)] == [12, 6, 2]  # the pool's 6 : 3 : 1
    assert train_classifier.stratified_subset(labels, 20, seed=3) == subset  # it depends on labels, budget, seed only
    assert train_classifier.stratified_subset(labels, 20, seed=4) != subset
    assert [sum(labels[i] == c for i in train_classifier.stratified_subset(labels, 3, 0)) for c in (0, 1, 2)] == [
        1,
        1,
        1,
    ]
    with pytest.raises(ValueError, match="larger than the training pool"):
        train_classifier.stratified_subset(labels, 101, 0)
    with pytest.raises(ValueError, match="smaller than the number of classes"):
        train_classifier.stratified_subset(labels, 2, 0)


def classifier_args(saved, files, output, *extra):
    return [
        "--model_name_or_path", str(saved), "--train_file", str(files["train"]),
        "--validation_file", str(files["valid"]), "--test_file", str(files["test"]),
        "--output_dir", str(output), "--num_train_epochs", "2", "--per_device_train_batch_size", "8", *extra,
    ]  # fmt: skip


def test_the_script_fine_tunes_a_language_model_checkpoint_and_saves_the_best_epoch(saved, labelled_files, tmp_path):
    model, results = train_classifier.main(
        classifier_args(
            saved, labelled_files, tmp_path / "out", "--max_train_samples", "12", "--max_train_steps", "3",
            "--metric_for_best_model", "accuracy",
        )
    )  # fmt: skip
    assert results["optimizer_steps"] == 3 and len(results["history"]) == 2  # 2 steps per epoch: the 2nd ends early
    written = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert (
        written["label_budget"] == 12
        and 0 <= written["test_accuracy"] <= 1
        and written["num_validation_sentences"] == 15
    )
    # selection by accuracy: the first epoch with the highest validation accuracy
    accuracies = [h["valid_accuracy"] for h in written["history"]]
    assert written["metric_for_best_model"] == "accuracy" and written["best_epoch"] == accuracies.index(max(accuracies))
    assert written["eval_accuracy"] == max(accuracies)
    assert model.config.id2label == {0: "bad", 1: "good"}
    loaded = BNVAEForSequenceClassification.from_pretrained(tmp_path / "out")
    assert loaded.config.id2label[1] == "good"
    # the hub card, by the language model's card code: a model-index with test accuracy and the budget
    card = hub.build_model_card(tmp_path / "out", "org/bnvae-classifier")
    index = card.data.eval_results
    assert card.data.pipeline_tag == "text-classification" and {r.metric_type for r in index} == {"accuracy", "f1"}
    accuracy = next(r for r in index if r.metric_type == "accuracy")
    assert accuracy.metric_value == round(100 * written["test_accuracy"], 1) and accuracy.metric_config == "12 labels"
    assert accuracy.dataset_split == "test" and "12 labelled sentences" in card.text and "NLL" not in card.text
    # the floor: the test set (15 sentences, 10 "good") answered "good" throughout scores 66.7%
    assert written["test_majority_label"] == "good" and written["test_majority_accuracy"] == pytest.approx(10 / 15)
    assert (
        "most frequent test label (good) scores 66.7%" in card.text and "SGD with the encoder fine-tuned" in card.text
    )
    for test_accuracy, warned in ((10 / 15, True), (11 / 15, False)):
        (tmp_path / "out" / "all_results.json").write_text(json.dumps({**written, "test_accuracy": test_accuracy}))
        assert ("does not beat that floor" in hub.build_model_card(tmp_path / "out", "org/c").text) == warned
    # frozen encoder: the encoder's weights are those of the checkpoint
    frozen, _ = train_classifier.main(classifier_args(saved, labelled_files, tmp_path / "probe", "--freeze_encoder"))
    start = BNVAEForSequenceClassification.from_pretrained(saved, num_labels=2)
    torch.testing.assert_close(frozen.bnvae.encoder.lstm.weight_hh_l0, start.bnvae.encoder.lstm.weight_hh_l0)


def test_the_plateau_rule_halves_the_lr_reloads_the_best_and_stops(saved, labelled_files, tmp_path, monkeypatch):
    losses = iter([1.0, 0.8, 0.9, 0.95, 0.7, 0.9, 0.91, 0.92])  # validation losses of epochs 0..7
    real = train_classifier.evaluate_split

    def scripted(*args):
        scores = real(*args)
        return {**scores, "loss": next(losses, scores["loss"])}

    monkeypatch.setattr(train_classifier, "evaluate_split", scripted)
    argv = classifier_args(
        saved, labelled_files, tmp_path / "out", "--num_train_epochs", "20", "--plateau_max_decays", "2",
        "--metric_for_best_model", "loss",
    )  # fmt: skip
    _, results = train_classifier.main(argv)
    actions = [h["plateau_action"] for h in results["history"]]
    assert actions == ["improved", "improved", "wait", "decay", "improved", "wait", "stop"]
    assert [h["lr"] for h in results["history"]] == [1.0] * 4 + [0.5] * 3
    assert results["best_epoch"] == 4 and results["plateau_decays"] == 2


def test_the_saved_epoch_is_the_best_by_the_chosen_validation_metric(saved, labelled_files, tmp_path, monkeypatch):
    real = train_classifier.evaluate_split
    states = {}  # a fingerprint of the weights at each validation (test evaluation is the last call)

    def scripted(model, *args):
        scores = real(model, *args)
        states[len(states)] = model.classifier.weight.detach().clone()
        loss, accuracy = next(scripted_scores, (scores["loss"], scores["accuracy"]))
        return {**scores, "loss": loss, "accuracy": accuracy}

    monkeypatch.setattr(train_classifier, "evaluate_split", scripted)
    for metric, epoch in (("accuracy", 2), ("loss", 1)):
        states.clear()
        scripted_scores = iter([(1.0, 0.5), (0.8, 0.6), (0.9, 0.9), (0.95, 0.7)])  # (loss, accuracy), epochs 0-3
        argv = classifier_args(
            saved, labelled_files, tmp_path / metric, "--num_train_epochs", "4", "--metric_for_best_model", metric
        )
        model, results = train_classifier.main(argv)
        assert results["best_epoch"] == epoch and results["metric_for_best_model"] == metric
        torch.testing.assert_close(model.classifier.weight, states[epoch])  # that epoch's weights were saved
        assert results["eval_accuracy"] == results["history"][epoch]["valid_accuracy"]
        selection = {"accuracy": "highest validation accuracy", "loss": "lowest validation loss"}[metric]
        assert f"the epoch with the {selection}" in hub.build_model_card(tmp_path / metric, "org/c").text


def test_the_script_refuses_bad_labelled_files_and_other_checkpoints(saved, labelled_files, tmp_path):
    unknown = tmp_path / "unknown.txt"
    unknown.write_text("good\tfine .\nugly\tnot a label of the pool .\n")
    with pytest.raises(ValueError, match="unknown label\\(s\\) \\['ugly'\\]"):
        train_classifier.main(classifier_args(saved, {**labelled_files, "valid": unknown}, tmp_path / "a"))
    no_tab = tmp_path / "no_tab.txt"
    no_tab.write_text("good\tfine .\na line without a label\n")
    with pytest.raises(ValueError, match="some lines have a `label<TAB>` prefix and some do not"):
        train_classifier.main(classifier_args(saved, {**labelled_files, "test": no_tab}, tmp_path / "b"))
    one_class = tmp_path / "one_class.txt"
    one_class.write_text("good\tfine .\ngood\tnice .\n")
    with pytest.raises(ValueError, match="every line has the label 'good'; a classifier needs >= 2"):
        train_classifier.main(classifier_args(saved, {**labelled_files, "train": one_class}, tmp_path / "e"))
    with pytest.raises(ValueError, match="larger than the training pool"):
        train_classifier.main(classifier_args(saved, labelled_files, tmp_path / "c", "--max_train_samples", "61"))
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (saved / name).exists():
            (other / name).write_bytes((saved / name).read_bytes())
    with pytest.raises(ValueError, match="is a 'gpt2' checkpoint, not one of this package"):
        train_classifier.main(classifier_args(other, labelled_files, tmp_path / "d"))


@pytest.mark.slow
def test_the_semi_supervised_experiment_writes_its_table_and_resumes(tmp_path, labelled_files, monkeypatch):
    import semi_supervised

    tiny = "--embedding_size 16 --encoder_hidden_size 24 --decoder_hidden_size 24 --latent_size 8 "
    tiny += "--per_device_train_batch_size 8 --per_device_eval_batch_size 16"
    argv = [
        *("--output_dir", str(tmp_path), "--train_file", str(labelled_files["train"])),
        *("--validation_file", str(labelled_files["valid"]), "--test_file", str(labelled_files["test"])),
        *("--pretrain_epochs", "1", "--budgets", "6", "all", "--seeds", "1", "2", "--num_train_epochs", "2"),
        *("--max_train_steps", "3", "--train_args", tiny),
    ]  # fmt: skip
    runs = semi_supervised.main(argv)
    assert len(runs) == 6 * 2 * 2 and all(0 <= r["test_accuracy"] <= 100 for r in runs.values())
    recipes = {r["recipe"] for r in runs.values() if r["method"] != semi_supervised.BASELINE}
    assert recipes == {semi_supervised.FINE_TUNING_RECIPE}  # the default, recorded per run
    tuned = [r for r in runs.values() if r["method"] != semi_supervised.BASELINE]
    assert all(r["caps"] == {"num_train_epochs": 2, "max_train_steps": 3, "pretrain_epochs": 1} for r in tuned)
    assert all(sum(r["test_predicted_counts"].values()) == 15 and 0 <= r["test_f1"] <= 100 for r in tuned)
    pretrained = json.loads((tmp_path / "classification_models" / "ae_free_bits" / "all_results.json").read_text())
    assert pretrained["training_args"]["init_encoder_from"].endswith("ae") and pretrained["method"] == "free_bits"
    report = json.loads((tmp_path / "classification.json").read_text())
    rows = {*semi_supervised.METHODS, semi_supervised.BASELINE}
    assert report["budgets"] == [6, "all"] and set(report["methods"]) == rows
    assert "bag-of-words" in (tmp_path / "classification.md").read_text()
    cell = report["methods"]["bnvae_0.7"]["6"]
    assert len(cell["runs"]) == 2 and cell["mean"] == pytest.approx(sum(cell["runs"]) / 2)
    assert "BN-VAE (0.7)" in (tmp_path / "classification.md").read_text()
    test_labels = [line.split("\t")[0] for line in labelled_files["test"].read_text().splitlines()]
    top = max(set(test_labels), key=test_labels.count)
    assert report["majority_class"] == {
        "label": top,
        "accuracy": pytest.approx(100 * test_labels.count(top) / len(test_labels)),
    }

    def fail(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(semi_supervised, "fine_tune", fail)
    assert semi_supervised.main(argv) == runs  # everything is in the record: nothing retrains


def test_the_script_pushes_the_classifier_with_its_card(saved, labelled_files, tmp_path, fake_hub, refused):
    train_classifier.main(
        classifier_args(saved, labelled_files, tmp_path / "out", "--push_to_hub", "--hub_model_id", "org/rt-cls")
    )
    snapshot = fake_hub.snapshot("org/rt-cls")
    for name in ("model.safetensors", "config.json", "modeling_bnvae.py", "tokenizer.json", "all_results.json"):
        assert (snapshot / name).exists(), name
    card = ModelCard.load(snapshot / "README.md")
    assert card.data.pipeline_tag == "text-classification" and card.data.eval_results[0].metric_config == "60 labels"
    refused(
        lambda: train_classifier.parse_args(classifier_args(saved, labelled_files, tmp_path / "x", "--push_to_hub")),
        "--push_to_hub needs --hub_model_id org/name",
    )


def test_the_experiment_caps_the_seeds_of_large_budgets_and_keeps_seed_order(refused):
    import semi_supervised

    args = semi_supervised.parse_args(["--budgets", "100", "all", "--seeds", "1", "2", "3", "--max_seeds", "all=1"])
    todo = semi_supervised.pending_runs(args, done={"ae/100/seed1": {}})
    keys = [key for key, *_ in todo]
    assert keys[:5] == [
        "scratch/100/seed1", "vae/100/seed1", "ae_free_bits/100/seed1", "bnvae_0.7/100/seed1", "bag_of_words/100/seed1"
    ]  # fmt: skip
    rows = [*semi_supervised.METHODS, semi_supervised.BASELINE]
    assert [k for k in keys if "/all/" in k] == [f"{m}/all/seed1" for m in rows]
    assert len(keys) == 5 + 6 + 6 + 6  # seed 1 (less the finished run) with all, then seeds 2 and 3 without
    assert [seed for *_, seed in todo] == sorted(seed for *_, seed in todo)
    refused(lambda: semi_supervised.parse_args(["--max_seeds", "all:3"]), "each item must be BUDGET=K")
    refused(lambda: semi_supervised.parse_args(["--num_workers", "0"]), "--num_workers 0: must be at least 1")
    for bad, message in (("all=0", "K must be at least 1"), ("All=3", "'All' is not a label budget"),
                         ("5000=2", "'5000' is not a label budget")):  # fmt: skip
        refused(lambda bad=bad: semi_supervised.parse_args(["--max_seeds", bad]), f"--max_seeds {bad}: {message}")


def test_a_failed_fine_tuning_run_is_reported_and_the_others_are_recorded(tmp_path, monkeypatch):
    import semi_supervised

    def fine_tune(args, checkpoint, method, budget, seed):
        if method == "vae":
            raise ValueError("no such checkpoint")
        return {
            "test_accuracy": 50.0,
            "best_epoch": 1,
            "epochs": 3,
        }

    monkeypatch.setattr(semi_supervised, "fine_tune", fine_tune)
    args = semi_supervised.parse_args(["--budgets", "6", "--seeds", "1", "--num_workers", "1"])
    record = tmp_path / "runs.json"
    with pytest.raises(RuntimeError, match=r"1 run\(s\) failed .*vae/6/seed1: ValueError"):
        semi_supervised.fine_tune_all(args, tmp_path, record)
    runs = json.loads(record.read_text())["runs"]
    assert sorted(runs) == sorted(f"{m}/6/seed1" for m in [*semi_supervised.METHODS, "bag_of_words"] if m != "vae")


def test_a_diverged_fine_tuning_fails_and_saves_nothing(saved, labelled_files, tmp_path):
    with pytest.raises(RuntimeError, match="training diverged: the validation loss is nan after epoch 1"):
        train_classifier.main(classifier_args(saved, labelled_files, tmp_path / "out", "--learning_rate", "1e30"))
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_a_resumed_classifier_run_ends_as_an_uninterrupted_one(saved, labelled_files, tmp_path):
    """Epoch checkpoints: 2 epochs, then resumed to 4, give the history and weights of 4 straight epochs,
    and a checkpoint of another label budget is refused."""
    flags = ("--max_train_samples", "24", "--metric_for_best_model", "accuracy", "--per_device_train_batch_size", "4")
    straight, results = train_classifier.main(
        classifier_args(saved, labelled_files, tmp_path / "straight", *flags, "--num_train_epochs", "4")
    )
    parts = classifier_args(saved, labelled_files, tmp_path / "parts", *flags, "--checkpointing_steps", "epoch")
    train_classifier.main([*parts, "--num_train_epochs", "2"])
    resumed, resumed_results = train_classifier.main(
        [*parts, "--num_train_epochs", "4", "--resume_from_checkpoint", "latest"]
    )
    assert [h["valid_loss"] for h in resumed_results["history"]] == pytest.approx(
        [h["valid_loss"] for h in results["history"]], abs=1e-6
    )
    assert resumed_results["best_epoch"] == results["best_epoch"]
    assert resumed_results["optimizer_steps"] == results["optimizer_steps"] == 4 * 6
    for name, weight in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], weight, atol=1e-6, rtol=0, msg=name)
    other = [*parts[:-2], "--max_train_samples", "12", "--num_train_epochs", "4", "--resume_from_checkpoint", "latest"]
    with pytest.raises(ValueError, match="another run: .*train_sentences 24 \\(here 12\\)"):
        train_classifier.main(other)
