"""The classification experiments: the short-Yelp preparation, the bag-of-words calibration row, the
classifier's input (BN'd or raw mean), validation-only fine-tuning, and the recipe comparison."""

import dataclasses
import json
from pathlib import Path

import bag_of_words
import classification_recipes
import prepare_yelp
import pytest
import semi_supervised
import torch
import train_classifier
from transformers import AutoTokenizer

from hf_bnvae import BNVAEConfig, BNVAEForSequenceClassification, hub

YELP_CLONE = Path(__file__).resolve().parent / "fixtures" / "yelp_clone"


def read_rows(path):
    return [line.split("\t", 1) for line in path.read_text(encoding="utf-8").splitlines()]


def test_prepare_yelp_pools_splits_and_counts_what_it_drops(tmp_path):
    argv = ["--source", str(YELP_CLONE), "--test_size", "20", "--valid_size", "10", "--train_size", "60"]
    record = prepare_yelp.main([*argv, "--output_dir", str(tmp_path / "a")])
    # 100 + 100 template lines, plus a blank line, a line that is not UTF-8 and "it was ok ." under both labels
    assert record["dropped"]["blank lines"] == 1 and record["dropped"]["lines that are not UTF-8"] == 1
    assert record["dropped"]["sentences under both labels"] == 1
    assert record["commit"] is None  # the fixture is not the top of a git clone
    splits = {name: read_rows(tmp_path / "a" / f"{name}.txt") for name in ("train", "valid", "test")}
    assert [len(splits[n]) for n in ("train", "valid", "test")] == [60, 10, 20]  # the pool capped at --train_size
    texts = [text for rows in splits.values() for _, text in rows]
    assert len(set(texts)) == len(texts) and "it was ok ." not in texts  # disjoint, no duplicates, no conflict
    assert {label for rows in splits.values() for label, _ in rows} == {"negative", "positive"}
    # the label follows the file suffix: a sentence of sentiment.*.1 is positive
    positives = set((YELP_CLONE / "data" / "yelp" / "sentiment.test.1").read_text().splitlines())
    assert all(label == "positive" for label, text in splits["train"] if text in positives)
    assert record["splits"]["train"]["sentences"] == 60 and sum(record["files"].values()) == 104
    # seeded: the same files again; another seed, another split
    prepare_yelp.main([*argv, "--output_dir", str(tmp_path / "b")])
    assert (tmp_path / "a" / "test.txt").read_text() == (tmp_path / "b" / "test.txt").read_text()
    prepare_yelp.main([*argv, "--output_dir", str(tmp_path / "c"), "--seed", "1"])
    assert (tmp_path / "a" / "test.txt").read_text() != (tmp_path / "c" / "test.txt").read_text()


def test_prepare_yelp_refuses_a_folder_that_is_not_the_clone_and_bad_sizes(tmp_path, refused):
    with pytest.raises(FileNotFoundError, match="must be a clone of"):
        prepare_yelp.main(["--source", str(tmp_path), "--output_dir", str(tmp_path / "out")])
    with pytest.raises(ValueError, match="not more than test \\+ validation"):
        prepare_yelp.main(["--source", str(YELP_CLONE), "--output_dir", str(tmp_path / "o"), "--test_size", "500"])
    refused(
        lambda: prepare_yelp.parse_args(["--source", str(YELP_CLONE), "--valid_size", "0"]), "--valid_size 0: must be"
    )


def test_bag_of_words_chooses_c_on_validation_and_separates_what_words_separate():
    good, bad = ["great food", "lovely staff", "great staff", "lovely food"], ["awful food", "rude staff"] * 2
    train = (good + bad, [1] * 4 + [0] * 4)
    valid = (["great place", "rude place", "lovely room", "awful room"], [1, 0, 1, 0])
    test = (["lovely place", "awful place"], [1, 0])
    result = bag_of_words.bag_of_words(train, valid, test)
    assert result["test_accuracy"] == 1.0 and result["valid_accuracy"] == 1.0
    assert result["C"] in bag_of_words.C_GRID
    assert bag_of_words.bag_of_words(train, valid, test, c_grid=(1.0, 10.0))["C"] == 1.0  # a tie: the smaller C
    with pytest.raises(ValueError, match="one class only"):
        bag_of_words.bag_of_words((good, [1] * 4), valid, test)


def test_bag_of_words_trains_on_the_classifiers_label_draw(labelled_files, monkeypatch):
    seen = {}

    def fake(train, valid, test):
        seen["train"] = train
        return {"valid_accuracy": 0.5, "test_accuracy": 0.5, "C": 1.0}

    monkeypatch.setattr(bag_of_words, "bag_of_words", fake)
    bag_of_words.run(labelled_files["train"], labelled_files["valid"], labelled_files["test"], 12, 3)
    texts, labels, _ = train_classifier.labelled(labelled_files["train"])
    chosen = train_classifier.stratified_subset(labels, 12, 3)
    assert seen["train"] == ([texts[i] for i in chosen], [labels[i] for i in chosen])


def test_the_classifier_reads_the_raw_mean_before_bn_when_told(tiny_config, batch):
    torch.manual_seed(0)
    bn_model = BNVAEForSequenceClassification(tiny_config(num_labels=2, gamma=0.7)).eval()
    raw_model = BNVAEForSequenceClassification(tiny_config(num_labels=2, gamma=0.7, classifier_input="raw")).eval()
    raw_model.load_state_dict(bn_model.state_dict())
    from hf_bnvae.modeling_bnvae import sequence_lengths

    ids, mask = batch["input_ids"], batch["attention_mask"]
    mu_raw = bn_model.bnvae.encoder(ids, sequence_lengths(ids, mask))[0]
    torch.testing.assert_close(raw_model(**batch).logits, bn_model.classifier(mu_raw))
    mu_bn = bn_model.bnvae(ids, mask).mu
    torch.testing.assert_close(bn_model(**batch).logits, bn_model.classifier(mu_bn))
    assert not torch.allclose(mu_raw, mu_bn)
    # training on the raw mean never runs BN: its statistics stay, and a batch of one sentence is fine
    raw_model.train()
    before = raw_model.bnvae.latent_head.bn.running_mean.clone()
    raw_model(input_ids=ids[:1], attention_mask=mask[:1], labels=torch.tensor([1])).loss.backward()
    torch.testing.assert_close(raw_model.bnvae.latent_head.bn.running_mean, before)
    assert raw_model.bnvae.encoder.lstm.weight_hh_l0.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="classifier_input"):
        BNVAEConfig(classifier_input="pre-bn")


def test_validation_only_fine_tuning_never_reads_a_test_file(saved, labelled_files, tmp_path, refused):
    argv = [
        *("--model_name_or_path", str(saved), "--train_file", str(labelled_files["train"])),
        *("--validation_file", str(labelled_files["valid"]), "--test_file", str(tmp_path / "missing.txt")),
        *("--output_dir", str(tmp_path / "out"), "--num_train_epochs", "1", "--per_device_train_batch_size", "8"),
        *("--skip_test", "--classifier_input", "raw", "--max_train_samples", "12"),
    ]  # fmt: skip
    model, results = train_classifier.main(argv)
    assert results["test_accuracy"] is None
    assert results["classifier_input"] == "raw" and model.config.classifier_input == "raw"
    saved_classifier = BNVAEForSequenceClassification.from_pretrained(tmp_path / "out").eval()
    assert saved_classifier.config.classifier_input == "raw"
    # the validation accuracy is the saved classifier's own on the validation file
    texts, labels, _ = train_classifier.labelled(labelled_files["valid"], saved_classifier.config.label2id)
    batch = AutoTokenizer.from_pretrained(tmp_path / "out")(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        predicted = saved_classifier(**batch).logits.argmax(-1)
    accuracy = float((predicted == torch.tensor(labels)).double().mean())
    assert results["eval_accuracy"] == pytest.approx(accuracy)  # a fraction
    with pytest.raises(ValueError, match="--skip_test: no test figures"):
        hub.build_model_card(tmp_path / "out", "org/c")
    # the card says what the classifier reads (its figures here are made up: this run has no test figures)
    written = json.loads((tmp_path / "out" / "all_results.json").read_text())
    made_up = {"test_accuracy": 0.5, "test_f1": 0.5, "test_majority_accuracy": 0.6, "test_majority_label": "good"}
    (tmp_path / "out" / "all_results.json").write_text(json.dumps({**written, **made_up}))
    card = hub.build_model_card(tmp_path / "out", "org/c").text
    assert "the raw posterior mean (before BN)" in card
    assert "trained on the sentences of its training file only" in card  # not one of training/'s data sets
    (tmp_path / "out" / "all_results.json").write_text(
        json.dumps({**written, **made_up, "train_file": "training/data/yelp/train.txt"})
    )
    card = hub.build_model_card(tmp_path / "out", "org/c").text
    assert "short English Yelp review sentences" in card and "semi_supervised.py --dataset yelp" in card
    refused(
        lambda: train_classifier.parse_args([*argv, "--push_to_hub", "--hub_model_id", "org/x"]),
        "--push_to_hub needs the test figures for the model card: drop --skip_test",
    )
    # without --skip_test the test file must exist
    refused(lambda: train_classifier.parse_args([a for a in argv if a != "--skip_test"]), "data file not found")


def test_a_record_of_another_recipe_is_not_mixed_in_and_old_records_name_their_selection(tmp_path, refused):
    record = tmp_path / "runs.json"
    old = {"method": "ae", "budget": 6, "seed": 1, "test_accuracy": 50.0, "metric_for_best_model": "accuracy"}
    bow = {"method": semi_supervised.BASELINE, "budget": 6, "seed": 1, "test_accuracy": 60.0, "recipe": "C=1.0"}
    record.write_text(json.dumps({"runs": {"ae/6/seed1": old, "bag_of_words/6/seed1": bow}, "wall_seconds": 1.0}))
    args = semi_supervised.parse_args(["--budgets", "6", "--seeds", "1", "--num_workers", "1"])
    assert args.fine_tune_args == semi_supervised.FINE_TUNING_RECIPE == "--metric_for_best_model loss"
    with pytest.raises(ValueError, match="fine-tuned with '--metric_for_best_model accuracy', this run's recipe is"):
        semi_supervised.fine_tune_all(args, tmp_path, record)
    assert json.loads(record.read_text())["runs"]["ae/6/seed1"] == old  # untouched
    # the same recipe resumes (the bag-of-words row has none of its own and is never in the way)
    args = semi_supervised.parse_args([*("--budgets", "6", "--seeds", "1", "--num_workers", "1"),
                                       "--fine_tune_args", "--metric_for_best_model accuracy"])  # fmt: skip
    assert semi_supervised.read_record(args, record)["runs"]["ae/6/seed1"] == old
    # a run recorded before the selection was recorded was selected by the loss
    assert semi_supervised.recipe_of({"method": "ae"}) == "--metric_for_best_model loss"
    refused(
        lambda: semi_supervised.parse_args(["--fine_tune_args", "--no_such_flag 3"]),
        "--fine_tune_args '--no_such_flag 3': not flags train_classifier.py accepts",
    )


def test_a_record_made_with_other_caps_is_not_mixed_in(tmp_path):
    """Runs recorded before their caps were had the defaults; other fine-tuning or pretraining caps refuse."""
    record = tmp_path / "runs.json"
    legacy = {"method": "ae", "budget": 6, "seed": 1, "test_accuracy": 50.0, "recipe": "--metric_for_best_model loss"}
    capped = {**legacy, "caps": {"num_train_epochs": 2, "max_train_steps": None, "pretrain_epochs": 10}}
    record.write_text(json.dumps({"runs": {"ae/6/seed1": legacy}, "wall_seconds": 1.0}))
    plain = ["--budgets", "6", "--seeds", "1"]
    assert semi_supervised.read_record(semi_supervised.parse_args(plain), record)["runs"]["ae/6/seed1"] == legacy
    for extra in (["--max_train_steps", "3"], ["--pretrain_epochs", "2"]):
        with pytest.raises(ValueError, match="ae/6/seed1 was run with"):
            semi_supervised.read_record(semi_supervised.parse_args([*plain, *extra]), record)
    record.write_text(json.dumps({"runs": {"ae/6/seed1": capped}, "wall_seconds": 1.0}))
    assert semi_supervised.read_record(semi_supervised.parse_args([*plain, "--num_train_epochs", "2"]), record)
    with pytest.raises(ValueError, match="pass the same flags to resume it"):
        semi_supervised.read_record(semi_supervised.parse_args(plain), record)


def test_the_yelp_dataset_sets_the_defaults_and_names_how_to_make_its_files(tmp_path, monkeypatch):
    yelp = dataclasses.replace(semi_supervised.DATASETS["yelp"], folder=tmp_path)
    monkeypatch.setitem(semi_supervised.DATASETS, "yelp", yelp)
    with pytest.raises(FileNotFoundError, match="make it with python training/prepare_yelp.py --source"):
        semi_supervised.main(["--dataset", "yelp"])  # no prepared files
    for name in ("train", "valid", "test"):
        (tmp_path / f"{name}.txt").write_text("positive\tgood .\nnegative\tbad .\n")
    args = semi_supervised.parse_args(["--dataset", "yelp"])
    assert args.preset == "short_yelp" and args.budgets == [100, 500, 1000, 2000, 10000]
    assert args.max_seeds == {"2000": 5, "10000": 3} and args.suffix == "_yelp"
    assert semi_supervised.models_folder(args).name == "classification_yelp_models"


@pytest.mark.slow
def test_the_recipe_comparison_scores_on_held_out_pool_sentences_and_resumes(
    saved, tmp_path, sentences_file, monkeypatch
):
    texts = sentences_file.read_text().splitlines()[:100]
    pool, valid = tmp_path / "pool.txt", tmp_path / "valid.txt"
    pool.write_text("".join(f"{'good' if i % 3 else 'bad'}\t{t}\n" for i, t in enumerate(texts[:80])))
    valid.write_text("".join(f"{'good' if i % 3 else 'bad'}\t{t}\n" for i, t in enumerate(texts[80:])))
    models = tmp_path / "out" / "classification_yelp_models"
    for method in ("bnvae_0.7", "vae"):
        (models / method).mkdir(parents=True)
        for file in saved.iterdir():
            (models / method / file.name).write_bytes(file.read_bytes())
    argv = [
        *("--output_dir", str(tmp_path / "out"), "--train_file", str(pool), "--validation_file", str(valid)),
        *("--recipes", "official", "raw_mean", "--budgets", "12", "--seeds", "1", "2", "--heldout_size", "20"),
        *("--num_workers", "1", "--num_train_epochs", "1"),
    ]  # fmt: skip
    summary = classification_recipes.main(argv)
    assert set(summary["recipes"]) == {"official", "raw_mean"} and set(summary["bag_of_words"]) == {"12"}
    cell = summary["recipes"]["raw_mean"]["cells"]["vae/12"]
    assert len(cell["runs"]) == 2 and all(0 <= r <= 100 for r in cell["runs"])
    data = tmp_path / "out" / "classification_recipes_yelp_data"
    heldout = (data / "heldout.txt").read_text().splitlines()
    assert heldout == pool.read_text().splitlines()[-20:]  # the last 20 pool lines, never trained on
    assert not set(heldout) & set((data / "train.txt").read_text().splitlines())
    runs = json.loads((tmp_path / "out" / "classification_recipes_yelp_runs.json").read_text())["runs"]
    assert len(runs) == 2 * 2 * 2 + 2 and {r["recipe"] for r in runs.values() if r["recipe_name"] == "raw_mean"} == {
        classification_recipes.RECIPES["raw_mean"][0]
    }
    assert "raw_mean" in (tmp_path / "out" / "classification_recipes_yelp.md").read_text()

    def fail(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(semi_supervised, "fine_tune", fail)
    assert classification_recipes.main(argv) == summary
    with pytest.raises(FileNotFoundError, match="--pretrain_only first"):
        classification_recipes.main([*argv, "--methods", "ae"])


def test_paired_differences_are_taken_seed_by_seed_with_a_t_interval():
    def run(method, seed, accuracy, budget=100):
        return {"method": method, "seed": seed, "budget": budget, "test_accuracy": accuracy}

    runs = {
        "a1": run("bnvae_0.7", 1, 80.0), "b1": run("vae", 1, 70.0),
        "a2": run("bnvae_0.7", 2, 90.0), "b2": run("vae", 2, 82.0),
        "a3": run("bnvae_0.7", 3, 85.0), "b3": run("vae", 3, 76.0),
        "a4": run("bnvae_0.7", 4, 99.0),  # no VAE run at seed 4: not paired
        "c1": run("vae", 1, 10.0, budget=500),  # another budget
    }  # fmt: skip
    d = semi_supervised.paired_difference(runs, "bnvae_0.7", "vae", 100)
    # differences 10, 8, 9: mean 9, sd 1, t(0.975, 2) = 4.3027 -> half width 4.3027 / sqrt(3)
    assert d["n"] == 3 and d["mean"] == pytest.approx(9.0)
    assert d["ci95"] == pytest.approx([9 - 4.302653 / 3**0.5, 9 + 4.302653 / 3**0.5], abs=1e-5)
    assert semi_supervised.paired_difference(runs, "bnvae_0.7", "vae", 500) is None  # one side only


def test_the_papers_figures_are_matched_by_budget_and_shown_beside_short_yelp_only(tmp_path, labelled_files):
    import semi_supervised

    files = ["--train_file", str(labelled_files["train"]), "--validation_file", str(labelled_files["valid"])]
    files += ["--test_file", str(labelled_files["test"]), "--output_dir", str(tmp_path), "--seeds", "1"]
    runs = {
        f"bnvae_0.7/{b}/seed1": {"method": "bnvae_0.7", "budget": b, "seed": 1, "test_accuracy": 80.0}
        for b in (100, 500, 2000)
    }
    for dataset in ("yelp", "rotten_tomatoes"):
        args = semi_supervised.parse_args(["--dataset", dataset, "--budgets", "100", "500", "2000", *files])
        semi_supervised.write_results(args, runs, None, 0.0)
        row = next(line for line in (tmp_path / f"classification{args.suffix}.md").read_text().splitlines()
                   if line.startswith("| BN-VAE (0.7) |"))  # fmt: skip
        if dataset == "yelp":  # the 2,000-label column holds the paper's 2,000-label figure, not its 1,000's
            assert "[paper 88.8]" in row and "[paper 91.6]" in row and "[paper 94.1]" in row and "92.5" not in row
        else:
            assert "paper" not in row
