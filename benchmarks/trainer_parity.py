"""transformers' Trainer path against train.py on the Brown default run: the same recipe, seeds and epochs.

    python benchmarks/trainer_parity.py --seeds 42 43

For each seed, runs `training/train.py` (the Brown preset: 30,000 sentences, 4 epochs, KL warm-up over 2,
SGD lr 1.0, batch 32) and `training/train_with_trainer.py` with the same settings (the Trainer evaluates
once, after training, so that its train_runtime holds training steps only, as train.py's train_seconds
does), one after the other in separate processes, and prints per run the final validation -ELBO,
reconstruction and KL (nats per sentence, one z sample per sentence), MI and AU, and the training tokens
per second (words + `</s>` of the training sentences times the epochs, over the training time), then
the Trainer-minus-train.py difference of each figure beside the seed-to-seed spread of each path.
Runs already in --output_dir are read, not redone; the table is written to --output_dir/parity.json.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("nelbo", "reconstruction", "kl", "mi", "au")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43])
    parser.add_argument("--num_threads", type=int, default=2)
    parser.add_argument("--output_dir", default="outputs/trainer_parity")
    return parser.parse_args(argv)


def training_tokens(num_epochs):
    """Words + </s> of the Brown preset's 30,000 training sentences, times the epochs."""
    sys.path.insert(0, str(ROOT))
    from hf_bnvae.data import BROWN_DIR, read_text_file

    texts = read_text_file(BROWN_DIR / "train.txt").texts[:30000]
    return num_epochs * sum(len(text.split()) + 1 for text in texts)


def run_train_py(seed, folder, threads):
    if not (folder / "all_results.json").exists():
        subprocess.run(
            [sys.executable, str(ROOT / "training" / "train.py"), "--seed", str(seed), "--iw_samples", "0",
             "--num_threads", str(threads), "--output_dir", str(folder)],
            check=True,
        )  # fmt: skip
    results = json.loads((folder / "all_results.json").read_text())
    last = results["history"][-1]
    return {**{key: last[f"valid_{key}"] for key in FIGURES}, "seconds": results["train_seconds"],
            "epochs": len(results["history"])}  # fmt: skip


def run_trainer(seed, folder, threads):
    if not (folder / "eval_results.json").exists():
        subprocess.run(
            [sys.executable, str(ROOT / "training" / "train_with_trainer.py"), "--seed", str(seed),
             "--do_train", "--do_eval", "--eval_strategy", "no", "--save_strategy", "no", "--use_cpu",
             "--output_dir", str(folder)],
            check=True,
            env={**os.environ, "OMP_NUM_THREADS": str(threads)},
        )  # fmt: skip
    evaluation = json.loads((folder / "eval_results.json").read_text())
    training = json.loads((folder / "train_results.json").read_text())
    return {**{key: evaluation[f"eval_{key}"] for key in FIGURES}, "seconds": training["train_runtime"],
            "epochs": round(training["epoch"])}  # fmt: skip


def main(argv=None):
    args = parse_args(argv)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    runs = {"train.py": {}, "Trainer": {}}
    for seed in args.seeds:
        runs["train.py"][seed] = run_train_py(seed, output / f"train_py_seed{seed}", args.num_threads)
        runs["Trainer"][seed] = run_trainer(seed, output / f"trainer_seed{seed}", args.num_threads)
    print("| path | seed | valid -ELBO | reconstruction | KL | MI | AU | tokens/s |")
    print("|---|---|---|---|---|---|---|---|")
    for path, by_seed in runs.items():
        for seed, run in by_seed.items():
            run["tokens_per_second"] = training_tokens(run["epochs"]) / run["seconds"]
            print(
                f"| {path} | {seed} | {run['nelbo']:.2f} | {run['reconstruction']:.2f} | {run['kl']:.2f} | "
                f"{run['mi']:.2f} | {run['au']} | {run['tokens_per_second']:,.0f} |"
            )
    print("\nTrainer minus train.py (mean over seeds), beside each path's seed-to-seed standard deviation:")
    summary = {}
    for key in (*FIGURES, "tokens_per_second"):
        difference = statistics.mean(runs["Trainer"][s][key] - runs["train.py"][s][key] for s in args.seeds)
        spread = {
            path: statistics.stdev([r[key] for r in by_seed.values()]) if len(by_seed) > 1 else None
            for path, by_seed in runs.items()
        }
        summary[key] = {"difference": difference, "seed_std": spread}
        shown = ", ".join(f"{p} {v:.3g}" for p, v in spread.items() if v is not None) or "one seed"
        print(f"  {key}: {difference:+.3g} (seed std: {shown})")
    (output / "parity.json").write_text(json.dumps({"runs": runs, "summary": summary}, indent=2, default=str))


if __name__ == "__main__":
    main()
