"""The paper's semi-supervised experiment (its Table 3): pretrain on unlabelled text, fine-tune a
classifier on 100 / 500 / 1,000 / 2,000 / 10,000 (or all) labels, beside a bag-of-words baseline.

    python training/semi_supervised.py --dataset yelp             # the paper's data (training/prepare_yelp.py)
    python training/semi_supervised.py --dataset rotten_tomatoes  # the Rotten Tomatoes snippets
    python training/semi_supervised.py --dataset yelp --pretrain_only  # the language models only (it resumes)

Pretraining (train.py, on the text of the training pool without its labels; validation on the
validation file's text): an autoencoder, a VAE, AE + free bits (the autoencoder's encoder, then free
bits of 6 nats per sentence, as reproduce.py's "pretrained encoder + free bits") and BN-VAE (gamma
0.7), at the dataset's sizes (`DATASETS`: short_yelp's 128/512 for Yelp, ptb's for Rotten Tomatoes)
for --pretrain_epochs epochs with the KL warm-up over the first half, checkpointed every epoch (an
interrupted pretraining resumes). Fine-tuning (train_classifier.py with the flags of --fine_tune_args,
by default `FINE_TUNING_RECIPE`, the one recipe chosen on the validation set by
classification_recipes.py): each of them and a randomly initialised encoder ("scratch", the BN-VAE's
configuration), on each label budget (a stratified subset of the pool, the same for every method at a
given seed) with each seed; the selected epoch is tested on the test file. The calibration rows: a
bag-of-words logistic regression (bag_of_words.py) on the same label draws, and the test set's
majority class.

Every budget runs with the first --seeds, except that --max_seeds caps the seeds of the expensive
budgets. --num_workers pretrainings, then --num_workers fine-tuning runs, go side by side in separate
processes, each with an equal share of the CPU threads. Every finished run is recorded in
training/reproduction/classification<suffix>_runs.json (in git) with its recipe, so the script resumes
where it stopped and refuses to mix recipes. Writes classification<suffix>.json and .md (suffix: "" for
Rotten Tomatoes, "_yelp" for Yelp).
"""

import argparse
import json
import multiprocessing
import os
import shlex
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import bag_of_words
import torch
import train_classifier  # training/ is on the path when a training script runs
from experiments import Run, mean_ci95, mean_std, run_train_script

from hf_bnvae.saving import read_results, recorded_arguments, write_atomically

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Dataset:
    """What differs between the two classification data sets: where the files are, the model sizes, the
    pretraining epochs (what fits the CPU budget), the label budgets and their seed caps, the names of the
    output files (classification<suffix>.json), and the command that makes the data files."""

    folder: Path
    preset: str
    pretrain_epochs: int
    budgets: tuple
    max_seeds: tuple
    suffix: str
    prepare: str


DATASETS = {
    "yelp": Dataset(
        HERE / "data" / "yelp", "short_yelp", 3, (100, 500, 1000, 2000, 10000), ("2000=5", "10000=3"), "_yelp",
        "python training/prepare_yelp.py --source <a clone of shentianxiao/language-style-transfer>",
    ),
    "rotten_tomatoes": Dataset(
        HERE / "data" / "rotten_tomatoes", "ptb", 10, (100, 500, 1000, 2000, "all"), ("2000=5", "all=3"), "",
        "python training/prepare_rotten_tomatoes.py",
    ),
}  # fmt: skip
# The fine-tuning recipe of every row of both tables: train_classifier.py's flags, chosen on the validation
# set by classification_recipes.py (RESULTS.md, "Choosing the fine-tuning recipe").
FINE_TUNING_RECIPE = "--metric_for_best_model loss"
# A run recorded before recipes were recorded was selected by the metric it names (by the loss before that).
LEGACY_RECIPE = "--metric_for_best_model {}"
# The language models (AE + free bits starts from the autoencoder's encoder, which trains first).
PRETRAINED = [
    Run("ae", "ae"),
    Run("vae", "vae"),
    Run("bnvae_0.7", "bnvae", {"gamma": 0.7}),
    Run("ae_free_bits", "free_bits", {"free_bits": 6.0}, init_encoder_from="ae"),
]
METHODS = ["scratch", "ae", "vae", "ae_free_bits", "bnvae_0.7"]  # the fine-tuned rows, as in the paper
BASELINE = "bag_of_words"  # the calibration row, on the same label draws
PAIRED_WITH = "bnvae_0.7"  # the method every other row is compared with, seed by seed
LABELS = {  # the pretrained rows' from hf_bnvae.methods' table
    "scratch": "no pretraining",
    **{run.name: run.label for run in PRETRAINED},
    BASELINE: "bag-of-words logistic regression",
}
# The paper's Table 3 on short Yelp, by label budget: shown beside the Yelp table only (its data).
PAPER_BUDGETS = (100, 500, 1000, 2000, 10000)
PAPER = {
    method: dict(zip(PAPER_BUDGETS, figures))
    for method, figures in {
        "ae": [81.1, 86.2, 90.3, 89.4, 94.1],
        "vae": [66.1, 82.6, 88.4, 89.6, 94.5],
        "ae_free_bits": [87.6, 90.2, 92.0, 93.4, 94.9],
        "bnvae_0.7": [88.8, 91.6, 92.5, 94.1, 95.4],
    }.items()
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=list(DATASETS), default="rotten_tomatoes", help="sets the defaults below")
    known, _ = p.parse_known_args(argv)
    data = DATASETS[known.dataset]
    p.add_argument("--output_dir", default=str(HERE / "reproduction"))
    p.add_argument("--train_file", default=str(data.folder / "train.txt"), help="label<TAB>text: the pool")
    p.add_argument("--validation_file", default=str(data.folder / "valid.txt"))
    p.add_argument("--test_file", default=str(data.folder / "test.txt"))
    p.add_argument("--preset", default=data.preset)
    p.add_argument("--pretrain_epochs", type=int, default=data.pretrain_epochs)
    p.add_argument("--budgets", nargs="+", default=[str(b) for b in data.budgets], help="label budgets, or 'all'")
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(1, 11)))
    p.add_argument(
        "--max_seeds",
        nargs="*",
        default=list(data.max_seeds),
        metavar="BUDGET=K",
        help="run these budgets with only the first K seeds (the large budgets cost the most and vary the least)",
    )
    p.add_argument(
        "--fine_tune_args",
        default=FINE_TUNING_RECIPE,
        help="train_classifier.py flags of every fine-tuning run, in one string (the recipe; recorded per run)",
    )
    p.add_argument("--num_train_epochs", type=int, default=None, help="fine-tuning epochs (default: the recipe's)")
    p.add_argument("--max_train_steps", type=int, default=None, help="at most this many fine-tuning steps")
    p.add_argument(
        "--num_workers", type=int, default=os.cpu_count() or 1, help="pretrainings and fine-tuning runs side by side"
    )
    p.add_argument(
        "--rows",
        nargs="+",
        choices=[*METHODS, BASELINE],
        default=[*METHODS, BASELINE],
        help="the table rows to run (the record keeps the others; bag_of_words alone needs no pretraining)",
    )
    p.add_argument("--pretrain_only", action="store_true")
    p.add_argument("--train_args", default="", help="more train.py flags for the pretraining, in one string")
    args = p.parse_args(argv)
    args.suffix = data.suffix
    budget_names = [str(b) for b in data.budgets]  # the defaults --max_seeds may name even when --budgets omits them
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
        if budget not in budget_names and budget not in args.budgets:
            p.error(f"--max_seeds {budget}={k}: {budget!r} is not a label budget (--budgets {' '.join(args.budgets)})")
    try:
        train_classifier.build_parser().parse_args(
            ["--model_name_or_path", "x", "--output_dir", "x", *shlex.split(args.fine_tune_args)]
        )
    except SystemExit:
        p.error(f"--fine_tune_args {args.fine_tune_args!r}: not flags train_classifier.py accepts (see above)")
    args.budgets = [b if b == "all" else int(b) for b in args.budgets]
    args.threads_per_worker = max(1, torch.get_num_threads() // args.num_workers)
    return args


def check_data_files(args, flags=("train_file", "validation_file", "test_file")):
    """FileNotFoundError naming the first missing data file and the command that makes the dataset's."""
    for flag in flags:
        if not Path(getattr(args, flag)).is_file():
            raise FileNotFoundError(
                f"--{flag} {getattr(args, flag)}: data file not found; make it with {DATASETS[args.dataset].prepare}"
            )


def models_folder(args):
    return Path(args.output_dir) / f"classification{args.suffix}_models"


def pretrain(args):
    """Train the four language models on the pool's text (skipping finished ones), --num_workers at a time,
    each with an equal share of the CPU threads; a run that starts from another model waits for it."""
    models = models_folder(args)
    data = ["--train_file", args.train_file, "--validation_file", args.validation_file, "--preset", args.preset]
    budget = argparse.Namespace(  # the whole pool, the KL warm-up over the first half
        max_train_samples=None, num_train_epochs=args.pretrain_epochs, kl_warmup_epochs=args.pretrain_epochs / 2
    )
    jobs = {}

    def train(run):
        if run.init_encoder_from in jobs:  # wait for the model this one is built on
            jobs[run.init_encoder_from].result()
        extra = [*data, "--num_threads", str(args.threads_per_worker), *shlex.split(args.train_args)]
        run_train_script(models / run.name, budget, 42, [*extra, *run.train_flags(models)], resumable=True)

    with ThreadPoolExecutor(args.num_workers) as pool:
        for run in PRETRAINED:
            if read_results(models / run.name) is not None:
                print(f"[skip] {run.name}: pretrained", flush=True)
                continue
            jobs[run.name] = pool.submit(train, run)
        for job in jobs.values():
            job.result()
    return models


def fine_tune(args, checkpoint, method, budget, seed, recipe=None):
    """One classifier of the table, trained in a temporary folder: {"valid_accuracy", "test_accuracy"
    (percent), "recipe", "best_epoch", "epochs", "seconds"}. `recipe` (default:
    --fine_tune_args) is the train_classifier.py flags; the bag-of-words row ignores it."""
    recipe = args.fine_tune_args if recipe is None else recipe
    tick = time.perf_counter()
    if method == BASELINE:
        scores = bag_of_words.run(
            args.train_file, args.validation_file, args.test_file, None if budget == "all" else budget, seed
        )
        return {
            "valid_accuracy": 100 * scores["valid_accuracy"],
            "test_accuracy": 100 * scores["test_accuracy"],
            "recipe": f"C={scores['C']} (chosen on validation)",
            "seconds": time.perf_counter() - tick,
        }
    with tempfile.TemporaryDirectory() as folder:
        argv = [
            *("--model_name_or_path", str(checkpoint), "--train_file", args.train_file),
            *("--validation_file", args.validation_file, "--test_file", args.test_file),
            *("--seed", str(seed), "--output_dir", folder, *shlex.split(recipe)),
        ]  # fmt: skip
        for flag in ("num_train_epochs", "max_train_steps"):
            if getattr(args, flag) is not None:
                argv += [f"--{flag}", str(getattr(args, flag))]
        if budget != "all":
            argv += ["--max_train_samples", str(budget)]
        if method == "scratch":
            argv.append("--from_scratch")
        _, results = train_classifier.main(argv)
    return {
        "valid_accuracy": 100 * results["eval_accuracy"],
        "test_accuracy": 100 * results["test_accuracy"],
        "test_f1": 100 * results["test_f1"],
        "test_predicted_counts": dict(zip(results["labels"], results["test_predicted_counts"])),
        "recipe": recipe,
        "caps": caps_of(args),
        "best_epoch": results["best_epoch"] + 1,
        "epochs": len(results["history"]),
        "seconds": time.perf_counter() - tick,
    }


def pending_runs(args, done, methods=(*METHODS, BASELINE)):
    """(key, method, budget, seed) of the runs not in `done`, seed by seed, so a partial record covers
    every budget for its first seeds."""
    todo = []
    for seed_index, seed in enumerate(args.seeds):
        for budget in args.budgets:
            if seed_index >= args.max_seeds.get(str(budget), len(args.seeds)):
                continue
            for method in methods:
                key = f"{method}/{budget}/seed{seed}"
                if key not in done:
                    todo.append((key, method, budget, seed))
    return todo


def _limit_threads(threads):
    torch.set_num_threads(threads)


def caps_of(args):
    """What else shapes a fine-tuned run besides its recipe: the fine-tuning caps and the pretraining epochs."""
    return {
        "num_train_epochs": args.num_train_epochs,
        "max_train_steps": args.max_train_steps,
        "pretrain_epochs": args.pretrain_epochs,
    }


def recipe_of(run):
    """The fine-tuning recipe a recorded run used (runs recorded before recipes name only their selection)."""
    return run.get("recipe") or LEGACY_RECIPE.format(run.get("metric_for_best_model", "loss"))


def read_record(args, record):
    """The record of finished runs ({"runs": {key: run}, "wall_seconds": s}; empty when missing), refused
    when its fine-tuned runs used another recipe than --fine_tune_args (the bag-of-words rows have none)."""
    state = json.loads(record.read_text()) if record.exists() else {"runs": {}, "wall_seconds": 0.0}
    used = sorted({recipe_of(r) for r in state["runs"].values() if r["method"] != BASELINE})
    if used and used != [args.fine_tune_args]:
        hint = f"pass --fine_tune_args {used[0]!r} to resume it, or" if len(used) == 1 else "it mixes several:"
        raise ValueError(
            f"{record} holds runs fine-tuned with {' / '.join(map(repr, used))}, this run's recipe is"
            f" {args.fine_tune_args!r}: {hint} move it aside"
        )
    legacy = {
        "num_train_epochs": None,
        "max_train_steps": None,
        "pretrain_epochs": DATASETS[args.dataset].pretrain_epochs,
    }
    for key, run in state["runs"].items():  # runs recorded before the caps were had the defaults
        if run["method"] != BASELINE and run.get("caps", legacy) != caps_of(args):
            raise ValueError(
                f"{record}: {key} was run with {run.get('caps', legacy)}, this run has {caps_of(args)}:"
                " pass the same flags to resume it, or move the record aside"
            )
    return state


def run_all(args, todo, record, state, run_one):
    """Run every (key, method, budget, seed) of `todo` with run_one(method, budget, seed) -> result,
    --num_workers at a time in separate processes, recording each as it finishes (only this process writes
    the record, atomically). A failed run does not stop the others; every failure is raised at the end."""
    runs, start, spent = state["runs"], time.perf_counter(), state["wall_seconds"]
    failed = []

    def attempt(run, result):
        key, method, budget, seed = run
        try:
            runs[key] = {"method": method, "budget": budget, "seed": seed, **result()}
        except Exception as error:  # keep the other runs; report every failure at the end
            failed.append(f"{key}: {error!r}")
            print(f"[failed] {failed[-1]}", flush=True)
            return
        state["wall_seconds"] = spent + time.perf_counter() - start
        write_atomically(record, json.dumps(state, indent=1))
        shown = {k: round(v, 2) for k in ("valid_accuracy", "test_accuracy") if (v := runs[key].get(k)) is not None}
        print(f"[done] {key}: {shown} ({len(runs)} runs)", flush=True)

    if args.num_workers == 1 or len(todo) <= 1:
        for run in todo:
            attempt(run, lambda run=run: run_one(*run[1:]))
    else:
        with ProcessPoolExecutor(
            args.num_workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_limit_threads,
            initargs=(args.threads_per_worker,),
        ) as pool:
            futures = {pool.submit(run_one, *run[1:]): run for run in todo}
            for future in as_completed(futures):
                attempt(futures[future], future.result)
    if failed:
        raise RuntimeError(f"{len(failed)} run(s) failed (the others are recorded): " + "; ".join(failed))
    return state


def checkpoint_of(models, method):
    """The pretrained model a method fine-tunes ("scratch" takes only the BN-VAE's configuration)."""
    return models / ("bnvae_0.7" if method == "scratch" else method)


def fine_tune_all(args, models, record):
    """Every pending run of the table (the fine-tuned rows and the bag-of-words row), recorded as it finishes."""
    state = read_record(args, record)
    todo = pending_runs(args, state["runs"], methods=args.rows)
    run_one = _TableRun(args, models)
    return run_all(args, todo, record, state, run_one)


class _TableRun:
    """run_one(method, budget, seed) of the table, picklable for the worker processes."""

    def __init__(self, args, models):
        self.args, self.models = args, models

    def __call__(self, method, budget, seed):
        return fine_tune(self.args, checkpoint_of(self.models, method), method, budget, seed)


def majority_class(labelled_file):
    """{"label", "accuracy"}: the file's most frequent label and the accuracy (percent) of always answering it."""
    _, labels, label2id = train_classifier.labelled(labelled_file)
    label, accuracy = train_classifier.majority_class(labels, label2id)
    return {"label": label, "accuracy": 100 * accuracy}


def paired_difference(runs, method, other, budget):
    """{"mean", "ci95", "n"}: test accuracy of `method` minus `other` (points) over the seeds both ran at
    `budget` (the same label draw: a paired comparison), with the 95% t interval; None under 2 seeds."""
    by_seed = {}
    for r in runs.values():
        if r["budget"] == budget and r["method"] in (method, other):
            by_seed.setdefault(r["seed"], {})[r["method"]] = r["test_accuracy"]
    differences = [v[method] - v[other] for v in by_seed.values() if len(v) == 2]
    return mean_ci95(differences) if len(differences) >= 2 else None


def cell_text(summary, paper=None):
    cell = f"{summary['mean']:.1f} ± {summary['std']:.1f} ({len(summary['runs'])})" if summary else "-"
    return cell + (f" [paper {paper:.1f}]" if paper is not None else "")


def write_results(args, runs, pretrain_seconds, fine_tune_seconds):
    """classification<suffix>.json and .md: test accuracy (percent) per row and budget, mean ± std over
    seeds, the paper's figure beside ours, the majority floor; pretrain_seconds is None when the language
    models were trained on another machine (their results are not here)."""
    output = Path(args.output_dir)
    budgets = args.budgets
    runs = {key: r for key, r in runs.items() if r["seed"] in args.seeds}  # the record may hold more seeds
    methods = {}
    for method in (*METHODS, BASELINE):
        for budget in budgets:
            values = [r["test_accuracy"] for r in runs.values() if r["method"] == method and r["budget"] == budget]
            if values:
                methods.setdefault(method, {})[str(budget)] = mean_std(values)
    majority = majority_class(args.test_file)
    paired = {
        f"{PAIRED_WITH} - {other}": {str(b): paired_difference(runs, PAIRED_WITH, other, b) for b in budgets}
        for other in (*METHODS, BASELINE)
        if other != PAIRED_WITH
    }
    report = {
        "budgets": budgets,
        "methods": methods,
        "paired": paired,
        "majority_class": majority,
        "recipe": args.fine_tune_args,
        "command": f"python training/semi_supervised.py --dataset {args.dataset}",
        "pretrain_seconds": pretrain_seconds,
        "fine_tune_seconds": fine_tune_seconds,
        "settings": recorded_arguments(args, exclude=("suffix",)),
    }
    write_atomically(output / f"classification{args.suffix}.json", json.dumps(report, indent=2))
    header = " | ".join(f"{b} labels" if b != "all" else "all labels" for b in budgets)
    lines = [f"| pretraining | {header} |", "|---|" + "---|" * len(budgets)]
    for method, per_budget in methods.items():
        paper = PAPER.get(method, {}) if args.dataset == "yelp" else {}  # the paper's figures are short Yelp's
        cells = [cell_text(per_budget.get(str(b)), paper.get(b)) for b in budgets]
        lines.append(f"| {LABELS[method]} | {' | '.join(cells)} |")
    lines.append(
        f"| majority class ({majority['label']}) | " + " | ".join(f"{majority['accuracy']:.1f}" for _ in budgets) + " |"
    )
    lines += [
        "",
        f"Test accuracy (%), mean ± std (runs) over seeds; every fine-tuned row with the recipe `{args.fine_tune_args}`"
        " of train_classifier.py; bag-of-words: word 1-2-grams, logistic regression with C chosen on the validation"
        " set, on the same label draws. Always answering the test set's most frequent label"
        f" ({majority['label']}) scores {majority['accuracy']:.1f}%: the floor every row must clear.",
        "",
        f"{LABELS[PAIRED_WITH]} minus each row, paired by seed (the same label draw): mean difference in points"
        " [95% t interval] (seeds)",
        "",
        f"| minus | {header} |",
        "|---|" + "---|" * len(budgets),
    ]
    for name, per_budget in paired.items():
        cells = [
            f"{d['mean']:+.1f} [{d['ci95'][0]:+.1f}, {d['ci95'][1]:+.1f}] ({d['n']})" if d else "-"
            for d in per_budget.values()
        ]
        lines.append(f"| {LABELS[name.split(' - ')[1]]} | {' | '.join(cells)} |")
    write_atomically(output / f"classification{args.suffix}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None):
    args = parse_args(argv)
    check_data_files(args)
    record = Path(args.output_dir) / f"classification{args.suffix}_runs.json"
    read_record(args, record)  # a record this run cannot resume fails now, not after the pretraining
    models = pretrain(args) if args.pretrain_only or set(args.rows) - {BASELINE} else models_folder(args)
    if args.pretrain_only:
        return None
    state = fine_tune_all(args, models, record)
    pretrained = [read_results(models / run.name) for run in PRETRAINED]
    pretrain_seconds = sum(r["train_seconds"] for r in pretrained) if all(pretrained) else None
    write_results(args, state["runs"], pretrain_seconds, state["wall_seconds"])
    return state["runs"]


if __name__ == "__main__":
    main()
