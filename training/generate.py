"""Sample, reconstruct and interpolate sentences with a trained model; prints plain text.

    python training/generate.py --model_name_or_path outputs/bnvae-brown sample --num_samples 5
    python training/generate.py --model_name_or_path outputs/bnvae-brown reconstruct "the jury said it ." "he left ."
    python training/generate.py --model_name_or_path outputs/bnvae-brown interpolate "a sentence ." "another one ." --steps 5

Decoding is greedy by default; --num_beams N gives beam search, --do_sample sampling (--temperature,
--top_k, --top_p). --seed makes sampling repeatable.
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.append(str(Path(__file__).resolve().parent))

from loading import load_model_and_tokenizer  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Generate with a BN-VAE.")
    p.add_argument("--model_name_or_path", required=True, help="a save_pretrained folder or a hub id")
    p.add_argument("--revision", default=None)
    p.add_argument("--max_new_tokens", type=int, default=40)
    p.add_argument("--num_beams", type=int, default=1)
    p.add_argument("--do_sample", action="store_true")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top_k", type=int, default=0)
    p.add_argument("--top_p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    sub = p.add_subparsers(dest="command", required=True)
    sample = sub.add_parser("sample", help="decode z ~ N(0, I)")
    sample.add_argument("--num_samples", type=int, default=5)
    reconstruct = sub.add_parser("reconstruct", help="decode the posterior means of the given sentences")
    reconstruct.add_argument("sentences", nargs="+")
    interpolate = sub.add_parser("interpolate", help="decode points between the posterior means of two sentences")
    interpolate.add_argument("first")
    interpolate.add_argument("second")
    interpolate.add_argument("--steps", type=int, default=5)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    model, tokenizer = load_model_and_tokenizer(args.model_name_or_path, args.revision)
    decoding = dict(max_new_tokens=args.max_new_tokens, num_beams=args.num_beams, do_sample=args.do_sample)
    if args.do_sample:
        decoding.update(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    if args.command == "sample":
        lines = model.sample_prior(args.num_samples, tokenizer, generator=torch.Generator().manual_seed(args.seed), **decoding)
    elif args.command == "reconstruct":
        outputs = model.reconstruct(args.sentences, tokenizer, **decoding)
        lines = [f"{source}\t->\t{output}" for source, output in zip(args.sentences, outputs)]
    else:
        lines = model.interpolate(args.first, args.second, tokenizer, steps=args.steps, **decoding)
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
