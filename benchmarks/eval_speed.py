"""Importance-weighted NLL speed: our batched evaluation against the reference code's protocol.

    python benchmarks/eval_speed.py [--num_sentences 200] [--iw_samples 500]

Same model (ptb size, vocab 10k, BN-VAE; trained weights from --model_name_or_path if given, else a
seeded initialisation), same Brown test sentences, same noise draws. Reference protocol: one sentence
at a time, 100 samples per decoder pass, full logits for every position. Ours: length-bucketed batches
of sentences times chunks of samples, output layer on real tokens only, in cache-sized chunks; and the
same with the output layer compiled by torch.compile (compilation is not timed). Each
runs in its own process (so each peak memory is its own); prints sentences/s, achieved GFLOP/s
(useful FLOPs: decoder LSTM + output layer per scored token) against a large fp32 matrix multiply
timed in the same run, peak memory, and the largest per-sentence NLL difference.
"""

import argparse
import json
import math
import subprocess
import sys
import time

import torch
from common import brown_batches, decoder_flops_per_token, matmul_gflops, peak_memory_mib
from transformers import AutoTokenizer

from hf_bnvae import BNVAEConfig, BNVAEForLanguageModeling
from hf_bnvae.evaluation import (
    gaussian_log_density,
    importance_weighted_log_likelihood,
    sentence_noise,
    standard_normal_log_density,
)


def load_model(args, vocab_size):
    if args.model_name_or_path:
        return BNVAEForLanguageModeling.from_pretrained(args.model_name_or_path).eval()
    torch.manual_seed(0)
    model = BNVAEForLanguageModeling(BNVAEConfig.from_preset("ptb", vocab_size=vocab_size))
    return model.eval()


@torch.no_grad()
def reference_log_likelihood(model, input_ids, noise, chunk=100):
    """The reference code's loop for one sentence (1, T): chunks of 100 samples, full logits."""
    mu, logvar = model.encode_posterior(input_ids)
    std = (0.5 * logvar).exp()
    log_weights = []
    for start in range(0, noise.shape[1], chunk):
        z = mu[:, None] + noise[:, start : start + chunk] * std[:, None]  # (1, k, n)
        k = z.shape[1]
        repeated = input_ids.expand(k, -1)
        logits = model(input_ids=repeated[:, :-1], latent=z[0]).logits  # (k, T-1, V)
        log_px_z = logits.log_softmax(-1).gather(-1, repeated[:, 1:, None])[..., 0].sum(-1)
        log_weights.append(
            log_px_z[None] + standard_normal_log_density(z) - gaussian_log_density(z, mu[:, None], logvar[:, None])
        )
    return torch.logsumexp(torch.cat(log_weights, 1).double(), 1) - math.log(noise.shape[1])


def run(args):
    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path) if args.model_name_or_path else None
    tokenizer, ids, batches = brown_batches(
        "test", args.vocab_size, args.batch_size, args.num_sentences, tokenizer=tokenizer
    )
    model = load_model(args, len(tokenizer))
    n = model.config.latent_size
    nll = torch.zeros(len(ids), dtype=torch.float64)
    if args.only == "compiled":
        model.compile_output_layer()  # before the clock starts
    start = time.perf_counter()
    with torch.no_grad():
        if args.only == "reference":
            for i, sequence in enumerate(ids):
                noise = sentence_noise(torch.tensor([i]), (args.iw_samples, n), args.seed)
                nll[i] = -reference_log_likelihood(model, torch.tensor([sequence]), noise)[0]
        else:
            for batch in batches:
                noise = sentence_noise(batch["index"], (args.iw_samples, n), args.seed)
                nll[batch["index"]] = -importance_weighted_log_likelihood(
                    model,
                    batch["input_ids"],
                    batch["attention_mask"],
                    noise=noise,
                    max_tokens=args.max_tokens,
                )
    seconds = time.perf_counter() - start
    tokens = sum(len(s) - 1 for s in ids)
    flops = tokens * args.iw_samples * decoder_flops_per_token(model.config)
    return {
        "seconds": seconds,
        "gflops": flops / seconds / 1e9,
        "sentences": len(ids),
        "peak_mib": peak_memory_mib(),
        "nll": nll.tolist(),
        "tokens": tokens,
    }


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_sentences", type=int, default=200)
    parser.add_argument("--iw_samples", type=int, default=500)
    parser.add_argument("--batch_size", type=int, default=16, help="sentences per batch (ours)")
    parser.add_argument(
        "--max_tokens", type=int, default=None, help="(sentence, sample, token) triples per decoder pass"
    )
    parser.add_argument("--vocab_size", type=int, default=10000)
    parser.add_argument("--model_name_or_path", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["ours", "compiled", "reference"], default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.only:
        print(json.dumps(run(args)))
        return
    ceiling = matmul_gflops()
    results = {}
    for which in ("reference", "ours", "compiled"):
        out = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--only", which], capture_output=True, text=True, check=True
        )
        results[which] = json.loads(out.stdout.strip().splitlines()[-1])
    ref = results["reference"]
    print(
        f"IW-NLL, K={args.iw_samples}, {ref['sentences']} Brown test sentences ({ref['tokens']} predicted tokens), "
        f"{torch.get_num_threads()} threads; fp32 matmul 2048^3: {ceiling:.1f} GFLOP/s\n"
    )
    labels = {
        "reference": "reference (1 sentence, 100 samples/pass)",
        "ours": "ours (batched)",
        "compiled": "ours (batched, compiled output layer)",
    }
    print("| protocol | seconds | sentences/s | GFLOP/s | % of matmul | peak memory MiB | mean NLL |")
    print("|---|---|---|---|---|---|---|")
    for which, r in results.items():
        print(
            f"| {labels[which]} | {r['seconds']:.1f} | {r['sentences'] / r['seconds']:.2f} | {r['gflops']:.1f} | "
            f"{100 * r['gflops'] / ceiling:.0f}% | {r['peak_mib']:,.0f} | {sum(r['nll']) / len(r['nll']):.3f} |"
        )
    print()
    for which in ("ours", "compiled"):
        r = results[which]
        diff = max(abs(a - b) for a, b in zip(ref["nll"], r["nll"]))
        print(
            f"{labels[which]}: speed-up {ref['seconds'] / r['seconds']:.2f}x over the reference; "
            f"largest per-sentence NLL difference {diff:.4f} nats"
        )


if __name__ == "__main__":
    main()
