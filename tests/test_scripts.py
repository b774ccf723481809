"""training/evaluate_model.py and training/generate.py on a tiny checkpoint; converged.py's plan, schedule,
evaluation and paired differences."""

import json
import random
import statistics
from pathlib import Path

import converged
import evaluate_model
import generate
import pytest
import sacrebleu
import show_outputs

from hf_bnvae import load_pretrained
from hf_bnvae.data import read_text_file, sentence_loader, tokenize_texts
from hf_bnvae.evaluation import evaluate_language_model
from hf_bnvae.hub import build_model_card


def test_evaluate_script_writes_json_and_table(saved, sentences_file, capsys):
    metrics = evaluate_model.main(
        [
            "--model_name_or_path",
            str(saved),
            "--test_file",
            str(sentences_file),
            "--max_eval_samples",
            "12",
            "--iw_samples",
            "4",
        ]
    )
    results = json.loads((saved / "all_results.json").read_text())
    written = results["evaluation_subset"]  # 12 of the file's sentences: kept apart from a whole-split figure
    assert "evaluation" not in results
    assert written["num_sentences"] == 12 and written["iw_samples"] == 4 and written["nll"] == metrics["nll"]
    # the NLL is the model's own on those sentences: recomputed here with the script's seed
    model, tokenizer = load_pretrained(saved)
    texts = read_text_file(sentences_file).texts[:12]
    again = evaluate_language_model(model, sentence_loader(tokenize_texts(tokenizer, texts), tokenizer, 64),
                                    iw_samples=4, seed=evaluate_model.parse_args(["--model_name_or_path", "x"]).seed)  # fmt: skip
    assert written["nll"] == pytest.approx(again["nll"], rel=1e-5)
    printed = capsys.readouterr().out
    assert "| NLL (IW) |" in printed and "| AU |" in printed and "roughly 0 min on 2 CPU cores" in printed
    # a card takes the subset only when asked
    with pytest.raises(ValueError, match="has no measured NLL"):
        build_model_card(saved, "org/m")
    assert f"{written['nll']:.2f}" in build_model_card(saved, "org/m", allow_subset=True).text
    evaluate_model.main(["--model_name_or_path", str(saved), "--test_file", str(sentences_file), "--iw_samples", "2"])
    whole = json.loads((saved / "all_results.json").read_text())
    assert whole["evaluation"]["num_sentences"] == len(read_text_file(sentences_file).texts)
    assert whole["evaluation_subset"] == written  # the subset's figures stay as they were


def test_generate_script(saved, corpus):
    script, tmp_path = generate, saved
    assert len(script.main(["--model_name_or_path", str(tmp_path), "sample", "--num_samples", "3"])) == 3
    sampled = ["--model_name_or_path", str(tmp_path), "--do_sample", "--top_p", "0.9", "--seed", "4", "sample"]
    assert script.main(sampled) == script.main(sampled)
    lines = script.main(
        ["--model_name_or_path", str(tmp_path), "--num_beams", "3", "reconstruct", corpus[0], corpus[1]]
    )
    model, tokenizer = load_pretrained(saved)  # what the script prints is the model's own output
    expected = model.reconstruct(corpus[:2], tokenizer, num_beams=3)
    assert lines == [f"{text}\t->\t{out}" for text, out in zip(corpus[:2], expected)]
    path = script.main(["--model_name_or_path", str(tmp_path), "interpolate", corpus[0], corpus[1], "--steps", "4"])
    assert path == model.interpolate(corpus[0], corpus[1], tokenizer, steps=4)


def test_show_outputs_prints_each_models_own_outputs_side_by_side(saved, sentences_file, capsys):
    argv = ["--model_name_or_path", str(saved), str(saved), "--test_file", str(sentences_file), "--num_bleu", "10"]
    show_outputs.main(argv)
    printed = capsys.readouterr().out
    model, tokenizer = load_pretrained(saved)
    drawn = random.Random(0).sample(read_text_file(sentences_file).texts, 10)  # the BLEU's; the first 4 shown
    reconstructions = model.reconstruct(drawn, tokenizer)
    for text, out in zip(drawn[:4], reconstructions):
        assert f"| {text} | {out or '(empty)'} | {out or '(empty)'} |" in printed  # one column per model
    bleu = sacrebleu.corpus_bleu(reconstructions, [drawn], tokenize="none", force=True).score
    assert f"| reconstruction BLEU, greedy, 10 sentences | {bleu:.1f} | {bleu:.1f} |" in printed
    examples = drawn[:4]
    path = model.interpolate(examples[0], examples[1], tokenizer, steps=5)
    assert f"| 0.50 | {path[2] or '(empty)'} |" in printed
    with pytest.raises(SystemExit):
        show_outputs.parse_args(["--model_name_or_path", "x", "--steps", "1"])


def test_decoding_options_go_before_or_after_the_subcommand(saved, corpus):
    before = generate.main(["--model_name_or_path", str(saved), "--num_beams", "3", "interpolate", *corpus[:2]])
    after = generate.main(["--model_name_or_path", str(saved), "interpolate", *corpus[:2], "--num_beams", "3"])
    assert before == after
    for argv in (["--num_beams", "3", "sample"], ["sample", "--num_beams", "3"]):
        assert generate.parse_args(["--model_name_or_path", "x", *argv]).num_beams == 3
    assert generate.parse_args(["--model_name_or_path", "x", "sample"]).num_beams == 1


@pytest.mark.parametrize(
    "script, argv, message",
    [
        (evaluate_model, ["--iw_samples", "-1"], "--iw_samples -1: must be >= 0"),
        (evaluate_model, ["--max_eval_samples", "1"], "--max_eval_samples 1: must be >= 2"),
        (generate, ["sample", "--num_samples", "0"], "--num_samples 0: must be >= 1"),
        (generate, ["--top_p", "1.5", "sample"], "--top_p 1.5: must be <= 1"),
        (generate, ["interpolate", "a", "b", "--steps", "1"], "--steps 1: must be >= 2"),
        (generate, ["--temperature", "0", "sample"], "--temperature 0.0: must be > 0"),
    ],
)
def test_bad_flags_name_the_flag(script, argv, message, capsys):
    with pytest.raises(SystemExit):
        script.parse_args(["--model_name_or_path", "x", *argv])
    assert message in capsys.readouterr().err


def test_scripts_name_a_missing_model_folder(tmp_path):
    for script, extra in ((evaluate_model, []), (generate, ["sample"])):
        with pytest.raises(FileNotFoundError, match="no such model folder"):
            script.main(["--model_name_or_path", str(tmp_path / "missing"), *extra])


def test_converged_summary_is_mean_and_sample_std_over_seeds():
    runs = [{"nll": 100.0, "kl": 5.0}, {"nll": 102.0, "kl": 7.0}, {"nll": 104.0, "kl": 6.0}]
    summary = converged.summarise(runs)
    assert summary["nll"] == {"mean": 102.0, "std": 2.0, "runs": [100.0, 102.0, 104.0]}
    assert summary["kl"]["std"] == pytest.approx(1.0) and "mi" not in summary
    assert converged.summarise(runs[:1])["nll"]["std"] == 0.0  # one seed: no spread claimed


def test_converged_plans_the_comparison_seed_by_seed_then_the_trade_off_with_the_first_seed():
    args = converged.parse_args(["--seeds", "7", "8"])
    planned = [(seed, method) for seed, method, _ in converged.runs(args)]
    comparison = [(s, m) for s in (7, 8) for m in ("lm", "vae", "bnvae_0.6")]
    trade_off = [(7, m) for m in ("ae", "bnvae_0.3", "bnvae_0.9", "bnvae_1.2", "bnvae_1.5")]
    beyond = [(7, m) for m in ("bnvae_learned_0.3", "transformer_lm", "transformer_vae", "transformer_bnvae_0.6",
                               "transformer_bnvae_1.2")]  # fmt: skip
    assert planned == comparison + trade_off + beyond
    flags = converged.FIRST_SEED_ONLY["transformer_bnvae_0.6"].train_flags()
    assert flags == ["--method", "bnvae", "--gamma", "0.6", "--decoder_type", "transformer", "--optimizer", "adam"]
    assert converged.LABELS["transformer_lm"] == "Transformer LM"
    assert converged.LABELS["bnvae_learned_0.3"] == "BN-VAE (learned gamma >= 0.3)"
    args = converged.parse_args(["--seeds", "7", "--methods", "lm", "bnvae_1.5"])
    assert [(s, m) for s, m, _ in converged.runs(args)] == [(7, "lm"), (7, "bnvae_1.5")]


def test_converged_trains_every_model_with_one_schedule():
    """The LM gets the VAE rule too: no method-specific plateau defaults reach train.py."""
    args = converged.parse_args([])
    flags = converged.schedule_flags(args)
    assert flags == [
        *("--plateau_start_epoch", "15", "--plateau_patience", "5"),
        *("--plateau_factor", "0.5", "--plateau_max_decays", "5"),
    ]
    assert (args.num_train_epochs, args.kl_warmup_epochs, args.iw_test_sentences) == (100, 10.0, 1000)


def test_paired_nll_difference_and_its_t_interval():
    from scipy.stats import t

    base = [100.0, 110.0, 90.0, 105.0]
    results = {
        "lm": {1: {"nll_per_sentence": base}, 2: {"nll_per_sentence": base}},
        "bnvae_0.6": {
            1: {"nll_per_sentence": [b + 1.0 for b in base]},
            2: {"nll_per_sentence": [b + d for b, d in zip(base, (0, 2, 1, 3))]},
        },
    }
    paired = converged.paired_nll(results, "bnvae_0.6", "lm")
    differences = [0.5, 1.5, 1.0, 2.0]  # seed-averaged per sentence
    mean, sd = 1.25, (sum((d - 1.25) ** 2 for d in differences) / 3) ** 0.5
    half = t.ppf(0.975, 3) * sd / 2
    assert paired["mean"] == pytest.approx(mean) and paired["n"] == 4
    assert paired["ci95"] == pytest.approx([mean - half, mean + half])
    assert paired["per_seed"] == pytest.approx([1.0, 1.5]) and paired["seeds"] == [1, 2]
    # training noise: the t interval over the 2 seeds' means (1 degree of freedom), far wider than the sentences'
    seed_half = t.ppf(0.975, 1) * statistics.stdev([1.0, 1.5]) / 2**0.5
    assert paired["across_seeds"]["ci95"] == pytest.approx([1.25 - seed_half, 1.25 + seed_half])
    assert converged.paired_nll(results, "vae", "lm") is None  # no shared seed: nothing claimed
    # by length: the thirds of the sample sorted by tokens (here 2 sentences each), each with its interval
    six = {
        "lm": {1: {"nll_per_sentence": [10.0] * 6}},
        "bnvae_0.6": {1: {"nll_per_sentence": [11.0, 12.0, 9.0, 7.0, 9.5, 11.5]}},
    }
    thirds = converged.paired_nll(six, "bnvae_0.6", "lm", lengths=[30, 5, 12, 40, 11, 6])["by_length"]
    assert [t["tokens"] for t in thirds] == [[5, 6], [11, 12], [30, 40]]
    assert [t["mean"] for t in thirds] == pytest.approx([1.75, -0.75, -1.0]) and thirds[0]["n"] == 2
    assert "across_seeds" not in converged.paired_nll(six, "bnvae_0.6", "lm")  # one seed: no training-noise claim


def test_converged_evaluation_keeps_per_sentence_nll_examples_and_refuses_other_schedules(
    train_run, tmp_path, corpus, sentences_file, monkeypatch
):
    import dataclasses

    data = tmp_path / "corpus"
    data.mkdir()
    for split in ("train", "valid", "test"):
        (data / f"{split}.txt").write_text(sentences_file.read_text())
    tiny = dataclasses.replace(converged.CORPORA["sentences"], folder=data, max_train_samples=30000)
    monkeypatch.setitem(converged.CORPORA, "sentences", tiny)  # 30,000: the tiny run's (its preset's)
    schedule = ["--plateau_start_epoch", "15", "--plateau_patience", "5", "--plateau_factor", "0.5"]
    train_run("--method", "bnvae", "--gamma", "0.6", "--kl_warmup_epochs", "10", *schedule, "--plateau_max_decays", "5",
              "--train_file", str(data / "train.txt"))  # fmt: skip
    folder = tmp_path / "run"
    args = converged.parse_args(["--num_train_epochs", "1", "--iw_samples", "4", "--iw_test_sentences", "12"])
    texts = corpus * 4
    sample = converged.iw_sample(args, len(texts))
    record = tmp_path / "record.json"
    metrics = converged.evaluate_run(folder, record, texts, sample, args)
    assert len(metrics["nll_per_sentence"]) == 12
    assert sum(metrics["nll_per_sentence"]) / 12 == pytest.approx(metrics["nll"], abs=1e-3)
    assert [e["input"] for e in metrics["examples"]] == [texts[i] for i in sample[:5]]
    assert all(len(p["path"]) == 5 for p in metrics["interpolations"]) and len(metrics["interpolations"]) == 2
    assert metrics["kl_bound"] == pytest.approx(8 * 0.6**2 / 2)
    # the BLEU is the saved model's beam-5 reconstructions of the sample, scored against the inputs
    model, tokenizer = load_pretrained(folder)
    inputs = [texts[i] for i in sample]
    beam = model.reconstruct(inputs, tokenizer, num_beams=5)
    bleu = sacrebleu.corpus_bleu(beam, [inputs], tokenize="none", force=True).score
    assert metrics["bleu_beam5"] == pytest.approx(bleu) and [e["beam5"] for e in metrics["examples"]] == beam[:5]
    # seen: greedy BLEU on a seeded sample of the sentences it trained on (the train file's first lines)
    seen = read_text_file(data / "train.txt").texts[: args.max_train_samples]
    seen = random.Random(args.sample_seed).sample(seen, min(12, len(seen)))
    greedy_seen = sacrebleu.corpus_bleu(model.reconstruct(seen, tokenizer), [seen], tokenize="none", force=True)
    assert metrics["bleu_seen"] == pytest.approx(greedy_seen.score)
    assert converged.evaluate_run(folder, record, texts, sample, args) == metrics  # the record is reused
    kept = json.loads(record.read_text())
    del kept["test"]["bleu_seen"]  # a record made before the figure existed gets it, the rest unchanged
    record.write_text(json.dumps(kept))
    assert converged.evaluate_run(folder, record, texts, sample, args) == metrics
    assert json.loads(record.read_text())["test"]["bleu_seen"] == pytest.approx(greedy_seen.score)
    args.sample_seed = 1
    with pytest.raises(ValueError, match="has another sample"):
        converged.evaluate_run(folder, record, texts, sample, args)
    args.plateau_patience = 2
    with pytest.raises(ValueError, match=r"another schedule: plateau_patience 5 \(here 2\)"):
        converged.evaluate_run(folder, tmp_path / "other.json", texts, sample, args)
    monkeypatch.setitem(converged.CORPORA, "sentences", dataclasses.replace(tiny, folder=tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="make it with python training/prepare_brown.py"):
        converged.evaluate_run(folder, tmp_path / "other.json", texts, sample, args)


def test_converged_documents_corpus_defaults(refused):
    args = converged.parse_args(["--corpus", "documents"])
    assert (args.seeds, args.methods, args.max_train_samples) == ([42], ["lm", "vae", "bnvae_0.6"], 5000)
    assert converged.record_path(args, "lm", 42).parent.name == "long_documents_runs"
    # the gamma sweep is on sentences only
    refused(
        lambda: converged.parse_args(["--corpus", "documents", "--methods", "bnvae_1.5"]),
        "argument --methods: invalid choice: 'bnvae_1.5'",
    )
    refused(lambda: converged.parse_args(["--seeds", "42", "-1"]), "--seeds -1: seeds are at least 0")


def test_rotten_tomatoes_preparation_drops_plots_and_duplicates_and_splits_by_seed(tmp_path):
    import bz2
    import csv

    import prepare_rotten_tomatoes

    rows = [
        ("plot", "A synopsis."),
        ("fresh", "Isn't it GREAT?"),
        ("rotten", "Dull, dull."),
        ("fresh", "isn't it great ?"),
    ]
    rows += [("fresh" if i % 2 else "rotten", f"Review number {i}.") for i in range(20)] + [
        ("rotten", "  "),
        ("meh", "x"),
    ]
    source = tmp_path / "rt.csv.bz2"
    with bz2.open(source, "wt", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["category", "text", "movie_name", "has_plot_and_reviews"])
        writer.writerows([(c, t, "film", "False") for c, t in rows])
    out = tmp_path / "out"
    argv = ["--source_file", str(source), "--output_dir", str(out), "--test_size", "4", "--valid_size", "3"]
    prepare_rotten_tomatoes.main(argv)
    splits = {name: (out / f"{name}.txt").read_text().splitlines() for name in ("train", "valid", "test")}
    assert [len(lines) for lines in splits.values()] == [15, 3, 4]  # 22 usable: 1 plot, 1 duplicate, 1 empty, 1 unknown
    every = [line for lines in splits.values() for line in lines]
    assert "fresh\tisn't it great ?" in every and all(line.split("\t")[0] in ("fresh", "rotten") for line in every)
    assert "Apache License" in (out / "NOTICE").read_text()
    first = {name: list(lines) for name, lines in splits.items()}
    prepare_rotten_tomatoes.main(argv)  # the same splits every time
    assert {name: (out / f"{name}.txt").read_text().splitlines() for name in first} == first
    with pytest.raises(ValueError, match="not more than test \\+ validation"):
        prepare_rotten_tomatoes.main([*argv[:4], "--test_size", "20", "--valid_size", "3"])


def test_seeded_splits_are_disjoint_deterministic_and_refuse_too_little_data():
    from corpus_splits import seeded_splits

    items = list(range(20))
    splits = seeded_splits(items, 4, 3, 7, "corpus.txt", "sentences")
    assert [len(splits[name]) for name in ("test", "valid", "train")] == [4, 3, 13]
    assert sorted(splits["test"] + splits["valid"] + splits["train"]) == items and items == list(range(20))
    assert splits == seeded_splits(items, 4, 3, 7, "corpus.txt", "sentences")
    assert splits != seeded_splits(items, 4, 3, 8, "corpus.txt", "sentences")
    with pytest.raises(ValueError, match=r"corpus.txt: 20 sentences, not more than test \+ validation \(20\)"):
        seeded_splits(items, 10, 10, 7, "corpus.txt", "sentences")


def test_installed_data_file_names_what_to_install(tmp_path):
    from corpus_splits import installed_data_file

    assert installed_data_file("hf_bnvae", "configuration_bnvae.py", "hf_bnvae", "pip install hf_bnvae").is_file()
    with pytest.raises(FileNotFoundError, match="no_such_package is not installed: pip install no-such-package==1.0"):
        installed_data_file("no_such_package", "data.json", "no-such-package==1.0", "pip install no-such-package==1.0")
    with pytest.raises(FileNotFoundError, match="the installed hf_bnvae is not hf_bnvae==9"):
        installed_data_file("hf_bnvae", "missing.json", "hf_bnvae==9", "pip install hf_bnvae==9")


def test_reproduce_only_accepts_the_names_of_its_runs(refused):
    import reproduce

    assert reproduce.parse_args(["--only", "vae", "bnvae_0.6"]).only == ["vae", "bnvae_0.6"]
    refused(lambda: reproduce.parse_args(["--only", "vae", "bn-vae"]), "--only: unknown run(s) ['bn-vae']")


def test_a_resumable_comparison_run_checkpoints_each_epoch_and_resumes_from_the_last(tmp_path, monkeypatch):
    import argparse

    import experiments

    commands = []
    monkeypatch.setattr(experiments.subprocess, "run", lambda command, check: commands.append(command))
    budget = argparse.Namespace(num_train_epochs=3, kl_warmup_epochs=1, max_train_samples=None)
    experiments.run_train_script(tmp_path / "run", budget, 1, ["--method", "vae"], resumable=True)
    (tmp_path / "run" / "checkpoints" / "step_40").mkdir(parents=True)
    experiments.run_train_script(tmp_path / "run", budget, 1, ["--method", "vae"], resumable=True)
    experiments.run_train_script(tmp_path / "run", budget, 1, ["--method", "vae"])
    fresh, resumed, plain = (" ".join(command) for command in commands)
    assert "--checkpointing_steps epoch" in fresh and "--resume_from_checkpoint" not in fresh
    assert "--checkpointing_steps epoch --resume_from_checkpoint latest" in resumed
    assert "--checkpointing_steps" not in plain and "--resume_from_checkpoint" not in plain


def test_a_reproduce_part_evaluates_its_runs_and_writes_no_table(tmp_path, capsys):
    import reproduce

    folder = tmp_path / "models" / "vae"
    folder.mkdir(parents=True)
    history = [{"epoch": 0, "valid_kl": 0.1, "valid_mi": 0.0}]
    trained = {
        "training_args": {},
        "method": "vae",
        "method_label": "VAE",
        "train_seconds": 10.0,
        "best_epoch": 0,
        "history": history,
    }
    tested = {"nll": 98.7, "ppl": 147.8, "nelbo": 108.9, "kl": 0.05, "mi": -0.13, "au": 0}
    tested.update(protocol="reproduce.py", iw_sentences=200)  # reproduce.py's cached evaluation
    (folder / "all_results.json").write_text(json.dumps({"task": "language-modeling", **trained, "evaluation": tested}))
    results = reproduce.main(["--output_dir", str(tmp_path), "--only", "vae"])
    assert results["vae"]["nll"] == 98.7 and "NLL 98.70" in capsys.readouterr().out
    assert not any((tmp_path / name).exists() for name in ("results.json", "results.md", "kl_mi_curves.png"))


def test_converged_results_files_have_the_protocol_the_paired_differences_and_the_sweep(tmp_path):
    args = converged.parse_args(["--seeds", "1", "2", "--output_dir", str(tmp_path)])
    sentences = [100.0, 90.0, 80.0]

    def run(shift, kl, seed):
        nll = [x + shift + 0.1 * seed * i for i, x in enumerate(sentences)]
        return {
            "nll": sum(nll) / 3, "nll_per_sentence": nll, "kl": kl, "bleu": 1.0 + kl, "bleu_beam5": 2.0 + kl,
            "train_seconds": 1.0, "eval_seconds": 1.0, "kl_bound": kl / 2,
            "examples": [{"input": "a b", "greedy": "a", "beam5": "a b"}],
            "interpolations": [{"from": "a", "to": "b", "path": ["a", "b"]}],
        }  # fmt: skip

    results = {"lm": {1: run(0, 0, 1), 2: run(0, 0, 2)}, "vae": {1: run(0.5, 0.1, 1), 2: run(0.5, 0.1, 2)}}
    results["bnvae_0.6"] = {1: run(1.0, 6.0, 1), 2: run(1.0, 6.0, 2)}
    results["bnvae_1.5"] = {1: run(3.0, 40.0, 1)}
    converged.write_results(results, args, tmp_path)
    report = json.loads((tmp_path / "converged.json").read_text())
    assert report["protocol"]["same_schedule_for_all"] and report["protocol"]["iw_test_sentences"] == 1000
    assert (
        report["methods"]["lm"]["nll"]["runs"] == pytest.approx([90.1, 90.2]) and "bnvae_1.5" not in report["methods"]
    )
    assert report["paired"]["bnvae_0.6-lm"]["mean"] == pytest.approx(1.0)
    assert (report["cpu_hours"], report["runs_without_cpu_time"]) == (0.0, 7)  # none of the 7 runs counted it
    counted = {"train_cpu_seconds": 5400.0, "eval_cpu_seconds": 1800.0, "train_seconds": 6000.0, "eval_seconds": 2000.0}
    uncounted = {"train_cpu_seconds": None, "eval_cpu_seconds": 9.0, "train_seconds": 10.0, "eval_seconds": 10.0}
    assert converged.cost([counted, counted, uncounted]) == {
        "seconds": 16020.0,
        "cpu_hours": 4.0,
        "runs_without_cpu_time": 1,
    }
    assert report["paired"]["vae-lm"]["ci95"] == pytest.approx([0.5, 0.5])  # the same shift on every sentence
    # the null calibration: seed 2 minus seed 1 of one model is 0.1 * i on sentence i (training noise alone)
    assert report["seed_to_seed"]["lm"]["2-1"]["mean"] == pytest.approx(0.1)
    assert set(report["seed_to_seed"]) == {"lm", "vae", "bnvae_0.6"}  # one seed (BN-VAE 1.5): no row
    assert "| LSTM-LM | 2-1 | +0.10 [-0.15, +0.35] (3 sentences) |" in (tmp_path / "converged.md").read_text()
    assert (
        "| BN-VAE (0.6) - LSTM-LM | +1.00 [+1.00, +1.00] (3 sentences) | +1.00, +1.00 [+1.00, +1.00] |"
        in (tmp_path / "converged.md").read_text()
    )
    converged.write_sweep({m: r for m, r in results.items() if m != "bnvae_1.5"}, args, tmp_path)
    assert not (tmp_path / "gamma_sweep.json").exists()  # the comparison's runs alone are no sweep
    converged.write_sweep(results, args, tmp_path)
    sweep = json.loads((tmp_path / "gamma_sweep.json").read_text())
    assert list(sweep["methods"]) == ["vae", "bnvae_0.6", "bnvae_1.5"]  # by gamma, the ends outside
    assert sweep["methods"]["bnvae_1.5"]["kl_bound"] == 20.0 and sweep["protocol"]["corpus"] == "sentences"
    assert (tmp_path / "gamma_sweep.png").stat().st_size > 0
    assert "### BN-VAE (1.5)" in (tmp_path / "gamma_sweep.md").read_text()


def test_converged_writes_its_files_from_every_record_whatever_one_evaluation_selects(
    tmp_path, sentences_file, monkeypatch
):
    import dataclasses

    data = tmp_path / "corpus"
    data.mkdir()
    for split in ("train", "valid", "test"):
        (data / f"{split}.txt").write_text(sentences_file.read_text())
    monkeypatch.setitem(
        converged.CORPORA, "sentences", dataclasses.replace(converged.CORPORA["sentences"], folder=data)
    )
    flags = ["--output_dir", str(tmp_path), "--iw_test_sentences", "10", "--iw_samples", "4"]
    args = converged.parse_args(flags)
    (tmp_path / "converged_runs").mkdir()

    def record(method, seed, shift, sample=None):
        test = {
            "nll": 100.0 + shift, "nll_per_sentence": [100.0 + shift] * 10, "kl": shift, "bleu": 1.0,
            "bleu_beam5": 1.0, "train_seconds": 1.0, "eval_seconds": 1.0, "examples": [], "interpolations": [],
        }  # fmt: skip
        history = [{"epoch": 0, "valid_nelbo": 110.0, "valid_kl": shift}]
        kept = {"sample": sample or converged.sample_settings(args), "test": test, "history": history}
        (tmp_path / "converged_runs" / f"{method}_seed{seed}.json").write_text(json.dumps(kept))

    record("lm", 42, 0.0)
    record("vae", 42, 0.5)
    record("lm", 43, 0.0)
    record("bnvae_0.6", 43, 2.0)
    record("bnvae_1.5", 42, 30.0)
    # one run evaluated (here: its record reused), as a lane does after training it
    converged.main(["--evaluate_only", "--seeds", "43", "--methods", "bnvae_0.6", *flags])
    report = json.loads((tmp_path / "converged.json").read_text())
    assert {m: s["seeds"] for m, s in report["methods"].items()} == {"lm": [42, 43], "vae": [42], "bnvae_0.6": [43]}
    assert report["paired"]["bnvae_0.6-lm"]["seeds"] == [43] and report["paired"]["vae-lm"]["seeds"] == [42]
    assert "methods" not in report["settings"] and "seeds" not in report["settings"]
    sweep = json.loads((tmp_path / "gamma_sweep.json").read_text())
    assert sweep["seed"] == 42 and list(sweep["methods"]) == ["vae", "bnvae_1.5"]  # the seed of the sweep's own run
    assert (tmp_path / "converged_curves.png").stat().st_size > 0
    (tmp_path / "converged_runs" / "notes.json").write_text("{}")  # not a record: skipped
    (tmp_path / "converged_runs" / "transformer_lm_seedx.json").write_text("{}")
    converged.main(["--evaluate_only", "--seeds", "43", "--methods", "bnvae_0.6", *flags])
    assert json.loads((tmp_path / "converged.json").read_text())["methods"] == report["methods"]
    record("vae", 44, 0.5, sample={"sample_seed": 1, "iw_test_sentences": 10, "iw_samples": 4})
    with pytest.raises(ValueError, match=r"vae_seed44.json has another sample"):
        converged.main(["--evaluate_only", "--seeds", "43", "--methods", "bnvae_0.6", *flags])
    # a smoke run's record (another schedule) is refused too, not merged into the comparison
    kept = json.loads((tmp_path / "converged_runs" / "vae_seed44.json").read_text())
    kept["sample"] = converged.sample_settings(args)
    kept["schedule"] = {**converged.schedule_settings(args), "num_train_epochs": 3}
    (tmp_path / "converged_runs" / "vae_seed44.json").write_text(json.dumps(kept))
    with pytest.raises(ValueError, match=r"vae_seed44.json has another schedule \(.*'num_train_epochs': 3"):
        converged.main(["--evaluate_only", "--seeds", "43", "--methods", "bnvae_0.6", *flags])


def test_the_speed_benchmark_counts_the_transformer_decoders_matrix_flops():
    """2 FLOPs per weight of the GPT-2 blocks' matrices (each multiplies once per token) plus the output layer."""
    from common import decoder_flops_per_token
    from transformers.models.gpt2.modeling_gpt2 import GPT2Block

    from hf_bnvae import BNVAEConfig, BNVAEForLanguageModeling

    config = BNVAEConfig(decoder_type="transformer", decoder_hidden_size=32, decoder_layers=2, vocab_size=50)
    model = BNVAEForLanguageModeling(config)
    blocks = [m for m in model.modules() if isinstance(m, GPT2Block)]
    matrices = sum(
        p.numel() for b in blocks for name, p in b.named_parameters() if name.endswith("weight") and p.dim() == 2
    )
    assert len(blocks) == 2 and decoder_flops_per_token(config) == 2 * matrices + 2 * 32 * 50


def test_experiment_runs_take_their_labels_and_flags_from_the_method_table(tmp_path):
    from experiments import Run, mean_ci95

    run = Run("ae_free_bits", "free_bits", {"free_bits": 6.0}, init_encoder_from="ae")
    assert run.label == "pretrained encoder + free bits (6)"
    assert run.train_flags(tmp_path) == [
        "--method",
        "free_bits",
        "--free_bits",
        "6",
        "--init_encoder_from",
        str(tmp_path / "ae"),
    ]
    assert Run("bnvae_1.5", "bnvae", {"gamma": 1.5}).label == "BN-VAE (1.5)"
    assert converged.LABELS["lm"] == "LSTM-LM" and converged.LABELS["bnvae_0.3"] == "BN-VAE (0.3)"
    with pytest.raises(ValueError, match="--gamma only applies to --method bnvae"):
        _ = Run("x", "vae", {"gamma": 0.5}).label
    assert mean_ci95([1.0, 1.0, 1.0]) == {"mean": 1.0, "ci95": [1.0, 1.0], "n": 3}
    with pytest.raises(ValueError, match="at least 2 values"):
        mean_ci95([1.0])


@pytest.mark.parametrize(
    "parse, argv",
    [
        ("train", ["--plateau_factor", "nan"]),
        ("train", ["--kl_warmup_epochs", "inf"]),
        ("train", ["--learning_rate", "nan"]),
        ("train", ["--method", "beta_vae", "--beta", "nan"]),
        ("generate", ["--model_name_or_path", "x", "--top_p", "nan", "sample"]),
        ("generate", ["--model_name_or_path", "x", "--temperature", "nan", "sample"]),
        ("train_classifier", ["--model_name_or_path", "x", "--output_dir", "x", "--learning_rate", "nan"]),
        ("train_dialogue", ["--output_dir", "x", "--learning_rate", "inf"]),
        ("converged", ["--plateau_factor", "nan"]),
        ("reproduce_dialogue", ["--gammas", "0.6", "nan"]),
    ],
)
def test_non_finite_flags_are_refused_before_anything_is_loaded(parse, argv, capsys):
    import importlib

    module = importlib.import_module(parse)
    with pytest.raises(SystemExit):
        module.parse_args(argv)
    assert "must be a finite number" in capsys.readouterr().err


def test_converged_writes_the_beyond_the_paper_studies_once_their_runs_exist(tmp_path):
    args = converged.parse_args(["--seeds", "42", "--iw_test_sentences", "10"])
    nll = [100.0 + i for i in range(10)]
    run = {"nll": 100.0, "kl": 5.0, "nll_per_sentence": nll, "train_seconds": 60.0, "eval_seconds": 30.0}
    run.update(train_cpu_seconds=3600.0, eval_cpu_seconds=1800.0)
    results = {"bnvae_0.6": {42: run}, "vae": {42: {**run, "kl": 0.1}}}
    converged.write_beyond(results, args, tmp_path)
    assert not list(tmp_path.iterdir())  # none of the studies' own runs: nothing written
    results["bnvae_learned_0.3"] = {42: {**run, "gammas": [0.3, 0.5, 0.9]}}
    results["transformer_lm"] = {42: run}
    results["transformer_bnvae_0.6"] = {
        42: {**run, "nll_per_sentence": [x - 1.0 + 0.1 * (i % 2) for i, x in enumerate(nll)]}
    }
    converged.write_beyond(results, args, tmp_path)
    learned = json.loads((tmp_path / "learned_gamma.json").read_text())
    assert set(learned["methods"]) == {"bnvae_learned_0.3", "bnvae_0.6", "vae"}
    assert learned["methods"]["bnvae_learned_0.3"]["gammas"] == [0.3, 0.5, 0.9]
    assert "learned gamma from 0.300 to 0.900" in (tmp_path / "learned_gamma.md").read_text()
    transformer = json.loads((tmp_path / "transformer_decoder.json").read_text())
    assert transformer["protocol"]["optimizer"] == "adam, lr 1e-3, BN eps 1e-12"  # train.py's Adam defaults
    assert transformer["paired"]["transformer_bnvae_0.6-transformer_lm"]["mean"] == pytest.approx(-0.95)
    assert "transformer_vae-transformer_lm" not in transformer["paired"]  # not run: nothing claimed
    # the cost of the study's own runs (the Transformer LM and BN-VAE), not of the LSTM models beside them
    assert (transformer["seconds"], transformer["cpu_hours"], transformer["runs_without_cpu_time"]) == (180.0, 3.0, 0)
    assert learned["seconds"] == 90.0 and learned["seeds"] == [42] and transformer["seeds"] == [42]
    assert transformer["seed_to_seed"] == {}  # one seed per model: no calibration
    # a second seed of the Transformer LM: the study reports it (the learned-gamma study keeps the first seed)
    results["transformer_lm"][43] = {
        **run,
        "nll": 100.5,
        "nll_per_sentence": [x + 0.5 + 0.1 * (i % 2) for i, x in enumerate(nll)],
    }
    results["bnvae_learned_0.3"][43] = {**results["bnvae_learned_0.3"][42], "gammas": [1.0, 1.0, 1.0]}
    converged.write_beyond(results, args, tmp_path)
    transformer = json.loads((tmp_path / "transformer_decoder.json").read_text())
    assert transformer["seeds"] == [42, 43] and transformer["methods"]["transformer_lm"]["seeds"] == [42, 43]
    assert transformer["methods"]["transformer_lm"]["nll"]["runs"] == [100.0, 100.5]
    assert transformer["seed_to_seed"]["transformer_lm"]["43-42"]["mean"] == pytest.approx(0.55)
    # paired over the seeds both models ran (42 only): unchanged by the LM's second seed
    assert transformer["paired"]["transformer_bnvae_0.6-transformer_lm"]["per_seed"] == [pytest.approx(-0.95)]
    assert transformer["cpu_hours"] == 4.5  # the LM's second run counted
    markdown = (tmp_path / "transformer_decoder.md").read_text()
    assert "Seeds 42, 43;" in markdown and "| Transformer LM | 43-42 | +0.55 [" in markdown
    learned = json.loads((tmp_path / "learned_gamma.json").read_text())
    assert learned["seeds"] == [42] and learned["methods"]["bnvae_learned_0.3"]["gammas"] == [0.3, 0.5, 0.9]


def test_a_records_train_file_is_relative_to_the_directory_it_was_trained_from(tmp_path, monkeypatch):
    """train.py records its --train_file relative to its working directory (portable_path): the
    comparison's data file when that path is its tail, from whatever directory the evaluation runs."""
    args = converged.parse_args([])
    train_file = converged.data_file(args, "train").resolve()
    used = {flag: getattr(args, flag) for flag in converged.SCHEDULE} | {"max_train_samples": args.max_train_samples}
    monkeypatch.chdir(tmp_path)
    for recorded in (str(train_file), str(Path(*train_file.parts[-4:])), str(Path(*train_file.parts[-2:]))):
        converged.check_schedule({"training_args": {**used, "train_file": recorded}}, args, "run")
    for recorded in ("brown_documents/train.txt", str(tmp_path / "train.txt")):
        with pytest.raises(ValueError, match=r"another schedule: train_file"):
            converged.check_schedule({"training_args": {**used, "train_file": recorded}}, args, "run")
