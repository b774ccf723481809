"""The paper's semi-supervised experiment (its Table 3) on Rotten Tomatoes: pretrain on unlabelled text,
fine-tune a classifier on 100 / 500 / 1,000 / 2,000 / all labels.

    python training/semi_supervised.py                  # pretrains what is missing, fine-tunes, writes the table
    python training/semi_supervised.py --pretrain_only  # the language models only (run it in parts: it resumes)

Pretraining (train.py, on the text of the training pool without its labels; validation on the
validation file's text): an autoencoder, a VAE, AE + free bits (the autoencoder's encoder, then free
bits of 6 nats per sentence, as reproduce.py's "pretrained encoder + free bits") and BN-VAE (gamma
0.7). Fine-tuning (train_classifier.py, the official recipe: SGD lr 1.0, batch 16, dropout 0.5 before the
linear layer, the encoder fine-tuned, the plateau rule on the validation loss): each of them and a randomly initialised encoder ("scratch",
the BN-VAE's configuration), on each label budget (a stratified subset of the pool, the same for
every method at a given seed) with each seed; the epoch with the lowest validation loss is tested on
the 2,000 test reviews.

Budget (chosen to fit about 2 hours of 2 CPU cores; see RESULTS.md for the measured time): the ptb
sizes (embeddings 256, LSTMs 256, latent 32), pretraining for --pretrain_epochs epochs with the KL
warm-up over the first half, fine-tuning for --num_train_epochs epochs but at most --max_train_steps
optimiser steps. Every finished fine-tuning run is recorded in
training/reproduction/classification_runs.json (in git), so the script resumes where it stopped.
Writes training/reproduction/classification.json and classification.md.
"""

import argparse
import json
import shlex
import tempfile
import time
from pathlib import Path

import train_classifier  # training/ is on the path when a training script runs
from reproduce import mean_std, run_train_script

from hf_bnvae.saving import write_atomically

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "rotten_tomatoes"
BUDGETS = [100, 500, 1000, 2000, "all"]
# (method key, train.py flags); "{models}" is the pretraining folder. Order matters: ae before ae_free_bits.
PRETRAINED = [
    ("ae", ["--method", "ae"]),
    ("vae", ["--method", "vae"]),
    ("ae_free_bits", ["--method", "free_bits", "--free_bits", "6", "--init_encoder_from", "{models}/ae"]),
    ("bnvae_0.7", ["--method", "bnvae", "--gamma", "0.7"]),
]
METHODS = ["scratch"] + [name for name, _ in PRETRAINED]
LABELS = {
    "scratch": "no pretraining",
    "ae": "AE",
    "vae": "VAE",
    "ae_free_bits": "AE + free bits (6)",
    "bnvae_0.7": "BN-VAE (0.7)",
}
# The paper's Table 3 (short Yelp; its last budget is 10,000 labels, ours the whole pool of 9,751)
PAPER = {
    "ae": [81.1, 86.2, 90.3, 89.4, 94.1],
    "vae": [66.1, 82.6, 88.4, 89.6, 94.5],
    "ae_free_bits": [87.6, 90.2, 92.0, 93.4, 94.9],
    "bnvae_0.7": [88.8, 91.6, 92.5, 94.1, 95.4],
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output_dir", default=str(HERE / "reproduction"))
    p.add_argument("--train_file", default=str(DATA / "train.txt"), help="label<TAB>text: the pool")
    p.add_argument("--validation_file", default=str(DATA / "valid.txt"))
    p.add_argument("--test_file", default=str(DATA / "test.txt"))
    p.add_argument("--preset", default="ptb")
    p.add_argument("--pretrain_epochs", type=int, default=10)
    p.add_argument("--budgets", nargs="+", default=[str(b) for b in BUDGETS], help="label budgets, or 'all'")
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(1, 11)))
    p.add_argument("--num_train_epochs", type=int, default=10, help="fine-tuning epochs")
    p.add_argument("--max_train_steps", type=int, default=1000, help="at most this many fine-tuning steps")
    p.add_argument("--pretrain_only", action="store_true")
    p.add_argument("--train_args", default="", help="more train.py flags for the pretraining, in one string")
    args = p.parse_args(argv)
    for budget in args.budgets:
        if budget != "all" and not (budget.isdigit() and int(budget) > 0):
            p.error(f"--budgets: {budget!r} is neither a positive number nor 'all'")
    return args


def pretrain(args):
    """Train the four language models on the pool's text (skipping finished ones)."""
    models = Path(args.output_dir) / "classification_models"
    for name, flags in PRETRAINED:
        folder = models / name
        if (folder / "metrics.json").exists():
            print(f"[skip] {name}: pretrained", flush=True)
            continue
        flags = [f.format(models=models) for f in flags]
        data = ["--train_file", args.train_file, "--validation_file", args.validation_file, "--preset", args.preset]
        budget = argparse.Namespace(  # the whole pool, the KL warm-up over the first half
            max_train_samples=None, num_train_epochs=args.pretrain_epochs, kl_warmup_epochs=args.pretrain_epochs / 2
        )
        run_train_script(folder, budget, 42, [*data, *shlex.split(args.train_args), *flags])
    return models


def fine_tune(args, checkpoint, method, budget, seed):
    """test accuracy (percent) and best epoch of one classifier; its folder is temporary."""
    with tempfile.TemporaryDirectory() as folder:
        argv = [
            "--model_name_or_path",
            str(checkpoint),
            "--train_file",
            args.train_file,
            "--validation_file",
            args.validation_file,
            "--test_file",
            args.test_file,
            "--num_train_epochs",
            str(args.num_train_epochs),
            "--max_train_steps",
            str(args.max_train_steps),
            "--seed",
            str(seed),
            "--output_dir",
            folder,
        ]
        if budget != "all":
            argv += ["--max_train_samples", str(budget)]
        if method == "scratch":
            argv.append("--from_scratch")
        _, results = train_classifier.main(argv)
    return {"test_accuracy": 100 * results["test_accuracy"], "best_epoch": results["best_epoch"] + 1}


def write_results(args, runs, seconds):
    output = Path(args.output_dir)
    budgets = [b if b == "all" else int(b) for b in args.budgets]
    methods = {}
    for method in METHODS:
        for budget in budgets:
            values = [r["test_accuracy"] for r in runs.values() if r["method"] == method and r["budget"] == budget]
            if values:
                methods.setdefault(method, {})[str(budget)] = mean_std(values)
    command = "python training/semi_supervised.py"
    report = {"budgets": budgets, "methods": methods, "command": command, "seconds": seconds, "settings": vars(args)}
    write_atomically(output / "classification.json", json.dumps(report, indent=2))
    header = " | ".join(f"{b} labels" if b != "all" else "all labels" for b in budgets)
    lines = [f"| pretraining | {header} |", "|---|" + "---|" * len(budgets)]
    for method, per_budget in methods.items():
        cells = []
        for i, budget in enumerate(budgets):
            s = per_budget.get(str(budget))
            cell = f"{s['mean']:.1f} ± {s['std']:.1f} ({len(s['runs'])})" if s else "-"
            if method in PAPER and i < len(PAPER[method]):
                cell += f" [paper {PAPER[method][i]:.1f}]"
            cells.append(cell)
        lines.append(f"| {LABELS[method]} | {' | '.join(cells)} |")
    write_atomically(output / "classification.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    models = pretrain(args)
    if args.pretrain_only:
        return None
    record = Path(args.output_dir) / "classification_runs.json"
    runs = json.loads(record.read_text()) if record.exists() else {}
    spent = sum(r["seconds"] for r in runs.values())
    for seed in args.seeds:
        for budget in [b if b == "all" else int(b) for b in args.budgets]:
            for method in METHODS:
                key = f"{method}/{budget}/seed{seed}"
                if key in runs:
                    continue
                tick = time.perf_counter()
                checkpoint = models / ("bnvae_0.7" if method == "scratch" else method)
                result = fine_tune(args, checkpoint, method, budget, seed)
                runs[key] = {"method": method, "budget": budget, "seed": seed, **result}
                runs[key]["seconds"] = time.perf_counter() - tick
                write_atomically(record, json.dumps(runs, indent=1))
                print(f"[fine-tuned] {key}: test accuracy {result['test_accuracy']:.2f}", flush=True)
    pretrain_seconds = sum(
        json.loads((models / name / "metrics.json").read_text())["train_seconds"] for name, _ in PRETRAINED
    )
    seconds = pretrain_seconds + sum(r["seconds"] for r in runs.values())
    print(f"this call: {time.perf_counter() - start:.0f} s; fine-tuning before it: {spent:.0f} s")
    write_results(args, runs, seconds)
    return runs


if __name__ == "__main__":
    main()
