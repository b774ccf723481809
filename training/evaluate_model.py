"""Evaluate a trained model with the paper's protocol and print a table.

    python training/evaluate_model.py --model_name_or_path outputs/bnvae-brown            # Brown test split
    python training/evaluate_model.py --model_name_or_path org/name --test_file test.txt --iw_samples 500 --torch_compile

Metrics (nats per sentence unless stated): NLL (importance-weighted, K samples from q(z|x)), PPL
(per word, end token counted, start token not), -ELBO, reconstruction, KL, mutual information,
KL(q(z)||p(z)) and active units. Runs under `accelerate launch` too (sentences split over processes).
The figures go into the "evaluation" entry of the model folder's all_results.json (or --output_file).
"""

import argparse
import json
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from hf_bnvae import load_pretrained
from hf_bnvae.data import BROWN_DIR, read_text_file, sentence_loader, tokenize_texts
from hf_bnvae.evaluation import evaluate_language_model
from hf_bnvae.saving import RESULTS_NAME, portable_path, read_results, write_atomically, write_results
from hf_bnvae.trainer_utils import check_lower_bounds

ROWS = [
    ("nll", "NLL (IW)"),
    ("ppl", "PPL (IW)"),
    ("nelbo", "-ELBO"),
    ("reconstruction", "reconstruction"),
    ("kl", "KL"),
    ("mi", "MI"),
    ("aggregate_kl", "KL(q(z)||p(z))"),
    ("au", "AU"),
    ("ppl_elbo", "PPL (ELBO bound)"),
]


# IW-NLL cost per sentence and posterior sample, measured at K = 500 on this project's 2-core AVX2 CPU
# (0.58 s per sentence, docs/speed.md): the basis of the time printed before an evaluation
SECONDS_PER_SENTENCE_SAMPLE = 0.58 / 500


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Evaluate a BN-VAE checkpoint with the paper's protocol.")
    p.add_argument("--model_name_or_path", required=True, help="a save_pretrained folder or a hub id")
    p.add_argument("--revision", default=None)
    p.add_argument("--test_file", default=str(BROWN_DIR / "test.txt"))
    p.add_argument("--max_eval_samples", type=int, default=None, help="evaluate the first n sentences only")
    p.add_argument("--iw_samples", type=int, default=500, help="K; 0 skips the importance-weighted NLL")
    p.add_argument("--per_device_eval_batch_size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--torch_compile",
        action="store_true",
        help="run the IW-NLL output layer through torch.compile: same numbers, ~1.16x faster on this project's CPU "
        "(needs a C++ compiler; falls back to eager with a warning)",
    )
    p.add_argument(
        "--output_file",
        default=None,
        help='write the figures to this JSON file (default: the "evaluation" entry of the model folder\'s '
        "all_results.json, or of ./all_results.json for a hub model)",
    )
    args = p.parse_args(argv)
    bounds = {
        "max_eval_samples": (2, False, "active units and MI need 2 sentences"),
        "iw_samples": (0, False, "0 skips the importance-weighted NLL"),
        "per_device_eval_batch_size": (1, False, "sentences"),
    }
    check_lower_bounds(p, args, bounds)
    return args


def format_table(metrics):
    lines = ["| metric | value |", "|---|---|"]
    for key, name in ROWS:
        if key in metrics:
            value = metrics[key]
            lines.append(f"| {name} | {value if isinstance(value, int) else f'{value:.2f}'} |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    model, tokenizer = load_pretrained(args.model_name_or_path, args.revision)
    model.to(accelerator.device)
    corpus = read_text_file(args.test_file)
    texts = corpus.texts[: args.max_eval_samples]  # None keeps everything
    complete = len(texts) == len(corpus.texts)  # a subset's figures are kept apart from the whole split's
    if args.iw_samples:
        minutes = len(texts) * args.iw_samples * SECONDS_PER_SENTENCE_SAMPLE / 60
        accelerator.print(
            f"IW-NLL with K={args.iw_samples} on {len(texts):,} sentences: roughly {minutes:.0f} min on 2 CPU"
            " cores (the bar below gives the ETA on this machine)"
        )
    loader = accelerator.prepare(
        sentence_loader(tokenize_texts(tokenizer, texts), tokenizer, args.per_device_eval_batch_size)
    )
    progress = tqdm(loader, desc="evaluating (batches)", disable=not accelerator.is_local_main_process)
    metrics = evaluate_language_model(
        model, progress, accelerator, iw_samples=args.iw_samples, seed=args.seed, compile=args.torch_compile
    )
    metrics.update(
        split=Path(args.test_file).stem,
        eval_data=f"{portable_path(str(Path(args.test_file).resolve()))}, {len(texts)} sentences ({corpus.blank_lines} blank lines dropped)",
        model=args.model_name_or_path,
    )
    if accelerator.is_main_process:
        if args.output_file:
            output = Path(args.output_file)
            write_atomically(output, json.dumps(metrics, indent=2))
        else:
            local = Path(args.model_name_or_path)
            folder = local if local.is_dir() else Path(".")
            results = read_results(folder) or {"task": "language-modeling"}
            block = "evaluation" if complete else "evaluation_subset"
            results[block] = metrics
            write_results(folder, results)
            output = f"{folder / RESULTS_NAME} ({block!r}" + (
                ")" if complete else "; a subset: model cards use it only with `hf_bnvae.hub card --allow_subset`)"
            )
        print(f"{args.model_name_or_path} on {metrics['eval_data']}, K={args.iw_samples}")
        print(format_table(metrics))
        print(f"written to {output}")
    return metrics


if __name__ == "__main__":
    main()
