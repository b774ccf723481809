"""bf16 autocast against fp32: is the difference larger than fp32's own seed-to-seed spread?

    python benchmarks/precision.py --seeds 5

Trains the same small BN-VAE (the tests' 400 Brown sentences, emb 16, LSTM 24, latent 8, 2 epochs) with
`--mixed_precision no` and `--mixed_precision bf16` for each seed, then prints the validation -ELBO,
KL and IW-NLL (K = 50) of every run, the mean bf16 - fp32 difference at equal seeds, and the standard
deviation of fp32 across seeds. Each run is `python training/train.py` in its own process, one after
the other.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from hf_bnvae.saving import read_results

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = ROOT / "tests" / "fixtures" / "sentences.txt"
METRICS = ("nelbo", "kl", "nll")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--num_train_epochs", type=int, default=2)
    return parser.parse_args(argv)


def run(precision, seed, epochs, output_dir):
    argv = [
        *("--train_file", str(SENTENCES), "--validation_file", str(SENTENCES), "--max_eval_samples", "100"),
        *("--embedding_size", "16", "--encoder_hidden_size", "24", "--decoder_hidden_size", "24", "--latent_size", "8"),
        *("--vocab_size", "300", "--per_device_train_batch_size", "8", "--num_train_epochs", str(epochs)),
        *("--iw_samples", "50", "--max_iw_eval_samples", "100", "--seed", str(seed), "--mixed_precision", precision),
        *("--output_dir", str(output_dir)),
    ]
    subprocess.run([sys.executable, str(ROOT / "training" / "train.py"), *argv], check=True, capture_output=True)
    results = read_results(output_dir)
    return {key: results["validation"][key] for key in METRICS}


def main(argv=None):
    args = parse_args(argv)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            for precision in ("no", "bf16"):
                runs[precision, seed] = run(precision, seed, args.num_train_epochs, Path(tmp) / f"{precision}{seed}")
    print(f"\n{args.seeds} seeds, {args.num_train_epochs} epochs; validation metrics (nats per sentence)\n")
    print("| seed | " + " | ".join(f"{m} fp32 | {m} bf16" for m in METRICS) + " |")
    print("|---|" + "---|" * 2 * len(METRICS))
    for seed in range(args.seeds):
        cells = [f"{runs['no', seed][m]:.2f} | {runs['bf16', seed][m]:.2f}" for m in METRICS]
        print(f"| {seed} | " + " | ".join(cells) + " |")
    print()
    for m in METRICS:
        differences = [runs["bf16", s][m] - runs["no", s][m] for s in range(args.seeds)]
        spread = statistics.stdev(runs["no", s][m] for s in range(args.seeds))
        print(
            f"{m}: bf16 - fp32 at equal seeds mean {statistics.mean(differences):+.2f} "
            f"(sd {statistics.stdev(differences):.2f}); fp32 seed-to-seed sd {spread:.2f}"
        )


if __name__ == "__main__":
    main()
