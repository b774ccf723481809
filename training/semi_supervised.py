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
every method at a given seed) with each seed; the epoch with the highest validation accuracy
(--metric_for_best_model) is tested on the 2,000 test reviews.

Budget: the ptb sizes (embeddings 256, LSTMs 256, latent 32); pretraining for --pretrain_epochs
epochs with the KL warm-up over the first half, checkpointed every epoch (an interrupted pretraining
resumes); fine-tuning with train_classifier.py's recipe (its epoch cap and the plateau rule end each
run; --num_train_epochs / --max_train_steps cap it further), every budget with the first --seeds,
except that --max_seeds caps the seeds of the expensive budgets (RESULTS.md has the measured cost).
--num_workers pretrainings, then --num_workers fine-tuning runs, go side by side in separate
processes, each with an equal share of the CPU threads. Every finished fine-tuning run is recorded in
training/reproduction/classification_runs.json (in git), so the script resumes where it stopped.
Writes training/reproduction/classification.json and classification.md.
"""

import argparse
import json
import multiprocessing
import os
import shlex
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from pathlib import Path

import torch
import train_classifier  # training/ is on the path when a training script runs
from reproduce import mean_std, run_train_script

from hf_bnvae.hub import SELECTED_BY
from hf_bnvae.saving import write_atomically

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "rotten_tomatoes"
BUDGETS = [100, 500, 1000, 2000, "all"]
BUDGETS_NAMES = [str(b) for b in BUDGETS]  # the defaults --max_seeds may name even when --budgets omits them
# (method key, train.py flags); "{models}/<key>" names the model a run starts from (trained first).
PRETRAINED = [
    ("ae", ["--method", "ae"]),
    ("vae", ["--method", "vae"]),
    ("bnvae_0.7", ["--method", "bnvae", "--gamma", "0.7"]),
    ("ae_free_bits", ["--method", "free_bits", "--free_bits", "6", "--init_encoder_from", "{models}/ae"]),
]
METHODS = ["scratch", "ae", "vae", "ae_free_bits", "bnvae_0.7"]  # the table's rows, as in the paper
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
    p.add_argument(
        "--max_seeds",
        nargs="*",
        default=["2000=5", "all=3"],
        metavar="BUDGET=K",
        help="run these budgets with only the first K seeds (the large budgets cost the most and vary the least)",
    )
    p.add_argument(
        "--metric_for_best_model",
        choices=list(SELECTED_BY),
        default=train_classifier.METRIC_FOR_BEST_MODEL,
        help="validation figure that selects each classifier's epoch (train_classifier.py's flag)",
    )
    p.add_argument("--num_train_epochs", type=int, default=None, help="fine-tuning epochs (default: the recipe's)")
    p.add_argument("--max_train_steps", type=int, default=None, help="at most this many fine-tuning steps")
    p.add_argument(
        "--num_workers", type=int, default=os.cpu_count() or 1, help="pretrainings and fine-tuning runs side by side"
    )
    p.add_argument("--pretrain_only", action="store_true")
    p.add_argument("--train_args", default="", help="more train.py flags for the pretraining, in one string")
    args = p.parse_args(argv)
    for budget in args.budgets:
        if budget != "all" and not (budget.isdigit() and int(budget) > 0):
            p.error(f"--budgets: {budget!r} is neither a positive number nor 'all'")
    if args.num_workers < 1:
        p.error(f"--num_workers {args.num_workers}: must be at least 1")
    try:
        args.max_seeds = {budget: int(k) for budget, k in (item.split("=") for item in args.max_seeds)}
    except ValueError:
        p.error(f"--max_seeds {' '.join(args.max_seeds)}: each item must be BUDGET=K with an integer K")
    for budget, k in args.max_seeds.items():
        if k < 1:
            p.error(f"--max_seeds {budget}={k}: K must be at least 1")
        if budget not in BUDGETS_NAMES and budget not in args.budgets:
            p.error(f"--max_seeds {budget}={k}: {budget!r} is not a label budget (--budgets {' '.join(args.budgets)})")
    args.budgets = [b if b == "all" else int(b) for b in args.budgets]
    args.threads_per_worker = max(1, torch.get_num_threads() // args.num_workers)
    return args


def pretrain(args):
    """Train the four language models on the pool's text (skipping finished ones), --num_workers at a time,
    each with an equal share of the CPU threads; a run that starts from another model waits for it."""
    models = Path(args.output_dir) / "classification_models"
    data = ["--train_file", args.train_file, "--validation_file", args.validation_file, "--preset", args.preset]
    budget = argparse.Namespace(  # the whole pool, the KL warm-up over the first half
        max_train_samples=None, num_train_epochs=args.pretrain_epochs, kl_warmup_epochs=args.pretrain_epochs / 2
    )
    jobs = {}

    def train(name, flags):
        for other, _ in PRETRAINED:  # wait for the models this one is built on
            if f"{{models}}/{other}" in flags and other in jobs:
                jobs[other].result()
        flags = [f.format(models=models) for f in flags]
        extra = [*data, "--num_threads", str(args.threads_per_worker), *shlex.split(args.train_args), *flags]
        run_train_script(models / name, budget, 42, extra, resumable=True)

    with ThreadPoolExecutor(args.num_workers) as pool:
        for name, flags in PRETRAINED:
            if (models / name / "metrics.json").exists():
                print(f"[skip] {name}: pretrained", flush=True)
                continue
            jobs[name] = pool.submit(train, name, flags)
        for job in jobs.values():
            job.result()
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
            "--seed",
            str(seed),
            "--output_dir",
            folder,
            "--metric_for_best_model",
            args.metric_for_best_model,
        ]
        for flag in ("num_train_epochs", "max_train_steps"):
            if getattr(args, flag) is not None:
                argv += [f"--{flag}", str(getattr(args, flag))]
        if budget != "all":
            argv += ["--max_train_samples", str(budget)]
        if method == "scratch":
            argv.append("--from_scratch")
        tick = time.perf_counter()
        _, results = train_classifier.main(argv)
    return {
        "test_accuracy": 100 * results["test_accuracy"],
        "metric_for_best_model": results["metric_for_best_model"],
        "best_epoch": results["best_epoch"] + 1,
        "epochs": len(results["history"]),
        "seconds": time.perf_counter() - tick,
    }


def pending_runs(args, done):
    """(key, method, budget, seed) of the runs not in `done`, seed by seed, so a partial record covers
    every budget for its first seeds."""
    todo = []
    for seed_index, seed in enumerate(args.seeds):
        for budget in args.budgets:
            if seed_index >= args.max_seeds.get(str(budget), len(args.seeds)):
                continue
            for method in METHODS:
                key = f"{method}/{budget}/seed{seed}"
                if key not in done:
                    todo.append((key, method, budget, seed))
    return todo


def _limit_threads(threads):
    torch.set_num_threads(threads)


def read_record(args, record):
    """The record of finished runs ({"runs": {key: run}, "wall_seconds": s}; empty when missing), refused
    when its runs were selected by another validation metric than this one's (runs written before the
    metric was recorded were selected by the loss)."""
    state = json.loads(record.read_text()) if record.exists() else {"runs": {}, "wall_seconds": 0.0}
    used = sorted({r.get("metric_for_best_model", "loss") for r in state["runs"].values()})
    if used and used != [args.metric_for_best_model]:
        hint = f"pass --metric_for_best_model {used[0]} to resume it, or" if len(used) == 1 else "it mixes several:"
        raise ValueError(
            f"{record} holds runs selected by validation {' / '.join(used)}, this run selects by"
            f" {args.metric_for_best_model}: {hint} move it aside"
        )
    return state


def fine_tune_all(args, models, record):
    """Run every pending fine-tuning, --num_workers at a time, recording each as it finishes (only this
    process writes the record). The record holds the runs and the wall time spent on them so far."""
    state = read_record(args, record)
    runs, start, spent = state["runs"], time.perf_counter(), state["wall_seconds"]
    todo = pending_runs(args, runs)

    def done(key, method, budget, seed, result):
        runs[key] = {"method": method, "budget": budget, "seed": seed, **result}
        state["wall_seconds"] = spent + time.perf_counter() - start
        write_atomically(record, json.dumps(state, indent=1))
        print(f"[fine-tuned] {key}: test accuracy {result['test_accuracy']:.2f} ({len(runs)} runs)", flush=True)

    def checkpoint(method):
        return models / ("bnvae_0.7" if method == "scratch" else method)

    failed = []

    def attempt(run, result):
        try:
            done(*run, result())
        except Exception as error:  # keep the other runs; report every failure at the end
            failed.append(f"{run[0]}: {error!r}")
            print(f"[failed] {failed[-1]}", flush=True)

    if args.num_workers == 1 or len(todo) <= 1:
        for run in todo:
            attempt(run, lambda run=run: fine_tune(args, checkpoint(run[1]), *run[1:]))
    else:
        with ProcessPoolExecutor(
            args.num_workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_limit_threads,
            initargs=(args.threads_per_worker,),
        ) as pool:
            futures = {pool.submit(fine_tune, args, checkpoint(run[1]), *run[1:]): run for run in todo}
            for future in as_completed(futures):
                attempt(futures[future], future.result)
    if failed:
        raise RuntimeError(f"{len(failed)} fine-tuning run(s) failed (the others are recorded): " + "; ".join(failed))
    return state


def majority_class(test_file):
    """{"label", "accuracy"}: the test set's most frequent label and the accuracy (percent) of always answering it."""
    _, labels, label2id = train_classifier.labelled(test_file)
    label, accuracy = train_classifier.majority_class(labels, label2id)
    return {"label": label, "accuracy": 100 * accuracy}


def write_results(args, runs, seconds):
    output = Path(args.output_dir)
    budgets = args.budgets
    methods = {}
    for method in METHODS:
        for budget in budgets:
            values = [r["test_accuracy"] for r in runs.values() if r["method"] == method and r["budget"] == budget]
            if values:
                methods.setdefault(method, {})[str(budget)] = mean_std(values)
    command = "python training/semi_supervised.py"
    majority = majority_class(args.test_file)
    report = {
        "budgets": budgets,
        "methods": methods,
        "majority_class": majority,
        "command": command,
        "seconds": seconds,
        "settings": vars(args),
    }
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
    lines.append("")
    lines.append(
        f"Always answering the test set's most frequent label ({majority['label']}) scores"
        f" {majority['accuracy']:.1f}%: the floor every row must clear. Each classifier is the epoch with the"
        f" {SELECTED_BY[args.metric_for_best_model]}."
    )
    write_atomically(output / "classification.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None):
    args = parse_args(argv)
    record = Path(args.output_dir) / "classification_runs.json"
    read_record(args, record)  # a record this run cannot resume fails now, not after the pretraining
    models = pretrain(args)
    if args.pretrain_only:
        return None
    state = fine_tune_all(args, models, record)
    pretrain_seconds = sum(
        json.loads((models / name / "metrics.json").read_text())["train_seconds"] for name, _ in PRETRAINED
    )
    write_results(args, state["runs"], pretrain_seconds + state["wall_seconds"])
    return state["runs"]


if __name__ == "__main__":
    main()
