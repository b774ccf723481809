"""Choose the fine-tuning recipe of the classification tables on held-out pool sentences, never the test set.

    python training/classification_recipes.py --dataset yelp    # after semi_supervised.py --pretrain_only

Each recipe (`RECIPES`: train_classifier.py flags) fine-tunes the pretrained models of --methods on each
label budget with each seed. The epoch is selected on the validation file as the recipe says; the
recipe is then scored on --heldout_size labelled sentences set aside from the end of the training pool
(the label budgets are drawn from the rest), so that a recipe which selects its epoch by validation
accuracy gets no credit for having looked at the figure it is scored on. The bag-of-words baseline is
scored the same way on the same draws. Every finished run is recorded in
training/reproduction/classification_recipes<suffix>_runs.json (it resumes); the table goes to
classification_recipes<suffix>.md and .json: held-out accuracy (%), mean ± std over seeds, per recipe,
method and budget, and the mean over methods and budgets that ranks the recipes.
"""

import argparse
import json
import statistics
from pathlib import Path

import semi_supervised
from experiments import mean_std
from semi_supervised import BASELINE, DATASETS, checkpoint_of, models_folder, run_all

from hf_bnvae.saving import write_atomically

# name -> (train_classifier.py flags, what it tests). The first is the official text_ss_ft.py as it is
# run with --gamma (SGD lr 1.0, batch 16, the BN'd mean, the plateau rule and the epoch chosen on the
# validation loss); each other recipe changes one thing.
RECIPES = {
    "official": (
        "--metric_for_best_model loss",
        "the official script with --gamma: BN'd mean, SGD 1.0, batch 16, loss",
    ),
    "raw_mean": (
        "--metric_for_best_model loss --classifier_input raw",
        "the official script's default: the raw mean before BN",
    ),
    "select_by_accuracy": ("--metric_for_best_model accuracy", "the epoch with the best validation accuracy"),
    "batch_4": (
        "--metric_for_best_model loss --per_device_train_batch_size 4",
        "4x the updates per epoch (the official exact-length batches give ~3.5x at 100 labels)",
    ),
    "adam": ("--metric_for_best_model loss --optimizer adam", "Adam, lr 1e-3"),
    "linear_probe": ("--metric_for_best_model loss --freeze_encoder", "the encoder frozen: a linear probe"),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=list(DATASETS), default="yelp")
    p.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    p.add_argument("--methods", nargs="+", choices=semi_supervised.METHODS, default=["bnvae_0.7", "vae"])
    p.add_argument("--budgets", nargs="+", type=int, default=[100, 1000])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--heldout_size", type=int, default=2000, help="pool sentences set aside to score the recipes")
    p.add_argument("--num_workers", type=int, default=None, help="runs side by side (default: the cores)")
    p.add_argument("--output_dir", default=None, help="default: semi_supervised.py's")
    p.add_argument("--train_file", default=None, help="default: the dataset's pool")
    p.add_argument("--validation_file", default=None, help="default: the dataset's")
    p.add_argument("--num_train_epochs", type=int, default=None, help="fine-tuning epochs (default: the recipe's)")
    p.add_argument("--max_train_steps", type=int, default=None, help="at most this many fine-tuning steps")
    args = p.parse_args(argv)
    if args.heldout_size < 2:
        p.error(f"--heldout_size {args.heldout_size}: must be at least 2")
    if min(args.budgets) < 2:
        p.error(f"--budgets {args.budgets}: each budget must be at least 2 labelled sentences")
    table = ["--dataset", args.dataset, "--budgets", *map(str, args.budgets), "--seeds", *map(str, args.seeds)]
    table += ["--max_seeds"]  # no seed caps here
    for flag in ("num_workers", "output_dir", "train_file", "validation_file", "num_train_epochs", "max_train_steps"):
        if getattr(args, flag) is not None:
            table += [f"--{flag}", str(getattr(args, flag))]
    validation = args.validation_file or str(DATASETS[args.dataset].folder / "valid.txt")
    table += ["--test_file", validation]  # a placeholder that exists: the test set is never read here
    args.table = semi_supervised.parse_args(table)  # the data files, models and workers of the table
    return args


def split_pool(args, folder):
    """Write the pool without its last --heldout_size lines (train.txt) and those lines (heldout.txt) into
    `folder`; return their paths."""
    lines = Path(args.table.train_file).read_text(encoding="utf-8").splitlines(keepends=True)
    if len(lines) <= args.heldout_size + max(args.budgets):
        raise ValueError(
            f"{args.table.train_file}: {len(lines)} lines, too few for {args.heldout_size} held-out sentences"
            f" and a budget of {max(args.budgets)}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    train, heldout = folder / "train.txt", folder / "heldout.txt"
    write_atomically(train, "".join(lines[: -args.heldout_size]))
    write_atomically(heldout, "".join(lines[-args.heldout_size :]))
    return train, heldout


class _RecipeRun:
    """run_one(key_method, budget, seed): key_method is "<recipe>:<method>" (or the baseline); picklable."""

    def __init__(self, table, models):
        self.table, self.models = table, models

    def __call__(self, recipe_method, budget, seed):
        recipe, _, method = recipe_method.rpartition(":")
        flags = RECIPES[recipe][0] if recipe else None
        result = semi_supervised.fine_tune(self.table, checkpoint_of(self.models, method), method, budget, seed, flags)
        return {**result, "recipe_name": recipe or BASELINE, "model": method}


def summarise(args, runs):
    """{"recipes": {name: {"cells": {method/budget: mean_std}, "mean": float}}, "bag_of_words": {budget: ...}}
    of the held-out accuracies (percent) of the runs with --seeds (the record may hold more)."""
    out = {"recipes": {}, "bag_of_words": {}}
    runs = {key: r for key, r in runs.items() if r["seed"] in args.seeds}
    for recipe in args.recipes:
        cells = {}
        for method in args.methods:
            for budget in args.budgets:
                values = [
                    r["test_accuracy"]
                    for r in runs.values()
                    if r.get("recipe_name") == recipe and r["model"] == method and r["budget"] == budget
                ]
                if values:
                    cells[f"{method}/{budget}"] = mean_std(values)
        if cells:
            out["recipes"][recipe] = {"cells": cells, "mean": statistics.mean(c["mean"] for c in cells.values())}
    for budget in args.budgets:
        values = [r["test_accuracy"] for r in runs.values() if r["model"] == BASELINE and r["budget"] == budget]
        if values:
            out["bag_of_words"][str(budget)] = mean_std(values)
    return out


def write_table(args, summary, heldout, seconds):
    output = Path(args.table.output_dir)
    suffix = args.table.suffix
    majority = semi_supervised.majority_class(heldout)
    report = {**summary, "majority_class": majority, "recipes_flags": {k: RECIPES[k][0] for k in args.recipes}}
    report.update(command=f"python training/classification_recipes.py --dataset {args.dataset}", seconds=seconds)
    write_atomically(output / f"classification_recipes{suffix}.json", json.dumps(report, indent=2))
    columns = [f"{m} / {b}" for m in args.methods for b in args.budgets]
    lines = [f"| recipe | {' | '.join(columns)} | mean |", "|---|" + "---|" * (len(columns) + 1)]
    ranked = sorted(summary["recipes"].items(), key=lambda item: -item[1]["mean"])
    for name, entry in ranked:
        cells = [semi_supervised.cell_text(entry["cells"].get(c.replace(" / ", "/"))) for c in columns]
        lines.append(f"| {name}: {RECIPES[name][1]} | {' | '.join(cells)} | {entry['mean']:.1f} |")
    bow = [semi_supervised.cell_text(summary["bag_of_words"].get(str(b))) for _ in args.methods for b in args.budgets]
    lines.append(f"| bag-of-words (same draws) | {' | '.join(bow)} | |")
    lines += [
        "",
        f"Accuracy (%) on {args.heldout_size} labelled pool sentences held out from every draw, mean ± std (runs)"
        f" over seeds. Always answering their most frequent label ({majority['label']}) scores"
        f" {majority['accuracy']:.1f}%.",
    ]
    write_atomically(output / f"classification_recipes{suffix}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None):
    args = parse_args(argv)
    table = args.table
    semi_supervised.check_data_files(table, ("train_file", "validation_file"))
    models = models_folder(table)
    missing = [m for m in args.methods if not (checkpoint_of(models, m) / "config.json").exists()]
    if missing:
        raise FileNotFoundError(
            f"no pretrained {missing} in {models}: run python training/semi_supervised.py --dataset {args.dataset}"
            " --pretrain_only first"
        )
    output = Path(table.output_dir)
    table.train_file, heldout = map(str, split_pool(args, output / f"classification_recipes{table.suffix}_data"))
    table.test_file = heldout  # scored on held-out pool sentences: the test set is never read
    record = output / f"classification_recipes{table.suffix}_runs.json"
    state = json.loads(record.read_text()) if record.exists() else {"runs": {}, "wall_seconds": 0.0}
    keys = [f"{recipe}:{method}" for recipe in args.recipes for method in args.methods] + [f":{BASELINE}"]
    todo = semi_supervised.pending_runs(table, state["runs"], methods=keys)
    state = run_all(table, todo, record, state, _RecipeRun(table, models))
    summary = summarise(args, state["runs"])
    write_table(args, summary, heldout, state["wall_seconds"])
    return summary


if __name__ == "__main__":
    main()
