"""Sample, reconstruct and interpolate sentences with a trained model; prints plain text.

    python training/generate.py --model_name_or_path outputs/bnvae-brown sample --num_samples 5
    python training/generate.py --model_name_or_path outputs/bnvae-brown reconstruct "the jury said it ." "he left ."
    python training/generate.py --model_name_or_path outputs/bnvae-brown interpolate "a sentence ." "another one ." --steps 5

Decoding is greedy by default; --num_beams N gives beam search, --do_sample sampling (--temperature,
--top_k, --top_p). --seed makes sampling repeatable.
"""

import argparse

import torch

from hf_bnvae import load_pretrained
from hf_bnvae.trainer_utils import check_lower_bounds

DECODING = {  # option -> (type, default); accepted before or after the subcommand
    "--max_new_tokens": (int, 40),
    "--num_beams": (int, 1),
    "--temperature": (float, 1.0),
    "--top_k": (int, 0),
    "--top_p": (float, 1.0),
    "--seed": (int, 0),
}


def add_decoding_options(parser, defaults=True):
    """The decoding options; a subcommand's copy has no defaults, so it only overrides what is given there."""
    for option, (kind, default) in DECODING.items():
        parser.add_argument(option, type=kind, default=default if defaults else argparse.SUPPRESS)
    parser.add_argument("--do_sample", action="store_true", default=False if defaults else argparse.SUPPRESS)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Generate with a BN-VAE.")
    p.add_argument("--model_name_or_path", required=True, help="a save_pretrained folder or a hub id")
    p.add_argument("--revision", default=None)
    add_decoding_options(p)
    sub = p.add_subparsers(dest="command", required=True)
    sample = sub.add_parser("sample", help="decode z ~ N(0, I)")
    sample.add_argument("--num_samples", type=int, default=5)
    reconstruct = sub.add_parser("reconstruct", help="decode the posterior means of the given sentences")
    reconstruct.add_argument("sentences", nargs="+")
    interpolate = sub.add_parser("interpolate", help="decode points between the posterior means of two sentences")
    interpolate.add_argument("first")
    interpolate.add_argument("second")
    interpolate.add_argument("--steps", type=int, default=5)
    for command in (sample, reconstruct, interpolate):
        add_decoding_options(command, defaults=False)
    args = p.parse_args(argv)
    bounds = {
        "max_new_tokens": (1, False, "tokens"),
        "num_beams": (1, False, "beams"),
        "temperature": (0, True, "sampling temperature"),
        "top_k": (0, False, "0 keeps every token"),
        "top_p": (0, True, "nucleus mass, at most 1"),
        "num_samples": (1, False, "sentences"),
        "steps": (2, False, "the two ends at least"),
    }
    check_lower_bounds(p, args, bounds)
    if args.top_p > 1:
        p.error(f"--top_p {args.top_p}: must be <= 1 (nucleus mass)")
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    model, tokenizer = load_pretrained(args.model_name_or_path, args.revision)
    decoding = dict(max_new_tokens=args.max_new_tokens, num_beams=args.num_beams, do_sample=args.do_sample)
    if args.do_sample:
        decoding.update(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    if args.command == "sample":
        lines = model.sample_prior(
            args.num_samples, tokenizer, generator=torch.Generator().manual_seed(args.seed), **decoding
        )
    elif args.command == "reconstruct":
        outputs = model.reconstruct(args.sentences, tokenizer, **decoding)
        lines = [f"{source}\t->\t{output}" for source, output in zip(args.sentences, outputs)]
    else:
        lines = model.interpolate(args.first, args.second, tokenizer, steps=args.steps, **decoding)
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
