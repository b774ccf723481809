"""Reproduce the paper's Table 1 comparison on Brown at the ptb size, in under 2 hours on 2 CPU cores.

    python training/reproduce.py                # trains what is missing, evaluates, writes the table

Trains the LSTM LM, VAE, beta-VAE (0.4), cyclical annealing, free bits (4 nats per sentence),
delta-VAE (0.15 nats per dimension), an autoencoder and then pretrained encoder + free bits, and
BN-VAE with gamma 0.5, 0.6 and 0.7, all with the same seed, data and schedule (aggressive training,
`--method aggressive`, is left out: RESULTS.md has its cost). Every run checkpoints each epoch (an
interrupted one resumes), and finished models (results in their folder) and their evaluations (the
"evaluation" entry of their all_results.json) are reused, so the script can run in parts: `--only NAME ...` trains and evaluates
just those runs and writes nothing but their cached evaluations (two parts side by side, each with
OMP_NUM_THREADS=1, use two cores), and a plain call then writes the whole table. Writes
training/reproduction/results.md (the table), results.json and kl_mi_curves.png.

Budget (chosen to fit 2 hours here): the first 16,000 Brown training sentences, 6 epochs with a
2-epoch KL warm-up, SGD lr 1.0 (the paper's recipe otherwise; the plateau rule cannot trigger this
early). Test metrics: -ELBO, KL, MI and AU on all 3,000 test sentences; the importance-weighted
NLL (K = 500) on the first 200 test sentences.
"""

import argparse
import datetime
import json
from pathlib import Path

import torch
from experiments import Run, run_train_script  # training/ is on the path when a script runs

from hf_bnvae import load_pretrained
from hf_bnvae.data import BROWN_DIR, read_text_file, sentence_loader, tokenize_texts
from hf_bnvae.evaluation import evaluate_language_model
from hf_bnvae.saving import read_results, write_results
from hf_bnvae.trainer_utils import check_finite

HERE = Path(__file__).resolve().parent

RUNS = [  # "pretrained_fb_4" starts from the autoencoder's encoder, so "ae" trains first
    Run("lm", "lm"),
    Run("vae", "vae"),
    Run("beta_vae_0.4", "beta_vae", {"beta": 0.4}),
    Run("cyclical", "cyclical", {"cycle_epochs": 4}),
    Run("free_bits_4", "free_bits", {"free_bits": 4.0}),
    Run("delta_vae_0.15", "delta_vae", {"delta_rate": 0.15}),
    Run("ae", "ae"),
    Run("pretrained_fb_4", "free_bits", {"free_bits": 4.0}, init_encoder_from="ae"),
    Run("bnvae_0.5", "bnvae", {"gamma": 0.5}),
    Run("bnvae_0.6", "bnvae", {"gamma": 0.6}),
    Run("bnvae_0.7", "bnvae", {"gamma": 0.7}),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output_dir", default=str(HERE / "reproduction"))
    p.add_argument("--max_train_samples", type=int, default=16000)
    p.add_argument("--num_train_epochs", type=int, default=6)
    p.add_argument("--kl_warmup_epochs", type=float, default=2)
    p.add_argument("--iw_samples", type=int, default=500)
    p.add_argument("--iw_test_sentences", type=int, default=200)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--only", nargs="*", help="train and evaluate only these runs, writing no table (to run parts side by side)"
    )
    args = p.parse_args(argv)
    check_finite(p, args)
    unknown = sorted(set(args.only or ()) - {run.name for run in RUNS})
    if unknown:
        p.error(f"--only: unknown run(s) {unknown}; the runs are {[run.name for run in RUNS]}")
    return args


def train_missing(args, models):
    for run in RUNS:
        name = run.name
        if args.only and name not in args.only:
            continue
        if read_results(models / name) is not None:
            print(f"[skip] {name}: already trained")
            continue
        run_train_script(models / name, args, args.seed, run.train_flags(models), resumable=True)


@torch.no_grad()
def evaluate_run(path, test_texts, args):
    results = read_results(path)
    cached = results.get("evaluation") or {}
    if cached.get("protocol") == "reproduce.py" and cached.get("iw_sentences") == args.iw_test_sentences:
        return cached
    model, tokenizer = load_pretrained(path)
    test_set = tokenize_texts(tokenizer, test_texts)
    iw_set = test_set.select(range(min(args.iw_test_sentences, len(test_set))))
    metrics = evaluate_language_model(model, sentence_loader(test_set, tokenizer, 64), seed=args.seed)
    subset = evaluate_language_model(
        model, sentence_loader(iw_set, tokenizer, 16), seed=args.seed, iw_samples=args.iw_samples
    )
    metrics.update(
        nll=subset["nll"],
        ppl=subset["ppl"],
        iw_samples=args.iw_samples,
        iw_sentences=subset["num_sentences"],
        nelbo_iw_subset=subset["nelbo"],
        protocol="reproduce.py",
        split="test",
        eval_data=f"Brown test split; IW-NLL on its first {subset['num_sentences']} sentences",
    )
    write_results(path, {**results, "evaluation": metrics})
    return metrics


def write_table(results, output, args):
    vae_time = results["vae"]["train_seconds"]
    lines = [
        f"Brown (ptb size: emb 256, LSTM 256, latent 32, vocab 10k), {args.max_train_samples:,} training sentences, "
        f"{args.num_train_epochs} epochs, KL warm-up {args.kl_warmup_epochs:g} epochs, seed {args.seed}. "
        f"NLL: importance-weighted, K = {args.iw_samples}, first {args.iw_test_sentences} test sentences (PPL on the same). "
        f"-ELBO, KL, MI, AU: all 3,000 test sentences. Time: training steps only, relative to the VAE. "
        f"Produced by `python training/reproduce.py` on {datetime.date.today().isoformat()}.",
        "",
        "| model | NLL | PPL | -ELBO | KL | MI | AU | time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in RUNS:
        if run.name not in results:
            continue
        r = results[run.name]
        lines.append(
            f"| {r['label']} | {r['nll']:.2f} | {r['ppl']:.1f} | {r['nelbo']:.2f} | {r['kl']:.2f} | {r['mi']:.2f} | "
            f"{r['au']} | {r['train_seconds'] / vae_time:.2f}x |"
        )
    (output / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def plot_curves(histories, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, history in histories.items():
        epochs = [h["epoch"] + 1 for h in history]
        axes[0].plot(epochs, [h["valid_kl"] for h in history], "o-", label=name)
        axes[1].plot(epochs, [h["valid_mi"] for h in history], "o-", label=name)
    axes[0].set(title="validation KL (nats / sentence)", xlabel="epoch")
    axes[1].set(title="validation MI (nats)", xlabel="epoch")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    output = Path(args.output_dir)
    models = output / "models"
    models.mkdir(parents=True, exist_ok=True)
    train_missing(args, models)
    test_texts = read_text_file(BROWN_DIR / "test.txt").texts
    results, histories = {}, {}
    for run in RUNS:
        name = run.name
        trained = read_results(models / name)
        if trained is None or (args.only and name not in args.only):
            continue
        print(f"[evaluate] {name}", flush=True)
        results[name] = {
            **evaluate_run(models / name, test_texts, args),
            "train_seconds": trained["train_seconds"],
            "best_epoch": trained["best_epoch"],
            "label": run.label,
        }
        histories[results[name]["label"]] = trained["history"]
    if args.only:  # a part: its evaluations are cached; the table and the curves come from a plain call
        for r in results.values():
            print(
                f"{r['label']}: NLL {r['nll']:.2f}, -ELBO {r['nelbo']:.2f}, KL {r['kl']:.2f}, MI {r['mi']:.2f}, AU {r['au']}"
            )
        return results
    (output / "results.json").write_text(json.dumps(results, indent=2))
    if "vae" in results:
        write_table(results, output, args)
    shown = [results[name]["label"] for name in ("vae", "bnvae_0.6", "bnvae_0.7") if name in results]
    plot_curves({label: histories[label] for label in shown}, output / "kl_mi_curves.png")


if __name__ == "__main__":
    main()
