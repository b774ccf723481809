"""Is BN-VAE's NLL at or below the LSTM LM's once both have converged? LM, VAE and BN-VAE (0.6) on Brown,
trained with the official recipe until the plateau rule stops them or an epoch cap, over several seeds.

    python training/converged.py                 # trains what is missing (resumes), evaluates, writes results
    python training/converged.py --train_only    # the training part only (run it in parts: it resumes)

Budget (chosen so that the 9 runs of 3 seeds take about 3 hours of 2 CPU cores, in parts): the first
10,000 Brown training sentences, at most 30 epochs, KL warm-up over 10 epochs and the plateau rule
(from epoch 15, patience 5; the LM's from epoch 0, patience 2; stop at the 5th decay), SGD lr 1.0,
all 3,000 validation sentences each epoch. Each run checkpoints every epoch and resumes from its last
checkpoint; a run with a metrics.json is done. Test: -ELBO, KL, MI and AU on all 3,000 test sentences;
the importance-weighted NLL (K = 500) on a seeded random sample of 200 test sentences, the same for
every model. Writes training/reproduction/converged.json, converged.md and converged_curves.png.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

from hf_bnvae.trainer_utils import list_checkpoints

HERE = Path(__file__).resolve().parent
METHODS = {"lm": ["--method", "lm"], "vae": ["--method", "vae"], "bnvae_0.6": ["--method", "bnvae", "--gamma", "0.6"]}


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
    p.add_argument("--train_only", action="store_true")
    return p.parse_args(argv)


def run_dir(args, method, seed):
    return Path(args.output_dir) / "converged_models" / f"{method}_seed{seed}"


def train_missing(args):
    """Train every (seed, method) run without a metrics.json, seed by seed, resuming from checkpoints."""
    for seed in args.seeds:
        for method, flags in METHODS.items():
            folder = run_dir(args, method, seed)
            if (folder / "metrics.json").exists():
                print(f"[skip] {folder.name}: done", flush=True)
                continue
            resume = ["--resume_from_checkpoint", "latest"] if list_checkpoints(folder / "checkpoints") else []
            command = [
                sys.executable,
                str(HERE / "train.py"),
                *flags,
                "--output_dir",
                str(folder),
                "--max_train_samples",
                str(args.max_train_samples),
                "--num_train_epochs",
                str(args.num_train_epochs),
                "--kl_warmup_epochs",
                str(args.kl_warmup_epochs),
                "--seed",
                str(seed),
                "--iw_samples",
                "0",
                "--checkpointing_steps",
                "epoch",
                *resume,
            ]
            print(f"[train] {folder.name}: {' '.join(command[1:])}", flush=True)
            subprocess.run(command, check=True)


def main(argv=None):
    args = parse_args(argv)
    train_missing(args)
    if args.train_only:
        return


if __name__ == "__main__":
    main()
