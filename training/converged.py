"""Is BN-VAE's NLL at or below the LSTM LM's once both have converged? LM, VAE and BN-VAE (0.6) on Brown,
trained with the official recipe until the plateau rule stops them or an epoch cap, over several seeds
(and an autoencoder with the first seed, to compare how much the decoders use z).

    python training/converged.py                 # trains what is missing (resumes), evaluates, writes results
    python training/converged.py --train_only    # the training part only (run it in parts: it resumes)
    python training/converged.py --evaluate_only # evaluate the finished runs, write the results so far

Budget (chosen so that the 9 runs of 3 seeds take about 3 hours of 2 CPU cores, in parts): the first
10,000 Brown training sentences, at most 30 epochs, KL warm-up over 10 epochs and the plateau rule
(from epoch 15, patience 5; the LM's from epoch 0, patience 2; stop at the 5th decay), SGD lr 1.0,
all 3,000 validation sentences each epoch. Each run checkpoints every epoch and resumes from its last
checkpoint; a run with a metrics.json is done. Test: -ELBO, KL, MI and AU on all 3,000 test sentences;
the importance-weighted NLL (K = 500) on a seeded random sample of 200 test sentences, the same for
every model. Writes training/reproduction/converged.json, converged.md and converged_curves.png, and
each run's record (validation history and test metrics) in training/reproduction/converged_runs/.
"""

import argparse
import json
import random
import time
from pathlib import Path

import sacrebleu
import torch
from reproduce import mean_std, run_train_script  # training/ is on the path when a training script runs

from hf_bnvae import load_pretrained
from hf_bnvae.data import BROWN_DIR, read_text_file, sentence_loader, tokenize_texts
from hf_bnvae.evaluation import evaluate_language_model, latent_usage
from hf_bnvae.saving import write_atomically

HERE = Path(__file__).resolve().parent
METHODS = {"lm": ["--method", "lm"], "vae": ["--method", "vae"], "bnvae_0.6": ["--method", "bnvae", "--gamma", "0.6"]}
# trained with the first seed only, for the "how much is z used" comparison (an AE uses z most)
FIRST_SEED_ONLY = {"ae": ["--method", "ae"]}
LABELS = {"lm": "LSTM-LM", "vae": "VAE", "bnvae_0.6": "BN-VAE (0.6)", "ae": "autoencoder"}


def runs(args):
    """(seed, method, train.py flags) of every run, seed by seed."""
    for seed in args.seeds:
        extra = FIRST_SEED_ONLY if seed == args.seeds[0] else {}
        for method, flags in {**METHODS, **extra}.items():
            yield seed, method, flags


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output_dir", default=str(HERE / "reproduction"))
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    p.add_argument("--max_train_samples", type=int, default=10000)
    p.add_argument("--num_train_epochs", type=int, default=30)
    p.add_argument("--kl_warmup_epochs", type=float, default=10)
    p.add_argument("--iw_samples", type=int, default=500)
    p.add_argument("--iw_test_sentences", type=int, default=200)
    p.add_argument("--sample_seed", type=int, default=0, help="seed of the random IW test sample")
    p.add_argument("--seed", type=int, default=0, help="seed of the evaluation's noise (z draws, MI)")
    p.add_argument("--mi_samples", type=int, default=10, help="posterior draws per sentence in the MI estimate")
    p.add_argument("--train_only", action="store_true")
    p.add_argument(
        "--evaluate_only", action="store_true", help="evaluate the finished runs and write the results; train nothing"
    )
    return p.parse_args(argv)


def run_dir(args, method, seed):
    """The run's model and checkpoints (not in git)."""
    return Path(args.output_dir) / "converged_models" / f"{method}_seed{seed}"


def record_path(args, method, seed):
    """The run's record (in git): its per-epoch validation history and its test metrics."""
    return Path(args.output_dir) / "converged_runs" / f"{method}_seed{seed}.json"


def train_missing(args):
    """Train every (seed, method) run without a metrics.json, seed by seed, resuming from checkpoints."""
    for seed, method, flags in runs(args):
        folder = run_dir(args, method, seed)
        if (folder / "metrics.json").exists():
            print(f"[skip] {folder.name}: done", flush=True)
            continue
        run_train_script(folder, args, seed, flags, resumable=True)


@torch.no_grad()
def evaluate_run(folder, record, test_texts, sample, args):
    """Test metrics of one trained run, written with its validation history to `record` (reused if there)."""
    if record.exists():
        return json.loads(record.read_text())["test"]
    start = time.perf_counter()
    model, tokenizer = load_pretrained(folder)
    test_set = tokenize_texts(tokenizer, test_texts)
    subset = test_set.select(sample)
    metrics = evaluate_language_model(
        model, sentence_loader(test_set, tokenizer, 64), seed=args.seed, mi_samples=args.mi_samples
    )
    iw = evaluate_language_model(
        model, sentence_loader(subset, tokenizer, 16), seed=args.seed, iw_samples=args.iw_samples
    )
    metrics.update(nll=iw["nll"], ppl=iw["ppl"], nelbo_iw_sample=iw["nelbo"], iw_sentences=iw["num_sentences"])
    texts = [test_texts[i] for i in sample]
    if model.config.use_latent:
        usage = latent_usage(model, sentence_loader(subset, tokenizer, 64), seed=args.seed)
        metrics.update({k: v for k, v in usage.items() if k != "num_sentences"})  # the IW sample's size is iw_sentences
        reconstructions = model.reconstruct(texts, tokenizer)
        metrics["bleu"] = sacrebleu.corpus_bleu(reconstructions, [texts], tokenize="none", force=True).score
        metrics["examples"] = [{"input": t, "reconstruction": r} for t, r in zip(texts[:5], reconstructions[:5])]
        metrics["prior_samples"] = model.sample_prior(5, tokenizer, generator=torch.Generator().manual_seed(args.seed))
    trained = json.loads((folder / "metrics.json").read_text())
    metrics.update(
        epochs=len(trained["history"]),
        best_epoch=trained["best_epoch"] + 1,
        decays=sum(h["plateau_action"] in ("decay", "stop") for h in trained["history"]),
        train_seconds=trained["train_seconds"],
        eval_seconds=time.perf_counter() - start,
    )
    record.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(record, json.dumps({"test": metrics, "history": trained["history"]}, indent=2))
    return metrics


FIGURES = ("nll", "ppl", "nelbo", "kl", "mi", "au", "epochs", "z_gap", "token_accuracy", "bleu")


def summarise(runs):
    """{figure: mean_std over the seeds' metrics} for each figure the runs have."""
    summary = {}
    for figure in FIGURES:
        values = [r[figure] for r in runs if figure in r]
        if values:
            summary[figure] = mean_std(values)
    return summary


def write_results(results, args, output):
    methods = {m: summarise([results[m][s] for s in sorted(results[m])]) for m in results}
    for m in methods:
        methods[m]["seeds"] = sorted(results[m])
    seconds = sum(r["train_seconds"] + r["eval_seconds"] for per_seed in results.values() for r in per_seed.values())
    command = "python training/converged.py" + (
        f" --seeds {' '.join(map(str, args.seeds))}" if args.seeds != [42, 43, 44] else ""
    )
    report = {"methods": methods, "command": command, "seconds": seconds, "settings": vars(args)}
    write_atomically(output / "converged.json", json.dumps(report, indent=2))

    def cell(summary, figure, digits):
        if figure not in summary:
            return "-"
        s = summary[figure]
        return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}" if len(s["runs"]) > 1 else f"{s['mean']:.{digits}f}"

    lines = [
        "| model | seeds | NLL | PPL | -ELBO | KL | MI | AU | epochs | z gap | token acc. | BLEU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m, summary in methods.items():
        lines.append(
            f"| {LABELS[m]} | {len(summary['seeds'])} | {cell(summary, 'nll', 2)} | {cell(summary, 'ppl', 1)} | "
            f"{cell(summary, 'nelbo', 2)} | {cell(summary, 'kl', 2)} | {cell(summary, 'mi', 2)} | {cell(summary, 'au', 1)} | "
            f"{cell(summary, 'epochs', 1)} | {cell(summary, 'z_gap', 2)} | {cell(summary, 'token_accuracy', 3)} | "
            f"{cell(summary, 'bleu', 1)} |"
        )
    write_atomically(output / "converged.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def plot_curves(args, output):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for method, color in zip(METHODS, ("tab:gray", "tab:blue", "tab:red")):  # the AE's -ELBO is off the scale
        for i, seed in enumerate(args.seeds):
            path = record_path(args, method, seed)
            if not path.exists():
                continue
            history = json.loads(path.read_text())["history"]
            epochs = [h["epoch"] + 1 for h in history]
            label = LABELS[method] if i == 0 else None
            axes[0].plot(epochs, [h["valid_nelbo"] for h in history], color=color, alpha=0.8, label=label)
            axes[1].plot(epochs, [h["valid_kl"] for h in history], color=color, alpha=0.8, label=label)
    axes[0].set(title="validation -ELBO (nats / sentence)", xlabel="epoch", ylim=(None, None))
    axes[1].set(title="validation KL (nats / sentence)", xlabel="epoch")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(output / "converged_curves.png", dpi=100)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    if args.train_only and args.evaluate_only:
        raise SystemExit("--train_only and --evaluate_only exclude each other")
    if not args.evaluate_only:
        train_missing(args)
    if args.train_only:
        return
    output = Path(args.output_dir)
    test_texts = read_text_file(BROWN_DIR / "test.txt").texts
    sample = sorted(random.Random(args.sample_seed).sample(range(len(test_texts)), args.iw_test_sentences))
    results = {}
    for seed, method, _ in runs(args):
        folder, record = run_dir(args, method, seed), record_path(args, method, seed)
        if record.exists() or (folder / "metrics.json").exists():
            print(f"[evaluate] {folder.name}", flush=True)
            results.setdefault(method, {})[seed] = evaluate_run(folder, record, test_texts, sample, args)
    write_results(results, args, output)
    plot_curves(args, output)


if __name__ == "__main__":
    main()
