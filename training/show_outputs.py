"""What models write, side by side: reconstructions, prior samples and an interpolation as Markdown tables.

    python training/show_outputs.py --model_name_or_path outputs/bnvae-brown outputs/bnvae-demo

For each model (a column): greedy reconstructions of --num_examples test sentences drawn with
`random.Random(seed)`, the corpus BLEU of greedy and beam-5 reconstructions of --num_bleu sentences
(sacrebleu, no re-tokenisation; 100 is a word-for-word copy), prior samples (top-p 0.9 from a seeded generator)
and a greedy interpolation between the first two example sentences, each with the seconds it took.
Decoding uses the models' generation defaults (<pad>, <s>, <unk> suppressed, no repeated trigram).
"""

import argparse
import random
import time

import torch
from experiments import reconstruction_bleu  # training/ is on the path when a script runs

from hf_bnvae import load_pretrained
from hf_bnvae.data import BROWN_DIR, read_text_file
from hf_bnvae.trainer_utils import check_lower_bounds


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Reconstructions, samples and an interpolation of models, side by side.")
    p.add_argument("--model_name_or_path", nargs="+", required=True, help="save_pretrained folders or hub ids")
    p.add_argument("--test_file", default=str(BROWN_DIR / "test.txt"))
    p.add_argument("--num_examples", type=int, default=4, help="reconstructions shown (the first two interpolate)")
    p.add_argument("--num_bleu", type=int, default=200, help="sentences of the reconstruction BLEU")
    p.add_argument("--num_samples", type=int, default=3, help="prior samples shown")
    p.add_argument("--steps", type=int, default=5, help="interpolation points, both ends included")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    bounds = {
        "num_examples": (2, False, "two sentences interpolate"),
        "num_bleu": (1, False, "sentences"),
        "num_samples": (1, False, "samples"),
        "steps": (2, False, "both ends"),
    }
    check_lower_bounds(p, args, bounds)
    return args


def timed(function, *args, **kwargs):
    """(function's result, seconds it took)."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def model_outputs(model, tokenizer, examples, bleu_texts, args):
    """A model's outputs on the shared inputs: {"reconstructions", "bleu", "samples", "interpolation",
    "seconds": {part: s}}."""
    reconstructions, seconds_reconstruct = timed(model.reconstruct, examples, tokenizer)
    bleu_outputs, seconds_bleu = timed(model.reconstruct, bleu_texts, tokenizer)
    beam_outputs = model.reconstruct(bleu_texts, tokenizer, num_beams=5)
    generator = torch.Generator().manual_seed(args.seed)
    samples, seconds_sample = timed(
        model.sample_prior, args.num_samples, tokenizer, generator=generator, do_sample=True, top_p=0.9
    )
    path, seconds_interpolate = timed(model.interpolate, examples[0], examples[1], tokenizer, steps=args.steps)
    return {
        "reconstructions": reconstructions,
        "bleu": reconstruction_bleu(bleu_outputs, bleu_texts),
        "bleu_beam5": reconstruction_bleu(beam_outputs, bleu_texts),
        "samples": samples,
        "interpolation": path,
        "seconds": {
            "reconstruct": seconds_reconstruct,
            "bleu": seconds_bleu,
            "sample": seconds_sample,
            "interpolate": seconds_interpolate,
        },
    }


def cell(text):
    return text.replace("|", "\\|") or "(empty)"


def markdown(names, outputs, examples, args):
    """The tables: one column per model."""
    head = "| | " + " | ".join(f"`{name}`" for name in names) + " |\n|---|" + "---|" * len(names)
    lines = [f"Greedy reconstructions of {len(examples)} test sentences (`random.Random({args.seed})`):", "", head]
    for i, text in enumerate(examples):
        lines.append(f"| {cell(text)} | " + " | ".join(cell(o["reconstructions"][i]) for o in outputs) + " |")
    for key, decoding in (("bleu", "greedy"), ("bleu_beam5", "beam 5")):
        lines.append(
            f"| reconstruction BLEU, {decoding}, {args.num_bleu} sentences | "
            + " | ".join(f"{o[key]:.1f}" for o in outputs)
            + " |"
        )
    lines += ["", f"Prior samples (top-p 0.9, `torch.Generator().manual_seed({args.seed})`):", "", head]
    for i in range(args.num_samples):
        lines.append(f"| {i + 1} | " + " | ".join(cell(o["samples"][i]) for o in outputs) + " |")
    lines += ["", f"Interpolation between the first two sentences ({args.steps} points, greedy):", "", head]
    for i in range(args.steps):
        lines.append(
            f"| {i / (args.steps - 1):.2f} | " + " | ".join(cell(o["interpolation"][i]) for o in outputs) + " |"
        )
    lines += ["", "Seconds (this machine, one process):", "", head]
    for part, what in (
        ("reconstruct", f"{len(examples)} reconstructions"),
        ("bleu", f"{args.num_bleu} reconstructions"),
        ("sample", f"{args.num_samples} samples"),
        ("interpolate", f"interpolation of {args.steps}"),
    ):
        lines.append(f"| {what} | " + " | ".join(f"{o['seconds'][part]:.1f}" for o in outputs) + " |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    texts = read_text_file(args.test_file).texts
    if len(texts) < max(args.num_examples, args.num_bleu):
        raise SystemExit(f"{args.test_file} has {len(texts)} sentences; --num_examples and --num_bleu need more")
    drawn = random.Random(args.seed).sample(texts, max(args.num_examples, args.num_bleu))
    examples, bleu_texts = drawn[: args.num_examples], drawn[: args.num_bleu]
    outputs = []
    for name in args.model_name_or_path:
        model, tokenizer = load_pretrained(name)
        outputs.append(model_outputs(model.eval(), tokenizer, examples, bleu_texts, args))
    print(markdown(args.model_name_or_path, outputs, examples, args))


if __name__ == "__main__":
    main()
