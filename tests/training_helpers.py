"""Shared pieces of the training tests: a tiny-model argument list and the train.py entry point."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "sentences.txt"
sys.path.append(str(ROOT / "training"))  # appended: training/evaluate.py must not shadow the evaluate package

import train as train_script  # noqa: E402


def tiny_args(output_dir, *extra):
    return [
        "--train_file", str(FIXTURE),
        "--validation_file", str(FIXTURE),
        "--max_eval_samples", "40",
        "--embedding_size", "16",
        "--encoder_hidden_size", "24",
        "--decoder_hidden_size", "24",
        "--latent_size", "8",
        "--vocab_size", "300",
        "--per_device_train_batch_size", "8",
        "--per_device_eval_batch_size", "16",
        "--num_train_epochs", "1",
        "--iw_samples", "0",
        "--output_dir", str(output_dir),
        *extra,
    ]
